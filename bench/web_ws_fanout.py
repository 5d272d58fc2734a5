"""200 WebSocket watchers of running jobs: does every one get every event, in order? And what
does an open socket cost the web processes in memory?

gunicorn runs 2 gthread workers x 128 threads (the defaults). Jobs are submitted while no worker
runs, the watchers connect (each gets the `queued` event), then a real Celery worker (fake
pipeline) starts and runs the jobs one after another, so every later event reaches the watchers
live through the web processes' shared pub/sub hubs. Each watcher's events are checked against
the job's full stream read afterwards: same events, seq 1..n, no gap, no duplicate.
Memory: resident memory of the gunicorn workers with all sockets open minus before, per socket.

    .venv/bin/python bench/web_ws_fanout.py [--watchers 200] [--jobs 4] [--tokens 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
import websocket
from queue_common import write_results
from web_common import WebStack, web_stack

TIMEOUT = 120.0
CONNECT_TIMEOUT = 30.0


class Watcher(threading.Thread):
    """One client: connect, read until the server closes, keep every event."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.error = ""

    def run(self) -> None:
        try:
            ws = websocket.create_connection(self.url, timeout=TIMEOUT)
            self.connected.set()
            while message := ws.recv():
                self.events.append(json.loads(message))
            ws.shutdown()  # close TCP after the closing handshake, as browsers do
        except websocket.WebSocketConnectionClosedException:
            pass
        except Exception as error:  # noqa: BLE001 - a bench reports every failure, whatever it is
            self.error = repr(error)[:300]
            self.connected.set()


def complete(events: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    return [e["seq"] for e in events] == list(range(1, len(events) + 1)) and events == expected


def run(stack: WebStack, watchers: int, jobs: int, tokens: int) -> dict[str, Any]:
    ids = [requests.post(f"{stack.web.url}/v1/jobs", json={"query": f"fan-out question {i}?"},
                         timeout=30).json()["id"] for i in range(jobs)]
    rss_before, threads_before = stack.web_rss_bytes(), stack.web_threads()
    base = f"{stack.web.ws_url}/v1/jobs"
    clients = [Watcher(f"{base}/{ids[i % jobs]}/stream") for i in range(watchers)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + CONNECT_TIMEOUT
    for client in clients:
        client.connected.wait(max(0.0, deadline - time.monotonic()))
    waiting = sum(1 for client in clients if not client.connected.is_set())
    time.sleep(1.0)  # let every relay reach its idle wait
    rss_open, threads_open = stack.web_rss_bytes(), stack.web_threads()
    started = time.monotonic()
    stack.start_worker(PIPELINE_FAKE_TOKENS=str(tokens), PIPELINE_FAKE_TOKEN_DELAY="0.05")
    deadline = time.monotonic() + TIMEOUT
    for client in clients:
        client.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - started
    expected = {job_id: read_all(stack, job_id) for job_id in ids}
    ok = [complete(c.events, expected[ids[i % jobs]]) for i, c in enumerate(clients)]
    return {
        "watchers": watchers, "jobs": jobs, "tokens_per_job": tokens,
        "events_per_job": statistics.median(len(events) for events in expected.values()),
        "watchers_complete_in_order": sum(ok), "not_connected_in_time": waiting,
        "errors": [c.error for c in clients if c.error][:5],
        "web_rss_before_mb": rss_before / 2**20, "web_rss_open_mb": rss_open / 2**20,
        "rss_per_socket_kb": (rss_open - rss_before) / watchers / 1024,
        "web_threads_before": threads_before, "web_threads_open": threads_open,
        "error_kinds": sorted({c.error.split("(")[0] for c in clients if c.error}),
        "error_count": sum(1 for c in clients if c.error),
        "seconds_worker_start_to_last_close": elapsed,
    }


def read_all(stack: WebStack, job_id: str) -> list[dict[str, Any]]:
    ws = websocket.create_connection(f"{stack.web.ws_url}/v1/jobs/{job_id}/stream", timeout=30)
    events = []
    while message := ws.recv():
        events.append(json.loads(message))
    ws.shutdown()
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, web_stack(Path(tmp), CACHE_ENABLED="false") as stack:
        result = run(stack, args.watchers, args.jobs, args.tokens)
        if result["error_count"]:
            print(stack.web.log_path.read_text()[-6000:])
    verdict = "met" if result["watchers_complete_in_order"] == args.watchers else "MISSED"
    r = result
    table = [
        "| watchers | complete, in order | web RSS before MB | web RSS open MB | per socket KB "
        "| web threads before / open |",
        "|---|---|---|---|---|---|",
        f"| {args.watchers} | {r['watchers_complete_in_order']} | {r['web_rss_before_mb']:.1f} "
        f"| {r['web_rss_open_mb']:.1f} | {r['rss_per_socket_kb']:.0f} "
        f"| {r['web_threads_before']} / {r['web_threads_open']} |",
    ]
    newline = "\n"
    markdown = f"""# {args.watchers} WebSocket watchers of running jobs (bench/web_ws_fanout.py)

gunicorn 2 gthread workers x 128 threads; {args.jobs} jobs ({args.tokens} fake tokens 50 ms apart),
{args.watchers // args.jobs} watchers each, connected before the worker started; events per job:
{r['events_per_job']:.0f}.

{newline.join(table)}

Every watcher received every event in order: {verdict}. Errors: {r['errors'] or 'none'}.
"""
    write_results("web_ws_fanout", result, markdown)


if __name__ == "__main__":
    main()
