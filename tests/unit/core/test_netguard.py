"""Client address resolution and allowlists, IPv4 and IPv6."""

import pytest

from core.netguard import allowed, client_address, parse_address, parse_networks

TRUSTED = parse_networks(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize("peer,xff,expected", [
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
    ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
    ("127.0.0.1", "1.1.1.1, 203.0.113.5", "203.0.113.5"),  # rightmost untrusted hop, not what the client wrote
    ("127.0.0.1", "203.0.113.5, 10.0.0.3", "203.0.113.5"),  # skip trusted hops
    ("127.0.0.1", "[2001:db8::9]:4711", "2001:db8::9"),
    ("127.0.0.1", "203.0.113.5:8080", "203.0.113.5"),
    ("127.0.0.1", "not-an-ip", "127.0.0.1"),
    ("127.0.0.2", "203.0.113.5", "127.0.0.2"),  # untrusted peer: header ignored
    ("198.51.100.1", "127.0.0.1", "198.51.100.1"),
    ("::ffff:127.0.0.1", "2001:db8::2", "2001:db8::2"),  # IPv4-mapped peer
])
def test_client_address(peer, xff, expected):
    assert str(client_address(peer, xff, TRUSTED)) == expected


def test_no_trusted_proxies_means_no_header():
    assert str(client_address("127.0.0.1", "2001:db8::1", ())) == "127.0.0.1"


def test_allowlists():
    nets = parse_networks(["192.168.0.0/16", "2001:db8::/32"])
    assert allowed(parse_address("192.168.4.5"), nets)
    assert allowed(parse_address("2001:db8:ffff::1"), nets)
    assert not allowed(parse_address("192.169.0.1"), nets)
    assert not allowed(parse_address("2001:db9::1"), nets)
    assert not allowed(None, nets)
    assert allowed(parse_address("8.8.8.8"), ())


def test_bad_cidr_is_named():
    with pytest.raises(ValueError, match="300.0.0.0/8"):
        parse_networks(["10.0.0.0/8", "300.0.0.0/8"])
