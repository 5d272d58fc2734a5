"""`Client`: ragq's job API from Python, without polling, reconnection or error plumbing.

    from client import Client

    with Client("http://127.0.0.1:8000", api_key="k1") as ragq:
        job = ragq.submit("Which port does Flower listen on?")
        for event in ragq.stream(job["id"]):
            if event["type"] == "token":
                print(event["text"], end="", flush=True)
        final = ragq.wait(job["id"])
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2

from client.errors import ServiceUnreachable, parse_retry_after, problem_error
from client.stream import TERMINAL_TYPES, Event, Reconnect, follow

DEFAULT_URL = "http://127.0.0.1:8000"
KEY_HEADER = "X-API-Key"
PROBLEM_JSON = "application/problem+json"

Job = dict[str, Any]


class Client:
    """ragq's HTTP and WebSocket API.

    `url` is where the service listens (scheme, host, port); `api_key` is sent as `X-API-Key`
    on every request and WebSocket handshake (None when the service runs without auth).
    Every refusal raises a `client.errors.ProblemError` subclass carrying the problem details
    and `Retry-After`; a service that cannot be reached raises `ServiceUnreachable`.
    """

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *,
                 timeout: float = 30.0, reconnect: Reconnect | None = None) -> None:
        self.url = url.rstrip("/")
        self.reconnect = reconnect or Reconnect()
        self._headers = {KEY_HEADER: api_key} if api_key else {}
        self._timeout = timeout
        self._http = httpx2.Client(base_url=self.url, headers=self._headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._http.close()

    def submit(self, query: str, top_k: int | None = None, *, wait: float | None = None,
               collection: str | None = None) -> Job:
        """Submit a question (about `collection`, `default` when None); the job as the service
        returned it (queued, or already finished when answered from the cache or within `wait`
        seconds: `Prefer: wait=N`)."""
        headers = {"Prefer": f"wait={wait:g}"} if wait else {}
        body = _body(query=query, top_k=top_k, collection=collection)
        return dict(self._call("POST", "/v1/jobs", json=body, headers=headers))

    def get(self, job_id: str) -> Job:
        """The job as it is now."""
        return dict(self._call("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
        """One page of the caller's jobs, newest first: `{jobs, total, offset, limit, next}`."""
        params = _body(limit=limit, offset=offset)
        return dict(self._call("GET", "/v1/jobs", params=params))

    def cancel(self, job_id: str) -> Job:
        """Ask the job to stop (idempotent); a running job ends `cancelled` with its partial
        answer shortly after: `wait()` returns that final record."""
        return dict(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def batch(self, queries: list[str], top_k: int | None = None) -> list[Job]:
        """One job per query, all or nothing (a refused batch leaves no job queued)."""
        body = self._call("POST", "/v1/batch", json=_body(queries=queries, top_k=top_k))
        return list(body["jobs"])

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job's final record (succeeded, failed, cancelled or expired), pushed over its
        event stream rather than polled; `client.errors.WaitTimeout` after `timeout` seconds."""
        for event in self.stream(job_id, timeout=timeout):
            if event["type"] in TERMINAL_TYPES:
                break
        return self.get(job_id)  # with its links, as every other call returns a job

    def stream(self, job_id: str, after: int = 0, *, timeout: float | None = None
               ) -> Iterator[Event]:
        """The job's events after `after`, each exactly once and in `seq` order, until its
        `done` or `error` event. A dropped connection is resumed with `?after=<last seq>`
        (see `client.stream`); `timeout` bounds the whole stream (WaitTimeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return follow(self._ws_url(job_id), self._headers, lambda: self.get(job_id),
                      after=after, reconnect=self.reconnect, deadline=deadline,
                      open_timeout=self._timeout)

    # --- collections (docs/collections.md) -------------------------------------------------
    def collections(self) -> list[dict[str, Any]]:
        """The collections the caller may read, `default` first."""
        return list(self._call("GET", "/v1/collections")["collections"])

    def collection(self, name: str) -> dict[str, Any]:
        """The collection: index_version, counts, built_at, its document_list."""
        return dict(self._call("GET", f"/v1/collections/{name}"))

    def upload(self, name: str, files: list[tuple[str, bytes]]) -> Job:
        """Add or replace documents (file name, bytes): the queued ingest job."""
        parts = [("files", (filename, content)) for filename, content in files]
        return dict(self._call("POST", f"/v1/collections/{name}/documents", files=parts))

    def add_text(self, name: str, title: str, text: str) -> Job:
        """Add or replace one document given as text: the queued ingest job."""
        return dict(self._call("POST", f"/v1/collections/{name}/documents",
                               json={"title": title, "text": text}))

    def delete_document(self, name: str, document_id: str) -> Job:
        """The ingest job that builds a version of the collection without the document."""
        return dict(self._call("DELETE", f"/v1/collections/{name}/documents/{document_id}"))

    def delete_collection(self, name: str) -> Job:
        """Delete the collection (gone at once); the ingest job that removes its files."""
        return dict(self._call("DELETE", f"/v1/collections/{name}"))

    def ingest_job(self, job_id: str) -> Job:
        """An ingest job as it is now."""
        return dict(self._call("GET", f"/v1/ingest-jobs/{job_id}"))

    def ingest_stream(self, job_id: str, *, timeout: float | None = None) -> Iterator[Event]:
        """An ingest job's events (`status`, `progress`, then `done` or `error`), resumed on
        drops as `stream()` is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return follow(self._ws_url(job_id, "ingest-jobs"), self._headers,
                      lambda: self.ingest_job(job_id), reconnect=self.reconnect,
                      deadline=deadline, open_timeout=self._timeout)

    def _ws_url(self, job_id: str, kind: str = "jobs") -> str:
        scheme, rest = self.url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/{kind}/{job_id}/stream"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx2.TransportError as error:
            raise ServiceUnreachable(f"cannot reach {self.url}: {error}") from error
        if response.is_success:
            return response.json()
        raise problem_error(response.status_code, _problem(response),
                            parse_retry_after(response.headers.get("Retry-After")))


def _body(**fields: Any) -> dict[str, Any]:
    """The fields that were given (None: leave it to the service's default)."""
    return {name: value for name, value in fields.items() if value is not None}


def _problem(response: httpx2.Response) -> dict[str, Any]:
    """The problem body; a non-problem error page (a proxy's) becomes a title and a detail."""
    if response.headers.get("content-type", "").startswith((PROBLEM_JSON, "application/json")):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            return body
    return {"title": response.reason_phrase, "detail": response.text[:200].strip()}
