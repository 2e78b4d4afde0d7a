#!/usr/bin/env bash
# A separate virtual environment holding SAEBench (PyPI sae-bench) for the cross-check of our
# absorption eval (scripts/saebench_absorption.py). Its pins (sae-lens 6, transformer-lens 3)
# clash with ours. torchvision, which its dependencies pull, is removed: no wheel of it matches
# the local CPU torch, and importing a mismatched one breaks transformers' image utilities.
# Idempotent: does nothing if the venv already imports sae_bench.
#
#   SAEBENCH_VENV  venv location (default: .venv-saebench, relative to the repo root)
#   PYTHON         interpreter used to create the venv (default: python3)
set -euo pipefail

SAEBENCH_VERSION="0.6.0"
TORCH_VERSION="2.13.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
venv="${SAEBENCH_VENV:-.venv-saebench}"
py="${PYTHON:-python3}"
check='import importlib.metadata as m; import sae_bench.evals.absorption.main; print(m.version("sae-bench"))'

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "make_saebench_venv: $venv already has sae-bench $("$venv/bin/python" -c "$check"); nothing to do"
    exit 0
fi

start=$(date +%s)
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
vpy="$venv/bin/python"
pip=("$vpy" -m pip install -q --disable-pip-version-check)
# torch first and pinned (the local CPU wheel), repeated so resolving sae-bench cannot swap it.
"${pip[@]}" "torch==${TORCH_VERSION}"
"${pip[@]}" "torch==${TORCH_VERSION}" "sae-bench==${SAEBENCH_VERSION}"
"$vpy" -m pip uninstall -q -y torchvision || true
"$vpy" -c "$check"
echo "make_saebench_venv: done in $(( $(date +%s) - start ))s"
