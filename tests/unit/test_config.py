import pytest

from lm_saes.config import ConfigError, RunConfig, load_config, parse_config, parse_override


def test_outer_settings_are_defaults_of_inner_sections():
    cfg = parse_config({"device": "cuda", "dtype": "bfloat16", "seed": 7, "train": {"seed": 3}}, RunConfig)
    assert cfg.model.device == cfg.sae.device == cfg.train.device == cfg.eval.device == "cuda"
    assert cfg.model.dtype == cfg.sae.dtype == cfg.activations.dtype == "bfloat16"
    assert cfg.data.seed == cfg.sae.seed == 7
    assert cfg.train.seed == 3  # an inner value wins


def test_model_shorthand_and_default_hooks():
    cfg = parse_config({"model": "tiny", "activations": {"hooks": ["blocks.1.hook_resid_post"]}}, RunConfig)
    assert cfg.model.name == "tiny"
    assert cfg.sae.hook_in == cfg.sae.hook_out == "blocks.1.hook_resid_post"


def test_unknown_field_is_named_with_a_suggestion():
    with pytest.raises(ConfigError) as error:
        parse_config({"train": {"lrr": 1e-3}}, RunConfig, "x.toml")
    assert "train.lrr: unknown field; did you mean 'lr'?" in str(error.value)


def test_invalid_value_names_the_path_and_value():
    with pytest.raises(ConfigError) as error:
        parse_config({"sae": {"k": 0}}, RunConfig)
    assert "sae.k" in str(error.value) and "greater than or equal to 1" in str(error.value)


def test_hooks_must_be_generated_and_architecture_known():
    with pytest.raises(ConfigError, match="sae.hook_out = 'blocks.2.hook_mlp_out' is not generated"):
        parse_config({"sae": {"hook_out": "blocks.2.hook_mlp_out"}}, RunConfig)
    with pytest.raises(
        ConfigError,
        match="sae.architecture: unknown SAE architecture; choose one of "
        r"'batchtopk', 'jumprelu', .*\(got 'gated'\)",
    ):
        parse_config({"sae": {"architecture": "gated"}}, RunConfig)


def test_load_config_overrides_and_bad_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('output = "x"\n[train]\nlr = 1e-3\n')
    cfg = load_config(path, RunConfig, dict([parse_override("train.lr=2e-3"), parse_override("data.source=foo")]))
    assert cfg.train.lr == 2e-3 and cfg.data.source == "foo"
    path.write_text("output = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, RunConfig)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", RunConfig)


def test_example_configs_parse():
    for name in ("train.toml", "train-tiny.toml"):
        load_config(f"examples/configuration/{name}", RunConfig)
