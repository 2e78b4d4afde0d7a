"""Do two dictionaries find the same features? (seeds, widths, layers, architectures, models)

The measure of the seed's universality work: for each feature of A, the maximum Pearson
correlation of its activations with any feature of B over the same tokens; a feature "has a
partner" when that maximum is at least 0.7. Beside it, the weight-space view: each decoder
row's best cosine in the other dictionary, and the mean cosine of a one-to-one (Hungarian)
matching. Correlations stream: `ActivationCorrelation` keeps float64 sums and the [m_a, m_b]
cross-product, so any number of tokens fits in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel

from lm_saes.evals.recovery import match

PARTNER_THRESHOLD = 0.7


class Neighbour(BaseModel):
    """Feature `partner` (of the other SAE, or of the same one) is among `feature`'s most similar."""

    feature: int
    partner: int
    similarity: float  # activation correlation across SAEs; decoder cosine within one


class Universality(BaseModel):
    tokens: int
    features_a: int
    features_b: int
    alive_a: int  # features of A that fired on these tokens (the others have no correlation)
    alive_b: int
    mean_max_correlation: float  # over A's alive features
    partner_fraction: float  # A's alive features with a partner in B at >= 0.7
    mean_max_correlation_b: float  # the same from B's side
    partner_fraction_b: float
    decoder_mean_max_cosine: float  # over A's decoder rows
    decoder_matched_cosine: float  # one-to-one Hungarian matching of decoder rows


class ActivationCorrelation:
    """Streaming Pearson correlation between the columns of two activation matrices."""

    def __init__(self, m_a: int, m_b: int):
        self.n = 0
        self.sum_a = torch.zeros(m_a, dtype=torch.float64)
        self.sum_b = torch.zeros(m_b, dtype=torch.float64)
        self.sq_a = torch.zeros(m_a, dtype=torch.float64)
        self.sq_b = torch.zeros(m_b, dtype=torch.float64)
        self.cross = torch.zeros(m_a, m_b, dtype=torch.float64)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Rows of a [tokens, m_a] and b [tokens, m_b] are the same tokens."""
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"activations of {a.shape[0]} and {b.shape[0]} tokens: they must be the same tokens")
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        self.n += a.shape[0]
        self.sum_a += a.sum(0)
        self.sum_b += b.sum(0)
        self.sq_a += a.pow(2).sum(0)
        self.sq_b += b.pow(2).sum(0)
        self.cross += a.T @ b

    def correlation(self) -> torch.Tensor:
        """[m_a, m_b]; 0 where a feature never varied (dead on these tokens)."""
        n = max(self.n, 1)
        cov = self.cross / n - torch.outer(self.sum_a / n, self.sum_b / n)
        std_a = (self.sq_a / n - (self.sum_a / n).pow(2)).clamp_min(0).sqrt()
        std_b = (self.sq_b / n - (self.sum_b / n).pow(2)).clamp_min(0).sqrt()
        denominator = torch.outer(std_a, std_b)
        return torch.where(denominator > 1e-12, cov / denominator.clamp_min(1e-12), torch.zeros_like(cov))

    def alive(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sq_a > 0, self.sq_b > 0


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.double() / a.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b.double() / b.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    return a @ b.T


def compare(corr: ActivationCorrelation, decoder_a: torch.Tensor, decoder_b: torch.Tensor) -> Universality:
    """The summary of two dictionaries over the tokens `corr` has seen."""
    r = corr.correlation()
    alive_a, alive_b = corr.alive()
    best_a = r.max(dim=1).values[alive_a]
    best_b = r.max(dim=0).values[alive_b]
    cosines = cosine_matrix(decoder_a, decoder_b)
    rows, cols = match(cosines)
    return Universality(
        tokens=corr.n,
        features_a=r.shape[0],
        features_b=r.shape[1],
        alive_a=int(alive_a.sum()),
        alive_b=int(alive_b.sum()),
        mean_max_correlation=float(best_a.mean()) if len(best_a) else 0.0,
        partner_fraction=float((best_a >= PARTNER_THRESHOLD).double().mean()) if len(best_a) else 0.0,
        mean_max_correlation_b=float(best_b.mean()) if len(best_b) else 0.0,
        partner_fraction_b=float((best_b >= PARTNER_THRESHOLD).double().mean()) if len(best_b) else 0.0,
        decoder_mean_max_cosine=float(cosines.max(dim=1).values.mean()),
        decoder_matched_cosine=float(cosines[rows, cols].mean()),
    )


def nearest_neighbours(similarity: torch.Tensor, k: int = 5, exclude_self: bool = False) -> list[list[Neighbour]]:
    """Each row's k most similar columns (across SAEs: `ActivationCorrelation.correlation()`;
    B's side is its transpose). `exclude_self` leaves out the diagonal (a square, within-SAE matrix)."""
    sim = similarity
    if exclude_self:
        sim = similarity.clone()
        sim.fill_diagonal_(float("-inf"))
    k = max(0, min(k, sim.shape[1] - int(exclude_self)))
    values, index = sim.topk(k, dim=1)
    return [
        [Neighbour(feature=i, partner=int(j), similarity=float(v)) for v, j in zip(vs, js, strict=True)]
        for i, (vs, js) in enumerate(zip(values, index, strict=True))
    ]


def decoder_neighbours(
    decoder: torch.Tensor, k: int = 5, features: Sequence[int] | None = None, chunk: int = 1024
) -> list[list[Neighbour]]:
    """Within one SAE: each feature's (or each of `features`') k nearest other features by decoder
    cosine (rows of `decoder` [d_sae, d] are the features' directions). Computed `chunk` rows at a
    time, so a wide SAE never holds its whole [d_sae, d_sae] cosine matrix; on the decoder's
    device, in float32."""
    rows = decoder.detach().float()
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = rows.shape[0]
    wanted = torch.arange(n) if features is None else torch.tensor(list(features), dtype=torch.long)
    k = max(0, min(k, n - 1))
    out: list[list[Neighbour]] = []
    for start in range(0, len(wanted), chunk):
        own = wanted[start : start + chunk].to(rows.device)
        cos = rows[own] @ rows.T
        cos[torch.arange(len(own), device=cos.device), own] = float("-inf")  # never itself
        values, index = (t.cpu() for t in cos.topk(k, dim=1))
        out += [
            [Neighbour(feature=int(i), partner=int(j), similarity=float(v)) for v, j in zip(vs, js, strict=True)]
            for i, vs, js in zip(own.tolist(), values, index, strict=True)
        ]
    return out
