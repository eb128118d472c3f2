"""The import layers ([tool.importlinter] in pyproject.toml, checked by lint-imports in scripts/test.sh)
cover every package and top-level module of serve_app: a new module must be placed in a layer,
or import-linter would never check its imports."""

import tomllib

from tests import ROOT


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}


def test_every_module_of_serve_app_is_in_a_layer():
    here = {f"serve_app.{p.stem}" for p in (ROOT / "serve_app").glob("*.py") if p.stem != "__init__"}
    here |= {f"serve_app.{p.parent.name}" for p in (ROOT / "serve_app").glob("*/__init__.py")}
    assert here - _layered() == set()


def test_the_layers_name_only_modules_that_exist():
    for name in _layered():
        path = ROOT / name.replace(".", "/")
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), name
