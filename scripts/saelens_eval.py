#!/usr/bin/env python3
"""Recompute lm-saes evaluation metrics independently, inside the SAELens venv.

The SAE is loaded with SAELens's own class (``sae_lens.SAE.load_from_disk``) from an
``lm-saes export --format saelens`` directory; the language model is a plain Hugging Face
causal LM (float32, eager attention) hooked with a torch forward hook. lm_saes is not imported.

    .venv-saelens/bin/python scripts/saelens_eval.py --sae SAELENS_DIR --model-dir HF_DIR \
        --tokens TOKENS.safetensors --hook blocks.L.hook_resid_post --bos BOS_ID \
        --out RESULT.json [--batch 8]

TOKENS.safetensors holds ``tokens`` [n, T] int64 (rows start with BOS). Metrics, over non-BOS
positions: explained_variance = 1 - SSE/SST (SST around the mean of all evaluated tokens),
mse = SSE / (n_tokens * d), l0 = mean number of nonzero latents per token. LM loss is the mean
next-token cross-entropy over all positions: clean, with the SAE reconstruction spliced in at
non-BOS positions, and with those positions zero-ablated.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import safetensors.torch
import torch
import torch.nn.functional as F
from sae_lens import SAE
from sae_lens import __version__ as sae_lens_version
from transformers import AutoModelForCausalLM


def parse_hook(hook: str) -> int:
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", hook)
    if not match:
        raise ValueError(f"unsupported hook {hook!r}: only blocks.L.hook_resid_post")
    return int(match.group(1))


def run(model, layer, tokens: torch.Tensor, edit=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token CE over the batch, and layer output (after `edit`, if any)."""
    seen: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if edit is not None:
            hidden = edit(hidden)
        seen["h"] = hidden.detach()
        if edit is None:
            return None
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(input_ids=tokens, use_cache=False).logits.double()
    finally:
        handle.remove()
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="sum")
    return ce, seen["h"]


@torch.no_grad()
def evaluate(sae, model, layer, tokens: torch.Tensor, bos: int, batch: int) -> dict:
    n_tok, active, sse, sum_y2, ce_count = 0, 0, 0.0, 0.0, 0
    sum_y = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    for start in range(0, len(tokens), batch):
        tok = tokens[start : start + batch]
        keep = tok != bos

        def splice(h: torch.Tensor, fn, keep=keep) -> torch.Tensor:
            out = h.clone()
            out[keep] = fn(h[keep]).to(h.dtype)
            return out

        clean, h = run(model, layer, tok)
        x = h[keep]
        feats = sae.encode(x)
        recon = sae.decode(feats)
        y, r = x.double(), recon.double()
        n_tok += y.shape[0]
        sse += float((r - y).pow(2).sum())
        sum_y += y.sum(0)
        sum_y2 += float(y.pow(2).sum())
        active += int((feats != 0).sum())
        with_sae, _ = run(model, layer, tok, lambda h: splice(h, sae))
        zero, _ = run(model, layer, tok, lambda h: splice(h, torch.zeros_like))
        ce["clean"] += float(clean)
        ce["sae"] += float(with_sae)
        ce["zero"] += float(zero)
        ce_count += tok[:, 1:].numel()
    sst = sum_y2 - float(sum_y.pow(2).sum()) / n_tok
    clean, with_sae, zero = (ce[k] / ce_count for k in ("clean", "sae", "zero"))
    return {
        "tokens": n_tok,
        "l0": active / n_tok,
        "explained_variance": 1 - sse / sst,
        "mse": sse / (n_tok * sum_y.numel()),
        "ce_loss_clean": clean,
        "ce_loss_with_sae": with_sae,
        "ce_loss_zero_ablation": zero,
        "ce_loss_recovered": (zero - with_sae) / (zero - clean),
        "delta_lm_loss": with_sae - clean,
        "sae_lens_version": sae_lens_version,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sae", required=True, help="SAELens SAE directory")
    p.add_argument("--model-dir", required=True, help="Hugging Face model folder")
    p.add_argument("--tokens", required=True, help="safetensors file with 'tokens' [n, T]")
    p.add_argument("--hook", required=True, help="blocks.L.hook_resid_post")
    p.add_argument("--bos", type=int, required=True, help="BOS token id")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--batch", type=int, default=8, help="rows per forward pass")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    layer_idx = parse_hook(args.hook)
    sae = SAE.load_from_disk(args.sae, device="cpu").eval()
    model = AutoModelForCausalLM.from_pretrained(
        args.model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tokens = safetensors.torch.load_file(args.tokens)["tokens"].long()
    if not bool((tokens[:, 0] == args.bos).all()):
        raise ValueError("every row must start with BOS")
    result = evaluate(sae, model, model.model.layers[layer_idx], tokens, args.bos, args.batch)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print(f"saelens_eval: {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
