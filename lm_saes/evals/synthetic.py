"""Activations built from known sparse features, so a dictionary's recovery can be scored.

A scenario fixes N true feature directions in d dimensions (random unit vectors; N > d puts
them in superposition) and how they fire:

- marginal firing probabilities that fall off as a power law (a few common features, a long
  tail of rare ones), scaled so the expected number of active features per token is `mean_l0`;
- correlation: features come in groups whose firing is driven by a shared Gaussian (a
  Gaussian copula), which keeps each feature's marginal probability exact;
- hierarchy: the first `n_parents` features each have `children_per_parent` children that can
  fire only when their parent fires (the setting in which feature absorption appears);
- magnitudes: log-normal, heavy-tailed; isotropic Gaussian noise on top.

Everything is a pure function of the scenario's seed: the directions, and each window of rows
from (seed, window index), so training runs and their evaluation sets are reproducible.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from pydantic import Field

from lm_saes.activations.buffer import ActivationSource, seeded_generator
from lm_saes.activations.store import HookStats
from lm_saes.config import Section

SYNTHETIC_HOOK = "synthetic"
# Generator streams, distinct from one another and from torch.manual_seed(seed) (which a
# dictionary's own initialisation uses: sharing it would make the "random" dictionary the truth).
DIRECTIONS_STREAM = 2_718_281
TRAIN_STREAM = 3_141_592
EVAL_STREAM = 1_618_033


class SyntheticScenario(Section):
    """Ground-truth features and how they fire; a TOML `[scenario]` section."""

    name: str = "default"
    d_model: int = Field(64, ge=2, le=4096)
    n_features: int = Field(512, ge=1, le=65_536, description="True features (> d_model: superposition)")
    mean_l0: float = Field(8.0, gt=0, description="Expected active true features per row")
    zipf_exponent: float = Field(0.5, ge=0, description="Firing probability of feature i ∝ (i + 1)^-exponent")
    correlation: float = Field(0.0, ge=0, lt=1, description="Within-group correlation of the firing Gaussians")
    group_size: int = Field(8, ge=1, description="Features per correlated group")
    n_parents: int = Field(0, ge=0, description="Features that have children (hierarchy)")
    children_per_parent: int = Field(4, ge=1)
    child_given_parent: float = Field(0.25, gt=0, le=1, description="P(child fires | its parent fires)")
    magnitude_sigma: float = Field(0.5, ge=0, description="Log-normal spread of activation magnitudes")
    noise_std: float = Field(0.0, ge=0, description="Isotropic Gaussian noise per dimension")
    tokens: int = Field(2_000_000, ge=1, description="Training rows per epoch")
    eval_tokens: int = Field(50_000, ge=1)
    window_rows: int = Field(32_768, ge=1)
    seed: int = 0


class SyntheticRows(NamedTuple):
    x: torch.Tensor  # [rows, d_model] activations
    codes: torch.Tensor  # [rows, n_features] true feature activations (0 where silent)


class SyntheticFeatures:
    """The true features of a scenario and a sampler of rows from them."""

    def __init__(self, scenario: SyntheticScenario):
        s = self.scenario = scenario
        n_children = s.n_parents * s.children_per_parent
        if s.n_parents + n_children > s.n_features:
            raise ValueError(
                f"scenario.n_parents = {s.n_parents} with {s.children_per_parent} children each needs "
                f"{s.n_parents + n_children} features; raise scenario.n_features or lower n_parents"
            )
        gen = seeded_generator(s.seed, DIRECTIONS_STREAM)
        directions = torch.randn(s.n_features, s.d_model, generator=gen)
        self.directions = directions / directions.norm(dim=1, keepdim=True)
        # parent[i] is the feature i depends on, -1 for free features; children follow the parents
        self.parent = torch.full((s.n_features,), -1, dtype=torch.long)
        for p in range(s.n_parents):
            start = s.n_parents + p * s.children_per_parent
            self.parent[start : start + s.children_per_parent] = p
        free = self.parent < 0
        weights = (torch.arange(s.n_features, dtype=torch.float64) + 1) ** -s.zipf_exponent
        # the expected L0 counts children too: each adds P(parent) * child_given_parent
        expected = weights[free].sum() + s.child_given_parent * weights[: s.n_parents].sum() * s.children_per_parent
        probability = (weights * s.mean_l0 / expected).clamp(max=1.0)
        self.probability = torch.where(free, probability, torch.zeros_like(probability))
        normal = torch.distributions.Normal(0.0, 1.0)
        # a free feature fires when its Gaussian falls below this quantile
        self.threshold = normal.icdf(self.probability.clamp(1e-12, 1 - 1e-12)).float()

    @property
    def marginal_probability(self) -> torch.Tensor:
        """P(fires) per feature, children included."""
        p = self.probability.clone()
        children = self.parent >= 0
        p[children] = self.probability[self.parent[children]] * self.scenario.child_given_parent
        return p

    def sample(self, rows: int, generator: torch.Generator) -> SyntheticRows:
        s = self.scenario
        n = s.n_features
        groups = math.ceil(n / s.group_size)
        shared = torch.randn(rows, groups, generator=generator).repeat_interleave(s.group_size, dim=1)[:, :n]
        own = torch.randn(rows, n, generator=generator)
        gaussian = math.sqrt(s.correlation) * shared + math.sqrt(1 - s.correlation) * own
        fires = gaussian < self.threshold
        children = self.parent >= 0
        if children.any():
            allowed = torch.rand(rows, int(children.sum()), generator=generator) < s.child_given_parent
            fires[:, children] = fires[:, self.parent[children]] & allowed
        magnitude = torch.exp(s.magnitude_sigma * torch.randn(rows, n, generator=generator))
        codes = torch.where(fires, magnitude, torch.zeros_like(magnitude))
        x = codes @ self.directions
        if s.noise_std:
            x = x + s.noise_std * torch.randn(rows, s.d_model, generator=generator)
        return SyntheticRows(x, codes)

    def eval_rows(self) -> SyntheticRows:
        """Held-out rows, from a generator stream no training window uses."""
        return self.sample(self.scenario.eval_tokens, seeded_generator(self.scenario.seed, EVAL_STREAM))


class SyntheticActivations(ActivationSource):
    """Training rows of a scenario at the hook "synthetic", for the ordinary Trainer.

    Every epoch reads the same windows (as stored activations do); the buffer shuffles them.
    """

    def __init__(self, features: SyntheticFeatures, seed: int = 0):
        super().__init__([SYNTHETIC_HOOK], seed)
        self.features = features

    def window_sizes(self, epoch: int) -> list[int]:
        s = self.features.scenario
        full, rest = divmod(s.tokens, s.window_rows)
        return [s.window_rows] * full + ([rest] if rest else [])

    def load_window(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        rows = self.window_sizes(epoch)[index]
        sample = self.features.sample(rows, seeded_generator(self.features.scenario.seed, TRAIN_STREAM, index))
        return {SYNTHETIC_HOOK: sample.x}

    def stats(self) -> dict[str, HookStats]:
        x = self.load_window(0, 0)[SYNTHETIC_HOOK]
        norms = x.norm(dim=1)
        stats = HookStats(d=x.shape[1], mean_norm=float(norms.mean()), rms_norm=float(norms.pow(2).mean().sqrt()))
        return {SYNTHETIC_HOOK: stats}
