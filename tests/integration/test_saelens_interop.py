"""Exported SAEs load in SAELens (its own venv) and give the same encode/decode outputs."""

import subprocess

import pytest
import safetensors.torch
import torch

from lm_saes.interop import export_saelens
from lm_saes.saes import build_sae, parse_spec
from tests.integration.conftest import REPO


@pytest.mark.saelens
@pytest.mark.parametrize(
    "arch,d_out", [("topk", 24), ("batchtopk", 24), ("jumprelu", 24), ("relu", 24), ("relu", 20), ("jumprelu", 20)]
)
def test_export_loads_in_saelens_with_identical_outputs(tmp_path, saelens_python, arch, d_out):
    knobs = {"jumprelu": {"jumprelu_init_threshold": 0.4}, "relu": {}}.get(arch, {"k": 5})
    spec = parse_spec(
        {
            "architecture": arch,
            "hook_in": "blocks.1.hook_resid_post",
            "hook_out": "blocks.1.hook_resid_post" if d_out == 24 else "blocks.1.hook_mlp_out",
            "d_in": 24,
            "d_out": d_out,
            "d_sae": 96,
            "seed": 3,
            **knobs,
        }
    )
    sae = build_sae(spec)
    sae.set_scales(0.37, 1.9 if spec.is_transcoder else 0.37)  # an SAE has one scale
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_()
    if arch == "batchtopk":
        sae.threshold.fill_(0.25)
    sae.eval()
    x = torch.randn(64, 24, generator=torch.Generator().manual_seed(0))
    export_saelens(sae, tmp_path / "sl")
    safetensors.torch.save_file({"x": x}, tmp_path / "x.safetensors")
    result = subprocess.run(
        [
            str(saelens_python),
            str(REPO / "scripts" / "saelens_check.py"),
            "--sae",
            str(tmp_path / "sl"),
            "--inputs",
            str(tmp_path / "x.safetensors"),
            "--out",
            str(tmp_path / "out.safetensors"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    theirs = safetensors.torch.load_file(tmp_path / "out.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(theirs["feature_acts"], sae.encode(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(theirs["forward"], sae(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(theirs["recon"], sae.decode(sae.encode(x)), atol=1e-5, rtol=0)
