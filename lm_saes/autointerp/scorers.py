"""Scores of an explanation: how well it predicts where its feature fires.

Definitions as delphi's (github.com/EleutherAI/delphi, `scorers/`):
- **detection**: the scorer model sees activating and silent contexts, shuffled, `per_prompt`
  at a time, and says for each whether the explained feature is present; the score is the
  balanced accuracy (mean of the true-positive and true-negative rates).
- **fuzzing**: the same contexts with tokens marked: the activating ones at the tokens where
  the feature fires (>= `mark_threshold` x the context's max), the silent ones at as many random
  tokens as an activating context has nonzero activations on average (delphi's count); the model says whether the marks fit
  the explanation. Balanced accuracy again.
- **embedding**: no language model: the cosine of the explanation's sentence embedding with
  each context's; the score is the AUROC of activating against silent contexts.

Answers that cannot be read (no list, or one of the wrong length) are left out of the score and
counted in `failed`, as delphi does. A score with no readable answer at all is None.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from lm_saes.autointerp.examples import Context
from lm_saes.autointerp.prompts import PROMPT_VERSION, Messages, classify_messages, parse_labels
from lm_saes.records import ExplanationScore


class Chat(Protocol):
    """What a scorer needs of an LLM client: one chat completion's text and token counts."""

    def __call__(self, messages: Messages, max_tokens: int) -> tuple[str, int, int]: ...


class Judged(NamedTuple):
    """One context as a scorer showed it, and the model's verdict (None: unreadable answer)."""

    text: str
    activating: bool
    prediction: bool | None


class ScoreResult(NamedTuple):
    score: ExplanationScore | None
    judged: list[Judged]
    prompt_tokens: int
    completion_tokens: int


def balanced_accuracy(truth: Sequence[bool], predicted: Sequence[bool | None]) -> float | None:
    """Mean of the true-positive and true-negative rates over readable predictions (None if none)."""
    pairs = [(t, p) for t, p in zip(truth, predicted, strict=True) if p is not None]
    if not pairs:
        return None
    positives = [p for t, p in pairs if t]
    negatives = [p for t, p in pairs if not t]
    rates = []
    if positives:
        rates.append(sum(positives) / len(positives))
    if negatives:
        rates.append(sum(not p for p in negatives) / len(negatives))
    return sum(rates) / len(rates)


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(a random positive scores above a random negative), ties counting half."""
    if not positive or not negative:
        return None
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def fuzz_marks(activating: Sequence[Context], negatives: Sequence[Context], threshold: float, seed: int) -> list[str]:
    """Marked texts: activating contexts at their firing tokens, then the silent ones at
    ceil(mean nonzero activations per activating context) random tokens each."""
    marked = [c.marked(threshold) for c in activating]
    counts = [sum(1 for a in c.activations if a > 0) for c in activating]  # delphi: nonzero activations
    n_wrong = max(1, math.ceil(sum(counts) / len(counts))) if counts else 1
    rng = random.Random(seed)
    for c in negatives:
        picks = set(rng.sample(range(len(c.tokens)), min(n_wrong, len(c.tokens))))
        marked.append(c.marked(positions=picks))
    return marked


def classify(
    kind: str,
    chat: Chat,
    explanation: str,
    activating: Sequence[Context],
    negatives: Sequence[Context],
    per_prompt: int = 5,
    threshold: float = 0.3,
    seed: int = 0,
    model: str = "",
) -> ScoreResult:
    """Detection or fuzzing of `explanation` on these contexts (shuffled with `seed`)."""
    if kind == "fuzzing":
        texts = fuzz_marks(activating, negatives, threshold, seed)
    elif kind == "detection":
        texts = [c.text for c in (*activating, *negatives)]
    else:
        raise ValueError(f"kind must be 'detection' or 'fuzzing', got {kind!r}")
    truth = [True] * len(activating) + [False] * len(negatives)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    predictions: dict[int, bool | None] = {}
    prompt_tokens = completion_tokens = 0
    for start in range(0, len(order), per_prompt):
        batch = order[start : start + per_prompt]
        reply, used_in, used_out = chat(
            classify_messages(kind, explanation, [texts[i] for i in batch]), 8 + 4 * len(batch)
        )
        prompt_tokens, completion_tokens = prompt_tokens + used_in, completion_tokens + used_out
        labels = parse_labels(reply, len(batch))
        for position, i in enumerate(batch):
            predictions[i] = None if labels is None else labels[position]
    judged = [Judged(texts[i], truth[i], predictions[i]) for i in range(len(texts))]
    value = balanced_accuracy(truth, [predictions[i] for i in range(len(texts))])
    failed = sum(p is None for p in predictions.values())
    score = (
        None
        if value is None
        else ExplanationScore(
            value=value,
            examples=len(texts) - failed,
            positives=sum(1 for i in range(len(texts)) if truth[i] and predictions[i] is not None),
            model=model,
            prompt_version=PROMPT_VERSION,
            failed=failed,
        )
    )
    return ScoreResult(score, judged, prompt_tokens, completion_tokens)


def embedding_score(
    encode: Callable[[list[str]], np.ndarray],
    explanation: str,
    activating: Sequence[Context],
    negatives: Sequence[Context],
) -> ScoreResult:
    """AUROC of cosine(explanation, context) for activating against silent contexts."""
    texts = [c.text for c in (*activating, *negatives)]
    vectors = encode([explanation, *texts])
    similarity = vectors[1:] @ vectors[0]
    n = len(activating)
    value = auroc(similarity[:n].tolist(), similarity[n:].tolist())
    judged = [Judged(t, i < n, None) for i, t in enumerate(texts)]
    score = (
        None
        if value is None
        else ExplanationScore(
            value=value, examples=len(texts), positives=n, model="all-MiniLM-L6-v2", prompt_version=PROMPT_VERSION
        )
    )
    return ScoreResult(score, judged, 0, 0)
