"""Composes the Ray Serve graph: one deployment per model, a metrics hub, one ingress.

`serve run serve_config.yaml` calls `build_app(args)`; `args` may override settings
(same names as the environment variables, lower case).
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ray import serve
from ray.serve.config import AutoscalingConfig as RayAutoscaling

from deployments.config import ModelConfig, ModelsFile, load_models_file
from deployments.model_deployment import ModelDeployment, ReplicaContext
from serve_app.ingress import Ingress
from serve_app.logs import configure_logging
from serve_app.metrics import MetricsHub
from serve_app.settings import Settings


def deployment_name(model: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_.-]", "_", model)


def _model_options(name: str, config: ModelConfig) -> dict:
    actor_options: dict[str, Any] = {"num_cpus": config.num_cpus}
    if config.memory:
        actor_options["memory"] = config.memory
    if config.resources:  # not checked against the cluster: the node offering them may join later
        actor_options["resources"] = dict(config.resources)
    scaling = config.autoscaling
    options: dict[str, Any] = {
        "name": deployment_name(name),
        "ray_actor_options": actor_options,
        "max_ongoing_requests": config.max_ongoing_requests,
        "health_check_period_s": 10,
    }
    if scaling.min_replicas == scaling.max_replicas:
        options["num_replicas"] = scaling.min_replicas
    else:
        options["autoscaling_config"] = RayAutoscaling(
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            target_ongoing_requests=scaling.target_ongoing_requests,
            downscale_delay_s=scaling.downscale_delay_s,
        )
    return options


def check_fits(models: ModelsFile, cluster_cpus: Optional[float], cluster_memory: Optional[float]) -> None:
    """An entry Ray could never place would make its requests hang: refuse it at start."""
    for name, config in models.models.items():
        if cluster_cpus is not None and config.num_cpus > cluster_cpus:
            raise ValueError(
                f"model {name!r}: num_cpus {config.num_cpus} exceeds the cluster's {cluster_cpus:g} CPUs"
            )
        if cluster_memory is not None and config.memory and config.memory > cluster_memory:
            raise ValueError(
                f"model {name!r}: memory {config.memory} bytes exceeds the cluster's {cluster_memory:.0f}"
            )


def _cluster_resources() -> tuple[Optional[float], Optional[float]]:
    import ray

    if not ray.is_initialized():
        return None, None
    resources = ray.cluster_resources()
    return resources.get("CPU"), resources.get("memory")


def build_app(args: Optional[dict] = None) -> serve.Application:
    settings = Settings(**{k.lower(): v for k, v in (args or {}).items()})
    if settings.log_dir:  # absolute, so replicas (other working directories) write to the same place
        settings = settings.model_copy(update={"log_dir": str(settings.resolve(settings.log_dir))})
    configure_logging(settings.log_level, settings.log_format, settings.log_dir)
    config_path = settings.resolve(settings.model_config_path)
    models = load_models_file(config_path)
    check_fits(models, *_cluster_resources())
    default_model = settings.default_model or next(iter(models.models))
    if default_model not in models.models:
        raise ValueError(f"DEFAULT_MODEL {default_model!r} is not in {config_path}")

    context = ReplicaContext(
        cache_dir=str(settings.resolve(settings.model_cache_dir)),
        config_dir=str(config_path.parent),
        log_level=settings.log_level,
        log_format=settings.log_format,
        log_dir=settings.log_dir,
    )
    handles = {
        name: serve.deployment(ModelDeployment, **_model_options(name, config)).bind(name, config, context)
        for name, config in models.models.items()
    }
    hub = serve.deployment(MetricsHub, name="metrics-hub", num_replicas=1, ray_actor_options={"num_cpus": 0.01})
    ingress = serve.deployment(
        Ingress,
        name="ingress",
        num_replicas=settings.ingress_replicas,
        ray_actor_options={"num_cpus": 0.1},
        max_ongoing_requests=256,
    )
    return ingress.bind(
        settings,
        dict(models.models),
        handles,
        {name: deployment_name(name) for name in models.models},
        default_model,
        hub.bind(),
    )
