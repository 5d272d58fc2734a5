"""Small, real inputs for pipeline tests: a whitespace tokenizer with offsets, corpus writers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_WORD = re.compile(r"\S+")


class WhitespaceTokenizer:
    """One token per whitespace-separated word; enough to test token-aware logic exactly."""

    def __call__(self, text: str, **kwargs: Any) -> dict[str, Any]:
        return {"offset_mapping": [(m.start(), m.end()) for m in _WORD.finditer(text)]}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        self._words = _WORD.findall(text)
        return list(range(len(self._words)))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(self._words[i] for i in ids)


def write_squad(
    path: Path, articles: list[tuple[str, list[tuple[str, list[tuple[str, str]]]]]]
) -> Path:
    """A SQuAD v2 file: articles of (title, [(context, [(question, answer)])])."""
    data = [
        {
            "title": title,
            "paragraphs": [
                {
                    "context": context,
                    "qas": [
                        {
                            "id": f"{title}-{p}-{q}",
                            "question": question,
                            "is_impossible": False,
                            "answers": [{"text": answer, "answer_start": context.find(answer)}],
                        }
                        for q, (question, answer) in enumerate(qas)
                    ],
                }
                for p, (context, qas) in enumerate(paragraphs)
            ],
        }
        for title, paragraphs in articles
    ]
    path.write_text(json.dumps({"version": "v2.0", "data": data}), encoding="utf-8")
    return path
