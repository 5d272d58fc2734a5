from pathlib import Path

import pytest

from shared.errors import IngestError
from worker.pipeline.evaluation import (
    answerable_questions,
    exact_match,
    first_rank,
    normalize_answer,
    ranking_metrics,
    token_f1,
)

from .helpers import write_squad


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an Apple a day") == "apple day"


def test_exact_match_and_f1_take_the_best_reference() -> None:
    assert exact_match("the Paris", ["London", "Paris"]) == 1.0
    assert exact_match("Paris, France", ["Paris"]) == 0.0
    # prediction "paris france" vs "paris": precision 1/2, recall 1 -> f1 2/3.
    assert token_f1("Paris, France", ["Paris", "Lyon"]) == pytest.approx(2 / 3)
    assert token_f1("Berlin", ["Paris"]) == 0.0


def test_first_rank_counts_paragraphs_not_chunks() -> None:
    assert first_rank(["p1", "p1", "p2", "p3"], "p2") == 2
    assert first_rank(["p1"], "p9") is None


def test_ranking_metrics_by_hand() -> None:
    metrics = ranking_metrics([1, 2, 6, None])
    assert metrics == {
        "recall@1": 0.25,
        "recall@5": 0.5,
        "mrr@10": round((1 + 1 / 2 + 1 / 6) / 4, 4),
    }


def test_answerable_questions_skip_impossible_ones(tmp_path: Path) -> None:
    path = write_squad(
        tmp_path / "s.json",
        [
            ("A", [("Paris is in France.", [("Where is Paris?", "France")])]),
            ("B", [("x", []), ("Rome is in Italy.", [("Where is Rome?", "Italy")])]),
        ],
    )
    text = path.read_text().replace(
        '"is_impossible": false, "answers": [{"text": "Italy"',
        '"is_impossible": true, "answers": [{"text": "Italy"',
    )
    path.write_text(text)
    questions = answerable_questions(path)
    assert [(q.text, q.source, q.answers) for q in questions] == [
        ("Where is Paris?", "s.json#0/0", ["France"])
    ]


def test_unreadable_squad_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(IngestError, match="broken.json"):
        answerable_questions(bad)
