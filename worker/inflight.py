"""The jobs one worker process runs at once when it batches (WORKER_MAX_BATCH above 1).

Each job runs on a thread of its own (its events, lease, cancel and aftercare exactly as when it
runs alone) while the pipeline decodes all of them together. A slot is reserved before the job
is claimed, so a job never turns `running` before there is room for it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable

from shared import metrics
from shared.error_types import ErrorType

log = logging.getLogger(__name__)


class InFlight:
    """At most `capacity` jobs at once, each on its own thread."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._taken = 0  # reserved slots: jobs running, and jobs being claimed
        self._jobs: dict[str, threading.Thread] = {}
        self._changed = threading.Condition()

    def __contains__(self, job_id: object) -> bool:
        with self._changed:
            return job_id in self._jobs

    def job_ids(self) -> list[str]:
        with self._changed:
            return sorted(self._jobs)

    def reserve(self, timeout: float) -> bool:
        """Take a slot, waiting up to `timeout` seconds for one; False when none came free."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._taken < self.capacity, timeout):
                return False
            self._taken += 1
            return True

    def release(self) -> None:
        """Give back a reserved slot that no job took (the claim said not to run it)."""
        with self._changed:
            self._taken -= 1
            self._changed.notify_all()

    def start(self, job_id: str, run: Callable[[], object]) -> None:
        """Run `run` for `job_id` on its own thread, in a reserved slot it frees when it ends."""
        context = contextvars.copy_context()  # the task's log fields (job_id, request_id)
        thread = threading.Thread(target=context.run, args=(self._run, job_id, run),
                                  name=f"ragq-job-{job_id[:8]}", daemon=True)
        with self._changed:
            self._jobs[job_id] = thread
            metrics.JOBS_IN_FLIGHT.set(len(self._jobs))
        thread.start()

    def wait_for_room(self, timeout: float) -> bool:
        """Block until a slot is free (or `timeout` seconds passed); True when one is."""
        with self._changed:
            return self._changed.wait_for(lambda: self._taken < self.capacity, timeout)

    def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the jobs in flight to end (a warm shutdown)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._changed.wait_for(lambda: not self._jobs, max(0.0, deadline - time.monotonic()))
            left = sorted(self._jobs)
        if left:
            log.warning("jobs still running at shutdown; their leases will lapse",
                        extra={"job_ids": left})

    def _run(self, job_id: str, run: Callable[[], object]) -> None:
        try:
            run()
        except Exception:  # a job thread must not die silently: its lease lapses, it runs again
            metrics.ERRORS.labels(type=ErrorType.JOB_THREAD).inc()
            log.exception("job thread failed", extra={"job_id": job_id})
        finally:
            with self._changed:
                del self._jobs[job_id]
                self._taken -= 1
                metrics.JOBS_IN_FLIGHT.set(len(self._jobs))
                self._changed.notify_all()
