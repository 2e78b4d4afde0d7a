"""The committed gRPC stubs are exactly what `make proto` generates from protos/."""

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "lm_saes" / "proto"

pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) generates the stubs")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_committed_stubs_match_the_protos(tmp_path):
    result = subprocess.run([sys.executable, "scripts/gen_protos.py", "--out", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    fresh, committed = _files(tmp_path), _files(COMMITTED)
    assert fresh == committed, f"missing: {sorted(fresh - committed)}, stale: {sorted(committed - fresh)}"
    differ = [name for name in sorted(fresh) if not filecmp.cmp(tmp_path / name, COMMITTED / name, shallow=False)]
    assert not differ, f"stubs out of date with protos/: {differ}; run `make proto`"


def test_stubs_import_inside_the_package():
    from lm_saes.proto.lm_saes.v1 import (
        activation_pb2,
        analysis_pb2_grpc,
        common_pb2,
        training_pb2_grpc,
    )

    assert activation_pb2.DESCRIPTOR.package == "lm_saes.v1"
    assert {"ActivationService"} == set(activation_pb2.DESCRIPTOR.services_by_name)
    assert hasattr(training_pb2_grpc, "TrainingServiceStub") and hasattr(analysis_pb2_grpc, "AnalysisServiceStub")
    assert common_pb2.JobState.Name(common_pb2.JOB_STATE_CANCELLED) == "JOB_STATE_CANCELLED"
