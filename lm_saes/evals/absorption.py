"""Feature absorption on the first-letter task, as SAEBench defines it (Chanin et al., "A is for Absorption").

The procedure of SAEBench's `sae_bench/evals/absorption` (0.6.0), on any model of ours:

1. Vocabulary: single tokens that are a leading space and ASCII letters (" cat"), sampled up
   to `words_per_letter` per first letter and split into train and test words (80 / 20).
2. Prompts: in-context examples then the word, "\\n{ex} has the first letter: E\\n...{word} has
   the first letter:", examples drawn from the word's own split; activations of the SAE's hook
   at the word's position.
3. Ground truth: a logistic-regression probe per letter (one against the rest, balanced
   classes) on the train words; its F1 on the test words says whether the model knows the letter.
4. Main latents: k-sparse probing. An L1-penalised one-vs-rest probe per letter on the SAE's
   latents of the train words ranks the latents (largest positive weight first); for
   k = 1..max_k a logistic regression on the top k is scored (F1) on the test words. The main latents are the top k while each k raises the F1
   by more than `f1_jump_threshold` over the previous best (SAEBench's feature-split rule).
5. Absorption, for each test word of the letter that the probe calls positive (its true
   positives), with p the unit probe direction, x the activation, a_j the latents and
   c_j = a_j d_j.p (latent j's part of the reconstruction, projected on p):
   - absorption fraction: 0 if the main latents' projection already reaches x.p or the best
     `ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS` other latents (cosine with p at least
     `ABSORPTION_FRACTION_PROBE_COS_THRESHOLD`, positive projection) carry less than
     `ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD` of x.p; 1 if the main latents project
     nothing; otherwise absorbers / (absorbers + main), the absorbers capped at what the main
     latents leave of x.p;
   - full absorption: no main latent fires, and the latent projecting most on p has cosine at
     least `FULL_ABSORPTION_PROBE_COS_THRESHOLD` and carries at least the proportion threshold of x.p.
   A letter's absorption rate is the mean fraction over its true positives, its full-absorption
   rate the share fully absorbed; the SAE's figures are the means over the letters whose probe
   F1 exceeds `min_probe_f1` (SAEBench needs `min_letters` such letters for a result).

Where this differs from SAEBench: the vocabulary is bounded per
letter; the dense probes are scikit-learn logistic regressions (SAEBench trains them with Adam);
the L1 multi-probe's objective is SAEBench's but solved to convergence by liblinear (SAEBench
runs 50 epochs of Adam at batch 4096: on a few hundred words that is 50 steps, and the latents it
ranks first fire on one or two train words: the 1-sparse probes' mean test F1 on the main SAE
was 0.07 that way and 0.41 converged, over 20 words a letter); the absorption step reuses the test prompts' activations (SAEBench
builds fresh prompts for the same words); c_j is in raw activation units, a_j d_j.p /
output_scale (SAEBench uses a_j cos(d_j, p), the same for unit decoder rows and unscaled inputs;
ours scale inputs by `input_scale`).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from lm_saes.config import AbsorptionConfig
from lm_saes.extras import require
from lm_saes.models import LanguageModel
from lm_saes.models.tokenizers import Tokenizer
from lm_saes.saes import SparseAutoencoder, build_sae

LETTERS = "abcdefghijklmnopqrstuvwxyz"

# Thresholds of SAEBench, sae_bench/evals/absorption/feature_absorption.py (0.6.0), passed from
# there to FeatureAbsorptionCalculator:
FULL_ABSORPTION_PROBE_COS_THRESHOLD = 0.025  # the top projecting latent's cosine with the probe (full absorption)
ABSORPTION_FRACTION_PROBE_COS_THRESHOLD = 0.1  # each potential absorber's cosine with the probe (fraction)
ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD = 0.4  # absorbers' share of the probe projection (both)
ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS = 3  # latents that may share one absorption (fraction)
# feature_absorption_calculator.py: EPS (a main latent at or below it has not fired)
MAIN_LATENT_FIRES = 1e-8
# k-sparse probing, k_sparse_probing.py (train_sparse_multi_probe, train_k_sparse_probes): the L1
# strength of the multi-probe that ranks latents (eval_config.py k_sparse_probe_l1_decay), and
# the iterations of the scikit-learn logistic regression refitted on the top k latents.
K_SPARSE_L1_DECAY = 0.01
K_PROBE_MAX_ITER = 500
L1_PROBE_MAX_ITER = 1000
# The dense letter probes: scikit-learn's defaults (C = 1) with balanced classes, as SAEBench's
# pos_weight balances its BCE probes; more iterations than the default for raw residual scales.
LETTER_PROBE_MAX_ITER = 2000


class LetterAbsorption(BaseModel):
    letter: str
    train_words: int
    test_words: int
    probe_f1: float = Field(description="The dense probe's F1 on the test words")
    evaluated: bool = Field(description="probe_f1 above min_probe_f1: counted in the means")
    probe_true_positives: int = Field(description="Test words of the letter the probe calls positive")
    main_latents: list[int] = Field(description="The letter's latents by the feature-split rule")
    sparse_f1: list[float] = Field(description="F1 of the k-sparse probe, k = 1..max_k")
    absorption_rate: float = Field(description="Mean absorption fraction over the probe's true positives")
    full_absorption_rate: float
    full_absorptions: int


class AbsorptionResult(BaseModel):
    """First-letter absorption of one dictionary (SAEBench's mean_absorption_fraction_score etc.)."""

    words: int
    train_words: int
    test_words: int
    probe_f1: float = Field(description="The dense probes' test F1, mean over letters")
    letters_evaluated: int = Field(description="Letters whose probe F1 exceeds min_probe_f1")
    enough_letters: bool = Field(description="letters_evaluated >= min_letters (SAEBench reports nothing below)")
    mean_absorption_rate: float
    mean_full_absorption_rate: float
    mean_main_latents: float = Field(description="Main latents per letter (SAEBench mean_num_split_features)")
    letters: list[LetterAbsorption]
    random_baseline: AbsorptionResult | None = Field(
        None, description="The same procedure on a random dictionary of the same shape"
    )


class FirstLetterData(NamedTuple):
    """Words, their letters (index in LETTERS), which ones train, and the activations at the word."""

    words: list[str]
    letters: torch.Tensor  # [n] long
    train: torch.Tensor  # [n] bool
    acts: torch.Tensor  # [n, d] float32


class LetterProbes(NamedTuple):
    """One probe per letter seen in both splits (others: zero rows, f1 None)."""

    weights: torch.Tensor  # [26, d]
    bias: torch.Tensor  # [26]
    f1: list[float | None]  # test F1 per letter


# --- vocabulary and prompts ---------------------------------------------------------------
def vocabulary(tokenizer: Tokenizer) -> list[tuple[int, str]]:
    """(token id, text) of the tokens that are a leading space and ASCII letters and encode back to themselves."""
    ids = list(range(tokenizer.vocab_size))
    candidates = [
        (i, text)
        for i, text in zip(ids, tokenizer.token_strings(ids), strict=True)
        if len(text) > 1 and text[0] == " " and text[1:].isascii() and text[1:].isalpha()
    ]
    encode_batch = getattr(tokenizer, "encode_batch", None)
    texts = [text for _, text in candidates]
    encoded = encode_batch(texts) if encode_batch else [tokenizer.encode(t) for t in texts]
    return [(i, text) for (i, text), back in zip(candidates, encoded, strict=True) if back == [i]]


def sample_words(vocab: Sequence[tuple[int, str]], per_letter: int, seed: int) -> list[tuple[int, str]]:
    """At most `per_letter` words of each first letter, in letter order (a seeded sample)."""
    rng = random.Random(seed)
    by_letter: dict[int, list[tuple[int, str]]] = {}
    for word in sorted(vocab):
        by_letter.setdefault(letter_index(word[1]), []).append(word)
    chosen: list[tuple[int, str]] = []
    for letter in sorted(by_letter):
        words = by_letter[letter]
        chosen += sorted(rng.sample(words, min(per_letter, len(words))))
    return chosen


class PromptPieces(NamedTuple):
    bos: int
    separator: list[int]  # "\n"
    before: list[int]  # the template before {word}
    after: list[int]  # the template after {word}
    answers: list[list[int]]  # " A" .. " Z"


def prompt_pieces(tokenizer: Tokenizer, template: str) -> PromptPieces:
    before, after = template.split("{word}")
    return PromptPieces(
        tokenizer.bos_token_id,
        tokenizer.encode("\n"),
        tokenizer.encode(before) if before else [],
        tokenizer.encode(after) if after else [],
        [tokenizer.encode(" " + letter.upper()) for letter in LETTERS],
    )


def icl_prompt(word: int, examples: Sequence[tuple[int, int]], pieces: PromptPieces) -> tuple[list[int], int]:
    """Token ids of "\\n{ex} has the first letter: E\\n ... {word} has the first letter:" and the word's position.

    Built piece by piece from token ids (so the word is its vocabulary token), BOS first, with
    the separator before the first example as SAEBench's prepend_separator_to_first_example.
    `examples` are (token id, letter index).
    """
    ids = [pieces.bos, *pieces.separator]
    for example, letter in examples:
        ids += [*pieces.before, example, *pieces.after, *pieces.answers[letter], *pieces.separator]
    ids += [*pieces.before, word]
    position = len(ids) - 1
    return ids + pieces.after, position


def letter_index(text: str) -> int:
    return LETTERS.index(text.strip()[0].lower())


def split_words(n: int, train_fraction: float, rng: random.Random) -> torch.Tensor:
    """[n] bool, True for the train words: a shuffled int(n * train_fraction) of them (SAEBench's split)."""
    order = rng.sample(range(n), n)
    train = torch.zeros(n, dtype=torch.bool)
    train[order[: int(n * train_fraction)]] = True
    return train


def build_prompts(
    words: Sequence[tuple[int, str]], train: torch.Tensor, pieces: PromptPieces, examples: int, rng: random.Random
) -> list[tuple[list[int], int]]:
    """Each word's prompt and word position; its in-context examples come from its own split, never itself."""
    letters = [letter_index(text) for _, text in words]
    pools = {
        split: [(words[i][0], letters[i]) for i in range(len(words)) if bool(train[i]) == split]
        for split in (True, False)
    }
    prompts = []
    for i, (token, _) in enumerate(words):
        pool = [ex for ex in pools[bool(train[i])] if ex[0] != token]
        prompts.append(icl_prompt(token, rng.sample(pool, min(examples, len(pool))), pieces))
    return prompts


@torch.no_grad()
def prompt_activations(
    model: LanguageModel, hook: str, prompts: Sequence[tuple[list[int], int]], batch: int, progress: bool = False
) -> torch.Tensor:
    """[n, d]: `hook` at each prompt's word position, prompts batched with right padding.

    The padding comes after the word, which (causal attention) never sees it.
    """
    pad = model.tokenizer.bos_token_id
    acts = []
    for start in tqdm(range(0, len(prompts), batch), desc="absorption prompts", disable=not progress):
        chunk = prompts[start : start + batch]
        width = max(len(ids) for ids, _ in chunk)
        tokens = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in chunk])
        out = model.activations(tokens, [hook])[hook]
        positions = torch.tensor([position for _, position in chunk], device=out.device)
        acts.append(out[torch.arange(len(chunk), device=out.device), positions].float().cpu())
    return torch.cat(acts)


def first_letter_data(
    model: LanguageModel,
    hook: str,
    cfg: AbsorptionConfig,
    vocab: Sequence[tuple[int, str]] | None = None,
    progress: bool = False,
) -> FirstLetterData:
    """Prompt every sampled word (after in-context examples of its split) and read `hook` at the word."""
    vocab = vocabulary(model.tokenizer) if vocab is None else vocab
    words = sample_words(vocab, cfg.words_per_letter, cfg.seed)
    if len(words) < 4:
        raise ValueError(
            f"model {model.name!r} has {len(words)} single-token alphabetic words with a leading space: "
            "the first-letter task needs a subword vocabulary"
        )
    rng = random.Random(cfg.seed + 1)
    train = split_words(len(words), cfg.train_fraction, rng)
    prompts = build_prompts(words, train, prompt_pieces(model.tokenizer, cfg.prompt_template), cfg.icl_examples, rng)
    acts = prompt_activations(model, hook, prompts, cfg.batch_prompts, progress)
    letters = torch.tensor([letter_index(text) for _, text in words])
    return FirstLetterData([text for _, text in words], letters, train, acts)


# --- probes ---------------------------------------------------------------------------------
def f1_score(truth: torch.Tensor, predicted: torch.Tensor) -> float:
    """Binary F1 (0 when there is nothing to find and nothing found, as scikit-learn's zero_division=0)."""
    tp = int((truth & predicted).sum())
    wrong = int((truth ^ predicted).sum())
    return 2 * tp / (2 * tp + wrong) if tp else 0.0


def _logistic(balanced: bool, max_iter: int):
    linear_model = require("sklearn.linear_model", "evals", "the absorption and probing suites' probes")
    return linear_model.LogisticRegression(max_iter=max_iter, class_weight="balanced" if balanced else None)


def fit_letter_probes(data: FirstLetterData) -> LetterProbes:
    """A logistic-regression probe per letter (one against the rest, balanced) on the train words."""
    x_train = data.acts[data.train].double().numpy()
    x_test = data.acts[~data.train].double()
    y_train, y_test = data.letters[data.train], data.letters[~data.train]
    weights = torch.zeros(len(LETTERS), data.acts.shape[1], dtype=torch.float64)
    bias = torch.zeros(len(LETTERS), dtype=torch.float64)
    f1: list[float | None] = [None] * len(LETTERS)
    for letter in range(len(LETTERS)):
        if not (y_train == letter).any() or not (y_test == letter).any() or (y_train == letter).all():
            continue
        probe = _logistic(balanced=True, max_iter=LETTER_PROBE_MAX_ITER).fit(x_train, (y_train == letter).numpy())
        weights[letter] = torch.from_numpy(probe.coef_[0])
        bias[letter] = float(probe.intercept_[0])
        f1[letter] = f1_score(y_test == letter, x_test @ weights[letter] + bias[letter] > 0)
    return LetterProbes(weights, bias, f1)


def _l1_logistic(c: float):
    """scikit-learn's L1 logistic regression (liblinear), spelled for the installed version."""
    linear_model = require("sklearn.linear_model", "evals", "the absorption suite's k-sparse probes")
    # scikit-learn >= 1.8 spells L1 as l1_ratio = 1 (penalty is deprecated); older versions as penalty = "l1"
    signature = inspect.signature(linear_model.LogisticRegression)
    knobs: dict[str, Any] = (
        {"l1_ratio": 1.0} if signature.parameters["penalty"].default == "deprecated" else {"penalty": "l1"}
    )
    return linear_model.LogisticRegression(C=c, solver="liblinear", max_iter=L1_PROBE_MAX_ITER, **knobs)


def l1_probe_weights(acts: torch.Tensor, labels: torch.Tensor, letters: Sequence[int]) -> torch.Tensor:
    """[len(letters), m]: per letter, the minimiser of SAEBench's L1 multi-probe objective on the latents.

    SAEBench's objective per letter: the BCE of a one-vs-rest probe with positives weighted by
    negatives / positives (pos_weight), averaged over the words, plus K_SPARSE_L1_DECAY * |w|_1.
    In scikit-learn's form, C * sum(weighted losses) + |w|_1, that is C = 1 / (L1 decay * words).
    """
    sparse = require("scipy.sparse", "evals", "the absorption suite's k-sparse probes")
    x = sparse.csr_matrix(acts.double().numpy())  # TopK-like codes are mostly zeros
    weights = torch.zeros(len(letters), acts.shape[1], dtype=torch.float64)
    for row, letter in enumerate(letters):
        y = (labels == letter).numpy()
        positives = int(y.sum())
        if positives in (0, len(y)):
            continue
        sample_weight = np.where(y, (len(y) - positives) / positives, 1.0)
        probe = _l1_logistic(1 / (K_SPARSE_L1_DECAY * len(y))).fit(x, y, sample_weight=sample_weight)
        weights[row] = torch.from_numpy(probe.coef_[0]).double()
    return weights


class SparseProbe(NamedTuple):
    latents: list[int]
    f1: float  # on the test words


def k_sparse_probes(
    train_acts: torch.Tensor,
    train_labels: torch.Tensor,
    test_acts: torch.Tensor,
    test_labels: torch.Tensor,
    letters: Sequence[int],
    max_k: int,
) -> dict[int, list[SparseProbe]]:
    """For each letter, the k-sparse probes k = 1..max_k: the top k latents of the L1 probe, refitted and scored."""
    ranking = l1_probe_weights(train_acts, train_labels, letters)
    out: dict[int, list[SparseProbe]] = {}
    for row, letter in enumerate(letters):
        # topk, not abs(): only latents that predict the letter (as SAEBench); ties (zero weights
        # past the L1 solution's support) go to the lower index
        order = torch.sort(ranking[row], descending=True, stable=True).indices
        top = order[: min(max_k, ranking.shape[1])].tolist()
        probes = []
        for k in range(1, len(top) + 1):
            latents = top[:k]
            probe = _logistic(balanced=True, max_iter=K_PROBE_MAX_ITER).fit(
                train_acts[:, latents].double().numpy(), (train_labels == letter).numpy()
            )
            scores = test_acts[:, latents].double() @ torch.from_numpy(probe.coef_[0]) + float(probe.intercept_[0])
            probes.append(SparseProbe(latents, f1_score(test_labels == letter, scores > 0)))
        out[letter] = probes
    return out


def feature_split(probes: Sequence[SparseProbe], f1_jump_threshold: float) -> list[int]:
    """SAEBench's rule: keep adding latents while each k beats the best F1 so far by more than the threshold."""
    best, chosen = -100.0, []
    for probe in probes:
        if probe.f1 > best + f1_jump_threshold:
            best, chosen = probe.f1, probe.latents
        else:
            break
    return list(chosen)


# --- absorption -------------------------------------------------------------------------------
class WordAbsorption(NamedTuple):
    fraction: float
    full: bool


def word_absorption(
    acts: torch.Tensor, projections: torch.Tensor, cosines: torch.Tensor, probe_projection: float, main: Sequence[int]
) -> WordAbsorption:
    """SAEBench's FeatureAbsorptionCalculator for one word.

    acts [m]: the latents; projections [m]: each latent's contribution projected on the unit
    probe direction; cosines [m]: decoder rows' cosines with it; probe_projection: x.p.
    """
    main_ids = torch.as_tensor(list(main), dtype=torch.long)
    main_projection = float(projections[main_ids].sum())
    absorbers = torch.ones(len(acts), dtype=torch.bool)
    absorbers[main_ids] = False
    absorbers &= (cosines >= ABSORPTION_FRACTION_PROBE_COS_THRESHOLD) & (projections > 0)
    candidates = projections[absorbers]
    absorbed = float(candidates.topk(min(ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS, len(candidates))).values.sum())
    # x.p <= 0: SAEBench's proportion is then negative (or undefined): never absorption
    if (
        probe_projection <= 0
        or main_projection >= probe_projection
        or absorbed / probe_projection < ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD
    ):
        fraction = 0.0
    elif main_projection <= 0:
        fraction = 1.0
    else:
        absorbed = min(absorbed, probe_projection - main_projection)
        fraction = min(max(absorbed / (absorbed + main_projection), 0.0), 1.0)

    top = int(projections.argmax())
    full = (
        bool((acts[main_ids] < MAIN_LATENT_FIRES).all())
        and float(cosines[top]) >= FULL_ABSORPTION_PROBE_COS_THRESHOLD
        and probe_projection > 0
        and float(projections[top]) / probe_projection >= ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD
    )
    return WordAbsorption(fraction, full)


@torch.no_grad()
def encode(sae: SparseAutoencoder, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    return torch.cat([sae.encode(x[i : i + batch]).float().cpu() for i in range(0, len(x), batch)])


@torch.no_grad()
def score_absorption(
    sae: SparseAutoencoder, data: FirstLetterData, probes: LetterProbes, cfg: AbsorptionConfig
) -> AbsorptionResult:
    """The k-sparse probes, main latents and absorption of one dictionary on prepared words and probes."""
    latents = encode(sae, data.acts)
    train, test = data.train, ~data.train
    letters = [letter for letter in range(len(LETTERS)) if probes.f1[letter] is not None]
    sparse = k_sparse_probes(latents[train], data.letters[train], latents[test], data.letters[test], letters, cfg.max_k)
    decoder = sae.W_dec.detach().double().cpu()
    output_scale = float(sae.output_scale)
    test_acts, test_latents, test_letters = data.acts[test].double(), latents[test].double(), data.letters[test]
    rows = []
    for letter in letters:
        direction = probes.weights[letter] / probes.weights[letter].norm()
        along = decoder @ direction
        cosines = along / decoder.norm(dim=1).clamp_min(1e-12)
        main = feature_split(sparse[letter], cfg.f1_jump_threshold)
        positives = (test_letters == letter) & (test_acts @ probes.weights[letter] + probes.bias[letter] > 0)
        results = [
            word_absorption(
                test_latents[i], test_latents[i] * along / output_scale, cosines, float(x @ direction), main
            )
            for i, x in zip(positives.nonzero().flatten().tolist(), test_acts[positives], strict=True)
        ]
        n = max(len(results), 1)
        f1 = probes.f1[letter]
        assert f1 is not None
        rows.append(
            LetterAbsorption(
                letter=LETTERS[letter],
                train_words=int((data.letters[train] == letter).sum()),
                test_words=int((test_letters == letter).sum()),
                probe_f1=f1,
                evaluated=f1 > cfg.min_probe_f1,
                probe_true_positives=len(results),
                main_latents=main,
                sparse_f1=[probe.f1 for probe in sparse[letter]],
                absorption_rate=sum(r.fraction for r in results) / n,
                full_absorption_rate=sum(r.full for r in results) / n,
                full_absorptions=sum(r.full for r in results),
            )
        )
    counted = [row for row in rows if row.evaluated]
    if not counted:
        best = max((row.probe_f1 for row in rows), default=0.0)
        raise ValueError(
            f"no letter's probe reaches F1 > {cfg.min_probe_f1} (best {best:.2f}): the model does not represent "
            "first letters at this hook well enough to measure absorption"
        )
    return AbsorptionResult(
        words=len(data.words),
        train_words=int(train.sum()),
        test_words=int(test.sum()),
        probe_f1=float(np.mean([row.probe_f1 for row in rows])),
        letters_evaluated=len(counted),
        enough_letters=len(counted) >= cfg.min_letters,
        mean_absorption_rate=float(np.mean([row.absorption_rate for row in counted])),
        mean_full_absorption_rate=float(np.mean([row.full_absorption_rate for row in counted])),
        mean_main_latents=float(np.mean([len(row.main_latents) for row in counted])),
        letters=rows,
    )


def random_dictionary(sae: SparseAutoencoder) -> SparseAutoencoder:
    """The SAE's architecture and spec (scales included) at initialisation: the baseline dictionary."""
    return build_sae(sae.spec).to(sae.W_enc.device, sae.W_enc.dtype).eval()


def absorption(
    sae: SparseAutoencoder, model: LanguageModel, cfg: AbsorptionConfig, progress: bool = False
) -> AbsorptionResult:
    """The first-letter absorption of `sae` (and of a random dictionary of its shape, when cfg.baseline)."""
    if sae.spec.is_transcoder:
        raise ValueError(
            "absorption compares decoder rows with a probe of the SAE's input: it needs an SAE, not a transcoder"
        )
    data = first_letter_data(model, sae.spec.input_hook, cfg, progress=progress)
    probes = fit_letter_probes(data)
    result = score_absorption(sae, data, probes, cfg)
    if cfg.baseline:
        result.random_baseline = score_absorption(random_dictionary(sae), data, probes, cfg)
    return result
