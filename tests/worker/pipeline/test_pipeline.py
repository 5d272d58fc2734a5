"""The real pipeline (MiniLM + the default generator) answering from the sample corpus."""

from pathlib import Path

import pytest

from shared.errors import IndexBuildError
from shared.jobs import FinishReason
from shared.settings import PipelineSettings
from worker.pipeline import load_pipeline
from worker.pipeline.fake import FakePipeline
from worker.pipeline.types import Answer, SourcesItem, TokenItem


def test_fake_backend_needs_no_models() -> None:
    assert isinstance(load_pipeline(PipelineSettings(backend="fake")), FakePipeline)


def test_missing_index_tells_the_user_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(IndexBuildError, match=r"ragq index docs README.md --out .*make index"):
        load_pipeline(PipelineSettings(index_dir=tmp_path / "missing"))


@pytest.mark.integration
def test_sources_then_tokens_then_answer(sample_pipeline) -> None:  # type: ignore[no-untyped-def]
    items = list(sample_pipeline.stream("Which port does Flower listen on?", top_k=3))
    assert isinstance(items[0], SourcesItem) and isinstance(items[-1], Answer)
    assert all(isinstance(item, TokenItem) for item in items[1:-1]) and len(items) > 2
    sources, answer = items[0].sources, items[-1]
    assert any("5555" in s.text for s in sources)  # README's port table or settings table
    assert answer.answer and answer.answer == "".join(i.text for i in items[1:-1]).strip()
    assert answer.prompt_tokens > 50 and 0 < answer.generated_tokens <= 24
    assert answer.ttft_s > 0 and not answer.stopped
    assert [s.chunk_id for s in answer.sources] == [s.chunk_id for s in sources]
    assert answer.finish_reason in {FinishReason.STOP, FinishReason.LENGTH, FinishReason.LOOP}


@pytest.mark.integration
def test_should_stop_keeps_the_partial_answer(sample_pipeline) -> None:  # type: ignore[no-untyped-def]
    tokens_seen = []
    stream = sample_pipeline.stream(
        "How do I cancel a running job?", 3, lambda: len(tokens_seen) >= 2
    )
    for item in stream:
        if isinstance(item, TokenItem):
            tokens_seen.append(item.text)
    answer = item
    assert isinstance(answer, Answer) and answer.stopped
    assert answer.finish_reason == FinishReason.CANCELLED
    assert answer.answer == "".join(tokens_seen).strip() and answer.answer
    assert answer.generated_tokens < 24 and len(tokens_seen) <= 5


@pytest.mark.integration
def test_identity_and_device_report(sample_pipeline) -> None:  # type: ignore[no-untyped-def]
    settings = PipelineSettings()
    assert sample_pipeline.model_id == settings.generator_model
    assert sample_pipeline.prompt_version == settings.prompt_version
    assert len(sample_pipeline.index_version) == 16
    report = sample_pipeline.device_report()
    assert report["device"] == "cpu" and report["model_on_device"] is True
    assert report["vram_used_gb"] == 0.0 or report["cuda_available"]
