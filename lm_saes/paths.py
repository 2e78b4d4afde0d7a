"""Where lm-saes keeps caches (converted models, the default corpus, downloads)."""

from __future__ import annotations

import os
from pathlib import Path


def lm_saes_home() -> Path:
    """`$LM_SAES_HOME`, else ~/.cache/lm-saes."""
    return Path(os.environ.get("LM_SAES_HOME", Path.home() / ".cache" / "lm-saes")).expanduser()
