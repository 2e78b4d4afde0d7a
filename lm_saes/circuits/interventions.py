"""Interventions: change features, rerun the replacement model, and compare with the graph.

`intervene` measures: it scales or clamps features and reruns the replacement model, whose
downstream features are recomputed by their transcoders (attention and norms stay frozen).
`predicted_logit_effects` predicts the same change from the graph alone, by propagating the
change along the edges (all paths, through downstream features); for small changes the two
agree, which is how we test that the graph means what it says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from lm_saes.circuits.graph import AttributionGraph
from lm_saes.circuits.replacement import Intervention, PromptState, ReplacementModel


class TokenLogit(NamedTuple):
    token: int
    text: str
    logit: float
    probability: float


class InterventionResult(NamedTuple):
    before: list[TokenLogit]  # top tokens of the unchanged replacement model
    after: list[TokenLogit]  # top tokens with the interventions
    logits_before: torch.Tensor  # [vocab] last position
    logits_after: torch.Tensor


def prompt_state(replacement: ReplacementModel, prompt: str) -> PromptState:
    tokenizer = replacement.model.tokenizer
    return replacement.prepare(torch.tensor([tokenizer.bos_token_id, *tokenizer.encode(prompt)]))


@torch.no_grad()
def intervene(
    replacement: ReplacementModel,
    state: PromptState,
    interventions: Sequence[Intervention],
    top_k: int = 10,
    freeze_active_set: bool = False,
) -> InterventionResult:
    """Top logits before and after the changes (see `ReplacementModel.forward` for the mode)."""
    before = replacement.forward(state).logits[-1].float()
    after = (
        replacement.forward(state, interventions=interventions, freeze_active_set=freeze_active_set).logits[-1].float()
    )
    return InterventionResult(_top(replacement, before, top_k), _top(replacement, after, top_k), before, after)


def _top(replacement: ReplacementModel, logits: torch.Tensor, k: int) -> list[TokenLogit]:
    probs = logits.softmax(-1)
    top = probs.topk(min(k, probs.numel()))
    ids = top.indices.tolist()
    texts = replacement.model.tokenizer.token_strings(ids)
    return [
        TokenLogit(i, t, float(logits[i]), float(p)) for i, t, p in zip(ids, texts, top.values.tolist(), strict=True)
    ]


def predicted_logit_effects(graph: AttributionGraph, changes: dict[int, float]) -> torch.Tensor:
    """[K] predicted change of each output logit (demeaned) when feature nodes change.

    `changes` maps a feature node index to the change of its activation. A change propagates to
    downstream features along edges (per unit of source activation: edge / activation) and on
    to the logits; every path counts, as in the rerun model.
    """
    n_features = graph.n_features
    per_unit = graph.adjacency[:, :n_features] / graph.activations.clamp_min(1e-12)[None, :]
    source = torch.zeros(n_features)
    for index, change in changes.items():
        if not 0 <= index < n_features:
            raise ValueError(f"node {index} is not a feature node (0..{n_features - 1})")
        source[index] = change
    delta = source.clone()
    for _ in range(graph.n_layers + 1):  # each pass reaches one layer further downstream
        updated = source + per_unit[:n_features] @ delta
        if torch.allclose(updated, delta):
            break
        delta = updated
    return per_unit[graph.logit_start :] @ delta


def predicted_vs_measured(
    replacement: ReplacementModel,
    state: PromptState,
    graph: AttributionGraph,
    nodes: Sequence[int],
    scale: float = 1.01,
    freeze_active_set: bool = False,
) -> tuple[list[float], list[float]]:
    """How well the graph predicts interventions: for each feature node, the change of the top
    (demeaned) logit when that feature is scaled by `scale`, predicted from the graph and measured
    by rerunning the replacement model."""
    predicted, measured = [], []
    for index in nodes:
        layer, position, feature = graph.features[index].tolist()
        result = intervene(
            replacement, state, [Intervention(layer, position, feature, scale)], freeze_active_set=freeze_active_set
        )
        before = result.logits_before - result.logits_before.mean()
        after = result.logits_after - result.logits_after.mean()
        measured.append(float((after - before)[graph.logit_tokens[0]]))
        change = (scale - 1) * float(graph.activations[index])
        predicted.append(float(predicted_logit_effects(graph, {index: change})[0]))
    return predicted, measured
