"""The checks a request passes before a route acts on it, each written once and used by the
JSON API, the forms, reports and moderation alike:

- the Origin check (another site's page may not act in a reader's name);
- the CSRF token (`X-CSRF-Token` header, or a form's `csrf_token` field);
- who is posting (`author`);
- the moderator's session, as Starlette authentication: ModeratorSessions resolves the
  session cookie once per request, routes say `@requires("moderator")`;
- where a redirect may go (`safe_next`): a path on this site, never another site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser
from starlette.requests import HTTPConnection, Request

from .errors import Forbidden, InvalidMessage
from .http_limits import read_form
from .identity import SESSION_COOKIE, client_ip, cookies
from .security import origin_of
from .threads import Author

if TYPE_CHECKING:
    from .moderation import ModeratorSession

MODERATOR = "moderator"  # the scope a moderator's session grants: @requires(MODERATOR)


# --- the moderator's session ---


class Moderator(BaseUser):
    def __init__(self, session: ModeratorSession) -> None:
        self.session = session

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.session.name

    @property
    def identity(self) -> str:
        return self.session.session_id


class ModeratorSessions(AuthenticationBackend):
    """The one place a request's moderator session is looked up (HTTP and WebSocket alike)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        value = cookies(conn.scope).get(SESSION_COOKIE)
        if not value:
            return None
        try:
            session = await conn.app.state.moderation.identify(value)
        except Exception:  # the store is unreachable: treat as a reader; writes fail on their own
            return None
        return (AuthCredentials([MODERATOR]), Moderator(session)) if session is not None else None


def moderator_of(conn: HTTPConnection) -> ModeratorSession | None:
    user = conn.scope.get("user")
    return user.session if isinstance(user, Moderator) else None


def author(conn: HTTPConnection) -> Author:
    """Who is posting: the reader's id, address, and the moderator's name in a moderator's session."""
    session = moderator_of(conn)
    return Author(reader_id=conn.state.reader_id, ip=client_ip(conn.scope), moderator=session.name if session else None)


# --- Origin and CSRF ---


def check_origin(conn: HTTPConnection) -> None:
    if not conn.app.state.security.origin_allowed(conn.scope):
        raise Forbidden("Requests from another site are not allowed.")


def check_csrf(request: Request, token: object, from_form: bool = False) -> None:
    session = moderator_of(request)  # the token changes at login and logout
    if not request.app.state.security.csrf_ok(
        request.state.reader_id, session.session_id if session else None, token if isinstance(token, str) else None
    ):
        if from_form:
            raise Forbidden("The form has expired. Please reload the page and try again.")
        raise Forbidden("Missing or wrong CSRF token. Reload the page and try again.")


@dataclass(frozen=True)
class Submission:
    """The fields of a state-changing request whose Origin and CSRF token were checked."""

    data: dict[str, Any]
    from_form: bool  # a plain form (no JavaScript): answered with a redirect, not JSON


async def json_body(request: Request, what: str) -> Any:
    """The request's JSON body, which must be sent as application/json (`what` names it in the error)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise InvalidMessage("Send the {what} as application/json.", what=what)
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidMessage("The request body is not valid JSON.") from None


async def submission(request: Request) -> Submission:
    """JSON (token in the X-CSRF-Token header) or a plain form (its csrf_token field)."""
    check_origin(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type == "application/json":
        try:
            data = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            raise InvalidMessage("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise InvalidMessage("Expected a JSON object.")
        from_form = False
    else:
        data, from_form = {key: str(value) for key, value in (await read_form(request)).items()}, True
    check_csrf(request, request.headers.get("x-csrf-token") or data.get("csrf_token"), from_form)
    return Submission(data, from_form)


# --- redirects ---


def safe_next(conn: HTTPConnection, target: object, default: str) -> str:
    """Where to send the browser after a form: a path on this site. An absolute URL is kept
    only when it is on one of the site's own origins (Starlette's `requires` writes `next`
    that way), and then as its path. Anything else, including what a browser would read as
    another host ("//evil", "/\\evil", "/\\t/evil"), gives `default`."""
    if (
        not isinstance(target, str)
        or not target
        or any(c == "\\" or c.isspace() or not c.isprintable() for c in target)
    ):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        try:
            origin = origin_of(f"{parts.scheme}://{parts.netloc}")
        except ValueError:
            return default
        if origin not in conn.app.state.security.own_origins(conn.scope):
            return default
    if not parts.path.startswith("/") or parts.path.startswith("//"):
        return default
    return parts.path + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
