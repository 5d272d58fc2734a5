"""Generators side by side: answer quality, speed and memory through ragq's own prompt.

Each configuration (a generator and its CPU quantization) runs in a fresh process, so its cold
start and peak RSS are its own, over the same questions, retrieval and prompt:

- SQuAD (../shared/data/squad-sample): the first N answerable questions (token F1, exact
  match and the share of answers that contain a gold answer, citation markers stripped before
  scoring) and the first M unanswerable ones (share answered with the fixed no-answer sentence),
  over an index of the sample's paragraphs;
- data/qa.jsonl: questions about ragq answered from its own documentation (share answered with
  every fact), over an index of docs/ and README.md.

It reports loops and finish reasons, time to first token (median; retrieval included), decode
tokens/s (median; tokens after the first over the time after it), cold start (loading the
pipeline from the converted model cache; the one-off conversion is done before timing) and
peak RSS. Configurations run one after the other on an otherwise idle generator; the machine's
load average is recorded, since both speed figures collapse when other work takes the cores.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generators.py [--configs a,b] [--squad 30]
        [--unanswerable 20] [--qa data/qa.jsonl] [--out generators]

A configuration is NAME=MODEL:QUANTIZATION, e.g. `qwen1.5b=/path/to/model:int8`; the named
ones are in CONFIGS. `--keep` keeps the previous results' rows of the configurations not run
this time (each row says when it was measured), to rerun one configuration alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SQUAD = ROOT.parent / "shared" / "data" / "squad-sample" / "squad_v2_dev_sample.json"
CORPUS = [ROOT / "docs", ROOT / "README.md"]
CONFIGS = {
    "smollm2-135m-fp32": ("smollm2", "none"),
    "qwen2.5-coder-0.5b-fp32": ("qwen2.5-coder-0.5b", "none"),
    "qwen2.5-coder-0.5b-int8": ("qwen2.5-coder-0.5b", "int8"),
    "qwen2.5-coder-0.5b-int8-fp32-down": ("qwen2.5-coder-0.5b", "int8-fp32-down"),
}
DEFAULT_CONFIGS = "smollm2-135m-fp32,qwen2.5-coder-0.5b-int8-fp32-down"


def _settings(model: str, quantization: str, index: Path) -> Any:
    from shared.settings import load_settings

    base = load_settings().pipeline
    return base.model_copy(
        update={"generator_model": model, "cpu_quantization": quantization, "index_dir": index}
    )


def _speed(answers: list[Any]) -> dict[str, float]:
    """Median time to first token and decode tokens/s of the answers that had tokens."""
    timed = [a for a in answers if a.generated_tokens > 1 and a.generation_s > a.ttft_s]
    decode = [(a.generated_tokens - 1) / (a.generation_s - a.ttft_s) for a in timed]
    return {
        "ttft_p50_s": round(statistics.median(a.ttft_s for a in timed), 3),
        "decode_tokens_per_s_p50": round(statistics.median(decode), 2),
    }


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the fresh process: load one configuration, answer everything, measure."""
    sys.path.insert(0, str(ROOT))
    from worker.pipeline.evaluation import (
        answerable_questions,
        evaluate_answers,
        evaluate_qa,
        load_qa,
        unanswerable_questions,
    )
    from worker.pipeline.pipeline import Pipeline
    from worker.pipeline.retrieval import load_retriever

    squad_settings = _settings(args.model, args.quantization, Path(args.squad_index))
    started = time.perf_counter()
    pipeline = Pipeline(squad_settings)
    cold_start = time.perf_counter() - started
    answers: list[Any] = []

    def ask(question: str) -> Any:
        answers.append(pipeline.query(question, squad_settings.top_k))
        return answers[-1]

    squad = evaluate_answers(
        ask,
        answerable_questions(SQUAD)[: args.squad],
        unanswerable_questions(SQUAD)[: args.unanswerable],
    )
    docs_settings = squad_settings.model_copy(update={"index_dir": Path(args.docs_index)})
    docs = load_retriever(docs_settings, "cpu", pipeline.retriever.embedder)
    # The default collection answers from corpora.default (f0a2a51), the pipeline's own index.
    pipeline.retriever = pipeline.corpora.default = docs
    qa = evaluate_qa(ask, load_qa(ROOT / args.qa))
    return {
        "cold_start_s": round(cold_start, 2),
        **_speed(answers),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "squad": squad,
        "qa": {key: value for key, value in qa.items() if key != "results"},
        "qa_results": qa["results"],
    }


def _build_indexes(folder: Path) -> tuple[Path, Path]:
    """The SQuAD sample's and the docs' indexes, built once for every configuration."""
    from shared.embedding import Embedder
    from shared.settings import load_settings
    from worker.pipeline.index import build_index

    settings = load_settings().pipeline
    embedder = Embedder(settings.embedding_model, "cpu")
    squad, docs = folder / "squad", folder / "docs"
    build_index([SQUAD], squad, settings, embedder, progress=False)
    build_index(CORPUS, docs, settings, embedder, progress=False)
    return squad, docs


def _resolve(spec: str) -> tuple[str, str, str]:
    name, _, target = spec.partition("=")
    if not target:
        model, quantization = CONFIGS[name]
    else:
        model, _, quantization = target.rpartition(":")
    return name, model, quantization


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    from shared.settings import load_settings
    from worker.pipeline.packaged import converted_copy

    cache_dir = load_settings().pipeline.model_cache_dir.expanduser()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ragq-bench-generators-") as folder:
        squad_index, docs_index = _build_indexes(Path(folder))
        for spec in args.configs.split(","):
            name, model, quantization = _resolve(spec)
            converted_copy(model, cache_dir)  # the one-off conversion stays out of cold start
            load = os.getloadavg()[0]
            command = [sys.executable, __file__, "--child", "--model", model,
                       "--quantization", quantization, "--squad-index", str(squad_index),
                       "--docs-index", str(docs_index), "--squad", str(args.squad),
                       "--unanswerable", str(args.unanswerable), "--qa", args.qa]
            out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
            row = {"config": name, "model": model, "quantization": quantization,
                   "measured": time.strftime("%Y-%m-%d %H:%M"),
                   "load_average_before": round(load, 2), **json.loads(out.stdout.splitlines()[-1])}
            print(json.dumps({k: v for k, v in row.items() if k != "qa_results"}), flush=True)
            rows.append(row)
    return rows


def _markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        f"# Generators (`bench/generators.py`)\n\n"
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores. SQuAD: the first {args.squad} "
        f"answerable and {args.unanswerable} unanswerable questions of the sample; docs: "
        f"`{args.qa}`. Citation markers are stripped before scoring. TTFT includes retrieval.\n\n"
        "| config | SQuAD F1 | EM | gold contained | abstention | docs facts | loops | "
        "length | TTFT p50 | decode tok/s p50 | cold start | peak RSS | load avg | measured |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        squad, qa = row["squad"], row["qa"]
        length = squad["finish_reasons"].get("length", 0) + qa["finish_reasons"].get("length", 0)
        lines.append(
            f"| {row['config']} | {squad['f1']:.3f} | {squad['exact_match']:.3f} | "
            f"{squad['gold_contained']:.3f} | {squad['abstention']:.3f} | "
            f"{qa['answered_with_facts']:.3f} | {squad['loops'] + qa['loops']} | {length} | "
            f"{row['ttft_p50_s']:.2f} s | {row['decode_tokens_per_s_p50']:.1f} | "
            f"{row['cold_start_s']:.1f} s | {row['peak_rss_mb']} MB | "
            f"{row['load_average_before']} | {row.get('measured', 'earlier run')} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--squad", type=int, default=30)
    parser.add_argument("--unanswerable", type=int, default=20)
    parser.add_argument("--qa", default="data/qa.jsonl")
    parser.add_argument("--out", default="generators", help="results file name, no suffix")
    parser.add_argument(
        "--keep", action="store_true", help="keep earlier rows of configurations not run now"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--quantization", help=argparse.SUPPRESS)
    parser.add_argument("--squad-index", help=argparse.SUPPRESS)
    parser.add_argument("--docs-index", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = run(args)
    previous = RESULTS / f"{args.out}.json"
    if args.keep and previous.exists():
        rerun = {row["config"] for row in rows}
        earlier = json.loads(previous.read_text())
        rows = [row for row in earlier if row["config"] not in rerun] + rows
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(_markdown(rows, args))
    print(_markdown(rows, args))


if __name__ == "__main__":
    main()
