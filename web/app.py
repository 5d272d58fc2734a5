"""The Flask application factory: the one place the front end is wired together.

    gunicorn -c web/gunicorn_conf.py 'web.app:create_app()'
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Flask, Response, jsonify, redirect
from flask_openapi3 import Info, OpenAPI, SecurityScheme

from shared.logs import configure_logging
from shared.settings import Settings, load_settings
from web import (
    bodies,
    collections,
    health,
    jobs,
    limits,
    observability,
    page,
    problems,
    query,
    request_ids,
    resources,
    stream,
    usage,
)
from web.auth import KEY_HEADER

API_VERSION = "1.0.0"
SECURITY_SCHEMES: dict[str, SecurityScheme | dict[str, Any]] = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": KEY_HEADER},
}


def create_app(settings: Settings | None = None) -> Flask:
    """Build the front end from `settings` (read from the environment when None)."""
    settings = settings or load_settings()
    configure_logging(settings.log, service="web")
    app = OpenAPI(
        __name__,
        info=Info(title="ragq", version=API_VERSION,
                  description="Retrieval-augmented question answering as jobs. See docs/api.md."
                  + stream.OPENAPI_DESCRIPTION),
        security_schemes=SECURITY_SCHEMES,
        doc_prefix="/docs",
        validation_error_callback=problems.from_validation_error,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    resources.init_app(app, settings)
    request_ids.init_app(app)
    limits.init_app(app)
    bodies.init_app(app, settings.api.max_body_bytes, settings.api.body_timeout_seconds)
    problems.init_app(app)
    observability.init_app(app)
    app.register_api(jobs.bp)
    app.register_api(query.bp)
    app.register_api(health.bp)
    app.register_api(usage.bp)
    app.register_blueprint(page.bp)
    collections.init_app(app)
    stream.init_app(app, settings.api.ws_ping_seconds)
    app.add_url_rule("/openapi.json", "openapi_json", lambda: _openapi(app, settings))
    _docs_open_swagger(app, settings)
    return app


def _docs_open_swagger(app: OpenAPI, settings: Settings) -> None:
    """Swagger UI at /docs/ (where /docs leads) instead of a page of UI tiles, reading the same
    document as /openapi.json. The page's links are relative, so it lives in /docs/ only:
    /docs/swagger/ leads back there."""
    app.view_functions["openapi.openapi"] = app.view_functions["swagger.swagger"]
    app.view_functions["openapi.doc_url"] = lambda: _openapi(app, settings)
    app.add_url_rule("/docs/swagger/", "swagger_slash", lambda: redirect("/docs/", code=308))


def _openapi(app: OpenAPI, settings: Settings) -> Response:
    """The generated document, told what only the settings and the error handlers know."""
    doc = copy.deepcopy(app.api_doc)
    queries = doc["components"]["schemas"]["BatchRequest"]["properties"]["queries"]
    queries["maxItems"] = settings.api.batch_max
    for operation in (op for path in doc["paths"].values() for op in path.values()):
        if "parameters" not in operation and "requestBody" not in operation:
            operation["responses"].pop("422", None)  # flask-openapi3 adds it to every route
        for response in operation.get("responses", {}).values():
            content = response.get("content", {})
            if _is_problem(content.get("application/json", {})):
                content[problems.PROBLEM_JSON] = content.pop("application/json")
    return jsonify(doc)


def _is_problem(media: dict[str, Any]) -> bool:
    return bool(media.get("schema", {}).get("$ref", "").endswith("/ProblemOut"))
