"""`ragq upload`, `collections`, `ask --collection`, `drop` (the installed console script) against
a real stack: gunicorn, a generation worker (fake tokens, real retrieval from collections) and
an ingest worker on real redis-servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.celery import start_ingest_worker, worker_env
from tests.support.stack import Stack, running_stack
from tests.worker.ingestion.pdfs import pdf_bytes

pytestmark = pytest.mark.integration

KEY = "cli-collections-key"
RAGQ = str(Path(sys.executable).with_name("ragq"))
WAIT = 240


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("cli-collections")
    folder = {"COLLECTIONS_DIR": str(root / "collections"), "COLLECTIONS_METRICS_PORT": "0"}
    with running_stack(root, keys=[KEY], tokens=3, web_env=folder,
                       worker_overrides=folder) as started:
        ingest = start_ingest_worker(worker_env(started.broker.url, **folder), root)
        try:
            yield started
        finally:
            ingest.stop()


def run(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAGQ_URL": stack.url, "RAGQ_API_KEY": KEY}
    return subprocess.run([RAGQ, *args], env=env, capture_output=True, text=True, timeout=WAIT)


def test_upload_follows_the_ingest_job_and_ask_answers_from_the_collection(
        stack: Stack, tmp_path: Path) -> None:
    guide = tmp_path / "guide.md"
    guide.write_text("# Guide\n\n## Ports\n\nThe broker listens on port 6390.\n")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not a pdf")
    manual = tmp_path / "manual.pdf"
    manual.write_bytes(pdf_bytes(["Flower listens on port 5555."]))
    done = run(stack, "upload", "team", str(guide), str(broken), str(manual))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "added      guide.md"
    assert lines[1].startswith("failed     broken.pdf: broken.pdf: not a readable PDF")
    assert lines[2] == "added      manual.pdf"
    assert lines[3].startswith("team: index_version ")
    assert "parsed 3/3" in done.stderr and "embedded" in done.stderr
    listed = json.loads(run(stack, "collections", "--json").stdout)
    assert [c["name"] for c in listed] == ["default", "team"]
    asked = run(stack, "ask", "Which port does the broker listen on?", "--collection", "team",
                "--top-k", "1", "--json")
    assert asked.returncode == 0, asked.stderr
    result = json.loads(asked.stdout)["result"]
    assert result["collection"] == "team" and "6390" in result["sources"][0]["text"]
    assert result["index_version"] == lines[3].split()[-1]


def test_refusals_and_drop(stack: Stack, tmp_path: Path) -> None:
    report = tmp_path / "report.docx"
    report.write_bytes(b"PK")
    refused = run(stack, "upload", "other", str(report))
    assert refused.returncode == 3 and "report.docx" in refused.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("Short notes.")
    assert run(stack, "upload", "scratch", str(notes)).returncode == 0
    assert run(stack, "drop", "scratch").returncode == 0
    gone = run(stack, "collection", "scratch")
    assert gone.returncode == 3 and "no collection scratch" in gone.stderr
