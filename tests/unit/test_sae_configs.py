"""SAE configs per architecture: the `[sae]` union, its errors, old artifacts, a third-party one."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import torch
from pydantic import Field

from lm_saes.config import ConfigError, RunConfig, SAEConfigBase, parse_config
from lm_saes.saes import (
    JumpReLUConfig,
    ReLUConfig,
    ReLUSAE,
    SparseAutoencoder,
    TopKConfig,
    build_sae,
    load_sae,
    make_spec,
    parse_spec,
    register,
)
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer
from lm_saes.training.metrics_log import read_metrics
from tests.unit.test_training_and_eval import _source

REPO = Path(__file__).resolve().parents[2]
BUILTINS = ["batchtopk", "jumprelu", "relu", "topk"]
# What sae.json and config.json held before configs were per architecture (every knob of every
# architecture), exactly as the old SAESpec / RunConfig dumped them.
OLD_RELU_SAE_JSON = {
    "architecture": "relu",
    "hook_in": "a",
    "hook_out": "b",
    "d_sae": 16,
    "k": 32,
    "aux_k": None,
    "aux_k_coefficient": 0.03125,
    "l1_coefficient": 0.5,
    "l0_coefficient": 1.0,
    "jumprelu_bandwidth": 0.05,
    "jumprelu_init_threshold": 0.01,
    "normalize_input": True,
    "device": "cpu",
    "dtype": "float32",
    "seed": 0,
    "d_in": 8,
    "d_out": 6,
    "model": "tiny",
    "input_scale": 2.0,
    "output_scale": 3.0,
}
OLD_JUMPRELU_SAE_SECTION = {
    "architecture": "jumprelu",
    "hook_in": "blocks.6.hook_resid_post",
    "hook_out": "blocks.6.hook_resid_post",
    "d_sae": 4608,
    "k": 32,
    "aux_k": None,
    "aux_k_coefficient": 0.03125,
    "l1_coefficient": 5.0,
    "l0_coefficient": 1.0,
    "jumprelu_bandwidth": 0.05,
    "jumprelu_init_threshold": 0.2,
    "normalize_input": True,
    "device": "cpu",
    "dtype": "float32",
    "seed": 0,
}


class ToyConfig(SAEConfigBase):
    """A third-party architecture, all in one file: this config, the class below, one decorator."""

    architecture: Literal["toy"] = "toy"
    toy_penalty: float = Field(0.01, ge=0)


@register(ToyConfig)
class ToySAE(SparseAutoencoder):
    def activate(self, pre_acts: torch.Tensor) -> torch.Tensor:
        return pre_acts.relu()

    def training_forward(self, x, target, info):
        x, target = self.scaled(x, target)
        acts = self.pre_acts(x).relu()
        penalty = self.spec.toy_penalty * acts.sum(-1).mean()
        return self.dense_output(acts, acts @ self.W_dec + self.b_dec, target, "toy_penalty", penalty)


def _error(raw) -> str:
    with pytest.raises(ConfigError) as error:
        parse_config(raw, RunConfig, "x.toml")
    return str(error.value)


def test_architecture_defaults_to_topk_and_picks_the_config_class():
    assert type(parse_config({}, RunConfig).sae) is TopKConfig
    assert parse_config({"sae": {"k": 8}}, RunConfig).sae.k == 8
    cfg = parse_config({"sae": {"architecture": "relu", "l1_coefficient": 0.5}}, RunConfig)
    assert type(cfg.sae) is ReLUConfig and cfg.sae.l1_coefficient == 0.5
    assert cfg.model_dump()["sae"] == {
        **ReLUConfig(l1_coefficient=0.5).model_dump(),
        "hook_in": cfg.sae.hook_in,
        "hook_out": cfg.sae.hook_out,
    }


def test_another_architectures_knob_is_an_error_naming_the_field():
    message = _error({"sae": {"architecture": "relu", "k": 8}})
    assert "sae.k: unknown field; a knob of 'batchtopk', 'topk', not of 'relu'" in message
    message = _error({"sae": {"l1_coefficient": 1.0}})
    assert "sae.l1_coefficient: unknown field; a knob of 'relu', not of 'topk'" in message
    assert "sae.l1_coeficient: unknown field; did you mean 'l1_coefficient'?" in _error(
        {"sae": {"architecture": "relu", "l1_coeficient": 1.0}}
    )


def test_unknown_architecture_lists_the_choices():
    message = _error({"sae": {"architecture": "gated", "k": 4}})
    assert "sae.architecture: unknown SAE architecture; choose one of " in message
    assert all(repr(name) in message for name in [*BUILTINS, "toy"]) and "(got 'gated')" in message
    assert "sae.k" not in message  # one error, at the key that decides the rest


@pytest.mark.parametrize("arch", [*BUILTINS, "toy"])
def test_outer_defaults_reach_every_architecture_and_dumps_round_trip(arch):
    cfg = parse_config({"device": "cuda", "dtype": "bfloat16", "seed": 7, "sae": {"architecture": arch}}, RunConfig)
    assert (cfg.sae.architecture, cfg.sae.device, cfg.sae.dtype, cfg.sae.seed) == (
        arch,
        "cuda",
        "bfloat16",
        7,
    )
    again = RunConfig.model_validate(json.loads(json.dumps(cfg.model_dump(mode="json"))))  # config.json
    assert again == cfg and type(again.sae) is type(cfg.sae)


def test_transcoder_layers_keep_the_architecture():
    cfg = parse_config(
        {
            "transcoders": {"layers": [0, 1]},
            "sae": {"architecture": "jumprelu", "jumprelu_bandwidth": 0.1},
        },
        RunConfig,
    )
    layer = cfg.for_layer(1)
    assert type(layer.sae) is JumpReLUConfig and layer.sae.jumprelu_bandwidth == 0.1
    assert layer.sae.hook_in == "blocks.1.mlp.hook_in"


def test_json_schema_is_a_union_of_the_registered_architectures():
    schema = RunConfig.model_json_schema()
    assert schema["properties"]["sae"]["discriminator"]["propertyName"] == "architecture"
    assert set(schema["properties"]["sae"]["discriminator"]["mapping"]) >= {*BUILTINS, "toy"}
    assert "l1_coefficient" in schema["$defs"]["ReLUConfig"]["properties"]


def test_old_sae_json_with_every_architectures_knobs_loads(tmp_path):
    store = LocalObjectStore(tmp_path)
    build_sae(make_spec(ReLUConfig(hook_in="a", hook_out="b", d_sae=16), d_in=8, d_out=6)).save(store, "sae")
    store.put_json("sae/sae.json", OLD_RELU_SAE_JSON)
    sae = load_sae(str(tmp_path / "sae"))
    assert type(sae) is ReLUSAE and sae.spec.l1_coefficient == 0.5 and sae.spec.input_scale == 2.0
    assert "k" not in sae.spec.model_dump() and sae.spec.is_transcoder
    old_run = {"sae": OLD_JUMPRELU_SAE_SECTION}  # a config.json beside an old run
    assert RunConfig.model_validate(old_run).sae == JumpReLUConfig(
        hook_in="blocks.6.hook_resid_post",
        hook_out="blocks.6.hook_resid_post",
        jumprelu_init_threshold=0.2,
    )


def test_spec_is_its_architectures_config_plus_facts():
    spec = make_spec(TopKConfig(hook_in="h", hook_out="h", d_sae=64, k=4), d_in=16, d_out=16, model="m")
    assert isinstance(spec, TopKConfig) and spec.k == 4 and spec.d_in == 16 and not spec.is_transcoder
    assert parse_spec(spec.model_dump(mode="json")) == spec
    with pytest.raises(ValueError, match="k\n  Extra inputs are not permitted"):
        parse_spec({"architecture": "relu", "d_in": 4, "d_out": 4, "k": 8})  # only the old layout is lenient
    with pytest.raises(ValueError, match="unknown SAE architecture"):
        parse_spec({"architecture": "gated", "d_in": 4, "d_out": 4})


def test_registered_toy_architecture_trains_saves_and_loads(tmp_path):
    cfg = parse_config(
        {
            "activations": {"hooks": ["h"]},
            "sae": {"architecture": "toy", "d_sae": 32, "toy_penalty": 0.001},
        },
        RunConfig,
    )
    assert type(cfg.sae) is ToyConfig
    assert "a knob of 'toy', not of 'topk'" in _error({"sae": {"toy_penalty": 1.0}})
    sae = build_sae(make_spec(cfg.sae, d_in=16, d_out=16))
    assert type(sae) is ToySAE and sae.spec.toy_penalty == 0.001
    store = LocalObjectStore(tmp_path / "run")
    trainer = Trainer(
        sae,
        _source(tmp_path, n=600),
        cfg.train.model_copy(update={"batch_size": 100, "log_every": 2}),
        store,
        "h",
        "h",
        progress=False,
    )
    assert trainer.run().steps == 6 and "toy_penalty" in read_metrics(trainer.store)[-1]
    sae.save(store, "sae")
    loaded = load_sae(store.child("sae"))
    assert type(loaded) is ToySAE and loaded.spec == sae.spec


def test_register_needs_a_literal_architecture():
    class Loose(SAEConfigBase):
        architecture: str = "loose"

    with pytest.raises(TypeError, match="Loose must declare `architecture: Literal"):
        register(Loose)


def _python(code: str) -> str:
    """stdout of `code` in a fresh interpreter (run in the repo, so it imports this checkout)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.strip()


def test_importing_the_config_imports_no_sae_code():
    modules = _python("import sys, lm_saes.config; print(sorted(m for m in sys.modules if m.startswith('lm_saes')))")
    assert modules == "['lm_saes', 'lm_saes.config']"
    for module in (
        "lm_saes.saes.relu",
        "lm_saes.saes.registry",
        "lm_saes.config",
    ):  # any import order works
        assert _python(f"import {module}; from lm_saes.config import RunConfig; print(RunConfig().sae.k)") == "32"
