#!/usr/bin/env bash
# A separate virtual environment holding EleutherAI's delphi (PyPI eai-delphi) for the
# autointerp cross-check (benchmarks/delphi_crosscheck.py). Its requirements include vLLM and
# bitsandbytes (GPU inference), which neither install nor run here and which its scorers do not
# use: delphi goes in with --no-deps, beside what its scorer and latent-record modules import.
# Idempotent: does nothing if the venv already imports delphi's scorers.
#
#   DELPHI_VENV  venv location (default: .venv-delphi, relative to the repo root)
#   PYTHON       interpreter used to create the venv (default: python3)
set -euo pipefail

DELPHI_VERSION="0.1.3"
TORCH_VERSION="2.13.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
venv="${DELPHI_VENV:-.venv-delphi}"
py="${PYTHON:-python3}"
check='import importlib.metadata as m; import delphi, jaxtyping, orjson, blobfile, transformers, httpx; print(m.version("eai-delphi"))'

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "make_delphi_venv: $venv already has eai-delphi $("$venv/bin/python" -c "$check"); nothing to do"
    exit 0
fi

start=$(date +%s)
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
vpy="$venv/bin/python"
pip=("$vpy" -m pip install -q --disable-pip-version-check)
# torch first and pinned (the local CPU wheel), repeated so nothing later can swap it.
"${pip[@]}" "torch==${TORCH_VERSION}"
"${pip[@]}" "torch==${TORCH_VERSION}" transformers jaxtyping orjson blobfile numpy httpx
"${pip[@]}" --no-deps "eai-delphi==${DELPHI_VERSION}"
"$vpy" -c "$check"
echo "make_delphi_venv: done in $(( $(date +%s) - start ))s"
