"""Feature search: which features' explanations mean what a query says.

`FeatureSearch` keeps one `VectorIndex` per SAE of a document store, over the sentence
embeddings (lm_saes.autointerp.embedding) of its features' explanation texts; a query is
embedded the same way and the nearest explanations by cosine similarity come back as
`SearchHit`s. One index per SAE makes a search restricted to one SAE exact whatever `k` is,
and lets each SAE be rebuilt on its own.

What is indexed: the features of each SAE that hold an explanation with a summary score (the
store's `score` sort key: detection and/or fuzzing, else the embedding score), i.e. what an
autointerp run writes.

Freshness: at most every `refresh_s` seconds a search first checks each SAE's fingerprint, the
(index, score) pairs of its scored features, read from the store's summary rows in score order
(no feature document is decoded). An SAE whose fingerprint changed is re-read (the scored
features' explanations) and re-indexed; texts seen before keep their embeddings, so only new
or changed explanations are embedded. A re-explanation that leaves every score as it was is
picked up by `refresh(force=True)`. Refreshes run in one background thread at a time; a search
waits for the running one up to `wait_s` (once indexes exist, at most `stale_wait_s`) and
otherwise answers from the previous indexes, or raises `SearchNotReady` when there are none yet.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from pydantic import BaseModel, Field

from lm_saes.records import MAX_PAGE, FeatureRecord
from lm_saes.search.index import VectorIndex
from lm_saes.stores.documents import DocumentStore

log = logging.getLogger(__name__)
DIM = 384  # all-MiniLM-L6-v2


class Encoder(Protocol):
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


class SearchHit(BaseModel):
    """A feature whose explanation is near the query."""

    sae_id: str
    index: int
    similarity: float = Field(description="Cosine similarity of the query's and the explanation's embeddings")
    explanation: str
    score: float | None = Field(None, description="The explanation's summary score")


class SearchNotReady(RuntimeError):
    """No index is built yet and the first build is still running."""


class UnknownSae(LookupError):
    """The store has no SAE of that id."""


@dataclass(frozen=True)
class _SaeIndex:
    """One SAE's explanations as indexed; never changed once built (a rebuild makes a new one)."""

    fingerprint: str
    texts: dict[int, str]
    scores: dict[int, float]
    embeddings: dict[bytes, np.ndarray]  # text digest -> unit vector, reused by the next rebuild
    index: VectorIndex


@dataclass
class _Refresh:
    """One background refresh: waiters block on `done`, then re-raise its `error`."""

    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _fingerprint(total: int, rows: list[tuple[int, float]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(total).encode())
    for index, score in rows:
        h.update(f"|{index}:{score!r}".encode())
    return h.hexdigest()


class FeatureSearch:
    """Semantic search over the explanations of every SAE's features in `store`.

    `embedder`: anything with `encode(texts) -> (n, 384) unit vectors` (default: the packaged
    all-MiniLM-L6-v2, loaded on first use). `exact_below`: SAEs with fewer explanations are
    searched exactly (VectorIndex's threshold). `stale_wait_s`: how long a search waits for a
    refresh once indexes exist (None: as long as its `wait_s`), so that re-reading a large
    store's fingerprints does not hold up every search that falls due.
    """

    def __init__(
        self,
        store: DocumentStore,
        embedder: Encoder | Callable[[], Encoder] | None = None,
        refresh_s: float = 5.0,
        exact_below: int | None = None,
        stale_wait_s: float | None = None,
    ):
        self.store = store
        self.refresh_s = refresh_s
        self.stale_wait_s = stale_wait_s
        self.exact_below = exact_below
        self._embedder_source = embedder
        self._embedder: Encoder | None = embedder if embedder is not None and hasattr(embedder, "encode") else None
        self._indexes: dict[str, _SaeIndex] = {}
        self._refreshed: float | None = None  # monotonic time the last refresh finished
        self._refresh: _Refresh | None = None
        self._lock = threading.Lock()

    # --- embedding ------------------------------------------------------------------------
    @property
    def embedder(self) -> Encoder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    if callable(self._embedder_source):
                        self._embedder = self._embedder_source()
                    else:
                        from lm_saes.autointerp.embedding import Embedder

                        self._embedder = Embedder()
        return self._embedder

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(self.embedder.encode(texts), dtype=np.float32)
        if vectors.shape != (len(texts), DIM):
            raise ValueError(f"the embedder returned shape {vectors.shape}, expected ({len(texts)}, {DIM})")
        return vectors

    # --- the store ------------------------------------------------------------------------
    def _scored(self, sae_id: str, fields: list[str]) -> tuple[list[tuple[FeatureRecord, float]], int]:
        """The features of `sae_id` that have a score, with it (highest first), and its feature count."""
        out: list[tuple[FeatureRecord, float]] = []
        offset = 0
        while True:
            page, total = self.store.list_features(
                sae_id, sort="score", descending=True, offset=offset, limit=MAX_PAGE, fields=fields
            )
            scored = [(f, float(f.score)) for f in page if f.score is not None]
            out += scored
            if len(scored) < len(page) or len(page) < MAX_PAGE:
                return out, total
            offset += MAX_PAGE

    def _fingerprint_of(self, sae_id: str) -> str:
        rows, total = self._scored(sae_id, ["score"])
        return _fingerprint(total, [(f.index, score) for f, score in rows])

    def _build(self, sae_id: str, previous: _SaeIndex | None) -> _SaeIndex:
        rows, total = self._scored(sae_id, ["score", "explanation"])
        texts: dict[int, str] = {}
        scores: dict[int, float] = {}
        for f, score in rows:
            if f.explanation is not None and f.explanation.text.strip():
                texts[f.index] = f.explanation.text
                scores[f.index] = score
        fingerprint = _fingerprint(total, [(f.index, score) for f, score in rows])
        known = previous.embeddings if previous is not None else {}
        digests = {i: _digest(t) for i, t in texts.items()}
        missing = sorted({d: i for i, d in digests.items() if d not in known}.items(), key=lambda kv: kv[1])
        embeddings = {d: known[d] for d in set(digests.values()) if d in known}
        if missing:
            vectors = self._encode([texts[i] for _, i in missing])
            embeddings.update({d: vectors[n] for n, (d, _) in enumerate(missing)})
        keys = np.fromiter(texts, dtype=np.int64, count=len(texts))
        index = VectorIndex(DIM, **({"exact_below": self.exact_below} if self.exact_below is not None else {}))
        if len(keys):
            index.add(keys, np.stack([embeddings[digests[int(i)]] for i in keys]))
        log.info("feature search: %s: %d explanations (%d embedded now)", sae_id, len(keys), len(missing))
        return _SaeIndex(fingerprint, texts, scores, embeddings, index)

    def refresh(self, force: bool = False) -> None:
        """Bring every SAE's index up to date now (in the calling thread); `force`: rebuild each
        from its explanations even if its fingerprint is unchanged (embeddings are reused)."""
        saes = [s.id for s in self.store.list_saes()]
        indexes = dict(self._indexes)
        for sae_id in saes:
            current = indexes.get(sae_id)
            if force or current is None or current.fingerprint != self._fingerprint_of(sae_id):
                indexes[sae_id] = self._build(sae_id, current)
        self._indexes = {s: indexes[s] for s in saes}  # SAEs gone from the store are dropped
        self._refreshed = time.monotonic()

    def _run_refresh(self, job: _Refresh) -> None:
        try:
            self.refresh()
        except BaseException as error:  # handed to the searches waiting on it
            job.error = error
            log.warning("feature search: refresh failed: %s: %s", type(error).__name__, error)
        finally:
            with self._lock:
                self._refresh = None
            job.done.set()

    def _fresh(self, wait_s: float | None) -> None:
        """Start a refresh if one is due, and wait for the running one up to `wait_s`."""
        with self._lock:
            due = self._refreshed is None or time.monotonic() - self._refreshed >= self.refresh_s
            job = self._refresh
            if job is None and due:
                job = self._refresh = _Refresh()
                threading.Thread(
                    name="feature-search-refresh", daemon=True, target=self._run_refresh, args=(job,)
                ).start()
        if job is None:
            return
        if self._refreshed is not None and self.stale_wait_s is not None:
            wait_s = self.stale_wait_s if wait_s is None else min(wait_s, self.stale_wait_s)
        if not job.done.wait(wait_s):
            if self._refreshed is None:
                raise SearchNotReady(
                    "the feature-search index is still being built (explanations are being embedded); retry shortly"
                )
            return  # answer from the previous indexes
        if job.error is not None:
            raise job.error

    # --- search ---------------------------------------------------------------------------
    def search(
        self, query: str, k: int = 10, sae_id: str | None = None, wait_s: float | None = None
    ) -> list[SearchHit]:
        """The `k` features (of `sae_id`, or of every SAE) whose explanations are nearest `query`,
        most similar first (ties: by SAE id, then index)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        self._fresh(wait_s)
        indexes = self._indexes
        if sae_id is not None:
            if sae_id not in indexes:
                if self.store.get_sae(sae_id) is None:
                    raise UnknownSae(f"no SAE {sae_id!r} in the document store")
                return []  # registered after the last refresh: nothing explained yet
            indexes = {sae_id: indexes[sae_id]}
        indexes = {s: i for s, i in indexes.items() if len(i.index)}
        if not indexes:
            return []  # nothing explained: the model is not even loaded
        vector = self._encode([query])[0]
        hits: list[SearchHit] = []
        for name, entry in indexes.items():
            keys, similarities = entry.index.search(vector, k)
            for key, similarity in zip(keys.tolist(), similarities.tolist(), strict=True):
                if key < 0 or not math.isfinite(similarity):
                    continue
                hits.append(
                    SearchHit(
                        sae_id=name,
                        index=key,
                        similarity=similarity,
                        explanation=entry.texts[key],
                        score=entry.scores.get(key),
                    )
                )
        hits.sort(key=lambda h: (-h.similarity, h.sae_id, h.index))
        return hits[:k]

    def counts(self) -> dict[str, int]:
        """Explanations indexed per SAE (as of the last refresh)."""
        return {s: len(i.index) for s, i in self._indexes.items()}
