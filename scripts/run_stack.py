"""Helpers of `make run` (scripts/run.sh): the stack's environment, and waiting until it is ready.

    python scripts/run_stack.py env          # shell exports: settings, Procfile lines to run
    python scripts/run_stack.py wait-ready   # block until /health/ready, then print how to use it

Settings come from shared/settings.py (the environment over the defaults), so the ports and
URLs are named once. A broker or cache Redis that already answers at its configured URL is
used as it is; otherwise the Procfile's own redis-server line starts one on that URL's port,
which must be on this machine.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.settings import Settings, load_settings  # noqa: E402

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SHARED_REDIS_PORT = 6379  # a Redis the machine may already run for something else: never ours
READY_TIMEOUT_SECONDS = 600.0


def reachable(url: str) -> bool:
    """Whether a Redis answers PING at `url`."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def own_port(url: str, role: str) -> int:
    """The local port on which `make run` may start its own `role` Redis for `url`."""
    parts = urlsplit(url)
    port = parts.port or SHARED_REDIS_PORT
    if parts.hostname not in LOCAL_HOSTS:
        raise SystemExit(f"the {role} Redis at {url} does not answer and is not on this machine")
    if port == SHARED_REDIS_PORT:
        raise SystemExit(f"will not start a {role} Redis on port {SHARED_REDIS_PORT}; pick another")
    return port


def stack_env(settings: Settings) -> dict[str, str]:
    """What the Procfile lines need, and which lines to run."""
    processes = ["worker", "web", "flower"]
    env = {
        "BROKER_URL": settings.broker.url,
        "BROKER_QUEUE": settings.broker.queue,
        "CACHE_REDIS_URL": settings.cache.redis_url,
        "API_HOST": settings.api.host,
        "API_PORT": str(settings.api.port),
        "FLOWER_PORT": str(settings.flower.port),
        "FLOWER_BASIC_AUTH": settings.flower.basic_auth,
    }
    if not reachable(settings.broker.url):
        env["RAGQ_BROKER_PORT"] = str(own_port(settings.broker.url, "broker"))
        processes.insert(0, "broker")
    if not reachable(settings.cache.redis_url):
        env["RAGQ_CACHE_PORT"] = str(own_port(settings.cache.redis_url, "cache"))
        processes.insert(0, "cache")
    env["RAGQ_PROCESSES"] = " ".join(processes)
    return env


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_ready(settings: Settings, runner_pid: int | None = None) -> int:
    """Poll /health/ready; print the URL and a curl example once it answers 200."""
    base = f"http://{settings.api.host}:{settings.api.port}"
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline and _alive(runner_pid):
        try:
            with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as response:
                if response.status == 200:
                    print(_banner(base, settings), flush=True)
                    return 0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    print("ragq did not become ready (see the log above)", file=sys.stderr)
    return 1


def _banner(base: str, settings: Settings) -> str:
    # a key is a secret: the banner lands in logs, so it names the variable, never the value
    key = " -H \"X-API-Key: $RAGQ_API_KEY\"" if settings.auth.enabled else ""
    try_it = "Try (RAGQ_API_KEY: one of AUTH_API_KEYS):" if settings.auth.enabled else "Try:"
    return "\n".join([
        "",
        f"ragq is ready at {base}  (API docs: {base}/docs, Flower: http://127.0.0.1:{settings.flower.port})",
        try_it,
        f"  curl -s {base}/v1/jobs -H 'Content-Type: application/json'{key} \\",
        "       -H 'Prefer: wait=60' \\",
        "       -d '{\"query\": \"What is retrieval-augmented generation?\"}'",
        f"  curl -s {base}/query -H 'Content-Type: application/json'{key} \\",
        "       -d '{\"query\": \"What is retrieval-augmented generation?\"}'",
        "Stop with Ctrl-C.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["env", "wait-ready"])
    parser.add_argument("--runner-pid", type=int, help="give up waiting when this process ends")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "wait-ready":
        try:
            return wait_ready(settings, args.runner_pid)
        except KeyboardInterrupt:
            return 130
    for name, value in stack_env(settings).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
