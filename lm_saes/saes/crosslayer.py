"""Cross-layer transcoder (CLT; Ameisen et al. 2025, circuit-tracer's `CrossLayerTranscoder`).

Layer i's features read that layer's MLP input and write, through one decoder per target, to
the MLP outputs of layer i and of every later covered layer: the MLP output of layer j is
reconstructed as sum_{i <= j} acts_i @ W_dec[i][:, j - i] + b_dec[j]. One feature can thus
stand for computation spread over several MLPs, which shortens the paths of an attribution
graph. All layers train jointly on the sum of their reconstruction losses.

Tensors are laid out as circuit-tracer lays them out (covered layers indexed 0..L-1):
`W_enc [L, d_sae, d]`, `b_enc [L, d_sae]`, `W_dec[i] [d_sae, L - i, d]`, `b_dec [L, d]`, so
`save_circuit_tracer` writes the files its `load_clt` reads (per-layer input/output scaling
folded into the weights). Activations: TopK (k per layer and token, as TopK transcoders) or
JumpReLU (per-feature thresholds, an L0 penalty). Decoders are unconstrained, as in the CLT
papers. Batches are `[batch, L, d]`: the covered layers' inputs (or targets) stacked.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lm_saes.config import CrossLayerTranscoderConfig
from lm_saes.dtypes import TORCH_DTYPES
from lm_saes.saes.base import SPEC_KEY, WEIGHTS_KEY, ForwardOutput, SparseAutoencoder, TrainStepInfo
from lm_saes.saes.jumprelu import jump_relu, step
from lm_saes.saes.sharding import FeatureShard
from lm_saes.saes.sparse_ops import SparseCode, select_pre_acts, sparse_decode
from lm_saes.stores import ObjectNotFound, ObjectStore, open_store

CLT_SPEC_KEY = "clt.json"


class CrossLayerTranscoderSpec(CrossLayerTranscoderConfig):
    """A trained CLT: its config plus the data's facts (clt.json)."""

    architecture: Literal["clt"] = "clt"
    d_model: int = Field(..., ge=1)
    model: str = ""
    input_scale: list[float] = Field(default_factory=list)  # per covered layer; empty: all 1
    output_scale: list[float] = Field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.layers)


class CrossLayerTranscoder(nn.Module):
    """The module the trainer, evaluation and the replacement model use (see the module doc)."""

    constrain_decoder_norm = False
    shard = FeatureShard()  # whole: a CLT trains data-parallel only
    input_scale: torch.Tensor
    output_scale: torch.Tensor

    def __init__(self, spec: CrossLayerTranscoderSpec):
        super().__init__()
        self.spec = spec
        n, f, d = spec.n_layers, spec.d_sae, spec.d_model
        generator = torch.Generator().manual_seed(spec.seed)
        # Each target j receives from j + 1 sources: start each decoder at unit rows / sqrt(j + 1)
        # so every target's initial output has the same scale, and each encoder as the
        # transpose of its own layer's decoder (as our single-layer SAEs start).
        decoders = []
        for i in range(n):
            w = torch.randn(f, n - i, d, generator=generator)
            w /= w.norm(dim=-1, keepdim=True)
            w /= torch.arange(i + 1, n + 1).sqrt()[None, :, None]
            decoders.append(nn.Parameter(w))
        self.W_dec = nn.ParameterList(decoders)
        self.W_enc = nn.Parameter(torch.stack([F.normalize(w[:, 0], dim=-1) for w in decoders]))
        self.b_enc = nn.Parameter(torch.zeros(n, f))
        self.b_dec = nn.Parameter(torch.zeros(n, d))
        if spec.activation == "jumprelu":
            init = max(spec.jumprelu_init_threshold, 1e-6)
            self.log_threshold = nn.Parameter(torch.full((n, f), math.log(init)))
        self.register_buffer("input_scale", torch.tensor(spec.input_scale or [1.0] * n))
        self.register_buffer("output_scale", torch.tensor(spec.output_scale or [1.0] * n))

    # --- shapes ------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return self.spec.layers

    @property
    def n_layers(self) -> int:
        return self.spec.n_layers

    @property
    def d_sae(self) -> int:
        """Features per layer."""
        return self.spec.d_sae

    @property
    def local_d_sae(self) -> int:
        """Every feature of every layer: what the trainer tracks for dead features."""
        return self.spec.n_layers * self.spec.d_sae

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def index(self, layer: int) -> int:
        """Position of model layer `layer` among the covered layers."""
        try:
            return self.layers.index(layer)
        except ValueError:
            raise ValueError(f"layer {layer} is not covered by this CLT (layers {self.layers})") from None

    # --- scaling -----------------------------------------------------------------------
    def set_scales(self, input_scale: list[float], output_scale: list[float]) -> None:
        self.input_scale.copy_(torch.tensor(input_scale))
        self.output_scale.copy_(torch.tensor(output_scale))
        self.spec = self.spec.model_copy(update={"input_scale": input_scale, "output_scale": output_scale})

    def scaled(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw [batch, L, d] inputs and targets in the scaled space the weights live in."""
        dtype, device = self.W_enc.dtype, self.W_enc.device
        x = x.to(device, dtype) * self.input_scale[:, None]
        return x, target.to(device, dtype) * self.output_scale[:, None]

    # --- inference (raw activations in and out) ----------------------------------------
    def layer_pre_acts(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Covered layer i's raw MLP input [..., d] -> its pre-activations [..., d_sae]."""
        x = x.to(self.W_enc.device, self.W_enc.dtype) * self.input_scale[i]
        return F.linear(x, self.W_enc[i], self.b_enc[i])

    def layer_activate(self, i: int, pre: torch.Tensor) -> torch.Tensor:
        if self.spec.activation == "topk":
            values, indices = pre.topk(self.spec.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, indices, values.relu())
        pre = pre.relu()
        return pre * (pre > self.threshold[i])

    def encode_layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.layer_activate(i, self.layer_pre_acts(i, x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw [batch, L, d] -> activations [batch, L, d_sae]."""
        return torch.stack([self.encode_layer(i, x[:, i]) for i in range(self.n_layers)], 1)

    def decoder(self, source: int, target: int) -> torch.Tensor:
        """[d_sae, d]: how covered layer `source`'s features write to covered layer `target`
        (raw output units, so activations times it add up to a raw MLP output)."""
        if target < source:
            raise ValueError(f"a CLT feature writes only to its own and later layers ({target} < {source})")
        return self.W_dec[source][:, target - source] / self.output_scale[target]

    def output_bias(self, target: int) -> torch.Tensor:
        return self.b_dec[target] / self.output_scale[target]

    def decode_layer(self, target: int, acts: dict[int, torch.Tensor]) -> torch.Tensor:
        """Covered layer `target`'s raw output from the activations [..., d_sae] of the
        sources i <= target (missing sources contribute nothing)."""
        out = self.output_bias(target)
        for i, a in acts.items():
            if i <= target:
                out = out + a.to(self.W_enc.dtype) @ self.decoder(i, target)
        return out

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Activations [batch, L, d_sae] -> raw outputs [batch, L, d]."""
        by_source = {i: acts[:, i] for i in range(self.n_layers)}
        return torch.stack([self.decode_layer(j, by_source) for j in range(self.n_layers)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- training ----------------------------------------------------------------------
    def training_forward(self, x: torch.Tensor, target: torch.Tensor, info: TrainStepInfo) -> ForwardOutput:
        """Raw [batch, L, d] inputs and targets -> the joint reconstruction and loss (scaled)."""
        x, target = self.scaled(x, target)
        if self.spec.activation == "topk":
            recon, fired, active = self._topk_recon(x)
            penalty = None
        else:
            recon, fired, active, penalty = self._jumprelu_recon(x, info)
        per_layer = (recon - target).pow(2).sum(-1).mean(0)  # [L]
        mse = per_layer.sum()
        losses = {"mse": mse.detach()}
        loss = mse
        if penalty is not None:
            losses["l0_penalty"] = penalty.detach()
            loss = loss + penalty
        l0 = active / (x.shape[0] * self.n_layers)  # active features per token and layer
        return ForwardOutput(recon, loss, losses, fired, l0.detach())

    def _topk_recon(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sparse all the way (lm_saes.saes.sparse_ops): source i's k active features decode
        into all of its targets at once through W_dec[i] viewed as [d_sae, (L - i) * d]."""
        batch, n, f = x.shape[0], self.n_layers, self.d_sae
        written = []
        fired = torch.zeros(n, f, dtype=torch.bool, device=x.device)
        active = torch.zeros((), device=x.device)
        for i in range(n):
            with torch.no_grad():
                pre = F.linear(x[:, i], self.W_enc[i], self.b_enc[i])
            values, indices = pre.topk(self.spec.k, dim=-1, sorted=False)
            code = SparseCode.from_topk(values, indices)
            values = select_pre_acts(pre, code, x[:, i], self.W_enc[i], self.b_enc[i]).relu()
            code = code._replace(values=values)
            written.append(sparse_decode(code, self.W_dec[i].reshape(f, -1)).view(batch, n - i, -1))
            on = code.values > 0
            fired[i, code.indices[on]] = True
            active = active + on.sum()
        return add_to_targets(self.b_dec, written), fired.flatten(), active

    def _jumprelu_recon(self, x: torch.Tensor, info: TrainStepInfo):
        pre = (torch.einsum("bld,lfd->blf", x, self.W_enc) + self.b_enc).relu()
        threshold, bandwidth = self.threshold, self.spec.jumprelu_bandwidth
        acts = jump_relu(pre, threshold, bandwidth)
        written = [torch.einsum("bf,ftd->btd", acts[:, i], self.W_dec[i]) for i in range(self.n_layers)]
        recon = add_to_targets(self.b_dec, written)
        expected_l0 = step(pre, threshold, bandwidth).sum(-1).mean(0).sum()  # summed over layers
        penalty = self.spec.l0_coefficient * info.sparsity_warmup * expected_l0
        active = acts > 0
        return recon, active.any(0).flatten(), active.sum(), penalty

    @torch.no_grad()
    def initialize_from_data(self, x: torch.Tensor, target: torch.Tensor) -> None:
        """Each layer's b_dec at the geometric median of its scaled targets (Weiszfeld)."""
        _, y = self.scaled(x, target)
        for j in range(self.n_layers):
            median = y[:, j].mean(0)
            for _ in range(30):
                weights = 1 / (y[:, j] - median).norm(dim=1).clamp_min(1e-6)
                median = (weights[:, None] * y[:, j]).sum(0) / weights.sum()
            self.b_dec[j].copy_(median)

    def normalize_decoder(self) -> None:
        """Decoders stay unconstrained (their norms are part of what a CLT feature writes)."""

    def remove_parallel_decoder_grad(self) -> None:
        """Unconstrained decoders: nothing to project."""

    @classmethod
    def parse_saved_spec(cls, raw: dict[str, Any]) -> CrossLayerTranscoderSpec:
        return CrossLayerTranscoderSpec.model_validate(raw)

    # --- persistence -------------------------------------------------------------------
    def save(self, store: ObjectStore, prefix: str = "") -> None:
        """The exact state (scales apart from the weights), as checkpoints keep it: weights first,
        then the spec."""
        key = f"{prefix}/" if prefix else ""
        store.put_tensors(key + WEIGHTS_KEY, {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()})
        self.save_spec(store, prefix)

    def save_spec(self, store: ObjectStore, prefix: str = "") -> None:
        key = f"{prefix}/" if prefix else ""
        store.put_json(key + SPEC_KEY, self.spec.model_dump(mode="json"))

    def circuit_tracer_tensors(self, model_layers: int | None = None) -> dict[str, dict[str, torch.Tensor]]:
        """file name -> tensors, in circuit-tracer's CLT layout with the scales folded in:
        `W_enc_{i}` holds W_enc_i, b_enc_i, b_dec_i (and threshold_i), `W_dec_{i}` W_dec_i.

        circuit-tracer's CLT covers every layer of its model, 0..N-1. `model_layers=N` writes
        that for a CLT over a subset of them: file i is model layer i, a layer it does not
        cover gets zero weights (no feature fires: zero encoder and bias, thresholds of 1; and
        a zero output bias), and a covered layer's decoder to a layer it does not cover is zero.
        The reconstruction of every covered layer is then ours, and of every other layer zero,
        so its MLP output is all error, as our replacement model treats it."""
        if model_layers is None:
            model_layers, place = self.n_layers, list(range(self.n_layers))
        else:
            if model_layers <= max(self.layers):
                raise ValueError(f"model_layers: {model_layers}, but this CLT covers layer {max(self.layers)}")
            place = self.layers
        f, d = self.d_sae, self.spec.d_model
        covered = {layer: i for i, layer in enumerate(place)}
        files = {}
        for m in range(model_layers):
            i = covered.get(m)
            if i is None:
                encoder = {f"W_enc_{m}": torch.zeros(f, d), f"b_enc_{m}": torch.zeros(f), f"b_dec_{m}": torch.zeros(d)}
                if self.spec.activation == "jumprelu":
                    encoder[f"threshold_{m}"] = torch.ones(f)
                decoder = torch.zeros(f, model_layers - m, d)
            else:
                encoder = {
                    f"W_enc_{m}": self.W_enc[i] * self.input_scale[i],
                    f"b_enc_{m}": self.b_enc[i],
                    f"b_dec_{m}": self.output_bias(i),
                }
                if self.spec.activation == "jumprelu":
                    encoder[f"threshold_{m}"] = self.threshold[i]
                rows = self.W_dec[i] / self.output_scale[i:, None]  # [f, L - i, d] to covered targets
                decoder = rows.new_zeros(f, model_layers - m, d)
                decoder[:, [place[j] - m for j in range(i, self.n_layers)]] = rows
            files[f"W_enc_{m}.safetensors"] = encoder
            files[f"W_dec_{m}.safetensors"] = {f"W_dec_{m}": decoder}
        return {name: {k: v.detach().float().cpu().contiguous() for k, v in t.items()} for name, t in files.items()}

    def save_circuit_tracer(self, store: ObjectStore, model_layers: int | None = None) -> None:
        """The trained CLT as circuit-tracer reads it (its `load_clt(folder)`), then clt.json,
        last, so a reader finding it finds every file. With `model_layers` (a CLT over a subset
        of a model's layers), zero-padded to all of them (see `circuit_tracer_tensors`); its
        clt.json then says it covers every layer, which is what the files hold."""
        for name, tensors in self.circuit_tracer_tensors(model_layers).items():
            store.put_tensors(name, tensors)
        update: dict[str, Any] = {"input_scale": [], "output_scale": []}
        if model_layers is not None:
            update["layers"] = list(range(model_layers))
        store.put_json(CLT_SPEC_KEY, self.spec.model_copy(update=update).model_dump(mode="json"))


Dictionary = SparseAutoencoder | CrossLayerTranscoder  # what the trainer trains and checkpoints


class _AddToTargets(torch.autograd.Function):
    """out[:, j] = bias[j] + sum_{i <= j} written[i][:, j - i], for written[i] [batch, L - i, d].

    In place into one buffer, and the backward is views of the output gradient: summing padded
    copies instead costs L full [batch, L, d] zero-fills each way (a third of a step)."""

    @staticmethod
    def forward(ctx, bias: torch.Tensor, *written: torch.Tensor) -> torch.Tensor:
        out = bias.expand(written[0].shape[0], -1, -1).clone()
        for i, part in enumerate(written):
            out[:, i:] += part
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad.sum(0), *(grad[:, i:] for i in range(grad.shape[1])))


def add_to_targets(bias: torch.Tensor, written: list[torch.Tensor]) -> torch.Tensor:
    return _AddToTargets.apply(bias, *written)


class CLTStats(NamedTuple):
    parameters: int
    decoder_parameters: int


def clt_parameters(n_layers: int, d_sae: int, d_model: int, jumprelu: bool = False) -> CLTStats:
    """Parameter counts: decoders grow as n_layers * (n_layers + 1) / 2."""
    decoder = d_sae * d_model * n_layers * (n_layers + 1) // 2
    per_layer = d_sae * d_model + d_sae + d_model + (d_sae if jumprelu else 0)  # encoder, b_enc, b_dec
    return CLTStats(decoder + n_layers * per_layer, decoder)


def load_clt(location: str | ObjectStore, device: str = "cpu") -> CrossLayerTranscoder:
    """A CLT saved by training (clt.json + circuit-tracer's files) or a checkpoint of one."""
    store = open_store(location) if isinstance(location, str) else location
    if store.exists(SPEC_KEY) and store.exists(WEIGHTS_KEY):  # a checkpoint: the exact state
        clt = CrossLayerTranscoder(CrossLayerTranscoderSpec.model_validate(store.get_json(SPEC_KEY)))
        clt.load_state_dict(store.get_tensors(WEIGHTS_KEY))
        return clt.to(device=device, dtype=TORCH_DTYPES[clt.spec.dtype]).eval()
    try:
        spec = CrossLayerTranscoderSpec.model_validate(store.get_json(CLT_SPEC_KEY))
    except ObjectNotFound:
        raise FileNotFoundError(
            f"no cross-layer transcoder at {store.uri}: expected {CLT_SPEC_KEY} (the 'clt' folder of a run)"
        ) from None
    clt = CrossLayerTranscoder(spec)
    state: dict[str, torch.Tensor] = {}
    encoders = [store.get_tensors(f"W_enc_{i}.safetensors") for i in range(spec.n_layers)]
    state["W_enc"] = torch.stack([e[f"W_enc_{i}"] for i, e in enumerate(encoders)])
    state["b_enc"] = torch.stack([e[f"b_enc_{i}"] for i, e in enumerate(encoders)])
    state["b_dec"] = torch.stack([e[f"b_dec_{i}"] for i, e in enumerate(encoders)])
    if spec.activation == "jumprelu":
        state["log_threshold"] = torch.stack([e[f"threshold_{i}"] for i, e in enumerate(encoders)]).log()
    for i in range(spec.n_layers):
        state[f"W_dec.{i}"] = store.get_tensors(f"W_dec_{i}.safetensors")[f"W_dec_{i}"]
    state["input_scale"] = torch.ones(spec.n_layers)
    state["output_scale"] = torch.ones(spec.n_layers)
    clt.load_state_dict(state)
    return clt.to(device=device, dtype=TORCH_DTYPES[spec.dtype]).eval()
