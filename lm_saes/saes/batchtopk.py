"""BatchTopK SAE (Bussmann et al. 2024): keep the `k * batch` largest activations of a batch.

Tokens share one budget, so easy tokens use fewer latents and hard ones more. At inference,
where there is no batch, a latent fires when its pre-activation exceeds `threshold`, a running
average of the smallest activation the batch selection kept during training.
"""

from __future__ import annotations

from typing import Literal

import torch

from lm_saes.saes.base import SAESpec
from lm_saes.saes.registry import register
from lm_saes.saes.sharding import batch_topk_code
from lm_saes.saes.sparse_ops import SparseCode
from lm_saes.saes.topk import TopKConfig, TopKSAE

THRESHOLD_MOMENTUM = 0.99


class BatchTopKConfig(TopKConfig):
    """The TopK knobs; `k` is the mean budget per token of a batch."""

    # A config names its own architecture (the registry's convention), narrowing TopK's Literal.
    architecture: Literal["batchtopk"] = "batchtopk"  # type: ignore[assignment]


@register(BatchTopKConfig)
class BatchTopKSAE(TopKSAE):
    threshold: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, spec: SAESpec):
        super().__init__(spec)
        self.register_buffer("threshold", torch.tensor(0.0))

    def activate(self, pre_acts: torch.Tensor) -> torch.Tensor:
        return pre_acts * (pre_acts > self.threshold)

    def select(self, pre_acts: torch.Tensor) -> SparseCode:
        if self.shard.global_batch:
            return batch_topk_code(pre_acts, self.spec.k, self.shard)
        batch, width = pre_acts.shape
        flat = pre_acts.relu().flatten()
        values, positions = flat.topk(min(self.spec.k * batch, flat.numel()), sorted=False)
        keep = values > 0
        return SparseCode.from_flat_positions(values[keep], positions[keep], batch, width)

    @torch.no_grad()
    def update_threshold(self, smallest_kept: torch.Tensor) -> None:
        if float(self.threshold) == 0.0:
            self.threshold.copy_(smallest_kept)
        else:
            self.threshold.mul_(THRESHOLD_MOMENTUM).add_((1 - THRESHOLD_MOMENTUM) * smallest_kept)

    def sparse_forward(self, x_scaled: torch.Tensor):
        code, pre, x_in = super().sparse_forward(x_scaled)
        if self.training and self.shard.global_batch:  # every rank takes the global batch's minimum
            smallest = self.shard.batch_min(code.values.detach())
            if bool(torch.isfinite(smallest)):
                self.update_threshold(smallest)
        elif self.training and code.values.numel():
            self.update_threshold(code.values.detach().min())
        return code, pre, x_in
