"""Event log, hub and reader against a real redis-server: order, replay, gaps, reconnects."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import REGISTRY

from shared import keys
from shared.errors import EventsTrimmed, JobNotFound
from shared.events import EventHub, EventLog, read_events, replay
from shared.jobs import JobStore, Status
from shared.settings import load_settings
from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration

TOKENS = 30


@pytest.fixture
def store(broker_redis: RedisServer) -> JobStore:
    return JobStore(broker_redis.client(), load_settings(broker={"url": broker_redis.url}))


@pytest.fixture
def hub(broker_redis: RedisServer) -> Iterator[EventHub]:
    hub = EventHub(broker_redis.url)
    yield hub
    hub.stop()


def run_job(store: JobStore, job_id: str, delay: float = 0.0) -> None:
    """What a worker emits: running, sources, tokens, done."""
    store.claim(job_id, "w1")
    store.events.emit(job_id, "sources", sources=[])
    for i in range(TOKENS):
        store.events.emit(job_id, "token", text=f"t{i}")
        time.sleep(delay)
    store.finish(job_id, Status.SUCCEEDED, attempt=1, result={"answer": "x", "sources": []})


def new_job(store: JobStore) -> str:
    return store.create(owner="o", query="q", top_k=1, request_id="r")["id"]


def assert_complete(events: list[dict], after: int = 0) -> None:
    total = TOKENS + 4  # queued, running, sources, tokens, done
    assert [e["seq"] for e in events] == list(range(after + 1, total + 1))
    assert events[-1]["type"] == "done"


def test_emit_gives_gap_free_seq_in_stream_order(store: JobStore) -> None:
    job_id = new_job(store)
    log = EventLog(store.redis, store.jobs)
    seqs = [log.emit(job_id, "token", text=str(i)) for i in range(5)]
    assert seqs == [2, 3, 4, 5, 6]
    stored = replay(store.redis, job_id)
    assert [e["seq"] for e in stored] == [1, 2, 3, 4, 5, 6]
    assert stored[3] == {**stored[3], "type": "token", "job_id": job_id, "text": "2"}
    assert store.redis.ttl(keys.job_events(job_id)) > 0


def test_emit_rejects_unknown_types_and_jobs(store: JobStore) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        store.events.emit(new_job(store), "chatter")
    with pytest.raises(JobNotFound):
        store.events.emit("00000000-0000-4000-8000-000000000000", "token", text="x")


@pytest.mark.parametrize("after", [0, 1, 7, 33])
def test_reader_after_the_job_replays_from_any_seq(store: JobStore, hub: EventHub,
                                                   after: int) -> None:
    job_id = new_job(store)
    run_job(store, job_id)
    assert_complete(list(read_events(store.redis, job_id, after=after, hub=hub)), after)


def test_reader_before_the_job_gets_everything_live(store: JobStore, hub: EventHub) -> None:
    job_id = new_job(store)
    worker = threading.Timer(0.2, run_job, args=(store, job_id, 0.002))
    worker.start()
    assert_complete(list(read_events(store.redis, job_id, hub=hub, idle_timeout=10)))
    worker.join()


def test_reader_during_the_job_and_a_reconnecting_reader(store: JobStore, hub: EventHub) -> None:
    job_id = new_job(store)
    worker = threading.Thread(target=run_job, args=(store, job_id, 0.01))
    worker.start()
    first = read_events(store.redis, job_id, hub=hub)
    head = [next(first) for _ in range(8)]
    first.close()  # the client drops; it reconnects with ?after=8
    rest = list(read_events(store.redis, job_id, after=head[-1]["seq"], hub=hub))
    worker.join()
    assert_complete(head + rest)
    assert hub.subscriber_count() == 0


def test_private_subscription_reader_without_hub(store: JobStore) -> None:
    job_id = new_job(store)
    worker = threading.Timer(0.2, run_job, args=(store, job_id, 0.002))
    worker.start()
    assert_complete(list(read_events(store.redis, job_id)))
    worker.join()


def test_reader_fills_a_gap_from_the_stream(store: JobStore, hub: EventHub) -> None:
    job_id = new_job(store)
    sub = hub.subscribe(job_id)
    reader = read_events(store.redis, job_id, hub=hub)
    assert next(reader)["seq"] == 1
    # seq 2 goes to the stream only, as if its publish were lost; seq 3 arrives live
    store.redis.hincrby(keys.job(job_id), "last_seq", 1)
    store.redis.xadd(keys.job_events(job_id), {"e": '{"seq": 2, "type": "token", "job_id": "'
                                               + job_id + '", "text": "lost"}'}, id="2-1")
    store.events.emit(job_id, "token", text="live")
    assert [next(reader)["text"], next(reader)["text"]] == ["lost", "live"]
    reader.close()
    sub.close()


def test_a_reader_behind_a_trimmed_hole_raises_instead_of_waiting(
    store: JobStore, hub: EventHub
) -> None:
    job_id = new_job(store)
    reader = read_events(store.redis, job_id, hub=hub, idle_timeout=3)
    assert next(reader)["seq"] == 1
    # seq 2-20 reach the stream only (their publishes lost), then the stream is trimmed past 2
    for seq in range(2, 21):
        store.redis.hincrby(keys.job(job_id), "last_seq", 1)
        store.redis.xadd(keys.job_events(job_id), {"e": f'{{"seq": {seq}, "type": "token", '
                                                   f'"job_id": "{job_id}", "text": "t"}}'},
                         id=f"{seq}-1")
    store.redis.xtrim(keys.job_events(job_id), minid="10-1", approximate=False)  # as MAXLEN would
    store.events.emit(job_id, "token", text="live")  # seq 21: the reader sees the hole
    started = time.monotonic()
    with pytest.raises(EventsTrimmed):
        next(reader)
    assert time.monotonic() - started < 2  # told at once, not left waiting for an end
    reconnecting = read_events(store.redis, job_id, after=1, hub=hub, idle_timeout=3)
    with pytest.raises(EventsTrimmed):
        next(reconnecting)
    assert [e["seq"] for e in read_events(store.redis, job_id, after=9, hub=hub,
                                          idle_timeout=0.5)] == list(range(10, 22))


def _give_up_after(seconds: float) -> Callable[[], None]:
    """A reader's ping that fails the test once the reader has waited `seconds`."""
    started = time.monotonic()

    def ping() -> None:
        assert time.monotonic() - started < seconds, "the reader waits past the job's end"
    return ping


@pytest.mark.parametrize("after", [TOKENS + 4, TOKENS + 5, 10**18])
def test_reader_at_or_past_the_end_of_a_finished_job_ends_at_once(
    store: JobStore, hub: EventHub, after: int
) -> None:
    job_id = new_job(store)
    run_job(store, job_id)
    events = read_events(store.redis, job_id, after=after, hub=hub,
                         ping=_give_up_after(3.0), ping_interval=0.2)
    assert list(events) == []


def test_reader_past_the_end_of_a_running_job_ends_with_the_job(
    store: JobStore, hub: EventHub
) -> None:
    job_id = new_job(store)
    events = read_events(store.redis, job_id, after=10**6, hub=hub,
                         ping=_give_up_after(10.0), ping_interval=0.2)
    worker = threading.Timer(0.5, run_job, (store, job_id))
    worker.start()
    assert list(events) == []
    worker.join()


def test_unknown_job_is_not_found_at_call_time(store: JobStore, hub: EventHub) -> None:
    with pytest.raises(JobNotFound):
        read_events(store.redis, "00000000-0000-4000-8000-000000000000", hub=hub)


def test_idle_timeout_ends_the_reader_and_ping_is_called(store: JobStore, hub: EventHub) -> None:
    job_id = new_job(store)
    pings: list[float] = []
    started = time.monotonic()
    got = list(read_events(store.redis, job_id, hub=hub, idle_timeout=0.6,
                           ping=lambda: pings.append(time.monotonic()), ping_interval=0.2))
    assert [e["seq"] for e in got] == [1]
    assert 0.5 < time.monotonic() - started < 5.0
    assert len(pings) >= 1


def hub_broker_losses() -> float:
    return REGISTRY.get_sample_value("rag_errors_total", {"type": "event_hub_broker"}) or 0.0


def test_hub_counts_a_lost_broker_and_reconnects_after_it_restarts(
    broker_redis: RedisServer,
) -> None:
    hub = EventHub(broker_redis.url)
    token = '{"seq": %d, "type": "token", "job_id": "job-x"}'
    try:
        sub = hub.subscribe("job-x")
        broker_redis.client().publish(keys.job_channel("job-x"), token % 1)
        relayed = sub.get(timeout=2.0)
        assert relayed is not None and relayed["seq"] == 1
        before = hub_broker_losses()
        broker_redis.stop()
        deadline = time.monotonic() + 5
        while hub_broker_losses() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub_broker_losses() > before
        broker_redis.start()
        deadline = time.monotonic() + 10
        got = None
        while got is None and time.monotonic() < deadline:
            broker_redis.client().publish(keys.job_channel("job-x"), token % 2)
            got = sub.get(timeout=0.2)
        assert got is not None and got["seq"] == 2
        assert sub.take_missed() and not sub.take_missed()
    finally:
        hub.stop()


def test_a_malformed_message_does_not_stop_the_hub(
    broker_redis: RedisServer, hub: EventHub
) -> None:
    sub = hub.subscribe("job-y")
    client = broker_redis.client()
    client.publish(keys.job_channel("job-y"), "not json")
    client.publish(keys.job_channel("job-y"), '{"seq": 1, "type": "token", "job_id": "job-y"}')
    got = sub.get(timeout=2.0)  # delivered by the same listening thread, not a restarted one
    assert got is not None and got["seq"] == 1
