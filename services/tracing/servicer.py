"""CircuitService: traces as jobs (worker processes), graph reads, and interventions served in
process from a small cache of loaded replacement models."""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict
from typing import Literal

import grpc

from lm_saes.circuits import Intervention, ReplacementModel, TranscoderSet, intervene, prompt_state
from lm_saes.circuits.qk import qk_attribution
from lm_saes.circuits.transcoders import transcoders_manifest
from lm_saes.config import ModelConfig, TraceConfig
from lm_saes.jobs import Executor, job_id_for
from lm_saes.models import load_language_model
from lm_saes.records import GraphRecord
from lm_saes.rpc.v1 import circuits_pb2, circuits_pb2_grpc
from lm_saes.stores import ObjectNotFound, open_store
from services.common.admission import Admission, parse_object, parsed
from services.common.auth import caller
from services.common.errors import RequestError, invalid, rpc, short
from services.common.job_servicer import submit_job
from services.common.settings import ServiceSettings

MODES: dict[int, Literal["scale", "clamp"]] = {
    circuits_pb2.INTERVENTION_MODE_SCALE: "scale",
    circuits_pb2.INTERVENTION_MODE_CLAMP: "clamp",
}
MAX_CHANGES = 256
MAX_ATTENTION_TOP_K = 50
MAX_VALUE = 1e6  # |scale factor| or |clamped activation|: far past any real activation, far from overflow


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


def graph_to_proto(record: GraphRecord, with_document: bool = True) -> circuits_pb2.Graph:
    return circuits_pb2.Graph(
        id=record.id,
        model=record.model,
        prompt=record.prompt,
        replacement_score=record.scores.replacement,
        completeness_score=record.scores.completeness,
        artifact_uri=record.artifact or "",
        created=record.created or "",
        document_json=record.model_dump_json() if with_document else "",
    )


class CircuitServicer(circuits_pb2_grpc.CircuitServiceServicer):
    kind = "tracing"

    def __init__(self, executor: Executor, settings: ServiceSettings, device: str = "cpu", cached_sets: int = 2):
        self.executor = executor
        self.documents = executor.documents
        self.settings = settings
        self.admission = Admission(settings)
        self.output_root = settings.object_store.rstrip("/")
        self.cache = ReplacementCache(device, cached_sets)

    @rpc
    def Submit(self, request, context):
        if not request.prompt.strip():
            raise invalid("prompt", "give the text to trace")
        if len(request.prompt) > self.settings.max_text_chars:
            raise invalid("prompt", f"{len(request.prompt)} characters; at most {self.settings.max_text_chars}")
        if not request.transcoders_uri:
            raise invalid("transcoders_uri", "name a transcoder set (folder or s3:// prefix with transcoders.json)")
        raw = parse_object("config_json", request.config_json or "{}", self.settings.max_config_bytes)
        cfg = parsed(raw, TraceConfig, "(trace config)")
        ceiling = self.settings.max_job_memory_gb
        if "max_memory_gb" in raw and cfg.max_memory_gb > ceiling:
            raise invalid(
                "max_memory_gb", f"{cfg.max_memory_gb:g} is above this server's max_job_memory_gb = {ceiling:g}"
            )
        # unset, a trace stops at the server's ceiling when that is below the library default
        cfg = cfg.model_copy(update={"max_memory_gb": min(cfg.max_memory_gb, ceiling)})
        transcoders = self.admission.roots.readable("transcoders_uri", request.transcoders_uri)
        try:
            spec = transcoders_manifest(open_store(transcoders, create_bucket=False))
        except (ObjectNotFound, FileNotFoundError, NotADirectoryError, ValueError):
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"transcoders_uri: no transcoders at {short(request.transcoders_uri)} (expected transcoders.json "
                "of a [transcoders] run, or clt/clt.json of a [clt] run)",
            ) from None
        if isinstance(spec, dict) and spec.get("model"):
            self.admission.roots.model("transcoders_uri", str(spec["model"]))
        request_id = request.request_id or uuid.uuid4().hex
        job_id = job_id_for(self.kind, request_id, caller().name)
        config = {
            "prompt": request.prompt,
            "transcoders": transcoders,
            "trace": cfg.model_dump(mode="json"),
            "objects": self.output_root,
            "graph_id": job_id.replace(f"{self.kind}-", "graph-", 1),
        }
        return submit_job(self.executor, self.kind, config, request_id)

    def _graph(self, graph_id: str, context) -> GraphRecord:
        record = self.documents.get_graph(graph_id) if graph_id and len(graph_id) <= 100 else None
        if record is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no graph {short(graph_id)}; list them with ListGraphs")
        return record

    @rpc
    def GetGraph(self, request, context):
        return graph_to_proto(self._graph(request.id, context))

    @rpc
    def ListGraphs(self, request, context):
        if len(request.model) > 200:
            raise invalid("model", "at most 200 characters")
        records = self.documents.list_graphs(request.model or None)
        return circuits_pb2.ListGraphsResponse(graphs=[graph_to_proto(r, with_document=False) for r in records])

    @rpc
    def Intervene(self, request, context):
        if not request.changes:
            raise invalid("changes", "give at least one feature change")
        if len(request.changes) > MAX_CHANGES:
            raise invalid("changes", f"at most {MAX_CHANGES} per request")
        if not 0 <= request.top_k <= 100:
            raise invalid("top_k", "between 1 and 100 (0 means 10)")
        for number, change in enumerate(request.changes):
            if change.mode not in MODES:
                raise invalid(f"changes[{number}].mode", f"unknown mode {change.mode}; 0 is scale, 1 is clamp")
            if not (math.isfinite(change.value) and abs(change.value) <= MAX_VALUE):
                raise invalid(
                    f"changes[{number}].value", f"must be a finite number within ±{MAX_VALUE:g}, got {change.value!r}"
                )
        changes = [Intervention(c.layer, c.position, int(c.feature), c.value, MODES[c.mode]) for c in request.changes]
        record = self._graph(request.graph_id, context)
        replacement = self.cache.get(record.transcoders)
        with self.cache.lock:  # one forward at a time per process: the bridge's hooks are shared state
            state = prompt_state(replacement, record.prompt)
            try:
                result = intervene(replacement, state, changes, request.top_k or 10, request.freeze_active_set)
            except ValueError as error:
                raise invalid("changes", str(error)) from None

        def logits(items):
            return [
                circuits_pb2.TokenLogit(token_id=t.token, token=t.text, logit=t.logit, probability=t.probability)
                for t in items
            ]

        return circuits_pb2.InterveneResponse(before=logits(result.before), after=logits(result.after))

    @rpc
    def ExplainAttention(self, request, context):
        if not 0 <= request.top_k <= MAX_ATTENTION_TOP_K:
            raise invalid("top_k", f"between 1 and {MAX_ATTENTION_TOP_K} (0 means 10)")
        record = self._graph(request.graph_id, context)
        n_pos = len(record.tokens)
        if not 0 <= request.layer < record.n_layers:
            raise invalid("layer", f"{request.layer} is outside the model's layers 0..{record.n_layers - 1}")
        for field in ("query_position", "key_position"):
            if not 0 <= getattr(request, field) < n_pos:
                raise invalid(field, f"{getattr(request, field)} is outside the prompt's positions 0..{n_pos - 1}")
        if request.key_position > request.query_position:
            raise invalid("key_position", "attention is causal: the key must be at or before the query position")
        replacement = self.cache.get(record.transcoders)
        if not 0 <= request.head < replacement.model.bridge.cfg.n_heads:
            raise invalid("head", f"{request.head} is outside 0..{replacement.model.bridge.cfg.n_heads - 1}")
        with self.cache.lock:  # one forward at a time per process: the bridge's hooks are shared state
            state = prompt_state(replacement, record.prompt)
            qk = qk_attribution(
                replacement, state, request.layer, request.head, request.query_position, request.key_position,
                top_pairs=request.top_k or 10,
            )  # fmt: skip
        top_k = request.top_k or 10

        def side(values) -> list:
            order = values.abs().topk(min(top_k, len(values))).indices.tolist()
            return [circuits_pb2.NodeContribution(node_id=qk.node_ids[i], contribution=float(values[i])) for i in order]

        return circuits_pb2.ExplainAttentionResponse(
            score=qk.score,
            query_side=side(qk.query_side),
            key_side=side(qk.key_side),
            query_bias=qk.query_bias,
            key_bias=qk.key_bias,
            pairs=[
                circuits_pb2.NodePair(query_node_id=qk.node_ids[a], key_node_id=qk.node_ids[b], contribution=v)
                for a, b, v in qk.pairs
            ],
        )
