"""The causal LM: loading (int8 on CPU, bf16 or NF4 on CUDA) and streaming with stop rules.

A generation runs on its own thread through `model.generate` (a context-aware one through
worker/pipeline/grounding.py's loop), or, once `start_batching()` was called, as one row of the
batch that worker/pipeline/batching.py decodes for every generation in flight; either way it
streams the same text pieces through a TextIteratorStreamer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from threading import Thread
from typing import Any, Protocol, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BatchEncoding,
    BitsAndBytesConfig,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from shared.errors import ModelError
from shared.jobs import FinishReason
from shared.settings import PipelineSettings
from worker.pipeline.batching import BatchDecoder, TokenChooser
from worker.pipeline.grounding import (
    ContrastiveRun,
    Grounding,
    copy_bias,
    decode_contrastive,
    plain_messages,
)
from worker.pipeline.packaged import converted_copy
from worker.pipeline.types import StopCheck

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """`auto` means CUDA when torch sees a GPU, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_kwargs(device: str, load_in_4bit: bool) -> dict[str, Any]:
    """from_pretrained arguments: fp32 on CPU, bf16 on CUDA, NF4 + bf16 compute when asked."""
    if device != "cuda":
        return {"dtype": torch.float32}
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16, "device_map": "cuda"}
    if load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    return kwargs


def model_location(name: str, cache_dir: Path) -> str:
    """Where from_pretrained finds the generator: packaged model's copy, local path or hub name."""
    packaged = converted_copy(name, cache_dir)
    if packaged is not None:
        return str(packaged)
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


def torch_threads(setting: int) -> int:
    """Threads for the generator: the setting, or (0) every usable core but one.

    The worker shares its host with gunicorn, the Redis servers and the web's embedder: a
    generator that takes every core as well runs about ten times slower whenever any of them
    is busy (SmolLM2: 1.4 tokens/s at 2 threads against 14 at 1 beside another busy
    process), so one core is left to them.
    """
    if setting > 0:
        return setting
    return max(1, len(os.sched_getaffinity(0)) - 1)


FP32_DOWN = ("down_proj",)  # kept fp32 by PIPELINE_CPU_QUANTIZATION=int8-fp32-down


def quantize_int8(model: torch.nn.Module, kept: tuple[str, ...] = ()) -> None:
    """Dynamic int8 quantization of every Linear layer but those whose name ends with a `kept`
    suffix, one scale per output channel, in place.

    Per-channel scales kept more of the model than one scale per tensor, and the MLP
    down-projections, a few of whose input channels run far beyond the rest, are where int8
    does most of its harm (bench/results/quantization.md; docs/pipeline.md, "Choosing the generator
    and the prompt"); in place, because a quantized copy would double peak memory.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith(kept)
    }
    quantize_dynamic(model, qconfig, dtype=torch.qint8, inplace=True)


def repeated_tail(tokens: Sequence[int], ngram: int, repeats: int) -> bool:
    """True when the last `ngram` tokens occur at least `repeats` times in `tokens`."""
    if len(tokens) < ngram + repeats - 1:  # the fewest tokens that can hold the repeats
        return False
    tail = list(tokens[-ngram:])
    seen = sum(
        1 for start in range(len(tokens) - ngram + 1) if tokens[start : start + ngram] == tail
    )
    return seen >= repeats


class _StopHook(StoppingCriteria):
    """Ends generation between tokens once `should_stop()` turns true."""

    def __init__(self, should_stop: StopCheck) -> None:
        self.should_stop = should_stop
        self.fired = False
        self.abandoned = False  # the reader went away: nobody wants more tokens

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        self.fired = self.fired or self.abandoned or bool(self.should_stop())
        return _flags(input_ids, self.fired)


class _LoopGuard(StoppingCriteria):
    """Ends generation once the answer repeats itself: its last n-gram seen `repeats` times."""

    def __init__(self, prompt_tokens: int, ngram: int, repeats: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.ngram = ngram
        self.repeats = repeats
        self.fired = False

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        generated = input_ids[0, self.prompt_tokens :].tolist()
        self.fired = self.fired or repeated_tail(generated, self.ngram, self.repeats)
        return _flags(input_ids, self.fired)


def _flags(input_ids: torch.LongTensor, value: bool) -> torch.BoolTensor:
    flags = torch.full((input_ids.shape[0],), value, dtype=torch.bool, device=input_ids.device)
    return cast(torch.BoolTensor, flags)


class Running(Protocol):
    """What runs a generation: its thread, or its row in the batch."""

    def is_alive(self) -> bool: ...

    def join(self) -> None: ...


class Generation:
    """One streamed generation: iterate for text pieces; counts and timings are set once it ends."""

    def __init__(
        self, generator: Generator, messages: list[dict[str, str]], should_stop: StopCheck,
        grounding: Grounding | None = None,
    ) -> None:
        self._generator = generator
        self._inputs = generator.encode_chat(messages)
        if grounding is not None and grounding.mode == "cad" and generator.batch is not None:
            raise ModelError(
                "context-aware decoding decodes an answer with its question-alone contrast as a "
                "batch of its own: it cannot join the batch of WORKER_MAX_BATCH > 1"
            )
        self.grounding = grounding
        # Besides generate's own: applied by model.generate and by the batch alike.
        self.logits_processors = LogitsProcessorList(copy_bias(grounding, generator.tokenizer))
        self.prompt_tokens = int(self._inputs["input_ids"].shape[1])
        context = generator.context_tokens
        if context is not None and self.prompt_tokens >= context:
            raise ModelError(
                f"the prompt has {self.prompt_tokens} tokens, the model's context {context}"
            )
        self._stop = _StopHook(should_stop)
        settings = generator.settings
        self._loop = _LoopGuard(self.prompt_tokens, settings.loop_ngram, settings.loop_repeats)
        self.generated_tokens = 0
        self.ttft_s = 0.0
        self.generation_s = 0.0
        self._output: torch.Tensor | None = None
        self._error: BaseException | None = None

    @property
    def stopped(self) -> bool:
        return self._stop.fired

    @property
    def finish_reason(self) -> FinishReason:
        """Why generation ended: cancelled, a loop, the token limit, or the model's own stop."""
        if self._stop.fired:
            return FinishReason.CANCELLED
        if self._loop.fired:
            return FinishReason.LOOP
        if self.generated_tokens >= self._generator.settings.max_new_tokens and not self._ended():
            return FinishReason.LENGTH
        return FinishReason.STOP

    def _ended(self) -> bool:
        """Whether the last generated token is one of the model's end tokens."""
        if self._output is None or self.generated_tokens == 0:
            return False
        return int(self._output[0, -1]) in self._generator.end_token_ids

    @property
    def input_ids(self) -> torch.Tensor:
        """The prompt's token ids, shape (1, prompt_tokens), on the model's device."""
        return self._inputs["input_ids"]

    def should_end(self, ids: torch.Tensor) -> bool:
        """The stop rules `model.generate` checks after each token (cancel, loop guard), for a
        batched row: `ids` is its prompt and tokens so far, shape (1, n)."""
        scores = cast(torch.FloatTensor, torch.empty(0))
        ended = bool(self._stop(cast(torch.LongTensor, ids), scores)[0])
        return bool(self._loop(cast(torch.LongTensor, ids), scores)[0]) or ended

    def finish(self, output: torch.Tensor | None, error: BaseException | None) -> None:
        """Record a batched row's end: its prompt and tokens (1, n), or the error it failed on."""
        self._output = output
        self._error = error

    def __iter__(self) -> Iterator[str]:
        streamer = TextIteratorStreamer(
            self._generator.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        started = time.perf_counter()
        running = self._generator.launch(self, streamer)
        try:
            for text in streamer:
                if text and not self.ttft_s:
                    self.ttft_s = time.perf_counter() - started
                if text:
                    yield text
        finally:
            self._stop.abandoned = running.is_alive()
            running.join()
            self.generation_s = time.perf_counter() - started
        if self._error is not None:
            raise ModelError(f"generation failed: {self._error}") from self._error
        if self._output is not None:
            self.generated_tokens = int(self._output.shape[1]) - self.prompt_tokens

    def run(self, streamer: TextIteratorStreamer) -> None:
        """Generate on this thread with `model.generate` (the unbatched way)."""
        try:
            with torch.inference_mode():
                if self.grounding is not None and self.grounding.mode == "cad":
                    self._output = self._contrastive(self.grounding, streamer)
                    streamer.end()
                    return
                self._output = self._generator.model.generate(
                    **self._inputs,
                    **self._generator.decoding(),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([self._stop, self._loop]),
                    logits_processor=self.logits_processors,
                )
        except Exception as error:  # re-raised in the consuming thread as ModelError
            self._error = error
            streamer.end()

    def _contrastive(self, grounding: Grounding, streamer: TextIteratorStreamer) -> torch.Tensor:
        """Context-aware decoding (worker/pipeline/grounding.py) with generate's processors and
        this generation's stop rules."""
        generator = self._generator
        chooser = TokenChooser(generator)
        streamer.put(self.input_ids.cpu())  # the prompt: skipped, as model.generate does
        plain = generator.encode_chat(plain_messages(grounding.question))["input_ids"]
        return decode_contrastive(generator.model, ContrastiveRun(
            ids=self.input_ids, plain_ids=plain, alpha=grounding.strength,
            processors=chooser.processors(self.prompt_tokens), pick=chooser.pick,
            emit=lambda token: streamer.put(torch.tensor([token])), should_end=self.should_end,
            end_token_ids=generator.end_token_ids,
            max_new_tokens=generator.settings.max_new_tokens,
        ))


class Generator:
    """A causal LM and its tokenizer, loaded once."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        if self.device == "cpu":
            torch.set_num_threads(torch_threads(settings.threads))
            log.info("generator runs on %d CPU thread(s)", torch.get_num_threads())
        if settings.load_in_4bit and self.device != "cuda":
            log.warning(
                "PIPELINE_LOAD_IN_4BIT needs CUDA; loading %s unquantized on %s",
                settings.generator_model,
                self.device,
            )
        location = model_location(settings.generator_model, settings.model_cache_dir.expanduser())
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            self.model = AutoModelForCausalLM.from_pretrained(
                location, **load_kwargs(self.device, settings.load_in_4bit)
            )
        except (OSError, ValueError, ImportError) as error:
            raise ModelError(
                f"cannot load generator {settings.generator_model!r} from {location!r}: {error}"
            ) from error
        self.model.eval()
        if self.device == "cpu" and settings.cpu_quantization != "none":
            kept = FP32_DOWN if settings.cpu_quantization == "int8-fp32-down" else ()
            quantize_int8(self.model, kept)
        self.model_id = settings.generator_model
        self.end_token_ids = _end_tokens(self.model.generation_config.eos_token_id)
        self.end_token_ids.add(self.tokenizer.eos_token_id)
        self.context_tokens: int | None = getattr(
            self.model.config.get_text_config(), "max_position_embeddings", None
        )
        self.batch: BatchDecoder | None = None

    def start_batching(self, max_batch: int) -> None:
        """Decode up to `max_batch` generations together from now on (pipeline/batching.py)."""
        self.batch = BatchDecoder(self, max_batch)

    def launch(self, generation: Generation, streamer: TextIteratorStreamer) -> Running:
        """Start `generation`: a row of the batch when batching, else a thread of its own."""
        if self.batch is not None:
            return self.batch.submit(generation, streamer)
        thread = Thread(target=generation.run, args=(streamer,), daemon=True, name="ragq-generate")
        thread.start()
        return thread

    def encode_chat(self, messages: list[dict[str, str]]) -> dict[str, torch.Tensor]:
        """The chat template applied to `messages`, as model inputs on the model's device."""
        encoded = cast(
            BatchEncoding,
            self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ),
        )
        return {key: value.to(self.model.device) for key, value in encoded.items()}

    def decoding(self) -> dict[str, Any]:
        """Generation arguments from settings: greedy at temperature 0, sampling above."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.settings.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            "repetition_penalty": self.settings.repetition_penalty,
        }
        if self.settings.temperature > 0:
            return {**kwargs, "do_sample": True, "temperature": self.settings.temperature}
        return {**kwargs, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}

    def warm_up(self, messages: list[dict[str, str]]) -> None:
        """Generate one token, paying the first call's one-off costs now."""
        with torch.inference_mode():
            self.model.generate(
                **self.encode_chat(messages), **{**self.decoding(), "max_new_tokens": 1}
            )

    def generate(
        self, messages: list[dict[str, str]], should_stop: StopCheck,
        grounding: Grounding | None = None,
    ) -> Generation:
        """A streamed generation; iterate it to run the model. `grounding`: how its decoding
        leans on its sources (worker/pipeline/grounding.py); none by default."""
        return Generation(self, messages, should_stop, grounding)


def _end_tokens(configured: int | list[int] | None) -> set[int]:
    if configured is None:
        return set()
    return {configured} if isinstance(configured, int) else set(configured)
