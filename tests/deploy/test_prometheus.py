"""compose/prometheus: promtool accepts the config and rules; the alerts fire when they should."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.files import ALERT_RULES, PROMETHEUS_CONFIG, alert_rules, promtool

ALERT_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yml"
REQUIRED_ALERTS = {
    "RagqNoWorkerOnline", "RagqQueueDepthHigh", "RagqP95LatencyHigh",
    "RagqErrorRateHigh", "RagqBreakerOpen", "RagqCacheRedisDown", "RagqBrokerMemoryHigh",
}


def test_promtool_accepts_the_config() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(ALERT_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_rules())} rules found" in result.stdout


def test_each_alert_fires_on_its_trouble_only() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_bad_expression(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    text = ALERT_RULES.read_text().replace("expr: ", "expr: sum(", 1)  # an unclosed parenthesis
    broken.write_text(text)
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_every_required_alert_exists_with_a_runbook() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"


def test_scrapes_web_worker_and_flower_with_auth() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"web", "worker", "flower"} <= set(jobs)
    assert jobs["web"]["static_configs"][0]["targets"] == ["web:8000"]
    assert jobs["worker"]["static_configs"][0]["targets"] == ["worker:9101"]
    assert jobs["flower"]["basic_auth"]["password_file"] == "/run/secrets/flower_password"
