"""Teams: a business answered by several agents (PROTOCOL.md v1.1, Teams)."""
