from pathlib import Path

import numpy as np
import pytest

from worker.pipeline.dense import DenseIndex


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# Chunk 0 owns a vector far from the query and a sentence vector right on it; chunk 1's single
# vector is nearer than chunk 0's first; chunk 2 owns three vectors, all far from the query.
VECTORS = np.stack(
    [unit(0, 1, 0), unit(1, 0, 0), unit(1, 1, 0), unit(0, 0, 1), unit(0, 1, 1), unit(0, 1, 2)]
)
OWNERS = [0, 0, 1, 2, 2, 2]
QUERY = unit(1, 0, 0)


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_a_chunk_scores_as_its_nearest_vector(index_type: str) -> None:
    index = DenseIndex.build(VECTORS, OWNERS, index_type)
    hits = index.search(QUERY, depth=3)
    assert [row for row, _ in hits] == [0, 1, 2]
    assert hits[0][1] == pytest.approx(1.0) and hits[1][1] == pytest.approx(2**-0.5)
    assert index.size == 6


def test_depth_counts_chunks_not_vectors() -> None:
    index = DenseIndex.build(VECTORS, OWNERS, "flat")
    # The three nearest vectors are all chunk 2's: the search has to look further for a second.
    assert [row for row, _ in index.search(unit(0, 0.2, 1), depth=2)] == [2, 0]
    assert len(index.search(QUERY, depth=10)) == 3


def test_owners_must_match_the_vectors() -> None:
    with pytest.raises(ValueError, match="5 owners for 6 vectors"):
        DenseIndex.build(VECTORS, OWNERS[:5], "flat")


def test_owners_are_saved_with_the_vectors(tmp_path: Path) -> None:
    DenseIndex.build(VECTORS, OWNERS, "flat").save(tmp_path)
    assert DenseIndex.load(tmp_path).search(QUERY, depth=3)[0] == pytest.approx((0, 1.0))
