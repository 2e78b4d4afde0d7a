"""AnalysisService: feature analysis as jobs, and reads of the stored feature documents."""

from __future__ import annotations

import uuid

import grpc

from lm_saes.config import AnalyzeConfig
from lm_saes.jobs import Executor
from lm_saes.rpc.v1 import analysis_pb2, analysis_pb2_grpc
from lm_saes.search.features import FeatureSearch, SearchNotReady, UnknownSae
from lm_saes.stores.documents import DocumentStore
from lm_saes.stores.documents.base import FeatureSort
from services.analysis.settings import AnalysisSettings
from services.common.admission import Admission, parse_object, parsed
from services.common.auth import caller
from services.common.errors import RequestError, invalid, rpc, short
from services.common.job_servicer import MAX_OFFSET, MAX_PAGE, submit_job

SORTS: dict[int, FeatureSort] = {
    analysis_pb2.FEATURE_SORT_INDEX: "index",
    analysis_pb2.FEATURE_SORT_DENSITY: "density",
    analysis_pb2.FEATURE_SORT_MAX_ACTIVATION: "max_activation",
    analysis_pb2.FEATURE_SORT_SCORE: "score",
}
MAX_ID = 200
SERVICE_SET = frozenset({"documents", "sae", "llm", "device"})  # autointerp fields callers may not set
MAX_INDEX = 2**31 - 1
MAX_QUERY = 500  # characters of a SearchFeatures query
MAX_HITS = 100
SEARCH_WAIT_S = 20.0  # longest a search waits for the first index build before answering UNAVAILABLE
SEARCH_STALE_WAIT_S = 1.0  # then, longest it waits for a refresh before answering from the last indexes


def _sae_id(value: str, field: str = "sae_id") -> str:
    if len(value) > MAX_ID:
        raise invalid(field, f"at most {MAX_ID} characters")
    return value


class AnalysisServicer(analysis_pb2_grpc.AnalysisServiceServicer):
    kind = "analysis"

    def __init__(self, executor: Executor, documents: DocumentStore, settings: AnalysisSettings):
        self.executor = executor
        self.documents = documents
        self.settings = settings
        self.admission = Admission(settings)
        self.output_root = settings.object_store.rstrip("/")
        # built on the first search, refreshed as explanations change
        self.search = FeatureSearch(documents, stale_wait_s=SEARCH_STALE_WAIT_S)

    @rpc
    def Submit(self, request, context):
        if not request.sae_uri:
            raise invalid("sae_uri", "name the folder or s3:// URI of the SAE")
        raw = parse_object("config_json", request.config_json or "{}", self.settings.max_config_bytes)
        # Results must land where this service reads them.
        raw.update(documents=self.executor.documents_uri)
        raw.setdefault("output", f"{self.output_root}/analysis")
        if request.sae_id:
            raw["sae_id"] = _sae_id(request.sae_id)
        cfg = parsed(raw, AnalyzeConfig, "(submitted config)")
        if cfg.shards > self.settings.max_job_shards:
            raise invalid("shards", f"at most {self.settings.max_job_shards} per job on this service (max_job_shards)")
        sae_uri, cfg = self.admission.analysis(request.sae_uri, cfg)
        if cfg.sae_id:
            self._check_sae_id(cfg.sae_id, sae_uri)
        config = {"sae": sae_uri, "analyze": cfg.model_dump(mode="json", exclude_none=True)}
        return submit_job(self.executor, self.kind, config, request.request_id or uuid.uuid4().hex)

    @rpc
    def SubmitAutointerp(self, request, context):
        """Validated whole before it is queued: the SAE analyzed, the features in range, the
        config complete; where results go, what SAE file is read and which LLM is asked are the
        service's, never the caller's (no path or URL of theirs is followed)."""
        from lm_saes.autointerp.run import AutointerpConfig

        sae_id = _sae_id(request.sae_id)
        if not sae_id:
            raise invalid("sae_id", "name an analyzed SAE of this service's document store")
        raw = parse_object("config_json", request.config_json or "{}", self.settings.max_config_bytes)
        for key in SERVICE_SET & raw.keys():
            raise invalid(key, "is set by the service, not by the request; leave it out of config_json")
        features = raw.get("features")
        if isinstance(features, list) and len(features) > self.settings.max_autointerp_features:
            raise invalid("features", f"at most {self.settings.max_autointerp_features} features per job")
        record = self.documents.get_sae(sae_id)
        if record is None:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND, f"no SAE {short(sae_id)} in the document store; analyze it first"
            )
        if not any(a.state == "succeeded" for a in self.documents.list_analyses(sae_id)):
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION, f"SAE {short(sae_id)} has no finished analysis; analyze it first"
            )
        raw.update(
            sae_id=sae_id,
            documents=self.executor.documents_uri,
            llm={
                "base_url": self.settings.llm_base_url or "http://127.0.0.1:1/v1",  # never called: embedding only
                "model": self.settings.llm_model,
                "max_concurrency": self.settings.llm_max_concurrency,
                "timeout_s": self.settings.llm_timeout_s,
            },
        )
        cfg = parsed(raw, AutointerpConfig, "(submitted config)")
        if cfg.features and record.d_sae and max(cfg.features) >= record.d_sae:
            raise invalid("features", f"indices must be below the SAE's {record.d_sae} features")
        if not self.settings.llm_base_url and (cfg.explain or set(cfg.scorers) - {"embedding"}):
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this service has no LLM endpoint (LM_SAES_LLM_BASE_URL); without one only explain=false "
                "with scorers=['embedding'] can run",
            )
        config = {"autointerp": cfg.model_dump(mode="json", exclude={"llm": {"api_key"}})}
        return submit_job(self.executor, self.kind, config, request.request_id or uuid.uuid4().hex)

    def _check_sae_id(self, sae_id: str, sae_uri: str) -> None:
        """An SAE id already given to another artifact is not overwritten (except by an admin)."""
        record = self.documents.get_sae(_sae_id(sae_id))
        if record is not None and record.artifact not in (None, sae_uri) and not caller().has("admin"):
            raise RequestError(
                grpc.StatusCode.ALREADY_EXISTS, f"sae_id: {short(sae_id)} already names another SAE; choose another id"
            )

    @rpc
    def GetFeature(self, request, context):
        _sae_id(request.sae_id)
        if not 0 <= request.index <= MAX_INDEX:
            raise invalid("index", f"must be in [0, {MAX_INDEX}]")
        doc = self.documents.get_feature(request.sae_id, int(request.index))
        if doc is None:
            known = self.documents.get_sae(request.sae_id) is not None
            what = (
                f"feature {request.index} of SAE {short(request.sae_id)}" if known else f"SAE {short(request.sae_id)}"
            )
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no {what} in the document store; analyze it first")
        return analysis_pb2.Feature(
            sae_id=doc.sae_id,
            index=doc.index,
            density=doc.density or 0.0,
            max_activation=doc.max_activation or 0.0,
            mean_activation=doc.mean_activation or 0.0,
            document_json=doc.model_dump_json(),
        )

    @rpc
    def ListFeatures(self, request, context):
        _sae_id(request.sae_id)
        if request.sort not in SORTS:
            raise invalid(
                "sort", f"unknown sort {request.sort}; use one of {sorted(SORTS)} (index, density, max_activation)"
            )
        if not 0 <= request.offset <= MAX_OFFSET:
            raise invalid("offset", f"must be in [0, {MAX_OFFSET}]")
        if not 0 <= request.limit <= MAX_PAGE:
            raise invalid("limit", f"must be in [0, {MAX_PAGE}] (0: 50)")
        if self.documents.get_sae(request.sae_id) is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no SAE {short(request.sae_id)} in the document store")
        page, total = self.documents.list_features(
            request.sae_id,
            sort=SORTS[request.sort],
            descending=request.descending,
            offset=request.offset,
            limit=request.limit or 50,
            fields=["density", "max_activation", "mean_activation"],
        )
        features = [
            analysis_pb2.Feature(
                sae_id=f.sae_id,
                index=f.index,
                density=f.density or 0.0,
                max_activation=f.max_activation or 0.0,
                mean_activation=f.mean_activation or 0.0,
            )
            for f in page
        ]
        return analysis_pb2.ListFeaturesResponse(features=features, total=total)

    @rpc
    def SearchFeatures(self, request, context):
        query = request.query
        if len(query) > MAX_QUERY:
            raise invalid("query", f"at most {MAX_QUERY} characters, got {len(query)}")
        if not query.strip():
            raise invalid("query", "must not be empty or blank")
        if "\x00" in query:
            raise invalid("query", "must not contain NUL characters")
        if not 0 <= request.k <= MAX_HITS:
            raise invalid("k", f"must be in [0, {MAX_HITS}] (0: 10), got {request.k}")
        sae_id = _sae_id(request.sae_id) or None
        if sae_id is not None and self.documents.get_sae(sae_id) is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no SAE {short(sae_id)} in the document store")
        try:
            hits = self.search.search(query.strip(), k=request.k or 10, sae_id=sae_id, wait_s=SEARCH_WAIT_S)
        except UnknownSae as error:  # removed between the check and the search
            raise RequestError(grpc.StatusCode.NOT_FOUND, str(error)) from None
        except SearchNotReady as error:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, str(error)) from None
        except ImportError as error:  # the autointerp extra (embedding model) is not installed here
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"feature search is not available: {error}") from None
        return analysis_pb2.SearchFeaturesResponse(
            hits=[
                analysis_pb2.SearchHit(
                    sae_id=h.sae_id,
                    index=h.index,
                    similarity=h.similarity,
                    explanation=h.explanation,
                    **({"score": h.score} if h.score is not None else {}),
                )
                for h in hits
            ]
        )
