"""inferd: a self-hostable implementation of DigitalOcean's Dedicated Inference."""

__version__ = "0.1.0"
