"""Autointerp end to end on the tiny model's analyzed SAE, with the real local LLM server and
the packaged embedding model: results on the documents, re-runs skip, interrupted runs resume."""

import pytest

from lm_saes.analysis import run_analysis
from lm_saes.autointerp.prompts import PROMPT_VERSION
from lm_saes.autointerp.run import AutointerpConfig, run_autointerp
from lm_saes.cli import main
from lm_saes.config import AnalyzeConfig, load_config
from lm_saes.stores.documents import open_document_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """(documents path, sae_id, SAE folder) of the tiny SAE, trained and analyzed."""
    out = tmp_path_factory.mktemp("autointerp")
    assert main(["-q", "train", "examples/configuration/train-tiny.toml", "--set", f'output="{out}/run"']) == 0
    documents = str(out / "docs.sqlite")
    cfg = load_config(
        "examples/configuration/analyze-tiny.toml",
        AnalyzeConfig,
        {"output": str(out / "analysis"), "documents": documents},
    )
    result = run_analysis(cfg, str(out / "run" / "sae"), progress=False)
    return documents, result.sae_id, out / "run" / "sae"


def config(analyzed, local_llm, **extra) -> AutointerpConfig:
    documents, sae_id, _ = analyzed
    base = dict(
        documents=documents,
        sae_id=sae_id,
        max_features=4,
        min_density=1e-3,
        chunk=2,
        negative_pool=64,
        llm=local_llm.model_dump(),
        examples={
            "explain_top": 4,
            "explain_quantiles": 2,
            "test_activating": 6,
            "random_negatives": 2,
            "hard_negatives": 2,
            "per_prompt": 5,  # the worked example has five excerpts; small models copy its length
        },
    )
    return AutointerpConfig(**{**base, **extra})


def test_explains_scores_skips_and_resumes(analyzed, local_llm):
    documents, sae_id, _ = analyzed
    cfg = config(analyzed, local_llm)
    with pytest.raises(InterruptedError, match="stopped after 2 of 4"):
        calls = iter([False, True])
        run_autointerp(cfg, should_stop=lambda: next(calls))
    with open_document_store(documents) as store:
        explained = {f.index: f.explanation for f in store.list_features(sae_id, limit=1000)[0] if f.explanation}
    assert len(explained) == 2  # the first chunk, complete: explanation with every score
    for e in explained.values():
        assert e.text and e.model == local_llm.model and e.prompt_version == PROMPT_VERSION
        assert set(e.scores) <= {"detection", "fuzzing", "embedding"} and "embedding" in e.scores
        assert e.prompt_tokens > 0 and all(0.0 <= s.value <= 1.0 for s in e.scores.values())
    complete = sum(set(cfg.scorers) <= set(e.scores) for e in explained.values())  # a score may be unreadable
    resumed = run_autointerp(cfg)
    assert resumed.selected == 4 and resumed.skipped == complete and resumed.explained + resumed.failed == 2
    with open_document_store(documents) as store:
        done = sum(
            set(cfg.scorers) <= set(f.explanation.scores)
            for f in store.list_features(sae_id, limit=1000)[0]
            if f.explanation
        )
    again = run_autointerp(cfg)
    assert again.explained == 0  # explanations are never redone; only a missing score is retried
    assert again.skipped == done and (again.prompt_tokens == 0) == (done == 4)
    with open_document_store(documents) as store:
        after = {f.index: f.explanation for f in store.list_features(sae_id, limit=1000)[0] if f.explanation}
        ranked, _ = store.list_features(sae_id, sort="score", descending=True, limit=3, fields=["score"])
    assert all(after[i].created == e.created for i, e in explained.items())  # never redone
    assert len(after) == 4 - resumed.failed
    assert ranked[0].score is None or ranked[0].score >= (ranked[1].score or 0.0)  # scored ones first


def test_scoring_only_keeps_the_explanation(analyzed, local_llm):
    documents, sae_id, _ = analyzed
    run_autointerp(config(analyzed, local_llm, scorers=[], redo=True))  # new explanations, no scores
    with open_document_store(documents) as store:
        before = {f.index: f.explanation for f in store.list_features(sae_id, limit=1000)[0] if f.explanation}
    assert before and all(not e.scores for e in before.values())
    result = run_autointerp(config(analyzed, local_llm, explain=False, scorers=["detection"]))
    assert result.explained == 0 and result.scored == len(before)
    with open_document_store(documents) as store:
        now = {i: store.get_feature(sae_id, i).explanation for i in before}
    for i, e in before.items():  # the explanation kept, only the requested score added
        assert now[i].text == e.text and now[i].created == e.created and set(now[i].scores) <= {"detection"}
    # a score is missing only where the 135M model answered nothing readable at all
    assert sum("detection" in n.scores for n in now.values()) >= len(now) // 2
