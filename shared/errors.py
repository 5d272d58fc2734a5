"""ragq's exception tree: raised where a problem is found, translated to HTTP at the web edge."""

from typing import Self


class RagqError(Exception):
    """Base class of every error ragq raises on purpose."""


class SettingsError(RagqError):
    """A setting from the environment is missing or invalid; the message names the variable."""


class IndexBuildError(RagqError):
    """An index could not be built or loaded."""


class IngestError(RagqError):
    """An input file could not be read or held nothing to index; the message names the file."""


class ModelError(RagqError):
    """A model could not be found or loaded."""


class BrokerUnavailable(RagqError):
    """The broker Redis cannot be reached; the web answers 503 with Retry-After."""


class BrokerBusy(BrokerUnavailable):
    """Every broker connection of this process's pool stayed in use for the pool's timeout: the
    broker is up but this process is overloaded (503 broker-busy, counted apart from outages)."""


class JobNotFound(RagqError):
    """No job with this id is visible to the caller."""


class EventsTrimmed(RagqError):
    """A job's stream no longer holds the next event a reader needs (trimmed to
    JOBS_STREAM_MAXLEN): the events cannot be relayed in order; the job record has the outcome."""


class InvalidTransition(RagqError):
    """A job state change that the state machine does not allow."""


class BadTaskMessage(RagqError):
    """A task message with missing or malformed fields."""


class LimitExceeded(RagqError):
    """A limit refused the request (HTTP 429). `limit` names it (web/problems.py's
    LIMIT_PROBLEMS), `quota` and `window_seconds` describe it for the RateLimit-* headers."""

    default_limit = "limit"

    def __init__(
        self, message: str, retry_after: int, *, limit: str | None = None,
        quota: float | None = None, window_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit or self.default_limit
        self.quota = quota
        self.window_seconds = window_seconds

    def reworded(self, message: str) -> Self:
        """The same refusal (limit, Retry-After, quota) with another message."""
        return type(self)(message, self.retry_after, limit=self.limit, quota=self.quota,
                          window_seconds=self.window_seconds)


class BudgetExceeded(LimitExceeded):
    """The cost breaker is open: the window's spend reached its limit (the global one, or the
    caller's key's budget: `limit` says which)."""

    default_limit = "budget"


class QueueFull(LimitExceeded):
    """Admission control refused a new job because the queue is too deep (the whole queue, or
    the caller's key's share of it: `limit` says which)."""

    default_limit = "queue"


class RateLimited(LimitExceeded):
    """The caller's key sent requests faster than its token bucket refills."""

    default_limit = "key-rate"


class QueueRefused(RagqError):
    """The atomic admission inside job creation found a queue limit reached (shared/jobs.py);
    shared/admission.py turns it into QueueFull with a Retry-After."""

    def __init__(self, limit: str, count: int, maximum: int) -> None:
        super().__init__(f"{count} jobs queued (limit {maximum})")
        self.limit = limit
        self.count = count
        self.maximum = maximum


class CollectionNotFound(RagqError):
    """No collection with this name is visible to the caller (another key's answers the same)."""


class CollectionReadOnly(RagqError):
    """The collection cannot be changed through the API (`default` is built by `ragq index`)."""


class UnsupportedDocument(RagqError):
    """An uploaded file's type is not one ragq reads (.md, .txt, .pdf, .html); HTTP 415."""


class UploadTooLarge(RagqError):
    """An upload is larger than COLLECTIONS_MAX_UPLOAD_BYTES or holds too many files; HTTP 413."""


class DocumentRejected(RagqError):
    """One uploaded document cannot be indexed (unreadable, encrypted, empty, undecodable);
    the message names the file. The upload's other documents still go in."""
