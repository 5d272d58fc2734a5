"""A pipeline with canned passages and tokens, for tests whose point is the queue, not the model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.collections import DEFAULT, CollectionRegistry
from shared.errors import ModelError
from shared.jobs import FinishReason
from shared.settings import PipelineSettings
from worker.pipeline.corpora import Corpora
from worker.pipeline.types import Answer, Source, SourcesItem, StopCheck, StreamItem, TokenItem

FAKE_CONTEXT_TOKENS = 512


class FakePipeline:
    """Yields `fake_tokens` tokens `fake_token_delay` seconds apart; records the questions asked.

    Its prompt counts 10 tokens per passage and one per word of the question; a prompt longer
    than FAKE_CONTEXT_TOKENS fails with ModelError after the sources, as the real model's does.
    Streams are independent, so any number run together on their own threads.
    """

    index_version = "fake-index"
    model_id = "fake-model"

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.prompt_version = settings.prompt_version
        self.questions: list[str] = []
        self.corpora = Corpora(settings)

    def serve_collections(self, collections_dir: Path, registry: CollectionRegistry) -> None:
        """Retrieve for real from collections (MiniLM, loaded on first use); tokens stay fake."""
        self.corpora.serve(collections_dir, registry)

    def stream(
        self, question: str, top_k: int, should_stop: StopCheck | None = None,
        collection: str = DEFAULT,
    ) -> Iterator[StreamItem]:
        self.questions.append(question)
        retriever = self.corpora.retriever(collection)
        if retriever is None:
            sources = [
                Source(
                    chunk_id=f"fake-{i}",
                    title="Fake",
                    text=f"passage {i} for {question}",
                    score=1.0 / (i + 1),
                )
                for i in range(top_k)
            ]
            version = self.index_version
        else:
            sources, version = retriever.retrieve(question, top_k).sources, retriever.index.version
        yield SourcesItem(sources=sources, retrieval_s=0.0, rerank_s=0.0)
        prompt_tokens = 10 * top_k + len(question.split())
        if prompt_tokens >= FAKE_CONTEXT_TOKENS:
            raise ModelError(
                f"the prompt has {prompt_tokens} tokens, the model's context {FAKE_CONTEXT_TOKENS}"
            )
        started = time.perf_counter()
        texts: list[str] = []
        ttft = 0.0
        finish_reason = FinishReason.STOP
        for i in range(self.settings.fake_tokens):
            if should_stop is not None and should_stop():
                finish_reason = FinishReason.CANCELLED
                break
            time.sleep(self.settings.fake_token_delay)
            text = f"tok{i} "
            texts.append(text)
            if i == 0:
                ttft = time.perf_counter() - started
            yield TokenItem(text)
        yield Answer(
            answer="".join(texts).strip(),
            sources=sources,
            prompt_tokens=prompt_tokens,
            generated_tokens=len(texts),
            retrieval_s=0.0,
            rerank_s=0.0,
            ttft_s=ttft,
            generation_s=time.perf_counter() - started,
            finish_reason=finish_reason,
            extra={"collection": collection, "index_version": version},
        )

    def start_batching(self, max_batch: int) -> None:
        """Nothing to set up: fake streams never share a model."""

    def query(self, question: str, top_k: int) -> Answer:
        *_, last = self.stream(question, top_k)
        assert isinstance(last, Answer)
        return last

    def device_report(self) -> dict[str, Any]:
        return {
            "device": "cpu",
            "cuda_available": False,
            "model_on_device": True,
            "vram_used_gb": 0.0,
            "vram_total_gb": 0.0,
        }
