"""End to end on the real SmolLM2-135M with a small token budget, cross-checked in SAELens."""

import json
import subprocess

import pytest
import safetensors.torch

from lm_saes.data.packing import load_token_splits
from lm_saes.interop import export_saelens
from lm_saes.models.smollm2 import smollm2_checkpoint
from tests.integration.conftest import REPO

pytestmark = pytest.mark.slow


def test_trains_a_useful_sae_on_smollm2(smollm2_run):
    cfg, run = smollm2_run
    metrics = run.metrics
    assert metrics.l0 <= 16 and metrics.tokens >= 1_400
    assert metrics.explained_variance > 0.4
    assert metrics.ce_loss_recovered > 0.4 and metrics.delta_lm_loss > 0
    assert metrics.ce_loss_zero_ablation > metrics.ce_loss_with_sae > metrics.ce_loss_clean
    mean_norm = 576**0.5 / run.sae.spec.input_scale  # the dataset-wide scale stored with the SAE
    assert 50 < mean_norm < 250


@pytest.mark.saelens
def test_saelens_recomputes_the_same_metrics(smollm2_run, saelens_python, tmp_path):
    cfg, run = smollm2_run
    export_saelens(run.sae, tmp_path / "sl")
    from lm_saes.models import load_language_model

    tokenizer = load_language_model(cfg.model).tokenizer
    splits = load_token_splits(cfg.data, tokenizer)
    safetensors.torch.save_file({"tokens": splits.eval.contiguous()}, tmp_path / "tokens.safetensors")
    result = subprocess.run(
        [
            str(saelens_python),
            str(REPO / "scripts" / "saelens_eval.py"),
            "--sae",
            str(tmp_path / "sl"),
            "--model-dir",
            str(smollm2_checkpoint()),
            "--tokens",
            str(tmp_path / "tokens.safetensors"),
            "--hook",
            cfg.sae.hook_in,
            "--bos",
            str(tokenizer.bos_token_id),
            "--out",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    theirs = json.loads((tmp_path / "r.json").read_text())
    ours = run.metrics.model_dump()
    assert theirs["tokens"] == ours["tokens"]
    for key in ("explained_variance", "ce_loss_recovered", "ce_loss_with_sae", "l0"):
        assert theirs[key] == pytest.approx(ours[key], rel=0.01), key
