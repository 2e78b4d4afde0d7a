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

from lm_saes.circuits import ReplacementModel, TranscoderSet  # noqa: E402
from lm_saes.circuits.checks import graph_checks  # noqa: E402
from lm_saes.config import ModelConfig  # noqa: E402
from lm_saes.models import load_language_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transcoders", required=True, help="a transcoder set (folder with transcoders.json)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--features", type=int, default=20, help="how many top features to intervene on")
    args = parser.parse_args()

    transcoders = TranscoderSet.load(args.transcoders)
    replacement = ReplacementModel(load_language_model(ModelConfig(name=transcoders.model)), transcoders)
    r = graph_checks(replacement, args.prompt, n_features=args.features)
    print(
        f"transcoders on {len(transcoders.layers)} layers, prompt {args.prompt!r} ({r['tokens']} tokens), "
        f"{r['feature_nodes']} feature nodes, top logit {r['top_logit']!r}"
    )
    print(f"replacement model reproduces the logits:    max |diff| = {r['logits_max_abs_diff']:.2e}  (test bound 1e-4)")
    print(
        f"edges + bias = target value:                max |err|  = {r['edges_plus_bias_max_abs_err']:.2e}  "
        "(test bound 1e-4)"
    )
    print(
        f"predicted vs measured logit change, {r['interventions']} interventions of 1 %: correlation "
        f"{r['correlation_reselect']:.3f} reselecting features, {r['correlation_keep_active_set']:.3f} "
        "keeping the active set"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
