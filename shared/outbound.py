"""Outbound HTTP to addresses users give us (webhook endpoints): the one adapter that sends to
the open internet, with its guard against server-side request forgery.

Each send resolves the host, refuses it unless every address is public (after unwrapping any
IPv4 address an IPv6 one embeds), and connects to the checked address itself, so a DNS answer
that changes between the check and the connection (rebinding) cannot reach inside. One
attempt per call: no retries, no redirects, a bounded read, a total timeout; the caller
(shared.webhooks) schedules retries. Loopback is allowed only where the caller says so (the
local stack, whose receivers listen on 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

TIMEOUT_S = 10.0
MAX_READ_BYTES = 64 * 1024
USER_AGENT = "Yachay-Webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What a receiver answered: its status, or why there was none (a refusal or a transport
    error, worded so that it names none of our internal addresses)."""

    status_code: int | None
    error: str | None


REFUSED = "refused: the URL's host is not a public address (or does not resolve)"


class UnsafeAddress(Exception):
    """The URL's host resolves to an address we never send to."""


_IPV4_GLOBAL_UNICAST_EXCEPTIONS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "192.0.0.0/24",  # IETF protocol assignments (192.0.0.8 and the rest): never a receiver
        "198.18.0.0/15",  # benchmarking
        "192.88.99.0/24",  # the old 6to4 relay anycast
    )
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def _embedded(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries: mapped (::ffff:a.b.c.d), compatible
    (::a.b.c.d), 6to4 (2002::/16), Teredo (server and client), NAT64 (64:ff9b::/96)."""
    out = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # IPv4-compatible
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if any(ip in n for n in _NAT64):
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    """Only global unicast, after unwrapping every IPv4 address an IPv6 one embeds; loopback
    only where allowed (the local stack's receivers)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded(ip)
        if inner:
            return all(is_public(v4, allow_loopback) for v4 in inner)
        if ip.is_loopback:
            return allow_loopback
        # 2000::/3 is all IPv6 global unicast; site-local fec0::/10 and the rest are refused
        return ip in _IPV6_GLOBAL_UNICAST and ip.is_global and not ip.is_site_local
    if ip.is_loopback:
        return allow_loopback
    if any(ip in n for n in _IPV4_GLOBAL_UNICAST_EXCEPTIONS):
        return False
    # not is_global covers private, link-local (169.254.169.254), shared (100.64/10), reserved
    # and unspecified; multicast is refused on its own.
    return ip.is_global and not ip.is_multicast


def safe_address(host: str, port: int, allow_loopback: bool) -> str:
    """One address of `host` to connect to, after checking all of them.

    Raises:
        UnsafeAddress: the host does not resolve, or one of its addresses is not public.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeAddress(f"{host} does not resolve ({exc})") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for ip in addresses:
        if not is_public(ip, allow_loopback):
            raise UnsafeAddress(f"{host} resolves to {ip}, which is not a public address")
    if not addresses:
        raise UnsafeAddress(f"{host} has no address")
    return str(addresses[0])


def post(url: str, payload: str, headers: dict[str, str], allow_loopback: bool = False) -> Answer:
    """POSTs `payload` (JSON) to the checked address of `url`'s host, once (no retries, no
    redirects followed); never raises for the receiver's sake."""
    import urllib3

    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    try:
        address = safe_address(host, port, allow_loopback)
    except UnsafeAddress as exc:
        # One message for every refusal: the log must not tell a caller what a name resolved
        # to (our internal addresses); the detail stays in our own logs.
        from shared import logs

        logs.info("webhook address refused", detail=str(exc))
        return Answer(None, REFUSED)
    timeout = urllib3.Timeout(total=TIMEOUT_S)
    pool: urllib3.HTTPConnectionPool
    if https:
        pool = urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    try:
        resp = pool.urlopen(
            "POST",
            target,
            body=payload.encode("utf-8"),
            headers={
                **headers,
                "Host": host_header,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
            redirect=False,
            preload_content=False,
        )
        try:
            resp.read(MAX_READ_BYTES)  # what we read back is bounded; the rest is dropped
        finally:
            resp.release_conn()
        return Answer(resp.status, None)
    except urllib3.exceptions.HTTPError as exc:
        # The kind only (its text names the address we connected to); the detail in our logs.
        from shared import logs

        logs.info("webhook attempt got no answer", error=f"{type(exc).__name__}: {exc}"[:300])
        return Answer(None, f"no answer: {type(exc).__name__}")
    finally:
        pool.close()
