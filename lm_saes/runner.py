"""One function per command: load what the config names, do the work, report where it went.

The CLI and the services call these; they hold no argument parsing and no printing beyond
progress bars.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from lm_saes.activations import (
    OnTheFlyActivations,
    StoredActivations,
    generate_activations,
    read_manifest,
)
from lm_saes.activations.buffer import ActivationSource
from lm_saes.config import DataConfig, EvalConfig, ModelConfig, RunConfig
from lm_saes.data.packing import TokenSplits, load_token_splits, non_bos_tokens
from lm_saes.data.sources import iter_texts
from lm_saes.dtypes import TORCH_DTYPES
from lm_saes.evals.absorption import absorption
from lm_saes.evals.probing import probing
from lm_saes.evals.suite import (
    MODEL_SUITES,
    REPORT_KEY,
    EvalReport,
    context_budget,
    correlate,
    merge_reports,
    run_synthetic,
)
from lm_saes.evals.universality import Neighbour, compare, decoder_neighbours, nearest_neighbours
from lm_saes.evaluation import EvalMetrics, evaluate, evaluate_clt
from lm_saes.models import LanguageModel, load_language_model
from lm_saes.models.facts import facts_of
from lm_saes.records import MAX_NEIGHBOURS, FeatureNeighbour, NeighbourKind
from lm_saes.saes import SparseAutoencoder, build_sae, load_sae, make_spec
from lm_saes.saes.crosslayer import CrossLayerTranscoder, CrossLayerTranscoderSpec
from lm_saes.saes.sharding import shard_sae
from lm_saes.stores import ObjectStore, open_store
from lm_saes.stores.documents import open_document_store
from lm_saes.training import Trainer
from lm_saes.training.checkpoint import save_trained
from lm_saes.training.distributed import init_distributed
from lm_saes.training.memory import estimate_run
from lm_saes.training.sweep import Sweep
from lm_saes.training.trainer import TrainSummary

log = logging.getLogger(__name__)
SAE_PREFIX = "sae"
CLT_PREFIX = "clt"
EVAL_KEY = "eval.json"
CONFIG_KEY = "config.json"
SUMMARY_KEY = "summary.json"
TRANSCODERS_KEY = "transcoders.json"


@dataclass
class TrainRun:
    output: str
    sae: SparseAutoencoder | CrossLayerTranscoder
    metrics: EvalMetrics | None
    timings: dict[str, float] = field(default_factory=dict)
    train_tokens: int = 0
    resumed_from: int = 0  # the checkpoint step training continued from (0: a fresh start)
    artifact: str = SAE_PREFIX  # the trained dictionary's folder under output (clt for a CLT)

    def summary(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "sae": f"{self.output.rstrip('/')}/{self.artifact}",
            "train_tokens": self.train_tokens,
            "resumed_from": self.resumed_from,
            "timings_s": self.timings,
            "eval": self.metrics.model_dump() if self.metrics else None,
        }


def activation_source(
    cfg: RunConfig, model: LanguageModel, splits: TokenSplits, store: ObjectStore, progress: bool = True
) -> ActivationSource:
    """Stored shards (reused when they match the run, else generated) or on-the-fly activations."""
    acts = cfg.activations
    hooks = list(dict.fromkeys(acts.hooks))
    if not acts.store:
        return OnTheFlyActivations(model, splits.train, hooks, cfg.train.seed, acts.buffer_tokens, acts.batch_contexts)
    act_store = open_store(acts.path) if acts.path else store.child("activations")
    manifest = read_manifest(act_store)
    expected = non_bos_tokens(splits.train, model.tokenizer.bos_token_id)
    reusable = (
        manifest is not None
        and manifest.model == model.name
        and set(hooks) <= set(manifest.hooks)
        and manifest.context_size == cfg.data.context_size
        and (acts.path is not None or manifest.n_tokens == expected)
    )
    if not reusable:
        act_store.delete_prefix("")
        if acts.shards > 1:  # local worker processes, merged into one store (lm_saes.activations.sharded)
            from lm_saes.activations.sharded import generate_sharded_activations

            generate_sharded_activations(
                model,
                cfg.model,
                splits.train,
                hooks,
                act_store,
                acts.shards,
                batch_contexts=acts.batch_contexts,
                shard_tokens=acts.shard_tokens,
                dtype=acts.dtype,
                max_attempts=acts.shard_attempts,
            )
        else:
            generate_activations(
                model, splits.train, hooks, act_store, acts.batch_contexts, acts.shard_tokens, acts.dtype, progress
            )
    return StoredActivations(act_store, hooks, cfg.train.seed, acts.buffer_tokens)


def run_train(
    cfg: RunConfig,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainRun | None:
    """Tokens -> activations -> trained SAE -> evaluation, all under `cfg.output`.

    Returns None when `should_stop` interrupted training (a checkpoint holds the progress).
    Under torchrun (WORLD_SIZE > 1) every rank trains on its slice of each batch; rank 0
    generates the activations first, and alone saves, evaluates and returns the run.
    With `[transcoders]`, one activation pass feeds one transcoder per layer, each saved as its
    own run under `OUTPUT/layer-N` (see `run_train_transcoders`); the last layer's run is returned.
    """
    runs = _train_runs(cfg, progress, on_log, should_stop)
    return runs[-1] if runs and all(runs) else None


def run_train_transcoders(
    cfg: RunConfig,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TrainRun] | None:
    """Train every transcoder of `cfg.transcoders`; layers already saved are loaded, not retrained.

    Writes `OUTPUT/transcoders.json` (model, hooks, layer -> SAE location) last, so a reader
    that finds it finds every transcoder complete.
    """
    if cfg.transcoders is None:
        raise ValueError("run_train_transcoders needs a [transcoders] section")
    runs = _train_runs(cfg, progress, on_log, should_stop)
    return cast(list[TrainRun], runs) if runs and all(runs) else None  # all(runs): none is None


def run_train_sweep(
    cfg: RunConfig,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TrainRun] | None:
    """Train every member of `cfg.sweep` from one activation stream; members already saved are
    loaded, not retrained. None when interrupted (checkpoints hold every member's progress)."""
    if cfg.sweep is None:
        raise ValueError("run_train_sweep needs a [[sweep]] section")
    runs = _train_runs(cfg, progress, on_log, should_stop)
    return cast(list[TrainRun], runs) if runs and all(runs) else None


def _train_runs(
    cfg: RunConfig, progress: bool, on_log: Callable[[dict], None] | None, should_stop: Callable[[], bool] | None
) -> list[TrainRun | None]:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dist = init_distributed(cfg.train.device, cfg.train.feature_shards)
    if dist.enabled and not cfg.activations.store:
        raise ValueError("activations.store = false trains on the fly in one process; set it true for torchrun")
    store = open_store(cfg.output)
    if dist.is_main:
        store.put_json(CONFIG_KEY, cfg.model_dump(mode="json"))
    model = load_language_model(cfg.model)
    model.check_hooks(cfg.activations.hooks)
    timings["load_model"] = time.perf_counter() - clock
    if dist.is_main:
        facts = facts_of(model)
        log.warning("this run needs %s", estimate_run(cfg, facts.d_model, facts.parameter_bytes).describe())

    clock = time.perf_counter()
    splits = load_token_splits(cfg.data, model.tokenizer)
    if not dist.is_main:
        dist.barrier()  # rank 0 generates (or checks) the shards first
    source = activation_source(cfg, model, splits, store, progress and dist.is_main)
    if dist.is_main:
        dist.barrier()
    timings["activations"] = time.perf_counter() - clock
    if cfg.sweep is not None:
        return _train_sweep(cfg, model, splits, source, timings, progress, on_log, should_stop, dist)
    if cfg.clt is not None:
        return [_train_clt(cfg, model, splits, source, store, timings, progress, on_log, should_stop, dist)]
    if cfg.transcoders is None:
        return [_train_one(cfg, model, splits, source, store, timings, progress, on_log, should_stop, dist)]

    runs: list[TrainRun | None] = []
    for layer in cfg.transcoders.layers:
        layer_cfg = cfg.for_layer(layer)
        layer_store = open_store(layer_cfg.output)
        if layer_store.exists(f"{SAE_PREFIX}/sae.json") and layer_store.exists(SUMMARY_KEY):
            log.info("transcoder for layer %d already trained in %s", layer, layer_cfg.output)
            runs.append(_saved_run(layer_cfg.output, layer_store))
            continue
        if dist.is_main:
            layer_store.put_json(CONFIG_KEY, layer_cfg.model_dump(mode="json"))
        run = _train_one(
            layer_cfg,
            model,
            splits,
            source.with_hooks(layer_cfg.activations.hooks),
            layer_store,
            dict(timings),
            progress,
            on_log,
            should_stop,
            dist,
        )
        runs.append(run)
        if run is None:
            return runs
    if dist.is_main:
        store.put_json(
            TRANSCODERS_KEY,
            {
                "model": model.name,
                "hook_in": cfg.transcoders.hook_in,
                "hook_out": cfg.transcoders.hook_out,
                "layers": {str(layer): f"layer-{layer}/{SAE_PREFIX}" for layer in cfg.transcoders.layers},
            },
        )
    return runs


def _train_sweep(
    cfg: RunConfig,
    model: LanguageModel,
    splits: TokenSplits,
    source: ActivationSource,
    timings: dict[str, float],
    progress: bool,
    on_log: Callable[[dict], None] | None,
    should_stop: Callable[[], bool] | None,
    dist,
) -> list[TrainRun | None]:
    """Every member of `cfg.sweep` from one stream (lm_saes.training.sweep), each saved and
    evaluated as its own run under OUTPUT/NAME; members already saved are loaded, not retrained."""
    assert cfg.sweep is not None
    members = [cfg.for_member(i) for i in range(len(cfg.sweep))]
    done: dict[int, TrainRun] = {}
    pending: list[tuple[RunConfig, ObjectStore, Trainer]] = []
    for i, member in enumerate(members):
        member_store = open_store(member.output)
        if member_store.exists(f"{SAE_PREFIX}/sae.json") and member_store.exists(SUMMARY_KEY):
            done[i] = _saved_run(member.output, member_store)
            continue
        if dist.is_main:
            member_store.put_json(CONFIG_KEY, member.model_dump(mode="json"))
        trainer = _trainer(member, model, source, member_store, False, on_log, should_stop, dist)
        pending.append((member, member_store, trainer))
    clock = time.perf_counter()
    summaries = Sweep([trainer for _, _, trainer in pending], progress and dist.is_main).run() if pending else []
    timings["train_sweep"] = time.perf_counter() - clock
    finished = iter(
        _finish(member, model, splits, member_store, trainer, summary, dict(timings), progress, dist)
        for (member, member_store, trainer), summary in zip(pending, summaries, strict=True)
    )
    return [done[i] if i in done else next(finished) for i in range(len(members))]


def _saved_run(output: str, store: ObjectStore) -> TrainRun:
    summary = store.get_json(SUMMARY_KEY)
    metrics = EvalMetrics(**summary["eval"]) if summary.get("eval") else None
    return TrainRun(
        output,
        load_sae(f"{output}/{SAE_PREFIX}"),
        metrics,
        summary.get("timings_s", {}),
        summary.get("train_tokens", 0),
    )


def _trainer(
    cfg: RunConfig,
    model: LanguageModel,
    source: ActivationSource,
    store: ObjectStore,
    progress: bool,
    on_log: Callable[[dict], None] | None,
    should_stop: Callable[[], bool] | None,
    dist,
) -> Trainer:
    """The Trainer of the SAE `cfg.sae` describes (initialised from its own seed), on `source`."""
    stats = source.stats()
    d_in, d_out = stats[cfg.sae.input_hook].d, stats[cfg.sae.output_hook].d
    spec = make_spec(cfg.sae, d_in=d_in, d_out=d_out, model=model.name)
    sae = shard_sae(build_sae(spec), dist.feature_shard()).to(cfg.sae.device, TORCH_DTYPES[cfg.sae.dtype])
    return Trainer(
        sae, source, cfg.train, store, spec.input_hook, spec.output_hook, progress, on_log, should_stop, dist
    )


def _finish(
    cfg: RunConfig,
    model: LanguageModel,
    splits: TokenSplits,
    store: ObjectStore,
    trainer: Trainer,
    summary: TrainSummary,
    timings: dict[str, float],
    progress: bool,
    dist,
) -> TrainRun | None:
    """Save and evaluate a trained SAE (None when training was interrupted, or off rank 0).
    A feature-sharded SAE is saved by its shards and evaluated assembled, on rank 0."""
    if summary.steps < trainer.total_steps:
        return None
    save_trained(store, SAE_PREFIX, trainer.sae, dist)
    if not dist.is_main:
        return None
    sae = load_sae(store.child(SAE_PREFIX), cfg.sae.device) if trainer.sae.shard.sharded else trainer.sae
    assert isinstance(sae, SparseAutoencoder)  # a CLT finishes in _train_clt
    metrics = None
    if len(splits.eval):
        clock = time.perf_counter()
        metrics = evaluate(sae, model, splits.eval, cfg.eval, progress)
        store.put_json(EVAL_KEY, metrics.model_dump())
        timings["eval"] = time.perf_counter() - clock
    run = TrainRun(cfg.output, sae, metrics, timings, summary.tokens, summary.resumed_from)
    store.put_json(SUMMARY_KEY, run.summary())
    return run


def _train_one(
    cfg: RunConfig,
    model: LanguageModel,
    splits: TokenSplits,
    source: ActivationSource,
    store: ObjectStore,
    timings: dict[str, float],
    progress: bool,
    on_log: Callable[[dict], None] | None,
    should_stop: Callable[[], bool] | None,
    dist,
) -> TrainRun | None:
    """Train and evaluate the SAE `cfg.sae` describes on `source`, saving under `store`."""
    clock = time.perf_counter()
    trainer = _trainer(cfg, model, source, store, progress and dist.is_main, on_log, should_stop, dist)
    summary = trainer.run()
    timings["train"] = time.perf_counter() - clock
    return _finish(cfg, model, splits, store, trainer, summary, timings, progress, dist)


def run_train_clt(
    cfg: RunConfig,
    progress: bool = True,
    on_log: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainRun | None:
    """Train the cross-layer transcoder of `cfg.clt`, saved as `OUTPUT/clt` in circuit-tracer's
    layout and evaluated (per layer, and LM loss with every covered MLP replaced)."""
    if cfg.clt is None:
        raise ValueError("run_train_clt needs a [clt] section")
    return run_train(cfg, progress, on_log, should_stop)


def _train_clt(
    cfg: RunConfig,
    model: LanguageModel,
    splits: TokenSplits,
    source: ActivationSource,
    store: ObjectStore,
    timings: dict[str, float],
    progress: bool,
    on_log: Callable[[dict], None] | None,
    should_stop: Callable[[], bool] | None,
    dist,
) -> TrainRun | None:
    assert cfg.clt is not None
    clock = time.perf_counter()
    hooks_in, hooks_out = cfg.clt.hooks_in, cfg.clt.hooks_out
    spec = CrossLayerTranscoderSpec.model_validate(
        {**cfg.clt.model_dump(), "d_model": source.stats()[hooks_in[0]].d, "model": model.name}
    )
    clt = CrossLayerTranscoder(spec).to(spec.device, TORCH_DTYPES[spec.dtype])
    trainer = Trainer(
        clt, source, cfg.train, store, hooks_in, hooks_out, progress and dist.is_main, on_log, should_stop, dist
    )
    summary = trainer.run()
    timings["train"] = time.perf_counter() - clock
    if summary.steps < trainer.total_steps or not dist.is_main:
        return None
    clt.save_circuit_tracer(store.child(CLT_PREFIX))
    metrics = None
    if len(splits.eval):
        clock = time.perf_counter()
        metrics = evaluate_clt(clt, model, splits.eval, cfg.eval, progress)
        store.put_json(EVAL_KEY, metrics.model_dump())
        timings["eval"] = time.perf_counter() - clock
    run = TrainRun(cfg.output, clt, metrics, timings, summary.tokens, summary.resumed_from, CLT_PREFIX)
    store.put_json(SUMMARY_KEY, run.summary())
    return run


def run_eval(
    sae_location: str,
    data: DataConfig | None = None,
    eval_cfg: EvalConfig | None = None,
    model_cfg: ModelConfig | None = None,
    progress: bool = True,
) -> EvalMetrics:
    """Evaluate a saved SAE; without configs, use the run's own (config.json beside the SAE)."""
    sae = load_sae(sae_location)
    run_cfg = _run_config_beside(sae_location)
    data = data or (run_cfg.data if run_cfg else DataConfig())
    eval_cfg = eval_cfg or (run_cfg.eval if run_cfg else EvalConfig())
    model_cfg = model_cfg or (run_cfg.model if run_cfg else ModelConfig(name=sae.spec.model))
    model = load_language_model(model_cfg)
    splits = load_token_splits(data, model.tokenizer)
    sae.to(eval_cfg.device)
    return evaluate(sae, model, splits.eval, eval_cfg, progress)


@dataclass
class EvalDestination:
    """Where `lm-saes eval --documents URI --sae-id ID` stores its report (merged into the SAE's
    record) and, with the universality suite, the nearest neighbours of each feature: within the
    SAE by decoder cosine, and across it and the compared SAE (`compare_id`) by activation
    correlation. `run_eval_suite` fills `neighbours`; `store_eval_suite` writes everything."""

    documents: str
    sae_id: str
    compare_id: str | None = None
    k: int = 5
    # (the SAE whose features they are, kind, the SAE the neighbours are in, one list per feature)
    neighbours: list[tuple[str, NeighbourKind, str, list[list[Neighbour]]]] = field(default_factory=list)


def check_eval_destination(
    destination: EvalDestination, suites: list[str], compare_location: str | None
) -> EvalDestination:
    """Before any work: the SAE (and, for universality, the compared one: `compare_id`, by default
    its run folder's name as analysis names it) must be in the store; a LookupError or ValueError
    names what is missing."""
    from lm_saes.analysis.analyze import default_sae_id

    if not 1 <= destination.k <= MAX_NEIGHBOURS:
        raise ValueError(f"neighbours: k must be in 1..{MAX_NEIGHBOURS}, got {destination.k}")
    if not any(suite in MODEL_SUITES for suite in suites):
        raise ValueError(
            f"--sae-id stores an SAE's evaluation, but suite {', '.join(suites)} evaluates no SAE of the store"
        )
    compare_id = destination.compare_id
    if "universality" in suites and compare_location is not None:
        compare_id = compare_id or default_sae_id(compare_location)
    elif compare_id is not None:
        raise ValueError("--compare-id names the universality suite's second SAE: add universality to --suite")
    with open_document_store(destination.documents) as documents:
        if documents.get_sae(destination.sae_id) is None:
            raise LookupError(
                f"--sae-id: no SAE {destination.sae_id!r} in {destination.documents}; analyze it first "
                "(lm-saes analyze registers it) or name the stored one"
            )
        if compare_id is not None:
            if compare_id == destination.sae_id:
                raise ValueError(f"--compare-id: {compare_id!r} is the evaluated SAE itself; name the compared one")
            if documents.get_sae(compare_id) is None:
                raise LookupError(
                    f"--compare-id: no SAE {compare_id!r} in {destination.documents} (the compared SAE's id); "
                    "analyze it first or pass --compare-id with its id there"
                )
    return EvalDestination(destination.documents, destination.sae_id, compare_id, destination.k)


def run_eval_suite(
    suites: list[str],
    sae_location: str | None = None,
    compare_location: str | None = None,
    scenarios: list[str] | None = None,
    data: DataConfig | None = None,
    eval_cfg: EvalConfig | None = None,
    model_cfg: ModelConfig | None = None,
    progress: bool = True,
    destination: EvalDestination | None = None,
) -> EvalReport:
    """The chosen suites of lm_saes.evals.suite over one SAE (and `compare_location` for
    universality). With a `destination` (see check_eval_destination), the universality suite also
    collects each feature's neighbours into it, for store_eval_suite."""
    report = EvalReport(sae=sae_location, compared_with=compare_location)
    if any(suite in MODEL_SUITES for suite in suites):
        if sae_location is None:
            raise ValueError(f"suites {', '.join(s for s in suites if s in MODEL_SUITES)} evaluate an SAE: pass --sae")
        if "universality" in suites and compare_location is None:
            raise ValueError("the universality suite compares two SAEs: pass --compare with the second one")
        sae = load_sae(sae_location)
        if "absorption" in suites and sae.spec.is_transcoder:
            raise ValueError(
                "the absorption suite compares decoder rows with a probe of the input: it needs an SAE, "
                f"not a transcoder ({sae.spec.input_hook} -> {sae.spec.output_hook})"
            )
        if destination is not None:
            _check_recorded_width(destination.documents, destination.sae_id, sae, "--sae-id")
        run_cfg = _run_config_beside(sae_location)
        data = data or (run_cfg.data if run_cfg else DataConfig())
        eval_cfg = eval_cfg or (run_cfg.eval if run_cfg else EvalConfig())
        model_cfg = model_cfg or (run_cfg.model if run_cfg else ModelConfig(name=sae.spec.model))
        model = load_language_model(model_cfg)
        contexts = context_budget(load_token_splits(data, model.tokenizer).eval, eval_cfg)
        sae.to(eval_cfg.device)
        if "core" in suites:
            started = time.perf_counter()
            report.core = evaluate(sae, model, contexts, eval_cfg, progress)
            report.seconds["core"] = time.perf_counter() - started
        if "universality" in suites and compare_location is not None:
            other = load_sae(compare_location).to(eval_cfg.device)
            if other.spec.model != sae.spec.model:
                raise ValueError(
                    f"--compare {compare_location} is an SAE of {other.spec.model!r}, not {sae.spec.model!r}: "
                    "universality compares activations on the same tokens of one model"
                )
            if destination is not None and destination.compare_id is not None:
                _check_recorded_width(destination.documents, destination.compare_id, other, "--compare-id")
            started = time.perf_counter()
            corr = correlate(sae, other, model, contexts, eval_cfg.batch_contexts, progress)
            report.universality = compare(corr, sae.W_dec.detach().cpu(), other.W_dec.detach().cpu())
            report.compared_id = destination.compare_id if destination is not None else None
            report.seconds["universality"] = time.perf_counter() - started
            if destination is not None:
                _collect_neighbours(destination, sae, other, corr.correlation())
        if "absorption" in suites:
            started = time.perf_counter()
            report.absorption = absorption(sae, model, eval_cfg.absorption, progress)
            report.seconds["absorption"] = time.perf_counter() - started
        if "probing" in suites:
            started = time.perf_counter()
            documents = iter_texts(data.source, data.text_field)  # the text-level tasks' passages
            report.probing = probing(sae, model, contexts, documents, eval_cfg.probing, progress)
            report.seconds["probing"] = time.perf_counter() - started
    if "synthetic" in suites:
        started = time.perf_counter()
        report.synthetic = run_synthetic(scenarios or [], progress)
        report.seconds["synthetic"] = time.perf_counter() - started
    return report


def _check_recorded_width(documents_uri: str, sae_id: str, sae: SparseAutoencoder, flag: str) -> None:
    with open_document_store(documents_uri) as documents:
        record = documents.get_sae(sae_id)
    if record is None:
        raise LookupError(f"{flag}: no SAE {sae_id!r} in {documents_uri}")
    if record.d_sae is not None and record.d_sae != sae.d_sae:
        raise ValueError(
            f"{flag}: the stored SAE {sae_id!r} has {record.d_sae} features, the one evaluated {sae.d_sae}: "
            "not the same SAE"
        )


def _collect_neighbours(
    destination: EvalDestination, sae: SparseAutoencoder, other: SparseAutoencoder, correlation: torch.Tensor
) -> None:
    """Within each SAE by decoder cosine; across them, both ways, by activation correlation."""
    k, a, b = destination.k, destination.sae_id, destination.compare_id
    destination.neighbours.append((a, "decoder", a, decoder_neighbours(sae.W_dec, k)))
    if b is not None:
        destination.neighbours.append((b, "decoder", b, decoder_neighbours(other.W_dec, k)))
        destination.neighbours.append((a, "activation", b, nearest_neighbours(correlation, k)))
        destination.neighbours.append((b, "activation", a, nearest_neighbours(correlation.T, k)))


def store_eval_suite(report: EvalReport, destination: EvalDestination) -> dict[str, int]:
    """The report merged into the SAE's record (its earlier suites stay) and the neighbours
    collected by run_eval_suite written to the features' documents; returns, per neighbour kind
    and SAE ("decoder a", "activation a->b"), how many stored features got some."""
    written: dict[str, int] = {}
    with open_document_store(destination.documents) as documents:
        documents.put_evals(destination.sae_id, report)
        for owner, kind, partner, lists in destination.neighbours:
            records = {
                feature: [
                    FeatureNeighbour(
                        sae_id=partner, index=n.partner, similarity=max(-1.0, min(1.0, n.similarity)), kind=kind
                    )
                    for n in neighbours
                    # a dead feature correlates with nothing: no activation partners, not arbitrary ones
                    if math.isfinite(n.similarity) and (kind == "decoder" or n.similarity > 0)
                ]
                for feature, neighbours in enumerate(lists)
            }
            count = documents.put_neighbours(owner, kind, partner, records)
            written[f"{kind} {owner}" if owner == partner else f"{kind} {owner}->{partner}"] = count
            if count == 0:
                log.warning("no stored feature of %s in %s got %s neighbours (is it analyzed?)", owner, documents, kind)
    return written


def save_report_beside(sae_location: str, report: EvalReport) -> str:
    """`evals.json` beside the SAE (where `lm-saes analyze` picks it up), merged with the one
    there: a suite run now replaces its earlier result, the others stay. Returns its location."""
    parent = _parent(sae_location)
    store = open_store(parent)
    stored = EvalReport.model_validate(store.get_json(REPORT_KEY)) if store.exists(REPORT_KEY) else None
    store.put_json(REPORT_KEY, merge_reports(stored, report).model_dump(mode="json"))
    return f"{parent.rstrip('/')}/{REPORT_KEY}"


def _parent(sae_location: str) -> str:
    return sae_location.rstrip("/").rsplit("/", 1)[0] if "/" in sae_location.rstrip("/") else "."


def _run_config_beside(sae_location: str) -> RunConfig | None:
    store = open_store(_parent(sae_location))
    if not store.exists(CONFIG_KEY):
        return None
    return RunConfig.model_validate(store.get_json(CONFIG_KEY))
