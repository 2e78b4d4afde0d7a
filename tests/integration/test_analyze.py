"""`lm-saes analyze` and `show` end to end on the tiny model, into SQLite and MongoDB."""

import uuid

import pytest
import torch

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


def test_analysis_from_stored_activations_equals_the_forward_pass(tiny_sae, tmp_path):
    """Same contexts, read from an activation store instead of run through the model."""
    import json

    from lm_saes.activations import generate_activations
    from lm_saes.config import ModelConfig
    from lm_saes.data.packing import load_token_splits
    from lm_saes.models import load_language_model
    from lm_saes.saes import load_sae
    from lm_saes.stores import LocalObjectStore

    forward = _cfg(tmp_path / "f", str(tmp_path / "f.sqlite"))
    run_analysis(forward, str(tiny_sae), progress=False)
    sae = load_sae(str(tiny_sae))
    model = load_language_model(ModelConfig(name=sae.spec.model))
    splits = load_token_splits(forward.data, model.tokenizer)
    contexts = torch.cat([splits.train, splits.eval])
    acts = LocalObjectStore(tmp_path / "acts")
    # other batch and shard sizes than the analysis pass: rows cross shard boundaries mid-batch
    generate_activations(model, contexts, [sae.spec.input_hook], acts, batch_contexts=5, shard_tokens=777)
    stored = _cfg(tmp_path / "s", str(tmp_path / "s.sqlite")).model_copy(update={"activations": str(tmp_path / "acts")})
    run_analysis(stored, str(tiny_sae), progress=False)
    with open_document_store(str(tmp_path / "f.sqlite")) as f, open_document_store(str(tmp_path / "s.sqlite")) as s:
        assert f.list_features("run")[1] == s.list_features("run")[1] == 256
        for index in range(0, 256, 15):
            a, b = f.get_feature("run", index), s.get_feature("run", index)
            assert a.density == b.density and a.histogram["counts"] == b.histogram["counts"]
            assert a.max_activation == pytest.approx(b.max_activation, rel=1e-5, abs=1e-6)
            assert [e["token_ids"] for e in a.top_examples] == [e["token_ids"] for e in b.top_examples]
            for ea, eb in zip(a.top_examples, b.top_examples, strict=True):
                assert ea["activations"] == pytest.approx(eb["activations"], rel=1e-5, abs=1e-6)
    # a store from before contexts were recorded, or of another hook, is refused by name
    manifest = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.json").write_text(json.dumps({**manifest, "contexts": None}))
    with pytest.raises(ValueError, match="activations = .* recorded their contexts"):
        run_analysis(stored.model_copy(update={"activations": str(tmp_path / "old")}), str(tiny_sae), progress=False)
    (tmp_path / "other").mkdir()
    other_hook = {**manifest, "hooks": {"blocks.1.hook_resid_post": manifest["hooks"][sae.spec.input_hook]}}
    (tmp_path / "other" / "manifest.json").write_text(json.dumps(other_hook))
    with pytest.raises(ValueError, match="this SAE reads"):
        run_analysis(stored.model_copy(update={"activations": str(tmp_path / "other")}), str(tiny_sae), progress=False)
