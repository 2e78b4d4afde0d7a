"""Feature-sharded (tensor-parallel) dictionaries: each rank of a feature group holds a slice
of the features, and the group together computes exactly what one process with the whole
dictionary computes.

Layout. With `n` shards of `d_sae` features, shard `i` holds features [i*d_sae/n, (i+1)*d_sae/n):
those rows of W_enc, b_enc, W_dec and of every other per-feature parameter an architecture
lists in `feature_params` (JumpReLU's thresholds). b_dec, the scales and scalar buffers are
replicated. The ranks of one feature group see the same rows of the batch; on a dp x fs mesh
each data-parallel replica is one such group.

Forward, per group:
1. `to_shards(x_in)`: identity forward; backward sums the input's gradient over the group,
   since each shard's encoder adds its part of d loss / d b_dec (Megatron's "f").
2. Local pre-activations [rows, d_sae/n].
3. Selection. TopK: each shard's top k per row is all-gathered and the top k of the n*k
   candidates is the global top k (a global winner is in its own shard's top k); each shard
   keeps the winners it owns. BatchTopK: the same over the flattened batch with the budget of
   the *global* batch, all-gathered over every rank (dp too), so dp x fs picks what one process
   with the whole batch picks; the threshold update takes the global minimum. aux-k: TopK's
   merge over the dead latents. JumpReLU and ReLU are elementwise: nothing to merge.
4. Decoder: the local partial reconstruction is `sum_shards`-ed (all-reduce forward, identity
   backward: every partial gets the full reconstruction's gradient, Megatron's "g"). Sums over
   features in a loss (L0, L1 penalties) are `sum_shards`-ed the same way.

Every rank of a group then holds the same reconstruction and loss. Per-feature parameters get
their exact gradients on their own shard; b_dec's gradient is the same on every shard, so the
trainer averages gradients over the data-parallel group only and the replicas stay equal.

On disk a shard writes `sae-features-IIII-of-NNNN.safetensors` (its feature rows) and shard 0
the replicated tensors as the usual `sae.safetensors`; `assembled_state` concatenates the
shards back into an ordinary state dict (what `load_sae` reads in one process).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from lm_saes.saes.sparse_ops import SparseCode

if TYPE_CHECKING:
    from lm_saes.saes.base import SparseAutoencoder
    from lm_saes.stores import ObjectStore

FEATURES_KEY = "sae-features-{index:04d}-of-{count:04d}.safetensors"
_FEATURES = re.compile(r"(?:^|/)sae-features-(\d{4})-of-(\d{4})\.safetensors$")


@dataclass(frozen=True)
class FeatureShard:
    """Which features this rank holds, and the process groups the merges run over."""

    index: int = 0
    count: int = 1
    group: Any = None  # ranks holding the other shards of the same rows (the mesh's "fs" axis)
    batch_index: int = 0  # this rank's data-parallel rank: where its rows sit in the global batch
    batch_count: int = 1
    batch_group: Any = None  # every rank (None: the default group); BatchTopK's budget is global
    replica_group: Any = None  # the ranks holding this shard's features for the other rows (dp)

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def global_batch(self) -> bool:
        """Whether batch-wide choices (BatchTopK's budget, aux-k's normalizer) span other ranks:
        with feature shards, or with data-parallel replicas of a whole dictionary."""
        return self.sharded or self.batch_count > 1

    def features(self, d_sae: int) -> slice:
        size = d_sae // self.count
        return slice(self.index * size, (self.index + 1) * size)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the group; the gradient passes through unchanged."""
        return _SumShards.apply(tensor, self.group) if self.sharded else tensor

    def to_shards(self, tensor: torch.Tensor) -> torch.Tensor:
        """Identity; the gradient is summed over the group."""
        return _ToShards.apply(tensor, self.group) if self.sharded else tensor

    @torch.no_grad()
    def total(self, tensor: torch.Tensor) -> torch.Tensor:
        """A no-grad sum over the group (counts, logged metrics)."""
        if not self.sharded:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    @torch.no_grad()
    def replica_share_of_variance(self, residual: torch.Tensor) -> torch.Tensor:
        """sum ||r - mean r||^2 over the global batch, divided by the data-parallel replicas:
        a loss normalized by it, averaged over replicas (as gradients are), is the global one."""
        if self.batch_count == 1:
            return (residual - residual.mean(0)).pow(2).sum()
        total = residual.sum(0)
        dist.all_reduce(total, group=self.replica_group)
        squares = (residual - total / (residual.shape[0] * self.batch_count)).pow(2).sum()
        dist.all_reduce(squares, group=self.replica_group)
        return squares / self.batch_count

    @torch.no_grad()
    def batch_min(self, values: torch.Tensor) -> torch.Tensor:
        """The smallest of `values` over every rank (+inf when all are empty)."""
        smallest = values.min() if values.numel() else values.new_tensor(float("inf"))
        smallest = smallest.clone().reshape(1)
        dist.all_reduce(smallest, op=dist.ReduceOp.MIN, group=self.batch_group)
        return smallest[0]


class _SumShards(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, group):
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ToShards(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


# --- the global top-k merge ---------------------------------------------------------------
def pick_global_topk(candidates: torch.Tensor, k: int) -> torch.Tensor:
    """[shards, rows, c] candidates -> [shards, rows, c] bool: the k largest of each row over
    all shards. Pure, so every rank that holds the same gathered tensor picks the same winners."""
    shards, rows, c = candidates.shape
    flat = candidates.permute(1, 0, 2).reshape(rows, shards * c)
    winners = flat.topk(k, dim=1, sorted=False).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, winners, True)
    return mask.reshape(rows, shards, c).permute(1, 0, 2)


def global_topk(values: torch.Tensor, k: int, group: Any) -> torch.Tensor:
    """[rows, c] local candidates -> which of them are among the k largest of the group's."""
    gathered = [torch.empty_like(values) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, values.contiguous(), group=group)
    return pick_global_topk(torch.stack(gathered), k)[dist.get_rank(group)]


def topk_code(pre: torch.Tensor, k: int, shard: FeatureShard) -> SparseCode:
    """Each row's global top k, as this shard's part (local feature indices)."""
    batch, width = pre.shape
    values, indices = pre.topk(min(k, width), dim=-1, sorted=False)
    keep = global_topk(values, k, shard.group)
    rows = torch.arange(batch, device=pre.device)[:, None].expand_as(indices)
    return SparseCode.from_flat_positions(values[keep], rows[keep] * width + indices[keep], batch, width)


def batch_topk_code(pre: torch.Tensor, k: int, shard: FeatureShard) -> SparseCode:
    """The global batch's k * rows largest positive activations, as this rank's part."""
    batch, width = pre.shape
    flat = pre.relu().flatten()
    budget = k * batch * shard.batch_count
    values, positions = flat.topk(min(budget, flat.numel()), sorted=False)
    world = dist.get_world_size(shard.batch_group)
    keep = global_topk(values[None], min(budget, world * values.numel()), shard.batch_group)[0] & (values > 0)
    return SparseCode.from_flat_positions(values[keep], positions[keep], batch, width)


# --- building, saving and assembling shards -----------------------------------------------
def shard_sae(sae: SparseAutoencoder, shard: FeatureShard) -> SparseAutoencoder:
    """Keep only `shard`'s features of a freshly built SAE (built whole, so every layout starts
    from the same initial weights as one process). Under plain data parallelism the SAE stays
    whole but learns its replica groups, so BatchTopK and aux-k see the global batch too."""
    if not shard.sharded:
        if shard.global_batch:  # whole dictionary, split batch: keep the groups for the merges
            sae.shard = shard
        return sae
    if sae.d_sae % shard.count:
        raise ValueError(f"train.feature_shards = {shard.count} must divide sae.d_sae = {sae.d_sae}")
    part = shard.features(sae.d_sae)
    for name in sae.feature_params:
        setattr(sae, name, nn.Parameter(getattr(sae, name).detach()[part].clone()))
    sae.shard = shard
    return sae


def _weights_key(prefix: str) -> str:
    from lm_saes.saes.base import WEIGHTS_KEY  # base imports this module

    return f"{prefix}/{WEIGHTS_KEY}" if prefix else WEIGHTS_KEY


def features_key(prefix: str, shard: FeatureShard) -> str:
    key = FEATURES_KEY.format(index=shard.index, count=shard.count)
    return f"{prefix}/{key}" if prefix else key


def save_shard(sae: SparseAutoencoder, store: ObjectStore, prefix: str = "") -> None:
    """This shard's feature rows, and from shard 0 the replicated tensors. The spec (sae.json)
    is written after every shard has saved (`SparseAutoencoder.save_spec`), by one rank."""
    state = {k: v.detach().cpu() for k, v in sae.state_dict().items()}
    store.put_tensors(features_key(prefix, sae.shard), {name: state.pop(name) for name in sae.feature_params})
    if sae.shard.index == 0:
        store.put_tensors(_weights_key(prefix), state)


def shard_files(store: ObjectStore, prefix: str = "") -> list[tuple[int, int, str]]:
    """(index, count, key) of the feature shards saved under `prefix`, in index order."""
    found = []
    start = f"{prefix}/" if prefix else ""
    for key in store.list(prefix):
        if key.startswith(start) and "/" not in key[len(start) :] and (m := _FEATURES.search(key)):
            found.append((int(m.group(1)), int(m.group(2)), key))
    return sorted(found)


def shard_state(sae: SparseAutoencoder, store: ObjectStore, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of `sae`'s own shard from a sharded save (checkpoint resume)."""
    counts = {count for _, count, _ in shard_files(store, prefix)}
    if counts != {sae.shard.count}:
        raise ValueError(
            f"{store.uri}/{prefix} was saved with {sorted(counts) or 'no'} feature shards, this run has "
            f"train.feature_shards = {sae.shard.count}; resume with the same train.feature_shards"
        )
    state = store.get_tensors(_weights_key(prefix))
    return {**state, **store.get_tensors(features_key(prefix, sae.shard))}


def assembled_state(store: ObjectStore, prefix: str = "") -> dict[str, torch.Tensor]:
    """An ordinary (whole-dictionary) state dict from a save, sharded or not."""
    state = store.get_tensors(_weights_key(prefix))
    files = shard_files(store, prefix)
    if not files:
        return state
    count = files[0][1]
    if [index for index, _, _ in files] != list(range(count)) or any(c != count for _, c, _ in files):
        raise ValueError(f"{store.uri}/{prefix} holds an incomplete set of feature shards: {[k for *_, k in files]}")
    parts = [store.get_tensors(key) for *_, key in files]
    return {**state, **{name: torch.cat([part[name] for part in parts]) for name in parts[0]}}
