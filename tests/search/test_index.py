"""VectorIndex: exact below its threshold, faiss IVF above; keys, cosine similarities, files."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lm_saes.search.index import VectorIndex
from tests.integration.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from search_data import exact_top_k, mixture, recall_at_k  # noqa: E402


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return mixture(6000, 300, dim=64, seed=3)


def test_exact_search_keys_and_cosines():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float32) * 5  # not unit: normalised on the way in
    index = VectorIndex(8)
    index.add(np.arange(50) * 10 + 3, vectors)
    assert len(index) == 50 and index.exact
    keys, sims = index.search(vectors[7], k=3)
    assert keys.shape == sims.shape == (3,) and keys.dtype == np.int64 and sims.dtype == np.float32
    assert keys[0] == 73 and sims[0] == pytest.approx(1.0, abs=1e-5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.allclose(sims, unit[(keys - 3) // 10] @ unit[7], atol=1e-5)
    assert list(sims) == sorted(sims, reverse=True)
    keys, sims = index.search(vectors[:4], k=100)  # more than there are
    assert keys.shape == (4, 50) and set(keys[0]) == set(np.arange(50) * 10 + 3)
    assert VectorIndex(8).search(vectors[0], 5)[0].shape == (0,)  # empty index


@pytest.mark.parametrize(
    ("keys", "vectors", "message"),
    [
        ([1, 2], np.ones((3, 4)), "2 keys for 3 vectors"),
        ([1, 1], np.ones((2, 4)), "new and distinct"),
        ([5], np.ones((1, 4)), "new and distinct"),  # 5 is already there
        ([1], np.ones((1, 5)), "shape"),
        ([1], np.zeros((1, 4)), "zero"),
        ([1], np.full((1, 4), np.nan), "finite"),
        (["a"], np.ones((1, 4)), "integers"),
    ],
)
def test_add_refuses_bad_input(keys, vectors, message):
    index = VectorIndex(4)
    index.add([5], np.ones((1, 4)))
    with pytest.raises(ValueError, match=message):
        index.add(keys, vectors)
    assert len(index) == 1
    with pytest.raises(ValueError):
        index.search(np.ones(4), k=0)
    with pytest.raises(ValueError):
        index.search(np.ones(3), k=1)


def test_approximate_search_recall_growth_and_files(data, tmp_path):
    pytest.importorskip("faiss", reason="the autointerp extra's vector index")
    vectors, queries = data
    index = VectorIndex(64, exact_below=2000)
    index.add(np.arange(1000), vectors[:1000])
    assert index.exact
    index.add(np.arange(1000, 4000), vectors[1000:4000])  # crosses the threshold: trains
    assert not index.exact and index.trained_on == 4000 and index.nprobe >= 8
    keys, sims = index.search(queries, 10)
    truth = exact_top_k(vectors[:4000], queries, 10)
    assert recall_at_k(keys, truth) >= 0.95
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first
    index.add(np.arange(4000, 6000), vectors[4000:])  # added to the trained cells
    assert index.trained_on == 4000 and len(index) == 6000
    keys, _ = index.search(queries, 10)
    assert recall_at_k(keys, exact_top_k(vectors, queries, 10)) >= 0.95
    one_keys, one_sims = index.search(queries[0], 10)
    assert np.array_equal(one_keys, keys[0])

    index.save(tmp_path / "ivf")
    loaded = VectorIndex.load(tmp_path / "ivf")
    assert len(loaded) == 6000 and not loaded.exact and loaded.nprobe == index.nprobe
    assert np.array_equal(loaded.search(queries, 10)[0], keys)

    grown = VectorIndex(64, exact_below=500, retrain_growth=2.0)
    grown.add(np.arange(500), vectors[:500])
    grown.add(np.arange(500, 1200), vectors[500:1200])  # past 2 x 500: retrained on all
    assert grown.trained_on == 1200 and len(grown) == 1200
    assert grown.search(vectors[1100], 1)[0][0] == 1100


def test_tiny_approximate_index(data):
    pytest.importorskip("faiss", reason="the autointerp extra's vector index")
    vectors, _ = data
    index = VectorIndex(64, exact_below=3)
    index.add([10, 11, 12, 13, 14], vectors[:5])  # fewer vectors than a usual cell count
    assert not index.exact
    keys, sims = index.search(vectors[2], 10)
    assert list(keys[:1]) == [12] and len(keys) == 5 and sims[0] == pytest.approx(1.0, abs=1e-5)


def test_exact_files_roundtrip(data, tmp_path):
    vectors, queries = data
    index = VectorIndex(64)
    index.add(np.arange(300) + 10**12, vectors[:300])  # any int64 key
    index.save(tmp_path / "exact")
    loaded = VectorIndex.load(tmp_path / "exact")
    assert loaded.exact and np.array_equal(loaded.keys, index.keys)
    for a, b in zip(loaded.search(queries[:5], 7), index.search(queries[:5], 7), strict=True):
        assert np.array_equal(a, b)
    (tmp_path / "exact" / "meta.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="format"):
        VectorIndex.load(tmp_path / "exact")
