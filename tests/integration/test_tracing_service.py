"""The CircuitService as an OS process over real S3 (moto) and MongoDB (jongodb) wire servers.

Tiny transcoders live in S3; a trace runs as a job, its graph record lands in MongoDB and the
full graph in S3 (by reference); interventions run in the service; errors carry their codes.
"""

import uuid

import grpc
import pytest

from lm_saes.circuits.trace import load_graph
from lm_saes.config import RunConfig, load_config
from lm_saes.rpc.client import CircuitClient, ServiceError
from lm_saes.runner import run_train_clt, run_train_transcoders
from lm_saes.stores import open_store
from tests.integration.conftest import REPO
from tests.integration.test_job_services import Service


@pytest.fixture(scope="module")
def tracing(tmp_path_factory, s3_server, mongodb_uri):
    tmp = tmp_path_factory.mktemp("tracing")
    transcoders = "s3://lm-saes-tracing/objects/transcoders"
    cfg = load_config(
        REPO / "examples/configuration/transcoders-tiny.toml",
        RunConfig,
        {"output": transcoders, "data.max_tokens": 5000, "train.checkpoint_every": 0},
    )
    run_train_transcoders(cfg, progress=False)
    env = {
        "LM_SAES_DOCUMENTS": f"{mongodb_uri}/tracing_{uuid.uuid4().hex[:8]}",
        "LM_SAES_OBJECT_STORE": "s3://lm-saes-tracing/objects",
        "HF_HUB_OFFLINE": "1",
        **s3_server,
    }
    service = Service("services.tracing", env, tmp / "tracing.log")
    client = CircuitClient(f"127.0.0.1:{service.port}", timeout=120)
    yield client, transcoders, service
    client.close()
    if service.proc.poll() is None:
        assert service.stop() == 0


def _finished(client: CircuitClient, job_id: str) -> dict:
    for event in client.watch(job_id, timeout=300):
        if event["state"] in ("succeeded", "failed", "cancelled"):
            break
    return client.get(job_id)


def test_trace_job_stores_graph_and_serves_it(tracing):
    client, transcoders, _ = tracing
    job = client.submit("The capital of France is", transcoders, {"node_threshold": 0.7}, request_id="france")
    assert client.submit("The capital of France is", transcoders, request_id="france")["id"] == job["id"]
    done = _finished(client, job["id"])
    assert done["state"] == "succeeded", done.get("error")
    graph_id = done["result"]["graph_id"]

    record = client.get_graph(graph_id)
    assert record["prompt"] == "The capital of France is" and record["thresholds"]["node"] == 0.7
    assert record["artifact"].startswith("s3://lm-saes-tracing/objects/graphs/")
    assert {n["kind"] for n in record["nodes"]} >= {"feature", "token", "logit"} and record["links"]
    assert record["saes"] == {"0": "transcoders-layer-0", "1": "transcoders-layer-1"}
    full = load_graph(open_store(record["artifact"]))  # the large payload, by reference
    assert full.adjacency.shape[0] == record["counts"]["nodes"]
    listed = client.list_graphs()
    assert [g["id"] for g in listed] == [graph_id] and listed[0]["scores"] == pytest.approx(record["scores"])
    assert client.list_graphs(model="gpt2") == []

    feature = next(n for n in record["nodes"] if n["kind"] == "feature")
    change = {"layer": feature["layer"], "position": feature["position"], "feature": feature["feature"]}
    result = client.intervene(graph_id, [{**change, "value": 0.0, "mode": "clamp"}], top_k=5)
    assert len(result["before"]) == len(result["after"]) == 5
    assert result["before"][0]["token"] == record["logits"][0]["token"]
    assert result["before"][0]["probability"] == pytest.approx(record["logits"][0]["probability"], abs=1e-4)
    moved = client.intervene(graph_id, [{**change, "value": 50.0, "mode": "clamp"}], top_k=5)
    assert moved["after"] != moved["before"]
    # keeping the active set: layer 1's TopK may not reselect after a big layer-0 change
    early = next(n for n in record["nodes"] if n["kind"] == "feature" and n["layer"] == 0)
    big = [{"layer": 0, "position": early["position"], "feature": early["feature"], "value": 50.0, "mode": "clamp"}]
    reselected = client.intervene(graph_id, big, top_k=5)
    kept = client.intervene(graph_id, big, top_k=5, freeze_active_set=True)
    assert kept["before"] == reselected["before"] and kept["after"] != reselected["after"]


def test_errors_carry_codes_and_field_names(tracing):
    client, transcoders, _ = tracing
    cases = [
        (lambda: client.submit("", transcoders), grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        (
            lambda: client.submit("hi", "s3://lm-saes-tracing/objects/nothing"),
            grpc.StatusCode.NOT_FOUND,
            "transcoders_uri",
        ),
        (
            lambda: client.submit("hi", transcoders, {"node_threshold": 3}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "node_threshold",
        ),
        (
            lambda: client.submit("hi", transcoders, {"edge_treshold": 0.5}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "edge_threshold",
        ),
        (lambda: client.get_graph("graph-missing"), grpc.StatusCode.NOT_FOUND, "graph-missing"),
        (
            lambda: client.intervene("graph-missing", [{"layer": 0, "position": 0, "feature": 0, "value": 1}]),
            grpc.StatusCode.NOT_FOUND,
            "graph",
        ),
        (lambda: client.get("tracing-missing"), grpc.StatusCode.NOT_FOUND, "tracing-missing"),
    ]
    for call, code, text in cases:
        with pytest.raises(ServiceError) as error:
            call()
        assert error.value.code == code and text in error.value.details, error.value
    graph_id = client.list_graphs()[0]["id"]  # traced by the test above (module order)
    for change, text in (
        ({"layer": 7, "position": 0, "feature": 0, "value": 1}, "no transcoder"),
        ({"layer": 0, "position": 999, "feature": 0, "value": 1}, "position"),
    ):
        with pytest.raises(ServiceError) as error:
            client.intervene(graph_id, [change])
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and text in error.value.details
    with pytest.raises(ServiceError) as error:
        client.intervene(graph_id, [])
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and "changes" in error.value.details


def test_a_cross_layer_transcoder_traces_and_explains_attention(tracing):
    """A [clt] run's folder is accepted wherever a transcoder set is; on its graph, the service
    explains an attention score (QK attribution) and refuses impossible positions by field."""
    client, _, _ = tracing
    clt = "s3://lm-saes-tracing/objects/clt"
    cfg = load_config(
        REPO / "examples/configuration/clt-tiny.toml",
        RunConfig,
        {"output": clt, "data.max_tokens": 5000, "train.checkpoint_every": 0},
    )
    run_train_clt(cfg, progress=False)
    done = _finished(client, client.submit("The capital of France is", clt, request_id="clt")["id"])
    assert done["state"] == "succeeded", done.get("error")
    record = client.get_graph(done["result"]["graph_id"])
    assert record["transcoders"] == clt and record["layers"] == [0, 1]
    last = len(record["tokens"]) - 1
    explained = client.explain_attention(record["id"], layer=1, head=0, query_position=last, key_position=3, top_k=5)
    assert len(explained["query_side"]) == len(explained["key_side"]) == len(explained["pairs"]) == 5
    sizes = [abs(c["contribution"]) for c in explained["query_side"]]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0
    # key-side nodes sit at or before the key; ids are the graph's (features "L_F_P", errors "L_-1_P")
    assert all(int(c["node_id"].rsplit("_", 1)[1]) <= 3 for c in explained["key_side"])
    for request, field in (
        ({"layer": 1, "head": 0, "query_position": 2, "key_position": 3}, "key_position"),
        ({"layer": 9, "head": 0, "query_position": last, "key_position": 0}, "layer"),
        ({"layer": 1, "head": 99, "query_position": last, "key_position": 0}, "head"),
        ({"layer": 1, "head": 0, "query_position": 999, "key_position": 0}, "query_position"),
    ):
        with pytest.raises(ServiceError) as error:
            client.explain_attention(record["id"], **request)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and error.value.details.startswith(field)
    with pytest.raises(ServiceError) as error:
        client.explain_attention("graph-missing", 0, 0, 0, 0)
    assert error.value.code == grpc.StatusCode.NOT_FOUND
