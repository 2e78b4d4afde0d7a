"""Admission: a submitted job is validated in full before it is queued.

Config text is bounded in size and nesting, must be a JSON/TOML object and must name the
sections a run cannot do without (an empty config is refused, not run with defaults);
every location is confined (`confine.Roots`); the model must be one this server serves and
have the hooks named; context sizes must fit the model; and the run's estimated memory and
activation storage must fit the server's ceilings. Anything else fails at submit with
INVALID_ARGUMENT naming the field, never later in a worker.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import grpc

from lm_saes.config import (
    AnalyzeConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    parse_config,
)
from lm_saes.models.facts import ModelFacts, model_facts
from lm_saes.training.memory import estimate_run
from services.common.confine import Roots
from services.common.errors import RequestError, invalid, short
from services.common.settings import ServiceSettings

MAX_DEPTH = 12


def depth(value: Any) -> int:
    """Nesting depth of decoded JSON/TOML (iterative: a hostile depth cannot overflow the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def parse_object(field_name: str, text: str, max_bytes: int, toml: bool = False) -> dict[str, Any]:
    """`text` as a JSON (or TOML) object, bounded in size and depth."""
    if len(text) > max_bytes or len(text.encode()) > max_bytes:
        raise invalid(field_name, f"is {len(text.encode())} bytes; at most {max_bytes} (max_config_bytes)")
    try:
        value = tomllib.loads(text) if toml else json.loads(text)
    except RecursionError:
        raise invalid(field_name, f"nested too deeply (at most {MAX_DEPTH} levels)") from None
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise invalid(field_name, f"not valid {'TOML' if toml else 'JSON'}: {short(str(error), 200)}") from None
    if not isinstance(value, dict):
        raise invalid(field_name, f"must be a {'TOML table' if toml else 'JSON object'}, got {type(value).__name__}")
    if depth(value) > MAX_DEPTH:
        raise invalid(field_name, f"nested too deeply (at most {MAX_DEPTH} levels)")
    return value


def require_sections(raw: dict[str, Any], sections: tuple[str, ...], field_name: str) -> None:
    missing = [s for s in sections if s not in raw]
    if missing:
        raise invalid(
            field_name,
            f"is missing {', '.join(missing)}: a submitted config must say at least "
            f"which {', '.join(sections)} to use (defaults are not run on a shared server)",
        )


def parsed(raw: dict[str, Any], model: type, source: str) -> Any:
    try:
        return parse_config(raw, model, source)
    except ConfigError as error:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None


class Admission:
    """The checks one service applies to what callers submit."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.roots = Roots.from_settings(settings)

    def model(self, field_name: str, cfg: ModelConfig) -> ModelFacts:
        """Facts of a model callers may use (loaded once to learn them)."""
        self.roots.model(field_name, cfg.name)
        try:
            return model_facts(cfg)
        except (OSError, ValueError) as error:
            raise invalid(field_name, f"cannot load {short(cfg.name)}: {short(str(error), 200)}") from None

    def data(self, field_name: str, data: DataConfig, facts: ModelFacts) -> DataConfig:
        """A confined source, and contexts that fit the model."""
        data.source = self.roots.data_source(f"{field_name}.source", data.source)
        return self._fits(field_name, data, facts)

    @staticmethod
    def _fits(field_name: str, data: DataConfig, facts: ModelFacts) -> DataConfig:
        if data.context_size > facts.n_ctx:
            raise invalid(
                f"{field_name}.context_size", f"{data.context_size} is longer than the model's context of {facts.n_ctx}"
            )
        return data

    def run(self, cfg: RunConfig) -> RunConfig:
        """A training run as callers may submit it (locations confined, sizes checked)."""
        cfg.output = self.roots.writable("output", cfg.output)
        cfg.data.source = self.roots.data_source("data.source", cfg.data.source)
        if cfg.activations.path is not None:
            cfg.activations.path = self.roots.writable("activations.path", cfg.activations.path)
        facts = self.model("model.name", cfg.model)
        self._fits("data", cfg.data, facts)
        try:
            facts.check_hooks(cfg.activations.hooks)
        except ValueError as error:
            raise invalid("activations.hooks", str(error)) from None
        estimate = estimate_run(cfg, facts.d_model, facts.parameter_bytes)
        ceiling = self.settings.max_job_memory_gb * 2**30
        if estimate.memory_bytes > ceiling:
            raise invalid(
                "sae.d_sae",
                f"this run needs {estimate.describe()}; this server allows "
                f"{self.settings.max_job_memory_gb:g} GiB (max_job_memory_gb): lower sae.d_sae, "
                "train.batch_size or activations.buffer_tokens",
            )
        storage = self.settings.max_job_storage_gb * 2**30
        if estimate.storage_bytes > storage:
            raise invalid(
                "data.max_tokens",
                f"this run would store {estimate.describe()}; this server allows "
                f"{self.settings.max_job_storage_gb:g} GiB of shards (max_job_storage_gb): lower "
                "data.max_tokens or set activations.store = false",
            )
        return cfg

    def analysis(self, sae_uri: str, cfg: AnalyzeConfig) -> tuple[str, AnalyzeConfig]:
        """(confined SAE location, config) of an analysis callers may submit."""
        from lm_saes.saes.base import SPEC_KEY
        from lm_saes.stores import ObjectNotFound, open_store

        sae_uri = self.roots.readable("sae_uri", sae_uri)
        cfg.output = self.roots.writable("output", cfg.output)
        cfg.data.source = self.roots.data_source("data.source", cfg.data.source)
        try:
            spec = open_store(sae_uri, create_bucket=False).get_json(SPEC_KEY)
        except (ObjectNotFound, FileNotFoundError, NotADirectoryError, ValueError):
            raise RequestError(
                grpc.StatusCode.NOT_FOUND, f"sae_uri: no SAE at {short(sae_uri)} (expected {SPEC_KEY}; train one first)"
            ) from None
        model = cfg.model or ModelConfig(name=str(spec.get("model") or ""))
        facts = self.model("model.name", model)
        self._fits("data", cfg.data, facts)
        try:
            facts.check_hooks([str(spec.get("hook_in"))])
        except ValueError as error:
            raise invalid("sae_uri", f"the SAE does not fit the model: {error}") from None
        return sae_uri, cfg
