"""Kubernetes Jobs for training: valid manifests for 1.29 and 1.33, and status mapping."""

import kubernetes_validate
import pytest

from lm_saes.jobs import new_job
from lm_saes.jobs.kubernetes import KubernetesSettings, job_manifests, k8s_name, state_from_status

GPU = KubernetesSettings(
    image="registry.example/lm-saes/training:0.1.0",
    gpus_per_worker=1,
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    runtime_class_name="nvidia",
    model_cache_claim="lm-saes-model-cache",
    env_secret="lm-saes-services",
)


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("version", ["1.29.0", "1.33.0"])
def test_job_manifests_validate_strictly(workers, version):
    job = new_job("training", {"output": "s3://b/run"}, request_id="r")
    for manifest in job_manifests(job, GPU.model_copy(update={"workers": workers})):
        kubernetes_validate.validate(manifest, version, strict=True)


def test_single_worker_job_requests_gpus_and_runs_the_worker():
    job = new_job("training", {}, request_id="r")
    (manifest,) = job_manifests(job, GPU)
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "lm_saes.jobs.worker", "--job", job.id]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["runtimeClassName"] == "nvidia" and pod["nodeSelector"] and pod["tolerations"]
    assert container["securityContext"]["runAsNonRoot"] and not container["securityContext"]["allowPrivilegeEscalation"]
    assert container["envFrom"] == [{"secretRef": {"name": "lm-saes-services"}}]  # credentials never literal
    assert "completionMode" not in manifest["spec"]


def test_several_workers_make_an_indexed_job_running_torchrun():
    job = new_job("training", {}, request_id="r")
    manifest, service = job_manifests(job, GPU.model_copy(update={"workers": 4}))
    spec = manifest["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    command = spec["template"]["spec"]["containers"][0]["command"]
    name = k8s_name(job.id)
    assert command[:2] == ["torchrun", "--nnodes=4"] and f"--master-addr={name}-0.{name}" in command
    assert spec["template"]["spec"]["subdomain"] == name
    assert service["spec"]["clusterIP"] == "None" and service["metadata"]["name"] == name


def test_status_mapping():
    assert state_from_status(None, 1) == "queued"
    assert state_from_status({"active": 1}, 1) == "running"
    assert state_from_status({"succeeded": 3, "active": 1}, 4) == "running"
    assert state_from_status({"succeeded": 4}, 4) == "succeeded"
    assert state_from_status({"conditions": [{"type": "Failed", "status": "True"}]}, 1) == "failed"
    assert state_from_status({"conditions": [{"type": "Complete", "status": "True"}]}, 1) == "succeeded"
