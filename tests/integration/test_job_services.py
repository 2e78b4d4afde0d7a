"""Training and analysis services as separate processes over S3 (moto) and MongoDB (jongodb).

Through gRPC: train a tiny SAE and watch it finish, analyze it and read features, see the
error codes, and kill the training service mid-job: a restarted one finishes the job from its
checkpoint.
"""

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lm_saes.rpc.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    common_pb2,
    common_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from lm_saes.stores import open_store
from tests.conftest import ADMIN_TOKEN
from tests.integration.conftest import REPO, free_port

with open(REPO / "examples/configuration/train-tiny.toml", "rb") as handle:
    TINY = tomllib.load(handle)
DONE = (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str):
        self.token = token

    def _details(self, details):  # grpc passes a namedtuple
        return details._replace(metadata=[*(details.metadata or ()), ("authorization", f"Bearer {self.token}")])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


class Service:
    """One service as an OS process on a free loopback port; `channel` carries the admin
    test token, `raw_channel` no credential."""

    def __init__(self, module: str, env: dict[str, str], log: Path, token: str = ADMIN_TOKEN):
        self.module, self.env, self.log, self.token = module, env, log, token
        self.port = free_port()
        self.start()

    def start(self) -> None:
        """Start the process and wait until it serves. A port that another process took between
        `free_port()` and the bind makes the service exit at once: then try fresh ports."""
        for _ in range(3):
            written = self.log.stat().st_size if self.log.exists() else 0
            env = {
                **os.environ,
                **self.env,
                "LM_SAES_HOST": "127.0.0.1",
                "LM_SAES_PORT": str(self.port),
                "LM_SAES_METRICS_PORT": str(free_port()),
            }
            self.metrics_port = int(env["LM_SAES_METRICS_PORT"])
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=REPO,
                env=env,
                stdout=self.log.open("a"),
                stderr=subprocess.STDOUT,
            )
            self.raw_channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
            if self._ready(time.time() + 180):
                self.channel = grpc.intercept_channel(self.raw_channel, _Bearer(self.token))
                return
            self.raw_channel.close()
            output = self.log.read_text()[written:]
            if "Failed to bind" not in output:
                raise RuntimeError(f"{self.module} exited ({self.proc.returncode}) before serving:\n{output[-3000:]}")
            self.port = free_port()
        raise RuntimeError(f"{self.module} found no free port in 3 tries")

    def _ready(self, deadline: float) -> bool:
        """True once the service answers; False as soon as its process has exited."""
        ready = grpc.channel_ready_future(self.raw_channel)
        while True:
            try:
                ready.result(timeout=1)
                return True
            except grpc.FutureTimeoutError:
                if self.proc.poll() is not None:
                    return False
                if time.time() > deadline:
                    raise

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=120)
        self.raw_channel.close()
        return code


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_server, mongodb_uri, local_llm):
    tmp = tmp_path_factory.mktemp("stack")
    env = {
        "LM_SAES_DOCUMENTS": f"{mongodb_uri}/stack_{uuid.uuid4().hex[:8]}",
        "LM_SAES_OBJECT_STORE": "s3://lm-saes-stack/objects",
        "HF_HUB_OFFLINE": "1",
        **s3_server,
    }
    training = Service("services.training", env, tmp / "training.log")
    llm = {"LM_SAES_LLM_BASE_URL": local_llm.base_url, "LM_SAES_LLM_MODEL": local_llm.model}
    analysis = Service("services.analysis", {**env, **llm}, tmp / "analysis.log")
    activation = Service("services.activation", {**env, "LM_SAES_MODEL": "tiny"}, tmp / "activation.log")
    yield training, analysis, tmp, activation
    for service in (training, analysis, activation):
        if service.proc.poll() is None:
            service.stop()


def _config(**train) -> str:
    config = {**TINY, "data": {**TINY["data"], "max_tokens": 5000}, "train": {**TINY["train"], **train}}
    config.pop("output")
    return json.dumps(config)


def _watch(service: Service, job_id: str) -> list:
    return list(common_pb2_grpc.JobServiceStub(service.channel).Watch(common_pb2.JobRef(id=job_id), timeout=300))


def test_train_watch_analyze_and_read_features(stack):
    training, analysis, *_ = stack
    health = health_pb2_grpc.HealthStub(training.channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service="lm_saes.v1.TrainingService")).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    trainer = training_pb2_grpc.TrainingServiceStub(training.channel)
    jobs = common_pb2_grpc.JobServiceStub(training.channel)
    job = trainer.Submit(training_pb2.SubmitTrainingRequest(config_json=_config(), request_id="tiny-1"))
    assert trainer.Submit(training_pb2.SubmitTrainingRequest(config_json=_config(), request_id="tiny-1")).id == job.id
    events = _watch(training, job.id)
    assert events[-1].state == common_pb2.JOB_STATE_SUCCEEDED, jobs.Get(common_pb2.JobRef(id=job.id)).error
    assert events[-1].step == events[-1].total_steps > 0 and events[-1].explained_variance > 0
    result = json.loads(jobs.Get(common_pb2.JobRef(id=job.id)).result_json)
    assert result["sae"].startswith("s3://lm-saes-stack/objects/training/")
    assert "sae/sae.json" in open_store(result["output"]).list("sae")

    analyzer = analysis_pb2_grpc.AnalysisServiceStub(analysis.channel)
    config = json.dumps(
        {
            "data": {"context_size": 64, "max_tokens": 3000, "eval_tokens": 0},
            "analysis": {"top_n": 5, "batch_contexts": 8},
        }
    )
    ajob = analyzer.Submit(
        analysis_pb2.SubmitAnalysisRequest(sae_uri=result["sae"], sae_id="tiny-sae", config_json=config)
    )
    assert _watch(analysis, ajob.id)[-1].state == common_pb2.JOB_STATE_SUCCEEDED
    page = analyzer.ListFeatures(
        analysis_pb2.ListFeaturesRequest(
            sae_id="tiny-sae", sort=analysis_pb2.FEATURE_SORT_DENSITY, descending=True, limit=10
        )
    )
    assert page.total == 256 and page.features[0].density >= page.features[-1].density
    feature = analyzer.GetFeature(analysis_pb2.GetFeatureRequest(sae_id="tiny-sae", index=page.features[0].index))
    assert json.loads(feature.document_json)["top_examples"]
    listed = jobs.List(common_pb2.ListJobsRequest(state=common_pb2.JOB_STATE_SUCCEEDED))
    assert job.id in [j.id for j in listed.jobs]


def test_autointerp_job_explains_and_scores_the_analyzed_features(stack):
    """Runs after the test above analyzed tiny-sae (module order)."""
    _, analysis, *_ = stack
    analyzer = analysis_pb2_grpc.AnalysisServiceStub(analysis.channel)
    config = {
        "max_features": 2,
        "min_density": 1e-3,
        "scorers": ["detection", "fuzzing"],
        "negative_pool": 32,
        "examples": {
            "explain_top": 3,
            "explain_quantiles": 1,
            "test_activating": 6,
            "random_negatives": 2,
            "hard_negatives": 2,
            "per_prompt": 5,
        },
    }
    job = analyzer.SubmitAutointerp(
        analysis_pb2.SubmitAutointerpRequest(sae_id="tiny-sae", config_json=json.dumps(config))
    )
    assert _watch(analysis, job.id)[-1].state == common_pb2.JOB_STATE_SUCCEEDED
    final = common_pb2_grpc.JobServiceStub(analysis.channel).Get(common_pb2.JobRef(id=job.id))
    result = json.loads(final.result_json)
    assert result["selected"] == 2 and result["explained"] + result["failed"] == 2
    page = analyzer.ListFeatures(analysis_pb2.ListFeaturesRequest(sae_id="tiny-sae", limit=1000))
    documents = [
        json.loads(analyzer.GetFeature(analysis_pb2.GetFeatureRequest(sae_id="tiny-sae", index=f.index)).document_json)
        for f in page.features
    ]
    explained = [d["explanation"] for d in documents if d.get("explanation")]
    assert len(explained) == result["explained"] >= 1
    assert all(set(e["scores"]) <= {"detection", "fuzzing"} and e["model"] for e in explained)
    ranked = analyzer.ListFeatures(
        analysis_pb2.ListFeaturesRequest(sae_id="tiny-sae", sort=analysis_pb2.FEATURE_SORT_SCORE, descending=True)
    )
    scored = {d["index"] for d in documents if d.get("score") is not None}
    assert {f.index for f in ranked.features[: len(scored)]} == scored  # scored features sort first


@pytest.mark.parametrize(
    "sae_id, config, code, names",
    [
        ("", {}, grpc.StatusCode.INVALID_ARGUMENT, "sae_id"),
        ("x" * 300, {}, grpc.StatusCode.INVALID_ARGUMENT, "sae_id"),
        ("ghost", {}, grpc.StatusCode.NOT_FOUND, "ghost"),
        (
            "tiny-sae",
            {"llm": {"base_url": "http://169.254.169.254/v1", "model": "x"}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "llm",
        ),
        ("tiny-sae", {"documents": "/etc/passwd"}, grpc.StatusCode.INVALID_ARGUMENT, "documents"),
        ("tiny-sae", {"sae": "/root/sae"}, grpc.StatusCode.INVALID_ARGUMENT, "sae"),
        ("tiny-sae", {"features": [-1]}, grpc.StatusCode.INVALID_ARGUMENT, "features"),
        ("tiny-sae", {"features": [10**9]}, grpc.StatusCode.INVALID_ARGUMENT, "features"),
        ("tiny-sae", {"features": list(range(200_000))}, grpc.StatusCode.INVALID_ARGUMENT, "config_json"),
        ("tiny-sae", {"scorers": ["bogus"]}, grpc.StatusCode.INVALID_ARGUMENT, "scorers"),
        ("tiny-sae", {"scorers": [{"a": 1}]}, grpc.StatusCode.INVALID_ARGUMENT, "scorers"),
        ("tiny-sae", {"explain": False, "scorers": []}, grpc.StatusCode.INVALID_ARGUMENT, "nothing to do"),
        ("tiny-sae", {"chunk": 10**9}, grpc.StatusCode.INVALID_ARGUMENT, "chunk"),
        ("tiny-sae", {"min_density": float("nan")}, grpc.StatusCode.INVALID_ARGUMENT, "min_density"),
        ("tiny-sae", {"examples": {"per_prompt": 0}}, grpc.StatusCode.INVALID_ARGUMENT, "examples.per_prompt"),
        ("tiny-sae", {"unknown": 1}, grpc.StatusCode.INVALID_ARGUMENT, "unknown"),
    ],
)
def test_autointerp_submissions_are_checked_before_queueing(stack, sae_id, config, code, names):
    _, analysis, *_ = stack
    analyzer = analysis_pb2_grpc.AnalysisServiceStub(analysis.channel)
    jobs_before = len(common_pb2_grpc.JobServiceStub(analysis.channel).List(common_pb2.ListJobsRequest()).jobs)
    with pytest.raises(grpc.RpcError) as error:
        request = analysis_pb2.SubmitAutointerpRequest(sae_id=sae_id, config_json=json.dumps(config))
        analyzer.SubmitAutointerp(request)
    assert error.value.code() == code and names in error.value.details()
    assert len(common_pb2_grpc.JobServiceStub(analysis.channel).List(common_pb2.ListJobsRequest()).jobs) == jobs_before


def test_error_codes(stack):
    training, analysis, *_ = stack
    trainer = training_pb2_grpc.TrainingServiceStub(training.channel)
    analyzer = analysis_pb2_grpc.AnalysisServiceStub(analysis.channel)
    with pytest.raises(grpc.RpcError) as error:
        common_pb2_grpc.JobServiceStub(training.channel).Get(common_pb2.JobRef(id="training-nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as error:
        trainer.Submit(training_pb2.SubmitTrainingRequest(config_json=_config(lrr=1)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "train.lrr" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        analyzer.GetFeature(analysis_pb2.GetFeatureRequest(sae_id="ghost", index=0))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND and "ghost" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        analyzer.Submit(analysis_pb2.SubmitAnalysisRequest())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sae_uri" in error.value.details()


def test_killed_training_service_finishes_job_after_restart(stack):
    training, *_ = stack
    trainer = training_pb2_grpc.TrainingServiceStub(training.channel)
    job = trainer.Submit(
        training_pb2.SubmitTrainingRequest(config_json=_config(batch_size=32, checkpoint_every=4, log_every=1))
    )
    output = json.loads(job.config_json)["output"]
    deadline = time.time() + 180
    while not any(k.endswith("/done") for k in open_store(output).list("checkpoints")):
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.3)
    training.stop(signal.SIGKILL)  # no chance to clean up; its worker dies with it
    training.start()
    events = _watch(training, job.id)
    assert events[-1].state == common_pb2.JOB_STATE_SUCCEEDED
    steps = [json.loads(line)["step"] for line in open_store(output).get_bytes("metrics.jsonl").decode().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == events[-1].total_steps
    jobs = common_pb2_grpc.JobServiceStub(training.channel)
    resumed_from = json.loads(jobs.Get(common_pb2.JobRef(id=job.id)).result_json)["resumed_from"]
    assert resumed_from > 0 and resumed_from % 4 == 0  # continued from a checkpoint, not from scratch
    assert training.stop() == 0  # graceful SIGTERM exits cleanly
    training.start()  # leave the stack as the other tests expect it


def test_a_taken_port_is_retried_not_waited_on(tmp_path):
    """The harness itself: a service whose port was taken exits at once, and the next start gets
    a fresh port instead of waiting 180 s for a server that will never answer."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service = Service.__new__(Service)
        service.module, service.env, service.log, service.token = (
            "services.training",
            {"LM_SAES_OBJECT_STORE": str(tmp_path / "objects")},
            tmp_path / "training.log",
            ADMIN_TOKEN,
        )
        service.port = taken.getsockname()[1]
        started = time.time()
        service.start()
        try:
            assert service.port != taken.getsockname()[1] and time.time() - started < 120
            assert "Failed to bind" in service.log.read_text()
        finally:
            service.stop()


def test_unreachable_store_gives_unavailable(tmp_path):
    from tests.mongo_server import install_jongodb, wait_for_uri

    log = tmp_path / "jongodb.log"
    with log.open("w") as out:
        mongo = subprocess.Popen(
            [str(install_jongodb()), "--host=127.0.0.1", "--port=0"], stdout=out, stderr=subprocess.STDOUT
        )
    uri = wait_for_uri(log, mongo, time.time() + 30)
    service = Service(
        "services.training",
        {
            "LM_SAES_DOCUMENTS": f"{uri}/gone?serverSelectionTimeoutMS=300",
            "LM_SAES_OBJECT_STORE": str(tmp_path / "objects"),
        },
        tmp_path / "training.log",
    )
    try:
        jobs = common_pb2_grpc.JobServiceStub(service.channel)
        jobs.List(common_pb2.ListJobsRequest())  # fine while the store answers
        mongo.kill()
        mongo.wait()
        started = time.time()
        with pytest.raises(grpc.RpcError) as error:
            jobs.Get(common_pb2.JobRef(id="training-x"))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE and "unreachable" in error.value.details()
        assert time.time() - started < 3  # bounded by store_wait_s (2 s) plus the server's own timeout
        assert service.proc.poll() is None  # the service lives on
    finally:
        service.stop()
        if mongo.poll() is None:
            mongo.kill()


def test_whole_pipeline_through_the_client(stack):
    """Generate activations, train on them, analyze, read a feature, and ask live features."""
    import torch

    from lm_saes.config import ModelConfig
    from lm_saes.models import load_language_model
    from lm_saes.rpc.client import ActivationClient, AnalysisClient, TrainingClient
    from lm_saes.saes import load_sae

    training, analysis, _, activation = stack
    hook = "blocks.0.hook_resid_post"
    acts_uri = "s3://lm-saes-stack/objects/shared-acts"
    data = {"context_size": 64, "max_tokens": 5000, "eval_tokens": 1000}
    with (
        ActivationClient(f"127.0.0.1:{activation.port}") as live,
        TrainingClient(f"127.0.0.1:{training.port}") as trainer,
        AnalysisClient(f"127.0.0.1:{analysis.port}") as analyzer,
    ):
        job = live.generate_activations([hook], acts_uri, model="tiny", data=data, shard_tokens=2048)
        assert list(live.watch(job["id"], timeout=300))[-1]["state"] == "succeeded"
        config = {
            **json.loads(_config()),
            "data": {**TINY["data"], **data},
            "activations": {**TINY["activations"], "path": acts_uri},
        }
        shards = open_store(acts_uri)

        def written() -> dict[str, object]:  # when each shard object was last written (S3 metadata)
            return {
                key: shards.client.stat_object(shards.bucket, shards._key(key)).last_modified for key in shards.list()
            }

        before = written()
        time.sleep(1.1)  # S3 times have 1 s resolution
        job = trainer.submit(config)
        assert list(trainer.watch(job["id"], timeout=300))[-1]["state"] == "succeeded"
        sae_uri = trainer.get(job["id"])["result"]["sae"]
        # reused, not regenerated: the shards and their manifest are untouched, none written anew
        assert written() == before and "manifest.json" in before
        assert open_store(trainer.get(job["id"])["result"]["output"]).list("activations") == []
        job = analyzer.submit(sae_uri, sae_id="e2e", config={"data": {**data, "eval_tokens": 0}})
        assert list(analyzer.watch(job["id"], timeout=300))[-1]["state"] == "succeeded"
        features, total = analyzer.list_features("e2e", sort="max_activation", descending=True, limit=3)
        assert total == 256 and analyzer.get_feature("e2e", features[0]["index"])["top_examples"]

        text = "Sparse autoencoders find features."
        tokens = live.feature_activations("e2e", text, features=list(range(256)))
    model = load_language_model(ModelConfig(name="tiny"))
    sae = load_sae(sae_uri)
    ids = torch.tensor([[model.tokenizer.bos_token_id, *model.tokenizer.encode(text)]])
    expected = sae.encode(model.activations(ids, [hook])[hook][0, 1:])
    served = torch.tensor([[f["value"] for f in t["features"]] for t in tokens])
    assert served.shape == expected.shape
    assert float((served - expected).abs().max()) <= 1e-5
