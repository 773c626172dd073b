"""Where outbound webhooks may go: an allow-list, and never inside the network by accident.

`WARDEN_WEBHOOK_ALLOW` is a comma-separated list of hosts (`hooks.example.com`), domains
(`.example.com` or `*.example.com`, any subdomain) and networks (`10.1.0.0/16`, `127.0.0.1`).
When it is set, a target must match it. Whether or not it is set, an address in a loopback,
private, link-local (cloud metadata), shared, multicast or reserved range is refused unless an
entry allows it explicitly (the exact host name, or a network containing the address). The
check runs on the URL when it is accepted, and again on every address the name resolves to
right before each post, and the post goes to the address that was checked (no DNS rebinding
in between). Redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from warden.errors import InvalidRequest

ALLOW_ENV = "WARDEN_WEBHOOK_ALLOW"
MAX_URL = 2000
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

_INTERNAL = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
        "fd00:ec2::254/128",
    )
]


class EgressRefused(InvalidRequest):
    """A webhook target the allow-list or the internal-range rule refuses."""


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    configured: bool = False

    @classmethod
    def parse(cls, text: str | None) -> AllowList:
        if text is None or not text.strip():
            return cls()
        hosts: set[str] = set()
        domains: list[str] = []
        networks: list[IPNetwork] = []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                domains.append(entry[1:])
            elif entry.startswith("."):
                domains.append(entry)
            else:
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(domains), tuple(networks), configured=True)

    @classmethod
    def from_env(cls) -> AllowList:
        return cls.parse(os.environ.get(ALLOW_ENV))

    def names(self, host: str) -> bool:
        return host in self.hosts or any(
            host.endswith(d) and len(host) > len(d) for d in self.domains
        )

    def covers(self, address: IPAddress) -> bool:
        return any(address in n for n in self.networks)


def internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in n for n in _INTERNAL) or address.is_private or address.is_reserved


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _host(url: str, field: str) -> tuple[str, int]:
    if len(url) > MAX_URL:
        raise EgressRefused(f"{field} is longer than {MAX_URL} characters", field=field)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRefused(
            f"{field} must be an http:// or https:// URL with a host, e.g. "
            "https://hooks.example.com/warden",
            field=field,
        )
    if parts.username or parts.password:
        raise EgressRefused(f"{field} must not carry a user name or password", field=field)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise EgressRefused(f"{field} has an invalid port", field=field) from None
    return parts.hostname.lower().rstrip("."), port


def _check_address(
    address: IPAddress, host: str, allow: AllowList, field: str, *, named: bool
) -> None:
    if internal(address) and not (allow.covers(address) or host in allow.hosts):
        raise EgressRefused(
            f"{field} {host} reaches {address}, an internal address (loopback, private, "
            f"link-local or metadata); allow it explicitly in {ALLOW_ENV} if it is meant",
            field=field,
        )
    if allow.configured and not (named or allow.covers(address)):
        raise EgressRefused(
            f"{field} {host} ({address}) is not in {ALLOW_ENV}; add the host, its domain or "
            "its network",
            field=field,
        )


def check_url(url: str, *, allow: AllowList | None = None, field: str = "callback_url") -> None:
    """Refuse a target before it is stored: the scheme, the allow-list, and IP literals.
    Names are resolved (and checked again) only when posting."""
    allow = allow if allow is not None else AllowList.from_env()
    host, _ = _host(url, field)
    named = allow.names(host)
    literal = _literal(host)
    if literal is not None:
        _check_address(literal, host, allow, field, named=named)
    elif host == "localhost" or host.endswith(".localhost"):
        _check_address(ipaddress.ip_address("127.0.0.1"), host, allow, field, named=named)
    elif allow.configured and not named and not allow.networks:
        raise EgressRefused(
            f"{field} host {host} is not in {ALLOW_ENV}; add the host or its domain", field=field
        )


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    """A checked destination: post to `url` (the address that was checked), sending `host`
    as the Host header and TLS server name."""

    url: str
    host: str


def resolve(
    url: str,
    *,
    allow: AllowList | None = None,
    resolver: Resolver = system_resolver,
    field: str = "url",
) -> Target:
    """Check the target again, on every address its name resolves to, and pin one of them."""
    allow = allow if allow is not None else AllowList.from_env()
    check_url(url, allow=allow, field=field)
    host, port = _host(url, field)
    literal = _literal(host)
    if literal is not None:
        return Target(url, host)
    try:
        found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    except (OSError, ValueError) as exc:
        raise EgressRefused(f"{field} host {host} does not resolve: {exc}", field=field) from None
    if not found:
        raise EgressRefused(f"{field} host {host} does not resolve", field=field)
    named = allow.names(host)
    for address in found:
        _check_address(address, host, allow, field, named=named)
    return Target(_with_address(url, found[0]), host)


def _with_address(url: str, address: IPAddress) -> str:
    parts = urlsplit(url)
    netloc = f"[{address}]" if address.version == 6 else str(address)
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def refused_ranges() -> Iterable[str]:
    """The ranges refused by default, for the docs and error messages."""
    return (str(n) for n in _INTERNAL)
