"""Architectures registered by name, so configs and saved artifacts can name them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lm_saes.saes.base import SAESpec, SparseAutoencoder

_ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {}
_BUILTIN_MODULES = ("topk", "batchtopk", "jumprelu", "relu")


def register(name: str):
    """Class decorator: `@register("topk")`."""

    def wrap(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        if name in _ARCHITECTURES and _ARCHITECTURES[name] is not cls:
            raise ValueError(f"SAE architecture {name!r} is registered twice")
        cls.architecture = name
        _ARCHITECTURES[name] = cls
        return cls

    return wrap


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"lm_saes.saes.{module}")


def registered_architectures() -> dict[str, type[SparseAutoencoder]]:
    _load_builtins()
    return dict(_ARCHITECTURES)


def build_sae(spec: SAESpec) -> SparseAutoencoder:
    architectures = registered_architectures()
    if spec.architecture not in architectures:
        raise ValueError(
            f"unknown SAE architecture {spec.architecture!r}; choose one of {sorted(architectures)}"
        )
    return architectures[spec.architecture](spec)
