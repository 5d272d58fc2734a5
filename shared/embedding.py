"""Sentence embeddings shared by dense retrieval (worker) and the semantic cache (web)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.errors import ModelError
from shared.models import resolve_model

MEAN_POOLING = "mean"


def _plain_mean_pooling(model: Any) -> bool:
    """Whether `model` is transformer -> mean pooling [-> normalise] and nothing else, the stack
    Embedder can run without sentence-transformers' machinery (all-MiniLM-L6-v2 is)."""
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    modules = list(model)
    if len(modules) == 3 and isinstance(modules[2], Normalize):
        modules = modules[:2]
    return (
        len(modules) == 2
        and isinstance(modules[0], Transformer)
        and not modules[0].do_lower_case
        and isinstance(modules[1], Pooling)
        and modules[1].pooling_mode == MEAN_POOLING
    )


class Embedder:
    """L2-normalised float32 sentence embeddings."""

    def __init__(self, model: str = "minilm", device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_model(model)
        try:
            self._model = SentenceTransformer(path, device=device)
        except (OSError, ValueError) as error:
            raise ModelError(
                f"cannot load embedding model {model!r} from {path!r}: {error}"
            ) from error
        self._model.eval()
        self.model_id = model
        self.dim = int(self._model.get_embedding_dimension() or 0)
        self.tokenizer = self._model.tokenizer
        self._direct = _plain_mean_pooling(self._model)
        self._transformer: Any = self._model[0].auto_model if self._direct else None

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed `texts` as rows of unit length."""
        if self._direct and 0 < len(texts) <= batch_size and not progress:
            return self._forward(texts)
        vectors = self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_one(self, text: str) -> np.ndarray:
        """Embed one text as a unit vector (the cache's and retrieval's per-query call)."""
        return self.encode([text])[0]

    def _forward(self, texts: list[str]) -> np.ndarray:
        """One batch straight through tokenizer, transformer and masked mean pooling: what
        sentence-transformers computes for this stack, without encode()'s per-call machinery
        (sorting, batching, module dispatch), which costs ~1 ms of a ~7 ms query on this CPU."""
        import torch

        features = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self._model.max_seq_length,
            return_tensors="pt",
        ).to(self._model.device)
        with torch.inference_mode():
            tokens = self._transformer(**features).last_hidden_state
            mask = features["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.ascontiguousarray(vectors.float().cpu().numpy(), dtype=np.float32)
