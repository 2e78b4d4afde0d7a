"""What a model is, without keeping it loaded: hook names and sizes, for validating requests.

A service checks a submitted config (hooks exist, sizes fit the context, memory) before
queueing it; loading the model once to learn these facts and then dropping it costs a few
seconds the first time and nothing after.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from lm_saes.config import ModelConfig
from lm_saes.models.language_model import LanguageModel, check_hooks, load_language_model


@dataclass(frozen=True)
class ModelFacts:
    name: str
    hooks: frozenset[str]
    n_layers: int
    d_model: int
    n_ctx: int
    d_vocab: int
    parameter_bytes: int

    def check_hooks(self, hooks: Iterable[str]) -> None:
        check_hooks(self.name, set(self.hooks), hooks)


def facts_of(model: LanguageModel) -> ModelFacts:
    cfg = model.bridge.cfg
    return ModelFacts(
        model.name,
        frozenset(model.bridge.hook_dict),
        int(cfg.n_layers),
        int(cfg.d_model),
        int(cfg.n_ctx),
        int(cfg.d_vocab),
        sum(p.numel() * p.element_size() for p in model.bridge.parameters()),
    )


@functools.lru_cache(maxsize=16)
def _facts(cfg_json: str) -> ModelFacts:
    return facts_of(load_language_model(ModelConfig.model_validate_json(cfg_json)))


def model_facts(cfg: ModelConfig) -> ModelFacts:
    """Facts of the model `cfg` builds (cached per name and shape; the model itself is freed)."""
    shape = cfg.model_dump(include={"name", "tiny_layers", "tiny_d_model", "tiny_vocab"})
    return _facts(ModelConfig(**shape).model_dump_json())
