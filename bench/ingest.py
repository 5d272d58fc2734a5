"""Collections: ingest throughput, upload to first answer, and questions while a version is
published. Real ingest worker (MiniLM on this CPU), a real generation worker with the fake
generator (its retrieval from collections is real: MiniLM + FAISS + BM25), a broker
redis-server, and the Flask app in process (its test client).

1. Throughput: ragq's own docs (docs/*.md, README.md) uploaded into a fresh collection, the
   ingest job's run time (started -> finished: parse, chunk, embed, write, publish) and chunks
   per second; then one document changed (an incremental version) side by side.
2. A 20-page PDF (pages of ragq's docs, one page carrying a code word): time from the upload
   request to the version being published, and to the answer of a question about that page
   (the job's sources hold the page).
3. 20 questions about a collection queued at once (fake generator, 20 tokens 50 ms apart,
   up to 4 jobs at once: WORKER_MAX_BATCH=4);
   after the 5th has its sources, a new version is uploaded. Counted: failed jobs, and jobs not
   answered from the version they started on (a job whose sources came before the publish must
   hold v1's passage, one claimed after it v2's; the version in the result must match).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/ingest.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from queue_common import Bench, bench_stack, write_results

from shared.events import read_events, replay
from shared.settings import load_settings
from tests.support.celery import start_ingest_worker
from tests.worker.ingestion.pdfs import pdf_bytes
from web import resources
from web.app import create_app

REPO = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.02
WAIT_SECONDS = 600.0
PAGES = 20
CODE_PAGE = 17
CODE_WORD = "heliotrope"
LIVE_V1 = b"# Guide\n\n## Ports\n\nThe broker listens on port 6390."
LIVE_V2 = b"# Guide\n\n## Ports\n\nThe broker moved: it listens on port 7777 now."
LIVE_QUESTIONS = 20
PUBLISH_AFTER = 5


class Api:
    """The Flask app on the bench's broker, through its test client."""

    def __init__(self, bench: Bench, collections_dir: Path) -> None:
        settings = load_settings(broker={"url": bench.server.url}, cache={"enabled": False},
                                 log={"json_format": False, "level": "WARNING"},
                                 collections={"dir": collections_dir})
        self.app = create_app(settings)
        self.client = self.app.test_client()

    def upload(self, name: str, files: list[tuple[bytes, str]]) -> dict[str, Any]:
        data = {"files": [(io.BytesIO(content), filename) for content, filename in files]}
        response = self.client.post(f"/v1/collections/{name}/documents", data=data,
                                    content_type="multipart/form-data")
        assert response.status_code == 202, response.get_data(as_text=True)
        return dict(response.get_json())

    def ask(self, name: str, question: str) -> dict[str, Any]:
        response = self.client.post("/v1/jobs", json={"query": question, "collection": name,
                                                      "top_k": 1})
        assert response.status_code == 202, response.get_data(as_text=True)
        return dict(response.get_json())

    def final(self, job: dict[str, Any]) -> dict[str, Any]:
        """Poll the job (ingest or question) every 20 ms until it is final."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            record = self.client.get(job["links"]["self"]).get_json()
            if record["status"] in ("succeeded", "failed", "cancelled", "expired"):
                return dict(record)
            time.sleep(POLL_SECONDS)
        raise TimeoutError(f"job {job['id']} not final after {WAIT_SECONDS}s")

    def close(self) -> None:
        self.app.extensions[resources.EXTENSION].close()


def corpus() -> list[tuple[bytes, str]]:
    paths = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
    return [(path.read_bytes(), path.name) for path in paths]


def throughput(api: Api, round_no: int) -> dict[str, Any]:
    """A full build of the docs, then an incremental one with README.md changed."""
    name = f"docs-{round_no}"
    files = corpus()
    full = api.final(api.upload(name, files))
    readme = next(content for content, filename in files if filename == "README.md")
    changed = api.final(api.upload(name, [(readme + b"\n\nOne more line.\n", "README.md")]))
    return {"full": _run(full), "incremental": _run(changed)}


def _run(job: dict[str, Any]) -> dict[str, Any]:
    assert job["status"] == "succeeded", job
    seconds = job["finished_at"] - job["started_at"]
    chunks = job["result"]["chunks_embedded"]
    return {"seconds": seconds, "chunks": chunks, "chunks_per_s": chunks / seconds}


def pdf_document() -> bytes:
    """20 pages of ragq's docs, ~250 words each; page 17 carries the code word."""
    words = " ".join(content.decode() for content, _ in corpus()).split()
    pages = [" ".join(words[i * 250:(i + 1) * 250]) for i in range(PAGES)]
    pages[CODE_PAGE - 1] = (f"The release code word is {CODE_WORD}. "
                            + pages[CODE_PAGE - 1])
    return pdf_bytes([page.encode("latin-1", "replace").decode("latin-1") for page in pages])


def first_answer(api: Api, round_no: int, document: bytes) -> dict[str, Any]:
    """Upload the PDF, wait for its version, ask about page 17, wait for the answer."""
    started = time.monotonic()
    ingest = api.final(api.upload(f"pdf-{round_no}", [(document, "manual.pdf")]))
    published = time.monotonic()
    assert ingest["status"] == "succeeded", ingest
    answer = api.final(api.ask(f"pdf-{round_no}", "What is the release code word?"))
    answered = time.monotonic()
    source = answer["result"]["sources"][0]
    return {"to_published_s": published - started, "to_answered_s": answered - started,
            "chunks": ingest["result"]["chunks_embedded"], "answer_status": answer["status"],
            "source_is_the_page": f"page {CODE_PAGE}" in source["title"]
            and CODE_WORD in source["text"]}


def live_publish(api: Api, bench: Bench) -> dict[str, Any]:
    """20 questions running while a new version is published."""
    v1 = api.final(api.upload("live", [(LIVE_V1, "guide.md")]))
    jobs = [api.ask("live", f"Question {n}: which port does the broker listen on?")
            for n in range(LIVE_QUESTIONS)]
    events = read_events(bench.store.redis, jobs[PUBLISH_AFTER - 1]["id"], hub=bench.hub,
                         idle_timeout=WAIT_SECONDS)
    next(event for event in events if event["type"] == "sources")
    events.close()
    v2 = api.final(api.upload("live", [(LIVE_V2, "guide.md")]))
    published_at = api.client.get("/v1/collections/live").get_json()["published_at"]
    finals = [api.final(job) for job in jobs]
    versions = {v1["result"]["index_version"]: "6390", v2["result"]["index_version"]: "7777"}
    rows = [_live_row(bench, job, published_at, v1["result"]["index_version"],
                      v2["result"]["index_version"], versions) for job in finals]
    return {"questions": len(rows), "failed": sum(r["status"] != "succeeded" for r in rows),
            "on_v1": sum(r["version"] == "v1" for r in rows),
            "on_v2": sum(r["version"] == "v2" for r in rows),
            "wrong_version": sum(not r["consistent"] for r in rows),
            "across_publish": sum(r["across_publish"] for r in rows), "rows": rows}


def _live_row(bench: Bench, job: dict[str, Any], published_at: float, v1: str, v2: str,
              versions: dict[str, str]) -> dict[str, Any]:
    sources_at = next(e["ts"] for e in replay(bench.store.redis, job["id"])
                      if e["type"] == "sources")
    version = job["result"]["index_version"] if job["result"] else None
    text = job["result"]["sources"][0]["text"] if job["result"] else ""
    expected = v1 if sources_at < published_at else v2 if job["started_at"] > published_at \
        else None  # claimed before the publish, retrieved after: either version is right
    consistent = (version in versions and versions[version] in text
                  and (expected is None or version == expected))
    return {"status": job["status"], "version": "v1" if version == v1 else "v2",
            "sources_before_publish": sources_at < published_at, "consistent": consistent,
            "across_publish": sources_at < published_at < job["finished_at"]}


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_stack(
        Path(tmp), COLLECTIONS_DIR=str(Path(tmp) / "collections"), COLLECTIONS_METRICS_PORT="0",
        PIPELINE_FAKE_TOKENS="20", PIPELINE_FAKE_TOKEN_DELAY="0.05", WORKER_MAX_BATCH="4",
    ) as bench:
        bench.start_worker("gen")
        ingest = start_ingest_worker(bench.env, Path(tmp))
        api = Api(bench, Path(tmp) / "collections")
        try:
            api.final(api.upload("warm-up", [(b"Warm up the ingest worker.", "warm.txt")]))
            api.final(api.ask("warm-up", "warm up the generation worker's embedder"))
            builds = [throughput(api, n) for n in range(args.rounds)]
            document = pdf_document()
            firsts = [first_answer(api, n, document) for n in range(args.rounds)]
            live = live_publish(api, bench)
        finally:
            api.close()
            ingest.stop()
    report(builds, firsts, live, len(document))


def report(builds: list[dict[str, Any]], firsts: list[dict[str, Any]], live: dict[str, Any],
           pdf_size: int) -> None:
    full_s = median([b["full"]["seconds"] for b in builds])
    inc_s = median([b["incremental"]["seconds"] for b in builds])
    full = (f"| full (new collection) | {builds[0]['full']['chunks']} | {full_s:.2f} | "
            f"{median([b['full']['chunks_per_s'] for b in builds]):.1f} |")
    inc_rate = median([b["incremental"]["chunks_per_s"] for b in builds])
    incremental = (f"| incremental (README.md changed) | {builds[0]['incremental']['chunks']} | "
                   f"{inc_s:.2f} | {inc_rate:.1f} |")
    pdf = (f"| {median([f['to_published_s'] for f in firsts]):.2f} | "
           f"{median([f['to_answered_s'] for f in firsts]):.2f} | "
           f"{sum(f['source_is_the_page'] for f in firsts)} of {len(firsts)} |")
    counts = (f"| {live['questions']} | {live['failed']} | {live['on_v1']} | {live['on_v2']} | "
              f"{live['across_publish']} | {live['wrong_version']} |")
    data = {"builds": builds, "first_answer": firsts, "live_publish": live, "pdf_bytes": pdf_size}
    markdown = f"""# Collections: ingest, upload to answer, publishing under load (bench/ingest.py)

Real ingest worker (MiniLM, CPU, one process), real generation worker with the fake generator
(its retrieval from the collection is real), broker redis-server, Flask app in process. The
machine is shared (2 CPU cores): read the figures side by side, not as absolutes.
Medians of {len(builds)} rounds.

Reproduce: `HF_HUB_OFFLINE=1 .venv/bin/python bench/ingest.py --rounds {len(builds)}`

## 1. Ingest throughput (ragq's docs: {len(corpus())} files)

| build | chunks embedded | job run time s | chunks/s |
|---|---|---|---|
{full}
{incremental}

The incremental version embeds only the changed document's chunks: it took
{inc_s / full_s:.2f}x the full build's time. A chunk is embedded whole and sentence by sentence
(PIPELINE_INDEX_SENTENCES), so the model embeds several texts per chunk; the run time includes
parsing, BM25, writing and the atomic publish.

## 2. A 20-page PDF, from upload to its first answered question

{PAGES} pages ({pdf_size // 1024} KiB, ~250 words a page), {firsts[0]['chunks']} chunks.

| upload -> version published s | upload -> question answered s | answered from page {CODE_PAGE} |
|---|---|---|
{pdf}

"Answered" includes the question's job: queued, claimed, retrieval from the new version and
the fake generator's 20 tokens (1 s).

## 3. {live['questions']} questions while a new version is published

| questions | failed | from v1 | from v2 | running at the publish | not from their start version |
|---|---|---|---|---|---|
{counts}

A job whose sources came before the publish must be answered from v1 (its passage says port
6390), one claimed after it from v2 (port 7777); the result's index_version must match the
passage. The generation worker runs up to 4 jobs at once (WORKER_MAX_BATCH=4). No worker was
restarted.
"""
    write_results("ingest", data, markdown)

if __name__ == "__main__":
    main()
