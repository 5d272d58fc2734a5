"""The generator's prompt: numbered sources within a token budget, to be used and nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from worker.pipeline.types import Source

SYSTEM = "You are a helpful assistant. Answer briefly from the given sources only."
# Small models follow an instruction best when it comes last, right before they answer.
INSTRUCTION = "Using only the sources above, answer in one or two sentences"
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
    """Chat messages: the numbered sources, then the instruction and the question."""
    blocks = "\n\n".join(source_block(number, source) for number, source in enumerate(sources, 1))
    user = f"{blocks or 'No sources were found.'}\n\n{INSTRUCTION}: {question}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
