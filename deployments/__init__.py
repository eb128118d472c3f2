"""Model deployments and their backends."""

from deployments.config import ModelConfig, ModelsFile, load_models_file
from deployments.model_deployment import ModelDeployment

__all__ = ["ModelConfig", "ModelsFile", "ModelDeployment", "load_models_file"]
