"""The WebSocket channel: one socket, many requests, each admitted on its own."""
