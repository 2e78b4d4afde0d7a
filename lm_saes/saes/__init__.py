"""Sparse autoencoders: one file per architecture, registered by name."""

from lm_saes.saes.base import ForwardOutput, SAESpec, SparseAutoencoder, TrainStepInfo
from lm_saes.saes.io import load_sae
from lm_saes.saes.registry import build_sae, register, registered_architectures

__all__ = [
    "ForwardOutput",
    "SAESpec",
    "SparseAutoencoder",
    "TrainStepInfo",
    "build_sae",
    "load_sae",
    "register",
    "registered_architectures",
]
