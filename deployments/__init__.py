"""Model deployments and their backends. The Serve deployment class is
`deployments.model_deployment.ModelDeployment`; it is not imported here, so that importing any
part of this package (the ingress imports `deployments.ray_net`, `core.errors`...) never
pulls in the replica's module and its imports of `serve_app` (an import cycle in a fresh process)."""

from deployments.config import ModelConfig, ModelsFile, load_models_file

__all__ = ["ModelConfig", "ModelsFile", "load_models_file"]
