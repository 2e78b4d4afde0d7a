"""Circuit tracing: attribution graphs over a transcoder replacement model.

transcoders.py   the MLP stand-ins: per-layer transcoders ([transcoders]) or a cross-layer one ([clt])
replacement.py   the frozen replacement model of one prompt, and interventions on it
attribution.py   direct-effect edges by batched backward passes
qk.py            why a head attended: its score split into node contributions (QK attribution)
graph.py         the graph, influence, pruning, replacement/completeness scores
interventions.py measured (rerun) and predicted (from the graph) effects of feature changes
checks.py        whether a graph means what it says (for scripts and the GPU check)
trace.py         one trace end to end: attribute, prune, save, record
"""

from lm_saes.circuits.attribution import attribute
from lm_saes.circuits.graph import AttributionGraph, GraphScores, prune, scores
from lm_saes.circuits.interventions import (
    intervene,
    predicted_logit_effects,
    predicted_vs_measured,
    prompt_state,
)
from lm_saes.circuits.replacement import Intervention, PromptState, ReplacementModel
from lm_saes.circuits.trace import load_graph, run_trace, save_graph
from lm_saes.circuits.transcoders import CrossLayerSet, Transcoders, TranscoderSet

__all__ = [
    "AttributionGraph",
    "CrossLayerSet",
    "GraphScores",
    "Intervention",
    "PromptState",
    "ReplacementModel",
    "TranscoderSet",
    "Transcoders",
    "attribute",
    "intervene",
    "load_graph",
    "predicted_logit_effects",
    "predicted_vs_measured",
    "prompt_state",
    "prune",
    "run_trace",
    "save_graph",
    "scores",
]
