"""compose/grafana: the provisioned datasource and a dashboard whose every query is valid PromQL."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.deploy.files import COMPOSE_DIR, DASHBOARD, dashboard_queries, load_compose, promtool

DATASOURCES = COMPOSE_DIR / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = COMPOSE_DIR / "grafana" / "provisioning" / "dashboards" / "ragq.yml"
# Metric families the seed's eight panels and the job system's two must show.
REQUIRED_METRICS = {
    "rag_requests_total", "rag_query_latency_seconds_bucket", "rag_cache_hits_total",
    "rag_cache_misses_total", "rag_gpu_vram_used_gb", "rag_circuit_breaker_cumulative_cost_eur",
    "rag_errors_total", "rag_retrieval_seconds_bucket", "rag_generation_seconds_bucket",
    "rag_queue_depth", "rag_time_to_first_token_seconds_bucket",
    # collections (issue 13)
    "rag_ingest_documents_total", "rag_ingest_seconds_bucket", "rag_collection_chunks",
}


def test_has_the_required_panels() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 10
    text = " ".join(dashboard_queries().values())
    assert {metric for metric in REQUIRED_METRICS if metric in text} == REQUIRED_METRICS
    for quantile in ("0.5", "0.95", "0.99"):
        latency = f"histogram_quantile({quantile}, sum by (le) (rate(rag_query_latency_seconds"
        assert latency in text


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = [{"record": f"ragq:panel_{index}", "expr": expr}
             for index, expr in enumerate(dashboard_queries().values())]
    recording = tmp_path / "dashboard_rules.yml"
    recording.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(recording))
    assert result.returncode == 0, result.stdout + result.stderr


def test_panels_use_the_provisioned_datasource() -> None:
    source = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(target["datasource"]["uid"] == source["uid"] for target in panel["targets"])


def test_the_provider_path_is_where_compose_mounts_the_dashboards() -> None:
    path = yaml.safe_load(PROVIDERS.read_text())["providers"][0]["options"]["path"]
    mounts = load_compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
