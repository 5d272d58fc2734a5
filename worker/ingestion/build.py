"""An incremental build: a collection's next index version from its current one and a change.

Only new and changed documents are chunked and embedded. The chunks, vectors and BM25 terms of
the documents that stay are copied from the current version, so a version costs what changed,
not what the collection holds. When the chunking or index settings, or the embedding model,
differ from those the current version was built with, its vectors would not match: every
document is chunked and embedded again from the text kept in documents.jsonl.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.embedding import Embedder
from shared.settings import PipelineSettings
from worker.pipeline.chunking import Chunk, chunk_document
from worker.pipeline.dense import DenseIndex
from worker.pipeline.index import (
    MANIFEST,
    CorpusIndex,
    dense_texts,
    embed,
    indexed_text,
    manifest_for,
    write_index,
)
from worker.pipeline.ingest import Document
from worker.pipeline.sparse import SparseIndex, terms

DOCUMENTS = "documents.jsonl"
Report = Callable[[int, int], None]


@dataclass
class StoredDocument:
    """A document of a collection: what was uploaded, its parsed sections and its chunks."""

    id: str
    name: str
    sha256: str
    bytes: int
    media_type: str
    sections: list[Document]
    added_at: float = field(default_factory=time.time)
    chunk_ids: list[str] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        """What the API shows of it (its text stays on disk)."""
        return {"id": self.id, "name": self.name, "sha256": self.sha256, "bytes": self.bytes,
                "media_type": self.media_type, "chunks": len(self.chunk_ids),
                "added_at": self.added_at}

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "sections": [asdict(s) for s in self.sections]},
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> StoredDocument:
        raw = json.loads(line)
        raw["sections"] = [Document(**section) for section in raw["sections"]]
        return cls(**raw)


def load_documents(folder: Path | None) -> dict[str, StoredDocument]:
    """The documents of the version in `folder`, by id (none for no folder)."""
    if folder is None:
        return {}
    lines = (folder / DOCUMENTS).read_text(encoding="utf-8").splitlines()
    documents = (StoredDocument.from_json(line) for line in lines if line)
    return {document.id: document for document in documents}


@dataclass
class Built:
    """A version written to its staging folder, not yet published."""

    folder: Path
    manifest: dict[str, Any]
    documents: list[StoredDocument]
    chunks_embedded: int


class VersionBuilder:
    """Builds a collection's next version with one embedder and the pipeline's settings."""

    def __init__(self, settings: PipelineSettings, embedder: Embedder) -> None:
        self.settings = settings
        self.embedder = embedder

    def build(self, previous: Path | None, kept: list[StoredDocument],
              fresh: list[StoredDocument], staging: Path, report: Report) -> Built:
        """Write into `staging` the version holding `kept` (from `previous`) and `fresh`."""
        started = time.perf_counter()
        old = CorpusIndex.load(previous) if previous is not None else None
        if old is None or not self._reusable(old):
            kept, fresh = [], [*kept, *fresh]
        chunks, vectors, owners, corpus_terms = self._kept_rows(old, kept)
        new_chunks = self._chunk(fresh)
        new_vectors, new_owners = self._embed(new_chunks, len(chunks), report)
        new_terms = [terms(indexed_text(c, self.settings.index_headings),
                           self.settings.sparse_stemming) for c in new_chunks]
        chunks += new_chunks
        dense = DenseIndex.build(np.concatenate([vectors, new_vectors]), owners + new_owners,
                                 self.settings.index_type)
        sparse = SparseIndex(corpus_terms + new_terms, self.settings.sparse_stemming)
        documents = sorted([*kept, *fresh], key=lambda d: d.name)
        manifest = manifest_for(self.settings, self.embedder, chunks, len(documents))
        manifest["vector_count"] = dense.size
        manifest["build_seconds"] = round(time.perf_counter() - started, 3)
        write_index(staging, chunks, dense, sparse)
        (staging / DOCUMENTS).write_text(
            "".join(document.to_json() + "\n" for document in documents), encoding="utf-8")
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return Built(staging, manifest, documents, len(new_chunks))

    def _reusable(self, old: CorpusIndex) -> bool:
        """Whether `old`'s chunks and vectors are what this build would make of them."""
        used = manifest_for(self.settings, self.embedder, [], 0)["settings"]
        return bool(old.manifest.get("settings") == used
                    and old.manifest.get("embedding_model") == self.embedder.model_id)

    def _kept_rows(self, old: CorpusIndex | None, kept: list[StoredDocument]
                   ) -> tuple[list[Chunk], np.ndarray, list[int], list[list[str]]]:
        """The chunks, vectors (with owners renumbered) and terms of `kept` in `old`."""
        empty = np.zeros((0, self.embedder.dim), dtype=np.float32)
        if old is None or not kept:
            return [], empty, [], []
        wanted = {chunk_id for document in kept for chunk_id in document.chunk_ids}
        rows = [row for row, chunk in enumerate(old.chunks) if chunk.chunk_id in wanted]
        renumbered = {old_row: new_row for new_row, old_row in enumerate(rows)}
        all_vectors, all_owners = old.dense.rows()
        keep = [i for i, owner in enumerate(all_owners) if owner in renumbered]
        return ([old.chunks[row] for row in rows], all_vectors[keep],
                [renumbered[all_owners[i]] for i in keep],
                [old.sparse.corpus_terms[row] for row in rows])

    def _chunk(self, documents: list[StoredDocument]) -> list[Chunk]:
        """Every document's chunks, recording each document's chunk ids on it."""
        chunks: list[Chunk] = []
        for document in documents:
            mine = [chunk for section in document.sections
                    for chunk in chunk_document(section, self.embedder.tokenizer,
                                                self.settings.chunk_tokens,
                                                self.settings.chunk_overlap)]
            document.chunk_ids = [chunk.chunk_id for chunk in mine]
            chunks += mine
        return chunks

    def _embed(self, chunks: list[Chunk], first_row: int, report: Report
               ) -> tuple[np.ndarray, list[int]]:
        """The new chunks' vectors and owners; `report(n, N)` counts chunks embedded."""
        per_chunk = [dense_texts(c, self.settings.index_headings, self.settings.index_sentences)
                     for c in chunks]
        owners = [first_row + row for row, texts in enumerate(per_chunk) for _ in texts]
        ends = np.cumsum([len(texts) for texts in per_chunk])

        def chunks_done(texts_done: int, _: int) -> None:
            report(int(np.searchsorted(ends, texts_done, side="right")), len(chunks))

        vectors = embed(self.embedder, [t for texts in per_chunk for t in texts], False,
                        chunks_done)
        return vectors, owners
