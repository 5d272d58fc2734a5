"""Real models shared across the pipeline's integration tests: loaded once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.embedding import Embedder
from shared.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[3]
# The sample corpus is ragq's own documentation, as `make index` builds it.
SAMPLE_CORPUS = [REPO / "docs", REPO / "README.md"]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder("minilm", "cpu")


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """The sample corpus indexed once into a temporary folder."""
    from worker.pipeline.index import build_index

    out = tmp_path_factory.mktemp("sample") / "index"
    build_index(SAMPLE_CORPUS, out, PipelineSettings(), embedder, progress=False)
    return out


@pytest.fixture(scope="session")
def sample_pipeline(sample_index: Path, embedder: Embedder) -> Iterator[object]:
    """The real pipeline (MiniLM + the default generator) over the sample index, short answers."""
    from worker.pipeline.pipeline import Pipeline
    from worker.pipeline.retrieval import load_retriever

    settings = PipelineSettings(index_dir=sample_index, max_new_tokens=24, device="cpu", top_k=3)
    yield Pipeline(settings, load_retriever(settings, "cpu", embedder))
