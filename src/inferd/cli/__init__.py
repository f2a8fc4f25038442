"""Command-line interface (``inferd``)."""
