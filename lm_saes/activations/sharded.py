"""Activation generation split into shards of the contexts, merged into one store.

Shard i runs a contiguous range of the batches one pass would run (`shard_range` over batches
of `batch_contexts`, so each forward pass sees the same contexts it would in one pass) into its
own part, `parts/part-000i/`, a complete store with its own manifest. The merge then writes
the top-level `contexts.safetensors` (the parts' contexts, in order) and a manifest listing every
part's storage shards under keys relative to the top: rows are in the order of their global
context, as one pass writes them, and `StoredActivations` (training) and `StoredRows`
(analysis) read the store like any other. The manifest is written last, as always.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch

from lm_saes.activations.generate import generate_activations
from lm_saes.activations.store import (
    CONTEXTS_KEY,
    MANIFEST_KEY,
    ActivationManifest,
    HookStats,
    ShardInfo,
    read_manifest,
)
from lm_saes.config import ModelConfig
from lm_saes.models import LanguageModel, load_language_model
from lm_saes.sharding import SPEC_KEY, ShardLedger, report_progress, run_shards, shard_command, shard_range
from lm_saes.stores import ObjectStore, open_store

PARTS = "parts"


def _part(index: int) -> str:
    return f"part-{index:04d}"


def generate_part(spec: dict[str, Any], index: int) -> None:
    """Shard `index` of a spec `generate_sharded_activations` wrote: its contexts into its part."""
    parts = open_store(spec["parts"])
    recorded = parts.get_tensors(CONTEXTS_KEY)
    contexts = recorded["tokens"].long()
    batch = int(spec["batch_contexts"])
    batches = shard_range(-(-len(contexts) // batch), index, int(spec["shards"]))
    mine = contexts[batches.start * batch : batches.stop * batch]
    model = load_language_model(ModelConfig.model_validate(spec["model"]))
    if model.tokenizer.bos_token_id != int(recorded["bos"][0]):
        raise ValueError(f"the contexts in {parts.uri} were packed for another tokenizer")
    store = parts.child(_part(index))
    store.delete_prefix("")  # a failed attempt's shards
    report_progress(parts, index, 0.0)
    generate_activations(
        model, mine, spec["hooks"], store, batch, int(spec["shard_tokens"]), spec["dtype"], progress=False
    )
    report_progress(parts, index, 1.0)


def activations_spec(
    parts: ObjectStore,
    model_config: ModelConfig,
    contexts: torch.Tensor,
    hooks: list[str],
    shards: int,
    batch_contexts: int,
    shard_tokens: int,
    dtype: str,
) -> dict[str, Any]:
    """What every shard process reads (the same from whoever computes it: a runner, a pod)."""
    return {
        "kind": "activations",
        "contexts_sha256": hashlib.sha256(contexts.to(torch.int32).contiguous().numpy().tobytes()).hexdigest(),
        "parts": parts.uri,
        "model": model_config.model_dump(mode="json"),
        "hooks": list(hooks),
        "shards": shards,
        "batch_contexts": batch_contexts,
        "shard_tokens": shard_tokens,
        "dtype": dtype,
    }


def publish_spec(parts: ObjectStore, spec: dict[str, Any], contexts: torch.Tensor, bos: int) -> None:
    """Write the spec and contexts shards read; parts left by other work are dropped first."""
    if parts.exists(SPEC_KEY) and parts.get_json(SPEC_KEY) != spec:
        parts.delete_prefix("")  # none of it is reusable
    parts.put_tensors(CONTEXTS_KEY, {"tokens": contexts.to(torch.int32), "bos": torch.tensor([bos])})
    parts.put_json(SPEC_KEY, spec)


def generate_sharded_activations(
    model: LanguageModel,
    model_config: ModelConfig,
    contexts: torch.Tensor,
    hooks: list[str],
    store: ObjectStore,
    shards: int,
    batch_contexts: int = 16,
    shard_tokens: int = 65_536,
    dtype: str = "float32",
    max_attempts: int = 3,
    on_shards: Callable[[ShardLedger], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ActivationManifest:
    """What `generate_activations` writes, from `shards` local processes (each retried alone
    when it fails); `model_config` is how they load `model`. Parts already done are kept."""
    model.check_hooks(hooks)
    parts = store.child(PARTS)
    spec = activations_spec(parts, model_config, contexts, hooks, shards, batch_contexts, shard_tokens, dtype)
    publish_spec(parts, spec, contexts, model.tokenizer.bos_token_id)
    run_shards(
        parts,
        shards,
        lambda index: shard_command(parts.uri, index),
        max_attempts=max_attempts,
        on_update=on_shards,
        should_stop=should_stop,
    )
    return merge_parts(store, shards)


def merge_parts(store: ObjectStore, shards: int) -> ActivationManifest:
    """One manifest (and contexts) over every part, rows in global context order."""
    manifests, contexts = [], []
    for index in range(shards):
        part = store.child(f"{PARTS}/{_part(index)}")
        manifest = read_manifest(part)
        if manifest is None or manifest.contexts is None:
            raise ValueError(f"shard {index} left no complete activation store at {part.uri}")
        manifests.append((index, manifest))
        contexts.append(part.get_tensors(manifest.contexts)["tokens"])
    filled = [(i, m) for i, m in manifests if m.n_tokens] or manifests[:1]  # more shards than batches: empty ones
    first = filled[0][1]
    for index, manifest in filled:
        same = (manifest.model, manifest.dtype, manifest.context_size, set(manifest.hooks))
        if same != (first.model, first.dtype, first.context_size, set(first.hooks)):
            raise ValueError(f"shard {index} wrote other activations than shard 0: {same}")
    bos = store.child(PARTS).get_tensors(CONTEXTS_KEY)["bos"]
    store.put_tensors(CONTEXTS_KEY, {"tokens": torch.cat(contexts), "bos": bos})
    merged = ActivationManifest(
        model=first.model,
        hooks={
            hook: _merge_stats([m.hooks[hook] for _, m in filled], [m.n_tokens for _, m in filled])
            for hook in first.hooks
        },
        dtype=first.dtype,
        context_size=first.context_size,
        n_tokens=sum(m.n_tokens for _, m in manifests),
        shards=[
            ShardInfo(key=f"{PARTS}/{_part(index)}/{s.key}", n_tokens=s.n_tokens)
            for index, m in manifests
            for s in m.shards
        ],
        created=datetime.now(UTC).isoformat(),
        contexts=CONTEXTS_KEY,
    )
    store.put_json(MANIFEST_KEY, merged.model_dump(mode="json"))
    return merged


def _merge_stats(stats: list[HookStats], counts: list[int]) -> HookStats:
    """Token-weighted norm statistics (equal to one pass's up to float rounding)."""
    total = max(sum(counts), 1)
    mean = sum(s.mean_norm * n for s, n in zip(stats, counts, strict=True)) / total
    rms = math.sqrt(sum(s.rms_norm**2 * n for s, n in zip(stats, counts, strict=True)) / total)
    return HookStats(d=stats[0].d, mean_norm=mean, rms_norm=rms)
