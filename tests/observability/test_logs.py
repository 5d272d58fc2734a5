"""Structured logs read from the real processes' output: a job's lines carry the client's
request id and the job id; no API key and no question text is logged at INFO."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.observability.conftest import API_KEY, Stack

pytestmark = pytest.mark.integration

REQUEST_ID = "obs-trace-4b1d"
QUESTION = "Which zebra-striped lighthouse guards the northern harbour?"
WRONG_KEY = "not-a-key-but-secret-9c2e"


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects among a process's output lines (Celery's banner is plain text)."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def _job_lines(stack: Stack, job_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in json_lines(stack.worker.log_path) if line.get("job_id") == job_id]
        if lines:
            return lines
        time.sleep(0.2)
    raise AssertionError(f"no worker line with job_id {job_id}: {stack.worker.log_tail()}")


def test_a_jobs_worker_lines_carry_the_clients_request_id(stack: Stack) -> None:
    status, body = stack.post("/query", {"query": QUESTION}, headers={"X-Request-ID": REQUEST_ID})
    assert status == 200, body
    assert body["request_id"] == REQUEST_ID
    lines = _job_lines(stack, body["job_id"])
    assert all(line["request_id"] == REQUEST_ID for line in lines), lines
    assert all(line["service"] == "worker" and line["level"] for line in lines)


def test_no_key_or_question_text_above_debug(stack: Stack) -> None:
    status, _ = stack.post("/query", {"query": QUESTION})
    assert status == 200
    status, _ = stack.post("/query", {"query": QUESTION}, headers={"X-API-Key": WRONG_KEY})
    assert status == 401
    stack.worker.stop()  # flush: everything the worker wrote is on disk
    for path in (stack.worker.log_path, stack.web.log_path):
        text = path.read_text(errors="replace")
        assert json_lines(path), f"{path.name} holds no JSON log line"
        for secret in (API_KEY, WRONG_KEY, QUESTION, QUESTION.lower()):
            assert secret not in text, f"{secret!r} logged in {path.name}"
