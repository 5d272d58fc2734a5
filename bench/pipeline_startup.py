"""Worker-side cold start and first-token latency of the real pipeline on the sample corpus.

Each run is a fresh Python process (as a worker process would be): it reads the settings,
loads the pipeline (index, MiniLM, the configured generator from its cached copy) and answers
the sample questions, reporting time to first token (from the call to stream() to the first
text piece, retrieval included), tokens/s and the process's peak RSS. One unmeasured run
first makes sure the safetensors cache and the index exist. Targets: ready <= 10 s,
time to first token <= 2 s.

    .venv/bin/python bench/pipeline_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
QUESTIONS = (
    "Which port does Flower listen on?",
    "How do I cancel a running job?",
    "Why does ragq use two Redis instances?",
)
READY_TARGET_S = 10.0
TTFT_TARGET_S = 2.0


def child() -> dict[str, Any]:
    """Runs inside the fresh process: load, answer, measure."""
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from shared.settings import load_settings
    from worker.pipeline import load_pipeline
    from worker.pipeline.types import Answer, TokenItem

    imported = time.perf_counter()
    settings = load_settings().pipeline
    pipeline = load_pipeline(settings)
    ready = time.perf_counter()
    answers = []
    for question in QUESTIONS:
        asked = time.perf_counter()
        first = None
        for item in pipeline.stream(question, settings.top_k):
            if isinstance(item, TokenItem) and first is None:
                first = time.perf_counter() - asked
            if isinstance(item, Answer):
                answers.append(
                    {
                        "question": question,
                        "ttft_s": first,
                        "tokens_per_s": item.tokens_per_s,
                        "prompt_tokens": item.prompt_tokens,
                        "generated_tokens": item.generated_tokens,
                        "retrieval_s": item.retrieval_s,
                        "answer": item.answer,
                    }
                )
    return {
        "imports_s": imported - started,
        "settings_to_ready_s": ready - imported,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "answers": answers,
    }


def run_child() -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - started
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    first_ttft = [run["answers"][0]["ttft_s"] for run in runs]
    all_ttft = [a["ttft_s"] for run in runs for a in run["answers"]]
    return {
        "runs": len(runs),
        "settings_to_ready_s_median": statistics.median(r["settings_to_ready_s"] for r in runs),
        "imports_s_median": statistics.median(r["imports_s"] for r in runs),
        "first_question_ttft_s_median": statistics.median(first_ttft),
        "ttft_s_median": statistics.median(all_ttft),
        "ttft_s_max": max(all_ttft),
        "tokens_per_s_median": statistics.median(
            a["tokens_per_s"] for r in runs for a in r["answers"]
        ),
        "prompt_tokens_median": statistics.median(
            a["prompt_tokens"] for r in runs for a in r["answers"]
        ),
        "peak_rss_mb_median": statistics.median(r["peak_rss_mb"] for r in runs),
    }


def markdown(summary: dict[str, Any], sample_answers: list[dict[str, Any]]) -> str:
    ready, ttft = summary["settings_to_ready_s_median"], summary["ttft_s_median"]
    rows = [
        "# Pipeline cold start and time to first token (CPU, SmolLM2-135M, MiniLM)",
        "",
        f"Fresh processes: {summary['runs']}, {len(QUESTIONS)} questions each, sample corpus; "
        f"{summary['cpus']} CPUs, 1-minute load average {summary['load_average_1m_before']:.1f} "
        "before the runs (other work on the machine slows every figure).",
        "",
        "| measure | median | target |",
        "|---|---|---|",
        f"| settings to pipeline ready (cached weights) | {ready:.2f} s "
        f"| <= {READY_TARGET_S:.0f} s "
        f"({'met' if ready <= READY_TARGET_S else 'MISSED'}) |",
        f"| python imports before that | {summary['imports_s_median']:.2f} s | |",
        f"| time to first token, first question "
        f"| {summary['first_question_ttft_s_median']:.2f} s | |",
        f"| time to first token, all questions "
        f"| {ttft:.2f} s (max {summary['ttft_s_max']:.2f} s) | "
        f"<= {TTFT_TARGET_S:.0f} s ({'met' if ttft <= TTFT_TARGET_S else 'MISSED'}) |",
        f"| tokens/s | {summary['tokens_per_s_median']:.1f} | |",
        f"| prompt tokens | {summary['prompt_tokens_median']:.0f} | |",
        f"| peak RSS | {summary['peak_rss_mb_median']:.0f} MB | |",
        "",
        "Answers of the last run:",
        "",
    ]
    rows += [f"- **{a['question']}** {a['answer'][:200]!r}" for a in sample_answers]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child()))
        return
    if not (ROOT / "index" / "sample" / "manifest.json").exists():
        subprocess.run(["make", "index"], cwd=ROOT, check=True)
    run_child()  # warm-up: converts the GGUF once if the cache is empty; not measured
    load_before = os.getloadavg()[0]
    runs = [run_child() for _ in range(args.runs)]
    summary = {**summarise(runs), "cpus": os.cpu_count(), "load_average_1m_before": load_before}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline_startup.json").write_text(
        json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n"
    )
    (RESULTS / "pipeline_startup.md").write_text(markdown(summary, runs[-1]["answers"]))
    print(markdown(summary, runs[-1]["answers"]))


if __name__ == "__main__":
    main()
