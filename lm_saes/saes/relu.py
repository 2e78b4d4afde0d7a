"""ReLU SAE with an L1 penalty (Bricken et al. 2023; Anthropic's April 2024 recipe).

The penalty weighs each activation by its decoder row's norm, so the decoder needs no norm
constraint: shrinking a row cannot cheat the penalty. The L1 coefficient warms up linearly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from lm_saes.config import SAEConfigBase
from lm_saes.saes.base import ForwardOutput, SAESpec, SparseAutoencoder, TrainStepInfo
from lm_saes.saes.registry import register

DECODER_INIT_NORM = 0.1


class ReLUConfig(SAEConfigBase):
    architecture: Literal["relu"] = "relu"
    l1_coefficient: float = Field(5.0, ge=0, description="Penalty on the decoder-norm weighted L1")


if TYPE_CHECKING:

    class ReLUSpec(ReLUConfig, SAESpec):
        """What `spec_class(ReLUConfig)` makes at runtime, for the type checker."""


@register(ReLUConfig)
class ReLUSAE(SparseAutoencoder):
    constrain_decoder_norm = False
    spec: ReLUSpec  # built from `spec_class(ReLUConfig)`, which register() sets

    def __init__(self, spec: SAESpec):
        super().__init__(spec)
        with torch.no_grad():
            self.W_dec.mul_(DECODER_INIT_NORM)
            self.W_enc.mul_(DECODER_INIT_NORM)

    def activate(self, pre_acts: torch.Tensor) -> torch.Tensor:
        return pre_acts.relu()

    def training_forward(self, x: torch.Tensor, target: torch.Tensor, info: TrainStepInfo) -> ForwardOutput:
        x, target = self.scaled(x, target)
        acts = self.pre_acts(x).relu()
        l1 = self.shard.sum((acts * self.W_dec.norm(dim=1)).sum(-1).mean())
        penalty = self.spec.l1_coefficient * info.sparsity_warmup * l1
        return self.dense_output(acts, self.shard.sum(acts @ self.W_dec) + self.b_dec, target, "l1_penalty", penalty)
