"""Background work of a worker process: a Ticker calls a function every few seconds on a daemon
thread (heartbeat, reaper, lease renewal), and a Lease keeps a running job ours."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from shared import metrics
from shared.errors import RagqError
from shared.leases import Leases

log = logging.getLogger(__name__)

LEASE_RENEWALS_PER_LEASE = 3


class Ticker:
    """Calls `func` every `interval` seconds on a daemon thread until stopped; logs its errors."""

    def __init__(self, name: str, interval: float, func: Callable[[], None]) -> None:
        self.interval = interval
        self.func = func
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 1.0)

    def _run(self) -> None:
        while True:
            try:
                self.func()
            except (RagqError, redis.RedisError) as error:
                metrics.ERRORS.labels(type=f"ticker_{self._thread.name}").inc()
                log.warning("background task failed", extra={"task": self._thread.name,
                                                             "error": str(error)})
            except Exception:  # anything else would end the thread: no heartbeat, no reaper
                metrics.ERRORS.labels(type=f"ticker_{self._thread.name}").inc()
                log.exception("background task failed", extra={"task": self._thread.name})
            if self._stopped.wait(self.interval):
                return


class Lease:
    """Keeps a running job's lease alive; `lost` turns true when another worker took the job."""

    def __init__(self, leases: Leases, job_id: str, node: str, attempt: int) -> None:
        self.leases = leases
        self.job_id = job_id
        self.node = node
        self.attempt = attempt
        self.lost = False
        interval = leases.settings.lease_seconds / LEASE_RENEWALS_PER_LEASE
        self._ticker = Ticker("lease", interval, self._renew)

    def _renew(self) -> None:
        if not self.leases.renew(self.job_id, self.node, self.attempt):
            self.lost = True
            self._ticker.stop()

    def __enter__(self) -> Lease:
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ticker.stop()
