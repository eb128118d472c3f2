"""What Ray Serve's HTTP proxy did to the client address before the app saw it.

Ray's proxy runs uvicorn with proxy headers on: for a peer listed in `FORWARDED_ALLOW_IPS` (the
environment of the proxy's process; default `127.0.0.1,::1`), uvicorn replaces the client
address with an entry of `X-Forwarded-For` before AI Core runs. AI Core wants `TRUSTED_PROXIES`
alone to decide, so:

- the start path (`scripts.run_server`, `ServeProcess`) sets `FORWARDED_ALLOW_IPS=none`, which
  no address matches: uvicorn never rewrites and the address the app sees is the real peer;
- when the app finds another value in its own environment (a plain `serve run` without it; on
  one node the proxy and the ingress share the environment Ray was started with), it undoes the
  rewrite: if uvicorn may have rewritten, it works out every peer that could have sent the
  request and the client each would give under `TRUSTED_PROXIES`; one answer is used, several
  make the client unknown (no allowlist admits it). With nginx on the same host as a trusted
  proxy the answer is always unique; a local client that sends its own `X-Forwarded-For`
  without a trusted proxy becomes unknown.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Optional

from core.netguard import Address, Network, client_address, parse_address

ENV = "FORWARDED_ALLOW_IPS"
UVICORN_DEFAULT = "127.0.0.1,::1"
NOTHING_TRUSTED = "none"  # what the start path sets: no address matches it


def _host_port(value: str) -> str:
    """The host part of one X-Forwarded-For entry, split as uvicorn splits it."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        return value if end == -1 else value[1:end]
    if value.count(":") == 1:
        host, port = value.rsplit(":", 1)
        return host if port.isdigit() else value
    return value


@dataclass(frozen=True)
class ProxyTrust:
    """uvicorn's `forwarded_allow_ips` as the proxy parsed it (unparseable entries match nothing)."""

    always: bool = False
    hosts: tuple[Address, ...] = ()
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, value: str) -> "ProxyTrust":
        if value.strip() == "*":
            return cls(always=True)
        hosts, networks = [], []
        for item in (part.strip() for part in value.split(",")):
            try:
                if "/" in item:
                    networks.append(ipaddress.ip_network(item))
                else:
                    hosts.append(ipaddress.ip_address(item))
            except ValueError:
                continue  # a literal: never equal to a TCP peer's address
        return cls(hosts=tuple(hosts), networks=tuple(networks))

    @classmethod
    def from_environment(cls) -> "ProxyTrust":
        return cls.parse(os.environ.get(ENV, UVICORN_DEFAULT))

    @property
    def rewrites(self) -> bool:
        return self.always or bool(self.hosts or self.networks)

    def trusts(self, host: Optional[str]) -> bool:
        if self.always:
            return True
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False
        return address in self.hosts or any(address in n for n in self.networks)

    def pick(self, forwarded_for: str) -> str:
        """The client uvicorn takes from the header: the rightmost entry it does not trust."""
        hosts = [_host_port(h) for h in forwarded_for.split(",")]
        if self.always:
            return hosts[0]
        return next((h for h in reversed(hosts) if not self.trusts(h)), hosts[0])


def original_client(seen: Optional[str], forwarded_for: Optional[str], trusted: tuple[Network, ...],
                    proxy: ProxyTrust, server: Optional[str] = None) -> Optional[Address]:
    """The client address under TRUSTED_PROXIES alone, from the address the proxy handed on
    (`seen`) and the header; None when it cannot be known. `server`: the proxy's end of the
    connection (scope["server"]): an IPv4 connection has an IPv4 peer."""
    if not forwarded_for or not proxy.rewrites or proxy.pick(forwarded_for) != seen:
        return client_address(seen, forwarded_for, trusted)  # the proxy changed nothing
    listener = parse_address(server)
    outcomes = set()
    if not proxy.trusts(seen) and parse_address(seen) is not None:  # a TCP peer has an address
        outcomes.add(client_address(seen, forwarded_for, trusted))  # a direct client named itself
    if proxy.always:
        return None  # any peer may have been rewritten
    for network in proxy.networks:  # its peers agree only if all are trusted proxies and the header decides
        ends = {client_address(str(a), forwarded_for, trusted) for a in (network.network_address,
                                                                         network.broadcast_address)}
        if len(ends) > 1 or not any(network.version == t.version and network.subnet_of(t) for t in trusted):
            return None
        outcomes |= ends
    for host in proxy.hosts:
        if listener is not None and listener.version == 4 and host.version != 4:
            continue  # an IPv4 listener has no IPv6 peers
        outcomes.add(client_address(str(host), forwarded_for, trusted))
    return outcomes.pop() if len(outcomes) == 1 else None

