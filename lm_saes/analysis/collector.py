"""Streaming per-feature statistics with memory bounded by features x examples, not tokens.

For every batch of contexts the collector receives the SAE's activations [B, T, F] (as sparse
(context, position, feature, value) entries) and keeps, per feature:
- the top-N contexts by their maximum activation (one entry per context, so one document
  cannot fill the list), each with the token window around the maximum and its activations;
- a bottom-k random sample of contexts in each bucket of a fixed log-spaced activation grid,
  from which quantile samples (deciles of the final maximum) are drawn at the end;
- a histogram on the same grid plus the count of tokens where it was silent;
- counts, sums and maxima for density and mean activation.
Every update is vectorized over features; the state is a dict of tensors, so a checkpoint is
a `torch.save` of it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

GRID_LOW, GRID_HIGH, BINS_PER_OCTAVE = -6, 8, 4  # activation grid 2^-6 .. 2^8, quarter octaves


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
        self.edges = grid_edges()
        self.n_buckets = len(self.edges) + 1  # below the grid, the grid's bins, above it
        self.generator = torch.Generator().manual_seed(seed)
        f, n, w, b, m = d_sae, top_n, self.width, self.n_buckets, samples_per_bucket
        self.state: dict[str, torch.Tensor] = {
            "tokens_seen": torch.zeros((), dtype=torch.long),
            "fire_count": torch.zeros(f, dtype=torch.long),
            "act_sum": torch.zeros(f, dtype=torch.float64),
            "max_act": torch.zeros(f),
            "histogram": torch.zeros(f, b, dtype=torch.long),
            "top_vals": torch.full((f, n), -1.0),
            "top_ctx": torch.full((f, n), -1, dtype=torch.long),
            "top_tokens": torch.full((f, n, w), -1, dtype=torch.long),
            "top_acts": torch.zeros(f, n, w),
            "sample_keys": torch.full((f * b, m), 2.0),  # bottom-k keys; 2.0 = empty
            "sample_vals": torch.zeros(f * b, m),
            "sample_ctx": torch.full((f * b, m), -1, dtype=torch.long),
            "sample_tokens": torch.full((f * b, m, w), -1, dtype=torch.long),
            "sample_acts": torch.zeros(f * b, m, w),
        }

    # --- update ------------------------------------------------------------------------
    def bucket(self, values: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(values, self.edges)

    def update(self, tokens: torch.Tensor, acts: torch.Tensor, valid: torch.Tensor, context_ids: torch.Tensor) -> None:
        """tokens [B, T]; acts [B, T, F] (zero at invalid positions); valid [B, T] (not BOS)."""
        s = self.state
        batch, length, _ = acts.shape
        s["tokens_seen"] += int(valid.sum())
        ctx, pos, feat = acts.nonzero(as_tuple=True)
        values = acts[ctx, pos, feat]
        s["fire_count"] += torch.bincount(feat, minlength=self.d_sae)
        s["act_sum"] += torch.zeros(self.d_sae, dtype=torch.float64).index_add_(0, feat, values.double())
        flat_hist = s["histogram"].view(-1)
        flat_hist += torch.bincount(feat * self.n_buckets + self.bucket(values), minlength=flat_hist.numel())
        s["max_act"] = torch.maximum(s["max_act"], torch.zeros(self.d_sae).scatter_reduce_(0, feat, values, "amax"))

        # one candidate per (context, feature): the context's maximum and where it is
        ctx_max = torch.zeros(batch * self.d_sae).scatter_reduce_(0, ctx * self.d_sae + feat, values, "amax")
        is_max = values == ctx_max[ctx * self.d_sae + feat]
        cand_pos = torch.zeros(batch * self.d_sae, dtype=torch.long)
        cand_pos[ctx[is_max] * self.d_sae + feat[is_max]] = pos[is_max]
        active = ctx_max.nonzero().squeeze(1)
        cand = _Candidates(active // self.d_sae, active % self.d_sae, ctx_max[active], cand_pos[active])
        self._update_top(cand, tokens, acts, context_ids)
        self._update_samples(cand, tokens, acts, context_ids)

    def _windows(self, cand: _Candidates, tokens: torch.Tensor, acts: torch.Tensor) -> Window:
        length = tokens.shape[1]
        offsets = torch.arange(-self.before, self.after + 1)
        positions = cand.pos[:, None] + offsets  # [C, W]
        inside = (positions >= 0) & (positions < length)
        clamped = positions.clamp(0, length - 1)
        window_tokens = tokens[cand.ctx[:, None], clamped].masked_fill(~inside, -1)
        window_acts = acts[cand.ctx[:, None], clamped, cand.feat[:, None]].masked_fill(~inside, 0.0)
        return Window(window_tokens, window_acts)

    def _update_top(self, cand: _Candidates, tokens, acts, context_ids) -> None:
        s = self.state
        n = self.top_n
        threshold = s["top_vals"][:, -1]
        keep = cand.value > threshold[cand.feat]
        if not bool(keep.any()):
            return
        cand = _Candidates(*(t[keep] for t in cand))
        # rank new candidates within their feature, keep at most n each
        by_value = torch.argsort(-cand.value, stable=True)
        cand = _Candidates(*(t[by_value] for t in cand))
        by_feature = torch.argsort(cand.feat, stable=True)  # feature ascending, value descending
        cand = _Candidates(*(t[by_feature] for t in cand))
        rank = _rank_within_groups(cand.feat)
        cand = _Candidates(*(t[rank < n] for t in cand))
        window = self._windows(cand, tokens, acts)
        feats = torch.unique(cand.feat)
        slot_of = torch.full((self.d_sae,), -1, dtype=torch.long)
        slot_of[feats] = torch.arange(len(feats))
        new_vals = torch.full((len(feats), n), -1.0)
        new_ctx = torch.full((len(feats), n), -1, dtype=torch.long)
        new_tok = torch.full((len(feats), n, self.width), -1, dtype=torch.long)
        new_act = torch.zeros(len(feats), n, self.width)
        rows, cols = slot_of[cand.feat], _rank_within_groups(cand.feat)
        new_vals[rows, cols] = cand.value
        new_ctx[rows, cols] = context_ids[cand.ctx]
        new_tok[rows, cols] = window.tokens
        new_act[rows, cols] = window.acts
        vals = torch.cat([s["top_vals"][feats], new_vals], 1)
        best = vals.topk(n, dim=1).indices  # [G, n]
        for key, new in (("top_vals", new_vals), ("top_ctx", new_ctx), ("top_tokens", new_tok), ("top_acts", new_act)):
            merged = torch.cat([s[key][feats], new], 1)
            index = best if merged.dim() == 2 else best[..., None].expand(-1, -1, self.width)
            s[key][feats] = merged.gather(1, index)

    def _update_samples(self, cand: _Candidates, tokens, acts, context_ids) -> None:
        """Bottom-k random keys per (feature, bucket): a uniform sample of each bucket's contexts."""
        s = self.state
        m = self.per_bucket
        group = cand.feat * self.n_buckets + self.bucket(cand.value)
        keys = torch.rand(len(group), generator=self.generator)
        worst = s["sample_keys"].max(dim=1).values
        keep = keys < worst[group]
        if not bool(keep.any()):
            return
        cand, group, keys = _Candidates(*(t[keep] for t in cand)), group[keep], keys[keep]
        order = torch.argsort(group.double() * 4 + keys.double())
        cand, group, keys = _Candidates(*(t[order] for t in cand)), group[order], keys[order]
        first = _rank_within_groups(group) < m
        cand, group, keys = _Candidates(*(t[first] for t in cand)), group[first], keys[first]
        window = self._windows(cand, tokens, acts)
        groups = torch.unique(group)
        slot_of = torch.full((s["sample_keys"].shape[0],), -1, dtype=torch.long)
        slot_of[groups] = torch.arange(len(groups))
        rows, cols = slot_of[group], _rank_within_groups(group)
        new = {
            "sample_keys": torch.full((len(groups), m), 2.0),
            "sample_vals": torch.zeros(len(groups), m),
            "sample_ctx": torch.full((len(groups), m), -1, dtype=torch.long),
            "sample_tokens": torch.full((len(groups), m, self.width), -1, dtype=torch.long),
            "sample_acts": torch.zeros(len(groups), m, self.width),
        }
        new["sample_keys"][rows, cols] = keys
        new["sample_vals"][rows, cols] = cand.value
        new["sample_ctx"][rows, cols] = context_ids[cand.ctx]
        new["sample_tokens"][rows, cols] = window.tokens
        new["sample_acts"][rows, cols] = window.acts
        smallest = torch.cat([s["sample_keys"][groups], new["sample_keys"]], 1).topk(m, dim=1, largest=False).indices
        for key, value in new.items():
            merged = torch.cat([s[key][groups], value], 1)
            index = smallest if merged.dim() == 2 else smallest[..., None].expand(-1, -1, self.width)
            s[key][groups] = merged.gather(1, index)

    # --- results -----------------------------------------------------------------------
    def density(self) -> torch.Tensor:
        return self.state["fire_count"].double() / max(int(self.state["tokens_seen"]), 1)

    def mean_activation(self) -> torch.Tensor:
        return self.state["act_sum"] / self.state["fire_count"].clamp_min(1)

    def quantile_samples(self, feature: int, intervals: int = 10, per_interval: int = 3) -> list[dict]:
        """Samples whose activation lies in each of `intervals` equal slices of (0, max]."""
        s = self.state
        top = float(s["max_act"][feature])
        if top <= 0:
            return []
        rows = slice(feature * self.n_buckets, (feature + 1) * self.n_buckets)
        filled = s["sample_keys"][rows] < 2.0
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
    pos: torch.Tensor  # where that maximum is


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
