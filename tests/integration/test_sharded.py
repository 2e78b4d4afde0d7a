"""Sharded analysis and activation generation on the tiny model: 4 shards, merged, equal one
pass; a shard that fails once is retried alone."""

import signal

import pytest
import torch

from lm_saes.analysis import run_analysis
from lm_saes.cli import main
from lm_saes.config import AnalyzeConfig, load_config
from lm_saes.sharding import FAULT_ENV
from lm_saes.stores.documents import open_document_store

TINY_ANALYZE = "examples/configuration/analyze-tiny.toml"


@pytest.fixture
def keep_sigterm():
    """Running a job in this process installs its SIGTERM handler; put pytest's back after."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


@pytest.fixture(scope="module")
def tiny_sae(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert main(["-q", "train", "examples/configuration/train-tiny.toml", "--set", f'output="{out}/run"']) == 0
    return out / "run" / "sae"


def _cfg(tmp_path, name: str, **update) -> AnalyzeConfig:
    cfg = load_config(
        TINY_ANALYZE,
        AnalyzeConfig,
        {"output": str(tmp_path / name), "documents": str(tmp_path / f"{name}.sqlite"), "analysis.batch_contexts": 8},
    )
    return cfg.model_copy(update=update)


def test_four_shards_merge_into_the_documents_of_one_pass(tiny_sae, tmp_path, monkeypatch):
    one = run_analysis(_cfg(tmp_path, "one"), str(tiny_sae), progress=False)
    monkeypatch.setenv(FAULT_ENV, "1:1")  # shard 1 fails its first attempt
    updates = []
    four = run_analysis(
        _cfg(tmp_path, "four", shards=4),
        str(tiny_sae),
        progress=False,
        on_shards=lambda ledger: updates.append(ledger.model_copy(deep=True)),
    )
    assert four.shard_attempts == [1, 2, 1, 1]  # the failed shard alone ran again
    assert (four.analysis_id, four.tokens, four.features_written) == (one.analysis_id, one.tokens, 256)
    with (
        open_document_store(str(tmp_path / "one.sqlite")) as a,
        open_document_store(str(tmp_path / "four.sqlite")) as b,
    ):
        assert a.list_features("run")[1] == b.list_features("run")[1] == 256
        examples = 0
        for index in range(256):
            fa, fb = a.get_feature("run", index).doc(), b.get_feature("run", index).doc()
            assert fa == fb, index
            examples += len(fa["top_examples"])
        assert examples > 256  # the documents hold examples, not just empty lists
        assert b.list_analyses("run")[0].state == "succeeded"
    # per-shard progress was reported while the shards ran, and the failure was visible
    assert any(u.shards[1].state == "pending" and u.shards[1].attempts == 1 for u in updates)
    assert updates[-1].metrics()["shards_succeeded"] == 4.0
    assert not list((tmp_path / "four").rglob("shard-*.pt"))  # shard results are cleaned up


def test_a_shard_failing_every_attempt_fails_the_pass_naming_it(tiny_sae, tmp_path, monkeypatch):
    from lm_saes.sharding import ShardsFailed

    monkeypatch.setenv(FAULT_ENV, "2:9")
    with pytest.raises(ShardsFailed, match="shard 2 after 2 attempts: .*injected fault"):
        run_analysis(_cfg(tmp_path, "bad", shards=3, shard_attempts=2), str(tiny_sae), progress=False)
    with open_document_store(str(tmp_path / "bad.sqlite")) as store:
        assert store.list_features("run")[1] == 0  # nothing half-merged is visible
    # the shards that succeeded are kept: a rerun (fault gone) runs only the failed one
    monkeypatch.delenv(FAULT_ENV)
    updates = []
    result = run_analysis(
        _cfg(tmp_path, "bad", shards=3, shard_attempts=2),
        str(tiny_sae),
        progress=False,
        on_shards=lambda ledger: updates.append([s.state for s in ledger.shards]),
    )
    assert updates[0] == ["succeeded", "succeeded", "running"]
    assert result.shard_attempts == [1, 1, 1] and result.features_written == 256


HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
TINY = {"name": "tiny", "tiny_layers": 2, "tiny_d_model": 32, "seed": 0}


def _rows(store, hooks) -> dict[str, torch.Tensor]:
    from lm_saes.activations.store import StoredRows, read_manifest

    manifest = read_manifest(store)
    return StoredRows(store, manifest, hooks).rows(0, manifest.n_tokens)


def test_four_activation_shards_merge_into_the_store_of_one_pass(tiny_model, tmp_path, monkeypatch):
    from lm_saes.activations import StoredActivations, generate_activations
    from lm_saes.activations.sharded import generate_sharded_activations
    from lm_saes.activations.store import StoredRows, read_manifest
    from lm_saes.config import ModelConfig
    from lm_saes.stores import LocalObjectStore

    g = torch.Generator().manual_seed(5)
    contexts = torch.randint(32, 127, (30, 16), generator=g)
    contexts[:, 0] = tiny_model.tokenizer.bos_token_id
    contexts[7, 9] = tiny_model.tokenizer.bos_token_id  # a document boundary: rows per context differ
    one, four = LocalObjectStore(tmp_path / "one"), LocalObjectStore(tmp_path / "four")
    single = generate_activations(tiny_model, contexts, HOOKS, one, batch_contexts=4, shard_tokens=100)
    monkeypatch.setenv(FAULT_ENV, "0:1")
    ledgers = []
    merged = generate_sharded_activations(
        tiny_model,
        ModelConfig.model_validate(TINY),
        contexts,
        HOOKS,
        four,
        shards=4,
        batch_contexts=4,
        shard_tokens=100,
        on_shards=ledgers.append,
    )
    assert ledgers[-1].attempts == [2, 1, 1, 1]
    assert merged.n_tokens == single.n_tokens == int((contexts != tiny_model.tokenizer.bos_token_id).sum())
    assert read_manifest(four) == merged and len(merged.shards) > 4  # every part's storage shards
    for hook in HOOKS:
        assert merged.hooks[hook].d == single.hooks[hook].d
        assert merged.hooks[hook].mean_norm == pytest.approx(single.hooks[hook].mean_norm, rel=1e-9)
        assert merged.hooks[hook].rms_norm == pytest.approx(single.hooks[hook].rms_norm, rel=1e-9)
    # the same rows in the same (global context) order, and the same contexts
    a, b = _rows(one, HOOKS), _rows(four, HOOKS)
    for hook in HOOKS:
        assert torch.equal(a[hook], b[hook]), hook
    assert torch.equal(StoredRows(four, merged, HOOKS).contexts(), contexts)
    # the training stream reads one epoch of exactly those rows (as a multiset)
    stream = StoredActivations(four, HOOKS, seed=1, buffer_tokens=256)
    assert stream.tokens_per_epoch == merged.n_tokens
    epoch = next(stream.batches(merged.n_tokens))
    for hook in HOOKS:
        assert torch.equal(torch.unique(epoch[hook], dim=0), torch.unique(a[hook], dim=0))


def test_training_generates_its_activations_in_shards(tmp_path):
    from lm_saes.config import RunConfig
    from lm_saes.data.packing import load_token_splits
    from lm_saes.models import load_language_model
    from lm_saes.runner import activation_source
    from lm_saes.stores import LocalObjectStore

    cfg = load_config(
        "examples/configuration/train-tiny.toml",
        RunConfig,
        {"output": str(tmp_path / "run"), "activations.shards": 2, "data.max_tokens": 3000},
    )
    model = load_language_model(cfg.model)
    splits = load_token_splits(cfg.data, model.tokenizer)
    source = activation_source(cfg, model, splits, LocalObjectStore(tmp_path / "run"), progress=False)
    expected = int((splits.train != model.tokenizer.bos_token_id).sum())
    assert source.tokens_per_epoch == expected
    assert all(s.key.startswith("parts/part-000") for s in source.manifest.shards)  # type: ignore[attr-defined]
    one = LocalObjectStore(tmp_path / "single")
    from lm_saes.activations import generate_activations

    generate_activations(model, splits.train, cfg.activations.hooks, one, cfg.activations.batch_contexts, 2048)
    hooks = cfg.activations.hooks
    assert torch.equal(_rows(one, hooks)[hooks[0]], _rows(source.store, hooks)[hooks[0]])  # type: ignore[attr-defined]


def test_shard_pods_then_the_merge_step_make_the_store_of_one_pass(tmp_path, keep_sigterm):
    """What a Kubernetes Indexed Job does, with the worker entry point in this process: each
    `--shard I` writes its part, then the job's plain run finds every part done and merges."""
    from lm_saes.activations import generate_activations
    from lm_saes.config import DataConfig, ModelConfig
    from lm_saes.data.packing import load_token_splits
    from lm_saes.jobs import new_job
    from lm_saes.jobs.worker import main as worker
    from lm_saes.models import load_language_model
    from lm_saes.stores import LocalObjectStore

    docs = str(tmp_path / "jobs.sqlite")
    data = {"max_tokens": 1500, "eval_tokens": 0, "context_size": 32}
    hooks = ["blocks.0.hook_resid_post"]
    acts = {"hooks": hooks, "shards": 3, "batch_contexts": 4, "shard_tokens": 256}
    job = new_job("activations", {"model": "tiny", "output": str(tmp_path / "acts"), "data": data, "activations": acts})
    with open_document_store(docs) as store:
        store.put_job(job)
    assert worker(["--job", job.id, "--documents", docs, "--shard", "3"]) == 1  # no such shard
    for index in (2, 0, 1):  # pods finish in any order
        assert worker(["--job", job.id, "--documents", docs, "--shard", str(index)]) == 0
    assert worker(["--job", job.id, "--documents", docs]) == 0  # the merge step
    with open_document_store(docs) as store:
        record = store.get_job(job.id)
    assert record.state == "succeeded" and record.result["shard_attempts"] == [0, 0, 0]  # none rerun
    model = load_language_model(ModelConfig(name="tiny"))
    contexts = load_token_splits(DataConfig(**data), model.tokenizer).train
    generate_activations(model, contexts, hooks, LocalObjectStore(tmp_path / "one"), 4, 256)
    one, merged = _rows(LocalObjectStore(tmp_path / "one"), hooks), _rows(LocalObjectStore(tmp_path / "acts"), hooks)
    assert record.result["n_tokens"] == len(one[hooks[0]]) and torch.equal(one[hooks[0]], merged[hooks[0]])


def test_more_shards_than_batches_leave_empty_parts_that_merge(tiny_model, tmp_path):
    from lm_saes.activations import generate_activations
    from lm_saes.activations.sharded import generate_sharded_activations
    from lm_saes.config import ModelConfig
    from lm_saes.stores import LocalObjectStore

    contexts = torch.randint(32, 127, (6, 16), generator=torch.Generator().manual_seed(2))
    contexts[:, 0] = tiny_model.tokenizer.bos_token_id
    one, four = LocalObjectStore(tmp_path / "one"), LocalObjectStore(tmp_path / "four")
    generate_activations(tiny_model, contexts, HOOKS[:1], one, batch_contexts=4, shard_tokens=100)
    ledgers = []
    merged = generate_sharded_activations(
        tiny_model, ModelConfig.model_validate(TINY), contexts, HOOKS[:1], four, 4, 4, 100, on_shards=ledgers.append
    )  # 2 batches, 4 shards: the last two have nothing to do
    assert ledgers[-1].attempts == [1, 1, 1, 1] and merged.n_tokens == 6 * 15
    assert torch.equal(_rows(one, HOOKS[:1])[HOOKS[0]], _rows(four, HOOKS[:1])[HOOKS[0]])


def test_a_sharded_analysis_job_reports_each_shard_in_its_record(tiny_sae, tmp_path, monkeypatch, keep_sigterm):
    from lm_saes.jobs import new_job
    from lm_saes.jobs.executor import run_job
    from lm_saes.jobs.lifecycle import JobReporter

    docs = str(tmp_path / "jobs.sqlite")
    analyze = _cfg(tmp_path, "job", shards=2).model_dump(mode="json") | {"documents": docs}
    job = new_job("analysis", {"sae": str(tiny_sae), "analyze": analyze}, request_id="r")
    writes: list[dict] = []
    original = JobReporter.progress

    def spy(self, progress, metrics=None, force=False):
        writes.append(dict(metrics or {}))
        return original(self, progress, metrics, force=True)  # unthrottled, so every update lands

    monkeypatch.setattr(JobReporter, "progress", spy)
    with open_document_store(docs) as store:
        store.put_job(job)
    assert run_job(docs, job.id) == 0
    with open_document_store(docs) as store:
        record = store.get_job(job.id)
        assert store.list_features("run")[1] == 256
    assert record.state == "succeeded" and record.result["shard_attempts"] == [1, 1]
    assert record.metrics["shards"] == 2 and record.metrics["shard.1.attempts"] == 1
    assert {"shard.0.progress", "shard.1.progress", "shards_succeeded"} <= writes[0].keys()
    assert writes[-1]["shards_succeeded"] == 2
