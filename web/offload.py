"""The web's CPU-bound work off gevent's event loop.

Under gunicorn's gevent worker (web/serving.py) every connection of a web process shares one
OS thread, so torch embedding a question (milliseconds; far more on a busy machine) would hold
all of them meanwhile. The embedder's encoding runs instead in gevent's pool of native
threads, where torch computes without the GIL, and the loop keeps serving. Outside gevent
(tests, scripts) it runs in place.
"""

from __future__ import annotations

import numpy as np
from gevent import get_hub, monkey

from shared.embedding import Embedder


class LoopFriendlyEmbedder(Embedder):
    """shared.embedding.Embedder whose encoding leaves gevent's loop free."""

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        encode = super().encode
        if not monkey.is_module_patched("threading"):
            return encode(texts, batch_size, progress)
        vectors: np.ndarray = get_hub().threadpool.apply(encode, (texts, batch_size, progress))
        return vectors
