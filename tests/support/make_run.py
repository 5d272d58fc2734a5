"""`make run`'s stack (scripts/run.sh) as a test drives it: started on free ports with the fake
pipeline, its log in a file, stopped with Ctrl-C, and every process it started killed after.

    stack = MakeRun(tmp_path / "a").wait_ready()
    ...
    stack.interrupt(); stack.wait_stopped()
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.support.gunicorn import REPO
from tests.support.servers import free_port

READY_LINE = "ragq is ready at"
WAIT = 120.0


def stack_env(workdir: Path, **overrides: str) -> dict[str, str]:
    """A stack of its own: free ports, its own run folder, the fake pipeline, one web process."""
    return {
        **os.environ,
        "API_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "CACHE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PIPELINE_BACKEND": "fake",
        "PIPELINE_FAKE_TOKEN_DELAY": "0.01",
        "WORKER_METRICS_PORT": "0",
        "COLLECTIONS_METRICS_PORT": "0",
        "WORKER_HEARTBEAT_SECONDS": "0.5",
        "API_WORKERS": "1",
        "RAGQ_RUN_DIR": str(workdir / "run"),
        **overrides,
    }


class MakeRun:
    """`bash scripts/run.sh` (what `make run` runs after its install and index steps)."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = env or stack_env(workdir)
        self.log_path = workdir / f"run-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            # A session of its own, as a terminal's foreground job is a process group of its own.
            self.process = subprocess.Popen(["bash", "scripts/run.sh"], cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.url = f"http://127.0.0.1:{self.env['API_PORT']}"
        self.started: list[psutil.Process] = []

    @property
    def run_dir(self) -> Path:
        return Path(self.env["RAGQ_RUN_DIR"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, after: int = 0, timeout: float = WAIT) -> None:
        """Until `text` appears in the log after offset `after`; fails if the runner ends."""
        deadline = time.monotonic() + timeout
        while text not in self.log()[after:]:
            assert self.process.poll() is None, self.log()[-3000:]
            assert time.monotonic() < deadline, self.log()[-3000:]
            time.sleep(0.2)

    def wait_ready(self) -> MakeRun:
        self.wait_for(READY_LINE)
        self.started = self.descendants()
        return self

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def find(self, *words: str) -> psutil.Process | None:
        """The outermost of the stack's processes whose command line holds every one of `words`
        (gunicorn's arbiter, not its workers; Celery's main process, not its pool child)."""
        found: dict[int, psutil.Process] = {}
        for process in self.descendants():
            with contextlib.suppress(psutil.NoSuchProcess):
                command = " ".join(process.cmdline())
                if all(word in command for word in words):
                    found[process.pid] = process
        return next((p for p in found.values() if p.ppid() not in found), None)

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the terminal's foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait_stopped(self, timeout: float = WAIT) -> list[psutil.Process]:
        """Wait for the runner to exit; returns the stack's processes still alive then."""
        stack = self.started or self.descendants()
        self.process.wait(timeout=timeout)
        _, alive = psutil.wait_procs(stack, timeout=timeout)
        return alive

    def kill_all(self) -> None:
        """Whatever is left, SIGKILLed (after the test, or after one that failed)."""
        for process in [*self.descendants(), *self.started]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
