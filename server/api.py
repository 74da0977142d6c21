"""JSON routes and health checks."""

from __future__ import annotations

import asyncio
import base64
import binascii
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .articles import article_summary, decode_cursor, encode_cursor, iso_utc
from .comments import HIDDEN, PENDING, Comment
from .errors import InvalidMessage
from .guards import author, check_csrf, check_origin, json_body, moderator_of
from .identity import READER_COOKIE
from .paging import REPLIES_SORT, TOP_LEVEL_SORT, Page, read_page, sort_of
from .paging import decode_cursor as decode_page_cursor
from .threads import moderator_view, visible_to

PAGE_SIZE, MAX_PAGE_SIZE = 50, 200  # comments per page of GET /api/articles/{slug}/comments
ARTICLES_PAGE = 100  # articles per page of GET /api/articles (default and most)


async def list_articles(request: Request) -> Response:
    """GET /api/articles?limit=N&since=T&after=C: published articles newest first, at most N
    (default and max ARTICLES_PAGE), those published at or after T only. The answer stays the
    list it always was (old clients read slug, title, comment_count); the following page's
    URL is in the `Link: <…>; rel="next"` header, and its cursor in `X-Next-Cursor`."""
    threads = request.app.state.threads
    params = request.query_params
    limit = _page_size(params.get("limit"), ARTICLES_PAGE, ARTICLES_PAGE)
    since = iso_utc(params["since"], "since") if params.get("since") else ""
    page = list(threads.articles.page(limit + 1, before=decode_cursor(params.get("after"), "after")))
    page = [a for a in page if (a.published_at or "") >= since]
    shown = page[:limit]
    slugs = [a.slug for a in shown]
    counts, states = await asyncio.gather(threads.comment_counts(slugs), threads.states(slugs))
    response = JSONResponse(
        [{**article_summary(a), "comment_count": counts[a.slug], "state": states[a.slug]} for a in shown]
    )
    if len(page) > limit:
        cursor = encode_cursor(shown[-1])
        query = urlencode({"limit": limit, **({"since": params["since"]} if since else {}), "after": cursor})
        response.headers["Link"] = f'</api/articles?{query}>; rel="next"'
        response.headers["X-Next-Cursor"] = cursor
    return response


async def list_comments(request: Request) -> Response:
    """GET /api/articles/{slug}/comments?sort=S&parent=P&after=C&limit=N: one page of the
    comments whose parent is P (the top level without it), in sort S (server/paging.py), each
    with its `reply_count` and `votes`. The thread's `seq` is read before the page, so a reader
    following the live socket from it misses nothing the page does not show (and may see a
    comment both ways: by id, it is one). Without sort and parent: the whole thread in seq
    order, as this route answered before sorting existed."""
    params = request.query_params
    if not params.get("sort") and "parent" not in params:
        return await _thread_in_seq_order(request)
    parent = params.get("parent") or None
    sort = sort_of(params.get("sort"), REPLIES_SORT if parent else TOP_LEVEL_SORT)
    after = decode_page_cursor(params.get("after"), sort)
    limit = _page_size(params.get("limit"))
    threads = request.app.state.threads
    slug = request.path_params["slug"]
    threads.article(slug)
    moderator = moderator_of(request) is not None
    reader_id = request.state.reader_id
    head = await threads.backend.head(slug)
    hidden = head.state.name == HIDDEN and not moderator  # readers see none of a hidden thread
    page = (
        Page([], {}, None)
        if hidden
        else await read_page(
            threads.backend, slug, parent, sort, after, limit, lambda c: moderator or c.reader_id == reader_id
        )
    )
    bans = await request.app.state.moderation.bans() if moderator else None
    return JSONResponse(
        {
            "seq": head.seq,
            "epoch": head.epoch,
            "state": head.state.name,
            "sort": sort,
            "comments": [
                {
                    **(moderator_view(c, bans) if moderator else c.public()),
                    "reply_count": page.reply_counts.get(c.id, 0),
                }
                for c in page.comments
            ],
            "next": page.next,
        }
    )


async def _thread_in_seq_order(request: Request) -> Response:
    """One page of the whole thread, in seq order (comments held for moderation last), as of
    event `seq`. `next` is the cursor of the following page (`after=`), or null after the last."""
    limit = _page_size(request.query_params.get("limit"))
    after = _cursor(request.query_params.get("after"))
    snapshot = await request.app.state.threads.snapshot(request.path_params["slug"])
    moderator = moderator_of(request) is not None
    hidden = snapshot.state.name == HIDDEN and not moderator  # readers see none of a hidden thread
    comments = [] if hidden else visible_to(snapshot.comments, request.state.reader_id, moderator)
    if after is not None:
        comments = [c for c in comments if _position(c) > after]
    comments.sort(key=_position)  # already in this order but for ties among held ones: cheap
    page = comments[:limit]
    bans = await request.app.state.moderation.bans() if moderator else None
    return JSONResponse(
        {
            "seq": snapshot.seq,
            "epoch": snapshot.epoch,
            "state": snapshot.state.name,
            "comments": [moderator_view(c, bans) if moderator else c.public() for c in page],
            "next": _encode_cursor(page[-1]) if len(comments) > limit else None,
        }
    )


# (0 published / 1 held, seq, created_at, id): compared as a tuple.
Position = tuple[int, int, str, str]


def _position(comment: Comment) -> Position:
    """Where a comment stands in the thread: published ones by seq (a later one always has a
    higher seq), then the held ones by creation. A cursor is the position of a page's last."""
    if comment.seq is not None:
        return (0, comment.seq, "", "")
    return (1, 0, comment.created_at, comment.id)


def _encode_cursor(comment: Comment) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(_position(comment))).decode().rstrip("=")


def _cursor(raw: str | None) -> Position | None:
    if raw is None or raw == "":
        return None
    try:
        position = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidMessage("after must be a cursor given as next by an earlier page.") from None
    if not (
        isinstance(position, list)
        and len(position) == 4
        and all(isinstance(v, int) for v in position[:2])
        and all(isinstance(v, str) for v in position[2:])
    ):
        raise InvalidMessage("after must be a cursor given as next by an earlier page.")
    return (position[0], position[1], position[2], position[3])


def _page_size(raw: str | None, default: int = PAGE_SIZE, most: int = MAX_PAGE_SIZE) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise InvalidMessage(f"limit must be a number from 1 to {most}.")
    return min(int(raw), most)


async def create_comment(request: Request) -> Response:
    state = request.app.state
    slug = request.path_params["slug"]
    state.threads.article(slug)
    check_origin(request)
    # A browser session (it has the reader cookie) must prove the request came from our page;
    # a script without cookies has no session to abuse.
    if READER_COOKIE in request.cookies:
        check_csrf(request, request.headers.get("x-csrf-token"))
    data = await json_body(request, "comment")
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), (str, type(None))) for k in ("name", "about", "body", "parent", "ref")
    ):
        raise InvalidMessage('Expected {"name": str, "about": str?, "body": str, "parent": str?}.')
    comment, created = await state.threads.post(
        slug,
        author(request),
        name=data.get("name"),
        about=data.get("about"),
        body=data.get("body"),
        parent=data.get("parent"),
        ref=data.get("ref"),
    )
    status = 202 if comment.status == PENDING else 201 if created else 200  # 202: held for moderation
    return JSONResponse({"comment": comment.public(), "seq": comment.seq}, status_code=status)


async def _reader_write(request: Request, what: str) -> object:
    """A reader's write to one of their comments, or a vote: from our page (Origin, and the
    CSRF token that goes with their reader cookie); its JSON body."""
    check_origin(request)
    check_csrf(request, request.headers.get("x-csrf-token"))
    return await json_body(request, what) if what else None


async def vote(request: Request) -> Response:
    """POST /api/comments/{id}/vote {"up": bool} -> {"votes": N}: recommend, or withdraw."""
    data = await _reader_write(request, "vote")
    if not isinstance(data, dict) or not isinstance(data.get("up"), bool):
        raise InvalidMessage('Expected {"up": true} or {"up": false}.')
    _comment, count = await request.app.state.threads.vote(
        request.path_params["comment_id"], author(request), data["up"]
    )
    return JSONResponse({"votes": count})


async def edit_comment(request: Request) -> Response:
    """PATCH /api/comments/{id} {"body"} -> {"comment", "seq"}: its author, within EDIT_WINDOW."""
    data = await _reader_write(request, "comment")
    if not isinstance(data, dict) or not isinstance(data.get("body"), str):
        raise InvalidMessage('Expected {"body": str}.')
    comment, seq = await request.app.state.threads.edit(
        request.path_params["comment_id"], author(request), data["body"]
    )
    return JSONResponse({"comment": comment.public(), "seq": seq})


async def delete_comment(request: Request) -> Response:
    """DELETE /api/comments/{id} -> {"seq"}: its author, within EDIT_WINDOW."""
    await _reader_write(request, "")
    seq = await request.app.state.threads.delete(request.path_params["comment_id"], author(request))
    return JSONResponse({"seq": seq})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        ready = await request.app.state.backend.ready()
    except Exception:
        ready = False
    return JSONResponse({"status": "ok" if ready else "unavailable"}, status_code=200 if ready else 503)
