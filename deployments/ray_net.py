"""Keep a Serve replica's own gRPC server off the network's other interfaces.

Ray Serve 2.60 starts an inter-deployment gRPC server in every replica, bound to `[::]:0` (all
interfaces) with no setting to change it (`ray/serve/_private/replica.py`, `_on_initialized`).
Every other Ray server binds the node's IP. `bind_replica_grpc_to_node_ip()`, called from each
deployment's constructor (which runs before that server starts), makes the replica bind its
node's IP instead: 127.0.0.1 on the single-node run (scripts.run_server), the node's address
in a cluster, so replicas on other nodes still reach it. Token authentication guards the
server either way; this removes the surface. When Ray's code differs (an upgrade), nothing is
changed and the socket-table test
(tests/integration/security/test_network.py) reports it.

In HAProxy mode (scripts/haproxy_mode.py) each ingress replica also serves HTTP itself on a port
of its own ("direct ingress"), bound to `http_options.host`: every interface when API_HOST is
0.0.0.0, though only HAProxy should reach it. The same call makes that server bind the node's IP
when the host is every interface (HAProxy reaches replicas at their node's IP).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("aicore.ray_net")

ALL_INTERFACES = "[::]:0"
ALL_INTERFACE_HOSTS = ("0.0.0.0", "::", "")


def bind_replica_grpc_to_node_ip() -> bool:
    """True when the replica's server will bind the node's IP (idempotent)."""
    try:
        from ray import serve
        from ray.serve._private import replica
        from ray.util import get_node_ip_address
    except ImportError:
        return False
    try:
        serve.get_replica_context()
    except Exception:  # not inside a replica (a unit test): nothing to do
        return False
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None:
        logger.warning("Ray Serve has no add_port_to_grpc_server: replica gRPC binding left as Ray sets it")
        return False
    if getattr(original, "_aicore_node_ip", False):
        return True
    node_ip = get_node_ip_address()
    host = f"[{node_ip}]" if ":" in node_ip else node_ip

    def add_port(server, address):
        return original(server, f"{host}:0" if address == ALL_INTERFACES else address)

    add_port._aicore_node_ip = True
    replica.add_port_to_grpc_server = add_port
    _bind_direct_ingress_to(replica, node_ip)
    return True


def _bind_direct_ingress_to(replica, node_ip: str) -> None:
    original = getattr(replica, "start_asgi_http_server", None)
    if original is None:
        logger.warning("Ray Serve has no start_asgi_http_server: direct-ingress binding left as Ray sets it")
        return

    async def start_server(app, options, **kwargs):
        if (options.host or "") in ALL_INTERFACE_HOSTS:
            options = options.model_copy(update={"host": node_ip})
        return await original(app, options, **kwargs)

    replica.start_asgi_http_server = start_server


def bind_fallback_proxy_to_node_ip() -> bool:
    """RAY_SERVE_CONTROLLER_CALLBACK_IMPORT_PATH target (HAProxy mode, scripts/haproxy_mode.py).

    With HAProxy, the Serve controller also starts a "fallback" Python proxy on the head node
    (RAY_SERVE_FALLBACK_PROXY_HTTP_PORT, 8500 by default) that HAProxy sends requests to while an
    app has no replica; it binds `http_options.host`, every interface when API_HOST is 0.0.0.0.
    Called in the controller before it starts any proxy: that proxy binds the node's IP instead,
    which is where HAProxy reaches it (`get_fallback_proxy_targets` uses the node IP)."""
    try:
        from ray.serve._private.proxy_state import ProxyStateManager
    except ImportError:
        return False
    original = getattr(ProxyStateManager, "_start_proxy", None)
    if original is None or getattr(original, "_aicore_node_ip", False):
        return original is not None

    def start_proxy(self, name, node_id, node_ip_address, http_options=None, *args, **kwargs):
        if http_options is not None and "fallback" in name and (http_options.host or "") in ALL_INTERFACE_HOSTS:
            http_options = http_options.model_copy(update={"host": node_ip_address})
        return original(self, name, node_id, node_ip_address, http_options, *args, **kwargs)

    start_proxy._aicore_node_ip = True
    ProxyStateManager._start_proxy = start_proxy
    return True
