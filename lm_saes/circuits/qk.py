"""QK attribution: why a head attended from one position to another, in terms of graph nodes.

An attribution edge between positions passes through attention, whose pattern the replacement
model freezes; this explains the pattern. In the frozen replacement model a head's query at
position q and key at position k (after rotary embedding, where the model has one) are affine
functions of the graph's nodes (features, error nodes, token embeddings): q = sum_a Q_a + q_0,
k = sum_b K_b + k_0, each Q_a read as gradient x value from batched backward passes (one per
head dimension), and q_0, k_0 from a pass with every node at zero. The pre-softmax score
s = q . k / sqrt(d_head) then splits exactly into node pairs:

    s = sum_{a,b} Q_a.K_b / sqrt(d) + sum_a Q_a.k_0 / sqrt(d) + sum_b q_0.K_b / sqrt(d) + q_0.k_0 / sqrt(d)

`query_side[a]` = Q_a . k / sqrt(d) (what node a contributes through the query, against the
whole key) and `key_side[b]` = q . K_b / sqrt(d); the `pairs` are the largest Q_a.K_b terms.
The identity (the terms sum to the score the real model computes, <= 1e-4) is tested.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lm_saes.circuits.attribution import graph_sources
from lm_saes.circuits.graph import error_node_id, feature_node_id, token_node_id
from lm_saes.circuits.replacement import PromptState, ReplacementModel


class QKAttribution(NamedTuple):
    layer: int
    head: int
    query_position: int
    key_position: int
    score: float  # q . k / sqrt(d_head) in the replacement model (= the real model's)
    query_side: torch.Tensor  # [n_columns] each node's part through the query (node order of the graph)
    key_side: torch.Tensor  # [n_columns] each node's part through the key
    query_bias: float  # q_0 . k / sqrt(d): the constants' part through the query
    key_bias: float  # q . k_0 / sqrt(d)
    pairs: list[tuple[int, int, float]]  # (query node, key node, Q_a.K_b / sqrt(d)), largest |value| first
    pair_bias: float  # q_0 . k_0 / sqrt(d)
    node_ids: list[str]  # the columns' graph node ids (circuit-tracer's: "L_F_P", "L_-1_P", "E_T_P")


def attention_hooks(replacement: ReplacementModel, layer: int) -> tuple[str, str]:
    """The query and key hooks whose product is the score: after rotary embedding if any."""
    names = replacement.model.bridge.hook_dict
    prefix = f"blocks.{layer}.attn."
    if prefix + "hook_rot_q" in names:
        return prefix + "hook_rot_q", prefix + "hook_rot_k"
    return prefix + "hook_q", prefix + "hook_k"


def qk_attribution(
    replacement: ReplacementModel,
    state: PromptState,
    layer: int,
    head: int,
    query_position: int,
    key_position: int,
    freeze_bos: bool = True,
    top_pairs: int = 20,
) -> QKAttribution:
    """Decompose one head's pre-softmax score at (query, key) into node contributions."""
    cfg = replacement.model.bridge.cfg
    n_heads, n_pos = cfg.n_heads, len(state.tokens)
    if not 0 <= layer < replacement.n_layers:
        raise ValueError(f"layer {layer} is outside 0..{replacement.n_layers - 1}")
    if not 0 <= head < n_heads:
        raise ValueError(f"head {head} is outside 0..{n_heads - 1}")
    if not 0 <= key_position <= query_position < n_pos:
        raise ValueError(
            f"need 0 <= key_position <= query_position < {n_pos} (causal attention); "
            f"got query {query_position}, key {key_position}"
        )
    kv_heads = getattr(cfg, "n_key_value_heads", None) or n_heads
    kv_head = head // (n_heads // kv_heads)
    q_hook, k_hook = attention_hooks(replacement, layer)
    scale = cfg.d_head**0.5 if getattr(cfg, "attn_scale", -1) in (None, -1) else cfg.attn_scale

    src = graph_sources(state, freeze_bos).with_readouts(replacement.transcoders)
    with torch.enable_grad():
        out = replacement.forward(state, src.embed, src.errors, src.sparse_acts(), capture=[q_hook, k_hook])
        assert out.captured is not None
        q = out.captured[q_hook][query_position, head].float()
        k = out.captured[k_hook][key_position, kv_head].float()
        eye = torch.eye(q.shape[0], dtype=q.dtype, device=q.device)

        def parts(vector: torch.Tensor) -> torch.Tensor:  # [d_head, n]: each dimension's node columns
            grads = torch.autograd.grad(
                vector, src.inputs, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True
            )
            return src.node_columns(grads, state)

        q_parts, k_parts = parts(q), parts(k)
    with torch.no_grad():
        zero = replacement.forward(state, *src.zeroed(state), capture=[q_hook, k_hook])
        assert zero.captured is not None
        q0 = zero.captured[q_hook][query_position, head].float().cpu()
        k0 = zero.captured[k_hook][key_position, kv_head].float().cpu()
    q, k = q.detach().cpu(), k.detach().cpu()
    pair_matrix = q_parts.T @ k_parts / scale  # [n, n]
    flat = pair_matrix.abs().flatten().topk(min(top_pairs, pair_matrix.numel()))
    n = pair_matrix.shape[1]
    pairs = [(int(i) // n, int(i) % n, float(pair_matrix.flatten()[i])) for i in flat.indices]
    return QKAttribution(
        layer,
        head,
        query_position,
        key_position,
        float(q @ k / scale),
        (k @ q_parts) / scale,
        (q @ k_parts) / scale,
        float(q0 @ k / scale),
        float(q @ k0 / scale),
        pairs,
        float(q0 @ k0 / scale),
        column_ids(src, state.tokens.tolist()),
    )


def column_ids(src, tokens: list[int]) -> list[str]:
    """Graph node ids of `Sources` columns: feature nodes, errors layer-major, tokens."""
    ids = [
        feature_node_id(layer, f, p)
        for layer, ps, fs in src.active
        for p, f in zip(ps.tolist(), fs.tolist(), strict=True)
    ]
    ids += [error_node_id(layer, p) for layer in sorted(src.errors) for p in range(len(tokens))]
    return ids + [token_node_id(t, p) for p, t in enumerate(tokens)]
