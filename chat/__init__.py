"""dmhub: a self-hostable direct-message server."""

__version__ = "0.1.0"
