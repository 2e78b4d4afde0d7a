"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations per token.

Training runs entirely on sparse kernels after the encoder matmul, and adds the aux-k loss:
the residual error is reconstructed from the top `aux_k` *dead* latents, which gives them a
gradient and revives them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator

from lm_saes.config import SAEConfigBase
from lm_saes.saes.base import ForwardOutput, SAESpec, SparseAutoencoder, TrainStepInfo
from lm_saes.saes.registry import register
from lm_saes.saes.sharding import topk_code
from lm_saes.saes.sparse_ops import SparseCode, select_pre_acts, sparse_decode


class TopKConfig(SAEConfigBase):
    architecture: Literal["topk"] = "topk"
    k: int = Field(32, ge=1, description="Active latents per token")
    aux_k: int | None = Field(None, description="Dead latents in the aux-k loss; default d_in // 2")
    aux_k_coefficient: float = Field(1 / 32, ge=0)

    @model_validator(mode="after")
    def _check_sizes(self) -> TopKConfig:
        if self.k > self.d_sae:
            raise ValueError(f"sae.k = {self.k} is more than sae.d_sae = {self.d_sae}; choose k <= d_sae")
        if self.aux_k is not None and self.aux_k > self.d_sae:
            raise ValueError(f"sae.aux_k = {self.aux_k} is more than sae.d_sae = {self.d_sae}")
        return self


if TYPE_CHECKING:

    class TopKSpec(TopKConfig, SAESpec):
        """What `spec_class(TopKConfig)` makes at runtime, for the type checker."""


@register(TopKConfig)
class TopKSAE(SparseAutoencoder):
    spec: TopKSpec  # built from `spec_class(TopKConfig)`, which register() sets

    def activate(self, pre_acts: torch.Tensor) -> torch.Tensor:
        values, indices = pre_acts.topk(self.spec.k, dim=-1, sorted=False)
        return torch.zeros_like(pre_acts).scatter_(-1, indices, values.relu())

    def select(self, pre_acts: torch.Tensor) -> SparseCode:
        """Which latents are active in training (no grad): the top k of each row."""
        return self.top_per_row(pre_acts, self.spec.k)

    def top_per_row(self, pre_acts: torch.Tensor, k: int) -> SparseCode:
        """The k largest of each row, over every shard of the dictionary."""
        if self.shard.sharded:
            return topk_code(pre_acts, k, self.shard)
        values, indices = pre_acts.topk(k, dim=-1, sorted=False)
        return SparseCode.from_topk(values, indices)

    def sparse_forward(self, x_scaled: torch.Tensor) -> tuple[SparseCode, torch.Tensor, torch.Tensor]:
        """Active code with grad, plus the no-grad pre-activations and the encoder input."""
        x_in = self.shard.to_shards(x_scaled - self.b_dec if self.apply_b_dec_to_input else x_scaled)
        with torch.no_grad():
            pre = torch.nn.functional.linear(x_in, self.W_enc, self.b_enc)
        chosen = self.select(pre)
        values = select_pre_acts(pre, chosen, x_in, self.W_enc, self.b_enc).relu()
        return chosen._replace(values=values), pre, x_in

    def training_forward(self, x: torch.Tensor, target: torch.Tensor, info: TrainStepInfo) -> ForwardOutput:
        x, target = self.scaled(x, target)
        code, pre, x_in = self.sparse_forward(x)
        recon = self.shard.sum(sparse_decode(code, self.W_dec)) + self.b_dec
        mse = self.mse(recon, target)
        losses = {"mse": mse}
        loss = mse
        if info.dead_mask is not None and bool(self.shard.total(info.dead_mask.sum()) > 0):
            aux = self.aux_k_loss(recon.detach() - target, pre, x_in, info.dead_mask)
            losses["aux_k"] = aux
            loss = loss + self.spec.aux_k_coefficient * aux
        fired = torch.zeros(self.local_d_sae, dtype=torch.bool, device=x.device)
        fired[code.indices[code.values > 0]] = True
        l0 = self.shard.total((code.values > 0).sum()) / x.shape[0]
        return ForwardOutput(recon, loss, {k: v.detach() for k, v in losses.items()}, fired, l0.detach())

    def aux_k_loss(
        self, error: torch.Tensor, pre: torch.Tensor, x_in: torch.Tensor, dead: torch.Tensor
    ) -> torch.Tensor:
        """Normalized MSE of reconstructing -error (target - recon) from the top dead latents."""
        k_aux = min(self.spec.aux_k or x_in.shape[1] // 2, int(self.shard.total(dead.sum())))
        masked = pre.masked_fill(~dead, float("-inf"))
        chosen = self.top_per_row(masked, k_aux)
        aux_values = select_pre_acts(pre, chosen, x_in, self.W_enc, self.b_enc).relu()
        aux_recon = self.shard.sum(sparse_decode(chosen._replace(values=aux_values), self.W_dec))
        residual = -error
        # over the global batch when sharded, as one process normalizes (error carries no grad)
        total_variance = self.shard.replica_share_of_variance(residual).clamp_min(1e-8)
        return (aux_recon - residual).pow(2).sum() / total_variance
