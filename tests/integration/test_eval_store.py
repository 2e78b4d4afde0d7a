"""`lm-saes eval --suite ... --documents ... --sae-id ...` on the tiny model: the report merged into
the SAE's record suite by suite, each feature's nearest neighbours (within the SAE by decoder,
across the compared SAE by activation), evals.json beside the SAE picked up by analysis, and
flags that do not fit refused before any work."""

from __future__ import annotations

import json
import shutil

import pytest

from lm_saes.analysis import run_analysis
from lm_saes.cli import main
from lm_saes.config import AnalyzeConfig, load_config
from lm_saes.stores.documents import open_document_store

TINY_ANALYZE = "examples/configuration/analyze-tiny.toml"


def _analyze(sae, docs, out):
    cfg = load_config(
        TINY_ANALYZE, AnalyzeConfig, {"output": str(out), "documents": str(docs), "data.max_tokens": 2000}
    )
    return run_analysis(cfg, str(sae), progress=False)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two tiny SAEs of one model (seeds 0 and 1), analyzed into one SQLite store as alpha and beta."""
    root = tmp_path_factory.mktemp("pair")
    for name, seed in (("alpha", 0), ("beta", 1)):
        args = ["-q", "train", "examples/configuration/train-tiny.toml", "--set", f'output="{root / name}"']
        assert main([*args, "--set", f"seed={seed}"]) == 0
        _analyze(root / name / "sae", root / "docs.sqlite", root / "analysis")
    return root


def _eval(root, *args: str) -> int:
    return main(["-q", "eval", "--sae", str(root / "alpha" / "sae"), *args])


def test_flags_that_do_not_fit_are_refused_before_any_work(pair, capsys, tmp_path):
    docs = str(pair / "docs.sqlite")
    cases = [
        (["--suite", "core", "--sae-id", "alpha"], 2, "--sae-id needs --documents"),
        (["--suite", "core", "--documents", docs], 2, "--documents needs --sae-id"),
        (["--suite", "core", "--compare-id", "beta"], 2, "--compare-id names the compared SAE in the store"),
        (["--documents", docs, "--sae-id", "alpha"], 2, "add --suite"),
        (["--suite", "core", "--documents", docs, "--sae-id", " "], 2, "--sae-id is empty"),
        (["--suite", "synthetic", "--documents", docs, "--sae-id", "alpha"], 2, "evaluates no SAE of the store"),
        (["--suite", "core", "--documents", docs, "--sae-id", "ghost"], 1, "no SAE 'ghost' in"),
        (["--suite", "core", "--documents", docs, "--sae-id", "alpha", "--compare-id", "beta"], 2, "add universality"),
        (["--suite", "universality", "--documents", docs, "--sae-id", "alpha"], 2, "pass --compare"),
        (
            ["--suite", "universality", "--compare", str(pair / "beta" / "sae"), "--documents", docs]
            + ["--sae-id", "alpha", "--compare-id", "alpha"],
            2,
            "is the evaluated SAE itself",
        ),
        (
            ["--suite", "universality", "--compare", str(pair / "beta" / "sae"), "--documents", docs]
            + ["--sae-id", "alpha", "--compare-id", "gamma"],
            1,
            "--compare-id: no SAE 'gamma'",
        ),
        (
            ["--suite", "core", "--documents", str(tmp_path / "elsewhere.db"), "--sae-id", "alpha"],
            1,
            "analyze it first",
        ),
    ]
    for args, code, message in cases:
        assert _eval(pair, *args) == code, args
        assert message in capsys.readouterr().err, args
    for bad in ("0", "11", "five"):
        with pytest.raises(SystemExit):
            _eval(pair, "--suite", "core", "--documents", docs, "--sae-id", "alpha", "--neighbours", bad)
        assert "--neighbours" in capsys.readouterr().err
    # another SAE's record (its width differs): refused once the SAE is loaded, before the model runs
    other = tmp_path / "other.sqlite"
    shutil.copy(pair / "docs.sqlite", other)
    with open_document_store(other) as store:
        store.put_sae(store.get_sae("alpha").model_copy(update={"d_sae": 999}))
    assert _eval(pair, "--suite", "core", "--documents", str(other), "--sae-id", "alpha") == 2
    assert "has 999 features, the one evaluated 256" in capsys.readouterr().err
    with open_document_store(pair / "docs.sqlite") as store:
        assert store.get_sae("alpha").evals is None  # none of those stored anything
    assert not (pair / "alpha" / "evals.json").exists()


def test_suites_merge_into_the_record_with_neighbours(pair, capsys, tmp_path):
    docs = str(pair / "docs.sqlite")
    assert _eval(pair, "--suite", "core", "--documents", docs, "--sae-id", "alpha") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["core"]["kl_divergence"] >= 0 and "evals stored with SAE 'alpha'" in err
    with open_document_store(docs) as store:
        core = store.get_sae("alpha").evals["core"]
    assert core["l0"] <= 8 and core["density"]["counts"]

    beta = str(pair / "beta" / "sae")
    args = ["--suite", "universality", "--compare", beta, "--documents", docs, "--sae-id", "alpha", "--neighbours", "3"]
    assert _eval(pair, *args) == 0
    err = capsys.readouterr().err
    assert "decoder alpha neighbours on 256 features" in err and "activation alpha->beta neighbours on" in err
    with open_document_store(docs) as store:
        evals = store.get_sae("alpha").evals
        assert evals["core"] == core  # the first run's suite stays
        universality = evals["universality"]
        assert evals["compared_id"] == "beta" and evals["compared_with"] == beta  # beta: its run folder's name
        assert universality["features_a"] == universality["features_b"] == 256
        assert store.get_sae("beta").evals is None  # the compared SAE's record is not the report's
        features, _ = store.list_features("alpha", limit=256, fields=["neighbours"])
        partnered = 0
        for f in features:
            decoder = [n for n in f.neighbours if n.kind == "decoder"]
            across = [n for n in f.neighbours if n.kind == "activation"]
            assert len(decoder) == 3 and {n.sae_id for n in decoder} == {"alpha"}
            assert f.index not in {n.index for n in decoder}
            assert len(across) <= 3 and {n.sae_id for n in across} <= {"beta"}
            assert all(n.similarity > 0 for n in across)  # no arbitrary partners of dead features
            for group in (decoder, across):
                assert [n.similarity for n in group] == sorted((n.similarity for n in group), reverse=True)
            partnered += bool(across)
        assert 0 < partnered <= universality["alive_a"]
        back, _ = store.list_features("beta", limit=256, fields=["neighbours"])
        assert any(n.kind == "activation" and n.sae_id == "alpha" for f in back for n in f.neighbours)
        assert all(n.sae_id == "beta" for f in back for n in f.neighbours if n.kind == "decoder")

    # evals.json beside the SAE holds both suites too, and a new store's analysis picks it up
    beside = json.loads((pair / "alpha" / "evals.json").read_text())
    assert beside["core"] == core and beside["universality"] == universality
    _analyze(pair / "alpha" / "sae", tmp_path / "fresh.sqlite", tmp_path / "analysis")
    with open_document_store(tmp_path / "fresh.sqlite") as fresh:
        assert fresh.get_sae("alpha").evals["universality"] == universality
    # re-analysis into the first store keeps what was stored there
    _analyze(pair / "alpha" / "sae", docs, tmp_path / "again")
    with open_document_store(docs) as store:
        assert store.get_sae("alpha").evals["core"] == core
