"""Cross-layer transcoders: the module against brute force, circuit-tracer reading our files,
training through the real trainer (resume included), evaluation, config errors, memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lm_saes.cli import main
from lm_saes.config import ConfigError, RunConfig, load_config, parse_config
from lm_saes.evaluation import evaluate_clt
from lm_saes.models import load_language_model
from lm_saes.runner import run_train_clt
from lm_saes.saes.base import TrainStepInfo
from lm_saes.saes.crosslayer import (
    CrossLayerTranscoder,
    CrossLayerTranscoderSpec,
    clt_parameters,
    load_clt,
)
from lm_saes.stores import open_store
from lm_saes.training.memory import estimate_run
from tests.integration.conftest import REPO

INFO = TrainStepInfo(step=0, dead_mask=None, sparsity_warmup=1.0)


def make_clt(activation: str = "topk", layers=(0, 1, 2), d_sae: int = 24, d_model: int = 8) -> CrossLayerTranscoder:
    spec = CrossLayerTranscoderSpec(
        layers=list(layers), d_sae=d_sae, k=4, d_model=d_model, activation=activation, jumprelu_init_threshold=0.3
    )
    clt = CrossLayerTranscoder(spec)
    with torch.no_grad():  # off the initial point: biases, scales and thresholds all matter
        clt.b_enc.normal_(0, 0.1)
        clt.b_dec.normal_()
        if activation == "jumprelu":
            clt.log_threshold.uniform_(-2, 0)
    clt.set_scales([0.5, 2.0, 1.5][: len(layers)], [3.0, 0.7, 1.2][: len(layers)])
    return clt


def brute_force(clt: CrossLayerTranscoder, x: torch.Tensor) -> torch.Tensor:
    """MLP output j = sum over sources i <= j of (act_i . W_dec[i][:, j - i]) + b_dec[j], unscaled."""
    n, out = clt.n_layers, torch.zeros_like(x)
    for j in range(n):
        total = clt.b_dec[j].clone()
        for i in range(j + 1):
            pre = (x[:, i] * clt.input_scale[i]) @ clt.W_enc[i].T + clt.b_enc[i]
            if clt.spec.activation == "topk":
                keep = pre >= pre.topk(clt.spec.k, dim=-1).values[:, -1:]
                acts = pre.relu() * keep
            else:
                acts = pre.relu() * (pre.relu() > clt.threshold[i])
            total = total + acts @ clt.W_dec[i][:, j - i]
        out[:, j] = total / clt.output_scale[j]
    return out


@pytest.mark.parametrize("activation", ["topk", "jumprelu"])
def test_forward_and_training_reconstruction_match_brute_force(activation):
    torch.manual_seed(0)
    clt = make_clt(activation)
    x = torch.randn(32, 3, 8) * 2
    with torch.no_grad():
        expected = brute_force(clt, x)
        assert torch.allclose(clt(x), expected, atol=1e-5)
        # a feature of layer 0 writes to layers 0, 1 and 2; one of layer 2 only to layer 2
        assert clt.decoder(0, 2).shape == (24, 8)
        with pytest.raises(ValueError, match="own and later"):
            clt.decoder(2, 1)
    # the training path (sparse kernels for TopK) reconstructs the same, in scaled space
    out = clt.training_forward(x, torch.zeros_like(x), INFO)
    assert torch.allclose(out.recon / clt.output_scale[:, None], expected, atol=1e-4)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in clt.W_dec)
    if activation == "jumprelu":
        assert clt.log_threshold.grad is not None and "l0_penalty" in out.losses
    else:
        assert float(out.l0) == pytest.approx(clt.spec.k)


def test_topk_sparse_gradients_equal_dense_autograd():
    torch.manual_seed(1)
    clt = make_clt("topk")
    x, y = torch.randn(16, 3, 8), torch.randn(16, 3, 8)
    clt.training_forward(x, y, INFO).loss.backward()
    sparse = {name: p.grad.clone() for name, p in clt.named_parameters()}
    clt.zero_grad()
    xs, ys = clt.scaled(x, y)
    recon = brute_force(clt, x) * clt.output_scale[:, None]
    (recon - ys).pow(2).sum(-1).mean(0).sum().backward()
    for name, p in clt.named_parameters():
        assert torch.allclose(sparse[name], p.grad, atol=1e-4), name


@pytest.mark.parametrize("activation", ["topk", "jumprelu"])
def test_circuit_tracer_reads_our_files_and_computes_the_same(tmp_path, activation):
    """Our saved CLT is circuit-tracer's layout: its own `load_clt` gets our outputs (<= 1e-5).
    circuit-tracer's CLT has ReLU or JumpReLU; a TopK CLT runs there with its TopK function."""
    from circuit_tracer.transcoder.activation_functions import TopK
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt as circuit_tracer_load

    torch.manual_seed(2)
    clt = make_clt(activation)
    clt.save_circuit_tracer(open_store(tmp_path))
    theirs = circuit_tracer_load(str(tmp_path), device=torch.device("cpu"), dtype=torch.float32, lazy_decoder=False)
    if activation == "topk":
        theirs.activation_function = TopK(clt.spec.k)
    x = torch.randn(20, 3, 8) * 2
    with torch.no_grad():
        ours = clt(x)
        assert (theirs(x.transpose(0, 1)).transpose(0, 1) - ours).abs().max() <= 1e-5
        components = theirs.compute_attribution_components(x.transpose(0, 1), zero_positions=slice(0, 0))
        assert (components["reconstruction"].transpose(0, 1) - ours).abs().max() <= 1e-5
        # and our loader reads the same files back (scales folded into the weights)
        again = load_clt(str(tmp_path))
        assert again.input_scale.eq(1).all() and (again(x) - ours).abs().max() <= 1e-5


@pytest.mark.parametrize("activation", ["topk", "jumprelu"])
def test_a_clt_over_some_layers_exports_zero_padded_for_circuit_tracer(tmp_path, activation, capsys):
    """circuit-tracer's CLT covers every layer of its model: ours over layers 1 and 3 of a
    5-layer model, padded, reconstructs those two as ours does and the others as zero."""
    from circuit_tracer.transcoder.activation_functions import TopK
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt as circuit_tracer_load

    torch.manual_seed(3)
    clt = make_clt(activation, layers=(1, 3))
    clt.save_circuit_tracer(open_store(tmp_path / "run"))  # as training saves it
    padded = str(tmp_path / "padded")
    export = ["export", "--format", "circuit-tracer", "--sae", str(tmp_path / "run"), "--out", padded]
    assert main([*export, "--model-layers", "5"]) == 0
    theirs = circuit_tracer_load(padded, device=torch.device("cpu"), dtype=torch.float32, lazy_decoder=False)
    if activation == "topk":
        theirs.activation_function = TopK(clt.spec.k)
    x = torch.randn(20, 5, 8) * 2  # every model layer's MLP input
    with torch.no_grad():
        ours = clt(x[:, [1, 3]])
        out = theirs(x.transpose(0, 1)).transpose(0, 1)
        assert (out[:, [1, 3]] - ours).abs().max() <= 1e-5
        assert out[:, [0, 2, 4]].abs().max() == 0
        again = load_clt(padded)  # our loader reads it as the 5-layer CLT it now is
        assert again.layers == [0, 1, 2, 3, 4] and (again(x)[:, [1, 3]] - ours).abs().max() <= 1e-5
    assert main([*export, "--model-layers", "3"]) == 1  # the CLT covers layer 3: too few
    assert "model_layers: 3" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_clt_cfg(tmp_path_factory):
    out = tmp_path_factory.mktemp("clt-run")
    return load_config(REPO / "examples/configuration/clt-tiny.toml", RunConfig, {"output": str(out)})


def test_training_run_saves_evaluates_and_resumes_exactly(tiny_clt_cfg, tmp_path):
    run = run_train_clt(tiny_clt_cfg, progress=False)
    out = tiny_clt_cfg.output
    summary = json.loads(Path(out, "summary.json").read_text())
    assert summary["sae"].endswith("/clt") and run.train_tokens > 0
    assert run.metrics is not None and set(run.metrics.per_layer) == {0, 1}
    assert run.metrics.ce_loss_with_sae is not None and run.metrics.kl_divergence > 0
    saved = load_clt(f"{out}/clt")
    x = torch.randn(10, 2, saved.spec.d_model)
    with torch.no_grad():
        assert (saved(x) - run.sae(x)).abs().max() <= 1e-5
    # a run stopped mid-way resumes from its checkpoint to the same weights
    stopped = tiny_clt_cfg.model_copy(update={"output": str(tmp_path / "stopped")})
    calls = iter(range(10**6))
    assert run_train_clt(stopped, progress=False, should_stop=lambda: next(calls) >= 12) is None
    resumed = run_train_clt(stopped, progress=False)
    assert resumed.resumed_from == 12
    for name, p in run.sae.state_dict().items():
        assert torch.allclose(resumed.sae.state_dict()[name], p, atol=1e-6), name


def test_evaluation_replaces_every_mlp(tiny_clt_cfg):
    """With every MLP replaced by a CLT whose decoders are zero (b_dec = 0), the model runs
    with those MLPs ablated: the CLT's CE equals the zero-ablation CE."""
    from lm_saes.data.packing import load_token_splits

    model = load_language_model(tiny_clt_cfg.model)
    splits = load_token_splits(tiny_clt_cfg.data, model.tokenizer)
    clt = CrossLayerTranscoder(
        CrossLayerTranscoderSpec.model_validate({**tiny_clt_cfg.clt.model_dump(), "d_model": model.d_model})
    )
    with torch.no_grad():
        for w in clt.W_dec:
            w.zero_()
    metrics = evaluate_clt(clt, model, splits.eval, tiny_clt_cfg.eval, progress=False)
    assert metrics.ce_loss_with_sae == pytest.approx(metrics.ce_loss_zero_ablation, abs=1e-5)
    assert metrics.ce_loss_zero_ablation != pytest.approx(metrics.ce_loss_clean, abs=1e-3)
    assert set(metrics.per_layer) == {0, 1} and metrics.l0 == pytest.approx(tiny_clt_cfg.clt.k)


def test_config_errors_name_the_field():
    base = {"model": "tiny", "clt": {"layers": [0, 1]}}
    cfg = parse_config(base, RunConfig)
    assert cfg.activations.hooks == [
        "blocks.0.mlp.hook_in",
        "blocks.0.hook_mlp_out",
        "blocks.1.mlp.hook_in",
        "blocks.1.hook_mlp_out",
    ]
    with pytest.raises(ConfigError, match="ascending"):
        parse_config({**base, "clt": {"layers": [1, 0]}}, RunConfig)
    with pytest.raises(ConfigError, match=r"clt\.k"):
        parse_config({**base, "clt": {"layers": [0], "d_sae": 4, "k": 8}}, RunConfig)
    with pytest.raises(ConfigError, match="cannot be combined"):
        parse_config({**base, "transcoders": {"layers": [0]}}, RunConfig)
    with pytest.raises(ConfigError, match="feature_shards"):
        parse_config({**base, "train": {"feature_shards": 2}, "sae": {"d_sae": 64}}, RunConfig)
    with pytest.raises(ConfigError, match=r"clt\.layers"):
        parse_config({"clt": {"layers": []}}, RunConfig)


def test_memory_estimate_grows_with_the_square_of_the_layers():
    def estimate(n_layers: int) -> int:
        cfg = parse_config({"clt": {"layers": list(range(n_layers)), "d_sae": 4096}}, RunConfig)
        return estimate_run(cfg, 576, 0).memory_bytes

    params = clt_parameters(30, 576, 576)
    assert params.decoder_parameters == 576 * 576 * 465
    # the estimate is quadratic in the layers: its second difference is the decoders' share,
    # d_sae x d_model per (source, target) pair in fp32 weights, gradients and two Adam moments
    assert estimate(30) - 2 * estimate(20) + estimate(10) == 100 * 4096 * 576 * 16
    with torch.no_grad():
        clt = CrossLayerTranscoder(CrossLayerTranscoderSpec(layers=[0, 1, 2, 3], d_sae=16, d_model=8))
    assert sum(p.numel() for p in clt.parameters()) == clt_parameters(4, 16, 8).parameters


def test_a_clt_over_a_subset_of_layers_replaces_only_those(tmp_path):
    """clt.layers = [1] on the 2-layer model: layer 0's MLP enters the replacement model whole
    as an error node, and the graph identities still hold."""
    from lm_saes.circuits import ReplacementModel, TranscoderSet, attribute, prompt_state
    from lm_saes.config import TraceConfig

    cfg = load_config(
        REPO / "examples/configuration/clt-tiny.toml",
        RunConfig,
        {"output": str(tmp_path), "clt.layers": [1], "data.max_tokens": 3000, "train.checkpoint_every": 0},
    )
    assert cfg.activations.hooks == ["blocks.1.mlp.hook_in", "blocks.1.hook_mlp_out"]
    run = run_train_clt(cfg, progress=False)
    assert run is not None and set(run.metrics.per_layer) == {1} and run.sae.W_enc.shape[0] == 1
    replacement = ReplacementModel(load_language_model(cfg.model), TranscoderSet.load(str(tmp_path)))
    state = prompt_state(replacement, "The capital of France is")
    assert set(state.acts) == {1}
    with torch.no_grad():
        assert (replacement.forward(state).logits - state.logits).abs().max() <= 1e-4
    graph = attribute(replacement, "The capital of France is", TraceConfig(batch_size=48))
    assert set(graph.features[:, 0].tolist()) == {1}
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_start, graph.n_nodes)])
    assert (graph.adjacency[targets].sum(1) + graph.bias[targets] - graph.values[targets]).abs().max() <= 1e-4
