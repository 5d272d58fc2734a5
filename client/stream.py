"""A job's events over the WebSocket, resumed with `?after=` whenever the connection drops.

The service numbers a job's events with a gap-free `seq` and replays every event after
`?after=n`, so a reader that remembers the last `seq` it yielded can reconnect after any drop
(a cut TCP connection, a restarted web process, the broker briefly away: close 1013) and yield
each event exactly once, in order. Close 4410 means the events the reader needs next were
trimmed from the job's stream: they can never be relayed, so the job itself is fetched and its
outcome yielded as one terminal event marked `"trimmed": true` (its `seq` is None). A handshake
refused with 503 or 429 (too many sockets on one job) is retried after its Retry-After.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
)
from websockets.sync.client import ClientConnection, connect

from client.errors import (
    JobNotFound,
    RateLimited,
    ServiceUnavailable,
    StreamInterrupted,
    WaitTimeout,
    parse_retry_after,
    problem_error,
)

TERMINAL_TYPES = frozenset({"done", "error"})
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "expired"})
NORMAL_CLOSURE = 1000
JOB_NOT_FOUND = 4404
EVENTS_TRIMMED = 4410
FINAL_POLL_SECONDS = 0.5

Event = dict[str, Any]


@dataclass(frozen=True)
class Reconnect:
    """How hard a stream tries to resume: `attempts` in a row without a new event, waiting
    `first_delay` seconds, doubled each time up to `max_delay` (or the service's Retry-After)."""

    attempts: int = 10
    first_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** (failures - 1)))


class _Closed(Exception):
    """The socket closed before a terminal event; `code` is the close code (None: no frame)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


def follow(
    url: str,
    headers: dict[str, str],
    fetch_job: Callable[[], dict[str, Any]],
    *,
    after: int = 0,
    reconnect: Reconnect | None = None,
    deadline: float | None = None,
    open_timeout: float = 10.0,
) -> Iterator[Event]:
    """Yield the events after `after` of the job whose stream is at `url`, reconnecting with
    `?after=<last seq>` on any drop, until its `done` or `error` event (or a trimmed stream's
    stand-in for it). `deadline` (time.monotonic()) bounds the whole wait: WaitTimeout."""
    policy = reconnect or Reconnect()
    last, failures = after, 0
    while True:
        retry_after: float | None = None
        try:
            with connect(f"{url}?after={last}", additional_headers=headers,
                         open_timeout=_bounded(open_timeout, deadline)) as ws:
                for event in _events(ws, deadline):
                    if event["seq"] <= last:  # never twice, whatever the server resends
                        continue
                    last, failures = event["seq"], 0
                    yield event
                    if event["type"] in TERMINAL_TYPES:
                        return
        except _Closed as closed:
            if closed.code == NORMAL_CLOSURE:
                return  # the job had ended and `last` was already its last event
            if closed.code == JOB_NOT_FOUND:
                raise JobNotFound(404, {"title": "Not Found", "detail": "the job vanished"},
                                  None) from None
            if closed.code == EVENTS_TRIMMED:
                yield _outcome(fetch_job, deadline)
                return
        except InvalidStatus as refused:
            error = _refusal(refused)
            if not isinstance(error, ServiceUnavailable | RateLimited):  # those pass: retry
                raise error from refused
            retry_after = error.retry_after
        except (InvalidHandshake, OSError):
            pass  # refused, reset or timed out before the upgrade: try again
        failures += 1
        if failures > policy.attempts:
            raise StreamInterrupted(f"the stream dropped {failures} times in a row without a "
                                    f"new event (last seq {last})")
        _sleep(retry_after if retry_after is not None else policy.delay(failures), deadline)


def _events(ws: ClientConnection, deadline: float | None) -> Iterator[Event]:
    """Messages as events until the socket closes (raised as _Closed with its code)."""
    while True:
        try:
            message = ws.recv(timeout=_left(deadline))
        except TimeoutError:
            raise WaitTimeout("the job did not finish in the time allowed") from None
        except ConnectionClosedOK as closed:
            # 1001 (a web process going away) is "OK" to websockets but means "reconnect" here
            code = closed.rcvd.code if closed.rcvd else None
            raise _Closed(code if code == NORMAL_CLOSURE else None) from None
        except ConnectionClosed as closed:
            raise _Closed(closed.rcvd.code if closed.rcvd else None) from None
        yield json.loads(message)


def _outcome(fetch_job: Callable[[], dict[str, Any]], deadline: float | None) -> Event:
    """The terminal event a trimmed stream can no longer send, built from the job record."""
    job = fetch_job()
    while job["status"] not in FINAL_STATUSES:
        _sleep(FINAL_POLL_SECONDS, deadline)
        job = fetch_job()
    event: Event = {"seq": None, "job_id": job["id"], "trimmed": True, "job": job}
    if job["status"] in ("succeeded", "cancelled"):
        return {**event, "type": "done"}
    return {**event, "type": "error", "error": job["error"]}


def _refusal(refused: InvalidStatus) -> Exception:
    response = refused.response
    try:
        problem = json.loads(response.body or b"{}")
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    problem.setdefault("title", response.reason_phrase)
    return problem_error(response.status_code, problem,
                         parse_retry_after(response.headers.get("Retry-After")))


def _left(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout("the job did not finish in the time allowed")
    return left


def _bounded(seconds: float, deadline: float | None) -> float:
    left = _left(deadline)
    return seconds if left is None else min(seconds, left)


def _sleep(seconds: float, deadline: float | None) -> None:
    left = _left(deadline)
    if left is not None and seconds >= left:
        raise WaitTimeout("the job did not finish in the time allowed")
    time.sleep(seconds)
