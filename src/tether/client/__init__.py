"""Python clients: :class:`AsyncClient` and its sync twin :class:`Client`."""

from tether.client.aio import AsyncClient
from tether.client.sync import Client

__all__ = ["AsyncClient", "Client"]
