"""Usage by API key, against real redis-servers: GET /v1/usage shows the caller's own figures,
and the metrics carry the key's configured name, never the key."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from shared.cache import scope_for
from shared.jobs import JobStore, Status
from tests.support.servers import RedisServer
from tests.web.test_tenancy import WordsEmbedder
from web import resources
from web.auth import owner_of

pytestmark = pytest.mark.integration

ALICE, BOB = {"X-API-Key": "alice-secret"}, {"X-API-Key": "bob-secret"}
ANSWER = {"answer": "A job system.", "sources": []}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_key_sees_its_own_usage_and_metrics_name_it(
    make_app: Callable[..., Flask], broker_redis: RedisServer, cache_redis: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resources, "shared_embedder", lambda *_: WordsEmbedder())
    app = make_app(broker={"url": broker_redis.url},
                   auth={"enabled": True, "api_keys": ["alice:alice-secret", "bob:bob-secret"],
                         "key_budget_eur": 2.0},
                   cache={"redis_url": cache_redis.url, "verify": False})
    client = app.test_client()
    before = {name: _sample(name, key="alice", **extra) for name, extra in (
        ("rag_key_jobs_total", {"status": "succeeded"}), ("rag_key_cache_hits_total", {}),
        ("rag_key_tokens_total", {"kind": "generated"}), ("rag_key_cost_eur_total", {}))}
    with app.app_context():
        found = resources.resources()
        scope = scope_for({}, found.settings.pipeline.top_k, owner_of("alice-secret"))
        found.cache.store("What is ragq?", scope, None, ANSWER, owner=owner_of("alice-secret"))
        store: JobStore = found.store
    ran = client.post("/v1/jobs", json={"query": "How do leases work?"}, headers=ALICE)
    client.post("/v1/jobs", json={"query": "Why Redis?"}, headers=ALICE)
    assert client.post("/v1/jobs", json={"query": "what is ragq"}, headers=ALICE).status_code == 200
    claim = store.claim(ran.get_json()["id"], "w1")  # a worker answers the first one
    assert claim.record is not None
    store.finish(claim.record["id"], Status.SUCCEEDED, claim.record["attempt"], charge_eur=0.25,
                 result=ANSWER, metrics={"prompt_tokens": 400, "generated_tokens": 30})

    usage = client.get("/v1/usage", headers=ALICE).get_json()

    assert usage["key"] == "alice" and usage["cache_hits"] == 1
    assert usage["jobs"] == {"queued": 1, "running": 0, "succeeded": 2, "failed": 0,
                             "cancelled": 0, "expired": 0}
    assert usage["tokens"] == {"prompt": 400, "generated": 30}
    assert usage["cost_eur"] == 0.25 and usage["window"]["spend_eur"] > 0.25  # + a reservation
    assert usage["window"]["budget_eur"] == 2.0 and usage["limits"]["max_queued"] == 100
    other = client.get("/v1/usage", headers=BOB).get_json()
    assert other["key"] == "bob" and other["cache_hits"] == 0 and other["cost_eur"] == 0.0
    assert sum(other["jobs"].values()) == 0
    assert _sample("rag_key_jobs_total", key="alice", status="succeeded") == \
        before["rag_key_jobs_total"] + 2
    assert _sample("rag_key_cache_hits_total", key="alice") == \
        before["rag_key_cache_hits_total"] + 1
    assert _sample("rag_key_tokens_total", key="alice", kind="generated") == \
        before["rag_key_tokens_total"] + 30
    assert _sample("rag_key_cost_eur_total", key="alice") == before["rag_key_cost_eur_total"] + 0.25
    assert "/v1/usage" in client.get("/openapi.json").get_json()["paths"]


def test_every_configured_key_has_its_usage_series_from_the_start(
    make_app: Callable[..., Flask],
) -> None:
    name = f"fresh-{uuid.uuid4().hex[:8]}"
    make_app(auth={"enabled": True, "api_keys": [f"{name}:its-key"]})
    assert REGISTRY.get_sample_value("rag_key_cache_hits_total", {"key": name}) == 0.0
    assert REGISTRY.get_sample_value("rag_key_jobs_total", {"key": name, "status": "failed"}) == 0.0
