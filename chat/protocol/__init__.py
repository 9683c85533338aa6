"""The I/O-free core of the wire protocol: close codes, frame parsing, validation."""
