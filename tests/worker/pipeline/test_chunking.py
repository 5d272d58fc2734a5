from pathlib import Path

import pytest

from worker.pipeline.chunking import (
    chunk_document,
    chunk_documents,
    chunk_id,
    sentences,
    token_windows,
)
from worker.pipeline.index import dense_texts, indexed_text
from worker.pipeline.ingest import Document, markdown_sections

from .helpers import WhitespaceTokenizer

TEXT = " ".join(f"w{i}" for i in range(10))


def test_windows_overlap_and_cover_every_token() -> None:
    assert token_windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert token_windows(3, 4, 1) == [(0, 3)]


def test_overlap_must_be_below_size() -> None:
    with pytest.raises(ValueError, match="overlap 4 must be smaller than size 4"):
        token_windows(10, 4, 4)


def test_chunks_share_overlap_tokens_and_keep_the_title() -> None:
    chunks = chunk_document(Document("a.md#0", "Page › Section", TEXT), WhitespaceTokenizer(), 4, 1)
    assert [c.text for c in chunks] == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert {c.title for c in chunks} == {"Page › Section"}
    assert [c.position for c in chunks] == [0, 1, 2]


def test_chunk_ids_are_stable_and_distinct() -> None:
    doc = Document("a.md#0", "T", TEXT)
    first = [c.chunk_id for c in chunk_document(doc, WhitespaceTokenizer(), 4, 1)]
    again = [c.chunk_id for c in chunk_document(doc, WhitespaceTokenizer(), 4, 1)]
    assert first == again
    assert len(set(first)) == 3
    assert first[0] == chunk_id("a.md#0", 0, "w0 w1 w2 w3")
    moved = chunk_document(Document("b.md#0", "T", TEXT), WhitespaceTokenizer(), 4, 1)
    assert moved[0].chunk_id != first[0]


def test_markdown_sections_take_page_and_heading_titles() -> None:
    raw = "# Guide\n\nIntro text.\n\n## Install\n\nRun make.\n\n## Empty\n\n### Deep\nMore.\n"
    docs = markdown_sections("guide.md", raw)
    assert [(d.title, d.text) for d in docs] == [
        ("Guide", "Intro text."),
        ("Guide › Install", "Run make."),
        ("Guide › Deep", "More."),
    ]
    assert len({d.source for d in docs}) == 3
    assert [d.heading for d in docs] == ["", "Install", "Deep"]


def test_a_comment_in_a_code_block_is_no_heading() -> None:
    raw = "# Guide\n\n## Run\n\n```sh\n# start it\nmake run\n```\n\n~~~\n# not this\n~~~\nDone.\n"
    docs = markdown_sections("guide.md", raw)
    assert [d.title for d in docs] == ["Guide › Run"]
    assert "# start it\nmake run" in docs[0].text and "# not this" in docs[0].text


def test_only_a_section_heading_joins_the_indexed_text() -> None:
    chunks = chunk_documents(
        markdown_sections("g.md", "# Guide\n\nIntro.\n\n## Install\n\nRun make.\n"),
        WhitespaceTokenizer(),
        8,
        2,
    )
    assert [indexed_text(c, with_heading=True) for c in chunks] == ["Intro.", "Install\nRun make."]
    assert [indexed_text(c, with_heading=False) for c in chunks] == ["Intro.", "Run make."]


def test_untitled_markdown_is_named_after_its_file(tmp_path: Path) -> None:
    docs = markdown_sections("notes/setup.md", "Just text.")
    chunks = chunk_documents(docs, WhitespaceTokenizer(), 8, 2)
    assert [(c.title, c.text) for c in chunks] == [("setup", "Just text.")]


def test_sentences_split_at_ends_and_blank_lines_only() -> None:
    text = 'cut off start. In 911 the Normans came! Why? "Quoted" one.\n\n- a\n- b\n\ne.g. lower'
    assert sentences(text) == [
        "cut off start.",
        "In 911 the Normans came!",
        "Why?",
        '"Quoted" one.',
        "- a\n- b",
        "e.g. lower",
    ]
    assert sentences("  ") == []


def test_dense_texts_add_each_sentence_with_the_heading() -> None:
    [chunk] = chunk_documents(
        markdown_sections("g.md", "# Guide\n\n## Install\n\nRun make. Then run ragq.\n"),
        WhitespaceTokenizer(),
        16,
        2,
    )
    assert dense_texts(chunk, with_heading=True, with_sentences=True) == [
        "Install\nRun make. Then run ragq.",
        "Install\nRun make.",
        "Install\nThen run ragq.",
    ]
    assert dense_texts(chunk, with_heading=False, with_sentences=True)[1] == "Run make."
    assert dense_texts(chunk, with_heading=True, with_sentences=False) == [
        "Install\nRun make. Then run ragq."
    ]


def test_a_one_sentence_chunk_is_embedded_once() -> None:
    [chunk] = chunk_documents(markdown_sections("n.md", "Just one."), WhitespaceTokenizer(), 8, 2)
    assert dense_texts(chunk, with_heading=True, with_sentences=True) == ["Just one."]
