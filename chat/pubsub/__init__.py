"""Redis pub/sub: carries each event to whichever process holds the user's sockets."""

from chat.pubsub.broker import Broker

__all__ = ["Broker"]
