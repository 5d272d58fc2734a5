"""`ragq eval`: on SQuAD, retrieval recall/MRR of the answer's paragraph and answer EM / token F1;
on a question set (JSON lines), the answers checked for the facts they must contain."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np

from shared.embedding import Embedder
from shared.errors import IngestError
from shared.jobs import FinishReason
from shared.settings import PipelineSettings
from worker.pipeline import load_pipeline
from worker.pipeline.generator import resolve_device
from worker.pipeline.index import build_index
from worker.pipeline.ingest import load_squad, squad_source
from worker.pipeline.prompt import NO_ANSWER, strip_citations
from worker.pipeline.retrieval import Retriever, load_retriever
from worker.pipeline.types import Answer

RECALL_AT = (1, 5)
MRR_AT = 10
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Markdown code and emphasis marks, and typographic quotes, are how a fact is written, not what.
_MARKUP = str.maketrans({"`": None, "*": None, "\u201c": '"', "\u201d": '"', "\u2019": "'"})
QA_MATCHING = (
    "citation markers such as [1] are stripped from the answer; then a fact matches "
    "case-insensitively as whole words, ignoring Markdown ` and * and runs of whitespace; "
    "a fact given as a list matches when any of its wordings does"
)


@dataclass(frozen=True)
class Question:
    """An answerable SQuAD question and the paragraph (source) that holds its answer."""

    text: str
    source: str
    answers: list[str]
    article: str  # its article's title: metrics are also reported per article


def answerable_questions(path: Path) -> list[Question]:
    """The file's answerable questions in file order; sources match the index's SQuAD paragraphs."""
    data = load_squad(path)
    return [
        Question(
            qa["question"],
            squad_source(path.name, a_index, p_index),
            [a["text"] for a in qa["answers"]],
            article["title"],
        )
        for a_index, article in enumerate(data["data"])
        for p_index, paragraph in enumerate(article["paragraphs"])
        for qa in paragraph["qas"]
        if not qa.get("is_impossible") and qa.get("answers")
    ]


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truths: Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(truth) for truth in truths))


def token_f1(prediction: str, truths: Sequence[str]) -> float:
    """The best token-overlap F1 of `prediction` against any of the reference answers."""
    return max(
        (_f1(normalize_answer(prediction).split(), normalize_answer(t).split()) for t in truths),
        default=0.0,
    )


def _f1(predicted: list[str], truth: list[str]) -> float:
    common = sum((Counter(predicted) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def first_rank(ranked_sources: Sequence[str], wanted: str) -> int | None:
    """1-based rank of `wanted` in a ranking that may repeat sources (chunks of one paragraph)."""
    seen: list[str] = []
    for source in ranked_sources:
        if source not in seen:
            seen.append(source)
            if source == wanted:
                return len(seen)
    return None


def ranking_metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """recall@1, recall@5 and mrr@10 of a list of 1-based ranks (None: not retrieved)."""
    if not ranks:
        raise ValueError("no ranks to score")
    metrics = {
        f"recall@{k}": mean(1.0 if r is not None and r <= k else 0.0 for r in ranks)
        for k in RECALL_AT
    }
    metrics[f"mrr@{MRR_AT}"] = mean(
        1.0 / r if r is not None and r <= MRR_AT else 0.0 for r in ranks
    )
    return {name: round(value, 4) for name, value in metrics.items()}


def stage_ranks(
    retriever: Retriever, questions: list[Question], vectors: np.ndarray | None = None
) -> dict[str, list[int | None]]:
    """Per stage (dense, sparse, hybrid, and hybrid_rerank with a reranker), the rank of each
    question's paragraph; `vectors` are the questions' embeddings when already computed."""
    if vectors is None:
        vectors = retriever.embedder.encode([q.text for q in questions])
    sources = [chunk.source for chunk in retriever.index.chunks]
    stages: dict[str, Callable[[int, Question], list[int]]] = {
        "dense": lambda i, q: [row for row, _ in retriever.dense(vectors[i])],
        "sparse": lambda i, q: [row for row, _ in retriever.sparse(q.text)],
        "hybrid": lambda i, q: [c.row for c in retriever.fused(q.text, vectors[i])],
    }
    if retriever.reranker is not None:
        stages["hybrid_rerank"] = lambda i, q: [
            c.row for c in retriever.reranked(q.text, retriever.fused(q.text, vectors[i]))
        ]
    return {
        name: [
            first_rank([sources[row] for row in rank(i, q)], q.source)
            for i, q in enumerate(questions)
        ]
        for name, rank in stages.items()
    }


def stage_metrics(ranks: dict[str, list[int | None]]) -> dict[str, dict[str, float]]:
    return {stage: ranking_metrics(of_stage) for stage, of_stage in ranks.items()}


def article_metrics(
    questions: list[Question], ranks: dict[str, list[int | None]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Each article's stage metrics over its own questions, articles in file order."""
    report = {}
    for title in dict.fromkeys(q.article for q in questions):
        rows = [i for i, q in enumerate(questions) if q.article == title]
        report[title] = stage_metrics({stage: [r[i] for i in rows] for stage, r in ranks.items()})
    return report


def unanswerable_questions(path: Path) -> list[str]:
    """The file's unanswerable (SQuAD v2 `is_impossible`) questions, in file order."""
    data = load_squad(path)
    return [
        qa["question"]
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
        if qa.get("is_impossible")
    ]


def gold_contained(prediction: str, truths: Sequence[str]) -> float:
    """1.0 when a reference answer occurs in the prediction as whole words (both normalised)."""
    padded = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(truth)} " in padded for truth in truths))


def abstained(prediction: str) -> bool:
    """Whether the answer is (or holds) the prompt's fixed no-answer sentence."""
    return normalize_answer(NO_ANSWER) in normalize_answer(prediction)


def evaluate_answers(
    answer: Callable[[str], Answer], questions: list[Question], unanswerable: Sequence[str] = ()
) -> dict[str, Any]:
    """EM, token F1 and gold-contained share of answers to answerable questions (citation
    markers stripped first), abstention on unanswerable ones, finish reasons, TTFT and tokens/s."""
    answered = [answer(q.text) for q in questions]
    texts = [strip_citations(a.answer) for a in answered]
    pairs = list(zip(texts, [q.answers for q in questions], strict=True))
    refused = [answer(q) for q in unanswerable]
    every = answered + refused
    report: dict[str, Any] = {
        "questions": len(answered),
        "scoring": "citation markers such as [1] are stripped before scoring",
        "exact_match": _mean(exact_match(text, truths) for text, truths in pairs),
        "f1": _mean(token_f1(text, truths) for text, truths in pairs),
        "gold_contained": _mean(gold_contained(text, truths) for text, truths in pairs),
        "abstained_when_answerable": _mean(float(abstained(t)) for t in texts),
        "unanswerable_questions": len(refused),
        "abstention": _mean(float(abstained(a.answer)) for a in refused) if refused else None,
        "finish_reasons": dict(Counter(str(a.finish_reason) for a in every)),
        "loops": sum(a.finish_reason == FinishReason.LOOP for a in every),
        "cited_share": _mean(float(any(s.cited for s in a.sources)) for a in answered),
        "mean_ttft_s": round(mean(a.ttft_s for a in every), 3),
        "mean_tokens_per_s": round(mean(a.tokens_per_s for a in every), 2),
    }
    return report


def _mean(values: Iterable[float]) -> float:
    return round(mean(values), 4)


def run_eval(squad: Path, settings: PipelineSettings, answers: int = 0) -> dict[str, Any]:
    """Index `squad` into `settings.index_dir`; score retrieval (and `answers` answers)."""
    questions = answerable_questions(squad)
    device = resolve_device(settings.device)
    embedder = Embedder(settings.embedding_model, device)
    manifest = build_index([squad], settings.index_dir, settings, embedder, progress=False)
    retriever = load_retriever(settings, device, embedder)
    ranks = stage_ranks(retriever, questions)
    report: dict[str, Any] = {
        "file": str(squad),
        "answerable_questions": len(questions),
        "paragraphs": manifest["document_count"],
        "chunks": manifest["chunk_count"],
        "vectors": manifest["vector_count"],
        "settings": _eval_settings(settings),
        **stage_metrics(ranks),
        "articles": article_metrics(questions, ranks),
    }
    if answers > 0:
        from worker.pipeline.pipeline import Pipeline

        pipeline = Pipeline(settings, retriever)
        ask = partial(pipeline.query, top_k=settings.top_k)
        report["answers"] = {
            "model": pipeline.model_id,
            **evaluate_answers(ask, questions[:answers], unanswerable_questions(squad)[:answers]),
        }
    return report


def _eval_settings(settings: PipelineSettings) -> dict[str, Any]:
    fields = {
        "embedding_model",
        "chunk_tokens",
        "chunk_overlap",
        "index_headings",
        "index_sentences",
        "sparse_stemming",
        "index_type",
        "dense_depth",
        "sparse_depth",
        "fusion",
        "fusion_dense_weight",
        "rrf_k",
        "rrf_dense_weight",
        "rrf_sparse_weight",
        "reranker",
        "rerank_depth",
        "top_k",
    }
    return settings.model_dump(include=fields, mode="json")


@dataclass(frozen=True)
class QaQuestion:
    """A question about the corpus and its facts, each a tuple of accepted wordings."""

    text: str
    facts: list[tuple[str, ...]]


def load_qa(path: Path) -> list[QaQuestion]:
    """The questions of a JSON-lines file of `{"question": str, "facts": [str | [str, ...]]}`.

    Blank lines are skipped. Raises IngestError naming the file, and the line of a bad one.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise IngestError(f"{path}: cannot read: {error}") from error
    questions = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                questions.append(_qa_question(line))
            except ValueError as error:
                raise IngestError(f"{path}:{number}: {error}") from error
    if not questions:
        raise IngestError(f"{path}: holds no questions")
    return questions


def _qa_question(line: str) -> QaQuestion:
    """One line's question; ValueError (JSONDecodeError is one) saying what is wrong."""
    item = json.loads(line)
    if not isinstance(item, dict) or set(item) != {"question", "facts"}:
        raise ValueError('want a JSON object with exactly the keys "question" and "facts"')
    question, facts = item["question"], item["facts"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError('"question" must be a non-empty string')
    if not isinstance(facts, list) or not facts:
        raise ValueError('"facts" must be a non-empty list')
    return QaQuestion(question.strip(), [_wordings(fact) for fact in facts])


def _wordings(fact: Any) -> tuple[str, ...]:
    wordings = [fact] if isinstance(fact, str) else fact
    if (
        not isinstance(wordings, list)
        or not wordings
        or not all(isinstance(w, str) and w.strip() for w in wordings)
    ):
        raise ValueError(f"a fact must be a non-empty string or a list of them, not {fact!r}")
    return tuple(w.strip() for w in wordings)


def normalize_text(text: str) -> str:
    """Lowercased, without Markdown ` and *, typographic quotes made plain, single spaces."""
    return " ".join(text.translate(_MARKUP).lower().split())


def fact_found(wording: str, normalized: str) -> bool:
    """Whether `wording` occurs in `normalized` text as whole words ("3" is not in "30")."""
    wanted = normalize_text(wording)
    before = r"(?<!\w)" if re.match(r"\w", wanted) else ""
    after = r"(?!\w)" if re.search(r"\w$", wanted) else ""
    return re.search(before + re.escape(wanted) + after, normalized) is not None


def score_answer(question: QaQuestion, answer: Answer) -> dict[str, Any]:
    """One question's result: the answer, the facts it holds (the wording found) and misses."""
    text = normalize_text(strip_citations(answer.answer))
    found: list[str] = []
    missing: list[str | list[str]] = []
    for wordings in question.facts:
        match = next((w for w in wordings if fact_found(w, text)), None)
        if match is not None:
            found.append(match)
        else:
            missing.append(wordings[0] if len(wordings) == 1 else list(wordings))
    return {
        "question": question.text,
        "answer": answer.answer,
        "correct": not missing,
        "facts_found": found,
        "facts_missing": missing,
        "finish_reason": str(answer.finish_reason),
        "ttft_s": round(answer.ttft_s, 3),
        "tokens_per_s": round(answer.tokens_per_s, 2),
    }


def evaluate_qa(answer: Callable[[str], Answer], questions: list[QaQuestion]) -> dict[str, Any]:
    """Share of answers holding all their facts, loops, finish reasons, mean TTFT and tokens/s."""
    answers = [answer(q.text) for q in questions]
    results = [score_answer(q, a) for q, a in zip(questions, answers, strict=True)]
    reasons = Counter(str(a.finish_reason) for a in answers)
    facts = sum(len(q.facts) for q in questions)
    return {
        "questions": len(results),
        "answered_with_facts": round(mean(r["correct"] for r in results), 4),
        "facts_found": round(sum(len(r["facts_found"]) for r in results) / facts, 4),
        "loops": reasons[FinishReason.LOOP],
        "finish_reasons": dict(sorted(reasons.items())),
        "mean_ttft_s": round(mean(a.ttft_s for a in answers), 3),
        "mean_tokens_per_s": round(mean(a.tokens_per_s for a in answers), 2),
        "matching": QA_MATCHING,
        "results": results,
    }


def run_qa_eval(path: Path, settings: PipelineSettings) -> dict[str, Any]:
    """Ask every question of `path` through the pipeline over `settings.index_dir`; score facts.

    Raises IngestError for a bad question file, IndexBuildError when the index is not built.
    """
    questions = load_qa(path)
    pipeline = load_pipeline(settings)
    generation = {"generator_model", "max_new_tokens", "temperature", "max_context_tokens"}
    return {
        "file": str(path),
        "index_dir": str(settings.index_dir),
        "index_version": pipeline.index_version,
        "model": pipeline.model_id,
        "prompt_version": pipeline.prompt_version,
        "settings": _eval_settings(settings) | settings.model_dump(include=generation, mode="json"),
        **evaluate_qa(partial(pipeline.query, top_k=settings.top_k), questions),
    }
