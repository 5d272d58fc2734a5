"""FAISS inner product over unit vectors (cosine): exact by default, HNSW for large corpora.

A chunk may own several vectors (its own and its sentences'); it scores as its nearest one.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH_MIN = 64


class DenseIndex:
    """A FAISS index whose rows are vectors, each owned by one chunk (its row in chunk order)."""

    FILE = "dense.faiss"
    OWNERS = "dense_owners.json"

    def __init__(self, index: faiss.Index, owners: list[int]) -> None:
        if len(owners) != index.ntotal:
            raise ValueError(f"{len(owners)} owners for {index.ntotal} vectors")
        self._index = index
        self._owners = owners

    @classmethod
    def build(cls, vectors: np.ndarray, owners: list[int], index_type: str) -> DenseIndex:
        dim = int(vectors.shape[1])
        index: faiss.Index
        if index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        elif index_type == "flat":
            index = faiss.IndexFlatIP(dim)
        else:
            raise ValueError(f"unknown index type {index_type!r}: use 'flat' or 'hnsw'")
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, owners)

    @property
    def size(self) -> int:
        """Vectors in the index (at least one per chunk)."""
        return int(self._index.ntotal)

    def search(self, vector: np.ndarray, depth: int) -> list[tuple[int, float]]:
        """(chunk row, cosine of its nearest vector) of the `depth` nearest chunks, best first."""
        # A chunk's nearest vector comes before its others, so the first `k` vectors give the
        # exact best score of every chunk among them; widen `k` until `depth` chunks appear.
        k = depth
        while True:
            chunks = self._nearest_chunks(vector, min(k, self.size))
            if len(chunks) >= depth or k >= self.size:
                return chunks[:depth]
            k *= 2

    def _nearest_chunks(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        if isinstance(self._index, faiss.IndexHNSW):
            self._index.hnsw.efSearch = max(k, HNSW_EF_SEARCH_MIN)
        scores, rows = self._index.search(vector.reshape(1, -1).astype(np.float32), k)
        best: dict[int, float] = {}
        for row, score in zip(rows[0], scores[0], strict=True):
            if row >= 0:
                best.setdefault(self._owners[row], float(score))
        return list(best.items())

    def rows(self) -> tuple[np.ndarray, list[int]]:
        """Every stored vector and its owning chunk row (an incremental build keeps them)."""
        return self._index.reconstruct_n(0, self.size), list(self._owners)

    def save(self, folder: Path) -> None:
        faiss.write_index(self._index, str(folder / self.FILE))
        (folder / self.OWNERS).write_text(json.dumps(self._owners), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> DenseIndex:
        owners = json.loads((folder / cls.OWNERS).read_text(encoding="utf-8"))
        return cls(faiss.read_index(str(folder / cls.FILE)), owners)
