"""Settings from the environment (``INFERD_*``) and the inventory/catalog file."""

from inferd.config.settings import Settings, load_catalog_document

__all__ = ["Settings", "load_catalog_document"]
