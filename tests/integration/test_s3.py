"""The S3 backend against a real S3 server (moto) on loopback: store, shards, a whole run."""

import json

import pytest
import torch

from lm_saes.activations import StoredActivations, generate_activations
from lm_saes.cli import main
from lm_saes.saes import load_sae
from lm_saes.stores import ObjectNotFound, open_store


def test_s3_store_roundtrip(s3_server):
    store = open_store("s3://lm-saes-test/some/prefix")
    store.put_bytes("a/b.bin", b"hello")
    store.put_json("c.json", {"x": 1})
    store.put_tensors("t.safetensors", {"w": torch.arange(6.0).reshape(2, 3)})
    assert store.get_bytes("a/b.bin") == b"hello" and store.get_json("c.json") == {"x": 1}
    torch.testing.assert_close(store.get_tensors("t.safetensors")["w"], torch.arange(6.0).reshape(2, 3))
    assert store.list() == ["a/b.bin", "c.json", "t.safetensors"]
    assert store.child("a").list() == ["b.bin"]
    assert store.exists("c.json") and not store.exists("nope")
    store.delete_prefix("a")
    assert store.list("a") == []
    with pytest.raises(ObjectNotFound):
        store.get_bytes("a/b.bin")


def test_opening_and_reading_never_create_a_bucket(s3_server):
    """A request naming a bucket (CircuitService.Submit only reads) must not create it; a write
    creates it only when allowed (the CLI's default)."""
    store = open_store("s3://never-made-bucket/x", create_bucket=False)
    assert not store.exists("transcoders.json") and store.list() == []
    with pytest.raises(ObjectNotFound):
        store.get_json("transcoders.json")
    with pytest.raises(Exception):  # noqa: B017 - the server refuses a write into a missing bucket
        store.put_bytes("a", b"x")
    assert not store.client.bucket_exists("never-made-bucket")
    made = open_store("s3://made-on-write/x")
    assert not made.client.bucket_exists("made-on-write")
    made.put_bytes("a", b"x")
    assert made.client.bucket_exists("made-on-write") and made.get_bytes("a") == b"x"


def test_activation_shards_through_s3(s3_server, tiny_model, tiny_contexts):
    store = open_store("s3://lm-saes-test/acts")
    hooks = ["blocks.0.hook_resid_post"]
    manifest = generate_activations(tiny_model, tiny_contexts, hooks, store, 4, shard_tokens=300, progress=False)
    source = StoredActivations(store, hooks, buffer_tokens=300)
    rows = next(source.batches(manifest.n_tokens))[hooks[0]]
    expected = tiny_model.activations(tiny_contexts, hooks)[hooks[0]][tiny_contexts != 256]
    assert sorted(rows[:, 0].tolist()) == pytest.approx(sorted(expected[:, 0].tolist()))


def test_train_run_writes_to_s3_and_evaluates_from_it(s3_server, tmp_path, capsys):
    uri = "s3://lm-saes-test/runs/tiny"
    code = main(
        [
            "-q",
            "train",
            "examples/configuration/train-tiny.toml",
            "--set",
            f'output="{uri}"',
            "--set",
            "data.max_tokens=3000",
        ]
    )
    assert code == 0
    store = open_store(uri)
    assert {"sae/sae.json", "sae/sae.safetensors", "eval.json", "activations/manifest.json"} <= set(store.list())
    assert "checkpoints/step-00000010/done" in store.list()
    sae = load_sae(f"{uri}/sae")
    assert sae.spec.model == "tiny"
    assert main(["-q", "eval", "--sae", f"{uri}/sae", "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["tokens"] > 0
