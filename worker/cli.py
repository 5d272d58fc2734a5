"""The `ragq` command: build an index, ask locally, evaluate, print the settings."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from client import cli as service
from client import collections_cli
from shared.errors import RagqError

if TYPE_CHECKING:  # the service commands start without the settings or the pipeline's modules
    from shared.settings import PipelineSettings
    from worker.pipeline.types import Answer


class _Group(click.Group):
    """Turns ragq's own errors into one line on stderr and a non-zero exit, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RagqError as error:
            click.echo(f"ragq: error: {error}", err=True)
            sys.exit(1)


def _quiet_model_loading() -> None:
    """Model loading progress bars would bury the answer; the CLI's own output is the point."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _pipeline_settings(**overrides: Any) -> PipelineSettings:
    from shared.settings import load_settings

    settings = load_settings().pipeline
    return settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})


@click.group(cls=_Group)
def main() -> None:
    """ragq: retrieval-augmented question answering."""


@main.command("index")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Index folder [PIPELINE_INDEX_DIR].",
)
@click.option("--collection", default=None,
              help="Add SOURCES' .md/.txt/.pdf/.html files to this collection's next version "
                   "instead (COLLECTIONS_DIR; needs the broker, docs/collections.md).")
def index_command(sources: tuple[Path, ...], out: Path | None, collection: str | None) -> None:
    """Chunk, embed and index SOURCES (folders of .md/.txt, SQuAD .json files)."""
    from shared.embedding import Embedder
    from worker.pipeline.generator import resolve_device
    from worker.pipeline.index import build_index

    if collection is not None:
        if out is not None:
            raise click.UsageError("--out names an index folder; a collection has its own")
        _index_collection(list(sources), collection)
        return
    settings = _pipeline_settings()
    _quiet_model_loading()
    target = out or settings.index_dir
    embedder = Embedder(settings.embedding_model, resolve_device(settings.device))
    manifest = build_index(list(sources), target, settings, embedder)
    click.echo(
        f"indexed {manifest['chunk_count']} chunks from {manifest['document_count']} documents "
        f"into {target} (index_version {manifest['index_version']})"
    )


def _index_collection(sources: list[Path], name: str) -> None:
    from shared.collections import valid_name
    from shared.settings import load_settings
    from worker.ingestion.offline import index_collection
    from worker.pipeline.generator import resolve_device

    if not valid_name(name):
        raise click.UsageError(f"{name!r} is no collection name: a-z, 0-9, - and _, up to 63")
    settings = load_settings()
    _quiet_model_loading()

    def progress(stage: str, done: int, total: int) -> None:
        click.echo(f"\r{stage} {done}/{total}", nl=False, err=True)

    result = index_collection(sources, name, settings, resolve_device(settings.pipeline.device),
                              progress)
    click.echo("", err=True)
    for document in result["documents"]:
        problem = document.get("problem", {}).get("detail", "")
        click.echo(f"{document['status']:<10} {document['name']}"
                   + (f": {problem}" if problem else ""))
    click.echo(f"collection {name}: index_version {result['index_version']} "
               f"({result['chunks_embedded']} chunks embedded)")


@main.command("ask")
@click.argument("question")
@click.option("--local", is_flag=True,
              help="Run the pipeline in this process instead of asking the service.")
@click.option(
    "--top-k",
    type=click.IntRange(1, 20),
    default=None,
    help="Passages given to the generator [PIPELINE_TOP_K].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the finished job as JSON.")
@click.option("--collection", default=None,
              help="Ask about this collection (docs/collections.md) instead of `default`.")
@service.service_options
def ask_command(question: str, local: bool, top_k: int | None, as_json: bool,
                collection: str | None, url: str, api_key: str | None) -> None:
    """Answer QUESTION, printing tokens as they arrive, then the numbered sources.

    It asks the service at --url (see `ragq jobs --help` for the exit codes); Ctrl-C cancels
    the job. With --local the pipeline runs in this process instead."""
    if not local:
        sys.exit(service.call_service(
            url, api_key, lambda ragq: service.ask(ragq, question, top_k, as_json, collection)))
    if as_json:
        raise click.UsageError("--json prints a job of the service; --local makes none")
    if collection:
        raise click.UsageError("--collection asks the service; --local answers from "
                               "PIPELINE_INDEX_DIR")
    _ask_locally(question, top_k)


def _ask_locally(question: str, top_k: int | None) -> None:
    from worker.pipeline import load_pipeline
    from worker.pipeline.types import Answer, TokenItem

    settings = _pipeline_settings()
    _quiet_model_loading()
    pipeline = load_pipeline(settings)
    for item in pipeline.stream(question, top_k or settings.top_k):
        if isinstance(item, TokenItem):
            click.echo(item.text, nl=False)
        elif isinstance(item, Answer):
            _print_sources(item)


def _print_sources(answer: Answer) -> None:
    """The numbered sources, those the answer cites marked, and why an answer ended early."""
    from shared.jobs import FinishReason

    if answer.finish_reason != FinishReason.STOP:
        click.echo(f"\n[answer ended: {answer.finish_reason}]", nl=False)
    click.echo("\n\nSources (* cited):")
    for number, source in enumerate(answer.sources, start=1):
        mark = "*" if source.cited else " "
        click.echo(
            f"{mark}[{number}] {source.title} ({source.chunk_id}, score {source.score:.4f})"
        )


@main.command("eval")
@click.option(
    "--squad",
    type=click.Path(path_type=Path),
    default=None,
    help="SQuAD-format JSON: retrieval metrics over a temporary index of its paragraphs.",
)
@click.option(
    "--qa",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON lines of {question, facts}: answers from the index [PIPELINE_INDEX_DIR] "
    "checked for the facts.",
)
@click.option(
    "--answers",
    type=int,
    default=0,
    help="With --squad: also generate answers for the first N answerable questions.",
)
def eval_command(squad: Path | None, qa: Path | None, answers: int) -> None:
    """Evaluate on a SQuAD file (--squad) or a question set (--qa); print one JSON object."""
    if (squad is None) == (qa is None):
        raise click.UsageError("give exactly one of --squad FILE and --qa FILE")
    if qa is not None and answers:
        raise click.UsageError("--answers goes with --squad; --qa answers every question")
    settings = _pipeline_settings()
    _quiet_model_loading()
    if qa is not None:
        from worker.pipeline.evaluation import run_qa_eval

        report = run_qa_eval(qa, settings)
    else:
        assert squad is not None
        report = _squad_eval(squad, settings, answers)
    click.echo(json.dumps(report, indent=2))


def _squad_eval(squad: Path, settings: PipelineSettings, answers: int) -> dict[str, Any]:
    """Index SQUAD's paragraphs in a temporary index; retrieval (and answer) metrics."""
    from worker.pipeline.evaluation import run_eval

    with tempfile.TemporaryDirectory(prefix="ragq-eval-") as folder:
        return run_eval(
            squad, settings.model_copy(update={"index_dir": Path(folder) / "index"}), answers
        )


@main.command("settings")
def settings_command() -> None:
    """Print every setting, its default and meaning (markdown)."""
    from shared.settings import settings_table

    click.echo(settings_table())


for _command in [*service.COMMANDS, *collections_cli.COMMANDS]:
    main.add_command(_command)
