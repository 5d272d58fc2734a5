"""The collections API through the Flask test client, with a real redis-server and a real
ingest worker process (celery -A worker.ingest_app) embedding with MiniLM."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from shared import keys
from tests.support.celery import WorkerProcess, start_ingest_worker, worker_env
from tests.support.servers import RedisServer, free_port
from tests.web.conftest import AUTH, KEY, OTHER_KEY, problem_of
from tests.worker.ingestion.pdfs import pdf_bytes

pytestmark = pytest.mark.integration

READER_KEY = "test-key-reader"
FINAL_WAIT_SECONDS = 180.0
GUIDE = b"# Guide\n\n## Ports\n\nThe broker listens on port 6390 and the cache on 6391."
LONG_TEXT = " ".join(f"Sentence {n} says that shard {n} lives on node {n % 7}."
                     for n in range(3000)).encode()


@pytest.fixture
def stack(make_app: Callable[..., Flask], broker_redis: RedisServer, tmp_path: Path
          ) -> Iterator[tuple[Flask, WorkerProcess]]:
    """The web app and one ingest worker on the same broker and collections folder."""
    folder = str(tmp_path / "collections")
    collections: dict[str, Any] = {"dir": folder, "max_upload_bytes": 200_000, "metrics_port": 0}
    app = make_app(broker={"url": broker_redis.url},
                   auth={"enabled": True, "api_keys": [KEY, OTHER_KEY, READER_KEY]},
                   collections={**collections, "reader_keys": [READER_KEY]})
    env = worker_env(broker_redis.url, COLLECTIONS_DIR=folder, COLLECTIONS_METRICS_PORT="0")
    worker = start_ingest_worker(env, tmp_path)
    yield app, worker
    worker.stop()


def wait_final(client: FlaskClient, job: dict[str, Any], worker: WorkerProcess
               ) -> dict[str, Any]:
    deadline = time.monotonic() + FINAL_WAIT_SECONDS
    while time.monotonic() < deadline:
        record = client.get(job["links"]["self"], headers=AUTH).get_json()
        if record["status"] in ("succeeded", "failed"):
            return dict(record)
        time.sleep(0.2)
    raise TimeoutError(f"ingest job still {record['status']}: {worker.log_tail()}")


def events_of(server: RedisServer, job_id: str) -> list[dict[str, Any]]:
    """The job's stored events, in order."""
    entries = cast(list[tuple[str, dict[str, str]]],
                   server.client().xrange(keys.job_events(job_id)))
    return [json.loads(fields["e"]) for _, fields in entries]


def upload(client: FlaskClient, name: str, files: list[tuple[bytes, str]],
           headers: dict[str, str] = AUTH) -> Any:
    data = {"files": [(io.BytesIO(content), filename) for content, filename in files]}
    return client.post(f"/v1/collections/{name}/documents", data=data, headers=headers,
                       content_type="multipart/form-data")


def test_upload_is_an_ingest_job_and_the_collection_lists_its_documents(
        stack: tuple[Flask, WorkerProcess], broker_redis: RedisServer) -> None:
    app, worker = stack
    client = app.test_client()
    response = upload(client, "team", [(GUIDE, "guide.md"), (b"%PDF-1.4 broken", "scan.pdf"),
                                       (pdf_bytes(["Flower runs on port 5555."]), "ops.pdf"),
                                       (b"<p>Grafana on 3000</p><script>x</script>", "g.html")])
    assert response.status_code == 202, response.get_data(as_text=True)
    job = response.get_json()
    assert job["kind"] == "ingest" and job["status"] == "queued"
    # an ingest job is no question: the job routes do not know it
    problem_of(client.get(f"/v1/jobs/{job['id']}", headers=AUTH), 404)
    done = wait_final(client, job, worker)
    assert done["status"] == "succeeded", done
    outcomes = {d["name"]: d["status"] for d in done["result"]["documents"]}
    assert outcomes == {"guide.md": "added", "scan.pdf": "failed", "ops.pdf": "added",
                        "g.html": "added"}
    found = client.get("/v1/collections/team", headers=AUTH).get_json()
    assert found["index_version"] == done["result"]["index_version"]
    assert found["documents"] == 3 and found["chunks"] >= 3
    assert sorted(d["name"] for d in found["document_list"]) == ["g.html", "guide.md", "ops.pdf"]
    events = events_of(broker_redis, job["id"])
    assert {"parsed", "embedded"} <= {e.get("stage") for e in events if e["type"] == "progress"}
    assert events[-1]["type"] == "done"
    # another key sees nothing; a reader key may read but not write
    problem_of(client.get("/v1/collections/team", headers={"X-API-Key": OTHER_KEY}), 404)
    problem_of(client.get(job["links"]["self"], headers={"X-API-Key": OTHER_KEY}), 404)
    reader = {"X-API-Key": READER_KEY}
    assert client.get("/v1/collections/team/documents", headers=reader).status_code == 200
    problem_of(upload(client, "team", [(GUIDE, "guide.md")], headers=reader), 404)
    # deleting a document is a job that publishes a version without it
    ops = next(d["id"] for d in found["document_list"] if d["name"] == "ops.pdf")
    deleted = client.delete(f"/v1/collections/team/documents/{ops}", headers=AUTH)
    assert deleted.status_code == 202
    after = wait_final(client, deleted.get_json(), worker)
    assert after["result"]["documents"][0]["status"] == "removed"
    names = [d["name"] for d in client.get("/v1/collections/team/documents",
                                           headers=AUTH).get_json()["documents"]]
    assert names == ["g.html", "guide.md"]


def test_bad_uploads_are_problems_and_queue_nothing(stack: tuple[Flask, WorkerProcess],
                                                     broker_redis: RedisServer) -> None:
    app, _ = stack
    client = app.test_client()
    unsupported = problem_of(upload(client, "team", [(b"PK", "report.docx")]), 415)
    assert "report.docx" in unsupported["detail"]
    problem_of(upload(client, "team", [(b"x" * 250_000, "big.txt")]), 413)
    problem_of(upload(client, "default", [(GUIDE, "guide.md")]), 409)
    problem_of(client.post("/v1/collections/Bad Name!/documents", json={"title": "a",
                                                                      "text": "b"},
                           headers=AUTH), 422)
    problem_of(client.post("/v1/collections/team/documents", data="x", headers=AUTH,
                           content_type="text/plain"), 415)
    assert broker_redis.client().llen("ragq.ingest") == 0


def test_json_document_and_collection_delete(stack: tuple[Flask, WorkerProcess]) -> None:
    app, worker = stack
    client = app.test_client()
    response = client.post("/v1/collections/notes/documents", headers=AUTH,
                           json={"title": "release", "text": "Version 2 ships collections."})
    assert response.status_code == 202
    assert wait_final(client, response.get_json(), worker)["status"] == "succeeded"
    listed = client.get("/v1/collections", headers=AUTH).get_json()["collections"]
    assert [c["name"] for c in listed] == ["default", "notes"]
    dropped = client.delete("/v1/collections/notes", headers=AUTH)
    assert dropped.status_code == 202
    problem_of(client.get("/v1/collections/notes", headers=AUTH), 404)
    assert wait_final(client, dropped.get_json(), worker)["status"] == "succeeded"


def pool_child(worker: WorkerProcess) -> int:
    """The pid of the ingest worker's pool child (the process that runs the job)."""
    deadline = time.monotonic() + FINAL_WAIT_SECONDS
    while time.monotonic() < deadline:
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise TimeoutError(f"no pool child: {worker.log_tail()}")


def wait_until_embedding(server: RedisServer, job_id: str, worker: WorkerProcess) -> None:
    """Block until the job is embedding, part way through."""
    deadline = time.monotonic() + FINAL_WAIT_SECONDS
    while time.monotonic() < deadline:
        embedded = [e for e in events_of(server, job_id) if e.get("stage") == "embedded"]
        if embedded and embedded[-1]["done"] < embedded[-1]["total"]:
            return
        time.sleep(0.05)
    raise TimeoutError(worker.log_tail())


def test_a_crash_mid_job_is_redelivered_and_never_publishes_half_an_index(
        stack: tuple[Flask, WorkerProcess], broker_redis: RedisServer, tmp_path: Path) -> None:
    app, worker = stack
    client = app.test_client()
    first = wait_final(client, upload(client, "team", [(GUIDE, "guide.md")]).get_json(), worker)
    job = upload(client, "team", [(LONG_TEXT, "shards.txt")]).get_json()
    wait_until_embedding(broker_redis, job["id"], worker)
    os.kill(pool_child(worker), signal.SIGKILL)
    found = client.get("/v1/collections/team", headers=AUTH).get_json()
    assert found["index_version"] == first["result"]["index_version"]
    done = wait_final(client, job, worker)
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    assert done["result"]["index_version"] != first["result"]["index_version"]
    statuses = [e for e in events_of(broker_redis, job["id"]) if e["type"] == "status"]
    assert [s.get("redelivered") for s in statuses] == [None, False, None, True]
    assert statuses[2]["status"] == "queued" and statuses[2]["reason"] == "worker lost"
    versions = tmp_path / "collections" / "team" / "versions"
    assert not [p for p in versions.iterdir() if p.name.startswith(".building-")]


def test_a_whole_ingest_worker_killed_mid_job_is_recovered_by_the_next_ones_reaper(
        stack: tuple[Flask, WorkerProcess], broker_redis: RedisServer, tmp_path: Path) -> None:
    app, worker = stack
    client = app.test_client()
    job = upload(client, "team", [(LONG_TEXT, "shards.txt")]).get_json()
    wait_until_embedding(broker_redis, job["id"], worker)
    # parent and child at once: Celery gives the message back only after its visibility
    # timeout (JOBS_HARD_TIME_LIMIT_SECONDS + 60 = 360 s), longer than this test waits
    worker.kill()
    assert client.get(job["links"]["self"], headers=AUTH).get_json()["status"] == "running"
    env = worker_env(broker_redis.url, COLLECTIONS_DIR=str(tmp_path / "collections"),
                     COLLECTIONS_METRICS_PORT="0")
    second = start_ingest_worker(env, tmp_path, "ingest2")
    try:
        done = wait_final(client, job, second)
    finally:
        second.stop()
    assert done["status"] == "succeeded" and done["attempt"] == 2, done
    statuses = [e for e in events_of(broker_redis, job["id"]) if e["type"] == "status"]
    assert [s["status"] for s in statuses] == ["queued", "running", "queued", "running"]
    assert statuses[2]["reason"] == "worker lost"


def test_the_ingest_worker_reports_a_heartbeat_that_health_shows_by_role(
        make_app: Callable[..., Flask], broker_redis: RedisServer, tmp_path: Path) -> None:
    folder = str(tmp_path / "collections")
    client = make_app(broker={"url": broker_redis.url}, collections={"dir": folder},
                      cache={"enabled": False}).test_client()
    env = worker_env(broker_redis.url, COLLECTIONS_DIR=folder, COLLECTIONS_METRICS_PORT="0")
    worker = start_ingest_worker(env, tmp_path).wait_ready()
    try:
        stats = client.get("/health/stats").get_json()
        gpu = client.get("/health/gpu").get_json()
        ready = client.get("/health/ready")
    finally:
        worker.stop()
    [report] = stats["workers"]
    assert report["role"] == "ingest" and report["node"] == worker.node
    assert report["parent_pid"] == worker.pid and report["pipeline_loaded"] is False
    assert report["jobs_in_flight"] == 0
    assert stats["workers_by_role"] == {"generation": 0, "ingest": 1}
    assert [(w["role"], w["node"]) for w in gpu["workers"]] == [("ingest", worker.node)]
    # an ingest worker answers no question: the service is not ready on it alone
    assert problem_of(ready, 503)["checks"] == {"broker": True, "workers_ready": 0}
    time.sleep(2.0)  # its report outlives three missed heartbeats (WORKER_HEARTBEAT_SECONDS 0.5)
    after = client.get("/health/stats").get_json()
    assert after["workers"] == [] and after["workers_by_role"]["ingest"] == 0


def test_an_upload_with_the_broker_down_is_a_503(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()  # its broker is a closed port
    problem = problem_of(upload(client, "team", [(GUIDE, "guide.md")], headers={}), 503)
    assert problem["type"] == "/problems/broker-unavailable"


def test_the_ingest_worker_exports_its_metrics(make_app: Callable[..., Flask],
                                               broker_redis: RedisServer, tmp_path: Path) -> None:
    folder, port = str(tmp_path / "collections"), free_port()
    client = make_app(broker={"url": broker_redis.url},
                      collections={"dir": folder}).test_client()
    env = worker_env(broker_redis.url, COLLECTIONS_DIR=folder, COLLECTIONS_METRICS_PORT=str(port))
    worker = start_ingest_worker(env, tmp_path)
    try:
        job = upload(client, "team", [(GUIDE, "guide.md"), (b"", "empty.txt")], headers={})
        done = wait_final(client, job.get_json(), worker)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        worker.stop()
    families = {family.name: family for family in text_string_to_metric_families(text.decode())}
    outcomes = {s.labels["outcome"]: s.value for s in families["rag_ingest_documents"].samples
                if s.name == "rag_ingest_documents_total"}
    assert outcomes["added"] == 1 and outcomes["failed"] == 1 and outcomes["removed"] == 0
    chunks = [s for s in families["rag_collection_chunks"].samples
              if s.labels["collection"] == "team"]
    assert done["status"] == "succeeded"
    assert chunks[0].value == client.get("/v1/collections/team").get_json()["chunks"]
    count = [s for s in families["rag_ingest_seconds"].samples
             if s.name == "rag_ingest_seconds_count"]
    assert count[0].value == 1
