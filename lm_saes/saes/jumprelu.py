"""JumpReLU SAE (Rajamanoharan et al. 2024): a latent fires when it exceeds its own threshold.

The threshold gets gradients through straight-through estimators with a rectangle kernel of
width `jumprelu_bandwidth`, both from the reconstruction (through the jump) and from the L0
penalty, which is what the paper trains with.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import nn

from lm_saes.config import SAEConfigBase
from lm_saes.saes.base import ForwardOutput, SAESpec, SparseAutoencoder, TrainStepInfo
from lm_saes.saes.registry import register


class JumpReLUConfig(SAEConfigBase):
    architecture: Literal["jumprelu"] = "jumprelu"
    l0_coefficient: float = Field(1.0, ge=0, description="Sparsity penalty on the expected L0")
    jumprelu_bandwidth: float = Field(0.05, gt=0, description="Straight-through kernel width")
    jumprelu_init_threshold: float = Field(0.01, ge=0, description="Every latent's first threshold")


if TYPE_CHECKING:

    class JumpReLUSpec(JumpReLUConfig, SAESpec):
        """What `spec_class(JumpReLUConfig)` makes at runtime, for the type checker."""


def _rectangle(z: torch.Tensor) -> torch.Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        grad_threshold = -(threshold / bw) * _rectangle((pre - threshold) / bw) * grad
        return grad_pre, grad_threshold.sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_threshold = -(1.0 / bw) * _rectangle((pre - threshold) / bw) * grad
        return None, grad_threshold.sum(0), None


def jump_relu(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """pre where it exceeds the threshold, else 0; the threshold's gradient is straight-through
    (summed over the leading batch dimension)."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """1 where pre exceeds the threshold: the L0 count, with a straight-through threshold gradient."""
    return _Step.apply(pre, threshold, bandwidth)


@register(JumpReLUConfig)
class JumpReLUSAE(SparseAutoencoder):
    spec: JumpReLUSpec  # built from `spec_class(JumpReLUConfig)`, which register() sets
    feature_params = (*SparseAutoencoder.feature_params, "log_threshold")

    def __init__(self, spec: JumpReLUSpec):
        super().__init__(spec)
        init = max(spec.jumprelu_init_threshold, 1e-6)
        self.log_threshold = nn.Parameter(torch.full((spec.d_sae,), math.log(init)))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def activate(self, pre_acts: torch.Tensor) -> torch.Tensor:
        pre = pre_acts.relu()
        return pre * (pre > self.threshold)

    def training_forward(self, x: torch.Tensor, target: torch.Tensor, info: TrainStepInfo) -> ForwardOutput:
        x, target = self.scaled(x, target)
        pre = self.pre_acts(x).relu()
        threshold = self.threshold
        bw = self.spec.jumprelu_bandwidth
        acts = jump_relu(pre, threshold, bw)
        l0_per_token = self.shard.sum(step(pre, threshold, bw).sum(-1).mean())
        sparsity = self.spec.l0_coefficient * info.sparsity_warmup * l0_per_token
        return self.dense_output(acts, self.shard.sum(acts @ self.W_dec) + self.b_dec, target, "l0_penalty", sparsity)
