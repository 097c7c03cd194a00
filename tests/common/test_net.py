import pytest

from common.net import client_ip, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1"])


def test_peer_is_the_client_without_trusted_proxies() -> None:
    assert client_ip("203.0.113.5", "1.2.3.4", ()) == "203.0.113.5"
    assert client_ip(None, None, ()) is None


def test_spoofed_header_from_an_untrusted_peer_changes_nothing() -> None:
    assert client_ip("203.0.113.5", "1.2.3.4", TRUSTED) == "203.0.113.5"


def test_trusted_proxy_chain_is_walked_from_the_right() -> None:
    # client 198.51.100.7 -> proxy 10.0.0.2 -> proxy 10.0.0.1 (peer)
    assert client_ip("10.0.0.1", "198.51.100.7, 10.0.0.2", TRUSTED) == "198.51.100.7"
    # A client that prepends a fake address cannot hide behind it.
    assert client_ip("10.0.0.1", "6.6.6.6, 198.51.100.7", TRUSTED) == "198.51.100.7"
    # Only proxies in the chain: the left-most address.
    assert client_ip("127.0.0.1", "10.1.1.1, 10.2.2.2", TRUSTED) == "10.1.1.1"
    assert client_ip("127.0.0.1", "", TRUSTED) == "127.0.0.1"
    # Ports and brackets are tolerated; garbage stops the walk at the last good hop.
    assert client_ip("10.0.0.1", "198.51.100.7:5555", TRUSTED) == "198.51.100.7"
    assert client_ip("10.0.0.1", "[2001:db8::1]:443", TRUSTED) == "2001:db8::1"
    assert client_ip("10.0.0.1", "198.51.100.7, not-an-ip", TRUSTED) == "10.0.0.1"


def test_bad_networks_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks(["not-a-cidr"])
