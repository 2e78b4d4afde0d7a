"""How well a learned dictionary recovers known features (synthetic ground truth).

- MMCS, mean max cosine similarity: for each true direction, the best cosine with any decoder
  row, averaged over the true features (Sharkey et al.; SynthSAEBench). 1 means every true
  direction has an exact copy in the dictionary.
- MCC, mean correlation coefficient: true and learned features are paired one to one by the
  Hungarian algorithm on the Pearson correlation of their activations over the same rows; MCC
  is the mean correlation of the pairs, over all true features (an unpaired one counts 0, so a
  dictionary smaller than the truth cannot score 1).
- F1: for each pair, how well "the learned latent fires" predicts "the true feature fires"
  (precision and recall over rows); the mean over true features, unpaired ones 0.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel

from lm_saes.extras import require


class Recovery(BaseModel):
    mmcs: float
    mcc: float
    f1: float
    recovered_fraction: float  # true features with a decoder row at cosine >= 0.9
    precision: float
    recall: float


def max_cosines(learned: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """[n_true]: each true direction's best cosine with a learned one (rows are directions)."""
    a = truth.double() / truth.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = learned.double() / learned.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (a @ b.T).max(dim=1).values


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[a_cols, b_cols] correlations of the columns of a [rows, n] and b [rows, m]; 0 where either is constant."""
    a, b = a.double(), b.double()
    a = a - a.mean(0)
    b = b - b.mean(0)
    norms = a.norm(dim=0)[:, None] * b.norm(dim=0)[None, :]
    return torch.where(norms > 0, (a.T @ b) / norms.clamp_min(1e-300), torch.zeros_like(norms))


def match(similarity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one pairs (rows, cols) maximising the summed similarity (Hungarian algorithm)."""
    optimize = require("scipy.optimize", "evals", "matching features one to one")
    rows, cols = optimize.linear_sum_assignment(similarity.cpu().numpy(), maximize=True)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def recovery(
    learned_directions: torch.Tensor,
    learned_codes: torch.Tensor,
    true_directions: torch.Tensor,
    true_codes: torch.Tensor,
) -> Recovery:
    """Scores of a dictionary (decoder rows [m, d], activations [rows, m]) against the truth."""
    n_true = true_directions.shape[0]
    cosines = max_cosines(learned_directions, true_directions)
    correlation = pearson(true_codes, learned_codes)
    rows, cols = match(correlation)
    true_fires, learned_fires = true_codes > 0, learned_codes > 0
    both = (true_fires[:, rows] & learned_fires[:, cols]).sum(0).double()
    precision = both / learned_fires[:, cols].sum(0).double().clamp_min(1)
    recall = both / true_fires[:, rows].sum(0).double().clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return Recovery(
        mmcs=float(cosines.mean()),
        mcc=float(correlation[rows, cols].sum() / n_true),
        f1=float(f1.sum() / n_true),
        recovered_fraction=float((cosines >= 0.9).double().mean()),
        precision=float(precision.sum() / n_true),
        recall=float(recall.sum() / n_true),
    )
