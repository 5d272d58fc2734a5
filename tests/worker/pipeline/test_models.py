"""The real loading code (generator, 4-bit selection, reranker) on tiny models built here."""

import os
import time
from pathlib import Path

import pytest
import torch

from shared.errors import ModelError
from shared.jobs import FinishReason
from shared.settings import PipelineSettings
from worker.pipeline.generator import (
    Generation,
    Generator,
    load_kwargs,
    repeated_tail,
    resolve_device,
    torch_threads,
)
from worker.pipeline.retrieval import Reranker

from .tiny_models import tiny_causal_lm, tiny_cross_encoder

MESSAGES = [
    {"role": "system", "content": "answer"},
    {"role": "user", "content": "what is the capital of france"},
]


def test_cpu_loads_full_precision_and_ignores_4bit() -> None:
    assert load_kwargs("cpu", load_in_4bit=False) == {"dtype": torch.float32}
    assert load_kwargs("cpu", load_in_4bit=True) == {"dtype": torch.float32}


def test_cuda_loads_bf16_on_the_gpu() -> None:
    assert load_kwargs("cuda", load_in_4bit=False) == {
        "dtype": torch.bfloat16,
        "device_map": "cuda",
    }


def test_cuda_4bit_is_nf4_with_bf16_compute_and_double_quant() -> None:
    kwargs = load_kwargs("cuda", load_in_4bit=True)
    quant = kwargs["quantization_config"]
    assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4"
    assert quant.bnb_4bit_compute_dtype == torch.bfloat16
    assert quant.bnb_4bit_use_double_quant
    assert kwargs["device_map"] == "cuda"


def test_auto_device_follows_torch() -> None:
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


def test_threads_leave_one_core_to_the_rest_of_the_host() -> None:
    assert torch_threads(3) == 3
    assert torch_threads(0) == max(1, len(os.sched_getaffinity(0)) - 1)


def test_a_tail_repeated_enough_times_is_a_loop() -> None:
    assert repeated_tail([1, 2, 3] * 3, ngram=3, repeats=3)
    assert not repeated_tail([1, 2, 3] * 2, ngram=3, repeats=3)
    assert repeated_tail([7] * 12, ngram=8, repeats=3)  # one token over and over
    assert not repeated_tail(list(range(40)), ngram=8, repeats=2)
    # An n-gram repeated earlier is no loop unless the answer ends on it.
    assert not repeated_tail([1, 2, 1, 2, 1, 2, 9], ngram=2, repeats=3)


def _generated(folder: Path, max_new_tokens: int, never_ending: bool) -> Generation:
    """A finished generation of the tiny model; `never_ending` suppresses its end token,
    making a model that never stops by itself."""
    settings = PipelineSettings(
        generator_model=str(tiny_causal_lm(folder)), max_new_tokens=max_new_tokens, device="cpu"
    )
    generator = Generator(settings)
    if never_ending:
        decoding, eos = generator.decoding, generator.tokenizer.eos_token_id
        generator.decoding = lambda: {**decoding(), "suppress_tokens": [eos]}  # type: ignore[method-assign]
    generation = generator.generate(MESSAGES, lambda: False)
    list(generation)
    return generation


@pytest.mark.integration
def test_an_answer_cut_by_the_token_limit_finishes_with_length(tmp_path: Path) -> None:
    generation = _generated(tmp_path / "lm", max_new_tokens=6, never_ending=True)
    assert generation.generated_tokens == 6
    assert generation.finish_reason == FinishReason.LENGTH


@pytest.mark.integration
def test_a_looping_answer_is_stopped_and_finishes_with_loop(tmp_path: Path) -> None:
    generation = _generated(tmp_path / "lm", max_new_tokens=400, never_ending=True)
    assert generation.finish_reason == FinishReason.LOOP
    assert generation.generated_tokens < 40  # three times an 8-gram, not 400 tokens


@pytest.mark.integration
def test_an_answer_the_model_ends_finishes_with_stop(tmp_path: Path) -> None:
    generation = _generated(tmp_path / "lm", max_new_tokens=50, never_ending=False)
    assert generation.generated_tokens < 50
    assert generation.finish_reason == FinishReason.STOP


@pytest.mark.integration
@pytest.mark.parametrize(
    ("quantization", "fp32_layers"),
    [("int8-fp32-down", {"down_proj"}), ("int8", set()), ("none", None)],
)
def test_cpu_quantization_keeps_the_down_projections_fp32_by_default(
    tmp_path: Path, quantization: str, fp32_layers: set[str] | None
) -> None:
    settings = PipelineSettings(
        generator_model=str(tiny_causal_lm(tmp_path / "lm")), device="cpu",
        cpu_quantization=quantization,  # type: ignore[arg-type]  # a literal, from the params
    )
    model = Generator(settings).model
    plain = {
        name.rsplit(".", 1)[-1] for name, module in model.named_modules()
        if type(module) is torch.nn.Linear
    }
    if fp32_layers is None:  # fp32: nothing quantized
        assert {"down_proj", "q_proj", "gate_proj"} <= plain
    else:
        assert plain == fp32_layers
    assert PipelineSettings().cpu_quantization == "int8-fp32-down"


@pytest.mark.integration
def test_tiny_generator_streams_and_counts(tmp_path: Path) -> None:
    settings = PipelineSettings(
        generator_model=str(tiny_causal_lm(tmp_path / "lm")), max_new_tokens=6, device="cpu"
    )
    generator = Generator(settings)
    generation = generator.generate(MESSAGES, lambda: False)
    pieces = list(generation)
    assert generation.prompt_tokens > 5
    assert 1 <= generation.generated_tokens <= 6
    assert "".join(pieces) or generation.generated_tokens
    assert not generation.stopped


@pytest.mark.integration
def test_tiny_generator_stop_hook_ends_generation(tmp_path: Path) -> None:
    settings = PipelineSettings(
        generator_model=str(tiny_causal_lm(tmp_path / "lm")), max_new_tokens=50, device="cpu"
    )
    generator = Generator(settings)
    calls = []

    def should_stop() -> bool:
        # The hook runs after every generated token, also the one an end-of-text would end on.
        calls.append(1)
        return True

    generation = generator.generate(MESSAGES, should_stop)
    list(generation)
    assert generation.stopped and generation.finish_reason == FinishReason.CANCELLED
    assert generation.generated_tokens == len(calls) == 1


def test_missing_generator_is_a_model_error(tmp_path: Path) -> None:
    settings = PipelineSettings(generator_model=str(tmp_path / "nothing-here"), device="cpu")
    with pytest.raises(ModelError, match="nothing-here"):
        Generator(settings)


@pytest.mark.integration
def test_tiny_cross_encoder_scores_each_passage(tmp_path: Path) -> None:
    reranker = Reranker(str(tiny_cross_encoder(tmp_path / "ce")), "cpu")
    scores = reranker.scores(
        "what is the capital of france", ["paris is the capital", "answer", "question"]
    )
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert len(set(scores)) > 1
    assert reranker.scores("anything", []) == []


def test_missing_reranker_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="PIPELINE_RERANKER"):
        Reranker(str(tmp_path / "no-reranker"), "cpu")


@pytest.mark.integration
def test_a_reader_that_goes_away_stops_generation(tmp_path: Path) -> None:
    settings = PipelineSettings(
        generator_model=str(tiny_causal_lm(tmp_path / "lm")), max_new_tokens=400, device="cpu"
    )
    def slow_check() -> bool:
        # 50 ms a token: the tiny model cannot end on its own (loop guard, end token) before
        # the reader leaves.
        time.sleep(0.05)
        return False

    generation = Generator(settings).generate(MESSAGES, slow_check)
    pieces = iter(generation)
    next(pieces)
    pieces.close()  # type: ignore[attr-defined]
    assert generation.stopped
