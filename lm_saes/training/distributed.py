"""Data-parallel training over torch.distributed (gloo on CPU, NCCL on GPU).

Every rank reads the same deterministic global batch stream and trains on its own slice of each
batch; gradients are averaged across ranks before the optimizer step, so W ranks with global
batch B take the same steps as one process with batch B. Rank 0 alone writes checkpoints,
metrics and the final SAE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_rows(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch."""
        if not self.enabled:
            return batch
        size = batch.shape[0] // self.world
        return batch[self.rank * size : (self.rank + 1) * size]

    def average_gradients(self, params) -> None:
        if not self.enabled:
            return
        for param in params:
            if param.grad is not None:
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad /= self.world

    def any(self, mask: torch.Tensor) -> torch.Tensor:
        """Element-wise OR across ranks (e.g. which latents fired anywhere)."""
        if not self.enabled:
            return mask
        as_int = mask.to(torch.int32)
        dist.all_reduce(as_int, op=dist.ReduceOp.MAX)
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


def init_distributed(device: str = "cpu") -> Distributed:
    """Join the process group torchrun (or a test) set up; a single process otherwise."""
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return Distributed(dist.get_rank(), dist.get_world_size())
