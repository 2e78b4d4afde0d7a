"""`lm-saes analyze` and `show` end to end on the tiny model, into SQLite and MongoDB."""

import uuid

import pytest

from lm_saes.analysis import run_analysis
from lm_saes.cli import main
from lm_saes.config import AnalyzeConfig, load_config
from lm_saes.stores.documents import open_document_store

TINY_ANALYZE = "examples/configuration/analyze-tiny.toml"


@pytest.fixture(scope="module")
def tiny_sae(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert main(["-q", "train", "examples/configuration/train-tiny.toml", "--set", f'output="{out}/run"']) == 0
    return out / "run" / "sae"


def _cfg(tmp_path, documents):
    return load_config(TINY_ANALYZE, AnalyzeConfig, {"output": str(tmp_path / "analysis"), "documents": documents})


def test_analyze_show_and_query_sqlite(tiny_sae, tmp_path, capsys):
    docs = str(tmp_path / "docs.sqlite")
    code = main(
        [
            "-q",
            "analyze",
            TINY_ANALYZE,
            "--sae",
            str(tiny_sae),
            "--set",
            f'documents="{docs}"',
            "--set",
            f'output="{tmp_path / "analysis"}"',
            "--show",
            "2",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "analyzed 256 features of run" in out and "top activating contexts" in out
    with open_document_store(docs) as store:
        sae = store.get_sae("run")
        assert sae.architecture == "topk" and sae.metrics["l0"] <= 8
        page, total = store.list_features("run", sort="density", descending=True, limit=5)
        assert total == 256 and page[0].density >= page[-1].density
        feature = store.get_feature("run", page[0].index)
        assert feature.top_examples and feature.logit_lens["top"]
        token = feature.top_tokens[0]["token"]
        assert page[0].index in [f.index for f in store.features_for_token("run", token, limit=300)]
        (analysis,) = store.list_analyses("run")
        assert analysis.state == "succeeded" and analysis.tokens > 5000
    assert main(["show", "--sae-id", "run", "--feature", str(page[0].index), "--documents", docs]) == 0
    assert f"feature {page[0].index} of run" in capsys.readouterr().out
    assert main(["show", "--sae-id", "nope", "--feature", "1", "--documents", docs]) == 1
    assert "no SAE 'nope' (known: run)" in capsys.readouterr().err


def test_interrupted_analysis_resumes_to_the_same_result(tiny_sae, tmp_path):
    straight = _cfg(tmp_path / "a", str(tmp_path / "a.sqlite"))
    run_analysis(straight, str(tiny_sae), progress=False)
    resumed = _cfg(tmp_path / "b", str(tmp_path / "b.sqlite"))
    with pytest.raises(InterruptedError):
        run_analysis(resumed, str(tiny_sae), progress=False, stop_after_batches=3)
    with open_document_store(str(tmp_path / "b.sqlite")) as store:
        assert store.list_features("run")[1] == 0  # nothing visible before the pass completes
        assert store.list_analyses("run")[0].state == "running"
    run_analysis(resumed, str(tiny_sae), progress=False)
    with open_document_store(str(tmp_path / "a.sqlite")) as a, open_document_store(str(tmp_path / "b.sqlite")) as b:
        for index in (0, 17, 200):
            fa, fb = a.get_feature("run", index), b.get_feature("run", index)
            for key in ("density", "max_activation", "histogram", "top_examples", "quantile_samples"):
                assert getattr(fa, key) == getattr(fb, key), key


def test_analyze_into_mongodb(tiny_sae, tmp_path, mongodb_uri):
    uri = f"{mongodb_uri}/analysis_{uuid.uuid4().hex[:8]}"
    result = run_analysis(_cfg(tmp_path, uri), str(tiny_sae), progress=False)
    assert result.features_written == 256
    with open_document_store(uri) as store:
        page, total = store.list_features("run", sort="max_activation", descending=True, limit=3)
        assert total == 256 and page[0].max_activation >= page[1].max_activation
        assert store.get_feature("run", page[0].index).top_examples
