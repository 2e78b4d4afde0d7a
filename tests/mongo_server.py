"""A real MongoDB wire-protocol server for the document-store tests: jongodb, in memory.

MongoDB itself is not in the package registries; jongodb (an npm package holding one native
binary) is. It is installed into the git-ignored `.cache/jongodb` on first use, so a clean
clone needs only npm. Set `LM_SAES_TEST_MONGODB_URI` to test against a real server instead.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JONGODB_PACKAGE = "@jongodb/memory-server-bin-linux-x64-gnu@0.1.6"
JONGODB_DIR = REPO / ".cache" / "jongodb"
JONGODB_BIN = JONGODB_DIR / "node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb"


def install_jongodb() -> Path:
    if not JONGODB_BIN.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install the jongodb test server (`make jongodb`)")
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(JONGODB_DIR),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                JONGODB_PACKAGE,
            ],
            check=True,
            timeout=300,
        )
    return JONGODB_BIN


def wait_for_uri(log: Path, proc: subprocess.Popen, deadline: float) -> str:
    """jongodb prints `JONGODB_URI=mongodb://127.0.0.1:PORT/test` once it listens."""
    while time.time() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            if line.startswith("JONGODB_URI="):
                return line.split("=", 1)[1].rsplit("/", 1)[0]
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"jongodb did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory):
    """`mongodb://127.0.0.1:PORT` of a server that lives for the session (no database name)."""
    if external := os.environ.get("LM_SAES_TEST_MONGODB_URI"):
        yield external.rstrip("/")
        return
    import pymongo

    log = tmp_path_factory.mktemp("jongodb") / "server.log"
    with log.open("w") as out:  # a file, not a pipe: a full pipe would block the server
        # --port=0: the server picks a free port and prints it, so no port race.
        proc = subprocess.Popen(
            [str(install_jongodb()), "--host=127.0.0.1", "--port=0"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.time() + 30
        uri = wait_for_uri(log, proc, deadline)
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
        while True:
            try:
                client.admin.command("ping")
                break
            except pymongo.errors.PyMongoError:
                if time.time() > deadline:
                    pytest.fail(f"jongodb at {uri} never answered ping")
                time.sleep(0.1)
        client.close()
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
