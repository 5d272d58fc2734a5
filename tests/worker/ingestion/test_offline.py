"""`ragq index SOURCES --collection NAME`: an offline bulk build into a collection, through the
same incremental path as an ingest job (real redis-server, real MiniLM)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.collections import Access, CollectionRegistry
from tests.support.servers import RedisServer
from worker.cli import main
from worker.ingestion.versions import CollectionFolder

pytestmark = pytest.mark.integration


def test_index_into_a_collection_then_again_with_one_file_changed(
        broker_redis: RedisServer, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "ops").mkdir(parents=True)
    (docs / "guide.md").write_text("# Guide\n\nThe broker listens on port 6390.\n")
    (docs / "ops" / "notes.txt").write_text("Flower listens on port 5555.")
    (docs / "skip.json").write_text("{}")
    env = {"BROKER_URL": broker_redis.url, "COLLECTIONS_DIR": str(tmp_path / "collections"),
           "LOG_JSON_FORMAT": "false"}
    runner = CliRunner()
    first = runner.invoke(main, ["index", str(docs), "--collection", "team"], env=env)
    assert first.exit_code == 0, first.output
    assert "added      guide.md" in first.output and "added      ops/notes.txt" in first.output
    registry = CollectionRegistry(broker_redis.client())
    record = registry.get("team", Access("anonymous"))
    folder = CollectionFolder(tmp_path / "collections", "team")
    assert record["index_version"] == folder.current_version() and record["documents"] == 2
    (docs / "ops" / "notes.txt").write_text("Flower listens on port 5556 now.")
    second = runner.invoke(main, ["index", str(docs), "--collection", "team"], env=env)
    assert second.exit_code == 0, second.output
    assert "unchanged  guide.md" in second.output and "replaced   ops/notes.txt" in second.output
    assert "(1 chunks embedded)" in second.output
    assert registry.version("team") != record["index_version"]


def test_a_bad_collection_name_is_a_usage_error(tmp_path: Path) -> None:
    done = CliRunner().invoke(main, ["index", str(tmp_path), "--collection", "Bad Name"])
    assert done.exit_code == 2 and "no collection name" in done.output
