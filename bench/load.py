"""Load: locust's realistic mix (bench/locustfile.py) against a real `make run` stack.

    .venv/bin/python bench/load.py [--minutes 3] [--users 150]

Starts scripts/run.sh on free ports with the fake pipeline (PIPELINE_FAKE_TOKENS tokens,
PIPELINE_FAKE_TOKEN_DELAY apart: the web tier and the queue are what is measured, not the
model), runs locust headless, and writes bench/results/load.{json,md}: requests/s and p50/p99
per endpoint, failures, 429s with Retry-After, watchers with a gap in seq, the web's own count
of 5xx answers, and the resident memory of the web and the worker before and after.
API_CONNECTIONS_PER_CLIENT=0: every locust user comes from 127.0.0.1, as every client does
behind a reverse proxy, which is where that limit lives then.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.make_run import MakeRun, stack_env  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STACK_ENV = {
    "PIPELINE_FAKE_TOKENS": "20",
    "PIPELINE_FAKE_TOKEN_DELAY": "0.05",
    "API_WORKERS": "2",
    "API_CONNECTIONS_PER_CLIENT": "0",
    "LOG_LEVEL": "WARNING",
}


def tree_rss_mb(process: psutil.Process | None) -> float:
    """Resident memory of a process and its children, in MB."""
    if process is None:
        return 0.0
    members = [process, *process.children(recursive=True)]
    return round(sum(p.memory_info().rss for p in members) / 2**20, 1)


def rss(stack: MakeRun) -> dict[str, float]:
    return {"web_mb": tree_rss_mb(stack.find("bin/gunicorn")),
            "worker_mb": tree_rss_mb(stack.find("celery", "worker", "-Q"))}


def server_5xx(stack: MakeRun) -> int:
    """5xx answers in the web's own rag_requests_total."""
    text = requests.get(f"{stack.url}/metrics", timeout=30).text
    return int(sum(float(v) for v in re.findall(r'^rag_requests_total\{[^}]*status="5\d\d"[^}]*\} '
                                                 r"(\S+)$", text, re.MULTILINE)))


def read_stats(prefix: Path) -> list[dict[str, Any]]:
    with (prefix.parent / f"{prefix.name}_stats.csv").open() as stats:
        return [{"name": row["Name"], "requests": int(row["Request Count"]),
                 "failures": int(row["Failure Count"]), "rps": round(float(row["Requests/s"]), 1),
                 "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"])}
                for row in csv.DictReader(stats)]


def run(minutes: float, users: int, watchers: int, workdir: Path) -> dict[str, Any]:
    stack = MakeRun(workdir, stack_env(workdir, **STACK_ENV))
    try:
        stack.wait_ready()
        before = rss(stack)
        prefix = workdir / "locust"
        locust = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "locust"), "-f", str(ROOT / "bench" / "locustfile.py"),
             "--headless", "-u", str(users), "-r", "10", "-t", f"{int(minutes * 60)}s",
             "-H", stack.url, "--csv", str(prefix), "--only-summary", "--stop-timeout", "30"],
            capture_output=True, text=True, cwd=ROOT,
            env={**os.environ, "RAGQ_LOAD_WATCHERS": str(watchers)})
        found = re.search(r"^RAGQ_COUNTS (.*)$", locust.stdout, re.MULTILINE)
        return {
            "minutes": minutes, "users": users, "watchers": watchers, "stack_env": STACK_ENV,
            "endpoints": read_stats(prefix), "counts": json.loads(found.group(1)) if found else {},
            "server_5xx": server_5xx(stack), "rss_before": before, "rss_after": rss(stack),
            "load_average": psutil.getloadavg(), "locust_exit": locust.returncode,
            "locust_tail": locust.stderr[-2000:],
        }
    finally:
        stack.interrupt()
        stack.wait_stopped()
        stack.kill_all()


def markdown(result: dict[str, Any]) -> str:
    counts = result["counts"]
    lines = [
        f"# Load: locust mix against make run ({result['minutes']} min, {result['users']} users "
        f"of which {result['watchers']} WebSocket watchers)",
        "",
        "`.venv/bin/python bench/load.py --minutes {m} --users {u} --watchers {w}`; fake pipeline "
        "({t} tokens, {d} s apart), 2 shared CPU cores, load average at the end {la}.".format(
            m=result["minutes"], u=result["users"], w=result["watchers"],
            t=STACK_ENV["PIPELINE_FAKE_TOKENS"],
            d=STACK_ENV["PIPELINE_FAKE_TOKEN_DELAY"],
            la=" / ".join(f"{x:.1f}" for x in result["load_average"])),
        "",
        "| endpoint | requests | failures | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
        *(f"| {e['name']} | {e['requests']} | {e['failures']} | {e['rps']} | {e['p50_ms']:.0f} "
          f"| {e['p99_ms']:.0f} |" for e in result["endpoints"]),
        "",
        f"- 5xx answers counted by the web: {result['server_5xx']}",
        f"- 429 with Retry-After: {counts.get('429_with_retry_after', 0)}",
        f"- watches completed: {counts.get('watches', 0)}, failed: "
        f"{counts.get('watch_failures', 0)}, with a gap in seq: {counts.get('watch_gaps', 0)}",
        f"- RSS web {result['rss_before']['web_mb']} -> {result['rss_after']['web_mb']} MB, "
        f"worker {result['rss_before']['worker_mb']} -> {result['rss_after']['worker_mb']} MB",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--users", type=int, default=150, help="watchers included")
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--out", default="load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragq-load-") as tmp:
        result = run(args.minutes, args.users, args.watchers, Path(tmp))
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
