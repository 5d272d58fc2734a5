"""A real Prometheus (Debian's package) on a free port, scraping the test's own processes.

Its configuration is compose/prometheus/prometheus.yml with the targets pointed at this
machine, a 1 s scrape and evaluation interval, and the real alert rules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.files import ALERT_RULES, PROMETHEUS_CONFIG
from tests.support.servers import free_port, terminate

INSTALL_HINT = "apt-get install prometheus (make install does it when run as root)"


class Prometheus:
    """`prometheus` scraping `targets` (job name -> host:port); `stop()` kills it."""

    def __init__(self, workdir: Path, targets: dict[str, str], flower_password: str = "") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip(f"prometheus not found: {INSTALL_HINT}")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.targets = targets
        self.flower_password = flower_password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(ALERT_RULES)]
        jobs = []
        for job in config["scrape_configs"]:
            if job["job_name"] not in self.targets:
                continue
            job["static_configs"] = [{"targets": [self.targets[job["job_name"]]]}]
            if "basic_auth" in job:
                secret = self.workdir / "flower_password"
                secret.write_text(self.flower_password)
                job["basic_auth"]["password_file"] = str(secret)
            jobs.append(job)
        config["scrape_configs"] = jobs
        return config

    def start(self, timeout: float = 30.0) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config()))
        log = (self.workdir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"prometheus not ready after {timeout}s")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>: the `data` of a success; AssertionError with the error otherwise."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{path} {params}: {error.read().decode()}") from error
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (or scalar, as a one-item list)."""
        data = self.api("query", query=expr)
        if data["resultType"] in {"scalar", "string"}:
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def wait_for(self, expr: str, expected: float, timeout: float = 90.0) -> float:
        """Poll `expr` until its single value equals `expected`; return the last value seen."""
        deadline = time.monotonic() + timeout
        value = float("nan")
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                value = float(result[0]["value"][1])
                if value == expected:
                    return value
            time.sleep(0.5)
        return value

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
