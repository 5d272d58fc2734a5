"""Precision of the semantic cache on labelled question pairs: paraphrases vs near misses.

Stores every `a` of ../shared/data/cache-pairs/dev_pairs.jsonl in a real SemanticCache (a
redis-server of its own), looks up every `b`, and reports paraphrase-hit and false-hit rates
for plain MiniLM cosine (nearest neighbour >= threshold) and for ragq's lookup (nearest
neighbours >= threshold, then the verification stage) over a threshold sweep.

    .venv/bin/python bench/cache_precision.py [--pairs PATH] [--name RESULTS_NAME]

The held-out pairs: --pairs tests/web/data/cache_pairs_extra.jsonl --name cache_precision_extra
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.cache import Scope  # noqa: E402
from shared.embedding import Embedder  # noqa: E402
from shared.settings import CacheSettings  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from web.semantic_cache import SemanticCache  # noqa: E402

PAIRS = Path(__file__).resolve().parents[2] / "shared/data/cache-pairs/dev_pairs.jsonl"
THRESHOLDS = (0.80, 0.82, 0.85, 0.88, 0.90, 0.92, 0.95, 0.98)
RESULTS = Path(__file__).resolve().parent / "results"
SCOPE = Scope("bench", "bench", "v1", 5)


def plain_cosine(
    embedder: Embedder, rows: list[dict[str, Any]], questions: list[str]
) -> list[tuple[float, bool]]:
    """For each b: the best cosine over all stored a's and whether a hit there counts (for a
    paraphrase only its own a is right; for a near miss any hit is a false hit)."""
    stored = embedder.encode(questions)
    asked = embedder.encode([row["b"] for row in rows])
    scores = asked @ stored.T
    best = scores.argmax(axis=1)
    return [
        (float(scores[i, j]), questions[j] == row["a"] or not row["same_answer"])
        for i, (row, j) in enumerate(zip(rows, best, strict=True))
    ]


def rates(rows: list[dict[str, Any]], hits: list[bool]) -> tuple[float, float]:
    """Paraphrase-hit rate and false-hit rate."""
    para = [hit for row, hit in zip(rows, hits, strict=True) if row["same_answer"]]
    near = [hit for row, hit in zip(rows, hits, strict=True) if not row["same_answer"]]
    return sum(para) / len(para), sum(near) / len(near)


def ragq_hits(
    server: RedisServer,
    embedder: Embedder,
    rows: list[dict[str, Any]],
    questions: list[str],
    threshold: float,
) -> list[bool]:
    """Whether ragq's lookup answers each b with its own a's answer."""
    server.client().flushdb()
    cache = SemanticCache(
        CacheSettings(redis_url=server.url, similarity_threshold=threshold), embedder, server.url
    )
    vectors = embedder.encode(questions)
    for question, vector in zip(questions, vectors, strict=True):
        cache.store(question, SCOPE, vector, {"answer": question})
    hits = []
    for row in rows:
        result = cache.lookup(row["b"], SCOPE)
        own = result.payload is not None and result.payload["answer"] == row["a"]
        hits.append(result.hit and (own or not row["same_answer"]))
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--name", default="cache_precision", help="bench/results/NAME.json|md")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()]
    questions = sorted({row["a"] for row in rows})
    torch.set_num_threads(CacheSettings().embedding_threads)  # as a web process does
    embedder = Embedder("minilm")
    default = CacheSettings().similarity_threshold
    cosine = plain_cosine(embedder, rows, questions)
    table = []
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(
            Path(workdir), "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"
        ).start()
        try:
            for threshold in sorted({*THRESHOLDS, default}):
                plain = rates(rows, [score >= threshold and own for score, own in cosine])
                ours = rates(rows, ragq_hits(server, embedder, rows, questions, threshold))
                table.append(
                    {
                        "threshold": threshold,
                        "cosine_paraphrase_hit": plain[0],
                        "cosine_false_hit": plain[1],
                        "ragq_paraphrase_hit": ours[0],
                        "ragq_false_hit": ours[1],
                        "default": threshold == default,
                    }
                )
        finally:
            server.stop()
    write(table, rows, default, args.pairs, args.name)


def best_cosine_at(table: list[dict[str, Any]], false_rate: float) -> float:
    """Plain cosine's best paraphrase-hit rate among thresholds whose false-hit rate is <= `false_rate`."""  # noqa: E501
    eligible = [
        row["cosine_paraphrase_hit"] for row in table if row["cosine_false_hit"] <= false_rate
    ]
    return max(eligible, default=0.0)


def write(
    table: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    default: float,
    pairs: Path,
    name: str,
) -> None:
    chosen = next(row for row in table if row["default"])
    summary = {
        "pairs": len(rows),
        "paraphrases": sum(row["same_answer"] for row in rows),
        "near_misses": sum(not row["same_answer"] for row in rows),
        "default_threshold": default,
        "default_false_hit": chosen["ragq_false_hit"],
        "default_paraphrase_hit": chosen["ragq_paraphrase_hit"],
        "cosine_paraphrase_hit_at_same_false_rate": best_cosine_at(table, chosen["ragq_false_hit"]),
        "target_false_hit_at_most": 0.05,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"summary": summary, "sweep": table}, indent=2) + "\n"
    )
    lines = [
        "# Semantic cache precision (bench/cache_precision.py)",
        "",
        f"`{pairs.name}`: {summary['pairs']} labelled pairs ({summary['paraphrases']} paraphrases, {summary['near_misses']} near misses); "  # noqa: E501
        "every `a` stored, every `b` looked up. A paraphrase hit counts only when it returns b's own "  # noqa: E501
        "a's answer; for a near miss any hit is a false hit.",
        "",
        "| threshold | cosine: paraphrase hit | cosine: false hit | ragq: paraphrase hit | ragq: false hit |",  # noqa: E501
        "|---|---|---|---|---|",
    ]
    for row in table:
        mark = " (default)" if row["default"] else ""
        lines.append(
            f"| {row['threshold']:.2f}{mark} | {row['cosine_paraphrase_hit']:.2f} | {row['cosine_false_hit']:.2f} | "  # noqa: E501
            f"{row['ragq_paraphrase_hit']:.2f} | {row['ragq_false_hit']:.2f} |"
        )
    lines += [
        "",
        f"At the default {default:.2f}: ragq false hits {summary['default_false_hit']:.2f} (target <= 0.05), paraphrase hits "  # noqa: E501
        f"{summary['default_paraphrase_hit']:.2f}; plain cosine at a false-hit rate no higher than that hits "  # noqa: E501
        f"{summary['cosine_paraphrase_hit_at_same_false_rate']:.2f} of paraphrases (best threshold in the sweep).",  # noqa: E501
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
