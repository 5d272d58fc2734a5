"""The broker Redis client, job store, Celery client and event hub of one web process.

Built lazily on first use, after gunicorn forks, so no connection or thread crosses a fork.
The event hub holds the process's single pub/sub connection, shared by all its WebSockets
(it also restarts its own thread in a forked child).
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from flask import Flask, current_app
from redis import Redis

from shared.broker import connect
from shared.events import EventHub
from shared.jobs import JobStore
from shared.settings import Settings
from shared.tasks import make_client

EXTENSION = "ragq"


class Resources:
    """Per-process clients, each created once, on first use, under a lock (threads race for it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()  # reentrant: the store is built on redis
        self._made: dict[str, Any] = {}

    def _once(self, name: str, make: Any) -> Any:
        if name not in self._made:
            with self._lock:
                if name not in self._made:
                    self._made[name] = make()
        return self._made[name]

    @property
    def redis(self) -> Redis:
        return self._once("redis", lambda: connect(self.settings.broker))  # type: ignore[no-any-return]

    @property
    def store(self) -> JobStore:
        """Job records; wait_final listens through the shared hub, not a connection of its own."""
        return self._once(  # type: ignore[no-any-return]
            "store", lambda: JobStore(self.redis, self.settings, hub=self.hub))

    @property
    def celery(self) -> Celery:
        return self._once("celery", lambda: make_client(self.settings))  # type: ignore[no-any-return]

    @property
    def hub(self) -> EventHub:
        """This process's one pub/sub connection; its thread starts on first subscribe."""
        return self._once("hub", lambda: EventHub(connect(self.settings.broker)))  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the hub's thread, if it was started (an app torn down inside a running process)."""
        hub = self._made.pop("hub", None)
        if hub is not None:
            hub.stop()


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions[EXTENSION] = Resources(settings)


def resources() -> Resources:
    """The current app's per-process resources."""
    found: Resources = current_app.extensions[EXTENSION]
    return found


def settings() -> Settings:
    return resources().settings
