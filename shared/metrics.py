"""Every Prometheus metric ragq exports, defined once; web and worker import what they record.

The web tier runs under gunicorn in prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR), so each gauge declares how processes combine: a value read
from Redis (queue depth, live workers, breaker spend, cache size) is `mostrecent`, so a
process that set it long ago cannot outvote the one that read it last; the web refreshes
queue depth and live workers on every scrape.
"""

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0)
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- seed design names ------------------------------------------------------------------
REQUESTS = Counter("rag_requests_total", "HTTP requests", ["method", "endpoint", "status"])
QUERY_LATENCY = Histogram(
    "rag_query_latency_seconds",
    "End-to-end query latency, submit to answer",
    buckets=LATENCY_BUCKETS,
)
CACHE_HITS = Counter("rag_cache_hits_total", "Semantic cache hits", ["path"])
CACHE_MISSES = Counter("rag_cache_misses_total", "Semantic cache misses")
CACHE_SIZE = Gauge(
    "rag_cache_size", "Entries in the semantic cache", multiprocess_mode="mostrecent"
)
ERRORS = Counter("rag_errors_total", "Errors by type", ["type"])
GPU_VRAM_USED = Gauge(
    "rag_gpu_vram_used_gb", "GPU memory used by the worker, GB", multiprocess_mode="max"
)
BREAKER_COST = Gauge(
    "rag_circuit_breaker_cumulative_cost_eur",
    "Spend in the current breaker window, EUR",
    multiprocess_mode="mostrecent",
)

# --- job system -------------------------------------------------------------------------
BREAKER_OPEN = Gauge(
    "rag_circuit_breaker_open",
    "1 while the cost breaker refuses misses",
    multiprocess_mode="mostrecent",
)
BREAKER_LIMIT = Gauge(
    "rag_circuit_breaker_limit_eur", "Breaker limit per window, EUR", multiprocess_mode="max"
)
CACHE_ERRORS = Counter("rag_cache_errors_total", "Cache Redis operations that failed", ["op"])
QUEUE_DEPTH = Gauge(
    "rag_queue_depth", "Jobs waiting in the queue", multiprocess_mode="livemostrecent"
)
BROKER_MEMORY_USED = Gauge(
    "rag_broker_memory_used_bytes", "Memory the broker Redis uses", multiprocess_mode="mostrecent"
)
BROKER_MEMORY_MAX = Gauge(
    "rag_broker_memory_max_bytes", "The broker Redis's maxmemory (0: none set)",
    multiprocess_mode="mostrecent",
)
WORKERS_ONLINE = Gauge(
    "rag_workers_online", "Generation workers with a live heartbeat",
    multiprocess_mode="livemostrecent",
)
QUEUE_WAIT = Histogram(
    "rag_queue_wait_seconds",
    "Time a job waited before running",
    buckets=FAST_BUCKETS + (30.0, 60.0, 300.0),
)
RETRIEVAL_LATENCY = Histogram(
    "rag_retrieval_seconds", "Dense + sparse retrieval and fusion", buckets=FAST_BUCKETS
)
RERANK_LATENCY = Histogram("rag_rerank_seconds", "Cross-encoder rerank", buckets=FAST_BUCKETS)
GENERATION_LATENCY = Histogram(
    "rag_generation_seconds", "Token generation", buckets=LATENCY_BUCKETS + (30.0, 60.0)
)
TIME_TO_FIRST_TOKEN = Histogram(
    "rag_time_to_first_token_seconds", "Generation start to first token", buckets=FAST_BUCKETS
)
TOKENS_GENERATED = Counter("rag_tokens_generated_total", "Tokens generated")
PROMPT_TOKENS = Counter("rag_prompt_tokens_total", "Prompt tokens processed")
JOBS_FINISHED = Counter("rag_jobs_total", "Jobs by final status", ["status"])
JOBS_SUBMITTED = Counter("rag_jobs_submitted_total", "Jobs queued")
# Usage by API key: `key` is the key's configured name (AUTH_API_KEYS / AUTH_KEYS_FILE), never
# the key, so the label has as many values as keys are configured.
KEY_JOBS = Counter("rag_key_jobs_total", "Jobs by API key name and final status", ["key", "status"])
KEY_TOKENS = Counter(
    "rag_key_tokens_total", "Tokens by API key name (kind: prompt, generated)", ["key", "kind"]
)
KEY_COST = Counter("rag_key_cost_eur_total", "Cost of jobs by API key name, EUR", ["key"])
KEY_CACHE_HITS = Counter("rag_key_cache_hits_total", "Cache hits by API key name", ["key"])
WEBSOCKETS_OPEN = Gauge(
    "rag_websockets_open", "Open WebSocket streams", multiprocess_mode="livesum"
)
JOB_ATTEMPTS = Counter("rag_job_redeliveries_total", "Jobs run again after a worker died")
ANSWERS = Counter(
    "rag_answers_total", "Generated answers by why generation ended", ["finish_reason"]
)
CACHE_WRITES_SKIPPED = Counter(
    "rag_cache_writes_skipped_total",
    "Answers kept out of the semantic cache, by reason (loop, length, empty)",
    ["reason"],
)
BATCH_SIZE = Histogram(
    "rag_batch_size",
    "Generations decoded together, per decode step (WORKER_MAX_BATCH)",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
)
DECODE_TOKENS_PER_SECOND = Gauge(
    "rag_decode_tokens_per_second",
    "Tokens per second of the worker's last decode step, all its jobs together",
    multiprocess_mode="max",
)
JOB_TOKENS_PER_SECOND = Histogram(
    "rag_job_tokens_per_second",
    "Tokens per second of each answered job over its generation",
    buckets=(1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0),
)
SLOT_WAIT = Histogram(
    "rag_slot_wait_seconds",
    "Time a delivered job waited in its worker for a free batch slot",
    buckets=FAST_BUCKETS + (30.0, 60.0, 300.0),
)
JOBS_IN_FLIGHT = Gauge(
    "rag_worker_jobs_in_flight", "Jobs a worker process runs now", multiprocess_mode="livesum"
)

# --- collections (the ingest worker) ----------------------------------------------------
INGEST_DOCUMENTS = Counter(
    "rag_ingest_documents_total",
    "Uploaded documents by outcome (added, replaced, unchanged, removed, failed)",
    ["outcome"],
)
INGEST_JOBS = Counter("rag_ingest_jobs_total", "Ingest jobs by final status", ["status"])
INGEST_SECONDS = Histogram(
    "rag_ingest_seconds", "Ingest job run time, claim to publish",
    buckets=FAST_BUCKETS + (30.0, 60.0, 120.0, 300.0),
)
COLLECTION_CHUNKS = Gauge(
    "rag_collection_chunks", "Chunks in a collection's current version", ["collection"],
    multiprocess_mode="mostrecent",
)
