"""Token-aware chunking with overlap; chunk ids are stable hashes of source, position and text."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from worker.pipeline.ingest import Document

# A sentence ends at . ! or ? before what looks like the next one's start; a blank line ends
# a Markdown paragraph or list item that has no full stop.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n\s*\n")


class OffsetTokenizer(Protocol):
    """A fast tokenizer that reports each token's character offsets."""

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Chunk:
    """A window of one document's tokens, with the document's title and section heading."""

    chunk_id: str
    source: str
    title: str
    text: str
    position: int
    heading: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chunk_id(source: str, position: int, text: str) -> str:
    """Stable across runs and machines: the same source, window and text give the same id."""
    digest = hashlib.sha256(f"{source}\x00{position}\x00{text}".encode()).hexdigest()
    return digest[:16]


def sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, in order (a cut-off first or last one included)."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def token_windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of `size` that share `overlap` tokens with their neighbour."""
    if overlap >= size:
        raise ValueError(f"overlap {overlap} must be smaller than size {size}")
    step = size - overlap
    windows = [
        (start, min(start + size, n_tokens)) for start in range(0, max(n_tokens - overlap, 1), step)
    ]
    return windows or [(0, n_tokens)]


def chunk_document(
    document: Document, tokenizer: OffsetTokenizer, size: int, overlap: int
) -> list[Chunk]:
    """Split `document` into windows of at most `size` tokens, cut on the original text."""
    # verbose=False: documents longer than the model's input are expected here, that is why we cut.
    encoded = tokenizer(
        document.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    offsets = encoded["offset_mapping"]
    if not offsets:
        return []
    chunks = []
    for position, (start, end) in enumerate(token_windows(len(offsets), size, overlap)):
        text = document.text[offsets[start][0] : offsets[end - 1][1]].strip()
        chunks.append(
            Chunk(
                chunk_id=chunk_id(document.source, position, text),
                source=document.source,
                title=document.title,
                text=text,
                position=position,
                heading=document.heading,
            )
        )
    return chunks


def chunk_documents(
    documents: list[Document], tokenizer: OffsetTokenizer, size: int, overlap: int
) -> list[Chunk]:
    """Every document's chunks, in document order."""
    return [
        chunk
        for document in documents
        for chunk in chunk_document(document, tokenizer, size, overlap)
    ]
