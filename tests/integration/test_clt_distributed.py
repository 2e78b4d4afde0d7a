"""A cross-layer transcoder trained data-parallel on two gloo processes reaches the weights one
process reaches with the same global batch (TopK and JumpReLU)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lm_saes.activations import ShardWriter, StoredActivations
from lm_saes.config import TrainConfig
from lm_saes.saes.crosslayer import CrossLayerTranscoder, CrossLayerTranscoderSpec
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer
from lm_saes.training.distributed import Distributed, mesh

D = 8
HOOKS_IN, HOOKS_OUT = ["in0", "in1", "in2"], ["out0", "out1", "out2"]
SPECS = {
    activation: CrossLayerTranscoderSpec(
        layers=[0, 1, 2], d_sae=32, k=3, d_model=D, activation=activation, l0_coefficient=0.01, seed=5
    )
    for activation in ("topk", "jumprelu")
}
CFG = TrainConfig(batch_size=64, lr=3e-3, lr_warmup_steps=2, l1_warmup_steps=4, log_every=1, dead_after_tokens=64)


def _write_data(root) -> None:
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(6, 24, D, generator=g)
    codes = torch.rand(768, 24, generator=g) * (torch.rand(768, 24, generator=g) < 0.15)
    writer = ShardWriter(LocalObjectStore(f"{root}/acts"), "m", D, shard_tokens=256)
    writer.add({hook: 5 * codes @ atoms[i] for i, hook in enumerate(HOOKS_IN + HOOKS_OUT)})
    writer.close()


def _train(root, out: str, name: str, distributed: Distributed | None = None) -> Trainer:
    source = StoredActivations(LocalObjectStore(f"{root}/acts"), HOOKS_IN + HOOKS_OUT, buffer_tokens=512)
    trainer = Trainer(
        CrossLayerTranscoder(SPECS[name]),
        source,
        CFG,
        LocalObjectStore(f"{root}/{out}"),
        HOOKS_IN,
        HOOKS_OUT,
        progress=False,
        distributed=distributed or Distributed(),
    )
    trainer.run()
    return trainer


def _rank(rank: int, world: int, root: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        for name in SPECS:
            trainer = _train(root, f"dp-{name}", name, mesh(rank, world, 1))
            if rank == 0:
                torch.save(trainer.sae.state_dict(), f"{root}/dp-{name}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("clt-dp")
    _write_data(root)
    mp.spawn(_rank, args=(2, str(root)), nprocs=2, join=True)
    return root


@pytest.mark.parametrize("name", list(SPECS))
def test_data_parallel_clt_matches_one_process(root, name):
    alone = _train(root, f"one-{name}", name).sae.state_dict()
    parallel = torch.load(f"{root}/dp-{name}.pt")
    assert alone.keys() == parallel.keys()
    for key, value in alone.items():
        assert torch.allclose(parallel[key], value, atol=1e-5), (key, (parallel[key] - value).abs().max())
    assert (alone["W_enc"] - CrossLayerTranscoder(SPECS[name]).W_enc).abs().max() > 1e-3  # it trained
