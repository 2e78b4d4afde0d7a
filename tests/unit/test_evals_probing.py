"""Sparse probing against brute force and known answers: the true feature scores ~1, a random latent ~0.5."""

from __future__ import annotations

import json
import random

import torch

from lm_saes.config import DataConfig, ModelConfig, ProbingConfig, RunConfig
from lm_saes.evals.probing import (
    TOKEN_TASKS,
    Passages,
    Task,
    balanced_split,
    dense_accuracies,
    probing,
    score_probing,
    sparse_probe_accuracies,
    token_task_labels,
    top_latents_by_mean_difference,
    topic_passages,
    topic_tasks,
)
from lm_saes.saes import ReLUConfig, TopKConfig, build_sae, make_spec
from lm_saes.stores import LocalObjectStore


def test_mean_difference_selection_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    latents = torch.rand(300, 40, generator=g) * (torch.rand(300, 40, generator=g) < 0.3)
    labels = torch.rand(300, generator=g) < 0.4
    brute = []
    for j in range(40):
        pos = [float(latents[i, j]) for i in range(300) if labels[i]]
        neg = [float(latents[i, j]) for i in range(300) if not labels[i]]
        brute.append((-abs(sum(pos) / len(pos) - sum(neg) / len(neg)), j))
    assert top_latents_by_mean_difference(latents, labels, 7) == [j for _, j in sorted(brute)[:7]]


def test_latents_are_chosen_on_the_train_split_only():
    g = torch.Generator().manual_seed(1)
    n = 200
    y_train, y_test = torch.arange(n) % 2 == 0, torch.arange(n) % 2 == 1
    train, test = torch.rand(n, 6, generator=g), torch.rand(n, 6, generator=g)
    train[:, 4] = y_train.double() + 0.1 * torch.rand(n, generator=g)  # separates the train split
    test[:, 4] = y_test.double()
    test[:, 1] = y_test.double() * 5  # would separate the test split better, but is noise on train
    accuracy, ranking = sparse_probe_accuracies(train, y_train, test, y_test, [1, 2])
    assert ranking[0] == 4 and 1 not in ranking[:1]
    assert accuracy["1"] == 1.0


def _feature_tasks(n=400, d=24, seed=0):
    """Rows x = f * direction + noise, the label is f > 0; one token task on a pool of these rows."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.zeros(d)
    direction[0] = 1.0
    labels = torch.rand(n, generator=g) < 0.5
    x = 0.3 * torch.randn(n, d, generator=g)
    x[:, 0] = labels.float() * (1 + torch.rand(n, generator=g))
    rng = random.Random(seed)
    pos_train, neg_train, pos_test, neg_test = balanced_split(
        labels.nonzero().flatten().tolist(), (~labels).nonzero().flatten().tolist(), 150, 0.25, rng
    )

    def join(pos, neg):
        return torch.tensor(pos + neg), torch.tensor([True] * len(pos) + [False] * len(neg))

    task = Task("feature", "token", "tokens", *join(pos_train, neg_train), *join(pos_test, neg_test))
    return {"tokens": x[:, None, :]}, [task]


def _dictionary(d, d_sae, true_latent: bool, seed=0):
    spec = make_spec(ReLUConfig(d_sae=d_sae, normalize_input=False, seed=seed), d_in=d, d_out=d)
    sae = build_sae(spec).eval()
    g = torch.Generator().manual_seed(seed + 10)
    enc = torch.randn(d_sae, d, generator=g)
    enc[:, 0] = 0  # no latent reads the feature ...
    if true_latent:
        enc[0] = 0
        enc[0, 0] = 1.0  # ... except latent 0, which is it
    with torch.no_grad():
        sae.W_enc.copy_(enc / enc.norm(dim=1, keepdim=True))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_the_true_feature_scores_one_and_a_random_latent_chance():
    pools, tasks = _feature_tasks()
    dense = dense_accuracies(pools, tasks)
    assert dense["feature"] >= 0.97
    with_feature = score_probing(_dictionary(24, 32, True), pools, tasks, dense, [1, 2, 5])
    (row,) = with_feature.tasks
    assert row.latents[0] == 0 and row.sparse_accuracy["1"] >= 0.97
    assert row.train_examples == 2 * 150 - 2 * 38 and row.test_examples == 2 * 38
    without = score_probing(_dictionary(24, 32, False), pools, tasks, dense, [1, 2, 5])
    assert 0.35 <= without.tasks[0].sparse_accuracy["1"] <= 0.65
    assert without.mean_sparse_accuracy["1"] == without.tasks[0].sparse_accuracy["1"]
    assert with_feature.mean_dense_accuracy == without.mean_dense_accuracy == dense["feature"]


class WordTokenizer:
    bos_token_id = 0

    def __init__(self, tokens):
        self.tokens = ["<bos>", *tokens]
        self.vocab_size = len(self.tokens)

    def token_strings(self, ids):
        return [self.tokens[i] for i in ids]

    def encode(self, text):
        return [self.tokens.index(t) for t in text.split("|")]


def test_token_task_labels():
    words = ["The", " cat", " (", "born", " 5", " May", ")", " ran", ".", " Paris", "Ok", "12", " ("]
    tok = WordTokenizer(words)
    ids = [0] + [tok.tokens.index(w) for w in words] + [0, tok.tokens.index("born")]
    labels = token_task_labels(torch.tensor([ids]), tok)
    assert set(labels) == set(TOKEN_TASKS)

    def positive(name):
        return [tok.tokens[ids[p]] for p in labels[name][0].nonzero().flatten().tolist()]

    assert positive("digit") == [" 5", "12"]
    assert positive("capitalised_word_start") == ["The", " May", " Paris"]  # "Ok" continues "Paris"
    assert positive("date_word") == [" May"]
    assert positive("punctuation") == [" (", ")", ".", " ("]
    # inside "(...)": after the "(" up to and including ")"; a BOS ends the document (and the open "(")
    assert positive("in_parentheses") == ["born", " 5", " May", ")"]
    assert not labels["digit"][0, 0] and not labels["capitalised_word_start"][0, -2]


def test_balanced_split_and_topic_tasks():
    rng = random.Random(0)
    pos_train, neg_train, pos_test, neg_test = balanced_split(range(30), range(100, 400), 1000, 0.2, rng)
    assert len(pos_train) == len(neg_train) == 24 and len(pos_test) == len(neg_test) == 6
    assert not set(pos_train) & set(pos_test) and not set(neg_train) & set(neg_test)

    cfg = ProbingConfig(test_fraction=0.25, min_examples_per_class=2, examples_per_class=100)
    passages = Passages([[i] for i in range(60)], [i // 20 for i in range(60)], ["x", "y", "z"])
    tasks = topic_tasks(passages, cfg, rng)
    assert [t.name for t in tasks] == ["x", "y", "z"]
    train_ids = {int(i) for t in tasks for i in t.train}
    test_ids = {int(i) for t in tasks for i in t.test}
    assert not train_ids & test_ids  # one split of the passages serves every task
    for label, t in enumerate(tasks):
        for idx, y in ((t.train, t.y_train), (t.test, t.y_test)):
            assert int(y.sum()) == int((~y).sum())  # balanced
            assert all(passages.labels[int(i)] == label for i in idx[y])
            others = [passages.labels[int(i)] for i in idx[~y]]
            assert label not in others and abs(others.count((label + 1) % 3) - others.count((label + 2) % 3)) <= 1

    docs = ["a|b|c|d|e|f|g|h", "a|b", "a|b|c|d|e|f"]
    chosen = topic_passages(
        docs,
        WordTokenizer(list("abcdefgh")),
        ProbingConfig(topic_classes=2, passage_tokens=2, min_examples_per_class=2),
    )
    assert chosen.names == ["topic: a|b|c|d|e|f|g|h", "topic: a|b|c|d|e|f"]
    assert chosen.labels == [0] * 4 + [1] * 3 and chosen.tokens[:2] == [[1, 2], [3, 4]]


def _text(seed: int, topic: str) -> str:
    rng = random.Random(seed)
    sentences = []
    for _ in range(120):
        month = rng.choice(["May", "June", "March"])
        sentences.append(
            f"The {topic} ({rng.randint(1, 99)} {month} {rng.randint(1000, 2000)}) was "
            f"{rng.choice(['big', 'small', 'old'])}, said {rng.choice(['Ann', 'Bob'])}."
        )
    return " ".join(sentences)


def test_probing_runs_on_the_tiny_model_with_its_baseline(tiny_model, tiny_contexts):
    hook = "blocks.1.hook_resid_post"
    sae = build_sae(make_spec(TopKConfig(hook_in=hook, hook_out=hook, d_sae=64, k=4), d_in=32, d_out=32)).eval()
    docs = [_text(i, topic) for i, topic in enumerate(["river", "castle", "engine"])]
    contexts = torch.tensor(
        [
            [tiny_model.tokenizer.bos_token_id, *tiny_model.tokenizer.encode(docs[0])[i : i + 63]]
            for i in range(0, 1500, 63)
        ]
    )
    cfg = ProbingConfig(
        k_values=[1, 2, 5],
        examples_per_class=60,
        min_examples_per_class=10,
        passage_tokens=16,
        passages_per_class=30,
        topic_classes=3,
    )
    result = probing(sae, tiny_model, contexts, docs, cfg)
    names = [t.name for t in result.tasks]
    assert names[:4] == ["digit", "capitalised_word_start", "punctuation", "in_parentheses"]
    assert "date_word" in result.skipped  # byte tokens are never whole month names
    assert len(names) == 7 and all(t.level == "text" for t in result.tasks[4:])
    assert result.random_baseline is not None and result.random_baseline.random_baseline is None
    assert [t.name for t in result.random_baseline.tasks] == names
    for r in (result, result.random_baseline):
        assert set(r.mean_sparse_accuracy) == {"1", "2", "5"}
        assert all(0 <= t.sparse_accuracy[k] <= 1 and len(t.latents) == 5 for t in r.tasks for k in ("1", "2", "5"))
    assert result.tasks[0].dense_accuracy == result.random_baseline.tasks[0].dense_accuracy
    assert probing(sae, tiny_model, contexts, docs, cfg) == result  # seeded end to end


def test_cli_eval_runs_the_probing_suite(tmp_path, capsys):
    from lm_saes.cli import main

    hook = "blocks.0.hook_resid_post"
    source = tmp_path / "texts"
    source.mkdir()
    for i, topic in enumerate(["river", "castle"]):
        (source / f"{topic}.txt").write_text(_text(i, topic))
    cfg = RunConfig(
        output=str(tmp_path / "run"),
        model=ModelConfig(name="tiny", tiny_layers=2, tiny_d_model=32),
        data=DataConfig(source=str(source), context_size=64, max_tokens=4000, eval_tokens=2000),
        activations={"hooks": [hook]},
        sae={"architecture": "topk", "d_sae": 64, "k": 4},
    )
    cfg.eval.probing = ProbingConfig(
        k_values=[1, 2], min_examples_per_class=10, passage_tokens=16, passages_per_class=20
    )
    run = LocalObjectStore(tmp_path / "run")
    run.put_json("config.json", cfg.model_dump(mode="json"))
    build_sae(make_spec(cfg.sae, d_in=32, d_out=32, model="tiny")).save(run, "sae")
    out = tmp_path / "report.json"
    assert main(["-q", "eval", "--sae", str(tmp_path / "run" / "sae"), "--suite", "probing", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["probing"]["mean_sparse_accuracy"].keys() == {"1", "2"}
    assert report["probing"]["random_baseline"]["tasks"] and report["seconds"]["probing"] > 0
    assert report["absorption"] is None and report["core"] is None
    # the byte-level tiny model has no single-token words: absorption says so instead of scoring nothing
    assert main(["-q", "eval", "--sae", str(tmp_path / "run" / "sae"), "--suite", "absorption"]) == 2
    assert "subword vocabulary" in capsys.readouterr().err
