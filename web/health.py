"""Health: liveness, readiness, the workers' device report, and queue statistics. No key needed."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from shared.broker import broker_errors
from shared.errors import BrokerUnavailable
from shared.workers import list_workers
from web.problems import problem, retry_after
from web.resources import resources
from web.schemas import DevicesOut, LiveOut, ProblemOut, ReadyOut, StatsOut

READY_RETRY_AFTER_SECONDS = 5

bp = APIBlueprint("health", __name__, url_prefix="/health", abp_tags=[Tag(name="health")])


def _workers() -> list[dict[str, Any]]:
    return list(list_workers(resources().redis))


def _broker_reachable() -> bool:
    try:
        with broker_errors("broker ping failed"):
            return bool(resources().redis.ping())
    except BrokerUnavailable:
        return False


@bp.get("", responses={200: LiveOut})
def live() -> Response:
    """Liveness: the process answers (touches nothing else)."""
    return jsonify({"status": "ok"})


@bp.get("/ready", responses={200: ReadyOut, 503: ProblemOut})
def ready() -> Response:
    """Ready when the broker answers and a worker is online with its pipeline loaded."""
    broker = _broker_reachable()
    loaded = [w for w in _workers() if w.get("pipeline_loaded")] if broker else []
    checks = {"broker": broker, "workers_ready": len(loaded)}
    if broker and loaded:
        return jsonify({"status": "ready", "checks": checks})
    missing = "the broker is unreachable" if not broker else "no worker has its pipeline loaded"
    return problem(503, missing, slug="not-ready", title="Not ready", checks=checks,
                   headers=retry_after(READY_RETRY_AFTER_SECONDS))


@bp.get("/gpu", responses={200: DevicesOut, 503: ProblemOut})
def gpu() -> Response:
    """The live workers' device reports (device, CUDA, model on device, VRAM used/total)."""
    workers = _workers()
    if not workers:
        return problem(503, "no worker is online", slug="no-worker", title="No worker",
                       headers=retry_after(READY_RETRY_AFTER_SECONDS))
    return jsonify({"workers": [device_report(worker) for worker in workers]})


def device_report(worker: dict[str, Any]) -> dict[str, Any]:
    """One worker's heartbeat as /health/gpu shows it: who it is, then its device fields."""
    found = {name: worker.get(name) for name in ("node", "pid", "pipeline_loaded", "last_seen")}
    return {**found, **(worker.get("device") or {})}


@bp.get("/stats", responses={200: StatsOut, 503: ProblemOut})
def stats() -> Response:
    """Queue depth, workers, jobs by status, the semantic cache and the cost breaker (503 when
    the broker is unreachable)."""
    found = resources()
    body: dict[str, Any] = {
        "queue_depth": found.store.queue_depth(),
        "workers": _workers(),
        "jobs": found.store.status_counts(),
        "cache": found.cache.stats() if found.settings.cache.enabled else None,
        "breaker": found.breaker.state(),
    }
    return jsonify(body)
