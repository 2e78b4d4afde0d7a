"""SAELens 6.x interchange: `cfg.json` + `sae_weights.safetensors`.

SAELens keeps W_enc as [d_in, d_sae] and applies no input scaling at inference (trained
scaling factors are folded into the weights), so export folds ours in:
    (x*s - b_dec) @ W_enc.T  ==  (x - b_dec/s) @ (s * W_enc.T)
    (f @ W_dec + b_dec) / t  ==  f @ (W_dec/t) + b_dec/t
BatchTopK has no SAELens inference class; like SAELens itself, we export it as JumpReLU with
its running threshold on every latent.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import safetensors.torch
import torch

from lm_saes.saes import SparseAutoencoder, TopKConfig, build_sae, parse_spec
from lm_saes.stores import open_store

SAELENS_VERSION = "6.54.12"
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

# our architecture -> (SAELens architecture for SAEs, for transcoders)
_EXPORT = {
    "topk": ("topk", None),
    "batchtopk": ("jumprelu", "jumprelu_transcoder"),
    "jumprelu": ("jumprelu", "jumprelu_transcoder"),
    "relu": ("standard", "transcoder"),
}
_IMPORT = {
    "topk": "topk",
    "jumprelu": "jumprelu",
    "standard": "relu",
    "transcoder": "relu",
    "jumprelu_transcoder": "jumprelu",
}


def export_saelens(sae: SparseAutoencoder, out_dir: str | Path) -> Path:
    spec = sae.spec
    names = _EXPORT.get(spec.architecture)
    if names is None:
        raise ValueError(f"architecture {spec.architecture!r} has no SAELens equivalent")
    architecture = names[1] if spec.is_transcoder else names[0]
    if architecture is None:
        raise ValueError(f"SAELens has no {spec.architecture} transcoder; export a relu or jumprelu one")
    s_in, s_out = float(sae.input_scale), float(sae.output_scale)
    if not spec.is_transcoder and abs(s_in - s_out) > 1e-6 * s_in:
        raise ValueError("an SAE whose input and output scales differ has no SAELens form (one b_dec)")
    weights = {
        "W_enc": (sae.W_enc.detach().float().T * s_in).contiguous(),
        "b_enc": sae.b_enc.detach().float().clone(),
        "W_dec": (sae.W_dec.detach().float() / s_out).contiguous(),
        "b_dec": (sae.b_dec.detach().float() / s_out).contiguous(),
    }
    if architecture.startswith("jumprelu"):
        # only jumprelu and batchtopk SAEs export as jumprelu; both have a threshold tensor
        threshold = cast(torch.Tensor, sae.threshold).detach().float()
        weights["threshold"] = threshold.expand(spec.d_sae).contiguous() if threshold.dim() == 0 else threshold.clone()
    cfg = {
        "architecture": architecture,
        "d_in": spec.d_in,
        "d_sae": spec.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_VERSION,
            "model_name": spec.model,
            "hook_name": spec.hook_in,
            "hook_name_out": spec.hook_out,
            "training_architecture": spec.architecture,
            "exported_by": "lm-saes",
        },
    }
    if architecture == "topk":
        cfg["k"] = cast(TopKConfig, spec).k  # only a topk spec exports as topk
        cfg["rescale_acts_by_decoder_norm"] = False
    if spec.is_transcoder:
        cfg["d_out"] = spec.d_out
    store = open_store(out_dir)
    store.put_bytes(WEIGHTS_FILE, safetensors.torch.save(weights))
    store.put_json(CFG_FILE, cfg)
    return Path(out_dir)


def import_saelens(
    src_dir: str | Path, hook_in: str | None = None, hook_out: str | None = None, model: str | None = None
) -> SparseAutoencoder:
    """Build one of our SAEs from a SAELens directory (scales 1: SAELens folds them in)."""
    store = open_store(src_dir)
    if not store.exists(CFG_FILE):
        raise FileNotFoundError(f"{src_dir} has no {CFG_FILE}: not a SAELens SAE directory")
    cfg = store.get_json(CFG_FILE)
    weights = store.get_tensors(WEIGHTS_FILE)
    architecture = _IMPORT.get(cfg.get("architecture", ""))
    if architecture is None:
        raise ValueError(
            f"SAELens architecture {cfg.get('architecture')!r} cannot be imported; supported: {sorted(_IMPORT)}"
        )
    if cfg.get("normalize_activations", "none") not in ("none", "expected_average_only_in"):
        raise ValueError(f"normalize_activations = {cfg['normalize_activations']!r} is not supported")
    if cfg.get("architecture") == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        norms = weights["W_dec"].norm(dim=1)
        weights["W_enc"], weights["b_enc"] = weights["W_enc"] * norms, weights["b_enc"] * norms
        weights["W_dec"] = weights["W_dec"] / norms[:, None]
    meta = cfg.get("metadata") or {}
    hook_in = hook_in or meta.get("hook_name") or cfg.get("hook_name")
    if not hook_in:
        raise ValueError("the SAELens config names no hook; pass --hook-in")
    hook_out = hook_out or meta.get("hook_name_out") or hook_in
    d_out = cfg.get("d_out", cfg["d_in"])
    knobs = {"k": cfg["k"]} if architecture == "topk" and "k" in cfg else {}
    spec = parse_spec({
        "architecture": architecture, "hook_in": hook_in, "hook_out": hook_out, **knobs,
        "d_sae": cfg["d_sae"], "d_in": cfg["d_in"], "d_out": d_out,
        "model": model or meta.get("model_name") or "", "normalize_input": False,
    })  # fmt: skip
    sae = build_sae(spec)
    state = {
        "W_enc": weights["W_enc"].T.contiguous().float(),
        "b_enc": weights["b_enc"].float(),
        "W_dec": weights["W_dec"].float(),
        "b_dec": weights["b_dec"].float(),
        "input_scale": torch.tensor(1.0),
        "output_scale": torch.tensor(1.0),
    }
    if architecture == "jumprelu":
        state["log_threshold"] = weights["threshold"].float().clamp_min(1e-12).log()
    sae.load_state_dict(state)
    return sae.eval()
