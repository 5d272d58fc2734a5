"""Open connections per client address, in this web process (counted by web/serving.py's worker
from accept to close, read by the app to refuse a client over API_CONNECTIONS_PER_CLIENT).

No Flask here, and nothing that opens a socket or a thread: gunicorn's arbiter imports the
worker class, and with it this module, before the worker monkey-patches for gevent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

_open: Counter[str] = Counter()


@contextmanager
def held(address: str) -> Iterator[None]:
    """Count one connection from `address` while inside."""
    _open[address] += 1
    try:
        yield
    finally:
        _open[address] -= 1
        if _open[address] <= 0:
            del _open[address]


def open_from(address: str) -> int:
    """Connections from `address` open now in this process (this one included)."""
    return _open[address]
