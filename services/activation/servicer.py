"""ActivationService: thin over the core library.

Models load once per name; SAEs load by their document-store id into an LRU cache. Concurrent
GetFeatureActivations calls for one SAE share a padded forward (`batching.FeatureBatcher`).
A model runs one forward at a time: TransformerLens hooks are state on shared modules.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import torch

from lm_saes.config import ActivationsConfig, DataConfig, ModelConfig
from lm_saes.dtypes import DTYPE_NAMES, TORCH_DTYPES
from lm_saes.jobs import Executor, LocalExecutor
from lm_saes.models import LanguageModel, load_language_model
from lm_saes.models.facts import ModelFacts, facts_of
from lm_saes.rpc.v1 import activation_pb2, activation_pb2_grpc, common_pb2
from lm_saes.rpc.wire import tensor_to_proto
from lm_saes.saes import SparseAutoencoder, load_sae
from lm_saes.stores import open_store
from lm_saes.stores.documents import DocumentStore, open_document_store
from lm_saes.training.memory import shard_bytes
from services.activation.batching import BatcherClosed, FeatureBatcher
from services.activation.settings import ActivationSettings
from services.activation.steering import SteeringHost
from services.common.admission import Admission, parse_object, parsed
from services.common.errors import RequestError, invalid, rpc, short
from services.common.job_servicer import submit_job

log = logging.getLogger(__name__)
SERVICE_NAME = activation_pb2.DESCRIPTOR.services_by_name["ActivationService"].full_name
DEFAULT_TOP_K = 5
STREAM_DTYPES = ("float32", "bfloat16", "float16")
MAX_HOOKS = 64
MAX_FEATURES = 4096
MAX_SAES_PER_REQUEST = 16


@dataclass
class LoadedModel:
    model: LanguageModel
    lock: threading.Lock  # one forward at a time (hooks are module state)

    def forward(self, tokens: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
        with self.lock:
            return self.model.activations(tokens, hooks)

    @functools.cached_property
    def facts(self) -> ModelFacts:
        return facts_of(self.model)

    @functools.cached_property
    def vocab(self) -> list[str]:
        """Every token id's string, decoded once (per-request decoding costs the GIL)."""
        return self.model.tokenizer.token_strings(list(range(int(self.model.bridge.cfg.d_vocab))))

    def token_strings(self, ids: list[int]) -> list[str]:
        vocab = self.vocab
        return [vocab[i] if 0 <= i < len(vocab) else f"<{i}>" for i in ids]


@dataclass
class LoadedSAE:
    sae_id: str
    sae: SparseAutoencoder
    model: LoadedModel
    batcher: FeatureBatcher


class ActivationServicer(activation_pb2_grpc.ActivationServiceServicer):
    kind = "activations"

    def __init__(
        self, settings: ActivationSettings, documents: DocumentStore | None = None, executor: Executor | None = None
    ):
        self.settings = settings
        self.documents = documents or open_document_store(settings.documents)
        self.executor = executor or LocalExecutor(settings.documents, kinds=(self.kind,))
        self.admission = Admission(settings)
        self._models: dict[str, LoadedModel] = {}
        self._saes: OrderedDict[str, LoadedSAE] = OrderedDict()
        self._models_lock = threading.Lock()
        self._saes_lock = threading.Lock()
        self.steering = SteeringHost(self)

    # --- resources ---------------------------------------------------------------------
    def model(self, name: str, field: str = "model") -> LoadedModel:
        """The model called `name` (one this server serves), loaded on first use and kept."""
        name = self.admission.roots.model(field, name)
        with self._models_lock:
            if name not in self._models:
                cfg = ModelConfig(name=name, device=self.settings.device, dtype=self.settings.dtype)
                try:
                    model = load_language_model(cfg)
                except (OSError, ValueError) as error:
                    raise RequestError(
                        grpc.StatusCode.NOT_FOUND, f"{field}: cannot load {short(name)}: {short(str(error), 200)}"
                    ) from None
                self._models[name] = LoadedModel(model, threading.Lock())
                log.info("loaded model %s", name)
            return self._models[name]

    def sae(self, sae_id: str) -> LoadedSAE:
        """The SAE registered as `sae_id`, from the cache or loaded from its artifact."""
        if not sae_id:
            raise invalid("sae_id", "required")
        if len(sae_id) > 200:
            raise invalid("sae_id", "at most 200 characters")
        with self._saes_lock:
            if sae_id in self._saes:
                self._saes.move_to_end(sae_id)
                return self._saes[sae_id]
            loaded = self._load_sae(sae_id)
            self._saes[sae_id] = loaded
            while len(self._saes) > self.settings.sae_cache_size:
                _, evicted = self._saes.popitem(last=False)
                evicted.batcher.close()
                log.info("evicted SAE %s from the cache", evicted.sae_id)
            return loaded

    def _load_sae(self, sae_id: str) -> LoadedSAE:
        record = self.documents.get_sae(sae_id)
        if record is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"sae_id: no SAE {short(sae_id)} in the document store")
        artifact = record.artifact
        if not artifact:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f"SAE {sae_id!r} has no artifact to load")
        try:
            sae = load_sae(artifact, device=self.settings.device)
        except FileNotFoundError as error:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f"SAE {sae_id!r}: {error}") from None
        model = self.model(sae.spec.model or record.model or self.settings.model, "sae_id")
        try:
            model.model.check_hooks([sae.spec.input_hook])
        except ValueError as error:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f"SAE {sae_id!r}: {error}") from None
        batcher = FeatureBatcher(
            functools.partial(self._encode_batch, model, sae),
            self.settings.batch_window_ms / 1000,
            self.settings.max_batch,
            sae_id,
        )
        log.info("loaded SAE %s (%s, %s) from %s", sae_id, sae.spec.architecture, sae.spec.hook_in, artifact)
        return LoadedSAE(sae_id, sae, model, batcher)

    def close(self) -> None:
        self.steering.close()
        with self._saes_lock:
            for loaded in self._saes.values():
                loaded.batcher.close()
            self._saes.clear()
        self.documents.close()  # the executor is the job host's to shut down

    # --- the work ----------------------------------------------------------------------
    @staticmethod
    @torch.no_grad()
    def _encode_batch(model: LoadedModel, sae: SparseAutoencoder, batch: list[list[int]]) -> list[torch.Tensor]:
        """Texts (BOS first) -> one [len - 1, d_sae] tensor each, from one right-padded forward.

        The model is causal, so padding after a text cannot change its positions.
        """
        longest = max(map(len, batch))
        tokens = torch.full((len(batch), longest), model.model.tokenizer.bos_token_id, dtype=torch.long)
        for row, ids in enumerate(batch):
            tokens[row, : len(ids)] = torch.tensor(ids)
        hook = sae.spec.input_hook
        x = model.forward(tokens, [hook])[hook]
        rows = torch.cat([x[row, 1 : len(ids)] for row, ids in enumerate(batch)])
        acts = sae.encode(rows).float().cpu()
        return list(acts.split([len(ids) - 1 for ids in batch]))

    def _limit(self, model: LanguageModel) -> int:
        """Most text tokens a request may hold: the setting, within the model's context."""
        return min(self.settings.max_text_tokens, int(model.bridge.cfg.n_ctx) - 1)

    def _checked_text(self, text: str) -> str:
        """Bounded before any tokenizing: a 10 MB text costs nothing but this check."""
        if len(text) > self.settings.max_text_chars:
            raise invalid(
                "text",
                f"{len(text)} characters is more than the limit of "
                f"{self.settings.max_text_chars} (max_text_chars, LM_SAES_MAX_TEXT_CHARS)",
            )
        return text

    def _text_tokens(self, model: LanguageModel, text: str) -> list[int]:
        """[BOS] + tokens of `text`, refusing empty or too long texts."""
        if not text:
            raise invalid("text", "must not be empty")
        ids = model.tokenizer.encode(self._checked_text(text))
        if not ids:
            raise invalid("text", "has no tokens")
        if len(ids) > self._limit(model):
            raise invalid(
                "text",
                f"{len(ids)} tokens is more than the limit of {self._limit(model)} "
                "(max_text_tokens, LM_SAES_MAX_TEXT_TOKENS)",
            )
        return [model.tokenizer.bos_token_id, *ids]

    def _given_tokens(self, model: LanguageModel, ids: list[int]) -> list[int]:
        if not ids:
            raise invalid("tokens", "must not be empty")
        if len(ids) > self._limit(model) + 1:
            raise invalid("tokens", f"{len(ids)} tokens is more than the limit of {self._limit(model) + 1}")
        vocab = int(model.bridge.cfg.d_vocab)
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise invalid("tokens", f"ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        return list(ids)

    def _features(self, sae_id: str, ids: list[int]) -> tuple[LoadedSAE, torch.Tensor]:
        for _ in range(3):  # the SAE may be evicted between lookup and submit
            loaded = self.sae(sae_id)
            try:
                return loaded, loaded.batcher.submit(ids)
            except BatcherClosed:
                continue
        raise RequestError(grpc.StatusCode.UNAVAILABLE, f"SAE {sae_id!r} keeps being evicted; raise sae_cache_size")

    # --- RPCs --------------------------------------------------------------------------
    @rpc
    def Tokenize(
        self, request: activation_pb2.TokenizeRequest, context: grpc.ServicerContext
    ) -> activation_pb2.TokenizeResponse:
        text = self._checked_text(request.text)
        model = self.model(request.model or self.settings.model).model
        ids = model.tokenizer.encode(text)
        if request.prepend_bos:
            ids = [model.tokenizer.bos_token_id, *ids]
        return activation_pb2.TokenizeResponse(
            token_ids=ids, tokens=model.tokenizer.token_strings(ids), bos_token_id=model.tokenizer.bos_token_id
        )

    @rpc
    def GetFeatureActivations(
        self, request: activation_pb2.GetFeatureActivationsRequest, context: grpc.ServicerContext
    ) -> activation_pb2.GetFeatureActivationsResponse:
        if request.sae_ids:
            return self._many_feature_activations(request)
        loaded = self.sae(request.sae_id)
        d_sae = loaded.sae.d_sae
        ids = self._text_tokens(loaded.model.model, request.text)
        if len(request.features) > MAX_FEATURES:
            raise invalid("features", f"at most {MAX_FEATURES} per request")
        features = list(request.features)
        if any(not 0 <= f < d_sae for f in features):
            raise invalid(
                "features", f"indices must be in [0, {d_sae}), got {[f for f in features if not 0 <= f < d_sae][:5]}"
            )
        top_k = request.top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= d_sae:
            raise invalid("top_k", f"must be in [1, {d_sae}], got {request.top_k}")
        loaded, acts = self._features(request.sae_id, ids)  # [n_tokens, d_sae]
        spec = loaded.sae.spec
        return activation_pb2.GetFeatureActivationsResponse(
            sae_id=request.sae_id,
            model=loaded.model.model.name,
            hook=spec.hook_in or "",
            tokens=self._token_features(loaded.model, ids, acts, top_k, features),
        )

    def _many_feature_activations(
        self, request: activation_pb2.GetFeatureActivationsRequest
    ) -> activation_pb2.GetFeatureActivationsResponse:
        """Several SAEs of one model over one text, from a single forward pass."""
        sae_ids = list(request.sae_ids)
        if request.sae_id:
            raise invalid("sae_ids", "set sae_id or sae_ids, not both")
        if len(sae_ids) > MAX_SAES_PER_REQUEST:
            raise invalid("sae_ids", f"at most {MAX_SAES_PER_REQUEST} SAEs per request, got {len(sae_ids)}")
        if len(set(sae_ids)) != len(sae_ids):
            raise invalid("sae_ids", "lists an SAE twice")
        if request.features:
            raise invalid("features", "only with a single sae_id; with sae_ids each SAE answers its top_k")
        loaded = [self.sae(sae_id) for sae_id in sae_ids]
        model = loaded[0].model
        for i, one in enumerate(loaded):
            if one.model is not model:
                raise invalid(
                    f"sae_ids[{i}]", f"is an SAE of {one.model.model.name!r}; the first is of {model.model.name!r}"
                )
        top_k = request.top_k or DEFAULT_TOP_K
        smallest = min(one.sae.d_sae for one in loaded)
        if not 1 <= top_k <= smallest:
            raise invalid("top_k", f"must be in [1, {smallest}] (the smallest SAE's width), got {request.top_k}")
        ids = self._text_tokens(model.model, request.text)
        hooks = list(dict.fromkeys(one.sae.spec.input_hook for one in loaded))
        x = model.forward(torch.tensor([ids]), hooks)  # one pass, every hook
        saes = []
        for one in loaded:
            with torch.no_grad():
                acts = one.sae.encode(x[one.sae.spec.input_hook][0, 1:]).float().cpu()
            saes.append(
                activation_pb2.SaeFeatures(
                    sae_id=one.sae_id,
                    hook=one.sae.spec.input_hook,
                    tokens=self._token_features(model, ids, acts, top_k, []),
                )
            )
        return activation_pb2.GetFeatureActivationsResponse(model=model.model.name, saes=saes)

    @staticmethod
    def _token_features(
        model: LoadedModel, ids: list[int], acts: torch.Tensor, top_k: int, features: list[int]
    ) -> list[activation_pb2.TokenFeatures]:
        """Per text token (BOS first in `ids`, not reported): the listed features, or the top-k active."""
        if features:
            values = acts[:, features].tolist()
            indices = [features] * len(values)
        else:
            top_values, top_indices = (t.tolist() for t in acts.topk(top_k, dim=1))
            values = [[v for v in row if v > 0] for row in top_values]
            indices = [idx[: len(v)] for idx, v in zip(top_indices, values, strict=True)]
        strings = model.token_strings(ids[1:])
        return [
            activation_pb2.TokenFeatures(
                position=p, token_id=ids[p + 1], token=strings[p], indices=indices[p], values=values[p]
            )
            for p in range(len(strings))
        ]

    @rpc
    def GetActivations(
        self, request: activation_pb2.GetActivationsRequest, context: grpc.ServicerContext
    ) -> Iterator[activation_pb2.ActivationChunk]:
        store_uri = self.admission.roots.writable("store_uri", request.store_uri) if request.store_uri else ""
        loaded = self.model(request.model or self.settings.model)
        model = loaded.model
        hooks = list(dict.fromkeys(request.hooks))
        if not hooks:
            raise invalid("hooks", "name at least one hook, e.g. blocks.0.hook_resid_post")
        if len(hooks) > MAX_HOOKS:
            raise invalid("hooks", f"at most {MAX_HOOKS} per request")
        try:
            model.check_hooks(hooks)
        except ValueError as error:
            raise invalid("hooks", str(error)) from None
        dtype = request.dtype or "float32"
        if dtype not in STREAM_DTYPES:
            raise invalid("dtype", f"must be one of {STREAM_DTYPES}, got {short(dtype)}")
        if request.WhichOneof("input") == "tokens":
            ids = self._given_tokens(model, list(request.tokens.ids))
        else:
            ids = self._text_tokens(model, request.text)
        acts = loaded.forward(torch.tensor([ids]), hooks)
        acts = {hook: acts[hook][0].to(TORCH_DTYPES[dtype]).cpu() for hook in hooks}
        strings = model.tokenizer.token_strings(ids)
        if store_uri:
            yield activation_pb2.ActivationChunk(token_ids=ids, tokens=strings, refs=self._store(store_uri, acts))
            return
        first = True
        for hook, values in acts.items():
            row_bytes = values.shape[1] * values.element_size()
            rows = max(1, int(self.settings.stream_chunk_mb * 2**20) // row_bytes)
            for start in range(0, values.shape[0], rows):
                chunk = activation_pb2.ActivationChunk(
                    hook=hook, start=start, values=tensor_to_proto(values[start : start + rows])
                )
                if first:
                    chunk.token_ids.extend(ids)
                    chunk.tokens.extend(strings)
                    first = False
                yield chunk

    def _store(self, uri: str, acts: dict[str, torch.Tensor]) -> dict[str, common_pb2.TensorRef]:
        """One safetensors object per hook (tensor name `activations`) under a fresh prefix."""
        store = open_store(uri)
        prefix = f"activations-{uuid.uuid4().hex[:12]}"
        refs = {}
        for index, (hook, values) in enumerate(acts.items()):
            key = f"{prefix}/{index:02d}-{hook}.safetensors"
            store.put_tensors(key, {"activations": values.contiguous()}, {"hook": hook})
            refs[hook] = common_pb2.TensorRef(
                uri=f"{store.uri.rstrip('/')}/{key}",
                dtype=DTYPE_NAMES[values.dtype],
                shape=list(values.shape),
                byte_size=values.numel() * values.element_size(),
            )
        return refs

    @rpc
    def Generate(
        self, request: activation_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[activation_pb2.GenerateEvent]:
        """Steered generation streamed token by token (see services/activation/steering.py)."""
        yield from self.steering.generate(request)

    @rpc
    def GenerateActivations(
        self, request: activation_pb2.GenerateActivationsRequest, context: grpc.ServicerContext
    ) -> common_pb2.Job:
        """Validates, then queues a job that a worker process runs (follow it with JobService.Watch);
        a repeated request id returns the same job."""
        if not request.output_uri:
            raise invalid("output_uri", "required: a folder or s3:// prefix for the shards")
        output = self.admission.roots.writable("output_uri", request.output_uri)
        if not request.hooks:
            raise invalid("hooks", "name at least one hook, e.g. blocks.0.hook_resid_post")
        if len(request.hooks) > MAX_HOOKS:
            raise invalid("hooks", f"at most {MAX_HOOKS} per request")
        raw = parse_object("data_config_json", request.data_config_json or "{}", self.settings.max_config_bytes)
        data = parsed(raw, DataConfig, "data_config_json")
        if not 0 <= request.shards <= self.settings.max_job_shards:
            raise invalid("shards", f"choose 1 to {self.settings.max_job_shards} (max_job_shards; 0: one)")
        options = {
            "hooks": list(request.hooks),
            "dtype": request.dtype or "float32",
            "batch_contexts": request.batch_contexts or None,
            "shard_tokens": request.shard_tokens or None,
            "shards": request.shards or None,
        }
        acts_cfg = parsed({k: v for k, v in options.items() if v is not None}, ActivationsConfig, "request")
        loaded = self.model(request.model or self.settings.model)
        facts = loaded.facts
        try:
            facts.check_hooks(acts_cfg.hooks)
        except ValueError as error:
            raise invalid("hooks", str(error)) from None
        self.admission.data("data_config_json", data, facts)
        storage = shard_bytes(data, acts_cfg, facts.d_model)
        if storage > self.settings.max_job_storage_gb * 2**30:
            raise invalid(
                "data_config_json.max_tokens",
                f"the shards would take {storage / 2**30:.1f} GiB; this "
                f"server allows {self.settings.max_job_storage_gb:g} GiB (max_job_storage_gb)",
            )
        config = {
            "model": loaded.model.name,
            "output": output,
            "data": data.model_dump(mode="json"),
            "activations": acts_cfg.model_dump(
                mode="json", include={"hooks", "batch_contexts", "shard_tokens", "dtype", "shards"}
            ),
        }
        return submit_job(self.executor, self.kind, config, request.request_id)
