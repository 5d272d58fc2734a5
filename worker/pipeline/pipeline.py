"""The real pipeline: index, embedder, optional reranker and generator, loaded once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from shared.collections import DEFAULT, CollectionRegistry
from shared.settings import PipelineSettings
from worker.pipeline.corpora import Corpora
from worker.pipeline.generator import Generator, resolve_device
from worker.pipeline.prompt import build_messages, fit_sources, mark_cited
from worker.pipeline.retrieval import Retriever, load_retriever
from worker.pipeline.types import Answer, SourcesItem, StopCheck, StreamItem, TokenItem

GIB = 1024**3
WARM_UP_QUESTION = "What is this about?"
WARM_UP_TOKENS = 64


def _never() -> bool:
    return False


class Pipeline:
    """Retrieve, rerank, generate. Build it once per process; `stream()` per question."""

    def __init__(self, settings: PipelineSettings, retriever: Retriever | None = None) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.retriever = retriever or load_retriever(settings, self.device)
        self.generator = Generator(settings)
        self.index_version = self.retriever.index.version
        self.model_id = self.generator.model_id
        self.prompt_version = settings.prompt_version
        self.corpora = Corpora(settings, default=self.retriever)
        # Batched jobs call stream() from threads of their own; the embedder, the indexes and
        # the tokenizers are shared, and a fast tokenizer may refuse a concurrent caller.
        self._shared = threading.Lock()
        self._warm_up()

    def _warm_up(self) -> None:
        """One tiny question end to end, so one-off initialisation does not land on a user's."""
        sources = self.retriever.retrieve(WARM_UP_QUESTION, 1).sources
        fitted = fit_sources(sources, self.generator.tokenizer, WARM_UP_TOKENS)
        self.generator.warm_up(build_messages(WARM_UP_QUESTION, fitted))

    def serve_collections(self, collections_dir: Path, registry: CollectionRegistry) -> None:
        """Answer about collections too, with this pipeline's embedder and reranker."""
        self.corpora.serve(collections_dir, registry)

    def stream(
        self, question: str, top_k: int, should_stop: StopCheck | None = None,
        collection: str = DEFAULT,
    ) -> Iterator[StreamItem]:
        """Yield a SourcesItem, then TokenItems, then the Answer (last, also when stopped), from
        `collection`'s version of now (the Answer's `extra` names it)."""
        with self._shared:
            retriever = self.corpora.retriever(collection) or self.retriever
            retrieval = retriever.retrieve(question, top_k)
            sources = fit_sources(
                retrieval.sources, self.generator.tokenizer, self.settings.max_context_tokens
            )
        yield SourcesItem(
            sources=sources, retrieval_s=retrieval.retrieval_s, rerank_s=retrieval.rerank_s
        )
        with self._shared:
            generation = self.generator.generate(
                build_messages(question, sources), should_stop or _never
            )
        pieces: list[str] = []
        for text in generation:
            pieces.append(text)
            yield TokenItem(text)
        text = "".join(pieces).strip()
        yield Answer(
            answer=text,
            sources=mark_cited(sources, text),
            prompt_tokens=generation.prompt_tokens,
            generated_tokens=generation.generated_tokens,
            retrieval_s=retrieval.retrieval_s,
            rerank_s=retrieval.rerank_s,
            ttft_s=generation.ttft_s,
            generation_s=generation.generation_s,
            finish_reason=generation.finish_reason,
            extra={"collection": collection, "index_version": retriever.index.version},
        )

    def start_batching(self, max_batch: int) -> None:
        """Decode up to `max_batch` questions' answers together from now on."""
        self.generator.start_batching(max_batch)

    def query(self, question: str, top_k: int) -> Answer:
        """Answer in one call."""
        *_, last = self.stream(question, top_k)
        assert isinstance(last, Answer)
        return last

    def device_report(self) -> dict[str, Any]:
        """device, cuda_available, model_on_device, vram_used_gb, vram_total_gb."""
        cuda = torch.cuda.is_available()
        model_device = self.generator.model.device.type
        return {
            "device": self.device,
            "cuda_available": cuda,
            "model_on_device": model_device == self.device,
            "vram_used_gb": round(torch.cuda.memory_allocated() / GIB, 3) if cuda else 0.0,
            "vram_total_gb": round(torch.cuda.get_device_properties(0).total_memory / GIB, 3)
            if cuda
            else 0.0,
        }
