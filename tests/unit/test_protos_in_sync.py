"""The committed gRPC stubs are exactly what `make proto` generates from protos/."""

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "lm_saes" / "rpc" / "v1"

pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) generates the stubs")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_committed_stubs_match_the_protos(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    fresh, committed = _files(tmp_path), _files(COMMITTED)
    assert fresh == committed, f"missing: {sorted(fresh - committed)}, stale: {sorted(committed - fresh)}"
    differ = [name for name in sorted(fresh) if not filecmp.cmp(tmp_path / name, COMMITTED / name, shallow=False)]
    assert not differ, f"stubs out of date with protos/: {differ}; run `make proto`"


def test_stubs_import_inside_the_package():
    from lm_saes.rpc.v1 import (
        activation_pb2,
        analysis_pb2_grpc,
        common_pb2,
        training_pb2_grpc,
    )

    assert activation_pb2.DESCRIPTOR.package == "lm_saes.v1"
    assert {"ActivationService"} == set(activation_pb2.DESCRIPTOR.services_by_name)
    assert hasattr(training_pb2_grpc, "TrainingServiceStub") and hasattr(analysis_pb2_grpc, "AnalysisServiceStub")
    assert common_pb2.JobState.Name(common_pb2.JOB_STATE_CANCELLED) == "JOB_STATE_CANCELLED"


def test_every_job_rpc_lives_in_the_one_job_service():
    """Get/List/Watch/Cancel are common.proto's JobService; no service declares its own."""
    from lm_saes.rpc.v1 import activation_pb2, analysis_pb2, circuits_pb2, common_pb2, training_pb2

    jobs = common_pb2.DESCRIPTOR.services_by_name["JobService"]
    assert [m.name for m in jobs.methods] == ["Get", "List", "Watch", "Cancel"]
    for module in (activation_pb2, analysis_pb2, circuits_pb2, training_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            job_like = [
                m.name for m in service.methods if m.output_type.name in ("Job", "ProgressEvent", "ListJobsResponse")
            ]
            # only submissions return a Job (Submit, SubmitAutointerp, GenerateActivations)
            submissions = all(name.startswith("Submit") or name == "GenerateActivations" for name in job_like)
            assert submissions, (service.name, job_like)
