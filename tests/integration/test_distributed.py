"""Two gloo processes with a global batch of B reach the same weights as one process with B."""

import functools

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lm_saes.activations import ShardWriter, StoredActivations
from lm_saes.config import TrainConfig
from lm_saes.saes import TopKConfig, build_sae, make_spec
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer
from lm_saes.training.checkpoint import completed_steps
from lm_saes.training.distributed import Distributed

SPEC = make_spec(TopKConfig(hook_in="h", hook_out="h", d_sae=64, k=4, seed=1), d_in=16, d_out=16)
CFG = TrainConfig(
    batch_size=128, lr=3e-3, lr_warmup_steps=2, log_every=5, checkpoint_every=6, dead_after_tokens=10**9, epochs=2
)


def _write_data(root) -> None:
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(40, 16, generator=g)
    codes = torch.rand(2000, 40, generator=g) * (torch.rand(2000, 40, generator=g) < 0.1)
    writer = ShardWriter(LocalObjectStore(f"{root}/acts"), "m", 8, shard_tokens=500)
    writer.add({"h": 10 * codes @ atoms})
    writer.close()


def _train(root, out, distributed=None, stop_at_step=None) -> Trainer:
    source = StoredActivations(LocalObjectStore(f"{root}/acts"), ["h"], buffer_tokens=1000)
    trainer = Trainer(
        build_sae(SPEC),
        source,
        CFG,
        LocalObjectStore(f"{root}/{out}"),
        "h",
        "h",
        progress=False,
        distributed=distributed,
    )
    trainer.run(stop_at_step=stop_at_step)
    return trainer


def _exit_without_teardown(body, *args) -> None:
    """Run a rank's body, then leave with its status at once. Skipping interpreter finalization
    avoids an abort seen in 2 of 5 runs of this file here ("terminate called without an active
    exception", SIGABRT) while gloo's threads are torn down after the work is done and saved."""
    import os
    import traceback

    try:
        body(*args)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _rank(rank: int, world: int, root: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        trainer = _train(root, "ddp", Distributed(rank, world))
        _train(root, "ddp-resumed", Distributed(rank, world), stop_at_step=11)  # interrupted ...
        resumed = _train(root, "ddp-resumed", Distributed(rank, world))  # ... and resumed by all ranks
        if rank == 0:
            torch.save(trainer.sae.state_dict(), f"{root}/ddp.pt")
            torch.save(resumed.sae.state_dict(), f"{root}/ddp-resumed.pt")
    finally:
        dist.destroy_process_group()


_run_rank = functools.partial(_exit_without_teardown, _rank)


def test_two_gloo_ranks_match_one_process(tmp_path):
    _write_data(tmp_path)
    torch.set_num_threads(1)
    single = _train(tmp_path, "single").sae.state_dict()
    mp.spawn(_run_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
    ddp, resumed = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "ddp-resumed.pt")
    for name, value in single.items():
        assert float((ddp[name] - value).abs().max()) <= 1e-5, name
        assert float((resumed[name] - value).abs().max()) <= 1e-5, name
    assert completed_steps(LocalObjectStore(tmp_path / "ddp")) == [24, 30]  # written by rank 0
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-00000024", "step-00000030"]


def _rank_sigterm(rank: int, world: int, root: str) -> None:
    """Rank 0 alone gets a SIGTERM at step 10 (as a cancel or a node drain may deliver it):
    every rank must stop at the same step, checkpoint once, and return."""
    import os
    import signal
    import threading

    dist.init_process_group("gloo", init_method=f"file://{root}/rendezvous-stop", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        source = StoredActivations(LocalObjectStore(f"{root}/acts"), ["h"], buffer_tokens=1000)

        def on_log(record: dict) -> None:  # called on rank 0 only
            if record["step"] == 10:
                os.kill(os.getpid(), signal.SIGTERM)

        trainer = Trainer(
            build_sae(SPEC),
            source,
            CFG,
            LocalObjectStore(f"{root}/stopped"),
            "h",
            "h",
            progress=False,
            distributed=Distributed(rank, world),
            on_log=on_log,
            should_stop=stop.is_set,
        )
        summary = trainer.run()
        with open(f"{root}/stopped-rank{rank}.txt", "w") as out:
            out.write(str(summary.steps))
        if rank == 0:  # the checkpoints on disk right after the stop: step 6 and the stop step
            with open(f"{root}/stopped-checkpoints.txt", "w") as out:
                out.write(repr(completed_steps(LocalObjectStore(f"{root}/stopped"))))
        resumed = _train(root, "stopped", Distributed(rank, world))
        if rank == 0:
            torch.save(resumed.sae.state_dict(), f"{root}/stopped-resumed.pt")
    finally:
        dist.destroy_process_group()


_run_rank_sigterm = functools.partial(_exit_without_teardown, _rank_sigterm)


def test_a_sigterm_on_one_rank_stops_every_rank_at_one_step(tmp_path):
    _write_data(tmp_path)
    torch.set_num_threads(1)
    single = _train(tmp_path, "single").sae.state_dict()
    context = mp.get_context("spawn")
    procs = [context.Process(target=_run_rank_sigterm, args=(rank, 2, str(tmp_path))) for rank in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=240)
    assert [proc.exitcode for proc in procs] == [0, 0]  # nobody hung in a collective, nobody crashed
    assert [(tmp_path / f"stopped-rank{r}.txt").read_text() for r in range(2)] == ["10", "10"]
    assert (tmp_path / "stopped-checkpoints.txt").read_text() == "[6, 10]"  # one checkpoint at the stop
    assert completed_steps(LocalObjectStore(tmp_path / "stopped")) == [24, 30]  # after the resume
    resumed = torch.load(tmp_path / "stopped-resumed.pt")
    for name, value in single.items():
        assert float((resumed[name] - value).abs().max()) <= 1e-5, name
