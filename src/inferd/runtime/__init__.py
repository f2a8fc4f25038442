"""Where replicas run: the ``Runtime`` protocol and its local (process) implementation."""
