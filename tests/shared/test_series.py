"""Labelled counters have their known series, at 0, from the start of the web (the worker's:
tests/worker/test_tasks.py)."""

from __future__ import annotations

import subprocess
import sys

from shared.error_types import WEB_ERROR_TYPES
from tests.support.gunicorn import REPO
from web.problems import PROBLEM_TYPES

# A fresh interpreter: this one's registry may already hold series other tests created.
WEB = """
from prometheus_client import REGISTRY, generate_latest
from shared.settings import load_settings
from web.app import create_app
create_app(load_settings(broker={"url": "redis://127.0.0.1:9/0"}))
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


def test_known_series_start_at_zero_in_the_web() -> None:
    lines = _exported(WEB)
    assert set(EXPECTED) <= lines
    for error_type in (*PROBLEM_TYPES, *WEB_ERROR_TYPES):  # before any error, each at 0
        assert f'rag_errors_total{{type="{error_type}"}} 0.0' in lines, error_type
