from pathlib import Path
from typing import cast

import numpy as np
import pytest

from shared.embedding import Embedder
from shared.settings import PipelineSettings
from worker.pipeline.chunking import Chunk
from worker.pipeline.dense import DenseIndex
from worker.pipeline.index import CorpusIndex
from worker.pipeline.retrieval import Retriever, convex, minmax, rrf
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


def test_minmax_spans_zero_to_one() -> None:
    assert minmax({1: 0.5, 2: 0.9, 3: 0.7}) == pytest.approx({1: 0.0, 2: 1.0, 3: 0.5})
    assert minmax({4: 3.0}) == {4: 1.0}
    assert minmax({}) == {}


def test_convex_hand_computed() -> None:
    # dense -> {1: 1, 2: 0.5, 3: 0}; sparse -> {2: 1, 4: 0}; a missing item scores 0 there.
    fused = convex({1: 0.9, 2: 0.7, 3: 0.5}, {2: 12.0, 4: 2.0}, dense_weight=0.25)
    assert [item for item, _ in fused] == [2, 1, 3, 4]
    assert [score for _, score in fused] == pytest.approx([0.25 * 0.5 + 0.75, 0.25, 0.0, 0.0])


def test_convex_keeps_a_score_gap_that_rrf_erases() -> None:
    # Item 2 is a close second in dense but far ahead in BM25; RRF sees two swapped ranks only.
    dense, sparse = {1: 0.90, 2: 0.89, 3: 0.30}, {2: 20.0, 1: 2.0, 3: 1.0}
    assert convex(dense, sparse, 0.5)[0][0] == 2
    assert rrf([list(dense), list(sparse)], k=60)[0][0] == 1


def test_convex_rejects_a_weight_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="dense weight 1.5 is not between 0 and 1"):
        convex({1: 1.0}, {1: 1.0}, dense_weight=1.5)


def _retriever(settings: PipelineSettings) -> Retriever:
    """Three chunks: cosines 0.9, 0.85, 0.1 to the query vector (1, 0); BM25 favours chunk 1."""
    texts = ["cats", "cats chase mice mice", "dogs bark"]
    chunks = [Chunk(f"c{i}", f"s{i}", "T", text, 0) for i, text in enumerate(texts)]
    vectors = np.array([[c, (1 - c * c) ** 0.5] for c in (0.9, 0.85, 0.1)], dtype=np.float32)
    dense = DenseIndex.build(vectors, [0, 1, 2], "flat")
    index = CorpusIndex(Path("."), {}, chunks, dense, SparseIndex.build(texts, stem=True))
    # fused() embeds nothing when given the question's vector.
    return Retriever(index, cast(Embedder, None), settings)


@pytest.mark.parametrize(("fusion", "first"), [("convex", 1), ("rrf", 0)])
def test_the_retriever_fuses_as_configured(fusion: str, first: int) -> None:
    retriever = _retriever(PipelineSettings(fusion=fusion))  # type: ignore[arg-type]
    candidates = retriever.fused("mice and cats", np.array([1.0, 0.0], dtype=np.float32))
    assert [c.row for c in candidates][0] == first and len(candidates) == 3
    assert candidates[0].dense is not None and candidates[0].sparse is not None


def test_convex_scores_are_the_weighted_normalised_ones() -> None:
    retriever = _retriever(PipelineSettings(fusion="convex", fusion_dense_weight=0.5))
    candidates = retriever.fused("mice and cats", np.array([1.0, 0.0], dtype=np.float32))
    # dense (0.9, 0.85, 0.1) -> (1, 0.9375, 0); BM25 keeps chunks 1 and 0 -> (1, 0).
    assert [c.row for c in candidates] == [1, 0, 2]
    assert [c.fused for c in candidates] == pytest.approx([0.5 * 0.9375 + 0.5, 0.5, 0.0])


def test_terms_lowercase_strip_stopwords_and_stem() -> None:
    assert terms("The Normans were Conquering England's kings!", stem=True) == [
        "norman",
        "conquer",
        "england",
        "king",
    ]
    assert terms("The Normans were Conquering", stem=False) == ["normans", "conquering"]


def test_bm25_finds_the_stemmed_match() -> None:
    index = SparseIndex.build(["Cats chase mice.", "The stock market fell.", "A dog barks."], True)
    hits = index.search("chasing a cat", depth=3)
    assert [row for row, _ in hits] == [0]
    assert index.search("the of and", depth=3) == []


def test_a_loaded_bm25_index_analyses_questions_as_its_chunks_were(tmp_path: Path) -> None:
    texts = ["Cats chase mice.", "The stock market fell.", "A dog barks."]
    SparseIndex.build(texts, stem=False).save(tmp_path)
    loaded = SparseIndex.load(tmp_path)
    assert loaded.stem is False and loaded.corpus_terms[0] == ["cats", "chase", "mice"]
    assert loaded.search("chasing a cat", depth=3) == []
    assert [row for row, _ in loaded.search("cats", depth=3)] == [0]
