"""Sparse autoencoders: one file per architecture (its config and module), registered by name."""

from lm_saes.saes.base import ForwardOutput, SAESpec, SparseAutoencoder, TrainStepInfo
from lm_saes.saes.batchtopk import BatchTopKConfig, BatchTopKSAE
from lm_saes.saes.io import load_sae
from lm_saes.saes.jumprelu import JumpReLUConfig, JumpReLUSAE
from lm_saes.saes.registry import (
    build_sae,
    make_spec,
    parse_spec,
    register,
    registered_architectures,
    registered_configs,
)
from lm_saes.saes.relu import ReLUConfig, ReLUSAE
from lm_saes.saes.topk import TopKConfig, TopKSAE

__all__ = [
    "BatchTopKConfig",
    "BatchTopKSAE",
    "ForwardOutput",
    "JumpReLUConfig",
    "JumpReLUSAE",
    "ReLUConfig",
    "ReLUSAE",
    "SAESpec",
    "SparseAutoencoder",
    "TopKConfig",
    "TopKSAE",
    "TrainStepInfo",
    "build_sae",
    "load_sae",
    "make_spec",
    "parse_spec",
    "register",
    "registered_architectures",
    "registered_configs",
]
