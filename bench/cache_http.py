"""End-to-end cache hits through gunicorn: POST /v1/jobs answered from the cache.

Starts a broker and a cache redis-server and ragq's web tier under gunicorn (gthread,
API_WORKERS processes), publishes a pipeline scope, stores answers for a few questions in the
cache, then measures:

- latency of exact repeats and of paraphrases (semantic hits), one client, sequential requests
  on a keep-alive connection;
- throughput of exact repeats: several client processes, each with threads on keep-alive
  connections, for a fixed time.

The clients run on the same machine as the server (they share its CPUs).

    .venv/bin/python bench/cache_http.py [--requests 500] [--seconds 10] [--clients 4] [--threads 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.cache import scope_for  # noqa: E402
from shared.embedding import Embedder  # noqa: E402
from shared.settings import CacheSettings, PipelineSettings  # noqa: E402
from shared.workers import publish_pipeline_info  # noqa: E402
from tests.support.gunicorn import GunicornServer  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from web.auth import owner_of  # noqa: E402
from web.semantic_cache import SemanticCache  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KEY = "bench-key"
INFO = {"index_version": "bench-index", "model_id": "bench-model", "prompt_version": "v1"}
QUESTIONS = [
    ("How tall is the Eiffel Tower in Paris?", "How tall is Paris's Eiffel Tower?"),
    ("When was the Golden Gate Bridge opened?", "when was the golden gate bridge opened"),
    ("Who wrote the novel War and Peace?", "Who wrote the War and Peace novel?"),
]


def post(connection: http.client.HTTPConnection, query: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"query": query})
    connection.request(
        "POST",
        "/v1/jobs",
        body=body,
        headers={"Content-Type": "application/json", "X-API-Key": KEY},
    )
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def latencies(port: int, queries: list[str], count: int, path: str) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for n in range(count):
        start = time.perf_counter()
        status, body = post(connection, queries[n % len(queries)])
        out.append((time.perf_counter() - start) * 1000)
        assert status == 200 and body["cached"] and body["cache_path"] == path, (status, body)
    connection.close()
    return out


def load_client(port: int, threads: int, seconds: float, start_at: float, results: Any) -> None:
    counts = [0] * threads
    failures = [0] * threads

    def run(slot: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        time.sleep(max(0.0, start_at - time.time()))
        end = start_at + seconds
        while time.time() < end:
            status, _ = post(connection, QUESTIONS[slot % len(QUESTIONS)][0])
            if status == 200:
                counts[slot] += 1
            else:
                failures[slot] += 1
        connection.close()

    workers = [threading.Thread(target=run, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((sum(counts), sum(failures)))


def throughput(port: int, clients: int, threads: int, seconds: float) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0
    processes = [
        context.Process(target=load_client, args=(port, threads, seconds, start_at, results))
        for _ in range(clients)
    ]
    for process in processes:
        process.start()
    done = [results.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    ok = sum(count for count, _ in done)
    return {
        "requests": ok,
        "failures": sum(f for _, f in done),
        "seconds": seconds,
        "req_per_s": ok / seconds,
        "clients": clients,
        "threads_per_client": threads,
    }


def seed(cache_url: str, broker: RedisServer) -> None:
    publish_pipeline_info(broker.client(), INFO)
    embedder = Embedder("minilm")
    cache = SemanticCache(CacheSettings(redis_url=cache_url), embedder, cache_url)
    # the bench's key asked them: its own cache scope (CACHE_SHARING=key)
    scope = scope_for(INFO, PipelineSettings().top_k, owner_of(KEY))
    for question, _ in QUESTIONS:
        cache.store(
            question,
            scope,
            embedder.encode_one(question),
            {"answer": f"the answer to: {question}", "sources": []},
            owner=owner_of(KEY),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--web-workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        broker = RedisServer(root / "broker", "--maxmemory-policy", "noeviction").start()
        cache = RedisServer(
            root / "cache", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"
        ).start()
        web = GunicornServer(
            root / "web",
            workers=args.web_workers,
            env={
                "BROKER_URL": broker.url,
                "CACHE_REDIS_URL": cache.url,
                "AUTH_ENABLED": "true",
                "AUTH_API_KEYS": KEY,
                "LOG_LEVEL": "WARNING",
            },
        )
        try:
            seed(cache.url, broker)
            web.start(timeout=60)
            warm = [question for question, _ in QUESTIONS] + [para for _, para in QUESTIONS]
            latencies(
                web.port, warm[:3], 20 * args.web_workers, "exact"
            )  # every worker loads MiniLM
            latencies(
                web.port, [QUESTIONS[0][1], QUESTIONS[2][1]], 20 * args.web_workers, "semantic"
            )
            exact = latencies(web.port, [q for q, _ in QUESTIONS], args.requests, "exact")
            semantic = latencies(
                web.port, [QUESTIONS[0][1], QUESTIONS[2][1]], args.requests // 2, "semantic"
            )
            load = throughput(web.port, args.clients, args.threads, args.seconds)
        finally:
            web.stop()
            broker.stop()
            cache.stop()
    write(exact, semantic, load, args.web_workers)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": statistics.median(values),
        "p99_ms": float(np.percentile(values, 99)),
    }


def write(
    exact: list[float], semantic: list[float], load: dict[str, Any], web_workers: int
) -> None:
    result = {
        "exact": summary(exact),
        "semantic": summary(semantic),
        "throughput": load,
        "web_workers": web_workers,
        "targets": {"p50_ms": 20, "p99_ms": 50, "req_per_s": 500},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cache_http.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Cache hits through gunicorn (bench/cache_http.py)",
        "",
        f"POST /v1/jobs with an API key, answered from the cache; gunicorn gthread, {web_workers} "
        "workers; clients on the same 2-CPU machine.",
        "",
        "| path | requests | p50 ms | p99 ms | target |",
        "|---|---|---|---|---|",
        f"| exact repeat | {result['exact']['n']} | {result['exact']['p50_ms']:.2f} | {result['exact']['p99_ms']:.2f} | p50 <= 20, p99 <= 50 |",  # noqa: E501
        f"| semantic hit | {result['semantic']['n']} | {result['semantic']['p50_ms']:.2f} | {result['semantic']['p99_ms']:.2f} | p50 <= 20, p99 <= 50 |",  # noqa: E501
        "",
        f"Throughput, exact repeats: {load['req_per_s']:.0f} req/s ({load['clients']} client processes x "  # noqa: E501
        f"{load['threads_per_client']} threads, {load['seconds']:.0f} s, {load['failures']} non-200) - target >= 500 req/s.",  # noqa: E501
    ]
    (RESULTS / "cache_http.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
