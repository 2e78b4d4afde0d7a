"""Activation sources read in shuffled windows, resumable at any token offset.

A source is split into windows (groups of stored shards, or groups of contexts run through the
model on the fly). Each window's rows are permuted by a generator seeded from (seed, epoch,
window), which makes the window a shuffle buffer whose output is a pure function of its
position: training resumes at step s by skipping s * batch_size rows, with no buffer state in
the checkpoint.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import lru_cache

import torch

from lm_saes.activations.generate import iter_model_activations
from lm_saes.activations.store import ActivationManifest, HookStats, NormAccumulator, read_manifest
from lm_saes.models import LanguageModel
from lm_saes.stores import ObjectStore


def seeded_generator(*parts: int) -> torch.Generator:
    """A generator seeded by a tuple of ints (seed, epoch, window, ...): one stream per tuple."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + part) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class ActivationSource(ABC):
    """Rows of activations at one or more aligned hooks, in deterministic shuffled windows."""

    def __init__(self, hooks: list[str], seed: int):
        self.hooks = hooks
        self.seed = seed
        # The last shuffled window, shared with every `with_hooks` view: the members of a sweep
        # and their initialisation read window 0 once, not once each (on the fly, a model pass).
        self._recent: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    @abstractmethod
    def window_sizes(self, epoch: int) -> list[int]:
        """Rows in each window of `epoch`, known without loading the windows."""

    @abstractmethod
    def load_window(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        """Unshuffled rows of one window: {hook: [rows, d]}."""

    @abstractmethod
    def stats(self) -> dict[str, HookStats]:
        """Norm statistics per hook (for dataset-wide input scaling)."""

    def with_hooks(self, hooks: list[str]) -> ActivationSource:
        """The same rows in the same order, restricted to `hooks` (one transcoder of a set)."""
        missing = [h for h in hooks if h not in self.hooks]
        if missing:
            raise ValueError(f"activation source lacks hooks {missing}; it has {self.hooks}")
        view = copy.copy(self)
        view.hooks = list(hooks)
        return view

    @property
    def tokens_per_epoch(self) -> int:
        return sum(self.window_sizes(0))

    def shuffled_window(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        cached = self._recent.get((epoch, index))
        if cached is None or not set(self.hooks) <= cached.keys():
            rows = self.load_window(epoch, index)
            n = next(iter(rows.values())).shape[0]
            order = torch.randperm(n, generator=seeded_generator(self.seed, epoch, index))
            for hook in rows:  # hook by hook, so one unshuffled copy is alive at a time, not all
                rows[hook] = rows[hook][order]
            cached = rows
            self._recent.clear()
            self._recent[(epoch, index)] = cached
        return {hook: cached[hook] for hook in self.hooks}

    def batches(self, batch_size: int, start_row: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches (epochs follow each other), starting `start_row` rows in."""
        epoch_rows = self.tokens_per_epoch
        if epoch_rows == 0:
            raise ValueError("the activation source is empty")
        epoch, offset = divmod(start_row, epoch_rows)
        carry: dict[str, list[torch.Tensor]] = {hook: [] for hook in self.hooks}
        carried = 0
        while True:
            sizes = self.window_sizes(epoch)
            for index, size in enumerate(sizes):
                if offset >= size:
                    offset -= size
                    continue
                window = self.shuffled_window(epoch, index)
                start = offset
                offset = 0
                while start < size:
                    take = min(batch_size - carried, size - start)
                    for hook in self.hooks:
                        carry[hook].append(window[hook][start : start + take])
                    carried += take
                    start += take
                    if carried == batch_size:
                        yield {hook: torch.cat(parts) for hook, parts in carry.items()}
                        carry = {hook: [] for hook in self.hooks}
                        carried = 0
            epoch += 1


class StoredActivations(ActivationSource):
    """Shards written by `generate_activations`; windows are groups of shards."""

    def __init__(self, store: ObjectStore, hooks: list[str], seed: int = 0, buffer_tokens: int = 131_072):
        manifest = read_manifest(store)
        if manifest is None:
            raise FileNotFoundError(f"no activation manifest at {store.uri}; generate activations first")
        missing = [h for h in hooks if h not in manifest.hooks]
        if missing:
            raise ValueError(f"activations at {store.uri} lack hooks {missing}; they have {list(manifest.hooks)}")
        super().__init__(hooks, seed)
        self.store = store
        self.manifest: ActivationManifest = manifest
        self.buffer_tokens = buffer_tokens

    @lru_cache(maxsize=8)  # noqa: B019 - a handful of epochs per source
    def _windows(self, epoch: int) -> list[list[int]]:
        shards = self.manifest.shards
        order = torch.randperm(len(shards), generator=seeded_generator(self.seed, epoch, -1)).tolist()
        windows, current, tokens = [], [], 0
        for shard in order:
            current.append(shard)
            tokens += shards[shard].n_tokens
            if tokens >= self.buffer_tokens:
                windows.append(current)
                current, tokens = [], 0
        if current:
            windows.append(current)
        return windows

    def window_sizes(self, epoch: int) -> list[int]:
        return [sum(self.manifest.shards[s].n_tokens for s in w) for w in self._windows(epoch)]

    def load_window(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        parts = [self.store.get_tensors(self.manifest.shards[s].key) for s in self._windows(epoch)[index]]
        return {hook: torch.cat([p[hook] for p in parts]).float() for hook in self.hooks}

    def stats(self) -> dict[str, HookStats]:
        return {hook: self.manifest.hooks[hook] for hook in self.hooks}


class OnTheFlyActivations(ActivationSource):
    """Activations computed by the model as training consumes them; nothing is saved."""

    def __init__(
        self,
        model: LanguageModel,
        contexts: torch.Tensor,
        hooks: list[str],
        seed: int = 0,
        buffer_tokens: int = 131_072,
        batch_contexts: int = 16,
    ):
        super().__init__(hooks, seed)
        model.check_hooks(hooks)
        self.model = model
        self.contexts = contexts
        self.batch_contexts = batch_contexts
        per_window = max(1, buffer_tokens // contexts.shape[1])
        bos = model.tokenizer.bos_token_id
        self.groups = [contexts[i : i + per_window] for i in range(0, len(contexts), per_window)]
        self.sizes = [int((g != bos).sum()) for g in self.groups]
        self._stats: dict[str, HookStats] | None = None

    def window_sizes(self, epoch: int) -> list[int]:
        return self.sizes

    def load_window(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        chunks = list(iter_model_activations(self.model, self.groups[index], self.hooks, self.batch_contexts))
        return {hook: torch.cat([c[hook] for c in chunks]).float().cpu() for hook in self.hooks}

    def stats(self) -> dict[str, HookStats]:
        """Estimated on the first window (enough tokens for a stable mean norm)."""
        if self._stats is None:
            window = self.shuffled_window(0, 0)  # the order does not change a norm; training reads it next
            accumulators = {hook: NormAccumulator() for hook in self.hooks}
            for hook, acc in accumulators.items():
                acc.add(window[hook])
            self._stats = {hook: acc.stats(window[hook].shape[1]) for hook, acc in accumulators.items()}
        return self._stats
