"""Where dynamic int8 hurts the default generator, measured as divergence from fp32.

The generator (Qwen2.5-Coder-0.5B-Instruct, fp32 from the packaged GGUF) reads the v2 prompts
of SQuAD questions over their retrieved passages; each quantized copy reads the same prompts.
Over the last `--positions` positions of each prompt (where the answer's first token is
chosen) it reports the mean KL divergence of the copy's next-token distribution from fp32's
(nats) and the share of positions whose most likely token is fp32's. Copies: int8 as the
service runs it (every Linear layer, per-channel weights, dynamic per-tensor activations);
one group of layers alone int8; every layer but one group int8; and SmoothQuant (Xiao et al.
2023) before int8, its input ranges from the prompts of other questions (`--calibration`).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/quantization.py [--test 6] [--calibration 12]

Results: bench/results/quantization.{json,md}.

SmoothQuant: dynamic int8 quantizes each Linear layer's input with one scale, so a few input
channels that run far larger than the rest leave the others a handful of int8 steps.
Smoothing divides input channel j by s_j and multiplies the layer's weight column j by s_j,
which fp32 computes exactly as before: the division folds into the RMSNorm's weight (q/k/v,
gate/up) or into the up-projection's output row (down-projection). With
s_j = max|x_j|^α / max|W_j|^(1-α), the inputs' and weights' ranges meet halfway.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RESULTS = ROOT / "bench" / "results"
MIN_SCALE = 1e-5


class _Ranges:
    """Per-channel max |input| of the Linear layers it hooks, over every token it sees."""

    def __init__(self, modules: dict[str, torch.nn.Linear]) -> None:
        self.max: dict[str, torch.Tensor] = {}
        self.handles = [
            module.register_forward_hook(self._hook(name)) for name, module in modules.items()
        ]

    def _hook(self, name: str) -> Any:
        def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _: Any) -> None:
            seen = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
            self.max[name] = torch.maximum(self.max[name], seen) if name in self.max else seen

        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def input_ranges(
    model: Any, prompts: Iterable[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Per-channel max |input| of each decoder layer's q_proj, gate_proj and down_proj over
    `prompts` (model inputs, as the tokenizer's chat template gives them)."""
    watched = {
        f"{i}.{part}": module
        for i, layer in enumerate(model.model.layers)
        for part, module in (
            ("attn", layer.self_attn.q_proj),
            ("mlp", layer.mlp.gate_proj),
            ("down", layer.mlp.down_proj),
        )
    }
    ranges = _Ranges(watched)
    try:
        with torch.inference_mode():
            for inputs in prompts:
                model(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        ranges.remove()
    return ranges.max


def scales(activation: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """s_j = max|x_j|^α / max|W_j|^(1-α), W the layers that read x (columns j), kept ≥ 1e-5."""
    weight = torch.cat([w.detach().abs().float() for w in weights]).amax(0)
    ratio = activation.clamp(min=MIN_SCALE).pow(alpha) / weight.clamp(min=MIN_SCALE).pow(
        1 - alpha
    )
    return ratio.clamp(min=MIN_SCALE)


@torch.no_grad()
def smooth(model: Any, ranges: dict[str, torch.Tensor], alpha: float) -> None:
    """Fold the smoothing scales into `model` in place (fp32; the outputs do not change)."""
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        readers = [attn.q_proj, attn.k_proj, attn.v_proj]
        s = scales(ranges[f"{i}.attn"], [m.weight for m in readers], alpha)
        layer.input_layernorm.weight.div_(s.to(layer.input_layernorm.weight.dtype))
        for module in readers:
            module.weight.mul_(s.to(module.weight.dtype))
        s = scales(ranges[f"{i}.mlp"], [mlp.gate_proj.weight, mlp.up_proj.weight], alpha)
        layer.post_attention_layernorm.weight.div_(s.to(mlp.gate_proj.weight.dtype))
        mlp.gate_proj.weight.mul_(s)
        mlp.up_proj.weight.mul_(s)
        s = scales(ranges[f"{i}.down"], [mlp.down_proj.weight], alpha)
        mlp.up_proj.weight.div_(s[:, None])  # the down-projection's input is act(gate) · up
        mlp.down_proj.weight.mul_(s)


def _quantized(model: Any, chosen: Any) -> Any:
    """A copy of `model` with per-channel dynamic int8 on the Linear layers `chosen(name)`."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    copied = copy.deepcopy(model)
    names = {
        name: per_channel_dynamic_qconfig
        for name, module in copied.named_modules()
        if isinstance(module, torch.nn.Linear) and chosen(name)
    }
    quantize_dynamic(copied, names, dtype=torch.qint8, inplace=True)
    return copied


GROUPS = {
    "lm_head": ("lm_head",),
    "q/k/v": ("q_proj", "k_proj", "v_proj"),
    "o": ("o_proj",),
    "gate/up": ("gate_proj", "up_proj"),
    "down": ("down_proj",),
}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows of the table; the last one holds the down-projections' input ranges."""
    import prompt_variants as variants

    from shared.settings import load_settings
    from worker.pipeline.evaluation import answerable_questions
    from worker.pipeline.generator import Generator

    torch.manual_seed(0)
    settings = load_settings().pipeline.model_copy(
        update={"cpu_quantization": "none", "device": "cpu"}
    )
    generator = Generator(settings)
    squad, _ = variants._indexes("tokens")
    questions = [q.text for q in answerable_questions(variants.SQUAD)]

    def prompts(chosen: list[str]) -> list[dict[str, torch.Tensor]]:
        sources = variants._retrieved(squad, chosen, generator.tokenizer, settings.top_k)
        return [
            generator.encode_chat(variants.v2(q, s)) for q, s in zip(chosen, sources, strict=True)
        ]

    test = prompts(questions[: args.test])
    calibration = prompts(questions[100 : 100 + args.calibration])

    def logits(model: Any) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [
                model(**p, use_cache=False).logits[0, -args.positions :].float() for p in test
            ]

    reference = logits(generator.model)
    rows: list[dict[str, Any]] = []

    def compare(name: str, model: Any) -> None:
        kl, agree = [], []
        for ref, out in zip(reference, logits(model), strict=True):
            p, q = ref.log_softmax(-1), out.log_softmax(-1)
            kl.append(float((p.exp() * (p - q)).sum(-1).mean()))
            agree.append(float((ref.argmax(-1) == out.argmax(-1)).float().mean()))
        row = {"copy": name, "kl": round(sum(kl) / len(kl), 4),
               "top1_agree": round(sum(agree) / len(agree), 3)}
        print(json.dumps(row), flush=True)
        rows.append(row)

    compare(
        "int8, every Linear layer (PIPELINE_CPU_QUANTIZATION=int8)",
        _quantized(generator.model, bool),
    )
    for label, suffixes in GROUPS.items():
        compare(f"int8 on {label} alone", _quantized(generator.model, _ends(suffixes)))
    compare(
        "int8 but down (int8-fp32-down, the default)",
        _quantized(generator.model, _not(_ends(GROUPS["down"]))),
    )
    compare(
        "int8 but down and lm_head",
        _quantized(generator.model, _not(_ends(GROUPS["down"] + GROUPS["lm_head"]))),
    )
    ranges = input_ranges(generator.model, calibration)
    for alpha in args.alphas:
        smoothed = copy.deepcopy(generator.model)
        smooth(smoothed, ranges, alpha)
        compare(f"SmoothQuant α {alpha:g}, fp32 (must match fp32)", smoothed)
        compare(f"SmoothQuant α {alpha:g}, then int8", _quantized(smoothed, bool))
        compare(
            f"SmoothQuant α {alpha:g}, then int8 but down",
            _quantized(smoothed, _not(_ends(GROUPS["down"]))),
        )
        del smoothed
    ranges_row = {
        f"layer {i}": round(float(ranges[f"{i}.down"].max()), 1) for i in (0, 12, 23)
    }
    print(json.dumps({"down_proj input max |x|": ranges_row}))
    return [*rows, {"down_proj_input_max": ranges_row}]


def _ends(suffixes: tuple[str, ...]) -> Any:
    return lambda name: name.endswith(suffixes)


def _not(chosen: Any) -> Any:
    return lambda name: not chosen(name)


def write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import os

    *rows, ranges = rows
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "test_prompts": args.test,
            "positions": args.positions, "calibration_prompts": args.calibration,
            "load_avg": round(os.getloadavg()[0], 2)}
    (RESULTS / "quantization.json").write_text(
        json.dumps({**meta, "rows": rows, **ranges}, indent=1)
    )
    lines = [
        "# Where dynamic int8 hurts the default generator (`bench/quantization.py`)",
        "",
        f"{meta['date']}: Qwen2.5-Coder-0.5B-Instruct, the v2 prompts of the first "
        f"{args.test} answerable SQuAD questions over their retrieved passages, the last "
        f"{args.positions} positions of each; SmoothQuant calibrated on the prompts of "
        f"{args.calibration} other questions (100 onwards). KL: mean KL divergence of the "
        "copy's next-token distribution from fp32's, in nats; top-1: share of positions "
        "where the copy's likeliest token is fp32's.",
        "",
        "| copy | KL from fp32 | top-1 agrees |",
        "|---|---|---|",
        *(f"| {r['copy']} | {r['kl']:.3f} | {r['top1_agree']:.2f} |" for r in rows),
        "",
        "The down-projections' inputs over the calibration prompts, largest |x| of any "
        "channel: " + ", ".join(f"{k} {v:g}" for k, v in ranges["down_proj_input_max"].items())
        + ".",
        "",
    ]
    (RESULTS / "quantization.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=int, default=6, help="prompts compared")
    parser.add_argument("--positions", type=int, default=40)
    parser.add_argument("--calibration", type=int, default=12, help="SmoothQuant's prompts")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.8])
    args = parser.parse_args()
    write(run(args), args)


if __name__ == "__main__":
    main()
