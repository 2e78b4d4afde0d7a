"""What an outside caller of a running stack can and cannot do (README "Security").

The four services run as processes over a local object store and SQLite (tests/service_stack);
every hostile request here was accepted, or answered INTERNAL, before the services had
authentication, confinement and admission checks.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lm_saes.jobs import new_job
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
from lm_saes.stores.documents import open_document_store
from tests.conftest import ADMIN_TOKEN, SERVICE_TOKEN
from tests.integration.test_job_services import TINY
from tests.service_stack import READ, SUBMIT, TOKENS, gateway_process


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Only the tiny model, and a memory ceiling that a default-sized run exceeds: a fuzzer that
    stumbles on a valid config cannot start a long job."""
    return {"LM_SAES_MODELS": '["tiny"]', "LM_SAES_MAX_JOB_MEMORY_GB": "0.05"}


STUBS = {
    "activation": activation_pb2_grpc.ActivationServiceStub,
    "training": training_pb2_grpc.TrainingServiceStub,
    "analysis": analysis_pb2_grpc.AnalysisServiceStub,
    "tracing": circuits_pb2_grpc.CircuitServiceStub,
}


def _auth(token: str | None, **extra: str) -> list[tuple[str, str]]:
    return ([("authorization", f"Bearer {token}")] if token else []) + list(extra.items())


def _code(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    try:
        result = call(*args, timeout=30, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details() or ""


def _stub(stack, name: str):
    return STUBS[name](stack[0][name].raw_channel)


def _jobs(stack, name: str) -> common_pb2_grpc.JobServiceStub:
    return common_pb2_grpc.JobServiceStub(stack[0][name].raw_channel)


def _tiny_config(**sections) -> str:
    config = {**TINY, "data": {**TINY["data"], "max_tokens": 2000}}
    config.pop("output")
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return json.dumps(config)


def test_every_rpc_needs_a_token_with_its_scope(stack):
    trainer = _stub(stack, "training")
    submit = training_pb2.SubmitTrainingRequest(config_json=_tiny_config())
    assert _code(trainer.Submit, submit)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert _code(trainer.Submit, submit, metadata=_auth("not-a-token"))[0] == grpc.StatusCode.UNAUTHENTICATED
    code, details = _code(trainer.Submit, submit, metadata=_auth("reader-token"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'submit' scope" in details
    assert (
        _code(_jobs(stack, "training").List, common_pb2.ListJobsRequest(), metadata=_auth("reader-token"))[0]
        == grpc.StatusCode.OK
    )
    activation = _stub(stack, "activation")
    tokenize = activation_pb2.TokenizeRequest(text="hello")
    assert _code(activation.Tokenize, tokenize)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert _code(activation.Tokenize, tokenize, metadata=_auth("bob-token-1"))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert _code(activation.Tokenize, tokenize, metadata=_auth("alice-token"))[0] == grpc.StatusCode.OK
    analyzer = _stub(stack, "analysis")
    assert (
        _code(analyzer.ListFeatures, analysis_pb2.ListFeaturesRequest(sae_id="x"))[0] == grpc.StatusCode.UNAUTHENTICATED
    )
    tracer = _stub(stack, "tracing")
    assert _code(tracer.ListGraphs, circuits_pb2.ListGraphsRequest())[0] == grpc.StatusCode.UNAUTHENTICATED
    # only a service token may speak for a user, and never grant more than it holds
    as_user = _auth("alice-token", **{"x-lm-saes-user": "mallory"})
    assert (
        _code(_jobs(stack, "training").List, common_pb2.ListJobsRequest(), metadata=as_user)[0]
        == grpc.StatusCode.PERMISSION_DENIED
    )
    for name, service in stack[0].items():  # probes stay open, List included (it was a traceback per call)
        health = health_pb2_grpc.HealthStub(service.raw_channel)
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        ), name
        assert (
            health.List(health_pb2.HealthListRequest(), timeout=10).statuses[""].status
            == health_pb2.HealthCheckResponse.SERVING
        ), name


def test_jobs_belong_to_their_owner(stack):
    trainer, jobs = _stub(stack, "training"), _jobs(stack, "training")
    # A long job that stays queued behind the ones the tests run: only its record matters here.
    request = training_pb2.SubmitTrainingRequest(config_json=_tiny_config(), request_id="own-1")
    alice = trainer.Submit(request, metadata=_auth("alice-token"), timeout=60)
    assert alice.owner == "alice"
    bobs = trainer.Submit(request, metadata=_auth("bob-token-1"), timeout=60)
    assert bobs.id != alice.id and bobs.owner == "bob"  # a request id is its owner's own key
    listed = jobs.List(common_pb2.ListJobsRequest(), metadata=_auth("bob-token-1"), timeout=30)
    assert alice.id not in [j.id for j in listed.jobs] and bobs.id in [j.id for j in listed.jobs]
    everyone = jobs.List(common_pb2.ListJobsRequest(page_size=1000), metadata=_auth(ADMIN_TOKEN), timeout=30)
    assert {alice.id, bobs.id} <= {j.id for j in everyone.jobs}
    code, details = _code(jobs.Cancel, common_pb2.JobRef(id=alice.id), metadata=_auth("bob-token-1"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "another caller" in details
    # the gateway acts for its users: their names own the jobs, their grants bound the scopes
    gateway_as_bob = _auth(SERVICE_TOKEN, **{"x-lm-saes-user": "bob", "x-lm-saes-scopes": "read,submit"})
    assert (
        _code(jobs.Cancel, common_pb2.JobRef(id=alice.id), metadata=gateway_as_bob)[0]
        == grpc.StatusCode.PERMISSION_DENIED
    )
    read_only = _auth(SERVICE_TOKEN, **{"x-lm-saes-user": "bob", "x-lm-saes-scopes": "read"})
    assert _code(jobs.Cancel, common_pb2.JobRef(id=bobs.id), metadata=read_only)[0] == grpc.StatusCode.PERMISSION_DENIED
    for job, token in ((alice, "alice-token"), (bobs, ADMIN_TOKEN)):
        cancelled = jobs.Cancel(common_pb2.JobRef(id=job.id), metadata=_auth(token), timeout=30)
        assert cancelled.state == common_pb2.JOB_STATE_CANCELLED


def test_locations_are_confined_to_the_configured_roots(stack, tmp_path):
    services, tmp = stack
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's secret")
    outside = tmp_path / "escape"
    outside.mkdir()
    (tmp / "objects").mkdir(exist_ok=True)
    link = tmp / "objects" / "link-out"
    if not link.exists():
        os.symlink(outside, link)
    admin = _auth(ADMIN_TOKEN)
    trainer, analyzer = _stub(stack, "training"), _stub(stack, "analysis")
    activation, tracer = _stub(stack, "activation"), _stub(stack, "tracing")

    def refused(call, request, field: str) -> None:
        code, details = _code(call, request, metadata=admin)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), (request, details)

    refused(
        trainer.Submit,
        training_pb2.SubmitTrainingRequest(config_json=_tiny_config(data={"source": str(secret)})),
        "data.source",
    )
    refused(
        analyzer.Submit,
        analysis_pb2.SubmitAnalysisRequest(
            sae_uri=str(tmp / "objects" / "x"), config_json=json.dumps({"data": {"source": str(secret)}})
        ),
        "data.source",
    )
    refused(
        activation.GenerateActivations,
        activation_pb2.GenerateActivationsRequest(
            output_uri=str(tmp / "objects" / "acts"),
            hooks=["blocks.0.hook_resid_post"],
            data_config_json=json.dumps({"source": str(secret)}),
        ),
        "data_config_json.source",
    )
    for output in [
        "../../x",
        "~/x",
        "/tmp/x",
        f"file://{outside}",
        "s3://another-bucket/x",
        "s3://",
        "s3://" + "b" * 300 + "/x",
        "/proc/self/x",
        str(link / "x"),
        f"{tmp}/objects/../../x",
    ]:
        refused(trainer.Submit, training_pb2.SubmitTrainingRequest(config_json=_tiny_config(output=output)), "output")
        refused(
            activation.GetActivations,
            activation_pb2.GetActivationsRequest(text="hi", hooks=["blocks.0.hook_resid_post"], store_uri=output),
            "store_uri",
        )
        refused(
            activation.GenerateActivations,
            activation_pb2.GenerateActivationsRequest(output_uri=output, hooks=["blocks.0.hook_resid_post"]),
            "output_uri",
        )
        refused(tracer.Submit, circuits_pb2.SubmitTraceRequest(prompt="hi", transcoders_uri=output), "transcoders_uri")
    refused(
        trainer.Submit,
        training_pb2.SubmitTrainingRequest(config_json=_tiny_config(activations={"path": "/etc"})),
        "activations.path",
    )
    refused(
        trainer.Submit,
        training_pb2.SubmitTrainingRequest(config_json=_tiny_config(model={"name": "/etc"})),
        "model.name",
    )
    assert list(outside.iterdir()) == []  # nothing was written through the link


def test_bad_input_is_refused_at_submit_with_the_field_named(stack):
    admin = _auth(ADMIN_TOKEN)
    trainer, analyzer = _stub(stack, "training"), _stub(stack, "analysis")
    activation, tracer = _stub(stack, "activation"), _stub(stack, "tracing")
    before = len(open_document_store(str(stack[1] / "docs.sqlite")).list_jobs("training"))
    nested = "[" * 30_000 + "]" * 30_000  # within max_config_bytes: refused for its depth
    cases = [
        (trainer.Submit, training_pb2.SubmitTrainingRequest(config_json=""), "config"),
        (trainer.Submit, training_pb2.SubmitTrainingRequest(config_json="{}"), "config_json"),
        (trainer.Submit, training_pb2.SubmitTrainingRequest(config_toml=""), "config_toml"),
        (trainer.Submit, training_pb2.SubmitTrainingRequest(config_json=nested), "config_json"),
        (
            trainer.Submit,
            training_pb2.SubmitTrainingRequest(config_json=_tiny_config(train={"lr": float("inf")})),
            "invalid config",
        ),
        (
            trainer.Submit,
            training_pb2.SubmitTrainingRequest(config_json=_tiny_config(model={"name": "gpt-99"})),
            "model.name",
        ),
        (
            trainer.Submit,
            training_pb2.SubmitTrainingRequest(
                config_json=_tiny_config(activations={"hooks": ["blocks.0.hook_bogus"]})
            ),
            "activations.hooks",
        ),
        (
            trainer.Submit,
            training_pb2.SubmitTrainingRequest(config_json=_tiny_config(sae={"k": 512})),
            "invalid config",
        ),
        (
            trainer.Submit,
            training_pb2.SubmitTrainingRequest(config_json=_tiny_config(sae={"d_sae": 2**40})),
            "sae.d_sae",
        ),
        (
            trainer.Submit,
            training_pb2.SubmitTrainingRequest(config_json=_tiny_config(data={"context_size": 10**6})),
            "data.context_size",
        ),
        (_jobs(stack, "training").List, common_pb2.ListJobsRequest(page_token="99999999999999999999"), "page_token"),
        (_jobs(stack, "activation").List, common_pb2.ListJobsRequest(kind="training"), "kind"),
        (analyzer.Submit, analysis_pb2.SubmitAnalysisRequest(sae_uri="x", config_json="[]"), "config_json"),
        (analyzer.Submit, analysis_pb2.SubmitAnalysisRequest(sae_uri="x", config_json="null"), "config_json"),
        (analyzer.Submit, analysis_pb2.SubmitAnalysisRequest(sae_uri="x", config_json="1"), "config_json"),
        (analyzer.Submit, analysis_pb2.SubmitAnalysisRequest(sae_uri="x", config_json='"x"'), "config_json"),
        (analyzer.Submit, analysis_pb2.SubmitAnalysisRequest(sae_uri="x", config_json='{"shards": 9}'), "shards"),
        (analyzer.ListFeatures, analysis_pb2.ListFeaturesRequest(sae_id="x", sort=99), "sort"),
        (activation.Tokenize, activation_pb2.TokenizeRequest(text="a" * 8_000_000), "text"),
        (activation.Tokenize, activation_pb2.TokenizeRequest(text="hi", model="m" * 20_000), "model"),
        (tracer.Submit, circuits_pb2.SubmitTraceRequest(prompt="p" * 10_000_000, transcoders_uri="x"), "prompt"),
        (
            tracer.Intervene,
            circuits_pb2.InterveneRequest(graph_id="g", changes=[circuits_pb2.FeatureChange(value=float("nan"))]),
            "changes[0].value",
        ),
        (
            tracer.Intervene,
            circuits_pb2.InterveneRequest(
                graph_id="g",
                changes=[circuits_pb2.FeatureChange(value=1e308, mode=circuits_pb2.INTERVENTION_MODE_CLAMP)],
            ),
            "changes[0].value",
        ),
        (
            tracer.Intervene,
            circuits_pb2.InterveneRequest(graph_id="g", changes=[circuits_pb2.FeatureChange(value=1.0, mode=99)]),
            "changes[0].mode",
        ),
        (tracer.ExplainAttention, circuits_pb2.ExplainAttentionRequest(graph_id="g", top_k=10**6), "top_k"),
        (  # a trace may not plan past the server's memory ceiling (max_job_memory_gb)
            tracer.Submit,
            circuits_pb2.SubmitTraceRequest(prompt="hi", transcoders_uri="x", config_json='{"max_memory_gb": 1000}'),
            "max_memory_gb",
        ),
    ]
    for call, request, field in cases:
        started = time.monotonic()
        code, details = _code(call, request, metadata=admin)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), (field, code, details[:300])
        assert len(details) <= 2100 and time.monotonic() - started < 20, field  # short, and refused early
    after = len(open_document_store(str(stack[1] / "docs.sqlite")).list_jobs("training"))
    assert after == before  # nothing was queued


def _running_job(stack) -> str:
    """A training job record that stays `running` (no worker holds it): streams watch it forever."""
    documents = open_document_store(str(stack[1] / "docs.sqlite"))
    job = new_job("training", {}, owner="tester").model_copy(
        update={"state": "running", "id": f"training-stream-{uuid.uuid4().hex[:8]}"}
    )
    documents.put_job(job)
    return job.id


def test_streams_are_capped_and_released(stack):
    """Watch streams cannot take every RPC thread: past the cap they are refused at once, health
    and Cancel stay answered, and a stream's slot comes back when its client goes away."""
    job_id = _running_job(stack)
    channel = stack[0]["training"].raw_channel
    trainer = common_pb2_grpc.JobServiceStub(channel)
    calls, codes, lock = [], [], threading.Lock()
    tokens = [ADMIN_TOKEN, "alice-token", "bob-token-1", "reader-token"]

    def watch(number: int) -> None:
        call = trainer.Watch(common_pb2.JobRef(id=job_id), metadata=_auth(tokens[number % 4]), timeout=60)
        with lock:
            calls.append(call)
        try:
            for _ in call:
                pass
        except grpc.RpcError as error:
            with lock:
                codes.append(error.code())

    threads = [threading.Thread(target=watch, args=(n,)) for n in range(100)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert refused >= 90, codes  # the stack runs 4 RPC threads: at most 2 streams
    started = time.monotonic()
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert _code(trainer.Get, common_pb2.JobRef(id=job_id), metadata=_auth(ADMIN_TOKEN))[0] == grpc.StatusCode.OK
    assert time.monotonic() - started < 5
    for call in calls:  # the clients go away
        call.cancel()
    for thread in threads:
        thread.join(timeout=30)
    time.sleep(1)
    again = trainer.Watch(common_pb2.JobRef(id=job_id), metadata=_auth(ADMIN_TOKEN), timeout=3)
    assert next(again).job_id == job_id  # a slot is free again
    again.cancel()
    cancelled = trainer.Cancel(common_pb2.JobRef(id=job_id), metadata=_auth(ADMIN_TOKEN), timeout=10)
    assert cancelled.state == common_pb2.JOB_STATE_CANCELLED


def test_gateway_event_streams_cannot_starve_it(stack):
    """100 browsers follow a job: the gateway holds no service thread for them, caps them per
    caller, answers /healthz and the services' health throughout, and frees a slot on disconnect."""
    job_id = _running_job(stack)
    with gateway_process(stack[0], stack[1], LM_SAES_MAX_STREAMS_PER_CALLER="16") as (url, _log):
        statuses: list[int] = []
        opened: list[httpx.Response] = []
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(100)]
        try:
            for client in clients:
                response = client.send(
                    client.build_request("GET", f"/api/v1/jobs/{job_id}/events", headers=READ), stream=True
                )
                statuses.append(response.status_code)
                if response.status_code == 200:
                    opened.append(response)
                else:
                    response.read()
                    assert response.headers["content-type"] == "application/problem+json"
            assert statuses.count(200) == 16 and statuses.count(429) == 84
            started = time.monotonic()
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200  # services answer their health
            assert time.monotonic() - started < 10
            for response in opened:
                response.close()
        finally:
            for client in clients:
                client.close()
        deadline = time.time() + 15
        while True:  # the slots come back once the gateway sees the disconnects
            with (
                httpx.Client(base_url=url, timeout=30) as client,
                client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=READ) as response,
            ):
                if response.status_code == 200:
                    break
            assert time.time() < deadline, "event-stream slots were not released on disconnect"
            time.sleep(0.5)
        with httpx.Client(base_url=url, timeout=30) as client:
            cancel = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=SUBMIT)
            assert cancel.status_code == 403  # the submitter is not its owner
            assert client.get("/api/v1/jobs", headers=SUBMIT).status_code == 200


@pytest.mark.parametrize("field", ["config", "sae_uri"])
def test_gateway_maps_confinement_to_422(stack, field):
    with gateway_process(stack[0], stack[1]) as (url, _log), httpx.Client(base_url=url, timeout=60) as client:
        if field == "config":
            config = {**json.loads(_tiny_config()), "data": {"source": "/etc/passwd"}}
            response = client.post("/api/v1/jobs/training", json={"config": config}, headers=SUBMIT)
            assert response.status_code == 422 and response.json()["field"] == "config.data.source", response.text
        else:
            response = client.post("/api/v1/jobs/analysis", json={"sae_uri": "/etc"}, headers=SUBMIT)
            assert response.status_code == 422 and response.json()["field"] == "sae_uri", response.text
        assert response.headers["content-type"] == "application/problem+json"


HOSTILE_STRINGS = [
    "",
    "../../etc/passwd",
    "/etc/passwd",
    "~/x",
    "s3://",
    "s3://evil-bucket/x",
    "file:///etc/hosts",
    "x" * 100_000,
    "\x00",
    "{}",
    "[]",
    '{"a":' * 500,
    "null",
    "1",
    "%s%n",
    "' OR 1=1 --",
    "tiny",
    "blocks.0.hook_resid_post",
    "training-nope",
    "é\u202egnp.exe",
    "9" * 400,
]
HOSTILE_INTS = [0, -1, 1, 7, 2**31 - 1, -(2**31)]
HOSTILE_LONGS = [*HOSTILE_INTS, 2**63 - 1, -(2**63)]
HOSTILE_FLOATS = [float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 3.5]


def _random_message(cls, rng, depth: int = 0):
    """A message of `cls` with hostile values in a random subset of its fields."""
    from google.protobuf.descriptor import FieldDescriptor as F
    from google.protobuf.message_factory import GetMessageClass

    message = cls()

    def value(field):
        if field.type == F.TYPE_MESSAGE:
            return _random_message(GetMessageClass(field.message_type), rng, depth + 1) if depth < 3 else None
        if field.type == F.TYPE_STRING:
            return rng.choice(HOSTILE_STRINGS)
        if field.type == F.TYPE_BYTES:
            return rng.choice([b"", b"\x00" * 64, os.urandom(32)])
        if field.type == F.TYPE_BOOL:
            return rng.choice([True, False])
        if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return rng.choice(HOSTILE_FLOATS)
        if field.type == F.TYPE_ENUM:
            return rng.choice([0, 1, 99, -5])
        if field.type in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
            return rng.choice(HOSTILE_LONGS)
        if field.type in (F.TYPE_UINT32, F.TYPE_FIXED32):
            return rng.choice([0, 1, 2**32 - 1])
        if field.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
            return rng.choice([0, 1, 2**64 - 1])
        return rng.choice(HOSTILE_INTS)

    for field in cls.DESCRIPTOR.fields:
        if rng.random() < 0.4:
            continue
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            entry = field.message_type.fields_by_name
            target = getattr(message, field.name)
            for _ in range(rng.randint(0, 2)):
                key, item = rng.choice(HOSTILE_STRINGS[:8]), value(entry["value"])
                if entry["value"].type == F.TYPE_MESSAGE:
                    if item is not None:
                        target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            items = [value(field) for _ in range(rng.randint(0, 3))]
            container = getattr(message, field.name)
            for item in items:
                if item is None:
                    continue
                container.add().CopyFrom(item) if field.type == F.TYPE_MESSAGE else container.append(item)
        else:
            item = value(field)
            if item is None:
                continue
            if field.type == F.TYPE_MESSAGE:
                getattr(message, field.name).CopyFrom(item)
            else:
                setattr(message, field.name, item)
    return message


def test_fuzz_every_method_found_by_reflection(stack):
    """Empty, random and hostile messages to every method each service lists by reflection,
    with and without credentials: never INTERNAL or UNKNOWN, and every service healthy after."""
    import random

    from google.protobuf.descriptor_pool import DescriptorPool
    from google.protobuf.message_factory import GetMessageClass
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    rng = random.Random(12)
    seen: dict[str, set[str]] = {}
    for server, service in stack[0].items():
        channel = service.raw_channel
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(database)
        for service_name in database.get_services():
            if not service_name.startswith("lm_saes."):
                continue
            for method in pool.FindServiceByName(service_name).methods:
                path = f"/{service_name}/{method.name}"
                request_cls = GetMessageClass(method.input_type)
                response_cls = GetMessageClass(method.output_type)
                call = (channel.unary_stream if method.server_streaming else channel.unary_unary)(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )
                code, _ = _code(call, request_cls())
                assert code == grpc.StatusCode.UNAUTHENTICATED, (path, code)
                messages = [request_cls()] + [_random_message(request_cls, rng) for _ in range(12)]
                for message in messages:
                    code, details = _code(call, message, metadata=_auth(ADMIN_TOKEN))
                    seen.setdefault(f"{server}:{path}", set()).add(code.name)
                    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (path, message, details)
                    assert len(details) <= 2100, path
    # every method of every server was reached: 16 of their own, and each serves the 4 JobService RPCs
    assert len(seen) == 16 + 4 * 4, sorted(seen)
    for name, service in stack[0].items():
        reply = health_pb2_grpc.HealthStub(service.raw_channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        assert service.proc.poll() is None, name


def test_schemathesis_finds_no_server_error(stack, tmp_path):
    """schemathesis generates requests from the gateway's OpenAPI (with every scope, and with no
    token) and checks that none gets a 5xx; the document declares the real statuses."""
    import subprocess
    import sys
    from pathlib import Path

    tokens = json.dumps({**TOKENS, "all-scopes-token": ["read", "compute", "submit", "admin"]})
    with gateway_process(stack[0], stack[1], LM_SAES_API_TOKENS=tokens) as (url, log):
        schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
        submit = schema["paths"]["/api/v1/jobs/training"]["post"]
        assert {"401", "403", "409", "422", "503"} <= set(submit["responses"]), submit["responses"].keys()
        assert "application/problem+json" in submit["responses"]["422"]["content"]
        assert submit["x-required-scope"] == "submit" and submit["security"] == [{"HTTPBearer": []}]
        reads = schema["paths"]["/api/v1/saes"]["get"]
        assert reads["x-public"] is True and {} in reads["security"]
        assert schema["paths"]["/api/v1/jobs"]["get"]["x-public"] is False  # whose jobs: needs a token
        st = Path(sys.executable).parent / "schemathesis"
        for headers in (["-H", "Authorization: Bearer all-scopes-token"], []):
            run = subprocess.run(
                [
                    str(st),
                    "run",
                    f"{url}/openapi.json",
                    "--checks",
                    "not_a_server_error",
                    "--max-examples",
                    "12",
                    "--seed",
                    "7",
                    "--request-timeout",
                    "60",
                    "--phases",
                    "examples,coverage,fuzzing",
                    *headers,
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=400,
            )
            assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:] + log.read_text()[-3000:]
            tested = re.search(r"Tested: (\d+)", run.stdout)
            assert tested and int(tested.group(1)) >= 20 and re.search(r"(\d+) generated, \1 passed", run.stdout)


def test_tls_stack(tmp_path):
    """A service serving mTLS and a gateway reaching it over TLS with its service token; a
    client without a certificate, or in plaintext, gets nowhere."""
    import subprocess
    import sys

    from lm_saes.rpc.client import TrainingClient, tls_credentials
    from tests.deploy.test_chart import make_pki
    from tests.integration.conftest import REPO, free_port

    pki = make_pki(["lm-saes-training"])
    files = {}
    for secret, items in pki.items():
        for key, data in items.items():
            files[(secret, key)] = tmp_path / f"{secret}-{key}"
            files[(secret, key)].write_bytes(data)
    server, client = "lm-saes-grpc-tls", "lm-saes-gateway-grpc-client"
    port = free_port()
    env = {
        **os.environ,
        "LM_SAES_HOST": "127.0.0.1",
        "LM_SAES_PORT": str(port),
        "LM_SAES_METRICS_PORT": "0",
        "LM_SAES_DOCUMENTS": str(tmp_path / "docs.sqlite"),
        "LM_SAES_OBJECT_STORE": str(tmp_path / "objects"),
        "LM_SAES_TLS_CERT_FILE": str(files[(server, "tls.crt")]),
        "LM_SAES_TLS_KEY_FILE": str(files[(server, "tls.key")]),
        "LM_SAES_TLS_CLIENT_CA_FILE": str(files[(server, "ca.crt")]),
    }
    log = (tmp_path / "training.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.training"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    credentials = tls_credentials(
        str(files[(client, "ca.crt")]), str(files[(client, "tls.crt")]), str(files[(client, "tls.key")])
    )
    address = f"127.0.0.1:{port}"
    try:
        with TrainingClient(
            address, credentials=credentials, server_name="lm-saes-training", token=ADMIN_TOKEN, timeout=10
        ) as trainer:
            trainer.wait_ready(timeout=120)
            assert trainer.list() == ([], "")
        without_cert = tls_credentials(str(files[(client, "ca.crt")]))
        for kwargs in ({"credentials": without_cert, "server_name": "lm-saes-training"}, {}):
            with (
                TrainingClient(address, token=ADMIN_TOKEN, timeout=5, **kwargs) as refused,
                pytest.raises(Exception) as error,
            ):
                refused.list()
            assert getattr(error.value, "code", None) == grpc.StatusCode.UNAVAILABLE, error.value
        services = {"training": type("S", (), {"port": port})()}
        tls = {
            "LM_SAES_TLS_CA_FILE": str(files[(client, "ca.crt")]),
            "LM_SAES_TLS_CLIENT_CERT_FILE": str(files[(client, "tls.crt")]),
            "LM_SAES_TLS_CLIENT_KEY_FILE": str(files[(client, "tls.key")]),
            "LM_SAES_TLS_SERVER_NAME": "lm-saes-training",
        }
        with gateway_process(services, tmp_path, **tls) as (url, _log), httpx.Client(base_url=url, timeout=60) as http:
            response = http.post("/api/v1/jobs/training", json={"config": {"model": "tiny"}}, headers=SUBMIT)
            assert response.status_code == 422 and "missing" in response.json()["detail"], response.text
    finally:
        proc.terminate()
        proc.wait(timeout=60)
