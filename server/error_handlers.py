"""How a refused or failed request is answered: `{"error": BackchannelError.to_wire()}` for
the API, the error page for a browser. Every error path ends in on_backchannel_error."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import BackchannelError, Forbidden, HttpError, Internal, NotFound, Unauthorized
from .i18n import N_
from .pages import render

log = logging.getLogger("backchannel.api")

_TITLES = {
    400: N_("Bad request"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    410: N_("This article is no longer published"),
    422: N_("Please check your comment"),
    429: N_("Slow down"),
    500: N_("Server error"),
    503: N_("Temporarily unavailable"),
}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path in ("/healthz", "/readyz")


async def on_backchannel_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackchannelError)
    retry_after = getattr(exc, "retry_after", None)
    language = request.app.state.language
    if _wants_json(request):
        response: Response = JSONResponse({"error": exc.to_wire(language)}, status_code=exc.status)
    else:
        title = language.gettext(_TITLES.get(exc.status, N_("Error")))
        response = await render(
            request,
            "error.html",
            {"status_code": exc.status, "title": title, "message": exc.in_language(language)},
            status_code=exc.status,
        )
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


async def on_http_error(request: Request, exc: Exception) -> Response:
    """What Starlette refused itself: an unknown path, a method not allowed, and `requires`
    turning away a reader (401 on our routes: the moderator gate)."""
    assert isinstance(exc, HTTPException)
    error = {
        404: NotFound("There is nothing at this address."),
        401: Unauthorized("Moderators only: please log in."),
        403: Forbidden("Not allowed."),
    }.get(exc.status_code) or HttpError(str(exc.detail), exc.status_code)
    return await on_backchannel_error(request, error)


async def on_server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return await on_backchannel_error(request, Internal("Something went wrong on our side. Please try again."))
