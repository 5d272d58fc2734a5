"""The `ragq` commands for collections (docs/collections.md): collections, collection, upload,
add-text, rm-doc, drop. Same options and exit codes as the job commands (client/cli.py): an
ingest job that fails is 1, a refusal 3, an unreachable service 5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

import click

from client.cli import EXIT_BY_STATUS, EXIT_FAILED, with_client
from client.client import Client, Job


@click.command("collections")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@with_client
def collections_command(ragq: Client, as_json: bool) -> int:
    """List the collections you may read."""
    found = ragq.collections()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return 0
    for collection in found:
        version = collection.get("index_version") or "-"
        counts = ("" if collection.get("documents") is None
                  else f"  {collection['documents']} documents, {collection['chunks']} chunks")
        click.echo(f"{collection['name']:<24} {version}{counts}")
    return 0


@click.command("collection")
@click.argument("name")
@with_client
def collection_command(ragq: Client, name: str) -> int:
    """Show collection NAME: its version, counts and documents (JSON)."""
    click.echo(json.dumps(ragq.collection(name), indent=2))
    return 0


@click.command("upload")
@click.argument("name")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--no-wait", is_flag=True, help="Print the queued ingest job and return.")
@with_client
def upload_command(ragq: Client, name: str, files: tuple[Path, ...], no_wait: bool) -> int:
    """Add or replace FILES (.md, .txt, .pdf, .html) in collection NAME; follow the ingest job."""
    job = ragq.upload(name, [(path.name, path.read_bytes()) for path in files])
    return _follow(ragq, job, no_wait)


@click.command("add-text")
@click.argument("name")
@click.argument("title")
@click.argument("text_file", type=click.File("r", encoding="utf-8"))
@click.option("--no-wait", is_flag=True, help="Print the queued ingest job and return.")
@with_client
def add_text_command(ragq: Client, name: str, title: str, text_file: TextIO,
                     no_wait: bool) -> int:
    """Add or replace document TITLE in NAME with the text of TEXT_FILE (`-`: stdin)."""
    return _follow(ragq, ragq.add_text(name, title, text_file.read()), no_wait)


@click.command("rm-doc")
@click.argument("name")
@click.argument("document_id")
@click.option("--no-wait", is_flag=True, help="Print the queued ingest job and return.")
@with_client
def rm_doc_command(ragq: Client, name: str, document_id: str, no_wait: bool) -> int:
    """Remove document DOCUMENT_ID from collection NAME (a new version without it)."""
    return _follow(ragq, ragq.delete_document(name, document_id), no_wait)


@click.command("drop")
@click.argument("name")
@click.option("--no-wait", is_flag=True, help="Print the queued ingest job and return.")
@with_client
def drop_command(ragq: Client, name: str, no_wait: bool) -> int:
    """Delete collection NAME and its documents."""
    return _follow(ragq, ragq.delete_collection(name), no_wait)


def _follow(ragq: Client, job: Job, no_wait: bool) -> int:
    """Print the ingest job's progress on stderr, then each document's outcome."""
    click.echo(f"ingest job {job['id']} ({job['collection']}: {job['action']})", err=True)
    if no_wait:
        click.echo(json.dumps(job, indent=2))
        return 0
    for event in ragq.ingest_stream(job["id"]):
        if event["type"] == "progress":
            click.echo(f"  {event['stage']} {event['done']}/{event['total']}", err=True)
        elif event["type"] == "status" and event.get("redelivered"):
            click.echo(f"  [the ingest worker was lost; attempt {event['attempt']}]", err=True)
    final = ragq.ingest_job(job["id"])
    result = final.get("result") or {}
    for document in result.get("documents", []):
        problem = document.get("problem", {}).get("detail", "")
        click.echo(f"{document['status']:<10} {document.get('name') or document['id']}"
                   + (f": {problem}" if problem else ""))
    if final["status"] != "succeeded":
        click.echo(f"ragq: ingest job failed: {(final.get('error') or {}).get('message', '')}",
                   err=True)
        return EXIT_FAILED
    click.echo(f"{result.get('collection')}: index_version {result.get('index_version')}")
    return EXIT_BY_STATUS["succeeded"]


COMMANDS = [collections_command, collection_command, upload_command, add_text_command,
            rm_doc_command, drop_command]
