"""The known label values of ragq's labelled counters, created at 0 when a process starts.

A labelled counter has no series until its first increment: a fresh dashboard shows "no
data" and `rate()` cannot see a first event as growth. Web and worker each zero every known
series at start-up (a 0 adds nothing to any sum), naming the error types they record.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter

from shared import metrics
from shared.jobs import FinishReason, Status

CACHE_PATHS = ("exact", "semantic")
FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.EXPIRED)
EMPTY_ANSWER = "empty"  # a cache-write skip reason besides the unfinished finish reasons
UNCACHEABLE = (*(reason for reason in FinishReason if reason != FinishReason.STOP), EMPTY_ANSWER)


def _zero(counter: Counter, label: str, values: Iterable[str]) -> None:
    for value in values:
        counter.labels(**{label: str(value)})


def zero_known_series(error_types: Iterable[str]) -> None:
    """Create every known labelled series at 0, and `rag_errors_total` for `error_types`."""
    _zero(metrics.CACHE_HITS, "path", CACHE_PATHS)
    _zero(metrics.JOBS_FINISHED, "status", FINAL_STATUSES)
    _zero(metrics.ANSWERS, "finish_reason", FinishReason)
    _zero(metrics.CACHE_WRITES_SKIPPED, "reason", UNCACHEABLE)
    _zero(metrics.ERRORS, "type", error_types)
