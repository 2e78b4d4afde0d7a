"""`lm-saes analyze`: one pass of text through the model and the SAE for all features.

The pass checkpoints its collector state to the object store, so an interrupted analysis
resumes at the batch it reached. Results go to the document store in batches of complete
feature documents, then the analysis record flips to `succeeded`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import torch
from pydantic import ValidationError
from tqdm.auto import tqdm

from lm_saes.activations.store import StoredRows, read_manifest
from lm_saes.analysis.collector import STATE_VERSION, FeatureCollector
from lm_saes.analysis.logit_lens import logit_lens
from lm_saes.config import AnalyzeConfig, ModelConfig
from lm_saes.data.packing import load_token_splits
from lm_saes.evals.suite import REPORT_KEY, EvalReport, merge_reports
from lm_saes.models import LanguageModel, load_language_model
from lm_saes.saes import SparseAutoencoder, load_sae
from lm_saes.sharding import ShardLedger
from lm_saes.stores import ObjectStore, open_store
from lm_saes.stores.documents import DocumentStore, open_document_store

log = logging.getLogger(__name__)
CHECKPOINT_KEY = "analysis-checkpoint.pt"
PARTS_PREFIX = "parts/"  # a sharded pass's spec, ledger and shard results


@dataclass
class AnalysisResult:
    sae_id: str
    analysis_id: str
    documents: str
    tokens: int
    seconds: float
    features_written: int
    shard_attempts: list[int] | None = None  # attempts each shard took (sharded passes)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def default_sae_id(sae_location: str) -> str:
    """`runs/smollm2-l6-topk/sae` -> `smollm2-l6-topk`; a transcoder set's
    `runs/tc/layer-6/sae` -> `tc-layer-6`."""
    parts = [p for p in sae_location.rstrip("/").split("/") if p]
    if len(parts) >= 3 and parts[-1] == "sae" and parts[-2].startswith("layer-"):
        return f"{parts[-3]}-{parts[-2]}"
    if len(parts) >= 2 and parts[-1] == "sae":
        return parts[-2]
    return parts[-1] if parts else "sae"


@torch.no_grad()
def feature_activations(
    model: LanguageModel, sae: SparseAutoencoder, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense activations [B, T, F] of every feature (zero at BOS) and the valid-position mask."""
    valid = tokens != model.tokenizer.bos_token_id
    x = model.activations(tokens, [sae.spec.input_hook])[sae.spec.input_hook]
    acts = torch.zeros(*tokens.shape, sae.d_sae, device=x.device, dtype=sae.W_enc.dtype)
    acts[valid.to(x.device)] = sae.encode(x[valid.to(x.device)])
    return acts.float().cpu(), valid


@torch.no_grad()
def encode_rows(
    sae: SparseAutoencoder, tokens: torch.Tensor, rows: torch.Tensor, bos: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `feature_activations` returns, from stored rows (the non-BOS positions of `tokens`, in order)."""
    valid = tokens != bos
    acts = torch.zeros(*tokens.shape, sae.d_sae, dtype=sae.W_enc.dtype, device=sae.W_enc.device)
    acts[valid.to(acts.device)] = sae.encode(rows)
    return acts.float().cpu(), valid


def _stored_rows(cfg: AnalyzeConfig, sae: SparseAutoencoder, model: LanguageModel) -> StoredRows:
    """The activation store `cfg.activations` names, checked to hold what this analysis reads."""
    assert cfg.activations is not None
    store = open_store(cfg.activations)
    manifest = read_manifest(store)
    hook = sae.spec.input_hook
    if manifest is None:
        raise ValueError(f"activations = {cfg.activations!r} holds no activation manifest; generate activations there")
    if hook not in manifest.hooks or manifest.model != model.name:
        raise ValueError(
            f"activations = {cfg.activations!r} holds {sorted(manifest.hooks)} of {manifest.model!r}; "
            f"this SAE reads {hook!r} of {model.name!r}"
        )
    if manifest.contexts is None:
        raise ValueError(
            f"activations = {cfg.activations!r} was written before stores recorded their contexts; "
            "regenerate it, or leave activations unset to run the model"
        )
    return StoredRows(store, manifest, [hook])


@dataclass
class AnalysisPass:
    """What a pass (or one shard of it) reads: the SAE, the model, the contexts and where they go."""

    sae: SparseAutoencoder
    model: LanguageModel
    contexts: torch.Tensor  # [n_contexts, context_size]; a context's row is its global id
    stored: StoredRows | None  # the SAE's input rows, when read from an activation store
    row_starts: torch.Tensor  # first stored row of each context (and the end)
    sae_id: str
    fingerprint: str
    analysis_id: str
    store: ObjectStore  # checkpoints (and shard results) of this analysis

    def n_batches(self, cfg: AnalyzeConfig) -> int:
        return -(-len(self.contexts) // cfg.analysis.batch_contexts)


def prepare_pass(cfg: AnalyzeConfig, sae_location: str) -> AnalysisPass:
    sae = load_sae(sae_location, device=cfg.analysis.device)
    model = load_language_model(cfg.model or ModelConfig(name=sae.spec.model, device=cfg.device, dtype=cfg.dtype))
    model.check_hooks([sae.spec.input_hook])
    stored = _stored_rows(cfg, sae, model) if cfg.activations else None
    if stored is not None:
        contexts = stored.contexts()
    else:
        splits = load_token_splits(cfg.data, model.tokenizer)
        contexts = torch.cat([splits.train, splits.eval])
    bos = model.tokenizer.bos_token_id
    row_starts = torch.cat([torch.zeros(1, dtype=torch.long), (contexts != bos).sum(1).cumsum(0)])
    sae_id, fingerprint, analysis_id, store = _identity(cfg, sae_location)
    return AnalysisPass(sae, model, contexts, stored, row_starts, sae_id, fingerprint, analysis_id, store)


def _identity(cfg: AnalyzeConfig, sae_location: str) -> tuple[str, str, str, ObjectStore]:
    """(SAE id, fingerprint, analysis id, the analysis's object store), known without loading."""
    sae_id = cfg.sae_id or default_sae_id(sae_location)
    fingerprint = _fingerprint(cfg, sae_location)
    analysis_id = f"{sae_id}-{fingerprint[:10]}"
    return sae_id, fingerprint, analysis_id, open_store(cfg.output).child(analysis_id)


def parts_store(cfg: AnalyzeConfig, sae_location: str) -> ObjectStore:
    """Where a sharded pass keeps its spec, ledger and shard results."""
    return _identity(cfg, sae_location)[3].child(PARTS_PREFIX.rstrip("/"))


def new_collector(cfg: AnalyzeConfig, sae: SparseAutoencoder) -> FeatureCollector:
    a = cfg.analysis
    return FeatureCollector(sae.d_sae, a.top_n, a.samples_per_bucket, a.window_before, a.window_after, a.seed)


def collect(
    run: AnalysisPass,
    cfg: AnalyzeConfig,
    collector: FeatureCollector,
    batches: range,
    checkpoint_key: str = CHECKPOINT_KEY,
    progress: bool = False,
    stop_after_batches: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Feed batches `batches` (of the whole pass's batches) to `collector`, checkpointing to
    `checkpoint_key` and resuming from it; `on_batch(done, total)` counts within `batches`."""
    sae, model, contexts = run.sae, run.model, run.contexts
    bos = model.tokenizer.bos_token_id
    batch_size = cfg.analysis.batch_contexts
    first = max(batches.start, _restore(run.store, collector, run.fingerprint, checkpoint_key))
    with tqdm(
        total=len(batches), initial=first - batches.start, desc="analyze", unit="batch", disable=not progress
    ) as bar:
        for index in range(first, batches.stop):
            stop = should_stop is not None and should_stop()
            if stop or (stop_after_batches is not None and index - batches.start >= stop_after_batches):
                _checkpoint(run.store, collector, run.fingerprint, index, checkpoint_key)
                raise InterruptedError(f"stopped after {index - batches.start} batches (checkpoint saved)")
            lo, hi = index * batch_size, min((index + 1) * batch_size, len(contexts))
            tokens = contexts[lo:hi]
            if run.stored is None:
                acts, valid = feature_activations(model, sae, tokens)
            else:
                rows = run.stored.rows(int(run.row_starts[lo]), int(run.row_starts[hi]))[sae.spec.input_hook]
                acts, valid = encode_rows(sae, tokens, rows, bos)
            collector.update(tokens, acts, valid, torch.arange(lo, hi))
            bar.update(1)
            if on_batch:
                on_batch(index + 1 - batches.start, len(batches))
            every = cfg.analysis.checkpoint_every
            if every and (index + 1 - batches.start) % every == 0 and index + 1 < batches.stop:
                _checkpoint(run.store, collector, run.fingerprint, index + 1, checkpoint_key)


def run_analysis(
    cfg: AnalyzeConfig,
    sae_location: str,
    progress: bool = True,
    stop_after_batches: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_shards: Callable[[ShardLedger], None] | None = None,
) -> AnalysisResult:
    """Analyze every feature; `on_batch(done, total)` reports progress; when `should_stop()`
    turns true (or after `stop_after_batches`) the pass checkpoints and raises InterruptedError.
    With `cfg.shards` > 1 the batches are split among that many local processes whose results
    merge exactly (lm_saes.analysis.sharded); `on_shards(ledger)` then reports their progress."""
    started = time.perf_counter()
    run = prepare_pass(cfg, sae_location)
    documents = open_document_store(cfg.documents)
    try:
        _register(documents, run.model, run.sae, run.sae_id, sae_location, run.analysis_id, cfg, len(run.contexts))
        attempts: list[int] | None = None
        if cfg.shards > 1:
            from lm_saes.analysis.sharded import analyze_in_shards

            collector, ledger = analyze_in_shards(run, cfg, sae_location, on_shards, should_stop)
            attempts = ledger.attempts
        else:
            collector = new_collector(cfg, run.sae)
            batches = range(run.n_batches(cfg))
            collect(run, cfg, collector, batches, CHECKPOINT_KEY, progress, stop_after_batches, on_batch, should_stop)
        written = write_features(documents, collector, run.sae, run.model, run.sae_id, run.analysis_id, cfg)
        analysis = documents.get_analysis(run.analysis_id)
        if analysis is None:
            raise LookupError(f"analysis {run.analysis_id} is no longer in {cfg.documents}")
        documents.put_analysis(
            analysis.model_copy(
                update={"state": "succeeded", "updated": _now(), "tokens": int(collector.state["tokens_seen"])}
            )
        )
        run.store.delete(CHECKPOINT_KEY)
        if cfg.shards > 1:
            run.store.delete_prefix(PARTS_PREFIX)
        return AnalysisResult(
            run.sae_id,
            run.analysis_id,
            cfg.documents,
            int(collector.state["tokens_seen"]),
            time.perf_counter() - started,
            written,
            attempts,
        )
    finally:
        documents.close()


def write_features(
    documents: DocumentStore,
    collector: FeatureCollector,
    sae: SparseAutoencoder,
    model: LanguageModel,
    sae_id: str,
    analysis_id: str,
    cfg: AnalyzeConfig,
) -> int:
    """Assemble one complete document per feature and write them in batches."""
    strings = _vocab_strings(model)
    lens = None
    if sae.spec.d_out == model.d_model:
        lens = logit_lens(sae.W_dec.detach(), model.bridge.W_U.detach(), cfg.analysis.logit_lens_k)
    density, mean = collector.density(), collector.mean_activation()
    max_act = collector.state["max_act"]
    written = 0
    batch: list[dict] = []
    for feature in range(sae.d_sae):
        top = collector.top_examples(feature)
        quantiles = collector.quantile_samples(
            feature, cfg.analysis.quantile_intervals, cfg.analysis.samples_per_interval
        )
        for example in top + [e for q in quantiles for e in q["examples"]]:
            example["tokens"] = [strings[i] for i in example["token_ids"]]
        doc = {
            "sae_id": sae_id,
            "index": feature,
            "analysis_id": analysis_id,
            "density": float(density[feature]),
            "max_activation": float(max_act[feature]),
            "mean_activation": float(mean[feature]),
            "histogram": collector.histogram(feature),
            "top_examples": top,
            "quantile_samples": quantiles,
            "top_tokens": _top_tokens(top, cfg.analysis.window_before, strings),
            "logit_lens": _lens_doc(lens, feature, strings) if lens else None,
        }
        batch.append(doc)
        if len(batch) == cfg.analysis.write_batch:
            documents.put_features(batch)
            written += len(batch)
            batch = []
    if batch:
        documents.put_features(batch)
        written += len(batch)
    return written


def _top_tokens(examples: list[dict], before: int, strings: list[str]) -> list[dict]:
    """Tokens at which the top examples peak, with how often and how strongly."""
    counts: Counter[int] = Counter()
    best: dict[int, float] = {}
    for example in examples:
        acts = example["activations"]
        peak = max(range(len(acts)), key=acts.__getitem__)
        token = example["token_ids"][peak]
        counts[token] += 1
        best[token] = max(best.get(token, 0.0), example["max_activation"])
    return [
        {"token": strings[t], "token_id": t, "count": c, "max_activation": best[t]} for t, c in counts.most_common(10)
    ]


def _lens_doc(lens, feature: int, strings: list[str]) -> dict:
    top_v, top_i, bottom_v, bottom_i = (t[feature].tolist() for t in lens)
    return {
        "top": [{"token": strings[i], "token_id": i, "value": v} for i, v in zip(top_i, top_v, strict=True)],
        "bottom": [{"token": strings[i], "token_id": i, "value": v} for i, v in zip(bottom_i, bottom_v, strict=True)],
    }


def _vocab_strings(model: LanguageModel) -> list[str]:
    vocab = int(model.bridge.cfg.d_vocab)
    return model.tokenizer.token_strings(list(range(vocab)))


def _register(
    documents: DocumentStore,
    model: LanguageModel,
    sae: SparseAutoencoder,
    sae_id: str,
    sae_location: str,
    analysis_id: str,
    cfg: AnalyzeConfig,
    n_contexts: int,
) -> None:
    documents.put_model({"name": model.name, "n_layers": model.n_layers, "d_model": model.d_model})
    metrics = {}
    parent = sae_location.rstrip("/").rsplit("/", 1)[0] if "/" in sae_location.rstrip("/") else "."
    parent_store = open_store(parent)
    if parent_store.exists("eval.json"):
        metrics = parent_store.get_json("eval.json")
    # The suite's report: what was stored for this SAE (a re-analysis keeps it), merged with the
    # evals.json beside the SAE (`lm-saes eval --suite` writes it there).
    registered = documents.get_sae(sae_id)
    evals = None
    if registered is not None and registered.evals is not None:
        try:
            evals = EvalReport.model_validate(registered.evals)
        except ValidationError as error:  # written by another version: the analysis goes on without it
            log.warning("SAE %s: its stored evals no longer fit an EvalReport, dropped: %s", sae_id, error)
    if parent_store.exists(REPORT_KEY):
        try:
            beside = EvalReport.model_validate(parent_store.get_json(REPORT_KEY))
        except ValidationError as error:
            raise ValueError(f"{parent}/{REPORT_KEY} is not an evaluation report: {error}") from None
        evals = merge_reports(evals, beside)
    spec = sae.spec
    documents.put_sae(
        {
            "id": sae_id,
            "model": spec.model or model.name,
            "hook_in": spec.hook_in,
            "hook_out": spec.hook_out,
            "architecture": spec.architecture,
            "d_sae": spec.d_sae,
            "config": spec.model_dump(mode="json"),
            "metrics": metrics,
            "evals": evals.model_dump(mode="json") if evals is not None else None,
            "artifact": sae_location,
            "created": _now(),
        }
    )
    existing = documents.get_analysis(analysis_id)
    documents.put_analysis(
        {
            "id": analysis_id,
            "sae_id": sae_id,
            "state": "running",
            "tokens": 0,
            "contexts": n_contexts,
            "config": cfg.model_dump(mode="json"),
            "created": existing.created if existing else _now(),
            "updated": _now(),
        }
    )


def _fingerprint(cfg: AnalyzeConfig, sae_location: str) -> str:
    """Same SAE + data + analysis settings -> same id, so a rerun resumes instead of restarting."""
    key = {"sae": sae_location, "data": cfg.data.model_dump(), "analysis": cfg.analysis.model_dump(exclude={"device"})}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _checkpoint(
    store: ObjectStore, collector: FeatureCollector, fingerprint: str, next_batch: int, key: str = CHECKPOINT_KEY
) -> None:
    buffer = io.BytesIO()
    torch.save(
        {
            "fingerprint": fingerprint,
            "next_batch": next_batch,
            "state": collector.state,
            "version": STATE_VERSION,
        },
        buffer,
    )
    store.put_bytes(key, buffer.getvalue())


def _restore(store: ObjectStore, collector: FeatureCollector, fingerprint: str, key: str = CHECKPOINT_KEY) -> int:
    """The batch to resume at from the checkpoint at `key` (0: none that fits)."""
    if not store.exists(key):
        return 0
    saved = torch.load(io.BytesIO(store.get_bytes(key)), weights_only=False)
    if saved["fingerprint"] != fingerprint or saved.get("version") != STATE_VERSION:
        return 0  # another pass's, or an older collector's state: start over
    collector.state = saved["state"]
    return int(saved["next_batch"])
