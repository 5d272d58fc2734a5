"""A real Prometheus scrapes a running web (gunicorn, several workers) and worker after real
traffic: counts agree with what was sent, also across gunicorn workers that were replaced
half-way, and every dashboard and alert query runs."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import keys
from shared.error_types import INGEST_ERROR_TYPES, WEB_ERROR_TYPES, WORKER_ERROR_TYPES
from tests.deploy.files import alert_rules, dashboard_queries
from tests.observability.conftest import GUNICORN_WORKERS, Stack
from tests.observability.flower import PASSWORD, Flower
from tests.observability.prometheus import Prometheus
from tests.support.celery import worker_env
from web.problems import PROBLEM_TYPES

pytestmark = pytest.mark.integration

QUESTIONS = [f"What does observability probe number {n} report?" for n in range(4)]
REPEATS = 2  # the first question again: answered by the semantic cache
SETTLE_SECONDS = 3.0  # a few 1 s scrapes
# Runs, but may hold here: each new gunicorn worker loads the cache's embedding model on its
# first query, which on a busy CPU alone can pass the threshold.
TIMING_ALERTS = {"RagqP95LatencyHigh"}
# Bounds for a loaded machine, not expectations: each wait returns as soon as it holds.
BOOT_SECONDS = 180.0
WAIT_SECONDS = 90.0
QUERY_ENDPOINT = 'rag_requests_total{job="web",endpoint="/query",method="POST"}'


@pytest.fixture
def flower(tmp_path: Path, stack: Stack) -> Iterator[Flower]:
    server = Flower(tmp_path, worker_env(stack.broker.url)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus(tmp_path: Path, stack: Stack, flower: Flower) -> Iterator[Prometheus]:
    targets = {"web": stack.web.port, "worker": stack.metrics_port, "flower": flower.port,
               "ingest": stack.ingest_metrics_port}
    server = Prometheus(tmp_path / "prometheus",
                        {job: f"127.0.0.1:{port}" for job, port in targets.items()},
                        flower_password=PASSWORD).start()
    try:
        # Scrape everything before the traffic, so rates see it arrive.
        assert server.wait_for("count(up == 1)", len(targets)) == len(targets)
        time.sleep(SETTLE_SECONDS)
        yield server
    finally:
        server.stop()


def _ask(stack: Stack, questions: list[str]) -> None:
    for question in questions:
        status, body = stack.post("/query", {"query": question})
        assert status == 200, body


def _replace_gunicorn_workers(stack: Stack) -> None:
    """Stop every gunicorn worker; the arbiter forks new ones. Counts of the dead must stay."""
    old = set(stack.web.worker_pids())
    for pid in old:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + BOOT_SECONDS
    while not _replaced(stack, old):
        assert time.monotonic() < deadline, "gunicorn did not replace its workers"
        time.sleep(0.2)
    # A fresh worker answers only once it has booted: 12-15 s on a loaded 2-core machine.
    stack.web.wait_live(timeout=BOOT_SECONDS)


def _replaced(stack: Stack, old: set[int]) -> bool:
    pids = set(stack.web.worker_pids())
    return len(pids) == GUNICORN_WORKERS and not pids & old


def _wait_cached(stack: Stack, entries: int) -> None:
    """The worker writes the cache just after it marks the job succeeded: wait for the writes."""
    cache = stack.cache.client()
    deadline = time.monotonic() + WAIT_SECONDS
    while cache.xlen(keys.CACHE_LOG) < entries:
        assert time.monotonic() < deadline, "the worker did not cache its answers"
        time.sleep(0.1)


def _ingest(stack: Stack) -> None:
    """One document into a collection: the ingest panels' series (documents, time, chunks)."""
    status, job = stack.post("/v1/collections/probe/documents",
                             {"title": "Probe", "text": "The probe reports its own health."})
    assert status == 202, job
    deadline = time.monotonic() + WAIT_SECONDS
    while (record := stack.get_json(job["links"]["self"]))["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, f"ingest job still {record['status']}: " \
            f"{stack.ingest.log_tail()}"
        time.sleep(0.3)
    assert record["status"] == "succeeded", record


def _send_traffic(stack: Stack) -> None:
    _ingest(stack)
    half = len(QUESTIONS) // 2
    _ask(stack, QUESTIONS[:half])
    _replace_gunicorn_workers(stack)
    _ask(stack, QUESTIONS[half:])
    _wait_cached(stack, len(QUESTIONS))
    for _ in range(REPEATS):
        status, body = stack.post("/query", {"query": QUESTIONS[0]})
        assert status == 200 and body["cached"], body


def test_counts_agree_and_every_query_runs(stack: Stack, prometheus: Prometheus) -> None:
    _assert_fixed_error_types_start_at_zero(prometheus)
    _send_traffic(stack)
    sent = len(QUESTIONS) + REPEATS
    assert prometheus.wait_for(f"sum({QUERY_ENDPOINT})", sent) == sent
    jobs = len(QUESTIONS)
    assert prometheus.wait_for('sum(rag_jobs_submitted_total{job="web"})', jobs) == jobs
    assert prometheus.wait_for('sum(rag_jobs_total{job="worker",status="succeeded"})', jobs) == jobs
    assert prometheus.wait_for('sum(rag_cache_hits_total{job="web"})', REPEATS) == REPEATS
    assert prometheus.wait_for('max(rag_workers_online{job="web"})', 1) == 1
    assert prometheus.wait_for('max(rag_queue_depth{job="web"})', 0) == 0
    time.sleep(SETTLE_SECONDS)
    _assert_targets_up(prometheus)
    _assert_dashboard_queries_return_series(prometheus)
    _assert_alerts_run_and_stay_quiet(prometheus)
    _assert_cache_outage_raises_its_alert(stack, prometheus)


def _assert_fixed_error_types_start_at_zero(prometheus: Prometheus) -> None:
    """Before any traffic, each process exports every fixed rag_errors_total type it counts, at
    0: an alert or panel on one sees the series before its first error."""
    fixed = {"web": (*PROBLEM_TYPES, *WEB_ERROR_TYPES), "worker": WORKER_ERROR_TYPES,
             "ingest": INGEST_ERROR_TYPES}
    exported = {(sample["metric"]["job"], sample["metric"]["type"]): float(sample["value"][1])
                for sample in prometheus.query("rag_errors_total")}
    assert {(job, str(name)): exported.get((job, str(name)))
            for job, names in fixed.items() for name in names
            if exported.get((job, str(name))) != 0.0} == {}


def _assert_targets_up(prometheus: Prometheus) -> None:
    targets = prometheus.api("targets")["activeTargets"]
    assert {target["labels"]["job"]: target["health"] for target in targets} == {
        "web": "up", "worker": "up", "flower": "up", "ingest": "up"}


def _assert_dashboard_queries_return_series(prometheus: Prometheus) -> None:
    queries = dashboard_queries()
    empty = [name for name, expr in queries.items() if not prometheus.query(expr)]
    assert not empty, f"dashboard queries with no data: {empty}"
    p95 = prometheus.query(queries["Query latency p50 / p95 / p99 / B"])
    assert math.isfinite(float(p95[0]["value"][1])), p95  # the traffic's latencies, not NaN


def _assert_alerts_run_and_stay_quiet(prometheus: Prometheus) -> None:
    firing = {rule["alert"]: prometheus.query(rule["expr"]) for rule in alert_rules()}
    assert {name: result for name, result in firing.items()
            if result and name not in TIMING_ALERTS} == {}
    groups = prometheus.api("rules")["groups"]
    health = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert set(health) == {rule["alert"] for rule in alert_rules()}
    assert set(health.values()) == {"ok"}, health


def _assert_cache_outage_raises_its_alert(stack: Stack, prometheus: Prometheus) -> None:
    """With the cache Redis gone, queries are still answered, and the alert's condition holds.

    A counter series is born at its first error, and rate() needs a second sample that grew:
    as in a real outage, the traffic goes on.
    """
    stack.cache.stop()
    expr = next(rule["expr"] for rule in alert_rules() if rule["alert"] == "RagqCacheRedisDown")
    deadline = time.monotonic() + WAIT_SECONDS
    attempt = 0
    while not prometheus.query(expr):
        assert time.monotonic() < deadline, f"{expr} never held during a cache outage"
        attempt += 1
        _ask(stack, [f"Is question {attempt} answered while the cache Redis is down?"])
        time.sleep(1.0)
