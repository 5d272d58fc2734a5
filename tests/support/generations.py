"""Consuming several batched generations at once, as the worker's job threads do."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence


def consume_together(generations: Sequence[Iterable[str]], timeout: float | None = None
                     ) -> list[str]:
    """Iterate each generation on its own thread; the texts, in the generations' order."""
    texts = [""] * len(generations)

    def consume(i: int) -> None:
        texts[i] = "".join(generations[i])

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(generations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return texts
