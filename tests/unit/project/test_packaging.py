"""A wheel (what `pip install .` installs) carries every file the server serves, not only modules."""

import shutil
import subprocess
import sys
import zipfile

from tests import ROOT


def test_the_wheel_contains_the_chat_page_and_the_console(tmp_path):
    source = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info where it builds
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("serve_app", "deployments", "core"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("ai_core-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    static = ROOT / "serve_app" / "http" / "static"
    served = {str(p.relative_to(ROOT)) for p in static.rglob("*") if p.is_file()}
    assert "serve_app/http/static/admin/index.html" in served and "serve_app/http/static/index.html" in served
    assert served <= names, served - names
