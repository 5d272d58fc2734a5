from worker.pipeline.prompt import (
    INSTRUCTION,
    MIN_PASSAGE_TOKENS,
    NO_ANSWER,
    SYSTEM,
    build_messages,
    cited_numbers,
    fit_sources,
    mark_cited,
    strip_citations,
)
from worker.pipeline.types import Source

from .helpers import WhitespaceTokenizer


def _source(n: int, words: int) -> Source:
    return Source(
        chunk_id=f"c{n}", title=f"T{n}", text=" ".join(f"s{n}w{i}" for i in range(words)), score=1.0
    )


def test_sources_are_numbered_in_order() -> None:
    messages = build_messages("What?", [_source(1, 3), _source(2, 3)])
    assert messages[0] == {"role": "system", "content": SYSTEM}
    user = messages[1]["content"]
    assert (
        user.index("[1] T1\ns1w0")
        < user.index("[2] T2\ns2w0")
        < user.index(INSTRUCTION)
    )
    assert user.endswith(f"{INSTRUCTION}: What?")


def test_the_prompt_asks_for_cited_short_answers_from_the_sources_only() -> None:
    prompt = SYSTEM + INSTRUCTION
    assert "[n]" in prompt and "one or two sentences" in prompt and "sources only" in prompt
    # v3 does not ask for the no-answer sentence (docs/pipeline.md): it cost right answers.
    assert NO_ANSWER not in prompt


def test_citations_are_read_singly_listed_and_as_ranges() -> None:
    assert cited_numbers("Port 5555 [2]. It needs auth [1, 3].") == {1, 2, 3}
    assert cited_numbers("See [2-4].") == {2, 3, 4}
    assert cited_numbers("No markers, a list [a] or [ 1 ] is not one.") == set()


def test_cited_sources_are_marked_by_number() -> None:
    sources = [_source(1, 2), _source(2, 2), _source(3, 2)]
    marked = mark_cited(sources, "It is so [3], and [7] is no source.")
    assert [s.cited for s in marked] == [False, False, True]
    assert [s.chunk_id for s in marked] == ["c1", "c2", "c3"]


def test_stripped_citations_leave_plain_text() -> None:
    assert strip_citations("Flower listens on 5555 [1] [2, 3].") == "Flower listens on 5555 ."


def test_sources_that_fit_are_kept_whole() -> None:
    sources = [_source(1, 10), _source(2, 10)]
    assert fit_sources(sources, WhitespaceTokenizer(), budget=100) == sources


def test_overflowing_source_is_cut_to_the_budget_and_later_ones_dropped() -> None:
    # Each block costs 2 header tokens ("[n]", "Tn") plus its words.
    kept = fit_sources(
        [_source(1, 10), _source(2, 100), _source(3, 5)], WhitespaceTokenizer(), budget=60
    )
    assert [s.chunk_id for s in kept] == ["c1", "c2"]
    assert len(kept[1].text.split()) == 60 - 12 - 2
    assert kept[1].text.startswith("s2w0 s2w1")


def test_a_sliver_below_the_minimum_is_dropped() -> None:
    budget = 12 + 2 + MIN_PASSAGE_TOKENS - 1
    kept = fit_sources([_source(1, 10), _source(2, 100)], WhitespaceTokenizer(), budget=budget)
    assert [s.chunk_id for s in kept] == ["c1"]


def test_no_sources_says_so() -> None:
    assert "No sources were found." in build_messages("Why?", [])[-1]["content"]
