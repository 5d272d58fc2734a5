"""Queue overhead on an idle worker: submit_job() to `running` (target p50 <= 15 ms).

One real Celery worker (prefork, concurrency 1, fake pipeline: 1 token, no delay, so the
model is not what is measured), one job at a time, each submitted only after the previous
one finished. Two spans per job: submit -> the worker's `running` emit (its event's `ts`),
and submit -> this process receiving it from read_events (EventHub, replay if it was
already emitted when the reader subscribed).

    .venv/bin/python bench/queue_overhead.py [--jobs 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from queue_common import Bench, bench_stack, summary_ms, write_results

from shared.events import read_events

WARMUP = 5
TARGET_P50_MS = 15.0


def one_job(bench: Bench) -> tuple[float, float]:
    """(submit -> worker emits running, submit -> reader receives it), seconds."""
    started = time.time()
    record = bench.submit()
    for event in read_events(bench.store.redis, record["id"], hub=bench.hub, idle_timeout=30):
        if event["type"] == "status" and event["status"] == "running":
            received = time.time()
            bench.final(record["id"])
            return event["ts"] - started, received - started
    raise TimeoutError(f"no running event for {record['id']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_stack(
        Path(tmp), PIPELINE_FAKE_TOKENS="1", PIPELINE_FAKE_TOKEN_DELAY="0"
    ) as bench:
        bench.start_worker("bench")
        spans = [one_job(bench) for _ in range(args.jobs + WARMUP)][WARMUP:]
    emit = summary_ms([s[0] for s in spans])
    seen = summary_ms([s[1] for s in spans])
    verdict = "met" if emit["p50_ms"] <= TARGET_P50_MS else "MISSED"
    rows = "\n".join(
        f"| {label} | {s['n']} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | {s['p99_ms']:.2f} "
        f"| {s['max_ms']:.2f} |"
        for label, s in (("submit -> worker emits running", emit),
                         ("submit -> reader receives running", seen)))
    markdown = (
        "# Queue overhead on an idle worker (bench/queue_overhead.py)\n\n"
        "One Celery worker (prefork, -c 1, fake pipeline: 1 token, no delay), jobs one at a "
        f"time after {WARMUP} warm-up jobs.\n\n"
        "| span | jobs | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n"
        f"{rows}\n\nTarget: submit -> running p50 <= {TARGET_P50_MS:g} ms: {verdict} "
        f"({emit['p50_ms']:.2f} ms).\n"
    )
    write_results("queue_overhead", {"emit": emit, "received": seen,
                                     "target_p50_ms": TARGET_P50_MS, "met": verdict == "met"},
                  markdown)


if __name__ == "__main__":
    main()
