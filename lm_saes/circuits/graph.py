"""Attribution graphs: nodes, the direct-effect adjacency matrix, influence, pruning, scores.

Node order (the one circuit-tracer uses, so exports map one to one): active features, then one
error node per (layer, position) for every layer, then one token-embedding node per position,
then the output logits. `adjacency[target, source]` is the direct effect of the source on the
target: source activation (or vector) times the gradient of the target through the frozen
replacement model. Rows of errors and tokens are zero: they have no inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch


def feature_node_id(layer: int, feature: int, position: int) -> str:
    """Node ids as circuit-tracer writes them (and our graph records and pages use)."""
    return f"{layer}_{feature}_{position}"


def error_node_id(layer: int, position: int) -> str:
    return f"{layer}_-1_{position}"


def token_node_id(token: int, position: int) -> str:
    return f"E_{token}_{position}"


@dataclass
class AttributionGraph:
    prompt: str
    tokens: list[int]  # [T] input token ids
    token_strings: list[str]
    model: str
    transcoders: str  # location of the transcoder set
    n_layers: int
    features: torch.Tensor  # [F, 3] long: (layer, position, feature index)
    activations: torch.Tensor  # [F] feature activations
    logit_tokens: list[int]  # [K] output tokens, most probable first
    logit_strings: list[str]
    logit_probabilities: torch.Tensor  # [K]
    adjacency: torch.Tensor  # [N, N]
    values: torch.Tensor  # [N] each node's value: pre-activation / norm-free totals, see attribute()
    bias: torch.Tensor  # [N] the part of each target not carried by any node (biases)
    info: dict[str, Any] = field(default_factory=dict)

    # --- node bookkeeping -------------------------------------------------------------
    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def error_start(self) -> int:
        return self.n_features

    @property
    def token_start(self) -> int:
        return self.n_features + self.n_errors

    @property
    def logit_start(self) -> int:
        return self.token_start + self.n_pos

    @property
    def n_nodes(self) -> int:
        return self.logit_start + len(self.logit_tokens)

    def error_index(self, layer: int, position: int) -> int:
        return self.error_start + layer * self.n_pos + position

    def node(self, index: int) -> dict[str, Any]:
        """A JSON-ready description of node `index`."""
        if index < self.error_start:
            layer, pos, feature = (int(v) for v in self.features[index])
            return {
                "id": feature_node_id(layer, feature, pos),
                "kind": "feature",
                "layer": layer,
                "position": pos,
                "feature": feature,
                "activation": float(self.activations[index]),
            }
        if index < self.token_start:
            layer, pos = divmod(index - self.error_start, self.n_pos)
            return {"id": error_node_id(layer, pos), "kind": "error", "layer": layer, "position": pos}
        if index < self.logit_start:
            pos = index - self.token_start
            return {
                "id": token_node_id(self.tokens[pos], pos),
                "kind": "token",
                "layer": -1,
                "position": pos,
                "token": self.token_strings[pos],
            }
        k = index - self.logit_start
        return {
            "id": f"{self.n_layers + 1}_{self.logit_tokens[k]}_{self.n_pos - 1}",
            "kind": "logit",
            "layer": self.n_layers,
            "position": self.n_pos - 1,
            "token": self.logit_strings[k],
            "probability": float(self.logit_probabilities[k]),
        }

    def feature_index(self, layer: int, position: int, feature: int) -> int | None:
        match = (
            (self.features[:, 0] == layer) & (self.features[:, 1] == position) & (self.features[:, 2] == feature)
        ).nonzero()
        return int(match[0, 0]) if len(match) else None

    def logit_weights(self) -> torch.Tensor:
        """[N] the output logits' probabilities, zero elsewhere: what influence is measured on."""
        weights = torch.zeros(self.n_nodes, dtype=self.adjacency.dtype)
        weights[self.logit_start :] = self.logit_probabilities.to(weights.dtype)
        return weights

    # --- persistence -------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "features": self.features,
            "activations": self.activations,
            "logit_probabilities": self.logit_probabilities,
            "adjacency": self.adjacency,
            "values": self.values,
            "bias": self.bias,
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "tokens": self.tokens,
            "token_strings": self.token_strings,
            "model": self.model,
            "transcoders": self.transcoders,
            "n_layers": self.n_layers,
            "logit_tokens": self.logit_tokens,
            "logit_strings": self.logit_strings,
            "info": self.info,
        }

    @classmethod
    def from_parts(cls, metadata: dict[str, Any], tensors: dict[str, torch.Tensor]) -> AttributionGraph:
        return cls(**metadata, **cast(dict[str, Any], tensors))  # the tensors go to tensor fields


# --- influence, pruning and scores ------------------------------------------------------
def normalized(adjacency: torch.Tensor) -> torch.Tensor:
    """|A| with each row scaled to sum to 1: the share of a target's input from each source."""
    absolute = adjacency.abs()
    return absolute / absolute.sum(1, keepdim=True).clamp_min(1e-10)


def influence(matrix: torch.Tensor, weights: torch.Tensor, max_depth: int = 10_000) -> torch.Tensor:
    """weights @ (M + M^2 + ...): total (all-path) influence of every node on the weighted targets.

    The graph is acyclic, so the series ends after at most its depth in terms.
    """
    total = torch.zeros_like(weights)
    current = weights @ matrix
    for _ in range(max_depth):
        if not bool(current.any()):
            return total
        total += current
        current = current @ matrix
    raise RuntimeError("influence did not converge: the adjacency matrix has a cycle")


def threshold_for(scores: torch.Tensor, fraction: float) -> float:
    """The smallest score kept when keeping the top scores that hold `fraction` of their sum."""
    ordered = scores.flatten().sort(descending=True).values
    total = ordered.sum()
    if total <= 0:
        return float("inf")
    cumulative = ordered.cumsum(0) / total
    index = min(int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=cumulative.dtype))), len(ordered) - 1)
    return float(ordered[index])


class Pruned(NamedTuple):
    node_mask: torch.Tensor  # [N] bool
    edge_mask: torch.Tensor  # [N, N] bool
    node_influence: torch.Tensor  # [N] influence on the logits (unpruned graph)


def prune(
    graph: AttributionGraph, node_threshold: float = 0.8, edge_threshold: float = 0.98, max_links: int | None = None
) -> Pruned:
    """Keep the nodes, then the edges, that carry the given fractions of influence on the logits
    (at most `max_links` edges, the most influential).

    Tokens and logits always stay; a feature or error node left without outgoing edges (or a
    feature without incoming ones) is dropped, repeatedly, until the graph is consistent.
    """
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} = {value} must be between 0 and 1")
    weights = graph.logit_weights()
    node_influence = influence(normalized(graph.adjacency), weights)
    inner = slice(0, graph.token_start)  # features and errors
    node_mask = torch.zeros(graph.n_nodes, dtype=torch.bool)
    node_mask[inner] = node_influence[inner] >= threshold_for(node_influence[inner], node_threshold)
    node_mask[graph.token_start :] = True

    kept = graph.adjacency * node_mask[:, None] * node_mask[None, :]
    kept_norm = normalized(kept)
    downstream = influence(kept_norm, weights) + weights
    edge_scores = kept_norm * downstream[:, None]
    edge_floor = threshold_for(edge_scores, edge_threshold)
    if max_links is not None and max_links < edge_scores.numel():
        edge_floor = max(edge_floor, float(edge_scores.flatten().topk(max_links).values[-1]))
    edge_mask = (edge_scores >= edge_floor) & (edge_scores > 0)

    while True:
        before = node_mask.clone()
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        node_mask[inner] &= edge_mask[:, inner].any(0)  # has an outgoing edge
        node_mask[: graph.n_features] &= edge_mask[: graph.n_features].any(1)  # feature has inputs
        if torch.equal(before, node_mask):
            return Pruned(node_mask, edge_mask, node_influence)


class GraphScores(NamedTuple):
    replacement: float  # share of token -> logit influence that does not pass through error nodes
    completeness: float  # influence-weighted share of node inputs that come from non-error nodes


def scores(graph: AttributionGraph) -> GraphScores:
    weights = graph.logit_weights()
    matrix = normalized(graph.adjacency)
    node_influence = influence(matrix, weights)
    token_influence = node_influence[graph.token_start : graph.logit_start].sum()
    error_influence = node_influence[graph.error_start : graph.token_start].sum()
    replacement = token_influence / (token_influence + error_influence).clamp_min(1e-10)
    # As circuit-tracer defines it (so the numbers compare): every node weighs in by its influence
    # plus its logit weight; nodes without inputs count as fully explained.
    non_error = 1 - matrix[:, graph.error_start : graph.token_start].sum(1)
    weight = node_influence + weights
    completeness = (non_error * weight).sum() / weight.sum().clamp_min(1e-10)
    return GraphScores(float(replacement), float(completeness))
