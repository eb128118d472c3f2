"""Client addresses and IP allowlists (IPv4 and IPv6, CIDR), with trusted proxies.

X-Forwarded-For is believed only when the direct peer is a trusted proxy; then the client
is the rightmost address in the header that is not itself a trusted proxy (the leftmost
entries are whatever the client chose to send and cannot be trusted).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Optional, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Raises ValueError naming the bad entry (settings and key records are checked with it)."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def parse_address(text: Optional[str]) -> Optional[Address]:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def allowed(address: Optional[Address], networks: tuple[Network, ...]) -> bool:
    """An empty allowlist allows everyone; an unknown address is allowed by none."""
    if not networks:
        return True
    return address is not None and any(address.version == n.version and address in n for n in networks)


def client_address(peer: Optional[str], forwarded_for: Optional[str], trusted: tuple[Network, ...]) -> Optional[Address]:
    address = parse_address(peer)
    if not forwarded_for or not trusted or not allowed(address, trusted):
        return address
    for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
        hop_address = parse_address(hop)
        if hop_address is None:  # garbage in the chain: stop believing it here
            return address
        address = hop_address
        if not allowed(address, trusted):
            return address
    return address
