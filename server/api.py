"""JSON routes, health checks, and the error handlers that turn errors into JSON or a page."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import BackchannelError, Forbidden, InvalidMessage, NotFound
from .pages import check_comment_post, render
from .security import READER_COOKIE, client_ip
from .comments import PENDING
from .threads import Author, visible_to

log = logging.getLogger("backchannel.api")


def error_response(code: str, message: str, status: int, **extra) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


async def list_articles(request: Request) -> Response:
    threads = request.app.state.threads
    counts = await threads.comment_counts()
    return JSONResponse([{"slug": a.slug, "title": a.title, "comment_count": counts.get(a.slug, 0)}
                         for a in threads.articles.values()])


async def list_comments(request: Request) -> Response:
    snapshot = await request.app.state.threads.snapshot(request.path_params["slug"])
    moderator = request.state.moderator is not None
    comments = visible_to(snapshot.comments, request.state.reader_id, moderator)
    return JSONResponse({"seq": snapshot.seq, "epoch": snapshot.epoch,
                         "comments": [c.moderator_view() if moderator else c.public() for c in comments]})


async def create_comment(request: Request) -> Response:
    state = request.app.state
    slug = check_comment_post(request)
    # A browser session (it has the reader cookie) must prove the request came from our page.
    if READER_COOKIE in request.cookies and not state.security.csrf_ok(
            request.state.reader_id, request.headers.get("x-csrf-token")):
        raise Forbidden("Missing or wrong X-CSRF-Token header.")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise InvalidMessage("Send the comment as application/json.")
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidMessage("The request body is not valid JSON.") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), (str, type(None)))
                                             for k in ("name", "about", "body", "parent", "ref")):
        raise InvalidMessage('Expected {"name": str, "about": str?, "body": str, "parent": str?}.')
    author = Author(reader_id=request.state.reader_id, ip=client_ip(request.scope),
                    moderator=request.state.moderator.name if request.state.moderator else None)
    comment, created = await state.threads.post(slug, author, name=data.get("name"), about=data.get("about"),
                                                body=data.get("body"), parent=data.get("parent"),
                                                ref=data.get("ref"))
    status = 202 if comment.status == PENDING else 201 if created else 200  # 202: held for moderation
    return JSONResponse({"comment": comment.public(), "seq": comment.seq}, status_code=status)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        ready = await request.app.state.backend.ready()
    except Exception:
        ready = False
    return JSONResponse({"status": "ok" if ready else "unavailable"}, status_code=200 if ready else 503)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path in ("/healthz", "/readyz")


async def on_backchannel_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackchannelError)
    extra = {"retry_after": exc.retry_after} if hasattr(exc, "retry_after") else {}
    headers = {"Retry-After": str(exc.retry_after)} if extra else None
    if _wants_json(request):
        response = error_response(exc.code, exc.message, exc.status, **extra)
    else:
        response = render(request, "error.html", {"status_code": exc.status, "title": _TITLES.get(exc.status, "Error"),
                                                  "message": exc.message}, status_code=exc.status)
    if headers:
        response.headers.update(headers)
    return response


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return await on_backchannel_error(request, NotFound("There is nothing at this address."))
    if _wants_json(request):
        return error_response("http_error", str(exc.detail), exc.status_code)
    return render(request, "error.html", {"status_code": exc.status_code, "title": _TITLES.get(exc.status_code, "Error"),
                                          "message": str(exc.detail)}, status_code=exc.status_code)


async def on_server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    message = "Something went wrong on our side. Please try again."
    if _wants_json(request):
        return error_response("internal", message, 500)
    return render(request, "error.html", {"status_code": 500, "title": "Server error", "message": message},
                  status_code=500)


_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 422: "Please check your comment",
           429: "Slow down", 503: "Temporarily unavailable"}
