"""First-letter absorption against hand-computed answers and brute force, on tiny synthetic dictionaries."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lm_saes.config import AbsorptionConfig, ConfigError, RunConfig, parse_config
from lm_saes.evals.absorption import (
    ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS,
    ABSORPTION_FRACTION_PROBE_COS_THRESHOLD,
    ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD,
    FULL_ABSORPTION_PROBE_COS_THRESHOLD,
    LETTERS,
    FirstLetterData,
    SparseProbe,
    build_prompts,
    f1_score,
    feature_split,
    fit_letter_probes,
    icl_prompt,
    k_sparse_probes,
    l1_probe_weights,
    prompt_activations,
    prompt_pieces,
    random_dictionary,
    sample_words,
    score_absorption,
    split_words,
    vocabulary,
    word_absorption,
)
from lm_saes.saes import ReLUConfig, build_sae, make_spec


# --- the per-word rules -------------------------------------------------------------------------
def reference_absorption(acts, projections, cosines, probe_projection, main):
    """The rules written out longhand over Python floats (see lm_saes.evals.absorption's docstring)."""
    main_projection = sum(projections[j] for j in main)
    others = sorted(
        (
            projections[j]
            for j in range(len(acts))
            if j not in main and cosines[j] >= ABSORPTION_FRACTION_PROBE_COS_THRESHOLD and projections[j] > 0
        ),
        reverse=True,
    )
    absorbed = sum(others[:ABSORPTION_FRACTION_MAX_ABSORBING_LATENTS])
    too_little = absorbed < ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD * probe_projection
    if probe_projection <= 0 or main_projection >= probe_projection or too_little:
        fraction = 0.0
    elif main_projection <= 0:
        fraction = 1.0
    else:
        absorbed = min(absorbed, probe_projection - main_projection)
        fraction = min(1.0, max(0.0, absorbed / (absorbed + main_projection)))
    top = max(range(len(acts)), key=lambda j: projections[j])
    full = (
        all(acts[j] < 1e-8 for j in main)
        and cosines[top] >= FULL_ABSORPTION_PROBE_COS_THRESHOLD
        and probe_projection > 0
        and projections[top] / probe_projection >= ABSORPTION_PROBE_PROJECTION_PROPORTION_THRESHOLD
    )
    return fraction, full


def _word(acts, cosines, probe_projection, main):
    acts, cosines = torch.tensor(acts, dtype=torch.float64), torch.tensor(cosines, dtype=torch.float64)
    return word_absorption(acts, acts * cosines, cosines, probe_projection, main)


def test_word_absorption_hand_cases():
    # the main latent carries the whole projection: nothing absorbed
    assert _word([1.0, 0.5], [1.0, 0.9], 1.0, [0]) == (0.0, False)
    # main silent, one aligned latent carries 0.707 of x.p: fully absorbed
    assert _word([0.0, 1.0], [1.0, 0.7071], 1.0, [0]) == (1.0, True)
    # partial: main 0.5, absorber 0.4 (exactly the proportion threshold) -> 0.4 / 0.9
    fraction, full = _word([0.5, 0.8], [1.0, 0.5], 1.0, [0])
    assert fraction == pytest.approx(0.4 / 0.9) and not full
    # cosine 0.05 is below the fraction's threshold (0.1) but above the full one's (0.025)
    assert _word([0.0, 10.0], [1.0, 0.05], 1.0, [0]) == (0.0, True)
    # at most three absorbers add up: 4 x 0.12 -> 0.36 < 0.4; 4 x 0.15 -> 0.45
    assert _word([0.0, 1, 1, 1, 1], [1.0, 0.12, 0.12, 0.12, 0.12], 1.0, [0])[0] == 0.0
    assert _word([0.0, 1, 1, 1, 1], [1.0, 0.15, 0.15, 0.15, 0.15], 1.0, [0])[0] == 1.0
    # x.p <= 0 is never absorption
    assert _word([0.0, 1.0], [1.0, 0.9], -0.5, [0]) == (0.0, False)
    # a main latent that fires orthogonally to p projects nothing: the fraction counts the word
    # absorbed, but full absorption needs the main latents silent
    assert _word([0.01, 5.0], [0.0, 0.9], 1.0, [0]) == (1.0, False)


def test_word_absorption_matches_the_longhand_rules():
    rng = np.random.default_rng(0)
    for _ in range(400):
        m = int(rng.integers(2, 12))
        acts = np.where(rng.random(m) < 0.5, 0.0, rng.exponential(1.0, m))
        cosines = rng.uniform(-0.3, 1.0, m)
        main = sorted(rng.choice(m, size=int(rng.integers(1, 3)), replace=False).tolist())
        probe_projection = float(rng.normal(1.0, 1.0))
        expected = reference_absorption(
            acts.tolist(), (acts * cosines).tolist(), cosines.tolist(), probe_projection, main
        )
        got = _word(acts.tolist(), cosines.tolist(), probe_projection, main)
        assert got.full == expected[1] and got.fraction == pytest.approx(expected[0], abs=1e-12)


# --- feature splits and k-sparse selection --------------------------------------------------------
def test_feature_split_takes_k_while_f1_jumps():
    probes = [
        SparseProbe([3], 0.5),
        SparseProbe([3, 1], 0.6),
        SparseProbe([3, 1, 7], 0.62),
        SparseProbe([3, 1, 7, 2], 0.9),
    ]
    assert feature_split(probes, 0.03) == [3, 1]  # 0.62 is not above 0.6 + 0.03: stop there
    assert feature_split(probes, 0.2) == [3]
    assert feature_split([SparseProbe([5], 0.0), SparseProbe([5, 6], 0.01)], 0.03) == [5]


def test_f1_score():
    truth = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool)
    assert f1_score(truth, torch.tensor([1, 1, 0, 1, 0, 0], dtype=torch.bool)) == pytest.approx(2 / 3)
    assert f1_score(truth, torch.zeros(6, dtype=torch.bool)) == 0.0


def test_k_sparse_selection_picks_what_brute_force_picks():
    """Two latents share most of a letter's words, one fires on most other words, the rest at random."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    n, m = 600, 8
    labels = torch.randint(0, 3, (n,), generator=g)  # letters 0, 1, 2
    acts = (torch.rand(n, m, generator=g) < 0.3).double() * torch.rand(n, m, generator=g)
    positive = (labels == 0).nonzero().flatten()
    a, b = int(0.5 * len(positive)), int(0.8 * len(positive))  # latent 2: half the words, 5: 30%, none: 20%
    acts[:, [2, 5]] = 0
    acts[positive[:a], 2] = 1 + torch.rand(a, generator=g).double()
    acts[positive[a:b], 5] = 1 + torch.rand(b - a, generator=g).double()
    negative = (labels != 0).nonzero().flatten()
    acts[:, 7] = 0  # a strong negative predictor (alone F1 0.9): the ranking wants latents that predict the letter
    acts[negative[: int(0.9 * len(negative))], 7] = 3.0
    y = (labels == 0).numpy()

    def train_f1(subset):
        """F1 on the rows of a probe on `subset`; -1 when a latent would predict the letter by its absence."""
        x = acts[:, list(subset)].numpy()
        fitted = LogisticRegression(max_iter=500, class_weight="balanced").fit(x, y)
        if (fitted.coef_ <= 0).any():
            return -1.0
        return f1_score(torch.from_numpy(y), torch.from_numpy(fitted.predict(x)).bool())

    probes = k_sparse_probes(acts, labels, acts, labels, [0, 1, 2], max_k=3)[0]
    for k in (1, 2):
        best = max(itertools.combinations(range(m), k), key=train_f1)
        assert sorted(probes[k - 1].latents) == sorted(best)
        assert probes[k - 1].f1 == pytest.approx(train_f1(best))
    assert probes[1].latents == [2, 5]
    assert l1_probe_weights(acts, labels, [0, 1, 2])[0, 7] < 0  # ranked by weight, not |weight|: 7 comes last


# --- whole procedure on synthetic words ------------------------------------------------------------
D = 64
N_LETTERS = 4
ABSORBED_DIMS = range(N_LETTERS, N_LETTERS + 3)  # one private direction per absorbed test word
NOISE_DIMS = range(N_LETTERS + 3, D)


def synthetic_words(per_letter: int = 200, test_per_letter: int = 40, absorbed: int = 0, seed: int = 0):
    """x = 2 e_letter + noise; `absorbed` test words of letter a also carry a private direction u."""
    g = torch.Generator().manual_seed(seed)
    rows, letters, train, private = [], [], [], []
    for letter in range(N_LETTERS):
        for i in range(per_letter):
            x = torch.zeros(D)
            x[letter] = 2.0
            x[list(NOISE_DIMS)] = 0.3 * torch.randn(len(NOISE_DIMS), generator=g)
            is_test = i < test_per_letter
            if letter == 0 and is_test and i < absorbed:
                x[ABSORBED_DIMS[i]] = 2.0
                private.append(len(rows))
            rows.append(x)
            letters.append(letter)
            train.append(not is_test)
    words = [f" {LETTERS[letter]}{i}" for i, letter in enumerate(letters)]
    data = FirstLetterData(words, torch.tensor(letters), torch.tensor(train), torch.stack(rows))
    return data, private


def letter_dictionary(absorbed: int = 0):
    """One latent per letter (encoder = decoder = e_letter) and one absorber per absorbed word.

    Letter a's latent reads e_a - 2 sum(u), so it is silent on the absorbed words, whose own
    latent reads u and writes (e_a + u) / sqrt(2): aligned with a's direction, firing instead.
    """
    spec = make_spec(ReLUConfig(d_sae=N_LETTERS + absorbed + 4, normalize_input=False), d_in=D, d_out=D)
    sae = build_sae(spec).eval()
    enc = torch.zeros(spec.d_sae, D)
    dec = torch.zeros(spec.d_sae, D)
    for letter in range(N_LETTERS):
        enc[letter, letter] = dec[letter, letter] = 1.0
    for i in range(absorbed):
        u = ABSORBED_DIMS[i]
        enc[0, u] = -1.0
        enc[N_LETTERS + i, u] = 1.0
        dec[N_LETTERS + i, 0] = dec[N_LETTERS + i, u] = 2**-0.5
    g = torch.Generator().manual_seed(1)
    for j in range(N_LETTERS + absorbed, spec.d_sae):  # unrelated latents on the noise
        direction = torch.zeros(D)
        direction[list(NOISE_DIMS)] = torch.randn(len(NOISE_DIMS), generator=g)
        enc[j] = dec[j] = direction / direction.norm()
    with torch.no_grad():
        sae.W_enc.copy_(enc)
        sae.W_dec.copy_(dec)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


CFG = AbsorptionConfig(min_letters=N_LETTERS)


def test_a_latent_that_is_the_letter_absorbs_nothing():
    data, _ = synthetic_words()
    probes = fit_letter_probes(data)
    result = score_absorption(letter_dictionary(), data, probes, CFG)
    assert [row.letter for row in result.letters] == list("abcd")
    assert all(row.probe_f1 == 1.0 and row.probe_true_positives == 40 for row in result.letters)
    assert [row.main_latents for row in result.letters] == [[0], [1], [2], [3]]
    assert all(row.sparse_f1[0] == 1.0 for row in result.letters)
    assert result.mean_absorption_rate == 0.0 and result.mean_full_absorption_rate == 0.0
    assert result.letters_evaluated == 4 and result.enough_letters and result.mean_main_latents == 1.0
    assert result.words == 800 and result.test_words == 160 and result.train_words == 640


def test_latents_that_take_over_some_words_absorb_exactly_those():
    data, private = synthetic_words(absorbed=3)
    sae = letter_dictionary(absorbed=3)
    assert (sae.encode(data.acts[private])[:, 0] == 0).all()  # letter a's latent is silent there
    result = score_absorption(sae, data, fit_letter_probes(data), CFG)
    a, *others = result.letters
    assert a.main_latents == [0]  # one word more per absorber is not a feature split (F1 +0.013 < 0.03)
    assert a.probe_true_positives == 40
    assert a.absorption_rate == pytest.approx(3 / 40) and a.full_absorption_rate == pytest.approx(3 / 40)
    assert a.full_absorptions == 3
    assert all(row.absorption_rate == 0 for row in others)
    assert result.mean_absorption_rate == pytest.approx(3 / 40 / 4)


def test_absorption_is_measured_in_raw_activation_units():
    """The same dictionary behind input scaling (latents 4x smaller, same reconstruction) absorbs the same."""
    data, _ = synthetic_words(absorbed=3)
    probes = fit_letter_probes(data)
    plain = letter_dictionary(absorbed=3)
    scaled = letter_dictionary(absorbed=3)
    scaled.set_scales(0.25, 0.25)
    torch.testing.assert_close(scaled(data.acts), plain(data.acts))
    torch.testing.assert_close(scaled.encode(data.acts), 0.25 * plain.encode(data.acts))
    a = score_absorption(scaled, data, probes, CFG).letters[0]
    assert a.main_latents == [0] and a.absorption_rate == pytest.approx(3 / 40)
    assert a.full_absorption_rate == pytest.approx(3 / 40)


def test_the_baseline_is_the_architecture_at_initialisation():
    sae = letter_dictionary(absorbed=3)
    sae.set_scales(0.5, 0.25)
    baseline = random_dictionary(sae)
    assert type(baseline) is type(sae) and baseline.spec == sae.spec
    assert float(baseline.input_scale) == 0.5 and float(baseline.output_scale) == 0.25
    assert baseline.W_dec.shape == sae.W_dec.shape and not torch.equal(baseline.W_dec, sae.W_dec)
    torch.testing.assert_close(baseline.W_enc, build_sae(sae.spec).W_enc)  # seeded: the same every time


def test_no_letter_the_model_knows_is_an_error():
    data, _ = synthetic_words(per_letter=40, test_per_letter=10)
    scrambled = data._replace(
        letters=data.letters[torch.randperm(len(data.letters), generator=torch.Generator().manual_seed(0))]
    )
    with pytest.raises(ValueError, match="no letter's probe"):
        score_absorption(
            letter_dictionary(), scrambled, fit_letter_probes(scrambled), AbsorptionConfig(min_probe_f1=0.95)
        )


# --- vocabulary and prompts ----------------------------------------------------------------------
class WordTokenizer:
    """A tokenizer over a fixed list of token strings (id = index); encode is greedy on whole strings."""

    bos_token_id = 0

    def __init__(self, tokens):
        self.tokens = ["<bos>", *tokens]
        self.vocab_size = len(self.tokens)

    def token_strings(self, ids):
        return [self.tokens[i] for i in ids]

    def encode(self, text):
        ids, rest = [], text
        while rest:
            i = max(
                (i for i, t in enumerate(self.tokens) if i and rest.startswith(t)), key=lambda i: len(self.tokens[i])
            )
            ids.append(i)
            rest = rest[len(self.tokens[i]) :]
        return ids

    def decode(self, ids):
        return "".join(self.tokens[i] for i in ids if i)


def test_vocabulary_keeps_single_token_words_with_a_leading_space():
    tok = WordTokenizer([" cat", "cat", " Dog", " a1", " é", " ", " c", "at", " x", " xy", " cat"])
    words = [text for _, text in vocabulary(tok)]
    assert words == [" cat", " Dog", " c", " x", " xy"]  # the second " cat" does not encode to itself
    assert [text for _, text in sample_words(vocabulary(tok), 1, seed=0)] in (
        [" cat", " Dog", " x"],
        [" c", " Dog", " x"],
        [" cat", " Dog", " xy"],
        [" c", " Dog", " xy"],
    )


def test_icl_prompt_is_the_template_text_and_points_at_the_word():
    tok = WordTokenizer(
        [" has", " the", " first", " letter", ":", " C", " D", "\n", " cat", " dog", " cow"]
        + [" " + c.upper() for c in "abefghijklmnopqrstuvwxyz"]
    )
    pieces = prompt_pieces(tok, "{word} has the first letter:")
    ids, position = icl_prompt(tok.encode(" cow")[0], [(tok.encode(" cat")[0], 2), (tok.encode(" dog")[0], 3)], pieces)
    assert tok.decode(ids) == "\n cat has the first letter: C\n dog has the first letter: D\n cow has the first letter:"
    assert ids[0] == 0 and tok.tokens[ids[position]] == " cow" and len(ids) - position == 6


def test_prompts_use_their_own_split_and_padding_does_not_change_activations(tiny_model):
    words = [(ord(c), c) for c in "abcdefghijklmnopqrst"]  # byte tokens as one-token "words"
    rng = random.Random(0)
    train = split_words(len(words), 0.5, rng)
    assert int(train.sum()) == 10
    pieces = prompt_pieces(tiny_model.tokenizer, "{word} starts with")
    prompts = build_prompts(words, train, pieces, examples=3, rng=rng)
    for (word, _), is_train, (ids, position) in zip(words, train.tolist(), prompts, strict=True):
        assert ids[position] == word
        text = tiny_model.tokenizer.decode(ids)
        examples = [line.split(" ")[0] for line in text.strip("\n").split("\n")[:-1]]
        assert len(examples) == 3 and chr(word) not in examples
        assert all(bool(train[[w for w, _ in words].index(ord(e))]) == is_train for e in examples)
    prompts[3] = (prompts[3][0] + pieces.after * 2, prompts[3][1])  # one longer prompt: the others are padded
    hook = "blocks.1.hook_resid_post"
    acts = prompt_activations(tiny_model, hook, prompts, batch=8)
    for i in (0, 3, 19):
        ids, position = prompts[i]
        alone = tiny_model.activations(torch.tensor([ids]), [hook])[hook][0, position]
        torch.testing.assert_close(acts[i], alone, atol=1e-5, rtol=1e-5)


def test_config_is_checked_before_any_work():
    with pytest.raises(ValidationError, match="exactly once"):
        AbsorptionConfig(prompt_template="the first letter:")
    with pytest.raises(ConfigError, match=r"eval\.absorption\.words_per_letter"):
        parse_config({"eval": {"absorption": {"words_per_letter": 1}}}, RunConfig)
    with pytest.raises(ConfigError, match=r"eval\.probing\.k_values"):
        parse_config({"eval": {"probing": {"k_values": [0, 2]}}}, RunConfig)


@pytest.mark.slow
def test_smollm2_prompts_are_its_own_tokenization():
    """Prompts built from token ids are what SmolLM2's tokenizer makes of the prompt text."""
    from transformers import AutoTokenizer

    from lm_saes.models.smollm2 import smollm2_checkpoint
    from lm_saes.models.tokenizers import HFTokenizer

    tok = HFTokenizer(AutoTokenizer.from_pretrained(smollm2_checkpoint()))
    vocab = vocabulary(tok)
    assert len(vocab) > 20_000 and {text[1].lower() for _, text in vocab} == set(LETTERS)
    words = sample_words(vocab, 3, seed=0)
    pieces = prompt_pieces(tok, AbsorptionConfig().prompt_template)
    assert len(pieces.after) == 5 and all(len(answer) == 1 for answer in pieces.answers)  # SAEBench's position -6
    prompts = build_prompts(words, split_words(len(words), 0.8, random.Random(0)), pieces, 10, random.Random(1))
    for (word, text), (ids, position) in zip(words, prompts, strict=True):
        assert ids[1:] == tok.encode(tok.decode(ids[1:])) and ids[position] == word
        assert tok.decode(ids[1:]).endswith(f"\n{text} has the first letter:") and position == len(ids) - 6
