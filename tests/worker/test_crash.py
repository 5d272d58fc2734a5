"""A worker SIGKILLed mid-generation: the job runs again on the restarted worker and succeeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shared.events import read_events
from shared.jobs import JobStore
from shared.settings import load_settings
from shared.tasks import make_client
from tests.support.celery import WorkerProcess, worker_env
from tests.support.celery import worker_factory as worker_factory  # noqa: F401 (fixture)
from tests.support.servers import RedisServer
from web.submit import submit_job

pytestmark = pytest.mark.integration

TOKENS = 30


def test_sigkilled_worker_job_is_redelivered_as_attempt_2_and_succeeds(
    broker_redis: RedisServer, worker_factory: Callable[..., WorkerProcess]
) -> None:
    env = worker_env(broker_redis.url, PIPELINE_FAKE_TOKENS=str(TOKENS),
                     PIPELINE_FAKE_TOKEN_DELAY="0.05")
    first = worker_factory(env, "w1").wait_ready()
    settings = load_settings(broker={"url": broker_redis.url})
    store = JobStore(broker_redis.client(), settings)
    job = submit_job(store, make_client(settings), owner="o", query="crash", top_k=2,
                     request_id="req-crash")
    live = read_events(store.redis, job["id"], idle_timeout=30)
    before = []
    for event in live:
        before.append(event)
        if event["type"] == "token" and event["text"] == "tok4 ":
            break
    first.kill()  # parent and child at once: the message stays unacked in Redis
    worker_factory(env, "w1").wait_ready()
    after = list(live)
    statuses = [e for e in after if e["type"] == "status"]
    assert [(e["status"], e["attempt"]) for e in statuses] == [("queued", 1), ("running", 2)]
    assert statuses[0]["reason"] == "worker lost"
    assert statuses[1]["redelivered"] is True
    assert [e["seq"] for e in before + after] == list(range(1, len(before) + len(after) + 1))
    record = after[-1]["job"]
    assert after[-1]["type"] == "done" and record["status"] == "succeeded"
    assert record["attempt"] == 2 and record["request_id"] == "req-crash"
    assert record["result"]["answer"].split() == [f"tok{i}" for i in range(TOKENS)]
    assert store.status_counts()["succeeded"] == 1 and store.queue_depth() == 0


def test_a_worker_that_cannot_load_its_pipeline_stops_and_leaves_jobs_queued(
    broker_redis: RedisServer, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    settings = load_settings(broker={"url": broker_redis.url})
    store = JobStore(broker_redis.client(), settings)
    job = submit_job(store, make_client(settings), owner="o", query="q", top_k=1, request_id="r")
    env = worker_env(broker_redis.url, PIPELINE_BACKEND="transformers",
                     PIPELINE_INDEX_DIR=str(tmp_path / "missing-index"))
    worker = worker_factory(env, "broken")
    worker.process.wait(timeout=120)
    assert "cannot load the pipeline" in worker.log_tail(20000)
    assert "missing-index" in worker.log_tail(20000)
    assert store.get(job["id"])["status"] == "queued"


def test_a_worker_whose_pipeline_load_raises_a_non_ragq_error_stops_too(
    broker_redis: RedisServer, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    # A real index whose manifest lacks a field the loader reads: a KeyError, not a RagqError.
    import json

    from shared.embedding import Embedder
    from shared.settings import PipelineSettings
    from worker.pipeline.index import MANIFEST, build_index

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Title\n\nSome text about ragq.\n", encoding="utf-8")
    index = tmp_path / "index"
    build_index([corpus], index, PipelineSettings(), Embedder("minilm", "cpu"), progress=False)
    manifest = json.loads((index / MANIFEST).read_text(encoding="utf-8"))
    del manifest["embedding_model"]
    (index / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")

    settings = load_settings(broker={"url": broker_redis.url})
    store = JobStore(broker_redis.client(), settings)
    job = submit_job(store, make_client(settings), owner="o", query="q", top_k=1, request_id="r")
    env = worker_env(broker_redis.url, PIPELINE_BACKEND="transformers",
                     PIPELINE_INDEX_DIR=str(index), PIPELINE_DEVICE="cpu")
    worker = worker_factory(env, "broken-keyerror")
    worker.process.wait(timeout=120)
    log_tail = worker.log_tail(20000)
    assert "cannot load the pipeline" in log_tail
    assert "KeyError" in log_tail and "embedding_model" in log_tail
    assert store.get(job["id"])["status"] == "queued"
