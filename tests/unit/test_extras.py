"""The core trains without the server stack: with the extras' packages unimportable, `lm-saes
train` runs, and what needs an extra says which one to install."""

import subprocess
import sys
import textwrap

from tests.integration.conftest import REPO

EXTRAS = ("grpc", "fastapi", "uvicorn", "pymongo", "minio", "pydantic_settings", "prometheus_client", "xllamacpp")


def _run(code: str, tmp_path, missing: tuple[str, ...] = EXTRAS) -> subprocess.CompletedProcess:
    """Run `code` where every extra's package is present but fails to import, as if missing."""
    blocked = tmp_path / "not-installed"
    for name in missing:
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('No module named {name}')\n")
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{blocked}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-c", "import sys\n" + textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_training_needs_no_extra(tmp_path):
    result = _run(
        f"""
        from lm_saes.cli import main
        code = main(["--quiet", "train", "{REPO}/examples/configuration/train-tiny.toml",
                     "--set", "output={tmp_path}/run", "--set", "data.max_tokens=3000"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("grpc", "fastapi", "pymongo", "minio"))
        print("exit", code, "loaded", loaded)
    """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exit 0 loaded []" in result.stdout
    assert (tmp_path / "run" / "sae" / "sae.json").exists()


def test_what_needs_an_extra_names_it(tmp_path):
    result = _run(
        """
        from lm_saes.autointerp.server import LocalLLMServer
        from lm_saes.stores import open_store
        from lm_saes.stores.documents import open_document_store
        import torch
        from lm_saes.evals.recovery import match
        for what in (lambda: open_document_store("mongodb://127.0.0.1:1/x"), lambda: open_store("s3://bucket/x"),
                     lambda: __import__("lm_saes.rpc.client"), lambda: LocalLLMServer().start(),
                     lambda: match(torch.zeros(2, 2))):
            try:
                what()
            except ImportError as error:
                print(error)
    """,
        tmp_path,
        # scipy only here: transformers imports it whenever it is installed, so `train` needs it importable
        EXTRAS + ("scipy",),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert ["lm-saes[mongo]" in lines[0], "lm-saes[s3]" in lines[1], "lm-saes[rpc]" in lines[2]] == [True] * 3
    assert "xllamacpp" in lines[3] and "lm-saes[autointerp]" in lines[3]
    assert "scipy" in lines[4] and "lm-saes[evals]" in lines[4]
