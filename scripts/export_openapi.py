"""Write the API's OpenAPI schema (the one served at /openapi.json and /docs) to docs/openapi.json.

    .venv/bin/python -m scripts.export_openapi          # rewrite docs/openapi.json
    .venv/bin/python -m scripts.export_openapi --check  # exit 1 if the committed file is stale

The schema does not depend on which models are configured, so no Ray and no weights are needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.settings import Settings
from serve_app.app import create_app
from serve_app.model_router import ModelRouter
from serve_app.ops.status import ModelStatus

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "openapi.json"


def openapi_text() -> str:
    app = create_app(Settings(), ModelRouter({}, "default"), None, ModelStatus(None, {}))
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed file")
    args = parser.parse_args(argv)
    text = openapi_text()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python -m scripts.export_openapi", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
