"""Render helm/lm-saes offline with the real Helm engine (helm-python-sdk's libhelm_c)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "lm-saes"
VALUE_SETS = {
    "default": None,
    "gpu": CHART / "ci" / "gpu-values.yaml",
    "external": CHART / "ci" / "external-values.yaml",
    "tls": CHART / "ci" / "tls-values.yaml",
}
RELEASE, NAMESPACE = "lm-saes", "lm-saes"

try:  # a dev dependency; test_chart.py skips without it, the Dockerfile tests do not need it
    import helm_python as helm
except ImportError:
    helm = None


def load_values(name: str) -> dict | None:
    path = VALUE_SETS[name]
    return yaml.safe_load(path.read_text()) if path else None


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


_cache: dict[str, tuple[list[dict], str]] = {}


def render_values(chart, values: dict | None) -> tuple[list[dict], str]:
    """(every manifest rendered from `values`, NOTES.txt)."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs, notes = [], ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs, notes


def render(chart, name: str) -> tuple[list[dict], str]:
    """(every manifest of value set `name`, NOTES.txt), rendered once per session."""
    if name not in _cache:
        _cache[name] = render_values(chart, load_values(name))
    return _cache[name]


@pytest.fixture(scope="session", params=list(VALUE_SETS))
def value_set(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def manifests(chart, value_set) -> list[dict]:
    return render(chart, value_set)[0]
