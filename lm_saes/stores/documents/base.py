"""The document-store interface and the validation both backends share.

Records are plain JSON-able dicts, in and out (a stored `_id` never comes back):

- model: `name` (key), `n_layers`, `d_model`, anything else.
- sae: `id` (key), `model`, `hook_in`, `hook_out`, `architecture`, `d_sae`, `config` (dict),
  `metrics` (dict), `artifact` (URI of the saved SAE), `created` (ISO time).
- analysis: `id` (key), `sae_id`, `state` ("running" | "succeeded" | "failed"), `tokens`,
  `config` (dict), `created`, `updated`.
- job: `id` (key), `kind` ("training" | "analysis" | "activations"), `state` (one of
  JOB_STATES), `progress`, `metrics`, `error`, `request_id`, `config`, `result`, `created`,
  `updated`. Workers write it; readers only read it.
- graph: `id` (key), `model`, `prompt`, `transcoders`, `scores`, `thresholds`, `nodes` and `links`
  (the pruned graph), `artifact` (URI of the full graph's tensors), `created`.
- feature: `sae_id` + `index` (key), `analysis_id`, `density`, `max_activation` (finite numbers:
  they are sort keys), `mean_activation`, `histogram`, `top_examples`, `quantile_samples`,
  `logit_lens`, and `top_tokens`: a list of `{"token", "token_id", "count", "max_activation"}`
  that `features_for_token` searches. All other values are opaque JSON to the store.

Callers set timestamps; the store only validates keys and the fields it indexes or sorts on.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

FeatureSort = Literal["index", "density", "max_activation"]
SORT_KEYS: tuple[str, ...] = ("index", "density", "max_activation")
ANALYSIS_STATES = ("running", "succeeded", "failed")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
MAX_PAGE = 1000
# Feature fields kept outside the JSON document too (SQLite columns): pages that ask only for
# these never decode the (large) documents.
SUMMARY_FIELDS = frozenset({"sae_id", "index", "density", "max_activation"})


@dataclass(frozen=True)
class Kind:
    """A keyed record collection: `key` identifies a record, `owner` is what `list_*` filters on."""

    collection: str
    key: str
    owner: str | None


MODELS = Kind("models", "name", None)
SAES = Kind("saes", "id", "model")
ANALYSES = Kind("analyses", "id", "sae_id")
JOBS = Kind("jobs", "id", "kind")
GRAPHS = Kind("graphs", "id", "model")


class DocumentStore(ABC):
    """Models, SAEs, analyses and per-feature results; SQLite or MongoDB behind it."""

    uri: str

    # Backends implement these few primitives; the public methods validate first.
    @abstractmethod
    def _put_record(self, kind: Kind, doc: dict[str, Any]) -> None: ...

    @abstractmethod
    def _get_record(self, kind: Kind, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def _update_if(self, kind: Kind, key: str, expected: dict[str, Any],
                   changes: dict[str, Any]) -> dict[str, Any] | None:
        """Atomically apply `changes` to the record if its fields equal `expected`; the updated
        record, or None when it is missing or differs (another writer got there first)."""

    @abstractmethod
    def _list_records(self, kind: Kind, owner: str | None) -> list[dict[str, Any]]:
        """All records (or those whose owner field equals `owner`), sorted by key."""

    @abstractmethod
    def _put_features(self, docs: list[dict[str, Any]]) -> None:
        """Upsert validated, de-duplicated docs; each becomes visible whole, with its tokens."""

    @abstractmethod
    def _list_features(
        self, sae_id: str, sort: str, descending: bool, offset: int, limit: int,
        fields: list[str] | None,
    ) -> tuple[list[dict[str, Any]], int]: ...

    @abstractmethod
    def _features_for_token(self, sae_id: str, token: str, limit: int) -> list[dict[str, Any]]: ...

    @abstractmethod
    def get_feature(self, sae_id: str, index: int) -> dict[str, Any] | None: ...

    @abstractmethod
    def delete_features(self, sae_id: str) -> int:
        """Delete every feature of `sae_id`; returns how many there were."""

    @abstractmethod
    def close(self) -> None: ...

    def put_model(self, doc: dict[str, Any]) -> None:
        self._put_record(MODELS, _keyed(doc, MODELS))

    def get_model(self, name: str) -> dict[str, Any] | None:
        return self._get_record(MODELS, name)

    def list_models(self) -> list[dict[str, Any]]:
        return self._list_records(MODELS, None)

    def put_sae(self, doc: dict[str, Any]) -> None:
        self._put_record(SAES, _keyed(doc, SAES))

    def get_sae(self, sae_id: str) -> dict[str, Any] | None:
        return self._get_record(SAES, sae_id)

    def list_saes(self, model: str | None = None) -> list[dict[str, Any]]:
        return self._list_records(SAES, model)

    def put_analysis(self, doc: dict[str, Any]) -> None:
        doc = _keyed(doc, ANALYSES)
        if doc.get("state") not in ANALYSIS_STATES:
            raise ValueError(f"analysis {doc['id']}: state must be one of {ANALYSIS_STATES}, got {doc.get('state')!r}")
        self._put_record(ANALYSES, doc)

    def get_analysis(self, analysis_id: str) -> dict[str, Any] | None:
        return self._get_record(ANALYSES, analysis_id)

    def list_analyses(self, sae_id: str | None = None) -> list[dict[str, Any]]:
        return self._list_records(ANALYSES, sae_id)

    def put_job(self, doc: dict[str, Any]) -> None:
        doc = _keyed(doc, JOBS)
        if doc.get("state") not in JOB_STATES:
            raise ValueError(f"job {doc['id']}: state must be one of {JOB_STATES}, got {doc.get('state')!r}")
        self._put_record(JOBS, doc)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self._get_record(JOBS, job_id)

    def update_job_if(self, job_id: str, expected: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any] | None:
        """Compare-and-set on a job record: `changes` apply only if its fields equal `expected`."""
        return self._update_if(JOBS, job_id, expected, changes)

    def claim_job(self, job_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Take a queued job (state -> `changes["state"]`, etc.) unless someone already did:
        of several replicas over one store, exactly one wins each job."""
        return self.update_job_if(job_id, {"state": "queued"}, changes)

    def list_jobs(self, kind: str | None = None) -> list[dict[str, Any]]:
        return self._list_records(JOBS, kind)

    def put_graph(self, doc: dict[str, Any]) -> None:
        self._put_record(GRAPHS, _keyed(doc, GRAPHS))

    def get_graph(self, graph_id: str) -> dict[str, Any] | None:
        return self._get_record(GRAPHS, graph_id)

    def list_graphs(self, model: str | None = None) -> list[dict[str, Any]]:
        return self._list_records(GRAPHS, model)

    def put_features(self, docs: list[dict[str, Any]]) -> None:
        """Upsert a batch keyed by (sae_id, index), replacing whole documents.

        Readers see each document either old or new, never half-written. A key repeated in the
        batch keeps its last document.
        """
        unique = {(d["sae_id"], d["index"]): d for d in map(_feature, docs)}
        if unique:
            self._put_features(list(unique.values()))

    def list_features(
        self, sae_id: str, sort: FeatureSort = "index", descending: bool = False,
        offset: int = 0, limit: int = 50, fields: list[str] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of `sae_id`'s features and their total count.

        Ties on `density`/`max_activation` are broken by index in the same direction (one index
        scan serves the page), so pages never overlap. `fields` keeps only those top-level
        fields (plus sae_id and index).
        """
        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {SORT_KEYS}, got {sort!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an integer >= 0, got {offset!r}")
        _check_limit(limit)
        if fields is not None:
            fields = _check_fields(fields)
        return self._list_features(sae_id, sort, descending, offset, limit, fields)

    def features_for_token(self, sae_id: str, token: str, limit: int = 20) -> list[dict[str, Any]]:
        """Features whose `top_tokens` hold `token`, strongest first (then by index).

        Each result is `{"sae_id", "index", "density", "max_activation", "top_token"}`, where
        `top_token` is the matching `top_tokens` entry (the strongest if it repeats).
        """
        _check_limit(limit)
        return self._features_for_token(sae_id, token, limit)

    def __enter__(self) -> DocumentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer in 1..{MAX_PAGE}, got {limit!r}")


def _check_fields(fields: list[str]) -> list[str]:
    if isinstance(fields, str):
        raise ValueError(f"fields must be a list of field names, got the string {fields!r}")
    for name in fields:
        if not isinstance(name, str) or not name or "." in name or name.startswith("$"):
            raise ValueError(f"fields must name top-level fields (no '.' or '$'), got {name!r}")
    return list(dict.fromkeys(["sae_id", "index", *fields]))


def _without_id(doc: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ValueError(f"documents must be dicts, got {type(doc).__name__}")
    return {k: v for k, v in doc.items() if k != "_id"}


def _keyed(doc: dict[str, Any], kind: Kind) -> dict[str, Any]:
    doc = _without_id(doc)
    for field in filter(None, (kind.key, kind.owner)):
        if not isinstance(doc.get(field), str) or not doc[field]:
            raise ValueError(f"{kind.collection}: field {field!r} must be a non-empty string, got {doc.get(field)!r}")
    return doc


def _feature(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of `doc` with its key and sort fields checked and made plain int/float."""
    doc = _without_id(doc)
    if not isinstance(doc.get("sae_id"), str) or not doc["sae_id"]:
        raise ValueError(f"feature: field 'sae_id' must be a non-empty string, got {doc.get('sae_id')!r}")
    try:
        doc["index"] = operator.index(doc.get("index"))  # numpy/torch ints become int
    except TypeError:
        raise ValueError(f"feature of {doc['sae_id']}: field 'index' must be an integer, got {doc.get('index')!r}") from None
    if isinstance(doc["index"], bool) or doc["index"] < 0:
        raise ValueError(f"feature of {doc['sae_id']}: field 'index' must be >= 0, got {doc['index']!r}")
    where = f"feature {doc['sae_id']}/{doc['index']}"
    for field in ("density", "max_activation"):
        value = doc.get(field)
        if isinstance(value, bool) or not hasattr(value, "__float__"):  # numbers, numpy, 0-d tensors
            raise ValueError(f"{where}: field {field!r} must be a number, got {value!r}")
        doc[field] = float(value)
        if not math.isfinite(doc[field]):
            raise ValueError(f"{where}: field {field!r} must be finite (it is a sort key), got {value!r}")
    tokens = doc.get("top_tokens", [])
    if not isinstance(tokens, list) or not all(_is_token_entry(t) for t in tokens):
        raise ValueError(
            f"{where}: field 'top_tokens' must be a list of dicts with a string 'token' and a "
            "finite number 'max_activation'"
        )
    return doc


def _is_token_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
        return False
    value = entry.get("max_activation")
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def token_entries(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The strongest `top_tokens` entry per token string (what `features_for_token` ranks)."""
    best: dict[str, dict[str, Any]] = {}
    for entry in doc.get("top_tokens", []):
        held = best.get(entry["token"])
        if held is None or entry["max_activation"] > held["max_activation"]:
            best[entry["token"]] = entry
    return best


def project(doc: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    doc = {k: v for k, v in doc.items() if k != "_id"}
    return doc if fields is None else {k: doc[k] for k in fields if k in doc}
