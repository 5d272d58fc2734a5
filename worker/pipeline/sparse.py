"""BM25 over normalised terms: lowercase, no punctuation, no stopwords, Snowball stems if asked."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import snowballstemmer
from rank_bm25 import BM25Okapi

from shared.english import STOPWORDS

_WORD = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=1)
def _stemmer() -> snowballstemmer.stemmer:
    return snowballstemmer.stemmer("english")


def terms(text: str, stem: bool) -> list[str]:
    """The BM25 terms of `text`, Snowball-stemmed when `stem`."""
    words = [word for word in _WORD.findall(text.lower()) if word not in STOPWORDS]
    return list(_stemmer().stemWords(words)) if stem else words


class SparseIndex:
    """rank-bm25's Okapi BM25 over the chunks' terms.

    Persisted as the term lists and whether they are stemmed (JSON, no pickle): a question
    must be analysed as the chunks were, or its terms silently miss theirs.
    """

    FILE = "bm25.json"

    def __init__(self, corpus_terms: list[list[str]], stem: bool) -> None:
        self.corpus_terms = corpus_terms
        self.stem = stem
        self._bm25 = BM25Okapi([doc or ["\x00"] for doc in corpus_terms])

    @classmethod
    def build(cls, texts: list[str], stem: bool) -> SparseIndex:
        return cls([terms(text, stem) for text in texts], stem)

    def search(self, query: str, depth: int) -> list[tuple[int, float]]:
        """(row, score) of the best `depth` chunks sharing a term with the query, best first."""
        query_terms = terms(query, self.stem)
        if not query_terms:
            return []
        scores = self._bm25.get_scores(query_terms)
        order = np.argsort(-scores, kind="stable")[:depth]
        return [(int(row), float(scores[row])) for row in order if scores[row] > 0]

    def save(self, folder: Path) -> None:
        saved = {"stem": self.stem, "terms": self.corpus_terms}
        (folder / self.FILE).write_text(json.dumps(saved), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> SparseIndex:
        saved = json.loads((folder / cls.FILE).read_text(encoding="utf-8"))
        return cls(saved["terms"], bool(saved["stem"]))
