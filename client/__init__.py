"""A Python client for ragq's job API: `Client(url, api_key)`; errors in `client.errors`.

It speaks only the documented wire protocol (docs/api.md) and imports nothing else of ragq.
"""

from client.client import DEFAULT_URL, Client
from client.stream import Reconnect

__all__ = ["DEFAULT_URL", "Client", "Reconnect"]
