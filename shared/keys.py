"""Every Redis key and channel ragq uses, named once. No other module writes a key string.

Broker Redis (noeviction) holds everything here except the `cache_*` keys, which live on
the cache Redis (allkeys-lru).
"""

PREFIX = "ragq:"

# --- jobs (broker Redis) ---------------------------------------------------------------
def job(job_id: str) -> str:
    """Hash: the job record."""
    return f"{PREFIX}job:{job_id}"


def job_events(job_id: str) -> str:
    """Stream: the job's events, bounded, with the record's TTL; replayed to late readers."""
    return f"{PREFIX}job:{job_id}:events"


def job_channel(job_id: str) -> str:
    """Pub/sub channel: the job's live events."""
    return f"{PREFIX}events:{job_id}"


EVENTS_PATTERN = f"{PREFIX}events:*"  # one psubscribe per web process serves every socket


def job_lease(job_id: str) -> str:
    """String: the worker that runs the job now; expires unless renewed (crash detection)."""
    return f"{PREFIX}job:{job_id}:lease"


def owner_jobs(owner: str) -> str:
    """Sorted set: an owner's job ids scored by creation time."""
    return f"{PREFIX}owner:{owner}:jobs"


# sorted set: queued job ids by fair level, then enqueue time (queue position; admission.py)
QUEUED = f"{PREFIX}jobs:queued"
RUNNING = f"{PREFIX}jobs:running"  # sorted set: running job ids by start time (crash recovery)
STATUS_COUNTS = f"{PREFIX}jobs:status_counts"  # hash: final status -> count
RECENT_DURATIONS = f"{PREFIX}jobs:recent_durations"  # list: seconds of recent jobs (Retry-After)
REAPER_LOCK = f"{PREFIX}lock:reaper"


def inflight(fingerprint: str) -> str:
    """String: the job id answering this normalised question and scope (single-flight)."""
    return f"{PREFIX}inflight:{fingerprint}"


def ws_ticket(ticket: str) -> str:
    """String: a single-use WebSocket ticket's owner."""
    return f"{PREFIX}ticket:{ticket}"


def worker(node: str) -> str:
    """Hash: a worker's heartbeat report (pipeline loaded, device, VRAM); expires when it dies."""
    return f"{PREFIX}worker:{node}"


WORKERS_PATTERN = f"{PREFIX}worker:*"


def breaker_window(window_start: int) -> str:
    """String (float): spend in EUR of the window starting at `window_start`."""
    return f"{PREFIX}breaker:{window_start}"


def owner_spend(owner: str, window_start: int) -> str:
    """String (float): spend in EUR of one owner's jobs in the window starting at `window_start`."""
    return f"{PREFIX}breaker:{window_start}:owner:{owner}"


# --- tenants (broker Redis) ------------------------------------------------------------
def rate_bucket(owner: str) -> str:
    """Hash: an owner's token bucket (tokens, at_ms); expires once full again."""
    return f"{PREFIX}rate:{owner}"


def usage(owner: str) -> str:
    """Hash: an owner's running totals (jobs by final status, tokens, cost, cache hits)."""
    return f"{PREFIX}usage:{owner}"


# --- collections (broker Redis) --------------------------------------------------------
COLLECTIONS = f"{PREFIX}collections"  # set: every collection's name


def collection(name: str) -> str:
    """Hash: a collection's owner, current index_version, counts and times."""
    return f"{PREFIX}collection:{name}"


def collection_documents(name: str) -> str:
    """Hash: document id -> JSON of the document in the collection's current version."""
    return f"{PREFIX}collection:{name}:documents"


COLLECTION_VERSIONS_CHANNEL = f"{PREFIX}collections:published"  # pub/sub: "<name> <version>"


# sorted sets: queued and running ingest job ids by the time they got there (crash recovery)
INGEST_QUEUED = f"{PREFIX}ingest:queued"
INGEST_RUNNING = f"{PREFIX}ingest:running"
INGEST_REAPER_LOCK = f"{PREFIX}lock:ingest_reaper"


def ingest_upload(job_id: str) -> str:
    """Hash: an ingest job's uploaded files (name, media type, base64 bytes) until it ends."""
    return f"{PREFIX}ingest:{job_id}:upload"

# --- semantic cache (cache Redis) ------------------------------------------------------
def cache_entry(entry_id: str) -> str:
    """Hash: one cached answer with its question, scope, embedding."""
    return f"{PREFIX}cache:entry:{entry_id}"


def cache_exact(scope: str, text_hash: str) -> str:
    """String: entry id for a normalised question text within a scope."""
    return f"{PREFIX}cache:exact:{scope}:{text_hash}"


CACHE_LOG = f"{PREFIX}cache:log"  # stream: entry ids in insertion order (incremental sync)
CACHE_STATS = f"{PREFIX}cache:stats"  # hash: hits, misses, errors

PIPELINE_INFO = f"{PREFIX}pipeline"  # hash: index_version, model_id, prompt_version of the workers
