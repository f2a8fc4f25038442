"""The reconciler: makes what runs match what the API recorded."""
