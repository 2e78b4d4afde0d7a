"""The programmatic example runs as documented (tiny model)."""

import subprocess
import sys

from tests.integration.conftest import REPO


def test_programmatic_example_runs():
    result = subprocess.run(
        [sys.executable, str(REPO / "examples/programmatic/train_and_evaluate.py")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"explained_variance"' in result.stdout and "artifacts in" in result.stdout
