"""The app as a whole through Flask's test client: its OpenAPI document and request counting."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from tests.web.conftest import AUTH


def test_openapi_documents_the_validated_models(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/batch",
                 "/query", "/v1/ws-tickets", "/health/ready", "/health/gpu", "/health/stats"):
        assert path in doc["paths"], path
    job_request = doc["components"]["schemas"]["JobRequest"]
    assert job_request["properties"]["query"]["minLength"] == 3
    assert job_request["properties"]["query"]["maxLength"] == 512
    assert job_request["additionalProperties"] is False
    assert doc["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
    assert doc["paths"]["/v1/jobs"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in doc["paths"]["/health/ready"]["get"]
    assert client.get("/docs/swagger").status_code == 200


def test_openapi_tells_the_live_limits_and_problem_types(make_app: Callable[..., Flask]) -> None:
    doc = make_app(api={"batch_max": 7}).test_client().get("/openapi.json").get_json()
    queries = doc["components"]["schemas"]["BatchRequest"]["properties"]["queries"]
    assert queries["maxItems"] == 7
    for path in ("/v1/jobs", "/v1/batch", "/query"):
        responses = doc["paths"][path]["post"]["responses"]
        assert {"400", "413", "415", "422"} <= set(responses), path
        assert set(responses["415"]["content"]) == {"application/problem+json"}
    ready = doc["paths"]["/health/ready"]["get"]["responses"]
    assert set(ready["503"]["content"]) == {"application/problem+json"}

def test_requests_are_counted_by_route_template(client: FlaskClient) -> None:
    client.get("/v1/jobs/some-id", headers=AUTH)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'endpoint="/v1/jobs/<job_id>"' in text
    assert "some-id" not in text


def test_docs_open_swagger_ui(make_app: Callable[..., Flask]) -> None:
    client = make_app(api={"batch_max": 7}).test_client()
    for path in ("/docs", "/docs/", "/docs/swagger", "/docs/swagger/"):
        page = client.get(path, follow_redirects=True)
        assert page.status_code == 200, path
        assert "swagger-ui-bundle.js" in page.get_data(as_text=True), path
    # the page reads openapi.json beside it: the same document as /openapi.json
    assert client.get("/docs/openapi.json").get_json() == client.get("/openapi.json").get_json()


def test_health_routes_document_the_codes_they_answer(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    codes = {path: set(paths[path]["get"]["responses"])
             for path in ("/health", "/health/ready", "/health/gpu", "/health/stats")}
    assert codes == {"/health": {"200"}, "/health/ready": {"200", "503"},
                     "/health/gpu": {"200", "503"}, "/health/stats": {"200", "503"}}
    assert "$ref" in str(paths["/health/stats"]["get"]["responses"]["200"])


def test_openapi_tells_the_websocket_route(client: FlaskClient) -> None:
    description = client.get("/openapi.json").get_json()["info"]["description"]
    assert "/v1/jobs/{job_id}/stream" in description
    assert "1013" in description
