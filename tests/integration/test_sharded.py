"""Sharded analysis and activation generation on the tiny model: 4 shards, merged, equal one
pass; a shard that fails once is retried alone."""

import pytest

from lm_saes.analysis import run_analysis
from lm_saes.cli import main
from lm_saes.config import AnalyzeConfig, load_config
from lm_saes.sharding import FAULT_ENV
from lm_saes.stores.documents import open_document_store

TINY_ANALYZE = "examples/configuration/analyze-tiny.toml"


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
