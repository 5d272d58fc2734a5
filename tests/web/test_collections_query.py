"""Questions about a collection: real generation worker (fake tokens, real MiniLM retrieval
from the collection) and real ingest worker on one broker; a new version serves from the next
job on, without a restart, while a running job finishes on the version it started with."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.celery import (  # noqa: F401
    WorkerProcess,
    start_ingest_worker,
    worker_env,
    worker_factory,
)
from tests.support.servers import RedisServer
from tests.web.conftest import AUTH, KEY, OTHER_KEY, problem_of
from tests.web.test_collections import events_of, upload, wait_final

pytestmark = pytest.mark.integration

SLOW_TOKENS = {"PIPELINE_FAKE_TOKEN_DELAY": "0.4", "PIPELINE_FAKE_TOKENS": "15"}
V1 = b"# Guide\n\n## Ports\n\nThe broker listens on port 6390."
V2 = b"# Guide\n\n## Ports\n\nThe broker moved: it listens on port 7777 now."
QUESTION = "Which port does the broker listen on?"


@pytest.fixture
def stack(make_app: Callable[..., Flask], broker_redis: RedisServer, tmp_path: Path,
          worker_factory: Callable[..., WorkerProcess],  # noqa: F811
          ) -> Iterator[tuple[FlaskClient, WorkerProcess]]:
    folder = str(tmp_path / "collections")
    app = make_app(broker={"url": broker_redis.url}, cache={"enabled": False},
                   auth={"enabled": True, "api_keys": [KEY, OTHER_KEY]},
                   collections={"dir": folder, "metrics_port": 0})
    env = worker_env(broker_redis.url, COLLECTIONS_DIR=folder, COLLECTIONS_METRICS_PORT="0",
                     **SLOW_TOKENS)
    worker_factory(env, "gen").wait_ready()
    ingest = start_ingest_worker(env, tmp_path)
    yield app.test_client(), ingest
    ingest.stop()


def ask(client: FlaskClient, collection: str, headers: dict[str, str] = AUTH) -> Any:
    return client.post("/v1/jobs", json={"query": QUESTION, "collection": collection,
                                         "top_k": 1}, headers=headers)


def answered(client: FlaskClient, job: dict[str, Any], worker: WorkerProcess) -> dict[str, Any]:
    done = wait_final(client, job, worker)
    assert done["status"] == "succeeded", done
    return done


def test_answers_come_from_the_collections_current_version_without_a_restart(
        stack: tuple[FlaskClient, WorkerProcess], broker_redis: RedisServer) -> None:
    client, ingest = stack
    v1 = wait_final(client, upload(client, "team", [(V1, "guide.md")]).get_json(), ingest)
    first = answered(client, ask(client, "team").get_json(), ingest)
    assert first["result"]["collection"] == "team"
    assert first["result"]["index_version"] == v1["result"]["index_version"]
    assert "6390" in first["result"]["sources"][0]["text"]
    # a job running on v1 while v2 is published finishes on v1; the next job gets v2
    running = ask(client, "team").get_json()
    while not [e for e in events_of(broker_redis, running["id"]) if e["type"] == "sources"]:
        time.sleep(0.05)
    v2 = wait_final(client, upload(client, "team", [(V2, "guide.md")]).get_json(), ingest)
    assert v2["result"]["index_version"] != v1["result"]["index_version"]
    still = answered(client, running, ingest)
    assert still["finished_at"] > v2["finished_at"]  # it was still running when v2 went live
    assert still["result"]["index_version"] == v1["result"]["index_version"]
    assert "6390" in still["result"]["sources"][0]["text"]
    after = answered(client, ask(client, "team").get_json(), ingest)
    assert after["result"]["index_version"] == v2["result"]["index_version"]
    assert "7777" in after["result"]["sources"][0]["text"]


def test_the_default_collection_still_answers_and_others_are_private(
        stack: tuple[FlaskClient, WorkerProcess]) -> None:
    client, ingest = stack
    default = answered(client, client.post("/v1/jobs", json={"query": QUESTION},
                                           headers=AUTH).get_json(), ingest)
    assert default["result"]["collection"] == "default"
    wait_final(client, upload(client, "team", [(V1, "guide.md")]).get_json(), ingest)
    problem_of(ask(client, "team", headers={"X-API-Key": OTHER_KEY}), 404)
    problem_of(ask(client, "nowhere"), 404)


@pytest.fixture
def cached_stack(make_app: Callable[..., Flask], broker_redis: RedisServer,
                 cache_redis: RedisServer, tmp_path: Path,
                 worker_factory: Callable[..., WorkerProcess],  # noqa: F811
                 ) -> Iterator[tuple[FlaskClient, WorkerProcess]]:
    """As `stack`, with the semantic cache on (web and worker on one cache redis-server)."""
    folder = str(tmp_path / "collections")
    app = make_app(broker={"url": broker_redis.url}, cache={"redis_url": cache_redis.url},
                   collections={"dir": folder, "metrics_port": 0})
    env = worker_env(broker_redis.url, CACHE_REDIS_URL=cache_redis.url, COLLECTIONS_DIR=folder,
                     COLLECTIONS_METRICS_PORT="0")
    worker_factory(env, "gen").wait_ready()
    ingest = start_ingest_worker(env, tmp_path)
    yield app.test_client(), ingest
    ingest.stop()


def test_the_cache_answers_a_collection_question_only_from_its_current_version(
        cached_stack: tuple[FlaskClient, WorkerProcess]) -> None:
    client, ingest = cached_stack
    v1 = wait_final(client, upload(client, "team", [(V1, "guide.md")]).get_json(), ingest)
    first = answered(client, ask(client, "team").get_json(), ingest)
    assert first.get("cached") is None
    again = ask(client, "team")
    assert again.status_code == 200 and again.get_json()["cached"] is True
    assert again.get_json()["result"]["index_version"] == v1["result"]["index_version"]
    other = client.post("/v1/jobs", json={"query": QUESTION, "top_k": 1}, headers=AUTH)
    assert other.status_code == 202  # the default collection never sees team's answer
    wait_final(client, upload(client, "team", [(V2, "guide.md")]).get_json(), ingest)
    fresh = ask(client, "team")
    assert fresh.status_code == 202  # v1's answer is not served for v2
    assert "7777" in answered(client, fresh.get_json(), ingest)["result"]["sources"][0]["text"]
