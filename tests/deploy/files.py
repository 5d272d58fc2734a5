"""Deployment files the tests read (compose, Prometheus, Grafana) and the tools that judge them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus" / "prometheus.yml"
ALERT_RULES = COMPOSE_DIR / "prometheus" / "alerts.yml"
DASHBOARD = COMPOSE_DIR / "grafana" / "dashboards" / "ragq.json"

# ${NAME}, ${NAME:-default}, ${NAME:?message}; `$$` is a literal dollar for the container's shell.
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::(?P<op>[-?])(?P<arg>[^}]*))?\}")


def tool(name: str, install_hint: str) -> str:
    """The path of a command-line tool (the venv's first), or skip the test naming how to get it."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not found: {install_hint}")
    return found


def env_example() -> dict[str, str]:
    """The variables compose/.env.example sets."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def referenced_variables(text: str) -> set[str]:
    """The names a compose text interpolates from the environment or .env."""
    return {match["name"] for match in _VARIABLE.finditer(text.replace("$$", ""))}


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's interpolation of `text` with `values` (unset `:?` variables raise KeyError)."""

    def substitute(match: re.Match[str]) -> str:
        name, op = match["name"], match["op"]
        if name in values:
            return values[name]
        if op == "-":
            return str(match["arg"])
        raise KeyError(name)

    escaped = text.replace("$$", "\0")
    return _VARIABLE.sub(substitute, escaped).replace("\0", "$")


def load_compose(values: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as compose sees it, interpolated with `values` (default: .env.example)."""
    text = interpolate(COMPOSE_FILE.read_text(), env_example() if values is None else values)
    return dict(yaml.safe_load(text))


PROMTOOL_HINT = "apt-get install prometheus (make install does it when run as root)"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run Prometheus's own checker."""
    return subprocess.run([tool("promtool", PROMTOOL_HINT), *args],
                          capture_output=True, text=True, timeout=120)


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression of the dashboard, keyed `panel title / refId`."""
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return {f"{panel['title']} / {target['refId']}": target["expr"]
            for panel in panels for target in panel["targets"]}


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of compose/prometheus/alerts.yml."""
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]
