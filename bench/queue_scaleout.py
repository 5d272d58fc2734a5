"""Scale-out: wall time of 8 queued jobs on two workers vs one (target <= 0.6x).

Fake pipeline with a fixed token delay (20 tokens, 100 ms apart: about 2 s a job, the
model's time stood in by sleeping, as a GPU would run them in parallel on two hosts). All 8
jobs are submitted at once; wall time runs from the first submit to the last final record.

    .venv/bin/python bench/queue_scaleout.py [--jobs 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from queue_common import Bench, bench_stack, write_results

from shared import keys

TOKENS = 20
TARGET_RATIO = 0.6


def run_batch(bench: Bench, jobs: int) -> tuple[float, dict[str, int]]:
    """Wall seconds for `jobs` jobs submitted at once, and how many each node ran."""
    started = time.monotonic()
    records = [bench.submit(f"question {i}") for i in range(jobs)]
    finals = [bench.final(record["id"]) for record in records]
    wall = time.monotonic() - started
    if any(final["status"] != "succeeded" or final["attempt"] != 1 for final in finals):
        raise RuntimeError(f"a job did not succeed exactly once: {finals}")
    nodes = Counter(str(bench.store.redis.hget(keys.job(r["id"]), "node")) for r in records)
    return wall, dict(nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_stack(
        Path(tmp), PIPELINE_FAKE_TOKENS=str(TOKENS), PIPELINE_FAKE_TOKEN_DELAY="0.1"
    ) as bench:
        bench.start_worker("gpu0")
        one, one_nodes = run_batch(bench, args.jobs)
        bench.start_worker("gpu1")
        two, two_nodes = run_batch(bench, args.jobs)
    ratio = two / one
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    markdown = (
        "# Scale-out: 8 queued jobs, one worker vs two (bench/queue_scaleout.py)\n\n"
        f"Fake pipeline with a fixed token delay ({TOKENS} tokens, 100 ms apart, about 2 s a "
        "job); two worker processes on one queue, as two GPU hosts.\n\n"
        "| workers | jobs | wall s | jobs per node |\n|---|---|---|---|\n"
        f"| 1 | {args.jobs} | {one:.2f} | {one_nodes} |\n"
        f"| 2 | {args.jobs} | {two:.2f} | {two_nodes} |\n\n"
        f"Ratio two/one: {ratio:.2f}; target <= {TARGET_RATIO}: {verdict}.\n"
    )
    write_results("queue_scaleout", {"one_worker_s": one, "two_workers_s": two, "ratio": ratio,
                                     "nodes": {"one": one_nodes, "two": two_nodes},
                                     "met": verdict == "met"}, markdown)


if __name__ == "__main__":
    main()
