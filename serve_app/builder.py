"""Composes the Ray Serve graph: one deployment per model, a metrics hub, one ingress.

`serve run serve_config.yaml` calls `build_app(args)`; `args` may override settings
(same names as the environment variables, lower case).
"""

from __future__ import annotations

import re
from typing import Any, Optional

from ray import serve
from ray.serve.config import AutoscalingConfig as RayAutoscaling
from ray.serve.config import AutoscalingPolicy, RequestRouterConfig

from core.logs import configure_logging
from core.netguard import parse_networks
from core.settings import Settings
from deployments.config import ModelConfig, ModelsFile
from deployments.lifecycle import ModelScalingPolicy
from deployments.model_deployment import REVISION_ENV, ModelDeployment, ReplicaContext
from deployments.routing import ConversationRouter
from serve_app.access.content_filter import ContentPolicy
from serve_app.hub import Hub
from serve_app.ingress import INGRESS_NAME, Ingress, ModelSpec

# The ingress's Serve options; scripts/noop_serve_app.py gives its no-op the same (a like-for-like floor).
INGRESS_SERVE_OPTIONS = {
    "ray_actor_options": {"num_cpus": 0.1},
    "max_ongoing_requests": 1024,  # streams mostly wait on the models: an ingress replica holds many
}


def deployment_name(model: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_.-]", "_", model)


def model_actor_options(config: ModelConfig, footprint: Optional[int] = None, revision: Optional[str] = None) -> dict:
    """Ray actor options of a model's replicas. `scripts.deploy` sends them as overrides with the
    entry's revision in the environment, so a changed entry restarts that model's replicas and no
    other. The build itself sets no revision: a replica with its own runtime_env cannot use a
    pre-started Ray worker, which slows every cold start (docs/benchmarks.md)."""
    actor_options: dict[str, Any] = {"num_cpus": config.num_cpus}
    if footprint:  # Ray reserves the footprint: it never places a replica where it does not fit
        actor_options["memory"] = footprint
    if config.resources:  # not checked against the cluster: the node offering them may join later
        actor_options["resources"] = dict(config.resources)
    if revision:
        actor_options["runtime_env"] = {"env_vars": {REVISION_ENV: revision}}
    return actor_options


def _model_options(name: str, config: ModelConfig, is_default: bool, footprint: Optional[int] = None,
                   drain_timeout_s: float = 300) -> dict:
    actor_options = model_actor_options(config, footprint)
    scaling = config.autoscaling
    floor = config.min_replicas(is_default)
    policy = AutoscalingPolicy(policy_function=ModelScalingPolicy,
                               policy_kwargs={"model": name, "floor": floor, "idle_timeout_s": config.idle_timeout_s})
    # Ray's bounds are 0..max so an admin can unload any model; the policy keeps the floor.
    options = {
        "name": deployment_name(name),
        "ray_actor_options": actor_options,
        "max_ongoing_requests": config.ongoing_limit(),
        # Past every replica's limit Ray queues at the caller; past this bound it refuses at once (a 503).
        "max_queued_requests": config.max_queued if config.task == "generate" else -1,
        "health_check_period_s": 10,
        "graceful_shutdown_timeout_s": drain_timeout_s,  # a replaced replica finishes its streams
        "autoscaling_config": RayAutoscaling(
            min_replicas=0,
            initial_replicas=floor,
            max_replicas=scaling.max_replicas,
            target_ongoing_requests=scaling.target_ongoing_requests or (
                config.slots_hint() if config.task == "generate" else 8),  # a text replica batches its slots
            downscale_delay_s=scaling.downscale_delay_s,
            downscale_to_zero_delay_s=0,  # the policy counts idle_timeout_s itself
            metrics_interval_s=1,
            look_back_period_s=5,  # request counts settle to zero soon after a drain (unload waits for it)
            policy=policy,
        ),
    }
    if config.type == "gguf" and config.task == "generate":  # a chat's turns to the replica keeping its KV
        options["request_router_config"] = RequestRouterConfig(request_router_class=ConversationRouter)
    return options


def check_fits(models: ModelsFile, cluster_cpus: Optional[float], cluster_memory: Optional[float],
               footprints: Optional[dict[str, Optional[int]]] = None) -> None:
    """An entry Ray could never place would make its requests hang: refuse it at start."""
    for name, config in models.models.items():
        if cluster_cpus is not None and config.num_cpus > cluster_cpus:
            raise ValueError(
                f"model {name!r}: num_cpus {config.num_cpus} exceeds the cluster's {cluster_cpus:g} CPUs"
            )
        need = (footprints or {}).get(name) or config.memory
        if cluster_memory is not None and need and need > cluster_memory:
            raise ValueError(
                f"model {name!r}: memory {need} bytes exceeds the cluster's {cluster_memory:.0f}"
            )


def pick_defaults(models: ModelsFile, settings: Settings) -> tuple[Optional[str], Optional[str]]:
    """DEFAULT_MODEL (else the first generation model) and DEFAULT_EMBEDDING_MODEL (else the first
    embedding model, or none)."""
    def first(task: str) -> Optional[str]:
        return next((name for name, config in models.models.items() if config.task == task), None)

    chosen = {"generate": settings.default_model or first("generate"),
              "embed": settings.default_embedding_model or first("embed")}
    for task, variable in (("generate", "DEFAULT_MODEL"), ("embed", "DEFAULT_EMBEDDING_MODEL")):
        name = chosen[task]
        if name is not None and (name not in models.models or models.models[name].task != task):
            raise ValueError(f"{variable} {name!r} is not a {task} model in {config_source(settings)}")
    return chosen["generate"], chosen["embed"]


def config_source(settings: Settings) -> str:
    return str(settings.resolve(settings.model_config_path))


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
    parse_networks(settings.ip_allowlist + settings.trusted_proxies)  # bad CIDRs stop the start
    ContentPolicy.from_settings(settings)  # so do bad content-filter patterns
    config_path = settings.resolve(settings.model_config_path)
    context = ReplicaContext(
        cache_dir=str(settings.resolve(settings.model_cache_dir)),
        config_dir=str(config_path.parent),
        log_level=settings.log_level,
        log_format=settings.log_format,
        log_dir=settings.log_dir,
        memory_alert_percent=settings.memory_alert_percent,
        config_path=str(config_path),
        request_timeout_s=settings.request_timeout_s,
    )
    source = context.source  # the models.json the replicas and the ingress's reconfigure read too
    models = source.read()
    default_model, default_embedding_model = pick_defaults(models, settings)
    footprints = {name: source.footprint(config) for name, config in models.models.items()}
    revisions = source.revisions(models.models)
    check_fits(models, *_cluster_resources(), footprints)
    # Several ingress replicas share one bound hub: model replicas report their loads to it, ingress
    # replicas their requests; it also holds their shared in-memory state when REDIS_URL is unset
    # (Telegram chats, batch jobs). One ingress replica (the default) keeps both in its own process
    # and model replicas report to it by name: one Ray worker (and its memory) less (docs/benchmarks.md).
    hub = None
    if settings.ingress_replicas > 1:
        hub = serve.deployment(Hub, name="hub", num_replicas=1, ray_actor_options={"num_cpus": 0.01}).bind()
    handles = {
        name: serve.deployment(
            ModelDeployment,
            **_model_options(name, config, name == default_model, footprints[name], settings.drain_timeout_s),
        ).bind(name, config, context, hub if hub is not None else INGRESS_NAME)
        for name, config in models.models.items()
    }
    ingress = serve.deployment(
        Ingress,
        name=INGRESS_NAME,
        num_replicas=settings.ingress_replicas,
        **INGRESS_SERVE_OPTIONS,
        # A replaced ingress replica (a new code revision) finishes its streams, as model replicas do
        # (Ray's default gives it 20 s, then cuts them).
        graceful_shutdown_timeout_s=settings.drain_timeout_s,
        user_config={"revisions": revisions},  # scripts.deploy changes it: the ingress re-reads models.json
    )
    specs = {
        name: ModelSpec(config, deployment_name(name), revisions[name], footprints[name])
        for name, config in models.models.items()
    }
    return ingress.bind(settings=settings, models=specs, handles=handles, default_model=default_model,
                        default_embedding_model=default_embedding_model, hub=hub, context=context)

