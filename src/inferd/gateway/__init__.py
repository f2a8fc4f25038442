"""Data plane: per-instance OpenAI-compatible endpoints in front of the replicas."""
