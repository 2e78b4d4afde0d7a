"""Train every configured architecture on a synthetic scenario and score what it recovered.

Each SAE is trained by the ordinary Trainer on `SyntheticActivations`, then encoded over the
scenario's held-out rows and scored against the true features (lm_saes.evals.recovery). Beside
each trained SAE the same SAE at initialisation (data-scaled, never stepped) is scored as the
random-dictionary baseline, so every figure has its chance level next to it.
"""

from __future__ import annotations

import tempfile
import time

import torch
from pydantic import BaseModel, Field

from lm_saes.config import SAEConfig, SAEConfigBase, Section, TrainConfig
from lm_saes.evals.recovery import Recovery, recovery
from lm_saes.evals.synthetic import SYNTHETIC_HOOK, SyntheticActivations, SyntheticFeatures, SyntheticScenario
from lm_saes.saes import SparseAutoencoder, TopKConfig, build_sae, make_spec
from lm_saes.stores import LocalObjectStore
from lm_saes.training import Trainer
from lm_saes.training.trainer import explained_variance


class SyntheticSuiteConfig(Section):
    """One scenario and the SAEs to train on it (TOML: `[scenario]`, `[train]`, `[[saes]]`)."""

    scenario: SyntheticScenario = Field(default_factory=SyntheticScenario)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=1e-3, lr_warmup_steps=20, log_every=50))
    saes: list[SAEConfig] = Field(
        default_factory=lambda: list[SAEConfigBase]([TopKConfig(d_sae=512, k=8)]),
        min_length=1,
        max_length=16,
    )


class SyntheticResult(BaseModel):
    scenario: str
    architecture: str
    d_sae: int
    l0: float  # mean active latents per held-out row
    true_l0: float  # mean active true features per held-out row
    explained_variance: float
    trained: Recovery
    random: Recovery  # the same SAE before training
    train_seconds: float
    train_tokens: int


@torch.no_grad()
def score(sae: SparseAutoencoder, features: SyntheticFeatures, x: torch.Tensor, codes: torch.Tensor) -> Recovery:
    return recovery(sae.W_dec.detach(), sae.encode(x), features.directions, codes)


def run_scenario(cfg: SyntheticSuiteConfig, progress: bool = False) -> list[SyntheticResult]:
    """Every SAE of `cfg` trained on its scenario; deterministic by the scenario's and SAEs' seeds."""
    features = SyntheticFeatures(cfg.scenario)
    held_out = features.eval_rows()
    results = []
    for sae_config in cfg.saes:
        sae_config = sae_config.model_copy(update={"hook_in": SYNTHETIC_HOOK, "hook_out": SYNTHETIC_HOOK})
        spec = make_spec(sae_config, d_in=cfg.scenario.d_model, d_out=cfg.scenario.d_model)
        sae = build_sae(spec)
        source = SyntheticActivations(features, seed=cfg.train.seed)
        with tempfile.TemporaryDirectory(prefix="lm-saes-synthetic-") as folder:
            trainer = Trainer(
                sae, source, cfg.train, LocalObjectStore(folder), SYNTHETIC_HOOK, SYNTHETIC_HOOK, progress
            )
            trainer.initialize()
            sae.eval()
            random = score(sae, features, held_out.x, held_out.codes)
            sae.train()
            started = time.perf_counter()
            summary = trainer.run()
            seconds = time.perf_counter() - started
        sae.eval()
        with torch.no_grad():
            acts = sae.encode(held_out.x)
            recon = sae.decode(acts)
        results.append(
            SyntheticResult(
                scenario=cfg.scenario.name,
                architecture=spec.architecture,
                d_sae=spec.d_sae,
                l0=float((acts > 0).sum(1).double().mean()),
                true_l0=float((held_out.codes > 0).sum(1).double().mean()),
                explained_variance=explained_variance(recon.double(), held_out.x.double()),
                trained=recovery(sae.W_dec.detach(), acts, features.directions, held_out.codes),
                random=random,
                train_seconds=seconds,
                train_tokens=summary.tokens,
            )
        )
    return results
