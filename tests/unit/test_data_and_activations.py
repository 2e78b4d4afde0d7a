import json

import pytest
import torch

from lm_saes.activations import (
    OnTheFlyActivations,
    ShardWriter,
    StoredActivations,
    generate_activations,
    iter_model_activations,
    read_manifest,
)
from lm_saes.config import DataConfig
from lm_saes.data.packing import load_token_splits, pack
from lm_saes.data.sources import iter_texts
from lm_saes.models import ByteTokenizer
from lm_saes.stores import LocalObjectStore


def test_pack_starts_every_context_with_bos_and_separates_documents():
    contexts = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], bos=0, context_size=4, max_contexts=10)
    assert contexts.tolist() == [[0, 1, 2, 3], [0, 0, 4, 5], [0, 0, 6, 7], [0, 8, 9, 0]]


def test_token_splits_are_deterministic_by_seed_and_disjoint(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document number {i} " * 5}) + "\n" for i in range(50)))
    cfg = DataConfig(source=str(docs), context_size=16, max_tokens=600, eval_tokens=150, seed=1)
    a, b = load_token_splits(cfg, ByteTokenizer()), load_token_splits(cfg, ByteTokenizer())
    assert torch.equal(a.train, b.train) and torch.equal(a.eval, b.eval)
    assert len(a.train) == 40 and len(a.eval) == 10
    c = load_token_splits(cfg.model_copy(update={"seed": 2}), ByteTokenizer())
    assert not torch.equal(a.train, c.train)
    assert (a.train[:, 0] == 256).all()


def test_text_sources_txt_folder_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.jsonl").write_text('{"body": "beta"}\n')
    assert list(iter_texts(str(tmp_path / "a.txt"))) == ["alpha"]
    assert list(iter_texts(str(tmp_path / "b.jsonl"), "body")) == ["beta"]
    with pytest.raises(ValueError, match="set data.text_field"):
        list(iter_texts(str(tmp_path), "text"))
    with pytest.raises(FileNotFoundError, match="data.source"):
        list(iter_texts(str(tmp_path / "nope")))


def test_activations_stop_early_match_full_pass_and_drop_bos(tiny_model, tiny_contexts):
    hooks = ["blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"]
    assert tiny_model.stop_layer(hooks) == 1
    early = tiny_model.activations(tiny_contexts, hooks)
    _, full = tiny_model.loss_per_token(tiny_contexts, capture=hooks)
    for hook in hooks:
        torch.testing.assert_close(early[hook], full[hook])
    rows = torch.cat([a[hooks[0]] for a in iter_model_activations(tiny_model, tiny_contexts, hooks, 5)])
    keep = tiny_contexts != tiny_model.tokenizer.bos_token_id
    torch.testing.assert_close(rows, early[hooks[0]][keep])


def test_shards_manifest_and_norm_stats(tmp_path, tiny_model, tiny_contexts):
    store = LocalObjectStore(tmp_path)
    hooks = ["blocks.1.hook_resid_post"]
    manifest = generate_activations(tiny_model, tiny_contexts, hooks, store, 4, shard_tokens=200, progress=False)
    n = int((tiny_contexts != tiny_model.tokenizer.bos_token_id).sum())
    assert manifest.n_tokens == n and manifest.shards[0].n_tokens == 200
    assert len(manifest.shards) == -(-n // 200)
    assert read_manifest(store) == manifest
    rows = torch.cat([store.get_tensors(s.key)[hooks[0]] for s in manifest.shards])
    assert rows.shape == (n, 32)
    torch.testing.assert_close(manifest.hooks[hooks[0]].mean_norm, float(rows.norm(dim=1).mean()), rtol=1e-5, atol=0)


def _all_rows(source, batch, n_batches, start=0):
    it = source.batches(batch, start_row=start)
    return torch.cat([next(it)["h"] for _ in range(n_batches)])


def test_shuffled_batches_cover_every_row_and_resume_at_any_offset(tmp_path):
    store = LocalObjectStore(tmp_path)
    writer = ShardWriter(store, "m", 8, shard_tokens=30)
    data = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 3)
    writer.add({"h": data})
    writer.close()
    source = StoredActivations(store, ["h"], seed=3, buffer_tokens=50)
    epoch = _all_rows(source, 10, 10)
    assert sorted(epoch[:, 0].tolist()) == list(range(100))
    assert epoch[:, 0].tolist() != list(range(100))  # shuffled
    resumed = _all_rows(source, 10, 5, start=50)
    torch.testing.assert_close(resumed, epoch[50:])
    two_epochs = _all_rows(source, 10, 20)
    torch.testing.assert_close(_all_rows(source, 10, 3, start=170), two_epochs[170:])
    with pytest.raises(ValueError, match="lack hooks"):
        StoredActivations(store, ["other"])


def test_on_the_fly_source_matches_stored(tmp_path, tiny_model, tiny_contexts):
    hooks = ["blocks.0.hook_resid_post"]
    store = LocalObjectStore(tmp_path)
    generate_activations(tiny_model, tiny_contexts, hooks, store, 4, shard_tokens=10_000, progress=False)
    stored = torch.cat([store.get_tensors("shard-00000.safetensors")[hooks[0]]])
    fly = OnTheFlyActivations(tiny_model, tiny_contexts, hooks, seed=0, buffer_tokens=10_000)
    rows = next(fly.batches(len(stored)))[hooks[0]]
    assert sorted(rows[:, 0].tolist()) == pytest.approx(sorted(stored[:, 0].tolist()))
    assert fly.stats()[hooks[0]].d == 32
