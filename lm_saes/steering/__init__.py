"""Steering: generate with features of SAEs or transcoders added, clamped, ablated or scaled.

interventions.py  what a request changes (pydantic), validated against the SAEs it names
splice.py         the forward hooks that apply the changes at the chosen positions
runner.py         one sequence on the model's KV cache (and why the bridge, with which fix)
sampling.py       greedy / temperature + top-p with a seed; text released as it becomes final
generate.py       the token-by-token loop, default vs steered side by side, frozen attention
load.py           an SAE, its max activations from its analysis, and its model's config
"""

from lm_saes.steering.generate import (
    Completion,
    Steerer,
    SteerRequest,
    SteerResult,
    Step,
    token_ids,
)
from lm_saes.steering.interventions import FeatureIntervention, SteeringSAE
from lm_saes.steering.load import load_steering_sae, max_activations, model_config_for
from lm_saes.steering.sampling import GenerationConfig

__all__ = [
    "Completion",
    "FeatureIntervention",
    "GenerationConfig",
    "SteerRequest",
    "SteerResult",
    "Steerer",
    "SteeringSAE",
    "Step",
    "load_steering_sae",
    "max_activations",
    "model_config_for",
    "token_ids",
]
