"""Evaluate an SAE on held-out text: reconstruction, sparsity, and its effect on LM loss.

Conventions (as in SAELens):
- explained variance = 1 - SSE/SST, SST around the mean over all evaluated tokens;
- CE loss recovered = (CE_zero_ablation - CE_with_sae) / (CE_zero_ablation - CE_clean);
- the SAE is spliced in at every position except BOS (whose activation is an outlier
  no SAE is trained on), and LM loss is averaged over all next-token predictions.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from lm_saes.config import EvalConfig
from lm_saes.models import LanguageModel
from lm_saes.saes import SparseAutoencoder


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


class _Sums:
    """float64 running sums; one object per evaluation."""

    def __init__(self, d_out: int, d_sae: int):
        self.tokens = 0
        self.sse = 0.0
        self.sum_y = torch.zeros(d_out, dtype=torch.float64)
        self.sum_y2 = 0.0
        self.active = 0
        self.fires = torch.zeros(d_sae, dtype=torch.float64)
        self.ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
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
        )
        if self.ce_count:
            clean, sae, zero = (self.ce[k] / self.ce_count for k in ("clean", "sae", "zero"))
            out.ce_loss_clean, out.ce_loss_with_sae, out.ce_loss_zero_ablation = clean, sae, zero
            out.ce_loss_recovered = (zero - sae) / (zero - clean) if zero != clean else None
            out.delta_lm_loss = sae - clean
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
            clean, acts = model.loss_per_token(tokens, capture=hooks)
        else:
            clean, acts = None, model.activations(tokens, hooks)
        x = acts[hook_in][keep]
        features = sae.encode(x)
        recon = sae.decode(features)
        sums.add_reconstruction(acts[hook_out][keep], recon, features)
        if clean is None:
            continue
        with_sae, zero = _spliced_losses(sae, model, tokens, keep)
        sums.ce["clean"] += float(clean.sum())
        sums.ce["sae"] += float(with_sae.sum())
        sums.ce["zero"] += float(zero.sum())
        sums.ce_count += clean.numel()
    return sums.metrics(cfg.dense_threshold)


def _spliced_losses(
    sae: SparseAutoencoder, model: LanguageModel, tokens: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """LM loss with the SAE's output, and with zeros, in place of `hook_out` at kept positions.

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

    def zero(value: torch.Tensor) -> torch.Tensor:
        out = value.clone()
        out[keep] = 0
        return out

    replace = {hook_out: splice} if hook_in == hook_out else {hook_in: remember_input, hook_out: splice}
    with_sae, _ = model.loss_per_token(tokens, replace=replace)
    zeroed, _ = model.loss_per_token(tokens, replace={hook_out: zero})
    return with_sae, zeroed
