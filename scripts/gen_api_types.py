"""Dump the REST gateway's OpenAPI document for the frontend's generated types.

`create_app().openapi()` needs no running service: the gRPC channels are lazy and the
document store is a throwaway SQLite file in a temporary folder. The frontend's
`npm run gen:api` runs this and then `openapi-typescript` (frontend/src/api/schema.d.ts);
`npm run check:api` does the same into temporary files and fails when they drift.

Usage: python scripts/gen_api_types.py [--out PATH]   (PATH defaults to frontend/openapi.json)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "frontend" / "openapi.json"


def openapi() -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    with tempfile.TemporaryDirectory() as tmp:
        settings = GatewaySettings(
            documents=str(Path(tmp) / "openapi.sqlite"),
            static_dir=str(Path(tmp) / "none"),
            api_tokens={},
            cors_origins=[],
        )
        app = create_app(settings)
        try:
            return app.openapi()
        finally:
            app.state.backends.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    text = json.dumps(openapi(), indent=2, sort_keys=True) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
