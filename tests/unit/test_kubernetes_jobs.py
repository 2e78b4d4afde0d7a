"""Kubernetes Jobs for training: valid manifests for 1.29 and 1.33, and status mapping."""

import kubernetes_validate
import pytest

from lm_saes.config import ConfigError
from lm_saes.jobs import new_job
from lm_saes.jobs.kubernetes import (
    KubernetesExecutor,
    KubernetesSettings,
    job_manifests,
    k8s_name,
    state_from_status,
)
from lm_saes.stores.documents import open_document_store

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


def test_several_processes_per_worker_run_torchrun_over_workers_times_procs():
    job = new_job("training", {}, request_id="r")
    manifest, _ = job_manifests(job, GPU.model_copy(update={"workers": 2, "procs_per_worker": 4, "gpus_per_worker": 4}))
    command = manifest["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["torchrun", "--nnodes=2", "--nproc-per-node=4"]
    assert manifest["spec"]["completions"] == 2
    (single_pod, _) = job_manifests(job, GPU.model_copy(update={"procs_per_worker": 2}))
    assert single_pod["spec"]["completionMode"] == "Indexed"  # one pod, two ranks: torchrun too


class _FakeApi:
    def __init__(self):
        self.created: list[dict] = []

    def create_namespaced_job(self, namespace, manifest):
        self.created.append(manifest)

    def create_namespaced_service(self, namespace, manifest):
        self.created.append(manifest)


def _executor(tmp_path, settings: KubernetesSettings) -> KubernetesExecutor:
    """The executor without a cluster (the kubernetes client is not needed to submit)."""
    import threading

    executor = object.__new__(KubernetesExecutor)
    api = _FakeApi()
    executor.batch = executor.core = api
    executor.documents = open_document_store(tmp_path / "docs.sqlite")
    executor.settings, executor.kinds, executor.lock, executor.closed = settings, ("training",), threading.Lock(), False
    return executor


def test_feature_shards_that_do_not_divide_the_world_are_refused_before_any_job(tmp_path):
    executor = _executor(tmp_path, GPU.model_copy(update={"workers": 2, "procs_per_worker": 2}))  # 4 ranks
    config = {"sae": {"d_sae": 96}, "train": {"feature_shards": 3, "batch_size": 96}}
    with pytest.raises(ConfigError, match="train.feature_shards = 3 must divide the world size 4"):
        executor.submit("training", config, request_id="bad")
    assert executor.batch.created == [] and executor.documents.list_jobs("training") == []
    with pytest.raises(ConfigError, match="train.batch_size = 5 must divide evenly over the 2 data-parallel"):
        executor.submit("training", {**config, "train": {"feature_shards": 2, "batch_size": 5}}, request_id="odd")
    assert executor.batch.created == []
    job = executor.submit("training", {**config, "train": {"feature_shards": 2}}, request_id="ok")  # 2 dp x 2 fs
    assert [m["kind"] for m in executor.batch.created] == ["Job", "Service"]
    assert executor.documents.list_jobs("training") == [job]


def test_the_job_service_answers_a_refused_config_as_an_invalid_argument(tmp_path):
    import grpc

    from lm_saes.auth import Principal
    from services.common.auth import _CALLER
    from services.common.errors import RequestError
    from services.common.job_servicer import submit_job

    executor = _executor(tmp_path, GPU.model_copy(update={"workers": 3}))
    token = _CALLER.set(Principal("alice", frozenset({"train"})))
    try:
        with pytest.raises(RequestError, match="feature_shards = 2 must divide the world size 3") as refused:
            submit_job(executor, "training", {"sae": {"d_sae": 64}, "train": {"feature_shards": 2}}, "r")
    finally:
        _CALLER.reset(token)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
