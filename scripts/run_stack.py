"""Helpers of `make run` (scripts/run.sh): the stack's environment, and waiting until it is ready.

    python scripts/run_stack.py env          # shell exports for scripts/supervisord.conf
    python scripts/run_stack.py wait-ready   # block until /health/ready, then print how to use it

Settings come from shared/settings.py (the environment over the defaults), so the ports and
URLs are named once. A broker or cache Redis that already answers at its configured URL is
used as it is, unless it is another `make run`'s; otherwise the stack starts its own
redis-server on that URL's port, which must be on this machine. A stack that cannot own its
ports starts nothing: `env` names each port in use and its process, and exits 1.
"""

from __future__ import annotations

import argparse
import errno
import shlex
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.settings import Settings, load_settings  # noqa: E402

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SHARED_REDIS_PORT = 6379  # a Redis the machine may already run for something else: never ours
READY_TIMEOUT_SECONDS = 600.0
STOP_MARGIN_SECONDS = 30  # past a job's hard time limit, before a stopping worker is killed
RUNNER = "scripts/run.sh"  # in the command line of every `make run`'s outermost process


class PortConflict(Exception):
    """A port the stack needs is taken; the message says by what."""


def own_port(url: str, role: str) -> int:
    """The local port on which `make run` may start its own `role` Redis for `url`."""
    parts = urlsplit(url)
    port = parts.port or SHARED_REDIS_PORT
    if parts.hostname not in LOCAL_HOSTS:
        raise PortConflict(f"the {role} Redis at {url} does not answer and is not on this machine")
    if port == SHARED_REDIS_PORT:
        raise PortConflict(f"will not start a {role} Redis on port {SHARED_REDIS_PORT}; "
                           "pick another")
    return port


def _listens(process: psutil.Process, port: int) -> bool:
    return any(conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
               for conn in process.net_connections(kind="tcp"))


def listener(port: int) -> psutil.Process | None:
    """The outermost process listening on TCP `port` (a server's workers share its socket, and
    psutil names only one of the processes that hold it)."""
    pid = next((conn.pid for conn in psutil.net_connections(kind="tcp")
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid),
               None)
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        while (parent := process.parent()) is not None and _listens(parent, port):
            process = parent
    except psutil.Error:
        pass
    return process


def describe(process: psutil.Process | None) -> str:
    """`pid N (command)`, or what can be said when the process cannot be seen."""
    if process is None:
        return "a process this user cannot see"
    try:
        return f"pid {process.pid} ({' '.join(process.cmdline())[:120]})"
    except psutil.Error:
        return f"pid {process.pid}"


def check_free(host: str, port: int, name: str) -> None:
    """Raise PortConflict unless a server could bind `host:port` now."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise PortConflict(f"port {port} ({name}) is in use by {describe(listener(port))}"
                               ) from error


def runner_of(pid: int) -> psutil.Process | None:
    """The `make run` whose stack process `pid` is, if it is one."""
    try:
        for ancestor in psutil.Process(pid).parents():
            if RUNNER in " ".join(ancestor.cmdline()):
                return ancestor
    except psutil.Error:
        return None
    return None


def check_redis(url: str, role: str, name: str) -> int | None:
    """The port to start this `role` Redis on, or None to use the one that answers at `url`."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        pid = int(client.info("server")["process_id"])
    except redis.RedisError:
        port = own_port(url, role)
        check_free("127.0.0.1", port, name)
        return port
    owner = runner_of(pid) if urlsplit(url).hostname in LOCAL_HOSTS else None
    if owner is not None:
        raise PortConflict(f"port {urlsplit(url).port} ({name}) is the {role} Redis of another "
                           f"make run (pid {owner.pid}, {owner.cwd()})")
    return None


def stack_env(settings: Settings) -> dict[str, str]:
    """What scripts/supervisord.conf reads; PortConflict lists every port taken."""
    env = {
        "BROKER_URL": settings.broker.url,
        "BROKER_QUEUE": settings.broker.queue,
        "CACHE_REDIS_URL": settings.cache.redis_url,
        "API_HOST": settings.api.host,
        "API_PORT": str(settings.api.port),
        "FLOWER_PORT": str(settings.flower.port),
        "FLOWER_BASIC_AUTH": settings.flower.basic_auth,
        # warm shutdown waits for the running job, which its hard time limit bounds
        "RAGQ_WORKER_STOP_SECONDS": str(settings.jobs.hard_time_limit_seconds
                                        + STOP_MARGIN_SECONDS),
    }
    conflicts: list[str] = []

    def attempt(check: Callable[..., int | None], *args: str | int) -> int | None:
        try:
            return check(*args)
        except PortConflict as conflict:
            conflicts.append(str(conflict))
            return None

    attempt(check_free, settings.api.host, settings.api.port, "API_PORT")
    attempt(check_free, "0.0.0.0", settings.flower.port, "FLOWER_PORT")
    for metrics_port, name in ((settings.worker.metrics_port, "WORKER_METRICS_PORT"),
                               (settings.collections.metrics_port, "COLLECTIONS_METRICS_PORT")):
        if metrics_port:  # 0: none
            attempt(check_free, "0.0.0.0", metrics_port, name)
    for role, url, name in (("broker", settings.broker.url, "BROKER_URL"),
                            ("cache", settings.cache.redis_url, "CACHE_REDIS_URL")):
        port = attempt(check_redis, url, role, name)
        # supervisord.conf names the port even of a program it does not start
        env[f"RAGQ_{role.upper()}_PORT"] = str(port or 0)
        env[f"RAGQ_START_{role.upper()}"] = "true" if port else "false"
    if conflicts:
        raise PortConflict("\n".join(conflicts))
    return env


def wait_ready(settings: Settings) -> int:
    """Poll /health/ready; print the URL and a curl example once it answers 200."""
    base = f"http://{settings.api.host}:{settings.api.port}"
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
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


EXAMPLE_QUESTION = "Which port does the API listen on by default?"  # one data/qa.jsonl holds


def _banner(base: str, settings: Settings) -> str:
    # a key is a secret: the banner lands in logs, so it names the variable, never the value
    key = " -H \"X-API-Key: $RAGQ_API_KEY\"" if settings.auth.enabled else ""
    try_it = "Try (RAGQ_API_KEY: one of AUTH_API_KEYS):" if settings.auth.enabled else "Try:"
    ask_env = "" if base == "http://127.0.0.1:8000" else f"RAGQ_URL={base} "  # ragq's default
    ask_env += "RAGQ_API_KEY=... " if settings.auth.enabled else ""
    return "\n".join([
        "",
        f"ragq is ready at {base}/  <- open it in a browser to ask questions",
        f"  API docs: {base}/docs   Flower: http://127.0.0.1:{settings.flower.port}",
        f"  From a terminal: {ask_env}.venv/bin/ragq ask \"{EXAMPLE_QUESTION}\"",
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
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "wait-ready":
        try:
            return wait_ready(settings)
        except KeyboardInterrupt:
            return 130
    try:
        env = stack_env(settings)
    except PortConflict as conflicts:
        for line in str(conflicts).splitlines():
            print(f"make run: {line}", file=sys.stderr)
        print("make run: started nothing; stop the process named above (Ctrl-C in its terminal) "
              "or pick free ports with the settings named", file=sys.stderr)
        return 1
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
