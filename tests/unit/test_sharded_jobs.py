"""Sharded jobs: shard ranges, the shard ledger, retries, and exact merges of collectors."""

import sys

import pytest
import torch

from lm_saes.analysis.collector import EMPTY_KEY, FeatureCollector, sample_keys
from lm_saes.sharding import (
    ATTEMPT_ENV,
    FAULT_ENV,
    ShardLedger,
    ShardsFailed,
    check_shards,
    inject_fault,
    run_shards,
    shard_range,
)
from lm_saes.stores import LocalObjectStore

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


# --- shard ranges, the ledger and retries ----------------------------------------------------


@pytest.mark.parametrize("n_items", [0, 1, 5, 6, 7, 64, 1001])
@pytest.mark.parametrize("count", [1, 2, 4, 7, 64])
def test_shard_ranges_are_contiguous_covering_and_balanced(n_items, count):
    ranges = [shard_range(n_items, i, count) for i in range(count)]
    assert [x for r in ranges for x in r] == list(range(n_items))  # each item once, in order
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize(("index", "count"), [(0, 0), (0, 65), (4, 4), (-1, 4)])
def test_shard_range_refuses_shards_that_do_not_exist(index, count):
    with pytest.raises(ValueError, match="shard"):
        shard_range(10, index, count)


def test_shard_counts_are_checked_by_name():
    assert check_shards(64) == 64
    for bad in (0, 65, -3, True, "4", 2.0):
        with pytest.raises(ValueError, match=r"^shards = .*choose 1 to 64"):
            check_shards(bad)  # type: ignore[arg-type]


def _child(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def _flaky(store_uri: str, index: int, fail: dict[int, int]) -> list[str]:
    """A shard process that reports progress, then fails its first fail[index] attempts."""
    return _child(
        "import os, sys\n"
        "from lm_saes.stores import open_store\n"
        "from lm_saes.sharding import report_progress\n"
        f"report_progress(open_store({store_uri!r}), {index}, 0.5)\n"
        f"sys.exit(3 if int(os.environ['{ATTEMPT_ENV}']) <= {fail.get(index, 0)} else 0)\n"
    )


def test_a_failed_shard_is_retried_alone_and_the_ledger_records_it(tmp_path):
    store = LocalObjectStore(tmp_path)
    seen: list[ShardLedger] = []
    ledger = run_shards(
        store,
        4,
        lambda i: _flaky(store.uri, i, {1: 1}),
        max_attempts=3,
        parallel=2,
        on_update=lambda led: seen.append(led.model_copy(deep=True)),
        poll_s=0.05,
    )
    assert ledger.attempts == [1, 2, 1, 1]
    assert [s.state for s in ledger.shards] == ["succeeded"] * 4 and ledger.progress == 1.0
    assert ShardLedger.load(store, 4) == ledger  # what the ledger file says
    assert any(led.shards[1].attempts == 1 and led.shards[1].state == "pending" for led in seen)
    assert max(sum(s.state == "running" for s in led.shards) for led in seen) <= 2  # parallel bound
    metrics = ledger.metrics()
    assert metrics["shards"] == 4 and metrics["shard.1.attempts"] == 2 and metrics["shard.3.progress"] == 1.0
    # a rerun finds every shard done and starts nothing
    ledger = run_shards(store, 4, lambda i: _child("raise SystemExit(1)"), poll_s=0.05)
    assert ledger.attempts == [1, 2, 1, 1]


def test_a_shard_failing_every_attempt_raises_after_the_others_finish(tmp_path):
    store = LocalObjectStore(tmp_path)
    with pytest.raises(ShardsFailed, match=r"1 of 3 shards failed: shard 2 after 2 attempts: boom") as caught:
        run_shards(store, 3, lambda i: _child(f"import sys; print('boom'); sys.exit({int(i == 2)})"), 2, poll_s=0.05)
    assert [s.state for s in caught.value.ledger.shards] == ["succeeded", "succeeded", "failed"]
    assert caught.value.ledger.attempts == [1, 1, 2]


def test_stopping_terminates_running_shards_and_leaves_them_pending(tmp_path):
    store = LocalObjectStore(tmp_path)
    calls = iter(range(1000))
    with pytest.raises(InterruptedError):
        run_shards(store, 2, lambda i: _child("import time; time.sleep(60)"), should_stop=lambda: next(calls) > 2)
    assert [s.state for s in ShardLedger.load(store, 2).shards] == ["pending", "pending"]


def test_fault_injection_names_shards_and_attempts(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "1,3:2")
    for attempt, failing in ((1, {1, 3}), (2, {1, 3}), (3, set())):
        monkeypatch.setenv(ATTEMPT_ENV, str(attempt))
        failed = set()
        for index in range(4):
            try:
                inject_fault(index)
            except RuntimeError:
                failed.add(index)
        assert failed == failing


def test_shard_counts_in_configs_are_bounded_with_the_field_named():
    from lm_saes.config import AnalyzeConfig, ConfigError, RunConfig, parse_config

    assert parse_config({"shards": 64}, AnalyzeConfig).shards == 64
    assert parse_config({"activations": {"shards": 4}}, RunConfig).activations.shards == 4
    for bad in (0, 65, "four"):
        with pytest.raises(ConfigError, match=r"\n  shards: "):
            parse_config({"shards": bad}, AnalyzeConfig)
        with pytest.raises(ConfigError, match=r"\n  activations.shards: "):
            parse_config({"activations": {"shards": bad}}, RunConfig)
