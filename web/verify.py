"""Verification after the nearest-neighbour search: is the cached question the same question?

Sentence embeddings place "Who sold the rights?" next to "Who bought the rights?": one word
moves the answer and barely moves the vector. So a semantic candidate is only accepted when
the words that differ between the two questions are harmless. The guard aligns the two
questions word by word (exact, inflection, misspelling, abbreviation) and rejects the
candidate when what is left over changes the question:

- a number, number word or ordinal that the other question lacks;
- a different count of negations, or a word negated by a prefix (known / unknown);
- a different expected answer type (who / when / where / how many / why / what);
- a name (a capitalised word inside the sentence) that the other question lacks;
- a pair of opposites (before / after, buy / sell, more / less);
- a content word with no counterpart of similar meaning in the other question (a synonym
  passes; a different concept, such as "growth" for "unemployment", does not).

The word lists (shared/english.py: function words, number words, common opposites) are
general English, not taken from any evaluation set. Optionally a duplicate-question CrossEncoder
(CACHE_VERIFIER_MODEL) must agree as well.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Protocol

import numpy as np

from shared.english import (
    FUNCTION_WORDS,
    NEGATING_PREFIXES,
    NEGATIONS,
    NUMBER_WORDS,
    OPPOSITES,
    PLACE_NOUNS,
    QUANTITY_ADVERBS,
    TIME_NOUNS,
)

PERSON, TIME, PLACE, QUANTITY, REASON, MANNER, OTHER = (
    "person",
    "time",
    "place",
    "quantity",
    "reason",
    "manner",
    "other",
)

_CONTRACTIONS = (
    (re.compile(r"n['’]t\b", re.I), " not"),
    (re.compile(r"['’]s\b", re.I), ""),
    (re.compile(r"['’](re|ve|ll|d|m)\b", re.I), ""),
)
_TOKEN = re.compile(r"[A-Za-z]+(?:\.[A-Za-z])+\.?|[A-Za-z]+|\d+(?:[.,]\d+)*")
TOKENIZED_QUESTIONS = 4096  # memoised tokenizations: a cached question is met on many lookups
WORD_FORMS = 16_384  # memoised stem sets
WORD_VECTORS = 50_000  # memoised word vectors per process (384 floats each for MiniLM)


class WordSimilarity(Protocol):
    """Cosine similarity of two single words (the embedder serves it)."""

    def __call__(self, left: str, right: str) -> float: ...


class PairScorer(Protocol):
    """A duplicate-question classifier: probability that two questions ask the same."""

    def predict(self, pairs: list[tuple[str, str]]) -> Any: ...


@dataclass(frozen=True)
class Token:
    """One word: its lower-case text, whether it reads as a name, whether it was written as an
    acronym (LA, U.S.)."""

    text: str
    name: bool
    acronym: bool = False


@dataclass(frozen=True)
class Verdict:
    """The guard's decision and, when it rejects, why (for logs and the precision bench)."""

    same: bool
    reason: str = ""


@lru_cache(maxsize=TOKENIZED_QUESTIONS)
def tokenize(question: str) -> tuple[Token, ...]:
    """Words of a question: contractions expanded, hyphens split, abbreviations' dots removed."""
    text = question
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    tokens: list[Token] = []
    for position, match in enumerate(_TOKEN.finditer(text)):
        raw = match.group(0)
        word = raw.replace(".", "").lower() if "." in raw and not raw[0].isdigit() else raw.lower()
        capitalised = raw[:1].isupper() and (position > 0 or sum(c.isupper() for c in raw) > 1)
        acronym = len(word) >= 2 and ("." in raw or (raw.isupper() and not raw.isdigit()))
        tokens.append(Token(word, capitalised and word not in FUNCTION_WORDS, acronym))
    return tuple(tokens)


@lru_cache(maxsize=WORD_FORMS)
def base_forms(word: str) -> frozenset[str]:
    """The word and its likely stems (plural, past, gerund, comparative, adverb); memoised:
    aligning two questions compares every word with every other."""
    forms = {word}
    for suffix, replacement in (
        ("ies", "y"),
        ("ied", "y"),
        ("ier", "y"),
        ("iest", "y"),
        ("es", ""),
        ("s", ""),
        ("ed", ""),
        ("d", ""),
        ("ing", ""),
        ("ing", "e"),
        ("er", ""),
        ("r", ""),
        ("est", ""),
        ("st", ""),
        ("ly", ""),
        ("ally", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            forms.add(word[: len(word) - len(suffix)] + replacement)
    return frozenset(forms)


def _edit_distance_at_most_one(left: str, right: str) -> bool:
    if abs(len(left) - len(right)) > 1 or left == right:
        return left == right
    if len(left) == len(right):
        diffs = [i for i, (a, b) in enumerate(zip(left, right, strict=True)) if a != b]
        if len(diffs) == 1:
            return True
        first, *rest = diffs
        return (
            rest == [first + 1]
            and left[first] == right[first + 1]
            and left[first + 1] == right[first]
        )
    short, long_ = sorted((left, right), key=len)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def same_word(left: str, right: str, known: Callable[[str], bool]) -> bool:
    """Same word up to inflection, or a misspelling (one edit, one side not a known word)."""
    if left == right or base_forms(left) & base_forms(right):
        return True
    if min(len(left), len(right)) < 4 or left.isdigit() or right.isdigit():
        return False
    return (not known(left) or not known(right)) and _edit_distance_at_most_one(left, right)


def _abbreviates(short: str, words: Sequence[str]) -> bool:
    """`short` is built from prefixes of `words` in order (LA, U.S., SoCal, midpoint)."""
    if len(words) < 2 or not words[0] or not words[-1] or short[:1] != words[0][:1]:
        return False

    @cache
    def build(at: int, index: int, used: int) -> bool:
        if at == len(short):
            return index == len(words) and used >= 2
        if index == len(words):
            return False
        word = words[index]
        must_use = index in (0, len(words) - 1)
        if not must_use and build(at, index + 1, used):
            return True
        for size in range(1, len(word) + 1):
            if short[at : at + size] != word[:size]:
                break
            if build(at + size, index + 1, used + 1):
                return True
        return False

    return build(0, 0, 0)


def _abbreviation_span(short: str, words: Sequence[str]) -> range | None:
    """Where in `words` a run of two or more words abbreviates to `short`, if anywhere."""
    if len(short) < 2:
        return None
    for start in range(len(words)):
        for end in range(start + 2, min(len(words), start + 2 * len(short)) + 1):
            if _abbreviates(short, words[start:end]):
                return range(start, end)
    return None


def answer_type(tokens: Sequence[Token]) -> str:
    """What the question asks for, from its first question word."""
    words = [token.text for token in tokens]
    for index, word in enumerate(words):
        following = words[index + 1 : index + 3]
        if word in ("who", "whom", "whose"):
            return PERSON
        if word == "when":
            return TIME
        if word == "where":
            return PLACE
        if word == "why":
            return REASON
        if word == "how":
            return QUANTITY if following[:1] and following[0] in QUANTITY_ADVERBS else MANNER
        if word in ("what", "which"):
            if TIME_NOUNS & set(following):
                return TIME
            if PLACE_NOUNS & set(following):
                return PLACE
            return OTHER
    return OTHER


def _negations(tokens: Sequence[Token]) -> int:
    return sum(token.text in NEGATIONS for token in tokens)


def _prefix_negated(word: str, others: Sequence[str]) -> bool:
    """`word` is another word of the question negated by a prefix (unequal / equal)."""
    return any(
        word.startswith(prefix) and len(word) - len(prefix) >= 4 and word[len(prefix) :] in others
        for prefix in NEGATING_PREFIXES
    )


def _unmatched(
    tokens: Sequence[Token], others: Sequence[Token], known: Callable[[str], bool]
) -> set[int]:
    return {
        index
        for index, token in enumerate(tokens)
        if not any(same_word(token.text, other.text, known) for other in others)
    }


def _may_abbreviate(token: Token, known: Callable[[str], bool]) -> bool:
    """Acronyms (LA, U.S.) and unknown longer words (SoCal) may stand for several words."""
    return token.acronym or (len(token.text) >= 4 and not known(token.text))


def _absorb_abbreviations(
    short_side: Sequence[Token],
    short_free: set[int],
    long_side: Sequence[Token],
    long_free: set[int],
    known: Callable[[str], bool],
) -> None:
    """A free word that abbreviates a run of the other question's words accounts for both."""
    words = [token.text for token in long_side]
    for index in sorted(short_free):
        if not _may_abbreviate(short_side[index], known):
            continue
        span = _abbreviation_span(short_side[index].text, words)
        if span is not None:
            short_free.discard(index)
            long_free.difference_update(span)


def differing_words(
    left: Sequence[Token], right: Sequence[Token], known: Callable[[str], bool]
) -> tuple[list[Token], list[Token]]:
    """The words of each question that the other one does not account for."""
    left_free, right_free = _unmatched(left, right, known), _unmatched(right, left, known)
    _absorb_abbreviations(left, left_free, right, right_free, known)
    _absorb_abbreviations(right, right_free, left, left_free, known)
    return [left[i] for i in sorted(left_free)], [right[i] for i in sorted(right_free)]


_OPPOSITE_PAIRS = frozenset(OPPOSITES) | frozenset((b, a) for a, b in OPPOSITES)


def _opposite(left: str, right: str) -> bool:
    return any((a, b) in _OPPOSITE_PAIRS for a in base_forms(left) for b in base_forms(right))


def _is_number(word: str) -> bool:
    return word[:1].isdigit() or word in NUMBER_WORDS


def _content(tokens: Sequence[Token]) -> list[str]:
    """Differing words that name the subject (the answer-type nouns belong to the frame)."""
    frame = FUNCTION_WORDS | NEGATIONS | TIME_NOUNS | PLACE_NOUNS
    return [t.text for t in tokens if t.text not in frame]


class WordVectors:
    """Unit vectors of single words from the sentence embedder, memoised per word (LRU).

    Embedding is the verification's only costly step, and on a CPU one forward pass costs about
    the same for one word as for twenty (reading the weights dominates), so callers fetch every
    word they may need in one batch (`fetch`)."""

    def __init__(
        self, encode: Callable[[list[str]], np.ndarray], capacity: int = WORD_VECTORS
    ) -> None:
        self._encode = encode
        self._capacity = capacity
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # request threads of one web process share it

    def missing(self, words: Sequence[str]) -> list[str]:
        """The words (deduplicated) that would have to be embedded."""
        with self._lock:
            return [word for word in dict.fromkeys(words) if word not in self._vectors]

    def fetch(self, words: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors of `words`: memoised ones, the others embedded in one batch and memoised."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for word in dict.fromkeys(words):
                if word in self._vectors:
                    self._vectors.move_to_end(word)
                    found[word] = self._vectors[word]
        missing = [word for word in dict.fromkeys(words) if word not in found]
        if missing:
            fresh = dict(zip(missing, self._encode(missing), strict=True))
            found.update(fresh)
            with self._lock:
                self._vectors.update(fresh)
                while len(self._vectors) > self._capacity:
                    self._vectors.popitem(last=False)
        return found

    def similarity(self, left: Sequence[str], right: Sequence[str]) -> np.ndarray:
        """Cosine similarity of every word of `left` (rows) with every word of `right`."""
        vectors = self.fetch([*left, *right])
        lhs = np.stack([vectors[w] for w in left])
        rhs = np.stack([vectors[w] for w in right])
        return lhs @ rhs.T


@dataclass(frozen=True)
class Comparison:
    """What the rules make of two questions: the first rule that failed ("" when none did)
    and the differing content words left for the synonym check."""

    reason: str
    left: tuple[str, ...] = ()
    right: tuple[str, ...] = ()

    @property
    def words_to_embed(self) -> list[str]:
        """The words the synonym check will look up (none when one side has nothing left)."""
        return [*self.left, *self.right] if self.left and self.right else []


class WordGuard:
    """The rule-based check on the words that differ between two questions."""

    def __init__(
        self, vectors: WordVectors, known: Callable[[str], bool], synonym_similarity: float
    ) -> None:
        if not 0.0 < synonym_similarity <= 1.0:
            raise ValueError(f"synonym_similarity must be in (0, 1], got {synonym_similarity!r}")
        self._vectors = vectors
        self._known = known
        self._synonym = synonym_similarity

    def check(self, query: str, cached: str) -> Verdict:
        """Whether `query` asks what `cached` asked, judged on the words that differ."""
        return next(self.check_many(query, [cached]))

    def check_many(self, query: str, questions: Sequence[str]) -> Iterator[Verdict]:
        """`check` against each of `questions` in order, lazily. When a candidate needs word
        vectors not yet memoised, those of every later candidate come in the same batch."""
        comparisons: dict[int, Comparison] = {}

        def compared(index: int) -> Comparison:
            if index not in comparisons:
                comparisons[index] = self.compare(query, questions[index])
            return comparisons[index]

        for index in range(len(questions)):
            current = compared(index)
            if current.reason:
                yield Verdict(False, current.reason)
                continue
            if self._vectors.missing(current.words_to_embed):
                later = (compared(i) for i in range(index, len(questions)))
                self._vectors.fetch([w for c in later if not c.reason for w in c.words_to_embed])
            same = self._content_matches(current.left, current.right)
            yield Verdict(True) if same else Verdict(False, "content")

    def compare(self, query: str, cached: str) -> Comparison:
        """Every rule but the synonym check, which needs word vectors."""
        left, right = tokenize(query), tokenize(cached)
        left_free, right_free = differing_words(left, right, self._known)
        for reason, failed in (
            ("answer type", lambda: answer_type(left) != answer_type(right)),
            ("negation", lambda: self._negation_differs(left, right, left_free, right_free)),
            ("number", lambda: any(_is_number(t.text) for t in [*left_free, *right_free])),
            ("name", lambda: any(t.name for t in [*left_free, *right_free])),
            (
                "opposite",
                lambda: any(_opposite(a.text, b.text) for a in left_free for b in right_free),
            ),
        ):
            if failed():
                return Comparison(reason)
        return Comparison("", tuple(_content(left_free)), tuple(_content(right_free)))

    @staticmethod
    def _negation_differs(
        left: Sequence[Token],
        right: Sequence[Token],
        left_free: Sequence[Token],
        right_free: Sequence[Token],
    ) -> bool:
        if _negations(left) != _negations(right):
            return True
        right_words = [t.text for t in right]
        left_words = [t.text for t in left]
        return any(_prefix_negated(t.text, right_words) for t in left_free) or any(
            _prefix_negated(t.text, left_words) for t in right_free
        )

    def _content_matches(self, left: Sequence[str], right: Sequence[str]) -> bool:
        """Every differing content word has a counterpart of similar meaning on the other side."""
        if not left and not right:
            return True
        if not left or not right:
            return False
        similarity = self._vectors.similarity(left, right)
        return bool(
            similarity.max(axis=1).min() >= self._synonym
            and similarity.max(axis=0).min() >= self._synonym
        )


class Verifier:
    """The verification stage: the word guard, then the CrossEncoder when one is configured."""

    def __init__(
        self,
        guard: WordGuard | None,
        scorer: PairScorer | None = None,
        scorer_threshold: float = 0.5,
    ) -> None:
        self._guard = guard
        self._scorer = scorer
        self._threshold = scorer_threshold

    def check(self, query: str, cached: str) -> Verdict:
        """Accept `cached`'s answer for `query` only if every configured check agrees."""
        return next(self.check_many(query, [cached]))

    def check_many(self, query: str, questions: Sequence[str]) -> Iterator[Verdict]:
        """`check` against each of `questions` in order, lazily (stop at the first accepted)."""
        guarded = (
            self._guard.check_many(query, questions)
            if self._guard is not None
            else (Verdict(True) for _ in questions)
        )
        for question, verdict in zip(questions, guarded, strict=True):
            yield verdict if not verdict.same else self._score(query, question)

    def _score(self, query: str, cached: str) -> Verdict:
        if self._scorer is None:
            return Verdict(True)
        score = float(np.asarray(self._scorer.predict([(query, cached)])).reshape(-1)[0])
        if score < self._threshold:
            return Verdict(False, f"verifier score {score:.2f}")
        return Verdict(True)
