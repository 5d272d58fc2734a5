"""README's configuration table is generated from the settings classes and must not drift."""

from pathlib import Path

from scripts.update_readme import END, START, render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_settings_table_is_current() -> None:
    text = README.read_text()
    assert START in text and END in text
    assert render(text) == text, "README's settings table is stale: run `make readme`"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block
