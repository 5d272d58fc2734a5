"""The life of one ingest job: claim, parse each upload, build the next version, publish it.

Each document's outcome is recorded (added, replaced, unchanged, removed, failed with a problem
naming the file); one bad file never stops the others. The collection's previous version keeps
serving until the new one is complete and published; a job that fails, or a worker that dies,
publishes nothing. The Redis record is written after the disk switch, and a job run again after
a crash finds the switch done (its documents unchanged) and writes the record then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded

from shared import metrics
from shared.collections import CollectionRegistry, document_id
from shared.error_types import ErrorType
from shared.errors import DocumentRejected, InvalidTransition, JobNotFound, RagqError
from shared.ingest_jobs import Action, IngestJobRecord, IngestJobs, Upload
from shared.jobs import Outcome, Status
from shared.settings import Settings
from worker.ingestion.build import Built, StoredDocument, VersionBuilder, load_documents
from worker.ingestion.parse import SUFFIXES, parse, suffix_of
from worker.ingestion.versions import CollectionFolder
from worker.pipeline.index import MANIFEST
from worker.tickers import Lease

log = logging.getLogger(__name__)

ADDED, REPLACED, UNCHANGED, REMOVED, FAILED = "added", "replaced", "unchanged", "removed", "failed"
DOCUMENT_OUTCOMES = (ADDED, REPLACED, UNCHANGED, REMOVED, FAILED)  # rag_ingest_documents_total
Progress = Callable[[str, int, int], None]  # (stage, done, total)
DEFAULT_NODE = "ingest"  # the lease holder's name where no Celery node runs the jobs


class NothingIndexed(RagqError):
    """Every document of the job failed: no version was built."""


class IngestRunner:
    """Runs ingest jobs, one at a time, with this process's embedder."""

    def __init__(self, settings: Settings, jobs: IngestJobs, registry: CollectionRegistry,
                 builder: VersionBuilder, node: str = DEFAULT_NODE) -> None:
        self.settings = settings
        self.jobs = jobs
        self.registry = registry
        self.builder = builder
        self.node = node  # the Celery node name: whose lease holds the jobs it runs
        self.running: str | None = None  # the job it runs now (the heartbeat reports it)

    def run_job(self, job_id: str) -> Status | Outcome:
        """Claim and run the job under a lease; returns its final status, or `drop` when there
        was none."""
        record = self.jobs.claim(job_id, self.node)
        if record is None:
            return Outcome.DROP
        self.running = job_id
        try:
            with Lease(self.jobs.leases, job_id, self.node, record["attempt"]):
                return self._run_claimed(record)
        finally:
            self.running = None

    def _run_claimed(self, record: IngestJobRecord) -> Status | Outcome:
        started = time.perf_counter()
        outcomes: list[dict[str, Any]] = []
        try:
            result = self._run(record, outcomes)
        except SoftTimeLimitExceeded:
            limit = self.settings.jobs.soft_time_limit_seconds
            return self._fail(record, ErrorType.TIME_LIMIT_EXCEEDED, f"ran longer than {limit}s",
                              outcomes)
        except Exception as error:  # the task boundary: the collection keeps its last version
            log.exception("ingest job failed")
            return self._fail(record, type(error).__name__, str(error), outcomes)
        metrics.INGEST_SECONDS.observe(time.perf_counter() - started)
        return self._finish(record, Status.SUCCEEDED, result)

    def _run(self, record: IngestJobRecord, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
        job_id = record["id"]
        action = Action(record["action"])
        uploads = self.jobs.uploads(job_id) if action == Action.ADD else []

        def progress(stage: str, done: int, total: int) -> None:
            self.jobs.progress(job_id, stage, done, total)

        return self.apply(record["collection"], action, uploads, record["documents"], outcomes,
                          progress)

    def apply(self, name: str, action: Action, uploads: list[Upload], ids: list[str],
              outcomes: list[dict[str, Any]], progress: Progress) -> dict[str, Any]:
        """Change collection `name` (add `uploads`, remove documents `ids`, or drop it) and
        publish its next version; the result an ingest job records. `outcomes` fills as it goes."""
        folder = CollectionFolder(self.settings.collections.dir, name)
        with folder.locked():
            if action == Action.DROP:
                folder.remove()
                return {"collection": name, "index_version": None, "documents": []}
            previous = folder.current()
            documents = load_documents(previous)
            if action == Action.ADD:
                fresh = self._parse(uploads, documents, outcomes, progress)
                gone: set[str] = set()
            else:
                fresh, gone = [], self._removals(ids, documents, outcomes)
            built = self._build(folder, previous, documents, fresh, gone, progress)
            if built is not None:
                folder.publish(built.folder, built.manifest["index_version"],
                               self.settings.collections.versions_kept)
            version = folder.current_version()
            self._record(name, folder.current(), version)
        return {"collection": name, "index_version": version,
                "previous_version": previous.name if previous else None,
                "changed": built is not None, "chunks_embedded": built.chunks_embedded
                if built else 0, "documents": outcomes}

    def _parse(self, uploads: list[Upload], documents: dict[str, StoredDocument],
               outcomes: list[dict[str, Any]], progress: Progress) -> list[StoredDocument]:
        """The uploads that are new or changed, parsed; an outcome per upload."""
        fresh: list[StoredDocument] = []
        for done, upload in enumerate(uploads, start=1):
            doc_id, digest = document_id(upload.name), hashlib.sha256(upload.data).hexdigest()
            outcome: dict[str, Any] = {"name": upload.name, "id": doc_id}
            existing = documents.get(doc_id)
            if existing is not None and existing.sha256 == digest:
                outcome["status"] = UNCHANGED
            else:
                try:
                    sections = parse(upload.name, upload.data)
                    media_type = SUFFIXES[suffix_of(upload.name)]
                    fresh.append(StoredDocument(doc_id, upload.name, digest, len(upload.data),
                                                media_type, sections))
                    outcome["status"] = REPLACED if existing else ADDED
                except RagqError as error:  # DocumentRejected or UnsupportedDocument
                    outcome |= {"status": FAILED, "problem": _problem(error)}
            metrics.INGEST_DOCUMENTS.labels(outcome=outcome["status"]).inc()
            outcomes.append(outcome)
            progress("parsed", done, len(uploads))
        if uploads and all(o["status"] == FAILED for o in outcomes):
            raise NothingIndexed(f"none of the {len(uploads)} document(s) could be indexed; "
                                 "see result.documents")
        return fresh

    def _removals(self, ids: list[str], documents: dict[str, StoredDocument],
                  outcomes: list[dict[str, Any]]) -> set[str]:
        gone = {doc_id for doc_id in ids if doc_id in documents}
        for doc_id in ids:
            name = documents[doc_id].name if doc_id in documents else None
            status = REMOVED if doc_id in gone else FAILED
            outcome: dict[str, Any] = {"name": name, "id": doc_id, "status": status}
            if status == FAILED:
                outcome["problem"] = {"type": "DocumentNotFound",
                                      "detail": f"no document {doc_id} in the collection"}
            metrics.INGEST_DOCUMENTS.labels(outcome=status).inc()
            outcomes.append(outcome)
        if gone and gone == documents.keys():
            raise NothingIndexed("removing every document would leave an empty collection; "
                                 "delete the collection instead")
        return gone

    def _build(self, folder: CollectionFolder, previous: Path | None,
               documents: dict[str, StoredDocument], fresh: list[StoredDocument],
               gone: set[str], progress: Progress) -> Built | None:
        """The next version in a staging folder, or None when nothing changed."""
        if not fresh and not gone:
            return None
        replaced = {document.id for document in fresh}
        kept = [d for d in documents.values() if d.id not in gone and d.id not in replaced]
        staging = folder.staging()

        def report(done: int, total: int) -> None:
            progress("embedded", done, total)

        return self.builder.build(previous, kept, fresh, staging, report)

    def _record(self, name: str, current: Path | None, version: str | None) -> None:
        """Write the collection's Redis record from the version the disk serves now."""
        if current is None or version is None:
            return
        documents = load_documents(current)
        manifest = json.loads((current / MANIFEST).read_text(encoding="utf-8"))
        chunks = int(manifest["chunk_count"])
        summary = {"index_version": version, "documents": len(documents), "chunks": chunks,
                   "built_at": manifest["built_at"], "published_at": repr(time.time())}
        self.registry.publish(name, summary, [d.meta() for d in documents.values()])
        metrics.COLLECTION_CHUNKS.labels(collection=name).set(chunks)

    def _fail(self, record: IngestJobRecord, error_type: str, message: str,
              outcomes: list[dict[str, Any]]) -> Status | Outcome:
        metrics.ERRORS.labels(type=error_type).inc()
        error = {"type": error_type, "message": message}
        result = {"collection": record["collection"], "documents": outcomes}
        return self._finish(record, Status.FAILED, result, error)

    def _finish(self, record: IngestJobRecord, status: Status, result: dict[str, Any],
                error: dict[str, Any] | None = None) -> Status | Outcome:
        """Record the job's end; `lost` when the reaper took it meanwhile (its lease lapsed):
        the run that holds it now records its own."""
        try:
            self.jobs.finish(record["id"], record["attempt"], status, result=result, error=error)
        except (InvalidTransition, JobNotFound):
            log.warning("ingest job changed meanwhile; its end not recorded",
                        extra={"status": status.value})
            return Outcome.LOST
        return status


def _problem(error: RagqError) -> dict[str, str]:
    """A document's failure as a problem naming the file (its message starts with the name)."""
    kind = "unsupported-type" if not isinstance(error, DocumentRejected) else "unreadable-document"
    return {"type": kind, "detail": str(error)}
