"""The verification stage: the word guard on its own, and the CrossEncoder path on a tiny model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from shared.settings import CacheSettings
from web.semantic_cache import build_verifier
from web.verify import (
    OTHER,
    PERSON,
    QUANTITY,
    TIME,
    WordGuard,
    WordVectors,
    answer_type,
    tokenize,
)

SYNONYMS = {"purchased": "bought", "large": "big"}


def _vector(word: str) -> np.ndarray:
    """Hash vectors: a word and its listed synonym share one; all others are near-orthogonal."""
    seed = int(hashlib.sha256(SYNONYMS.get(word, word).encode()).hexdigest()[:8], 16)
    vector = np.random.default_rng(seed).standard_normal(64).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def guard() -> WordGuard:
    vectors = WordVectors(lambda words: np.stack([_vector(w) for w in words]))
    known = {"bought", "purchased", "big", "large", "the", "company", "house"}.__contains__
    return WordGuard(vectors, known, synonym_similarity=0.7)


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("who bought the company", "Who bought the company?"),
        ("Who purchased the company?", "Who bought the company?"),
        ("What's the capital of the US?", "What is the capital of the U.S.?"),
        ("How big is the LA port?", "How large is the Los Angeles port?"),
        ("Which country did the compnay move to?", "Which country did the company move to?"),
    ],
)
def test_same_question_passes(guard: WordGuard, query: str, cached: str) -> None:
    assert guard.check(query, cached).same


@pytest.mark.parametrize(
    ("query", "cached", "reason"),
    [
        ("Who sold the company?", "Who bought the company?", "opposite"),
        ("What happened in 1905?", "What happened in 1910?", "number"),
        ("Who won the third race?", "Who won the second race?", "number"),
        ("Why is the sky not blue?", "Why is the sky blue?", "negation"),
        ("Which trade is illegal here?", "Which trade is legal here?", "negation"),
        ("When did Rome fall?", "Where did Rome fall?", "answer type"),
        ("How many ships sank?", "Which ships sank?", "answer type"),
        ("What did Napoleon conquer?", "What did Caesar conquer?", "name"),
        ("What is the price of a house?", "What is the price of a ticket?", "content"),
    ],
)
def test_different_question_is_rejected(
    guard: WordGuard, query: str, cached: str, reason: str
) -> None:
    verdict = guard.check(query, cached)
    assert not verdict.same and verdict.reason == reason


def test_answer_types() -> None:
    assert answer_type(tokenize("Ralph was earl of where?")) != OTHER
    assert answer_type(tokenize("According to whom is it true?")) == PERSON
    assert answer_type(tokenize("In what year did it open?")) == TIME
    assert answer_type(tokenize("How often does it rain?")) == QUANTITY


def test_synonym_similarity_is_validated() -> None:
    with pytest.raises(ValueError, match="synonym_similarity must be in \\(0, 1\\], got 1.5"):
        WordGuard(WordVectors(lambda words: np.zeros((len(words), 2))), str.isalpha, 1.5)


def _tiny_cross_encoder(path: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from shared.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    config.num_labels = 1  # one relevance score (a keyword the config's type stubs lack)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class _NoEmbedder:
    model_id, dim = "none", 4

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        raise AssertionError("the word guard is off; nothing should be embedded")

    def encode_one(self, text: str) -> np.ndarray:
        raise AssertionError("not used")


@pytest.mark.integration
def test_cross_encoder_verifier_loads_and_gates(tmp_path: Path) -> None:
    model = _tiny_cross_encoder(tmp_path / "tiny-duplicate-model")
    strict = CacheSettings(verify=False, verifier_model=str(model), verifier_threshold=1.0)
    lenient = CacheSettings(verify=False, verifier_model=str(model), verifier_threshold=0.0)
    rejected = build_verifier(strict, _NoEmbedder())
    accepted = build_verifier(lenient, _NoEmbedder())
    assert rejected is not None and accepted is not None
    verdict = rejected.check("Who built it?", "Who made it?")
    assert not verdict.same and verdict.reason.startswith("verifier score")
    assert accepted.check("Who built it?", "Who made it?").same


def test_no_checks_configured_means_no_verifier() -> None:
    assert build_verifier(CacheSettings(verify=False), _NoEmbedder()) is None


class _CountingEncoder:
    """Hash vectors, recording each batch the guard asks for."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, words: list[str]) -> np.ndarray:
        self.batches.append(list(words))
        return np.stack([_vector(w) for w in words])


def test_word_vectors_of_every_candidate_come_in_one_batch() -> None:
    encoder = _CountingEncoder()
    guard = WordGuard(WordVectors(encoder), str.isalpha, synonym_similarity=0.7)
    candidates = [
        "What is the price of a ticket?",  # needs vectors: fetches every candidate's words
        "What is the price of a car?",
        "What is the price of a large house?",  # passes: large is a synonym of big
        "What is the price of a house?",  # big has no counterpart: no vectors needed
    ]
    verdicts = list(guard.check_many("What is the price of a big house?", candidates))
    assert [v.reason for v in verdicts] == ["content", "content", "", "content"]
    assert len(encoder.batches) == 1
    assert sorted(encoder.batches[0]) == ["big", "car", "house", "large", "ticket"]


def test_check_many_is_lazy_and_stops_before_later_embeddings() -> None:
    encoder = _CountingEncoder()
    guard = WordGuard(WordVectors(encoder), str.isalpha, synonym_similarity=0.7)
    first = next(guard.check_many("Who bought the company?", ["Who bought the company?"]))
    assert first.same and encoder.batches == []


def test_word_vectors_keep_the_most_recently_used() -> None:
    encoder = _CountingEncoder()
    vectors = WordVectors(encoder, capacity=2)
    vectors.fetch(["alpha", "beta"])
    vectors.fetch(["alpha"])  # alpha is now the most recent
    vectors.fetch(["gamma"])  # evicts beta
    assert vectors.missing(["alpha", "beta", "gamma"]) == ["beta"]
    assert encoder.batches == [["alpha", "beta"], ["gamma"]]
