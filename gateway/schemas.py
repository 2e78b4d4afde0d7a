"""Request and response models: the HTTP API's specification (served as /openapi.json).

What the API returns from the document store is declared once, in `lm_saes.records`: the
response models here derive from those (named as the API names them), so a stored field and
its API field cannot drift apart. Records allow extras, so new analysis fields reach clients
without a gateway release.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from lm_saes import records
from lm_saes.evals.suite import EvalReport
from lm_saes.records import (
    MAX_PAGE,
    FeatureNeighbour,
    FeatureSummary,
    GraphLink,
    GraphLogit,
    GraphNode,
    GraphScores,
    GraphSummary,
    JobKind,
    JobState,
    NeighbourKind,
    TokenMatch,
)
from lm_saes.search import features as search
from lm_saes.stores.documents.base import FeatureSort

MAX_OFFSET = 1_000_000
MAX_TOP_K = 200  # features per token in an activation answer
MAX_STRENGTH = 1e4
MAX_STEER_FEATURES = 16
MAX_INDEX = 2**31 - 1
MAX_ID = 200
MAX_URI = 1024
MAX_QUERY = 500  # characters of a feature-search query
MAX_HITS = 100
__all__ = [
    "FeatureNeighbour",
    "FeatureSummary",
    "GraphLink",
    "GraphLogit",
    "GraphNode",
    "GraphScores",
    "GraphSummary",
    "JobKind",
    "JobState",
    "TokenMatch",
]


class Problem(BaseModel):
    """RFC 7807 problem details (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    field: str | None = Field(None, description="The request field at fault (validation errors)")


class Model(records.ModelRecord):
    """A language model features were computed on."""


class Sae(records.SaeRecord):
    """A trained SAE or transcoder, with its evaluation."""


class Analysis(records.AnalysisRecord):
    """One analysis pass over an SAE's features."""


class SaeDetail(Sae):
    analyses: list[Analysis] = Field(default_factory=list)


class SaeEvals(EvalReport):
    """An SAE's evaluation suite report: each suite's latest run (`lm-saes eval --suite ...
    --documents ... --sae-id ...`, or evals.json beside the SAE when it was analyzed)."""


class FeatureNeighbours(BaseModel):
    """One feature of the SAE and its stored neighbours (those asked for)."""

    index: int
    density: float
    max_activation: float
    neighbours: list[FeatureNeighbour]


class NeighbourPage(BaseModel):
    """A page of an SAE's features with their neighbours, in the listing's order; a feature
    without such neighbours is listed with none, so pages line up with the feature listing."""

    sae_id: str
    partner: str | None = Field(None, description="Only neighbours in this SAE")
    kind: NeighbourKind | None = Field(None, description="Only neighbours of this kind")
    items: list[FeatureNeighbours]
    total: int
    offset: int
    limit: int
    sort: FeatureSort
    order: Literal["asc", "desc"]


class FeaturePage(BaseModel):
    items: list[FeatureSummary]
    total: int
    offset: int
    limit: int
    sort: FeatureSort
    order: Literal["asc", "desc"]


class Feature(records.FeatureRecord):
    """A feature's whole analysis document."""

    density: float
    max_activation: float


class ScoreDistribution(BaseModel):
    """How an SAE's explanations score: a histogram of its features' summary scores."""

    total: int = Field(description="Features of the SAE")
    scored: int = Field(description="Features whose explanation has a summary score")
    mean: float | None = Field(None, description="Mean summary score (None: nothing scored)")
    edges: list[float] = Field(description="Bin edges, from 0 to 1 (the last bin includes 1)")
    counts: list[int] = Field(description="Scored features per bin")


class SearchHit(search.SearchHit):
    """A feature whose explanation is near the query in meaning."""


class SearchResults(BaseModel):
    query: str
    k: int
    sae_id: str | None = None
    hits: list[SearchHit]


class ActivationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=100_000, description="Text to run (BOS is added by the service)")
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="Strongest features per token")
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
    request_id: str | None = Field(
        None, max_length=MAX_ID, description="Idempotency key: a repeat of yours returns the same job"
    )


class AnalysisJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sae_uri: str = Field(
        min_length=1,
        max_length=MAX_URI,
        description="Folder or s3:// URI of the saved SAE, inside the server's object store or read roots",
    )
    sae_id: str | None = Field(None, max_length=MAX_ID)
    config: dict[str, Any] | None = Field(None, description="A lm_saes.config.AnalyzeConfig as a dict")
    request_id: str | None = Field(None, max_length=MAX_ID)


class AutointerpJobRequest(BaseModel):
    """Explain and score an analyzed SAE's features with the analysis service's LLM."""

    model_config = ConfigDict(extra="forbid")

    sae_id: str = Field(min_length=1, max_length=MAX_ID, description="An SAE with a finished analysis")
    config: dict[str, Any] | None = Field(
        None,
        description="A lm_saes.autointerp.run.AutointerpConfig as a dict, without the fields the service sets "
        '(documents, sae, llm, device): e.g. {"max_features": 50, "scorers": ["detection"]}',
    )
    request_id: str | None = Field(None, max_length=MAX_ID)


class Job(records.JobRecord):
    """A job as its owner sees it (which replica runs it stays internal)."""

    claimed_by: SkipJsonSchema[str | None] = Field(None, exclude=True)
    lease_until: SkipJsonSchema[float | None] = Field(None, exclude=True)


class Graph(records.GraphRecord):
    """An attribution graph: pruned nodes and links, scores, the full graph's artifact URI."""


class CircuitList(BaseModel):
    items: list[GraphSummary]


class TraceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=20_000)
    transcoders: str = Field(
        min_length=1,
        max_length=MAX_URI,
        description="A transcoder set: folder or s3:// "
        "prefix with transcoders.json, inside the server's object store or read roots",
    )
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
    freeze_active_set: bool = Field(
        False,
        description="Downstream features keep the prompt's active set "
        "(the graph's linear model); else TopK transcoders reselect their top k",
    )


class TokenLogit(BaseModel):
    token_id: int
    token: str
    logit: float
    probability: float


class InterventionResult(BaseModel):
    before: list[TokenLogit]
    after: list[TokenLogit]


class AttentionRequest(BaseModel):
    """Which attention score to explain: one head, from a query position to a key position."""

    model_config = ConfigDict(extra="forbid")

    layer: int = Field(ge=0, le=10_000)
    head: int = Field(ge=0, le=10_000)
    query_position: int = Field(ge=0, le=100_000)
    key_position: int = Field(ge=0, le=100_000, description="At most query_position (causal attention)")
    top_k: int = Field(10, ge=1, le=50, description="Nodes per side and node pairs returned")


class NodeContribution(BaseModel):
    node_id: str
    contribution: float


class NodePair(BaseModel):
    query_node_id: str
    key_node_id: str
    contribution: float


class AttentionExplanation(BaseModel):
    """The head's pre-softmax score split into graph nodes: each side's contributions (all of
    them, of which the largest are listed) plus its bias sum to `score`."""

    score: float
    query_side: list[NodeContribution]
    key_side: list[NodeContribution]
    query_bias: float
    key_bias: float
    pairs: list[NodePair]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class SteerFeature(BaseModel):
    """One feature to change while generating (lm_saes.steering's semantics: clamp, ablate and
    scale keep the SAE's error term, so only this feature changes)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sae_id: str = Field(min_length=1, max_length=MAX_ID)
    feature: int = Field(ge=0, le=MAX_INDEX)
    mode: Literal["add", "clamp", "ablate", "scale"] = "add"
    strength: float = Field(
        0.0, ge=-MAX_STRENGTH, le=MAX_STRENGTH, description="add: amount; clamp: value; scale: factor; ablate: unused"
    )
    relative: bool = Field(False, description="add, clamp: strength in units of the feature's max activation")
    positions: Literal["both", "prompt", "generated"] = "both"
    from_token: int = Field(1, ge=1, le=100_000, description="First steered position (1: the first prompt token)")

    @model_validator(mode="after")
    def _consistent(self) -> SteerFeature:
        if self.relative and self.mode not in ("add", "clamp"):
            raise ValueError("relative strengths are for add and clamp only")
        if self.mode == "ablate" and self.strength:
            raise ValueError("ablate sets the activation to 0; leave strength at 0")
        return self


class SteerRequest(BaseModel):
    """A prompt continued with features changed; streamed beside the default continuation."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(min_length=1, max_length=100_000)
    features: list[SteerFeature] = Field(min_length=1, max_length=MAX_STEER_FEATURES)
    max_new_tokens: int = Field(32, ge=1, le=1024, description="Capped by the gateway's steer_max_tokens")
    temperature: float = Field(0.0, ge=0, le=10, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    stop: list[str] = Field(default_factory=list, max_length=8)
    track: list[int] = Field(
        default_factory=list,
        max_length=16,
        description="Token ids whose probability every step reports, under both runs",
    )
    frozen_attention: bool = Field(False, description="The steered run keeps the default run's attention patterns")
    compare: bool = Field(True, description="Also stream the default (unsteered) continuation")
