"""The `ragq` commands that talk to a running service (RAGQ_URL, RAGQ_API_KEY): ask (its HTTP
half; worker/cli.py adds `--local`), jobs, job, watch, cancel, batch.

Exit codes: 0 the job succeeded; 1 it failed or expired; 2 bad usage; 3 the service refused the
request (its problem is printed, with Retry-After); 4 the job was cancelled (Ctrl-C cancels the
job `ask` or `batch` started; a second Ctrl-C leaves at once with 130); 5 the service could not
be reached or its stream kept dropping.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TextIO

import click

from client.client import DEFAULT_URL, Client, Job
from client.errors import ClientError, ProblemError, RateLimited

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_CANCELLED, EXIT_UNREACHABLE = 0, 1, 3, 4, 5
EXIT_INTERRUPTED = 130
EXIT_BY_STATUS = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "expired": EXIT_FAILED,
                  "cancelled": EXIT_CANCELLED}
BATCH_SUBMIT_TRIES = 10
QUERY_COLUMN = 60


def service_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--url and --api-key (RAGQ_URL, RAGQ_API_KEY), passed on as `url` and `api_key`."""
    command = click.option("--api-key", envvar="RAGQ_API_KEY", default=None, show_envvar=True,
                           help="API key, when the service has auth on.")(command)
    return click.option("--url", envvar="RAGQ_URL", default=DEFAULT_URL, show_default=True,
                        show_envvar=True, help="Where the service listens.")(command)


def with_client(command: Callable[..., int]) -> Callable[..., None]:
    """Run `command(ragq, ...)` on a Client for --url/--api-key; its return value is the exit
    code, and the client's errors become one line on stderr and their exit code."""

    @service_options
    @functools.wraps(command)
    def run(url: str, api_key: str | None, **options: Any) -> None:
        sys.exit(call_service(url, api_key, lambda ragq: command(ragq, **options)))

    return run


def call_service(url: str, api_key: str | None, action: Callable[[Client], int]) -> int:
    """`action`'s exit code; a refusal is 3, an unreachable service 5, a second Ctrl-C 130."""
    try:
        with Client(url, api_key) as ragq:
            return action(ragq)
    except ProblemError as refused:
        click.echo(f"ragq: refused: {refused}", err=True)
        return EXIT_REFUSED
    except ClientError as error:
        click.echo(f"ragq: error: {error}", err=True)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        click.echo("\nragq: interrupted", err=True)
        return EXIT_INTERRUPTED


def ask(ragq: Client, question: str, top_k: int | None, as_json: bool,
        collection: str | None = None) -> int:
    """Submit QUESTION (about `collection`), print its answer as it streams (or the finished
    job with --json)."""
    job = ragq.submit(question, top_k, collection=collection)
    return follow(ragq, job, as_json=as_json, cancel_on_interrupt=True)


def follow(ragq: Client, job: Job, *, as_json: bool, cancel_on_interrupt: bool) -> int:
    """Show the job until it ends; Ctrl-C cancels it (once) when `cancel_on_interrupt`."""
    show = _JobPrinter(job)
    if not as_json:
        show.header()
    cancelling = False
    while True:
        try:
            final = ragq.wait(job["id"]) if as_json else _streamed(ragq, show)
            break
        except KeyboardInterrupt:
            if cancelling or not cancel_on_interrupt:
                raise
            cancelling = True
            click.echo(f"\nragq: cancelling job {job['id']} (Ctrl-C again to leave now)",
                       err=True)
            ragq.cancel(job["id"])
    if as_json:
        click.echo(json.dumps(final, indent=2))
    else:
        show.footer(final)
    return EXIT_BY_STATUS.get(final["status"], EXIT_FAILED)


def _streamed(ragq: Client, show: _JobPrinter) -> Job:
    for event in ragq.stream(show.job["id"], after=show.last_seq):
        show.event(event)
        if event["type"] in ("done", "error"):
            return dict(event["job"])
    return ragq.get(show.job["id"])


class _JobPrinter:
    """A job on the terminal: its tokens as they come, then the sources and how it ended."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.last_seq = 0
        self.printed = False

    def header(self) -> None:
        if self.job.get("cached"):
            click.echo(f"[answered from the cache: {self.job.get('cache_path')} match, "
                       f"similarity {self.job.get('similarity', 0):.3f}, for "
                       f"{self.job.get('cached_question')!r}]", err=True)
        elif self.job.get("queue_position"):
            click.echo(f"[queued at position {self.job['queue_position']}]", err=True)

    def event(self, event: dict[str, Any]) -> None:
        if event.get("seq") is not None:
            self.last_seq = event["seq"]
        if event["type"] == "token":
            click.echo(event["text"], nl=False)
            sys.stdout.flush()
            self.printed = True
        elif event["type"] == "status" and event.get("redelivered"):
            click.echo(f"\n[the worker was lost; running again, attempt {event['attempt']}]",
                       err=True)

    def footer(self, final: Job) -> None:
        result = final.get("result") or {}
        if not self.printed and result.get("answer"):
            click.echo(result["answer"], nl=False)  # a cache hit, or a trimmed stream
        if final["status"] in ("failed", "expired"):
            error = final.get("error") or {}
            click.echo(f"\nragq: job {final['status']}: {error.get('message', '')}", err=True)
            return
        if result.get("finish_reason") not in (None, "stop"):
            click.echo(f"\n[answer ended: {result['finish_reason']}]", nl=False)
        click.echo("\n\nSources (* cited):")
        for number, source in enumerate(result.get("sources", []), start=1):
            mark = "*" if source.get("cited") else " "
            click.echo(f"{mark}[{number}] {source['title']} ({source['chunk_id']}, "
                       f"score {source['score']:.4f})")


@click.command("jobs")
@click.option("--limit", type=click.IntRange(1, 200), default=None,
              help="How many (the service's API_PAGE_SIZE when not given).")
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
@with_client
def jobs_command(ragq: Client, limit: int | None, offset: int, as_json: bool) -> int:
    """List your jobs, newest first."""
    page = ragq.jobs(limit, offset)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return EXIT_OK
    for job in page["jobs"]:
        created = datetime.fromtimestamp(job["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        query = job["query"] if len(job["query"]) <= QUERY_COLUMN else \
            job["query"][:QUERY_COLUMN - 1] + "…"
        click.echo(f"{job['id']}  {job['status']:<9}  {created}  {query}")
    shown = page["offset"] + len(page["jobs"])
    click.echo(f"{shown} of {page['total']} job(s)" +
               (f"; more with --offset {shown}" if page["next"] else ""), err=True)
    return EXIT_OK


@click.command("job")
@click.argument("job_id")
@with_client
def job_command(ragq: Client, job_id: str) -> int:
    """Print job JOB_ID as JSON."""
    click.echo(json.dumps(ragq.get(job_id), indent=2))
    return EXIT_OK


@click.command("watch")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Wait, then print the finished job.")
@with_client
def watch_command(ragq: Client, job_id: str, as_json: bool) -> int:
    """Follow job JOB_ID from its first token to its end (Ctrl-C stops watching, not the job)."""
    return follow(ragq, ragq.get(job_id), as_json=as_json, cancel_on_interrupt=False)


@click.command("cancel")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@with_client
def cancel_command(ragq: Client, job_id: str, as_json: bool) -> int:
    """Cancel job JOB_ID (a running job keeps its partial answer)."""
    job = ragq.cancel(job_id)
    if as_json:
        click.echo(json.dumps(job, indent=2))
    elif job["status"] == "running":
        click.echo(f"{job_id} running: asked to stop; it ends cancelled within a token or two")
    else:
        click.echo(f"{job_id} {job['status']}")
    return EXIT_OK


@click.command("batch")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--top-k", type=click.IntRange(1, 20), default=None,
              help="Passages per answer (the service's PIPELINE_TOP_K when not given).")
@click.option("--chunk", type=click.IntRange(1, 1000), default=32, show_default=True,
              help="Questions per POST /v1/batch (at most the service's API_BATCH_MAX).")
@click.option("--progress/--no-progress", default=None,
              help="The progress bar on stderr [shown when stderr is a terminal].")
@with_client
def batch_command(ragq: Client, file: TextIO, top_k: int | None, chunk: int,
                  progress: bool | None) -> int:
    """Ask every line of FILE ('-': stdin) and print each finished job as a JSON line, in the
    file's order, with a progress bar on stderr. Ctrl-C cancels the jobs not yet finished."""
    from tqdm import tqdm

    questions = [line.strip() for line in file if line.strip()]
    jobs = submit_all(ragq, questions, top_k, chunk)
    worst = EXIT_OK
    hide = None if progress is None else not progress  # tqdm: None hides it off a terminal
    with tqdm(total=len(jobs), unit="job", file=sys.stderr, disable=hide) as bar:
        for final in _finished(ragq, jobs):
            bar.write(json.dumps(final), file=sys.stdout)
            bar.update(1)
            worst = _worse(worst, EXIT_BY_STATUS.get(final["status"], EXIT_FAILED))
    return worst


def submit_all(ragq: Client, questions: list[str], top_k: int | None, chunk: int) -> list[Job]:
    """Every question as a job, `chunk` per batch; a full queue (429) is waited out, up to
    BATCH_SUBMIT_TRIES times per batch, for as long as its Retry-After says."""
    jobs: list[Job] = []
    for start in range(0, len(questions), chunk):
        for attempt in range(1, BATCH_SUBMIT_TRIES + 1):
            try:
                jobs += ragq.batch(questions[start:start + chunk], top_k)
                break
            except RateLimited as busy:
                if attempt == BATCH_SUBMIT_TRIES:
                    raise
                click.echo(f"ragq: {busy}; waiting", err=True)
                time.sleep(busy.retry_after or 1.0)
    return jobs


def _finished(ragq: Client, jobs: list[Job]) -> Iterator[Job]:
    """Each job's final record in order; on Ctrl-C the unfinished ones are cancelled and still
    reported (they end at once, or within a token or two when running)."""
    index = 0
    cancelling = False
    while index < len(jobs):
        try:
            final = ragq.wait(jobs[index]["id"])
        except KeyboardInterrupt:
            if cancelling:
                raise
            cancelling = True
            click.echo(f"\nragq: cancelling {len(jobs) - index} unfinished job(s) "
                       "(Ctrl-C again to leave now)", err=True)
            for job in jobs[index:]:
                ragq.cancel(job["id"])
            continue
        index += 1
        yield final


def _worse(current: int, outcome: int) -> int:
    """Failed outranks cancelled, which outranks succeeded."""
    order = [EXIT_OK, EXIT_CANCELLED, EXIT_FAILED]
    return max(current, outcome, key=order.index)


COMMANDS = [jobs_command, job_command, watch_command, cancel_command, batch_command]
