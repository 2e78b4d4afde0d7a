"""CircuitService: traces as jobs (worker processes), graph reads, and interventions served in
process from a small cache of loaded replacement models."""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict

import grpc

from lm_saes.circuits import Intervention, ReplacementModel, TranscoderSet, intervene, prompt_state
from lm_saes.config import ConfigError, ModelConfig, TraceConfig, parse_config
from lm_saes.jobs import LocalExecutor, job_id_for
from lm_saes.models import load_language_model
from lm_saes.proto.lm_saes.v1 import circuits_pb2, circuits_pb2_grpc
from lm_saes.stores import ObjectNotFound, open_store
from lm_saes.wire import job_to_proto
from services.common.errors import rpc
from services.common.jobs import JobRPCs

MODES = {circuits_pb2.INTERVENTION_MODE_SCALE: "scale", circuits_pb2.INTERVENTION_MODE_CLAMP: "clamp"}
MAX_CHANGES = 256


class ReplacementCache:
    """Loaded replacement models by transcoder-set location, least recently used evicted."""

    def __init__(self, device: str, size: int):
        self.device = device
        self.size = size
        self.models: OrderedDict[str, ReplacementModel] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, location: str) -> ReplacementModel:
        with self.lock:
            if location in self.models:
                self.models.move_to_end(location)
                return self.models[location]
            transcoders = TranscoderSet.load(location, self.device)
            model = load_language_model(ModelConfig(name=transcoders.model, device=self.device))
            self.models[location] = ReplacementModel(model, transcoders)
            while len(self.models) > self.size:
                self.models.popitem(last=False)
            return self.models[location]


def graph_to_proto(record: dict, with_document: bool = True) -> circuits_pb2.Graph:
    return circuits_pb2.Graph(
        id=record["id"], model=record["model"], prompt=record["prompt"],
        replacement_score=record["scores"]["replacement"], completeness_score=record["scores"]["completeness"],
        artifact_uri=record["artifact"], created=record.get("created", ""),
        document_json=json.dumps(record) if with_document else "",
    )


class CircuitServicer(JobRPCs, circuits_pb2_grpc.CircuitServiceServicer):
    kind = "tracing"

    def __init__(self, executor: LocalExecutor, output_root: str, device: str = "cpu", cached_sets: int = 2):
        self.executor = executor
        self.documents = executor.documents
        self.output_root = output_root.rstrip("/")
        self.cache = ReplacementCache(device, cached_sets)

    @rpc
    def Submit(self, request, context):
        if not request.prompt.strip():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt: give the text to trace")
        if not request.transcoders_uri:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "transcoders_uri: name a transcoder set (folder or s3:// prefix with transcoders.json)")
        try:
            raw = json.loads(request.config_json) if request.config_json else {}
            if not isinstance(raw, dict):
                raise ValueError("must be a JSON object")
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"config_json: {error}")
        try:
            cfg = parse_config(raw, TraceConfig, "(trace config)")
        except ConfigError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        try:
            open_store(request.transcoders_uri).get_json("transcoders.json")
        except (ObjectNotFound, FileNotFoundError, ValueError):
            context.abort(grpc.StatusCode.NOT_FOUND, f"transcoders_uri: no transcoder set at {request.transcoders_uri!r} "
                          "(expected transcoders.json; train one with a [transcoders] config)")
        request_id = request.request_id or uuid.uuid4().hex
        config = {"prompt": request.prompt, "transcoders": request.transcoders_uri,
                  "trace": cfg.model_dump(mode="json"), "objects": self.output_root,
                  "graph_id": job_id_for(self.kind, request_id).replace(f"{self.kind}-", "graph-", 1)}
        return job_to_proto(self.executor.submit(self.kind, config, request_id))

    def _graph(self, graph_id: str, context) -> dict:
        record = self.documents.get_graph(graph_id) if graph_id else None
        if record is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no graph {graph_id!r}; list them with ListGraphs")
        return record

    @rpc
    def GetGraph(self, request, context):
        return graph_to_proto(self._graph(request.id, context))

    @rpc
    def ListGraphs(self, request, context):
        records = self.documents.list_graphs(request.model or None)
        return circuits_pb2.ListGraphsResponse(graphs=[graph_to_proto(r, with_document=False) for r in records])

    @rpc
    def Intervene(self, request, context):
        record = self._graph(request.graph_id, context)
        if not request.changes:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "changes: give at least one feature change")
        if len(request.changes) > MAX_CHANGES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"changes: at most {MAX_CHANGES} per request")
        if not 0 <= request.top_k <= 100:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "top_k: between 1 and 100 (0 means 10)")
        changes = [Intervention(c.layer, c.position, int(c.feature), c.value, MODES.get(c.mode, "scale"))
                   for c in request.changes]
        replacement = self.cache.get(record["transcoders"])
        with self.cache.lock:  # one forward at a time per process: the bridge's hooks are shared state
            state = prompt_state(replacement, record["prompt"])
            try:
                result = intervene(replacement, state, changes, request.top_k or 10, request.freeze_active_set)
            except ValueError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"changes: {error}")

        def logits(items):
            return [circuits_pb2.TokenLogit(token_id=t.token, token=t.text, logit=t.logit, probability=t.probability)
                    for t in items]

        return circuits_pb2.InterveneResponse(before=logits(result.before), after=logits(result.after))
