#!/usr/bin/env python3
"""Run an SAE through SAELens's own loader and write its outputs.

Runs INSIDE the SAELens venv (see scripts/make_saelens_venv.sh), e.g.

    .venv-saelens/bin/python scripts/saelens_check.py \
        --sae DIR --inputs X.safetensors --out OUT.safetensors

DIR is a SAELens 6.x disk directory (cfg.json + sae_weights.safetensors, see
scripts/SAELENS_FORMAT.md). X.safetensors holds a tensor ``x`` of shape
[N, d_in]. OUT.safetensors receives float32 tensors:

    feature_acts = sae.encode(x)             [N, d_sae]
    recon        = sae.decode(feature_acts)  [N, d_in] (d_out for transcoders)
    forward      = sae(x)                    [N, d_in] (d_out for transcoders)

Exit status: 0 on success, 2 on bad arguments / missing files, 1 on any other
failure (loading, shape mismatch, ...). Errors go to stderr prefixed with
"saelens_check:".
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import NoReturn


def _fail(msg: str, code: int = 1) -> NoReturn:
    print(f"saelens_check: error: {msg}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sae", required=True, help="SAELens SAE directory (cfg.json + sae_weights.safetensors)")
    p.add_argument("--inputs", required=True, help="safetensors file with tensor 'x' [N, d_in]")
    p.add_argument("--out", required=True, help="output safetensors file")
    p.add_argument("--device", default="cpu", help="device passed to SAE.load_from_disk (default cpu)")
    p.add_argument(
        "--dtype",
        default=None,
        help="dtype override passed to SAE.load_from_disk (e.g. float32); default: cfg.json's dtype",
    )
    args = p.parse_args(argv)

    if not os.path.isdir(args.sae):
        _fail(f"--sae {args.sae!r} is not a directory", 2)
    for name in ("cfg.json", "sae_weights.safetensors"):
        if not os.path.isfile(os.path.join(args.sae, name)):
            _fail(f"--sae {args.sae!r} has no {name}", 2)
    if not os.path.isfile(args.inputs):
        _fail(f"--inputs {args.inputs!r} does not exist", 2)

    try:
        try:
            import sae_lens
            import torch
            from sae_lens import SAE
            from safetensors.torch import load_file, save_file
        except ImportError as e:
            _fail(
                f"cannot import sae_lens ({e}); run this script with the SAELens venv's python "
                "(scripts/make_saelens_venv.sh creates .venv-saelens)"
            )

        inputs = load_file(args.inputs)
        if "x" not in inputs:
            _fail(f"{args.inputs!r} has no tensor named 'x' (found: {sorted(inputs)})")
        x = inputs["x"]
        if x.ndim != 2:
            _fail(f"'x' must be 2-D [N, d_in], got shape {tuple(x.shape)}")

        sae = SAE.load_from_disk(args.sae, device=args.device, dtype=args.dtype)
        sae.eval()
        if x.shape[1] != sae.cfg.d_in:
            _fail(f"'x' has d_in={x.shape[1]} but the SAE has d_in={sae.cfg.d_in}")
        x = x.to(args.device)

        with torch.no_grad():
            feature_acts = sae.encode(x)
            if feature_acts.is_sparse:
                feature_acts = feature_acts.to_dense()
            recon = sae.decode(feature_acts)
            forward = sae(x)

        out = {
            "feature_acts": feature_acts,
            "recon": recon,
            "forward": forward,
        }
        out = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}
        out_dir = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(out_dir, exist_ok=True)
        save_file(
            out,
            args.out,
            metadata={
                "sae_lens_version": str(sae_lens.__version__),
                "architecture": sae.cfg.architecture(),
                "sae_class": type(sae).__name__,
            },
        )
        print(
            f"saelens_check: {type(sae).__name__} ({sae.cfg.architecture()}, sae_lens "
            f"{sae_lens.__version__}) x{tuple(x.shape)} -> feature_acts{tuple(out['feature_acts'].shape)} "
            f"l0={float((out['feature_acts'] != 0).float().sum(-1).mean()):.2f} -> {args.out}"
        )
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        _fail(f"{type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
