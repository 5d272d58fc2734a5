"""Ingest jobs run in-process on a real redis-server and the real MiniLM embedder: parsing,
incremental versions, atomic publish, each document's outcome."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared import keys
from shared.collections import Access, CollectionRegistry
from shared.embedding import Embedder
from shared.errors import DocumentRejected, UnsupportedDocument
from shared.ingest_jobs import Action, IngestJobs, Upload
from shared.settings import CollectionSettings, Settings
from tests.support.servers import RedisServer
from tests.worker.ingestion.pdfs import pdf_bytes
from worker.ingestion.build import VersionBuilder, load_documents
from worker.ingestion.parse import parse
from worker.ingestion.runner import IngestRunner
from worker.ingestion.versions import CollectionFolder
from worker.pipeline.index import CorpusIndex

pytestmark = pytest.mark.integration

OWNER = "owner-a"
GUIDE = (b"# Guide\n\n## Ports\n\nThe broker listens on port 6390.\n\n"
         b"## Queue\n\nJobs wait in ragq.generate.")
NOTES = b"Flower shows the Celery workers. The ingest worker embeds uploads on the CPU."


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder("minilm", "cpu")


class CountingEmbedder(Embedder):
    """The real embedder, counting the texts it embeds (a fake of nothing: it records calls)."""

    def __init__(self, real: Embedder) -> None:
        self.__dict__.update(real.__dict__)
        self.texts = 0

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.texts += len(texts)
        return super().encode(texts, batch_size, progress)


@pytest.fixture
def ingest(broker_redis: RedisServer, tmp_path: Path, embedder: Embedder
           ) -> Callable[..., dict[str, Any]]:
    """Run one ingest job in this process; returns its final record."""
    settings = Settings(collections=CollectionSettings(dir=tmp_path / "collections"))
    client = broker_redis.client()
    jobs, registry = IngestJobs(client, settings.jobs), CollectionRegistry(client)
    counting = CountingEmbedder(embedder)
    runner = IngestRunner(settings, jobs, registry, VersionBuilder(settings.pipeline, counting))

    def run(collection: str, uploads: list[Upload] | None = None,
            remove: list[str] | None = None) -> dict[str, Any]:
        registry.claim(collection, OWNER)
        action = Action.REMOVE if remove else Action.ADD
        names = remove or [u.name for u in uploads or []]
        job = jobs.create(owner=OWNER, collection=collection, action=action, documents=names,
                          request_id="r", uploads=uploads)
        counting.texts = 0
        runner.run_job(job["id"])
        record = jobs.get(job["id"])
        record["texts_embedded"] = counting.texts
        return record

    run.settings = settings  # type: ignore[attr-defined]
    run.registry = registry  # type: ignore[attr-defined]
    run.redis = client  # type: ignore[attr-defined]
    return run


def md(name: str, data: bytes) -> Upload:
    return Upload(name, "text/markdown", data)


def test_an_upload_publishes_a_version_with_each_documents_outcome(ingest: Any) -> None:
    record = ingest("team", [md("guide.md", GUIDE), Upload("notes.txt", "text/plain", NOTES),
                             Upload("scan.pdf", "application/pdf", b"%PDF-1.4 not really"),
                             Upload("page.pdf", "application/pdf", pdf_bytes(["Page one."]))])
    assert record["status"] == "succeeded"
    outcomes = {d["name"]: d for d in record["result"]["documents"]}
    assert [outcomes[n]["status"] for n in ("guide.md", "notes.txt", "page.pdf")] == ["added"] * 3
    assert outcomes["scan.pdf"]["status"] == "failed"
    assert "scan.pdf" in outcomes["scan.pdf"]["problem"]["detail"]
    version = record["result"]["index_version"]
    folder = CollectionFolder(ingest.settings.collections.dir, "team")
    assert folder.current_version() == version
    index = CorpusIndex.load(folder.path / "current")
    assert {c.source.split("#")[0] for c in index.chunks} == {"guide.md", "notes.txt", "page.pdf"}
    seen = ingest.registry.get("team", Access(OWNER))
    assert seen["index_version"] == version and seen["documents"] == 3


def test_identical_reupload_is_a_no_op_and_a_changed_one_embeds_only_itself(ingest: Any) -> None:
    first = ingest("team", [md("guide.md", GUIDE), Upload("notes.txt", "text/plain", NOTES)])
    again = ingest("team", [md("guide.md", GUIDE)])
    assert again["result"]["changed"] is False
    assert again["result"]["index_version"] == first["result"]["index_version"]
    assert again["texts_embedded"] == 0
    changed = ingest("team", [Upload("notes.txt", "text/plain", NOTES + b" It also parses PDFs.")])
    assert changed["result"]["documents"][0]["status"] == "replaced"
    assert changed["result"]["chunks_embedded"] == 1  # notes.txt alone, guide.md's vectors kept
    folder = CollectionFolder(ingest.settings.collections.dir, "team")
    index = CorpusIndex.load(folder.path / "current")
    assert any("parses PDFs" in c.text for c in index.chunks)
    assert not any(c.text == NOTES.decode() for c in index.chunks)
    hits = index.dense.search(Embedder("minilm").encode_one("Which port does the broker use?"), 1)
    assert "6390" in index.chunks[hits[0][0]].text


def test_removing_a_document_publishes_a_version_without_it(ingest: Any) -> None:
    added = ingest("team", [md("guide.md", GUIDE), Upload("notes.txt", "text/plain", NOTES)])
    notes = next(d["id"] for d in added["result"]["documents"] if d["name"] == "notes.txt")
    removed = ingest("team", remove=[notes])
    assert removed["result"]["documents"][0]["status"] == "removed"
    folder = CollectionFolder(ingest.settings.collections.dir, "team")
    assert set(load_documents(folder.current())) == {added["result"]["documents"][0]["id"]}
    assert [d["name"] for d in ingest.registry.documents("team")] == ["guide.md"]
    # the version it replaced is still on disk for jobs that started on it
    assert (folder.versions / added["result"]["index_version"]).is_dir()


def test_a_job_whose_documents_all_fail_publishes_nothing(ingest: Any) -> None:
    first = ingest("team", [md("guide.md", GUIDE)])
    bad = ingest("team", [Upload("empty.txt", "text/plain", b"   \n"),
                          Upload("locked.pdf", "application/pdf", pdf_bytes(["x"], "pw"))])
    assert bad["status"] == "failed"
    problems = [d["problem"]["detail"] for d in bad["result"]["documents"]]
    assert "empty.txt" in problems[0] and "encrypted" in problems[1]
    folder = CollectionFolder(ingest.settings.collections.dir, "team")
    assert folder.current_version() == first["result"]["index_version"]


def test_a_failed_build_keeps_the_previous_version_serving(ingest: Any, monkeypatch: Any
                                                           ) -> None:
    first = ingest("team", [md("guide.md", GUIDE)])

    def crash(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("worker.ingestion.build.write_index", crash)
    failed = ingest("team", [Upload("notes.txt", "text/plain", NOTES)])
    assert failed["status"] == "failed" and "disk full" in failed["error"]["message"]
    folder = CollectionFolder(ingest.settings.collections.dir, "team")
    assert folder.current_version() == first["result"]["index_version"]
    assert ingest.registry.version("team") == first["result"]["index_version"]


def test_the_job_streams_progress_then_done(ingest: Any) -> None:
    record = ingest("team", [md("guide.md", GUIDE), Upload("notes.txt", "text/plain", NOTES)])
    entries = ingest.redis.xrange(keys.job_events(record["id"]))
    events = [json.loads(fields["e"]) for _, fields in entries]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    parsed = [(e["done"], e["total"]) for e in events if e.get("stage") == "parsed"]
    embedded = [(e["done"], e["total"]) for e in events if e.get("stage") == "embedded"]
    assert parsed == [(1, 2), (2, 2)]
    assert embedded and embedded[-1][0] == embedded[-1][1]
    assert events[-1]["type"] == "done"
    assert events[-1]["job"]["result"]["index_version"] == record["result"]["index_version"]


def test_parse_reads_pdf_pages_and_html_text_and_names_bad_files() -> None:
    pages = parse("manual.pdf", pdf_bytes(["Install with pip.", "Run make test."]))
    assert [p.source for p in pages] == ["manual.pdf#page=1", "manual.pdf#page=2"]
    html = parse("p.html", b"<title>Ports</title><script>var x;</script><p>Broker: 6390</p>")
    assert "Broker: 6390" in html[0].text and "var x" not in html[0].text
    with pytest.raises(DocumentRejected, match="latin.txt: not UTF-8"):
        parse("latin.txt", "caf\xe9".encode("latin-1"))
    with pytest.raises(DocumentRejected, match="locked.pdf: the PDF is encrypted"):
        parse("locked.pdf", pdf_bytes(["secret"], password="pw"))
    with pytest.raises(UnsupportedDocument, match="report.docx: unsupported type"):
        parse("report.docx", b"PK")


def test_changed_chunking_settings_embed_every_document_again(ingest: Any, embedder: Embedder
                                                              ) -> None:
    ingest("team", [md("guide.md", GUIDE), Upload("notes.txt", "text/plain", NOTES)])
    settings = ingest.settings.model_copy(update={
        "pipeline": ingest.settings.pipeline.model_copy(update={"chunk_tokens": 64})})
    jobs = IngestJobs(ingest.redis, settings.jobs)
    runner = IngestRunner(settings, jobs, ingest.registry,
                          VersionBuilder(settings.pipeline, embedder))
    job = jobs.create(owner=OWNER, collection="team", action=Action.ADD, documents=["x.txt"],
                      request_id="r", uploads=[Upload("x.txt", "text/plain", b"One more.")])
    runner.run_job(job["id"])
    result = jobs.get(job["id"])["result"]
    folder = CollectionFolder(settings.collections.dir, "team")
    index = CorpusIndex.load(folder.path / "current")
    # the kept documents' vectors were built with other settings: all are embedded again
    assert result["chunks_embedded"] == len(index.chunks)
    assert index.manifest["settings"]["chunk_tokens"] == 64
    assert {c.source.split("#")[0] for c in index.chunks} == {"guide.md", "notes.txt", "x.txt"}
