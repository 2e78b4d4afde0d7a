"""Attribution: the direct effect of every node on every feature and output logit of a prompt.

Through the frozen replacement model, each target (a feature's pre-activation, or a demeaned
output logit) is an affine function of the source nodes (token embeddings, feature activations,
error nodes). One forward pass with embeddings and error nodes as leaf tensors builds that
function; batched backward passes (one gradient row per target, vectorized with
`is_grads_batched`) read its coefficients. A batch's targets come from few layers, so its
backward pass only traverses the model below them (and only the logits' pass goes through the
unembedding). Edge = source value x gradient, summed over the model dimension for vector
sources, so a target's incoming edges plus its bias (the target's value with every source set
to zero) add up to the target exactly.

Features need no leaves of their own: a feature enters the model only through what it writes
into MLP outputs, where the error nodes are added, so its gradient is the error nodes'
gradients at its position dotted with its decoder rows (`Readout`; a CLT feature has one per
later layer). No backward pass goes through a decoder.

With `max_feature_nodes`, as in circuit-tracer, the logits' rows come first and then rounds of
the unvisited features most influential on the logits through the rows so far; features never
visited are constants of the graph and their direct effects join the bias (the identity holds).

With `freeze_bos` (the default, as in circuit-tracer) the BOS position's features and error
nodes are constants rather than sources: every prompt shares that position (the attention sink),
so its large activations explain nothing about this prompt and would crowd the top of the graph.
Their effect is part of the bias, which keeps the edges + bias identity exact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

import torch

from lm_saes.circuits.graph import AttributionGraph, normalized
from lm_saes.circuits.replacement import PromptState, ReplacementModel, ReplacementOutput
from lm_saes.circuits.transcoders import SparseActs, Transcoders
from lm_saes.config import TraceConfig

log = logging.getLogger(__name__)


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
    src = graph_sources(state, cfg.freeze_bos)
    batch_size = cfg.batch_size or default_batch(state)
    estimate, described = _estimate(replacement, src, len(logit_ids), batch_size, cfg)
    log.warning("trace of %d tokens: %s", len(ids), described)
    if estimate > cfg.max_memory_gb * 2**30:
        raise ValueError(
            f"this trace needs ~{estimate / 2**30:.1f} GiB ({described}), more than max_memory_gb = "
            f"{cfg.max_memory_gb:g}: shorten the prompt (max_tokens), set max_feature_nodes, or raise max_memory_gb"
        )
    src = src.with_readouts(replacement.transcoders)
    features = torch.cat([torch.stack([torch.full_like(p, layer), p, f], 1) for layer, p, f in src.active])
    activations = torch.cat([state.acts[layer][p, f] for layer, p, f in src.active]).float()

    n_features, n_pos, n_logits = len(features), len(ids), len(logit_ids)
    kept_count = min(cfg.max_feature_nodes or n_features, n_features)
    with torch.enable_grad():
        out = replacement.forward(state, src.embed, src.errors, src.sparse_acts())
        with torch.no_grad():
            targets = torch.cat(_targets(replacement, out, src.active, logit_ids)).cpu()

        def batch_targets(group: int, members: torch.Tensor) -> torch.Tensor:
            return _target_group(replacement, out, src.active, logit_ids, group, members)

        sizes = [len(p) for _, p, _ in src.active] + [n_logits]
        rows, computed = _edge_rows(batch_targets, sizes, state, src, batch_size, kept_count, logit_probs, progress)
    with torch.no_grad():
        bias_out = replacement.forward(state, *src.zeroed(state))
        bias = torch.cat(_targets(replacement, bias_out, src.active, logit_ids)).float().cpu()

    order = computed.argsort()  # the rows in node order: kept features ascending, then the logits
    rows, computed = rows[order], computed[order]
    kept = computed[:kept_count]
    n_nodes = kept_count + replacement.n_layers * n_pos + n_pos + n_logits
    adjacency = torch.zeros(n_nodes, n_nodes)
    target_rows = torch.cat([torch.arange(kept_count), torch.arange(n_nodes - n_logits, n_nodes)])
    bias_full = torch.zeros(n_nodes)
    bias_full[target_rows] = bias[computed]
    if kept_count == n_features:
        adjacency[target_rows, : rows.shape[1]] = rows
    else:  # the features left out are constants of this graph: their direct effects join the bias
        left_out = torch.ones(n_features, dtype=torch.bool)
        left_out[kept] = False
        bias_full[target_rows] += rows[:, :n_features][:, left_out].sum(1)
        columns = torch.cat([kept, torch.arange(n_features, rows.shape[1])])
        adjacency[target_rows, : len(columns)] = rows[:, columns]
        features, activations = features[kept], activations[kept]
    del rows
    node_values = torch.zeros(n_nodes)
    node_values[target_rows] = targets[computed]
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
        info={
            "seconds": round(time.perf_counter() - clock, 3),
            "layers": replacement.transcoders.layers,
            "active_features": n_features,
        },
    )


def estimate_trace(replacement: ReplacementModel, prompt: str, cfg: TraceConfig | None = None) -> tuple[int, str]:
    """The bytes `attribute` estimates it will hold at its peak for `prompt`, and the line it
    prints before its backward passes (one forward pass of the real model, no gradients)."""
    cfg = cfg or TraceConfig()
    tokenizer = replacement.model.tokenizer
    state = replacement.prepare(torch.tensor([tokenizer.bos_token_id, *tokenizer.encode(prompt)]))
    logit_ids, _ = output_logits(state.logits, cfg.logit_probability, cfg.max_logits)
    src = graph_sources(state, cfg.freeze_bos)
    return _estimate(replacement, src, len(logit_ids), cfg.batch_size or default_batch(state), cfg)


def _estimate(
    replacement: ReplacementModel, src: Sources, n_logits: int, batch_size: int, cfg: TraceConfig
) -> tuple[int, str]:
    estimate = trace_memory_bytes(src, replacement.transcoders, n_logits, batch_size, cfg.max_feature_nodes)
    return estimate, estimate_text(src, n_logits, estimate, cfg.max_feature_nodes)


def default_batch(state: PromptState) -> int:
    """Targets per batched backward pass: the fastest measured (benchmarks/gpu_trace_check.py;
    on 2 CPU cores 64 for a 16-token prompt, 16 for a 256-token one: 19 s vs 26 s there)."""
    if state.embed.device.type == "cuda":
        return 256
    return 64 if len(state.tokens) <= 64 else 16


def trace_memory_bytes(
    src: Sources, transcoders: Transcoders, n_logits: int, batch_size: int, max_feature_nodes: int | None = None
) -> int:
    """What a trace holds at its peak, in bytes: the float32 edge rows of its targets (the kept
    features and the logits, over every node), the adjacency matrix they are copied into, a
    batch of gradients w.r.t. every leaf, and the decoder rows the features read them with.
    Grows as nodes**2, i.e. (tokens x active features per token)**2, unless `max_feature_nodes`
    caps the features kept. The batch and the rows count twice: the backward pass's own
    intermediates and the rows' assembly held about as much again when measured
    (benchmarks/tracing.py prints both beside the measured peak)."""
    n_pos, d_model = src.embed.shape
    n_columns = src.n_columns(n_pos)
    n_features = sum(int(m.sum()) for m in src.is_node.values())
    kept = min(max_feature_nodes or n_features, n_features)
    n_rows, n_nodes = kept + n_logits, n_columns - n_features + kept + n_logits
    copied = n_rows * n_nodes if kept < n_features else 0
    batch = batch_size * (n_pos * d_model * (len(src.errors) + 1) + n_columns)
    return 4 * (n_rows * n_columns + n_nodes * n_nodes + copied + 2 * batch) + 2 * src.readout_bytes(transcoders)


def estimate_text(src: Sources, n_logits: int, estimate: int, max_feature_nodes: int | None = None) -> str:
    n_pos = src.embed.shape[0]
    n_features = sum(int(m.sum()) for m in src.is_node.values())
    kept = min(max_feature_nodes or n_features, n_features)
    n_nodes = src.n_columns(n_pos) - n_features + kept + n_logits
    return f"{n_nodes} nodes ({kept} of {n_features} active features), ~{estimate / 2**30:.2f} GiB at its peak"


def _targets(
    replacement: ReplacementModel, out: ReplacementOutput, active, logit_ids: torch.Tensor
) -> list[torch.Tensor]:
    """One tensor per covered layer (its active features' pre-activations), then the demeaned
    output logits: concatenated, the targets in node order."""
    return [_target_group(replacement, out, active, logit_ids, g) for g in range(len(active) + 1)]


def _target_group(
    replacement: ReplacementModel,
    out: ReplacementOutput,
    active,
    logit_ids: torch.Tensor,
    group: int,
    members: torch.Tensor | None = None,
) -> torch.Tensor:
    """Group `group`'s targets (the `members` only, when given): a covered layer's features'
    pre-activations, or (the last group) the demeaned logits. A backward batch builds just its
    own targets, so no gradient of every target of a layer is ever materialized."""
    if group == len(active):
        last = out.logits[-1]
        ids = logit_ids if members is None else logit_ids[members]
        return (last[ids] - last.mean()).float()
    layer, positions, indices = active[group]
    if layer not in replacement.covered:
        raise ValueError(f"layer {layer} has active features but no transcoder")
    if members is not None:
        positions, indices = positions[members], indices[members]
    rows, bias = replacement.transcoders.encoder(layer, indices)
    return ((out.mlp_in[layer][positions].to(rows.dtype) * rows).sum(-1) + bias).float()


def position_slots(positions: torch.Tensor, n_pos: int) -> tuple[torch.Tensor, int]:
    """Each entry's rank among the entries at its position, and the most at one position: the
    layout of a [n_pos, slots] zero-padded view of the entries."""
    counts = torch.bincount(positions, minlength=n_pos)
    order = torch.argsort(positions, stable=True)
    ranks = torch.arange(len(order), device=order.device) - (counts.cumsum(0) - counts)[positions[order]]
    return torch.empty_like(ranks).scatter_(0, order, ranks), int(counts.max()) if len(order) else 0


class Readout(NamedTuple):
    """How feature nodes read their gradients at one covered layer's MLP output. A feature at
    position p writes value x decoder row into the MLP outputs of its target layers, so its
    gradient is the sum over those targets of (gradient at that MLP output at p) . (its row).
    Per target, the rows of every source layer's entries are gathered once per prompt,
    zero-padded per position ([T, d, slots of all sources]): a batch of gradients [B, d] at
    each position reads them with one product, none of it in the backward pass, and each
    gradient is read once however many layers write to it (a CLT's targets have many)."""

    sources: list[int]  # the covered layers writing to this target
    widths: list[int]  # their slots per position
    rows: torch.Tensor  # [T, d, sum(widths)] float32


class Sources(NamedTuple):
    """The leaves the frozen replacement model is a linear function of, for one prompt: token
    embeddings and error nodes, plus the values of the active (position, feature) entries. A
    feature enters the model only through what it writes to MLP outputs, where the error nodes
    are added, so its edges are read from the error nodes' gradients (`Readout`): the feature
    values are constants of the forward pass, and no backward pass goes through a decoder.
    Entries and errors before `first` (BOS, with freeze_bos) are constants, not nodes.
    Node order, as the graph's columns: feature nodes (`active`), errors layer-major, tokens."""

    embed: torch.Tensor  # [T, d] leaf
    errors: dict[int, torch.Tensor]  # every layer -> [T, d] leaf
    entries: dict[int, tuple[torch.Tensor, torch.Tensor]]  # covered layer -> (positions, features)
    values: dict[int, torch.Tensor]  # covered layer -> [n] values of its entries
    is_node: dict[int, torch.Tensor]  # covered layer -> [n] bool: the entry is a feature node
    active: list[tuple[int, torch.Tensor, torch.Tensor]]  # (layer, positions, features) of the nodes
    first: int
    slots: dict[int, torch.Tensor]  # covered layer -> [n]: each entry's slot at its position
    readouts: dict[int, Readout]  # covered target layer -> how entries read its gradients

    def sparse_acts(self, values: dict[int, torch.Tensor] | None = None) -> dict[int, SparseActs]:
        values = self.values if values is None else values
        return {layer: SparseActs(p, f, values[layer]) for layer, (p, f) in self.entries.items()}

    def zeroed(self, state: PromptState) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[int, SparseActs]]:
        """Forward inputs with every node at zero and the constants kept: what gives the bias."""
        errors = {layer: e.clone() for layer, e in state.errors.items()}
        for e in errors.values():
            e[self.first :] = 0
        kept = {layer: v * ~self.is_node[layer] for layer, v in self.values.items()}
        return torch.zeros_like(self.embed), errors, self.sparse_acts(kept)

    @property
    def inputs(self) -> list[torch.Tensor]:
        """The leaves in the order `node_columns` reads their gradients."""
        return [self.embed, *(self.errors[layer] for layer in sorted(self.errors))]

    def n_columns(self, n_pos: int) -> int:
        return sum(int(m.sum()) for m in self.is_node.values()) + (len(self.errors) + 1) * n_pos

    def with_readouts(self, transcoders: Transcoders) -> Sources:
        """These sources with their decoder rows gathered (`node_columns` needs them)."""
        n_pos = self.embed.shape[0]
        padded = {}
        for layer, (positions, features) in self.entries.items():
            slot, width = position_slots(positions, n_pos)
            index = torch.zeros(n_pos, width, dtype=torch.long, device=features.device)
            present = torch.zeros(n_pos, width, dtype=torch.bool, device=features.device)
            index[positions, slot], present[positions, slot] = features, True
            padded[layer] = (slot, index, present)
        readouts = {}
        for target in sorted(self.entries):
            sources = [s for s in transcoders.sources(target) if s in padded]
            rows = [transcoders.decoder(s, target).float()[padded[s][1]] * padded[s][2][..., None] for s in sources]
            widths = [r.shape[1] for r in rows]
            readouts[target] = Readout(sources, widths, torch.cat(rows, dim=1).transpose(1, 2).contiguous())
        return self._replace(slots={layer: slot for layer, (slot, _, _) in padded.items()}, readouts=readouts)

    def readout_bytes(self, transcoders: Transcoders) -> int:
        """What `with_readouts` gathers: float32 [T, slots, d] per (source, target) pair."""
        n_pos, d = self.embed.shape
        widths = {layer: position_slots(p, n_pos)[1] for layer, (p, _) in self.entries.items()}
        return 4 * n_pos * d * sum(widths[layer] * len(transcoders.targets(layer)) for layer in widths)

    def node_columns(self, grads: tuple, state: PromptState, reach: int | None = None) -> torch.Tensor:
        """[batch, n_columns]: gradient x value of every node, from batched gradients w.r.t.
        `inputs` (vector nodes summed over the model dimension). `reach`: the batch's targets sit
        before this position, so (attention being causal) every gradient after it is zero and
        the features there are not read."""
        layers = sorted(self.errors)
        grad_embed, grad_errors = grads[0], dict(zip(layers, grads[1:], strict=True))
        n_pos, batch = self.embed.shape[0], next(g.shape[0] for g in grads if g is not None)
        block = torch.zeros(batch, self.n_columns(n_pos))
        column = 0
        if self.entries and not self.readouts:
            raise ValueError("node_columns needs the decoder rows: call Sources.with_readouts first")
        reach = n_pos if reach is None else reach
        written: dict[int, torch.Tensor] = {}  # source layer -> [reach, B, slots]: d target / d entry
        for target, readout in self.readouts.items():
            grad = grad_errors[target]
            if grad is None:
                continue
            rows = readout.rows[:reach]
            parts = torch.bmm(grad[:, :reach].transpose(0, 1).float(), rows).split(readout.widths, dim=2)
            for source, part in zip(readout.sources, parts, strict=True):
                written[source] = written[source].add_(part) if source in written else part
        for layer, (positions, _) in self.entries.items():
            nodes = self.is_node[layer] & (positions < reach)
            if layer in written:
                grad = written[layer][positions[nodes], :, self.slots[layer][nodes]].T
                where = torch.nonzero(nodes[self.is_node[layer]]).flatten() + column
                block[:, where] = grad * self.values[layer][nodes].float()
            column += int(self.is_node[layer].sum())
        first = self.first
        for layer in layers:
            grad = grad_errors[layer]
            if grad is not None:  # frozen positions' error columns stay zero: they are not sources
                block[:, column + first : column + n_pos] = (grad[:, first:] * state.errors[layer][first:]).sum(-1)
            column += n_pos
        if grad_embed is not None:
            block[:, column : column + n_pos] = (grad_embed * state.embed).sum(-1)
        return block


def graph_sources(state: PromptState, freeze_bos: bool = True) -> Sources:
    """Fresh leaves for `state` (BOS entries and errors stay constants with `freeze_bos`); the
    decoder rows come with `Sources.with_readouts`, after the memory estimate."""
    first = 1 if freeze_bos else 0
    entries = {layer: torch.nonzero(a > 0, as_tuple=True) for layer, a in state.acts.items()}
    values = {layer: state.acts[layer][p, f].detach() for layer, (p, f) in entries.items()}
    is_node = {layer: p >= first for layer, (p, _) in entries.items()}
    active = [(layer, p[is_node[layer]], f[is_node[layer]]) for layer, (p, f) in entries.items()]
    return Sources(
        state.embed.clone().requires_grad_(True),
        {layer: e.clone().requires_grad_(True) for layer, e in state.errors.items()},
        {layer: (p, f) for layer, (p, f) in entries.items()},
        values,
        is_node,
        active,
        first,
        {},
        {},
    )


def _edge_rows(
    batch_targets: Callable[[int, torch.Tensor], torch.Tensor],
    sizes: list[int],
    state: PromptState,
    src: Sources,
    batch_size: int,
    max_features: int,
    logit_probs: torch.Tensor,
    progress: Callable[[float], None] | None,
    update_every: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adjacency rows [logits + max_features, columns] of the logits and of up to
    `max_features` feature targets, and each row's target (its node index; logits after the
    features). With every feature, rows go layer by layer. With fewer, as circuit-tracer does:
    the logits' rows first, then rounds of the unvisited features with the most influence on
    the logits through the rows computed so far (`update_every` batches a round). Targets
    come in groups of `sizes` (covered layers in order, then the logits), built per batch by
    `batch_targets(group, members)`."""
    n_features, n_logits = sum(sizes[:-1]), sizes[-1]
    rows = torch.zeros(max_features + n_logits, src.n_columns(src.embed.shape[0]))
    computed = torch.full((max_features + n_logits,), -1, dtype=torch.long)
    offsets = torch.tensor([0, *sizes]).cumsum(0)
    n_pos = src.embed.shape[0]
    target_positions = (
        torch.cat([p for _, p, _ in src.active]).cpu() if n_features else torch.zeros(0, dtype=torch.long)
    )
    filled = 0

    def run(indices: torch.Tensor) -> None:
        nonlocal filled
        for batch in indices.split(batch_size):
            group_of = torch.searchsorted(offsets, batch, right=True) - 1
            outputs, seeds = [], []
            for g in group_of.unique().tolist():
                mine = (group_of == g).nonzero().flatten()
                outputs.append(batch_targets(g, batch[mine] - offsets[g]))
                seed = torch.zeros(len(batch), len(mine), dtype=outputs[-1].dtype, device=outputs[-1].device)
                seed[mine, torch.arange(len(mine))] = 1
                seeds.append(seed)
            grads = torch.autograd.grad(
                outputs,
                src.inputs,
                grad_outputs=seeds,
                is_grads_batched=True,
                retain_graph=True,
                allow_unused=True,
            )
            reach = n_pos if (group_of == len(sizes) - 1).any() else int(target_positions[batch].max()) + 1
            rows[filled : filled + len(batch)] = src.node_columns(grads, state, reach)
            computed[filled : filled + len(batch)] = batch
            filled += len(batch)
            if progress:
                progress(filled / len(computed))

    run(torch.arange(n_features, n_features + n_logits))
    if max_features == n_features:
        run(torch.arange(n_features))
        return rows, computed
    visited = torch.zeros(n_features, dtype=torch.bool)
    while filled < len(computed):
        ranked = partial_influence(rows[:filled], computed[:filled], n_features, logit_probs)[:n_features]
        ranked = ranked.argsort(descending=True)
        pending = ranked[~visited[ranked]][: min(update_every * batch_size, len(computed) - filled)]
        visited[pending] = True
        run(pending.sort().values)  # node order keeps a batch's targets in few layers
    return rows, computed


def partial_influence(
    rows: torch.Tensor, computed: torch.Tensor, n_features: int, logit_probs: torch.Tensor, max_depth: int = 10_000
) -> torch.Tensor:
    """[columns] the influence of every node on the logits through the rows computed so far
    (`computed`: each row's target, logits numbered after the features), as graph.influence
    measures it on a whole graph: a feature without a row yet passes nothing further down."""
    matrix = normalized(rows)
    is_logit = computed >= n_features
    row_of = torch.full((n_features,), -1, dtype=torch.long)
    row_of[computed[~is_logit]] = torch.nonzero(~is_logit).flatten()
    has_row = row_of >= 0
    current = torch.zeros(len(rows))
    current[is_logit] = logit_probs.float().cpu()[computed[is_logit] - n_features]
    total = torch.zeros(rows.shape[1])
    for _ in range(max_depth):
        step = current @ matrix
        if not bool(step.any()):
            return total
        total += step
        current = torch.zeros(len(rows))
        current[row_of[has_row]] = step[:n_features][has_row]
    raise RuntimeError("influence did not converge: the adjacency matrix has a cycle")
