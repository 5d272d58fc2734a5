"""What the pipeline yields while it answers: sources first, then tokens, then the final answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shared.collections import DEFAULT, CollectionRegistry
from shared.jobs import FinishReason


@dataclass(frozen=True)
class Source:
    """One retrieved passage with its score from each stage (None where a stage did not run)."""

    chunk_id: str
    title: str
    text: str
    score: float
    dense: float | None = None
    sparse: float | None = None
    rrf: float | None = None
    rerank: float | None = None
    cited: bool = False  # the answer cites it as [n]

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "title": self.title,
            "text": self.text,
            "score": self.score,
            "cited": self.cited,
            "scores": {
                "dense": self.dense,
                "sparse": self.sparse,
                "rrf": self.rrf,
                "rerank": self.rerank,
            },
        }


@dataclass(frozen=True)
class SourcesItem:
    sources: list[Source]
    retrieval_s: float
    rerank_s: float


@dataclass(frozen=True)
class TokenItem:
    text: str


@dataclass
class Answer:
    """The finished answer with per-stage timings and token counts."""

    answer: str
    sources: list[Source]
    prompt_tokens: int
    generated_tokens: int
    retrieval_s: float
    rerank_s: float
    ttft_s: float
    generation_s: float
    finish_reason: FinishReason = FinishReason.STOP
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        """Cancelled (or its lease lost) before the model finished."""
        return self.finish_reason == FinishReason.CANCELLED

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.generation_s if self.generation_s > 0 else 0.0


StreamItem = SourcesItem | TokenItem | Answer
StopCheck = Callable[[], bool]


class PipelineLike(Protocol):
    """What the worker needs of a pipeline (the real one, or the fake one for queue tests)."""

    index_version: str
    model_id: str
    prompt_version: str

    def stream(
        self, question: str, top_k: int, should_stop: StopCheck | None = None,
        collection: str = DEFAULT,
    ) -> Iterator[StreamItem]:
        """Yield a SourcesItem, then TokenItems, then the Answer (last, also when stopped early),
        from `collection`'s current version; the Answer's `extra` names the collection and the
        index_version that answered."""
        ...

    def serve_collections(self, collections_dir: Path, registry: CollectionRegistry) -> None:
        """Answer about collections too, each from the version its Redis record names."""
        ...

    def query(self, question: str, top_k: int) -> Answer:
        """Answer in one call."""
        ...

    def start_batching(self, max_batch: int) -> None:
        """Let up to `max_batch` streams, each on its own thread, generate together."""
        ...

    def device_report(self) -> dict[str, Any]:
        """device, cuda_available, model_on_device, vram_used_gb, vram_total_gb."""
        ...
