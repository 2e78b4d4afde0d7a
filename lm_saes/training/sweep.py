"""Several SAEs trained from one activation stream (a sweep of widths, k, architectures,
learning rates, or one SAE per hook).

Every member is an ordinary `Trainer` with its own SAE, optimizer, checkpoints and metrics log;
the sweep reads each batch once and feeds it to every member whose step it is. Because a
source's batch at step s is a pure function of s (lm_saes.activations.buffer), each member ends
with exactly the weights it would have trained alone with the same seed, and members resumed
from different checkpoints catch up in one stream: the stream starts at the earliest member's
step and a member joins when the stream reaches its own.
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from lm_saes.training.trainer import Trainer, TrainSummary


class Sweep:
    def __init__(self, trainers: list[Trainer], progress: bool = True):
        if not trainers:
            raise ValueError("a sweep needs at least one member")
        source, batch_size = trainers[0].source, trainers[0].cfg.batch_size
        for i, trainer in enumerate(trainers):
            if trainer.source.seed != source.seed or trainer.source.tokens_per_epoch != source.tokens_per_epoch:
                raise ValueError(f"sweep member {i} reads a different activation stream; a sweep shares one")
            if trainer.cfg.batch_size != batch_size:
                raise ValueError(
                    f"sweep member {i}: train.batch_size = {trainer.cfg.batch_size}, but the stream's batches are "
                    f"{batch_size} rows; every member of a sweep trains on the same batches"
                )
        self.trainers = trainers
        self.source = source
        self.batch_size = batch_size
        self.progress = progress

    def run(self, stop_at_step: int | None = None) -> list[TrainSummary]:
        """Train every member to its end (or to `stop_at_step`); summaries in member order."""
        for trainer in self.trainers:
            trainer.begin(stop_at_step)
        step = min(trainer.step for trainer in self.trainers)
        end = max(trainer.last_step for trainer in self.trainers)
        hooks = sorted({h for t in self.trainers for h in t.hooks})
        batches = self.source.with_hooks(hooks).batches(self.batch_size, start_row=step * self.batch_size)
        started = time.perf_counter()
        with tqdm(total=end, initial=step, desc="sweep", unit="step", disable=not self.progress) as bar:
            while step < end:
                due = [t for t in self.trainers if t.step == step and t.wants_more()]
                if not due and all(not t.wants_more() for t in self.trainers):
                    break  # every member finished or was asked to stop
                batch = next(batches)
                for trainer in due:
                    trainer.feed(batch)
                step += 1
                bar.update(1)
        summaries = [trainer.finish() for trainer in self.trainers]
        self.seconds = time.perf_counter() - started
        return summaries
