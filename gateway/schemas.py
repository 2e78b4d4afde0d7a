"""Request and response models: the HTTP API's specification (served as /openapi.json).

Stored documents carry more fields than listed here; models that mirror them allow extras so
new analysis fields reach clients without a gateway release.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_PAGE = 200
MAX_OFFSET = 1_000_000
MAX_INDEX = 2**31 - 1
MAX_ID = 200
MAX_URI = 1024
JobKind = Literal["training", "analysis", "activations", "tracing"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "unspecified"]
FeatureSort = Literal["index", "density", "max_activation"]


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Problem(BaseModel):
    """RFC 7807 problem details (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    field: str | None = Field(None, description="The request field at fault (validation errors)")


class Model(Open):
    name: str
    n_layers: int | None = None
    d_model: int | None = None


class Sae(Open):
    id: str
    model: str
    hook_in: str | None = None
    hook_out: str | None = None
    architecture: str | None = None
    d_sae: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict, description="Evaluation: L0, explained variance, ...")
    artifact: str | None = Field(None, description="URI of the saved SAE")
    created: str | None = None


class Analysis(Open):
    id: str
    sae_id: str
    state: str
    tokens: int | None = None
    created: str | None = None
    updated: str | None = None


class SaeDetail(Sae):
    analyses: list[Analysis] = Field(default_factory=list)


class FeatureSummary(BaseModel):
    sae_id: str
    index: int
    density: float
    max_activation: float
    mean_activation: float | None = None


class FeaturePage(BaseModel):
    items: list[FeatureSummary]
    total: int
    offset: int
    limit: int
    sort: FeatureSort
    order: Literal["asc", "desc"]


class Feature(Open):
    """A feature's whole analysis document."""

    sae_id: str
    index: int
    density: float
    max_activation: float
    mean_activation: float | None = None
    histogram: dict[str, Any] | None = None
    top_examples: list[dict[str, Any]] = Field(default_factory=list)
    quantile_samples: list[dict[str, Any]] = Field(default_factory=list)
    top_tokens: list[dict[str, Any]] = Field(default_factory=list)
    logit_lens: dict[str, Any] | None = None


class ActivationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=100_000, description="Text to run (BOS is added by the service)")
    top_k: int = Field(5, ge=1, le=MAX_PAGE, description="Strongest features per token")
    feature: int | None = Field(None, ge=0, le=MAX_INDEX, description="Return only this feature's value per token")


class FeatureValue(BaseModel):
    index: int
    value: float


class TokenFeatures(BaseModel):
    position: int
    token: str
    token_id: int
    features: list[FeatureValue]


class ActivationResponse(BaseModel):
    sae_id: str
    feature: int | None = None
    tokens: list[TokenFeatures]


class TokenMatch(BaseModel):
    sae_id: str
    index: int
    density: float
    max_activation: float
    top_token: dict[str, Any]


class TextSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=100_000)
    limit: int = Field(20, ge=1, le=MAX_PAGE)
    rank_by: Literal["sum", "max"] = "sum"


class TextMatch(BaseModel):
    index: int
    sum: float = Field(description="Activation summed over the text's tokens")
    max: float = Field(description="Strongest activation on any token")
    max_position: int = Field(description="Position of that token")
    tokens_active: int


class TextSearchResponse(BaseModel):
    sae_id: str
    rank_by: Literal["sum", "max"]
    tokens: list[str]
    features: list[TextMatch]


class TrainingJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(description="A lm_saes.config.RunConfig as a dict")
    request_id: str | None = Field(None, max_length=MAX_ID, description="Idempotency key: a repeat of yours "
                                   "returns the same job")


class AnalysisJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sae_uri: str = Field(min_length=1, max_length=MAX_URI, description="Folder or s3:// URI of the saved "
                         "SAE, inside the server's object store or read roots")
    sae_id: str | None = Field(None, max_length=MAX_ID)
    config: dict[str, Any] | None = Field(None, description="A lm_saes.config.AnalyzeConfig as a dict")
    request_id: str | None = Field(None, max_length=MAX_ID)


class Job(Open):
    id: str
    kind: str
    state: JobState
    progress: float = 0.0
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    request_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    created: str | None = None
    updated: str | None = None


class GraphScores(BaseModel):
    replacement: float = Field(description="Share of token-to-logit influence that avoids error nodes")
    completeness: float = Field(description="Influence-weighted share of node inputs from non-error nodes")


class GraphNode(Open):
    """A node of a pruned attribution graph; ids follow circuit-tracer (`{layer}_{feature}_{pos}`)."""

    id: str
    kind: Literal["feature", "error", "token", "logit"]
    layer: int = Field(description="-1 for token embeddings, n_layers for logits")
    position: int
    feature: int | None = None
    activation: float | None = None
    token: str | None = None
    probability: float | None = None
    influence: float = Field(0.0, description="Influence on the output logits")
    cumulative: float = Field(0.0, description="Share of total influence held by nodes at least this influential "
                                               "(the pruning slider keeps nodes at or below its value)")


class GraphLink(BaseModel):
    source: str
    target: str
    weight: float = Field(description="Direct effect of source on target")


class GraphLogit(BaseModel):
    token: str
    token_id: int
    probability: float


class GraphSummary(Open):
    id: str
    model: str
    prompt: str
    scores: GraphScores
    created: str | None = None
    layers: list[int] = Field(default_factory=list, description="Layers with a transcoder")
    artifact: str | None = Field(None, description="URI of the full graph (adjacency matrix) in the object store")


class Graph(GraphSummary):
    transcoders: str
    n_layers: int
    tokens: list[str]
    logits: list[GraphLogit]
    thresholds: dict[str, float]
    counts: dict[str, int]
    saes: dict[str, str] = Field(default_factory=dict, description="layer -> SAE id whose analysis describes "
                                                                   "that layer's features")
    seconds: float | None = None
    nodes: list[GraphNode]
    links: list[GraphLink]


class CircuitList(BaseModel):
    items: list[GraphSummary]


class TraceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=20_000)
    transcoders: str = Field(min_length=1, max_length=MAX_URI, description="A transcoder set: folder or s3:// "
                             "prefix with transcoders.json, inside the server's object store or read roots")
    node_threshold: float | None = Field(None, ge=0, le=1)
    edge_threshold: float | None = Field(None, ge=0, le=1)
    max_links: int | None = Field(None, ge=1, le=100_000)
    max_logits: int | None = Field(None, ge=1, le=50)
    request_id: str | None = Field(None, max_length=MAX_ID)


class FeatureChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layer: int = Field(ge=0, le=10_000)
    position: int = Field(ge=0, le=100_000)
    feature: int = Field(ge=0, le=MAX_INDEX)
    value: float = Field(allow_inf_nan=False, ge=-1e6, le=1e6, description="Scale factor or clamped value")
    mode: Literal["scale", "clamp"] = "scale"


class InterventionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    changes: list[FeatureChange] = Field(min_length=1, max_length=256)
    top_k: int = Field(10, ge=1, le=100)
    freeze_active_set: bool = Field(False, description="Downstream features keep the prompt's active set "
                                    "(the graph's linear model); else TopK transcoders reselect their top k")


class TokenLogit(BaseModel):
    token_id: int
    token: str
    logit: float
    probability: float


class InterventionResult(BaseModel):
    before: list[TokenLogit]
    after: list[TokenLogit]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
