"""ragq's configuration: one pydantic-settings class per concern, each with its env prefix.

Every setting has a default that serves the local CPU stack. `load_settings()` is the one
place the environment is read; a bad value fails at start-up with the variable's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import SettingsError

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class PipelineSettings(BaseSettings):
    """Retrieval and generation: index, models, depths, decoding."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", extra="ignore")

    index_dir: Path = Field(Path("index/sample"), description="Built index folder to serve.")
    embedding_model: str = Field(
        "minilm",
        description="Sentence-transformers model: `minilm` (the packaged all-MiniLM-L6-v2), "
        "a local path, or a model name in the local model cache.",
    )
    generator_model: str = Field(
        "qwen2.5-coder-0.5b",
        description="Causal LM: a packaged GGUF (`qwen2.5-coder-0.5b`, `smollm2`, "
        "`qwen2.5-coder-1.5b`; docs/pipeline.md), a local path, or a model hub name "
        "(e.g. Qwen/Qwen2.5-3B-Instruct) where a hub or its cache is reachable.",
    )
    model_cache_dir: Path = Field(
        Path("~/.cache/ragq/models"),
        description="Where de-quantized GGUF weights are cached as safetensors.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where models run.")
    load_in_4bit: bool = Field(
        False, description="On CUDA: load the generator in NF4 (bitsandbytes)."
    )
    cpu_quantization: Literal["int8-fp32-down", "int8", "none"] = Field(
        "int8-fp32-down",
        description="On CPU: dynamic int8 quantization of the generator's linear layers but "
        "the MLP down-projections, kept fp32 (int8 there does most of its harm: "
        "bench/results/quantization.md); `int8`: every layer, about twice as fast and worse "
        "answers; `none`: fp32.",
    )
    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="CPU threads of the generator; 0: every usable core but one, left to the "
        "web tier and Redis.",
    )
    max_new_tokens: int = Field(
        200, ge=1, le=4096, description="Generated tokens per answer at most."
    )
    repetition_penalty: float = Field(
        1.0,
        ge=1.0,
        le=2.0,
        description="Penalty on tokens already in the prompt or answer (1.0: off; it also "
        "penalises quoting the sources).",
    )
    loop_ngram: int = Field(
        8, ge=2, le=64, description="Tokens in the n-gram whose repetition ends a looping answer."
    )
    loop_repeats: int = Field(
        3, ge=2, le=16, description="Times the answer's last n-gram may occur before it is a loop."
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    top_k: int = Field(
        3,
        ge=1,
        le=20,
        description="Passages given to the generator by default (3: about 450 prompt tokens, "
        "which keeps the CPU's time to first token near 2 s).",
    )
    dense_depth: int = Field(50, ge=1, le=1000, description="FAISS candidates fused.")
    sparse_depth: int = Field(50, ge=1, le=1000, description="BM25 candidates fused.")
    fusion: Literal["convex", "rrf"] = Field(
        "convex",
        description="How dense and BM25 candidates combine: `convex` (weighted sum of each "
        "list's min-max normalised scores) or `rrf` (reciprocal rank fusion).",
    )
    fusion_dense_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Convex fusion: the dense score's share, BM25 gets the rest (equal by "
        "default; bench/results/pipeline_retrieval.md cross-validates it).",
    )
    rrf_k: int = Field(60, ge=1, description="RRF constant (fusion `rrf`).")
    rrf_dense_weight: float = Field(1.0, ge=0.0, description="Weight of the dense ranking in RRF.")
    rrf_sparse_weight: float = Field(1.0, ge=0.0, description="Weight of the BM25 ranking in RRF.")
    reranker: str = Field("", description="CrossEncoder name or path; empty turns reranking off.")
    rerank_depth: int = Field(20, ge=1, le=200, description="Fused candidates the reranker scores.")
    chunk_tokens: int = Field(
        128, ge=16, le=2048, description="Chunk size in embedding tokens (MiniLM trained on 128)."
    )
    chunk_overlap: int = Field(
        32, ge=0, le=1024, description="Tokens shared by neighbouring chunks."
    )
    index_type: Literal["flat", "hnsw"] = Field("flat", description="FAISS index: exact or HNSW.")
    index_headings: bool = Field(
        True, description="Prefix a Markdown section's heading to its chunks' indexed text."
    )
    index_sentences: bool = Field(
        False,
        description="Also embed each sentence of a chunk; a chunk's dense score is its best "
        "vector's. Helps on prose (SQuAD), hurt on ragq's own docs (docs/pipeline.md).",
    )
    sparse_stemming: bool = Field(
        False,
        description="Snowball-stem BM25 terms (English). Helps BM25 alone on prose (SQuAD), "
        "hurt on ragq's own docs and in the fused ranking (docs/pipeline.md).",
    )
    max_context_tokens: int = Field(1500, ge=64, description="Prompt budget for the passages.")
    prompt_version: str = Field(
        "v3", description="Bumped when the prompt changes; scopes the cache."
    )
    backend: Literal["transformers", "fake"] = Field(
        "transformers",
        description="`fake` serves canned passages and tokens (tests of queue logic only).",
    )
    fake_token_delay: float = Field(0.05, ge=0.0, description="Seconds between fake tokens.")
    fake_tokens: int = Field(20, ge=1, description="Tokens a fake answer has.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> PipelineSettings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        return self


class CacheSettings(BaseSettings):
    """Semantic cache on its own Redis (maxmemory + allkeys-lru)."""

    model_config = SettingsConfigDict(env_prefix="CACHE_", extra="ignore")

    enabled: bool = Field(True, description="Look up and store answers in the semantic cache.")
    redis_url: str = Field(
        "redis://127.0.0.1:6391/0", description="Cache Redis (never the broker)."
    )
    similarity_threshold: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="Cosine needed for a semantic candidate; the verification stage then checks it "
        "(bench/results/cache_precision.md: 0.85 with verification keeps false hits at 0 %).",
    )
    ttl_seconds: int = Field(
        86400, ge=1, description="Entry lifetime, absolute (not refreshed on hit)."
    )
    verify: bool = Field(True, description="Check the words that differ before a semantic hit.")
    verifier_model: str = Field(
        "", description="Duplicate-question CrossEncoder name or path; empty: the word guard only."
    )
    sync_interval_seconds: float = Field(
        0.2, gt=0.0, description="How often processes pull new entries."
    )
    synonym_similarity: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="Word cosine at which a differing word counts as a synonym.",
    )
    verifier_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="CrossEncoder score needed for a duplicate question."
    )
    candidates: int = Field(4, ge=1, le=64, description="Nearest neighbours verified per lookup.")
    embedding_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="torch threads of a web process's query embedding; several gunicorn "
        "processes share the CPUs, and one thread each avoids oversubscription.",
    )
    socket_timeout_seconds: float = Field(
        0.25,
        gt=0.0,
        description="Cache Redis timeout; a slow or dead cache is a miss, not a stall.",
    )
    max_entries: int = Field(
        1_000_000, ge=100, description="Entries the sync log keeps at most (older ones trimmed)."
    )
    sharing: Literal["key", "shared"] = Field(
        "key",
        description="Whose answers a question may hit: `key`, only those of the same API key "
        "(with auth off every caller is one key); `shared`, every key's, for one trusted team "
        "(a hit then shows the cached question only to the key that asked it).",
    )


class AuthSettings(BaseSettings):
    """API keys and WebSocket tickets."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    enabled: bool = Field(False, description="Require X-API-Key on /v1 and /query.")
    api_keys: CommaList = Field(
        default_factory=list,
        description="Accepted keys, comma-separated, each `name:key` (the name labels its usage "
        "and metrics) or a bare key (named key1, key2, ... by position).",
    )
    keys_file: Path | None = Field(
        None,
        description="A TOML file of named keys, stored as SHA-256 digests, with per-key limits "
        "(docs/operations.md); its keys are accepted besides AUTH_API_KEYS.",
    )
    ticket_ttl_seconds: int = Field(30, ge=1, le=600, description="Lifetime of a WebSocket ticket.")
    allowed_origins: CommaList = Field(
        default_factory=list, description="Origins allowed to open WebSockets; empty: any."
    )
    key_max_queued: int = Field(
        100, ge=0, description="Jobs one key may have queued at once (0: only the global limit); "
        "a key's `max_queued` in AUTH_KEYS_FILE overrides it."
    )
    key_rate_per_second: float = Field(
        20.0, ge=0.0, description="Requests per second one key may make on average (a token "
        "bucket in Redis; 0: unlimited); overridden by a key's `rate_per_second`."
    )
    key_burst: int = Field(
        40, ge=1, description="Requests one key may make at once above its rate (the bucket's "
        "size); overridden by a key's `burst`."
    )
    key_budget_eur: float = Field(
        0.0, ge=0.0, description="Spend one key may cause per CB_WINDOW_SECONDS window, on top of "
        "the global CB_LIMIT_EUR (0: only the global limit); overridden by a key's `budget_eur`."
    )

    _split = field_validator("api_keys", "allowed_origins", mode="before")(_split_commas)

    @model_validator(mode="after")
    def _keys_when_enabled(self) -> AuthSettings:
        if self.enabled and not self.api_keys and self.keys_file is None:
            raise ValueError("api_keys must hold at least one key (or keys_file be set) "
                             "when enabled is true")
        return self


class BreakerSettings(BaseSettings):
    """Cost circuit breaker shared by every process through the broker Redis."""

    model_config = SettingsConfigDict(env_prefix="CB_", extra="ignore")

    enabled: bool = Field(
        True, description="Refuse new cache misses once the window's spend hits the limit."
    )
    limit_eur: float = Field(10.0, gt=0.0, description="Spend allowed per window, in EUR.")
    window_seconds: int = Field(3600, ge=1, description="Length of a spending window.")
    eur_per_1k_input: float = Field(0.0005, ge=0.0, description="Price of 1,000 prompt tokens.")
    eur_per_1k_output: float = Field(0.0015, ge=0.0, description="Price of 1,000 generated tokens.")


class ApiSettings(BaseSettings):
    """The HTTP front end."""

    model_config = SettingsConfigDict(env_prefix="API_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address gunicorn binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port gunicorn binds.")
    workers: int = Field(2, ge=1, le=64, description="gunicorn worker processes.")
    connections: int = Field(
        1000, ge=10, le=100000,
        description="Connections one gunicorn worker (gevent) serves at once; an open "
        "WebSocket holds one, with no thread of its own.",
    )
    connections_per_client: int = Field(
        128, ge=0,
        description="Connections one client address may hold open per web process (over: 429 "
        "on each request they send); 0: no limit (behind a proxy that limits per client, as in "
        "compose).",
    )
    websockets_per_job: int = Field(
        64, ge=1, description="WebSockets open on one job per web process (over: 429 / close 1013)."
    )
    header_timeout_seconds: int = Field(
        5, ge=1, le=300,
        description="Deadline to read a request's line and headers (and how long an idle "
        "keep-alive connection is kept); a client that is slower is disconnected.",
    )
    body_timeout_seconds: float = Field(
        10.0, gt=0.0, description="Deadline to read a request's body (over: 408)."
    )
    max_body_bytes: int = Field(65536, ge=1024, description="Largest request body accepted.")
    batch_max: int = Field(32, ge=1, le=1000, description="Queries one batch may hold.")
    query_wait_seconds: float = Field(120.0, gt=0.0, description="How long POST /query waits.")
    prefer_wait_max_seconds: float = Field(60.0, ge=0.0, description="Cap on `Prefer: wait=N`.")
    ws_ping_seconds: float = Field(20.0, gt=0.0, description="WebSocket keep-alive ping interval.")
    max_queue_depth: int = Field(
        200, ge=1, description="Most jobs queued at once; a miss that would queue one more "
        "gets 429."
    )
    page_size: int = Field(20, ge=1, le=200, description="Default page size of GET /v1/jobs.")
    health_detail: bool | None = Field(
        None,
        description="/health/stats and /health/gpu show workers' hosts, pids, models and the "
        "breaker's spend (no key needed); unset: only while AUTH_ENABLED is false.",
    )
    public_url: str = Field(
        "",
        description="The API's URL as clients reach it (e.g. https://ragq.example.com): jobs' "
        "stream links are built from it; empty: from the request's Host.",
    )

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError("must be an http:// or https:// URL, or empty")
        return value.rstrip("/")


class BrokerSettings(BaseSettings):
    """Broker Redis (noeviction) and Celery."""

    model_config = SettingsConfigDict(env_prefix="BROKER_", extra="ignore")

    url: str = Field(
        "redis://127.0.0.1:6390/0", description="Broker Redis: queue, jobs, events, breaker."
    )
    queue: str = Field("ragq.generate", description="Celery queue of generation tasks.")
    connect_timeout_seconds: float = Field(2.0, gt=0.0, description="Socket connect timeout.")
    pool_size: int = Field(
        256, ge=2, le=10000,
        description="Broker connections per process; a caller waits for a free one (web: at "
        "least the requests a process serves at once that touch Redis).",
    )
    pool_timeout_seconds: float = Field(
        5.0, gt=0.0,
        description="How long a caller waits for a free broker connection before a 503 "
        "broker-busy (not an outage: rag_errors_total{type=\"broker-busy\"}).",
    )


class JobSettings(BaseSettings):
    """Job lifecycle: retention, deadlines, limits, attempts."""

    model_config = SettingsConfigDict(env_prefix="JOBS_", extra="ignore")

    retention_seconds: int = Field(
        86400, ge=60, le=30 * 86400, description="How long job records and streams are kept."
    )
    cached_retention_seconds: int = Field(
        600,
        ge=10,
        le=30 * 86400,
        description="How long a cache hit's job record and stream are kept (GET /v1/jobs/{id}, "
        "the listing, the stream): each hit is one, so they go sooner than jobs that ran.",
    )
    listed_max: int = Field(
        10_000, ge=100, le=1_000_000,
        description="Jobs one key's listing (GET /v1/jobs) keeps at most, the newest; older "
        "ones stay readable by id until their retention ends.",
    )
    queue_deadline_seconds: float = Field(
        600.0, gt=0.0, description="Queued longer than this: expired."
    )
    soft_time_limit_seconds: int = Field(240, ge=1, description="Celery soft time limit of a task.")
    hard_time_limit_seconds: int = Field(300, ge=2, description="Celery hard time limit of a task.")
    max_attempts: int = Field(3, ge=1, le=20, description="Deliveries before a crashing job fails.")
    lease_seconds: float = Field(
        10.0, gt=0.0, description="A running job's lease; renewed while it runs."
    )
    stream_maxlen: int = Field(
        10000, ge=100, le=100_000, description="Events kept per job stream."
    )

    @model_validator(mode="after")
    def _soft_below_hard(self) -> JobSettings:
        if self.soft_time_limit_seconds >= self.hard_time_limit_seconds:
            raise ValueError("soft_time_limit_seconds must be below hard_time_limit_seconds")
        return self

    @property
    def visibility_timeout_seconds(self) -> int:
        """Broker visibility timeout: above the hard limit so no running task is redelivered."""
        return self.hard_time_limit_seconds + 60


class WorkerSettings(BaseSettings):
    """The Celery worker process."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore")

    metrics_port: int = Field(
        9101, ge=0, le=65535, description="Worker /metrics port; 0 turns it off."
    )
    heartbeat_seconds: float = Field(
        2.0, gt=0.0, description="How often the worker reports itself."
    )
    max_batch: int = Field(
        1,
        ge=1,
        le=64,
        description="Jobs one worker process decodes together (continuous batching, "
        "docs/jobs.md); 1 runs one job at a time.",
    )


class LogSettings(BaseSettings):
    """Structured logs."""

    model_config = SettingsConfigDict(env_prefix="LOG_", extra="ignore")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    json_format: bool = Field(True, description="One JSON object per line; false: plain text.")


class FlowerSettings(BaseSettings):
    """Flower, Celery's monitor."""

    model_config = SettingsConfigDict(env_prefix="FLOWER_", extra="ignore")

    port: int = Field(5555, ge=1, le=65535, description="Flower's port.")
    basic_auth: str = Field("ragq:change-me", description="user:password Flower requires.")


class CollectionSettings(BaseSettings):
    """Collections: named corpora that users upload documents into (docs/collections.md)."""

    model_config = SettingsConfigDict(env_prefix="COLLECTIONS_", extra="ignore")

    dir: Path = Field(
        Path("index/collections"), description="Folder holding each collection's index versions."
    )
    queue: str = Field("ragq.ingest", description="Celery queue of ingest tasks.")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest upload (all its files) accepted."
    )
    max_documents: int = Field(50, ge=1, le=1000, description="Files one upload may hold.")
    versions_kept: int = Field(
        2, ge=1, le=20, description="Index versions of a collection kept on disk (current too)."
    )
    reader_keys: CommaList = Field(
        default_factory=list,
        description="API keys that may read (query, list) every collection, not only their own.",
    )
    metrics_port: int = Field(
        9102, ge=0, le=65535, description="The ingest worker's /metrics port; 0 turns it off."
    )


GROUPS: dict[str, type[BaseSettings]] = {
    "pipeline": PipelineSettings,
    "cache": CacheSettings,
    "auth": AuthSettings,
    "breaker": BreakerSettings,
    "api": ApiSettings,
    "broker": BrokerSettings,
    "jobs": JobSettings,
    "worker": WorkerSettings,
    "log": LogSettings,
    "flower": FlowerSettings,
    "collections": CollectionSettings,
}


class Settings(BaseModel):
    """All of ragq's settings, one attribute per group."""

    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)
    collections: CollectionSettings = Field(default_factory=CollectionSettings)


def env_name(group: type[BaseSettings], field: str) -> str:
    """The environment variable that sets `field` of `group`."""
    return f"{group.model_config.get('env_prefix', '')}{field}".upper()


def _describe(group: type[BaseSettings], error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        where = env_name(group, field) if field else f"{group.model_config.get('env_prefix')}*"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read every group from the environment; `overrides` maps a group name to field values.

    Raises SettingsError naming each bad variable.
    """
    groups: dict[str, BaseSettings] = {}
    for name, cls in GROUPS.items():
        try:
            groups[name] = cls(**overrides.get(name, {}))
        except ValidationError as error:
            raise SettingsError(_describe(cls, error)) from error
    return Settings.model_validate(groups)


def settings_table() -> str:
    """The README's configuration table, generated from the classes so it cannot drift."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for cls in GROUPS.values():
        for field, info in cls.model_fields.items():
            default = info.get_default(call_default_factory=True)
            if isinstance(default, list):
                default = ",".join(default)
            rows.append(f"| `{env_name(cls, field)}` | `{default}` | {info.description or ''} |")
    return "\n".join(rows)
