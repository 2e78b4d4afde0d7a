"""One suite, two backends: SQLite in tmp_path and MongoDB (jongodb) on loopback."""

import sqlite3
import threading
import uuid

import numpy as np
import pytest

from lm_saes.records import Explanation
from lm_saes.stores.documents import SQLiteDocumentStore, open_document_store
from lm_saes.stores.documents.base import SAES


@pytest.fixture(params=["sqlite", "mongo"])
def store_uri(request, tmp_path) -> str:
    """A fresh, empty store per test: a new file, or a new database (jongodb has no `drop`)."""
    if request.param == "sqlite":
        return str(tmp_path / "nested" / "docs.db")
    return f"{request.getfixturevalue('mongodb_uri')}/t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(store_uri):
    with open_document_store(store_uri) as store:
        yield store


def plain(record) -> dict:
    """A returned record as the fields it was stored with."""
    return record.model_dump(mode="json", exclude_unset=True)


def feature(index: int, sae_id: str = "sae-a", **extra) -> dict:
    return {
        "sae_id": sae_id,
        "index": index,
        "analysis_id": "an-1",
        "density": (index * 7 % 5) / 10,  # ties: five values over many features
        "max_activation": float(index % 3),
        "mean_activation": 0.5,
        "histogram": {"edges": [0, 1, 2], "counts": [3, 4]},
        "top_examples": [{"tokens": ["a", "b"], "acts": [0.0, 1.5]}],
        "top_tokens": [{"token": "the", "token_id": 5, "count": 2, "max_activation": float(index)}],
        **extra,
    }


def test_models_saes_analyses_roundtrip(store):
    store.put_model({"name": "tiny", "n_layers": 2, "d_model": 32})
    store.put_model({"name": "smollm2-135m", "n_layers": 30, "d_model": 576, "extra": {"a": [1]}})
    assert plain(store.get_model("tiny")) == {"name": "tiny", "n_layers": 2, "d_model": 32}
    assert [m.name for m in store.list_models()] == ["smollm2-135m", "tiny"]
    assert store.get_model("smollm2-135m").extra == {"a": [1]}  # records keep fields they do not declare
    assert store.get_model("nope") is None

    sae = {
        "id": "sae-b",
        "model": "tiny",
        "hook_in": "blocks.0.hook_resid_post",
        "hook_out": "blocks.0.hook_resid_post",
        "architecture": "topk",
        "d_sae": 128,
        "config": {"k": 8},
        "metrics": {"ev": 0.9},
        "artifact": "runs/x/sae",
        "created": "2025-01-01T00:00:00+00:00",
    }
    store.put_sae(sae)
    store.put_sae({**sae, "id": "sae-a", "model": "smollm2-135m"})
    store.put_sae({**sae, "metrics": {"ev": 0.95}})  # upsert replaces
    assert plain(store.get_sae("sae-b")) == {**sae, "metrics": {"ev": 0.95}}
    assert [s.id for s in store.list_saes()] == ["sae-a", "sae-b"]
    assert [s.id for s in store.list_saes(model="tiny")] == ["sae-b"]
    assert store.list_saes(model="other") == []

    run = {
        "id": "an-1",
        "sae_id": "sae-b",
        "state": "running",
        "tokens": 0,
        "config": {},
        "created": "2025-01-01T00:00:00+00:00",
        "updated": "2025-01-01T00:00:00+00:00",
    }
    store.put_analysis(run)
    store.put_analysis({**run, "id": "an-2", "sae_id": "sae-a"})
    store.put_analysis({**run, "state": "succeeded", "tokens": 1000})
    assert store.get_analysis("an-1").state == "succeeded"
    assert [a.id for a in store.list_analyses()] == ["an-1", "an-2"]
    assert [a.id for a in store.list_analyses(sae_id="sae-a")] == ["an-2"]

    with pytest.raises(ValueError, match="'id'"):
        store.put_sae({"model": "tiny"})
    with pytest.raises(ValueError, match="state"):
        store.put_analysis({**run, "state": "done"})
    with pytest.raises(ValueError, match="'d_sae'"):
        store.put_sae({**sae, "d_sae": "wide"})


def test_jobs_roundtrip_and_state_check(store):
    from lm_saes.jobs import new_job

    job = new_job("training", {"output": "x"}, request_id="r1")
    store.put_job(job)
    store.put_job(new_job("analysis", {"sae": "y"}))
    store.put_job({**job.doc(), "state": "running", "progress": 0.5})
    assert store.get_job(job.id).progress == 0.5 and store.get_job(job.id).state == "running"
    assert [j.kind for j in store.list_jobs(kind="training")] == ["training"]
    assert len(store.list_jobs()) == 2
    with pytest.raises(ValueError, match="'state'"):
        store.put_job({**job.doc(), "state": "sleeping"})
    with pytest.raises(ValueError, match="state must be one of"):
        store.update_job_if(job.id, {}, {"state": "sleeping"})
    assert store.get_job(job.id).state == "running"


def test_graphs_roundtrip(store):
    graph = {
        "id": "g-1",
        "model": "tiny",
        "prompt": "The capital",
        "artifact": "runs/graphs/g-1",
        "scores": {"replacement": 0.5, "completeness": 0.8},
        "transcoders": "runs/t",
        "n_layers": 2,
        "tokens": ["The", " capital"],
        "logits": [],
        "thresholds": {},
        "counts": {},
        "links": [],
        "nodes": [{"id": "E_1_0", "kind": "token", "layer": -1, "position": 1}],
    }
    store.put_graph(graph)
    store.put_graph({**graph, "id": "g-2", "model": "smollm2-135m"})
    store.put_graph({**graph, "prompt": "The capital of"})
    assert store.get_graph("g-1").prompt == "The capital of"
    assert store.get_graph("g-1").nodes[0].kind == "token"
    assert store.get_graph("g-9") is None
    assert [g.id for g in store.list_graphs()] == ["g-1", "g-2"]
    assert [g.id for g in store.list_graphs(model="tiny")] == ["g-1"]
    with pytest.raises(ValueError, match="'id'"):
        store.put_graph({"model": "tiny"})


def test_feature_upsert_replaces_whole_documents(store):
    store.put_features([feature(i) for i in range(3)] + [feature(0, sae_id="sae-b")])
    assert plain(store.get_feature("sae-a", 1)) == feature(1)
    assert store.get_feature("sae-a", 9) is None
    replacement = {
        "sae_id": "sae-a",
        "index": np.int64(1),
        "density": np.float32(0.25),
        "max_activation": 2,
        "top_tokens": [{"token": "cat", "max_activation": 3.0}],
    }
    store.put_features([replacement])
    got = store.get_feature("sae-a", 1)
    assert plain(got) == {
        "sae_id": "sae-a",
        "index": 1,
        "density": 0.25,
        "max_activation": 2.0,
        "top_tokens": [{"token": "cat", "max_activation": 3.0}],
    }
    assert type(got.index) is int and type(got.density) is float
    assert [f.index for f in store.features_for_token("sae-a", "the")] == [2, 0]
    assert [f.index for f in store.features_for_token("sae-a", "cat")] == [1]
    # a key repeated within one batch keeps its last document
    store.put_features([feature(5, mean_activation=1.0), feature(5, mean_activation=2.0)])
    assert store.get_feature("sae-a", 5).mean_activation == 2.0
    assert store.list_features("sae-a")[1] == 4


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", ["index", "density", "max_activation"])
def test_list_features_sorts_and_pages(store, sort, descending):
    store.put_features([feature(i) for i in range(23)] + [feature(0, sae_id="other")])
    docs = [feature(i) for i in range(23)]
    expected = [d["index"] for d in sorted(docs, key=lambda d: (d[sort], d["index"]), reverse=descending)]
    got, totals = [], set()
    for offset in range(0, 30, 7):
        page, total = store.list_features("sae-a", sort=sort, descending=descending, offset=offset, limit=7)
        got += [d.index for d in page]
        totals.add(total)
    assert got == expected and totals == {23}
    assert store.list_features("sae-a", offset=100) == ([], 23)
    assert store.list_features("missing") == ([], 0)


def test_list_features_projects_fields(store):
    store.put_features([feature(i) for i in range(4)])
    page, total = store.list_features("sae-a", sort="density", fields=["density", "max_activation"])
    assert total == 4 and all(set(plain(d)) == {"sae_id", "index", "density", "max_activation"} for d in page)
    assert plain(page[0]) == {k: feature(page[0].index)[k] for k in ("sae_id", "index", "density", "max_activation")}
    page, _ = store.list_features("sae-a", fields=["histogram", "not_there"], limit=1)
    assert [plain(d) for d in page] == [{"sae_id": "sae-a", "index": 0, "histogram": feature(0)["histogram"]}]
    full, _ = store.list_features("sae-a", limit=1)
    assert [plain(d) for d in full] == [feature(0)]


def test_features_for_token_orders_by_that_token(store):
    def tokens(*pairs):
        return [{"token": t, "token_id": 0, "count": 1, "max_activation": a} for t, a in pairs]

    store.put_features(
        [
            feature(0, top_tokens=tokens(("dog", 1.0), ("cat", 9.0))),
            feature(1, top_tokens=tokens(("cat", 2.0), ("cat", 5.0))),  # repeated: strongest counts
            feature(2, top_tokens=tokens(("cat", 5.0))),
            feature(3, top_tokens=tokens(("dog", 4.0))),
            feature(4, top_tokens=[]),
            feature(0, sae_id="sae-b", top_tokens=tokens(("cat", 99.0))),
        ]
    )
    hits = store.features_for_token("sae-a", "cat")
    assert [(h.index, h.top_token["max_activation"]) for h in hits] == [(0, 9.0), (1, 5.0), (2, 5.0)]
    assert set(hits[0].model_dump()) == {"sae_id", "index", "density", "max_activation", "top_token"}
    assert hits[0].density == feature(0)["density"] and hits[0].sae_id == "sae-a"
    assert [h.index for h in store.features_for_token("sae-a", "cat", limit=2)] == [0, 1]
    assert [h.index for h in store.features_for_token("sae-a", "dog")] == [3, 0]
    assert store.features_for_token("sae-a", "cow") == []


def test_delete_features(store):
    store.put_features([feature(i) for i in range(5)] + [feature(i, sae_id="keep") for i in range(2)])
    assert store.delete_features("sae-a") == 5
    assert store.list_features("sae-a") == ([], 0)
    assert store.features_for_token("sae-a", "the") == []
    assert store.list_features("keep")[1] == 2 and len(store.features_for_token("keep", "the")) == 2
    assert store.delete_features("sae-a") == 0


def test_bad_arguments_name_the_field(store):
    with pytest.raises(ValueError, match="sort"):
        store.list_features("s", sort="mean_activation")
    with pytest.raises(ValueError, match="offset"):
        store.list_features("s", offset=-1)
    for limit in (0, 1001, 2.5):
        with pytest.raises(ValueError, match="limit"):
            store.list_features("s", limit=limit)
    with pytest.raises(ValueError, match="fields"):
        store.list_features("s", fields="density")
    with pytest.raises(ValueError, match="limit"):
        store.features_for_token("s", "the", limit=0)
    for bad, field in [
        ({"density": None}, "density"),
        ({"max_activation": float("nan")}, "max_activation"),
        ({"index": -1}, "index"),
        ({"index": "3"}, "index"),
        ({"sae_id": ""}, "sae_id"),
        ({"top_tokens": [{"token": 3, "max_activation": 1.0}]}, "top_tokens"),
    ]:
        with pytest.raises(ValueError, match=field):
            store.put_features([feature(0) | bad])
    assert store.list_features("sae-a") == ([], 0)  # a bad document fails the whole batch


def test_data_survives_reopen(store_uri):
    with open_document_store(store_uri) as store:
        store.put_model({"name": "tiny", "n_layers": 2, "d_model": 32})
        store.put_features([feature(i) for i in range(3)])
    with open_document_store(store_uri) as store:  # a new connection / client, indexes re-ensured
        assert store.get_model("tiny").d_model == 32
        assert store.list_features("sae-a", sort="max_activation", descending=True)[1] == 3
        assert [h.index for h in store.features_for_token("sae-a", "the")] == [2, 1, 0]


def test_open_document_store_uris(tmp_path, mongodb_uri):
    plain = open_document_store(tmp_path / "a" / "b" / "docs.db")
    assert isinstance(plain, SQLiteDocumentStore) and (tmp_path / "a" / "b" / "docs.db").is_file()
    plain.close()
    with open_document_store(f"sqlite:///{tmp_path}/c.db") as store:
        assert store.path == tmp_path / "c.db"
    mode = sqlite3.connect(tmp_path / "c.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    with open_document_store(mongodb_uri) as store:
        assert store.db.name == "lm_saes"
    with open_document_store(f"{mongodb_uri}/other") as store:
        assert store.db.name == "other"
    with pytest.raises(ValueError, match="scheme"):
        open_document_store("postgres://host/db")


def test_sqlite_reader_sees_whole_batches(tmp_path):
    """A second connection sees none or all of each 500-feature batch, never part of one."""
    path = tmp_path / "docs.db"
    writer, reader = open_document_store(path), open_document_store(path)
    seen: list[tuple[int, set]] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            page, total = reader.list_features("sae-a", limit=1000, fields=["generation"])
            seen.append((total, {d.generation for d in page}))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for generation in range(6):
            writer.put_features(
                [feature(i, generation=generation, top_examples=[{"t": "x" * 200}] * 20) for i in range(500)]
            )
    finally:
        done.set()
        thread.join()
    writer.close()
    reader.close()
    assert seen, "the reader never ran"
    assert all(total in (0, 500) and len(generations) <= 1 for total, generations in seen), sorted(
        {(t, len(g)) for t, g in seen}
    )


def explanation(detection: float, fuzzing: float | None = None) -> dict:
    scores = {"detection": {"value": detection, "examples": 20, "positives": 10}}
    if fuzzing is not None:
        scores["fuzzing"] = {"value": fuzzing, "examples": 20, "positives": 10}
    return {"text": "the word 'not'", "model": "m", "prompt_version": "v1", "created": "t", "scores": scores}


def test_explanations_set_the_score_sort_key(store):
    from lm_saes.records import Explanation

    store.put_features([feature(i) for i in range(6)])
    updated = store.put_explanations(
        "sae-a",
        {
            1: Explanation.model_validate(explanation(0.9, 0.7)),  # score 0.8
            3: Explanation.model_validate(explanation(0.6)),  # detection only: 0.6
            4: Explanation.model_validate(explanation(0.95, 0.85)),  # 0.9
            99: Explanation.model_validate(explanation(1.0)),  # no such feature: skipped
        },
    )
    assert updated == 3
    got = store.get_feature("sae-a", 1)
    assert got.explanation.text == "the word 'not'" and got.score == pytest.approx(0.8)
    assert got.top_tokens == feature(1)["top_tokens"]  # the rest of the document kept
    page, _ = store.list_features("sae-a", sort="score", descending=True, limit=4)
    assert [f.index for f in page[:3]] == [4, 1, 3] and page[3].score is None  # unexplained last
    summary, _ = store.list_features("sae-a", sort="score", descending=True, limit=1, fields=["score"])
    assert plain(summary[0]) == {"sae_id": "sae-a", "index": 4, "score": pytest.approx(0.9)}
    # the score is derived from the explanation, never taken from the caller
    store.put_features([feature(2, score=1.0)])
    assert store.get_feature("sae-a", 2).score is None
    with pytest.raises(ValueError, match=r"explanation\.scores\.detection\.value"):
        store.put_features([feature(2, explanation=explanation(1.5))])
    with pytest.raises(ValueError, match=r"explanation\.text"):
        store.put_features([feature(2, explanation={**explanation(0.5), "text": ""})])


def test_sqlite_store_of_schema_1_gains_the_score_column(tmp_path):
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE features (sae_id TEXT NOT NULL, idx INTEGER NOT NULL, density REAL NOT NULL, "
        "max_activation REAL NOT NULL, doc TEXT NOT NULL);"
        "CREATE UNIQUE INDEX features_key ON features (sae_id, idx);"
        """INSERT INTO features VALUES ('s', 0, 0.1, 1.0, '{"sae_id": "s", "index": 0, "density": 0.1, "max_activation": 1.0}');"""
        "PRAGMA user_version=1;"
    )
    conn.close()
    with SQLiteDocumentStore(path) as store:
        assert store.get_feature("s", 0).density == 0.1
        page, total = store.list_features("s", sort="score")
        assert total == 1 and page[0].score is None
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


# --- evaluation reports and nearest neighbours ------------------------------------------------
SAE = {"id": "sae-a", "model": "tiny", "d_sae": 8, "metrics": {"l0": 4.0}}
CORE = {"tokens": 100, "l0": 4.0, "explained_variance": 0.8, "mse": 0.1, "dead_fraction": 0.0, "dense_fraction": 0.0}
UNIVERSALITY = {
    "tokens": 100,
    "features_a": 8,
    "features_b": 8,
    "alive_a": 8,
    "alive_b": 7,
    "mean_max_correlation": 0.6,
    "partner_fraction": 0.5,
    "mean_max_correlation_b": 0.55,
    "partner_fraction_b": 0.4,
    "decoder_mean_max_cosine": 0.7,
    "decoder_matched_cosine": 0.65,
}


def test_evals_merge_suite_by_suite(store):
    store.put_sae(SAE)
    assert store.get_sae("sae-a").evals is None
    record = store.put_evals("sae-a", {"sae": "runs/a/sae", "core": CORE, "seconds": {"core": 1.5}})
    assert record.evals["core"]["l0"] == 4.0 and record.evals["universality"] is None
    # a later run of another suite keeps the first one's result
    store.put_evals(
        "sae-a",
        {
            "universality": UNIVERSALITY,
            "compared_with": "runs/b/sae",
            "compared_id": "sae-b",
            "seconds": {"universality": 2},
        },
    )
    evals = store.get_sae("sae-a").evals
    assert evals["core"] == {
        **CORE,
        **dict.fromkeys(
            [
                "ce_loss_clean",
                "ce_loss_with_sae",
                "ce_loss_zero_ablation",
                "ce_loss_recovered",
                "delta_lm_loss",
                "kl_divergence",
                "density",
                "per_layer",
            ]
        ),
    }
    assert evals["universality"]["partner_fraction"] == 0.5 and evals["compared_id"] == "sae-b"
    assert evals["seconds"] == {"core": 1.5, "universality": 2.0} and evals["sae"] == "runs/a/sae"
    # core again replaces core only; a run without universality leaves the compared SAE as it was
    store.put_evals("sae-a", {"core": {**CORE, "l0": 6.0}, "compared_with": "runs/c/sae", "seconds": {"core": 1.0}})
    evals = store.get_sae("sae-a").evals
    assert evals["core"]["l0"] == 6.0 and evals["universality"]["partner_fraction"] == 0.5
    assert (evals["compared_with"], evals["compared_id"]) == ("runs/b/sae", "sae-b")
    assert evals["seconds"] == {"core": 1.0, "universality": 2.0}
    # the rest of the record is untouched, and a put_sae with its evals round-trips them
    record = store.get_sae("sae-a")
    assert record.metrics == {"l0": 4.0} and record.d_sae == 8
    store.put_sae(record)
    assert store.get_sae("sae-a").evals == evals
    assert [s.evals is not None for s in store.list_saes()] == [True]


def test_evals_of_an_unknown_sae_or_a_bad_report_are_refused(store):
    with pytest.raises(LookupError, match="no SAE 'ghost'"):
        store.put_evals("ghost", {"core": CORE})
    assert store.get_sae("ghost") is None  # nothing created
    store.put_sae(SAE)
    with pytest.raises(ValueError, match=r"evals\.core\.l0"):
        store.put_evals("sae-a", {"core": {**CORE, "l0": "many"}})
    with pytest.raises(ValueError, match=r"evals\.core\.kl_divergence.*finite"):
        store.put_evals("sae-a", {"core": {**CORE, "kl_divergence": float("nan")}})
    with pytest.raises(ValueError, match=r"evals\.universality\.partner_fraction.*finite"):
        store.put_evals("sae-a", {"universality": {**UNIVERSALITY, "partner_fraction": float("inf")}})
    with pytest.raises(ValueError, match=r"evals\.core\.explained_variance"):
        store.put_sae({**SAE, "evals": {"core": {**CORE, "explained_variance": None}}})
    with pytest.raises(ValueError, match="evals"):
        store.put_evals("sae-a", ["core"])
    assert store.get_sae("sae-a").evals is None  # none of those wrote anything


def test_evals_writers_racing_keep_both_suites(store):
    """Compare-and-set: a report written between this writer's read and its write is merged, not lost."""
    store.put_sae(SAE)
    real, raced = store._update_if, []

    def another_writer_first(kind, key, expected, changes):
        if not raced:
            raced.append(True)
            store.put_evals("sae-a", {"universality": UNIVERSALITY, "compared_id": "sae-b"})
        return real(kind, key, expected, changes)

    store._update_if = another_writer_first
    store.put_evals("sae-a", {"core": CORE})
    evals = store.get_sae("sae-a").evals
    assert raced and evals["core"]["l0"] == 4.0 and evals["universality"]["alive_b"] == 7


def near(sae_id: str, index: int, similarity: float, kind: str) -> dict:
    return {"sae_id": sae_id, "index": index, "similarity": similarity, "kind": kind}


def test_neighbours_per_kind_and_partner(store):
    store.put_features([feature(i) for i in range(4)])
    decoder = {
        i: [near("sae-a", (i + 1) % 4, 0.9, "decoder"), near("sae-a", (i + 2) % 4, 0.5, "decoder")] for i in range(4)
    }
    assert store.put_neighbours("sae-a", "decoder", "sae-a", decoder) == 4
    assert store.put_neighbours("sae-a", "activation", "sae-b", {0: [near("sae-b", 7, 0.8, "activation")], 9: []}) == 1
    got = store.get_feature("sae-a", 0)
    assert [(n.kind, n.sae_id, n.index) for n in got.neighbours] == [
        ("decoder", "sae-a", 1),
        ("decoder", "sae-a", 2),
        ("activation", "sae-b", 7),
    ]
    assert got.top_tokens == feature(0)["top_tokens"]  # the rest of the document kept
    # a new comparison with sae-b replaces only that group; a feature left out loses it
    assert store.put_neighbours("sae-a", "activation", "sae-b", {1: [near("sae-b", 3, 0.4, "activation")]}) == 1
    assert [n.sae_id for n in store.get_feature("sae-a", 0).neighbours] == ["sae-a", "sae-a"]
    assert store.get_feature("sae-a", 1).neighbours[-1].index == 3
    store.put_neighbours("sae-a", "activation", "sae-c", {1: [near("sae-c", 0, 0.3, "activation")]})
    assert [n.sae_id for n in store.get_feature("sae-a", 1).neighbours] == ["sae-a", "sae-a", "sae-b", "sae-c"]
    # they survive explanations being written, and pages can ask for them
    store.put_explanations("sae-a", {1: Explanation.model_validate(explanation(0.9))})
    assert len(store.get_feature("sae-a", 1).neighbours) == 4
    page, total = store.list_features("sae-a", fields=["neighbours"], limit=2)
    assert total == 4 and [len(f.neighbours) for f in page] == [2, 4]
    assert store.put_neighbours("nobody", "decoder", "nobody", {0: []}) == 0


def test_bad_neighbours_name_the_field(store):
    store.put_features([feature(0)])
    cases = [
        ([near("sae-a", 0, 0.9, "decoder")], "its own neighbour"),
        ([near("sae-a", 1, 1.5, "decoder")], r"neighbours\.0\.similarity"),
        ([near("sae-a", 1, float("nan"), "decoder")], r"neighbours\.0\.similarity"),
        ([near("sae-a", -1, 0.5, "decoder")], r"neighbours\.0\.index"),
        ([near("", 1, 0.5, "decoder")], r"neighbours\.0\.sae_id"),
        ([near("sae-a", 1, 0.5, "weights")], r"neighbours\.0\.kind"),
        ([near("sae-b", i, 0.5, "activation") for i in range(11)], "more than 10 activation neighbours in 'sae-b'"),
        ("sae-b:1", "must be a list"),
    ]
    for neighbours, message in cases:
        with pytest.raises(ValueError, match=message):
            store.put_features([feature(0, neighbours=neighbours)])
    # ten per kind and SAE is fine, in several SAEs at once
    many = [near("sae-b", i, 0.5, "activation") for i in range(10)] + [near("sae-c", 1, 0.2, "activation")]
    store.put_features([feature(0, neighbours=many)])
    assert len(store.get_feature("sae-a", 0).neighbours) == 11
    with pytest.raises(ValueError, match="kind must be one of"):
        store.put_neighbours("sae-a", "weights", "sae-a", {})
    with pytest.raises(ValueError, match="every neighbour given must be a decoder one in 'sae-a'"):
        store.put_neighbours("sae-a", "decoder", "sae-a", {0: [near("sae-b", 1, 0.5, "activation")]})
    assert len(store.get_feature("sae-a", 0).neighbours) == 11


def test_sqlite_store_of_schema_2_takes_evals_and_neighbours(tmp_path):
    """A store written before evals existed: its SAE and feature documents lack the new fields."""
    path = tmp_path / "v2.db"
    with SQLiteDocumentStore(path) as old:
        old._put_record(SAES, {"id": "s", "model": "m"})  # as an older writer stored it
        old.put_features([{"sae_id": "s", "index": 0, "density": 0.1, "max_activation": 1.0}])
    with SQLiteDocumentStore(path) as store:
        assert store.get_sae("s").evals is None and store.get_feature("s", 0).neighbours == []
        store.put_evals("s", {"core": CORE})
        store.put_neighbours("s", "activation", "t", {0: [near("t", 2, 0.7, "activation")]})
    with SQLiteDocumentStore(path) as store:
        assert store.get_sae("s").evals["core"]["tokens"] == 100
        assert store.get_feature("s", 0).neighbours[0].index == 2
