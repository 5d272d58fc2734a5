"""The `ragq` command: errors as one line, settings table, index/ask/eval end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.servers import free_port
from worker.cli import main

from .pipeline.helpers import write_squad
from .pipeline.tiny_models import tiny_cross_encoder


def test_settings_prints_the_markdown_table() -> None:
    result = CliRunner().invoke(main, ["settings"])
    assert result.exit_code == 0
    assert result.output.startswith("| variable | default | meaning |")
    assert "`PIPELINE_CHUNK_TOKENS`" in result.output and "`CB_LIMIT_EUR`" in result.output


def test_bad_setting_is_one_line_and_non_zero() -> None:
    result = CliRunner(env={"PIPELINE_TOP_K": "99"}).invoke(main, ["ask", "--local", "hi"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "PIPELINE_TOP_K" in result.output
    assert "Traceback" not in result.output


def test_ask_without_an_index_says_how_to_build_one(tmp_path: Path) -> None:
    result = CliRunner(env={"PIPELINE_INDEX_DIR": str(tmp_path / "none")}).invoke(
        main, ["ask", "--local", "hi"]
    )
    assert result.exit_code == 1
    assert "make index" in result.output and "Traceback" not in result.output


def test_ask_without_local_asks_the_service() -> None:
    result = CliRunner(env={"RAGQ_URL": f"http://127.0.0.1:{free_port()}"}).invoke(
        main, ["ask", "which port?"]
    )
    assert result.exit_code == 5 and "ragq: error: cannot reach" in result.output


def test_ask_local_makes_no_job_to_print() -> None:
    result = CliRunner().invoke(main, ["ask", "--local", "--json", "hi"])
    assert result.exit_code == 2 and "--local makes none" in result.output


@pytest.mark.parametrize("options", [[], ["--squad", "--qa"]])
def test_eval_needs_exactly_one_of_squad_and_qa(tmp_path: Path, options: list[str]) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "q", "facts": ["f"]}\n')
    args = [part for option in options for part in (option, str(qa))]
    result = CliRunner().invoke(main, ["eval", *args])
    assert result.exit_code == 2 and "exactly one of --squad FILE and --qa FILE" in result.output


def test_eval_qa_without_an_index_says_how_to_build_one(tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "Which port does Flower listen on?", "facts": ["5555"]}\n')
    result = CliRunner(env={"PIPELINE_INDEX_DIR": str(tmp_path / "none")}).invoke(
        main, ["eval", "--qa", str(qa)]
    )
    assert result.exit_code == 1
    assert "make index" in result.output and "Traceback" not in result.output


def test_eval_qa_prints_the_report(tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        '{"question": "Which token comes second?", "facts": ["tok1"]}\n'
        '{"question": "Which port does Flower listen on?", "facts": [["5555", "FLOWER_PORT"]]}\n'
    )
    # The fake pipeline answers "tok0 tok1 tok2" to anything: one question right, one wrong.
    env = {"PIPELINE_BACKEND": "fake", "PIPELINE_FAKE_TOKENS": "3",
           "PIPELINE_FAKE_TOKEN_DELAY": "0"}
    result = CliRunner(env=env).invoke(main, ["eval", "--qa", str(qa)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["file"] == str(qa) and report["model"] == "fake-model"
    assert report["questions"] == 2 and report["answered_with_facts"] == 0.5
    assert report["loops"] == 0 and sum(report["finish_reasons"].values()) == 2
    assert [r["answer"] for r in report["results"]] == ["tok0 tok1 tok2"] * 2
    assert report["results"][1]["facts_missing"] == [["5555", "FLOWER_PORT"]]


def test_eval_qa_names_a_bad_line(tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "q", "facts": ["f"]}\n{"question": "q"}\n')
    result = CliRunner(env={"PIPELINE_BACKEND": "fake"}).invoke(main, ["eval", "--qa", str(qa)])
    assert result.exit_code == 1 and "qa.jsonl:2: " in result.output


@pytest.mark.integration
def test_index_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "empty.txt").write_text("  \n")
    result = CliRunner().invoke(
        main, ["index", str(tmp_path / "docs"), "--out", str(tmp_path / "idx")]
    )
    assert result.exit_code == 1
    assert "empty.txt: file is empty" in result.output and not (tmp_path / "idx").exists()


@pytest.mark.integration
def test_index_then_ask_prints_tokens_then_sources(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "flower.md").write_text(
        "# Flower\n\nFlower, the Celery monitor, listens on port 5555.\n"
    )
    (docs / "redis.md").write_text("# Redis\n\nThe broker Redis never evicts keys.\n")
    env = {"PIPELINE_INDEX_DIR": str(tmp_path / "idx"), "PIPELINE_MAX_NEW_TOKENS": "12"}
    runner = CliRunner(env=env)
    built = runner.invoke(main, ["index", str(docs), "--out", str(tmp_path / "idx")])
    assert built.exit_code == 0 and "indexed 2 chunks" in built.output
    asked = runner.invoke(main, ["ask", "--local", "Which port does Flower use?", "--top-k", "2"])
    assert asked.exit_code == 0, asked.output
    answer, _, sources = asked.stdout.partition("Sources (* cited):")
    assert answer.strip()
    assert sources.splitlines()[1][1:].startswith("[1] Flower (")


@pytest.mark.integration
def test_eval_prints_one_json_object(tmp_path: Path) -> None:
    squad = write_squad(
        tmp_path / "s.json",
        [
            (
                "Paris",
                [
                    (
                        "Paris is the capital of France and home of the Eiffel Tower.",
                        [("What is the capital of France?", "Paris")],
                    )
                ],
            ),
            (
                "Volcanoes",
                [
                    (
                        "Volcanoes erupt lava, ash and gases from the mantle.",
                        [("What do volcanoes erupt?", "lava")],
                    )
                ],
            ),
            (
                "Chess",
                [
                    (
                        "Chess is a board game for two players with sixteen pieces each.",
                        [("How many pieces does each chess player have?", "sixteen")],
                    )
                ],
            ),
        ],
    )
    result = CliRunner().invoke(main, ["eval", "--squad", str(squad)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"dense", "sparse", "hybrid"} and "hybrid_rerank" not in report
    assert report["answerable_questions"] == 3 and report["paragraphs"] == 3
    assert report["hybrid"] == {"recall@1": 1.0, "recall@5": 1.0, "mrr@10": 1.0}

    reranker = tiny_cross_encoder(tmp_path / "ce")
    reranked = CliRunner(env={"PIPELINE_RERANKER": str(reranker)}).invoke(
        main, ["eval", "--squad", str(squad)]
    )
    assert reranked.exit_code == 0, reranked.output
    stage = json.loads(reranked.stdout)["hybrid_rerank"]
    assert set(stage) == {"recall@1", "recall@5", "mrr@10"} and stage["recall@5"] == 1.0


def test_the_service_commands_start_without_the_pipeline() -> None:
    heavy = ("torch", "transformers", "sentence_transformers", "faiss", "worker.pipeline")
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, worker.cli; "
         f"print([name for name in {heavy!r} if name in sys.modules])"],
        capture_output=True, text=True, check=True,
    )
    assert loaded.stdout.strip() == "[]"
