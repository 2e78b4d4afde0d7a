"""The activation service as a real process on loopback, driven through `lm_saes.rpc.client`."""

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lm_saes.cli import main
from lm_saes.config import ModelConfig, RunConfig, load_config
from lm_saes.models import load_language_model
from lm_saes.rpc.client import ActivationClient, ServiceError
from lm_saes.rpc.v1 import activation_pb2
from lm_saes.runner import run_train
from lm_saes.saes import TopKConfig, build_sae, load_sae, make_spec
from lm_saes.stores import open_store
from lm_saes.stores.documents import open_document_store
from tests.integration.conftest import REPO, free_port

SAE_ID = "tiny-sae"
OTHER_SAE_ID = "tiny-sae-mlp"
OTHER_HOOK = "blocks.0.hook_mlp_out"
LLAMA_SAE_ID = "tiny-llama-sae"  # on a model with a plain HF path: its Generate requests batch
LLAMA_HOOK = "blocks.1.hook_resid_post"
MAX_TEXT_TOKENS = 200
TEXTS = [
    "The cat sat on the mat.",
    "Sparse autoencoders",
    "x",
    "Paris is the capital of France, and",
    "Numbers: 1, 22, 333",
    "ünïcödé text",
    "A somewhat longer sentence with several words in it.",
    "ok",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny SAE trained in-process and registered in a SQLite document store."""
    root = tmp_path_factory.mktemp("activation-service")
    cfg = load_config(
        "examples/configuration/train-tiny.toml",
        RunConfig,
        {"output": str(root / "run"), "data.max_tokens": 3000, "data.eval_tokens": 200, "eval.ce_loss": False},
    )
    run_train(cfg, progress=False)
    documents = str(root / "docs.sqlite")
    spec = load_sae(str(root / "run" / "sae")).spec
    # a second SAE of the same model on another hook (untrained: only its encoding is compared)
    other = make_spec(
        TopKConfig(hook_in=OTHER_HOOK, hook_out=OTHER_HOOK, d_sae=96, k=6, seed=5), d_in=spec.d_in, d_out=spec.d_in
    )
    build_sae(other.model_copy(update={"model": "tiny"})).save(open_store(str(root / "other")), "sae")
    llama = make_spec(TopKConfig(hook_in=LLAMA_HOOK, hook_out=LLAMA_HOOK, d_sae=128, k=8, seed=6), d_in=64, d_out=64)
    build_sae(llama.model_copy(update={"model": "tiny-llama"})).save(open_store(str(root / "llama")), "sae")
    with open_document_store(documents) as store:
        store.put_sae(
            {
                "id": LLAMA_SAE_ID,
                "model": "tiny-llama",
                "hook_in": LLAMA_HOOK,
                "architecture": "topk",
                "d_sae": 128,
                "artifact": str(root / "llama" / "sae"),
            }
        )
        store.put_sae(
            {
                "id": OTHER_SAE_ID,
                "model": "tiny",
                "hook_in": OTHER_HOOK,
                "architecture": "topk",
                "d_sae": 96,
                "artifact": str(root / "other" / "sae"),
            }
        )
        store.put_sae(
            {
                "id": SAE_ID,
                "model": "tiny",
                "hook_in": spec.hook_in,
                "architecture": spec.architecture,
                "d_sae": spec.d_sae,
                "artifact": str(root / "run" / "sae"),
            }
        )
    return root, documents


@pytest.fixture(scope="module")
def service(tiny):
    root, documents = tiny
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "LM_SAES_HOST": "127.0.0.1",
        "LM_SAES_PORT": str(port),
        "LM_SAES_METRICS_PORT": str(metrics_port),
        "LM_SAES_DOCUMENTS": documents,
        "LM_SAES_MODEL": "tiny",
        "LM_SAES_MODELS": '["tiny", "tiny-llama"]',
        "LM_SAES_MAX_TEXT_TOKENS": str(MAX_TEXT_TOKENS),
        "LM_SAES_BATCH_WINDOW_MS": "100",
        "LM_SAES_STREAM_CHUNK_MB": "0.001",
        "LM_SAES_OBJECT_STORE": str(root / "objects"),
    }
    log = open(root / "service.log", "w")  # noqa: SIM115 - closed after the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.activation"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    client = ActivationClient(f"127.0.0.1:{port}", timeout=30)
    try:
        client.wait_ready(timeout=30)
        yield {
            "client": client,
            "proc": proc,
            "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
            "address": f"127.0.0.1:{port}",
            "root": root,
            "log": root / "service.log",
        }
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def reference(tiny):
    """The same model and SAE in this process, for exact comparison."""
    root, _ = tiny
    return load_language_model(ModelConfig(name="tiny")), load_sae(str(root / "run" / "sae"))


@torch.no_grad()
def expected_features(reference, text: str) -> torch.Tensor:
    model, sae = reference
    tokens = torch.tensor([[model.tokenizer.bos_token_id, *model.tokenizer.encode(text)]])
    x = model.activations(tokens, [sae.spec.hook_in])[sae.spec.hook_in][0, 1:]
    return sae.encode(x)


def check_top_k(result: list[dict], expected: torch.Tensor, k: int) -> None:
    assert len(result) == expected.shape[0]
    values, indices = expected.topk(k, dim=1)
    for token, vals, idx in zip(result, values, indices, strict=True):
        active = vals > 0
        assert [f["index"] for f in token["features"]] == idx[active].tolist()
        got = torch.tensor([f["value"] for f in token["features"]])
        assert (got - vals[active]).abs().max().item() <= 1e-5 if len(got) else not active.any()


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in (labels or {}).items()):
            match = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
            if match:
                return float(match.group(2))
    return 0.0


def scrape(service) -> str:
    return urllib.request.urlopen(service["metrics"], timeout=10).read().decode()


def test_health_and_reflection(service):
    channel = service["client"].channel
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "lm_saes.v1.ActivationService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    (reply,) = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for s in reply.list_services_response.service}
    assert {"lm_saes.v1.ActivationService", "grpc.health.v1.Health"} <= names


def test_feature_activations_equal_in_process(service, reference):
    client = service["client"]
    text = TEXTS[0]
    result = client.feature_activations(SAE_ID, text, top_k=5)
    expected = expected_features(reference, text)
    assert [t["token"] for t in result] == reference[0].tokenizer.token_strings(reference[0].tokenizer.encode(text))
    assert [t["position"] for t in result] == list(range(len(result)))
    check_top_k(result, expected, 5)
    chosen = [0, 7, 100, 255]
    full = client.feature_activations(SAE_ID, text, features=chosen)
    got = torch.tensor([[f["value"] for f in t["features"]] for t in full])
    assert (got - expected[:, chosen]).abs().max().item() <= 1e-5
    assert all([f["index"] for f in t["features"]] == chosen for t in full)


def test_several_saes_in_one_forward_pass(service, reference, tiny):
    client = service["client"]
    model, _ = reference
    other = load_sae(str(tiny[0] / "other" / "sae"))
    before = scrape(service)
    for text in TEXTS[:3]:
        both = client.many_feature_activations([OTHER_SAE_ID, SAE_ID], text, top_k=4)
        assert list(both) == [OTHER_SAE_ID, SAE_ID]
        check_top_k(both[SAE_ID], expected_features(reference, text), 4)
        check_top_k(both[OTHER_SAE_ID], expected_features((model, other), text), 4)
    after = scrape(service)
    # no request went through a per-SAE batcher: one forward each, not one per SAE
    assert metric(after, "lm_saes_activation_batch_size_count") == metric(before, "lm_saes_activation_batch_size_count")
    hostile = {
        "sae_ids": dict(sae_ids=[SAE_ID, SAE_ID]),
        "sae_ids ": dict(sae_ids=[SAE_ID] * 17),
        "features": dict(sae_ids=[SAE_ID, OTHER_SAE_ID], features=[1]),
        "top_k": dict(sae_ids=[SAE_ID, OTHER_SAE_ID], top_k=97),  # wider than the 96-feature SAE
        "sae_ids  ": dict(sae_ids=[SAE_ID], sae_id=SAE_ID),
    }
    for field, fields in hostile.items():
        request = activation_pb2.GetFeatureActivationsRequest(text="hello", **fields)
        with pytest.raises(ServiceError) as error:
            client._call(client.stub.GetFeatureActivations, request)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and error.value.details.startswith(field.strip())
    with pytest.raises(ServiceError) as error:
        client.many_feature_activations([SAE_ID, "no-such-sae"], "hello")
    assert error.value.code == grpc.StatusCode.NOT_FOUND and "no-such-sae" in error.value.details


def test_concurrent_requests_are_batched_and_correct(service, reference):
    client = service["client"]
    before = scrape(service)
    barrier = threading.Barrier(len(TEXTS))

    def ask(text: str) -> list[dict]:
        barrier.wait()
        return client.feature_activations(SAE_ID, text, top_k=8)

    with ThreadPoolExecutor(len(TEXTS)) as pool:
        results = list(pool.map(ask, TEXTS))
    for text, result in zip(TEXTS, results, strict=True):
        check_top_k(result, expected_features(reference, text), 8)
    after = scrape(service)
    texts = metric(after, "lm_saes_activation_batch_size_sum") - metric(before, "lm_saes_activation_batch_size_sum")
    batches = metric(after, "lm_saes_activation_batch_size_count") - metric(
        before, "lm_saes_activation_batch_size_count"
    )
    print(f"{texts:.0f} concurrent texts in {batches:.0f} batches")
    assert texts == len(TEXTS) and batches < len(TEXTS), f"{texts} texts in {batches} batches"
    tokens = metric(after, "lm_saes_activation_tokens_total") - metric(before, "lm_saes_activation_tokens_total")
    assert tokens == sum(len(r) for r in results)


def test_errors_name_the_problem(service):
    client = service["client"]
    with pytest.raises(ServiceError) as error:
        client.feature_activations("no-such-sae", "hello")
    assert error.value.code == grpc.StatusCode.NOT_FOUND and "no-such-sae" in str(error.value)
    with pytest.raises(ServiceError) as error:
        client.feature_activations(SAE_ID, "y" * (MAX_TEXT_TOKENS + 1))
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and error.value.details.startswith("text:")
    assert str(MAX_TEXT_TOKENS) in error.value.details
    with pytest.raises(ServiceError) as error:
        client.feature_activations(SAE_ID, "")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and "text" in error.value.details
    with pytest.raises(ServiceError) as error:
        client.feature_activations(SAE_ID, "hi", features=[10_000])
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and "features" in error.value.details


def test_tokenize_and_streamed_activations(service, reference):
    client, (model, _) = service["client"], reference
    text = TEXTS[6]
    tokens = client.tokenize(text, prepend_bos=True)
    ids = [model.tokenizer.bos_token_id, *model.tokenizer.encode(text)]
    assert tokens["token_ids"] == ids and tokens["tokens"] == model.tokenizer.token_strings(ids)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
    expected = model.activations(torch.tensor([ids]), hooks)
    streamed = client.activations(hooks, text=text)  # 1 kB chunks: several per hook
    assert streamed["token_ids"] == ids
    for hook in hooks:
        assert (streamed["activations"][hook] - expected[hook][0]).abs().max().item() <= 1e-5
    by_tokens = client.activations(hooks[:1], tokens=ids, dtype="bfloat16")
    assert by_tokens["activations"][hooks[0]].dtype == torch.bfloat16
    stored = client.activations(hooks, text=text, store_uri=str(service["root"] / "objects" / "acts"))
    assert not stored["activations"]
    for hook in hooks:
        ref = stored["refs"][hook]
        folder, key = ref["uri"].rsplit("/", 2)[0], "/".join(ref["uri"].rsplit("/", 2)[1:])
        values = open_store(folder).get_tensors(key)["activations"]
        assert list(values.shape) == ref["shape"] and ref["byte_size"] == values.numel() * 4
        assert (values - expected[hook][0]).abs().max().item() <= 1e-5
    with pytest.raises(ServiceError) as error:
        client.activations(["blocks.9.hook_resid_post"], text=text)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and error.value.details.startswith("hooks:")


def test_generate_activations_job(service):
    client = service["client"]
    out = service["root"] / "objects" / "generated"
    job = client.generate_activations(
        ["blocks.0.hook_resid_post"],
        str(out),
        model="tiny",
        data={"max_tokens": 600, "eval_tokens": 0, "context_size": 32},
        request_id="gen-1",
        shard_tokens=256,
    )
    assert job["kind"] == "activations" and job["state"] in ("queued", "running")
    events = list(client.watch(job["id"], timeout=180))  # a worker process runs it
    assert events[-1]["state"] == "succeeded", client.get(job["id"])["error"]
    job = client.get(job["id"])
    assert job["result"]["n_tokens"] >= 600
    assert (out / "manifest.json").exists() and job["result"]["shards"] >= 2
    again = client.generate_activations(
        ["blocks.0.hook_resid_post"],
        str(out),
        model="tiny",
        data={"max_tokens": 600, "eval_tokens": 0, "context_size": 32},
        request_id="gen-1",
        shard_tokens=256,
    )
    assert again["id"] == job["id"] and again["updated"] == job["updated"]  # not run twice


def test_sharded_activation_job_and_hostile_shard_counts(service):
    client = service["client"]
    out = service["root"] / "objects" / "sharded"
    request = {"model": "tiny", "data": {"max_tokens": 600, "eval_tokens": 0, "context_size": 32}}
    for bad in (-1, 65, 9, 2**31 - 1):  # 9: past the service's max_job_shards (8)
        with pytest.raises(ServiceError) as error:
            client.generate_activations(["blocks.0.hook_resid_post"], str(out), shards=bad, **request)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and error.value.details.startswith("shards:")
    job = client.generate_activations(["blocks.0.hook_resid_post"], str(out), shards=2, shard_tokens=256, **request)
    events = list(client.watch(job["id"], timeout=240))
    assert events[-1]["state"] == "succeeded", client.get(job["id"])["error"]
    job = client.get(job["id"])
    assert job["result"]["shard_attempts"] == [1, 1] and job["result"]["n_tokens"] >= 600
    assert job["config"]["activations"]["shards"] == 2 and (out / "manifest.json").exists()


def test_activation_jobs_are_listed_and_cancelled_like_any_job(service):
    """The shared JobService: a long activation job is cancelled, never finishes its manifest."""
    client = service["client"]
    out = service["root"] / "objects" / "cancelled"
    job = client.generate_activations(
        ["blocks.0.hook_resid_post"],
        str(out),
        model="tiny",
        data={"max_tokens": 2_000_000, "eval_tokens": 0, "context_size": 32},
    )
    jobs, _ = client.list(state="")
    assert job["id"] in [j["id"] for j in jobs]
    assert client.cancel(job["id"])["state"] == "cancelled"
    assert list(client.watch(job["id"], timeout=60))[-1]["state"] == "cancelled"
    assert not (out / "manifest.json").exists()
    with pytest.raises(ServiceError) as error:
        client.cancel("training-not-mine")
    assert error.value.code == grpc.StatusCode.NOT_FOUND


def _runs(events: list[dict]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for event in events:
        runs.setdefault(event["run"], []).append(event)
    return runs


def test_generate_streams_steered_beside_default(service):
    """Generate: the steered and default runs interleave token by token; a zero-strength add is
    the default continuation, a strong one changes it; the first event describes the request."""
    client = service["client"]
    zero = list(
        client.generate("The cat", [{"sae_id": SAE_ID, "feature": 3, "strength": 0.0}], max_new_tokens=6, track=[5, 7])
    )
    runs = _runs(zero)
    assert [e["run"] for e in zero[:2]] == ["steered", "default"]
    assert zero[0]["prompt_tokens"][1:] == ["T", "h", "e", " ", "c", "a", "t"]
    assert zero[0]["changes"][0]["feature"] == 3
    assert [e["token_id"] for e in runs["steered"]] == [e["token_id"] for e in runs["default"]]
    assert len(runs["steered"]) == 6 and runs["steered"][-1]["finish_reason"] == "length"
    assert set(runs["steered"][0]["tracked"]) == {5, 7}
    strong = _runs(
        list(client.generate("The cat", [{"sae_id": SAE_ID, "feature": 3, "strength": 500.0}], max_new_tokens=6))
    )
    assert [e["token_id"] for e in strong["steered"]] != [e["token_id"] for e in strong["default"]]
    alone = list(
        client.generate(
            "The cat", [{"sae_id": SAE_ID, "feature": 3, "mode": "ablate"}], compare=False, max_new_tokens=3
        )
    )
    assert {e["run"] for e in alone} == {"steered"} and len(alone) == 3


def test_concurrent_generate_requests_share_a_batch_and_match_their_lone_runs(service):
    """Requests on a model with a plain HF path are decoded together (continuous batching): run
    at once from four threads they give exactly what each gives alone, and some steps of the
    service's decode held more than one request."""
    client = service["client"]

    def call(i: int) -> list[tuple[str, int]]:
        change = {"sae_id": LLAMA_SAE_ID, "feature": 5 + i, "strength": 3.0 * i}
        events = client.generate(
            "Hello there" * (i + 1), [change], compare=i % 2 == 0, max_new_tokens=40, ignore_eos=True, seed=i
        )
        return [(e["run"], e["token_id"]) for e in events]

    alone = [call(i) for i in range(4)]
    before = metric(scrape(service), "lm_saes_generate_batch_rows_bucket", {"le": "1.0"})
    steps_before = metric(scrape(service), "lm_saes_generate_batch_rows_count")
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(call, range(4)))
    assert together == alone
    assert [len(runs) for runs in alone] == [80, 40, 80, 40]
    text = scrape(service)
    single = metric(text, "lm_saes_generate_batch_rows_bucket", {"le": "1.0"}) - before
    steps = metric(text, "lm_saes_generate_batch_rows_count") - steps_before
    assert steps < 160 and single < steps  # shared steps: fewer than one per request's token


def test_generate_refuses_hostile_input_before_work(service):
    client = service["client"]
    feature = {"sae_id": SAE_ID, "feature": 3, "strength": 1.0}
    cases = [
        (dict(prompt="", interventions=[feature]), grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        (dict(prompt="x", interventions=[]), grpc.StatusCode.INVALID_ARGUMENT, "interventions"),
        (
            dict(prompt="x", interventions=[{**feature, "strength": float("nan")}]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "interventions[0].strength",
        ),
        (
            dict(prompt="x", interventions=[{**feature, "strength": float("inf")}]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "interventions[0].strength",
        ),
        (
            dict(prompt="x", interventions=[{**feature, "feature": 10**6}]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "interventions[0].feature",
        ),
        (dict(prompt="x", interventions=[{**feature, "sae_id": "nope"}]), grpc.StatusCode.NOT_FOUND, "sae_id"),
        (
            dict(prompt="x", interventions=[{**feature, "relative": True, "mode": "scale"}]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "interventions[0]",
        ),
        (
            dict(prompt="x", interventions=[feature], max_new_tokens=100_000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_new_tokens",
        ),
        (dict(prompt="x", interventions=[feature], track=[10**9]), grpc.StatusCode.INVALID_ARGUMENT, "track"),
        (dict(prompt="x", interventions=[feature], top_p=7.0), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        (
            dict(prompt="x" * (MAX_TEXT_TOKENS + 5), interventions=[feature], max_new_tokens=4),
            grpc.StatusCode.INVALID_ARGUMENT,
            "prompt",
        ),
        (dict(prompt="x", interventions=[feature] * 1000), grpc.StatusCode.INVALID_ARGUMENT, "interventions"),
    ]
    for kwargs, code, field in cases:
        with pytest.raises(ServiceError) as error:
            list(client.generate(**kwargs))
        assert error.value.code == code, (kwargs, error.value)
        assert error.value.details.startswith(field), (field, error.value.details)


def test_cli_prints_a_token_table(service, capsys):
    assert main(["activations", "--sae", SAE_ID, "--text", "cat", "--address", service["address"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["pos", "token"] and len(lines) == 4 and "'c'" in lines[1]
    assert main(["activations", "--sae", "nope", "--text", "cat", "--address", service["address"]]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_metrics_count_every_rpc(service):
    text = scrape(service)
    ok = {"service": "lm_saes.v1.ActivationService", "method": "GetFeatureActivations", "code": "OK"}
    assert metric(text, "lm_saes_grpc_requests_total", ok) >= 1 + len(TEXTS)
    assert metric(text, "lm_saes_grpc_requests_total", {**ok, "code": "NOT_FOUND"}) >= 1
    assert metric(text, "lm_saes_grpc_requests_total", {**ok, "code": "INVALID_ARGUMENT"}) >= 3
    assert metric(text, "lm_saes_grpc_requests_total", {**ok, "method": "GetActivations"}) >= 2
    assert metric(text, "lm_saes_grpc_request_seconds_count", {"method": "GetFeatureActivations"}) >= 1 + len(TEXTS)


def test_sigterm_stops_cleanly(service):  # last: it stops the module's service
    proc = service["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    log = service["log"].read_text()
    assert "stopped" in log and "Traceback" not in log
    with pytest.raises(ServiceError):
        ActivationClient(service["address"]).wait_ready(timeout=1)
