import math

import torch

from lm_saes.activations import ShardWriter, StoredActivations
from lm_saes.config import EvalConfig, TrainConfig
from lm_saes.evaluation import evaluate
from lm_saes.saes import TopKConfig, build_sae, make_spec
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer, lr_factor
from lm_saes.training.checkpoint import completed_steps
from lm_saes.training.metrics_log import METRICS_KEY, read_metrics


def _source(tmp_path, n=2000, d=16):
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(50, d, generator=g)
    codes = torch.rand(n, 50, generator=g) * (torch.rand(n, 50, generator=g) < 0.1)
    store = LocalObjectStore(tmp_path / "acts")
    writer = ShardWriter(store, "m", 8, shard_tokens=300)
    writer.add({"h": 10 * codes @ atoms})
    writer.close()
    return StoredActivations(store, ["h"], seed=0, buffer_tokens=600)


def _trainer(tmp_path, source, out="run"):
    spec = make_spec(TopKConfig(hook_in="h", hook_out="h", d_sae=64, k=4), d_in=16, d_out=16)
    cfg = TrainConfig(
        batch_size=100, lr=3e-3, lr_warmup_steps=3, checkpoint_every=7, log_every=5, dead_after_tokens=300, epochs=2
    )
    return Trainer(build_sae(spec), source, cfg, LocalObjectStore(tmp_path / out), "h", "h", progress=False)


def test_lr_schedule_warms_up_and_decays_to_zero():
    factors = [lr_factor(s, 100, 10, 0.2) for s in range(100)]
    assert factors[0] == 0.1 and factors[9] == 1.0 and factors[50] == 1.0
    assert factors[80] == 1.0 and math.isclose(factors[99], 0.05)


def test_training_learns_scales_input_and_logs(tmp_path):
    source = _source(tmp_path)
    trainer = _trainer(tmp_path, source)
    summary = trainer.run()
    assert summary.steps == 40 and summary.tokens == 4000
    mean_norm = source.stats()["h"].mean_norm
    assert math.isclose(float(trainer.sae.input_scale), 4.0 / mean_norm, rel_tol=1e-6)
    log = read_metrics(trainer.store)
    assert log[-1]["explained_variance"] > 0.6 > log[0]["explained_variance"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == len(log) == 8


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    source = _source(tmp_path)
    straight = _trainer(tmp_path, source, "straight")
    straight.run()
    interrupted = _trainer(tmp_path, source, "resumed")
    interrupted.run(stop_at_step=17)  # dies after step 17 (checkpoints at 7, 14 and on stop)
    assert completed_steps(interrupted.store) == [14, 17]
    resumed = _trainer(tmp_path, source, "resumed")  # a fresh process: new objects
    summary = resumed.run()
    assert summary.resumed_from == 17
    for name, value in straight.sae.state_dict().items():
        torch.testing.assert_close(resumed.sae.state_dict()[name], value, rtol=0, atol=1e-6)
    assert [m["step"] for m in read_metrics(resumed.store)] == [m["step"] for m in read_metrics(straight.store)]


class CountingStore(LocalObjectStore):
    """A local folder that records every whole-object write and append of the training log."""

    def __init__(self, root, can_append=True):
        super().__init__(root)
        self.can_append, self.writes, self.appends = can_append, [], 0

    def put_bytes(self, key, data):
        self.writes.append(key)
        super().put_bytes(key, data)

    def append_bytes(self, key, data):
        self.appends += 1
        super().append_bytes(key, data)


def _counted(tmp_path, source, out, can_append):
    trainer = _trainer(tmp_path, source, out)
    trainer.store = trainer.log.store = CountingStore(tmp_path / out, can_append)
    trainer.log.appends = can_append
    return trainer


def test_the_log_is_appended_not_rewritten(tmp_path):
    """On a folder each record is one append; where stores cannot append, one segment per
    checkpoint and one join at the end: never a rewrite per log step (quadratic on S3)."""
    source = _source(tmp_path)
    local = _counted(tmp_path, source, "local", can_append=True)
    local.run()
    assert local.store.appends == 8 and METRICS_KEY not in local.store.writes
    remote = _counted(tmp_path, source, "remote", can_append=False)
    remote.run()
    segments = [k for k in remote.store.writes if k.startswith("metrics.d/")]
    assert len(segments) == 6 and remote.store.writes.count(METRICS_KEY) == 1  # 5 checkpoints, the end, one join
    assert read_metrics(remote.store) == read_metrics(local.store) and not remote.store.list("metrics.d")
    # an interrupted remote run leaves its segments; the resumed one keeps what its checkpoint had seen
    first = _counted(tmp_path, source, "cut", can_append=False)
    first.run(stop_at_step=17)
    assert [m["step"] for m in read_metrics(first.store)] == [5, 10, 15]
    resumed = _counted(tmp_path, source, "cut", can_append=False)
    assert resumed.run().resumed_from == 17
    assert [m["step"] for m in read_metrics(resumed.store)] == [m["step"] for m in read_metrics(local.store)]


def test_dead_latents_get_aux_loss(tmp_path):
    trainer = _trainer(tmp_path, _source(tmp_path))
    trainer.cfg.log_every = 1
    trainer.silent_tokens[:20] = 10_000  # 20 latents silent for long: dead at the first step
    trainer.run(stop_at_step=3)
    log = read_metrics(trainer.store)
    assert log[0]["aux_k"] > 0 and log[0]["dead_fraction"] > 0
    alive = _trainer(tmp_path, _source(tmp_path), out="alive")  # no latent silent long enough to be dead
    alive.cfg.log_every, alive.cfg.dead_after_tokens = 1, 10**9
    alive.run(stop_at_step=3)
    log = read_metrics(alive.store)
    assert len(log) == 3 and all(m["dead_fraction"] == 0 and "aux_k" not in m for m in log)


def test_evaluate_matches_brute_force(tiny_model, tiny_contexts):
    hook = "blocks.0.hook_resid_post"
    spec = make_spec(TopKConfig(hook_in=hook, hook_out=hook, d_sae=64, k=6, seed=1), d_in=32, d_out=32)
    sae = build_sae(spec).eval()
    sae.set_scales(0.2, 0.2)
    metrics = evaluate(sae, tiny_model, tiny_contexts, EvalConfig(batch_contexts=5), progress=False)
    bos = tiny_model.tokenizer.bos_token_id
    keep = tiny_contexts != bos
    clean, acts = tiny_model.loss_per_token(tiny_contexts, capture=[hook])
    x = acts[hook][keep].double()
    recon = sae(acts[hook][keep]).double()
    ev = 1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert math.isclose(metrics.explained_variance, float(ev), rel_tol=1e-5)
    assert metrics.tokens == int(keep.sum()) and metrics.l0 <= 6

    def splice(value):
        out = value.clone()
        out[keep] = sae(value[keep])
        return out

    def zero(value):
        out = value.clone()
        out[keep] = 0
        return out

    with_sae, _ = tiny_model.loss_per_token(tiny_contexts, replace={hook: splice})
    zeroed, _ = tiny_model.loss_per_token(tiny_contexts, replace={hook: zero})
    c, s, z = float(clean.mean()), float(with_sae.mean()), float(zeroed.mean())
    assert math.isclose(metrics.ce_loss_clean, c, rel_tol=1e-5)
    assert math.isclose(metrics.ce_loss_recovered, (z - s) / (z - c), rel_tol=1e-4)
    assert math.isclose(metrics.delta_lm_loss, s - c, rel_tol=1e-4, abs_tol=1e-6)
