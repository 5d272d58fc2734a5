"""Retrieval quality on the SQuAD sample: the shipped defaults and a few principled variants.

Runs `ragq eval` (worker.pipeline.evaluation.run_eval) once per configuration, each into a
fresh temporary index: recall@1, recall@5 and MRR@10 of the paragraph holding the answer
over the answerable questions, for dense (MiniLM), sparse (BM25 on stemmed terms) and the
RRF hybrid. Target for the defaults: hybrid recall@1 >= 0.80 and recall@5 >= 0.96 (a plain
RRF of MiniLM and BM25 reaches 0.79 / 0.96). `--answers N` adds exact match, F1, time to
first token and tokens/s of SmolLM2 answers on the first N questions (defaults only).

    .venv/bin/python bench/pipeline_retrieval.py [--squad FILE] [--answers N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.settings import PipelineSettings  # noqa: E402
from worker.pipeline.evaluation import run_eval  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SQUAD = ROOT.parent / "shared" / "data" / "squad-sample" / "squad_v2_dev_sample.json"
TARGET = {"recall@1": 0.80, "recall@5": 0.96}
# name -> (why it is worth comparing, settings that differ from the defaults)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": ("shipped settings: 128-token chunks (MiniLM's training length), 1:1 RRF", {}),
    "chunks 200/40": (
        "the seed's chunk size: long paragraphs dilute MiniLM",
        {"chunk_tokens": 200, "chunk_overlap": 40},
    ),
    "RRF 0.5:1": (
        "weighted RRF: dense counts half (BM25 is the stronger list here)",
        {"rrf_dense_weight": 0.5},
    ),
    "HNSW": ("approximate dense search instead of exact", {"index_type": "hnsw"}),
}
STAGES = ("dense", "sparse", "hybrid")


def evaluate(squad: Path, overrides: dict[str, Any], answers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ragq-bench-") as folder:
        settings = PipelineSettings(**overrides, index_dir=Path(folder) / "index", device="cpu")
        return run_eval(squad, settings, answers)


def markdown(squad: Path, reports: dict[str, dict[str, Any]]) -> str:
    default = reports["defaults"]
    met = all(default["hybrid"][k] >= v for k, v in TARGET.items())
    rows = [
        "# Retrieval on the SQuAD v2 dev sample",
        "",
        f"`{squad.name}`: {default['answerable_questions']} answerable questions, "
        f"{default['paragraphs']} paragraphs. Relevance: the paragraph holding the answer.",
        f"Target (defaults, hybrid): recall@1 >= {TARGET['recall@1']}, "
        f"recall@5 >= {TARGET['recall@5']}: "
        f"**{'met' if met else 'MISSED'}**. Baseline (plain RRF of MiniLM + BM25): 0.79 / 0.96.",
        "",
        "| configuration | stage | recall@1 | recall@5 | mrr@10 | chunks |",
        "|---|---|---|---|---|---|",
    ]
    for name, report in reports.items():
        for stage in STAGES:
            m = report[stage]
            rows.append(
                f"| {name} | {stage} | {m['recall@1']:.4f} | {m['recall@5']:.4f} "
                f"| {m['mrr@10']:.4f} "
                f"| {report['chunks']} |"
            )
    rows += ["", "Why each variant:", ""]
    rows += [f"- **{name}**: {why}" for name, (why, _) in VARIANTS.items()]
    if "answers" in default:
        a = default["answers"]
        rows += [
            "",
            f"Answers ({a['model']}, first {a['questions']} questions, top_k "
            f"{default['settings']['top_k']}): exact match {a['exact_match']:.3f}, "
            f"F1 {a['f1']:.3f}, mean time to first token {a['mean_ttft_s']:.2f} s, "
            f"{a['mean_tokens_per_s']:.1f} tokens/s.",
        ]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, default=SQUAD)
    parser.add_argument("--answers", type=int, default=0)
    args = parser.parse_args()
    reports = {
        name: evaluate(args.squad, overrides, args.answers if name == "defaults" else 0)
        for name, (_, overrides) in VARIANTS.items()
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline_retrieval.json").write_text(json.dumps(reports, indent=2) + "\n")
    text = markdown(args.squad, reports)
    (RESULTS / "pipeline_retrieval.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
