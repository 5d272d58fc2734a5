"""Flower as `make run` and compose start it: `celery -A worker.celery_app flower`, configured
by FLOWER_PORT and FLOWER_BASIC_AUTH."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.celery import REPO_ROOT
from tests.support.servers import ExitedEarly, free_port, terminate, wait_for_port

USER, PASSWORD = "ops", "flower-test-secret"


class Flower:
    """`celery -A worker.celery_app flower`, configured by FLOWER_PORT and FLOWER_BASIC_AUTH."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = workdir / "flower.log"
        self.env = {**env, "FLOWER_PORT": str(self.port), "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, attempts: int = 3) -> Flower:
        """Start Flower; on a port taken between free_port() and its bind (an outgoing
        connection's ephemeral port can land there), again on another one."""
        for attempt in range(1, attempts + 1):
            with self.log_path.open("wb") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower"],
                    cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                )
            try:
                # a loaded machine: the stack beside it boots too
                wait_for_port(self.port, timeout=180, process=self.process)
                return self
            except ExitedEarly as error:
                output = self.log_path.read_text(errors="replace")
                if "Address already in use" not in output or attempt == attempts:
                    raise RuntimeError(f"flower {error}:\n{output[-2000:]}") from error
                self.port = free_port()
                self.env["FLOWER_PORT"] = str(self.port)
        raise AssertionError("unreachable")

    def get(self, path: str, credentials: tuple[str, str] | None = (USER, PASSWORD)
            ) -> tuple[int, Any]:
        """(status, body: JSON when it parses, else text)."""
        headers = {}
        if credentials is not None:
            token = base64.b64encode(":".join(credentials).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def stop(self) -> None:
        terminate(self.process)
