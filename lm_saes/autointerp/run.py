"""`lm-saes autointerp`: explain features with an LLM, score the explanations, store both.

For each chosen feature of an analyzed SAE: the explainer reads its contexts (`examples.py`),
the scorers test the explanation on held-out activating contexts and on silent ones
(`negatives.py`, one forward pass per chunk of features), and the explanation with all its
scores is written to the feature's document in one piece, a chunk at a time. A feature that
already holds an explanation from the same explainer model and prompt version, with every
requested score, is skipped: an interrupted run (or a re-run) does only what is left.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, NamedTuple

import torch
from pydantic import Field, model_validator

from lm_saes.autointerp.examples import Context, ExampleConfig, FeatureExamples, split_examples
from lm_saes.autointerp.llm import ChatClient, LLMSettings
from lm_saes.autointerp.prompts import PROMPT_VERSION, explain_messages, parse_explanation
from lm_saes.autointerp.scorers import Chat, ScoreResult, classify, embedding_score
from lm_saes.config import AnalyzeConfig, Device, Section, parse_config
from lm_saes.records import SCORERS, Explanation, ExplanationScore, FeatureRecord, ScorerName
from lm_saes.stores.documents import DocumentStore, open_document_store

# The local server `make up` starts (lm_saes.autointerp.server); $LM_SAES_LLM_* override it.
LOCAL_LLM = {"base_url": "http://127.0.0.1:8080/v1", "model": "smollm2-135m-instruct", "max_concurrency": 2}


def default_llm() -> LLMSettings:
    """LOCAL_LLM, with whatever $LM_SAES_LLM_* variables set taking precedence."""
    defaults = {f"LM_SAES_LLM_{key.upper()}": str(value) for key, value in LOCAL_LLM.items()}
    return LLMSettings.from_env({**defaults, **os.environ})


class AutointerpConfig(Section):
    """Top-level config of `lm-saes autointerp` (and of autointerp jobs)."""

    documents: str = Field("runs/lm-saes.sqlite", description="The store holding the SAE's analysis")
    sae_id: str = Field(min_length=1, max_length=200)
    sae: str | None = Field(None, description="The SAE's location; default: its record's artifact")
    features: list[int] | None = Field(None, max_length=1_000_000, description="Feature indices; default: all alive")
    max_features: int | None = Field(None, ge=1, description="At most this many (a seeded random subset)")
    min_density: float = Field(1e-5, ge=0.0, le=1.0, description="Skip features firing on fewer tokens")
    explain: bool = Field(True, description="Write new explanations (else score the stored ones)")
    scorers: list[ScorerName] = Field(default_factory=lambda: list(SCORERS))
    redo: bool = Field(False, description="Redo features that are already done")
    chunk: int = Field(32, ge=1, le=4096, description="Features per forward pass and per write")
    neighbours: int = Field(4, ge=1, le=64, description="Decoder neighbours whose contexts are hard negatives")
    negative_pool: int = Field(256, ge=1, description="Random contexts searched for silent windows")
    device: Device = "cpu"
    seed: int = 0
    llm: LLMSettings = Field(default_factory=lambda: default_llm())
    examples: ExampleConfig = Field(default_factory=ExampleConfig)

    @model_validator(mode="after")
    def _something_to_do(self) -> AutointerpConfig:
        if not self.explain and not self.scorers:
            raise ValueError("nothing to do: set explain = true or name at least one scorer")
        if self.features is not None and any(f < 0 for f in self.features):
            raise ValueError("features: indices must be >= 0")
        return self


class FeatureResult(NamedTuple):
    feature: int
    explanation: Explanation | None  # None: the explainer gave nothing readable
    judged: dict[str, ScoreResult]


class AutointerpResult(NamedTuple):
    sae_id: str
    selected: int
    skipped: int
    explained: int
    scored: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return self._asdict()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def chat_fn(client: ChatClient, temperature: float = 0.0) -> Chat:
    def chat(messages, max_tokens: int) -> tuple[str, int, int]:
        reply = client.chat(messages, max_tokens=max_tokens, temperature=temperature)
        return reply.text, reply.prompt_tokens, reply.completion_tokens

    return chat


def is_done(record: FeatureRecord, cfg: AutointerpConfig) -> bool:
    e = record.explanation
    if e is None or cfg.redo:
        return False
    fresh = e.prompt_version == PROMPT_VERSION and (not cfg.explain or e.model == cfg.llm.model)
    return fresh and all(name in e.scores for name in cfg.scorers)


def select_features(documents: DocumentStore, cfg: AutointerpConfig, d_sae: int) -> list[int]:
    """The requested features that exist and fire often enough, in a seeded order."""
    if cfg.features is not None:
        wanted = sorted(set(cfg.features))
        if bad := [f for f in wanted if f >= d_sae]:
            raise ValueError(f"features: {bad[:5]} out of range for an SAE of {d_sae} features")
    else:
        wanted = list(range(d_sae))
    alive = []
    for offset in range(0, d_sae, 1000):  # summaries only: never the big documents
        page, _ = documents.list_features(cfg.sae_id, offset=offset, limit=1000, fields=["density"])
        alive += [f.index for f in page if (f.density or 0.0) >= max(cfg.min_density, 1e-12)]
    chosen = sorted(set(wanted) & set(alive))
    random.Random(cfg.seed).shuffle(chosen)
    return chosen[: cfg.max_features] if cfg.max_features else chosen


def explain_feature(chat: Chat, examples: FeatureExamples, model: str, threshold: float) -> Explanation | None:
    messages = explain_messages(examples.explain, threshold)
    reply, used_in, used_out = chat(messages, 60)
    text = parse_explanation(reply)
    if text is None:
        return None
    return Explanation(
        text=text,
        model=model,
        prompt_version=PROMPT_VERSION,
        created=_now(),
        prompt_tokens=used_in,
        completion_tokens=used_out,
    )


def score_explanation(
    text: str,
    examples: FeatureExamples,
    negatives: Sequence[Context],
    scorers: Sequence[str],
    chat: Chat | None,
    encode: Callable[[list[str]], Any] | None,
    cfg: ExampleConfig,
    model: str,
    seed: int,
) -> dict[str, ScoreResult]:
    """Every requested score of `text` on the feature's held-out and silent contexts."""
    results: dict[str, ScoreResult] = {}
    for name in scorers:
        if name == "embedding":
            if encode is None:
                raise ValueError("the embedding scorer needs an encoder")
            results[name] = embedding_score(encode, text, examples.activating, negatives)
        else:
            if chat is None:
                raise ValueError(f"the {name} scorer needs an LLM")
            results[name] = classify(
                name, chat, text, examples.activating, negatives, cfg.per_prompt, cfg.mark_threshold, seed, model
            )
    return results


class FeatureSource:
    """What scoring needs from the SAE and its analysis text, loaded once per run."""

    def __init__(self, documents: DocumentStore, cfg: AutointerpConfig):
        from lm_saes.analysis.analyze import _vocab_strings, feature_activations
        from lm_saes.data.packing import load_token_splits
        from lm_saes.models import load_language_model
        from lm_saes.saes import load_sae

        sae_record = documents.get_sae(cfg.sae_id)
        if sae_record is None:
            raise LookupError(f"sae_id: no SAE {cfg.sae_id!r} in {cfg.documents}; analyze it first")
        analyses = [a for a in documents.list_analyses(cfg.sae_id) if a.state == "succeeded"]
        if not analyses:
            raise LookupError(f"sae_id: SAE {cfg.sae_id!r} has no finished analysis; run `lm-saes analyze` first")
        location = cfg.sae or sae_record.artifact
        if not location:
            raise LookupError(f"sae: the record of {cfg.sae_id!r} names no artifact; set `sae`")
        self.sae = load_sae(location, device=cfg.device)
        analysis = parse_config(analyses[-1].config, AnalyzeConfig, f"analysis {analyses[-1].id}")
        from lm_saes.config import ModelConfig

        self.model = load_language_model(
            analysis.model or ModelConfig(name=self.sae.spec.model, device=cfg.device, dtype=analysis.dtype)
        )
        splits = load_token_splits(analysis.data, self.model.tokenizer)
        self.contexts = torch.cat([splits.train, splits.eval])
        self.strings = _vocab_strings(self.model)
        self._activations = feature_activations

    def activations_of(self, features: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
        columns = torch.tensor(list(features), dtype=torch.long)

        def fn(tokens: torch.Tensor) -> torch.Tensor:
            acts, _ = self._activations(self.model, self.sae, tokens)
            return acts[..., columns]

        return fn


class _Counts:
    def __init__(self) -> None:
        self.skipped = self.explained = self.scored = self.failed = self.prompt = self.completion = 0


class Autointerp:
    """One run: the store, the LLM, the encoder and the SAE's text, and what each chunk does."""

    def __init__(
        self,
        cfg: AutointerpConfig,
        documents: DocumentStore,
        client: ChatClient,
        encode: Callable[[list[str]], Any] | None,
    ):
        self.cfg, self.documents, self.encode = cfg, documents, encode
        self.chat = chat_fn(client, cfg.llm.temperature)
        self.source = FeatureSource(documents, cfg) if cfg.scorers else None
        self.counts = _Counts()

    def chunk(self, indices: Sequence[int], seed: int) -> None:
        """Explain and score these features; write the finished ones in one batch."""
        cfg = self.cfg
        records = {i: r for i in indices if (r := self.documents.get_feature(cfg.sae_id, i)) is not None}
        todo = [i for i in indices if i in records and not is_done(records[i], cfg)]
        self.counts.skipped += len(indices) - len(todo)
        if not todo:
            return
        strings = self.source.strings if self.source else None
        examples = {i: split_examples(records[i], cfg.examples, strings) for i in todo}
        negatives = self.negatives(todo, seed)
        with ThreadPoolExecutor(max_workers=cfg.llm.max_concurrency) as pool:
            results = list(pool.map(lambda i: self.feature(i, records[i], examples[i], negatives.get(i, [])), todo))
        finished: dict[int, Explanation] = {}
        for result in results:
            if result.explanation is None:
                self.counts.failed += 1
                continue
            stored = records[result.feature].explanation
            fresh = result.explanation is not stored
            scores: dict[ScorerName, ExplanationScore] = dict(result.explanation.scores)
            for name, judged in result.judged.items():
                self.counts.prompt += judged.prompt_tokens
                self.counts.completion += judged.completion_tokens
                if judged.score is not None:
                    scores[name] = judged.score  # type: ignore[index]
            if fresh:
                self.counts.explained += 1
                self.counts.prompt += result.explanation.prompt_tokens
                self.counts.completion += result.explanation.completion_tokens
            self.counts.scored += int(bool(result.judged))
            finished[result.feature] = result.explanation.model_copy(update={"scores": scores})
        self.documents.put_explanations(cfg.sae_id, finished)

    def negatives(self, features: list[int], seed: int) -> dict[int, list[Context]]:
        from lm_saes.autointerp.negatives import find_negatives, neighbours

        if self.source is None:
            return {}
        cfg, source = self.cfg, self.source
        near = neighbours(source.sae.W_dec.detach(), features, cfg.neighbours)
        wanted = {j for js in near.values() for j in js}
        neighbour_records = {j: r for j in wanted if (r := self.documents.get_feature(cfg.sae_id, j))}
        return find_negatives(
            source.activations_of(features),
            source.contexts,
            features,
            neighbour_records,
            near,
            source.strings,
            cfg.examples.random_negatives,
            cfg.examples.hard_negatives,
            pool_size=cfg.negative_pool,
            seed=seed,
        )

    def feature(
        self, index: int, record: FeatureRecord, examples: FeatureExamples, negatives: list[Context]
    ) -> FeatureResult:
        cfg, stored = self.cfg, record.explanation
        stale = cfg.redo or stored is None or stored.model != cfg.llm.model or stored.prompt_version != PROMPT_VERSION
        if cfg.explain and stale:
            explanation = explain_feature(self.chat, examples, cfg.llm.model, cfg.examples.mark_threshold)
        else:
            explanation = stored
        if explanation is None:
            return FeatureResult(index, None, {})
        llm = self.chat if any(s != "embedding" for s in cfg.scorers) else None
        judged = score_explanation(
            explanation.text,
            examples,
            negatives,
            cfg.scorers,
            llm,
            self.encode,
            cfg.examples,
            cfg.llm.model,
            cfg.seed + index,
        )
        return FeatureResult(index, explanation, judged)


def run_autointerp(
    cfg: AutointerpConfig,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    client: ChatClient | None = None,
    encode: Callable[[list[str]], Any] | None = None,
) -> AutointerpResult:
    """Explain and score the chosen features, a chunk at a time; see the module docstring."""
    started = time.perf_counter()
    if "embedding" in cfg.scorers and encode is None:
        from lm_saes.autointerp.embedding import Embedder

        encode = Embedder().encode
    documents = open_document_store(cfg.documents)
    try:
        run = Autointerp(cfg, documents, client or ChatClient(cfg.llm), encode)
        d_sae = run.source.sae.d_sae if run.source else _d_sae(documents, cfg.sae_id)
        chosen = select_features(documents, cfg, d_sae)
        for start in range(0, len(chosen), cfg.chunk):
            if should_stop is not None and should_stop():
                raise InterruptedError(f"stopped after {start} of {len(chosen)} features (finished ones are stored)")
            run.chunk(chosen[start : start + cfg.chunk], cfg.seed + start)
            if on_progress:
                on_progress(min(start + cfg.chunk, len(chosen)), len(chosen))
        c = run.counts
        return AutointerpResult(
            cfg.sae_id,
            len(chosen),
            c.skipped,
            c.explained,
            c.scored,
            c.failed,
            c.prompt,
            c.completion,
            time.perf_counter() - started,
        )
    finally:
        documents.close()


def _d_sae(documents: DocumentStore, sae_id: str) -> int:
    record = documents.get_sae(sae_id)
    if record is None:
        raise LookupError(f"sae_id: no SAE {sae_id!r} in the document store; analyze it first")
    if record.d_sae:
        return record.d_sae
    _, total = documents.list_features(sae_id, limit=1, fields=["density"])
    return total
