"""Logit lens of decoder directions: which tokens each feature pushes up or down directly."""

from __future__ import annotations

import torch


@torch.no_grad()
def logit_lens(w_dec: torch.Tensor, w_u: torch.Tensor, k: int = 10, chunk: int = 256) -> tuple[torch.Tensor, ...]:
    """Top and bottom k of `w_dec @ w_u` per feature, in feature chunks (the full product is big).

    w_dec [d_sae, d_model], w_u [d_model, vocab] -> (top_values, top_ids, bottom_values, bottom_ids),
    each [d_sae, k].
    """
    outs: list[list[torch.Tensor]] = [[], [], [], []]
    w_u = w_u.to(w_dec.device, w_dec.dtype)
    for start in range(0, w_dec.shape[0], chunk):
        logits = w_dec[start : start + chunk] @ w_u
        top, bottom = logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)
        for out, value in zip(outs, (top.values, top.indices, bottom.values, bottom.indices), strict=True):
            out.append(value.cpu())
    return tuple(torch.cat(parts) for parts in outs)
