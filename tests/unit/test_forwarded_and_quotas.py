"""Pure parts of issue 8's API hardening: who the client is behind proxies, quota decisions."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from inferd.api.quotas import QuotaExceeded, TeamLimits, check_instance_count, check_units, limits
from inferd.api.ratelimit import ClientAddresses
from inferd.config import Settings
from inferd.domain.spec import DeploymentSpec
from tests.support import specs

TRUSTED = ClientAddresses([ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")])


def _h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        ("198.51.100.1", _h(x_forwarded_for="1.2.3.4"), "198.51.100.1"),  # peer not trusted
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", _h(x_forwarded_for="1.2.3.4"), "1.2.3.4"),
        ("127.0.0.1", _h(x_forwarded_for="6.6.6.6, 1.2.3.4, 10.0.0.9"), "1.2.3.4"),
        ("::ffff:127.0.0.1", _h(x_forwarded_for="1.2.3.4:5678"), "1.2.3.4"),
        ("127.0.0.1", _h(forwarded='for="[2001:DB8::1]:80";proto=https, for=10.1.1.1'), "2001:db8::1"),
        ("127.0.0.1", _h(forwarded="for=unknown"), "unknown"),
        ("127.0.0.1", _h(x_forwarded_for="10.0.0.1, 10.0.0.2"), "10.0.0.1"),  # all trusted: the oldest
        ("127.0.0.1", _h(x_forwarded_for="1.2.3.4", forwarded="for=5.6.7.8"), "1.2.3.4"),
    ],
)
def test_client_address(peer: str, headers: list[tuple[bytes, bytes]], client: str) -> None:
    assert TRUSTED.client(peer, headers) == client
    assert ClientAddresses([]).client(peer, headers) == peer


def test_scheme_from_trusted_proxy_only() -> None:
    assert TRUSTED.scheme("127.0.0.1", _h(x_forwarded_proto="https"), "http") == "https"
    assert TRUSTED.scheme("198.51.100.1", _h(x_forwarded_proto="https"), "http") == "http"


def test_settings_parse_and_reject() -> None:
    assert [str(n) for n in Settings(trusted_proxies="127.0.0.1, 10.0.0.0/8").trusted_proxy_networks()] == [
        "127.0.0.1/32", "10.0.0.0/8"]
    with pytest.raises(ValueError, match="not an address"):
        Settings(trusted_proxies="proxy.internal")
    with pytest.raises(ValueError, match="0 or more"):
        Settings(team_max_units={"x": -1})


def test_limits_merge_defaults_and_team() -> None:
    settings = Settings(team_max_instances=5, team_max_units=2)
    assert limits(settings, None) == TeamLimits(max_instances=5, units={}, default_units=2)
    assert limits(Settings(team_max_units={"a": 1}), None).units_of("b") is None


def test_unit_decisions() -> None:
    spec = DeploymentSpec.model_validate(specs.spec(scale=3))
    quota = TeamLimits(max_instances=10, units={specs.SLUG: 4})
    check_units(quota, spec, {specs.SLUG: 1}, {})
    with pytest.raises(QuotaExceeded, match=r"accelerators\[0\]\.scale: team quota allows 4 units"):
        check_units(quota, spec, {specs.SLUG: 2}, {})
    # over a lowered quota, but no more than before: allowed
    check_units(TeamLimits(max_instances=10, units={specs.SLUG: 1}), spec, {}, {specs.SLUG: 3})
    check_instance_count(quota, 9)
    with pytest.raises(QuotaExceeded, match="^team quota allows 10 instances"):
        check_instance_count(quota, 10)
