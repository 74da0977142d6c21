"""Who a request comes from: its address and its cookies. A leaf: standard library and
Starlette only, so that the hot path (fan-out, metrics) can use it without importing the
moderation service (which loads argon2)."""

from __future__ import annotations

import ipaddress
from http.cookies import SimpleCookie

from starlette.datastructures import Headers
from starlette.types import Scope

READER_COOKIE = "bc_reader"  # a reader's random id, signed (security.Security)
SESSION_COOKIE = "bc_session"  # a moderator's session id, signed (moderation.Moderation)


def cookies(scope: Scope) -> dict[str, str]:
    cookie = SimpleCookie()
    try:
        cookie.load(Headers(scope=scope).get("cookie", ""))
    except Exception:  # a malformed Cookie header is no cookie
        return {}
    return {name: morsel.value for name, morsel in cookie.items()}


def client_ip(scope: Scope) -> str:
    """The peer's address (uvicorn has already replaced it with X-Forwarded-For's when the
    peer is a trusted proxy)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


def client_network(ip: str) -> str:
    """What per-address limits and bans are keyed on: an IPv4 address (also when written as
    IPv6-mapped), or an IPv6 address's /64 — one host usually holds a whole /64, and could
    otherwise take a fresh address for every request."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an address ("unknown", a test client's name)
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(getattr(address, "ipv4_mapped", None) or address)
