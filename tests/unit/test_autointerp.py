"""Autointerp's pure parts: example split, marks, prompts and parsing, scorers, negatives."""

import math
import random
import re

import pytest
import torch

from lm_saes.autointerp.examples import Context, ExampleConfig, split_examples
from lm_saes.autointerp.negatives import find_negatives, locate, neighbours
from lm_saes.autointerp.prompts import classify_messages, explain_messages, parse_explanation, parse_labels
from lm_saes.autointerp.scorers import auroc, balanced_accuracy, classify, embedding_score, fuzz_marks
from lm_saes.records import FeatureRecord


def example(context: int, peak: float, n: int = 6) -> dict:
    acts = [0.0] * n
    acts[n // 2] = peak
    return {
        "context": context,
        "max_activation": peak,
        "token_ids": list(range(n)),
        "activations": acts,
        "tokens": [f" w{context}_{i}" for i in range(n)],
    }


def record() -> FeatureRecord:
    top = [example(c, 10.0 - c * 0.1) for c in range(20)]
    quantiles = [
        {"interval": [q / 10, (q + 1) / 10], "examples": [example(100 + 10 * q + j, q + 0.5) for j in range(3)]}
        for q in range(10)
    ]
    return FeatureRecord(sae_id="s", index=3, top_examples=top, quantile_samples=quantiles)


def test_explainer_and_scorers_never_share_a_context():
    cfg = ExampleConfig(explain_top=10, explain_quantiles=4, test_activating=12)
    split = split_examples(record(), cfg)
    explain = {c.context for c in split.explain}
    held = {c.context for c in split.activating}
    assert len(split.explain) == 14 and len(split.activating) == 12 and not explain & held
    assert {c.context for c in split.explain if c.source == "top"} == set(range(0, 20, 2))
    # the held-out set spans the activation range, weak intervals included
    sources = {c.source for c in split.activating}
    assert "top" in sources and "quantile-0" in sources and "quantile-9" in sources
    assert split == split_examples(record(), cfg)  # deterministic per feature
    other = split_examples(record().model_copy(update={"index": 4}), cfg)
    assert [c.context for c in other.activating] != [c.context for c in split.activating]


def test_marks_wrap_runs_of_tokens():
    c = Context((" a", " b", " c", " d"), (0.0, 2.0, 1.0, 0.1), "top")
    assert c.marked() == " a<< b c d>>"
    assert c.marked(threshold=0.3) == " a<< b c>> d"
    assert c.marked(positions={0, 3}) == "<< a>> b c<< d>>"
    assert c.text == " a b c d" and c.max_activation == 2.0


def test_prompts_carry_the_marked_contexts_and_the_explanation():
    contexts = [Context((" not", " here"), (3.0, 0.0), "top"), Context((" I", " not"), (0.0, 5.0), "top")]
    messages = explain_messages(contexts)
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    question = messages[-1]["content"]
    assert question.index("1.  I<< not>>") < question.index("2. << not>> here")  # strongest first
    assert question.endswith("Marked most often: not")
    detect = classify_messages("detection", "negation", ["one\ntwo", "three"])
    assert detect[-1]["content"] == "Explanation: negation\n\nExcerpt 1: one\u21b5two\nExcerpt 2: three"


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Explanation: the word 'not'\nMore text", "the word 'not'"),
        ('explanation:  "negations" ', "negations"),
        ("\n\nnegation after verbs", "negation after verbs"),
        ("   ", None),
        ("Explanation: **\n", None),
        (
            "Explanation: the Roman Empire, the Roman Republic, the Roman Empire. It is",
            "the Roman Empire, the Roman Republic",
        ),
        ("Explanation: " + "very " * 40 + "long", " ".join(["very"] * 25)),
        ("Explanation: the U.S. army", "the U.S. army"),
    ],
)
def test_parse_explanation(reply, expected):
    assert parse_explanation(reply) == expected


@pytest.mark.parametrize(
    "reply, n, expected",
    [
        ("[1, 0, 1]", 3, [True, False, True]),
        ("Sure! [0,1] and then [1,1,0]", 3, [True, True, False]),
        ("['1', '0']", 2, [True, False]),
        ("[1, 0]", 3, None),  # wrong length: a failed answer, not a partial one
        ("1, 0, 1", 3, None),
        ("[1, 2, 0]", 3, None),
    ],
)
def test_parse_labels(reply, n, expected):
    assert parse_labels(reply, n) == expected


def test_balanced_accuracy_and_auroc_against_brute_force():
    rng = random.Random(0)
    for _ in range(50):
        truth = [rng.random() < 0.4 for _ in range(20)]
        pred = [rng.choice([True, False, None]) for _ in range(20)]
        pairs = [(t, p) for t, p in zip(truth, pred, strict=True) if p is not None]
        tp = sum(t and p for t, p in pairs) / max(1, sum(t for t, _ in pairs))
        tn = sum(not t and not p for t, p in pairs) / max(1, sum(not t for t, _ in pairs))
        has_pos, has_neg = any(t for t, _ in pairs), any(not t for t, _ in pairs)
        expected = (tp * has_pos + tn * has_neg) / (has_pos + has_neg) if pairs else None
        assert balanced_accuracy(truth, pred) == pytest.approx(expected)
        pos = [rng.random() for _ in range(7)]
        neg = [rng.choice(pos) if rng.random() < 0.2 else rng.random() for _ in range(5)]
        wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
        assert auroc(pos, neg) == pytest.approx(wins / 35)
    assert balanced_accuracy([True, False], [None, None]) is None


def contexts(word: str, n: int, firing: bool, offset: int = 0) -> list[Context]:
    out = []
    for i in range(n):
        tokens = [f" t{offset + i}", " the", word if firing else " cat", " sat"]
        out.append(Context(tuple(tokens), (0.0, 0.0, 4.0 if firing else 0.0, 0.0), "top", offset + i))
    return out


def oracle(word: str, kind: str):
    """A judge that answers from the excerpts alone: 'detection' - does the word occur;
    'fuzzing' - is it the marked token."""

    def chat(messages, max_tokens):
        body = messages[-1]["content"]
        excerpts = re.findall(r"Excerpt \d+: (.*)", body)
        if kind == "detection":
            labels = [int(word in e) for e in excerpts]
        else:
            labels = [int(f"<<{word}>>" in e) for e in excerpts]
        return str(labels), 100, 10

    return chat


@pytest.mark.parametrize("kind", ["detection", "fuzzing"])
def test_a_judge_that_knows_the_feature_scores_one_and_a_blind_one_half(kind):
    act, neg = contexts(" dog", 10, True), contexts(" dog", 10, False, offset=50)
    result = classify(kind, oracle(" dog", kind), "the word dog", act, neg, per_prompt=4, seed=1)
    assert result.score.value == 1.0 and result.score.examples == 20 and result.score.positives == 10
    assert result.prompt_tokens == 100 * 5 and result.score.failed == 0
    always_yes = classify(
        kind, lambda m, t: (str([1] * len(re.findall("Excerpt", m[-1]["content"]))), 1, 1), "x", act, neg, per_prompt=4
    )
    assert always_yes.score.value == 0.5
    garbage = classify(kind, lambda m, t: ("I think so!", 1, 1), "x", act, neg, per_prompt=4)
    assert garbage.score is None and all(j.prediction is None for j in garbage.judged)
    # every context shown exactly once, shuffled so positives are not first
    shown = [j.activating for j in result.judged]
    assert sorted(shown) == [False] * 10 + [True] * 10


def test_fuzzing_marks_random_tokens_of_silent_contexts():
    act = [Context((" a", " b", " c"), (1.0, 0.0, 1.0), "top"), Context((" a", " b", " c"), (0.0, 1.0, 0.0), "top")]
    neg = [Context(tuple(f" n{i}" for i in range(8)), (0.0,) * 8, "random")]
    texts = fuzz_marks(act, neg, threshold=0.3, seed=0)
    assert texts[:2] == ["<< a>> b<< c>>", " a<< b>> c"]
    assert texts[2].count(" n") == 8 and len(re.findall(r"<<| n\d>>", texts[2])) >= 2  # ceil(1.5) = 2 tokens marked
    assert sum(f" n{i}>>" in texts[2] or f"<< n{i}" in texts[2] for i in range(8)) == 2


def test_embedding_score_is_the_auroc_of_similarities():
    def encode(texts):  # a bag-of-words embedding: the explanation shares words with positives
        vocab = sorted({w for t in texts for w in t.split()})
        m = torch.tensor([[float(w in t.split()) for w in vocab] for t in texts])
        return torch.nn.functional.normalize(m, dim=-1).numpy()

    act, neg = contexts(" dog", 4, True), contexts(" dog", 4, False, offset=9)
    assert embedding_score(encode, "dog", act, neg).score.value == 1.0
    assert embedding_score(encode, "cat", act, neg).score.value == 0.0


def test_neighbours_are_the_closest_decoder_rows():
    decoder = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, -0.1]])
    assert neighbours(decoder, [0, 2], 2) == {0: [1, 2], 2: [1, 0]}


def test_negatives_are_silent_in_their_full_context():
    rng = torch.Generator().manual_seed(0)
    contexts_ = torch.randint(2, 50, (40, 32), generator=rng)
    contexts_[:, 0] = 1  # BOS

    # feature 0 fires on token 7 and on the token after a 9 (context matters); feature 1 on 8
    def activations(tokens):
        after_nine = torch.zeros_like(tokens, dtype=torch.bool)
        after_nine[:, 1:] = tokens[:, :-1] == 9
        return torch.stack([((tokens == 7) | after_nine).float(), (tokens == 8).float()], dim=-1)

    neighbour = FeatureRecord(
        sae_id="s",
        index=5,
        top_examples=[
            {"context": c, "token_ids": contexts_[c, 4:14].tolist(), "activations": [0.0] * 10} for c in range(10)
        ],
    )
    strings = [f"<{i}>" for i in range(50)]
    found = find_negatives(
        activations,
        contexts_,
        [0, 1],
        {5: neighbour},
        {0: [5], 1: [5]},
        strings,
        n_random=4,
        n_hard=3,
        window=8,
        pool_size=40,
        seed=0,
    )
    for column, feature in enumerate([0, 1]):
        chosen = found[feature]
        assert len(chosen) == 7 and len({c.context for c in chosen}) == 7
        assert sum(c.source == "neighbour-5" for c in chosen) == 3
        for c in chosen:
            ids = [strings.index(t) for t in c.tokens]
            start = locate(contexts_, c.context, ids)
            window = activations(contexts_[c.context : c.context + 1])[0, start : start + len(ids), column]
            assert start is not None and start > 0 and not window.any() and c.activations == (0.0,) * len(ids)
    assert locate(contexts_, 3, contexts_[3, 5:9].tolist()) == 5 and locate(contexts_, 99, [1]) is None
    assert math.isfinite(len(found))


def test_autointerp_config_parses_like_every_config():
    """`model` inside [llm] is the endpoint's model name, not the `model = "..."` shorthand."""
    from lm_saes.autointerp.run import AutointerpConfig
    from lm_saes.config import ConfigError, parse_config

    cfg = parse_config(
        {"sae_id": "s", "seed": 3, "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "some-model"}},
        AutointerpConfig,
    )
    assert cfg.llm.model == "some-model" and cfg.examples.seed == 3
    with pytest.raises(ConfigError, match="examples.per_prompt"):
        parse_config({"sae_id": "s", "examples": {"per_prompt": 0}}, AutointerpConfig)
