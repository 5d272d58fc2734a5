"""Token-aware chunking with overlap; chunk ids are stable hashes of source, position and text."""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from worker.pipeline.ingest import Document

# A sentence ends at . ! or ? before what looks like the next one's start; a blank line ends
# a Markdown paragraph or list item that has no full stop.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n\s*\n")
_LINE_END = re.compile(r"\n\s*")


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
    return aligned_windows(n_tokens, size, overlap, ())


def boundary_tokens(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Indexes of the tokens that open a line or a sentence of `text` (never the first token)."""
    starts = {match.end() for match in _SENTENCE_END.finditer(text)}
    starts.update(match.end() for match in _LINE_END.finditer(text))
    token_starts = [start for start, _ in offsets]
    found = {bisect_left(token_starts, at) for at in starts}
    return sorted(i for i in found if 0 < i < len(offsets))


def aligned_windows(
    n_tokens: int, size: int, overlap: int, boundaries: Sequence[int]
) -> list[tuple[int, int]]:
    """[start, end) windows of at most `size` tokens whose edges fall on `boundaries` (token
    indexes where a line or sentence starts) where one lies in reach, so that a sentence or a
    table row is not split between two chunks.

    A window ends at the last boundary that keeps it at least half full, else after `size`
    tokens (a sentence longer than that is cut). The next one starts at the boundary nearest
    to `overlap` tokens before that end, sharing whole sentences (at most twice `overlap`
    tokens, or none), else exactly `overlap` tokens before it.
    """
    if overlap >= size:
        raise ValueError(f"overlap {overlap} must be smaller than size {size}")
    edges = sorted(set(boundaries))
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + size, n_tokens)
        if end == n_tokens:
            windows.append((start, end))
            return windows
        cut = max((b for b in edges if start + size // 2 <= b <= end), default=end)
        windows.append((start, cut))
        reach = [b for b in edges if max(start, cut - 2 * overlap) < b <= cut]
        start = min(reach, key=lambda b: (abs(b - (cut - overlap)), -b), default=cut - overlap)
        start = max(start, windows[-1][0] + 1)


def chunk_document(
    document: Document, tokenizer: OffsetTokenizer, size: int, overlap: int
) -> list[Chunk]:
    """Split `document` into windows of at most `size` tokens, cut on the original text at line
    and sentence starts where one is in reach (aligned_windows)."""
    # verbose=False: documents longer than the model's input are expected here, that is why we cut.
    encoded = tokenizer(
        document.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    offsets = encoded["offset_mapping"]
    if not offsets:
        return []
    chunks = []
    windows = aligned_windows(
        len(offsets), size, overlap, boundary_tokens(document.text, offsets)
    )
    for position, (start, end) in enumerate(windows):
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
