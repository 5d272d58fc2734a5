"""The RAG pipeline: `load_pipeline(settings)` gives the object the worker answers with."""

from __future__ import annotations

from shared.settings import PipelineSettings
from worker.pipeline.types import PipelineLike


def load_pipeline(settings: PipelineSettings) -> PipelineLike:
    """Load the index and models once (a FakePipeline when PIPELINE_BACKEND=fake).

    Raises IndexBuildError when the index is missing (with the command that builds it),
    ModelError when a model cannot be loaded.
    """
    if settings.backend == "fake":
        from worker.pipeline.fake import FakePipeline

        return FakePipeline(settings)
    from worker.pipeline.pipeline import Pipeline

    return Pipeline(settings)
