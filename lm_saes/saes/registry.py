"""Architectures registered by name, each with its config, so configs and saved SAEs can name them.

An architecture is one file: a config class (`SAEConfigBase` with `architecture: Literal[NAME]`
and its knobs) and a `SparseAutoencoder` subclass decorated with `@register(ThatConfig)`. Once
that file is imported, `[sae] architecture = NAME` is valid in every config (lm_saes.config's
`SAEConfig` looks the registry up when it validates, not at import) and saved SAEs of it load.
Its spec class (config + data facts, the flat sae.json layout) is made at registration.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, get_args

from lm_saes.config import SAEConfigBase, pick_sae_class, without_legacy_keys
from lm_saes.saes.base import SAESpec, SparseAutoencoder, spec_class

_ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {}
_BUILTIN_MODULES = ("topk", "batchtopk", "jumprelu", "relu")


def architecture_name(config: type[SAEConfigBase]) -> str:
    """NAME in `architecture: Literal[NAME] = NAME`, which every architecture's config declares."""
    field = config.model_fields["architecture"]
    if get_args(field.annotation) != (field.default,) or not isinstance(field.default, str):
        raise TypeError(f"{config.__name__} must declare `architecture: Literal['name'] = 'name'`")
    return field.default


def register(config: type[SAEConfigBase]):
    """Class decorator: `@register(TopKConfig)` registers the class under its config's name."""
    name = architecture_name(config)

    def wrap(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
        if name in _ARCHITECTURES and _ARCHITECTURES[name] is not cls:
            raise ValueError(f"SAE architecture {name!r} is registered twice")
        cls.architecture, cls.config_class, cls.spec_class = name, config, spec_class(config)
        _ARCHITECTURES[name] = cls
        return cls

    return wrap


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"lm_saes.saes.{module}")


def registered_architectures() -> dict[str, type[SparseAutoencoder]]:
    _load_builtins()
    return dict(_ARCHITECTURES)


def registered_configs() -> dict[str, type[SAEConfigBase]]:
    return {name: cls.config_class for name, cls in registered_architectures().items()}


def make_spec(config: SAEConfigBase, d_in: int, d_out: int, **facts: Any) -> SAESpec:
    """The spec of an SAE to train: its config plus the data's facts (`model`, scales)."""
    cls = pick_sae_class({"architecture": config.architecture}, registered_architectures())
    return cls.spec_class.model_validate({**config.model_dump(), "d_in": d_in, "d_out": d_out, **facts})


def parse_spec(raw: Mapping[str, Any]) -> SAESpec:
    """A spec from its flat dict (the sae.json layout), as its architecture's spec class.

    sae.json files written before configs were per architecture (every architecture's knobs in
    one file) load too: `without_legacy_keys` drops the knobs that are not this architecture's.
    """
    classes = {name: sae.spec_class for name, sae in registered_architectures().items()}
    cls = pick_sae_class(raw, classes)
    return cls.model_validate(without_legacy_keys(raw, cls))


def build_sae(spec: SAESpec) -> SparseAutoencoder:
    return pick_sae_class({"architecture": spec.architecture}, registered_architectures())(spec)
