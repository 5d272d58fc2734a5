"""A collection's folder: its index versions side by side and the `current` link to one.

    <COLLECTIONS_DIR>/<name>/
        versions/<index_version>/   manifest.json, chunks.jsonl, dense.faiss, bm25.json,
                                    documents.jsonl (each document's parsed text), ...
        current -> versions/<index_version>
        .lock

A new version is written into a staging folder beside the others, renamed into versions/ once
complete, and published by replacing the `current` symlink with rename(2), which is atomic: a
reader resolves `current` to either the old complete version or the new complete one, never a
half-written folder. A builder holds the collection's lock (flock: released by the kernel when
its process dies), so two builds of one collection never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shared.collections import DEFAULT
from shared.errors import CollectionNotFound

CURRENT = "current"
VERSIONS = "versions"
LOCK = ".lock"


class CollectionFolder:
    """One collection's versions on disk."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.path = root / name

    @property
    def versions(self) -> Path:
        return self.path / VERSIONS

    def current(self) -> Path | None:
        """The folder of the version served now (None before the first publish)."""
        link = self.path / CURRENT
        if not link.is_symlink():
            return None
        return self.path / os.readlink(link)

    def current_version(self) -> str | None:
        folder = self.current()
        return folder.name if folder is not None else None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the collection's build lock (blocks while another process holds it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / LOCK).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def staging(self) -> Path:
        """A fresh folder to write a version into; removed unless published."""
        self.versions.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".building-", dir=self.versions))
        folder.chmod(0o755)
        return folder

    def publish(self, staging: Path, version: str, keep: int) -> Path:
        """Move `staging` to versions/<version> and point `current` at it, atomically."""
        target = self.versions / version
        if target.exists():  # the same content built before (an identical version): reuse it
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.rename(target)
        _fsync_dir(self.versions)
        link = self.path / f".{CURRENT}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(Path(VERSIONS) / version)
        os.replace(link, self.path / CURRENT)
        _fsync_dir(self.path)
        self.prune(keep)
        return target

    def prune(self, keep: int) -> None:
        """Remove all but the `keep` newest versions (the current one always stays) and any
        staging folder a dead builder left (the caller holds the lock: none is in progress)."""
        current = self.current()
        folders = sorted((p for p in self.versions.iterdir() if p.is_dir()),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        kept = 0
        for folder in folders:
            if folder.name.startswith(".building-"):
                shutil.rmtree(folder, ignore_errors=True)
            elif folder == current or kept < keep - 1:
                kept += folder != current
            else:
                shutil.rmtree(folder, ignore_errors=True)

    def remove(self) -> None:
        """Delete the collection's folder (its lock is held by the caller)."""
        shutil.rmtree(self.path, ignore_errors=True)


def folder_for(collections_dir: Path, index_dir: Path, name: str) -> Path:
    """The index folder that serves `name` now: PIPELINE_INDEX_DIR for `default`, else the
    collection's current version. CollectionNotFound when it has none."""
    if name == DEFAULT:
        return index_dir
    current = CollectionFolder(collections_dir, name).current()
    if current is None:
        raise CollectionNotFound(name)
    return current


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable before the next step relies on it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
