"""Undoing Ray's proxy: checked against uvicorn's own ProxyHeadersMiddleware (the code Ray runs).

For every peer, header, TRUSTED_PROXIES, FORWARDED_ALLOW_IPS and listener, the real middleware
rewrites the client as Ray's proxy would; the app's answer must then be the client that
TRUSTED_PROXIES alone gives for the real peer, or unknown (None), never another address.
"""

import asyncio
import itertools

import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from core.netguard import client_address, parse_address, parse_networks
from serve_app.http.proxy_headers import NOTHING_TRUSTED, UVICORN_DEFAULT, ProxyTrust, original_client

PEERS = ["127.0.0.1", "127.0.0.2", "::1", "10.0.0.7", "203.0.113.9", "2001:db8::9"]
HEADERS = [None, "10.1.2.3", "203.0.113.9", "10.1.2.3, 127.0.0.1", "127.0.0.1", "2001:db8::5", "garbage",
           "10.1.2.3, 203.0.113.9", "1.2.3.4:80", "10.1.2.3, ::1", "[2001:db8::7]:443", ""]
TRUSTED = [(), ("127.0.0.1/32",), ("127.0.0.0/8", "::1/128"), ("10.0.0.0/8",)]
PROXY_TRUST = [UVICORN_DEFAULT, NOTHING_TRUSTED, "*", "10.0.0.0/8", "127.0.0.1", "127.0.0.0/8"]
LISTENERS = ["127.0.0.1", "0.0.0.0", "::", None]


def through_uvicorn(peer: str, header, forwarded_allow_ips: str) -> str:
    seen = {}

    async def app(scope, receive, send):
        seen["client"] = scope["client"]

    scope = {"type": "http", "client": (peer, 50000),
             "headers": [(b"x-forwarded-for", header.encode())] if header is not None else []}
    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts=forwarded_allow_ips)(scope, None, None))
    return seen["client"][0]


def reachable(peer: str, listener) -> bool:
    """An IPv4 connection has an IPv4 peer (a loopback one may come from any of the host's addresses)."""
    address, bound = parse_address(peer), parse_address(listener)
    return bound is None or bound.version == 6 or address.version == 4


CASES = [c for c in itertools.product(PEERS, HEADERS, TRUSTED, PROXY_TRUST, LISTENERS) if reachable(c[0], c[4])]


def test_never_another_client_than_trusted_proxies_give():
    wrong = []
    for peer, header, trusted_cidrs, allow_ips, listener in CASES:
        trusted = parse_networks(trusted_cidrs)
        truth = client_address(peer, header, trusted)
        seen = through_uvicorn(peer, header, allow_ips)
        got = original_client(seen, header, trusted, ProxyTrust.parse(allow_ips), listener)
        if got is not None and got != truth:
            wrong.append((peer, header, trusted_cidrs, allow_ips, listener, seen, got, truth))
    assert not wrong, wrong[:5]
    assert len(CASES) > 1000


@pytest.mark.parametrize("listener", LISTENERS)
def test_exact_when_the_start_path_turned_the_proxy_off(listener):
    for peer, header, trusted_cidrs, _, bound in CASES:
        if bound != listener:
            continue
        trusted = parse_networks(trusted_cidrs)
        seen = through_uvicorn(peer, header, NOTHING_TRUSTED)
        assert seen == peer  # uvicorn changed nothing
        assert original_client(seen, header, trusted, ProxyTrust.parse(NOTHING_TRUSTED), listener) == \
            client_address(peer, header, trusted)


@pytest.mark.parametrize("header", HEADERS)
def test_exact_behind_nginx_on_the_same_host(header):
    """Plain `serve run` (uvicorn's default trust), nginx on 127.0.0.1 as the trusted proxy."""
    trusted = parse_networks(["127.0.0.1/32"])
    seen = through_uvicorn("127.0.0.1", header, UVICORN_DEFAULT)
    got = original_client(seen, header, trusted, ProxyTrust.parse(UVICORN_DEFAULT), "127.0.0.1")
    if header and "::1" in header:  # an IPv6 peer named last: nginx's address cannot be told from it
        assert got is None
    else:
        assert got == client_address("127.0.0.1", header, trusted)


def test_the_measured_spoof_no_longer_works():
    """A key limited to 10.0.0.0/8 passed from 127.0.0.1 with `X-Forwarded-For: 10.1.2.3`."""
    proxy = ProxyTrust.parse(UVICORN_DEFAULT)
    seen = through_uvicorn("127.0.0.1", "10.1.2.3", UVICORN_DEFAULT)
    assert seen == "10.1.2.3"  # what Ray's proxy hands on
    # the address cannot be known (the peer may have been rewritten): None, so an allowlist refuses
    assert original_client(seen, "10.1.2.3", (), proxy, "127.0.0.1") is None
    assert original_client("127.0.0.1", None, (), proxy, "127.0.0.1") == parse_address("127.0.0.1")


def test_proxy_trust_parses_like_uvicorn():
    assert not ProxyTrust.parse(NOTHING_TRUSTED).rewrites and not ProxyTrust.parse("").rewrites
    assert ProxyTrust.parse("*").rewrites and ProxyTrust.parse(UVICORN_DEFAULT).trusts("::1")
    assert ProxyTrust.parse("10.0.0.0/8, localhost").trusts("10.9.9.9")
    assert not ProxyTrust.parse("10.0.0.0/8, localhost").trusts("localhost")  # a literal: never a TCP peer
