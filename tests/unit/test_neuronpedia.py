"""The Neuronpedia export: every row a row of Neuronpedia's tables, with our values in them."""

import gzip
import json

import pytest

from lm_saes.interop.neuronpedia import export_neuronpedia, source_id
from lm_saes.records import SaeRecord
from lm_saes.stores.documents import SQLiteDocumentStore

# Columns of Neuronpedia's Prisma models (apps/webapp/prisma/schema.prisma): what each row may
# hold, and what the table requires (non-optional, no default).
NEURON = {
    "modelId",
    "layer",
    "index",
    "maxActApprox",
    "frac_nonzero",
    "pos_str",
    "pos_values",
    "neg_str",
    "neg_values",
    "freq_hist_data_bar_values",
    "freq_hist_data_bar_heights",
    "hookName",
}
NEURON_REQUIRED = {"modelId", "layer", "index"}
ACTIVATION = {
    "modelId",
    "layer",
    "index",
    "tokens",
    "values",
    "maxValue",
    "maxValueTokenIndex",
    "minValue",
    "dataIndex",
    "binMin",
    "binMax",
    "binContains",
}
ACTIVATION_REQUIRED = {"modelId", "layer", "index", "tokens", "values", "maxValue", "maxValueTokenIndex", "minValue"}
EXPLANATION = {
    "modelId",
    "layer",
    "index",
    "description",
    "explanationModelName",
    "typeName",
    "authorId",
    "createdAt",
    "scores",
}
EXPLANATION_REQUIRED = {"modelId", "layer", "index", "description", "authorId"}
SCORE = {"value", "explanationScoreTypeName", "explanationScoreModelName", "jsonDetails"}


def rows(path):
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def feature(index, explained=False):
    example = {
        "context": 40 + index,
        "token_ids": [1, 2, 3],
        "tokens": [" a", " b", " c"],
        "activations": [0.0, 2.5, 1.0],
        "max_activation": 2.5,
    }
    doc = {
        "sae_id": "s",
        "index": index,
        "density": 0.01 * (index + 1),
        "max_activation": 2.5 + index,
        "histogram": {"edges": [0.0, 1.0, 2.0, float("inf")], "counts": [0, 3, 2], "zero": 90},
        "top_examples": [example],
        "quantile_samples": [
            {"interval": [0.0, 1.0], "examples": [example, example]},
            {"interval": [1.0, 2.5], "examples": [example]},
        ],
        "logit_lens": {
            "top": [{"token": " up", "token_id": 5, "value": 0.5}],
            "bottom": [{"token": " down", "token_id": 6, "value": -0.4}],
        },
    }
    if explained:
        doc["explanation"] = {
            "text": "letters a to c",
            "model": "smollm2",
            "prompt_version": "lm-saes-1",
            "created": "2026-12-02T00:00:00+00:00",
            "scores": {"detection": {"value": 0.75, "examples": 20, "positives": 10, "failed": 0}},
        }
    return doc


def test_export_holds_neuronpedia_rows_with_our_values(tmp_path):
    store = SQLiteDocumentStore(tmp_path / "d.sqlite")
    store.put_sae(
        SaeRecord(
            id="s",
            model="smollm2-135m",
            hook_in="blocks.6.hook_resid_post",
            hook_out="blocks.6.hook_resid_post",
            d_sae=3,
        )
    )
    store.put_features([feature(0, explained=True), feature(1), feature(2)])
    folder = export_neuronpedia(store, "s", tmp_path / "out", batch=2)
    assert folder == tmp_path / "out" / "smollm2-135m" / "6-res-lmsaes"
    source = json.loads((folder / "source.jsonl").read_text())
    assert source == {
        "id": "6-res-lmsaes",
        "modelId": "smollm2-135m",
        "setName": "res-lmsaes",
        "hookName": "blocks.6.hook_resid_post",
    }
    neurons = rows(folder / "features/batch-0.jsonl.gz") + rows(folder / "features/batch-1.jsonl.gz")
    assert [n["index"] for n in neurons] == ["0", "1", "2"]
    for n in neurons:
        assert NEURON_REQUIRED <= set(n) <= NEURON and n["modelId"] == "smollm2-135m" and n["layer"] == "6-res-lmsaes"
    assert neurons[1]["frac_nonzero"] == 0.02 and neurons[1]["maxActApprox"] == 3.5
    assert neurons[0]["pos_str"] == [" up"] and neurons[0]["neg_values"] == [-0.4]
    assert neurons[0]["freq_hist_data_bar_values"] == [1.5, 2.0] and neurons[0]["freq_hist_data_bar_heights"] == [3, 2]
    acts = rows(folder / "activations/batch-0.jsonl.gz")
    assert len(acts) == 2 * 4  # two features, one top and three quantile contexts each
    for a in acts:
        assert ACTIVATION_REQUIRED <= set(a) <= ACTIVATION
        assert len(a["tokens"]) == len(a["values"]) and a["maxValue"] == max(a["values"]) == 2.5
        assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] and a["minValue"] == 0.0
    assert acts[0]["binMin"] is None and acts[1]["binMin"] == 0.0 and acts[3]["binMax"] == 2.5
    assert acts[1]["binContains"] == pytest.approx(2 / 3) and acts[0]["dataIndex"] == "40"
    explanations = rows(folder / "explanations/batch-0.jsonl.gz")
    assert rows(folder / "explanations/batch-1.jsonl.gz") == []
    (e,) = explanations
    assert EXPLANATION_REQUIRED <= set(e) <= EXPLANATION and e["description"] == "letters a to c"
    assert e["index"] == "0" and e["explanationModelName"] == "smollm2" and e["typeName"] == "lm-saes-1"
    (score,) = e["scores"]
    assert set(score) == SCORE and score["value"] == 0.75 and score["explanationScoreTypeName"] == "detection"
    assert json.loads(score["jsonDetails"]) == {"examples": 20, "positives": 10, "failed": 0}
    assert not list(folder.rglob("*.partial"))
    with pytest.raises(LookupError, match="sae_id"):
        export_neuronpedia(store, "missing", tmp_path / "out")


@pytest.mark.parametrize(
    "hook_in, hook_out, expected",
    [
        ("blocks.6.hook_resid_post", "blocks.6.hook_resid_post", "6-res-lmsaes"),
        ("blocks.12.hook_mlp_out", "blocks.12.hook_mlp_out", "12-mlp-lmsaes"),
        ("blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out", "3-tc-lmsaes"),
    ],
)
def test_source_ids_follow_neuronpedia(hook_in, hook_out, expected):
    assert source_id(SaeRecord(id="x", model="m", hook_in=hook_in, hook_out=hook_out)) == expected
