"""Contexts where a feature is silent, verified on the analysis text itself.

Detection and fuzzing need contexts the explanation should *not* match. Two kinds, as in delphi:
- **random**: windows drawn uniformly from the analysis text;
- **hard** (delphi's "neighbours"): the top windows of the features whose decoder directions are
  closest to this one's. They look like the feature's own contexts (similar directions fire on
  similar text), so an explanation that only names the topic fails them.

A window counts as silent only if the feature's activation is exactly zero on every one of its
tokens *in its full context*: one forward pass (to the SAE's hook) over the contexts involved
checks that, for all requested features at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

from lm_saes.autointerp.examples import Context
from lm_saes.evals.universality import decoder_neighbours
from lm_saes.records import FeatureRecord

Window = tuple[int, int, int]  # (context row, start, length)


def neighbours(decoder: torch.Tensor, features: Sequence[int], k: int) -> dict[int, list[int]]:
    """The `k` features whose decoder rows have the highest cosine to each of `features`."""
    near = decoder_neighbours(decoder, k, features)
    return {f: [n.partner for n in row] for f, row in zip(features, near, strict=True)}


def locate(contexts: torch.Tensor, row: int, token_ids: Sequence[int]) -> int | None:
    """Where `token_ids` starts in context `row` (analysis windows are cut from it), or None."""
    if not 0 <= row < len(contexts) or not token_ids:
        return None
    window = torch.tensor(list(token_ids), dtype=contexts.dtype)
    n = len(window)
    line = contexts[row]
    if n > len(line):
        return None
    matches = (line.unfold(0, n, 1) == window).all(dim=1).nonzero()
    return int(matches[0]) if len(matches) else None


def find_negatives(
    activations: Callable[[torch.Tensor], torch.Tensor],
    contexts: torch.Tensor,
    features: Sequence[int],
    neighbour_records: dict[int, FeatureRecord],
    neighbour_ids: dict[int, list[int]],
    strings: Sequence[str],
    n_random: int,
    n_hard: int,
    window: int = 24,
    pool_size: int = 256,
    seed: int = 0,
    batch_contexts: int = 16,
) -> dict[int, list[Context]]:
    """Up to `n_random` random and `n_hard` neighbour windows per feature where it is silent.

    `activations(tokens [B, T]) -> [B, T, len(features)]` is the features' activation (zero at
    BOS); `neighbour_records[j]` holds the top examples of neighbour j. A feature short of hard
    negatives (few neighbour windows, or all of them firing) gets random ones instead.
    """
    rng = random.Random(seed)
    n_contexts, length = contexts.shape
    pool = rng.sample(range(n_contexts), min(pool_size, n_contexts))
    hard: dict[int, list[tuple[Window, int]]] = {}
    for feature in features:
        candidates: list[tuple[Window, int]] = []
        for j in neighbour_ids.get(feature, []):
            record = neighbour_records.get(j)
            for example in record.top_examples if record else []:
                start = locate(contexts, int(example.get("context", -1)), example["token_ids"])
                if start is not None:
                    candidates.append(((int(example["context"]), start, len(example["token_ids"])), j))
        rng.shuffle(candidates)
        hard[feature] = candidates[: 4 * n_hard]
    rows = sorted(set(pool) | {w[0] for c in hard.values() for w, _ in c})
    fires = _fires(activations, contexts, rows, batch_contexts)  # [len(rows), T, F] bool
    where = {row: i for i, row in enumerate(rows)}

    def silent(column: int, win: Window) -> bool:
        row, start, size = win
        return not bool(fires[where[row], start : start + size, column].any())

    def as_context(win: Window, source: str) -> Context:
        row, start, size = win
        ids = contexts[row, start : start + size].tolist()
        return Context(tuple(strings[t] for t in ids), (0.0,) * size, source, row)

    result: dict[int, list[Context]] = {}
    for column, feature in enumerate(features):
        chosen: list[Context] = []
        used: set[int] = set()
        for win, j in hard[feature]:
            if len(chosen) == n_hard:
                break
            if win[0] not in used and silent(column, win):
                chosen.append(as_context(win, f"neighbour-{j}"))
                used.add(win[0])
        want = n_random + n_hard - len(chosen)
        for row in rng.sample(pool, len(pool)):
            if want == 0:
                break
            size = min(window, length - 1)
            start = rng.randrange(1, length - size + 1)  # never the BOS position
            if row not in used and silent(column, (row, start, size)):
                chosen.append(as_context((row, start, size), "random"))
                used.add(row)
                want -= 1
        result[feature] = chosen
    return result


def _fires(
    activations: Callable[[torch.Tensor], torch.Tensor], contexts: torch.Tensor, rows: list[int], batch: int
) -> torch.Tensor:
    parts = []
    for i in range(0, len(rows), batch):
        tokens = contexts[rows[i : i + batch]]
        parts.append(activations(tokens) > 0)
    return torch.cat(parts) if parts else torch.zeros(0, contexts.shape[1], 0, dtype=torch.bool)
