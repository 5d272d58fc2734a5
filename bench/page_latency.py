"""From a `token` event leaving the worker to its text on the page, in a real Chromium.

A real stack (broker and cache redis-servers, gunicorn, a Celery worker with the fake pipeline
answering TOKENS tokens DELAY seconds apart) and Debian's headless Chromium driven by selenium
(tests/web/browser.py). The page records, per token, when its text was appended to the answer
(`inserted`) and the next animation frame after that (`painted`: the text is on screen by
then), against the event's `ts` (when the worker emitted it; same machine, same clock). Side by
side, a Python client (client.Client.stream) follows the same job, so the relay's own share
(worker -> Redis -> web -> socket) shows apart from the browser's.

    .venv/bin/python bench/page_latency.py [--answers 3] [--tokens 200] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from queue_common import summary_ms, write_results  # noqa: E402

from client import Client  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402
from tests.web.browser import Page, chromium, have_chromium  # noqa: E402

MEASURES = (
    ("emitted -> text appended to the page", "inserted_s"),
    ("emitted -> next frame (on screen)", "painted_s"),
    ("emitted -> received by the Python client", "python_s"),
)


def one_answer(page: Page, ragq: Client, tokens: int) -> dict[str, list[float]]:
    """Ask once from the page; each token's latencies in seconds."""
    page.open()
    page.driver.execute_script("window.ragqTrace = [];")
    question = f"how fast is the page {uuid.uuid4().hex[:8]}?"
    page.ask(question)
    page.wait_text("job-question", question)
    job_id = page.driver.execute_script("return location.hash.split('=')[1]")
    received: list[float] = []
    follower = threading.Thread(target=_follow, args=(ragq, job_id, received))
    follower.start()
    page.wait_finished()
    follower.join()
    page.wait_for(lambda: page.driver.execute_script(
        "return window.ragqTrace.every(t => t.painted !== null)"))
    trace: list[dict[str, Any]] = page.driver.execute_script("return window.ragqTrace")
    if len(trace) != tokens:
        raise RuntimeError(f"the page showed {len(trace)} of {tokens} tokens")
    return {
        "inserted_s": [(t["inserted"] - t["emitted"]) / 1000 for t in trace],
        "painted_s": [(t["painted"] - t["emitted"]) / 1000 for t in trace],
        "python_s": received,
    }


def _follow(ragq: Client, job_id: str, received: list[float]) -> None:
    for event in ragq.stream(job_id):
        if event["type"] == "token":
            received.append(time.time() - event["ts"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between tokens")
    args = parser.parse_args()
    if not have_chromium():
        sys.exit("no chromium/chromedriver: apt-get install chromium chromium-driver")
    samples: dict[str, list[float]] = {key: [] for _, key in MEASURES}
    with tempfile.TemporaryDirectory(prefix="ragq-bench-page-") as tmp, \
            running_stack(Path(tmp), tokens=args.tokens, token_delay=args.delay) as stack, \
            Client(stack.url) as ragq, chromium() as driver:
        page = Page(driver, stack.url)
        for _ in range(args.answers):
            for key, values in one_answer(page, ragq, args.tokens).items():
                samples[key] += values
    results = {key: summary_ms(values) for key, values in samples.items()}
    write_results("page_latency", {"answers": args.answers, "tokens": args.tokens,
                                   "delay_s": args.delay, "results": results},
                  markdown(args, results))


def markdown(args: argparse.Namespace, results: dict[str, dict[str, float]]) -> str:
    rows = "\n".join(
        f"| {label} | {results[key]['p50_ms']:.1f} | {results[key]['p90_ms']:.1f} | "
        f"{results[key]['p99_ms']:.1f} | {results[key]['max_ms']:.1f} |"
        for label, key in MEASURES)
    return f"""# Token event to text on the page

bench/page_latency.py: {args.answers} answers of {args.tokens} tokens, {args.delay * 1000:.0f} ms
apart (fake pipeline), asked from the page at / in headless Chromium (Debian's, via selenium),
with a Python client following the same job side by side; gunicorn, Celery worker, Redis and
the browser all on this 2-core machine. `emitted` is the event's `ts` (the worker's clock).

| measure | p50 ms | p90 ms | p99 ms | max ms |
|---|---|---|---|---|
{rows}
"""


if __name__ == "__main__":
    main()
