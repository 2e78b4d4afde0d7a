"""Feature-sharded SAEs on gloo processes: 1x2 (two feature shards) and 2x2 (two data-parallel
replicas of two shards) reach the weights one process reaches with the same global batch, for
every architecture; checkpoints are sharded, resume exactly, and load assembled in one process."""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lm_saes.activations import ShardWriter, StoredActivations
from lm_saes.config import TrainConfig
from lm_saes.saes import BatchTopKConfig, JumpReLUConfig, ReLUConfig, TopKConfig, build_sae, load_sae, make_spec
from lm_saes.saes.sharding import shard_files, shard_sae
from lm_saes.saes.sparse_ops import SparseCode
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer
from lm_saes.training.checkpoint import completed_steps, save_trained
from lm_saes.training.distributed import Distributed, mesh

D, D_SAE = 8, 64
CONFIGS = {
    "topk": TopKConfig(hook_in="h", hook_out="h", d_sae=D_SAE, k=2, aux_k=6, seed=1),
    "batchtopk": BatchTopKConfig(hook_in="h", hook_out="h", d_sae=D_SAE, k=2, aux_k=6, seed=2),
    "jumprelu": JumpReLUConfig(hook_in="h", hook_out="h", d_sae=D_SAE, l0_coefficient=0.05, seed=3),
    "relu": ReLUConfig(hook_in="h", hook_out="h", d_sae=D_SAE, l1_coefficient=0.5, seed=4),
}
SPECS = {name: make_spec(config, d_in=D, d_out=D) for name, config in CONFIGS.items()}
# 16 steps of 64 rows; latents silent for 2 steps are dead, so the aux-k merge runs too.
CFG = TrainConfig(
    batch_size=64, lr=3e-3, lr_warmup_steps=2, l1_warmup_steps=4, log_every=1, checkpoint_every=5, dead_after_tokens=64
)
TOLERANCE = 1e-5


def _write_data(root) -> None:
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(24, D, generator=g)
    codes = torch.rand(1024, 24, generator=g) * (torch.rand(1024, 24, generator=g) < 0.15)
    writer = ShardWriter(LocalObjectStore(f"{root}/acts"), "m", D, shard_tokens=256)
    writer.add({"h": 10 * codes @ atoms})
    writer.close()


def _train(root, out: str, name: str, distributed: Distributed | None = None, stop_at_step=None, on_log=None):
    distributed = distributed or Distributed()
    source = StoredActivations(LocalObjectStore(f"{root}/acts"), ["h"], buffer_tokens=512)
    sae = shard_sae(build_sae(SPECS[name]), distributed.feature_shard())
    store = LocalObjectStore(f"{root}/{out}")
    trainer = Trainer(sae, source, CFG, store, "h", "h", progress=False, distributed=distributed, on_log=on_log)
    summary = trainer.run(stop_at_step=stop_at_step)
    if summary.steps == trainer.total_steps:
        save_trained(store, "sae", trainer.sae, distributed)
    return trainer


def _local_topk_only(pre: torch.Tensor, k: int, shard) -> SparseCode:
    """Per-shard top k with no global merge: what the merge exists to prevent."""
    values, indices = pre.topk(min(k, pre.shape[1]), dim=-1, sorted=False)
    return SparseCode.from_topk(values, indices)


def _rank(rank: int, world: int, shards: int, root: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{root}/rendezvous-{world}x{shards}", rank=rank, world_size=world
    )
    try:
        torch.set_num_threads(1)
        grid = mesh(rank, world, shards)
        tag = f"{world // shards}x{shards}"
        for name in SPECS:
            trainer = _train(root, f"{tag}-{name}", name, grid)
            sizes = {n: p.numel() for n, p in trainer.sae.named_parameters()}
            torch.save(sizes, f"{root}/{tag}-{name}-params-rank{rank}.pt")
        if shards == 1:
            return  # plain data parallelism: its resume is tests/integration/test_distributed.py's
        _train(root, f"{tag}-resumed", "topk", grid, stop_at_step=7)  # interrupted ...
        _train(root, f"{tag}-resumed", "topk", grid)  # ... and resumed from the sharded checkpoint
        if shards == world:
            import lm_saes.saes.topk as topk_module

            topk_module.topk_code = _local_topk_only  # type: ignore[assignment]
            _train(root, f"{tag}-no-merge", "topk", grid)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One single-process run per architecture, then the 1x2 and 2x2 meshes and plain data
    parallelism, 2x1 (spawned once each)."""
    root = tmp_path_factory.mktemp("tp")
    _write_data(root)
    torch.set_num_threads(1)
    for name in SPECS:
        records: list[dict] = []
        _train(root, f"single-{name}", name, on_log=records.append)
        if name in ("topk", "batchtopk"):
            assert any("aux_k" in record for record in records), "the aux-k loss never ran; lower dead_after_tokens"
    for world, shards in ((2, 2), (4, 2), (2, 1)):
        mp.spawn(_rank, args=(world, shards, str(root)), nprocs=world, join=True)
    return root


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    assert a.keys() == b.keys()
    return {key: float((a[key] - b[key]).abs().max()) for key in a}


@pytest.mark.parametrize("tag", ["1x2", "2x2", "2x1"])
@pytest.mark.parametrize("name", list(SPECS))
def test_sharded_training_matches_one_process(runs, tag, name):
    """2x1 too: data-parallel replicas of a whole dictionary choose BatchTopK's activations and
    normalize aux-k over the global batch, as one process does."""
    single = load_sae(str(runs / f"single-{name}" / "sae")).state_dict()
    sharded = load_sae(str(runs / f"{tag}-{name}" / "sae")).state_dict()  # assembled from its shards
    differences = _max_difference(single, sharded)
    assert max(differences.values()) <= TOLERANCE, differences


@pytest.mark.parametrize("tag", ["1x2", "2x2"])
def test_saves_are_sharded_and_resume_exactly(runs, tag):
    store = LocalObjectStore(runs / f"{tag}-resumed")
    assert [(i, n) for i, n, _ in shard_files(store, "sae")] == [(0, 2), (1, 2)]
    assert "W_enc" not in store.get_tensors("sae/sae.safetensors")  # replicated tensors only
    assert completed_steps(store) == [10, 15]
    checkpoint = sorted(key for key in store.list("checkpoints/step-00000015"))
    assert [key.rsplit("/", 1)[1] for key in checkpoint] == [
        "done",
        "sae-features-0000-of-0002.safetensors",
        "sae-features-0001-of-0002.safetensors",
        "sae.json",
        "sae.safetensors",
        "trainer-0000-of-0002.pt",
        "trainer-0001-of-0002.pt",
    ]
    single = load_sae(str(runs / "single-topk" / "sae")).state_dict()
    resumed = load_sae(str(runs / f"{tag}-resumed" / "sae")).state_dict()
    differences = _max_difference(single, resumed)
    assert max(differences.values()) <= TOLERANCE, differences


def test_per_shard_topk_without_the_global_merge_trains_something_else(runs):
    """The equality above is not vacuous: the shards' own top k, unmerged, diverges."""
    single = load_sae(str(runs / "single-topk" / "sae")).state_dict()
    unmerged = load_sae(str(runs / "1x2-no-merge" / "sae")).state_dict()
    assert max(_max_difference(single, unmerged).values()) > 1e-2


@pytest.mark.parametrize("tag", ["1x2", "2x2"])
@pytest.mark.parametrize("name", list(SPECS))
def test_each_rank_holds_half_the_dictionary(runs, tag, name):
    whole = {n: p.numel() for n, p in build_sae(SPECS[name]).named_parameters()}
    world = 2 if tag == "1x2" else 4
    for rank in range(world):
        local = torch.load(runs / f"{tag}-{name}-params-rank{rank}.pt")
        for param, size in whole.items():
            expected = size // 2 if param in build_sae(SPECS[name]).feature_params else size  # b_dec replicated
            assert local[param] == expected, (rank, param)
        assert sum(local.values()) <= sum(whole.values()) / 2 + D  # ~1/N: all but b_dec is split


def test_torchrun_cli_with_two_feature_shards_matches_one_process(tmp_path):
    """`torchrun ... lm_saes.cli train` with train.feature_shards = 2 on the tiny model: the
    runner shards, saves sharded, evaluates the assembled SAE, and ends where one process ends."""
    import json
    import os
    import subprocess
    import sys

    from lm_saes.cli import main

    tiny = "examples/configuration/train-tiny.toml"
    assert main(["-q", "train", tiny, "--set", f'output="{tmp_path / "single"}"']) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lm_saes.cli", "-q"]
    command += ["train", tiny, "--set", f'output="{tmp_path / "fs2"}"', "--set", "train.feature_shards=2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(i, n) for i, n, _ in shard_files(LocalObjectStore(tmp_path / "fs2"), "sae")] == [(0, 2), (1, 2)]
    single, sharded = load_sae(str(tmp_path / "single" / "sae")), load_sae(str(tmp_path / "fs2" / "sae"))
    differences = _max_difference(single.state_dict(), sharded.state_dict())
    assert max(differences.values()) <= TOLERANCE, differences
    evals = [json.loads((tmp_path / run / "eval.json").read_text()) for run in ("single", "fs2")]
    assert abs(evals[0]["explained_variance"] - evals[1]["explained_variance"]) <= 1e-5
