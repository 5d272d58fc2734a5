"""Worker heartbeats: each worker process reports itself in a hash that expires when it dies.

Generation workers and ingest workers both report, each under its `role`; a report written
before roles existed is a generation worker's.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, cast

import redis

from shared import keys
from shared.broker import broker_errors

HEARTBEATS_PER_TTL = 3  # a report outlives this many missed heartbeats
JSON_FIELDS = ("device",)
INT_FIELDS = ("pid", "parent_pid", "max_batch", "jobs_in_flight")
PIPELINE_FIELDS = ("index_version", "model_id", "prompt_version")
GENERATION, INGEST = "generation", "ingest"  # roles: celery_app's workers, ingest_app's
ROLES = (GENERATION, INGEST)


def process_report(node: str, role: str) -> dict[str, Any]:
    """Who reports: the Celery node, this pool child's pid and its parent's, and its role."""
    return {"node": node, "pid": os.getpid(), "parent_pid": os.getppid(), "role": role}


@broker_errors()
def write_heartbeat(redis_client: redis.Redis, report: dict[str, Any], interval: float) -> None:
    """Store `report` (node, pid, pipeline_loaded, device, ...) for HEARTBEATS_PER_TTL intervals."""
    stored = {name: json.dumps(value) if name in JSON_FIELDS else str(value)
              for name, value in report.items()}
    stored["last_seen"] = repr(time.time())
    key = keys.worker(report["node"])
    with redis_client.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=cast("dict[Any, Any]", stored))
        pipe.pexpire(key, int(interval * HEARTBEATS_PER_TTL * 1000))
        pipe.execute()


@broker_errors()
def publish_pipeline_info(redis_client: redis.Redis, info: dict[str, str]) -> None:
    """What the workers serve (index_version, model_id, prompt_version): scopes cache entries."""
    fields = {name: info[name] for name in PIPELINE_FIELDS}
    redis_client.hset(keys.PIPELINE_INFO, mapping=cast("dict[Any, Any]", fields))


@broker_errors()
def pipeline_info(redis_client: redis.Redis) -> dict[str, str]:
    """The last published pipeline info; empty before any worker loaded its pipeline."""
    return cast(dict[str, str], redis_client.hgetall(keys.PIPELINE_INFO))


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    report: dict[str, Any] = dict(raw)
    for name in JSON_FIELDS:
        report[name] = json.loads(raw[name]) if raw.get(name) else {}
    for name in INT_FIELDS:
        report[name] = int(raw[name]) if raw.get(name) else None
    report["pipeline_loaded"] = raw.get("pipeline_loaded") == "True"
    report["role"] = raw.get("role") or GENERATION
    report["last_seen"] = float(raw.get("last_seen", 0.0))
    return report


@broker_errors()
def list_workers(redis_client: redis.Redis, role: str | None = None) -> list[dict[str, Any]]:
    """Live workers' reports (node, pid, role, pipeline_loaded, device, index_version, model_id,
    prompt_version, last_seen), sorted by node; only those of `role` when given."""
    names = sorted(redis_client.scan_iter(match=keys.WORKERS_PATTERN, count=100))
    with redis_client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        raws = cast(list[dict[str, str]], pipe.execute())
    reports = [_decode(raw) for raw in raws if raw]
    return [report for report in reports if role is None or report["role"] == role]
