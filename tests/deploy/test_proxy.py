"""compose's reverse proxy (compose/nginx/ragq.conf): the only way in to the API, with the web
tier's limits and timeouts, WebSocket upgrades, and a configuration nginx accepts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from shared.settings import load_settings
from tests.deploy.files import COMPOSE_DIR, tool

CONFIG = COMPOSE_DIR / "nginx" / "ragq.conf"
DEFAULTS = load_settings().api
NGINX_HINT = "apt-get install nginx-light (Debian)"


def _directive(block: str, name: str) -> str:
    found = re.findall(rf"^\s*{name}\s+([^;]+);", block, re.MULTILINE)
    assert len(found) == 1, f"{name}: {found}"
    return found[0].strip()


def _seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def _location(pattern: str) -> str:
    text = CONFIG.read_text()
    start = text.index(f"location {pattern} {{")
    return text[start:text.index("}", start)]


def test_only_the_proxy_publishes_the_api(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["proxy"]["ports"] == ["8000:8000"]
    assert "ports" not in services["web"]
    assert services["proxy"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert "./nginx/ragq.conf:/etc/nginx/conf.d/default.conf:ro" in services["proxy"]["volumes"]


def test_the_proxy_bounds_each_client_in_place_of_the_web(compose: dict[str, Any]) -> None:
    text = CONFIG.read_text()
    assert "limit_conn_zone $binary_remote_addr zone=per_client" in text
    assert _directive(text, "limit_conn") == f"per_client {DEFAULTS.connections_per_client}"
    assert _directive(text, "limit_conn_status") == "429"
    assert compose["services"]["web"]["environment"]["API_CONNECTIONS_PER_CLIENT"] == "0"


def test_the_proxy_has_the_web_tiers_deadlines_and_sizes() -> None:
    text = CONFIG.read_text()
    assert _seconds(_directive(text, "client_header_timeout")) == DEFAULTS.header_timeout_seconds
    assert _seconds(_directive(text, "client_body_timeout")) == DEFAULTS.body_timeout_seconds
    assert _directive(text, "client_max_body_size") == f"{DEFAULTS.max_body_bytes // 1024}k"
    everything_else = _location("/")
    waits = max(DEFAULTS.query_wait_seconds, DEFAULTS.prefer_wait_max_seconds)
    assert _seconds(_directive(everything_else, "proxy_read_timeout")) > waits


def test_websockets_are_upgraded_and_outlive_the_ping_interval() -> None:
    stream = _location(r"~ ^/v1/jobs/[^/]+/stream$")
    assert _directive(stream, "proxy_set_header Upgrade") == "$http_upgrade"
    assert _directive(stream, "proxy_set_header Connection") == "$connection_upgrade"
    assert _directive(stream, "proxy_buffering") == "off"
    assert _seconds(_directive(stream, "proxy_read_timeout")) > 2 * DEFAULTS.ws_ping_seconds


def test_what_the_proxy_refuses_itself_is_a_problem() -> None:
    text = CONFIG.read_text()
    for status, location in (("408", "@slow"), ("413", "@too_large"), ("429", "@too_many")):
        assert f"error_page {status} = {location};" in text
        block = _location(location)
        assert "default_type application/problem+json;" in block
        assert f"return {status} '" in block and f'"status": {status}' in block


def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    """`nginx -t` on the file inside a minimal http {} block, with the compose service name
    `web` (unknown outside the compose network) pointed at this machine."""
    nginx = tool("nginx", NGINX_HINT)
    (tmp_path / "logs").mkdir()
    (tmp_path / "ragq.conf").write_text(CONFIG.read_text().replace("server web:8000",
                                                                    "server 127.0.0.1:8000"))
    (tmp_path / "nginx.conf").write_text(
        f"error_log {tmp_path}/logs/error.log;\npid {tmp_path}/nginx.pid;\n"
        "events {}\n"
        f"http {{\n    access_log off;\n    include {tmp_path}/ragq.conf;\n}}\n")
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr
