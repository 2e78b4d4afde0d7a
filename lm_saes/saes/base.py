"""What every SAE architecture shares: parameters, scaling, encode/decode, save/load.

Weights are stored latent-major: `W_enc [d_sae, d_in]` and `W_dec [d_sae, d_out]`, so one
latent's encoder and decoder directions are rows, which is what the sparse kernels gather.
Inputs are scaled by a dataset-wide factor (`input_scale`, so that the mean input norm is
sqrt(d_in)) inside the module: callers always pass raw activations and get raw outputs back.
"""

from __future__ import annotations

from functools import cache
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field, create_model
from torch import nn

from lm_saes.config import SAEConfigBase
from lm_saes.saes.sharding import FeatureShard, save_shard
from lm_saes.stores import ObjectStore

SPEC_KEY = "sae.json"
WEIGHTS_KEY = "sae.safetensors"


class SAESpec(SAEConfigBase):
    """Everything needed to rebuild a trained SAE: its config plus data-derived facts.

    The facts are mixed into each architecture's config (`spec_class`), so a spec is flat, as
    sae.json stores it, and `spec.k` is a TopK spec's own field. Build one with
    `lm_saes.saes.make_spec` (config + facts) or `parse_spec` (a flat dict).
    """

    d_in: int = Field(..., ge=1)
    d_out: int = Field(..., ge=1)
    model: str = ""
    input_scale: float = 1.0
    output_scale: float = 1.0

    @property
    def is_transcoder(self) -> bool:
        return self.hook_out is not None and self.hook_out != self.hook_in


@cache
def spec_class(config: type[SAEConfigBase]) -> type[SAESpec]:
    """`config`'s fields and checks plus the facts of `SAESpec` (made once per architecture)."""
    name = config.__name__.removesuffix("Config") + "Spec"
    # create_model types all bases as one model type; this one subclasses SAESpec.
    return create_model(
        name,
        __base__=(config, SAESpec),  # type: ignore[arg-type]
        __module__=config.__module__,
        __doc__=f"{config.__name__} of a trained SAE, with its data-derived facts.",
    )


class TrainStepInfo(NamedTuple):
    """Trainer state an architecture may need inside its loss."""

    step: int
    dead_mask: torch.Tensor | None  # [d_sae] bool: latents silent for too long
    sparsity_warmup: float  # 0..1 multiplier for the sparsity penalty


class ForwardOutput(NamedTuple):
    """Result of one training forward pass (all in scaled space)."""

    recon: torch.Tensor  # [batch, d_out]
    loss: torch.Tensor  # scalar to minimize
    losses: dict[str, torch.Tensor]  # named parts of the loss, detached for logging
    fired: torch.Tensor  # [d_sae] bool: latents active on at least one token
    l0: torch.Tensor  # mean active latents per token


class SparseAutoencoder(nn.Module):
    """Base class; subclasses implement `activate` and `training_forward`."""

    architecture: ClassVar[str]  # these three are set by @register(Config)
    config_class: ClassVar[type[SAEConfigBase]]
    spec_class: ClassVar[type[SAESpec]]
    constrain_decoder_norm: ClassVar[bool] = True
    # Parameters with one row per feature: what a feature shard slices (lm_saes.saes.sharding).
    feature_params: ClassVar[tuple[str, ...]] = ("W_enc", "b_enc", "W_dec")
    shard: FeatureShard = FeatureShard()  # the whole dictionary; `shard_sae` sets a slice
    input_scale: torch.Tensor  # buffers, registered in __init__
    output_scale: torch.Tensor

    def __init__(self, spec: SAESpec):
        super().__init__()
        self.spec = spec
        generator = torch.Generator().manual_seed(spec.seed)
        w_dec = torch.randn(spec.d_sae, spec.d_out, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        w_enc = w_dec.clone() if spec.d_in == spec.d_out else torch.randn(spec.d_sae, spec.d_in, generator=generator)
        w_enc *= 1 / w_enc.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(spec.d_sae))
        self.W_dec = nn.Parameter(w_dec)
        self.b_dec = nn.Parameter(torch.zeros(spec.d_out))
        self.register_buffer("input_scale", torch.tensor(spec.input_scale))
        self.register_buffer("output_scale", torch.tensor(spec.output_scale))

    # --- shapes and scaling -------------------------------------------------------------
    @property
    def d_sae(self) -> int:
        return self.spec.d_sae

    @property
    def local_d_sae(self) -> int:
        """Features this module holds: d_sae, or its shard's part of it."""
        return self.W_enc.shape[0]

    @property
    def apply_b_dec_to_input(self) -> bool:
        return not self.spec.is_transcoder

    def set_scales(self, input_scale: float, output_scale: float) -> None:
        self.input_scale.fill_(input_scale)
        self.output_scale.fill_(output_scale)
        self.spec = self.spec.model_copy(update={"input_scale": input_scale, "output_scale": output_scale})

    def pre_acts(self, x_scaled: torch.Tensor) -> torch.Tensor:
        """[batch, d_in] scaled input -> [batch, d_sae] pre-activations."""
        if self.apply_b_dec_to_input:
            x_scaled = x_scaled - self.b_dec
        return F.linear(self.shard.to_shards(x_scaled), self.W_enc, self.b_enc)

    # --- inference (raw activations in and out) ----------------------------------------
    def activate(self, pre_acts: torch.Tensor) -> torch.Tensor:
        """Dense [batch, d_sae] feature activations from pre-activations (inference rule)."""
        raise NotImplementedError

    def raw_pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Raw [batch, d_in] -> pre-activations [batch, d_sae] (input scaling applied)."""
        return self.pre_acts(x.to(self.W_enc.device, self.W_enc.dtype) * self.input_scale)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw [batch, d_in] -> dense feature activations [batch, d_sae]."""
        if self.shard.sharded:
            raise RuntimeError("a feature shard encodes only while training; load the assembled SAE (load_sae)")
        return self.activate(self.raw_pre_acts(x))

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Dense feature activations -> raw output [batch, d_out]."""
        return (self.shard.sum(acts @ self.W_dec) + self.b_dec) / self.output_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- training ----------------------------------------------------------------------
    def training_forward(self, x: torch.Tensor, target: torch.Tensor, info: TrainStepInfo) -> ForwardOutput:
        """Raw input and target -> reconstruction and loss in scaled space."""
        raise NotImplementedError

    def scaled(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype, device = self.W_enc.dtype, self.W_enc.device
        return x.to(device, dtype) * self.input_scale, target.to(device, dtype) * self.output_scale

    def dense_output(
        self, acts: torch.Tensor, recon: torch.Tensor, target: torch.Tensor, penalty_name: str, penalty: torch.Tensor
    ) -> ForwardOutput:
        """ForwardOutput for architectures with dense activations and an additive sparsity penalty."""
        mse = self.mse(recon, target)
        active = acts > 0
        return ForwardOutput(
            recon,
            mse + penalty,
            {"mse": mse.detach(), penalty_name: penalty.detach()},
            active.any(0),
            self.shard.total(active.sum(-1)).float().mean(),
        )

    @staticmethod
    def mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared error summed over features, averaged over tokens."""
        return (recon - target).pow(2).sum(-1).mean()

    @torch.no_grad()
    def initialize_from_data(self, x: torch.Tensor, target: torch.Tensor) -> None:
        """Set b_dec to the geometric median of the (scaled) targets (Weiszfeld iterations)."""
        _, y = self.scaled(x, target)
        median = y.mean(0)
        for _ in range(30):
            weights = 1 / (y - median).norm(dim=1).clamp_min(1e-6)
            median = (weights[:, None] * y).sum(0) / weights.sum()
        self.b_dec.copy_(median)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        if self.constrain_decoder_norm:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out the radial part of W_dec's gradient so unit norms survive Adam's step."""
        if self.constrain_decoder_norm and self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
            self.W_dec.grad -= parallel * self.W_dec

    @classmethod
    def parse_saved_spec(cls, raw: dict) -> SAESpec:
        """A saved spec (sae.json) as a spec of its architecture."""
        from lm_saes.saes.registry import parse_spec  # the registry imports this module

        return parse_spec(raw)

    # --- persistence -------------------------------------------------------------------
    def save(self, store: ObjectStore, prefix: str = "") -> None:
        """Weights first, then the spec: a reader that finds sae.json finds complete weights.

        A feature shard writes only its weights (`save_shard`); once every shard has, one rank
        writes the spec (`save_spec`)."""
        if self.shard.sharded:
            save_shard(self, store, prefix)
            return
        key = f"{prefix}/" if prefix else ""
        store.put_tensors(key + WEIGHTS_KEY, {k: v.detach().cpu() for k, v in self.state_dict().items()})
        self.save_spec(store, prefix)

    def save_spec(self, store: ObjectStore, prefix: str = "") -> None:
        key = f"{prefix}/" if prefix else ""
        store.put_json(key + SPEC_KEY, self.spec.model_dump(mode="json"))
