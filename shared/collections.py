"""Collections as both sides see them: names, owners and the current version, kept in Redis.

A collection is a named corpus with its own index. Its index versions live on the ingest and
generation workers' disk (worker/ingestion/versions.py); the broker Redis holds what the web
needs to answer without that disk: who owns each collection, its current `index_version`,
counts and its documents. The ingest worker writes a collection's record only after it has
switched the disk to the new version, then publishes `<name> <version>` so the generation
workers load it before their next job.

`default` is the sample corpus built offline by `ragq index` into PIPELINE_INDEX_DIR: it has
no record here, every key may read it, and the API never changes it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from shared import keys
from shared.broker import broker_errors
from shared.errors import CollectionNotFound, CollectionReadOnly

DEFAULT = "default"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)


JOB_FIELD = "collection"  # job hash field: the collection a question asks about (absent: default)


def job_collection(redis_client: redis.Redis, job_id: str) -> str:
    """The collection job `job_id` asks about (the web stores it with the job)."""
    with broker_errors(f"cannot read the collection of {job_id}"):
        return cast(str | None, redis_client.hget(keys.job(job_id), JOB_FIELD)) or DEFAULT


def scoped_version(name: str, version: str) -> str:
    """The `index_version` of the cache and single-flight scope of a question about collection
    `name` answered from `version` (`default` keeps its plain index_version)."""
    return version if name == DEFAULT else f"{name}@{version}"


def valid_name(name: str) -> bool:
    """1 to 63 lowercase letters, digits, `-` and `_`, starting with a letter or a digit."""
    return bool(_NAME.match(name))


def document_id(name: str) -> str:
    """A document's id: stable for its name, so uploading the same name again replaces it."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Access:
    """Who asks: their owner id, and whether they may read every collection (a reader key)."""

    owner: str
    reads_all: bool = False


class CollectionRegistry:
    """Collection records on the broker Redis (a client with decode_responses=True)."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client

    @broker_errors()
    def claim(self, name: str, owner: str) -> None:
        """Make `name` the owner's (created now if new); CollectionNotFound if another key's."""
        if name == DEFAULT:
            raise CollectionReadOnly(
                "the default collection is built offline with `ragq index`; upload into a "
                "collection of your own"
            )
        key = keys.collection(name)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "owner", owner)
            pipe.hsetnx(key, "created_at", repr(time.time()))
            pipe.hsetnx(key, "name", name)
            pipe.sadd(keys.COLLECTIONS, name)
            pipe.hget(key, "owner")
            *_, current_owner = pipe.execute()
        if current_owner != owner:
            raise CollectionNotFound(name)

    @broker_errors()
    def get(self, name: str, access: Access) -> dict[str, Any]:
        """The collection's record; CollectionNotFound when unknown or not the caller's."""
        raw = cast(dict[str, str], self.redis.hgetall(keys.collection(name)))
        if not raw or not (access.reads_all or raw.get("owner") == access.owner):
            raise CollectionNotFound(name)
        return _view(raw)

    def owned(self, name: str, owner: str) -> dict[str, Any]:
        """The collection if `owner` made it (writes need that; a reader key is not enough)."""
        if name == DEFAULT:
            raise CollectionReadOnly("the default collection is built offline with `ragq index`")
        return self.get(name, Access(owner))

    @broker_errors()
    def visible(self, access: Access) -> list[dict[str, Any]]:
        """Every collection the caller may read, by name."""
        names = sorted(cast(set[str], self.redis.smembers(keys.COLLECTIONS)))
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.collection(name))
            raws = cast(list[dict[str, str]], pipe.execute())
        return [_view(raw) for raw in raws
                if raw and (access.reads_all or raw.get("owner") == access.owner)]

    @broker_errors()
    def documents(self, name: str) -> list[dict[str, Any]]:
        """The documents of the collection's current version, by name."""
        raw = cast(dict[str, str], self.redis.hgetall(keys.collection_documents(name)))
        return sorted((json.loads(value) for value in raw.values()), key=lambda d: d["name"])

    @broker_errors()
    def has_document(self, name: str, doc_id: str) -> bool:
        return bool(self.redis.hexists(keys.collection_documents(name), doc_id))

    @broker_errors()
    def version(self, name: str) -> str | None:
        """The collection's current index_version (None: none published yet, or no such one)."""
        return cast(str | None, self.redis.hget(keys.collection(name), "index_version"))

    @broker_errors()
    def publish(self, name: str, summary: dict[str, Any], documents: list[dict[str, Any]]) -> None:
        """Record the version the disk now serves, then tell the generation workers."""
        fields = {field: json.dumps(value) if isinstance(value, dict) else str(value)
                  for field, value in summary.items()}
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.collection(name), mapping=cast("dict[Any, Any]", fields))
            pipe.delete(keys.collection_documents(name))
            if documents:
                pipe.hset(keys.collection_documents(name),
                          mapping={doc["id"]: json.dumps(doc) for doc in documents})
            pipe.publish(keys.COLLECTION_VERSIONS_CHANNEL, f"{name} {summary['index_version']}")
            pipe.execute()

    @broker_errors()
    def forget(self, name: str) -> None:
        """Remove the collection's record and documents (queries of it are 404 from now on)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.collection(name), keys.collection_documents(name))
            pipe.srem(keys.COLLECTIONS, name)
            pipe.publish(keys.COLLECTION_VERSIONS_CHANNEL, f"{name} -")
            pipe.execute()

    @broker_errors()
    def exists(self, name: str) -> bool:
        return bool(self.redis.exists(keys.collection(name)))


def _view(raw: dict[str, str]) -> dict[str, Any]:
    """A collection record as clients see it (the owner stays inside)."""
    return {
        "name": raw["name"],
        "index_version": raw.get("index_version"),
        "documents": int(raw.get("documents", 0)),
        "chunks": int(raw.get("chunks", 0)),
        "built_at": raw.get("built_at"),
        "published_at": float(raw["published_at"]) if raw.get("published_at") else None,
        "created_at": float(raw["created_at"]) if raw.get("created_at") else None,
    }
