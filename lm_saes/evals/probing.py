"""Sparse probing: how well the best k latents of an SAE classify labelled tasks, beside a dense probe.

SAEBench's sparse probing (`sae_bench/evals/sparse_probing`, 0.6.0) on tasks built offline from
the shipped text, no downloads:

- token level, on the held-out contexts (one example is one token's activation):
  `digit` (the token is digits), `capitalised_word_start` (it starts a word with a capital),
  `date_word` (a capitalised month or weekday name), `punctuation` (only punctuation) and
  `in_parentheses` (a "(" opened earlier in the context is still open: a property of the
  context, not of the token);
- text level (one example is a passage, its activations averaged over the tokens after BOS, as
  SAEBench averages over a text's tokens): `topic: ...`, passages of one of the
  `topic_classes` longest documents of the source against passages of the others, as SAEBench's
  multi-class datasets (professions, news topics) are probed one class against the rest.

For each task, as SAEBench's `train_probe_on_activations`: a balanced set (as many negatives as
positives, drawn evenly from the other classes for text tasks) split into train and test; a
logistic regression on the dense activations; and for each k, the k latents whose mean
activation differs most between the classes on the train split (`get_top_k_mean_diff_mask`:
absolute difference), and a logistic regression on those k alone. Test accuracy is reported.

Deviations: SAEBench trains the dense probe with AdamW and keeps its best test epoch; here every
probe is scikit-learn's logistic regression (SAEBench's `train_sklearn_probe`, C = 1,
max_iter = 1000). Tasks with fewer than `min_examples_per_class` positives are skipped and named.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from lm_saes.config import ProbingConfig
from lm_saes.evals.absorption import encode, random_dictionary
from lm_saes.extras import require
from lm_saes.models import LanguageModel
from lm_saes.models.tokenizers import Tokenizer
from lm_saes.saes import SparseAutoencoder

TOKEN_TASKS = ("digit", "capitalised_word_start", "date_word", "punctuation", "in_parentheses")
MONTHS = "January February March April May June July August September October November December"
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday"
DATE_WORDS = frozenset(f"{MONTHS} {WEEKDAYS}".split(" "))
PROBE_MAX_ITER = 1000  # SAEBench train_sklearn_probe: "increased due to convergence warnings"


class ProbingTaskResult(BaseModel):
    name: str
    level: Literal["token", "text"]
    train_examples: int = Field(description="Both classes together (half each)")
    test_examples: int
    dense_accuracy: float
    sparse_accuracy: dict[str, float] = Field(description="Test accuracy of the probe on the best k latents, by k")
    latents: list[int] = Field(description="The latents by mean-activation difference on the train split, best first")


class ProbingResult(BaseModel):
    k_values: list[int]
    tasks: list[ProbingTaskResult]
    skipped: dict[str, str] = Field(default_factory=dict, description="Tasks left out, and why")
    mean_dense_accuracy: float
    mean_sparse_accuracy: dict[str, float] = Field(description="Mean over tasks, by k")
    random_baseline: ProbingResult | None = Field(
        None, description="The same tasks and splits on a random dictionary of the same shape"
    )


class Task(NamedTuple):
    name: str
    level: Literal["token", "text"]
    pool: str  # which examples' rows it indexes
    train: torch.Tensor  # [n] example indices
    y_train: torch.Tensor  # [n] bool
    test: torch.Tensor
    y_test: torch.Tensor


# --- labels -------------------------------------------------------------------------------------
def token_task_labels(contexts: torch.Tensor, tokenizer: Tokenizer) -> dict[str, torch.Tensor]:
    """{task: [n, pos] bool} for the token-level tasks; BOS positions are never positive."""
    bos = tokenizer.bos_token_id
    unique = sorted(set(contexts.flatten().tolist()))
    text = dict(zip(unique, tokenizer.token_strings(unique), strict=True))
    labels = {name: torch.zeros(contexts.shape, dtype=torch.bool) for name in TOKEN_TASKS}
    for row, ids in enumerate(contexts.tolist()):
        previous: str | None = None
        depth = 0
        for pos, token in enumerate(ids):
            if token == bos:
                previous, depth = None, 0
                continue
            s = text[token]
            stripped = s.strip()
            starts_word = s[:1].isspace() or previous is None or previous[-1:].isspace()
            first = s.lstrip()[:1]
            labels["digit"][row, pos] = stripped.isascii() and stripped.isdigit()
            labels["capitalised_word_start"][row, pos] = starts_word and first.isascii() and first.isupper()
            labels["date_word"][row, pos] = stripped in DATE_WORDS
            labels["punctuation"][row, pos] = bool(stripped) and all(c in string.punctuation for c in stripped)
            labels["in_parentheses"][row, pos] = depth > 0
            depth = max(0, depth + s.count("(") - s.count(")"))
            previous = s
    return labels


def balanced_split(
    positives: Sequence[int], negatives: Sequence[int], cap: int, test_fraction: float, rng: random.Random
) -> tuple[list[int], list[int], list[int], list[int]]:
    """(train positives, train negatives, test positives, test negatives): n of each class, n = min(sizes, cap)."""
    n = min(len(positives), len(negatives), cap)
    pos, neg = rng.sample(list(positives), n), rng.sample(list(negatives), n)
    n_test = max(1, round(n * test_fraction))
    return pos[n_test:], neg[n_test:], pos[:n_test], neg[:n_test]


def _task(name: str, level, pool: str, train: tuple[list[int], list[int]], test: tuple[list[int], list[int]]) -> Task:
    def join(pos: list[int], neg: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(pos + neg, dtype=torch.long), torch.tensor([True] * len(pos) + [False] * len(neg))

    return Task(name, level, pool, *join(*train), *join(*test))


# --- text-level passages ------------------------------------------------------------------------
class Passages(NamedTuple):
    tokens: list[list[int]]  # passage_tokens ids each (no BOS)
    labels: list[int]  # topic index
    names: list[str]


def topic_passages(documents: Iterable[str], tokenizer: Tokenizer, cfg: ProbingConfig) -> Passages:
    """Passages of the `topic_classes` longest documents (among the first `max_documents`)."""
    texts = []
    for i, text in enumerate(documents):
        if i >= cfg.max_documents:
            break
        texts.append(text)
    longest = sorted(range(len(texts)), key=lambda i: -len(texts[i]))[: cfg.topic_classes]
    rng = random.Random(cfg.seed)
    out = Passages([], [], [])
    for i in sorted(longest):
        ids = tokenizer.encode(texts[i])
        windows = [
            ids[s : s + cfg.passage_tokens] for s in range(0, len(ids) - cfg.passage_tokens + 1, cfg.passage_tokens)
        ]
        if len(windows) < cfg.min_examples_per_class:
            continue
        chosen = sorted(rng.sample(range(len(windows)), min(cfg.passages_per_class, len(windows))))
        label = len(out.names)
        out.names.append("topic: " + " ".join(texts[i].split()[:4])[:48])
        out.tokens.extend(windows[w] for w in chosen)
        out.labels.extend([label] * len(chosen))
    return out


def topic_tasks(passages: Passages, cfg: ProbingConfig, rng: random.Random) -> list[Task]:
    """One task per topic: its passages against an equal number drawn evenly from the other topics.

    Passages are split into train and test per topic first, then each task's classes are drawn
    within a split (SAEBench's prepare_probe_data on its train and test sets).
    """
    n_classes = len(passages.names)
    if n_classes < 2:
        return []
    by_split: dict[str, dict[int, list[int]]] = {"train": {}, "test": {}}
    for label in range(n_classes):
        members = [i for i, y in enumerate(passages.labels) if y == label]
        members = rng.sample(members, len(members))
        n_test = max(1, round(len(members) * cfg.test_fraction))
        by_split["test"][label], by_split["train"][label] = members[:n_test], members[n_test:]

    def draw(split: dict[int, list[int]], label: int) -> tuple[list[int], list[int]]:
        pos = split[label][: cfg.examples_per_class]
        others = [c for c in split if c != label]
        each = math.ceil(len(pos) / len(others))
        pool = [i for c in others for i in rng.sample(split[c], min(each, len(split[c])))]
        return pos, rng.sample(pool, min(len(pos), len(pool)))

    tasks = []
    for label, name in enumerate(passages.names):
        train, test = draw(by_split["train"], label), draw(by_split["test"], label)
        if min(map(len, (*train, *test))) == 0:
            continue
        tasks.append(_task(name, "text", "passages", train, test))
    return tasks


# --- probes ---------------------------------------------------------------------------------------
def probe_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Test accuracy of a logistic regression (scikit-learn, C = 1) trained on the train rows."""
    linear_model = require("sklearn.linear_model", "evals", "the probing suite's probes")
    probe = linear_model.LogisticRegression(max_iter=PROBE_MAX_ITER)
    probe.fit(x_train.double().numpy(), y_train.numpy())
    return float((probe.predict(x_test.double().numpy()) == y_test.numpy()).mean())


def top_latents_by_mean_difference(latents: torch.Tensor, labels: torch.Tensor, k: int) -> list[int]:
    """The k columns whose mean differs most (absolute) between the positive and negative rows."""
    difference = (latents[labels].double().mean(0) - latents[~labels].double().mean(0)).abs()
    return torch.sort(difference, descending=True, stable=True).indices[:k].tolist()


def sparse_probe_accuracies(
    latents_train: torch.Tensor,
    y_train: torch.Tensor,
    latents_test: torch.Tensor,
    y_test: torch.Tensor,
    k_values: Sequence[int],
) -> tuple[dict[str, float], list[int]]:
    """{str(k): test accuracy on the top k} and the ranking, chosen on the train split alone."""
    ranking = top_latents_by_mean_difference(latents_train, y_train, max(k_values))
    accuracy = {
        str(k): probe_accuracy(latents_train[:, ranking[:k]], y_train, latents_test[:, ranking[:k]], y_test)
        for k in k_values
    }
    return accuracy, ranking


@torch.no_grad()
def pooled_latents(sae: SparseAutoencoder, rows: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """[n, m]: each example's latents averaged over its L token rows ([n, L, d])."""
    n, length, d = rows.shape
    return torch.cat(
        [
            encode(sae, rows[i : i + batch].reshape(-1, d)).view(-1, length, sae.d_sae).mean(1)
            for i in range(0, n, batch)
        ]
    )


def score_probing(
    sae: SparseAutoencoder,
    pools: dict[str, torch.Tensor],
    tasks: Sequence[Task],
    dense: dict[str, float],
    k_values: Sequence[int],
    skipped: dict[str, str] | None = None,
) -> ProbingResult:
    """Sparse probes of one dictionary on prepared tasks; `dense` holds each task's dense accuracy."""
    if not tasks:
        raise ValueError(f"no probing task had enough examples: {skipped or {}}")
    latents = {name: pooled_latents(sae, rows) for name, rows in pools.items()}
    results = []
    for task in tasks:
        pool = latents[task.pool]
        accuracy, ranking = sparse_probe_accuracies(
            pool[task.train], task.y_train, pool[task.test], task.y_test, k_values
        )
        results.append(
            ProbingTaskResult(
                name=task.name,
                level=task.level,
                train_examples=len(task.train),
                test_examples=len(task.test),
                dense_accuracy=dense[task.name],
                sparse_accuracy=accuracy,
                latents=ranking,
            )
        )
    return ProbingResult(
        k_values=list(k_values),
        tasks=results,
        skipped=dict(skipped or {}),
        mean_dense_accuracy=float(np.mean([r.dense_accuracy for r in results])),
        mean_sparse_accuracy={str(k): float(np.mean([r.sparse_accuracy[str(k)] for r in results])) for k in k_values},
    )


def dense_accuracies(pools: dict[str, torch.Tensor], tasks: Sequence[Task]) -> dict[str, float]:
    """Each task's dense probe (the model's activations, averaged over an example's tokens)."""
    means = {name: rows.mean(1) for name, rows in pools.items()}
    return {t.name: probe_accuracy(means[t.pool][t.train], t.y_train, means[t.pool][t.test], t.y_test) for t in tasks}


# --- the suite ------------------------------------------------------------------------------------
class ProbingData(NamedTuple):
    pools: dict[str, torch.Tensor]  # name -> [n, L, d] token rows per example
    tasks: list[Task]
    skipped: dict[str, str]


@torch.no_grad()
def probing_data(
    model: LanguageModel,
    hook: str,
    contexts: torch.Tensor,
    documents: Iterable[str] | None,
    cfg: ProbingConfig,
    progress: bool = False,
) -> ProbingData:
    """The tasks, their balanced splits, and the model's activations of the examples they use."""
    rng = random.Random(cfg.seed)
    contexts = contexts[: max(1, -(-cfg.max_tokens // contexts.shape[1]))]
    labels = token_task_labels(contexts, model.tokenizer)
    usable = (contexts != model.tokenizer.bos_token_id).flatten()
    tasks: list[Task] = []
    skipped: dict[str, str] = {}
    for name in TOKEN_TASKS:
        flat = labels[name].flatten()
        positives = (flat & usable).nonzero().flatten().tolist()
        negatives = (~flat & usable).nonzero().flatten().tolist()
        if min(len(positives), len(negatives)) < cfg.min_examples_per_class:
            skipped[name] = (
                f"{len(positives)} positives and {len(negatives)} negatives in {int(usable.sum())} held-out tokens; "
                f"needs {cfg.min_examples_per_class} of each"
            )
            continue
        pos_train, neg_train, pos_test, neg_test = balanced_split(
            positives, negatives, cfg.examples_per_class, cfg.test_fraction, rng
        )
        tasks.append(_task(name, "token", "tokens", (pos_train, neg_train), (pos_test, neg_test)))

    pools: dict[str, torch.Tensor] = {}
    # Only the token positions some task uses are kept (re-indexed), not all held-out activations.
    used = sorted({int(i) for t in tasks for i in torch.cat([t.train, t.test])})
    if used:
        where = {position: row for row, position in enumerate(used)}
        tasks = [
            t._replace(
                train=torch.tensor([where[int(i)] for i in t.train], dtype=torch.long),
                test=torch.tensor([where[int(i)] for i in t.test], dtype=torch.long),
            )
            for t in tasks
        ]
        wanted = torch.zeros(contexts.numel(), dtype=torch.bool)
        wanted[used] = True
        wanted = wanted.view(contexts.shape)
        rows = []
        for start in tqdm(range(0, len(contexts), cfg.batch_contexts), desc="probing tokens", disable=not progress):
            batch = contexts[start : start + cfg.batch_contexts]
            keep = wanted[start : start + cfg.batch_contexts]
            if keep.any():
                acts = model.activations(batch.to(model.device), [hook])[hook]
                rows.append(acts[keep.to(acts.device)].float().cpu())
        pools["tokens"] = torch.cat(rows)[:, None, :]

    if documents is not None and cfg.topic_classes:
        passages = topic_passages(documents, model.tokenizer, cfg)
        if len(passages.names) < 2:
            skipped["topic"] = f"{len(passages.names)} documents with {cfg.min_examples_per_class} passages; needs 2"
        else:
            tasks += topic_tasks(passages, cfg, rng)
            bos = model.tokenizer.bos_token_id
            rows = []
            for start in tqdm(
                range(0, len(passages.tokens), cfg.batch_contexts), desc="probing passages", disable=not progress
            ):
                batch = torch.tensor([[bos, *ids] for ids in passages.tokens[start : start + cfg.batch_contexts]])
                rows.append(model.activations(batch.to(model.device), [hook])[hook][:, 1:].float().cpu())
            pools["passages"] = torch.cat(rows)  # BOS left out, as SAEBench masks it
    return ProbingData(pools, tasks, skipped)


def probing(
    sae: SparseAutoencoder,
    model: LanguageModel,
    contexts: torch.Tensor,
    documents: Iterable[str] | None,
    cfg: ProbingConfig,
    progress: bool = False,
) -> ProbingResult:
    """Sparse probing of `sae` (and of a random dictionary of its shape, when cfg.baseline)."""
    data = probing_data(model, sae.spec.input_hook, contexts, documents, cfg, progress)
    if not data.tasks:
        raise ValueError(f"no probing task had enough examples: {data.skipped}")
    dense = dense_accuracies(data.pools, data.tasks)
    result = score_probing(sae, data.pools, data.tasks, dense, cfg.k_values, data.skipped)
    if cfg.baseline:
        result.random_baseline = score_probing(
            random_dictionary(sae), data.pools, data.tasks, dense, cfg.k_values, data.skipped
        )
    return result
