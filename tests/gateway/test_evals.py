"""The evaluation suite's reads: GET /saes/{id}/evals, the neighbours on feature pages and
GET /saes/{id}/neighbours, over a seeded SQLite store (no service is needed for catalog reads)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from lm_saes.stores.documents import open_document_store
from lm_saes.stores.documents.base import SAES
from tests.service_stack import COMPUTE, READ, TOKENS

CORE = {
    "tokens": 1000,
    "l0": 12.5,
    "explained_variance": 0.81,
    "mse": 0.02,
    "dead_fraction": 0.1,
    "dense_fraction": 0.0,
    "ce_loss_recovered": 0.9,
    "kl_divergence": 0.12,
    "density": {"log10_edges": [-2.0, -1.0, 0.0], "counts": [3, 4], "dead": 1},
}
UNIVERSALITY = {
    "tokens": 1000,
    "features_a": 4,
    "features_b": 4,
    "alive_a": 4,
    "alive_b": 3,
    "mean_max_correlation": 0.6,
    "partner_fraction": 0.5,
    "mean_max_correlation_b": 0.55,
    "partner_fraction_b": 0.25,
    "decoder_mean_max_cosine": 0.7,
    "decoder_matched_cosine": 0.65,
}


def near(sae_id: str, index: int, similarity: float, kind: str) -> dict:
    return {"sae_id": sae_id, "index": index, "similarity": similarity, "kind": kind}


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("evals") / "docs.sqlite")
    with open_document_store(path) as store:
        for sae_id in ("alpha", "beta"):
            store.put_sae({"id": sae_id, "model": "tiny", "d_sae": 4, "metrics": {"l0": 12.0}})
            store.put_features(
                [{"sae_id": sae_id, "index": i, "density": 0.1 * (i + 1), "max_activation": 1.0} for i in range(4)]
            )
        store.put_evals("alpha", {"core": CORE, "seconds": {"core": 3.0}})
        store.put_evals("alpha", {"universality": UNIVERSALITY, "compared_id": "beta", "compared_with": "runs/b/sae"})
        store.put_neighbours(
            "alpha", "decoder", "alpha", {i: [near("alpha", (i + 1) % 4, 0.5, "decoder")] for i in range(4)}
        )
        store.put_neighbours("alpha", "activation", "beta", {0: [near("beta", 2, 0.9, "activation")]})
        # as another version might have stored it: not an EvalReport of this one
        store._put_record(SAES, {"id": "stale", "model": "tiny", "evals": {"core": {"l0": "many"}}})
    return path


def _app(docs: str, tmp_path, **overrides) -> TestClient:
    settings = GatewaySettings(documents=docs, static_dir=str(tmp_path / "none"), api_tokens=TOKENS, **overrides)
    return TestClient(create_app(settings))


@pytest.fixture
def client(docs, tmp_path):
    with _app(docs, tmp_path) as test_client:
        yield test_client


def _problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"]
    assert body.get("field") == field, body
    return body


def test_evals_of_an_sae(client):
    evals = client.get("/api/v1/saes/alpha/evals").json()
    assert evals["core"]["kl_divergence"] == 0.12 and evals["core"]["density"]["counts"] == [3, 4]
    assert evals["universality"]["partner_fraction"] == 0.5 and evals["compared_id"] == "beta"
    assert evals["seconds"] == {"core": 3.0} and evals["synthetic"] == []
    listed = {s["id"]: s for s in client.get("/api/v1/saes").json()}
    assert listed["alpha"]["evals"]["core"]["l0"] == 12.5 and listed["beta"]["evals"] is None
    assert client.get("/api/v1/saes/alpha").json()["evals"]["universality"]["alive_b"] == 3


def test_evals_problems(client):
    assert "no SAE 'ghost'" in _problem(client.get("/api/v1/saes/ghost/evals"), 404)["detail"]
    assert "has no evaluation suite report" in _problem(client.get("/api/v1/saes/beta/evals"), 404)["detail"]
    _problem(client.get(f"/api/v1/saes/{'x' * 201}/evals"), 422, "sae_id")
    _problem(client.get("/api/v1/saes/%20%00/evals"), 404)
    assert (
        "run lm-saes eval again" in _problem(client.get("/api/v1/saes/stale/evals"), 409)["detail"]
    )  # odd but in bounds: not found, not a 500
    _problem(client.get(f"/api/v1/saes/{'x' * 201}/neighbours"), 422, "sae_id")
    _problem(client.get("/api/v1/saes/alpha/neighbours", params={"partner": "x" * 201}), 422, "partner")
    _problem(client.get("/api/v1/saes/alpha/neighbours", params={"partner": ""}), 422, "partner")
    _problem(client.get("/api/v1/saes/alpha/neighbours", params={"kind": "weights"}), 422, "kind")
    _problem(client.get("/api/v1/saes/alpha/neighbours", params={"limit": 1001}), 422, "limit")
    _problem(client.get("/api/v1/saes/alpha/neighbours", params={"partner": "ghost"}), 404)
    _problem(client.get("/api/v1/saes/ghost/neighbours"), 404)


def test_reads_need_a_token_when_reads_are_protected(docs, tmp_path):
    with _app(docs, tmp_path, public_reads=False) as private:
        for path in ("/api/v1/saes/alpha/evals", "/api/v1/saes/alpha/neighbours", "/api/v1/saes/alpha/features/0"):
            body = _problem(private.get(path), 401)
            assert body["detail"] == "a bearer token is required"
            _problem(private.get(path, headers={"Authorization": "Bearer wrong"}), 401)
            _problem(private.get(path, headers=COMPUTE), 403)
            assert private.get(path, headers=READ).status_code == 200, path
        _problem(private.get("/api/v1/saes/ghost/evals"), 401)  # who asks comes first: no existence leak


def test_feature_pages_show_their_neighbours(client):
    feature = client.get("/api/v1/saes/alpha/features/0").json()
    assert feature["neighbours"] == [near("alpha", 1, 0.5, "decoder"), near("beta", 2, 0.9, "activation")]
    assert client.get("/api/v1/saes/beta/features/0").json()["neighbours"] == []
    page = client.get("/api/v1/saes/alpha/neighbours", params={"partner": "beta", "kind": "activation"}).json()
    assert (page["total"], page["partner"], page["kind"]) == (4, "beta", "activation")
    assert [(f["index"], f["neighbours"]) for f in page["items"]] == [
        (0, [near("beta", 2, 0.9, "activation")]),
        (1, []),
        (2, []),
        (3, []),
    ]
    dense_first = client.get("/api/v1/saes/alpha/neighbours", params={"sort": "density", "order": "desc", "limit": 2})
    items = dense_first.json()["items"]
    assert [f["index"] for f in items] == [3, 2] and items[0]["neighbours"] == [near("alpha", 0, 0.5, "decoder")]
    paths = client.get("/openapi.json").json()["paths"]
    evals = paths["/api/v1/saes/{sae_id}/evals"]["get"]
    assert evals["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SaeEvals"
    }
    assert "404" in evals["responses"] and "/api/v1/saes/{sae_id}/neighbours" in paths
