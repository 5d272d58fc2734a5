"""The collections API: upload documents (an ingest job), list and delete them, and follow the
ingest job over the same WebSocket event protocol as a question's (docs/collections.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request, url_for
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict
from pydantic import BaseModel, Field, ValidationError, create_model
from werkzeug.exceptions import BadRequest, NotFound, UnsupportedMediaType

from shared.cache import Scope
from shared.collections import (
    DEFAULT,
    NAME_PATTERN,
    Access,
    CollectionRegistry,
    scoped_version,
)
from shared.errors import (
    BrokerUnavailable,
    CollectionNotFound,
    CollectionReadOnly,
    UnsupportedDocument,
    UploadTooLarge,
)
from shared.ingest_jobs import Action, IngestJobRecord, IngestJobs, Upload
from shared.tasks import send_ingest
from web import stream
from web.auth import PROBLEMS, SECURITY, authenticate, owner_of, websocket_owner
from web.problems import problem
from web.request_ids import current_request_id
from web.resources import resources, settings
from web.schemas import ProblemOut, record_fields

SUFFIXES = (".md", ".txt", ".pdf", ".html", ".htm")
MEDIA_TYPES = {".md": "text/markdown", ".txt": "text/plain", ".pdf": "application/pdf",
               ".html": "text/html", ".htm": "text/html"}

bp = APIBlueprint("collections", __name__, url_prefix="/v1", abp_tags=[Tag(name="collections")],
                  abp_security=SECURITY, abp_responses=PROBLEMS)
ws_bp = Blueprint("ingest_stream", __name__)


class CollectionPath(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="The collection's name.")


class DocumentPath(CollectionPath):
    doc_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="The document's id.")


class IngestJobPath(BaseModel):
    job_id: str


class CollectionOut(BaseModel):
    name: str
    index_version: str | None = Field(description="The version served now; null before one.")
    documents: int | None = Field(description="Documents (null for `default`).")
    chunks: int | None
    built_at: str | None
    published_at: float | None
    created_at: float | None


class DocumentOut(BaseModel):
    id: str = Field(description="Derived from the name: the same name replaces the document.")
    name: str
    sha256: str
    bytes: int
    media_type: str
    chunks: int
    added_at: float


class CollectionDetailOut(CollectionOut):
    document_list: list[DocumentOut] | None = Field(None, description="Absent for `default`.")


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class DocumentList(BaseModel):
    documents: list[DocumentOut]


class _IngestJobOutBase(BaseModel):
    """An ingest job as clients see it."""

    links: dict[str, str] = Field(description="self, stream.")


IngestJobOut = create_model("IngestJobOut", __base__=_IngestJobOutBase, **record_fields(
    IngestJobRecord, {
        "kind": "`ingest`.",
        "status": "queued, running, succeeded or failed.",
        "action": "add, remove or drop.",
        "documents": "The names uploaded, or the ids removed.",
        "result": "collection, index_version, previous_version, changed, chunks_embedded, "
                  "documents: each one's name, id, status and problem.",
    }))


WRITE_PROBLEMS: ResponseDict = {status: ProblemOut for status in (404, 409)}
UPLOAD_PROBLEMS: ResponseDict = {status: ProblemOut for status in (400, 404, 409, 413, 415)}


class TextDocument(BaseModel):
    title: str = Field(min_length=1, max_length=200, description="The document's name.")
    text: str = Field(min_length=1, description="Its text (Markdown or plain).")


@bp.before_request
def _authenticate() -> None:
    """Uploads may be larger than API_MAX_BODY_BYTES: COLLECTIONS_MAX_UPLOAD_BYTES applies."""
    request.max_content_length = settings().collections.max_upload_bytes
    authenticate()


def registry() -> CollectionRegistry:
    return CollectionRegistry(resources().redis)


def ingest_jobs() -> IngestJobs:
    return IngestJobs(resources().redis, settings().jobs)


def access() -> Access:
    """The caller, and whether its key is one of COLLECTIONS_READER_KEYS."""
    readers = {owner_of(key) for key in settings().collections.reader_keys}
    return Access(g.owner, reads_all=g.owner in readers)


def collection_scope(scope: Scope, name: str) -> Scope:
    """The cache and single-flight scope of a question about `name`: its current version's, so
    questions about different collections or versions never share an answer or a job.
    CollectionNotFound when the caller may not read it or no version of it is published yet."""
    found = registry().get(name, access())
    if not found["index_version"]:
        raise CollectionNotFound(f"{name} (no version of it is published yet)")
    return replace(scope, index_version=scoped_version(name, found["index_version"]))


def present(job: IngestJobRecord) -> dict[str, Any]:
    """An ingest job as the API shows it: the record plus its links."""
    scheme = "wss" if request.scheme == "https" else "ws"
    return {**job, "links": {
        "self": url_for("collections.get_ingest_job", job_id=job["id"]),
        "stream": url_for("ingest_stream.stream", job_id=job["id"], _external=True,
                          _scheme=scheme),
    }}


def _queued(collection: str, action: Action, names: list[str],
            uploads: list[Upload] | None = None) -> tuple[Response, int]:
    job = ingest_jobs().create(owner=g.owner, collection=collection, action=action,
                               documents=names, request_id=current_request_id(),
                               uploads=uploads)
    try:
        send_ingest(resources().celery, job["id"], current_request_id())
    except BrokerUnavailable:
        ingest_jobs().discard(job["id"])  # no task: it would stay queued for good
        raise
    response = jsonify(present(job))
    response.headers["Location"] = url_for("collections.get_ingest_job", job_id=job["id"])
    return response, 202


@bp.post("/collections/<name>/documents", responses={202: IngestJobOut, **UPLOAD_PROBLEMS})
def upload_documents(path: CollectionPath) -> tuple[Response, int]:
    """Add or replace documents: multipart files (.md, .txt, .pdf, .html) or JSON
    {title, text}. 202 with the ingest job that indexes them."""
    uploads = _uploads()
    registry().claim(path.name, g.owner)
    return _queued(path.name, Action.ADD, [u.name for u in uploads], uploads)


def _uploads() -> list[Upload]:
    """The request's documents; 415 for a type ragq does not read, 413 past the limits."""
    if request.is_json:
        return [_text_upload()]
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("send multipart/form-data files or application/json "
                                   "{title, text}")
    files = request.files.getlist("files") or list(request.files.values())
    if not files:
        raise BadRequest("no files: send them as multipart form fields named `files`")
    limit = settings().collections.max_documents
    if len(files) > limit:
        raise UploadTooLarge(f"{len(files)} files in one upload; at most {limit}")
    uploads = []
    for file in files:
        name = (file.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
        uploads.append(Upload(name, MEDIA_TYPES[_suffix(name)], file.read()))
    return uploads


def _text_upload() -> Upload:
    try:
        body = TextDocument.model_validate(request.get_json(silent=True))
    except ValidationError as error:
        fields = ", ".join(str(item["loc"][0]) for item in error.errors() if item["loc"])
        raise BadRequest(f"send JSON {{title, text}}; invalid: {fields or 'body'}") from error
    name = body.title if body.title.lower().endswith((".md", ".txt")) else f"{body.title}.txt"
    return Upload(name, MEDIA_TYPES[_suffix(name)], body.text.encode())


def _suffix(name: str) -> str:
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if not name or suffix not in SUFFIXES:
        raise UnsupportedDocument(f"{name or '(no file name)'}: unsupported type; send "
                                  f"{', '.join(SUFFIXES)} files")
    return suffix


@bp.get("/collections", responses={200: CollectionList})
def list_collections() -> Response:
    """The collections the caller may read, `default` first."""
    return jsonify({"collections": [_default(), *registry().visible(access())]})


def _default() -> dict[str, Any]:
    return {"name": DEFAULT, "index_version": resources().pipeline_info().get("index_version"),
            "documents": None, "chunks": None, "built_at": None, "published_at": None,
            "created_at": None}


@bp.get("/collections/<name>", responses={200: CollectionDetailOut})
def get_collection(path: CollectionPath) -> Response:
    """The collection: index_version, documents, chunks, built_at."""
    if path.name == DEFAULT:
        return jsonify(_default())
    found = registry().get(path.name, access())
    return jsonify({**found, "document_list": registry().documents(path.name)})


@bp.get("/collections/<name>/documents", responses={200: DocumentList, **WRITE_PROBLEMS})
def list_documents(path: CollectionPath) -> Response:
    """The documents of the collection's current version."""
    if path.name == DEFAULT:
        raise CollectionReadOnly("the default collection's documents are built by `ragq index`")
    registry().get(path.name, access())
    return jsonify({"documents": registry().documents(path.name)})


@bp.delete("/collections/<name>/documents/<doc_id>",
           responses={202: IngestJobOut, **WRITE_PROBLEMS})
def delete_document(path: DocumentPath) -> tuple[Response, int]:
    """Remove a document: 202 with the ingest job that builds a version without it."""
    registry().owned(path.name, g.owner)
    if not registry().has_document(path.name, path.doc_id):
        raise NotFound(f"no document {path.doc_id} in collection {path.name}")
    return _queued(path.name, Action.REMOVE, [path.doc_id])


@bp.delete("/collections/<name>", responses={202: IngestJobOut, **WRITE_PROBLEMS})
def delete_collection(path: CollectionPath) -> tuple[Response, int]:
    """Delete the collection: gone from the API at once; 202 with the job removing its files."""
    registry().owned(path.name, g.owner)
    registry().forget(path.name)
    return _queued(path.name, Action.DROP, [])


@bp.get("/ingest-jobs/<job_id>", responses={200: IngestJobOut})
def get_ingest_job(path: IngestJobPath) -> Response:
    """The ingest job, if it belongs to the caller (404 otherwise)."""
    return jsonify(present(ingest_jobs().get(path.job_id, owner=g.owner)))


@ws_bp.before_request
def _authorize_stream() -> None:
    g.owner = websocket_owner(settings().auth, resources().redis)
    job_id = str((request.view_args or {}).get("job_id", ""))
    ingest_jobs().get(job_id, owner=g.owner)
    g.after = stream.parse_after(request.args.get("after"))


# The question stream's handler relays this ingest job's events: the same protocol and codes.
stream.sock.route("/v1/ingest-jobs/<job_id>/stream", bp=ws_bp)(stream.stream)


def _collection_not_found(error: CollectionNotFound) -> Response:
    return problem(404, f"no collection {error}", slug="collection-not-found",
                   title="Collection not found")


def _read_only(error: CollectionReadOnly) -> Response:
    return problem(409, str(error), slug="collection-read-only", title="Collection is read-only")


def _unsupported(error: UnsupportedDocument) -> Response:
    return problem(415, str(error), slug="unsupported-document", title="Unsupported document")


def _too_large(error: UploadTooLarge) -> Response:
    return problem(413, str(error), slug="upload-too-large", title="Upload too large")


def init_app(app: Flask) -> None:
    """Register the routes and the problems of collections."""
    app.register_api(bp)  # type: ignore[attr-defined]
    app.register_blueprint(ws_bp)
    app.register_error_handler(CollectionNotFound, _collection_not_found)
    app.register_error_handler(CollectionReadOnly, _read_only)
    app.register_error_handler(UnsupportedDocument, _unsupported)
    app.register_error_handler(UploadTooLarge, _too_large)
