"""Activation generation, sharded storage with a manifest, and shuffled reading."""

from lm_saes.activations.buffer import ActivationSource, OnTheFlyActivations, StoredActivations
from lm_saes.activations.generate import generate_activations, iter_model_activations
from lm_saes.activations.store import ActivationManifest, HookStats, ShardWriter, read_manifest

__all__ = [
    "ActivationManifest",
    "ActivationSource",
    "HookStats",
    "OnTheFlyActivations",
    "ShardWriter",
    "StoredActivations",
    "generate_activations",
    "iter_model_activations",
    "read_manifest",
]
