"""Sharded jobs: shard ranges, the shard ledger, retries, and exact merges of collectors."""

import pytest
import torch

from lm_saes.analysis.collector import EMPTY_KEY, FeatureCollector, sample_keys

F, T, N_CONTEXTS = 12, 10, 48


def _synthetic(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse activations on few distinct levels, so many contexts tie on their maximum."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 50, (N_CONTEXTS, T), generator=g)
    tokens[:, 0] = 0  # BOS
    levels = torch.tensor([0.0, 0.25, 1.0, 3.0])
    acts = levels[torch.randint(0, 4, (N_CONTEXTS, T, F), generator=g)]
    acts *= torch.rand(N_CONTEXTS, T, F, generator=g) < 0.3
    acts[:, 0] = 0
    return tokens, acts, tokens != 0


def _collector() -> FeatureCollector:
    return FeatureCollector(F, top_n=4, samples_per_bucket=2, window_before=2, window_after=1, seed=3)


def _feed(collector: FeatureCollector, data, ids: list[int], batch: int) -> FeatureCollector:
    tokens, acts, valid = data
    for start in range(0, len(ids), batch):
        rows = torch.tensor(ids[start : start + batch])
        collector.update(tokens[rows], acts[rows], valid[rows], rows)
    return collector


def _assert_same_state(a: FeatureCollector, b: FeatureCollector) -> None:
    assert a.state.keys() == b.state.keys()
    for key in a.state:
        assert torch.equal(a.state[key], b.state[key]), key


def test_four_merged_shards_equal_one_pass_bit_for_bit():
    data = _synthetic()
    one = _feed(_collector(), data, list(range(N_CONTEXTS)), batch=5)
    bounds = [0, 7, 20, 33, N_CONTEXTS]  # uneven shards, other batch sizes than the single pass
    parts = [
        _feed(_collector(), data, list(range(lo, hi)), batch=3) for lo, hi in zip(bounds, bounds[1:], strict=False)
    ]
    merged = parts[0].merge(parts[1:])
    _assert_same_state(one, merged)
    for feature in range(F):
        assert one.top_examples(feature) == merged.top_examples(feature)
        assert one.quantile_samples(feature, 4, 2) == merged.quantile_samples(feature, 4, 2)
        assert one.histogram(feature) == merged.histogram(feature)


def test_the_result_does_not_depend_on_arrival_or_merge_order():
    data = _synthetic(1)
    forward = _feed(_collector(), data, list(range(N_CONTEXTS)), batch=6)
    backward = _feed(_collector(), data, list(reversed(range(N_CONTEXTS))), batch=4)
    _assert_same_state(forward, backward)
    parts = [_feed(_collector(), data, list(range(i, N_CONTEXTS, 3)), batch=5) for i in range(3)]
    _assert_same_state(forward, parts[2].merge([parts[0], parts[1]]))


def test_top_examples_break_ties_by_context_id_like_brute_force():
    """Brute force: per feature, contexts by (maximum descending, context id ascending), first n.
    A merge that concatenated shards' lists without reselecting would fail this."""
    data = _synthetic(2)
    _, acts, _ = data
    bounds = [0, 12, 24, 36, N_CONTEXTS]
    parts = [
        _feed(_collector(), data, list(range(lo, hi)), batch=4) for lo, hi in zip(bounds, bounds[1:], strict=False)
    ]
    merged = parts[3].merge(parts[:3])
    context_max = acts.amax(1)  # [contexts, features]
    ties = 0
    for feature in range(F):
        ranked = sorted((-float(v), c) for c, v in enumerate(context_max[:, feature].tolist()) if v > 0)[:4]
        got = [(-e["max_activation"], e["context"]) for e in merged.top_examples(feature)]
        assert got == ranked
        ties += len({v for v, _ in ranked}) < len(ranked)
    assert ties > 0  # the data really has ties at the top


def test_samples_are_the_smallest_hash_keys_of_each_bucket():
    data = _synthetic(3)
    tokens, acts, valid = data
    collector = _feed(_collector(), data, list(range(N_CONTEXTS)), batch=7)
    m, buckets = collector.per_bucket, collector.n_buckets
    context_max = acts.amax(1)
    first_pos = (acts == context_max[:, None, :]).float().argmax(1)  # first position of the maximum
    checked = 0
    for feature in range(F):
        fired = (context_max[:, feature] > 0).nonzero().squeeze(1)
        keys = sample_keys(3, torch.full_like(fired, feature), fired, first_pos[fired, feature])
        bucket = collector.bucket(context_max[fired, feature])
        for b in range(buckets):
            inside = bucket == b
            expected = sorted(zip(keys[inside].tolist(), fired[inside].tolist(), strict=True))[:m]
            row = feature * buckets + b
            filled = collector.state["sample_keys"][row] < EMPTY_KEY
            kept_keys = collector.state["sample_keys"][row][filled].tolist()
            got = list(zip(kept_keys, collector.state["sample_ctx"][row][filled].tolist(), strict=True))
            assert got == expected
            checked += len(expected)
    assert checked > F


def test_merge_refuses_collectors_of_other_settings():
    with pytest.raises(ValueError, match="different settings"):
        _collector().merge(
            [FeatureCollector(F, top_n=5, samples_per_bucket=2, window_before=2, window_after=1, seed=3)]
        )
