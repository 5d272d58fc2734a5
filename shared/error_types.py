"""The fixed `type` names of `rag_errors_total` (shared/metrics.py), and the process counting each.

Call sites count with these names, and each process creates its own at 0 when it starts
(shared/series.py), so dashboards and alerts see every series before its first error. Not here:
the web's HTTP problem slugs (web/problems.py PROBLEM_TYPES, zeroed beside these), and names
known only when the error happens (a failed job's exception class, a status without a slug).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    """Each value is the label exactly as dashboards, alerts and docs/operations.md name it."""

    EVENT_HUB = "event_hub"
    EVENT_HUB_BROKER = "event_hub_broker"
    EVENT_HUB_MESSAGE = "event_hub_message"
    PRIVATE_SUBSCRIPTION = "private_subscription"
    WEBSOCKET = "websocket"
    WEBSOCKET_BROKER = "websocket-broker"
    WEBSOCKET_TRIMMED = "websocket-trimmed"
    TOO_MANY_STREAMS = "too-many-streams"
    METRICS_BROKER = "metrics_broker"
    RATE_LIMIT_SKIPPED = "rate_limit_skipped"
    BATCH_CANCEL = "batch_cancel"
    RESERVATION_GIVE_BACK = "reservation_give_back"
    JOB_DISCARD = "job_discard"
    TIME_LIMIT_EXCEEDED = "TimeLimitExceeded"
    AFTERCARE = "aftercare"
    JOB_THREAD = "job_thread"
    METRICS_PORT = "metrics_port"


WEB_ERROR_TYPES = (
    ErrorType.EVENT_HUB, ErrorType.EVENT_HUB_BROKER, ErrorType.EVENT_HUB_MESSAGE,
    ErrorType.PRIVATE_SUBSCRIPTION, ErrorType.WEBSOCKET, ErrorType.WEBSOCKET_BROKER,
    ErrorType.WEBSOCKET_TRIMMED, ErrorType.TOO_MANY_STREAMS, ErrorType.METRICS_BROKER,
    ErrorType.RATE_LIMIT_SKIPPED, ErrorType.BATCH_CANCEL, ErrorType.RESERVATION_GIVE_BACK,
    ErrorType.JOB_DISCARD,
)
WORKER_ERROR_TYPES = (
    ErrorType.TIME_LIMIT_EXCEEDED, ErrorType.AFTERCARE, ErrorType.JOB_THREAD,
    ErrorType.METRICS_PORT,
)
INGEST_ERROR_TYPES = (ErrorType.TIME_LIMIT_EXCEEDED, ErrorType.METRICS_PORT)
