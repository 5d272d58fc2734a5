"""Continuous batching: the generations in flight decoded together, one token each per step.

A BatchDecoder owns one decode thread. A new generation (a row) is prefilled alone, exactly as
an unbatched `model.generate` would (so its first token is the same), then its KV cache joins the
batch's: both are padded on the left to one length and an attention mask hides the padding.
Every step feeds each row its last token in one forward pass; each row picks its next token
with the same logits processors as `model.generate`, then greedy or sampling, streams it
through its own TextIteratorStreamer and stops on its own: an end token, the token limit, or the
stop rules of its Generation (cancel, loop guard). A finished row leaves the batch at once and a
waiting one joins before the next step. A row whose prefill fails fails alone; a failed step
fails the rows it decoded (which row caused it cannot be told).

Why not transformers' own ContinuousBatchingManager (`generate_batch`): on this CPU with the
int8 model it measured barely faster than one generation after another, and its paged attention
changes every answer against `model.generate`; see docs/jobs.md, "Batched decoding".
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from transformers import DynamicCache, LogitsProcessorList, PreTrainedModel, TextIteratorStreamer
from transformers.cache_utils import DynamicLayer

from shared import metrics
from shared.errors import ModelError
from shared.settings import PipelineSettings

log = logging.getLogger(__name__)


class GeneratorLike(Protocol):
    """What batching needs of the generator (worker/pipeline/generator.py's Generator)."""

    @property
    def model(self) -> PreTrainedModel: ...

    @property
    def settings(self) -> PipelineSettings: ...

    @property
    def end_token_ids(self) -> set[int]: ...

    def decoding(self) -> dict[str, Any]:
        """The arguments `model.generate` decodes with."""
        ...


class GenerationLike(Protocol):
    """What a row of the batch needs of its generation (worker/pipeline/generator.py's
    Generation)."""

    @property
    def input_ids(self) -> torch.Tensor: ...

    @property
    def logits_processors(self) -> LogitsProcessorList: ...

    def should_end(self, ids: torch.Tensor) -> bool:
        """Whether the row's own stop rules end it after its tokens so far, `ids` (1, n)."""
        ...

    def finish(self, output: torch.Tensor | None, error: BaseException | None) -> None:
        """Record the row's end: its prompt and tokens (1, n), or the error it failed on."""
        ...


class Row:
    """One generation in the batch: its tokens so far and its streamer; `join()` waits for it."""

    def __init__(self, generation: GenerationLike, streamer: TextIteratorStreamer,
                 processors: Callable[[int], LogitsProcessorList]) -> None:
        self.generation = generation
        self.streamer = streamer
        self.ids: list[int] = generation.input_ids[0].tolist()
        self.prompt_tokens = len(self.ids)
        self.processors = processors(self.prompt_tokens)
        self.processors.extend(generation.logits_processors)
        self._done = threading.Event()

    @property
    def generated(self) -> int:
        return len(self.ids) - self.prompt_tokens

    def is_alive(self) -> bool:
        return not self._done.is_set()

    def join(self) -> None:
        self._done.wait()

    def add(self, token: int) -> None:
        self.ids.append(token)
        self.streamer.put(torch.tensor([token]))

    def end(self, error: BaseException | None = None) -> None:
        if self._done.is_set():
            return
        output = None if error is not None else torch.tensor([self.ids])
        self.generation.finish(output, error)
        self.streamer.end()
        self._done.set()


class TokenChooser:
    """Picks a row's next token as `model.generate` would with the generator's decoding
    arguments: the same logits processors (built by the model, as generate builds them), then
    argmax, or a draw when sampling."""

    def __init__(self, generator: GeneratorLike) -> None:
        self.model = generator.model
        self.config = copy.deepcopy(generator.model.generation_config)
        self.config.update(**generator.decoding())
        self.sample = bool(self.config.do_sample)

    def processors(self, prompt_tokens: int) -> LogitsProcessorList:
        """The processors of one row (some count from the end of its prompt)."""
        model = cast(Any, self.model)  # generate's own builder; no public equivalent
        processors = model._get_logits_processor(
            generation_config=self.config, input_ids_seq_length=prompt_tokens,
            device=str(self.model.device),
        )
        return cast(LogitsProcessorList, processors)

    def __call__(self, row: Row, logits: torch.Tensor) -> int:
        """`row`'s next token from its next-token `logits` (1, vocabulary)."""
        ids = torch.tensor([row.ids], device=logits.device)
        scores = row.processors(
            cast(torch.LongTensor, ids), cast(torch.FloatTensor, logits.float())
        )
        return self.pick(scores)

    def pick(self, scores: torch.Tensor) -> int:
        """The next token from processed `scores` (1, vocabulary): argmax, or a draw."""
        if self.sample:
            return int(torch.multinomial(torch.softmax(scores, dim=-1), 1)[0, 0])
        return int(scores.argmax(dim=-1)[0])


class BatchDecoder:
    """Decodes every submitted generation of one model together, at most `max_batch` at once."""

    def __init__(self, generator: GeneratorLike, max_batch: int) -> None:
        self.model = generator.model
        self.max_batch = max_batch
        self.max_new_tokens = generator.settings.max_new_tokens
        self.end_token_ids = generator.end_token_ids
        self.choose = TokenChooser(generator)
        layers = {type(layer).__name__ for layer in DynamicCache(config=self.model.config).layers}
        if layers - {DynamicLayer.__name__}:
            raise ModelError(f"batched decoding needs plain dynamic KV caches, not {layers}")
        self._waiting: deque[Row] = deque()
        self._rows: list[Row] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long)
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ragq-batch")
        self._thread.start()

    def submit(self, generation: GenerationLike, streamer: TextIteratorStreamer) -> Row:
        """Queue `generation` for the batch; it joins before the next step with room for it."""
        row = Row(generation, streamer, self.choose.processors)
        streamer.put(generation.input_ids.cpu())  # the prompt: skipped, as model.generate does
        with self._wake:
            self._waiting.append(row)
            self._wake.notify()
        return row

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                try:
                    self._admit()
                    if self._rows:
                        self._step()
                except Exception as error:  # else every stream would wait for good
                    log.exception("batched decoding failed", extra={"rows": len(self._rows)})
                    self._fail(self._rows, error)

    def _admit(self) -> None:
        """Prefill waiting rows while there is room; sleep while there is nothing to do."""
        with self._wake:
            while not self._rows and not self._waiting:
                self._wake.wait()
        while len(self._rows) < self.max_batch:
            with self._wake:
                if not self._waiting:
                    return
                row = self._waiting.popleft()
            self._prefill(row)

    def _prefill(self, row: Row) -> None:
        """Run the row's prompt alone; its first token, then its cache joins the batch's."""
        ids = row.generation.input_ids
        cache = DynamicCache(config=self.model.config)
        try:
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                             cache=cache, use_cache=True, logits_to_keep=1)
            self._advance(row, out.logits[:, -1, :])
            if not self._ended(row):
                self._join(row, cache)
        except Exception as error:  # this row's failure: the others go on
            log.warning("generation failed in prefill", extra={"error": repr(error)})
            row.end(error)

    def _advance(self, row: Row, logits: torch.Tensor) -> None:
        row.add(self.choose(row, logits))

    def _ended(self, row: Row) -> bool:
        """Whether the row is finished after its last token; ends it when it is."""
        try:
            done = (
                row.ids[-1] in self.end_token_ids
                or row.generated >= self.max_new_tokens
                or row.generation.should_end(torch.tensor([row.ids]))
            )
        except Exception as error:  # its stop check (a Redis read) failed: this row only
            row.end(error)
            return True
        if done:
            row.end()
        return done

    def _join(self, row: Row, cache: DynamicCache) -> None:
        """Add a prefilled row's cache to the batch's, both padded on the left to one length."""
        length = row.prompt_tokens
        mask = torch.ones((1, length), dtype=torch.long, device=self.model.device)
        if self._cache is None:
            self._cache, self._mask, self._rows = cache, mask, [row]
            return
        width = max(self._mask.shape[1], length)
        layers = list(zip(_layers(self._cache), _layers(cache), strict=True))
        joined = [  # all built before any is stored: a failure leaves the batch as it was
            (torch.cat([_pad_left(ours.keys, width), _pad_left(theirs.keys, width)]),
             torch.cat([_pad_left(ours.values, width), _pad_left(theirs.values, width)]))
            for ours, theirs in layers
        ]
        mask = torch.cat([_pad_left(self._mask, width), _pad_left(mask, width)])
        for (ours, _), (keys, values) in zip(layers, joined, strict=True):
            ours.keys, ours.values = keys, values
        self._mask = mask
        self._rows.append(row)

    def _step(self) -> None:
        """One token for every row, in one forward pass; finished rows leave the batch."""
        rows = self._rows
        metrics.BATCH_SIZE.observe(len(rows))
        started = time.perf_counter()
        device = self.model.device
        last = torch.tensor([[row.ids[-1]] for row in rows], device=device)
        positions = torch.tensor([[len(row.ids) - 1] for row in rows], device=device)
        mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long,
                                                 device=device)], dim=1)
        try:
            out = self.model(input_ids=last, attention_mask=mask, position_ids=positions,
                             cache=self._cache, use_cache=True)
            logits = out.logits[:, -1, :]
            for i, row in enumerate(rows):
                self._advance(row, logits[i : i + 1])
        except Exception as error:  # cannot tell which row caused it: the step's rows fail
            log.exception("batched decode step failed", extra={"rows": len(rows)})
            self._fail(rows, error)
            return
        self._mask = mask
        metrics.DECODE_TOKENS_PER_SECOND.set(len(rows) / (time.perf_counter() - started))
        keep = [i for i, row in enumerate(rows) if not self._ended(row)]
        if len(keep) < len(rows):
            self._keep(keep)

    def _fail(self, rows: list[Row], error: BaseException) -> None:
        """End `rows` with `error` and start the batch afresh."""
        for row in rows:
            row.end(error)
        self._rows, self._cache = [], None

    def _keep(self, keep: list[int]) -> None:
        """Drop the other rows from the batch, and the padding no remaining row needs."""
        if not keep:
            self._rows, self._cache = [], None
            return
        assert self._cache is not None
        self._rows = [self._rows[i] for i in keep]
        index = torch.tensor(keep, device=self._mask.device)
        self._mask = self._mask[index]
        padding = int((self._mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())
        self._mask = self._mask[:, padding:]
        for layer in _layers(self._cache):
            assert layer.keys is not None and layer.values is not None
            layer.keys = layer.keys[index, :, padding:, :]
            layer.values = layer.values[index, :, padding:, :]


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The cache's layers (the decoder checked at start that they are all DynamicLayers)."""
    return cast(list[DynamicLayer], cache.layers)


def _pad_left(tensor: torch.Tensor | None, width: int) -> torch.Tensor:
    """`tensor` padded with zeros on the left of its sequence axis to `width` positions (the
    last axis of a mask (rows, positions), the one before it of a cache (rows, heads, positions,
    dim))."""
    assert tensor is not None, "a prefilled cache holds tensors"
    if tensor.dim() == 2:
        return F.pad(tensor, (width - tensor.shape[1], 0))
    return F.pad(tensor, (0, 0, width - tensor.shape[2], 0))
