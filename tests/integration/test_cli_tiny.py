"""The whole CLI pipeline on the tiny random model: train, resume, eval, export, import."""

import json
import re
from pathlib import Path

import pytest
import torch

from lm_saes.cli import main
from lm_saes.saes import load_sae

TINY = "examples/configuration/train-tiny.toml"


def _train(tmp_path, *sets, config=TINY):
    return main(
        ["-q", "train", str(config), "--set", f'output="{tmp_path / "run"}"', *sum((["--set", s] for s in sets), [])]
    )


def _tiny_without_k(tmp_path):
    """train-tiny.toml for an architecture outside the TopK family (`k` there is an error)."""
    path = tmp_path / "tiny.toml"
    path.write_text(re.sub(r"(?m)^k = .*\n", "", Path(TINY).read_text()))
    return path


def test_train_eval_export_import(tmp_path, capsys):
    assert _train(tmp_path) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["eval"]["l0"] <= 8 and summary["eval"]["explained_variance"] > 0.2
    run = tmp_path / "run"
    assert (run / "activations" / "manifest.json").is_file() and (run / "metrics.jsonl").is_file()

    assert main(["-q", "eval", "--sae", str(run / "sae"), "--out", str(tmp_path / "e.json")]) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["explained_variance"] == pytest.approx(summary["eval"]["explained_variance"], rel=1e-6)

    assert main(["export", "--sae", str(run / "sae"), "--format", "saelens", "--out", str(tmp_path / "sl")]) == 0
    assert main(["import", str(tmp_path / "sl"), "--out", str(tmp_path / "back")]) == 0
    x = torch.randn(16, 64)
    torch.testing.assert_close(load_sae(str(tmp_path / "back"))(x), load_sae(str(run / "sae"))(x), atol=1e-5, rtol=1e-5)


def test_rerun_reuses_activations_and_resumes_checkpoint(tmp_path, capsys):
    assert _train(tmp_path, "train.checkpoint_every=10") == 0
    manifest = (tmp_path / "run" / "activations" / "manifest.json").read_text()
    assert _train(tmp_path, "train.checkpoint_every=10") == 0
    assert (tmp_path / "run" / "activations" / "manifest.json").read_text() == manifest


@pytest.mark.parametrize(
    "has_k,overrides",
    [
        (True, ["activations.store=false"]),
        (
            False,
            [
                "activations.hooks=['blocks.0.ln2.hook_normalized', 'blocks.0.hook_mlp_out']",
                "sae.hook_in='blocks.0.ln2.hook_normalized'",
                "sae.hook_out='blocks.0.hook_mlp_out'",
                "sae.architecture='jumprelu'",
            ],
        ),
        (True, ["sae.architecture='batchtopk'"]),
        (False, ["sae.architecture='relu'", "sae.l1_coefficient=0.5"]),
    ],
)
def test_variants_train(tmp_path, capsys, has_k, overrides):
    config = TINY if has_k else _tiny_without_k(tmp_path)
    assert _train(tmp_path, "data.max_tokens=3000", *overrides, config=config) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval"]["tokens"] > 0 and summary["eval"]["ce_loss_clean"] > 0


def test_checkpoints_of_another_sae_are_refused(tmp_path, capsys):
    assert _train(tmp_path, "train.checkpoint_every=5") == 0
    assert _train(tmp_path, "train.checkpoint_every=5", "sae.d_sae=128") == 1
    assert "holds checkpoints of a different SAE (sae.d_sae differ)" in capsys.readouterr().err


def test_bad_config_stops_before_work_with_field_and_fix(tmp_path, capsys):
    assert _train(tmp_path, "train.batch_sise=12") == 2
    err = capsys.readouterr().err
    assert "train.batch_sise: unknown field; did you mean 'batch_size'?" in err
    assert not (tmp_path / "run").exists()
    assert _train(tmp_path, "activations.hooks=['blocks.9.hook_resid_post']") == 1
    assert "has no hook 'blocks.9.hook_resid_post'" in capsys.readouterr().err
    assert main(["eval", "--sae", str(tmp_path / "nothing")]) == 1
    assert "no SAE at" in capsys.readouterr().err
