"""How a refused or failed request is answered: `{"error": BackchannelError.to_wire()}` for
the API, the error page for a browser. Every error path ends in on_backchannel_error."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import BackchannelError, Forbidden, HttpError, Internal, NotFound, Unauthorized
from .pages import render

log = logging.getLogger("backchannel.api")

_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    410: "This article is no longer published",
    422: "Please check your comment",
    429: "Slow down",
    500: "Server error",
    503: "Temporarily unavailable",
}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path in ("/healthz", "/readyz")


async def on_backchannel_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackchannelError)
    retry_after = getattr(exc, "retry_after", None)
    if _wants_json(request):
        response: Response = JSONResponse({"error": exc.to_wire()}, status_code=exc.status)
    else:
        response = await render(
            request,
            "error.html",
            {"status_code": exc.status, "title": _TITLES.get(exc.status, "Error"), "message": exc.message},
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
