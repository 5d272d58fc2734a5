"""The generator's prompt: numbered sources within a token budget, to be used and cited as [n]."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from worker.pipeline.types import Source

# The sentence that scores as an abstention (worker/pipeline/evaluation.py). Prompt v2 asked
# for it when the sources lack the answer; v3 does not: with the generator's MLP
# down-projections kept fp32 (PIPELINE_CPU_QUANTIZATION=int8-fp32-down) the model takes that
# rule too literally and the rule cost more right answers than it saved wrong ones
# (docs/pipeline.md, "Choosing the generator and the prompt").
NO_ANSWER = "The sources do not contain the answer."
SYSTEM = "You are a helpful assistant. Answer briefly from the given sources only."
# Small models follow an instruction best right before the question: v3 (the question after a
# colon, as the prompt the author measured, with [n] citations) over 95 questions, with
# int8-fp32-down: gold answer in 0.50 of 30 SQuAD answers, 0.47 of the docs questions with
# every fact; v2 with all-int8, the previous default: 0.40 and 0.24.
INSTRUCTION = "Using only the sources above, answer in one or two sentences, citing them as [n]"
CITATION = re.compile(r"\[(\d+(?:\s*[,-]\s*\d+)*)\]")
MIN_PASSAGE_TOKENS = 32  # a passage cut shorter than this is more noise than help


class TextTokenizer(Protocol):
    def encode(self, text: str, /, *, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int], /, *, skip_special_tokens: bool = ...) -> Any: ...


def source_block(number: int, source: Source) -> str:
    return f"[{number}] {source.title}\n{source.text}"


def fit_sources(sources: Sequence[Source], tokenizer: TextTokenizer, budget: int) -> list[Source]:
    """The leading sources whose blocks fit `budget` tokens; the first to overflow is cut to fit."""
    kept: list[Source] = []
    left = budget
    for source in sources:
        cost = len(tokenizer.encode(source_block(len(kept) + 1, source), add_special_tokens=False))
        if cost <= left:
            kept.append(source)
            left -= cost
            continue
        header = len(
            tokenizer.encode(
                source_block(len(kept) + 1, replace(source, text="")), add_special_tokens=False
            )
        )
        room = left - header
        if room >= MIN_PASSAGE_TOKENS:
            ids = tokenizer.encode(source.text, add_special_tokens=False)[:room]
            kept.append(
                replace(source, text=str(tokenizer.decode(ids, skip_special_tokens=True)).strip())
            )
        break
    return kept


def build_messages(question: str, sources: Sequence[Source]) -> list[dict[str, str]]:
    """Chat messages: the numbered sources, then the instruction and the question after it."""
    blocks = "\n\n".join(source_block(number, source) for number, source in enumerate(sources, 1))
    listed = blocks or "No sources were found."
    user = f"{listed}\n\n{INSTRUCTION}: {question}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def cited_numbers(answer: str) -> set[int]:
    """The source numbers an answer cites, as [2], [1, 3] or [1-3]."""
    numbers: set[int] = set()
    for group in CITATION.findall(answer):
        for part in group.split(","):
            first, _, last = part.partition("-")
            numbers.update(range(int(first), int(last or first) + 1))
    return numbers


def strip_citations(answer: str) -> str:
    """The answer without its [n] markers, which would otherwise match a reference such as "1"."""
    return " ".join(CITATION.sub(" ", answer).split())


def mark_cited(sources: Sequence[Source], answer: str) -> list[Source]:
    """`sources` with `cited` set on each one the answer cites by its number."""
    numbers = cited_numbers(answer)
    return [replace(source, cited=n in numbers) for n, source in enumerate(sources, 1)]
