"""The contexts an explainer and its scorers see for one feature, taken from its analysis.

An analysis keeps, per feature, its top contexts and a sample of contexts in each tenth of its
activation range (`quantile_samples`). As in delphi, the explainer and the scorers never see the
same context: the explainer gets every other top context plus one sample from each of the upper
intervals; the scorers' activating set is the rest, drawn across the whole range (so a score
also asks whether the explanation covers weak activations, not only the strongest). Contexts
where the feature is silent come from `negatives.py`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, NamedTuple

from pydantic import Field

from lm_saes.config import Section
from lm_saes.records import FeatureRecord

MARK_OPEN, MARK_CLOSE = "<<", ">>"


class Context(NamedTuple):
    """A window of text: its tokens as strings and the feature's activation at each."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    source: str  # "top", "quantile-3" (interval 3 of 10), "random", "neighbour-812"
    context: int = -1  # the context's row in the analysis text (-1: unknown)

    @property
    def max_activation(self) -> float:
        return max(self.activations, default=0.0)

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def marked(self, threshold: float = 0.0, positions: set[int] | None = None) -> str:
        """The text with <<marks>> around runs of tokens: those whose activation exceeds
        `threshold` x the window's maximum, or exactly `positions` when given."""
        top = self.max_activation
        chosen = (
            positions
            if positions is not None
            else {i for i, a in enumerate(self.activations) if a > 0 and a >= threshold * top}
        )
        out, inside = [], False
        for i, token in enumerate(self.tokens):
            if (i in chosen) != inside:
                out.append(MARK_OPEN if not inside else MARK_CLOSE)
                inside = not inside
            out.append(token)
        if inside:
            out.append(MARK_CLOSE)
        return "".join(out)


class ExampleConfig(Section):
    """How many contexts of each kind a feature's explanation and scores use."""

    explain_top: int = Field(10, ge=1, le=50, description="Top contexts shown to the explainer")
    explain_quantiles: int = Field(4, ge=0, le=10, description="Upper activation intervals sampled for the explainer")
    test_activating: int = Field(10, ge=2, le=100, description="Activating contexts each scorer sees")
    random_negatives: int = Field(5, ge=0, le=100, description="Random contexts where the feature is silent")
    hard_negatives: int = Field(5, ge=0, le=100, description="Silent contexts that activate similar features")
    per_prompt: int = Field(5, ge=1, le=20, description="Contexts per detection/fuzzing prompt")
    mark_threshold: float = Field(0.3, ge=0.0, le=1.0, description="Marked tokens: activation >= this x the max")
    seed: int = 0


class FeatureExamples(NamedTuple):
    explain: list[Context]
    activating: list[Context]  # held out from the explainer, across the activation range


def context_from_example(example: dict[str, Any], source: str, strings: Sequence[str] | None = None) -> Context:
    """An analysis example (`token_ids`, `activations`, optionally `tokens`) as a Context."""
    tokens = example.get("tokens")
    if tokens is None:
        if strings is None:
            raise ValueError("example has no `tokens`; pass the vocabulary strings")
        tokens = [strings[t] for t in example["token_ids"]]
    return Context(
        tuple(tokens), tuple(float(a) for a in example["activations"]), source, int(example.get("context", -1))
    )


def split_examples(record: FeatureRecord, cfg: ExampleConfig, strings: Sequence[str] | None = None) -> FeatureExamples:
    """The explainer's and the scorers' contexts, disjoint, chosen deterministically per feature."""
    rng = random.Random(f"{cfg.seed}-{record.sae_id}-{record.index}")
    top = [context_from_example(e, "top", strings) for e in record.top_examples]
    explain, held_top = top[0::2][: cfg.explain_top], top[1::2]
    # quantile_samples: [{"interval": [lo, hi], "examples": [...]}, ...], lowest interval first
    intervals = [
        [context_from_example(e, f"quantile-{i}", strings) for e in bucket.get("examples", [])]
        for i, bucket in enumerate(record.quantile_samples)
    ]
    seen = {c.context for c in explain}
    for bucket in reversed(intervals[-cfg.explain_quantiles :] if cfg.explain_quantiles else []):
        fresh = [c for c in bucket if c.context not in seen]
        if fresh:
            pick = rng.choice(fresh)
            explain.append(pick)
            seen.add(pick.context)
    # held out: round-robin over the intervals (weak to strong) and the held-out top contexts
    pools = [[c for c in bucket if c.context not in seen] for bucket in intervals] + [held_top]
    for pool in pools:
        rng.shuffle(pool)
    activating: list[Context] = []
    while len(activating) < cfg.test_activating and any(pools):
        for pool in pools:
            while pool and len(activating) < cfg.test_activating:
                candidate = pool.pop()
                if candidate.context not in seen and candidate.max_activation > 0:
                    activating.append(candidate)
                    seen.add(candidate.context)
                    break
    return FeatureExamples(explain, activating)
