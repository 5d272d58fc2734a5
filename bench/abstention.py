"""Abstention from the model's own probability of the no-answer sentence: measured, not adopted.

For each question the default generator (int8 on CPU, prompt v2, three passages retrieved with
the default settings) reads the prompt and, on the answer's first step, scores the no-answer
sentence (prompt.NO_ANSWER) as the answer's start: its first token from the prefill's logits,
the others teacher-forced in one forward pass over the prompt's KV cache (no second prefill),
which is then cut back so the answer decodes exactly as it would without the scoring (ragq's
Generation runs unchanged; `model.generate` is wrapped to add the scorer). Candidate scores
(higher: more like the no-answer sentence), all known once the prompt is read:

- `mean`: mean log-probability of the sentence's tokens (its total is 8 times that);
- `first`, `rest`, `min`: its first token's, the mean of the others', the lowest;
- `first_vs_greedy`: its first token's minus the greedy first token's;
- `vs_greedy` (for comparison only: the answer would have to be held back until its first
  tokens exist): `mean` minus the mean of the greedy answer's first tokens (as many).

Two phases, each in its own process (they can run side by side), then a report:

- `--phase calibrate`: SQuAD questions the standard evaluation does not use (answerable ones
  after the first 30, unanswerable ones after the first 20), the first `--per-article` of each
  kind in each of the sample's three articles; answers cut at the sentence's length (enough to
  see whether the model wrote the sentence itself). Three-fold cross-validation over the
  articles: on two, the score with the best ROC AUC and the lowest threshold that refuses at
  most `--false-rate` of their answerable questions; on the third, its AUC, abstention and
  false abstention. The threshold carried to the evaluation: the same rule on all three.
- `--phase evaluate`: the standard set (the first 30 answerable and 20 unanswerable questions,
  as bench/generators.py and bench/prompt_variants.py take them) and data/qa.jsonl, full
  answers; figures without the check and with it at the calibrated threshold (an answer whose
  score reaches it becomes the no-answer sentence; any other answer is the same either way).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/abstention.py --phase calibrate --per-article 20
    HF_HUB_OFFLINE=1 .venv/bin/python bench/abstention.py --phase evaluate
    .venv/bin/python bench/abstention.py --report   # bench/results/abstention.md and .json

The phases keep every answer and score in bench/results/abstention_{calibrate,evaluate}.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from prompt_variants import SQUAD, _indexes, _retrieved  # noqa: E402
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList  # noqa: E402

from shared.jobs import FinishReason  # noqa: E402
from worker.pipeline import prompt  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PARTS = {phase: RESULTS / f"abstention_{phase}.json" for phase in ("calibrate", "evaluate")}
STANDARD_ANSWERABLE, STANDARD_UNANSWERABLE = 30, 20
CANDIDATES = ["mean", "first", "rest", "min", "first_vs_greedy"]  # known once the prompt is read
DIAGNOSTIC = ["vs_greedy"]


def scores(token: list[float], greedy: list[float]) -> dict[str, float]:
    """Every candidate score of one answer (higher: more like the no-answer sentence)."""
    mean = sum(token) / len(token)
    head = greedy[: len(token)]
    return {
        "mean": mean,
        "first": token[0],
        "rest": sum(token[1:]) / max(1, len(token) - 1),
        "min": min(token),
        "first_vs_greedy": token[0] - greedy[0],
        "vs_greedy": mean - sum(head) / len(head),
    }


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(a positive's score > a negative's), ties counting half (Mann-Whitney)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


def threshold_for(answerable: list[float], false_rate: float) -> float:
    """The lowest threshold that refuses at most `false_rate` of `answerable` (score >= it)."""
    allowed = math.floor(false_rate * len(answerable))
    fitting = [v for v in set(answerable) if sum(a >= v for a in answerable) <= allowed]
    return min(fitting) if fitting else max(answerable) + 1e-6


def _questions_by_article() -> list[dict[str, Any]]:
    """Every question of the sample in file order: text, article, answers, whether answerable,
    and its index among the questions of its kind (the standard set takes the first ones)."""
    from worker.pipeline.evaluation import load_squad

    data = load_squad(SQUAD)
    questions: list[dict[str, Any]] = []
    seen = {True: 0, False: 0}
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answerable = not qa.get("is_impossible") and bool(qa.get("answers"))
                if not answerable and not qa.get("is_impossible"):
                    continue
                questions.append(
                    {
                        "question": qa["question"],
                        "article": article["title"],
                        "answerable": answerable,
                        "answers": [a["text"] for a in qa["answers"]],
                        "position": seen[answerable],
                    }
                )
                seen[answerable] += 1
    return questions


def calibration_questions(per_article: int) -> list[dict[str, Any]]:
    """The first `per_article` answerable and unanswerable questions of each article that the
    standard evaluation does not use."""
    chosen: list[dict[str, Any]] = []
    taken: dict[tuple[str, bool], int] = {}
    for q in _questions_by_article():
        first = STANDARD_ANSWERABLE if q["answerable"] else STANDARD_UNANSWERABLE
        key = (q["article"], q["answerable"])
        if q["position"] >= first and taken.get(key, 0) < per_article:
            taken[key] = taken.get(key, 0) + 1
            chosen.append(q)
    return chosen


class Scorer(LogitsProcessor):
    """Scores the no-answer sentence on a generation's first step, then leaves every step as it
    is: its first token from the prefill's logits, the rest from one forward pass of the
    sentence's tokens over the prompt's KV cache (`cache`, which generate prefills), which is
    then cut back to the prompt. Also keeps the best token's log-probability at the first
    steps (the greedy answer's)."""

    def __init__(self, model: Any, sentence: list[int], prompt_tokens: int) -> None:
        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.sentence = sentence
        self.prompt_tokens = prompt_tokens
        self.token_logprobs: list[float] = []
        self.greedy_logprobs: list[float] = []
        self.seconds = 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = int(input_ids.shape[1]) - self.prompt_tokens
        if step == 0:
            started = time.perf_counter()
            self.token_logprobs = self._sentence(scores)
            self.seconds = time.perf_counter() - started
        if step < len(self.sentence):
            self.greedy_logprobs.append(float(torch.log_softmax(scores.float(), -1).max()))
        return scores

    def _sentence(self, first_logits: torch.Tensor) -> list[float]:
        cache, sentence = self.cache, self.sentence
        length = cache.get_seq_length()
        device = first_logits.device
        fed = torch.tensor([sentence[:-1]], device=device)
        positions = torch.arange(length, length + len(sentence) - 1, device=device)
        out = self.model(
            input_ids=fed,
            attention_mask=torch.ones(
                (1, length + len(sentence) - 1), dtype=torch.long, device=device
            ),
            position_ids=positions.unsqueeze(0),
            cache=cache,
            use_cache=True,
        )
        cache.crop(-(len(sentence) - 1))  # back to the prompt: the answer decodes from there
        logits = torch.cat([first_logits.float(), out.logits[0].float()])
        logprobs = torch.log_softmax(logits, dim=-1)
        rows = torch.arange(len(sentence), device=device)
        return logprobs[rows, torch.tensor(sentence, device=device)].tolist()


def _generator(max_new_tokens: int | None) -> Any:
    """The default generator (int8, CPU) whose `model.generate` also runs a Scorer, left in
    `generator.scorers`; ragq's Generation (stop rules, loop guard) is used unchanged."""
    from shared.settings import load_settings
    from worker.pipeline.generator import Generator

    update: dict[str, Any] = {"device": "cpu"}
    if max_new_tokens:
        update["max_new_tokens"] = max_new_tokens
    generator = Generator(load_settings().pipeline.model_copy(update=update))
    sentence = generator.tokenizer.encode(prompt.NO_ANSWER, add_special_tokens=False)
    model, generate = generator.model, generator.model.generate
    generator.scorers = []

    def scored_generate(**kwargs: Any) -> Any:
        scorer = Scorer(model, sentence, int(kwargs["input_ids"].shape[1]))
        generator.scorers.append(scorer)
        theirs = kwargs.pop("logits_processor", None) or []
        processors = LogitsProcessorList([scorer, *theirs])
        return generate(**kwargs, logits_processor=processors, cache=scorer.cache)

    model.generate = scored_generate
    return generator


def _answer(generator: Any, question: str, sources: list[Any]) -> dict[str, Any]:
    generation = generator.generate(prompt.build_messages(question, sources), lambda: False)
    text = "".join(generation).strip()
    check = generator.scorers.pop()
    return {
        "answer": text,
        "finish_reason": str(generation.finish_reason),
        "prompt_tokens": generation.prompt_tokens,
        "tokens": generation.generated_tokens,
        "ttft_s": round(generation.ttft_s, 3),
        "generation_s": round(generation.generation_s, 3),
        "check_s": round(check.seconds, 4),
        "token_logprobs": [round(x, 4) for x in check.token_logprobs],
        "greedy_logprobs": [round(x, 4) for x in check.greedy_logprobs],
    }


def calibrate(args: argparse.Namespace) -> dict[str, Any]:
    from worker.pipeline.evaluation import abstained

    questions = calibration_questions(args.per_article)
    generator = _generator(None)
    sentence = len(generator.tokenizer.encode(prompt.NO_ANSWER, add_special_tokens=False))
    # Enough of the answer to see whether the model writes the sentence itself.
    generator.settings = generator.settings.model_copy(update={"max_new_tokens": sentence + 1})
    squad_index, _ = _indexes(args.chunking)
    sources = _retrieved(squad_index, [q["question"] for q in questions], generator.tokenizer, 3)
    records = []
    for q, passages in zip(questions, sources, strict=True):
        record = {**q, **_answer(generator, q["question"], passages)}
        record["self_abstained"] = abstained(record["answer"])
        records.append(record)
        print(json.dumps({k: record[k] for k in ("article", "answerable", "answer")}), flush=True)
    return {
        "records": records,
        "load_avg": round(os.getloadavg()[0], 2),
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "per_article": args.per_article,
    }


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from worker.pipeline.evaluation import answerable_questions, load_qa, unanswerable_questions

    generator = _generator(None)
    squad_index, docs_index = _indexes(args.chunking)
    answerable = answerable_questions(SQUAD)[:STANDARD_ANSWERABLE]
    unanswerable = unanswerable_questions(SQUAD)[:STANDARD_UNANSWERABLE]
    qa = load_qa(ROOT / "data" / "qa.jsonl")
    squad_texts = [q.text for q in answerable] + unanswerable
    squad_sources = _retrieved(squad_index, squad_texts, generator.tokenizer, 3)
    qa_sources = _retrieved(docs_index, [q.text for q in qa], generator.tokenizer, 3)
    records = []
    kinds = ["answerable"] * len(answerable) + ["unanswerable"] * len(unanswerable)
    golds: list[list[str]] = [q.answers for q in answerable] + [[] for _ in unanswerable]
    for text, kind, gold, passages in zip(squad_texts, kinds, golds, squad_sources, strict=True):
        records.append(
            {"kind": kind, "question": text, "answers": gold, **_answer(generator, text, passages)}
        )
        print(json.dumps({k: records[-1][k] for k in ("kind", "answer")}), flush=True)
    for item, passages in zip(qa, qa_sources, strict=True):
        records.append(
            {"kind": "qa", "question": item.text, **_answer(generator, item.text, passages)}
        )
        print(json.dumps({k: records[-1][k] for k in ("kind", "answer")}), flush=True)
    return {
        "records": records,
        "load_avg": round(os.getloadavg()[0], 2),
        "measured": time.strftime("%Y-%m-%d %H:%M"),
    }


def _rates(records: list[dict[str, Any]], name: str, threshold: float) -> dict[str, float]:
    """Abstention (unanswerable) and false abstention (answerable): the model's own sentence or
    the score at or above `threshold`."""

    def refused(r: dict[str, Any]) -> bool:
        return bool(r["self_abstained"]) or r["scores"][name] >= threshold

    positive = [r for r in records if not r["answerable"]]
    negative = [r for r in records if r["answerable"]]
    return {
        "abstention": round(sum(map(refused, positive)) / len(positive), 3),
        "false_abstention": round(sum(map(refused, negative)) / len(negative), 3),
        "abstention_model_alone": round(
            sum(r["self_abstained"] for r in positive) / len(positive), 3
        ),
        "false_abstention_model_alone": round(
            sum(r["self_abstained"] for r in negative) / len(negative), 3
        ),
    }


def _aucs(records: list[dict[str, Any]]) -> dict[str, float]:
    positive = [r for r in records if not r["answerable"]]
    negative = [r for r in records if r["answerable"]]
    return {
        name: round(
            roc_auc([r["scores"][name] for r in positive], [r["scores"][name] for r in negative]), 3
        )
        for name in CANDIDATES + DIAGNOSTIC
    }


def at_abstention(records: list[dict[str, Any]], name: str, wanted: float) -> dict[str, float]:
    """The highest threshold at which `wanted` of the unanswerable questions are refused (the
    model's own sentence counted), and the false abstention it costs."""
    for value in sorted({r["scores"][name] for r in records}, reverse=True):
        rates = _rates(records, name, value)
        if rates["abstention"] >= wanted:
            return {"threshold": value, **rates}
    return {"threshold": -math.inf, **_rates(records, name, -math.inf)}


def cross_validate(records: list[dict[str, Any]], false_rate: float) -> dict[str, Any]:
    """Pick the score and threshold on two articles, report on the third; then on all."""
    for r in records:
        r["scores"] = scores(r["token_logprobs"], r["greedy_logprobs"])
    articles = sorted({r["article"] for r in records})
    folds = []
    for held in articles:
        train = [r for r in records if r["article"] != held]
        test = [r for r in records if r["article"] == held]
        train_auc = _aucs(train)
        name = max(CANDIDATES, key=lambda n: train_auc[n])
        threshold = threshold_for([r["scores"][name] for r in train if r["answerable"]], false_rate)
        folds.append(
            {
                "held_out": held,
                "score": name,
                "threshold": threshold,
                "train_auc": train_auc[name],
                "held_out_auc": _aucs(test),
                "answerable": sum(r["answerable"] for r in test),
                "unanswerable": sum(not r["answerable"] for r in test),
                **_rates(test, name, threshold),
            }
        )
    every_auc = _aucs(records)
    name = max(CANDIDATES, key=lambda n: every_auc[n])
    thresholds = {
        n: threshold_for([r["scores"][n] for r in records if r["answerable"]], false_rate)
        for n in CANDIDATES
    }
    threshold = thresholds[name]
    return {
        "at_half": {n: at_abstention(records, n, 0.5) for n in CANDIDATES},
        "thresholds": thresholds,
        "folds": folds,
        "pooled_auc": every_auc,
        "score": name,
        "threshold": threshold,
        "false_rate": false_rate,
        "all": _rates(records, name, threshold),
    }


def _squad_figures(records: list[dict[str, Any]], name: str, threshold: float) -> dict[str, Any]:
    from worker.pipeline.evaluation import abstained, exact_match, gold_contained, token_f1

    def final(r: dict[str, Any]) -> str:
        return prompt.NO_ANSWER if r["scores"][name] >= threshold else r["answer"]

    answerable = [r for r in records if r["kind"] == "answerable"]
    unanswerable = [r for r in records if r["kind"] == "unanswerable"]
    texts = [(prompt.strip_citations(final(r)), r["answers"]) for r in answerable]
    return {
        "f1": round(statistics.mean(token_f1(t, a) for t, a in texts), 3),
        "em": round(statistics.mean(exact_match(t, a) for t, a in texts), 3),
        "gold_contained": round(statistics.mean(gold_contained(t, a) for t, a in texts), 3),
        "false_abstention": round(statistics.mean(float(abstained(t)) for t, _ in texts), 3),
        "abstention": round(statistics.mean(float(abstained(final(r))) for r in unanswerable), 3),
    }


def _docs_figures(records: list[dict[str, Any]], name: str, threshold: float) -> dict[str, Any]:
    from worker.pipeline.evaluation import abstained, load_qa, score_answer
    from worker.pipeline.types import Answer

    qa = {q.text: q for q in load_qa(ROOT / "data" / "qa.jsonl")}
    found = facts = complete = refused = 0
    docs = [r for r in records if r["kind"] == "qa"]
    for r in docs:
        text = prompt.NO_ANSWER if r["scores"][name] >= threshold else r["answer"]
        item = qa[r["question"]]
        scored = score_answer(
            item,
            Answer(
                answer=text,
                sources=[],
                prompt_tokens=0,
                generated_tokens=0,
                retrieval_s=0.0,
                rerank_s=0.0,
                ttft_s=0.0,
                generation_s=0.0,
                finish_reason=FinishReason(r["finish_reason"]),
            ),
        )
        found += len(scored["facts_found"])
        facts += len(item.facts)
        complete += scored["correct"]
        refused += abstained(text)
    return {
        "docs_facts": round(found / facts, 3),
        "docs_questions_with_every_fact": round(complete / len(docs), 3),
        "docs_abstained": round(refused / len(docs), 3),
    }


def report(false_rate: float) -> dict[str, Any]:
    calibration = json.loads(PARTS["calibrate"].read_text())
    cv = cross_validate(calibration["records"], false_rate)
    result: dict[str, Any] = {
        "calibration": {
            **cv,
            "questions": len(calibration["records"]),
            "per_article": calibration["per_article"],
            "load_avg": calibration["load_avg"],
            "measured": calibration["measured"],
        },
    }
    if PARTS["evaluate"].exists():
        evaluation = json.loads(PARTS["evaluate"].read_text())
        records = evaluation["records"]
        for r in records:
            r["scores"] = scores(r["token_logprobs"], r["greedy_logprobs"])
        name, threshold = cv["score"], cv["threshold"]
        squad = [r for r in records if r["kind"] != "qa"]
        for r in squad:
            r["answerable"] = r["kind"] == "answerable"
        timed = [r for r in records if r["tokens"] > 1]
        result["evaluation"] = {
            "score": name,
            "threshold": threshold,
            "auc": _aucs(squad),
            "without": {
                **_squad_figures(records, name, math.inf),
                **_docs_figures(records, name, math.inf),
            },
            "with": {  # each score at its threshold from all calibration questions
                n: {
                    "threshold": t,
                    **_squad_figures(records, n, t),
                    **_docs_figures(records, n, t),
                }
                for n, t in cv["thresholds"].items()
            },
            "check_s_p50": round(statistics.median(r["check_s"] for r in records), 3),
            "check_s_max": round(max(r["check_s"] for r in records), 3),
            "ttft_s_p50": round(statistics.median(r["ttft_s"] for r in timed), 3),
            "prompt_tokens_p50": statistics.median(r["prompt_tokens"] for r in records),
            "load_avg": evaluation["load_avg"],
            "measured": evaluation["measured"],
        }
    return result


def _shown(threshold: float) -> str:
    return f"{threshold:.6g}"


def markdown(result: dict[str, Any]) -> str:
    cal = result["calibration"]
    lines = [
        "# Abstention from the no-answer sentence's probability (`bench/abstention.py`)\n",
        "The default generator (Qwen2.5-Coder-0.5B-Instruct, int8, CPU, prompt v2, three "
        "passages) scores the no-answer sentence as its answer's start right after the prompt "
        "(the scores: the script's docstring). Abstention: share of unanswerable questions "
        "answered with the sentence; false abstention: share of answerable ones. Both count "
        "the model's own sentence as well as the score's.\n",
        f"## Calibration: {cal['questions']} questions the standard set does not use "
        f"({cal['per_article']} answerable and {cal['per_article']} unanswerable per article, "
        f"measured {cal['measured']})\n",
        f"Rule, on the two training articles: the score with the best ROC AUC, and the lowest "
        f"threshold that refuses at most {cal['false_rate']} of their answerable questions.\n",
        "| held-out article | score picked | threshold | AUC (train) | AUC (held out) | "
        "abstention | false abstention | model alone: abstention | model alone: false |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in cal["folds"]:
        lines.append(
            f"| {f['held_out']} | {f['score']} | {_shown(f['threshold'])} | {f['train_auc']} | "
            f"{f['held_out_auc'][f['score']]} | {f['abstention']} | {f['false_abstention']} | "
            f"{f['abstention_model_alone']} | {f['false_abstention_model_alone']} |"
        )
    lines += [
        "",
        "ROC AUC of every score, per held-out article and on all calibration questions "
        "(`vs_greedy` needs the answer's first tokens before deciding: for comparison only):\n",
        "| score | " + " | ".join(f["held_out"] for f in cal["folds"]) + " | all |",
        "|---|" + "---|" * (len(cal["folds"]) + 1),
    ]
    for name in CANDIDATES + DIAGNOSTIC:
        cells = [str(f["held_out_auc"][name]) for f in cal["folds"]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cal['pooled_auc'][name]} |")
    lines += [
        "",
        f"Chosen on all calibration questions: `{cal['score']}` at or above "
        f"{_shown(cal['threshold'])} (abstention {cal['all']['abstention']}, false abstention "
        f"{cal['all']['false_abstention']} there; the model alone "
        f"{cal['all']['abstention_model_alone']} and "
        f"{cal['all']['false_abstention_model_alone']}).\n",
    ]
    held = [f["held_out_auc"][name] for f in cal["folds"] for name in CANDIDATES]
    half = ", ".join(f"`{n}` {v['false_abstention']}" for n, v in cal["at_half"].items())
    lines += [
        f"Held-out ROC AUC of the scores usable before the first token: {min(held)} to "
        f"{max(held)} (0.5: no signal; the bar for adopting one was clearly above 0.6). "
        "Not adopted: ragq answers as before, and abstains only when the model writes the "
        "sentence itself.\n",
        f"What the 0.50 abstention target would cost on the calibration questions (the "
        f"threshold that reaches it there): false abstention {half}.\n",
        "A `first_vs_greedy` threshold just above 0 refuses nothing by the score: the score is "
        "0 whenever the greedy first token is the sentence's own first token, as it is for "
        "more than the allowed share of answerable questions.\n",
    ]
    if "evaluation" in result:
        ev = result["evaluation"]
        lines += [
            f"## The standard set ({STANDARD_ANSWERABLE} answerable, {STANDARD_UNANSWERABLE} "
            f"unanswerable SQuAD questions) and data/qa.jsonl (measured {ev['measured']})\n",
            "Each score at the threshold the rule gives on all calibration questions "
            "(refusing at most the same share of their answerable ones):\n",
            "| check | SQuAD F1 | EM | gold contained | abstention | false abstention | "
            "docs facts | docs questions with every fact | docs answered with the sentence |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        rows = [("off", ev["without"])] + [
            (f"`{n}` >= {_shown(f['threshold'])}" + (" (picked)" if n == ev["score"] else ""), f)
            for n, f in ev["with"].items()
        ]
        for label, f in rows:
            lines.append(
                f"| {label} | {f['f1']} | {f['em']} | {f['gold_contained']} | {f['abstention']} "
                f"| {f['false_abstention']} | {f['docs_facts']} | "
                f"{f['docs_questions_with_every_fact']} | {f['docs_abstained']} |"
            )
        aucs = ", ".join(f"{k} {v}" for k, v in ev["auc"].items())
        lines += [
            "",
            f"ROC AUC on the standard set's 50 SQuAD questions (for information; nothing was "
            f"chosen on them): {aucs}.\n",
            "The `off` row is ragq as it is (the scoring leaves every answer as it was: these "
            "answers equal bench/prompt_variants.py's `v2`, decoding `none`, of 2026-12-03 on "
            "the same questions).\n",
            f"Cost: the check's forward pass took {ev['check_s_p50']} s at the median "
            f"({ev['check_s_max']} s at most) before the first token, against a time to first "
            f"token of {ev['ttft_s_p50']} s p50 (prompt {ev['prompt_tokens_p50']} tokens p50), "
            f"one thread, load average {ev['load_avg']} on a 2-core machine shared with other "
            "work.\n",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["calibrate", "evaluate"])
    parser.add_argument("--per-article", type=int, default=30)
    parser.add_argument("--false-rate", type=float, default=0.05)
    parser.add_argument(
        "--chunking",
        default="abstention",
        help="label (folder) of the indexes this checkout builds",
    )
    parser.add_argument("--report", action="store_true", help="write the results from the parts")
    args = parser.parse_args()
    if args.phase:
        part = calibrate(args) if args.phase == "calibrate" else evaluate(args)
        PARTS[args.phase].write_text(json.dumps(part, indent=1) + "\n")
    if args.report or not args.phase:
        result = report(args.false_rate)
        (RESULTS / "abstention.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "abstention.md").write_text(markdown(result))
        print(markdown(result))


if __name__ == "__main__":
    main()
