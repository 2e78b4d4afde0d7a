#!/usr/bin/env bash
# Create a separate virtual environment holding SAELens 6.x (its pins clash with
# the transformer-lens 4.x used by lm-saes). Idempotent: does nothing if the venv
# already imports sae_lens.
#
#   SAELENS_VENV  venv location (default: .venv-saelens, relative to the repo root)
#   PYTHON        interpreter used to create the venv (default: python3)
#
# Scripts meant to run inside it: scripts/saelens_check.py,
# benchmarks/saelens_topk_step.py.
set -euo pipefail

SAE_LENS_VERSION="6.54.12"
TORCH_VERSION="2.13.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
venv="${SAELENS_VENV:-.venv-saelens}"
py="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import sae_lens" >/dev/null 2>&1; then
    echo "make_saelens_venv: $venv already has sae_lens $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("sae-lens"))'); nothing to do"
    exit 0
fi

start=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
vpy="$venv/bin/python"
"$vpy" -m pip install --upgrade pip wheel >/dev/null
# torch first and pinned: pip config points find-links at a local CPU wheel; a
# loose torch requirement could pull a multi-GB CUDA build instead.
"$vpy" -m pip install "torch==${TORCH_VERSION}"
# Repeat the torch pin so resolving sae-lens can never swap torch out.
"$vpy" -m pip install "torch==${TORCH_VERSION}" "sae-lens==${SAE_LENS_VERSION}"
"$vpy" -c "import sae_lens, torch; print('sae_lens', sae_lens.__version__, 'torch', torch.__version__)"
echo "make_saelens_venv: done in $(( $(date +%s) - start ))s"
