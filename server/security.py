"""Reader identity, CSRF tokens, Origin checks and security headers.

A reader is known by a random id in a signed, HttpOnly cookie (itsdangerous). The CSRF token
is an HMAC of that id: a page's forms and scripts send it back, and a cross-site request
cannot know it. Origins are compared exactly (scheme://host[:port]), never by substring.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import SimpleCookie

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import TooLarge
from .moderation import SESSION_COOKIE
from .settings import Settings

READER_COOKIE = "bc_reader"
READER_COOKIE_MAX_AGE = 365 * 24 * 3600
MAX_BODY_BYTES = 256 * 1024  # no request of ours needs more; uvicorn itself sets no limit


class Security:
    def __init__(self, settings: Settings) -> None:
        key = str(settings.secret_key)
        self._cookie = URLSafeSerializer(key, salt="backchannel.reader")
        self._csrf_key = hashlib.sha256(b"backchannel.csrf:" + key.encode()).digest()
        self.allowed_origins = frozenset(settings.allowed_origins)

    # --- reader identity ---

    def reader_from_cookie(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            reader_id = self._cookie.loads(value)
        except BadSignature:
            return None
        return reader_id if isinstance(reader_id, str) else None

    def reader_cookie(self, reader_id: str, secure: bool) -> str:
        value = self._cookie.dumps(reader_id)
        return (f"{READER_COOKIE}={value}; Path=/; Max-Age={READER_COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax"
                + ("; Secure" if secure else ""))

    # --- CSRF ---

    def csrf_token(self, reader_id: str) -> str:
        return hmac.new(self._csrf_key, reader_id.encode(), hashlib.sha256).hexdigest()[:32]

    def csrf_ok(self, reader_id: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(reader_id), token)

    # --- Origin ---

    def origin_allowed(self, scope: Scope) -> bool:
        """No Origin header (a script, curl) is allowed: CSRF and cross-site WebSocket hijacking
        are browser attacks, and browsers always send Origin on these requests."""
        origin = Headers(scope=scope).get("origin")
        if origin is None:
            return True
        return origin == own_origin(scope) or origin in self.allowed_origins


def cookies(scope: Scope) -> dict[str, str]:
    cookie = SimpleCookie()
    try:
        cookie.load(Headers(scope=scope).get("cookie", ""))
    except Exception:  # a malformed Cookie header is no cookie
        return {}
    return {name: morsel.value for name, morsel in cookie.items()}


def own_origin(scope: Scope) -> str:
    headers = Headers(scope=scope)
    scheme = {"ws": "http", "wss": "https"}.get(scope["scheme"], scope["scheme"])
    return f"{scheme}://{headers.get('host', '')}"


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class SecurityMiddleware:
    """Gives every request a reader id (setting the cookie on a reader's first page), the
    moderator's session when there is one, and every HTTP response the security headers."""

    def __init__(self, app: ASGIApp, security: Security, settings: Settings) -> None:
        self.app = app
        self.security = security
        frame_ancestors = " ".join(["'self'", *settings.allowed_origins])
        self.headers = {
            "Content-Security-Policy": (
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                f"frame-ancestors {frame_ancestors}"),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "strict-origin-when-cross-origin",
            "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        jar = cookies(scope)
        reader_id = self.security.reader_from_cookie(jar.get(READER_COOKIE))
        is_new = reader_id is None
        if is_new:
            reader_id = secrets.token_urlsafe(12)
        state = scope.setdefault("state", {})
        state["reader_id"] = reader_id
        state["moderator"] = None
        if SESSION_COOKIE in jar:
            try:
                state["moderator"] = await scope["app"].state.moderation.identify(jar[SESSION_COOKIE])
            except Exception:  # the store is unreachable: treat as a reader; writes fail on their own
                pass
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        secure = scope["scheme"] == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                # Pages give a new reader its identity; JSON clients and scripts stay cookieless.
                if is_new and headers.get("content-type", "").startswith("text/html"):
                    headers.append("Set-Cookie", self.security.reader_cookie(reader_id, secure))
            await send(message)

        await self.app(scope, _limited(receive, scope), send_with_headers)


def _limited(receive: Receive, scope: Scope) -> Receive:
    """Refuse a request body over MAX_BODY_BYTES, declared or chunked, before it is buffered."""
    declared = Headers(scope=scope).get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        async def refuse() -> Message:
            raise TooLarge("The request is too large.")
        return refuse
    received = 0

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > MAX_BODY_BYTES:
            raise TooLarge("The request is too large.")
        return message
    return counting
