"""Rewrite README.md's configuration table from shared/settings.py (`make readme`)."""

from pathlib import Path

from shared.settings import settings_table

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def render(readme: str) -> str:
    """README text with the table between the markers replaced by the generated one."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{settings_table()}\n{END}{tail}"


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "README.md"
    path.write_text(render(path.read_text()))
