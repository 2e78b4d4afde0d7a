"""A sweep trains several SAEs from one activation stream, each exactly as it would train alone."""

from __future__ import annotations

import pytest
import torch

from lm_saes.activations import ShardWriter, StoredActivations
from lm_saes.config import ConfigError, RunConfig, TrainConfig, parse_config
from lm_saes.saes import BatchTopKConfig, ReLUConfig, TopKConfig, build_sae, make_spec
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer
from lm_saes.training.checkpoint import completed_steps
from lm_saes.training.sweep import Sweep


class CountingSource(StoredActivations):
    """Stored activations that count the windows they load (the stream's reads)."""

    loads = 0

    def load_window(self, epoch, index):
        CountingSource.loads += 1
        return super().load_window(epoch, index)


def _source(tmp_path, n=1800, d=16):
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(40, d, generator=g)
    codes = torch.rand(n, 40, generator=g) * (torch.rand(n, 40, generator=g) < 0.1)
    store = LocalObjectStore(tmp_path / "acts")
    writer = ShardWriter(store, "m", 8, shard_tokens=300)
    writer.add({"a": 10 * codes @ atoms, "b": codes @ atoms.flip(1)})
    writer.close()
    return CountingSource(store, ["a", "b"], seed=0, buffer_tokens=600)


CONFIGS = [
    TopKConfig(hook_in="a", hook_out="a", d_sae=48, k=4),
    TopKConfig(hook_in="a", hook_out="a", d_sae=32, k=2, seed=3),
    BatchTopKConfig(hook_in="b", hook_out="b", d_sae=48, k=4),  # another hook of the same stream
    ReLUConfig(hook_in="a", hook_out="b", d_sae=48),  # a transcoder-like pair
]
LRS = [3e-3, 1e-3, 3e-3, 2e-3]


def _trainer(tmp_path, source, i, folder):
    spec = make_spec(CONFIGS[i], d_in=16, d_out=16)
    cfg = TrainConfig(batch_size=100, lr=LRS[i], lr_warmup_steps=3, checkpoint_every=7, log_every=5, epochs=2)
    store = LocalObjectStore(tmp_path / folder / str(i))
    return Trainer(build_sae(spec), source, cfg, store, spec.input_hook, spec.output_hook, progress=False)


def test_each_member_ends_with_the_weights_it_trains_alone(tmp_path):
    source = _source(tmp_path)
    alone = []
    CountingSource.loads = 0
    for i in range(len(CONFIGS)):
        trainer = _trainer(tmp_path, source, i, "alone")
        trainer.run()
        alone.append(trainer.sae.state_dict())
    separate_loads = CountingSource.loads
    CountingSource.loads = 0
    members = [_trainer(tmp_path, source, i, "sweep") for i in range(len(CONFIGS))]
    summaries = Sweep(members, progress=False).run()
    assert [s.steps for s in summaries] == [36] * 4
    for trainer, weights in zip(members, alone, strict=True):
        for name, tensor in trainer.sae.state_dict().items():
            assert torch.allclose(tensor, weights[name], atol=1e-5, rtol=0), name
    # 3 windows x 2 epochs: read once for the whole sweep (the members' initialisation reads
    # window 0, which the stream then starts from), once per SAE when each trains alone
    assert (CountingSource.loads, separate_loads) == (6, 24)


def test_members_resumed_from_different_steps_catch_up_in_one_stream(tmp_path):
    source = _source(tmp_path)
    straight = [_trainer(tmp_path, source, i, "straight") for i in range(2)]
    Sweep(straight, progress=False).run()
    first = _trainer(tmp_path, source, 0, "resumed")
    first.run(stop_at_step=9)  # checkpoints at 7 and 9
    second = _trainer(tmp_path, source, 1, "resumed")
    second.run(stop_at_step=20)  # checkpoints at 7, 14 and 20
    assert completed_steps(first.store) == [7, 9] and completed_steps(second.store)[-1] == 20
    resumed = [_trainer(tmp_path, source, i, "resumed") for i in range(2)]  # a fresh process
    summaries = Sweep(resumed, progress=False).run()
    assert [s.resumed_from for s in summaries] == [9, 20]
    for a, b in zip(resumed, straight, strict=True):
        for name, tensor in a.sae.state_dict().items():
            assert torch.allclose(tensor, b.sae.state_dict()[name], atol=1e-5, rtol=0), name


def test_a_stop_request_checkpoints_every_member(tmp_path):
    source = _source(tmp_path)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 10  # a few steps in

    members = [_trainer(tmp_path, source, i, "stopped") for i in range(2)]
    for trainer in members:
        trainer.should_stop = stop
    summaries = Sweep(members, progress=False).run()
    assert all(0 < s.steps < 36 for s in summaries)
    assert [completed_steps(t.store)[-1] for t in members] == [s.steps for s in summaries]


def test_a_sweep_shares_one_batch_size(tmp_path):
    source = _source(tmp_path)
    other = _trainer(tmp_path, source, 1, "x")
    other.cfg = TrainConfig(batch_size=50)
    with pytest.raises(ValueError, match="batch_size = 50"):
        Sweep([_trainer(tmp_path, source, 0, "x"), other])


def test_sweep_config_merges_each_member_and_names_bad_fields():
    cfg = parse_config(
        {
            "output": "runs/s",
            "sae": {"d_sae": 64, "k": 8},
            "sweep": [
                {"name": "k4", "sae": {"k": 4}},
                {"name": "relu", "sae": {"architecture": "relu", "l1_coefficient": 2}, "train": {"lr": 3e-4}},
            ],
        },
        RunConfig,
    )
    k4, relu = cfg.for_member(0), cfg.for_member(1)
    assert (k4.output, k4.sae.k, k4.sae.d_sae, k4.train.lr) == ("runs/s/k4", 4, 64, cfg.train.lr)
    assert relu.sae.architecture == "relu" and relu.sae.d_sae == 64 and relu.train.lr == 3e-4
    assert relu.sweep is None and relu.sae.hook_in == cfg.sae.hook_in
    bad = {
        "sweep.0.sae.k: Input should be greater than or equal to 1": [{"name": "a", "sae": {"k": 0}}],
        "sweep.0.sae.k: unknown field; a knob of 'batchtopk', 'topk', not of 'relu'": [
            {"name": "a", "sae": {"architecture": "relu", "k": 3}}
        ],
        "sweep.0.train.batch_size: every member": [{"name": "a", "train": {"batch_size": 3}}],
        "repeat": [{"name": "a"}, {"name": "a"}],
        "sweep.0.name: String should match pattern": [{"name": "../escape"}],
    }
    for message, sweep in bad.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            parse_config({"sweep": sweep}, RunConfig)
    with pytest.raises(ConfigError, match="cannot be combined"):
        parse_config({"sweep": [{"name": "a"}], "transcoders": {"layers": [0]}}, RunConfig)


def test_a_sweeps_memory_estimate_holds_every_members_dictionary():
    from lm_saes.training.memory import estimate_run

    one = parse_config({"sae": {"d_sae": 4608}, "activations": {"path": "x"}}, RunConfig)
    widths = [4608, 4608, 9216]
    sweep = parse_config(
        {
            "sae": {"d_sae": 4608},
            "activations": {"path": "x"},
            "sweep": [{"name": f"m{i}", "sae": {"d_sae": w}} for i, w in enumerate(widths)],
        },
        RunConfig,
    )
    d_in, model = 576, 10**8
    dictionary = (2 * d_in * 4608 + 4608 + d_in) * 16  # fp32 weights, gradients, Adam's two moments
    single = estimate_run(one, d_in, model).memory_bytes
    # four 4608-wide dictionaries' worth (the 9216-wide one counts twice), the widest member's step
    step_growth = one.train.batch_size * (9216 - 4608) * 4 * 3
    assert estimate_run(sweep, d_in, model).memory_bytes == pytest.approx(
        single + 3 * dictionary + step_growth, rel=1e-3
    )


def test_lm_saes_train_runs_a_sweep_and_keeps_finished_members(tmp_path):
    from lm_saes.config import load_config
    from lm_saes.runner import run_train

    cfg = load_config(
        "examples/configuration/train-tiny.toml",
        RunConfig,
        {
            "output": str(tmp_path / "sweep"),
            "data.max_tokens": 3000,
            "data.eval_tokens": 300,
            "sweep": [{"name": "k4", "sae": {"k": 4}}, {"name": "relu", "sae": {"architecture": "relu"}}],
        },
    )
    last = run_train(cfg, progress=False)
    assert last is not None and last.output == str(tmp_path / "sweep" / "relu")
    for name, arch in (("k4", "topk"), ("relu", "relu")):
        folder = tmp_path / "sweep" / name
        assert (folder / "sae" / "sae.json").is_file() and (folder / "eval.json").is_file()
        assert RunConfig.model_validate_json((folder / "config.json").read_text()).sae.architecture == arch
        assert not (folder / "activations").exists()
    assert (tmp_path / "sweep" / "activations" / "manifest.json").is_file()  # one stream, stored once
    before = (tmp_path / "sweep" / "k4" / "sae" / "sae.safetensors").stat().st_mtime_ns
    again = run_train(cfg, progress=False)  # finished members are loaded, not retrained
    assert again is not None
    assert (tmp_path / "sweep" / "k4" / "sae" / "sae.safetensors").stat().st_mtime_ns == before
