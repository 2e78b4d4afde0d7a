"""Pydantic configs for every command, and TOML loading with outer defaults.

A config is one tree of pydantic models. Settings that describe the run as a whole (device,
dtype, seed, model) may be written once at an outer level; every inner section that has a field
of the same name and leaves it unset inherits the outer value. Unknown keys are errors, so a typo
never silently falls back to a default.

`[sae]` is one of several configs, one per architecture, each defined beside its architecture's
code (lm_saes/saes/<name>.py) and chosen by `architecture` (see `SAEConfig`). This module imports
nothing from lm_saes.saes at import time; it looks the registry up when it validates a section.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

INHERITED_KEYS = ("device", "dtype", "seed", "model")
T = TypeVar("T", bound=BaseModel)

Device = str  # "cpu", "cuda", "cuda:1", "mps"
DType = Literal["float32", "bfloat16", "float16"]


class ConfigError(ValueError):
    """A config that cannot run; the message names the field path and the fix."""


class Section(BaseModel):
    # allow_inf_nan=False: `lr = inf` or a NaN threshold is an error naming the field, not a NaN run.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(Section):
    """Which language model to hook.

    `name` is `smollm2-135m` (packaged, offline), `tiny` (random TransformerBridge model for
    tests), a local folder with a HF checkpoint, or any HF model id (needs internet once).
    """

    name: str = "smollm2-135m"
    device: Device = "cpu"
    dtype: DType = "float32"
    seed: int = 0
    # Only for name == "tiny": the random model's shape.
    tiny_layers: int = Field(2, ge=1)
    tiny_d_model: int = Field(64, ge=8)
    tiny_vocab: int = Field(512, ge=16)


class DataConfig(Section):
    """Text to tokenize and pack into fixed-length contexts that start with BOS."""

    source: str = Field(
        "default",
        description="'default' (offline Wikipedia corpus), a .txt/.jsonl path or folder, "
        "or 'hf:NAME[:SPLIT]' for a HF dataset (needs internet)",
    )
    text_field: str = "text"
    context_size: int = Field(128, ge=2)
    max_tokens: int = Field(400_000, ge=1, description="Token budget (the main knob for quality)")
    eval_tokens: int = Field(16_384, ge=0, description="Held-out tokens for evaluation")
    seed: int = 0


class ActivationsConfig(Section):
    """Where activations come from and where they go."""

    hooks: list[str] = Field(default_factory=lambda: ["blocks.6.hook_resid_post"], min_length=1)
    store: bool = Field(True, description="Save shards to the object store; false: on the fly")
    path: str | None = Field(None, description="Reuse (or write) shards here instead of OUTPUT/activations")
    batch_contexts: int = Field(16, ge=1, description="Contexts per model forward")
    shard_tokens: int = Field(65_536, ge=256)
    buffer_tokens: int = Field(131_072, ge=256, description="Shuffle-buffer size in tokens")
    dtype: DType = "float32"
    device: Device = "cpu"
    shards: int = Field(
        1,
        ge=1,
        le=64,
        description="Generate in this many worker processes (Kubernetes: pods), each a contiguous "
        "range of the contexts; their manifests concatenate into one store",
    )
    shard_attempts: int = Field(3, ge=1, le=10, description="Attempts per shard before generation fails")


class SAEConfigBase(Section):
    """What every architecture's `[sae]` section shares. `hook_out` set and different: transcoder.

    Each architecture subclasses it in its own file (lm_saes/saes/<name>.py), narrowing
    `architecture` to a Literal and adding its knobs; see `SAEConfig` for how one is chosen.
    """

    architecture: str
    hook_in: str | None = None
    hook_out: str | None = None
    d_sae: int = Field(4608, ge=1)
    normalize_input: bool = Field(True, description="Scale inputs to mean norm sqrt(d_in)")
    device: Device = "cpu"
    dtype: DType = "float32"
    seed: int = 0

    @property
    def input_hook(self) -> str:
        """`hook_in`, which a run's config (and so a trained SAE's spec) always names."""
        if self.hook_in is None:
            raise ValueError(f"this {self.architecture} SAE config names no hook_in")
        return self.hook_in

    @property
    def output_hook(self) -> str:
        """`hook_out`, which a run's config (and so a trained SAE's spec) always names."""
        if self.hook_out is None:
            raise ValueError(f"this {self.architecture} SAE config names no hook_out")
        return self.hook_out


DEFAULT_ARCHITECTURE = "topk"
# Before configs were per architecture, every saved sae.json / config.json held all of these
# (one class had every architecture's knobs). A section holding all of them is that layout: the
# knobs its architecture lacks are dropped rather than refused, so old artifacts still load.
LEGACY_SAE_KEYS = frozenset({
    "k", "aux_k", "aux_k_coefficient", "l1_coefficient", "l0_coefficient",
    "jumprelu_bandwidth", "jumprelu_init_threshold",
})  # fmt: skip
M = TypeVar("M")  # a config, spec or SAE class


def sae_config_classes() -> dict[str, type[SAEConfigBase]]:
    """Config class of each registered architecture.

    Late-bound: lm_saes.saes imports this module (architectures subclass SAEConfigBase), so this
    module imports the registry only when a config is validated, never at import time.
    """
    from lm_saes.saes.registry import registered_configs

    return registered_configs()


def pick_sae_class(raw: Mapping[str, Any], classes: Mapping[str, type[M]]) -> type[M]:
    """The class `raw["architecture"]` names (default topk); otherwise an error at that key."""
    name = raw.get("architecture", DEFAULT_ARCHITECTURE)
    if isinstance(name, str) and name in classes:
        return classes[name]
    choices = ", ".join(repr(n) for n in sorted(classes))
    error = PydanticCustomError("unknown_architecture", "unknown SAE architecture; choose one of {c}", {"c": choices})
    raise ValidationError.from_exception_data("SAEConfig", [{"type": error, "loc": ("architecture",), "input": name}])


def without_legacy_keys(raw: Mapping[str, Any], cls: type[BaseModel]) -> dict[str, Any]:
    """`raw`, less the other architectures' knobs if it is in the old all-architectures layout."""
    if not raw.keys() >= LEGACY_SAE_KEYS:
        return dict(raw)
    return {k: v for k, v in raw.items() if k in cls.model_fields or k not in LEGACY_SAE_KEYS}


def _validate_sae_config(value: Any) -> Any:
    if isinstance(value, SAEConfigBase):
        cls = pick_sae_class({"architecture": value.architecture}, sae_config_classes())
        return value if type(value) is cls else cls.model_validate(value.model_dump())
    if not isinstance(value, Mapping):
        return value  # fails below as "not a section"
    cls = pick_sae_class(value, sae_config_classes())
    return cls.model_validate(without_legacy_keys(value, cls))


class _RegisteredSAEConfigs:
    """JSON schema of `SAEConfig`: a union of the architectures registered when it is asked for."""

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> Any:
        classes = sorted(sae_config_classes().items())
        choices = {name: cls.__pydantic_core_schema__ for name, cls in classes}
        return handler(core_schema.tagged_union_schema(choices, discriminator="architecture"))


# The `[sae]` section: a union of the registered architectures' configs, keyed on `architecture`
# (default topk). Not a fixed `Union[...]`: registering an architecture (lm_saes.saes.register)
# must make it valid here without editing this file, so the validator looks the class up in the
# registry when it runs, validates with it (errors keep their path: `sae.k`), and dumps keep the
# chosen class's fields (SerializeAsAny).
SAEConfig = Annotated[SerializeAsAny[SAEConfigBase], BeforeValidator(_validate_sae_config), _RegisteredSAEConfigs()]


class TranscodersConfig(Section):
    """A set of transcoders, one per layer, trained from one shared activation pass.

    Each reads the MLP's input and predicts its output, so together they can stand in for the
    model's MLPs in a replacement model (circuit tracing). `{layer}` in the hook templates is
    replaced by each layer number.
    """

    layers: list[int] = Field(..., min_length=1, description="Layers to cover, e.g. [2, 6, 10]")
    hook_in: str = "blocks.{layer}.mlp.hook_in"
    hook_out: str = "blocks.{layer}.hook_mlp_out"

    def hooks(self, layer: int) -> tuple[str, str]:
        return self.hook_in.format(layer=layer), self.hook_out.format(layer=layer)


class CrossLayerTranscoderConfig(Section):
    """A cross-layer transcoder (CLT): each listed layer's features read that layer's MLP input
    and write, through one decoder per target, to the MLP outputs of that layer and of every
    later listed layer. Trained jointly (the sum of the per-layer reconstruction losses); its
    decoders grow as layers**2, so it may cover a subset of the model's layers."""

    layers: list[int] = Field(..., min_length=1, max_length=256, description="Layers, ascending, e.g. [0, 1, ..., 29]")
    hook_in: str = "blocks.{layer}.mlp.hook_in"
    hook_out: str = "blocks.{layer}.hook_mlp_out"
    d_sae: int = Field(1024, ge=1, le=2**20, description="Features per layer")
    activation: Literal["topk", "jumprelu"] = "topk"
    k: int = Field(16, ge=1, description="TopK: active features per token in each layer")
    l0_coefficient: float = Field(1e-3, ge=0, description="JumpReLU: penalty on the expected L0 (summed over layers)")
    jumprelu_bandwidth: float = Field(0.05, gt=0, description="JumpReLU: straight-through kernel width")
    jumprelu_init_threshold: float = Field(0.01, ge=0, description="JumpReLU: every feature's first threshold")
    normalize_input: bool = Field(True, description="Scale each layer's inputs and targets to mean norm sqrt(d)")
    device: Device = "cpu"
    dtype: DType = "float32"
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> CrossLayerTranscoderConfig:
        if self.layers != sorted(set(self.layers)) or self.layers[0] < 0:
            raise ValueError(f"clt.layers = {self.layers} must be ascending, non-negative and without repeats")
        if "{layer}" not in self.hook_in or "{layer}" not in self.hook_out:
            raise ValueError("clt.hook_in and clt.hook_out must contain '{layer}'")
        if self.activation == "topk" and self.k > self.d_sae:
            raise ValueError(f"clt.k = {self.k} is more than clt.d_sae = {self.d_sae}; choose k <= d_sae")
        return self

    def hooks(self, layer: int) -> tuple[str, str]:
        return self.hook_in.format(layer=layer), self.hook_out.format(layer=layer)

    @property
    def hooks_in(self) -> list[str]:
        return [self.hooks(layer)[0] for layer in self.layers]

    @property
    def hooks_out(self) -> list[str]:
        return [self.hooks(layer)[1] for layer in self.layers]


class TrainConfig(Section):
    batch_size: int = Field(4096, ge=1)
    lr: float = Field(4e-4, gt=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    lr_warmup_steps: int = Field(50, ge=0)
    lr_decay_fraction: float = Field(0.2, ge=0, le=1, description="Linear decay over the last part")
    l1_warmup_steps: int = Field(100, ge=0)
    dead_after_tokens: int = Field(200_000, ge=1, description="Latents silent this long are dead")
    checkpoint_every: int = Field(0, ge=0, description="Steps between checkpoints; 0 = none")
    log_every: int = Field(10, ge=1)
    epochs: int = Field(1, ge=1)
    device: Device = "cpu"
    seed: int = 0
    feature_shards: int = Field(1, ge=1, description="Ranks splitting each dictionary's features (tensor parallel)")


class AbsorptionConfig(Section):
    """`lm-saes eval --suite absorption`: first-letter feature absorption (lm_saes.evals.absorption).

    Defaults follow SAEBench's AbsorptionEvalConfig, except the vocabulary, which is bounded
    per letter so that a CPU run takes minutes (SAEBench prompts every alphabetic token).
    """

    words_per_letter: int = Field(50, ge=2, le=5_000, description="Vocabulary words sampled per first letter")
    icl_examples: int = Field(10, ge=0, le=50, description="In-context examples before the word (SAEBench: 10)")
    prompt_template: str = Field("{word} has the first letter:", description="Must contain {word} once")
    train_fraction: float = Field(0.8, gt=0, lt=1, description="Words that train the probes; the rest test them")
    max_k: int = Field(10, ge=1, le=100, description="Largest k of the k-sparse probes (SAEBench max_k_value)")
    f1_jump_threshold: float = Field(0.03, ge=0, le=1, description="F1 gain that makes k+1 latents a feature split")
    min_probe_f1: float = Field(0.6, ge=0, le=1, description="Letters whose dense probe scores below are left out")
    min_letters: int = Field(20, ge=1, le=26, description="Letters needed for the mean to count (SAEBench: 20)")
    batch_prompts: int = Field(32, ge=1, le=4096)
    baseline: bool = Field(True, description="Also score a random dictionary of the same shape")
    seed: int = 42

    @model_validator(mode="after")
    def _check_template(self) -> AbsorptionConfig:
        if self.prompt_template.count("{word}") != 1:
            raise ValueError(f"prompt_template = {self.prompt_template!r} must contain {{word}} exactly once")
        return self


class ProbingConfig(Section):
    """`lm-saes eval --suite probing`: sparse probing with the best k latents (lm_saes.evals.probing)."""

    k_values: list[int] = Field(default_factory=lambda: [1, 2, 5, 20], description="Latents per sparse probe")
    max_tokens: int = Field(16_384, ge=64, le=1_000_000, description="Held-out tokens the token-level tasks use")
    examples_per_class: int = Field(250, ge=4, le=100_000, description="Cap per class and task (train + test)")
    min_examples_per_class: int = Field(20, ge=2, description="Tasks with fewer positives are skipped")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    topic_classes: int = Field(5, ge=0, le=50, description="Text-level tasks: passages of the N longest documents")
    passages_per_class: int = Field(100, ge=2, le=10_000)
    passage_tokens: int = Field(32, ge=2, le=1024)
    max_documents: int = Field(2_000, ge=1, description="Documents of the source read to pick the topics")
    batch_contexts: int = Field(16, ge=1)
    baseline: bool = Field(True, description="Also score a random dictionary of the same shape")
    seed: int = 42

    @field_validator("k_values")
    @classmethod
    def _check_ks(cls, ks: list[int]) -> list[int]:
        if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"k_values = {ks}: give distinct positive numbers of latents")
        return ks

    @model_validator(mode="after")
    def _check_sizes(self) -> ProbingConfig:
        if self.min_examples_per_class > self.examples_per_class:
            raise ValueError("min_examples_per_class is more than examples_per_class; lower it")
        return self


class EvalConfig(Section):
    batch_contexts: int = Field(8, ge=1)
    max_tokens: int | None = Field(None, description="Cap on held-out tokens used")
    ce_loss: bool = Field(True, description="Splice the SAE into the model and measure LM loss")
    dense_threshold: float = Field(0.1, gt=0, le=1)
    device: Device = "cpu"
    absorption: AbsorptionConfig = Field(default_factory=AbsorptionConfig)
    probing: ProbingConfig = Field(default_factory=ProbingConfig)


class SweepMember(Section):
    """One SAE of a sweep: its name (its folder under the run's output) and what differs.

    `sae` is merged over the run's `[sae]` (changing `architecture` keeps only the shared
    fields: hooks, d_sae, seed, ...), `train` over its `[train]`; every member reads the same
    batches, so `train.batch_size` and `train.epochs` stay the run's.
    """

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Folder name under output")
    sae: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


class RunConfig(Section):
    """Top-level config of `lm-saes train`."""

    output: str = Field("runs/default", description="Local folder or s3://bucket/prefix")
    device: Device = "cpu"
    dtype: DType = "float32"
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    activations: ActivationsConfig = Field(default_factory=ActivationsConfig)
    sae: SAEConfig = Field(default_factory=dict, validate_default=True)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    transcoders: TranscodersConfig | None = Field(
        None, description="Train one transcoder per listed layer instead of one SAE"
    )
    sweep: list[SweepMember] | None = Field(
        None, min_length=1, max_length=64, description="Train these SAEs from one activation stream instead of one"
    )
    clt: CrossLayerTranscoderConfig | None = Field(
        None, description="Train one cross-layer transcoder over these layers instead of one SAE"
    )

    @model_validator(mode="after")
    def _check_hooks(self) -> RunConfig:
        if self.sae.d_sae % self.train.feature_shards:
            raise ValueError(
                f"train.feature_shards = {self.train.feature_shards} must divide sae.d_sae = {self.sae.d_sae} "
                "(every shard holds the same number of features)"
            )
        if self.transcoders is not None and self.sweep is not None:
            raise ValueError("[transcoders] and [[sweep]] cannot be combined; a run trains one of them")
        if self.clt is not None:
            if self.transcoders is not None or self.sweep is not None:
                raise ValueError("[clt] cannot be combined with [transcoders] or [[sweep]]; a run trains one of them")
            if self.train.feature_shards != 1:
                raise ValueError(
                    "train.feature_shards: a cross-layer transcoder trains data-parallel only; set it to 1"
                )
            self.activations.hooks = [h for layer in self.clt.layers for h in self.clt.hooks(layer)]
            return self
        if self.transcoders is not None:
            if len(set(self.transcoders.layers)) != len(self.transcoders.layers):
                raise ValueError(f"transcoders.layers = {self.transcoders.layers} repeats a layer; list each once")
            if "{layer}" not in self.transcoders.hook_in or "{layer}" not in self.transcoders.hook_out:
                raise ValueError("transcoders.hook_in and transcoders.hook_out must contain '{layer}'")
            if self.sae.hook_in is not None or self.sae.hook_out is not None:
                raise ValueError(
                    "with [transcoders], leave sae.hook_in/sae.hook_out unset: "
                    "the hook templates of [transcoders] choose them per layer"
                )
            self.activations.hooks = [h for layer in self.transcoders.layers for h in self.transcoders.hooks(layer)]
            return self
        hooks = self.activations.hooks
        hook_in = self.sae.hook_in or hooks[0]
        hook_out = self.sae.hook_out or hook_in
        for field, hook in (("sae.hook_in", hook_in), ("sae.hook_out", hook_out)):
            if hook not in hooks:
                raise ValueError(f"{field} = {hook!r} is not generated; add it to activations.hooks {hooks}")
        self.sae.hook_in, self.sae.hook_out = hook_in, hook_out
        if self.sweep is not None:
            names = [member.name for member in self.sweep]
            if len(set(names)) != len(names):
                raise ValueError(f"sweep names {names} repeat; each member needs its own folder")
            for i in range(len(self.sweep)):
                self.for_member(i)  # each member's config validates now, before any work
        return self

    def for_member(self, index: int) -> RunConfig:
        """The single-SAE run of one sweep member (saved under OUTPUT/NAME)."""
        assert self.sweep is not None
        member = self.sweep[index]
        for key in ("batch_size", "epochs"):
            if key in member.train:
                raise ConfigError(
                    f"sweep.{index}.train.{key}: every member of a sweep trains on the same batches; "
                    f"set train.{key} for the whole run instead"
                )
        raw = self.model_dump()
        raw["sweep"] = None
        raw["output"] = f"{self.output.rstrip('/')}/{member.name}"
        base_sae = raw["sae"]
        if "architecture" in member.sae and member.sae["architecture"] != base_sae["architecture"]:
            base_sae = {k: v for k, v in base_sae.items() if k in SAEConfigBase.model_fields}
        raw["sae"] = {**base_sae, **member.sae}
        raw["train"] = {**raw["train"], **member.train}
        try:
            return RunConfig.model_validate(raw)
        except ValidationError as error:
            lines = format_validation_error(error, RunConfig, "", raw).splitlines()[1:]
            named = [re.sub(r"(?<![\w.])(sae|train)\.", rf"sweep.{index}.\1.", line.strip()) for line in lines]
            raise ConfigError(f"sweep member {member.name!r}: " + "; ".join(named)) from None

    def for_layer(self, layer: int) -> RunConfig:
        """The single-transcoder run of one layer of a transcoder set (saved beside its SAE)."""
        assert self.transcoders is not None
        hook_in, hook_out = self.transcoders.hooks(layer)
        raw = self.model_dump()
        raw["transcoders"] = None
        raw["output"] = transcoder_location(self.output, layer)
        raw["activations"]["hooks"] = [hook_in, hook_out]
        raw["sae"].update(hook_in=hook_in, hook_out=hook_out)
        return RunConfig.model_validate(raw)


def transcoder_location(output: str, layer: int) -> str:
    """Where one layer's run of a transcoder set lives, under the set's output."""
    return f"{output.rstrip('/')}/layer-{layer}"


class TraceConfig(Section):
    """How to build and prune an attribution graph for one prompt."""

    max_tokens: int = Field(64, ge=2, le=512, description="Longest prompt (with BOS) accepted")
    max_logits: int = Field(10, ge=1, le=50, description="At most this many output logits as targets")
    logit_probability: float = Field(
        0.95, gt=0, le=1, description="Output logits kept until their probabilities sum to this"
    )
    node_threshold: float = Field(0.8, ge=0, le=1, description="Pruning: keep nodes carrying this share of influence")
    edge_threshold: float = Field(0.98, ge=0, le=1, description="Pruning: keep edges carrying this share of influence")
    max_links: int = Field(
        10_000,
        ge=1,
        description="Pruning: at most this many links, the most influential "
        "(a graph over every layer can keep 10x more; browsers draw 10k comfortably)",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Targets per batched backward pass; default 64 "
        "on a CPU, 256 on a GPU (the fastest measured, benchmarks/gpu_trace_check.py)",
    )
    freeze_bos: bool = Field(
        True,
        description="BOS features and error nodes are constants, not nodes: the "
        "attention sink every prompt shares; their effect goes to the targets' bias",
    )
    max_memory_gb: float = Field(
        16.0,
        gt=0,
        le=4096,
        description="Refuse a trace whose estimated memory (dense adjacency: nodes**2, kept twice "
        "while it is assembled) exceeds this, before its backward passes start",
    )
    max_feature_nodes: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Keep at most this many feature nodes, the most influential on the logits "
        "(chosen as their rows are computed, as circuit-tracer does); the rest become constants "
        "whose direct effects join the bias. Unset: every active feature (nodes grow as tokens x "
        "features per token, memory as its square)",
    )
    device: Device = "cpu"


class AnalysisConfig(Section):
    """How much to keep per feature, and how often to checkpoint the pass."""

    top_n: int = Field(20, ge=1, le=200, description="Top activating contexts per feature")
    window_before: int = Field(16, ge=0)
    window_after: int = Field(7, ge=0)
    samples_per_bucket: int = Field(2, ge=1, description="Random contexts kept per activation bucket")
    quantile_intervals: int = Field(10, ge=1, description="Equal slices of (0, max] for samples")
    samples_per_interval: int = Field(3, ge=1)
    logit_lens_k: int = Field(10, ge=1)
    batch_contexts: int = Field(16, ge=1)
    checkpoint_every: int = Field(200, ge=0, description="Batches between checkpoints; 0 = none")
    write_batch: int = Field(256, ge=1, description="Features per document-store write")
    device: Device = "cpu"
    seed: int = 0


class AnalyzeConfig(Section):
    """Top-level config of `lm-saes analyze`."""

    output: str = Field("runs/analysis", description="Checkpoints of the pass (folder or s3://)")
    documents: str = Field("runs/lm-saes.sqlite", description="SQLite file, or mongodb://HOST:PORT/DB")
    sae_id: str | None = Field(None, description="Name of the SAE in the store; default: its run folder")
    device: Device = "cpu"
    dtype: DType = "float32"
    seed: int = 0
    model: ModelConfig | None = Field(None, description="Default: the model the SAE was trained on")
    data: DataConfig = Field(default_factory=DataConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    activations: str | None = Field(
        None,
        description="An activation store (folder or s3://) holding the SAE's input hook and its contexts: "
        "analyze those contexts from it instead of running the model (data is then unused)",
    )
    shards: int = Field(
        1,
        ge=1,
        le=64,
        description="Split the pass's batches among this many worker processes (Kubernetes: pods) "
        "and merge their results, exactly what one pass gives",
    )
    shard_attempts: int = Field(3, ge=1, le=10, description="Attempts per shard before the pass fails")


def inherit_defaults(
    raw: dict[str, Any], model: type[BaseModel], inherited: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Copy outer `device`/`dtype`/`seed`/`model` values into inner sections that leave them unset."""
    inherited = dict(inherited or {})
    out = dict(raw)
    model_field = model.model_fields.get("model")
    if isinstance(out.get("model"), str) and model_field and _section_type(model_field.annotation):
        out["model"] = {"name": out["model"]}  # shorthand: model = "smollm2-135m" (not a str field's value)
    for key in INHERITED_KEYS:
        if key in out:
            inherited[key] = out[key]
        elif key in inherited and key in model.model_fields:
            out[key] = inherited[key]
    for name, field in model.model_fields.items():
        value = out.get(name, {})
        sub = _section_class(field.annotation, value)
        present = name in out or field.default is not None
        if sub is not None and present and isinstance(value, dict):
            out[name] = inherit_defaults(value, sub, inherited)
    return out


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `Model` or `Model | None`, if any."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _section_class(annotation: Any, raw: Any) -> type[BaseModel] | None:
    """The model a section's `raw` value is validated with: for `[sae]`, its architecture's."""
    cls = _section_type(annotation)
    if cls is SAEConfigBase and isinstance(raw, Mapping):
        try:
            return pick_sae_class(raw, sae_config_classes())
        except ValidationError:
            pass
    return cls


def _unknown_field_hint(loc: tuple[Any, ...], model: type[BaseModel], raw: Any) -> str:
    """For an unknown key: another architecture's knob, or the closest field of its section."""
    cls: Any = model
    for part in loc[:-1]:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return "remove or rename it"
        raw = raw.get(part) if isinstance(raw, Mapping) else None
        cls = _section_class(field.annotation, raw)
    key, path = str(loc[-1]), ".".join(map(str, loc[:-1]))
    if isinstance(cls, type) and issubclass(cls, SAEConfigBase):
        owners = [repr(n) for n, c in sorted(sae_config_classes().items()) if key in c.model_fields]
        if owners:
            ours = cls.model_fields["architecture"].default
            fix = f"remove it or change {path}.architecture"
            return f"a knob of {', '.join(owners)}, not of {ours!r}; {fix}"
    known = list(getattr(cls, "model_fields", {}))
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else f"known fields: {', '.join(known)}. "
    return hint + "remove or rename it"


def format_validation_error(error: ValidationError, model: type[BaseModel], source: str, raw: Any = None) -> str:
    """One line per error, naming the field path; unknown keys get the closest known name."""
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown field; {_unknown_field_hint(item['loc'], model, raw)}")
        else:
            got = item.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {path}: {item['msg']}{shown}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], model: type[T], source: str = "") -> T:
    raw = inherit_defaults(raw, model)
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, model, source, raw)) from None


def load_config(path: str | Path, model: type[T], overrides: dict[str, Any] | None = None) -> T:
    """Read TOML into `model`, applying outer defaults; errors name the field and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(raw, model, str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=1e-3` -> ("train.lr", 0.001); values are parsed as TOML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed
