"""Run jobs as Kubernetes batch/v1 Jobs on GPU nodes, following their status into the record.

One worker: a plain Job running `python -m lm_saes.jobs.worker`. Several workers (or several
processes per worker): an Indexed Job whose pods find each other through a headless Service and
run the same entry point under torchrun (node rank = completion index), i.e. distributed
training (lm_saes.training.distributed) on workers x procs_per_worker ranks: data-parallel
replicas x `train.feature_shards`. A training config whose feature shards do not fit that
world is refused at submit, before any Job exists.
A sharded analysis or activations job (`shards` > 1): an Indexed Job with one pod per shard
(`worker --shard $(JOB_COMPLETION_INDEX)`, `backoffLimitPerIndex`: a failed index is retried
alone), then, once every index succeeded, a plain merge Job (`worker --job ID`) that finds every
shard done and merges them; the record carries per-shard progress from the Indexed Job's status.
The local executor stays the default; the training service uses this one when
`LM_SAES_EXECUTOR=kubernetes`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from pydantic import BaseModel, Field

from lm_saes.jobs.lifecycle import create_job, mark_cancelled, now
from lm_saes.records import JobRecord
from lm_saes.stores.documents import open_document_store

log = logging.getLogger(__name__)
WORKER_PORT = 29500


class KubernetesSettings(BaseModel):
    namespace: str = "lm-saes"
    image: str = "lm-saes/training:0.1.0"
    workers: int = Field(1, ge=1, description="Pods per job; >1 runs torchrun across them")
    procs_per_worker: int = Field(1, ge=1, description="torchrun processes per pod (one per GPU)")
    gpus_per_worker: int = Field(1, ge=0)
    cpu: str = "4"
    memory: str = "32Gi"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    runtime_class_name: str | None = None
    service_account: str | None = None
    env: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra env entries (secretKeyRefs) for the pods"
    )
    env_secret: str | None = Field(None, description="A Secret whose keys become env (envFrom)")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels (NetworkPolicy peers)")
    model_cache_claim: str | None = Field(None, description="PVC mounted at /cache (LM_SAES_HOME)")
    backoff_limit: int = 2
    ttl_seconds_after_finished: int = 86_400


def world_size(settings: KubernetesSettings) -> int:
    return settings.workers * settings.procs_per_worker


def check_training_world(config: dict[str, Any], settings: KubernetesSettings) -> None:
    """Refuse a training config that cannot run on this executor's ranks (a ConfigError)."""
    from lm_saes.config import ConfigError, RunConfig, parse_config
    from lm_saes.training.distributed import check_feature_shards

    cfg = parse_config(config, RunConfig, "training job")
    world = world_size(settings)
    try:
        check_feature_shards(cfg.train.feature_shards, world)
    except ValueError as error:
        raise ConfigError(f"{error}; this executor runs workers x procs_per_worker = {world} ranks") from None
    replicas = world // cfg.train.feature_shards
    if cfg.train.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size = {cfg.train.batch_size} must divide evenly over the {replicas} data-parallel "
            f"replicas of {world} ranks (workers x procs_per_worker) / train.feature_shards"
        )


def k8s_name(job_id: str) -> str:
    return f"lm-saes-{job_id}".lower().replace("_", "-")[:63].rstrip("-")


def merge_name(job_id: str) -> str:
    """The merge Job of a sharded job (after its Indexed Job, which has `k8s_name`)."""
    return f"{k8s_name(job_id)[:57].rstrip('-')}-merge"


def job_manifests(
    job: JobRecord, settings: KubernetesSettings, shards: int = 1, merge: bool = False
) -> list[dict[str, Any]]:
    """The batch/v1 Job (and, for several workers, its headless Service) that run `job`; with
    `shards` > 1 the Indexed Job of its shards, or with `merge` the Job that merges them."""
    name = merge_name(job.id) if merge else k8s_name(job.id)
    sharded = shards > 1 and not merge
    labels = {
        "app.kubernetes.io/name": "lm-saes",
        **settings.labels,
        "app.kubernetes.io/component": f"{job.kind}-{'merge' if merge else 'shard' if sharded else 'job'}",
        "lm-saes/job-id": job.id[:63],
    }
    multi = world_size(settings) > 1 and shards == 1 and not merge  # torchrun: training only
    entry = ["-m", "lm_saes.jobs.worker", "--job", job.id]
    if sharded:
        entry += ["--shard", "$(JOB_COMPLETION_INDEX)"]
    if multi:
        command = [
            "torchrun",
            f"--nnodes={settings.workers}",
            f"--nproc-per-node={settings.procs_per_worker}",
            "--node-rank=$(JOB_COMPLETION_INDEX)",
            f"--master-addr={name}-0.{name}",
            f"--master-port={WORKER_PORT}",
            *entry,
        ]
    else:
        command = ["python", *entry]
    resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": settings.cpu, "memory": settings.memory},
        "limits": {"cpu": settings.cpu, "memory": settings.memory},
    }
    if settings.gpus_per_worker:
        resources["limits"]["nvidia.com/gpu"] = str(settings.gpus_per_worker)
        resources["requests"]["nvidia.com/gpu"] = str(settings.gpus_per_worker)
    volumes = [{"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if settings.model_cache_claim:
        volumes.append({"name": "cache", "persistentVolumeClaim": {"claimName": settings.model_cache_claim}})
        mounts.append({"name": "cache", "mountPath": "/cache"})
    container = {
        "name": "worker",
        "image": settings.image,
        "command": command,
        "env": [{"name": "LM_SAES_HOME", "value": "/cache"}, {"name": "HF_HUB_OFFLINE", "value": "1"}, *settings.env],
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if settings.env_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.env_secret}}]
    if multi:
        container["ports"] = [{"name": "rendezvous", "containerPort": WORKER_PORT}]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
    }
    for key, value in (
        ("nodeSelector", settings.node_selector),
        ("tolerations", settings.tolerations),
        ("runtimeClassName", settings.runtime_class_name),
        ("serviceAccountName", settings.service_account),
    ):
        if value:
            pod[key] = value
    if multi:
        pod["subdomain"] = name
    spec: dict[str, Any] = {
        "backoffLimit": settings.backoff_limit,
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if multi:
        spec.update(completionMode="Indexed", completions=settings.workers, parallelism=settings.workers)
    if sharded:  # each index retried alone; one index out of retries fails the job
        del spec["backoffLimit"]
        spec.update(
            completionMode="Indexed",
            completions=shards,
            parallelism=shards,
            backoffLimitPerIndex=settings.backoff_limit,
            maxFailedIndexes=0,
        )
    manifests = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
            "spec": spec,
        }
    ]
    if multi:
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
                "spec": {
                    "clusterIP": "None",
                    "selector": {"lm-saes/job-id": job.id[:63]},
                    "ports": [{"name": "rendezvous", "port": WORKER_PORT}],
                },
            }
        )
    return manifests


def indexes(text: str | None) -> list[int]:
    """An Indexed Job's index list ("0-2,5") as numbers."""
    out: list[int] = []
    for part in (text or "").split(","):
        if part.strip():
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def shard_metrics(status: dict[str, Any] | None, shards: int) -> dict[str, float]:
    """Per-shard progress of a sharded job's Indexed Job, as job-record metrics."""
    status = status or {}
    done, failed = set(indexes(status.get("completedIndexes"))), set(indexes(status.get("failedIndexes")))
    metrics = {"shards": float(shards), "shards_succeeded": float(len(done))}
    for index in range(shards):
        metrics[f"shard.{index}.progress"] = 1.0 if index in done else 0.0
        if index in failed:
            metrics[f"shard.{index}.failed"] = 1.0
    return metrics


def state_from_status(status: dict[str, Any] | None, workers: int) -> str:
    """A batch/v1 JobStatus -> our job state."""
    status = status or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") == "Complete":
            return "succeeded"
        if condition.get("status") == "True" and condition.get("type") == "Failed":
            return "failed"
    if (status.get("succeeded") or 0) >= workers:
        return "succeeded"
    return "running" if status.get("active") or status.get("ready") else "queued"


class KubernetesExecutor:
    """Each job a batch/v1 Job (an Indexed Job with a headless Service for torchrun when it has
    several workers); `schedule` follows their status into the job records (`Executor`)."""

    def __init__(
        self,
        documents_uri: str,
        settings: KubernetesSettings,
        kinds: tuple[str, ...] = ("training",),
        api_client: Any = None,
    ):
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.documents_uri = documents_uri
        self.documents = open_document_store(documents_uri)
        self.settings = settings
        self.kinds = kinds
        self.lock = threading.Lock()
        self.closed = False

    def submit(self, kind: str, config: dict[str, Any], request_id: str | None = None, owner: str = "") -> JobRecord:
        if kind not in self.kinds:
            raise ValueError(f"unknown job kind {kind!r}")
        if kind == "training":
            check_training_world(config, self.settings)
        job, created = create_job(self.documents, self.lock, kind, config, request_id, owner)
        if not created:
            return job
        for manifest in job_manifests(job, self.settings, _shards(job)):
            if manifest["kind"] == "Service":
                self.core.create_namespaced_service(self.settings.namespace, manifest)
            else:
                self.batch.create_namespaced_job(self.settings.namespace, manifest)
        return job

    def schedule(self) -> None:
        """Follow each unfinished job's Kubernetes status into its record."""
        for kind in self.kinds:
            for job in self.documents.list_jobs(kind):
                if job.finished:
                    continue
                try:
                    status = self.batch.read_namespaced_job_status(k8s_name(job.id), self.settings.namespace)
                except Exception as error:  # the API may blip; the next poll retries
                    log.warning("cannot read status of %s: %s", job.id, error)
                    continue
                shards = _shards(job)
                if shards > 1:
                    self._follow_shards(job, status.to_dict().get("status"), shards)
                    continue
                state = state_from_status(status.to_dict().get("status"), self.settings.workers)
                if state != job.state and state != "queued":
                    self.documents.put_job(job.model_copy(update={"state": state, "updated": now()}))

    def _follow_shards(self, job: JobRecord, status: dict[str, Any] | None, shards: int) -> None:
        """Shards running: per-shard progress into the record. All done: start the merge Job,
        whose worker writes the record from then on. An index out of retries: failed."""
        state = state_from_status(status, shards)
        if state == "failed":
            failed = indexes((status or {}).get("failedIndexes"))
            error = f"shards {failed} failed every attempt" if failed else "the shards' Job failed"
            self.documents.put_job(job.model_copy(update={"state": "failed", "error": error, "updated": now()}))
            return
        metrics = shard_metrics(status, shards)
        if state != "succeeded":
            if state == "running" and metrics != job.metrics:
                update = {
                    "state": "running",
                    "metrics": metrics,
                    "progress": 0.95 * metrics["shards_succeeded"] / shards,
                }
                self.documents.put_job(job.model_copy(update={**update, "updated": now()}))
            return
        try:
            merge = self.batch.read_namespaced_job_status(merge_name(job.id), self.settings.namespace)
        except Exception:  # not there yet (or the API blipped: a second create is refused as a conflict)
            (manifest,) = job_manifests(job, self.settings, shards, merge=True)
            try:
                self.batch.create_namespaced_job(self.settings.namespace, manifest)
            except Exception as error:
                log.warning("cannot start the merge of %s: %s", job.id, error)
            return
        # its worker writes the record; a merge pod that died without writing it fails the job here
        if state_from_status(merge.to_dict().get("status"), 1) == "failed":
            self.documents.put_job(
                job.model_copy(update={"state": "failed", "error": "the merge Job failed", "updated": now()})
            )

    def resume_unfinished(self) -> list[str]:
        self.schedule()  # Kubernetes keeps running the pods; only the records need catching up
        return []

    def cancel(self, job_id: str) -> JobRecord | None:
        job, cancelled = mark_cancelled(self.documents, job_id)
        if cancelled:
            self.batch.delete_namespaced_job(k8s_name(job_id), self.settings.namespace, propagation_policy="Background")
            if job is not None and _shards(job) > 1:
                with contextlib.suppress(Exception):  # no merge Job yet
                    self.batch.delete_namespaced_job(
                        merge_name(job_id), self.settings.namespace, propagation_policy="Background"
                    )
        return job

    def shutdown(self, timeout: float = 0.0) -> None:
        self.closed = True
        self.documents.close()


def _shards(job: JobRecord) -> int:
    from lm_saes.jobs.kinds import job_shards

    return job_shards(job)
