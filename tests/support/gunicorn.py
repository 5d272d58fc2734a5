"""A real gunicorn serving ragq's web app on a free port, for integration tests and benches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "web" / "gunicorn_conf.py"
LIVE_ATTEMPT_SECONDS = 5.0  # one /health attempt; a slow one is retried, not fatal


class GunicornServer:
    """`gunicorn -c web/gunicorn_conf.py 'web.app:create_app()'` with `env` on top of os.environ.

    Its log goes to `workdir/gunicorn.log`; `stop()` ends it and every worker it forked.
    """

    def __init__(self, workdir: Path, env: dict[str, str] | None = None,
                 workers: int = 1, connections: int = 200) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            **os.environ,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.port),
            "API_WORKERS": str(workers),
            "API_CONNECTIONS": str(connections),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gunicorn.log"

    def start(self, timeout: float = 30.0) -> GunicornServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(CONFIG), "web.app:create_app()"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_live(timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def wait_live(self, timeout: float) -> None:
        """Until /health answers 200; a worker still booting (seconds on a busy machine) only
        delays the answer, so a timed-out or refused attempt is retried until `timeout`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health",
                                            timeout=min(LIVE_ATTEMPT_SECONDS, left)) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        tail = self.log_path.read_text()[-2000:]
        raise TimeoutError(f"gunicorn not live after {timeout}s: {tail}")

    def worker_pids(self) -> list[int]:
        """The pids of gunicorn's worker processes (children of the arbiter)."""
        if self.process is None:
            return []
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)],
                               capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
