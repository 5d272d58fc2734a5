"""shared/error_types.py is the one list of rag_errors_total's fixed types: every type the code
counts under a literal name is in it, and docs/operations.md documents exactly it."""

from __future__ import annotations

import re

from shared.error_types import INGEST_ERROR_TYPES, WEB_ERROR_TYPES, WORKER_ERROR_TYPES, ErrorType
from tests.support.gunicorn import REPO

# `ERRORS.labels(type="...")`: a call site that counts under a bare string, not an ErrorType
LITERAL_TYPE = re.compile(r"""ERRORS\.labels\(\s*type\s*=\s*["']([^"']+)["']""")
# a row of docs/operations.md's table of types: | `type` | processes | when |
DOCUMENTED = re.compile(r"^\| `([^`]+)` \| ((?:web|worker|ingest)(?:, (?:web|worker|ingest))*) \|",
                        re.MULTILINE)
PROCESSES = {"web": WEB_ERROR_TYPES, "worker": WORKER_ERROR_TYPES, "ingest": INGEST_ERROR_TYPES}


def test_every_literal_type_counted_is_a_fixed_type() -> None:
    literals = {(path.relative_to(REPO).as_posix(), name)
                for folder in ("web", "worker", "shared")
                for path in (REPO / folder).rglob("*.py")
                for name in LITERAL_TYPE.findall(path.read_text())}
    assert {(path, name) for path, name in literals if name not in set(ErrorType)} == set()


def test_every_fixed_type_is_counted_by_a_process() -> None:
    assert {name for names in PROCESSES.values() for name in names} == set(ErrorType)


def test_operations_doc_names_each_fixed_type_and_its_process() -> None:
    rows = DOCUMENTED.findall((REPO / "docs" / "operations.md").read_text())
    documented = {name: set(processes.split(", ")) for name, processes in rows}
    expected = {str(name): {process for process, names in PROCESSES.items() if name in names}
                for name in ErrorType}
    assert documented == expected
