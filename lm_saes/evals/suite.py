"""`lm-saes eval --suite ...`: run chosen evaluations and gather them into one report.

Suites:
- core: reconstruction, sparsity, CE loss recovered, KL divergence, density histogram
  (lm_saes.evaluation) on the SAE's held-out tokens;
- universality: this SAE against `--compare` (another seed, width, layer or architecture on the
  same model and tokens): activation correlations and decoder matching;
- absorption: first-letter feature absorption (SAEBench's definition, lm_saes.evals.absorption),
  beside a random dictionary of the same shape;
- probing: sparse probing with the best k latents vs a dense probe on token- and text-level
  tasks built from the shipped text (lm_saes.evals.probing), beside the random dictionary;
- synthetic: every configured architecture trained on synthetic ground truth (no SAE needed).

A report is a pydantic model written as JSON (`evals.json` beside the SAE by default) and stored
with the SAE's record, so the dashboard can compare SAEs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from lm_saes.config import EvalConfig, load_config
from lm_saes.evals.absorption import AbsorptionResult
from lm_saes.evals.ground_truth import SyntheticResult, SyntheticSuiteConfig, run_scenario
from lm_saes.evals.probing import ProbingResult
from lm_saes.evals.universality import ActivationCorrelation, Universality, compare
from lm_saes.evaluation import EvalMetrics
from lm_saes.models import LanguageModel
from lm_saes.saes import SparseAutoencoder

SUITES = ("core", "universality", "absorption", "probing", "synthetic")
MODEL_SUITES = ("core", "universality", "absorption", "probing")  # the ones that need an SAE and its model
REPORT_KEY = "evals.json"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


class EvalReport(BaseModel):
    """Everything one `lm-saes eval --suite` run measured; absent suites stay None."""

    sae: str | None = Field(None, description="Location of the evaluated SAE")
    compared_with: str | None = None
    compared_id: str | None = Field(None, description="The compared SAE's id in the document store, when stored there")
    core: EvalMetrics | None = None
    universality: Universality | None = None
    absorption: AbsorptionResult | None = None  # with its random-dictionary baseline inside
    probing: ProbingResult | None = None
    synthetic: list[SyntheticResult] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict, description="Wall time per suite")


def merge_reports(stored: EvalReport | None, new: EvalReport) -> EvalReport:
    """`new`'s suites over `stored`'s: a suite `new` measured replaces the stored one, the others
    stay, so `--suite core` then `--suite universality` keeps both. The compared SAE goes with the
    universality it was compared in; wall times merge per suite."""
    if stored is None:
        return new
    merged = stored.model_copy(deep=True)
    for name in type(new).model_fields:
        value = getattr(new, name)
        if name == "seconds":
            merged.seconds = {**stored.seconds, **new.seconds}
        elif name in ("compared_with", "compared_id"):
            if new.universality is not None:
                setattr(merged, name, value)
        elif value is not None and value != []:
            setattr(merged, name, value)
    return merged


def parse_suites(text: str) -> list[str]:
    """ "core,synthetic" -> ["core", "synthetic"]; an unknown name is an error naming the known ones."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SUITES]
    if unknown or not names:
        raise ValueError(f"--suite {text!r}: unknown suite {unknown or text!r}; choose from {', '.join(SUITES)}")
    return list(dict.fromkeys(names))


@torch.no_grad()
def correlate(
    sae_a: SparseAutoencoder,
    sae_b: SparseAutoencoder,
    model: LanguageModel,
    contexts: torch.Tensor,
    batch_contexts: int = 8,
    progress: bool = False,
) -> ActivationCorrelation:
    """The activation correlation of two SAEs of one model over the same held-out tokens (BOS
    left out, as in evaluation)."""
    hooks = list(dict.fromkeys([sae_a.spec.input_hook, sae_b.spec.input_hook]))
    corr = ActivationCorrelation(sae_a.d_sae, sae_b.d_sae)
    bos = model.tokenizer.bos_token_id
    for start in tqdm(range(0, len(contexts), batch_contexts), desc="universality", disable=not progress):
        tokens = contexts[start : start + batch_contexts].to(model.device)
        acts = model.activations(tokens, hooks)
        keep = tokens != bos
        corr.update(sae_a.encode(acts[sae_a.spec.input_hook][keep]), sae_b.encode(acts[sae_b.spec.input_hook][keep]))
    return corr


def universality(
    sae_a: SparseAutoencoder,
    sae_b: SparseAutoencoder,
    model: LanguageModel,
    contexts: torch.Tensor,
    batch_contexts: int = 8,
    progress: bool = False,
) -> Universality:
    """Two SAEs of one model over the same held-out tokens: activations and decoders compared."""
    corr = correlate(sae_a, sae_b, model, contexts, batch_contexts, progress)
    return compare(corr, sae_a.W_dec.detach().cpu(), sae_b.W_dec.detach().cpu())


def default_scenarios() -> list[Path]:
    """The scenarios shipped with the package (lm_saes/evals/scenarios/*.toml), by name."""
    return sorted(SCENARIOS.glob("*.toml"))


def run_synthetic(scenario_files: Sequence[str | Path] = (), progress: bool = False) -> list[SyntheticResult]:
    """Every scenario file's SAEs trained and scored, in file order (default: the shipped ones)."""
    results: list[SyntheticResult] = []
    for path in scenario_files or default_scenarios():
        results += run_scenario(load_config(path, SyntheticSuiteConfig), progress=progress)
    return results


def context_budget(contexts: torch.Tensor, cfg: EvalConfig) -> torch.Tensor:
    """The held-out contexts `eval.max_tokens` allows (all of them when unset)."""
    if cfg.max_tokens:
        return contexts[: max(1, -(-cfg.max_tokens // contexts.shape[1]))]
    return contexts
