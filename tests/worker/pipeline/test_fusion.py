import pytest

from worker.pipeline.retrieval import rrf
from worker.pipeline.sparse import SparseIndex, terms


def test_rrf_hand_computed() -> None:
    # k=1: a = 1/2 + 1/3, b = 1/3 + 1/2, c = 1/4, d = 1/4 (ties broken by id).
    fused = rrf([[1, 2, 3], [2, 1, 4]], k=1)
    assert [item for item, _ in fused] == [1, 2, 3, 4]
    assert fused[0][1] == pytest.approx(1 / 2 + 1 / 3)
    assert fused[2][1] == pytest.approx(1 / 4)


def test_rrf_weights_shift_the_order() -> None:
    fused = rrf([[1, 2], [2, 1]], k=60, weights=[1.0, 2.0])
    assert [item for item, _ in fused] == [2, 1]
    assert fused[0][1] == pytest.approx(1 / 62 + 2 / 61)


def test_rrf_rejects_mismatched_weights() -> None:
    with pytest.raises(ValueError, match="1 weights for 2 rankings"):
        rrf([[1], [2]], k=60, weights=[1.0])


def test_terms_lowercase_strip_stopwords_and_stem() -> None:
    assert terms("The Normans were Conquering England's kings!") == [
        "norman",
        "conquer",
        "england",
        "king",
    ]


def test_bm25_finds_the_stemmed_match() -> None:
    index = SparseIndex.build(["Cats chase mice.", "The stock market fell.", "A dog barks."])
    hits = index.search("chasing a cat", depth=3)
    assert [row for row, _ in hits] == [0]
    assert index.search("the of and", depth=3) == []
