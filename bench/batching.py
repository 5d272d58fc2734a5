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

    .venv/bin/python bench/batching.py --prefill-only [--rounds 3]

measures only what bounds the ratio on a CPU: the same model in this process reads eight prompts
of the benchmark's length one after another and as one batch, and decodes one step for one row
and for eight. Writes bench/results/batching_prefill.json and .md.
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
PREFILL_TOKENS = 420  # the benchmark's prompts hold 421 tokens on average
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


def prefill_only(rounds: int, batch: int) -> dict[str, Any]:
    """Eight prompts of PREFILL_TOKENS read one after another and as one batch, then one decode
    step for one row and for `batch` rows, alternating, `rounds` times; seconds per round."""
    import torch

    generator = Generator(load_settings().pipeline)
    model, device = generator.model, generator.model.device
    text = " ".join((REPO_ROOT / "docs" / "jobs.md").read_text().split())
    ids = generator.tokenizer(text, add_special_tokens=False)["input_ids"]
    prompts = torch.tensor([ids[i * PREFILL_TOKENS:(i + 1) * PREFILL_TOKENS]
                            for i in range(batch)], device=device)

    def timed(rows: torch.Tensor) -> tuple[float, Any]:
        started = time.perf_counter()
        output = model(input_ids=rows, use_cache=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started, output

    def step(output: Any) -> float:
        """One decode step after a prompt read: one new token for each of its rows."""
        token = output.logits[:, -1:].argmax(-1)
        started = time.perf_counter()
        model(input_ids=token, past_key_values=output.past_key_values, use_cache=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    measured: dict[str, list[float]] = {"alone_s": [], "together_s": [], "step_1_s": [],
                                        f"step_{batch}_s": []}
    with torch.inference_mode():
        timed(prompts[:1, :32])  # first call's one-off costs
        for _ in range(rounds):
            measured["alone_s"].append(sum(timed(prompts[i:i + 1])[0] for i in range(batch)))
            seconds, output = timed(prompts)
            measured["together_s"].append(seconds)
            measured[f"step_{batch}_s"].append(step(output))
            _, output = timed(prompts[:1])
            measured["step_1_s"].append(step(output))
    return {"rounds": rounds, "batch": batch, "prompt_tokens": PREFILL_TOKENS,
            "device": device.type, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0],
            "model": generator.model_id, "quantization": generator.settings.cpu_quantization,
            **measured}


def prefill_markdown(data: dict[str, Any]) -> str:
    batch = data["batch"]
    alone = statistics.median(data["alone_s"])
    together = statistics.median(data["together_s"])
    single = alone / batch
    step_1 = statistics.median(data["step_1_s"])
    step_n = statistics.median(data[f"step_{batch}_s"])
    floor = (batch // 2 + 1 + (batch + 1) // 2) / 2  # p50 of 1..batch prompts read in turn
    # One job alone costs P + n·s1; `batch` jobs together at best batch·P + n·s_batch, so a
    # throughput ratio r needs answers of n >= (r - 1)·P / (s1 - r·s_batch/batch) tokens.
    target = 2.5
    room = step_1 - target * step_n / batch
    needed = f"{(target - 1) * single / room:.0f} tokens" if room > 0 else "no length"
    return "\n".join([
        "# What bounds batching on this device (bench/batching.py --prefill-only)",
        "",
        f"`{data['model']}` ({data['quantization']} on CPU) on `{data['device']}`, "
        f"{data['threads']} thread(s), load average {data['load_average']:.1f}, in one process: "
        f"{batch} prompts of "
        f"{data['prompt_tokens']} tokens (the benchmark's average), {data['rounds']} rounds, "
        "medians.",
        "",
        "| | seconds | per prompt or row |",
        "|---|---|---|",
        f"| read {batch} prompts one after another | {alone:.2f} | {single:.3f} |",
        f"| read {batch} prompts as one batch | {together:.2f} | {together / batch:.3f} |",
        f"| one decode step, 1 row | {step_1:.3f} | {step_1:.3f} |",
        f"| one decode step, {batch} rows | {step_n:.3f} | {step_n / batch:.3f} |",
        "",
        f"Reading prompts together is **{alone / together:.2f}x** as fast as one after another; "
        f"a decode step for {batch} rows costs {step_n / step_1:.2f}x one row's "
        f"(**{batch * step_1 / step_n:.2f}x** the tokens per second).",
        "",
        f"Throughput: one job alone costs a prompt read plus n decode steps; {batch} jobs "
        f"together cost at least {batch} prompt reads plus n batched steps. For {target}x the "
        f"answers must average at least **{needed}** here (the benchmark's average 34).",
        "",
        f"When {batch} questions arrive at once, the prompt read k-th gives its first token no "
        f"earlier than k prompt reads after the arrival, in any order, so the median job's time "
        f"to first token is at least {floor:.1f} prompt reads ({floor * single:.1f} s here) "
        f"if they are read one at a time, and {together:.1f} s if read as one batch; an idle "
        f"worker's is one read ({single:.2f} s) plus retrieval. Where reading a prompt is "
        "compute-bound, as here, no scheduling brings the median under about "
        f"{min(floor * single, together) / single:.1f}x an idle worker's; on a GPU the read of "
        "a prompt of this length is short beside retrieval, and the same command shows it.",
        "",
    ])


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
    parser.add_argument("--prefill-only", action="store_true",
                        help="measure only reading prompts and decode steps, alone and batched")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.prefill_only:
        prefill = prefill_only(args.rounds, args.batch)
        write_results("batching_prefill", prefill, prefill_markdown(prefill))
        return
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
