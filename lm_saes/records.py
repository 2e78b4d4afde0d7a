"""The records the document store holds, as pydantic models: the one declaration of each.

The stores validate what they are given into these and return them; `lm_saes.rpc.wire`
converts jobs to and from their protobuf message; the gateway's response schemas derive from
them. Records allow extra fields: a feature document carries whatever the analysis computed,
and a newer writer's fields survive an older reader.

The job states and kinds are `Literal`s here and nowhere else (a test checks them against the
proto enum), as is the largest page any listing returns.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["training", "analysis", "activations", "tracing"]
AnalysisState = Literal["running", "succeeded", "failed"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
JOB_KINDS: tuple[JobKind, ...] = get_args(JobKind)
TERMINAL: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
MAX_PAGE = 1000  # the most items one page of any listing holds (store, services, gateway)
NeighbourKind = Literal["decoder", "activation"]
NEIGHBOUR_KINDS: tuple[NeighbourKind, ...] = get_args(NeighbourKind)
MAX_NEIGHBOURS = 10  # a feature's stored neighbours per kind and SAE


class Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    def doc(self) -> dict[str, Any]:
        """The JSON-able document the stores write."""
        return self.model_dump(mode="json")


class ModelRecord(Record):
    """A language model features were computed on."""

    name: str
    n_layers: int | None = None
    d_model: int | None = None


class SaeRecord(Record):
    """A trained SAE or transcoder, with its evaluation."""

    id: str
    model: str
    hook_in: str | None = None
    hook_out: str | None = None
    architecture: str | None = None
    d_sae: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict, description="Evaluation: L0, explained variance, ...")
    evals: dict[str, Any] | None = Field(
        None,
        description="The evaluation suite's report (an lm_saes.evals.suite.EvalReport: core metrics, "
        "universality, absorption, probing, ...), each suite's latest run; the store validates it",
    )
    artifact: str | None = Field(None, description="URI of the saved SAE")
    created: str | None = None


class AnalysisRecord(Record):
    """One analysis pass over an SAE's features."""

    id: str
    sae_id: str
    state: AnalysisState
    tokens: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    created: str | None = None
    updated: str | None = None


class JobRecord(Record):
    """A long-running piece of work. Its worker writes it; services and clients only read it."""

    id: str
    kind: JobKind
    state: JobState
    progress: float = 0.0
    metrics: dict[str, float] = Field(default_factory=dict)
    error: str = ""
    request_id: str = ""
    owner: str = Field("", description="The principal that submitted it")
    config: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    created: str
    updated: str
    claimed_by: str | None = Field(None, description="The replica running it")
    lease_until: float | None = Field(None, description="Unix time its replica's claim runs out")

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


class FeatureSummary(BaseModel):
    """The indexed, sortable part of a feature document."""

    sae_id: str
    index: int
    density: float
    max_activation: float
    mean_activation: float | None = None
    score: float | None = None


ScorerName = Literal["detection", "fuzzing", "embedding"]
SCORERS: tuple[ScorerName, ...] = get_args(ScorerName)
# The scores whose mean is a feature's `score` (its sort key): the two that ask the explainer's
# own kind of model, as delphi reports them (the embedding score stands in when both are absent).
SUMMARY_SCORERS: tuple[ScorerName, ...] = ("detection", "fuzzing")


class ExplanationScore(BaseModel):
    """One scorer's verdict on an explanation (detection and fuzzing: balanced accuracy over the
    examples shown; embedding: AUROC of activating vs non-activating contexts by similarity)."""

    value: float = Field(ge=0.0, le=1.0)
    examples: int = Field(ge=0, description="Contexts the score is computed over")
    positives: int = Field(0, ge=0, description="Of those, activating (or correctly marked) ones")
    model: str = Field("", description="Scoring model (empty for the embedding scorer's own)")
    prompt_version: str = ""
    failed: int = Field(0, ge=0, description="Contexts whose answer could not be parsed (counted wrong)")


class Explanation(BaseModel):
    """What a feature means, in words, and how well that predicts where it fires."""

    text: str = Field(min_length=1, max_length=2000)
    model: str = Field(description="The explainer: model name as the endpoint reports it")
    prompt_version: str
    created: str
    scores: dict[ScorerName, ExplanationScore] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def summary_score(self) -> float | None:
        """Mean of the detection and fuzzing scores present; without either, the embedding score
        (an AUROC, chance 0.5 like theirs), so that an embedding-only run is still sorted and
        searchable; None when unscored."""
        values = [self.scores[name].value for name in SUMMARY_SCORERS if name in self.scores]
        if not values and "embedding" in self.scores:
            values = [self.scores["embedding"].value]
        return sum(values) / len(values) if values else None


class FeatureNeighbour(BaseModel):
    """A feature near this one: within its SAE by decoder cosine (`decoder`), or in another SAE
    of the same model by activation correlation over the same tokens (`activation`)."""

    sae_id: str = Field(min_length=1, description="The neighbour's SAE")
    index: int = Field(ge=0, description="The neighbour's feature index")
    similarity: float = Field(ge=-1.0, le=1.0, allow_inf_nan=False, description="Cosine or Pearson correlation")
    kind: NeighbourKind


class FeatureRecord(Record):
    """A feature's whole analysis document (a page that asked for some fields holds only those)."""

    sae_id: str
    index: int
    analysis_id: str | None = None
    density: float | None = None
    max_activation: float | None = None
    mean_activation: float | None = None
    histogram: dict[str, Any] | None = None
    top_examples: list[dict[str, Any]] = Field(default_factory=list)
    quantile_samples: list[dict[str, Any]] = Field(default_factory=list)
    top_tokens: list[dict[str, Any]] = Field(default_factory=list)
    logit_lens: dict[str, Any] | None = None
    explanation: Explanation | None = None
    score: float | None = Field(None, description="The explanation's summary score (a sort key; set by the store)")
    neighbours: list[FeatureNeighbour] = Field(
        default_factory=list,
        description=f"Nearest features, most similar first within each kind and SAE (at most {MAX_NEIGHBOURS} each)",
    )


class TokenMatch(BaseModel):
    """A feature whose top tokens hold a token: `top_token` is that entry."""

    sae_id: str
    index: int
    density: float
    max_activation: float
    top_token: dict[str, Any]


class GraphScores(BaseModel):
    replacement: float = Field(description="Share of token-to-logit influence that avoids error nodes")
    completeness: float = Field(description="Influence-weighted share of node inputs from non-error nodes")


class GraphNode(Record):
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
    cumulative: float = Field(
        0.0,
        description="Share of total influence held by nodes at least this influential "
        "(the pruning slider keeps nodes at or below its value)",
    )


class GraphLink(BaseModel):
    source: str
    target: str
    weight: float = Field(description="Direct effect of source on target")


class GraphLogit(BaseModel):
    token: str
    token_id: int
    probability: float


class GraphSummary(Record):
    id: str
    model: str
    prompt: str
    scores: GraphScores
    created: str | None = None
    layers: list[int] = Field(default_factory=list, description="Layers with a transcoder")
    artifact: str | None = Field(None, description="URI of the full graph (adjacency matrix) in the object store")


class GraphRecord(GraphSummary):
    """An attribution graph: the pruned nodes and links, scores, and the full graph's artifact."""

    transcoders: str
    n_layers: int
    tokens: list[str]
    logits: list[GraphLogit]
    thresholds: dict[str, float]
    counts: dict[str, int]
    saes: dict[str, str] = Field(
        default_factory=dict, description="layer -> SAE id whose analysis describes that layer's features"
    )
    seconds: float | None = None
    nodes: list[GraphNode]
    links: list[GraphLink]
