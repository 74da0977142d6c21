"""API tokens: how a newsroom's own systems (its CMS, its analytics) call the API.

A token is `bc_` + 32 random bytes (secrets.token_urlsafe), shown once by
`python -m server create-token` and stored only as its SHA-256. A fast hash is enough here:
argon2 slows down guessing a *password* a person chose; a 256-bit random token cannot be
guessed, so its hash only has to keep a copy of the store from being a list of working tokens.

A request authenticates with `Authorization: Bearer …`, as Starlette authentication:
BearerTokens resolves the header once per request and grants the scopes `token` and
`token:<scope>` for each of the token's scopes (`token:articles:write`). Those are never
`moderator`, and a moderator's session never grants a `token:` scope, so neither can stand in
for the other. A request that carries a Bearer header is judged by it alone: its cookies are not
looked at (no moderator session, so no CSRF token needed or accepted in its place). Another
scheme (a staging site behind HTTP Basic auth) is not ours, and is left alone.

A wrong or revoked token is answered 401, a missing scope 403, each as `{"error": …}`. Failed
attempts are counted per address like logins; past the limit the address is answered 429
without the token being looked up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import limits
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, BaseUser
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from .backends.base import Backend
from .comments import utc_now_iso
from .errors import BackchannelError, Forbidden, RateLimited, Unauthorized, Unavailable
from .guards import ModeratorSessions
from .identity import client_ip, client_network

TOKEN_PREFIX = "bc_"
WEBHOOK_SECRET_PREFIX = "whsec_"
# What a token may be given. articles:write: PUT/PATCH/DELETE /api/articles/{slug}, and
# POST /api/webhooks/test. A token with no scope proves who it is, no more.
SCOPE_ARTICLES = "articles:write"
SCOPES = frozenset({SCOPE_ARTICLES})
TOKEN = "token"  # the scope every valid token grants
FAILED_TOKEN_LIMITS_PER_ADDRESS = "10/minute;100/hour"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def scope_of(scope: str) -> str:
    """The authentication scope a token's scope grants: articles:write -> token:articles:write."""
    return f"{TOKEN}:{scope}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    name: str
    scopes: tuple[str, ...]
    created_at: str
    webhook_url: str | None = None
    webhook_secret: str | None = None  # kept in the clear: the server signs with it

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "webhook_url": self.webhook_url,
        }


def check_webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


class Tokens:
    """The tokens, in the store's key-value records: `api-token:NAME` (the record, with the hash),
    `api-token-hash:SHA256` (its name: one read finds a token), and the set `api-tokens`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        # Exact counts, as for posts and logins (threads.py says why), with the same fallback to
        # per-instance counts (SharedLimits) while Redis is away.
        self._limiter = MovingWindowRateLimiter(backend.rate_limit_storage)
        self._failed_limits = limits.parse_many(FAILED_TOKEN_LIMITS_PER_ADDRESS)

    async def create(self, name: str, scopes: list[str], webhook_url: str | None = None) -> tuple[str, ApiToken]:
        """A new token (returned once, never stored) and its record. A name is taken until revoked."""
        if not _NAME.fullmatch(name):
            raise ValueError("a token's name is 1-64 of a-z 0-9 . _ - (starting with a letter or digit)")
        if unknown := set(scopes) - SCOPES:
            raise ValueError(f"unknown scope(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(SCOPES))}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = ApiToken(
            name,
            tuple(sorted(set(scopes))),
            utc_now_iso(),
            check_webhook_url(webhook_url) if webhook_url else None,
            WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32) if webhook_url else None,
        )
        stored = {**record.public(), "webhook_secret": record.webhook_secret, "hash": _digest(token)}
        if not await self.backend.kv_set(f"api-token:{name}", json.dumps(stored), only_if_absent=True):
            raise ValueError(f"a token named {name!r} exists: revoke it first")
        await self.backend.kv_set(f"api-token-hash:{stored['hash']}", name)
        await self.backend.set_add("api-tokens", name)
        return token, record

    async def revoke(self, name: str) -> bool:
        raw = await self.backend.kv_get(f"api-token:{name}")
        if raw is None:
            return False
        await self.backend.kv_delete(f"api-token-hash:{json.loads(raw)['hash']}")
        await self.backend.kv_delete(f"api-token:{name}")
        await self.backend.set_remove("api-tokens", name)
        return True

    async def all(self) -> list[ApiToken]:
        records = [
            await self.backend.kv_get(f"api-token:{name}")
            for name in sorted(await self.backend.set_members("api-tokens"))
        ]
        return [_record(json.loads(raw)) for raw in records if raw is not None]

    async def verify(self, token: str) -> ApiToken | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = _digest(token)
        name = await self.backend.kv_get(f"api-token-hash:{digest}")
        raw = await self.backend.kv_get(f"api-token:{name}") if name is not None else None
        if raw is None:
            return None
        stored = json.loads(raw)
        # The lookup by hash already matched; compared again in constant time all the same, so
        # that no code path ever compares a secret with ==.
        return _record(stored) if hmac.compare_digest(stored["hash"], digest) else None

    async def check_failures(self, ip: str) -> None:
        """RateLimited if this address has failed too often (checked before the token is read)."""
        try:
            for item in self._failed_limits:
                if not await self._limiter.test(item, "token-failed", client_network(ip)):
                    stats = await self._limiter.get_window_stats(item, "token-failed", client_network(ip))
                    raise RateLimited(
                        "Too many wrong tokens. Please wait and try again.",
                        max(1, int(stats.reset_time - time.time()) + 1),
                    )
        except StorageError as exc:
            raise Unavailable("The API is unavailable for a moment; please retry.") from exc

    async def count_failure(self, ip: str) -> None:
        try:
            for item in self._failed_limits:
                await self._limiter.hit(item, "token-failed", client_network(ip))
        except StorageError as exc:
            raise Unavailable("The API is unavailable for a moment; please retry.") from exc


def _record(stored: dict[str, Any]) -> ApiToken:
    return ApiToken(
        stored["name"],
        tuple(stored["scopes"]),
        stored["created_at"],
        stored.get("webhook_url"),
        stored.get("webhook_secret"),
    )


# --- authentication ---


class TokenClient(BaseUser):
    """The user of a request that came with a valid token: a newsroom's system, never a moderator."""

    def __init__(self, token: ApiToken) -> None:
        self.token = token

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.token.name

    @property
    def identity(self) -> str:
        return f"token:{self.token.name}"


class TokenRefused(AuthenticationError):
    def __init__(self, error: BackchannelError) -> None:
        super().__init__(error.message)
        self.error = error


class BearerTokens(AuthenticationBackend):
    """A Bearer token when the request has an Authorization header, else the moderator's session."""

    def __init__(self) -> None:
        self.sessions = ModeratorSessions()

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        scheme, _, value = conn.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return await self.sessions.authenticate(conn)
        if not value.strip():
            raise TokenRefused(Unauthorized("Expected Authorization: Bearer <token>."))
        tokens: Tokens = conn.app.state.tokens
        ip = client_ip(conn.scope)
        try:
            await tokens.check_failures(ip)
            token = await tokens.verify(value.strip())
            if token is None:
                await tokens.count_failure(ip)
                raise TokenRefused(Unauthorized("This token is wrong or was revoked."))
        except (RateLimited, Unavailable) as exc:
            raise TokenRefused(exc) from None
        return AuthCredentials([TOKEN, *map(scope_of, token.scopes)]), TokenClient(token)


def on_token_refused(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """AuthenticationMiddleware's answer to a refused token: JSON, like every API error."""
    error = exc.error if isinstance(exc, TokenRefused) else Unauthorized(str(exc))
    response = JSONResponse({"error": error.to_wire()}, status_code=error.status)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="backchannel"'
    if (retry_after := getattr(error, "retry_after", None)) is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def token_of(conn: HTTPConnection) -> ApiToken | None:
    """The request's valid token, if it came with one."""
    return conn.user.token if isinstance(conn.user, TokenClient) else None


def require_token(conn: HTTPConnection, scope: str | None = None) -> ApiToken:
    """The request's token, holding `scope` if given: else Unauthorized (no token: 401) or
    Forbidden (a token without that scope, or a moderator's session: 403 and 401 respectively)."""
    if TOKEN not in conn.auth.scopes or not isinstance(conn.user, TokenClient):
        raise Unauthorized("This needs an API token: Authorization: Bearer <token>.")
    if scope is not None and scope_of(scope) not in conn.auth.scopes:
        raise Forbidden(f"This token does not have the scope {scope}.")
    return conn.user.token
