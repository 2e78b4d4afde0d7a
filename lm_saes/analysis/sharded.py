"""An analysis pass split into shards of its batches, each a local process, merged exactly.

Shards are contiguous ranges of the pass's batches (`shard_range` over batches, not contexts),
so every shard runs the very batches one pass would and computes the same activations; each
saves its collector's state under `OUTPUT/ANALYSIS_ID/parts/`, and the merge
(`FeatureCollector.merge`, order-free) gives the collector one pass would hold. The feature
documents are then written from it exactly as a single pass writes them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch

from lm_saes.analysis.analyze import PARTS_PREFIX, AnalysisPass, collect, new_collector, prepare_pass
from lm_saes.analysis.collector import STATE_VERSION, FeatureCollector
from lm_saes.config import AnalyzeConfig
from lm_saes.sharding import SPEC_KEY, ShardLedger, report_progress, run_shards, shard_command, shard_range


def _result_key(index: int, count: int) -> str:
    return f"shard-{index:04d}-of-{count:04d}.pt"


def analysis_spec(cfg: AnalyzeConfig, sae_location: str) -> dict[str, Any]:
    """What a shard process needs to redo its part of the pass."""
    return {"kind": "analysis", "config": cfg.model_dump(mode="json"), "sae": sae_location}


def analyze_part(spec: dict[str, Any], index: int) -> None:
    """Shard `index`: its batches into a fresh collector, saved (resumable from a checkpoint)."""
    cfg = AnalyzeConfig.model_validate(spec["config"])
    run = prepare_pass(cfg, spec["sae"])
    parts = run.store.child(PARTS_PREFIX.rstrip("/"))
    batches = shard_range(run.n_batches(cfg), index, cfg.shards)
    collector = new_collector(cfg, run.sae)
    key = _result_key(index, cfg.shards)
    collect(
        run,
        cfg,
        collector,
        batches,
        checkpoint_key=f"{PARTS_PREFIX}checkpoint-{key}",
        on_batch=lambda done, total: report_progress(parts, index, done / max(total, 1)),
    )
    buffer = io.BytesIO()
    torch.save({"fingerprint": run.fingerprint, "version": STATE_VERSION, "state": collector.state}, buffer)
    parts.put_bytes(key, buffer.getvalue())
    run.store.delete(f"{PARTS_PREFIX}checkpoint-{key}")


def analyze_in_shards(
    run: AnalysisPass,
    cfg: AnalyzeConfig,
    sae_location: str,
    on_shards: Callable[[ShardLedger], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[FeatureCollector, ShardLedger]:
    """Run the unfinished shards as local processes, then merge every shard's collector."""
    parts = run.store.child(PARTS_PREFIX.rstrip("/"))
    spec = analysis_spec(cfg, sae_location)
    if parts.exists(SPEC_KEY) and parts.get_json(SPEC_KEY) != spec:
        parts.delete_prefix("")  # shards of other settings (another count): none is reusable
    parts.put_json(SPEC_KEY, spec)
    ledger = run_shards(
        parts,
        cfg.shards,
        lambda index: shard_command(parts.uri, index),
        max_attempts=cfg.shard_attempts,
        on_update=on_shards,
        should_stop=should_stop,
    )
    return merge_parts(run, cfg), ledger


def merge_parts(run: AnalysisPass, cfg: AnalyzeConfig) -> FeatureCollector:
    """The merged collector of every shard's saved state (all must be there, of this pass)."""
    parts = run.store.child(PARTS_PREFIX.rstrip("/"))
    collectors = []
    for index in range(cfg.shards):
        saved = torch.load(io.BytesIO(parts.get_bytes(_result_key(index, cfg.shards))), weights_only=False)
        if saved["fingerprint"] != run.fingerprint or saved["version"] != STATE_VERSION:
            raise ValueError(f"shard {index} in {parts.uri} is of another pass; delete it and rerun")
        collector = new_collector(cfg, run.sae)
        collector.state = saved["state"]
        collectors.append(collector)
    return collectors[0].merge(collectors[1:])
