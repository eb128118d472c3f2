"""A no-op behind Ray Serve with the ingress's Serve options: what Serve's proxy alone costs a request.

The floor's routes (scripts/floor_app.py) as one Serve deployment with AI Core's ingress name,
replica count and options (serve_app/builder.py), started by `ServeProcess(import_path=IMPORT_PATH)`
with the same environment (and INGRESS_MODE) as AI Core.
"""

from __future__ import annotations

from typing import Optional

from ray import serve

from deployments.ray_net import bind_replica_grpc_to_node_ip
from scripts.floor_app import app
from serve_app.builder import INGRESS_SERVE_OPTIONS
from serve_app.ingress import INGRESS_NAME

IMPORT_PATH = "scripts.noop_serve_app:build_app"


@serve.deployment(name=INGRESS_NAME, num_replicas=1, **INGRESS_SERVE_OPTIONS)
@serve.ingress(app)
class Noop:
    def __init__(self):
        bind_replica_grpc_to_node_ip()  # as the ingress: replica ports on loopback in HAProxy mode too


def build_app(args: Optional[dict] = None) -> serve.Application:
    return Noop.bind()
