"""Continuous batching: many continuations, one forward of the plain HF model per step.

A server that generates for several users at once should not run them one after another, and
should not make a short request wait for a long one. `Batch` holds sequences of any length
and settings (each with its own interventions, sampler and seed) in one KV cache:

- a sequence joins between steps: its prompt is run on its own (left-padded among the others
  that joined with it) and its cache is merged into the batch's, every cache left-padded to the
  longest; an attention mask hides the padding and explicit position ids keep each sequence's
  own positions, so padding never changes what a sequence computes;
- each step runs the last token of every sequence; a finished (or dropped) sequence leaves the
  batch at once, and leading columns that only padding holds are cut away;
- interventions apply per row: each sequence's `Splice` sees only its own row and its own
  absolute positions, exactly as in a lone run.

Only the HF path batches (`Steerer.batchable`): the bridge runs attention in Python without
padding masks, and frozen attention needs the bridge. A batched continuation equals the lone
one up to float rounding of the batched matmuls (tests: ≤ 1e-4 on logits, same tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lm_saes.steering.runner import HFBackend, Hook
from lm_saes.steering.splice import Splice

if TYPE_CHECKING:
    from lm_saes.steering.generate import Continuation, Step


@dataclass
class _Row:
    key: Hashable
    continuation: Continuation
    splice: Splice | None
    prompt: list[int]
    length: int = 0  # tokens run so far: the absolute position of the next one
    last: int = -1  # the token the next step runs


@dataclass
class _Padded:
    """Rows of one forward: token ids left-padded to one length, with their mask and positions."""

    ids: torch.Tensor  # [rows, n]
    mask: torch.Tensor  # [rows, n] 1 where a real token is
    starts: list[int] = field(default_factory=list)  # column of each row's first real token


def _left_pad(prompts: Sequence[list[int]], pad: int, device: torch.device) -> _Padded:
    n = max(map(len, prompts))
    ids = torch.full((len(prompts), n), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), n), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, n - len(prompt) :] = torch.tensor(prompt)
        mask[row, n - len(prompt) :] = 1
    return _Padded(ids.to(device), mask.to(device), [n - len(p) for p in prompts])


def _row_hooks(per_row: Sequence[tuple[int, int, Sequence[Hook]]]) -> list[Hook]:
    """One hook per name applying each row's own hooks to that row (from its first real column)."""
    by_name: dict[str, list[tuple[int, int, Callable]]] = {}
    for row, start, hooks in per_row:
        for name, fn in hooks:
            by_name.setdefault(name, []).append((row, start, fn))

    def combined(fns: list[tuple[int, int, Callable]]) -> Callable[[torch.Tensor], torch.Tensor]:
        def hook(x: torch.Tensor) -> torch.Tensor:
            out = x.clone()
            for row, start, fn in fns:
                out[row : row + 1, start:] = fn(out[row : row + 1, start:])
            return out

        return hook

    return [(name, combined(fns)) for name, fns in by_name.items()]


class Batch:
    """Sequences stepped together: `add` any time, `step` advances each by one token.

    Not thread-safe: one owner (a server's generation thread) calls it, holding the model's
    lock around `step` (hooks are module state).
    """

    def __init__(self, backend: HFBackend, pad_id: int):
        self.backend = backend
        self.device = backend.model.device
        self.pad_id = pad_id
        self.rows: list[_Row] = []
        self.waiting: list[_Row] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # [rows, cached columns]

    def __len__(self) -> int:
        return len(self.rows) + len(self.waiting)

    def add(self, key: Hashable, continuation: Continuation, prompt: list[int], splice: Splice | None) -> None:
        """Queue a sequence; it joins at the next step."""
        if splice is not None and not self.backend.supports(splice.hook_names):
            raise ValueError(f"{splice.hook_names}: these hooks do not run on the HF path; generate unbatched")
        self.waiting.append(_Row(key, continuation, splice, prompt))

    def drop(self, keys: set[Hashable]) -> None:
        """Remove sequences (a cancelled request) before their end."""
        self.waiting = [r for r in self.waiting if r.key not in keys]
        self._keep([i for i, r in enumerate(self.rows) if r.key not in keys])

    @torch.no_grad()
    def step(self) -> list[tuple[Hashable, Step]]:
        """One token for every sequence (its first, for those that just joined)."""
        out: list[tuple[Hashable, Step]] = []
        if self.rows:
            out += self._decode()
        if self.waiting:
            joining, self.waiting = self.waiting, []
            out += self._prefill(joining)
        return out

    def _decode(self) -> list[tuple[Hashable, Step]]:
        assert self.mask is not None
        ids = torch.tensor([[r.last] for r in self.rows], device=self.device)
        positions = torch.tensor([[r.length] for r in self.rows], device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], 1)
        hooks = [(i, 0, r.splice.hooks(r.length, 1)) for i, r in enumerate(self.rows) if r.splice]
        logits, self.cache = self.backend.run(
            ids, self.cache, _row_hooks(hooks), True, attention_mask=self.mask, position_ids=positions
        )
        for r in self.rows:
            r.length += 1
        return self._emit(self.rows, logits[:, -1], list(range(len(self.rows))))

    def _prefill(self, joining: list[_Row]) -> list[tuple[Hashable, Step]]:
        padded = _left_pad([r.prompt for r in joining], self.pad_id, self.device)
        positions = (padded.mask.cumsum(-1) - 1).clamp_min(0)
        hooks = [
            (i, start, r.splice.hooks(0, len(r.prompt)))
            for i, (r, start) in enumerate(zip(joining, padded.starts, strict=True))
            if r.splice
        ]
        logits, cache = self.backend.run(
            padded.ids, None, _row_hooks(hooks), True, attention_mask=padded.mask, position_ids=positions
        )
        for r in joining:
            r.length = len(r.prompt)
        first = len(self.rows)
        self._merge(cache, padded.mask)
        self.rows += joining
        return self._emit(joining, logits[:, -1], list(range(first, first + len(joining))))

    def _emit(self, rows: list[_Row], logits: torch.Tensor, places: list[int]) -> list[tuple[Hashable, Step]]:
        out, keep = [], []
        for row, row_logits, place in zip(rows, logits.float(), places, strict=True):
            step = row.continuation.step(row_logits)
            out.append((row.key, step))
            if step.finish_reason is None:
                row.last = step.token_id
                keep.append(place)
        finished = set(places) - set(keep)
        if finished:
            self._keep([i for i in range(len(self.rows)) if i not in finished])
        return out

    def _merge(self, cache: Any, mask: torch.Tensor) -> None:
        """Append a prefilled cache's rows to the batch's, left-padding the shorter one."""
        if self.cache is None or self.mask is None or not self.rows:
            self.cache, self.mask = cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_columns(old.keys, width, 2), _pad_columns(new.keys, width, 2)])
            old.values = torch.cat([_pad_columns(old.values, width, 2), _pad_columns(new.values, width, 2)])
        self.mask = torch.cat([_pad_columns(self.mask, width, 1), _pad_columns(mask, width, 1)])

    def _keep(self, indices: list[int]) -> None:
        """Keep these rows of the batch (and its cache), then cut columns only padding holds."""
        if len(indices) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in indices]
        if not self.rows:
            self.cache, self.mask = None, None
            return
        assert self.mask is not None
        index = torch.tensor(indices, device=self.device)
        self.mask = self.mask[index]
        cut = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # leading all-padding columns
        self.mask = self.mask[:, cut:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, cut:]
            layer.values = layer.values[index, :, cut:]


def _pad_columns(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zeros on the left of dimension `dim` up to `width`."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim)
