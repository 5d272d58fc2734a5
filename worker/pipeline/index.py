"""Building and loading an index folder: chunks, FAISS, BM25 and a manifest, written atomically."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from shared.embedding import Embedder
from shared.errors import IndexBuildError
from shared.settings import PipelineSettings
from worker.pipeline.chunking import Chunk, chunk_documents, sentences
from worker.pipeline.dense import DenseIndex
from worker.pipeline.ingest import read_sources
from worker.pipeline.sparse import SparseIndex

MANIFEST = "manifest.json"
CHUNKS = "chunks.jsonl"
# 2: dense vectors per sentence with their owning chunks; BM25 terms say if they are stemmed.
FORMAT = 2
EMBED_BATCH = 64


def indexed_text(chunk: Chunk, with_heading: bool) -> str:
    """What is embedded and BM25-indexed: a section heading names what its text leaves implicit.

    Page and article titles are left out: shared by every chunk of a page, they do not tell
    its chunks apart (on the SQuAD sample they lowered dense recall@1 from 0.738 to 0.710).
    """
    return _heading(chunk, with_heading) + chunk.text


def dense_texts(chunk: Chunk, with_heading: bool, with_sentences: bool) -> list[str]:
    """What is embedded for a chunk: its indexed text, then each sentence when it has several.

    MiniLM learnt from pairs of short texts: a question lies nearer the one sentence that
    answers it than the whole chunk, whose other sentences dilute its embedding (on the SQuAD
    sample, dense recall@1 0.738 with chunk vectors only, 0.789 with sentences as well).
    """
    whole = indexed_text(chunk, with_heading)
    parts = sentences(chunk.text) if with_sentences else []
    if len(parts) < 2:
        return [whole]
    return [whole, *(_heading(chunk, with_heading) + part for part in parts)]


def _heading(chunk: Chunk, with_heading: bool) -> str:
    return f"{chunk.heading}\n" if with_heading and chunk.heading else ""


@dataclass
class CorpusIndex:
    """A loaded index folder."""

    folder: Path
    manifest: dict[str, Any]
    chunks: list[Chunk]
    dense: DenseIndex
    sparse: SparseIndex

    @property
    def version(self) -> str:
        return str(self.manifest["index_version"])

    @classmethod
    def load(cls, folder: Path) -> CorpusIndex:
        """Read an index folder; IndexBuildError with the command to run when there is none."""
        if not (folder / MANIFEST).is_file():
            raise IndexBuildError(
                f"no index at {folder}: build one with `ragq index docs README.md --out {folder}` "
                "(or `make index`)"
            )
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            _check_format(folder, manifest)
            lines = (folder / CHUNKS).read_text(encoding="utf-8").splitlines()
            chunks = [Chunk(**json.loads(line)) for line in lines]
            return cls(folder, manifest, chunks, DenseIndex.load(folder), SparseIndex.load(folder))
        except (OSError, ValueError, TypeError, RuntimeError) as error:
            raise IndexBuildError(
                f"index at {folder} is unreadable ({error}): rebuild it with `ragq index`"
            ) from error


def build_index(
    sources: list[Path],
    out: Path,
    settings: PipelineSettings,
    embedder: Embedder,
    progress: bool = True,
) -> dict[str, Any]:
    """Chunk, embed and index `sources` into `out`, replacing it only once everything is written.

    Returns the manifest. Raises IngestError naming a bad input; nothing is left at `out` then.
    """
    started = time.perf_counter()
    documents = read_sources(sources)
    chunks = chunk_documents(
        documents, embedder.tokenizer, settings.chunk_tokens, settings.chunk_overlap
    )
    texts = [indexed_text(chunk, settings.index_headings) for chunk in chunks]
    dense = _dense(chunks, settings, embedder, progress)
    sparse = SparseIndex.build(texts, settings.sparse_stemming)
    manifest = manifest_for(settings, embedder, chunks, len(documents))
    manifest["vector_count"] = dense.size
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    staging.chmod(0o755)
    try:
        write_index(staging, chunks, dense, sparse)
        manifest["build_seconds"] = round(time.perf_counter() - started, 3)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _check_format(folder: Path, manifest: dict[str, Any]) -> None:
    """An index another version of ragq wrote would be misread, not merely slower: refuse it."""
    if manifest.get("format") != FORMAT:
        raise IndexBuildError(
            f"index at {folder} has format {manifest.get('format')}, this ragq reads format "
            f"{FORMAT}: rebuild it with `ragq index`"
        )


def _dense(
    chunks: list[Chunk], settings: PipelineSettings, embedder: Embedder, progress: bool
) -> DenseIndex:
    """Every chunk's vectors (see dense_texts) in one FAISS index, each row owned by its chunk."""
    per_chunk = [
        dense_texts(chunk, settings.index_headings, settings.index_sentences) for chunk in chunks
    ]
    owners = [row for row, texts in enumerate(per_chunk) for _ in texts]
    vectors = embed(embedder, [text for texts in per_chunk for text in texts], progress)
    return DenseIndex.build(vectors, owners, settings.index_type)


def embed(
    embedder: Embedder, texts: list[str], progress: bool,
    report: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """`texts` embedded in batches; `report(done, total)` after each batch when given."""
    parts = []
    for i in tqdm(range(0, len(texts), EMBED_BATCH), desc="embedding chunks", unit="batch",
                  disable=not progress):
        parts.append(embedder.encode(texts[i : i + EMBED_BATCH], batch_size=EMBED_BATCH))
        if report is not None:
            report(min(i + EMBED_BATCH, len(texts)), len(texts))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)


def manifest_for(
    settings: PipelineSettings, embedder: Embedder, chunks: list[Chunk], n_docs: int
) -> dict[str, Any]:
    """The manifest of an index of `chunks`; its index_version hashes the chunks and settings."""
    used = settings.model_dump(
        include={
            "chunk_tokens",
            "chunk_overlap",
            "index_type",
            "index_headings",
            "index_sentences",
            "sparse_stemming",
        }
    )
    digest = hashlib.sha256(json.dumps([embedder.model_id, used], sort_keys=True).encode())
    for chunk in chunks:
        digest.update(f"{chunk.chunk_id}\x00{chunk.title}\n".encode())
    return {
        "format": FORMAT,
        "index_version": digest.hexdigest()[:16],
        "embedding_model": embedder.model_id,
        "embedding_dim": embedder.dim,
        "chunk_count": len(chunks),
        "document_count": n_docs,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": used,
    }


def write_index(folder: Path, chunks: list[Chunk], dense: DenseIndex, sparse: SparseIndex) -> None:
    """The chunks, FAISS and BM25 files of an index into `folder` (the manifest is the caller's)."""
    with (folder / CHUNKS).open("w", encoding="utf-8") as handle:
        for chunk in chunks:
            handle.write(json.dumps(chunk.to_dict(), ensure_ascii=False) + "\n")
    dense.save(folder)
    sparse.save(folder)


def _replace(staging: Path, out: Path) -> None:
    """Swap the finished folder in; an old index is moved aside first and removed after."""
    retired = out.with_name(f".{out.name}.retired-{staging.name}")
    if out.exists():
        out.rename(retired)
    staging.rename(out)
    shutil.rmtree(retired, ignore_errors=True)
