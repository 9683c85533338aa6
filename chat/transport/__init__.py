"""The network edge: HTTP routes, the WebSocket endpoint, authentication, web pages."""
