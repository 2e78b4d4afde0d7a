"""The analysis collector against brute force on a tiny model and SAE."""

import pytest
import torch

from lm_saes.analysis.analyze import feature_activations
from lm_saes.analysis.collector import FeatureCollector
from lm_saes.analysis.logit_lens import logit_lens
from lm_saes.saes import TopKConfig, build_sae, make_spec

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture
def pass_result(tiny_model):
    g = torch.Generator().manual_seed(1)
    contexts = torch.randint(32, 127, (40, 24), generator=g)
    contexts[:, 0] = tiny_model.tokenizer.bos_token_id
    spec = make_spec(TopKConfig(hook_in=HOOK, hook_out=HOOK, d_sae=48, k=5, seed=2), d_in=32, d_out=32)
    sae = build_sae(spec).eval()
    sae.set_scales(0.3, 0.3)
    collector = FeatureCollector(48, top_n=6, samples_per_bucket=2, window_before=4, window_after=2)
    all_acts = []
    for start in range(0, 40, 7):
        tokens = contexts[start : start + 7]
        acts, valid = feature_activations(tiny_model, sae, tokens)
        collector.update(tokens, acts, valid, torch.arange(start, start + len(tokens)))
        all_acts.append(acts)
    return contexts, torch.cat(all_acts), collector, sae


def test_top_examples_are_the_n_largest_context_maxima(pass_result):
    contexts, acts, collector, _ = pass_result
    context_max, argmax = acts.max(dim=1)  # [contexts, features]
    for feature in range(48):
        expected = context_max[:, feature]
        expected = expected[expected > 0].sort(descending=True).values[:6]
        examples = collector.top_examples(feature)
        got = torch.tensor([e["max_activation"] for e in examples])
        torch.testing.assert_close(got, expected)
        assert len({e["context"] for e in examples}) == len(examples)  # one entry per context
        for example in examples:
            ctx = example["context"]
            pos = int(argmax[ctx, feature])
            lo, hi = max(0, pos - 4), min(24, pos + 3)
            assert example["token_ids"] == contexts[ctx, lo:hi].tolist()
            torch.testing.assert_close(
                torch.tensor(example["activations"]), acts[ctx, lo:hi, feature], atol=1e-5, rtol=0
            )


def test_quantile_samples_lie_in_their_intervals(pass_result):
    _, acts, collector, _ = pass_result
    seen = 0
    for feature in range(48):
        top = float(acts[..., feature].max())
        for interval in collector.quantile_samples(feature, intervals=10, per_interval=3):
            low, high = interval["interval"]
            assert 0 <= low < high <= top + 1e-6
            for example in interval["examples"]:
                assert low < example["max_activation"] <= high
                seen += 1
    assert seen > 48  # weak and strong samples exist


def test_histogram_density_and_means_match_brute_force(pass_result):
    contexts, acts, collector, _ = pass_result
    tokens = int((contexts != 256).sum())
    fired = acts > 0
    for feature in range(48):
        histogram = collector.histogram(feature)
        assert sum(histogram["counts"]) + histogram["zero"] == tokens
    torch.testing.assert_close(collector.density(), fired.sum((0, 1)).double() / tokens)
    torch.testing.assert_close(collector.state["max_act"], acts.amax((0, 1)))
    mean = acts.sum((0, 1)).double() / fired.sum((0, 1)).clamp_min(1)
    torch.testing.assert_close(collector.mean_activation(), mean, rtol=1e-5, atol=1e-6)


def test_logit_lens_equals_the_matrix_product():
    w_dec, w_u = torch.randn(70, 16), torch.randn(16, 90)
    top_v, top_i, bottom_v, bottom_i = logit_lens(w_dec, w_u, k=5, chunk=32)
    full = w_dec @ w_u
    torch.testing.assert_close(top_v, full.topk(5, dim=1).values)
    torch.testing.assert_close(full.gather(1, top_i), top_v)
    torch.testing.assert_close(bottom_v, full.topk(5, dim=1, largest=False).values)
    torch.testing.assert_close(full.gather(1, bottom_i), bottom_v)
