"""Schemathesis against the app's own /openapi.json, with auth off and on: generated requests,
valid and invalid, to every documented operation. Zero 5xx (but /query's documented 504:
no worker runs here), and every response conforms to the document (status code, content type,
headers, body schema).

Bounded for CI: FUZZ_EXAMPLES examples per operation and mode, derandomized, so the run is
the same each time (a few hundred requests per auth mode). The app runs in-process (WSGI) on
real redis-servers, without a worker (only its heartbeat), so jobs stay queued; the per-key
rate and queue limits are lifted so that the examples reach the routes behind them.

    .venv/bin/pytest -p no:cacheprovider tests/fuzz
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.settings import load_settings
from shared.workers import write_heartbeat
from tests.support.servers import RedisServer
from web import resources
from web.app import create_app

pytestmark = pytest.mark.integration

FUZZ_EXAMPLES = 15
KEY = "fuzz-test-key"
HEARTBEAT = {"node": "fuzz-worker", "pid": 1, "pipeline_loaded": True,
             "device": {"device": "cpu", "cuda_available": False}}


@schemathesis.check
def no_server_error_but_a_late_answer(ctx: schemathesis.CheckContext,
                                      response: schemathesis.Response,
                                      case: schemathesis.Case) -> None:
    """No 5xx, except POST /query's documented 504 query-timeout: no worker runs here, so its
    job never finishes (API_QUERY_WAIT_SECONDS is cut to a fraction of a second)."""
    late = (response.status_code == 504 and case.path == "/query"
            and response.json().get("type") == "/problems/query-timeout")
    if response.status_code >= 500 and not late:
        raise AssertionError(f"{response.status_code}: {response.text[:500]}")


CHECKS = [no_server_error_but_a_late_answer, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@pytest.fixture(params=["auth-off", "auth-on"])
def auth(request: pytest.FixtureRequest) -> dict[str, str]:
    """The headers every call carries: none with auth off, a valid key with auth on."""
    return {} if request.param == "auth-off" else {"X-API-Key": KEY}


@pytest.fixture
def app(auth: dict[str, str], broker_redis: RedisServer,
        cache_redis: RedisServer) -> Iterator[Flask]:
    built = create_app(load_settings(
        broker={"url": broker_redis.url},
        cache={"redis_url": cache_redis.url},
        auth={"enabled": bool(auth), "api_keys": [KEY] if auth else [],
              "key_rate_per_second": 0, "key_max_queued": 0},
        api={"max_queue_depth": 100000, "query_wait_seconds": 0.1},
        log={"json_format": False, "level": "ERROR"},
    ))
    # a worker's heartbeat, so the health routes answer as with a worker online
    write_heartbeat(broker_redis.client(), HEARTBEAT, interval=3600)
    yield built
    built.extensions[resources.EXTENSION].close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_every_answer_is_documented_and_none_is_5xx(app: Flask, auth: dict[str, str],
                                                   mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    loaded = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in loaded), loaded  # the document is valid
    operations = [result.ok() for result in loaded if isinstance(result, Ok)]
    assert len(operations) >= 10
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=auth, checks=CHECKS)

        try:
            call()
        except Unsatisfiable:  # no input to get wrong (e.g. GET /health): nothing to send
            assert mode is GenerationMode.NEGATIVE
        except (AssertionError, FailureGroup) as failure:  # one failed check, or several
            failures.append(f"{operation.label}: {str(failure)[:1500]}")
    assert not failures, "\n\n".join(failures)
