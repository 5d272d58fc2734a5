"""End to end on the real CPU stack: a worker with MiniLM retrieval and SmolLM2 generation
answers a job over a freshly built index of the sample corpus."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.events import read_events
from shared.jobs import JobStore
from shared.pricing import cost_eur
from shared.settings import load_settings
from shared.tasks import make_client
from shared.workers import list_workers
from tests.support.celery import REPO_ROOT, WorkerProcess, worker_env
from tests.support.celery import worker_factory as worker_factory  # noqa: F401 (fixture)
from tests.support.servers import RedisServer
from web.submit import submit_job

pytestmark = pytest.mark.integration

MAX_NEW_TOKENS = 12


def build_index(out: Path) -> Path:
    ragq = Path(sys.executable).parent / "ragq"
    subprocess.run([str(ragq), "index", "docs", "README.md", "--out", str(out)],
                   check=True, cwd=REPO_ROOT, capture_output=True, timeout=300)
    return out


def test_real_pipeline_answers_a_job_with_sources_tokens_and_cost(
    broker_redis: RedisServer, worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    index = build_index(tmp_path / "index")
    env = worker_env(broker_redis.url, PIPELINE_BACKEND="transformers",
                     PIPELINE_INDEX_DIR=str(index), PIPELINE_MAX_NEW_TOKENS=str(MAX_NEW_TOKENS),
                     CACHE_ENABLED="false")
    worker = worker_factory(env, "cpu0").wait_ready(timeout=240)
    settings = load_settings(broker={"url": broker_redis.url})
    store = JobStore(broker_redis.client(), settings)
    job = submit_job(store, make_client(settings), owner="o", top_k=3, request_id="req-real",
                     query="How does ragq cancel a running job?")
    events = list(read_events(store.redis, job["id"], idle_timeout=240))
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["status", "status", "sources"] and kinds[-1] == "done"
    chunk_ids = {json.loads(line)["chunk_id"] for line in (index / "chunks.jsonl").open()}
    sources = events[2]["sources"]
    assert len(sources) == 3 and {s["chunk_id"] for s in sources} <= chunk_ids
    record = events[-1]["job"]
    assert record["status"] == "succeeded", record["error"]
    text = "".join(e["text"] for e in events if e["type"] == "token")
    assert text.strip() == record["result"]["answer"].strip() != ""
    m = record["metrics"]
    assert 0 < m["generated_tokens"] <= MAX_NEW_TOKENS and m["prompt_tokens"] > 50
    assert m["cost_eur"] == pytest.approx(
        cost_eur(m["prompt_tokens"], m["generated_tokens"], settings.breaker))
    report = next(r for r in list_workers(store.redis) if r["node"] == worker.node)
    assert report["model_id"] != "fake-model" and report["index_version"]
