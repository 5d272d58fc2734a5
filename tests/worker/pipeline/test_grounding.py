"""Decoding-time grounding on the tiny model: the copy bias and context-aware decoding."""

from __future__ import annotations

import pytest
import torch

from shared.errors import ModelError
from shared.settings import PipelineSettings
from tests.support.generations import consume_together
from worker.pipeline.generator import Generator
from worker.pipeline.grounding import (
    Grounding,
    SourceCopyBias,
    contrast,
    plain_messages,
    source_token_ids,
)
from worker.pipeline.types import Source

from .tiny_models import tiny_causal_lm

SOURCES = [Source(chunk_id="c1", title="capital", text="paris is the capital of france", score=1.0)]
QUESTION = "what is the capital of france"


def messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"sources paris is the capital of france {QUESTION}"}]


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Generator:
    """The tiny model in full precision, its end token suppressed: every answer runs to 12."""
    folder = tiny_causal_lm(tmp_path_factory.mktemp("lm"), initializer_range=0.5)
    settings = PipelineSettings(
        generator_model=str(folder),
        max_new_tokens=12,
        device="cpu",
        loop_repeats=16,
        cpu_quantization="none",
    )
    loaded = Generator(settings)
    decoding, eos = loaded.decoding, loaded.tokenizer.eos_token_id
    loaded.decoding = lambda: {**decoding(), "suppress_tokens": [eos]}  # type: ignore[method-assign]
    return loaded


def answer_ids(generator: Generator, grounding: Grounding | None) -> list[int]:
    generation = generator.generate(messages(), lambda: False, grounding)
    "".join(generation)
    assert generation._output is not None
    return generation._output[0, generation.prompt_tokens :].tolist()


def test_the_copy_bias_raises_only_the_sources_tokens() -> None:
    scores = torch.zeros((1, 6))
    biased = SourceCopyBias([1, 4], 2.5)(torch.zeros((1, 3), dtype=torch.long), scores)
    assert biased.tolist() == [[0.0, 2.5, 0.0, 0.0, 2.5, 0.0]]
    assert scores.tolist() == [[0.0] * 6]  # the caller's scores are left as they were


@pytest.mark.integration
def test_source_tokens_are_the_texts_not_the_titles(generator: Generator) -> None:
    source = Source(chunk_id="c", title="question", text="paris is", score=1.0)
    vocab = generator.tokenizer.get_vocab()
    assert set(source_token_ids(generator.tokenizer, [source])) == {vocab["paris"], vocab["is"]}


@pytest.mark.integration
def test_a_strong_copy_bias_answers_in_the_sources_words(generator: Generator) -> None:
    plain = answer_ids(generator, None)
    source_ids = set(source_token_ids(generator.tokenizer, SOURCES))
    assert not set(plain) <= source_ids  # without the bias the answer strays from them
    copied = answer_ids(generator, Grounding("copy", 100.0, QUESTION, SOURCES))
    assert set(copied) <= source_ids


@pytest.mark.integration
def test_context_aware_decoding_follows_its_formula(generator: Generator) -> None:
    """Each token is the argmax of (1 + α)·logits(prompt) − α·logits(question alone), each
    computed here from scratch over the whole sequence, without caches or padding."""
    alpha = 1.0
    model = generator.model
    ids = generator.encode_chat(messages())["input_ids"][0].tolist()
    plain = generator.encode_chat(plain_messages(QUESTION))["input_ids"][0].tolist()
    eos = generator.tokenizer.eos_token_id
    expected: list[int] = []
    with torch.inference_mode():
        for _ in range(12):
            full = model(input_ids=torch.tensor([ids + expected])).logits[0, -1]
            alone = model(input_ids=torch.tensor([plain + expected])).logits[0, -1]
            combined = contrast(full, alone, alpha)
            combined[eos] = -float("inf")
            expected.append(int(combined.argmax()))
    assert answer_ids(generator, Grounding("cad", alpha, QUESTION, SOURCES)) == expected
    assert expected != answer_ids(generator, None)  # the contrast changed the answer


@pytest.mark.integration
def test_context_aware_decoding_at_alpha_zero_is_plain_greedy(generator: Generator) -> None:
    assert answer_ids(generator, Grounding("cad", 0.0, QUESTION, SOURCES)) == answer_ids(
        generator, None
    )


@pytest.mark.integration
def test_the_batch_applies_the_copy_bias_as_generate_does(generator: Generator) -> None:
    grounding = Grounding("copy", 3.0, QUESTION, SOURCES)
    alone = "".join(generator.generate(messages(), lambda: False, grounding))
    batched = Generator(generator.settings)
    batched.decoding = generator.decoding  # type: ignore[method-assign]
    batched.start_batching(2)
    plain, copied = consume_together(
        [
            batched.generate(messages(), lambda: False, None),
            batched.generate(messages(), lambda: False, grounding),
        ],
        timeout=60,
    )
    assert copied == alone
    assert plain != copied


@pytest.mark.integration
def test_context_aware_decoding_refuses_to_join_a_batch(generator: Generator) -> None:
    batched = Generator(generator.settings)
    batched.start_batching(2)
    with pytest.raises(ModelError, match="cannot join the batch"):
        batched.generate(messages(), lambda: False, Grounding("cad", 1.0, QUESTION, SOURCES))
