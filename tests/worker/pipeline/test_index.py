"""Index build and load on the real MiniLM: manifest, atomic writes, HNSW, ingest errors."""

import json
from pathlib import Path

import pytest

from shared.embedding import Embedder
from shared.errors import IndexBuildError, IngestError
from shared.settings import PipelineSettings
from worker.pipeline.index import CorpusIndex, build_index
from worker.pipeline.retrieval import Retriever

from .helpers import write_squad

pytestmark = pytest.mark.integration


def _corpus(folder: Path) -> Path:
    folder.mkdir()
    (folder / "redis.md").write_text(
        "# Redis\n\nThe broker Redis never evicts keys.\n\n## Cache\n\n"
        "The cache Redis evicts least recently used entries.\n"
    )
    (folder / "notes.txt").write_text("Flower listens on port 5555.\n")
    return folder


def test_build_writes_manifest_and_is_loadable(tmp_path: Path, embedder: Embedder) -> None:
    out = tmp_path / "idx"
    manifest = build_index(
        [_corpus(tmp_path / "docs")], out, PipelineSettings(), embedder, progress=False
    )
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["index_version"] == manifest["index_version"]
    assert on_disk["embedding_model"] == "minilm" and on_disk["chunk_count"] == 3
    assert on_disk["settings"]["chunk_tokens"] == 128 and "built_at" in on_disk
    index = CorpusIndex.load(out)
    assert {c.title for c in index.chunks} == {"Redis", "Redis › Cache", "notes"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_same_corpus_same_version_and_ids(tmp_path: Path, embedder: Embedder) -> None:
    docs = _corpus(tmp_path / "docs")
    first = build_index([docs], tmp_path / "a", PipelineSettings(), embedder, progress=False)
    second = build_index([docs], tmp_path / "b", PipelineSettings(), embedder, progress=False)
    assert first["index_version"] == second["index_version"]
    ids = [[c.chunk_id for c in CorpusIndex.load(tmp_path / n).chunks] for n in "ab"]
    assert ids[0] == ids[1]
    (docs / "notes.txt").write_text("Flower listens on port 5556.\n")
    third = build_index([docs], tmp_path / "a", PipelineSettings(), embedder, progress=False)
    assert third["index_version"] != first["index_version"]


def test_hnsw_index_retrieves_like_flat(tmp_path: Path, embedder: Embedder) -> None:
    settings = PipelineSettings(index_type="hnsw")
    build_index([_corpus(tmp_path / "docs")], tmp_path / "idx", settings, embedder, progress=False)
    retriever = Retriever(CorpusIndex.load(tmp_path / "idx"), embedder, settings)
    top = retriever.retrieve("Which port does Flower use?", top_k=2).sources
    assert top[0].title == "notes" and top[0].dense is not None and top[0].sparse is not None
    assert top[0].rrf == top[0].score


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.md", "", "empty.md: file is empty"),
        ("bad.json", "{oops", "bad.json: not SQuAD-format JSON"),
        ("headings.md", "# Only\n## Headings\n", "headings.md: holds no text"),
    ],
)
def test_bad_input_names_the_file_and_leaves_nothing(
    tmp_path: Path, embedder: Embedder, name: str, content: str, message: str
) -> None:
    docs = _corpus(tmp_path / "docs")
    (docs / name).write_text(content)
    out = tmp_path / "out" / "idx"
    with pytest.raises(IngestError, match=message):
        build_index([docs], out, PipelineSettings(), embedder, progress=False)
    assert not out.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_failed_rebuild_keeps_the_old_index(tmp_path: Path, embedder: Embedder) -> None:
    docs = _corpus(tmp_path / "docs")
    out = tmp_path / "idx"
    before = build_index([docs], out, PipelineSettings(), embedder, progress=False)
    (docs / "broken.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(IngestError, match="broken.txt: cannot read"):
        build_index([docs], out, PipelineSettings(), embedder, progress=False)
    assert CorpusIndex.load(out).version == before["index_version"]


def test_an_index_of_another_format_is_refused(tmp_path: Path, embedder: Embedder) -> None:
    out = tmp_path / "idx"
    build_index([_corpus(tmp_path / "docs")], out, PipelineSettings(), embedder, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    with pytest.raises(IndexBuildError, match="has format 1, this ragq reads format 2: rebuild"):
        CorpusIndex.load(out)


def test_sentences_get_vectors_of_their_own(tmp_path: Path, embedder: Embedder) -> None:
    docs = _corpus(tmp_path / "docs")
    (docs / "flower.txt").write_text("Flower shows the tasks. It needs the broker URL.\n")
    chunks_only = build_index([docs], tmp_path / "a", PipelineSettings(), embedder, progress=False)
    assert not chunks_only["settings"]["index_sentences"]
    assert not chunks_only["settings"]["sparse_stemming"]
    assert (chunks_only["chunk_count"], chunks_only["vector_count"]) == (4, 4)
    settings = PipelineSettings(index_sentences=True, sparse_stemming=True)
    both = build_index([docs], tmp_path / "b", settings, embedder, progress=False)
    # Only flower.txt has two sentences: one vector for each, and one for the whole chunk.
    assert (both["chunk_count"], both["vector_count"]) == (4, 6)
    assert both["index_version"] != chunks_only["index_version"]
    assert CorpusIndex.load(tmp_path / "b").sparse.stem is True


def test_missing_index_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(IndexBuildError, match="make index"):
        CorpusIndex.load(tmp_path / "none")


def test_squad_paragraphs_are_indexed_with_article_titles(
    tmp_path: Path, embedder: Embedder
) -> None:
    squad = write_squad(
        tmp_path / "s.json",
        [
            ("Paris", [("Paris is the capital of France.", [])]),
            ("Rome", [("Rome is the capital of Italy.", [])]),
        ],
    )
    build_index([squad], tmp_path / "idx", PipelineSettings(), embedder, progress=False)
    chunks = CorpusIndex.load(tmp_path / "idx").chunks
    assert [(c.source, c.title) for c in chunks] == [
        ("s.json#0/0", "Paris"),
        ("s.json#1/0", "Rome"),
    ]


def test_reranker_orders_the_head_and_keeps_every_stage_score(
    tmp_path: Path, embedder: Embedder
) -> None:
    from worker.pipeline.retrieval import Reranker

    from .tiny_models import tiny_cross_encoder

    settings = PipelineSettings(rerank_depth=2)
    build_index([_corpus(tmp_path / "docs")], tmp_path / "idx", settings, embedder, progress=False)
    reranker = Reranker(str(tiny_cross_encoder(tmp_path / "ce")), "cpu")
    retriever = Retriever(CorpusIndex.load(tmp_path / "idx"), embedder, settings, reranker)
    retrieval = retriever.retrieve("Which Redis evicts entries?", top_k=3)
    head, tail = retrieval.sources[:2], retrieval.sources[2:]
    assert all(s.rerank is not None and s.score == s.rerank for s in head)
    assert head[0].rerank >= head[1].rerank  # type: ignore[operator]
    assert all(s.rerank is None and s.rrf is not None for s in tail)
    assert retrieval.rerank_s > 0
