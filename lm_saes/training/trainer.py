"""The SAE training loop: Adam, LR warmup/decay, dead-latent tracking, checkpoints, metrics.

Resuming from a checkpoint gives the same final weights as an uninterrupted run: the data
order is a pure function of the step (see `activations.buffer`), and the checkpoint holds the
SAE, the optimizer, and the dead-latent counters.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from lm_saes.activations.buffer import ActivationSource
from lm_saes.config import TrainConfig
from lm_saes.saes.base import ForwardOutput, TrainStepInfo
from lm_saes.saes.crosslayer import Dictionary
from lm_saes.stores import ObjectStore
from lm_saes.training.checkpoint import (
    finish_checkpoint,
    latest_checkpoint,
    load_checkpoint_weights,
    prune_checkpoints,
    save_checkpoint,
    save_checkpoint_shard,
    trainer_state_key,
)
from lm_saes.training.distributed import Distributed
from lm_saes.training.metrics_log import MetricsLog


def lr_factor(step: int, total: int, warmup: int, decay_fraction: float) -> float:
    """Linear warmup, constant, then linear decay to zero over the last `decay_fraction`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    decay_steps = int(total * decay_fraction)
    decay_start = total - decay_steps
    if decay_steps and step >= decay_start:
        return max(0.0, (total - step) / decay_steps)
    return 1.0


def explained_variance(recon: torch.Tensor, target: torch.Tensor) -> float:
    """1 - SSE/SST with SST taken around the batch mean."""
    sse = (recon - target).pow(2).sum()
    sst = (target - target.mean(0)).pow(2).sum()
    return float(1 - sse / sst.clamp_min(1e-12))


@dataclass
class TrainSummary:
    steps: int
    tokens: int
    seconds: float
    resumed_from: int
    last_metrics: dict[str, float]


class Trainer:
    def __init__(
        self,
        sae: Dictionary,
        source: ActivationSource,
        cfg: TrainConfig,
        store: ObjectStore,
        hook_in: str | list[str],
        hook_out: str | list[str],
        progress: bool = True,
        on_log: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        distributed: Distributed | None = None,
    ):
        """`on_log` receives each metrics record; `should_stop` is polled every step (a job's
        shutdown or cancel): when it turns true the trainer checkpoints and returns early.
        `hook_in`/`hook_out` name one hook each, or (a cross-layer transcoder) one hook per
        covered layer, whose rows are stacked into [batch, layers, d]."""
        self.sae = sae
        self.source = source
        self.cfg = cfg
        self.store = store
        self.hook_in = hook_in
        self.hook_out = hook_out
        self.progress = progress
        self.on_log = on_log
        self.should_stop = should_stop
        self.dist = distributed or Distributed()
        if cfg.batch_size % self.dist.dp_world:
            raise ValueError(
                f"train.batch_size = {cfg.batch_size} must divide evenly over {self.dist.dp_world} data-parallel ranks"
            )
        if sae.shard.count != self.dist.feature_shards:
            raise ValueError(
                f"the SAE is split in {sae.shard.count} feature shards but the run has "
                f"train.feature_shards = {self.dist.feature_shards}; build it with shard_sae(sae, dist.feature_shard())"
            )
        self.total_steps = source.tokens_per_epoch * cfg.epochs // cfg.batch_size
        if self.total_steps < 1:
            raise ValueError(
                f"train.batch_size = {cfg.batch_size} exceeds the {source.tokens_per_epoch} training "
                "tokens; lower it or raise data.max_tokens"
            )
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.adam_betas)
        self.silent_tokens = torch.zeros(sae.local_d_sae, dtype=torch.long)  # this shard's latents
        self.step = 0
        self.log = MetricsLog(store)

    # --- set-up ------------------------------------------------------------------------
    def initialize(self) -> None:
        """Dataset-wide input scaling and b_dec from data; or the latest checkpoint's state."""
        checkpoint = latest_checkpoint(self.store)
        if checkpoint is not None:
            self._restore(checkpoint)
            return
        if self.dist.is_main:
            self.log.start()
        in_scale, out_scale = self._scales(self.hook_in), self._scales(self.hook_out)
        self.sae.set_scales(in_scale, out_scale)  # type: ignore[arg-type]  # lists for a CLT
        first = next(self.source.batches(min(self.cfg.batch_size, 4096)))
        self.sae.initialize_from_data(self.rows(first, self.hook_in), self.rows(first, self.hook_out))

    def _scales(self, hooks: str | list[str]) -> float | list[float]:
        """sqrt(d) / mean norm of each hook (1 without `normalize_input`), per hook for a list."""
        stats = self.source.stats()

        def scale(hook: str) -> float:
            return math.sqrt(stats[hook].d) / stats[hook].mean_norm if self.sae.spec.normalize_input else 1.0

        return scale(hooks) if isinstance(hooks, str) else [scale(hook) for hook in hooks]

    @staticmethod
    def rows(batch: dict[str, torch.Tensor], hooks: str | list[str]) -> torch.Tensor:
        """The batch's rows of one hook, or of several stacked along dim 1."""
        return batch[hooks] if isinstance(hooks, str) else torch.stack([batch[hook] for hook in hooks], 1)

    @property
    def hooks(self) -> list[str]:
        """Every hook a batch for this trainer must hold."""
        return [h for hooks in (self.hook_in, self.hook_out) for h in ([hooks] if isinstance(hooks, str) else hooks)]

    def _restore(self, prefix: str) -> None:
        saved = self.sae.parse_saved_spec(self.store.get_json(f"{prefix}/sae.json"))
        ignore = {"input_scale", "output_scale", "seed", "device"}
        ours, theirs = self.sae.spec.model_dump(exclude=ignore), saved.model_dump(exclude=ignore)
        changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        if changed:
            raise ValueError(
                f"{self.store.uri} holds checkpoints of a different SAE (sae.{', sae.'.join(changed)} "
                "differ); use a new output folder or delete its checkpoints/ to start over"
            )
        state = torch.load(io.BytesIO(self.store.get_bytes(trainer_state_key(prefix, self.sae))), weights_only=False)
        self.sae.load_state_dict(load_checkpoint_weights(self.store, prefix, self.sae))
        self.sae.spec = saved
        self.optimizer.load_state_dict(state["optimizer"])
        self.silent_tokens = state["silent_tokens"]
        self.step = state["step"]
        if self.dist.is_main:
            self.log.resume(self.step)

    # --- loop --------------------------------------------------------------------------
    def run(self, stop_at_step: int | None = None) -> TrainSummary:
        """Train to the end (or to `stop_at_step`, checkpointing there, as an interruption would)."""
        self.begin(stop_at_step)
        batches = self.source.batches(self.cfg.batch_size, start_row=self.step * self.cfg.batch_size)
        with tqdm(
            total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not self.progress
        ) as bar:
            while self.wants_more():
                last = self.feed(next(batches))
                if last:
                    bar.set_postfix(
                        loss=f"{last['loss']:.3g}", l0=f"{last['l0']:.1f}", ev=f"{last['explained_variance']:.3f}"
                    )
                bar.update(1)
        return self.finish()

    # The loop in three parts, so that a sweep (lm_saes.training.sweep) can feed one stream of
    # batches to several trainers and get, for each, exactly what `run` alone would have done.
    def begin(self, stop_at_step: int | None = None) -> None:
        """Initialize (or restore) and fix the step this run stops at."""
        self.initialize()
        self.last_step = min(stop_at_step or self.total_steps, self.total_steps)
        self.resumed_from = self.step
        self.started = time.perf_counter()
        self.last_record: dict[str, float] = {}
        self.sae.train()

    def wants_more(self) -> bool:
        """Whether another batch should be fed: steps remain and no rank was asked to stop."""
        return self.step < self.last_step and not self.dist.anyone(bool(self.should_stop and self.should_stop()))

    def feed(self, batch: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """One step on `batch` (the source's batch at this step); the metrics record when logged."""
        device = self.sae.W_enc.device
        x = self.dist.local_rows(self.rows(batch, self.hook_in)).to(device, non_blocking=True)
        y = self.dist.local_rows(self.rows(batch, self.hook_out)).to(device, non_blocking=True)
        out, info = self.train_step(x, y)
        record = None
        if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
            record = self.last_record = self._log(out, y, info)
        if self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0 and self.step < self.total_steps:
            self.checkpoint()
        return record

    def finish(self) -> TrainSummary:
        """Checkpoint an unfinished run, close the log, and summarize."""
        if self.step < self.total_steps:
            self.checkpoint()
        if self.dist.is_main:
            self.log.close()
        self.sae.eval()
        seconds = time.perf_counter() - self.started
        return TrainSummary(self.step, self.step * self.cfg.batch_size, seconds, self.resumed_from, self.last_record)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[ForwardOutput, TrainStepInfo]:
        """One whole optimizer step on this rank's rows: the schedule's learning rate, the dead
        set, the SAE's loss (aux-k on the dead), gradients averaged over ranks, Adam, decoder
        renormalized, and the firing statistics updated. What `run` does per batch."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(self.step, self.total_steps, cfg.lr_warmup_steps, cfg.lr_decay_fraction)
        info = TrainStepInfo(
            step=self.step,
            dead_mask=(self.silent_tokens >= cfg.dead_after_tokens).to(x.device),
            sparsity_warmup=min(1.0, (self.step + 1) / cfg.l1_warmup_steps) if cfg.l1_warmup_steps else 1.0,
        )
        out = self.sae.training_forward(x, y, info)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.dist.average_gradients(self.sae.parameters())
        self.sae.remove_parallel_decoder_grad()
        self.optimizer.step()
        self.sae.normalize_decoder()
        fired = self.dist.any(out.fired).cpu()
        self.sync_buffers()
        self.silent_tokens += cfg.batch_size
        self.silent_tokens[fired] = 0
        self.step += 1
        return out, info

    def _log(self, out, target: torch.Tensor, info: TrainStepInfo) -> dict[str, float]:
        _, target_scaled = self.sae.scaled(target, target)
        if info.dead_mask is None:
            raise ValueError("a logged step needs its dead_mask (the trainer always sets one)")
        record = {
            "step": self.step,
            "tokens": self.step * self.cfg.batch_size,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": float(out.loss.detach()),
            "l0": float(out.l0),
            "explained_variance": explained_variance(out.recon.detach(), target_scaled),
            "dead_fraction": self._dead_fraction(info.dead_mask),
            **{k: float(v) for k, v in out.losses.items()},
        }
        record["total_steps"] = self.total_steps
        if not self.dist.is_main:
            return record
        if self.on_log:
            self.on_log(record)
        self.log.append(record)
        return record

    def _dead_fraction(self, dead: torch.Tensor) -> float:
        if not self.sae.shard.sharded:
            return float(dead.float().mean())
        return float(self.sae.shard.total(dead.sum())) / self.sae.d_sae

    def sync_buffers(self) -> None:
        """Statistics some architectures keep (BatchTopK's threshold) averaged over ranks."""
        if self.dist.enabled:
            for name, buffer in self.sae.named_buffers():
                if name not in ("input_scale", "output_scale"):
                    self.dist.mean_(buffer)

    def checkpoint(self) -> str | None:
        """Rank 0 writes (with feature shards, each shard of data-parallel rank 0 writes its part
        and rank 0 marks it done); the others wait, so nobody races ahead of a half-written
        checkpoint."""
        state = {"optimizer": self.optimizer.state_dict(), "silent_tokens": self.silent_tokens, "step": self.step}
        if self.sae.shard.sharded:
            return self._sharded_checkpoint(state)
        if not self.dist.is_main:
            self.dist.barrier()
            return None
        self.log.flush()  # the log reaches the store with (before) the checkpoint it goes with
        prefix = save_checkpoint(self.store, self.step, self.sae, state)
        prune_checkpoints(self.store, keep=2)
        self.dist.barrier()
        return prefix

    def _sharded_checkpoint(self, state: dict) -> str | None:
        if self.dist.dp_rank == 0:
            save_checkpoint_shard(self.store, self.step, self.sae, state)
        self.dist.barrier()  # every shard is written before rank 0 marks the checkpoint done
        prefix = None
        if self.dist.is_main:
            self.log.flush()
            prefix = finish_checkpoint(self.store, self.step, self.sae)
            prune_checkpoints(self.store, keep=2)
        self.dist.barrier()
        return prefix
