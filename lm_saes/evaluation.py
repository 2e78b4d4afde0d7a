"""Evaluate an SAE on held-out text: reconstruction, sparsity, and its effect on LM loss.

Conventions (as in SAELens):
- explained variance = 1 - SSE/SST, SST around the mean over all evaluated tokens;
- CE loss recovered = (CE_zero_ablation - CE_with_sae) / (CE_zero_ablation - CE_clean);
- the SAE is spliced in at every position except BOS (whose activation is an outlier
  no SAE is trained on), and LM loss is averaged over all next-token predictions;
- KL divergence = KL(clean next-token distribution || with the SAE), averaged over the same
  predictions, from the same passes as the losses;
- feature density = the fraction of evaluated tokens a latent fires on, histogrammed in log10
  bins (the shape SAELens and Neuronpedia plot), dead latents counted apart.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from tqdm.auto import tqdm

from lm_saes.config import EvalConfig
from lm_saes.models import LanguageModel
from lm_saes.saes import SparseAutoencoder
from lm_saes.saes.crosslayer import CrossLayerTranscoder

DENSITY_LOG10_EDGES = [x / 2 for x in range(-14, 1)]  # 1e-7 .. 1 in half decades


class DensityHistogram(BaseModel):
    log10_edges: list[float]  # bin i holds log10(density) in [edges[i], edges[i + 1])
    counts: list[int]  # latents per bin (a density below the first edge counts in bin 0)
    dead: int  # latents that never fired


def density_histogram(density: torch.Tensor) -> DensityHistogram:
    alive = density[density > 0].double().log10()
    edges = torch.tensor(DENSITY_LOG10_EDGES, dtype=torch.float64)
    bins = (torch.bucketize(alive, edges, right=True) - 1).clamp(0, len(edges) - 2)
    counts = torch.bincount(bins, minlength=len(edges) - 1)
    return DensityHistogram(log10_edges=DENSITY_LOG10_EDGES, counts=counts.tolist(), dead=int((density == 0).sum()))


class EvalMetrics(BaseModel):
    tokens: int
    l0: float
    explained_variance: float
    mse: float
    dead_fraction: float
    dense_fraction: float
    ce_loss_clean: float | None = None
    ce_loss_with_sae: float | None = None
    ce_loss_zero_ablation: float | None = None
    ce_loss_recovered: float | None = None
    delta_lm_loss: float | None = None
    kl_divergence: float | None = None  # nats per prediction, clean || with the SAE
    density: DensityHistogram | None = None
    # a cross-layer transcoder's metrics per covered layer (model layer -> metrics, no CE); the
    # fields above then average its layers' reconstruction and measure CE with every MLP replaced
    per_layer: dict[int, EvalMetrics] | None = None


class _Sums:
    """float64 running sums; one object per evaluation."""

    def __init__(self, d_out: int, d_sae: int):
        self.tokens = 0
        self.sse = 0.0
        self.sum_y = torch.zeros(d_out, dtype=torch.float64)
        self.sum_y2 = 0.0
        self.active = 0
        self.fires = torch.zeros(d_sae, dtype=torch.float64)
        self.ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl": 0.0}
        self.ce_count = 0

    def add_reconstruction(self, y: torch.Tensor, recon: torch.Tensor, acts: torch.Tensor) -> None:
        y, recon = y.double().cpu(), recon.double().cpu()
        self.tokens += y.shape[0]
        self.sse += float((recon - y).pow(2).sum())
        self.sum_y += y.sum(0)
        self.sum_y2 += float(y.pow(2).sum())
        fired = (acts > 0).cpu()
        self.active += int(fired.sum())
        self.fires += fired.sum(0).double()

    def metrics(self, dense_threshold: float) -> EvalMetrics:
        n = max(self.tokens, 1)
        sst = self.sum_y2 - float(self.sum_y.pow(2).sum()) / n
        density = self.fires / n
        out = EvalMetrics(
            tokens=self.tokens,
            l0=self.active / n,
            explained_variance=1 - self.sse / max(sst, 1e-12),
            mse=self.sse / (n * self.sum_y.numel()),
            dead_fraction=float((density == 0).double().mean()),
            dense_fraction=float((density > dense_threshold).double().mean()),
            density=density_histogram(density),
        )
        if self.ce_count:
            clean, sae, zero = (self.ce[k] / self.ce_count for k in ("clean", "sae", "zero"))
            out.ce_loss_clean, out.ce_loss_with_sae, out.ce_loss_zero_ablation = clean, sae, zero
            out.ce_loss_recovered = (zero - sae) / (zero - clean) if zero != clean else None
            out.delta_lm_loss = sae - clean
            out.kl_divergence = self.ce["kl"] / self.ce_count
        return out


@torch.no_grad()
def evaluate(
    sae: SparseAutoencoder, model: LanguageModel, contexts: torch.Tensor, cfg: EvalConfig, progress: bool = True
) -> EvalMetrics:
    """Metrics over `contexts` [n, context_size] (held-out tokens)."""
    hook_in, hook_out = sae.spec.input_hook, sae.spec.output_hook
    if cfg.max_tokens:
        contexts = contexts[: max(1, -(-cfg.max_tokens // contexts.shape[1]))]
    if len(contexts) == 0:
        raise ValueError("no held-out tokens to evaluate on; set data.eval_tokens > 0")
    bos = model.tokenizer.bos_token_id
    sums = _Sums(sae.spec.d_out, sae.d_sae)
    sae.eval()
    for start in tqdm(range(0, len(contexts), cfg.batch_contexts), desc="eval", disable=not progress):
        tokens = contexts[start : start + cfg.batch_contexts].to(model.device)
        keep = tokens != bos
        hooks = list(dict.fromkeys([hook_in, hook_out]))
        if cfg.ce_loss:
            clean_logits, acts = model.logits(tokens, capture=hooks)
        else:
            clean_logits, acts = None, model.activations(tokens, hooks)
        x = acts[hook_in][keep]
        features = sae.encode(x)
        recon = sae.decode(features)
        sums.add_reconstruction(acts[hook_out][keep], recon, features)
        if clean_logits is None:
            continue
        sae_logits, zero_logits = _spliced_logits(sae, model, tokens, keep)
        targets = tokens[:, 1:]
        clean_lp = _next_token_log_probs(clean_logits)
        sae_lp = _next_token_log_probs(sae_logits)
        for name, lp in (("clean", clean_lp), ("sae", sae_lp), ("zero", _next_token_log_probs(zero_logits))):
            sums.ce[name] -= float(lp.gather(-1, targets[..., None]).sum())
        sums.ce["kl"] += float((clean_lp.exp() * (clean_lp - sae_lp)).sum())
        sums.ce_count += targets.numel()
    return sums.metrics(cfg.dense_threshold)


def _next_token_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """[batch, pos - 1, vocab] float32 log-probabilities of each next token."""
    return F.log_softmax(logits[:, :-1].float(), dim=-1)


def _spliced_logits(
    sae: SparseAutoencoder, model: LanguageModel, tokens: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits with the SAE's output, and with zeros, in place of `hook_out` at kept positions.

    Transcoders read `hook_in`, which the same pass reaches earlier; plain SAEs read the
    value of `hook_out` itself.
    """
    hook_in, hook_out = sae.spec.input_hook, sae.spec.output_hook
    seen: dict[str, torch.Tensor] = {}

    def remember_input(value: torch.Tensor) -> torch.Tensor:
        seen[hook_in] = value
        return value

    def splice(value: torch.Tensor) -> torch.Tensor:
        out = value.clone()
        out[keep] = sae(seen.get(hook_in, value)[keep]).to(value.dtype)
        return out

    replace = {hook_out: splice} if hook_in == hook_out else {hook_in: remember_input, hook_out: splice}
    with_sae, _ = model.logits(tokens, replace=replace)
    zeroed, _ = model.logits(tokens, replace={hook_out: _zeroed(keep)})
    return with_sae, zeroed


@torch.no_grad()
def evaluate_clt(
    clt: CrossLayerTranscoder, model: LanguageModel, contexts: torch.Tensor, cfg: EvalConfig, progress: bool = True
) -> EvalMetrics:
    """A cross-layer transcoder over `contexts`: each covered layer's reconstruction of its MLP
    output from the clean pass (explained variance, L0, density per layer; their mean on top),
    and LM loss with every covered MLP replaced at once (each layer's features read the
    replaced model's own MLP inputs, as in the replacement model) vs clean and vs every covered
    MLP output zeroed."""
    if cfg.max_tokens:
        contexts = contexts[: max(1, -(-cfg.max_tokens // contexts.shape[1]))]
    if len(contexts) == 0:
        raise ValueError("no held-out tokens to evaluate on; set data.eval_tokens > 0")
    bos = model.tokenizer.bos_token_id
    hooks = [clt.spec.hooks(layer) for layer in clt.layers]
    sums = [_Sums(clt.spec.d_model, clt.d_sae) for _ in clt.layers]
    ce = _Sums(1, 1)
    for start in tqdm(range(0, len(contexts), cfg.batch_contexts), desc="eval clt", disable=not progress):
        tokens = contexts[start : start + cfg.batch_contexts].to(model.device)
        keep = tokens != bos
        clean_logits, acts = model.logits(tokens, capture=[h for pair in hooks for h in pair])
        features = {i: clt.encode_layer(i, acts[hook_in][keep]) for i, (hook_in, _) in enumerate(hooks)}
        for j, (_, hook_out) in enumerate(hooks):
            sums[j].add_reconstruction(acts[hook_out][keep], clt.decode_layer(j, features), features[j])
        if not cfg.ce_loss:
            continue
        replaced, _ = model.logits(tokens, replace=_clt_splice(clt, hooks, keep))
        zeroed, _ = model.logits(tokens, replace={hook_out: _zeroed(keep) for _, hook_out in hooks})
        targets = tokens[:, 1:]
        clean_lp, clt_lp = _next_token_log_probs(clean_logits), _next_token_log_probs(replaced)
        for name, lp in (("clean", clean_lp), ("sae", clt_lp), ("zero", _next_token_log_probs(zeroed))):
            ce.ce[name] -= float(lp.gather(-1, targets[..., None]).sum())
        ce.ce["kl"] += float((clean_lp.exp() * (clean_lp - clt_lp)).sum())
        ce.ce_count += targets.numel()
    per_layer = {layer: s.metrics(cfg.dense_threshold) for layer, s in zip(clt.layers, sums, strict=True)}
    layers = list(per_layer.values())

    def mean(field: str) -> float:
        return sum(getattr(m, field) for m in layers) / len(layers)

    out = (
        ce.metrics(cfg.dense_threshold)
        if ce.ce_count
        else EvalMetrics(tokens=0, l0=0, explained_variance=0, mse=0, dead_fraction=0, dense_fraction=0)
    )
    return out.model_copy(
        update={
            "tokens": layers[0].tokens,
            "l0": mean("l0"),
            "explained_variance": mean("explained_variance"),
            "mse": mean("mse"),
            "dead_fraction": mean("dead_fraction"),
            "dense_fraction": mean("dense_fraction"),
            "density": None,
            "per_layer": per_layer,
        }
    )


def _clt_splice(
    clt: CrossLayerTranscoder, hooks: list[tuple[str, str]], keep: torch.Tensor
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Hook functions that read each covered layer's MLP input and replace each MLP output by
    the CLT's reconstruction from every earlier (and this) layer's features."""
    features: dict[int, torch.Tensor] = {}
    replace: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for i, (hook_in, hook_out) in enumerate(hooks):

        def read(value: torch.Tensor, i: int = i) -> torch.Tensor:
            features[i] = clt.encode_layer(i, value[keep])
            return value

        def write(value: torch.Tensor, j: int = i) -> torch.Tensor:
            out = value.clone()
            out[keep] = clt.decode_layer(j, features).to(value.dtype)
            return out

        replace[hook_in], replace[hook_out] = read, write
    return replace


def _zeroed(keep: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A hook function setting the kept positions to zero (zero ablation)."""

    def zero(value: torch.Tensor) -> torch.Tensor:
        out = value.clone()
        out[keep] = 0
        return out

    return zero
