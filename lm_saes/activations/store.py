"""Activation shards in an object store: safetensors chunks plus a manifest written last.

Layout under a prefix:
    shard-00000.safetensors   one tensor per hook, [n_tokens, d], same rows for every hook
    ...
    contexts.safetensors      the token ids [n_contexts, context_size] the rows come from
    manifest.json             model, hooks (d, norm statistics), dtype, token counts, shards
A reader that finds manifest.json finds every shard it lists complete. The shards' rows are the
non-BOS positions of the recorded contexts, row by row, so a row's token, context and position
are known (analysis reads stored activations instead of running the model: `StoredRows`).
"""

from __future__ import annotations

import bisect
import math
from datetime import UTC, datetime

import torch
from pydantic import BaseModel

from lm_saes.dtypes import TORCH_DTYPES
from lm_saes.stores import ObjectNotFound, ObjectStore

MANIFEST_KEY = "manifest.json"
CONTEXTS_KEY = "contexts.safetensors"


class HookStats(BaseModel):
    d: int
    mean_norm: float  # mean over tokens of ||x||
    rms_norm: float  # sqrt(mean ||x||^2)


class ShardInfo(BaseModel):
    key: str
    n_tokens: int


class ActivationManifest(BaseModel):
    model: str
    hooks: dict[str, HookStats]
    dtype: str
    context_size: int
    n_tokens: int
    shards: list[ShardInfo]
    created: str
    contexts: str | None = None  # key of the recorded contexts; None in stores written before they were kept


class NormAccumulator:
    """Running sums for the manifest's per-hook norm statistics."""

    def __init__(self) -> None:
        self.count = 0
        self.norm_sum = 0.0
        self.sq_sum = 0.0

    def add(self, acts: torch.Tensor) -> None:
        norms = acts.float().norm(dim=-1)
        self.count += norms.numel()
        self.norm_sum += float(norms.sum())
        self.sq_sum += float(norms.pow(2).sum())

    def stats(self, d: int) -> HookStats:
        count = max(self.count, 1)
        return HookStats(d=d, mean_norm=self.norm_sum / count, rms_norm=math.sqrt(self.sq_sum / count))


class ShardWriter:
    """Buffers activation rows and writes fixed-size shards; `close` publishes the manifest."""

    def __init__(
        self, store: ObjectStore, model: str, context_size: int, dtype: str = "float32", shard_tokens: int = 65_536
    ):
        self.store = store
        self.model = model
        self.context_size = context_size
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.pending: dict[str, list[torch.Tensor]] = {}
        self.pending_tokens = 0
        self.shards: list[ShardInfo] = []
        self.norms: dict[str, NormAccumulator] = {}
        self.dims: dict[str, int] = {}

    def add(self, acts: dict[str, torch.Tensor]) -> None:
        """Rows for every hook, aligned: {hook: [n_tokens, d]}."""
        for hook, tensor in acts.items():
            self.pending.setdefault(hook, []).append(tensor.to("cpu", TORCH_DTYPES[self.dtype]))
            self.norms.setdefault(hook, NormAccumulator()).add(tensor)
            self.dims[hook] = tensor.shape[-1]
        self.pending_tokens += next(iter(acts.values())).shape[0]
        while self.pending_tokens >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n: int) -> None:
        rows = {hook: torch.cat(parts) for hook, parts in self.pending.items()}
        key = f"shard-{len(self.shards):05d}.safetensors"
        self.store.put_tensors(key, {hook: t[:n] for hook, t in rows.items()})
        self.shards.append(ShardInfo(key=key, n_tokens=n))
        self.pending = {hook: [t[n:]] for hook, t in rows.items()}
        self.pending_tokens -= n

    def close(self, contexts: torch.Tensor | None = None, bos: int | None = None) -> ActivationManifest:
        """Flush and publish the manifest; with `contexts` (and their BOS id), record them too."""
        if self.pending_tokens:
            self._flush(self.pending_tokens)
        contexts_key = None
        if contexts is not None:
            if bos is None:
                raise ValueError("recording contexts needs their BOS id (the positions the shards leave out)")
            n_rows = int(contexts.ne(bos).sum())
            if n_rows != sum(s.n_tokens for s in self.shards):
                raise ValueError(f"the contexts have {n_rows} non-BOS tokens, the shards hold other rows")
            self.store.put_tensors(CONTEXTS_KEY, {"tokens": contexts.to(torch.int32), "bos": torch.tensor([bos])})
            contexts_key = CONTEXTS_KEY
        manifest = ActivationManifest(
            model=self.model,
            hooks={hook: acc.stats(self.dims[hook]) for hook, acc in self.norms.items()},
            dtype=self.dtype,
            context_size=self.context_size,
            n_tokens=sum(s.n_tokens for s in self.shards),
            shards=self.shards,
            created=datetime.now(UTC).isoformat(),
            contexts=contexts_key,
        )
        self.store.put_json(MANIFEST_KEY, manifest.model_dump(mode="json"))
        return manifest


def read_manifest(store: ObjectStore) -> ActivationManifest | None:
    try:
        return ActivationManifest.model_validate(store.get_json(MANIFEST_KEY))
    except ObjectNotFound:
        return None


class StoredRows:
    """Random access to the rows of a store by row range, for reading context by context."""

    def __init__(self, store: ObjectStore, manifest: ActivationManifest, hooks: list[str]):
        self.store = store
        self.manifest = manifest
        self.hooks = hooks
        self.starts = [0]
        for shard in manifest.shards:
            self.starts.append(self.starts[-1] + shard.n_tokens)
        self._cached: tuple[int, dict[str, torch.Tensor]] | None = None

    def contexts(self) -> torch.Tensor:
        """The recorded [n_contexts, context_size] token ids (int64)."""
        if self.manifest.contexts is None:
            raise ValueError(f"the activations at {self.store.uri} record no contexts; regenerate them")
        return self.store.get_tensors(self.manifest.contexts)["tokens"].long()

    def _shard(self, index: int) -> dict[str, torch.Tensor]:
        if self._cached is None or self._cached[0] != index:
            tensors = self.store.get_tensors(self.manifest.shards[index].key)
            self._cached = (index, {hook: tensors[hook].float() for hook in self.hooks})
        return self._cached[1]

    def rows(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        """Rows [start, stop) of every hook, across shard boundaries."""
        parts: dict[str, list[torch.Tensor]] = {hook: [] for hook in self.hooks}
        index = bisect.bisect_right(self.starts, start) - 1  # the shard holding row `start`
        while start < stop:
            shard = self._shard(index)
            lo, hi = start - self.starts[index], min(stop, self.starts[index + 1]) - self.starts[index]
            for hook in self.hooks:
                parts[hook].append(shard[hook][lo:hi])
            start += hi - lo
            index += 1
        d = {hook: self.manifest.hooks[hook].d for hook in self.hooks}
        return {hook: torch.cat(p) if p else torch.zeros(0, d[hook]) for hook, p in parts.items()}
