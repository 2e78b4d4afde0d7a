"""Synthetic embedding-like vectors for the search benchmarks (benchmarks/search.py and
benchmarks/search_libraries.py), and their exact nearest neighbours.

A hierarchical Gaussian mixture on the unit sphere, so that neighbours mean something (as in
sentence embeddings, whose points lie near low-dimensional manifolds rather than uniformly in
384 dimensions): 64 topics, each a random 32-dimensional subspace around its own centre;
one cluster per 256 vectors, each in one topic's subspace, with uneven sizes (Dirichlet
weights) and spreads; isotropic noise in all 384 dimensions; every vector L2-normalised.
Clusters of a topic overlap (at 100k vectors about 84 % of a query's true top 10 share its
cluster), and unrelated vectors are near orthogonal. A fixed seed makes the same set every
time; queries are further draws from the mixture, not members of the set.
"""

from __future__ import annotations

import numpy as np

DIM = 384
TOPICS = 64
SUBSPACE = 32
PER_CLUSTER = 256
OFFSET = 0.1  # spread of cluster centres within a topic's subspace (per dimension)
SPREAD = 0.15  # spread of a cluster (per dimension, times 0.5 .. 1.5)
NOISE = 0.5  # norm of the isotropic noise


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def mixture(n: int, queries: int = 1000, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(`n` vectors, `queries` query vectors), float32, unit norm, from the same mixture."""
    rng = np.random.default_rng(seed)
    clusters = max(TOPICS, n // PER_CLUSTER)
    centres = _normalise(rng.standard_normal((TOPICS, dim), dtype=np.float32))
    bases = rng.standard_normal((TOPICS, SUBSPACE, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    topic_of = rng.integers(0, TOPICS, clusters)
    offsets = OFFSET * rng.standard_normal((clusters, SUBSPACE), dtype=np.float32)
    spreads = SPREAD * rng.uniform(0.5, 1.5, clusters).astype(np.float32)
    labels = rng.choice(clusters, size=n + queries, p=rng.dirichlet(np.full(clusters, 2.0)))
    out = np.empty((n + queries, dim), dtype=np.float32)
    for topic in range(TOPICS):
        rows = np.flatnonzero(topic_of[labels] == topic)
        of = labels[rows]
        z = offsets[of] + spreads[of, None] * rng.standard_normal((len(rows), SUBSPACE), dtype=np.float32)
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32) * np.float32(NOISE / np.sqrt(dim))
        out[rows] = centres[topic] + z @ bases[topic] + noise
    out = _normalise(out)
    order = rng.permutation(n + queries)  # queries are a random sample of the draws
    return out[order[:n]], out[order[n:]]


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Row i: the positions in `vectors` of the `k` largest inner products with queries[i], best
    first: the numpy brute force VectorIndex itself uses below its exact threshold (imported
    here, in the driver; the library workers never call it)."""
    from lm_saes.search.index import exact_top_k as exact

    return exact(vectors, queries, k)[0]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top k found among its k results."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)]))
