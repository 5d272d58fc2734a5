import json
from pathlib import Path

import pytest

from shared.errors import IngestError
from shared.jobs import FinishReason
from worker.pipeline.evaluation import (
    QaQuestion,
    Question,
    abstained,
    answerable_questions,
    article_metrics,
    evaluate_answers,
    evaluate_qa,
    exact_match,
    fact_found,
    first_rank,
    gold_contained,
    load_qa,
    normalize_answer,
    normalize_text,
    ranking_metrics,
    score_answer,
    stage_metrics,
    token_f1,
)
from worker.pipeline.prompt import NO_ANSWER
from worker.pipeline.types import Answer

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
    assert [(q.text, q.source, q.answers, q.article) for q in questions] == [
        ("Where is Paris?", "s.json#0/0", ["France"], "A")
    ]


def test_article_metrics_score_each_article_on_its_own_questions() -> None:
    questions = [
        Question("q1", "f#0/0", ["a"], "Paris"),
        Question("q2", "f#1/0", ["b"], "Rome"),
        Question("q3", "f#0/1", ["c"], "Paris"),
    ]
    ranks: dict[str, list[int | None]] = {"dense": [1, 2, None], "hybrid": [1, 1, 3]}
    report = article_metrics(questions, ranks)
    assert list(report) == ["Paris", "Rome"]
    assert report["Paris"]["dense"] == {"recall@1": 0.5, "recall@5": 0.5, "mrr@10": 0.5}
    assert report["Paris"]["hybrid"]["mrr@10"] == round((1 + 1 / 3) / 2, 4)
    assert report["Rome"] == stage_metrics({"dense": [2], "hybrid": [1]})


def test_unreadable_squad_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(IngestError, match="broken.json"):
        answerable_questions(bad)


def answer(
    text: str, finish_reason: FinishReason = FinishReason.STOP, ttft_s: float = 0.5
) -> Answer:
    return Answer(
        answer=text,
        sources=[],
        prompt_tokens=100,
        generated_tokens=10,
        retrieval_s=0.01,
        rerank_s=0.0,
        ttft_s=ttft_s,
        generation_s=2.0,
        finish_reason=finish_reason,
    )


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_qa_reads_questions_and_fact_wordings(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "qa.jsonl",
        json.dumps({"question": " Which port? ", "facts": ["5555"]}),
        "",
        json.dumps({"question": "How?", "facts": [["RRF", "reciprocal rank fusion"], "60"]}),
    )
    assert load_qa(path) == [
        QaQuestion("Which port?", [("5555",)]),
        QaQuestion("How?", [("RRF", "reciprocal rank fusion"), ("60",)]),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "Expecting property name"),
        ('["a list"]', 'exactly the keys "question" and "facts"'),
        ('{"question": "q", "facts": ["f"], "note": 1}', 'exactly the keys "question" and "facts"'),
        ('{"question": " ", "facts": ["f"]}', '"question" must be a non-empty string'),
        ('{"question": "q", "facts": []}', '"facts" must be a non-empty list'),
        ('{"question": "q", "facts": "5555"}', '"facts" must be a non-empty list'),
        ('{"question": "q", "facts": [5555]}', "not 5555"),
        ('{"question": "q", "facts": [["a", ""]]}', r"not \['a', ''\]"),
    ],
)
def test_a_bad_qa_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    good = json.dumps({"question": "q", "facts": ["f"]})
    path = write_lines(tmp_path / "qa.jsonl", good, "", line)
    with pytest.raises(IngestError, match=rf"qa\.jsonl:3: .*{message}"):
        load_qa(path)


def test_an_empty_or_missing_qa_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="holds no questions"):
        load_qa(write_lines(tmp_path / "empty.jsonl", "", " "))
    with pytest.raises(IngestError, match="gone.jsonl: cannot read"):
        load_qa(tmp_path / "gone.jsonl")


@pytest.mark.parametrize(
    ("fact", "text", "found"),
    [
        ("5555", "Flower listens on port **5555**.", True),
        ("3", "It retrieves 30 passages.", False),
        ("3", "It gives 3 passages.", True),
        ("10", "The limit is 10.0 EUR.", True),
        ("POST /v1/jobs/{id}/cancel", "Send `post  /v1/jobs/{id}/cancel`.", True),
        ("?after=n", "Reconnect with ?after=N.", True),
        ("X-API-Key", "the x-api-key header", True),
        ("MiniLM", "all-MiniLM-L6-v2", True),
        ("pipeline", "pipelines", False),
        ("partial answer", "keeps its\npartial   answer", True),
    ],
)
def test_facts_match_case_markup_and_whitespace_blind_as_whole_words(
    fact: str, text: str, found: bool
) -> None:
    assert fact_found(fact, normalize_text(text)) is found


def test_citation_markers_are_stripped_before_matching() -> None:
    question = QaQuestion("Which stages?", [("1",), ("2",), ("FAISS",)])
    result = score_answer(question, answer("FAISS [1], then BM25 [1, 2]."))
    assert result["facts_found"] == ["FAISS"] and result["facts_missing"] == ["1", "2"]
    assert result["correct"] is False


def test_score_answer_reports_the_wording_found_and_the_whole_fact_missing() -> None:
    question = QaQuestion("q", [("RRF", "reciprocal rank fusion"), ("k", "60"), ("BM25",)])
    text = "Reciprocal rank fusion with k = 60."
    result = score_answer(question, answer(text, FinishReason.LENGTH))
    assert result == {
        "question": "q",
        "answer": text,
        "correct": False,
        "facts_found": ["reciprocal rank fusion", "k"],
        "facts_missing": ["BM25"],
        "finish_reason": "length",
        "ttft_s": 0.5,
        "tokens_per_s": 5.0,
    }


def test_evaluate_qa_report() -> None:
    questions = [
        QaQuestion("Which port does Flower listen on?", [("5555",)]),
        QaQuestion("How do I cancel a job?", [("/v1/jobs/{id}/cancel",), ("partial answer",)]),
        QaQuestion("Which retrievers?", [("FAISS",), ("BM25",)]),
    ]
    answers = {
        questions[0].text: answer("Port 5555 [1].", ttft_s=0.2),
        questions[1].text: answer("POST /v1/jobs/{id}/cancel POST", FinishReason.LOOP, ttft_s=0.4),
        questions[2].text: answer("FAISS and BM25.", ttft_s=0.9),
    }
    asked: list[str] = []

    def ask(question: str) -> Answer:
        asked.append(question)
        return answers[question]

    report = evaluate_qa(ask, questions)
    assert asked == [q.text for q in questions]
    assert report["questions"] == 3 and report["answered_with_facts"] == round(2 / 3, 4)
    assert report["facts_found"] == 0.8  # 4 of 5 facts
    assert report["loops"] == 1 and report["finish_reasons"] == {"loop": 1, "stop": 2}
    assert report["mean_ttft_s"] == 0.5 and report["mean_tokens_per_s"] == 5.0
    assert "[1]" in report["matching"]
    second = report["results"][1]
    assert second["facts_missing"] == ["partial answer"] and second["finish_reason"] == "loop"
    assert [r["correct"] for r in report["results"]] == [True, False, True]


def test_gold_contained_needs_the_reference_as_whole_words() -> None:
    assert gold_contained("The Norse leader was Rollo.", ["Rollo"]) == 1.0
    assert gold_contained("It was in the 10th century", ["10th century", "x"]) == 1.0
    assert gold_contained("Catholicism", ["Catholic"]) == 0.0


def test_abstention_is_the_fixed_sentence_anywhere_in_the_answer() -> None:
    assert abstained(NO_ANSWER) and abstained(f"{NO_ANSWER.lower()} [1]")
    assert not abstained("Rollo led them.")


def test_evaluate_answers_scores_without_citations_and_counts_abstention() -> None:
    questions = [
        Question("Who led them?", "s0", ["Rollo"], "Normans"),
        Question("Which century?", "s1", ["10th century"], "Normans"),
    ]
    replies = {
        "Who led them?": answer("Rollo [1]"),
        "Which century?": answer(NO_ANSWER),
        "Who wrote Dune?": answer(NO_ANSWER),
        "Who painted it?": answer("Monet painted it, painted it, painted it", FinishReason.LOOP),
    }
    report = evaluate_answers(
        lambda q: replies[q], questions, ["Who wrote Dune?", "Who painted it?"]
    )
    assert report["exact_match"] == 0.5 and report["gold_contained"] == 0.5  # "[1]" stripped
    assert report["abstained_when_answerable"] == 0.5
    assert report["unanswerable_questions"] == 2 and report["abstention"] == 0.5
    assert report["loops"] == 1 and report["finish_reasons"] == {"stop": 3, "loop": 1}
