"""Token relay: the worker's emit of a token event to a reader receiving it (target p99 <= 10 ms).

One real Celery worker (fake pipeline: 200 tokens, 5 ms apart) streams jobs one after another;
this process reads each job's events through read_events() on an EventHub (the web's path)
from before the job starts, and takes receive time minus the event's `ts` (set by EventLog
just before its Lua script appends and publishes; same host, same clock).

    .venv/bin/python bench/queue_relay.py [--jobs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from queue_common import Bench, bench_stack, summary_ms, write_results

from shared.events import read_events

TOKENS = 200
TARGET_P99_MS = 10.0


def relay_delays(bench: Bench) -> list[float]:
    """Seconds from emit to receipt for every token of one job, read live from its start."""
    record = bench.submit()
    delays = []
    for event in read_events(bench.store.redis, record["id"], hub=bench.hub, idle_timeout=30):
        if event["type"] == "token":
            delays.append(time.time() - event["ts"])
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_stack(
        Path(tmp), PIPELINE_FAKE_TOKENS=str(TOKENS), PIPELINE_FAKE_TOKEN_DELAY="0.005"
    ) as bench:
        bench.start_worker("bench")
        relay_delays(bench)  # warm-up
        delays = [d for _ in range(args.jobs) for d in relay_delays(bench)]
    stats = summary_ms(delays)
    verdict = "met" if stats["p99_ms"] <= TARGET_P99_MS else "MISSED"
    markdown = (
        "# Token relay, worker emit -> reader receive (bench/queue_relay.py)\n\n"
        f"One Celery worker (fake pipeline: {TOKENS} tokens 5 ms apart), {args.jobs} jobs read "
        "live through read_events() on an EventHub.\n\n"
        "| tokens | p50 ms | p90 ms | p99 ms | max ms | mean ms |\n|---|---|---|---|---|---|\n"
        f"| {stats['n']} | {stats['p50_ms']:.3f} | {stats['p90_ms']:.3f} | "
        f"{stats['p99_ms']:.3f} | {stats['max_ms']:.3f} | {stats['mean_ms']:.3f} |\n\n"
        f"Target: p99 <= {TARGET_P99_MS:g} ms: {verdict} ({stats['p99_ms']:.3f} ms).\n"
    )
    write_results("queue_relay", {"delays": stats, "target_p99_ms": TARGET_P99_MS,
                                  "met": verdict == "met"}, markdown)


if __name__ == "__main__":
    main()
