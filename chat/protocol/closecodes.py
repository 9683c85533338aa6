"""WebSocket close codes of the contract, named."""

from typing import Final

NORMAL: Final = 1000
# Too many invalid frames in a row: the peer is not speaking the protocol.
POLICY_VIOLATION: Final = 1008
# A frame over the size limit (64 KiB).
MESSAGE_TOO_BIG: Final = 1009
# The server is restarting or draining; reconnect with your cursor.
SERVICE_RESTART: Final = 1012
# The client reads too slowly to keep up; reconnect with your cursor.
TRY_AGAIN_LATER: Final = 1013
# The session behind this socket was ended (logout).
SESSION_ENDED: Final = 4401
