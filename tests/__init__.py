"""The test suite; ROOT is the repository's root, wherever a test module sits."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
