"""Eight processes spend concurrently against one breaker: how far past the limit do they go?

Each process loops like the real flow: check the breaker (refused: stop), run a "job" (a short
sleep), charge the job's cost. Two ways of checking are measured:

- `reserve` (ragq's flow): check(reserve_eur=estimate) adds the job's estimated cost in the same
  atomic step that checks the limit, and the charge after the job settles the difference (0
  here, the estimate being exact): overshoot stays below one job's cost;
- `read` (a read-only check, for comparison): every job in flight when the limit is crossed
  still lands: overshoot up to the processes' in-flight jobs.

    .venv/bin/python bench/breaker_concurrency.py [--processes 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.breaker import Breaker  # noqa: E402
from shared.errors import BudgetExceeded  # noqa: E402
from shared.settings import BreakerSettings  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LIMIT_EUR = 1.0
JOB_COST_EUR = 0.013
JOB_SECONDS = 0.002


def spender(url: str, mode: str, start_at: float, done: Any) -> None:
    breaker = Breaker(
        redis.Redis.from_url(url, decode_responses=True),
        BreakerSettings(limit_eur=LIMIT_EUR, window_seconds=3600),
    )
    jobs = 0
    time.sleep(max(0.0, start_at - time.time()))
    while True:
        try:
            breaker.check(reserve_eur=JOB_COST_EUR if mode == "reserve" else 0.0)
        except BudgetExceeded:
            break
        time.sleep(JOB_SECONDS)
        if mode == "reserve":
            breaker.charge(JOB_COST_EUR, JOB_COST_EUR, breaker.window_start())
        else:
            breaker.charge(JOB_COST_EUR)
        jobs += 1
    done.put(jobs)


def run_round(url: str, mode: str, processes: int) -> dict[str, Any]:
    redis.Redis.from_url(url).flushdb()
    context = multiprocessing.get_context("spawn")
    done = context.Queue()
    start_at = time.time() + 2.0
    workers = [
        context.Process(target=spender, args=(url, mode, start_at, done)) for _ in range(processes)
    ]
    for process in workers:
        process.start()
    jobs = sum(done.get(timeout=120) for _ in workers)
    for process in workers:
        process.join(timeout=30)
    spend = Breaker(
        redis.Redis.from_url(url, decode_responses=True),
        BreakerSettings(limit_eur=LIMIT_EUR, window_seconds=3600),
    ).state()["spend_eur"]
    overshoot = spend - LIMIT_EUR
    return {
        "mode": mode,
        "jobs": jobs,
        "spend_eur": spend,
        "overshoot_eur": overshoot,
        "overshoot_jobs": overshoot / JOB_COST_EUR,
        "exact": abs(spend - jobs * JOB_COST_EUR) < 1e-6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(Path(workdir), "--maxmemory-policy", "noeviction").start()
        try:
            for mode in ("reserve", "read"):
                for _ in range(args.rounds):
                    rounds.append(run_round(server.url, mode, args.processes))
                    print(json.dumps(rounds[-1]), flush=True)
        finally:
            server.stop()
    write(rounds, args.processes)


def write(rounds: list[dict[str, Any]], processes: int) -> None:
    lines = [
        "# Breaker under concurrent spend (bench/breaker_concurrency.py)",
        "",
        f"{processes} processes, limit {LIMIT_EUR} EUR, job cost {JOB_COST_EUR} EUR, job time {JOB_SECONDS * 1000:.0f} ms; "  # noqa: E501
        "each loops check -> job -> charge until refused. Overshoot = final spend - limit.",
        "",
        "| check | rounds | median overshoot (EUR) | max overshoot (EUR) | max overshoot (jobs) | within one job's cost | spend == jobs x cost |",  # noqa: E501
        "|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for mode in ("reserve", "read"):
        mine = [r for r in rounds if r["mode"] == mode]
        worst = max(r["overshoot_eur"] for r in mine)
        summary[mode] = {
            "median_overshoot_eur": statistics.median(r["overshoot_eur"] for r in mine),
            "max_overshoot_eur": worst,
            "within_one_job": worst < JOB_COST_EUR,
            "all_exact": all(r["exact"] for r in mine),
        }
        lines.append(
            f"| {mode} | {len(mine)} | {summary[mode]['median_overshoot_eur']:.4f} | {worst:.4f} | "
            f"{worst / JOB_COST_EUR:.2f} | {'yes' if worst < JOB_COST_EUR else 'NO'} | "
            f"{'yes' if summary[mode]['all_exact'] else 'NO'} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "breaker_concurrency.json").write_text(
        json.dumps({"summary": summary, "rounds": rounds}, indent=2) + "\n"
    )
    (RESULTS / "breaker_concurrency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
