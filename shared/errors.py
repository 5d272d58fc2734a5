"""ragq's exception tree: raised where a problem is found, translated to HTTP at the web edge."""


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


class JobNotFound(RagqError):
    """No job with this id is visible to the caller."""


class EventsTrimmed(RagqError):
    """A job's stream no longer holds the next event a reader needs (trimmed to
    JOBS_STREAM_MAXLEN): the events cannot be relayed in order; the job record has the outcome."""


class InvalidTransition(RagqError):
    """A job state change that the state machine does not allow."""


class BadTaskMessage(RagqError):
    """A task message with missing or malformed fields."""


class BudgetExceeded(RagqError):
    """The cost breaker is open: the window's spend reached its limit."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(RagqError):
    """Admission control refused a new job because the queue is too deep."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
