"""Kubernetes Jobs for training and sharded jobs: valid manifests for 1.29 and 1.33, status mapping."""

import threading

import kubernetes_validate
import pytest

from lm_saes.config import ConfigError
from lm_saes.jobs import new_job
from lm_saes.jobs.kubernetes import (
    KubernetesExecutor,
    KubernetesSettings,
    indexes,
    job_manifests,
    k8s_name,
    merge_name,
    shard_metrics,
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


def _sharded(kind: str = "analysis", shards: int = 4):
    if kind == "analysis":
        return new_job("analysis", {"sae": "s3://b/run/sae", "analyze": {"shards": shards}}, request_id="r")
    return new_job("activations", {"model": "tiny", "output": "s3://b/acts", "activations": {"shards": shards}})


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0"])
@pytest.mark.parametrize("kind", ["analysis", "activations"])
def test_sharded_jobs_are_indexed_jobs_retrying_each_index_alone(kind, version):
    job = _sharded(kind)
    settings = GPU.model_copy(update={"workers": 4})  # torchrun workers are for training only
    (shards,) = job_manifests(job, settings, shards=4)
    (merge,) = job_manifests(job, settings, shards=4, merge=True)
    for manifest in (shards, merge):
        kubernetes_validate.validate(manifest, version, strict=True)
    spec = shards["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimitPerIndex"] == GPU.backoff_limit and spec["maxFailedIndexes"] == 0
    assert "backoffLimit" not in spec  # the per-index limit is the one that counts
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert command == ["python", "-m", "lm_saes.jobs.worker", "--job", job.id, "--shard", "$(JOB_COMPLETION_INDEX)"]
    assert "subdomain" not in spec["template"]["spec"]  # no rendezvous between shards
    merge_command = merge["spec"]["template"]["spec"]["containers"][0]["command"]
    assert merge_command == ["python", "-m", "lm_saes.jobs.worker", "--job", job.id]
    assert "completionMode" not in merge["spec"] and merge["metadata"]["name"] == merge_name(job.id)
    assert len(merge_name("x" * 80)) <= 63


def test_shard_metrics_from_indexed_job_status():
    assert indexes("0-2,5") == [0, 1, 2, 5] and indexes(None) == []
    metrics = shard_metrics({"completedIndexes": "0,2-3", "failedIndexes": "1", "active": 1}, 4)
    assert metrics["shards_succeeded"] == 3 and metrics["shard.1.progress"] == 0.0 and metrics["shard.1.failed"] == 1
    assert [metrics[f"shard.{i}.progress"] for i in (0, 2, 3)] == [1.0, 1.0, 1.0]


class _Status:
    def __init__(self, status):
        self.status = status

    def to_dict(self):
        return {"status": self.status}


class _FakeBatch:
    """BatchV1Api's calls the executor makes, against a dict of Job statuses."""

    def __init__(self):
        self.jobs: dict[str, dict | None] = {}

    def create_namespaced_job(self, namespace, manifest):
        self.jobs[manifest["metadata"]["name"]] = None

    def read_namespaced_job_status(self, name, namespace):
        if name not in self.jobs:
            raise LookupError(name)
        return _Status(self.jobs[name])


def test_the_executor_follows_the_shards_then_starts_the_merge(tmp_path):
    executor = KubernetesExecutor.__new__(KubernetesExecutor)  # no cluster: the API is faked
    executor.documents = open_document_store(str(tmp_path / "docs.sqlite"))
    executor.settings, executor.kinds, executor.batch = GPU, ("analysis",), _FakeBatch()
    executor.lock = threading.Lock()
    job = executor.submit("analysis", _sharded().config, request_id="r")
    name = k8s_name(job.id)
    assert list(executor.batch.jobs) == [name]
    executor.batch.jobs[name] = {"active": 2, "completedIndexes": "0,3"}
    executor.schedule()
    record = executor.documents.get_job(job.id)
    assert record.state == "running" and record.metrics["shards_succeeded"] == 2
    assert record.metrics["shard.3.progress"] == 1.0 and record.metrics["shard.1.progress"] == 0.0
    assert merge_name(job.id) not in executor.batch.jobs  # not before every shard is done
    executor.batch.jobs[name] = {"succeeded": 4, "completedIndexes": "0-3"}
    executor.schedule()
    assert merge_name(job.id) in executor.batch.jobs
    executor.schedule()  # the merge runs: its worker owns the record
    assert executor.documents.get_job(job.id).state == "running"
    executor.batch.jobs[merge_name(job.id)] = {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}
    executor.schedule()  # a merge pod that died without writing the record
    assert executor.documents.get_job(job.id).state == "failed"
    # another job, one of whose shards ran out of retries: failed, naming the shard, no merge
    other = executor.submit("analysis", _sharded().config, request_id="other")
    failed_status = {"failed": 2, "failedIndexes": "2", "conditions": [{"type": "Failed", "status": "True"}]}
    executor.batch.jobs[k8s_name(other.id)] = failed_status
    executor.schedule()
    failed = executor.documents.get_job(other.id)
    assert failed.state == "failed" and "shards [2] failed" in failed.error
    assert merge_name(other.id) not in executor.batch.jobs
    executor.documents.close()
