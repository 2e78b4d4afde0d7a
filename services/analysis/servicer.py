"""AnalysisService: feature analysis as jobs, and reads of the stored feature documents."""

from __future__ import annotations

import json
import uuid

import grpc

from lm_saes.config import AnalyzeConfig, ConfigError, parse_config
from lm_saes.jobs import LocalExecutor
from lm_saes.proto.lm_saes.v1 import analysis_pb2, analysis_pb2_grpc
from lm_saes.stores.documents import DocumentStore
from lm_saes.wire import job_to_proto
from services.common.errors import rpc
from services.common.jobs import JobRPCs

SORTS = {analysis_pb2.FEATURE_SORT_INDEX: "index", analysis_pb2.FEATURE_SORT_DENSITY: "density",
         analysis_pb2.FEATURE_SORT_MAX_ACTIVATION: "max_activation"}


class AnalysisServicer(JobRPCs, analysis_pb2_grpc.AnalysisServiceServicer):
    kind = "analysis"

    def __init__(self, executor: LocalExecutor, documents: DocumentStore, output_root: str):
        self.executor = executor
        self.documents = documents
        self.output_root = output_root.rstrip("/")

    @rpc
    def Submit(self, request, context):
        if not request.sae_uri:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "sae_uri: name the folder or s3:// URI of the SAE")
        try:
            raw = json.loads(request.config_json) if request.config_json else {}
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"config_json: {error}")
        # Results must land where this service reads them.
        raw.update(documents=self.executor.documents_uri)
        raw.setdefault("output", f"{self.output_root}/analysis")
        if request.sae_id:
            raw["sae_id"] = request.sae_id
        try:
            cfg = parse_config(raw, AnalyzeConfig, "(submitted config)")
        except ConfigError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        config = {"sae": request.sae_uri, "analyze": cfg.model_dump(mode="json", exclude_none=True)}
        return job_to_proto(self.executor.submit(self.kind, config, request.request_id or uuid.uuid4().hex))

    @rpc
    def GetFeature(self, request, context):
        doc = self.documents.get_feature(request.sae_id, int(request.index))
        if doc is None:
            known = self.documents.get_sae(request.sae_id) is not None
            what = f"feature {request.index} of SAE {request.sae_id!r}" if known else f"SAE {request.sae_id!r}"
            context.abort(grpc.StatusCode.NOT_FOUND, f"no {what} in the document store; analyze it first")
        return analysis_pb2.Feature(
            sae_id=doc["sae_id"], index=doc["index"], density=doc["density"], max_activation=doc["max_activation"],
            mean_activation=doc.get("mean_activation", 0.0), document_json=json.dumps(doc),
        )

    @rpc
    def ListFeatures(self, request, context):
        if self.documents.get_sae(request.sae_id) is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no SAE {request.sae_id!r} in the document store")
        try:
            page, total = self.documents.list_features(
                request.sae_id, sort=SORTS[request.sort], descending=request.descending,
                offset=request.offset, limit=request.limit or 50,
                fields=["density", "max_activation", "mean_activation"],
            )
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        features = [analysis_pb2.Feature(sae_id=f["sae_id"], index=f["index"], density=f["density"],
                                         max_activation=f["max_activation"],
                                         mean_activation=f.get("mean_activation", 0.0)) for f in page]
        return analysis_pb2.ListFeaturesResponse(features=features, total=total)
