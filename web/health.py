"""Health: liveness, readiness, the workers' device report, and queue statistics. No key needed.

Both kinds of worker report a heartbeat (shared/workers.py), each with its `role`: `generation`
(celery_app, answers questions) or `ingest` (ingest_app, indexes uploads). Readiness counts the
generation workers alone; /health/gpu and /health/stats show both, with their role.

Without a key, who runs where (hosts, pids, models, pipeline versions) and what was spent are
shown only with API_HEALTH_DETAIL, which defaults to on while auth is off and off while it is on.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag

from shared.broker import broker_errors
from shared.broker import memory as broker_memory
from shared.errors import BrokerUnavailable
from shared.workers import GENERATION, ROLES, list_workers
from web.problems import problem, retry_after
from web.resources import resources, settings
from web.schemas import DevicesOut, LiveOut, ProblemOut, ReadyOut, StatsOut

READY_RETRY_AFTER_SECONDS = 5
# What /health/gpu shows of a worker without API_HEALTH_DETAIL: no host, pid or model.
PUBLIC_DEVICE_FIELDS = ("role", "pipeline_loaded", "device", "cuda_available", "vram_used_gb",
                        "vram_total_gb")

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
    """Ready when the broker answers and a generation worker is online with its pipeline
    loaded (an ingest worker answers no questions)."""
    broker = _broker_reachable()
    generation = list_workers(resources().redis, GENERATION) if broker else []
    loaded = [w for w in generation if w.get("pipeline_loaded")]
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
    detail = show_detail()
    return jsonify({"workers": [device_report(worker, detail) for worker in workers]})


def device_report(worker: dict[str, Any], detail: bool) -> dict[str, Any]:
    """One worker's heartbeat as /health/gpu shows it: who it is, then its device fields;
    without `detail`, only whether its pipeline is loaded and its device's kind and memory."""
    found = {name: worker.get(name)
             for name in ("node", "pid", "role", "pipeline_loaded", "last_seen")}
    report = {**found, **(worker.get("device") or {})}
    if detail:
        return report
    return {name: report[name] for name in PUBLIC_DEVICE_FIELDS if name in report}


def show_detail() -> bool:
    """API_HEALTH_DETAIL, or when unset: detail only while auth is off (no key, no secrets)."""
    found = settings()
    detail = found.api.health_detail
    return not found.auth.enabled if detail is None else detail


@bp.get("/stats", responses={200: StatsOut, 503: ProblemOut})
def stats() -> Response:
    """Queue depth, workers (and how many of each role), jobs by status, the semantic cache,
    the cost breaker and the broker Redis's memory (503 when the broker is unreachable)."""
    found = resources()
    workers = _workers()
    cache = found.cache.stats() if found.settings.cache.enabled else None
    breaker = found.breaker.state()
    body: dict[str, Any] = {
        "queue_depth": found.store.queue_depth(),
        "workers": workers,
        "workers_by_role": {role: sum(w["role"] == role for w in workers) for role in ROLES},
        "jobs": found.store.status_counts(),
        "cache": cache,
        "breaker": breaker,
        "broker_memory": broker_memory(found.redis),
    }
    if not show_detail():
        body["workers"] = len(workers)
        body["cache"] = cache and {name: cache[name] for name in ("enabled", "reachable")}
        body["breaker"] = {name: breaker[name] for name in ("enabled", "state")}
    return jsonify(body)
