"""The hub: this process's sockets, and fan-out of events to them."""

from chat.hub.connection import Connection
from chat.hub.hub import Hub

__all__ = ["Connection", "Hub"]
