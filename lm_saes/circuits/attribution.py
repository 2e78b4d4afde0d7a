"""Attribution: the direct effect of every node on every feature and output logit of a prompt.

Through the frozen replacement model, each target (a feature's pre-activation, or a demeaned
output logit) is an affine function of the source nodes (token embeddings, feature activations,
error nodes). One forward pass with the sources as leaf tensors builds that function; batched
backward passes (one gradient row per target, vectorized with `is_grads_batched`) read its
coefficients. Targets are grouped by layer, so a layer's backward pass only traverses the
model below it (and only the logits' pass goes through the unembedding). Edge = source value x
gradient, summed over the model dimension for vector sources, so a target's incoming edges plus
its bias (the target's value with every source set to zero) add up to the target exactly.

With `freeze_bos` (the default, as in circuit-tracer) the BOS position's features and error
nodes are constants rather than sources: every prompt shares that position (the attention sink),
so its large activations explain nothing about this prompt and would crowd the top of the graph.
Their effect is part of the bias, which keeps the edges + bias identity exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from lm_saes.circuits.graph import AttributionGraph
from lm_saes.circuits.replacement import PromptState, ReplacementModel, ReplacementOutput
from lm_saes.circuits.transcoders import SparseActs
from lm_saes.config import TraceConfig


def output_logits(logits: torch.Tensor, probability: float, max_logits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The most probable next tokens at the last position until their total reaches `probability`."""
    probs = logits[-1].float().softmax(-1)
    top = probs.topk(min(max_logits, probs.numel()))
    count = int((top.values.cumsum(0) < probability).sum()) + 1
    return top.indices[: min(count, len(top.indices))], top.values[: min(count, len(top.indices))]


def attribute(
    replacement: ReplacementModel,
    prompt: str,
    cfg: TraceConfig | None = None,
    progress: Callable[[float], None] | None = None,
) -> AttributionGraph:
    """The full (unpruned) attribution graph of `prompt` (BOS is prepended)."""
    cfg = cfg or TraceConfig()
    clock = time.perf_counter()
    tokenizer = replacement.model.tokenizer
    ids = [tokenizer.bos_token_id, *tokenizer.encode(prompt)]
    if len(ids) > cfg.max_tokens:
        raise ValueError(f"prompt has {len(ids)} tokens; max_tokens is {cfg.max_tokens}")
    state = replacement.prepare(torch.tensor(ids))
    logit_ids, logit_probs = output_logits(state.logits, cfg.logit_probability, cfg.max_logits)

    # Sources: leaves the replacement model is a linear function of. Features enter as the values
    # of their (position, feature) entries, decoded sparsely; BOS entries stay constants (freeze_bos).
    embed = state.embed.clone().requires_grad_(True)
    errors = {layer: e.clone().requires_grad_(True) for layer, e in state.errors.items()}
    first = 1 if cfg.freeze_bos else 0  # first position whose features and errors are sources
    entries = {layer: torch.nonzero(a > 0, as_tuple=True) for layer, a in state.acts.items()}
    values = {layer: state.acts[layer][p, f].clone().requires_grad_(True) for layer, (p, f) in entries.items()}
    sources = {layer: p >= first for layer, (p, _) in entries.items()}  # entries that are feature nodes
    active = [(layer, p[sources[layer]], f[sources[layer]]) for layer, (p, f) in entries.items()]
    features = torch.cat([torch.stack([torch.full_like(p, layer), p, f], 1) for layer, p, f in active])
    activations = torch.cat([state.acts[layer][p, f] for layer, p, f in active]).float()

    with torch.enable_grad():
        acts = {layer: SparseActs(p, f, values[layer]) for layer, (p, f) in entries.items()}
        groups = _targets(replacement, replacement.forward(state, embed, errors, acts), active, logit_ids)
        batch_size = cfg.batch_size or (256 if embed.device.type == "cuda" else 64)
        rows = _edge_rows(groups, state, embed, errors, values, sources, first, batch_size, progress)
        targets = torch.cat(groups).detach()
    with torch.no_grad():
        zero_acts = {
            layer: SparseActs(p, f, values[layer].detach() * ~sources[layer]) for layer, (p, f) in entries.items()
        }
        bias_out = replacement.forward(state, torch.zeros_like(embed), _zero_from(state.errors, first), zero_acts)
        bias = torch.cat(_targets(replacement, bias_out, active, logit_ids))

    n_features, n_pos = len(features), len(ids)
    n_nodes = n_features + replacement.n_layers * n_pos + n_pos + len(logit_ids)
    adjacency = torch.zeros(n_nodes, n_nodes)
    target_rows = torch.cat([torch.arange(n_features), torch.arange(n_nodes - len(logit_ids), n_nodes)])
    adjacency[target_rows] = rows.float()
    node_values = torch.zeros(n_nodes)
    node_values[target_rows] = targets.detach().float().cpu()
    bias_full = torch.zeros(n_nodes)
    bias_full[target_rows] = bias.float().cpu()
    strings = tokenizer.token_strings(ids)
    return AttributionGraph(
        prompt=prompt,
        tokens=ids,
        token_strings=strings,
        model=replacement.model.name,
        transcoders=replacement.transcoders.location,
        n_layers=replacement.n_layers,
        features=features.cpu(),
        activations=activations.cpu(),
        logit_tokens=logit_ids.tolist(),
        logit_strings=tokenizer.token_strings(logit_ids.tolist()),
        logit_probabilities=logit_probs.cpu(),
        adjacency=adjacency,
        values=node_values,
        bias=bias_full,
        info={"seconds": round(time.perf_counter() - clock, 3), "layers": replacement.transcoders.layers},
    )


def _zero_from(tensors: dict[int, torch.Tensor], first: int) -> dict[int, torch.Tensor]:
    """Copies with every position from `first` on set to zero (the constants before it stay)."""
    out = {layer: t.clone() for layer, t in tensors.items()}
    for t in out.values():
        t[first:] = 0
    return out


def _targets(
    replacement: ReplacementModel, out: ReplacementOutput, active, logit_ids: torch.Tensor
) -> list[torch.Tensor]:
    """One tensor per covered layer (its active features' pre-activations), then the demeaned
    output logits: concatenated, the targets in node order."""
    parts = []
    for layer, positions, indices in active:
        if layer not in replacement.covered:
            raise ValueError(f"layer {layer} has active features but no transcoder")
        rows, bias = replacement.transcoders.encoder(layer, indices)
        parts.append((out.mlp_in[layer][positions].to(rows.dtype) * rows).sum(-1) + bias)
    last = out.logits[-1]
    parts.append(last[logit_ids] - last.mean())
    return [p.float() for p in parts]


def _edge_rows(
    groups: list[torch.Tensor],
    state: PromptState,
    embed: torch.Tensor,
    errors: dict,
    values: dict[int, torch.Tensor],
    sources: dict[int, torch.Tensor],
    first: int,
    batch_size: int,
    progress: Callable[[float], None] | None,
) -> torch.Tensor:
    """[n_targets, n_nodes]: the adjacency rows of the targets (logit columns stay zero).

    `values[layer]` are the leaves of that layer's active entries, `sources[layer]` marks the
    entries that are feature nodes (in node order)."""
    layers = sorted(errors)
    inputs = [embed, *(errors[layer] for layer in layers), *values.values()]
    n_targets = sum(len(group) for group in groups)
    n_pos = embed.shape[0]
    # per layer: the feature nodes' values (edge = gradient x value) and how many there are
    node_values = {layer: leaf.detach()[sources[layer]] for layer, leaf in values.items()}
    n_features = sum(len(v) for v in node_values.values())
    n_nodes = n_features + len(layers) * n_pos + n_pos + (n_targets - n_features)
    rows = torch.zeros(n_targets, n_nodes)
    batches = [
        (offset, group, start)
        for offset, group in zip([sum(len(g) for g in groups[:i]) for i in range(len(groups))], groups, strict=True)
        for start in range(0, len(group), batch_size)
    ]
    for done, (offset, group, start) in enumerate(batches, start=1):
        stop = min(start + batch_size, len(group))
        seeds = torch.zeros(stop - start, len(group), dtype=group.dtype, device=group.device)
        seeds[torch.arange(stop - start), torch.arange(start, stop)] = 1
        grads = torch.autograd.grad(
            group, inputs, grad_outputs=seeds, is_grads_batched=True, retain_graph=True, allow_unused=True
        )
        grad_embed, grad_errors, grad_acts = grads[0], grads[1 : 1 + len(layers)], grads[1 + len(layers) :]
        block = rows[offset + start : offset + stop]
        column = 0
        for layer, grad in zip(values, grad_acts, strict=True):
            count = len(node_values[layer])
            if grad is not None:
                block[:, column : column + count] = grad[:, sources[layer]] * node_values[layer]
            column += count
        for layer, grad in zip(layers, grad_errors, strict=True):
            if grad is not None:  # frozen positions' error columns stay zero: they are not sources
                block[:, column + first : column + n_pos] = (grad[:, first:] * state.errors[layer][first:]).sum(-1)
            column += n_pos
        if grad_embed is not None:
            block[:, column : column + n_pos] = (grad_embed * state.embed).sum(-1)
        if progress:
            progress(done / len(batches))
    return rows
