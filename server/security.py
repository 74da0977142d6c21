"""Reader identity, CSRF tokens, the site's own origins, the Host check and security headers.

A reader is known by a random id in a signed, HttpOnly cookie (itsdangerous); an HTTP request
that changes something without that cookie (a script) is known by its address instead. The
CSRF token is an HMAC of that id and of the moderator's session id, if any, so that it
changes at login and logout: a page's forms and scripts send it back, and a cross-site request
cannot know it. Origins are compared exactly (scheme://host[:port]), never by substring.

The site's own origins come from PUBLIC_URL, never from the request's Host header, which the
client writes: a request naming another host is answered 400 (DNS rebinding, poisoned links).
Without PUBLIC_URL (development) they are the loopback origins of the port the connection
came in on.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import InvalidHost, TooLarge
from .identity import READER_COOKIE, client_ip, cookies
from .settings import Settings

READER_COOKIE_MAX_AGE = 365 * 24 * 3600
MAX_BODY_BYTES = 256 * 1024  # no request of ours needs more; uvicorn itself sets no limit
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Load balancers and scrapers ask for these by the instance's address, not the site's name;
# they answer nothing a rebinding page could use (/metrics has its own address list).
HOST_CHECK_EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})


def origin_of(url: str) -> str:
    """scheme://host[:port], lower-cased, without a default port; ValueError if url has no origin."""
    parts = urlsplit(url.strip())
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise ValueError(f"{url!r} is not an origin (scheme://host[:port])")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = parts.port
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != _DEFAULT_PORTS[parts.scheme] else "")


def _netlocs(origin: str) -> set[str]:
    """The Host header values a request for this origin may carry."""
    scheme, _, netloc = origin.partition("://")
    if ":" in netloc.rsplit("]", 1)[-1]:
        return {netloc}
    return {netloc, f"{netloc}:{_DEFAULT_PORTS[scheme]}"}


def theme_origin(theme_css_url: str | None) -> list[str]:
    """The origin a newsroom's stylesheet (THEME_CSS_URL) comes from, for style-src; none when
    it is unset or a path on this site ('self' covers it)."""
    parts = urlsplit(theme_css_url or "")
    if not parts.scheme:
        return []
    return [origin_of(f"{parts.scheme}://{parts.netloc}")]


class Security:
    def __init__(self, settings: Settings) -> None:
        key = str(settings.secret_key)
        self._cookie = URLSafeSerializer(key, salt="backchannel.reader")
        self._csrf_key = hashlib.sha256(b"backchannel.csrf:" + key.encode()).digest()
        self.allowed_origins = frozenset(origin_of(o) for o in settings.allowed_origins)
        self.public_origins = frozenset(origin_of(o) for o in settings.public_url)
        self._public_hosts = frozenset(h for o in self.public_origins for h in _netlocs(o))
        listen = settings.host if settings.host not in ("", "0.0.0.0", "::") else None
        self._development_hosts = tuple(
            dict.fromkeys([*LOOPBACK_HOSTS, *([f"[{listen}]" if ":" in listen else listen] if listen else [])])
        )

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
        return f"{READER_COOKIE}={value}; Path=/; Max-Age={READER_COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax" + (
            "; Secure" if secure else ""
        )

    # --- CSRF ---

    def csrf_token(self, reader_id: str, session_id: str | None) -> str:
        subject = reader_id + "\0" + (session_id or "")
        return hmac.new(self._csrf_key, subject.encode(), hashlib.sha256).hexdigest()[:32]

    def csrf_ok(self, reader_id: str, session_id: str | None, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(reader_id, session_id), token or "")

    # --- the site's own origins ---

    def own_origins(self, scope: Scope) -> frozenset[str]:
        if self.public_origins:
            return self.public_origins
        # Development: this connection's own address (which a client cannot choose) and the
        # loopback names, on the port it came in on.
        server = scope.get("server")
        if not server:
            return frozenset()
        address, port = server[0], server[1]
        scheme = {"ws": "http", "wss": "https"}.get(scope["scheme"], scope["scheme"])
        hosts = {*self._development_hosts, f"[{address}]" if ":" in address else address}
        return frozenset(origin_of(f"{scheme}://{host}:{port}") for host in hosts)

    def host_allowed(self, scope: Scope) -> bool:
        host = (Headers(scope=scope).get("host") or "").lower()
        if self.public_origins:
            return host in self._public_hosts
        return any(host in _netlocs(origin) for origin in self.own_origins(scope))

    def origin_allowed(self, scope: Scope) -> bool:
        """No Origin header (a script, curl) is allowed: CSRF and cross-site WebSocket hijacking
        are browser attacks, and browsers always send Origin on these requests."""
        origin = Headers(scope=scope).get("origin")
        if origin is None:
            return True
        return origin in self.allowed_origins or origin in self.own_origins(scope)

    def secure(self, scope: Scope) -> bool:
        """Whether cookies get Secure: the request came over TLS, or the site is https only
        (behind a proxy that does not say which scheme it was asked on)."""
        return scope["scheme"] in ("https", "wss") or (
            bool(self.public_origins) and all(o.startswith("https://") for o in self.public_origins)
        )


class SecurityMiddleware:
    """Refuses a request for another host (400), gives every request a reader id (setting the
    cookie on a reader's first page), caps request bodies, and gives every HTTP response the
    security headers. The moderator's session is resolved after this, by guards.ModeratorSessions."""

    def __init__(self, app: ASGIApp, security: Security, settings: Settings) -> None:
        self.app = app
        self.security = security
        frame_ancestors = " ".join(["'self'", *settings.allowed_origins])
        # A newsroom's stylesheet, and the web fonts it names from its own origin.
        theme = theme_origin(settings.theme_css_url)
        style_src = " ".join(["'self'", *theme])
        font_src = f"font-src 'self' {theme[0]}; " if theme else ""
        self.headers = {
            "Content-Security-Policy": (
                f"default-src 'self'; script-src 'self'; style-src {style_src}; {font_src}img-src 'self' data:; "
                "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                f"frame-ancestors {frame_ancestors}"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "strict-origin-when-cross-origin",
            "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if scope["path"] not in HOST_CHECK_EXEMPT and not self.security.host_allowed(scope):
            error = InvalidHost("This site does not answer for that host name.")
            # On a WebSocket this is the upgrade's answer (Starlette sends it as a denial response).
            wire = error.to_wire(scope["app"].state.language)
            return await JSONResponse({"error": wire}, status_code=error.status)(scope, receive, send)
        cookie_reader_id = self.security.reader_from_cookie(cookies(scope).get(READER_COOKIE))
        is_new = cookie_reader_id is None
        reader_id: str
        if cookie_reader_id is not None:
            reader_id = cookie_reader_id
        elif scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            # A script's post: a fresh id for each would reset every per-reader rule and ban.
            reader_id = scope["app"].state.moderation.address_reader_id(client_ip(scope))
        else:  # a page may give it to a new reader as their cookie; a socket keeps it while open
            reader_id = secrets.token_urlsafe(12)
        scope.setdefault("state", {})["reader_id"] = reader_id
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        secure = self.security.secure(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                # A moderator's session (the only one that authenticates, by now): reader ids,
                # removed text, never in a cache.
                if getattr(scope.get("user"), "is_authenticated", False):
                    headers["Cache-Control"] = "no-store"
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
