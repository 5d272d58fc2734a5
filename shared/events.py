"""A job's events: appended to its bounded stream and published live, replayed to late readers.

Every event is one JSON object `{"seq", "type", "job_id", "ts", ...payload}`. One Lua script
allocates the gap-free `seq`, appends to the stream (entry id `<seq>-1`, so XRANGE by seq is
a plain range) and publishes, so seq order == stream order == publish order.

EventHub choice: one `PSUBSCRIBE ragq:events:*` per process. The hub never sends a command
after start-up, so the listening thread owns its connection alone (no write/read races, no
per-job SUBSCRIBE round trip before a reader can start), at the price of every process seeing
every job's events: a few dozen small messages per second per GPU worker, far below what one
connection and one json.loads per message cost.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, cast

import redis

from shared import keys
from shared.broker import BROKER_ERRORS, broker_errors, open_client
from shared.error_types import ErrorType
from shared.errors import BrokerUnavailable, EventsTrimmed, JobNotFound
from shared.metrics import ERRORS
from shared.settings import JobSettings

log = logging.getLogger(__name__)

STATUS = "status"
SOURCES = "sources"
TOKEN = "token"
DONE = "done"
ERROR = "error"
PROGRESS = "progress"  # an ingest job's documents parsed and chunks embedded (n of N)
TYPES = frozenset({STATUS, SOURCES, TOKEN, DONE, ERROR, PROGRESS})
TERMINAL = frozenset({DONE, ERROR})

STREAM_FIELD = "e"
# A job that never runs (a cache hit) keeps its few final events in its own hash, as a JSON
# list, instead of a stream of its own: a stream costs about 4.8 KB, a hit's record 1.4 KB.
INLINE_FIELD = "events"
SEQ_FIELD = "last_seq"  # field of the job hash holding the last allocated seq

# Lua functions, shared by every script that emits. append: allocates seq, XADD, EXPIRE (for
# a job nobody can be subscribed to yet); emit: append, then PUBLISH.
EMIT_FUNCTION = f"""
local function append(job, stream, body, maxlen, ttl)
  local seq = redis.call('HINCRBY', job, '{SEQ_FIELD}', 1)
  local event = '{{"seq": ' .. seq .. ', ' .. body
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-1', '{STREAM_FIELD}', event)
  redis.call('EXPIRE', stream, ttl)
  return seq, event
end
local function emit(job, stream, channel, body, maxlen, ttl)
  local seq, event = append(job, stream, body, maxlen, ttl)
  redis.call('PUBLISH', channel, event)
  return seq
end
"""

_EMIT_SCRIPT = EMIT_FUNCTION + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return emit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""

HUB_READY_TIMEOUT = 5.0
HUB_POLL_SECONDS = 1.0
HUB_RETRY_SECONDS = 0.5
RESYNC_SECONDS = 5.0
DEFAULT_PING_SECONDS = 20.0


def event_body(job_id: str, type_: str, payload: dict[str, Any]) -> str:
    """The event's JSON without its opening brace; the emit script prepends `{"seq": n, `."""
    if type_ not in TYPES:
        raise ValueError(f"unknown event type {type_!r}; expected one of {sorted(TYPES)}")
    return json.dumps({"type": type_, "job_id": job_id, "ts": time.time(), **payload})[1:]


class EventLog:
    """Appends a job's events to its stream and publishes them, atomically, with a gap-free seq."""

    def __init__(self, redis_client: redis.Redis, settings: JobSettings) -> None:
        self.redis = redis_client
        self.settings = settings
        self._emit = redis_client.register_script(_EMIT_SCRIPT)

    def emit(self, job_id: str, type_: str, **payload: Any) -> int:
        """Record one event; returns its seq. JobNotFound when the job record is gone."""
        args: list[str | int] = [keys.job_channel(job_id), event_body(job_id, type_, payload),
                self.settings.stream_maxlen, self.settings.retention_seconds]
        with broker_errors(f"cannot emit {type_} event"):
            seq = int(self._emit(keys=[keys.job(job_id), keys.job_events(job_id)], args=args))
        if seq < 0:
            raise JobNotFound(job_id)
        return seq


def inline_events(*bodies: str) -> str:
    """The INLINE_FIELD value of a job whose events are all known at once: `bodies` (from
    event_body) numbered from seq 1."""
    return "[" + ", ".join(f'{{"seq": {seq}, {body}' for seq, body in enumerate(bodies, 1)) + "]"


def replay(redis_client: redis.Redis, job_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The job's stored events with seq > `after`, in order (its stream, or its inline ones)."""
    with broker_errors(f"cannot read events of {job_id}"):
        inline = redis_client.hget(keys.job(job_id), INLINE_FIELD)
        if inline:
            return [event for event in json.loads(inline) if event["seq"] > after]
        entries = cast(list[tuple[str, dict[str, str]]],
                       redis_client.xrange(keys.job_events(job_id), min=str(after + 1), max="+"))
    return [json.loads(fields[STREAM_FIELD]) for _, fields in entries]


class Subscription:
    """A reader's queue of one job's live events, fed by the hub's thread."""

    def __init__(self, job_id: str, on_close: Callable[[Subscription], None]) -> None:
        self.job_id = job_id
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._missed = threading.Event()
        self._on_close = on_close

    def put(self, event: dict[str, Any]) -> None:
        self._queue.put(event)

    def mark_missed(self) -> None:
        """The hub lost its connection: live events may have been dropped; replay the stream."""
        self._missed.set()

    def take_missed(self) -> bool:
        """True once after the hub reconnected since the last call."""
        missed = self._missed.is_set()
        self._missed.clear()
        return missed

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The next live event, or None after `timeout` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._on_close(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """One pattern subscription per process, dispatching each job's events to its subscribers.

    The listening thread starts on the first `subscribe()` (and again in a forked child, so a
    hub made before gunicorn forks still works); it reconnects when Redis drops and then tells
    every subscription to replay what it may have missed.
    """

    def __init__(self, redis_source: str | redis.Redis) -> None:
        self._client = open_client(redis_source) if isinstance(redis_source, str) else redis_source
        self._subs: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._pid = -1
        self._thread: threading.Thread | None = None

    def subscribe(self, job_id: str) -> Subscription:
        """Start receiving `job_id`'s live events; active when this returns."""
        self._ensure_started()
        if not self._ready.wait(HUB_READY_TIMEOUT):
            raise BrokerUnavailable("event hub cannot subscribe: broker Redis unreachable")
        sub = Subscription(job_id, self._remove)
        with self._lock:
            self._subs.setdefault(job_id, set()).add(sub)
        return sub

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(subs) for subs in self._subs.values())

    def stop(self) -> None:
        """Stop the listening thread (tests, shutdown)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=HUB_POLL_SECONDS * 3)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.job_id]

    def _ensure_started(self) -> None:
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            if self._pid != os.getpid():
                self._client.connection_pool.reset()
                self._subs.clear()
            self._pid = os.getpid()
            self._ready.clear()
            self._stopped.clear()
            self._thread = threading.Thread(target=self._run, name="ragq-event-hub", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._listen()
            except BROKER_ERRORS + (OSError,) as error:
                ERRORS.labels(type=ErrorType.EVENT_HUB_BROKER).inc()
                log.warning("event hub lost the broker, reconnecting", extra={"error": str(error)})
            except Exception:  # the thread must outlive it: every socket of the process needs it
                ERRORS.labels(type=ErrorType.EVENT_HUB).inc()
                log.exception("event hub failed, reconnecting")
            self._ready.clear()
            self._mark_all_missed()
            self._stopped.wait(HUB_RETRY_SECONDS)

    def _listen(self) -> None:
        pubsub = self._client.pubsub()
        try:
            pubsub.psubscribe(keys.EVENTS_PATTERN)
            while not self._stopped.is_set():
                message = pubsub.get_message(timeout=HUB_POLL_SECONDS)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    self._mark_all_missed()
                    self._ready.set()
                elif message["type"] == "pmessage":
                    self._dispatch_raw(message["channel"], message["data"])
        finally:
            pubsub.close()

    def _dispatch_raw(self, channel: str, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError as error:  # not ours: skip it, the thread serves every socket
            ERRORS.labels(type=ErrorType.EVENT_HUB_MESSAGE).inc()
            log.warning("event hub skipped a malformed message",
                        extra={"channel": channel, "error": str(error)})
            return
        self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs.get(event.get("job_id", ""), ()))
        for sub in subs:
            sub.put(event)

    def _mark_all_missed(self) -> None:
        with self._lock:
            subs = [sub for group in self._subs.values() for sub in group]
        for sub in subs:
            sub.mark_missed()


def read_events(
    redis_client: redis.Redis,
    job_id: str,
    after: int = 0,
    hub: EventHub | None = None,
    ping: Callable[[], None] | None = None,
    idle_timeout: float | None = None,
    ping_interval: float = DEFAULT_PING_SECONDS,
) -> Generator[dict[str, Any], None, None]:
    """Every event of `job_id` with seq > `after`, once each, in order; ends after done/error.

    Checks the job exists before returning (JobNotFound otherwise, raised here, not on the first
    `next()`). On its first step the iterator subscribes, then replays the stream, then yields
    live events, filling any gap from the stream. `ping` is called after `ping_interval` seconds
    without an event (a WebSocket keep-alive; it may raise to end the stream); with
    `idle_timeout` the iterator ends after that many seconds without an event. Without a hub
    it opens a private subscription (a connection per reader: fine for scripts, not for web).
    When the next event it needs was trimmed from the stream (JOBS_STREAM_MAXLEN), the
    iterator raises EventsTrimmed after the events before the hole.
    """
    with broker_errors(f"cannot read job {job_id}"):
        exists = redis_client.exists(keys.job(job_id), keys.job_events(job_id))
        inline = redis_client.hget(keys.job(job_id), INLINE_FIELD) if exists else None
    if not exists:
        raise JobNotFound(job_id)
    if inline:  # a job that never ran: every event it will have is stored; nothing to wait for
        return (event for event in json.loads(inline) if event["seq"] > after)
    return _follow(redis_client, job_id, after, hub, ping, idle_timeout, ping_interval)


def _follow(
    redis_client: redis.Redis,
    job_id: str,
    after: int,
    hub: EventHub | None,
    ping: Callable[[], None] | None,
    idle_timeout: float | None,
    ping_interval: float,
) -> Generator[dict[str, Any], None, None]:
    # Subscribing inside the generator: a generator closed before its first step holds nothing.
    sub = hub.subscribe(job_id) if hub is not None else PrivateSubscription(redis_client, job_id)
    reader = _OrderedReader(redis_client, job_id, after)
    wait = min(ping_interval, RESYNC_SECONDS, idle_timeout or RESYNC_SECONDS)
    last_event = last_ping = time.monotonic()
    with sub:
        yield from reader.replay()
        while not reader.finished:
            event = sub.get(timeout=wait)
            now = time.monotonic()
            fresh = reader.accept(event) if event is not None else reader.replay()
            if sub.take_missed():
                fresh += reader.replay()
            if fresh:
                last_event = now
                yield from fresh
                continue
            if idle_timeout is not None and now - last_event >= idle_timeout:
                return
            if ping is not None and now - max(last_event, last_ping) >= ping_interval:
                ping()
                last_ping = now


class _OrderedReader:
    """Turns live events plus stream replays into each event exactly once, in seq order."""

    def __init__(self, redis_client: redis.Redis, job_id: str, after: int) -> None:
        self.redis = redis_client
        self.job_id = job_id
        self.last = after
        self.finished = False

    def replay(self) -> list[dict[str, Any]]:
        """Stored events after the last one yielded (catch-up, gap fill, resync)."""
        if self.finished:
            return []
        stored = replay(self.redis, self.job_id, self.last)
        if stored and int(stored[0]["seq"]) > self.last + 1:
            # seq and stream entry are written together, so a missing next seq was trimmed
            raise EventsTrimmed(f"events {self.last + 1}-{int(stored[0]['seq']) - 1} of job "
                                f"{self.job_id} were trimmed from its stream")
        if not stored:
            # a reader resuming at or past the terminal event has nothing left to wait for
            self.finished = self._ended()
        return self._take(stored)

    def _ended(self) -> bool:
        with broker_errors(f"cannot read events of {self.job_id}"):
            last = cast(list[tuple[str, dict[str, str]]],
                        self.redis.xrevrange(keys.job_events(self.job_id), count=1))
        return bool(last) and json.loads(last[0][1][STREAM_FIELD])["type"] in TERMINAL

    def accept(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """A live event: a duplicate gives nothing, the next one itself, a later one the gap too."""
        seq = int(event["seq"])
        if seq <= self.last or self.finished:
            # the job's end, even one the reader resumed past, ends the reader
            self.finished = self.finished or event["type"] in TERMINAL
            return []
        if seq == self.last + 1:
            return self._take([event])
        return self.replay()

    def _take(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        taken = []
        for event in events:
            if event["seq"] != self.last + 1:
                break  # never reorder (replay() raises EventsTrimmed for a hole it cannot fill)
            taken.append(event)
            self.last = event["seq"]
            if event["type"] in TERMINAL:
                self.finished = True
                break
        return taken


class PrivateSubscription:
    """A subscription on its own connection to one job's channel (scripts, no hub at hand)."""

    def __init__(self, redis_client: redis.Redis, job_id: str) -> None:
        self.job_id = job_id
        self._pubsub = redis_client.pubsub()
        try:
            with broker_errors(f"cannot subscribe to {job_id}"):
                self._pubsub.subscribe(keys.job_channel(job_id))
                self._await_confirmation()
        except BrokerUnavailable:
            self._pubsub.close()
            raise

    def _await_confirmation(self) -> None:
        # Replaying before the server confirms could miss an event published in between.
        deadline = time.monotonic() + HUB_READY_TIMEOUT
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=HUB_POLL_SECONDS)
            if message is not None and message["type"] == "subscribe":
                return
        raise redis.TimeoutError("no subscribe confirmation from the broker")

    def get(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._pubsub.get_message(timeout=left)
            except BROKER_ERRORS as error:  # the caller replays the stream after a quiet period
                ERRORS.labels(type=ErrorType.PRIVATE_SUBSCRIPTION).inc()
                log.warning("private subscription lost the broker; replaying from the stream",
                            extra={"job_id": self.job_id, "error": str(error)})
                return None
            if message is not None and message["type"] == "message":
                return dict(json.loads(message["data"]))
        return None

    def take_missed(self) -> bool:
        return False

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> PrivateSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
