"""FAISS inner product over unit vectors (cosine): exact by default, HNSW for large corpora."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH_MIN = 64


class DenseIndex:
    """A FAISS index whose rows are the chunks, in chunk order."""

    FILE = "dense.faiss"

    def __init__(self, index: faiss.Index) -> None:
        self._index = index

    @classmethod
    def build(cls, vectors: np.ndarray, index_type: str) -> DenseIndex:
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
        return cls(index)

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def search(self, vector: np.ndarray, depth: int) -> list[tuple[int, float]]:
        """(row, cosine) of the `depth` nearest chunks, best first."""
        if isinstance(self._index, faiss.IndexHNSW):
            self._index.hnsw.efSearch = max(depth, HNSW_EF_SEARCH_MIN)
        scores, rows = self._index.search(
            vector.reshape(1, -1).astype(np.float32), min(depth, self.size)
        )
        return [
            (int(row), float(score))
            for row, score in zip(rows[0], scores[0], strict=True)
            if row >= 0
        ]

    def save(self, folder: Path) -> None:
        faiss.write_index(self._index, str(folder / self.FILE))

    @classmethod
    def load(cls, folder: Path) -> DenseIndex:
        return cls(faiss.read_index(str(folder / cls.FILE)))
