#!/usr/bin/env python3
"""The circuit-tracing checks of tests/unit/test_circuits.py, on a real model's transcoder set.

The unit tests run them on a tiny model; this runs the same three on any set (e.g. SmolLM2's,
from examples/configuration/transcoders.toml) and prints the numbers the README reports:

    .venv/bin/python scripts/check_circuits.py --transcoders runs/smollm2-transcoders \
        --prompt "The capital of France is"

1. the replacement model reproduces the real logits (max abs difference);
2. every target's incoming edges plus its bias equal its value (max abs error);
3. effects of 1 % changes of the most influential features, predicted from the graph, against
   the measured change of the top logit (Pearson correlation), rerunning the transcoders both
   ways: reselecting their active features, and keeping the prompt's active set.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lm_saes.circuits import (  # noqa: E402
    ReplacementModel,
    TranscoderSet,
    attribute,
    predicted_vs_measured,
    prompt_state,
)
from lm_saes.circuits.trace import top_feature_nodes  # noqa: E402
from lm_saes.config import ModelConfig, TraceConfig  # noqa: E402
from lm_saes.models import load_language_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transcoders", required=True, help="a transcoder set (folder with transcoders.json)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--features", type=int, default=20, help="how many top features to intervene on")
    args = parser.parse_args()

    transcoders = TranscoderSet.load(args.transcoders)
    replacement = ReplacementModel(load_language_model(ModelConfig(name=transcoders.model)), transcoders)
    state = prompt_state(replacement, args.prompt)
    with torch.no_grad():
        reproduction = float((replacement.forward(state).logits - state.logits).abs().max())

    graph = attribute(replacement, args.prompt, TraceConfig())
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_start, graph.n_nodes)])
    identity = float((graph.adjacency[targets].sum(1) + graph.bias[targets] - graph.values[targets]).abs().max())

    top = top_feature_nodes(graph, args.features)
    correlations = {}
    for freeze in (False, True):
        predicted, measured = predicted_vs_measured(replacement, state, graph, top, freeze_active_set=freeze)
        correlations[freeze] = float(np.corrcoef(predicted, measured)[0, 1])

    print(f"transcoders on {len(transcoders.layers)} layers, prompt {args.prompt!r} ({len(graph.tokens)} tokens), "
          f"{graph.n_features} feature nodes, top logit {graph.logit_strings[0]!r}")
    print(f"replacement model reproduces the logits:    max |diff| = {reproduction:.2e}  (test bound 1e-4)")
    print(f"edges + bias = target value:                max |err|  = {identity:.2e}  (test bound 1e-4)")
    print(f"predicted vs measured logit change, {len(top)} interventions of 1 %: correlation "
          f"{correlations[False]:.3f} reselecting features, {correlations[True]:.3f} keeping the active set")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
