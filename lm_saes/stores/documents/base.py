"""The document-store interface and the validation both backends share.

Records go in as `lm_saes.records` models (or dicts, validated into them) and come back as
those models; the backends store plain JSON documents (a stored `_id` never comes back):
models keyed by `name`, SAEs / analyses / jobs / graphs by `id`, features by `sae_id` + `index`
(with `density` and `max_activation` finite, since they are sort keys, and `top_tokens` a list
of `{"token", "token_id", "count", "max_activation"}` that `features_for_token` searches).

Callers set timestamps; the store only validates keys and the fields it indexes or sorts on.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, get_args

from pydantic import ValidationError

from lm_saes.records import (
    JOB_STATES,
    MAX_NEIGHBOURS,
    MAX_PAGE,
    NEIGHBOUR_KINDS,
    AnalysisRecord,
    Explanation,
    FeatureNeighbour,
    FeatureRecord,
    GraphRecord,
    JobRecord,
    ModelRecord,
    Record,
    SaeRecord,
    TokenMatch,
)

if TYPE_CHECKING:
    from lm_saes.evals.suite import EvalReport

FeatureSort = Literal["index", "density", "max_activation", "score"]
SORT_KEYS: tuple[str, ...] = get_args(FeatureSort)
R = TypeVar("R", bound=Record)
# Feature fields kept outside the JSON document too (SQLite columns): pages that ask only for
# these never decode the (large) documents.
SUMMARY_FIELDS = frozenset({"sae_id", "index", "density", "max_activation", "score"})


@dataclass(frozen=True)
class Kind:
    """A keyed record collection: `key` identifies a record, `owner` is what `list_*` filters on."""

    collection: str
    key: str
    owner: str | None
    record: type[Record]


MODELS = Kind("models", "name", None, ModelRecord)
SAES = Kind("saes", "id", "model", SaeRecord)
ANALYSES = Kind("analyses", "id", "sae_id", AnalysisRecord)
JOBS = Kind("jobs", "id", "kind", JobRecord)
GRAPHS = Kind("graphs", "id", "model", GraphRecord)


class DocumentStore(ABC):
    """Models, SAEs, analyses and per-feature results; SQLite or MongoDB behind it."""

    uri: str

    # Backends implement these few primitives; the public methods validate first.
    @abstractmethod
    def _put_record(self, kind: Kind, doc: dict[str, Any]) -> None: ...

    @abstractmethod
    def _get_record(self, kind: Kind, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def _update_if(
        self, kind: Kind, key: str, expected: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, Any] | None:
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
        self,
        sae_id: str,
        sort: str,
        descending: bool,
        offset: int,
        limit: int,
        fields: list[str] | None,
    ) -> tuple[list[dict[str, Any]], int]: ...

    @abstractmethod
    def _features_for_token(self, sae_id: str, token: str, limit: int) -> list[dict[str, Any]]: ...

    @abstractmethod
    def _get_feature(self, sae_id: str, index: int) -> dict[str, Any] | None: ...

    @abstractmethod
    def delete_features(self, sae_id: str) -> int:
        """Delete every feature of `sae_id`; returns how many there were."""

    @abstractmethod
    def close(self) -> None: ...

    def _put(self, kind: Kind, record: Record | dict[str, Any]) -> None:
        self._put_record(kind, _keyed(_validated(kind, record).doc(), kind))

    def put_model(self, record: ModelRecord | dict[str, Any]) -> None:
        self._put(MODELS, record)

    def get_model(self, name: str) -> ModelRecord | None:
        return _typed(ModelRecord, self._get_record(MODELS, name))

    def list_models(self) -> list[ModelRecord]:
        return [ModelRecord.model_validate(d) for d in self._list_records(MODELS, None)]

    def put_sae(self, record: SaeRecord | dict[str, Any]) -> None:
        """Upsert an SAE; its `evals`, if any, must be an EvalReport (stored as its JSON)."""
        doc = cast(SaeRecord, _validated(SAES, record)).doc()
        if doc.get("evals") is None:
            doc.pop("evals", None)  # as records written before evals existed
        else:
            doc["evals"] = _eval_doc(doc["evals"], doc["id"])
        self._put_record(SAES, _keyed(doc, SAES))

    def put_evals(self, sae_id: str, report: EvalReport | dict[str, Any]) -> SaeRecord:
        """Merge an evaluation report into SAE `sae_id`'s stored one (lm_saes.evals.suite.
        merge_reports: the suites `report` ran replace theirs, the others stay) and return the
        record. A LookupError for an SAE the store does not hold. Compare-and-set, so two writers
        never lose each other's suites."""
        from lm_saes.evals.suite import EvalReport, merge_reports

        new = EvalReport.model_validate(_eval_doc(report, sae_id))
        for _ in range(20):
            doc = self._get_record(SAES, sae_id)
            if doc is None:
                raise LookupError(f"sae_id: no SAE {sae_id!r} in {self.uri}; analyze it first")
            stored = doc.get("evals")
            old = None if stored is None else EvalReport.model_validate(stored)
            merged = _eval_doc(merge_reports(old, new), sae_id)
            updated = self._update_if(SAES, sae_id, {"evals": stored}, {"evals": merged})
            if updated is not None:
                return SaeRecord.model_validate(updated)
        raise RuntimeError(f"SAE {sae_id!r}: its evals kept changing under this write; try again")

    def get_sae(self, sae_id: str) -> SaeRecord | None:
        return _typed(SaeRecord, self._get_record(SAES, sae_id))

    def list_saes(self, model: str | None = None) -> list[SaeRecord]:
        return [SaeRecord.model_validate(d) for d in self._list_records(SAES, model)]

    def put_analysis(self, record: AnalysisRecord | dict[str, Any]) -> None:
        self._put(ANALYSES, record)

    def get_analysis(self, analysis_id: str) -> AnalysisRecord | None:
        return _typed(AnalysisRecord, self._get_record(ANALYSES, analysis_id))

    def list_analyses(self, sae_id: str | None = None) -> list[AnalysisRecord]:
        return [AnalysisRecord.model_validate(d) for d in self._list_records(ANALYSES, sae_id)]

    def put_job(self, record: JobRecord | dict[str, Any]) -> None:
        self._put(JOBS, record)

    def get_job(self, job_id: str) -> JobRecord | None:
        return _typed(JobRecord, self._get_record(JOBS, job_id))

    def update_job_if(self, job_id: str, expected: dict[str, Any], changes: dict[str, Any]) -> JobRecord | None:
        """Compare-and-set on a job record: `changes` apply only if its fields equal `expected`."""
        if "state" in changes and changes["state"] not in JOB_STATES:
            raise ValueError(f"job {job_id}: state must be one of {JOB_STATES}, got {changes['state']!r}")
        return _typed(JobRecord, self._update_if(JOBS, job_id, expected, changes))

    def claim_job(self, job_id: str, changes: dict[str, Any]) -> JobRecord | None:
        """Take a queued job (state -> `changes["state"]`, etc.) unless someone already did:
        of several replicas over one store, exactly one wins each job."""
        return self.update_job_if(job_id, {"state": "queued"}, changes)

    def list_jobs(self, kind: str | None = None) -> list[JobRecord]:
        return [JobRecord.model_validate(d) for d in self._list_records(JOBS, kind)]

    def put_graph(self, record: GraphRecord | dict[str, Any]) -> None:
        self._put(GRAPHS, record)

    def get_graph(self, graph_id: str) -> GraphRecord | None:
        return _typed(GraphRecord, self._get_record(GRAPHS, graph_id))

    def list_graphs(self, model: str | None = None) -> list[GraphRecord]:
        return [GraphRecord.model_validate(d) for d in self._list_records(GRAPHS, model)]

    def get_feature(self, sae_id: str, index: int) -> FeatureRecord | None:
        return _typed(FeatureRecord, self._get_feature(sae_id, index))

    def put_features(self, docs: Sequence[FeatureRecord | dict[str, Any]]) -> None:
        """Upsert a batch keyed by (sae_id, index), replacing whole documents.

        Readers see each document either old or new, never half-written. A key repeated in the
        batch keeps its last document.
        """
        plain = [d.model_dump(mode="json", exclude_unset=True) if isinstance(d, Record) else d for d in docs]
        unique = {(d["sae_id"], d["index"]): d for d in map(_feature, plain)}
        if unique:
            self._put_features(list(unique.values()))

    def put_explanations(self, sae_id: str, explanations: dict[int, Explanation]) -> int:
        """Set (replace) the explanation on each feature of `sae_id` named; each document is
        rewritten whole, so a reader sees the explanation with all its scores or not at all.
        Returns how many features were updated (indices without a document are skipped)."""
        docs = []
        for index, explanation in explanations.items():
            doc = self._get_feature(sae_id, index)
            if doc is not None:
                docs.append({**doc, "explanation": explanation.model_dump(mode="json")})
        self.put_features(docs)
        return len(docs)

    def put_neighbours(
        self,
        sae_id: str,
        kind: str,
        partner: str,
        neighbours: Mapping[int, Sequence[FeatureNeighbour | dict[str, Any]]],
    ) -> int:
        """Set the `kind` neighbours in SAE `partner` of every stored feature of `sae_id`:
        those of `neighbours[index]` (most similar first), replacing that kind and partner's old
        ones (a feature not in `neighbours` loses them); other kinds and partners stay. Each
        document is rewritten whole. Returns how many features now have such neighbours."""
        if kind not in NEIGHBOUR_KINDS:
            raise ValueError(f"neighbours: kind must be one of {NEIGHBOUR_KINDS}, got {kind!r}")
        if not isinstance(partner, str) or not partner:
            raise ValueError(f"neighbours: the partner SAE must be a non-empty string, got {partner!r}")
        given = {
            operator.index(index): [FeatureNeighbour.model_validate(n).model_dump(mode="json") for n in items]
            for index, items in neighbours.items()
        }
        for index, items in given.items():
            if any(n["kind"] != kind or n["sae_id"] != partner for n in items):
                raise ValueError(f"feature {sae_id}/{index}: every neighbour given must be a {kind} one in {partner!r}")
        updated, offset = 0, 0
        while True:
            page, total = self._list_features(sae_id, "index", False, offset, MAX_PAGE, None)
            docs = []
            for doc in page:
                kept = [
                    n for n in doc.get("neighbours", []) if not (n.get("kind") == kind and n.get("sae_id") == partner)
                ]
                new = given.get(doc["index"], [])
                updated += bool(new)
                if kept + new != doc.get("neighbours", []):
                    docs.append({**doc, "neighbours": kept + new})
            self.put_features(docs)
            offset += len(page)
            if not page or offset >= total:
                return updated

    def list_features(
        self,
        sae_id: str,
        sort: FeatureSort = "index",
        descending: bool = False,
        offset: int = 0,
        limit: int = 50,
        fields: list[str] | None = None,
    ) -> tuple[list[FeatureRecord], int]:
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
        docs, total = self._list_features(sae_id, sort, descending, offset, limit, fields)
        return [FeatureRecord.model_validate(d) for d in docs], total

    def features_for_token(self, sae_id: str, token: str, limit: int = 20) -> list[TokenMatch]:
        """Features whose `top_tokens` hold `token`, strongest first (then by index).

        Each result is `{"sae_id", "index", "density", "max_activation", "top_token"}`, where
        `top_token` is the matching `top_tokens` entry (the strongest if it repeats).
        """
        _check_limit(limit)
        return [TokenMatch.model_validate(d) for d in self._features_for_token(sae_id, token, limit)]

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


def _validated(kind: Kind, record: Record | dict[str, Any]) -> Record:
    """`record` as its kind's model; a dict that does not fit is a ValueError naming the field."""
    if isinstance(record, kind.record):
        return record
    if not isinstance(record, dict):
        raise ValueError(
            f"{kind.collection}: records must be {kind.record.__name__} or dicts, got {type(record).__name__}"
        )
    try:
        return kind.record.model_validate(_without_id(record))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(record)"
        raise ValueError(f"{kind.collection} {record.get(kind.key)!r}: field {field!r}: {first['msg']}") from None


def _typed(model: type[R], doc: dict[str, Any] | None) -> R | None:
    return None if doc is None else model.model_validate(doc)


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
    index: Any = doc.get("index")  # anything: operator.index raises TypeError for non-integers
    try:
        doc["index"] = operator.index(index)  # numpy/torch ints become int
    except TypeError:
        raise ValueError(
            f"feature of {doc['sae_id']}: field 'index' must be an integer, got {doc.get('index')!r}"
        ) from None
    if isinstance(doc["index"], bool) or doc["index"] < 0:
        raise ValueError(f"feature of {doc['sae_id']}: field 'index' must be >= 0, got {doc['index']!r}")
    where = f"feature {doc['sae_id']}/{doc['index']}"
    for field in ("density", "max_activation"):
        value: Any = doc.get(field)
        if isinstance(value, bool) or not hasattr(value, "__float__"):  # numbers, numpy, 0-d tensors
            raise ValueError(f"{where}: field {field!r} must be a number, got {value!r}")
        doc[field] = float(value)
        if not math.isfinite(doc[field]):
            raise ValueError(f"{where}: field {field!r} must be finite (it is a sort key), got {value!r}")
    doc.pop("score", None)  # derived here, never taken from the caller
    if doc.get("explanation") is not None:
        try:
            explanation = Explanation.model_validate(doc["explanation"])
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in ("explanation", *first["loc"]))
            raise ValueError(f"{where}: field {field!r}: {first['msg']}") from None
        doc["explanation"] = explanation.model_dump(mode="json")
        if (score := explanation.summary_score()) is not None:
            doc["score"] = score
    if "neighbours" in doc:
        doc["neighbours"] = _neighbours(doc["neighbours"], doc["sae_id"], doc["index"], where)
    tokens = doc.get("top_tokens", [])
    if not isinstance(tokens, list) or not all(_is_token_entry(t) for t in tokens):
        raise ValueError(
            f"{where}: field 'top_tokens' must be a list of dicts with a string 'token' and a "
            "finite number 'max_activation'"
        )
    return doc


def _neighbours(value: Any, sae_id: str, index: int, where: str) -> list[dict[str, Any]]:
    """A feature's `neighbours` checked: FeatureNeighbour entries, never the feature itself, at
    most MAX_NEIGHBOURS per kind and SAE."""
    if not isinstance(value, list):
        raise ValueError(f"{where}: field 'neighbours' must be a list, got {type(value).__name__}")
    out: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], int] = {}
    for i, item in enumerate(value):
        try:
            neighbour = FeatureNeighbour.model_validate(item)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in ("neighbours", i, *first["loc"]))
            raise ValueError(f"{where}: field {field!r}: {first['msg']}") from None
        if (neighbour.sae_id, neighbour.index) == (sae_id, index):
            raise ValueError(f"{where}: field 'neighbours.{i}': a feature is not its own neighbour")
        group = (neighbour.kind, neighbour.sae_id)
        groups[group] = groups.get(group, 0) + 1
        if groups[group] > MAX_NEIGHBOURS:
            raise ValueError(
                f"{where}: field 'neighbours': more than {MAX_NEIGHBOURS} {neighbour.kind} neighbours in "
                f"{neighbour.sae_id!r}"
            )
        out.append(neighbour.model_dump(mode="json"))
    return out


def _eval_doc(report: Any, sae_id: str) -> dict[str, Any]:
    """`report` (an EvalReport or its JSON) validated as an EvalReport, as the JSON the store
    keeps; a field that does not fit, or a number that is not finite (JSON has no NaN), is a
    ValueError naming it."""
    from lm_saes.evals.suite import EvalReport

    where = f"saes {sae_id!r}: field 'evals"
    if isinstance(report, EvalReport):
        doc = report.model_dump(mode="json")
    elif isinstance(report, dict):
        try:
            doc = EvalReport.model_validate(report).model_dump(mode="json")
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}.{field}': {first['msg']}") from None
    else:
        raise ValueError(f"{where}': must be an EvalReport or a dict, got {type(report).__name__}")
    if (path := _non_finite(doc)) is not None:
        raise ValueError(f"{where}{path}': must be a finite number (JSON has no NaN or infinity)")
    return doc


def _non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinite number in a JSON value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if (found := _non_finite(item, f"{path}.{key}")) is not None:
            return found
    return None


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
