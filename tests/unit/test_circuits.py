"""Circuit tracing on a tiny model: every check the method promises, against the real code path.

The transcoder set is trained by the real trainer (both layers of a 2-layer random model); the
replacement model, attribution, pruning and interventions run exactly as on SmolLM2. Every test
taking `replacement` or `graph` runs twice: with per-layer transcoders and with a cross-layer
transcoder (lm_saes.saes.crosslayer) over the same layers, which must satisfy the same identities.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lm_saes.circuits import (
    Intervention,
    ReplacementModel,
    TranscoderSet,
    attribute,
    intervene,
    predicted_vs_measured,
    prompt_state,
    prune,
    run_trace,
    scores,
)
from lm_saes.circuits.attribution import graph_sources, trace_memory_bytes
from lm_saes.circuits.checks import graph_checks
from lm_saes.circuits.graph import AttributionGraph, influence, normalized
from lm_saes.circuits.trace import load_graph, top_feature_nodes
from lm_saes.circuits.transcoders import CrossLayerSet, SparseActs
from lm_saes.config import ConfigError, RunConfig, TraceConfig, load_config, parse_config
from lm_saes.interop.circuit_tracer import to_graph_json
from lm_saes.models import load_language_model
from lm_saes.runner import run_train_clt, run_train_transcoders
from lm_saes.stores import open_store
from lm_saes.stores.documents import open_document_store
from tests.integration.conftest import REPO

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def transcoder_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("transcoders")
    cfg = load_config(
        REPO / "examples/configuration/transcoders-tiny.toml",
        RunConfig,
        {"output": str(out), "data.max_tokens": 6000, "train.checkpoint_every": 0},
    )
    runs = run_train_transcoders(cfg, progress=False)
    return out, cfg, runs


@pytest.fixture(scope="module")
def clt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clt")
    cfg = load_config(
        REPO / "examples/configuration/clt-tiny.toml",
        RunConfig,
        {"output": str(out), "data.max_tokens": 6000, "train.checkpoint_every": 0},
    )
    return out, cfg, run_train_clt(cfg, progress=False)


@pytest.fixture(scope="module", params=["per-layer", "clt"])
def replacement(request):
    out, cfg, _ = request.getfixturevalue("transcoder_run" if request.param == "per-layer" else "clt_run")
    transcoders = TranscoderSet.load(str(out))
    assert isinstance(transcoders, CrossLayerSet) == (request.param == "clt")
    return ReplacementModel(load_language_model(cfg.model), transcoders)


@pytest.fixture(scope="module")
def graph(replacement) -> AttributionGraph:
    return attribute(replacement, PROMPT, TraceConfig(batch_size=48))


def test_transcoder_set_is_one_run_per_layer(transcoder_run):
    out, cfg, runs = transcoder_run
    manifest = json.loads((out / "transcoders.json").read_text())
    assert manifest["layers"] == {"0": "layer-0/sae", "1": "layer-1/sae"} and manifest["model"] == "tiny"
    assert [run.sae.spec.hook_in for run in runs] == ["blocks.0.mlp.hook_in", "blocks.1.mlp.hook_in"]
    assert all(run.sae.spec.is_transcoder and run.metrics is not None for run in runs)
    # each layer is an ordinary run: its config names its own hooks, so eval/analyze work on it
    layer_cfg = json.loads((out / "layer-1" / "config.json").read_text())
    assert layer_cfg["sae"]["hook_out"] == "blocks.1.hook_mlp_out" and layer_cfg["transcoders"] is None
    # one shared activation pass holds every layer's hooks
    shards = json.loads((out / "activations" / "manifest.json").read_text())
    assert set(shards["hooks"]) == set(cfg.activations.hooks) and len(cfg.activations.hooks) == 4
    # a second run finds the trained layers and does not retrain them
    again = run_train_transcoders(cfg, progress=False)
    assert torch.equal(again[0].sae.W_dec, runs[0].sae.W_dec)


def test_transcoder_config_errors_name_the_field():
    base = {"model": "tiny", "transcoders": {"layers": [0, 0]}}
    with pytest.raises(ConfigError, match="repeats a layer"):
        parse_config(base, RunConfig)
    with pytest.raises(ConfigError, match="leave sae.hook_in"):
        parse_config({**base, "transcoders": {"layers": [0]}, "sae": {"hook_in": "blocks.0.hook_resid_pre"}}, RunConfig)
    with pytest.raises(ConfigError, match=r"transcoders\.layers"):
        parse_config({"transcoders": {"layers": []}}, RunConfig)


def test_replacement_model_reproduces_the_real_logits(replacement):
    state = prompt_state(replacement, PROMPT)
    with torch.no_grad():
        out = replacement.forward(state)
    assert (out.logits - state.logits).abs().max() <= 1e-4
    assert set(state.acts) == {0, 1} and all((a > 0).sum(-1).le(8).all() for a in state.acts.values())
    # the error nodes are what the transcoders miss: without them the logits move
    zero_errors = {layer: torch.zeros_like(e) for layer, e in state.errors.items()}
    with torch.no_grad():
        assert (replacement.forward(state, errors=zero_errors).logits - state.logits).abs().max() > 1e-2


def test_sparse_activations_decode_like_dense_ones(replacement):
    """Attribution feeds features as SparseActs; they must decode to what the dense path gives."""
    state = prompt_state(replacement, PROMPT)
    n_pos, transcoders = len(state.tokens), replacement.transcoders
    sparse_acts = {}
    for layer, acts in state.acts.items():
        positions, features = torch.nonzero(acts > 0, as_tuple=True)
        sparse_acts[layer] = sparse = SparseActs(positions, features, acts[positions, features])
    for layer in state.acts:
        dense = transcoders.decode(layer, state.acts, n_pos)
        assert torch.allclose(transcoders.decode(layer, sparse_acts, n_pos), dense, atol=1e-5)
    with pytest.raises(ValueError, match="dense activations"):
        replacement.forward(state, acts={layer: sparse}, interventions=[Intervention(layer, 1, 0, 2.0)])


def test_clt_error_nodes_are_what_the_whole_clt_misses(clt_run):
    """With a CLT, layer 1's MLP output is decoded from layer 0's features too: its error node is
    the real output minus the CLT module's own reconstruction from both layers."""
    out, cfg, run = clt_run
    replacement = ReplacementModel(load_language_model(cfg.model), TranscoderSet.load(str(out)))
    state = prompt_state(replacement, PROMPT)
    hooks = [replacement.mlp_hooks[layer] for layer in (0, 1)]
    acts = replacement.model.activations(state.tokens[None], [h for pair in hooks for h in pair])
    x = torch.stack([acts[hook_in][0] for hook_in, _ in hooks], 1)
    clt = replacement.transcoders.clt
    for j, (_, hook_out) in enumerate(hooks):
        assert torch.allclose(state.errors[j], acts[hook_out][0] - clt(x)[:, j], atol=1e-5)
    # the cross-layer decoder matters: layer 1's output without layer 0's features differs
    alone = clt.decode_layer(1, {1: clt.encode_layer(1, x[:, 1])})
    assert (alone - clt(x)[:, 1]).abs().max() > 1e-3


def test_replacement_freezes_attention_and_norms(replacement):
    """Changing the embedding moves the logits linearly: patterns and norm scales are frozen."""
    state = prompt_state(replacement, PROMPT)
    acts = {layer: a.clone() for layer, a in state.acts.items()}  # features held fixed too
    base = torch.zeros_like(state.embed)
    with torch.no_grad():
        f = lambda e: replacement.forward(state, embed=e, acts=acts).logits  # noqa: E731
        f0, f1, f2 = f(base), f(state.embed), f(2 * state.embed)
    assert torch.allclose(f2 - f0, 2 * (f1 - f0), atol=1e-4)


def test_edges_plus_bias_equal_each_target(graph):
    """For every feature (pre-activation) and logit (demeaned), incoming edges + bias = value."""
    targets = torch.cat([torch.arange(graph.n_features), torch.arange(graph.logit_start, graph.n_nodes)])
    total = graph.adjacency[targets].sum(1) + graph.bias[targets]
    assert (total - graph.values[targets]).abs().max() <= 1e-4
    # feature nodes are active and their pre-activation is their activation (ReLU of the top k)
    assert torch.allclose(graph.values[: graph.n_features], graph.activations, atol=1e-5)
    # direct effects only flow forward: a feature hears from earlier layers' features only
    layer = graph.features[:, 0]
    feature_edges = graph.adjacency[: graph.n_features, : graph.n_features]
    assert not feature_edges[layer[:, None] <= layer[None, :]].any()
    # a position hears only from itself and earlier positions (causal attention)
    pos = graph.features[:, 1]
    assert not feature_edges[pos[:, None] < pos[None, :]].any()


def test_max_feature_nodes_keeps_the_most_influential_and_the_identity(replacement, graph):
    """A capped graph keeps the features the logits depend on most (chosen as rows come in), the
    left-out ones become constants in the bias, so edges + bias = value still holds exactly, and
    the edges it keeps are the full graph's."""
    cap = graph.n_features // 3
    capped = attribute(replacement, PROMPT, TraceConfig(batch_size=16, max_feature_nodes=cap))
    assert capped.n_features == cap and capped.info["active_features"] == graph.n_features
    assert capped.n_nodes == graph.n_nodes - (graph.n_features - cap)
    targets = torch.cat([torch.arange(cap), torch.arange(capped.logit_start, capped.n_nodes)])
    total = capped.adjacency[targets].sum(1) + capped.bias[targets]
    assert (total - capped.values[targets]).abs().max() <= 1e-4
    kept = torch.tensor([graph.feature_index(*f) for f in capped.features[:, [0, 1, 2]].tolist()])
    full_rows = torch.cat([kept, torch.arange(graph.logit_start, graph.n_nodes)])
    full_columns = torch.cat([kept, torch.arange(graph.error_start, graph.n_nodes)])
    assert torch.allclose(capped.adjacency[targets], graph.adjacency[full_rows][:, full_columns], atol=1e-6)
    # the first round ranks by direct effect on the logits: the strongest such feature is kept
    direct = graph.logit_weights()[graph.logit_start :] @ normalized(graph.adjacency)[graph.logit_start :]
    assert int(direct[: graph.n_features].argmax()) in kept.tolist()
    # and the kept ones carry more of the full graph's influence than the same number at random
    weight = influence(normalized(graph.adjacency), graph.logit_weights())[: graph.n_features]
    others = torch.randperm(graph.n_features, generator=torch.Generator().manual_seed(0))[:cap]
    assert weight[kept].sum() > weight[others].sum()
    # a cap at or above the active count is the full graph
    same = attribute(replacement, PROMPT, TraceConfig(batch_size=48, max_feature_nodes=graph.n_features + 5))
    assert torch.equal(same.adjacency, graph.adjacency)


def test_bos_features_and_errors_are_constants_by_default(replacement, graph):
    """As in circuit-tracer: the BOS position's features and errors fold into the bias."""
    assert (graph.features[:, 1] > 0).all()
    bos_errors = graph.error_start + torch.arange(graph.n_layers) * len(graph.tokens)
    assert not graph.adjacency[:, bos_errors].any()
    full = attribute(replacement, PROMPT, TraceConfig(batch_size=48, freeze_bos=False))
    assert (full.features[:, 1] == 0).any() and full.adjacency[:, bos_errors].any()
    assert full.n_features > graph.n_features
    # either way the identity holds, and the targets themselves do not change
    targets = torch.cat([torch.arange(full.n_features), torch.arange(full.logit_start, full.n_nodes)])
    assert (full.adjacency[targets].sum(1) + full.bias[targets] - full.values[targets]).abs().max() <= 1e-4
    assert torch.allclose(full.values[full.logit_start :], graph.values[graph.logit_start :], atol=1e-5)


def test_graph_nodes_and_logits(graph):
    assert graph.tokens[0] == 256 and graph.token_strings[1:4] == ["T", "h", "e"]
    assert graph.n_nodes == graph.n_features + 2 * len(graph.tokens) + len(graph.tokens) + len(graph.logit_tokens)
    assert 1 <= len(graph.logit_tokens) <= 10
    probs = graph.logit_probabilities
    assert bool((probs[:-1] >= probs[1:]).all())
    # errors and tokens have no inputs
    assert not graph.adjacency[graph.error_start : graph.logit_start].any()


def test_pruning_keeps_the_influential_part(graph):
    full = prune(graph, 1.0, 1.0)
    small = prune(graph, 0.5, 0.9)
    assert small.node_mask.sum() < full.node_mask.sum() <= graph.n_nodes
    assert small.node_mask[graph.token_start :].all()  # tokens and logits always stay
    # kept edges join kept nodes; every kept feature has inputs and outputs
    kept = small.node_mask
    assert not (small.edge_mask & ~(kept[:, None] & kept[None, :])).any()
    features = kept[: graph.n_features]
    assert small.edge_mask[: graph.n_features][features].any(1).all()
    assert small.edge_mask[:, : graph.n_features][:, features].any(0).all()
    # the most influential feature survives pruning
    assert kept[top_feature_nodes(graph, 1)[0]]
    # a link budget keeps the most influential links of the unbudgeted pruning
    capped = prune(graph, 1.0, 1.0, max_links=20)
    assert 0 < capped.edge_mask.sum() <= 20 < full.edge_mask.sum()
    assert not (capped.edge_mask & ~full.edge_mask).any()
    with pytest.raises(ValueError, match="node_threshold"):
        prune(graph, 1.5)


def test_scores_on_a_hand_built_graph():
    """token -> feature -> logit with an error node: scores as defined, checked by hand."""
    # nodes: feature 0 | errors (1 layer x 1 pos) | token | logit
    adjacency = torch.zeros(4, 4)
    adjacency[0, 2] = 3.0  # token -> feature
    adjacency[0, 1] = 1.0  # error -> feature
    adjacency[3, 0] = 2.0  # feature -> logit
    adjacency[3, 2] = 2.0  # token -> logit directly
    graph = AttributionGraph(
        "x",
        [5],
        ["x"],
        "m",
        "t",
        1,
        torch.tensor([[0, 0, 7]]),
        torch.tensor([1.0]),
        [9],
        ["y"],
        torch.tensor([1.0]),
        adjacency,
        torch.zeros(4),
        torch.zeros(4),
    )
    result = scores(graph)
    # influence on the logit: feature 0.5, token 0.5 + 0.5 * 0.75, error 0.5 * 0.25
    assert result.replacement == pytest.approx(0.875 / (0.875 + 0.125))
    # completeness: feature input is 75 % non-error, weighted by its influence 0.5; the logit
    # (weight 1) and the input-less error and token nodes count as complete
    assert result.completeness == pytest.approx((0.75 * 0.5 + 1 * 0.125 + 1 * 0.875 + 1 * 1) / 2.5)
    node_influence = influence(normalized(adjacency), graph.logit_weights())
    assert node_influence.tolist() == pytest.approx([0.5, 0.125, 0.875, 0.0])


@pytest.mark.parametrize("freeze_active_set", [False, True])
def test_predicted_effects_of_small_interventions_match_measured(replacement, graph, freeze_active_set):
    state = prompt_state(replacement, PROMPT)
    predicted, measured = predicted_vs_measured(
        replacement, state, graph, top_feature_nodes(graph, 20), freeze_active_set=freeze_active_set
    )
    # rerunning TopK can reselect features; with the active set kept the graph is exact
    assert np.corrcoef(predicted, measured)[0, 1] >= (0.999 if freeze_active_set else 0.9)
    assert np.abs(measured).max() > 1e-4  # the interventions did something


def test_graph_checks_report_the_same_bounds(replacement):
    """The summary scripts/check_circuits.py prints for SmolLM2, here on the tiny model."""
    report = graph_checks(replacement, PROMPT, TraceConfig(batch_size=48))
    assert report["logits_max_abs_diff"] <= 1e-4 and report["edges_plus_bias_max_abs_err"] <= 1e-4
    assert report["correlation_reselect"] >= 0.9 and report["correlation_keep_active_set"] >= 0.999
    assert report["interventions"] == 20 and report["tokens"] == len(PROMPT) + 1


def test_interventions_clamp_and_validate(replacement):
    state = prompt_state(replacement, PROMPT)
    layer, position = 1, len(state.tokens) - 1
    feature = int(state.acts[layer][position].argmax())
    off = intervene(replacement, state, [Intervention(layer, position, feature, 0.0, "clamp")], top_k=5)
    assert len(off.after) == 5 and off.before[0].probability > 0
    assert (off.logits_after - off.logits_before).abs().max() > 0
    assert [t.token for t in off.before] == torch.topk(state.logits[-1], 5).indices.tolist()
    with pytest.raises(ValueError, match="position"):
        intervene(replacement, state, [Intervention(layer, 99, feature, 0.0)])
    with pytest.raises(ValueError, match="no transcoder"):
        intervene(replacement, state, [Intervention(5, 0, feature, 0.0)])
    with pytest.raises(ValueError, match="feature"):
        intervene(replacement, state, [Intervention(layer, 0, 10**6, 0.0)])


def test_trace_saves_records_and_exports(replacement, tmp_path):
    documents = open_document_store(tmp_path / "docs.sqlite")
    record = run_trace(replacement, PROMPT, TraceConfig(), open_store(tmp_path / "objects"), documents)
    assert documents.get_graph(record["id"]).scores.model_dump() == record["scores"]
    graph = load_graph(open_store(record["artifact"]))
    assert graph.prompt == PROMPT and graph.adjacency.shape == (graph.n_nodes, graph.n_nodes)
    ids = {node["id"] for node in record["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in record["links"])
    assert 0 < record["scores"]["replacement"] <= 1 and 0 < record["scores"]["completeness"] <= 1

    exported = to_graph_json(record)
    assert set(exported) == {"metadata", "qParams", "nodes", "links"}
    assert exported["metadata"]["prompt_tokens"] == record["tokens"]
    kinds = {node["feature_type"] for node in exported["nodes"]}
    assert {"embedding", "logit", "cross layer transcoder"} <= kinds
    logits = [n for n in exported["nodes"] if n["feature_type"] == "logit"]
    assert sum(n["is_target_logit"] for n in logits) == 1 and logits[0]["layer"] == "3"
    node_ids = {node["node_id"] for node in exported["nodes"]}
    assert all(link["source"] in node_ids and link["target"] in node_ids for link in exported["links"])
    embeddings = [n for n in exported["nodes"] if n["feature_type"] == "embedding"]
    assert [n["node_id"] for n in embeddings][:2] == ["E_256_0", f"E_{ord('T')}_1"]
    documents.close()

    # circuit-tracer's own graph-file model accepts it field for field
    from circuit_tracer.frontend.graph_models import Model

    model = Model.model_validate(exported)
    assert len(model.nodes) == len(record["nodes"]) and model.metadata.prompt == PROMPT
    assert model.model_dump(exclude_unset=True)["links"] == exported["links"]


def test_prompt_too_long_is_refused(replacement, graph):
    with pytest.raises(ValueError, match="max_tokens"):
        attribute(replacement, "x" * 100, TraceConfig(max_tokens=16))
    # the memory estimate (printed before the backward passes) covers what the trace holds, and
    # a trace past max_memory_gb is refused before them
    src = graph_sources(prompt_state(replacement, PROMPT))
    estimate = trace_memory_bytes(src, replacement.transcoders, len(graph.logit_tokens), 48)
    assert graph.adjacency.numel() * 4 <= estimate <= 8 * graph.adjacency.numel() * 4  # tiny: batch terms weigh in
    # a cap on feature nodes shrinks it, and the capped trace fits the cap's estimate
    capped = trace_memory_bytes(src, replacement.transcoders, len(graph.logit_tokens), 48, graph.n_features // 4)
    assert capped < estimate
    with pytest.raises(ValueError, match="max_memory_gb"):
        attribute(replacement, PROMPT, TraceConfig(max_memory_gb=1e-4))


def test_qk_attribution_sums_to_the_real_attention_score(replacement, graph):
    """A head's pre-softmax score splits into node contributions through the query and through
    the key; each side plus its constants is the score the real model computes (<= 1e-4)."""
    from lm_saes.circuits.qk import qk_attribution

    state = prompt_state(replacement, PROMPT)
    last = len(state.tokens) - 1
    real = replacement.model.bridge.run_with_cache(state.tokens[None], names_filter=lambda n: ".attn.hook_" in n)[1]
    for layer, head, key in ((1, 2, 3), (0, 0, last)):
        qk = qk_attribution(replacement, state, layer, head, last, key)
        # the real pre-softmax scores of this query: their softmax is the real pattern
        q, k = real[f"blocks.{layer}.attn.hook_q"][0, last, head], real[f"blocks.{layer}.attn.hook_k"][0, :, head]
        scores_row = k @ q / q.shape[0] ** 0.5
        assert torch.allclose(
            scores_row.softmax(0), real[f"blocks.{layer}.attn.hook_pattern"][0, head, last], atol=1e-5
        )
        expected = float(scores_row[key])
        assert qk.score == pytest.approx(expected, abs=1e-4)
        assert float(qk.query_side.sum()) + qk.query_bias == pytest.approx(expected, abs=1e-4)
        assert float(qk.key_side.sum()) + qk.key_bias == pytest.approx(expected, abs=1e-4)
        # columns are the graph's nodes; a key-side node sits at or before the key position
        assert len(qk.query_side) == graph.logit_start
        positions = torch.tensor([graph.node(i)["position"] for i in range(graph.logit_start)])
        assert not qk.key_side[positions > key].any() and qk.query_side.abs().sum() > 0
        assert abs(qk.pairs[0][2]) >= abs(qk.pairs[-1][2])
    with pytest.raises(ValueError, match="causal"):
        qk_attribution(replacement, state, 1, 0, 2, 3)
    with pytest.raises(ValueError, match="head"):
        qk_attribution(replacement, state, 1, 99, last, 0)
