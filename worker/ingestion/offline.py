"""`ragq index SOURCES --collection NAME`: a bulk build into a collection without the service's
web or ingest worker, through the same incremental, atomic path as an ingest job.

The collection's Redis record is written as an ingest job writes it, so the broker must be
reachable. A collection that does not exist yet is created for the owner of requests without
auth (`anonymous`); with auth on, create it through the API first (any upload), then bulk-load.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.broker import connect
from shared.collections import CollectionRegistry
from shared.embedding import Embedder
from shared.ingest_jobs import Action, IngestJobs, Upload
from shared.settings import Settings
from worker.ingestion.build import VersionBuilder
from worker.ingestion.parse import SUFFIXES
from worker.ingestion.runner import IngestRunner, Progress

ANONYMOUS = "anonymous"  # the owner web/auth.py gives requests when auth is off


def uploads_under(sources: list[Path]) -> list[Upload]:
    """Every .md/.txt/.pdf/.html file under `sources`, named relative to the folder given."""
    return [Upload(name, SUFFIXES[path.suffix.lower()], path.read_bytes())
            for path, name in _files(sources)]


def _files(sources: list[Path]) -> Iterator[tuple[Path, str]]:
    for root in sources:
        if root.is_file():
            yield root, root.name
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix.lower() in SUFFIXES:
                yield path, path.relative_to(root).as_posix()


def index_collection(sources: list[Path], name: str, settings: Settings, device: str,
                     progress: Progress) -> dict[str, Any]:
    """Add (or replace) the documents under `sources` in collection `name`; the result an
    ingest job would record."""
    client = connect(settings.broker)
    registry = CollectionRegistry(client)
    if not registry.exists(name):
        registry.claim(name, ANONYMOUS)
    builder = VersionBuilder(settings.pipeline, Embedder(settings.pipeline.embedding_model, device))
    runner = IngestRunner(settings, IngestJobs(client, settings.jobs), registry, builder)
    outcomes: list[dict[str, Any]] = []
    return runner.apply(name, Action.ADD, uploads_under(sources), [], outcomes, progress)
