"""The fair order across API keys, as the worker's kombu consumer sees the queue: a key with one
question waits for at most one job of each other key with queued work, not for its backlog."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from shared.admission import FAIR_LEVELS
from shared.jobs import JobStore
from shared.settings import Settings, load_settings
from shared.tasks import make_client
from tests.support.servers import RedisServer
from web.submit import submit_job

pytestmark = pytest.mark.integration


def _settings(server: RedisServer) -> Settings:
    return load_settings(broker={"url": server.url})


def _submit(store: JobStore, celery: Celery, owner: str, count: int) -> list[str]:
    return [submit_job(store, celery, owner=owner, query=f"{owner} {n}", top_k=1,
                       request_id=f"{owner}-{n}")["id"] for n in range(count)]


def _delivery_order(celery: Celery, queue: str) -> list[str]:
    """Job ids in the order the transport hands the queue's messages out (as a worker takes
    them one at a time: prefetch 1)."""
    order: list[str] = []
    with celery.connection_for_read() as connection:
        channel: Any = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            order.append(message.payload[1]["job_id"])
    return order


def test_a_single_question_passes_another_keys_backlog(broker_redis: RedisServer) -> None:
    settings = _settings(broker_redis)
    store, celery = JobStore(broker_redis.client(), settings), make_client(settings)
    busy = _submit(store, celery, "busy", 30)
    other = _submit(store, celery, "other", 3)
    single = _submit(store, celery, "single", 1)
    order = _delivery_order(celery, settings.broker.queue)
    assert sorted(order) == sorted(busy + other + single)  # nothing lost, nothing twice
    # each key's first job first (in arrival order), then each key's second, ...
    assert order[:3] == [busy[0], other[0], single[0]]
    assert order[3:5] == [busy[1], other[1]] and order[5:7] == [busy[2], other[2]]
    assert order[7:] == busy[3:]  # a key's own jobs stay in the order it sent them


def test_queue_positions_follow_the_fair_order(broker_redis: RedisServer) -> None:
    settings = _settings(broker_redis)
    store, celery = JobStore(broker_redis.client(), settings), make_client(settings)
    busy = _submit(store, celery, "busy", 2 * FAIR_LEVELS)
    single = _submit(store, celery, "single", 1)
    assert store.get(single[0])["queue_position"] == 2  # behind busy's first job only
    assert [store.get(job)["queue_position"] for job in busy[:3]] == [1, 3, 4]
    assert store.get(busy[-1])["queue_position"] == 2 * FAIR_LEVELS + 1  # last: arrival order
    assert _delivery_order(celery, settings.broker.queue)[:3] == [busy[0], single[0], busy[1]]
