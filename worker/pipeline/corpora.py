"""The indexes a worker answers from: `default` (PIPELINE_INDEX_DIR, loaded with the pipeline)
and each collection's current version, named by its Redis record.

A job asks for its collection's retriever once, before it retrieves. The record's version is
read then (one HGET); when the ingest worker has published a newer one since, it is loaded and
replaces the old one for the jobs that start from now on. A job that started earlier keeps the
retriever it got, so it finishes on the version it started with; the old version's folder
stays on disk (COLLECTIONS_VERSIONS_KEPT) while such a job may still be loading it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from shared.collections import DEFAULT, CollectionRegistry
from shared.embedding import Embedder
from shared.errors import CollectionNotFound
from shared.settings import PipelineSettings
from worker.ingestion.versions import CollectionFolder
from worker.pipeline.index import CorpusIndex
from worker.pipeline.retrieval import Retriever


class Corpora:
    """Retrievers by collection name, each over the version its record names now."""

    def __init__(self, settings: PipelineSettings, default: Retriever | None = None) -> None:
        self.settings = settings
        self.default = default
        self._embedder = default.embedder if default else None
        self._reranker = default.reranker if default else None
        self._source: tuple[Path, CollectionRegistry] | None = None
        self._loaded: dict[str, Retriever] = {}
        self._lock = threading.Lock()  # batched jobs start on threads of their own

    def serve(self, collections_dir: Path, registry: CollectionRegistry) -> None:
        """Serve the collections under `collections_dir` whose records `registry` holds."""
        self._source = (collections_dir, registry)

    def retriever(self, name: str) -> Retriever | None:
        """The retriever of `name` now (None for `default` when the pipeline retrieves itself).

        CollectionNotFound when the collection is gone or has no version yet.
        """
        if name == DEFAULT:
            return self.default
        if self._source is None:
            raise CollectionNotFound(f"{name} (this worker serves no collections)")
        collections_dir, registry = self._source
        version = registry.version(name)
        if version is None:
            with self._lock:
                self._loaded.pop(name, None)  # deleted: its index need not stay in memory
            raise CollectionNotFound(f"{name} (it has no published version)")
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is None or loaded.index.version != version:
                folder = CollectionFolder(collections_dir, name).versions / version
                loaded = Retriever(CorpusIndex.load(folder), self._embedder_now(), self.settings,
                                   self._reranker)
                self._loaded[name] = loaded
            return loaded

    def _embedder_now(self) -> Embedder:
        """The query embedder: the pipeline's, or (a fake pipeline's) one loaded on first use."""
        if self._embedder is None:
            self._embedder = Embedder(self.settings.embedding_model, "cpu")
        return self._embedder
