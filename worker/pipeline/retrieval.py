"""Hybrid retrieval: FAISS and BM25 candidates fused (convex combination or RRF), then reranked."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from shared.embedding import Embedder
from shared.errors import IndexBuildError
from shared.models import load_cross_encoder
from shared.settings import PipelineSettings
from worker.pipeline.index import CorpusIndex, indexed_text
from worker.pipeline.types import Source


def rrf(
    rankings: list[list[int]], k: int, weights: list[float] | None = None
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each list adds weight / (k + rank) to its items; ties by id."""
    weights = weights if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return _best_first(fused)


def minmax(scores: dict[int, float]) -> dict[int, float]:
    """Each score placed on [0, 1] between the list's lowest and highest; a flat list is all 1."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {item: (score - low) / span if span > 0 else 1.0 for item, score in scores.items()}


def convex(
    dense: dict[int, float], sparse: dict[int, float], dense_weight: float
) -> list[tuple[int, float]]:
    """dense_weight * dense + (1 - dense_weight) * sparse, each min-max normalised; ties by id.

    Unlike RRF, a wide score gap (one passage far above the rest) survives the fusion. An item
    missing from a list scores that list's minimum, 0: it ranked below everything the list kept.
    """
    if not 0.0 <= dense_weight <= 1.0:
        raise ValueError(f"dense weight {dense_weight} is not between 0 and 1")
    d, s = minmax(dense), minmax(sparse)
    fused = {
        item: dense_weight * d.get(item, 0.0) + (1.0 - dense_weight) * s.get(item, 0.0)
        for item in d.keys() | s.keys()
    }
    return _best_first(fused)


def _best_first(fused: dict[int, float]) -> list[tuple[int, float]]:
    return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))


@dataclass(frozen=True)
class Candidate:
    """A chunk row with the score each stage gave it (None where the stage did not see it)."""

    row: int
    fused: float
    dense: float | None = None
    sparse: float | None = None
    rerank: float | None = None


@dataclass(frozen=True)
class Retrieval:
    sources: list[Source]
    retrieval_s: float
    rerank_s: float


class Reranker:
    """A sentence-transformers CrossEncoder scoring (question, passage) pairs."""

    def __init__(self, name: str, device: str) -> None:
        self._model = load_cross_encoder(name, device, "reranker", "PIPELINE_RERANKER")
        self.name = name

    def scores(self, question: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        values = self._model.predict(
            [(question, passage) for passage in passages], show_progress_bar=False
        )
        return [float(value) for value in np.asarray(values).reshape(-1)]


class Retriever:
    """Dense + sparse + fusion (+ rerank) over one loaded index."""

    def __init__(
        self,
        index: CorpusIndex,
        embedder: Embedder,
        settings: PipelineSettings,
        reranker: Reranker | None = None,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self.reranker = reranker
        self._headings = bool(index.manifest.get("settings", {}).get("index_headings", False))

    def passage(self, row: int) -> str:
        return indexed_text(self.index.chunks[row], self._headings)

    def dense(self, vector: np.ndarray) -> list[tuple[int, float]]:
        return self.index.dense.search(vector, self.settings.dense_depth)

    def sparse(self, question: str) -> list[tuple[int, float]]:
        return self.index.sparse.search(question, self.settings.sparse_depth)

    def fused(self, question: str, vector: np.ndarray | None = None) -> list[Candidate]:
        """Every candidate of either list, best fused score first."""
        vector = self.embedder.encode_one(question) if vector is None else vector
        dense, sparse = dict(self.dense(vector)), dict(self.sparse(question))
        return [
            Candidate(row, score, dense.get(row), sparse.get(row))
            for row, score in self._fuse(dense, sparse)
        ]

    def _fuse(self, dense: dict[int, float], sparse: dict[int, float]) -> list[tuple[int, float]]:
        if self.settings.fusion == "convex":
            return convex(dense, sparse, self.settings.fusion_dense_weight)
        weights = [self.settings.rrf_dense_weight, self.settings.rrf_sparse_weight]
        return rrf([list(dense), list(sparse)], self.settings.rrf_k, weights)

    def reranked(self, question: str, candidates: list[Candidate]) -> list[Candidate]:
        """The first `rerank_depth` candidates ordered by the cross-encoder, the rest after them."""
        if self.reranker is None:
            return candidates
        head, tail = (
            candidates[: self.settings.rerank_depth],
            candidates[self.settings.rerank_depth :],
        )
        scores = self.reranker.scores(question, [self.passage(c.row) for c in head])
        scored = [replace(c, rerank=s) for c, s in zip(head, scores, strict=True)]
        return sorted(scored, key=lambda c: -(c.rerank or 0.0)) + tail

    def retrieve(self, question: str, top_k: int) -> Retrieval:
        """The `top_k` best chunks as Sources, with the time each stage took."""
        started = time.perf_counter()
        candidates = self.fused(question)
        fused_at = time.perf_counter()
        candidates = self.reranked(question, candidates)
        reranked_at = time.perf_counter()
        sources = [self._source(c) for c in candidates[:top_k]]
        return Retrieval(sources, fused_at - started, reranked_at - fused_at)

    def _source(self, candidate: Candidate) -> Source:
        chunk = self.index.chunks[candidate.row]
        score = candidate.rerank if candidate.rerank is not None else candidate.fused
        return Source(
            chunk_id=chunk.chunk_id,
            title=chunk.title,
            text=chunk.text,
            score=score,
            dense=candidate.dense,
            sparse=candidate.sparse,
            rrf=candidate.fused,
            rerank=candidate.rerank,
        )


def load_retriever(
    settings: PipelineSettings, device: str, embedder: Embedder | None = None
) -> Retriever:
    """The index at `settings.index_dir` with its embedder and the configured reranker."""
    index = CorpusIndex.load(settings.index_dir)
    built_with = index.manifest["embedding_model"]
    if built_with != settings.embedding_model:
        raise IndexBuildError(
            f"index at {settings.index_dir} was built with embedding model {built_with!r} "
            f"but PIPELINE_EMBEDDING_MODEL is {settings.embedding_model!r}: "
            "rebuild it with `ragq index`"
        )
    embedder = embedder or Embedder(settings.embedding_model, device)
    reranker = Reranker(settings.reranker, device) if settings.reranker else None
    return Retriever(index, embedder, settings, reranker)
