"""The systems dmhub is compared with, each a small relay over Redis pub/sub."""
