"""The server: dispatcher, connections, the ASGI app and the command line."""
