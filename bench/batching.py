"""Batched decoding (issue 15): eight distinct questions at once on one worker, decoded together
(WORKER_MAX_BATCH=8) against one after another (WORKER_MAX_BATCH=1), side by side in one run.

    .venv/bin/python bench/batching.py [--rounds 2] [--batch 8]

Two real Celery workers with the configured generator (the default model unless
PIPELINE_GENERATOR_MODEL says otherwise; PIPELINE_DEVICE=auto takes a GPU where torch sees one,
so the same command runs unchanged on a CUDA host) load once, each on its own queue; the rounds
alternate between them, so both see the same machine. Measured per round: the time from the
first submit to the last `done`, each job's time to first token (submit to its first token
event), and the answers. An idle pass asks the same questions one at a time first: the time to
first token of an idle worker. Then, with the workers stopped, the same model in this process
decodes eight open questions without sources (long answers, no retrieval, short prompts) one
after another and together: what batching gives where decoding, not the prompt, is the work.
Writes bench/results/batching.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.queue_common import percentile, write_results  # noqa: E402
from shared.events import read_events  # noqa: E402
from shared.jobs import JobStore  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.tasks import make_client, send_generate  # noqa: E402
from tests.support.celery import REPO_ROOT, WorkerProcess, start_worker, worker_env  # noqa: E402
from tests.support.generations import consume_together  # noqa: E402
from tests.support.servers import RedisServer, free_port  # noqa: E402
from worker.pipeline.generator import Generator  # noqa: E402

QUESTIONS = [
    "How do I cancel a running job?",
    "What happens to the answer of a running job that is cancelled?",
    "Which status code does a new question get while the cost breaker is open?",
    "What happens when the cache Redis is down?",
    "Which eviction policy does the broker Redis use?",
    "Which embedding model does ragq use on a machine without a GPU?",
    "On which port does the worker serve its Prometheus metrics?",
    "How long does a semantic cache entry live by default, in seconds?",
]
# Open questions without sources: answers that run to the token limit, prompts of ~30 tokens.
DECODE_QUESTIONS = [
    "Explain how a Redis stream differs from Redis pub/sub.",
    "Describe how Celery acknowledges a task when acks_late is on.",
    "Write a Python function that merges two sorted lists.",
    "Explain what a KV cache does in a transformer decoder.",
    "Describe the steps of a TCP handshake.",
    "Explain left padding and attention masks in batched generation.",
    "Write a bash loop that retries a command five times.",
    "Explain what int8 dynamic quantization does to a linear layer.",
]
DECODE_TOKENS = 64
JOB_TIMEOUT = 1800.0


class Lane:
    """One worker on its own queue, and a client that sends tasks to that queue."""

    def __init__(self, server: RedisServer, tmp: Path, batch: int, env: dict[str, str]) -> None:
        self.batch = batch
        self.queue = f"bench.batch{batch}"
        self.metrics_port = free_port()
        self.settings = load_settings(broker={"url": server.url, "queue": self.queue})
        self.store = JobStore(server.client(), self.settings)
        self.celery = make_client(self.settings)
        worker_vars = {**env, "WORKER_MAX_BATCH": str(batch), "BROKER_QUEUE": self.queue,
                       "WORKER_METRICS_PORT": str(self.metrics_port)}
        self.worker: WorkerProcess = start_worker(worker_vars, tmp, f"batch{batch}", self.queue)

    def submit(self, question: str) -> tuple[str, float]:
        """Queue `question`; its job id and when it was sent."""
        sent = time.time()
        record = self.store.create(owner="bench", query=question, top_k=3, request_id="bench")
        send_generate(self.celery, record["id"], "bench")
        return record["id"], sent

    def outcome(self, job_id: str, sent: float) -> dict[str, Any]:
        """The finished job: answer, tokens, and the client-side times from its events."""
        record = self.store.wait_final(job_id, JOB_TIMEOUT)
        if record is None:
            raise TimeoutError(f"job {job_id} not final after {JOB_TIMEOUT}s")
        events = list(read_events(self.store.redis, job_id, idle_timeout=10))
        first_token = next(e["ts"] for e in events if e["type"] == "token")
        metrics, result = record["metrics"], record["result"]
        assert record["status"] == "succeeded" and result is not None, record["error"]
        return {"question": record["query"], "answer": result["answer"],
                "finish_reason": result["finish_reason"],
                "generated_tokens": metrics["generated_tokens"],
                "prompt_tokens": metrics["prompt_tokens"], "ttft_s": first_token - sent,
                "done_at": events[-1]["ts"], "job_tokens_per_s": metrics["tokens_per_s"]}

    def round(self, questions: list[str]) -> dict[str, Any]:
        """All `questions` at once; total time from the first submit to the last done."""
        sent = [self.submit(question) for question in questions]
        jobs = [self.outcome(job_id, at) for job_id, at in sent]
        total = max(job["done_at"] for job in jobs) - sent[0][1]
        tokens = sum(job["generated_tokens"] for job in jobs)
        return {"total_s": total, "tokens": tokens, "tokens_per_s": tokens / total,
                "ttft_p50_s": percentile([job["ttft_s"] for job in jobs], 50), "jobs": jobs}

    def idle_pass(self, questions: list[str]) -> list[float]:
        """Each question alone on an idle worker: its time to first token."""
        return [self.outcome(*self.submit(question))["ttft_s"] for question in questions]

    def batch_sizes(self) -> dict[str, float]:
        """Decode steps and their mean batch size, from the worker's rag_batch_size histogram."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        found = dict(re.findall(r"^rag_batch_size_(sum|count) (\S+)$", body, re.MULTILINE))
        steps = float(found.get("count", 0.0))
        return {"steps": steps, "mean": float(found.get("sum", 0.0)) / steps if steps else 0.0}


def decode_only(batch: int) -> dict[str, Any]:
    """DECODE_QUESTIONS in this process: one after another, then together (`batch` rows)."""
    settings = load_settings(pipeline={"max_new_tokens": DECODE_TOKENS}).pipeline
    generator = Generator(settings)
    chats = [[{"role": "user", "content": question}] for question in DECODE_QUESTIONS]
    started = time.perf_counter()
    alone = ["".join(generator.generate(chat, lambda: False)) for chat in chats]
    alone_s = time.perf_counter() - started
    generator.start_batching(batch)
    generations = [generator.generate(chat, lambda: False) for chat in chats]
    started = time.perf_counter()
    together = consume_together(generations)
    together_s = time.perf_counter() - started
    tokens = sum(generation.generated_tokens for generation in generations)
    return {"questions": len(chats), "max_new_tokens": DECODE_TOKENS, "tokens": tokens,
            "alone_s": alone_s, "together_s": together_s,
            "identical": sum(a == b for a, b in zip(alone, together, strict=True)),
            "same_first_words": [common_prefix_words(a, b)
                                 for a, b in zip(alone, together, strict=True)]}


def build_index(out: Path) -> Path:
    ragq = Path(sys.executable).parent / "ragq"
    subprocess.run([str(ragq), "index", "docs", "README.md", "--out", str(out)],
                   check=True, cwd=REPO_ROOT, capture_output=True, timeout=1800)
    return out


def common_prefix_words(a: str, b: str) -> int:
    count = 0
    for left, right in zip(a.split(), b.split(), strict=False):
        if left != right:
            break
        count += 1
    return count


def compare(unbatched: list[dict[str, Any]], batched: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per question: whether the batched answer is the unbatched one, else where they part."""
    rows = []
    for one, many in zip(unbatched, batched, strict=True):
        same = one["answer"] == many["answer"]
        rows.append({"question": one["question"], "identical": same,
                     "words": len(one["answer"].split()),
                     "same_first_words": common_prefix_words(one["answer"], many["answer"]),
                     "unbatched": one["answer"], "batched": many["answer"]})
    return rows


def run(rounds: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ragq-bench-batching-") as folder:
        tmp = Path(folder)
        index = Path(os.environ.get("PIPELINE_INDEX_DIR") or build_index(tmp / "index"))
        server = RedisServer(tmp / "redis", "--maxmemory-policy", "noeviction").start()
        env = worker_env(server.url, PIPELINE_BACKEND="transformers",
                         PIPELINE_INDEX_DIR=str(index), CACHE_ENABLED="false",
                         JOBS_LEASE_SECONDS="10", LOG_LEVEL="WARNING")
        env.pop("PIPELINE_FAKE_TOKENS", None)
        lanes: list[Lane] = []
        try:
            lanes = [Lane(server, tmp, 1, env), Lane(server, tmp, batch, env)]
            for lane in lanes:
                lane.worker.wait_ready(timeout=900)
            single, batched = lanes
            idle = single.idle_pass(QUESTIONS)
            results: dict[int, list[dict[str, Any]]] = {1: [], batch: []}
            for _ in range(rounds):
                for lane in lanes:
                    results[lane.batch].append(lane.round(QUESTIONS))
            sizes = batched.batch_sizes()
        finally:
            for lane in lanes:
                lane.worker.stop()
            server.stop()
    return {"rounds": rounds, "batch": batch, "questions": QUESTIONS, "idle_ttft_s": idle,
            "unbatched": results[1], "batched": results[batch], "batch_sizes": sizes,
            "answers": compare(results[1][0]["jobs"], results[batch][0]["jobs"]),
            "decode_only": decode_only(batch)}


def markdown(data: dict[str, Any], device: str) -> str:
    batch = data["batch"]
    one, many = data["unbatched"], data["batched"]
    ratios = [a["total_s"] / b["total_s"] for a, b in zip(one, many, strict=True)]
    idle_p50 = percentile(data["idle_ttft_s"], 50)
    answers = data["answers"]
    identical = sum(row["identical"] for row in answers)
    lines = [
        "# Batched decoding: eight questions at once on one worker (bench/batching.py)",
        "",
        f"{len(QUESTIONS)} distinct questions about ragq's docs submitted at once to one worker "
        f"with the configured generator on `{device}`, WORKER_MAX_BATCH={batch} against 1, "
        f"{data['rounds']} round(s) each, alternating, in one run; greedy decoding, top_k 3, "
        "cache off. Time to first token: submit to the job's first token event.",
        "",
        "| round | total s, batch 1 | total s, batch " + f"{batch} | throughput ratio | "
        "tokens/s, batch 1 | tokens/s, batch " + f"{batch} | TTFT p50 s, batch 1 | "
        f"TTFT p50 s, batch {batch} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, (a, b) in enumerate(zip(one, many, strict=True), start=1):
        lines.append(f"| {i} | {a['total_s']:.1f} | {b['total_s']:.1f} | "
                     f"{a['total_s'] / b['total_s']:.2f}x | {a['tokens_per_s']:.1f} | "
                     f"{b['tokens_per_s']:.1f} | {a['ttft_p50_s']:.1f} | {b['ttft_p50_s']:.1f} |")
    lines += [
        "",
        f"Throughput ratio, median of the rounds: **{statistics.median(ratios):.2f}x** "
        "(target: at least 2.5x on this CPU, 5x on a GPU).",
        "",
        f"Time to first token, p50: idle worker {idle_p50:.1f} s (each question alone); "
        f"{batch} at once, batched {statistics.median([b['ttft_p50_s'] for b in many]):.1f} s "
        f"({statistics.median([b['ttft_p50_s'] for b in many]) / idle_p50:.1f}x idle), "
        f"unbatched {statistics.median([a['ttft_p50_s'] for a in one]):.1f} s "
        f"({statistics.median([a['ttft_p50_s'] for a in one]) / idle_p50:.1f}x idle); "
        "target: batched at most 1.5x idle.",
        "",
        f"Decode steps of the batched worker: {data['batch_sizes']['steps']:.0f}, mean batch "
        f"size {data['batch_sizes']['mean']:.2f} (its rag_batch_size histogram).",
        "",
        f"Answers identical to the unbatched greedy ones (round 1): **{identical} of "
        f"{len(answers)}**.",
        "",
        "| question | words | identical | same first words |",
        "|---|---|---|---|",
    ]
    for row in answers:
        lines.append(f"| {row['question']} | {row['words']} | {'yes' if row['identical'] else 'no'}"
                     f" | {row['same_first_words']} |")
    one_prefill = sum(data["idle_ttft_s"])
    bound = statistics.median([a["total_s"] for a in one]) / one_prefill
    decode = data["decode_only"]
    lines += [
        "",
        "Where the time goes: the eight prompts hold "
        f"{statistics.fmean([j['prompt_tokens'] for j in one[0]['jobs']]):.0f} tokens on average "
        f"and the answers {statistics.fmean([j['generated_tokens'] for j in one[0]['jobs']]):.0f}"
        f"; the idle pass's times to first token (each prompt read alone) add up to "
        f"{one_prefill:.1f} s. Reading a prompt is compute-bound on a CPU, so batching cannot "
        "shorten it; it only shares the decoding steps. With the prompts' time left as it is, "
        f"no batching can make a round faster than {bound:.2f}x.",
        "",
        f"Decoding alone, same model in one process: {decode['questions']} open questions "
        f"without sources, {decode['max_new_tokens']} new tokens at most ({decode['tokens']} "
        f"generated together): one after another {decode['alone_s']:.1f} s, together "
        f"{decode['together_s']:.1f} s: **{decode['alone_s'] / decode['together_s']:.2f}x**; "
        f"answers identical {decode['identical']} of {decode['questions']}, same first words "
        f"{decode['same_first_words']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per batch size")
    parser.add_argument("--batch", type=int, default=8, help="WORKER_MAX_BATCH of the batched one")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = run(args.rounds, args.batch)
    import torch

    device = "cuda" if torch.cuda.is_available() and os.environ.get(
        "PIPELINE_DEVICE", "auto") != "cpu" else "cpu"
    data["device"] = device
    write_results("batching", data, markdown(data, device))
    print(json.dumps({"ratios": [a["total_s"] / b["total_s"] for a, b in
                                 zip(data["unbatched"], data["batched"], strict=True)]}))


if __name__ == "__main__":
    main()
