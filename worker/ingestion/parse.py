"""Uploaded files into documents: Markdown and text as `ragq index` reads them, PDF through
pypdf (one document per page, so a passage names its page), HTML through BeautifulSoup.

Each failure is a DocumentRejected naming the file: the upload's other files still go in.
"""

from __future__ import annotations

import io
import logging
from pathlib import PurePosixPath

from bs4 import BeautifulSoup
from pypdf import PdfReader
from pypdf.errors import PdfReadError

from shared.errors import DocumentRejected, UnsupportedDocument
from worker.pipeline.ingest import Document, markdown_sections

SUFFIXES = {".md": "text/markdown", ".txt": "text/plain", ".pdf": "application/pdf",
            ".html": "text/html", ".htm": "text/html"}
# what HTML holds besides its text: code, styles, navigation chrome
_HTML_NOISE = ("script", "style", "noscript", "template", "nav", "header", "footer")

# pypdf logs a warning per odd object in a damaged file; the file's outcome says what matters
logging.getLogger("pypdf").setLevel(logging.ERROR)


def suffix_of(name: str) -> str:
    """The file's suffix, lowercased; UnsupportedDocument when ragq does not read that type."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise UnsupportedDocument(
            f"{name}: unsupported type {suffix or '(no suffix)'!r}; send "
            f"{', '.join(sorted(SUFFIXES))}"
        )
    return suffix


def parse(name: str, data: bytes) -> list[Document]:
    """The documents of one uploaded file; DocumentRejected naming it when it holds no text."""
    suffix = suffix_of(name)
    if suffix == ".pdf":
        documents = _pdf(name, data)
    else:
        text = _decode(name, data)
        if suffix in (".html", ".htm"):
            text = _html_text(text)
        if suffix == ".md":
            documents = markdown_sections(name, text)
        else:
            stripped = text.strip()
            documents = [Document(name, _title(name, text), stripped)] if stripped else []
    if not documents:
        raise DocumentRejected(f"{name}: the document is empty (no text to index)")
    return documents


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DocumentRejected(
            f"{name}: not UTF-8 text (byte {error.start}); save it as UTF-8 and upload it again"
        ) from error


def _html_text(html: str) -> str:
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(_HTML_NOISE):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.title:
        soup.title.decompose()
    body = soup.get_text("\n", strip=True)
    return f"{title}\n{body}" if title else body


def _title(name: str, text: str) -> str:
    """An HTML page's <title> (its first line, as _html_text puts it) or the file's stem."""
    if PurePosixPath(name).suffix.lower() in (".html", ".htm"):
        first = text.strip().split("\n", 1)[0].strip()
        if first:
            return first[:200]
    return PurePosixPath(name).stem


def _pdf(name: str, data: bytes) -> list[Document]:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentRejected(f"{name}: the PDF is encrypted; upload it without a password")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = str(reader.metadata.title) if reader.metadata and reader.metadata.title else ""
    except DocumentRejected:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as error:
        raise DocumentRejected(f"{name}: not a readable PDF ({error})") from error
    title = title.strip() or PurePosixPath(name).stem
    return [Document(source=f"{name}#page={number}", title=f"{title} › page {number}",
                     text=text.strip())
            for number, text in enumerate(pages, start=1) if text.strip()]
