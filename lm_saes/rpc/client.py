"""Python clients for the lm-saes gRPC services, over the generated stubs.

Results come back as plain dicts and tensors; failures raise `ServiceError` carrying the gRPC
status code and the server's message (which names the offending field).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import grpc
import torch

from lm_saes.auth import USER_METADATA
from lm_saes.records import JobState
from lm_saes.rpc.v1 import (
    activation_pb2,
    activation_pb2_grpc,
    analysis_pb2,
    analysis_pb2_grpc,
    circuits_pb2,
    circuits_pb2_grpc,
    common_pb2,
    common_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from lm_saes.rpc.wire import JOB_STATE_NAMES, JOB_STATES, job_to_dict, tensor_from_proto

STEER_MODES = {
    "add": activation_pb2.STEER_MODE_ADD,
    "clamp": activation_pb2.STEER_MODE_CLAMP,
    "ablate": activation_pb2.STEER_MODE_ABLATE,
    "scale": activation_pb2.STEER_MODE_SCALE,
}
STEER_POSITIONS = {
    "both": activation_pb2.STEER_POSITIONS_BOTH,
    "prompt": activation_pb2.STEER_POSITIONS_PROMPT,
    "generated": activation_pb2.STEER_POSITIONS_GENERATED,
}
STEER_FIELDS = ("sae_id", "feature", "mode", "strength", "relative", "positions", "from_token")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
FEATURE_SORTS = {
    "index": analysis_pb2.FEATURE_SORT_INDEX,
    "density": analysis_pb2.FEATURE_SORT_DENSITY,
    "max_activation": analysis_pb2.FEATURE_SORT_MAX_ACTIVATION,
    "score": analysis_pb2.FEATURE_SORT_SCORE,
}


class _StreamCall(Iterator[T_co], Protocol[T_co]):
    """What a server-streaming stub returns: the messages, and the call to end early."""

    def cancel(self) -> bool: ...


class ServiceError(RuntimeError):
    """A failed RPC: `code` is the grpc.StatusCode, the message is the server's."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.details = message


# The end user a trusted caller (the gateway, with a `service` token) acts for: (name, scopes).
_ACTING_FOR: contextvars.ContextVar[tuple[str, tuple[str, ...]] | None] = contextvars.ContextVar(
    "acting_for", default=None
)


@contextlib.contextmanager
def acting_for(user: str, scopes: Iterable[str]) -> Iterator[None]:
    """Within the block, calls carry `user` (who will own submitted jobs) and the scopes granted to
    it; the services honour them only from a caller whose token has the `service` scope."""
    reset = _ACTING_FOR.set((user, tuple(sorted(scopes))))
    try:
        yield
    finally:
        _ACTING_FOR.reset(reset)


def _read_file(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def tls_credentials(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """TLS to a service: trust `ca_file` (default: the system's roots); present a client
    certificate (mTLS) when `cert_file`/`key_file` are given."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read_file(ca_file), private_key=_read_file(key_file), certificate_chain=_read_file(cert_file)
    )


class _Client:
    """A channel to one address, with a default deadline, raised message limits, the bearer
    token (default: `LM_SAES_TOKEN`) and optional TLS credentials."""

    def __init__(
        self,
        address: str = "localhost:50051",
        timeout: float | None = 60.0,
        max_message_mb: int = 64,
        channel: grpc.Channel | None = None,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
    ):
        limit = max_message_mb * 1024 * 1024
        self.address = address
        self.timeout = timeout
        self._token = token if token is not None else os.environ.get("LM_SAES_TOKEN", "")
        options: list[tuple[str, int | str]] = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if channel is None:
            channel = (
                grpc.secure_channel(address, credentials, options=options)
                if credentials
                else grpc.insecure_channel(address, options=options)
            )
        self.channel = channel

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}({self.address!r})"

    def _metadata(self) -> list[tuple[str, str]]:
        metadata = [("authorization", f"Bearer {self._token}")] if self._token else []
        acting = _ACTING_FOR.get()
        if acting is not None:
            metadata += [(USER_METADATA, acting[0]), ("x-lm-saes-scopes", ",".join(acting[1]))]
        return metadata

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects (raise ServiceError UNAVAILABLE after `timeout`)."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"no server at {self.address} after {timeout:.0f} s"
            ) from None

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = -1.0) -> T:
        try:
            return method(request, timeout=self.timeout if timeout == -1.0 else timeout, metadata=self._metadata())
        except grpc.RpcError as error:
            raise ServiceError(error.code(), error.details() or "") from None

    def _stream(self, method: Callable[..., _StreamCall[T]], request: Any, timeout: float | None = -1.0) -> Iterator[T]:
        call = method(request, timeout=self.timeout if timeout == -1.0 else timeout, metadata=self._metadata())
        try:
            yield from call
        except grpc.RpcError as error:
            raise ServiceError(error.code(), error.details() or "") from None
        finally:
            call.cancel()  # closing the iterator early ends the call instead of leaving it open

    def close(self) -> None:
        self.channel.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _event(event: common_pb2.ProgressEvent) -> dict[str, Any]:
    return {
        "job_id": event.job_id,
        "state": JOB_STATE_NAMES.get(event.state, "unspecified"),
        "step": event.step,
        "total_steps": event.total_steps,
        "tokens": event.tokens,
        "loss": event.loss,
        "l0": event.l0,
        "explained_variance": event.explained_variance,
        "message": event.message,
        "progress": event.progress,
        "metrics": dict(event.metrics),
        "time": event.time.ToDatetime(UTC).isoformat() if event.HasField("time") else None,
    }


class _JobClient(_Client):
    """Get/List/Watch/Cancel of the jobs a server runs, through its JobService (common.proto)."""

    stub: Any

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.jobs = common_pb2_grpc.JobServiceStub(self.channel)

    def get(self, job_id: str) -> dict[str, Any]:
        return job_to_dict(self._call(self.jobs.Get, common_pb2.JobRef(id=job_id)))

    def list(
        self, kind: str = "", state: JobState | Literal[""] = "", page_size: int = 0, page_token: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        """One page of jobs, in the server's order, and the next page's token ("" at the end)."""
        request = common_pb2.ListJobsRequest(
            kind=kind,
            state=JOB_STATES[state] if state else common_pb2.JOB_STATE_UNSPECIFIED,
            page_size=page_size,
            page_token=page_token,
        )
        reply = self._call(self.jobs.List, request)
        return [job_to_dict(job) for job in reply.jobs], reply.next_page_token

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Progress events until the job ends (no deadline unless `timeout`)."""
        for event in self._stream(self.jobs.Watch, common_pb2.JobRef(id=job_id), timeout=timeout):
            yield _event(event)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return job_to_dict(self._call(self.jobs.Cancel, common_pb2.JobRef(id=job_id)))


def _token_dicts(tokens) -> list[dict[str, Any]]:
    """TokenFeatures messages as plain dicts: position, token, token_id, features [{index, value}]."""
    return [
        {
            "position": t.position,
            "token": t.token,
            "token_id": t.token_id,
            "features": [{"index": i, "value": v} for i, v in zip(t.indices, t.values, strict=True)],
        }
        for t in tokens
    ]


class ActivationClient(_JobClient):
    """Tokens, hook activations and per-token SAE features from an ActivationService."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stub = activation_pb2_grpc.ActivationServiceStub(self.channel)

    def tokenize(self, text: str, model: str = "", prepend_bos: bool = False) -> dict[str, Any]:
        """{"token_ids": [...], "tokens": [...], "bos_token_id": int}."""
        reply = self._call(
            self.stub.Tokenize, activation_pb2.TokenizeRequest(model=model, text=text, prepend_bos=prepend_bos)
        )
        return {"token_ids": list(reply.token_ids), "tokens": list(reply.tokens), "bos_token_id": reply.bos_token_id}

    def feature_activations(
        self, sae_id: str, text: str, top_k: int = 5, features: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """One dict per token of `text` (BOS excluded): position, token, token_id, and
        `features`: [{"index", "value"}], the top-k active ones strongest first, or the
        requested `features` in their order."""
        request = activation_pb2.GetFeatureActivationsRequest(
            sae_id=sae_id, text=text, top_k=top_k, features=features or []
        )
        reply = self._call(self.stub.GetFeatureActivations, request)
        return _token_dicts(reply.tokens)

    def many_feature_activations(
        self, sae_ids: list[str], text: str, top_k: int = 5
    ) -> dict[str, list[dict[str, Any]]]:
        """{sae_id: per-token dicts as `feature_activations` gives}, for several SAEs of one model
        from one forward pass on the server."""
        request = activation_pb2.GetFeatureActivationsRequest(sae_ids=sae_ids, text=text, top_k=top_k)
        reply = self._call(self.stub.GetFeatureActivations, request)
        return {sae.sae_id: _token_dicts(sae.tokens) for sae in reply.saes}

    def activations(
        self,
        hooks: list[str],
        text: str | None = None,
        tokens: list[int] | None = None,
        model: str = "",
        dtype: str = "",
        store_uri: str = "",
    ) -> dict[str, Any]:
        """{"token_ids", "tokens", "activations": {hook: [positions, d] tensor}} (BOS included);
        with `store_uri`, "refs": {hook: {"uri", "dtype", "shape", "byte_size"}} instead."""
        request = activation_pb2.GetActivationsRequest(model=model, hooks=hooks, dtype=dtype, store_uri=store_uri)
        if tokens is not None:
            request.tokens.ids.extend(tokens)
        else:
            request.text = text or ""
        out: dict[str, Any] = {"token_ids": [], "tokens": [], "activations": {}}
        parts: dict[str, list[torch.Tensor]] = {}
        for chunk in self._stream(self.stub.GetActivations, request):
            if chunk.token_ids:
                out["token_ids"], out["tokens"] = list(chunk.token_ids), list(chunk.tokens)
            if chunk.refs:
                out["refs"] = {
                    hook: {"uri": ref.uri, "dtype": ref.dtype, "shape": list(ref.shape), "byte_size": ref.byte_size}
                    for hook, ref in chunk.refs.items()
                }
            if chunk.HasField("values"):
                parts.setdefault(chunk.hook, []).append(tensor_from_proto(chunk.values))
        out["activations"] = {hook: torch.cat(chunks) for hook, chunks in parts.items()}
        return out

    def generate_activations(
        self,
        hooks: list[str],
        output_uri: str,
        model: str = "",
        data: dict[str, Any] | None = None,
        request_id: str = "",
        timeout: float | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Queue writing activation shards for a dataset (a lm_saes.config.DataConfig dict);
        returns the job (follow it with `watch`); `options`: batch_contexts, shard_tokens, dtype,
        shards (worker processes, merged into one store)."""
        request = activation_pb2.GenerateActivationsRequest(
            model=model,
            hooks=hooks,
            output_uri=output_uri,
            request_id=request_id,
            data_config_json=json.dumps(data or {}),
            **options,
        )
        return job_to_dict(self._call(self.stub.GenerateActivations, request, timeout=timeout))

    def generate(
        self,
        prompt: str,
        interventions: list[dict[str, Any]],
        compare: bool = True,
        timeout: float | None = None,
        **generation: Any,
    ) -> Generator[dict[str, Any], None, None]:
        """Steered generation, streamed: one dict per generated token and run ("steered", or
        "default" with `compare`), the first with `prompt_tokens` and `changes`. Each
        intervention: {"sae_id", "feature", "mode": add|clamp|ablate|scale, "strength",
        "relative", "positions": both|prompt|generated, "from_token"}; `generation`:
        max_new_tokens, temperature, top_p, seed, stop, track, frozen_attention, ignore_eos."""
        request = activation_pb2.GenerateRequest(prompt=prompt, compare=compare, **generation)
        for item in interventions:
            unknown = set(item) - set(STEER_FIELDS)
            if unknown:
                raise ValueError(f"interventions: unknown keys {sorted(unknown)}; use {list(STEER_FIELDS)}")
            mode, positions = item.get("mode", "add"), item.get("positions", "both")
            if mode not in STEER_MODES or positions not in STEER_POSITIONS:
                raise ValueError(
                    f"interventions: mode must be one of {list(STEER_MODES)} and positions one of "
                    f"{list(STEER_POSITIONS)}, got {mode!r} / {positions!r}"
                )
            request.interventions.append(
                activation_pb2.SteerIntervention(
                    sae_id=item["sae_id"],
                    feature=item["feature"],
                    mode=STEER_MODES[mode],
                    strength=item.get("strength", 0.0),
                    relative=item.get("relative", False),
                    positions=STEER_POSITIONS[positions],
                    from_token=item.get("from_token", 0),
                )
            )
        for event in self._stream(self.stub.Generate, request, timeout=timeout):
            out: dict[str, Any] = {
                "run": event.run,
                "index": event.index,
                "token_id": event.token_id,
                "token": event.token,
                "text": event.text,
                "probability": event.probability,
                "tracked": dict(event.tracked),
                "finish_reason": event.finish_reason or None,
            }
            if event.prompt_tokens:
                out["prompt_tokens"], out["changes"] = list(event.prompt_tokens), json.loads(event.changes_json)
            yield out


class TrainingClient(_JobClient):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stub = training_pb2_grpc.TrainingServiceStub(self.channel)

    def submit(self, config: dict[str, Any] | str, request_id: str = "") -> dict[str, Any]:
        """`config`: a RunConfig dict, or the text of a TOML config file."""
        if isinstance(config, str):
            request = training_pb2.SubmitTrainingRequest(config_toml=config, request_id=request_id)
        else:
            request = training_pb2.SubmitTrainingRequest(config_json=json.dumps(config), request_id=request_id)
        return job_to_dict(self._call(self.stub.Submit, request))


class AnalysisClient(_JobClient):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stub = analysis_pb2_grpc.AnalysisServiceStub(self.channel)

    def submit(
        self, sae_uri: str, sae_id: str = "", config: dict[str, Any] | None = None, request_id: str = ""
    ) -> dict[str, Any]:
        """`config`: an AnalyzeConfig dict (default: its defaults)."""
        request = analysis_pb2.SubmitAnalysisRequest(
            sae_uri=sae_uri, sae_id=sae_id, request_id=request_id, config_json=json.dumps(config) if config else ""
        )
        return job_to_dict(self._call(self.stub.Submit, request))

    def submit_autointerp(
        self, sae_id: str, config: dict[str, Any] | None = None, request_id: str = ""
    ) -> dict[str, Any]:
        """`config`: an AutointerpConfig dict without the fields the service sets."""
        request = analysis_pb2.SubmitAutointerpRequest(
            sae_id=sae_id, request_id=request_id, config_json=json.dumps(config) if config else ""
        )
        return job_to_dict(self._call(self.stub.SubmitAutointerp, request))

    def get_feature(self, sae_id: str, index: int) -> dict[str, Any]:
        """The feature's whole analysis document."""
        feature = self._call(self.stub.GetFeature, analysis_pb2.GetFeatureRequest(sae_id=sae_id, index=index))
        doc = json.loads(feature.document_json) if feature.document_json else {}
        return {**doc, **_summary(feature)}

    def list_features(
        self, sae_id: str, sort: str = "index", descending: bool = False, offset: int = 0, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of feature summaries and the SAE's total feature count."""
        if sort not in FEATURE_SORTS:
            raise ValueError(f"sort must be one of {sorted(FEATURE_SORTS)}, got {sort!r}")
        request = analysis_pb2.ListFeaturesRequest(
            sae_id=sae_id, sort=FEATURE_SORTS[sort], descending=descending, offset=offset, limit=limit
        )
        reply = self._call(self.stub.ListFeatures, request)
        return [_summary(f) for f in reply.features], reply.total

    def search_features(self, query: str, k: int = 10, sae_id: str = "") -> list[dict[str, Any]]:
        """Features whose explanations are nearest `query` in meaning (of `sae_id`, or of every
        SAE), best first: [{"sae_id", "index", "similarity", "explanation", "score"}]."""
        reply = self._call(
            self.stub.SearchFeatures, analysis_pb2.SearchFeaturesRequest(query=query, k=k, sae_id=sae_id)
        )
        return [
            {
                "sae_id": h.sae_id,
                "index": h.index,
                "similarity": h.similarity,
                "explanation": h.explanation,
                "score": h.score if h.HasField("score") else None,
            }
            for h in reply.hits
        ]


class CircuitClient(_JobClient):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stub = circuits_pb2_grpc.CircuitServiceStub(self.channel)

    def submit(
        self, prompt: str, transcoders_uri: str, config: dict[str, Any] | None = None, request_id: str = ""
    ) -> dict[str, Any]:
        """Trace `prompt`; `config` is a TraceConfig dict (thresholds, max_logits, ...)."""
        request = circuits_pb2.SubmitTraceRequest(
            prompt=prompt,
            transcoders_uri=transcoders_uri,
            request_id=request_id,
            config_json=json.dumps(config) if config else "",
        )
        return job_to_dict(self._call(self.stub.Submit, request))

    def get_graph(self, graph_id: str) -> dict[str, Any]:
        """The stored record: pruned nodes and links, scores, the full graph's artifact URI."""
        return json.loads(self._call(self.stub.GetGraph, circuits_pb2.GetGraphRequest(id=graph_id)).document_json)

    def list_graphs(self, model: str = "") -> list[dict[str, Any]]:
        reply = self._call(self.stub.ListGraphs, circuits_pb2.ListGraphsRequest(model=model))
        return [
            {
                "id": g.id,
                "model": g.model,
                "prompt": g.prompt,
                "created": g.created,
                "artifact": g.artifact_uri,
                "scores": {"replacement": g.replacement_score, "completeness": g.completeness_score},
            }
            for g in reply.graphs
        ]

    def explain_attention(
        self, graph_id: str, layer: int, head: int, query_position: int, key_position: int, top_k: int = 10
    ) -> dict[str, Any]:
        """A head's pre-softmax score at (query, key) split into the graph's nodes (qk.py)."""
        request = circuits_pb2.ExplainAttentionRequest(
            graph_id=graph_id,
            layer=layer,
            head=head,
            query_position=query_position,
            key_position=key_position,
            top_k=top_k,
        )
        reply = self._call(self.stub.ExplainAttention, request)

        def side(items: Any) -> list[dict[str, Any]]:
            return [{"node_id": c.node_id, "contribution": c.contribution} for c in items]

        return {
            "score": reply.score,
            "query_side": side(reply.query_side),
            "key_side": side(reply.key_side),
            "query_bias": reply.query_bias,
            "key_bias": reply.key_bias,
            "pairs": [
                {"query_node_id": p.query_node_id, "key_node_id": p.key_node_id, "contribution": p.contribution}
                for p in reply.pairs
            ],
        }

    def intervene(
        self, graph_id: str, changes: list[dict[str, Any]], top_k: int = 10, freeze_active_set: bool = False
    ) -> dict[str, Any]:
        """`changes`: [{"layer", "position", "feature", "value", "mode": "scale"|"clamp"}]."""
        modes = {"scale": circuits_pb2.INTERVENTION_MODE_SCALE, "clamp": circuits_pb2.INTERVENTION_MODE_CLAMP}
        bad = [c.get("mode") for c in changes if c.get("mode", "scale") not in modes]
        if bad:
            raise ValueError(f"mode must be 'scale' or 'clamp', got {bad[0]!r}")
        request = circuits_pb2.InterveneRequest(
            graph_id=graph_id,
            top_k=top_k,
            freeze_active_set=freeze_active_set,
            changes=[
                circuits_pb2.FeatureChange(
                    layer=c["layer"],
                    position=c["position"],
                    feature=c["feature"],
                    value=c["value"],
                    mode=modes[c.get("mode", "scale")],
                )
                for c in changes
            ],
        )
        reply = self._call(self.stub.Intervene, request)

        def logits(items: Any) -> list[dict[str, Any]]:
            return [
                {"token_id": t.token_id, "token": t.token, "logit": t.logit, "probability": t.probability}
                for t in items
            ]

        return {"before": logits(reply.before), "after": logits(reply.after)}


def _summary(feature: analysis_pb2.Feature) -> dict[str, Any]:
    return {
        "sae_id": feature.sae_id,
        "index": feature.index,
        "density": feature.density,
        "max_activation": feature.max_activation,
        "mean_activation": feature.mean_activation,
    }


def format_token_features(tokens: list[dict[str, Any]]) -> str:
    """A per-token table of `ActivationClient.feature_activations` results."""
    width = max([len(repr(t["token"])) for t in tokens] + [5])
    lines = [f"{'pos':>4}  {'token':<{width}}  features (index:value)"]
    for t in tokens:
        feats = "  ".join(f"{f['index']}:{f['value']:.3g}" for f in t["features"]) or "-"
        lines.append(f"{t['position']:>4}  {t['token']!r:<{width}}  {feats}")
    return "\n".join(lines)
