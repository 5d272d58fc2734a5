"""The client's exceptions: one tree, every lower library's error mapped into it.

A refusal from the service (an RFC 9457 problem) becomes a `ProblemError` subclass chosen by
its status, carrying the problem's fields and `Retry-After`; a service that cannot be reached
is a `ServiceUnreachable`.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base class of every error the ragq client raises."""


class ServiceUnreachable(ClientError):
    """The service could not be reached (connection refused, timed out, dropped)."""


class StreamInterrupted(ClientError):
    """A job's event stream kept dropping and could not be resumed within the allowed tries."""


class WaitTimeout(ClientError):
    """The job did not finish within the time the caller allowed."""


class ProblemError(ClientError):
    """The service refused the request with a problem-details body (RFC 9457).

    `status`, `type`, `title`, `detail` and `request_id` come from the body (`problem` holds
    all of it); `retry_after` is the `Retry-After` header in seconds, when the service sent one.
    """

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", "about:blank"))
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", ""))
        self.request_id = problem.get("request_id")
        self.retry_after = retry_after
        super().__init__(self.message())

    def message(self) -> str:
        """One readable line: the status, what happened and, when asked to, when to retry."""
        text = f"{self.status} {self.title}: {self.detail}" if self.detail else \
            f"{self.status} {self.title}"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g} s)"
        return text


class BadRequest(ProblemError):
    """400, 413, 415: the request itself was malformed."""


class AuthenticationFailed(ProblemError):
    """401: the API key is missing or unknown (or a WebSocket ticket was refused)."""


class Forbidden(ProblemError):
    """403: e.g. a WebSocket Origin the service does not allow."""


class JobNotFound(ProblemError):
    """404: no such job for this key (another key's job looks exactly like an unknown id)."""


class ValidationFailed(ProblemError):
    """422: fields failed validation; `errors` lists each as {field, message}."""

    @property
    def errors(self) -> list[dict[str, str]]:
        return list(self.problem.get("errors", []))


class RateLimited(ProblemError):
    """429: the queue is full or the spending limit is reached; retry after `retry_after`."""


class ServiceUnavailable(ProblemError):
    """503 (broker unreachable, job expired in the queue) or another 5xx."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest, 401: AuthenticationFailed, 403: Forbidden, 404: JobNotFound,
    413: BadRequest, 415: BadRequest, 422: ValidationFailed, 429: RateLimited,
}


def problem_error(status: int, problem: dict[str, Any], retry_after: float | None
                  ) -> ProblemError:
    """The exception for a refused request's status and body."""
    kind = _BY_STATUS.get(status) or (ServiceUnavailable if status >= 500 else ProblemError)
    return kind(status, problem, retry_after)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds; ragq sends delay-seconds, so an HTTP date is ignored."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
