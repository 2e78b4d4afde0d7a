"""Checkpoints in the object store: `checkpoints/step-00000100/{sae.*, trainer.pt, done}`.

`done` is written last, so a checkpoint interrupted mid-write is never picked for resuming.
"""

from __future__ import annotations

import io
import re
from typing import Any

import torch

from lm_saes.saes.base import SparseAutoencoder
from lm_saes.stores import ObjectStore

ROOT = "checkpoints"
_STEP = re.compile(rf"^{ROOT}/step-(\d+)/done$")


def save_checkpoint(store: ObjectStore, step: int, sae: SparseAutoencoder, state: dict[str, Any]) -> str:
    prefix = f"{ROOT}/step-{step:08d}"
    sae.save(store, prefix)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    store.put_bytes(f"{prefix}/trainer.pt", buffer.getvalue())
    store.put_bytes(f"{prefix}/done", b"")
    return prefix


def completed_steps(store: ObjectStore) -> list[int]:
    return sorted(int(m.group(1)) for key in store.list(ROOT) if (m := _STEP.match(key)))


def latest_checkpoint(store: ObjectStore) -> str | None:
    steps = completed_steps(store)
    return f"{ROOT}/step-{steps[-1]:08d}" if steps else None


def prune_checkpoints(store: ObjectStore, keep: int) -> None:
    for step in completed_steps(store)[:-keep]:
        store.delete_prefix(f"{ROOT}/step-{step:08d}")
