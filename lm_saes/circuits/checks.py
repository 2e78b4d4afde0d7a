"""Whether an attribution graph means what it says, for any model and transcoder set.

The unit tests assert these on a tiny model; `scripts/check_circuits.py` reports them for a real
one (SmolLM2) and `benchmarks/gpu_trace_check.py` on CUDA.
"""

from __future__ import annotations

import torch

from lm_saes.circuits.attribution import attribute
from lm_saes.circuits.interventions import predicted_vs_measured, prompt_state
from lm_saes.circuits.replacement import ReplacementModel
from lm_saes.circuits.trace import top_feature_nodes
from lm_saes.config import TraceConfig


def graph_checks(
    replacement: ReplacementModel, prompt: str, cfg: TraceConfig | None = None, n_features: int = 20
) -> dict[str, float | int | str]:
    """1. the replacement model reproduces the real logits (max abs difference); 2. every target's
    incoming edges plus its bias equal its value (max abs error); 3. the change of the top logit
    predicted from the graph for 1 % changes of the `n_features` most influential features,
    correlated with reruns that reselect active features and that keep the prompt's active set."""
    state = prompt_state(replacement, prompt)
    with torch.no_grad():
        reproduction = float((replacement.forward(state).logits - state.logits).abs().max())
    graph = attribute(replacement, prompt, cfg)
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_start, graph.n_nodes)])
    identity = float((graph.adjacency[targets].sum(1) + graph.bias[targets] - graph.values[targets]).abs().max())
    top = top_feature_nodes(graph, n_features)
    correlations = {}
    for name, freeze in (("reselect", False), ("keep_active_set", True)):
        predicted, measured = predicted_vs_measured(replacement, state, graph, top, freeze_active_set=freeze)
        correlations[f"correlation_{name}"] = float(torch.corrcoef(torch.tensor([predicted, measured]))[0, 1])
    return {
        "tokens": len(graph.tokens),
        "feature_nodes": graph.n_features,
        "interventions": len(top),
        "top_logit": graph.logit_strings[0],
        "logits_max_abs_diff": reproduction,
        "edges_plus_bias_max_abs_err": identity,
        **correlations,
    }
