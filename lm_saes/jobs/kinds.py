"""What each kind of job does: thin adapters from a job record to the core runners."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lm_saes.config import AnalyzeConfig, RunConfig, parse_config
from lm_saes.jobs.lifecycle import JobReporter
from lm_saes.records import JobRecord


def training_job(job: JobRecord, reporter: JobReporter, should_stop: Callable[[], bool]) -> dict | None:
    """`config` is a `lm-saes train` config; its output (checkpoints) makes the job resumable."""
    from lm_saes.runner import run_train

    cfg = parse_config(job.config, RunConfig, f"job {job.id}")

    def on_log(record: dict) -> None:
        keys = ("step", "tokens", "loss", "l0", "explained_variance", "total_steps")
        reporter.progress(
            record["step"] / record["total_steps"],
            {k: float(record[k]) for k in keys},
            force=record["step"] == record["total_steps"],
        )

    run = run_train(cfg, progress=False, on_log=on_log, should_stop=should_stop)
    return None if run is None else run.summary()


def analysis_job(job: JobRecord, reporter: JobReporter, should_stop: Callable[[], bool]) -> dict | None:
    """`config` holds `sae` (the SAE's location) and `analyze` (a `lm-saes analyze` config), or
    `autointerp` (an autointerp config: the analysis service runs both)."""
    from lm_saes.analysis import run_analysis

    if "autointerp" in job.config:
        return autointerp_job(job, reporter, should_stop)

    cfg = parse_config(job.config.get("analyze", {}), AnalyzeConfig, f"job {job.id}")
    result = run_analysis(
        cfg,
        job.config["sae"],
        progress=False,
        should_stop=should_stop,
        on_batch=lambda done, total: reporter.progress(done / total, {"batches": done}),
        on_shards=lambda ledger: reporter.progress(ledger.progress, ledger.metrics()),
    )
    extra = {"shard_attempts": result.shard_attempts} if result.shard_attempts is not None else {}
    return {
        **extra,
        "sae_id": result.sae_id,
        "analysis_id": result.analysis_id,
        "documents": result.documents,
        "tokens": result.tokens,
        "features": result.features_written,
        "seconds": result.seconds,
    }


def autointerp_job(job: JobRecord, reporter: JobReporter, should_stop: Callable[[], bool]) -> dict | None:
    """Explain and score; resumable because finished features are stored and then skipped."""
    from lm_saes.autointerp.run import AutointerpConfig, run_autointerp

    cfg = parse_config(job.config["autointerp"], AutointerpConfig, f"job {job.id}")
    result = run_autointerp(
        cfg,
        on_progress=lambda done, total: reporter.progress(done / max(total, 1), {"features": done, "total": total}),
        should_stop=should_stop,
    )
    return result.summary()


def activations_job(job: JobRecord, reporter: JobReporter, should_stop: Callable[[], bool]) -> dict | None:
    """`config`: `model` (name), `output` (folder or s3://), `data` and `activations` sections."""
    from lm_saes.activations import generate_activations
    from lm_saes.config import ActivationsConfig, DataConfig, ModelConfig
    from lm_saes.data.packing import load_token_splits
    from lm_saes.models import load_language_model
    from lm_saes.stores import open_store

    config = job.config
    data = parse_config(config.get("data", {}), DataConfig, f"job {job.id} data")
    acts = parse_config(config.get("activations", {}), ActivationsConfig, f"job {job.id} activations")
    model_config = ModelConfig(name=config["model"])
    model = load_language_model(model_config)
    contexts = load_token_splits(data, model.tokenizer).train
    store = open_store(config["output"])
    attempts = None
    if acts.shards > 1:
        from lm_saes.activations.sharded import generate_sharded_activations

        ledgers = []

        def on_shards(ledger) -> None:
            ledgers.append(ledger)
            reporter.progress(ledger.progress, ledger.metrics())

        manifest = generate_sharded_activations(
            model,
            model_config,
            contexts,
            acts.hooks,
            store,
            acts.shards,
            batch_contexts=acts.batch_contexts,
            shard_tokens=acts.shard_tokens,
            dtype=acts.dtype,
            max_attempts=acts.shard_attempts,
            on_shards=on_shards,
            should_stop=should_stop,
        )
        attempts = ledgers[-1].attempts if ledgers else None
    else:
        manifest = generate_activations(
            model, contexts, acts.hooks, store, acts.batch_contexts, acts.shard_tokens, acts.dtype, progress=False
        )
    result = {
        "output": config["output"],
        "n_tokens": manifest.n_tokens,
        "shards": len(manifest.shards),
        "hooks": list(manifest.hooks),
    }
    if attempts is not None:
        result["shard_attempts"] = attempts
    return result


def tracing_job(job: JobRecord, reporter: JobReporter, should_stop: Callable[[], bool]) -> dict | None:
    """`config`: `prompt`, `transcoders` (a set's location), `trace` (TraceConfig), `objects`
    (where graphs are saved) and `graph_id`. A trace is short: an interrupted one starts over."""
    from lm_saes.circuits import ReplacementModel, TranscoderSet, run_trace
    from lm_saes.config import ModelConfig, TraceConfig
    from lm_saes.models import load_language_model
    from lm_saes.stores import open_store

    config = job.config
    cfg = parse_config(config.get("trace", {}), TraceConfig, f"job {job.id} trace")
    transcoders = TranscoderSet.load(config["transcoders"], cfg.device)
    model = load_language_model(ModelConfig(name=transcoders.model, device=cfg.device))
    reporter.progress(0.05, {"step": 0})
    record = run_trace(
        ReplacementModel(model, transcoders),
        config["prompt"],
        cfg,
        open_store(config["objects"]),
        reporter.documents,
        config["graph_id"],
        progress=lambda done: reporter.progress(0.05 + 0.9 * done, {"fraction": done}),
    )
    return {
        "graph_id": record["id"],
        "scores": record["scores"],
        "counts": record["counts"],
        "seconds": record["seconds"],
    }


def job_shards(job: JobRecord) -> int:
    """How many shards the job's work is split into (1: not sharded)."""
    from lm_saes.config import ActivationsConfig

    if job.kind == "analysis" and "analyze" in job.config:
        return parse_config(job.config["analyze"], AnalyzeConfig, f"job {job.id}").shards
    if job.kind == "activations":
        return parse_config(job.config.get("activations", {}), ActivationsConfig, f"job {job.id} activations").shards
    return 1


def run_job_shard(job: JobRecord, index: int) -> None:
    """Shard `index` of a sharded job, as one pod of a Kubernetes Indexed Job runs it: its part
    and its done marker; the job's own worker (the merge step) then finds every part done."""
    from lm_saes.sharding import SPEC_KEY, run_part

    shards = job_shards(job)
    if shards < 2:
        raise ValueError(f"job {job.id} ({job.kind}) is not sharded; run it without --shard")
    if job.kind == "analysis":
        from lm_saes.analysis.analyze import parts_store
        from lm_saes.analysis.sharded import analysis_spec

        cfg = parse_config(job.config["analyze"], AnalyzeConfig, f"job {job.id}")
        parts = parts_store(cfg, job.config["sae"])
        spec = analysis_spec(cfg, job.config["sae"])
        parts.put_json(SPEC_KEY, spec)
    else:
        from lm_saes.activations.sharded import PARTS, activations_spec, publish_spec
        from lm_saes.config import ActivationsConfig, DataConfig, ModelConfig
        from lm_saes.data.packing import load_token_splits
        from lm_saes.models import load_language_model
        from lm_saes.stores import open_store

        data = parse_config(job.config.get("data", {}), DataConfig, f"job {job.id} data")
        acts = parse_config(job.config.get("activations", {}), ActivationsConfig, f"job {job.id} activations")
        model_config = ModelConfig(name=job.config["model"])
        model = load_language_model(model_config)
        contexts = load_token_splits(data, model.tokenizer).train
        parts = open_store(job.config["output"]).child(PARTS)
        spec = activations_spec(
            parts, model_config, contexts, acts.hooks, shards, acts.batch_contexts, acts.shard_tokens, acts.dtype
        )
        publish_spec(parts, spec, contexts, model.tokenizer.bos_token_id)
    run_part(spec, index, parts)


JOB_KINDS: dict[str, Callable[..., dict[str, Any] | None]] = {
    "training": training_job,
    "analysis": analysis_job,
    "activations": activations_job,
    "tracing": tracing_job,
}
