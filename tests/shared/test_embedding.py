"""The cache's query embedding: Embedder's direct forward pass against sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest

from shared.embedding import Embedder

pytestmark = pytest.mark.integration

TEXTS = [
    "Who bought the rights?",
    "castle",
    "How tall is Paris's Eiffel Tower, and when was it built? " * 3,
    "word " * 400,  # past max_seq_length: truncated the same way
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder("minilm")


def _reference(embedder: Embedder, texts: list[str]) -> np.ndarray:
    model = embedder._model
    return np.asarray(model.encode(texts, normalize_embeddings=True, convert_to_numpy=True))


def test_direct_forward_matches_sentence_transformers(embedder: Embedder) -> None:
    expected = _reference(embedder, TEXTS)
    batch = embedder.encode(TEXTS)  # padded to the longest: the mask must keep pads out
    single = np.stack([embedder.encode_one(text) for text in TEXTS])
    assert batch.dtype == single.dtype == np.float32
    np.testing.assert_allclose(batch, expected, atol=1e-5)
    np.testing.assert_allclose(single, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(single, axis=1), 1.0, atol=1e-5)


def test_large_batches_take_the_sentence_transformers_path(embedder: Embedder) -> None:
    texts = [f"question number {n}?" for n in range(5)]
    np.testing.assert_allclose(
        embedder.encode(texts, batch_size=2), embedder.encode(texts), atol=1e-5
    )
