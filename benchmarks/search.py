"""Feature-search index speed and recall (part of `make bench`, alone with `--only search`, or
as a script): lm_saes.search.VectorIndex over synthetic embedding-like vectors
(benchmarks/search_data.py: 384-d, unit norm, a hierarchical Gaussian mixture, fixed seed).

- search.build_s: adding every vector (training the IVF cells and calibrating nprobe included);
- search.p50_ms / search.p99_ms: one query at a time (1,000 queries drawn from the mixture,
  not in the index), after 50 warm-up queries;
- search.recall_at_10: the share of each query's exact top 10 (numpy brute force) found.
Targets: p99 <= 50 ms and recall@10 >= 0.95 at 1M vectors.

    python benchmarks/search.py                 # 1M vectors
    python benchmarks/search.py --vectors 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from search_data import DIM, exact_top_k, mixture, recall_at_k  # noqa: E402

from lm_saes.search.index import VectorIndex  # noqa: E402

K = 10


def bench_search(vectors: int = 1_000_000, queries: int = 1000, seed: int = 0) -> dict[str, float]:
    data, probes = mixture(vectors, queries, seed=seed)
    truth = exact_top_k(data, probes, K)
    index = VectorIndex(DIM)
    start = time.perf_counter()
    index.add(np.arange(len(data), dtype=np.int64), data)
    build_s = time.perf_counter() - start
    del data
    for query in probes[:50]:
        index.search(query, K)
    found, times = [], []
    for query in probes:
        start = time.perf_counter()
        keys, _ = index.search(query, K)
        times.append(time.perf_counter() - start)
        found.append(keys)
    ms = np.array(times) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "recall_at_10": recall_at_k(np.stack(found), truth),
        "build_s": build_s,
        "vectors": vectors,
        "queries": queries,
        "index": repr(index),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(bench_search(args.vectors, args.queries), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
