"""Decoding-time grounding: pushing the generator's next-token choice towards its sources.

Two ways, measured in bench/results/prompt_variants.md (docs/pipeline.md, "Choosing the
generator and the prompt"):

- `cad`, context-aware decoding (Shi et al. 2023, "Trusting Your Evidence: Hallucinate Less
  with Context-aware Decoding"): each step's logits are (1 + α)·logits(with the sources) −
  α·logits(the question alone), so what the model would say without the sources counts
  against a token. The question-alone prompt is a second row of each decoding step's forward
  pass; both rows are fed the chosen token.
- `copy`, a source-copy bias: β added to the logits of every token id that occurs in the
  sources' text (not in their titles or the instruction); `copy_content` only to those of
  words and numbers (not punctuation or the commonest English function words).

Neither earned a setting (the answers grew no more grounded, and abstention or loops got
worse): the service decodes plainly, and `bench/prompt_variants.py --decoding` passes a
Grounding to `Generator.generate` to measure them again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList

from worker.pipeline.prompt import TextTokenizer
from worker.pipeline.types import Source

PLAIN_SYSTEM = "You are a helpful assistant. Answer briefly."
WORD = re.compile(r"\w[\w'-]*")
FUNCTION_WORDS = frozenset(
    WORD.findall(
        "a an and are as at be by for from had has have he her his in is it its of on or she "
        "that the their them they this to was were which who with"
    )
)


@dataclass(frozen=True)
class Grounding:
    """One generation's grounding: the mode, its strength (α or β), and what it grounds on."""

    mode: str  # none, cad, copy or copy_content
    strength: float
    question: str
    sources: Sequence[Source]


def plain_messages(question: str) -> list[dict[str, str]]:
    """The question without the sources or their instruction: context-aware decoding's
    contrast, what the model answers from its own weights."""
    return [{"role": "system", "content": PLAIN_SYSTEM}, {"role": "user", "content": question}]


def source_token_ids(
    tokenizer: TextTokenizer, sources: Sequence[Source], content_only: bool = False
) -> list[int]:
    """Token ids of the sources' text, as it is tokenized there and as each of its words is
    tokenized alone (with and without a leading space, as it starts an answer or follows a
    word); `content_only`: only tokens with a letter or digit that are not function words."""
    ids: set[int] = set()
    words: set[str] = set()
    for source in sources:
        ids.update(tokenizer.encode(source.text, add_special_tokens=False))
        words.update(WORD.findall(source.text))
    for word in words:
        ids.update(tokenizer.encode(word, add_special_tokens=False))
        ids.update(tokenizer.encode(" " + word, add_special_tokens=False))
    if content_only:
        ids = {i for i in ids if _content(str(tokenizer.decode([i], skip_special_tokens=True)))}
    return sorted(ids)


def _content(piece: str) -> bool:
    word = piece.strip().lower()
    return any(c.isalnum() for c in word) and word not in FUNCTION_WORDS


class SourceCopyBias(LogitsProcessor):
    """Adds `beta` to the logits of `token_ids` (the sources' tokens)."""

    def __init__(self, token_ids: Sequence[int], beta: float) -> None:
        self.token_ids = torch.tensor(list(token_ids), dtype=torch.long)
        self.beta = beta

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        biased = scores.clone()
        ids = self.token_ids.to(scores.device)
        biased[:, ids[ids < scores.shape[-1]]] += self.beta
        return cast(torch.FloatTensor, biased)


def contrast(with_sources: torch.Tensor, without: torch.Tensor, alpha: float) -> torch.Tensor:
    """Context-aware decoding's logits: (1 + α)·with − α·without."""
    return (1 + alpha) * with_sources.float() - alpha * without.float()


@dataclass
class ContrastiveRun:
    """What `decode_contrastive` needs besides the model: the two prompts (1, n), α, how to pick
    a token from processed logits, and the per-token callbacks of the caller's generation."""

    ids: torch.Tensor
    plain_ids: torch.Tensor
    alpha: float
    processors: LogitsProcessorList
    pick: Callable[[torch.Tensor], int]
    emit: Callable[[int], None]
    should_end: Callable[[torch.Tensor], bool]
    end_token_ids: set[int]
    max_new_tokens: int


def decode_contrastive(model: Any, run: ContrastiveRun) -> torch.Tensor:
    """Context-aware decoding of one answer; returns the prompt and the answer's ids (1, n).

    Each prompt is prefilled alone (the question-alone one is short), then their KV caches are
    padded on the left to one length and decoded as a batch of two, so a step reads the weights
    once for both rows."""
    rows = [run.ids, run.plain_ids]
    caches = [DynamicCache(config=model.config) for _ in rows]
    logits = [
        model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        for ids, cache in zip(rows, caches, strict=True)
    ]
    lengths = [int(ids.shape[1]) for ids in rows]
    cache, mask = _stack(caches, lengths)
    tokens: list[int] = run.ids[0].tolist()
    for generated in range(1, run.max_new_tokens + 1):
        ids = torch.tensor([tokens], device=run.ids.device)
        scores = run.processors(
            cast(torch.LongTensor, ids),
            cast(torch.FloatTensor, contrast(logits[0], logits[1], run.alpha)),
        )
        token = run.pick(scores)
        tokens.append(token)
        run.emit(token)
        if token in run.end_token_ids or generated >= run.max_new_tokens:
            break
        if run.should_end(torch.tensor([tokens])):
            break
        mask = torch.cat([mask, torch.ones((2, 1), dtype=mask.dtype, device=mask.device)], 1)
        positions = torch.tensor(
            [[length + generated - 1] for length in lengths], device=run.ids.device
        )
        out = model(
            input_ids=torch.tensor([[token], [token]], device=run.ids.device),
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        logits = [out.logits[0:1, -1, :], out.logits[1:2, -1, :]]
    return torch.tensor([tokens])


def _stack(caches: list[DynamicCache], lengths: list[int]) -> tuple[DynamicCache, torch.Tensor]:
    """The rows' caches as one, in the first's place, padded on the left to one length; and
    the attention mask that hides the padding."""
    width = max(lengths)
    for layers in zip(*(cache.layers for cache in caches), strict=True):
        keys = torch.cat([_pad_left(layer.keys, width) for layer in layers])
        values = torch.cat([_pad_left(layer.values, width) for layer in layers])
        layers[0].keys, layers[0].values = keys, values
    rows = [torch.ones((1, length), dtype=torch.long) for length in lengths]
    mask = torch.cat([F.pad(row, (width - row.shape[1], 0)) for row in rows])
    return caches[0], mask.to(keys.device)


def _pad_left(tensor: torch.Tensor | None, width: int) -> torch.Tensor:
    """A cache tensor (rows, heads, positions, dim) padded with zeros on the left to `width`."""
    assert tensor is not None, "a prefilled cache holds tensors"
    return F.pad(tensor, (0, 0, width - tensor.shape[2], 0))


def copy_bias(grounding: Grounding | None, tokenizer: TextTokenizer) -> list[LogitsProcessor]:
    """The source-copy bias of a `copy` grounding; nothing for the others."""
    if grounding is None or not grounding.mode.startswith("copy") or not grounding.sources:
        return []
    content_only = grounding.mode == "copy_content"
    ids = source_token_ids(tokenizer, grounding.sources, content_only)
    return [SourceCopyBias(ids, grounding.strength)]
