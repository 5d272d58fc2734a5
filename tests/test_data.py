"""data/qa.jsonl is drawn from the sample corpus (docs/*.md, README.md): it must not drift."""

import re
from pathlib import Path

from worker.pipeline.evaluation import fact_found, load_qa, normalize_text

ROOT = Path(__file__).resolve().parent.parent
QA = ROOT / "data" / "qa.jsonl"
CORPUS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def test_every_fact_wording_is_in_the_docs() -> None:
    corpus = normalize_text("\n".join(page.read_text(encoding="utf-8") for page in CORPUS))
    absent = [
        (question.text, wording)
        for question in load_qa(QA)
        for wordings in question.facts
        for wording in wordings
        if not fact_found(wording, corpus)
    ]
    assert absent == [], "facts no page of docs/ or README.md states: fix the docs or data/qa.jsonl"


# The README's examples: the JSON query of its curl line and the question of `ragq ask`.
README_EXAMPLE = re.compile(r'"query": "([^"]+)"|ragq ask --local "([^"]+)"')


def test_the_readme_example_questions_are_asked() -> None:
    questions = {question.text for question in load_qa(QA)}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = {a or b for a, b in README_EXAMPLE.findall(readme)}
    assert len(examples) >= 2 and examples <= questions
    assert len(questions) >= 25
