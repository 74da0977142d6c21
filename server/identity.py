"""Who a request comes from: its address and its cookies. A leaf: standard library and
Starlette only, so that the hot path (fan-out, metrics) can use it without importing the
moderation service (which loads argon2)."""

from __future__ import annotations

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
