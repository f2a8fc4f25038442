"""Route modules of the control-plane API."""
