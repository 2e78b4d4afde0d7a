"""Checkpoints in the object store: `checkpoints/step-00000100/{sae.*, trainer.pt, done}`.

`done` is written last, so a checkpoint interrupted mid-write is never picked for resuming.
A feature-sharded run (lm_saes.saes.sharding) writes, per shard, its feature rows and
`trainer-IIII-of-NNNN.pt` (its optimizer state and dead-latent counters); shard 0 adds the
replicated tensors, and rank 0 the spec and `done` once every shard has written.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

import torch

from lm_saes.saes.base import WEIGHTS_KEY, SparseAutoencoder
from lm_saes.saes.crosslayer import Dictionary
from lm_saes.saes.sharding import shard_files, shard_state
from lm_saes.stores import ObjectStore

if TYPE_CHECKING:
    from lm_saes.training.distributed import Distributed

ROOT = "checkpoints"
_STEP = re.compile(rf"^{ROOT}/step-(\d+)/done$")


def save_checkpoint(store: ObjectStore, step: int, sae: Dictionary, state: dict[str, Any]) -> str:
    prefix = _prefix(step)
    sae.save(store, prefix)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    store.put_bytes(f"{prefix}/trainer.pt", buffer.getvalue())
    store.put_bytes(f"{prefix}/done", b"")
    return prefix


def _prefix(step: int) -> str:
    return f"{ROOT}/step-{step:08d}"


def trainer_state_key(prefix: str, sae: Dictionary) -> str:
    if not sae.shard.sharded:
        return f"{prefix}/trainer.pt"
    return f"{prefix}/trainer-{sae.shard.index:04d}-of-{sae.shard.count:04d}.pt"


def save_checkpoint_shard(store: ObjectStore, step: int, sae: Dictionary, state: dict[str, Any]) -> None:
    """One feature shard's part of the checkpoint at `step` (not yet done)."""
    prefix = _prefix(step)
    sae.save(store, prefix)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    store.put_bytes(trainer_state_key(prefix, sae), buffer.getvalue())


def finish_checkpoint(store: ObjectStore, step: int, sae: Dictionary) -> str:
    """After every shard's `save_checkpoint_shard`: the spec, then `done`."""
    prefix = _prefix(step)
    sae.save_spec(store, prefix)
    store.put_bytes(f"{prefix}/done", b"")
    return prefix


def load_checkpoint_weights(store: ObjectStore, prefix: str, sae: Dictionary) -> dict[str, torch.Tensor]:
    """The state dict for `sae` (its own shard's, when sharded) from the checkpoint at `prefix`;
    a checkpoint of another shard count is refused with the setting to use."""
    if isinstance(sae, SparseAutoencoder) and (sae.shard.sharded or shard_files(store, prefix)):
        return shard_state(sae, store, prefix)
    return store.get_tensors(f"{prefix}/{WEIGHTS_KEY}")


def completed_steps(store: ObjectStore) -> list[int]:
    return sorted(int(m.group(1)) for key in store.list(ROOT) if (m := _STEP.match(key)))


def latest_checkpoint(store: ObjectStore) -> str | None:
    steps = completed_steps(store)
    return f"{ROOT}/step-{steps[-1]:08d}" if steps else None


def prune_checkpoints(store: ObjectStore, keep: int) -> None:
    for step in completed_steps(store)[:-keep]:
        store.delete_prefix(f"{ROOT}/step-{step:08d}")


def save_trained(store: ObjectStore, prefix: str, sae: Dictionary, dist: Distributed) -> None:
    """A finished SAE under `prefix`: written by rank 0, or by the feature shards of data-parallel
    rank 0 followed by rank 0's spec (so sae.json still means complete weights). Every rank calls."""
    if not sae.shard.sharded:
        if dist.is_main:
            sae.save(store, prefix)
        return
    if dist.dp_rank == 0:
        sae.save(store, prefix)
    dist.barrier()
    if dist.is_main:
        sae.save_spec(store, prefix)
    dist.barrier()
