"""The evaluation suite's metrics against brute force, on tiny cases with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lm_saes.config import EvalConfig
from lm_saes.evals.ground_truth import SyntheticSuiteConfig, run_scenario
from lm_saes.evals.recovery import match, max_cosines, pearson, recovery
from lm_saes.evals.suite import EvalReport, merge_reports
from lm_saes.evals.synthetic import SyntheticActivations, SyntheticFeatures, SyntheticScenario
from lm_saes.evals.universality import (
    ActivationCorrelation,
    Universality,
    compare,
    cosine_matrix,
    decoder_neighbours,
    nearest_neighbours,
)
from lm_saes.evaluation import DENSITY_LOG10_EDGES, density_histogram, evaluate
from lm_saes.saes import ReLUConfig, build_sae, make_spec


def small(**knobs) -> SyntheticScenario:
    base = {"d_model": 16, "n_features": 48, "mean_l0": 3, "tokens": 20_000, "eval_tokens": 4_000}
    return SyntheticScenario(**(base | knobs))


# --- synthetic activations ---------------------------------------------------------------
def test_synthetic_rows_are_a_function_of_the_seed():
    a, b = SyntheticFeatures(small()), SyntheticFeatures(small())
    assert torch.equal(a.directions, b.directions)
    assert torch.equal(a.eval_rows().x, b.eval_rows().x)
    other = SyntheticFeatures(small(seed=1))
    assert not torch.equal(a.directions, other.directions)
    source = SyntheticActivations(a)
    assert torch.equal(source.load_window(0, 0)["synthetic"], source.load_window(3, 0)["synthetic"])  # epochs reread
    assert source.tokens_per_epoch == 20_000
    # training windows and the held-out rows come from different streams
    assert not torch.equal(source.load_window(0, 0)["synthetic"][:100], a.eval_rows().x[:100])


def test_synthetic_firing_matches_the_scenario():
    features = SyntheticFeatures(small(eval_tokens=40_000))
    rows = features.eval_rows()
    fires = rows.codes > 0
    assert abs(fires.sum(1).double().mean() - 3) < 0.1  # mean_l0
    empirical = fires.double().mean(0)
    expected = features.marginal_probability.double()
    assert torch.allclose(empirical, expected, atol=4 * (expected * (1 - expected) / 40_000).sqrt().max())
    assert torch.allclose(rows.x, rows.codes @ features.directions, atol=1e-5)  # no noise: an exact mixture
    assert torch.allclose(features.directions.norm(dim=1), torch.ones(48))


def test_children_fire_only_with_their_parent():
    features = SyntheticFeatures(small(n_parents=3, children_per_parent=4, child_given_parent=0.5))
    fires = features.eval_rows().codes > 0
    for child in range(3, 15):
        parent = int(features.parent[child])
        assert parent == (child - 3) // 4
        assert not (fires[:, child] & ~fires[:, parent]).any()
        assert fires[:, child].any()
    with pytest.raises(ValueError, match="n_parents"):
        SyntheticFeatures(small(n_parents=20, children_per_parent=4))


def test_correlated_groups_fire_together():
    features = SyntheticFeatures(small(correlation=0.8, group_size=8, zipf_exponent=0, eval_tokens=20_000))
    fires = (features.eval_rows().codes > 0).double()
    r = pearson(fires, fires)
    within = r[0, 1:8].mean()
    across = r[0, 8:].mean()
    assert within > 0.2 and abs(across) < 0.03
    independent = pearson(*[(SyntheticFeatures(small(zipf_exponent=0)).eval_rows().codes > 0).double()] * 2)
    assert independent[0, 1:8].abs().mean() < 0.03


def test_noise_is_added():
    features = SyntheticFeatures(small(noise_std=0.1))
    rows = features.eval_rows()
    residual = rows.x - rows.codes @ features.directions
    assert abs(float(residual.std()) - 0.1) < 0.005


# --- recovery ------------------------------------------------------------------------------
def test_the_true_dictionary_scores_one_and_a_random_one_chance():
    features = SyntheticFeatures(small())
    rows = features.eval_rows()
    perm = torch.randperm(48, generator=torch.Generator().manual_seed(0))
    # the truth in another order and scale is still a perfect dictionary
    oracle = recovery(3 * features.directions[perm], 2 * rows.codes[:, perm], features.directions, rows.codes)
    assert oracle.mmcs == pytest.approx(1) and oracle.mcc == pytest.approx(1) and oracle.f1 == pytest.approx(1)
    assert oracle.recovered_fraction == 1
    g = torch.Generator().manual_seed(1)
    random_directions = torch.randn(48, 16, generator=g)
    random = recovery(random_directions, (rows.x @ random_directions.T).relu(), features.directions, rows.codes)
    assert random.mmcs < 0.75 and random.recovered_fraction == 0 and random.mcc < 0.5
    # half the true features missing: MCC and F1 count the unpaired ones as 0
    half = recovery(features.directions[:24], rows.codes[:, :24], features.directions, rows.codes)
    assert half.mcc == pytest.approx(0.5) and half.f1 == pytest.approx(0.5)


def test_mmcs_and_matching_against_brute_force():
    g = torch.Generator().manual_seed(2)
    truth, learned = torch.randn(5, 4, generator=g), torch.randn(7, 4, generator=g)
    brute = [max(float(torch.cosine_similarity(t, ell, dim=0)) for ell in learned) for t in truth]
    assert torch.allclose(max_cosines(learned, truth), torch.tensor(brute, dtype=torch.float64), atol=1e-9)
    similarity = torch.randn(5, 5, generator=g)
    rows, cols = match(similarity)
    best = max(sum(float(similarity[i, p[i]]) for i in range(5)) for p in itertools.permutations(range(5)))
    assert float(similarity[rows, cols].sum()) == pytest.approx(best)
    a, b = torch.randn(50, 3, generator=g), torch.randn(50, 2, generator=g)
    b[:, 1] = 0  # constant column: correlation 0, not NaN
    expected = np.corrcoef(a.T.numpy(), b[:, :1].T.numpy())[:3, 3:]
    assert np.allclose(pearson(a, b)[:, :1].numpy(), expected) and (pearson(a, b)[:, 1] == 0).all()


def test_f1_counts_precision_and_recall_of_firing():
    true_codes = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    learned = torch.tensor([[2.0], [0.0], [1.0], [0.0]])  # fires on 1 of 2 true rows, plus 1 false
    r = recovery(torch.ones(1, 2), learned, torch.ones(1, 2), true_codes)
    assert r.precision == pytest.approx(0.5) and r.recall == pytest.approx(0.5) and r.f1 == pytest.approx(0.5)


def test_training_recovers_more_than_initialisation():
    cfg = SyntheticSuiteConfig.model_validate(
        {
            "scenario": {"d_model": 16, "n_features": 32, "mean_l0": 2, "tokens": 120_000, "eval_tokens": 4000},
            "train": {"batch_size": 256, "lr": 4e-3, "lr_warmup_steps": 10, "log_every": 1000},
            "saes": [{"architecture": "topk", "d_sae": 32, "k": 2}],
        }
    )
    (result,) = run_scenario(cfg)
    assert result.architecture == "topk" and result.train_tokens == 120_000 // 256 * 256
    assert result.trained.mmcs > 0.9 and result.trained.mmcs > result.random.mmcs + 0.2
    assert result.trained.mcc > result.random.mcc + 0.2
    assert result.true_l0 == pytest.approx(2, abs=0.15) and result.l0 == pytest.approx(2, abs=0.01)
    assert run_scenario(cfg)[0].trained == result.trained  # deterministic by seed


def test_suite_config_names_the_bad_field():
    from lm_saes.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"saes\.0\.k"):
        parse_config({"saes": [{"architecture": "topk", "k": 0}]}, SyntheticSuiteConfig)
    with pytest.raises(ConfigError, match=r"scenario\.correlation"):
        parse_config({"scenario": {"correlation": 1.5}}, SyntheticSuiteConfig)


# --- universality --------------------------------------------------------------------------
def test_streamed_correlation_equals_the_whole_matrix():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(300, 6, generator=g).relu(), torch.randn(300, 4, generator=g).relu()
    b[:, 3] = 0  # dead on these tokens
    corr = ActivationCorrelation(6, 4)
    for start in range(0, 300, 70):
        corr.update(a[start : start + 70], b[start : start + 70])
    assert torch.allclose(corr.correlation(), pearson(a, b), atol=1e-9)
    with pytest.raises(ValueError, match="same tokens"):
        corr.update(a[:5], b[:4])


def test_a_dictionary_is_universal_with_a_permuted_copy_of_itself():
    g = torch.Generator().manual_seed(4)
    acts = torch.randn(500, 12, generator=g).relu()
    decoder = torch.randn(12, 8, generator=g)
    perm = torch.randperm(12, generator=g)
    corr = ActivationCorrelation(12, 12)
    corr.update(acts, 5 * acts[:, perm])
    same = compare(corr, decoder, decoder[perm])
    assert same.partner_fraction == 1 and same.mean_max_correlation == pytest.approx(1)
    assert same.decoder_matched_cosine == pytest.approx(1)
    other = ActivationCorrelation(12, 12)
    other.update(acts, torch.randn(500, 12, generator=g).relu())
    unrelated = compare(other, decoder, torch.randn(12, 8, generator=g))
    assert unrelated.partner_fraction == 0 and unrelated.mean_max_correlation < 0.3
    neighbours = nearest_neighbours(corr.correlation(), k=2)
    assert [n[0].partner for n in neighbours] == torch.argsort(perm).tolist()


def test_decoder_neighbours_equal_the_brute_force_cosines_without_self():
    g = torch.Generator().manual_seed(5)
    decoder = torch.randn(37, 6, generator=g)
    decoder[4] = 3 * decoder[9] + 0.05 * torch.randn(6, generator=g)  # nearly the same direction, longer
    decoder[20] = 0  # a zero row has cosine 0 with everything
    brute = nearest_neighbours(cosine_matrix(decoder, decoder), k=4, exclude_self=True)
    for chunk in (1, 5, 37, 100):  # chunk boundaries do not matter
        got = decoder_neighbours(decoder, k=4, chunk=chunk)
        some = decoder_neighbours(decoder, k=4, features=[31, 4], chunk=chunk)
        for row, full in zip(some, [got[31], got[4]], strict=True):  # a few features: the same rows
            assert [(n.feature, n.partner) for n in row] == [(n.feature, n.partner) for n in full]
            assert [n.similarity for n in row] == pytest.approx([n.similarity for n in full], abs=1e-6)
        assert [[n.partner for n in row] for row in got] == [[n.partner for n in row] for row in brute]
        assert all(n.feature == i and n.partner != i for i, row in enumerate(got) for n in row)
        for row, expected in zip(got, brute, strict=True):
            assert [n.similarity for n in row] == pytest.approx([n.similarity for n in expected], abs=1e-5)
    assert got[4][0].partner == 9 and got[4][0].similarity > 0.99 and got[9][0].partner == 4
    assert len(decoder_neighbours(decoder[:3], k=10)[0]) == 2  # k is capped by the other features
    assert decoder_neighbours(decoder[:1], k=5) == [[]]


def test_merge_keeps_the_suites_a_report_did_not_run():
    metrics = {"tokens": 1, "l0": 2.0, "explained_variance": 0.5, "mse": 0.1, "dead_fraction": 0, "dense_fraction": 0}
    core = EvalReport.model_validate({"sae": "runs/a/sae", "core": metrics, "seconds": {"core": 1.0}})
    universality = Universality(
        tokens=1,
        features_a=2,
        features_b=2,
        alive_a=2,
        alive_b=2,
        mean_max_correlation=0.9,
        partner_fraction=1.0,
        mean_max_correlation_b=0.9,
        partner_fraction_b=1.0,
        decoder_mean_max_cosine=0.8,
        decoder_matched_cosine=0.8,
    )
    compared = EvalReport(
        compared_with="runs/b/sae", compared_id="b", universality=universality, seconds={"universality": 2.0}
    )
    merged = merge_reports(core, compared)
    assert merged.core == core.core and merged.universality == universality and merged.sae == "runs/a/sae"
    assert (merged.compared_with, merged.compared_id) == ("runs/b/sae", "b")
    assert merged.seconds == {"core": 1.0, "universality": 2.0}
    assert core.universality is None  # the stored report is not changed in place
    # a core-only rerun that happened to name --compare keeps the compared SAE of the stored universality
    again = merge_reports(merged, EvalReport(compared_with="runs/c/sae", core=core.core, seconds={"core": 3.0}))
    assert (again.compared_with, again.compared_id, again.seconds["core"]) == ("runs/b/sae", "b", 3.0)
    assert merge_reports(None, compared) == compared


# --- core: density histogram and KL -----------------------------------------------------
def test_density_histogram_bins():
    density = torch.tensor([0.0, 0.0, 1e-9, 1e-3, 2e-3, 0.5, 1.0])
    h = density_histogram(density)
    assert h.dead == 2 and sum(h.counts) == 5 and h.log10_edges == DENSITY_LOG10_EDGES
    edges = DENSITY_LOG10_EDGES
    assert h.counts[0] == 1  # below the first edge
    assert h.counts[edges.index(-3.0)] == 2 and h.counts[-1] == 2  # 0.5 and 1.0 in the top bin


def test_an_exact_sae_has_zero_kl_and_a_lossy_one_the_brute_force_kl(tiny_model, tiny_contexts):
    hook = "blocks.0.hook_resid_post"
    spec = make_spec(ReLUConfig(hook_in=hook, hook_out=hook, d_sae=64, normalize_input=False), d_in=32, d_out=32)
    sae = build_sae(spec).eval()
    eye = torch.eye(32)
    with torch.no_grad():  # relu(x) - relu(-x) = x: reconstructs every input exactly
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    exact = evaluate(sae, tiny_model, tiny_contexts, EvalConfig(batch_contexts=8), progress=False)
    assert exact.kl_divergence == pytest.approx(0, abs=1e-6)
    assert exact.ce_loss_recovered == pytest.approx(1, abs=1e-5)
    with torch.no_grad():
        sae.W_dec.mul_(0.5)
    lossy = evaluate(sae, tiny_model, tiny_contexts, EvalConfig(batch_contexts=5), progress=False)
    keep = tiny_contexts != tiny_model.tokenizer.bos_token_id

    def half(value):
        out = value.clone()
        out[keep] = 0.5 * value[keep]
        return out

    clean, _ = tiny_model.logits(tiny_contexts)
    halved, _ = tiny_model.logits(tiny_contexts, replace={hook: half})
    p = torch.log_softmax(clean[:, :-1].float(), -1)
    q = torch.log_softmax(halved[:, :-1].float(), -1)
    brute = float((p.exp() * (p - q)).sum(-1).mean())
    assert brute > 1e-4 and math.isclose(lossy.kl_divergence, brute, rel_tol=1e-4)
