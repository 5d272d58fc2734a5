"""GET /health through gunicorn (2 workers, gthread) on this machine: requests per second.

Load generator: wrk (`apt-get install -y wrk`), on the same machine, so it competes with
gunicorn for the same cores; the figure is a floor for a separate client. Three runs, median.

    .venv/bin/python bench/web_health.py [--seconds 10] [--connections 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from queue_common import write_results
from web_common import web_stack

TARGET_RPS = 1000.0
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_LATENCY = re.compile(r"Latency\s+([\d.]+)(us|ms|s)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float, int]:
    """(requests/s, mean latency ms, non-2xx responses) of one wrk run."""
    found = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
                           capture_output=True, text=True, check=True).stdout
    rps = float(_RPS.search(found).group(1))  # type: ignore[union-attr]
    latency = _LATENCY.search(found)
    mean_ms = float(latency.group(1)) * _UNIT_MS[latency.group(2)] if latency else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", found)
    return rps, mean_ms, int(errors.group(1)) if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    runs = []
    with tempfile.TemporaryDirectory() as tmp, web_stack(Path(tmp)) as stack:
        url = f"{stack.web.url}/health"
        wrk(url, 2, args.connections)  # warm-up
        for _ in range(args.runs):
            runs.append(wrk(url, args.seconds, args.connections))
    rps = [run[0] for run in runs]
    median = statistics.median(rps)
    verdict = "met" if median >= TARGET_RPS else "MISSED"
    rows = "\n".join(f"| {i + 1} | {r:,.0f} | {lat:.2f} | {err} |"
                     for i, (r, lat, err) in enumerate(runs))
    markdown = f"""# GET /health through gunicorn (bench/web_health.py)

gunicorn: 2 workers, gthread, 128 threads each; wrk -t2 -c{args.connections} -d{args.seconds}s
on the same machine ({os.cpu_count()} cores, shared with the load generator and other work).

| run | requests/s | mean latency ms | non-2xx |
|---|---|---|---|
{rows}

Median: {median:,.0f} requests/s. Target >= {TARGET_RPS:,.0f}: {verdict}.
"""
    write_results("web_health", {"runs": [{"rps": r, "mean_latency_ms": lat, "non_2xx": err}
                                          for r, lat, err in runs],
                                 "median_rps": median, "target_rps": TARGET_RPS,
                                 "connections": args.connections, "seconds": args.seconds,
                                 "load_generator": "wrk 4.1.0, same machine"}, markdown)


if __name__ == "__main__":
    main()
