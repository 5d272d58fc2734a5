"""Labelled counters have their known series, at 0, from the start: in the web and the worker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.gunicorn import REPO

# A fresh interpreter: this one's registry may already hold series other tests created.
WEB = """
from prometheus_client import REGISTRY, generate_latest
from shared.settings import load_settings
from web.app import create_app
create_app(load_settings(broker={"url": "redis://127.0.0.1:9/0"}))
print(generate_latest(REGISTRY).decode())
"""
WORKER = """
from prometheus_client import REGISTRY, generate_latest
from shared.series import zero_known_series
from worker.runtime import WORKER_ERROR_TYPES
zero_known_series(WORKER_ERROR_TYPES)
print(generate_latest(REGISTRY).decode())
"""
EXPECTED = [
    'rag_cache_hits_total{path="exact"} 0.0', 'rag_cache_hits_total{path="semantic"} 0.0',
    'rag_jobs_total{status="succeeded"} 0.0', 'rag_jobs_total{status="expired"} 0.0',
    'rag_answers_total{finish_reason="length"} 0.0',
    'rag_cache_writes_skipped_total{reason="empty"} 0.0',
]


def _exported(script: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    return set(done.stdout.splitlines())


@pytest.mark.parametrize(("script", "error_type"), [(WEB, "broker-unavailable"),
                                                    (WORKER, "TimeLimitExceeded")])
def test_known_series_start_at_zero(script: str, error_type: str) -> None:
    lines = _exported(script)
    assert set(EXPECTED) <= lines
    assert f'rag_errors_total{{type="{error_type}"}} 0.0' in lines
