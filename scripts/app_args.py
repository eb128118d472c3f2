"""The app's arguments whose change makes Ray Serve rebuild the whole app; `scripts.run_server` starts
the app with them and `scripts.deploy` renders them, so the two agree."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def code_revision() -> str:
    """A hash of the app's source: a new install of the code makes Ray Serve rebuild the app."""
    digest = hashlib.sha256()
    for path in sorted(p for folder in ("serve_app", "deployments", "core") for p in (ROOT / folder).rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def app_args(model_config_path: str, model_names, revision: str | None = None) -> dict:
    """The app's arguments whose change makes Ray Serve rebuild the whole app: the models file, the
    set of models and the code. `scripts.run_server` starts the app with the same ones, so the first
    `scripts.deploy` of a changed entry restarts that model only, not the whole app."""
    return {"model_config_path": model_config_path,
            "model_set": hashlib.sha256(",".join(sorted(model_names)).encode()).hexdigest()[:12],
            "code_revision": revision or code_revision()}
