"""Crash test: SIGKILL the worker mid-generation, start it again; the job must still succeed.

Each round: submit a job (fake pipeline: 30 tokens, 50 ms apart), wait for its 5th token,
SIGKILL the worker's whole process group (parent and pool child, as when a host dies), start
a fresh worker with the same node name, and wait for the job to finish. Target: 20 of 20 end
`succeeded`, each at attempt 2, with a `status` event saying it was redelivered. Lease 1 s,
so the reaper re-sends the task about a second after the kill.

    .venv/bin/python bench/queue_crash.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from queue_common import Bench, bench_stack, percentile, write_results

from shared.events import read_events

TOKENS = 30
KILL_AT_TOKEN = 5


def crash_round(bench: Bench) -> dict[str, Any]:
    """One job killed mid-generation; what became of it and how long recovery took."""
    record = bench.submit()
    events = read_events(bench.store.redis, record["id"], hub=bench.hub, idle_timeout=60)
    tokens = 0
    for event in events:
        tokens += event["type"] == "token"
        if tokens == KILL_AT_TOKEN:
            break
    killed = time.monotonic()
    bench.workers[-1].kill()
    bench.start_worker("bench")
    rest = list(events)
    final = rest[-1]["job"]
    redelivered = [e for e in rest if e["type"] == "status" and e.get("redelivered")]
    return {"status": final["status"], "attempt": final["attempt"],
            "redelivered_event": bool(redelivered),
            "complete_answer": len(final["result"]["answer"].split()) == TOKENS
            if final["result"] else False,
            "recovery_s": time.monotonic() - killed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_stack(
        Path(tmp), PIPELINE_FAKE_TOKENS=str(TOKENS), PIPELINE_FAKE_TOKEN_DELAY="0.05",
        JOBS_LEASE_SECONDS="1.0"
    ) as bench:
        bench.start_worker("bench")
        rounds = [crash_round(bench) for _ in range(args.rounds)]
    ok = [r for r in rounds if r["status"] == "succeeded" and r["attempt"] == 2
          and r["redelivered_event"] and r["complete_answer"]]
    recovery = [r["recovery_s"] for r in rounds]
    verdict = "met" if len(ok) == args.rounds else "MISSED"
    markdown = (
        "# Crash test: SIGKILL mid-generation, restart, redelivery (bench/queue_crash.py)\n\n"
        f"Fake pipeline ({TOKENS} tokens, 50 ms apart); worker process group SIGKILLed at token "
        f"{KILL_AT_TOKEN}, a fresh worker started; lease 1 s.\n\n"
        "| rounds | succeeded at attempt 2 with a redelivered event and the full answer | "
        "kill -> done median s | p90 s |\n|---|---|---|---|\n"
        f"| {args.rounds} | {len(ok)} | {statistics.median(recovery):.2f} | "
        f"{percentile(recovery, 90):.2f} |\n\n"
        f"Target: {args.rounds} of {args.rounds} succeed: {verdict}. Recovery time includes "
        "starting the new worker.\n"
    )
    write_results("queue_crash", {"rounds": rounds, "succeeded": len(ok),
                                  "met": verdict == "met"}, markdown)


if __name__ == "__main__":
    main()
