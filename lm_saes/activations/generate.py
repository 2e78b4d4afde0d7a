"""Run the model over packed contexts and collect activations at hooks, BOS dropped."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from lm_saes.activations.store import ActivationManifest, ShardWriter
from lm_saes.models import LanguageModel
from lm_saes.stores import ObjectStore


def iter_model_activations(
    model: LanguageModel, contexts: torch.Tensor, hooks: list[str], batch_contexts: int
) -> Iterator[dict[str, torch.Tensor]]:
    """One forward pass per batch of contexts, stopping at the deepest hook.

    Yields {hook: [n_tokens, d]} with BOS positions (context starts, document separators)
    removed: their activations are huge outliers that would dominate any SAE loss.
    """
    bos = model.tokenizer.bos_token_id
    for start in range(0, len(contexts), batch_contexts):
        batch = contexts[start : start + batch_contexts]
        acts = model.activations(batch, hooks)
        keep = (batch != bos).to(model.device)
        yield {hook: acts[hook][keep] for hook in hooks}


def generate_activations(
    model: LanguageModel,
    contexts: torch.Tensor,
    hooks: list[str],
    store: ObjectStore,
    batch_contexts: int = 16,
    shard_tokens: int = 65_536,
    dtype: str = "float32",
    progress: bool = True,
) -> ActivationManifest:
    """Write activation shards and the manifest for `contexts` [n, context_size]."""
    model.check_hooks(hooks)
    writer = ShardWriter(store, model.name, contexts.shape[1], dtype, shard_tokens)
    total = int((contexts != model.tokenizer.bos_token_id).sum())
    with tqdm(total=total, desc="activations", unit="tok", disable=not progress, smoothing=0.1) as bar:
        for acts in iter_model_activations(model, contexts, hooks, batch_contexts):
            writer.add(acts)
            bar.update(next(iter(acts.values())).shape[0])
    return writer.close(contexts, model.tokenizer.bos_token_id)
