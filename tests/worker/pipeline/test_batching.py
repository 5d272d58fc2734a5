"""Batched decoding on the tiny model: answers equal unbatched ones, rows join and stop alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shared.errors import ModelError
from shared.jobs import FinishReason
from shared.settings import PipelineSettings
from tests.support.generations import consume_together
from worker.pipeline.generator import Generation, Generator

from .tiny_models import tiny_causal_lm

pytestmark = pytest.mark.integration

QUESTIONS = [
    "what is the capital of france",
    "paris",
    "the question is what the answer is sources sources",
    "capital capital of of the the",
]


def messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def never_ending(generator: Generator) -> Generator:
    """The tiny model with its end token suppressed: every answer runs to the token limit."""
    decoding, eos = generator.decoding, generator.tokenizer.eos_token_id
    generator.decoding = lambda: {**decoding(), "suppress_tokens": [eos]}  # type: ignore[method-assign]
    return generator


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tiny_causal_lm(tmp_path / "lm", initializer_range=0.5)


def generator(model_dir: Path, max_new_tokens: int = 24) -> Generator:
    """The tiny model in full precision: int8's activation scale is one per batch, so with it
    a row's numbers depend on its neighbours (docs/jobs.md, "Batched decoding")."""
    settings = PipelineSettings(generator_model=str(model_dir), max_new_tokens=max_new_tokens,
                                device="cpu", loop_repeats=16, cpu_quantization="none")
    return never_ending(Generator(settings))


def test_batched_answers_equal_unbatched_greedy_ones(model_dir: Path) -> None:
    alone = generator(model_dir)
    expected = ["".join(alone.generate(messages(q), lambda: False)) for q in QUESTIONS]
    batched = generator(model_dir)
    batched.start_batching(len(QUESTIONS))
    generations = [batched.generate(messages(q), lambda: False) for q in QUESTIONS]
    assert consume_together(generations, timeout=60) == expected
    assert len(set(expected)) == len(QUESTIONS)  # each answer depends on its own prompt
    assert [g.generated_tokens for g in generations] == [24] * len(QUESTIONS)
    assert {g.finish_reason for g in generations} == {FinishReason.LENGTH}


def test_a_row_that_joins_mid_batch_gets_the_unbatched_answer(model_dir: Path) -> None:
    alone = generator(model_dir)
    expected = ["".join(alone.generate(messages(q), lambda: False)) for q in QUESTIONS[:2]]
    batched = generator(model_dir)
    batched.start_batching(2)
    first = batched.generate(messages(QUESTIONS[0]), lambda: False)
    pieces = iter(first)
    head = [next(pieces) for _ in range(5)]
    second = "".join(batched.generate(messages(QUESTIONS[1]), lambda: False))
    assert "".join(head) + "".join(pieces) == expected[0]
    assert second == expected[1]


def test_a_cancelled_row_stops_and_the_others_run_on(model_dir: Path) -> None:
    batched = generator(model_dir, max_new_tokens=40)
    batched.start_batching(3)
    checks = {"n": 0}

    def cancel_after_five() -> bool:
        checks["n"] += 1
        return checks["n"] >= 5

    generations = [batched.generate(messages(QUESTIONS[0]), cancel_after_five),
                   *(batched.generate(messages(q), lambda: False) for q in QUESTIONS[1:3])]
    consume_together(generations, timeout=60)
    assert generations[0].finish_reason == FinishReason.CANCELLED
    assert generations[0].generated_tokens == 5
    assert [g.generated_tokens for g in generations[1:]] == [40, 40]
    assert {g.finish_reason for g in generations[1:]} == {FinishReason.LENGTH}


def test_a_row_whose_stop_check_fails_fails_alone(model_dir: Path) -> None:
    batched = generator(model_dir)
    batched.start_batching(2)

    def broken() -> bool:
        raise ConnectionError("broker gone")

    bad = batched.generate(messages(QUESTIONS[0]), broken)
    good = batched.generate(messages(QUESTIONS[1]), lambda: False)
    results: dict[str, object] = {}

    def consume(name: str, generation: Generation) -> None:
        try:
            results[name] = "".join(generation)
        except ModelError as error:
            results[name] = error

    threads = [threading.Thread(target=consume, args=item)
               for item in (("bad", bad), ("good", good))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert isinstance(results["bad"], ModelError) and "broker gone" in str(results["bad"])
    assert isinstance(results["good"], str) and good.generated_tokens == 24


def test_a_prompt_longer_than_the_context_is_a_model_error(model_dir: Path) -> None:
    batched = generator(model_dir)
    batched.start_batching(2)
    with pytest.raises(ModelError, match=r"the prompt has \d+ tokens, the model's context 512"):
        batched.generate(messages(" ".join(["paris"] * 600)), lambda: False)


REAL_QUESTIONS = [
    "How does ragq cancel a running job?",
    "What does the semantic cache store?",
    "Which Redis holds the Celery queue?",
    "What is a lease?",
]


def test_the_default_model_batched_answers_equal_unbatched_greedy_ones() -> None:
    """Qwen2.5-Coder-0.5B in full precision. (Its int8 form differs: bench/batching.py measures
    by how much, docs/jobs.md explains why.)"""
    settings = PipelineSettings(max_new_tokens=24, device="cpu", cpu_quantization="none")
    gen = Generator(settings)
    expected = ["".join(gen.generate(messages(q), lambda: False)) for q in REAL_QUESTIONS]
    gen.start_batching(len(REAL_QUESTIONS))
    generations = [gen.generate(messages(q), lambda: False) for q in REAL_QUESTIONS]
    assert consume_together(generations, timeout=60) == expected
    assert len(set(expected)) == len(REAL_QUESTIONS)
