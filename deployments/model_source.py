"""models.json as the deployed app knows it: the one reader of the file for the builder,
`scripts.deploy`, the ingress's reconfigure and a model replica started by a redeploy.

An entry is named by its revision (the weights' revision and every parameter), so a reader never
takes an edited file for what is deployed: `entry(name, revision)` gives the entry only while the
file still holds that revision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from deployments.config import ModelConfig, ModelConfigError, ModelsFile, load_models_file
from deployments.memory import footprint
from deployments.weights import WeightsNotFound, weights_revision


@dataclass(frozen=True)
class ModelSource:
    path: Path  # models.json; relative weights paths and templates are read beside it
    cache_dir: Path  # assembled or converted weights

    @property
    def config_dir(self) -> Path:
        return self.path.parent

    def read(self) -> ModelsFile:
        return load_models_file(self.path)

    def revision(self, config: ModelConfig) -> str:
        """Changes when the weights or any parameter of the entry change."""
        weights = weights_revision(config.path, self.cache_dir, self.config_dir)
        return hashlib.sha256((weights + config.model_dump_json()).encode()).hexdigest()[:16]

    def revisions(self, models: dict[str, ModelConfig]) -> dict[str, str]:
        return {name: self.revision(config) for name, config in models.items()}

    def footprint(self, config: ModelConfig) -> int:
        """Bytes one replica of the entry needs: the memory Ray reserves for it."""
        return footprint(config, self.cache_dir, self.config_dir)

    def entry(self, name: str, revision: str) -> Optional[ModelConfig]:
        """The entry at `revision` as the file holds it now; None once the file has moved on or is unreadable."""
        try:
            config = self.read().models.get(name)
            return config if config is not None and self.revision(config) == revision else None
        except (OSError, ModelConfigError, WeightsNotFound):
            return None
