"""A vector index: int64 keys -> unit vectors, the k nearest by cosine similarity.

Vectors are L2-normalised on the way in (queries too), so inner product is cosine. Below
`exact_below` vectors the search is exact (one matrix product in numpy); from there on it is a
faiss inverted-file index (IVF-Flat, inner product): k-means cells over the vectors, a query
scanning the `nprobe` cells nearest it. Why faiss IVF and not an HNSW graph (faiss, hnswlib,
usearch): benchmarks/search_libraries.json, made by benchmarks/search_libraries.py.

`nprobe` is not guessed: when the cells are trained, the index searches a sample of its own
vectors both ways (exact and IVF, each vector's own hit left out) and keeps the smallest
`nprobe` whose recall@10 reaches `target_recall`. Vectors added later go to the trained
cells; once the index has grown `retrain_growth` times past what it was trained on, it
retrains. Searching from several threads at once is safe; adding while searching is not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lm_saes.extras import require

EXACT_BELOW = 20_000
TARGET_RECALL = 0.97  # on the index's own vectors: a margin over the 0.95 asked of queries
CALIBRATION_QUERIES = 256
MIN_NPROBE = 8
FORMAT = 1


def _faiss() -> Any:
    return require("faiss", "autointerp", "an approximate vector index (more than exact_below vectors)")


def _unit_rows(vectors: Any, dim: int, what: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}) or ({dim},), got {np.shape(vectors)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} must be finite")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what} must not be zero vectors (they have no direction)")
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Positions and similarities of each query's k best rows of `vectors`, best first."""
    k = min(k, len(vectors))
    best = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ vectors[start : start + chunk].T
        kk = min(k, scores.shape[1])
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        all_scores = np.concatenate([best, np.take_along_axis(scores, top, axis=1)], axis=1)
        all_ids = np.concatenate([ids, top + start], axis=1)
        keep = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        best, ids = np.take_along_axis(all_scores, keep, axis=1), np.take_along_axis(all_ids, keep, axis=1)
    return ids, best


class VectorIndex:
    """Keys -> unit vectors of `dim` dimensions; `search` returns the nearest keys by cosine."""

    def __init__(
        self,
        dim: int,
        exact_below: int = EXACT_BELOW,
        target_recall: float = TARGET_RECALL,
        retrain_growth: float = 4.0,
        seed: int = 0,
    ):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim, self.exact_below, self.target_recall = dim, exact_below, target_recall
        self.retrain_growth, self.seed = retrain_growth, seed
        self._keys = np.zeros(0, dtype=np.int64)  # position -> key
        self._vectors: np.ndarray | None = np.zeros((0, dim), dtype=np.float32)  # exact mode only
        self._ivf: Any = None
        self.trained_on = 0
        self.nprobe = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def exact(self) -> bool:
        return self._ivf is None

    @property
    def keys(self) -> np.ndarray:
        return self._keys.copy()

    def add(self, keys: Any, vectors: Any) -> None:
        """Add vectors under new keys (a key already present, or repeated, is a ValueError)."""
        keys = np.asarray(keys)
        if keys.ndim == 0:
            keys = keys[None]
        if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer) and len(keys):
            raise ValueError(f"keys must be a 1-D array of integers, got {keys.dtype} of shape {keys.shape}")
        keys = keys.astype(np.int64)
        vectors = _unit_rows(vectors, self.dim, "vectors")
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys for {len(vectors)} vectors")
        if len(np.unique(keys)) != len(keys) or np.isin(keys, self._keys).any():
            raise ValueError("keys must be new and distinct")
        if not len(keys):
            return
        self._keys = np.concatenate([self._keys, keys])
        if self._ivf is None:
            assert self._vectors is not None
            self._vectors = np.concatenate([self._vectors, vectors])
            if len(self._vectors) >= self.exact_below:
                self._train(self._vectors)
        elif len(self) >= self.retrain_growth * self.trained_on:
            self._train(np.concatenate([self._all_vectors(), vectors]))
        else:
            self._ivf.add(vectors)

    def _all_vectors(self) -> np.ndarray:
        if self._ivf is None:
            assert self._vectors is not None
            return self._vectors
        return self._ivf.reconstruct_n(0, self._ivf.ntotal)

    def _train(self, vectors: np.ndarray) -> None:
        """(Re)build the IVF index over `vectors` (position order) and calibrate nprobe."""
        faiss = _faiss()
        n = len(vectors)
        nlist = max(1, min(round(math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per cell
        rng = np.random.default_rng(self.seed)
        sample = vectors[np.sort(rng.choice(n, min(n, 64 * nlist), replace=False))]
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = self.seed
        ivf.train(sample)
        ivf.add(vectors)
        ivf.make_direct_map()  # reconstruct_n, for retraining
        self._ivf, self._vectors, self.trained_on = ivf, None, n
        self.nprobe = self._calibrate(vectors, rng)

    def _calibrate(self, vectors: np.ndarray, rng: np.random.Generator, k: int = 10) -> int:
        """The smallest nprobe (doubling from MIN_NPROBE) whose recall@k on a sample of the
        index's own vectors, their own hit excluded, reaches target_recall."""
        n = len(vectors)
        picks = np.sort(rng.choice(n, min(n, CALIBRATION_QUERIES), replace=False))
        queries = vectors[picks]
        truth, _ = exact_top_k(vectors, queries, k + 1)
        nlist = self._ivf.nlist
        nprobe = min(MIN_NPROBE, nlist)
        while True:
            self._ivf.nprobe = nprobe
            _, found = self._ivf.search(queries, k + 1)
            hits = [
                len((set(f.tolist()) - {p}) & (set(t.tolist()) - {p})) / max(1, len(set(t.tolist()) - {p}))
                for f, t, p in zip(found, truth, picks.tolist(), strict=True)
            ]
            if float(np.mean(hits)) >= self.target_recall or nprobe >= nlist:
                return nprobe
            nprobe = min(nlist, nprobe * 2)

    def search(self, query: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest keys and their cosine similarities, best first: shape (k',) for one
        query of shape (dim,), (n, k') for n queries, k' = min(k, len). A slot the approximate
        search could not fill holds key -1 and similarity -inf."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        single = np.ndim(query) == 1
        queries = _unit_rows(query, self.dim, "query")
        k = min(int(k), len(self))
        if k == 0:
            empty = np.zeros((len(queries), 0))
            out_keys, out_sims = empty.astype(np.int64), empty.astype(np.float32)
        elif self._ivf is None:
            assert self._vectors is not None
            positions, out_sims = exact_top_k(self._vectors, queries, k)
            out_keys = self._keys[positions]
        else:
            params = _faiss().SearchParametersIVF(nprobe=self.nprobe)  # per call: safe across threads
            sims, positions = self._ivf.search(queries, k, params=params)
            out_keys = np.where(positions >= 0, self._keys[np.maximum(positions, 0)], -1)
            out_sims = np.where(positions >= 0, sims, -np.inf).astype(np.float32)
        return (out_keys[0], out_sims[0]) if single else (out_keys, out_sims)

    # --- files ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the index into folder `path` (meta.json, keys.npy, and vectors.npy or index.faiss)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "dim": self.dim,
            "count": len(self),
            "exact_below": self.exact_below,
            "target_recall": self.target_recall,
            "retrain_growth": self.retrain_growth,
            "seed": self.seed,
            "trained_on": self.trained_on,
            "nprobe": self.nprobe,
            "kind": "exact" if self._ivf is None else "faiss-ivf-flat",
        }
        np.save(folder / "keys.npy", self._keys)
        if self._ivf is None:
            assert self._vectors is not None
            np.save(folder / "vectors.npy", self._vectors)
        else:
            _faiss().write_index(self._ivf, str(folder / "index.faiss"))
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        folder = Path(path)
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder}: index format {meta.get('format')!r}, this version reads {FORMAT}")
        index = cls(
            meta["dim"],
            exact_below=meta["exact_below"],
            target_recall=meta["target_recall"],
            retrain_growth=meta["retrain_growth"],
            seed=meta["seed"],
        )
        index._keys = np.load(folder / "keys.npy")
        if meta["kind"] == "exact":
            index._vectors = np.load(folder / "vectors.npy")
        else:
            index._ivf = _faiss().read_index(str(folder / "index.faiss"))
            index._ivf.make_direct_map()
            index._vectors, index.trained_on, index.nprobe = None, meta["trained_on"], meta["nprobe"]
        stored = len(index._vectors) if index._vectors is not None else index._ivf.ntotal
        if len(index._keys) != meta["count"] or stored != meta["count"]:
            raise ValueError(f"{folder}: {len(index._keys)} keys and {stored} vectors, meta.json says {meta['count']}")
        return index

    def __repr__(self) -> str:
        kind = "exact" if self._ivf is None else f"ivf nlist={self._ivf.nlist} nprobe={self.nprobe}"
        return f"VectorIndex(dim={self.dim}, {len(self)} vectors, {kind})"
