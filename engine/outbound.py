"""Where connectors may send requests whose URL comes from a playbook or its data (`outbound:` in config.yaml).

A webhook URL may be built from synced data (`url: "{{ account.hook_url }}"`), so whoever writes that data could
otherwise point the engine, and the webhook secret's signature, at the engine's own network: the database, a
cloud metadata service, an admin port on localhost. The rule:

* a public address may be reached (unless `outbound.public` is false);
* any other address — loopback, private, link-local (cloud metadata), shared, unspecified, multicast, reserved —
  is refused unless `outbound.allow` lists it: a host name (`hooks.internal.example`), every subdomain of one
  (`*.corp.example`), an address or a network in CIDR notation (`10.20.0.0/16`), each optionally with a port
  (`127.0.0.1:8080`, `[::1]:8080`).

The check is made on the addresses a name resolves to, once, at send time; the connection then goes to the
address that was checked (connectors/http.py: `pinned_call`), so a name cannot resolve to something else in between.
Host texts that need no lookup (`127.0.0.1`, `0x7f000001`, `2130706433`, `[::1]`, `localhost`) are also checked
when a playbook is validated (a URL written in it) and when an action is planned (a URL rendered from data)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Annotated, Union
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class OutboundConfig(BaseModel):
    """`outbound:`: the non-public hosts and networks connectors may reach, and whether public ones may be."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    allow: list[Annotated[str, AfterValidator(lambda v: (parse_entry(v), v)[1])]] = Field(
        default_factory=list, description="host names, *.domains, addresses or CIDR networks, each optionally "
                                          "with :port")
    public: bool = Field(True, description="whether public addresses not in `allow` may be reached")


@dataclass(frozen=True, slots=True)
class Entry:
    """One `outbound.allow` entry: a name (`suffix`: any subdomain of it) or a network, and maybe a port."""

    name: str | None = None
    suffix: bool = False
    network: Network | None = None
    port: int | None = None

    def matches(self, host: str, address: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address is not None and address.version == self.network.version and address in self.network
        host = host.lower().rstrip(".")
        return host.endswith("." + self.name) if self.suffix else host == self.name


def parse_entry(text: str) -> Entry:
    """An `outbound.allow` entry, or ValueError saying what is wrong with it."""
    raw = str(text).strip()
    port: int | None = None
    host = raw
    if raw.startswith("["):                                  # [v6] or [v6]:port
        inside, bracket, rest = raw[1:].partition("]")
        host = inside
        if not bracket:
            raise ValueError(f"`{raw}`: write an IPv6 address as [::1] or [::1]:8080")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"`{raw}`: write an IPv6 address as [::1] or [::1]:8080")
            port = _port(rest[1:], raw)
    elif raw.count(":") == 1:                                # name:port, v4:port, v4/cidr:port
        host, _, p = raw.partition(":")
        port = _port(p, raw)
    if not host:
        raise ValueError(f"`{raw}` names no host")
    try:
        return Entry(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        if "/" in host or ":" in host:
            raise ValueError(f"`{raw}` is not an address or a network in CIDR notation (such as 10.0.0.0/8)") \
                from None
    name = host.lower().rstrip(".")
    suffix = name.startswith("*.")
    name = name[2:] if suffix else name
    if not name or any(not label or not all(c.isalnum() or c in "-_" for c in label) for label in name.split(".")):
        raise ValueError(f"`{raw}` is not a host name, a *.domain, an address or a CIDR network")
    return Entry(name=name, suffix=suffix, port=port)


def _port(text: str, raw: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"`{raw}`: the port must be a number from 1 to 65535")
    return int(text)


class Refused(Exception):
    """A destination the `outbound` rule does not allow; the message says why and what to do."""


class Outbound:
    """The `outbound:` rule: which destinations a connector may send a request to."""

    def __init__(self, config: OutboundConfig | None = None):
        config = config or OutboundConfig()
        self.entries = tuple(parse_entry(e) for e in config.allow)
        self.public = config.public

    def refusal(self, host: str, address: IPAddress, port: int) -> str | None:
        """Why `address` (which `host` resolved to) may not be reached on `port`, or None when it may."""
        address = _unwrap(address)
        if any(e.matches(host, address, port) for e in self.entries):
            return None
        kind = address_kind(address)
        if kind is None and self.public:
            return None
        shown = f"{host}" if host == str(address) else f"{host} ({address})"
        what = f"{shown} is {kind}" if kind else f"{shown} is not listed under `outbound.allow` and " \
                                                 "`outbound.public` is false"
        return f"{what}; list it under `outbound.allow` in the configuration to allow it"

    def check_text(self, host: str, port: int) -> str | None:
        """Why a host may not be reached, when its text alone says so (an address in any notation, `localhost`);
        None when it may be, or when only resolving the name can tell."""
        address = literal_address(host)
        if address is not None:
            return self.refusal(host, address, port)
        name = host.lower().rstrip(".")
        if name == "localhost" or name.endswith(".localhost"):       # RFC 6761: always the loopback interface
            return self.refusal(host, ipaddress.ip_address("127.0.0.1"), port)
        if not self.public and not any(e.network is not None or e.matches(host, None, port) for e in self.entries):
            return (f"{host} is not listed under `outbound.allow` and `outbound.public` is false; list it under "
                    "`outbound.allow` in the configuration to allow it")
        return None

    def check_url(self, url: str) -> str | None:
        """`check_text` for a URL (None for a URL without a host: the connector refuses those itself)."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return None
        if not host:
            return None
        return self.check_text(host, port or (443 if parts.scheme == "https" else 80))

    def resolve(self, host: str, port: int) -> list[tuple[int, tuple]]:
        """The (family, socket address) pairs `host` resolves to that may be reached. Raises Refused when none
        may (naming the first address refused), OSError when the name does not resolve."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        allowed, refused = [], []
        for family, _, _, _, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            why = self.refusal(host, address, port)
            (refused if why else allowed).append(why or (family, sockaddr))
        if not allowed:
            raise Refused(refused[0] if refused else f"{host} resolves to no address")
        return allowed


def literal_address(host: str) -> IPAddress | None:
    """The address a host text denotes without a lookup: IPv4 in every notation the C library accepts
    (`127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`), IPv6 with or without a zone; None for a name."""
    text = host.strip("[]").split("%")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if not text or not all(c.isalnum() or c == "." for c in text):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, NAT64 well-known prefix), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_kind(address: IPAddress) -> str | None:
    """What kind of non-public address this is (`a loopback address`, …), or None for a public one."""
    address = _unwrap(address)
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "not a public address"
    return None
