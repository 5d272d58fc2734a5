"""Reading sources into documents: folders of .md/.txt files and SQuAD-format JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import IngestError

TEXT_SUFFIXES = (".md", ".txt")
JSON_SUFFIX = ".json"
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Document:
    """One unit of text with its title; `source` names where it came from, stably."""

    source: str
    title: str
    text: str
    heading: str = ""  # the section's own heading (Markdown), empty for whole pages


def read_sources(paths: list[Path]) -> list[Document]:
    """Every document under `paths` (files or folders), in a stable order.

    Raises IngestError naming the file that is unreadable, malformed or empty.
    """
    documents: list[Document] = []
    for root in paths:
        if not root.exists():
            raise IngestError(f"{root}: no such file or folder")
        for path, name in _files(root):
            documents.extend(_read_file(path, name))
    if not documents:
        raise IngestError(f"no .md, .txt or SQuAD .json files under {', '.join(map(str, paths))}")
    return documents


def _files(root: Path) -> Iterator[tuple[Path, str]]:
    """Files to read with the name they carry in chunk ids (relative to the folder given)."""
    if root.is_file():
        yield root, root.name
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in (*TEXT_SUFFIXES, JSON_SUFFIX):
            yield path, path.relative_to(root).as_posix()


def _read_file(path: Path, name: str) -> list[Document]:
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise IngestError(f"{path}: cannot read: {error}") from error
    if not raw.strip():
        raise IngestError(f"{path}: file is empty")
    documents = _parse(path, name, raw)
    if not documents:
        raise IngestError(f"{path}: holds no text to index")
    return documents


def _parse(path: Path, name: str, raw: str) -> list[Document]:
    if path.suffix.lower() == JSON_SUFFIX:
        return _squad_documents(path, name, raw)
    if path.suffix.lower() == ".md":
        return markdown_sections(name, raw)
    return [Document(source=name, title=Path(name).stem, text=raw.strip())]


def markdown_sections(name: str, raw: str) -> list[Document]:
    """One document per heading section, titled `Page › Section` (the first H1 names the page)."""
    page_title: str | None = None
    sections: list[tuple[str, list[str]]] = [("", [])]
    fenced = False  # inside a ``` or ~~~ code block, where `# ...` is a shell comment
    for line in raw.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match is None:
            sections[-1][1].append(line)
        elif len(match.group(1)) == 1 and page_title is None:
            page_title = match.group(2)
        else:
            sections.append((match.group(2), []))
    page = page_title or Path(name).stem
    documents = []
    for position, (heading, lines) in enumerate(sections):
        text = "\n".join(lines).strip()
        if text:
            title = f"{page} › {heading}" if heading else page
            documents.append(
                Document(source=f"{name}#{position}", title=title, text=text, heading=heading)
            )
    return documents


def _squad_documents(path: Path, name: str, raw: str) -> list[Document]:
    try:
        articles = json.loads(raw)["data"]
        return [
            Document(
                source=squad_source(name, a_index, p_index),
                title=article["title"],
                text=paragraph["context"].strip(),
            )
            for a_index, article in enumerate(articles)
            for p_index, paragraph in enumerate(article["paragraphs"])
            if paragraph["context"].strip()
        ]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise IngestError(
            f"{path}: not SQuAD-format JSON ({type(error).__name__}: {error})"
        ) from error


def squad_source(name: str, article: int, paragraph: int) -> str:
    """The stable source name of a SQuAD paragraph (the evaluation's unit of relevance)."""
    return f"{name}#{article}/{paragraph}"


def load_squad(path: Path) -> dict[str, Any]:
    """The parsed SQuAD file; IngestError naming the file if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("data"), list):
            raise KeyError("data")
        return data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError) as error:
        raise IngestError(f"{path}: not a readable SQuAD-format JSON file ({error})") from error
