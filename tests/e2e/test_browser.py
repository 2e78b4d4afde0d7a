"""The dashboards end to end in a real browser: the services and the gateway (serving the built
frontend, frontend/dist) run as OS processes, a tiny SAE is trained and analyzed through the
gateway, then frontend/e2e/smoke.mjs drives Debian's Chromium through playwright-core: home ->
the SAE -> a feature (shaded tokens) -> "try your text" (per-token activations) -> jobs (a
training job submitted from the editor, followed until it succeeds, with its curves) -> circuits
(a prompt traced through tiny transcoders from the trace form, its graph opened, a feature hovered
(top examples) and pinned, the pruning slider moved, an intervention run on the pinned feature,
a link between two positions clicked and its attention explained (the QK panel: a score, node rows
on both sides and pairs), its circuit-tracer JSON downloaded) -> feature search (explanations written into the store for a
few features: a query phrased differently finds its feature, whose page shows the explanation) ->
the comparison page (the SAE's evaluation suites stored against a transcoder by `lm-saes eval
--documents --sae-id`: metrics, trade-off plot, universality, a feature partner followed to its
page) and the SAE page's evaluation suites.

Reads are protected (LM_SAES_PUBLIC_READS=false): every call the page makes, the job event
streams and graph downloads included, must carry the browser's API token.

Screenshots of every step go to test-artifacts/e2e/ (a failed step leaves *-FAILED.png).
Needs `make frontend chromium` (make test does both); deselect with `-m "not e2e"`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import REPO
from tests.service_stack import SAE_ID, TOKENS, gateway_process

pytestmark = pytest.mark.e2e

FRONTEND = REPO / "frontend"
SCRIPT = FRONTEND / "e2e" / "smoke.mjs"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts" / "e2e"
BROWSER_TOKEN = "e2e-browser"  # typed into the header's token form by the script


@pytest.fixture(scope="module")
def transcoders(stack, client) -> str:
    """Tiny transcoders on both layers (trained in process), each analyzed through the gateway
    so that graph nodes have top examples to show."""
    from lm_saes.config import RunConfig, load_config
    from lm_saes.runner import run_train_transcoders
    from tests.service_stack import ANALYZE, SUBMIT, job_events

    location = str(stack[1] / "transcoders")
    cfg = load_config(
        REPO / "examples/configuration/transcoders-tiny.toml",
        RunConfig,
        {"output": location, "data.max_tokens": 5000, "train.checkpoint_every": 0},
    )
    run_train_transcoders(cfg, progress=False)
    for layer in (0, 1):
        response = client.post(
            "/api/v1/jobs/analysis",
            headers=SUBMIT,
            json={"sae_uri": f"{location}/layer-{layer}/sae", "config": ANALYZE},
        )
        assert response.status_code == 201, response.text
        assert job_events(client, response.json()["id"])[-1][1]["state"] == "succeeded"
    return location


@pytest.fixture(scope="module")
def gateway(stack):
    """`python -m gateway` on a free port over the stack's services, serving frontend/dist."""
    services, tmp = stack
    tokens = json.dumps({**TOKENS, BROWSER_TOKEN: ["read", "compute", "submit"]})
    with gateway_process(
        services,
        tmp,
        LM_SAES_STATIC_DIR=str(FRONTEND / "dist"),
        LM_SAES_API_TOKENS=tokens,
        LM_SAES_PUBLIC_READS="false",
    ) as running:
        yield running


SEARCH_QUERY = "kitty cats"
SEARCH_EXPECT = "Mentions of cats, kittens and other pet felines"


@pytest.fixture(scope="module")
def explained(stack, trained) -> None:
    """Explanations (as autointerp writes them) on three of the trained SAE's features."""
    from lm_saes.stores.documents import open_document_store
    from tests.search.test_feature_search import explanation

    texts = [SEARCH_EXPECT, "Closing parentheses in Python source code", "Words about money: prices and costs"]
    with open_document_store(str(stack[1] / "docs.sqlite")) as store:
        assert store.put_explanations(SAE_ID, {i: explanation(t) for i, t in enumerate(texts)}) == 3


@pytest.fixture(scope="module")
def compared(stack, trained, transcoders) -> str:
    """The trained SAE's evaluation suites, core and universality against the layer-0 transcoder,
    stored with `lm-saes eval --documents --sae-id` (its report and both SAEs' feature neighbours);
    returns the transcoder's SAE id."""
    from lm_saes.cli import main
    from lm_saes.stores.documents import open_document_store

    docs = str(stack[1] / "docs.sqlite")
    with open_document_store(docs) as store:
        (partner,) = [s.id for s in store.list_saes() if (s.artifact or "").rstrip("/").endswith("layer-0/sae")]
    args = ["-q", "eval", "--sae", trained["result"]["sae"], "--suite", "core,universality"]
    args += ["--compare", f"{transcoders}/layer-0/sae", "--documents", docs, "--sae-id", SAE_ID]
    assert main([*args, "--compare-id", partner, "--out", str(stack[1] / "evals.json")]) == 0
    return partner


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(base_url=gateway[0], timeout=60, headers={"Authorization": f"Bearer {BROWSER_TOKEN}"}) as http:
        yield http


@pytest.fixture(scope="module", autouse=True)
def node() -> str:
    """What the browser needs, checked before any service starts; the `node` binary."""
    missing = [
        f"{path} ({fix})"
        for path, fix in [
            (FRONTEND / "dist" / "index.html", "make frontend"),
            (CHROMIUM, "make chromium"),
            (FRONTEND / "node_modules" / "playwright-core", "make frontend"),
        ]
        if not path.exists()
    ]
    node = shutil.which("node")
    if node is None:
        missing.append("node (Node.js >= 20.19)")
    if missing:
        pytest.fail("the browser test needs: " + ", ".join(missing))
    return node


def test_dashboards_in_a_browser(node, gateway, trained, transcoders, explained, compared, capsys):
    built = (FRONTEND / "dist" / "index.html").stat().st_mtime
    newer = [
        str(f.relative_to(REPO)) for f in (FRONTEND / "src").rglob("*") if f.is_file() and f.stat().st_mtime > built
    ]
    if newer:  # not a failure (someone may be editing), but the browser sees the older build
        with capsys.disabled():
            print(f"\ne2e: warning: frontend/dist is older than {newer[:3]}...; `make frontend` rebuilds it")

    url, gateway_log = gateway
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    env = {
        **os.environ,
        "E2E_SCREENSHOTS": str(ARTIFACTS),
        "E2E_TOKEN": BROWSER_TOKEN,
        "E2E_SAE": SAE_ID,
        "E2E_TRANSCODERS": transcoders,
        "E2E_STEER": "1",
        "E2E_SEARCH": SEARCH_QUERY,
        "E2E_SEARCH_EXPECT": SEARCH_EXPECT,
        "E2E_COMPARE": compared,
        "CHROMIUM": str(CHROMIUM),
        "FORCE_COLOR": "0",
    }
    started = time.time()
    try:
        run = subprocess.run(
            [node, str(SCRIPT), url], cwd=FRONTEND, env=env, capture_output=True, text=True, timeout=360
        )
    except subprocess.TimeoutExpired as error:
        partial = "".join(o.decode() if isinstance(o, bytes) else o for o in (error.stdout, error.stderr) if o)
        pytest.fail(f"the browser script ran over {error.timeout} s; screenshots in {ARTIFACTS}\n{partial}")
    output = run.stdout + run.stderr
    with capsys.disabled():  # shown on success too: what was checked, where the screenshots are
        print(f"\ne2e: browser script {time.time() - started:.1f} s\n{run.stdout.rstrip()}")
    if run.returncode != 0:
        pytest.fail(
            f"the browser script failed (exit {run.returncode}); screenshots in {ARTIFACTS}\n"
            f"{output}\n--- gateway log (last 3000 chars) ---\n{gateway_log.read_text()[-3000:]}",
            pytrace=False,
        )
    steps = [line for line in output.splitlines() if line.startswith("ok ")]
    assert len(steps) >= 23, output  # steering's and search's two steps each, and the comparison's three
    assert any(line.split()[1].endswith("-circuit-attention") for line in steps), output
    assert sorted(p.name for p in ARTIFACTS.glob("*.png")) == sorted(line.split()[1] + ".png" for line in steps), output
