"""Data-parallel and feature-sharded training over torch.distributed (gloo on CPU, NCCL on GPU).

The world is a 2-D mesh, data_parallel x feature_shards (`train.feature_shards`, 1 by default),
rank = dp_rank * feature_shards + fs_rank. Every rank reads the same deterministic global batch
stream and trains on its data-parallel slice of each batch; the feature_shards ranks of one
slice hold disjoint features of each dictionary and merge exactly (lm_saes.saes.sharding).
Gradients are averaged over the data-parallel group, so the mesh with global batch B takes the
same steps as one process with batch B. Rank 0 alone writes metrics and the checkpoints' and
final SAE's spec; the shards of data-parallel rank 0 write their features.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lm_saes.saes.sharding import FeatureShard


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    feature_shards: int = 1
    dp_group: Any = None  # ranks holding the same features (None: the whole world)
    fs_group: Any = None  # ranks splitting one dictionary over the same rows

    def __post_init__(self) -> None:
        check_feature_shards(self.feature_shards, self.world)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dp_rank(self) -> int:
        return self.rank // self.feature_shards

    @property
    def dp_world(self) -> int:
        return self.world // self.feature_shards

    @property
    def fs_rank(self) -> int:
        return self.rank % self.feature_shards

    def feature_shard(self) -> FeatureShard:
        """This rank's features of every dictionary, and the groups their merges use."""
        return FeatureShard(
            self.fs_rank, self.feature_shards, self.fs_group, self.dp_rank, self.dp_world, None, self.dp_group
        )

    def local_rows(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch (shared by the ranks of its feature group)."""
        if self.dp_world == 1:
            return batch
        size = batch.shape[0] // self.dp_world
        return batch[self.dp_rank * size : (self.dp_rank + 1) * size]

    def average_gradients(self, params) -> None:
        if self.dp_world == 1:
            return
        for param in params:
            if param.grad is not None:
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM, group=self.dp_group)
                param.grad /= self.dp_world

    def any(self, mask: torch.Tensor) -> torch.Tensor:
        """Element-wise OR over the data-parallel group (e.g. which of this rank's latents fired
        anywhere in the global batch)."""
        if self.dp_world == 1:
            return mask
        as_int = mask.to(torch.int32)
        dist.all_reduce(as_int, op=dist.ReduceOp.MAX, group=self.dp_group)
        return as_int.bool()

    def anyone(self, flag: bool) -> bool:
        """True on every rank when it is true on any: ranks agree on when to stop (a SIGTERM or a
        cancel may reach one rank only, and a rank that stops alone deadlocks the others)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean_(self, tensor: torch.Tensor) -> None:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= self.world

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def check_feature_shards(feature_shards: int, world: int) -> None:
    if feature_shards < 1 or world % feature_shards:
        raise ValueError(
            f"train.feature_shards = {feature_shards} must divide the world size {world} "
            "(ranks = data-parallel replicas x feature shards)"
        )


def mesh(rank: int, world: int, feature_shards: int = 1, device: str = "cpu") -> Distributed:
    """The dp x fs mesh over an initialized process group (a collective: every rank calls it)."""
    check_feature_shards(feature_shards, world)
    if feature_shards == 1:
        return Distributed(rank, world)
    from torch.distributed.device_mesh import init_device_mesh

    grid = init_device_mesh(
        "cuda" if device.startswith("cuda") else "cpu",
        (world // feature_shards, feature_shards),
        mesh_dim_names=("dp", "fs"),
    )
    return Distributed(rank, world, feature_shards, grid.get_group("dp"), grid.get_group("fs"))


def init_distributed(device: str = "cpu", feature_shards: int = 1) -> Distributed:
    """Join the process group torchrun (or a test) set up; a single process otherwise."""
    if dist.is_available() and dist.is_initialized():
        return mesh(dist.get_rank(), dist.get_world_size(), feature_shards, device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return mesh(0, 1, feature_shards, device)
    # On GPUs, CUDA tensors go over NCCL and the few CPU ones (the stop flag) over gloo.
    backend = "cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return mesh(dist.get_rank(), dist.get_world_size(), feature_shards, device)
