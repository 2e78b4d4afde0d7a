"""Streaming per-feature statistics with memory bounded by features x examples, not tokens.

For every batch of contexts the collector receives the SAE's activations [B, T, F] (as sparse
(context, position, feature, value) entries) and keeps, per feature:
- the top-N contexts by their maximum activation (one entry per context, so one document
  cannot fill the list), each with the token window around the maximum and its activations;
- a bottom-k sample of contexts in each bucket of a fixed log-spaced activation grid, from which
  quantile samples (deciles of the final maximum) are drawn at the end;
- a histogram on the same grid plus the count of tokens where it was silent;
- counts, sums and maxima for density and mean activation.

The result does not depend on the order contexts arrive in, so collectors of disjoint shards
of the text `merge` into exactly what one pass over all of it keeps: top-N ties are broken by
the global context id, the samples' keys are hashes of (seed, feature, context id, position)
rather than draws from a stream, and activation sums are fixed-point integers (addition in
any order gives the same bits). Every update is vectorized over features; the state is a dict
of tensors, so a checkpoint is a `torch.save` of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import torch

GRID_LOW, GRID_HIGH, BINS_PER_OCTAVE = -6, 8, 4  # activation grid 2^-6 .. 2^8, quarter octaves
STATE_VERSION = 2  # 2: order-free (hash sample keys, fixed-point sums); checkpoints of 1 restart
SUM_SCALE = 2.0**24  # act_sum unit: 2^-24 (exact, associative; overflows past ~5e11 summed activation)
EMPTY_KEY = 2**62  # sample keys are 62-bit hashes; an empty slot's key sorts after every real one


def grid_edges() -> torch.Tensor:
    n = (GRID_HIGH - GRID_LOW) * BINS_PER_OCTAVE
    return 2.0 ** torch.linspace(GRID_LOW, GRID_HIGH, n + 1)


class Window(NamedTuple):
    tokens: torch.Tensor  # [..., W] token ids (-1 outside the context)
    acts: torch.Tensor  # [..., W] the feature's activation on each token


class FeatureCollector:
    def __init__(
        self,
        d_sae: int,
        top_n: int = 20,
        samples_per_bucket: int = 2,
        window_before: int = 16,
        window_after: int = 7,
        seed: int = 0,
    ):
        self.d_sae = d_sae
        self.top_n = top_n
        self.per_bucket = samples_per_bucket
        self.before, self.after = window_before, window_after
        self.width = window_before + 1 + window_after
        self.seed = seed
        self.edges = grid_edges()
        self.n_buckets = len(self.edges) + 1  # below the grid, the grid's bins, above it
        f, n, w, b, m = d_sae, top_n, self.width, self.n_buckets, samples_per_bucket
        self.state: dict[str, torch.Tensor] = {
            "tokens_seen": torch.zeros((), dtype=torch.long),
            "fire_count": torch.zeros(f, dtype=torch.long),
            "act_sum": torch.zeros(f, dtype=torch.long),  # in units of 1 / SUM_SCALE
            "max_act": torch.zeros(f),
            "histogram": torch.zeros(f, b, dtype=torch.long),
            # top-N rows sorted by (value descending, context id ascending); empty: value -1
            "top_vals": torch.full((f, n), -1.0),
            "top_ctx": torch.full((f, n), -1, dtype=torch.long),
            "top_tokens": torch.full((f, n, w), -1, dtype=torch.long),
            "top_acts": torch.zeros(f, n, w),
            # per (feature, bucket): the m smallest (key, context id), ascending; empty: EMPTY_KEY
            "sample_keys": torch.full((f * b, m), EMPTY_KEY, dtype=torch.long),
            "sample_vals": torch.zeros(f * b, m),
            "sample_ctx": torch.full((f * b, m), -1, dtype=torch.long),
            "sample_tokens": torch.full((f * b, m, w), -1, dtype=torch.long),
            "sample_acts": torch.zeros(f * b, m, w),
        }

    # --- update ------------------------------------------------------------------------
    def bucket(self, values: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(values, self.edges)

    def update(self, tokens: torch.Tensor, acts: torch.Tensor, valid: torch.Tensor, context_ids: torch.Tensor) -> None:
        """tokens [B, T]; acts [B, T, F] (zero at invalid positions); valid [B, T] (not BOS);
        context_ids [B]: each context's id in the whole text (unique; it breaks ties)."""
        s = self.state
        batch, length, _ = acts.shape
        s["tokens_seen"] += int(valid.sum())
        ctx, pos, feat = acts.nonzero(as_tuple=True)
        values = acts[ctx, pos, feat]
        s["fire_count"] += torch.bincount(feat, minlength=self.d_sae)
        fixed = (values.double() * SUM_SCALE).round().long()
        s["act_sum"] += torch.zeros(self.d_sae, dtype=torch.long).index_add_(0, feat, fixed)
        flat_hist = s["histogram"].view(-1)
        flat_hist += torch.bincount(feat * self.n_buckets + self.bucket(values), minlength=flat_hist.numel())
        s["max_act"] = torch.maximum(s["max_act"], torch.zeros(self.d_sae).scatter_reduce_(0, feat, values, "amax"))

        # one candidate per (context, feature): the context's maximum and its first position
        slot = ctx * self.d_sae + feat
        ctx_max = torch.zeros(batch * self.d_sae).scatter_reduce_(0, slot, values, "amax")
        is_max = values == ctx_max[slot]
        cand_pos = torch.full((batch * self.d_sae,), length, dtype=torch.long)
        cand_pos.scatter_reduce_(0, slot[is_max], pos[is_max], "amin")
        active = ctx_max.nonzero().squeeze(1)
        rows = active // self.d_sae
        cand = _Candidates(rows, active % self.d_sae, ctx_max[active], cand_pos[active], context_ids[rows].long())
        self._update_top(cand, tokens, acts)
        self._update_samples(cand, tokens, acts)

    def _windows(self, cand: _Candidates, tokens: torch.Tensor, acts: torch.Tensor) -> Window:
        length = tokens.shape[1]
        offsets = torch.arange(-self.before, self.after + 1)
        positions = cand.pos[:, None] + offsets  # [C, W]
        inside = (positions >= 0) & (positions < length)
        clamped = positions.clamp(0, length - 1)
        window_tokens = tokens[cand.ctx[:, None], clamped].masked_fill(~inside, -1)
        window_acts = acts[cand.ctx[:, None], clamped, cand.feat[:, None]].masked_fill(~inside, 0.0)
        return Window(window_tokens, window_acts)

    def _update_top(self, cand: _Candidates, tokens: torch.Tensor, acts: torch.Tensor) -> None:
        s = self.state
        n = self.top_n
        threshold = s["top_vals"][:, -1]
        keep = cand.value >= threshold[cand.feat]  # a tie with the n-th may still win on context id
        if not bool(keep.any()):
            return
        cand = cand.select(keep)
        # feature ascending, then value descending, then context id ascending; at most n each
        cand = cand.select(_lexsort([cand.gid, -cand.value, cand.feat]))
        cand = cand.select(_rank_within_groups(cand.feat) < n)
        window = self._windows(cand, tokens, acts)
        new = {"top_vals": cand.value, "top_ctx": cand.gid, "top_tokens": window.tokens, "top_acts": window.acts}
        self._keep(cand.feat, new, "top", n)

    def _update_samples(self, cand: _Candidates, tokens: torch.Tensor, acts: torch.Tensor) -> None:
        """Bottom-k hash keys per (feature, bucket): a uniform sample of each bucket's contexts
        that depends only on which contexts there are, not on the order they came in."""
        s = self.state
        m = self.per_bucket
        group = cand.feat * self.n_buckets + self.bucket(cand.value)
        keys = sample_keys(self.seed, cand.feat, cand.gid, cand.pos)
        worst = s["sample_keys"].max(dim=1).values
        keep = keys <= worst[group]
        if not bool(keep.any()):
            return
        cand, group, keys = cand.select(keep), group[keep], keys[keep]
        order = _lexsort([cand.gid, keys, group])
        cand, group, keys = cand.select(order), group[order], keys[order]
        first = _rank_within_groups(group) < m
        cand, group, keys = cand.select(first), group[first], keys[first]
        window = self._windows(cand, tokens, acts)
        new = {
            "sample_keys": keys,
            "sample_vals": cand.value,
            "sample_ctx": cand.gid,
            "sample_tokens": window.tokens,
            "sample_acts": window.acts,
        }
        self._keep(group, new, "sample", m)

    def _keep(self, group: torch.Tensor, new: dict[str, torch.Tensor], kind: str, width: int) -> None:
        """Fold new entries (sorted within each run of `group`, at most `width` per group) into
        the state rows `group` names, keeping each row's best `width` in its order."""
        s = self.state
        rows = torch.unique(group)
        slot_of = torch.full((s[f"{kind}_ctx"].shape[0],), -1, dtype=torch.long)
        slot_of[rows] = torch.arange(len(rows))
        r, c = slot_of[group], _rank_within_groups(group)
        padded = {}
        for key, values in new.items():
            block = _EMPTY[kind][key](torch.empty((len(rows), *s[key].shape[1:]), dtype=s[key].dtype))
            block[r, c] = values
            padded[key] = block
        merged = {key: torch.cat([s[key][rows], padded[key]], 1) for key in new}
        best = _row_order(merged, kind)[:, :width]
        for key, values in merged.items():
            index = best if values.dim() == 2 else best[..., None].expand(-1, -1, self.width)
            s[key][rows] = values.gather(1, index)

    # --- merge -------------------------------------------------------------------------
    def merge(self, others: Iterable[FeatureCollector]) -> FeatureCollector:
        """Fold collectors of other (disjoint) contexts into this one: exactly the state one
        pass over all of their contexts would hold. Returns self."""
        s = self.state
        for other in others:
            mine = (self.d_sae, self.top_n, self.per_bucket, self.before, self.after, self.seed)
            theirs = (other.d_sae, other.top_n, other.per_bucket, other.before, other.after, other.seed)
            if mine != theirs:
                raise ValueError(f"cannot merge collectors of different settings: {mine} vs {theirs}")
            o = other.state
            for key in ("tokens_seen", "fire_count", "act_sum", "histogram"):
                s[key] = s[key] + o[key]
            s["max_act"] = torch.maximum(s["max_act"], o["max_act"])
            for kind, width in (("top", self.top_n), ("sample", self.per_bucket)):
                keys = [k for k in s if k.startswith(f"{kind}_")]
                merged = {k: torch.cat([s[k], o[k]], 1) for k in keys}
                best = _row_order(merged, kind)[:, :width]
                for key, values in merged.items():
                    index = best if values.dim() == 2 else best[..., None].expand(-1, -1, self.width)
                    s[key] = values.gather(1, index)
        return self

    # --- results -----------------------------------------------------------------------
    def density(self) -> torch.Tensor:
        return self.state["fire_count"].double() / max(int(self.state["tokens_seen"]), 1)

    def mean_activation(self) -> torch.Tensor:
        return self.state["act_sum"].double() / SUM_SCALE / self.state["fire_count"].clamp_min(1)

    def quantile_samples(self, feature: int, intervals: int = 10, per_interval: int = 3) -> list[dict]:
        """Samples whose activation lies in each of `intervals` equal slices of (0, max]."""
        s = self.state
        top = float(s["max_act"][feature])
        if top <= 0:
            return []
        rows = slice(feature * self.n_buckets, (feature + 1) * self.n_buckets)
        filled = s["sample_keys"][rows] < EMPTY_KEY
        values = s["sample_vals"][rows][filled]
        tokens, acts = s["sample_tokens"][rows][filled], s["sample_acts"][rows][filled]
        ctx = s["sample_ctx"][rows][filled]
        out = []
        for i in range(intervals):
            low, high = top * i / intervals, top * (i + 1) / intervals
            inside = ((values > low) & (values <= high)).nonzero().squeeze(1)[:per_interval]
            out.append(
                {
                    "interval": [low, high],
                    "examples": [_example(float(values[j]), int(ctx[j]), tokens[j], acts[j]) for j in inside.tolist()],
                }
            )
        return out

    def top_examples(self, feature: int) -> list[dict]:
        s = self.state
        filled = (s["top_vals"][feature] > 0).nonzero().squeeze(1).tolist()
        return [
            _example(
                float(s["top_vals"][feature, j]),
                int(s["top_ctx"][feature, j]),
                s["top_tokens"][feature, j],
                s["top_acts"][feature, j],
            )
            for j in filled
        ]

    def histogram(self, feature: int) -> dict:
        counts = self.state["histogram"][feature]
        silent = int(self.state["tokens_seen"]) - int(self.state["fire_count"][feature])
        return {"edges": [0.0, *self.edges.tolist(), math.inf], "counts": counts.tolist(), "zero": silent}


class _Candidates(NamedTuple):
    ctx: torch.Tensor  # row in the batch
    feat: torch.Tensor
    value: torch.Tensor  # the context's maximum activation of the feature
    pos: torch.Tensor  # where that maximum first is
    gid: torch.Tensor  # the context's id in the whole text

    def select(self, index: torch.Tensor) -> _Candidates:
        return _Candidates(*(t[index] for t in self))


# What an empty slot holds, per state key (top: value -1; samples: EMPTY_KEY).
_EMPTY: dict[str, dict[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "top": {
        "top_vals": lambda t: torch.full_like(t, -1.0),
        "top_ctx": lambda t: torch.full_like(t, -1),
        "top_tokens": lambda t: torch.full_like(t, -1),
        "top_acts": torch.zeros_like,
    },
    "sample": {
        "sample_keys": lambda t: torch.full_like(t, EMPTY_KEY),
        "sample_vals": torch.zeros_like,
        "sample_ctx": lambda t: torch.full_like(t, -1),
        "sample_tokens": lambda t: torch.full_like(t, -1),
        "sample_acts": torch.zeros_like,
    },
}


def _row_order(merged: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """Per row, the column order of the state's invariant: top rows by (value descending,
    context id ascending), sample rows by (key, context id) ascending; empty slots last."""
    ctx = merged[f"{kind}_ctx"]
    first = torch.argsort(ctx, dim=1, stable=True)
    if kind == "top":
        primary = merged["top_vals"].gather(1, first)
        second = torch.argsort(primary, dim=1, descending=True, stable=True)
    else:
        primary = merged["sample_keys"].gather(1, first)
        second = torch.argsort(primary, dim=1, stable=True)
    return first.gather(1, second)


def _lexsort(keys: list[torch.Tensor]) -> torch.Tensor:
    """Indices sorting 1-D tensors lexicographically; the last key is the primary one."""
    order = torch.arange(len(keys[0]))
    for key in keys:
        order = order[torch.argsort(key[order], stable=True)]
    return order


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 whose outputs look uniform."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def sample_keys(seed: int, feature: torch.Tensor, context: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """62-bit keys, uniform-looking and a pure function of (seed, feature, context id, position):
    the bottom-k of them is a uniform sample whatever order candidates arrive in."""
    with np.errstate(over="ignore"):
        h = _mix(np.full(len(feature), seed % 2**64, dtype=np.uint64) ^ feature.numpy().astype(np.uint64))
        h = _mix(h ^ context.numpy().astype(np.uint64))
        h = _mix(h ^ position.numpy().astype(np.uint64))
    return torch.from_numpy((h >> np.uint64(2)).astype(np.int64))


def _rank_within_groups(sorted_groups: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... within each run of equal values of an already grouped 1-D tensor."""
    n = len(sorted_groups)
    if n == 0:
        return sorted_groups
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    start_index = torch.where(starts, torch.arange(n), torch.zeros(n, dtype=torch.long))
    return torch.arange(n) - torch.cummax(start_index, 0).values


def _example(value: float, context: int, tokens: torch.Tensor, acts: torch.Tensor) -> dict:
    inside = tokens >= 0
    return {
        "max_activation": value,
        "context": context,
        "token_ids": tokens[inside].tolist(),
        "activations": [round(a, 5) for a in acts[inside].tolist()],
    }
