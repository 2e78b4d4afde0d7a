"""Feature sharding in one process: the global top-k merge, shard layout and assembly, config
checks, mesh coordinates, and the per-rank memory estimate (the gloo runs are in
tests/integration/test_tensor_parallel.py)."""

import pytest
import torch

from lm_saes.config import ConfigError, RunConfig, parse_config
from lm_saes.saes import BatchTopKConfig, JumpReLUConfig, ReLUConfig, TopKConfig, build_sae, load_sae, make_spec
from lm_saes.saes.sharding import FeatureShard, pick_global_topk, shard_files, shard_sae, shard_state
from lm_saes.stores import LocalObjectStore
from lm_saes.training.checkpoint import load_checkpoint_weights
from lm_saes.training.distributed import Distributed
from lm_saes.training.memory import estimate_run


def _shard_candidates(pre: torch.Tensor, shards: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each shard's top k per row: values [shards, rows, k] and their global feature indices."""
    width = pre.shape[1] // shards
    values, indices = [], []
    for s in range(shards):
        v, i = pre[:, s * width : (s + 1) * width].topk(k, dim=-1)
        values.append(v)
        indices.append(i + s * width)
    return torch.stack(values), torch.stack(indices)


@pytest.mark.parametrize("shards", [2, 4, 8])
def test_merging_the_shards_top_k_gives_the_global_top_k(shards):
    pre = torch.randn(50, 64, generator=torch.Generator().manual_seed(shards))
    k = 5
    values, indices = _shard_candidates(pre, shards, k)
    keep = pick_global_topk(values, k)
    for row in range(pre.shape[0]):
        merged = set(indices[:, row][keep[:, row]].tolist())
        assert merged == set(pre[row].topk(k).indices.tolist())
    assert keep.sum(dim=(0, 2)).eq(k).all()  # exactly k winners per row, over all shards


def test_the_shards_own_top_k_is_not_the_global_top_k():
    """What the merge corrects: unmerged, each shard activates its own k, and rows differ."""
    pre = torch.randn(50, 64, generator=torch.Generator().manual_seed(0))
    _, indices = _shard_candidates(pre, 2, 5)
    unmerged = [set(indices[:, row].flatten().tolist()) for row in range(50)]
    assert all(len(s) == 10 for s in unmerged)
    assert sum(s != set(pre[row].topk(5).indices.tolist()) for row, s in enumerate(unmerged)) == 50


def test_the_flat_merge_picks_the_global_batch_top_k():
    """BatchTopK's merge: every rank's flattened candidates as one row."""
    blocks = torch.randn(4, 200, generator=torch.Generator().manual_seed(1))  # 4 ranks' activations
    budget = 60
    candidates = torch.stack([block.topk(budget).values for block in blocks])[:, None, :]
    keep = pick_global_topk(candidates, budget)[:, 0]
    assert sorted(candidates[:, 0][keep].tolist()) == sorted(blocks.flatten().topk(budget).values.tolist())


CONFIGS = [
    TopKConfig(hook_in="h", d_sae=32, k=4),
    BatchTopKConfig(hook_in="h", d_sae=32, k=4),
    JumpReLUConfig(hook_in="h", d_sae=32),
    ReLUConfig(hook_in="h", d_sae=32),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.architecture)
def test_shards_save_apart_and_load_sae_assembles_them(tmp_path, config):
    whole = build_sae(make_spec(config, d_in=8, d_out=8))
    store = LocalObjectStore(tmp_path)
    for index in range(4):
        shard = shard_sae(build_sae(whole.spec), FeatureShard(index, 4))
        assert shard.local_d_sae == 8 and shard.W_dec.shape == (8, 8) and shard.b_dec.shape == (8,)
        shard.save(store, "sae")
        if index == 0:
            shard.save_spec(store, "sae")
    assert [(i, n) for i, n, _ in shard_files(store, "sae")] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assembled = load_sae(store.child("sae"))
    for name, value in whole.state_dict().items():
        assert torch.equal(assembled.state_dict()[name], value), name
    third = shard_sae(build_sae(whole.spec), FeatureShard(2, 4))
    third.load_state_dict(shard_state(third, store, "sae"))
    assert torch.equal(third.W_enc, whole.W_enc[16:24])


def test_a_checkpoint_of_another_shard_count_is_refused(tmp_path):
    spec = make_spec(CONFIGS[0], d_in=8, d_out=8)
    store = LocalObjectStore(tmp_path)
    for index in range(2):
        shard_sae(build_sae(spec), FeatureShard(index, 2)).save(store, "ckpt")
    with pytest.raises(ValueError, match="saved with \\[2\\] feature shards.*train.feature_shards = 4"):
        load_checkpoint_weights(store, "ckpt", shard_sae(build_sae(spec), FeatureShard(0, 4)))
    with pytest.raises(ValueError, match="saved with \\[2\\] feature shards.*train.feature_shards = 1"):
        load_checkpoint_weights(store, "ckpt", build_sae(spec))  # an unsharded run


def test_a_shard_does_not_encode_alone():
    shard = shard_sae(build_sae(make_spec(CONFIGS[0], d_in=8, d_out=8)), FeatureShard(0, 2))
    with pytest.raises(RuntimeError, match="load the assembled SAE"):
        shard.encode(torch.randn(3, 8))


def test_feature_shards_must_divide_d_sae():
    with pytest.raises(ConfigError, match="train.feature_shards = 3 must divide sae.d_sae = 64"):
        parse_config({"sae": {"d_sae": 64}, "train": {"feature_shards": 3}}, RunConfig)
    with pytest.raises(ConfigError, match="train.feature_shards"):
        parse_config({"train": {"feature_shards": 0}}, RunConfig)
    sweep = {"sae": {"d_sae": 64}, "train": {"feature_shards": 4}, "sweep": [{"name": "a", "sae": {"d_sae": 96}}]}
    with pytest.raises(ConfigError, match="sweep.0.train.feature_shards = 4 must divide sweep.0.sae.d_sae = 90"):
        parse_config({**sweep, "sweep": [{"name": "a", "sae": {"d_sae": 90}}]}, RunConfig)
    parse_config(sweep, RunConfig)


def test_the_mesh_puts_a_rows_shards_side_by_side():
    with pytest.raises(ValueError, match="train.feature_shards = 3 must divide the world size 4"):
        Distributed(0, 4, feature_shards=3)
    batch = torch.arange(8)[:, None]
    coordinates = []
    for rank in range(4):
        grid = Distributed(rank, 4, feature_shards=2)
        coordinates.append((grid.dp_rank, grid.fs_rank, grid.local_rows(batch).flatten().tolist()))
    assert coordinates == [(0, 0, [0, 1, 2, 3]), (0, 1, [0, 1, 2, 3]), (1, 0, [4, 5, 6, 7]), (1, 1, [4, 5, 6, 7])]


def test_memory_estimate_is_per_rank():
    d_in, model = 576, 10**9
    one = parse_config({"sae": {"d_sae": 2**16}, "train": {"batch_size": 1024}}, RunConfig)
    eight = parse_config({"sae": {"d_sae": 2**16}, "train": {"batch_size": 1024, "feature_shards": 8}}, RunConfig)
    rest = estimate_run(one, d_in, model).memory_bytes - (2 * d_in * 2**16 + 2**16 + d_in) * 16 - 1024 * 2**16 * 12
    expected = rest + (2 * d_in * 2**13 + 2**13 + d_in) * 16 + 1024 * 2**13 * 12
    assert estimate_run(eight, d_in, model).memory_bytes == expected
