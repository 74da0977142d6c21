"""The routes a newsroom's own pages and systems call: its CMS writing articles (a token with
articles:write), comment counts for article lists (any page of an allowed origin, through
web/static/counts.js) and the API token's own routes. docs/api.md describes each with an example."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .articles import Articles, article_from_json, article_json, check_slug
from .errors import InvalidMessage, NotFound
from .guards import json_body
from .threads import Threads
from .tokens import SCOPE_ARTICLES, require_token, token_of

MAX_COUNT_SLUGS = 100
# A count a few seconds old is as good as a live one on an index page (it is not the thread,
# which is live), and it turns a busy front page's hundreds of loads a second into one store
# read per instance every COUNTS_TTL seconds.
COUNTS_TTL = 5.0


class CommentCounts:
    """Visible comments per thread, each count kept COUNTS_TTL seconds: the slugs of a request
    that are not fresh are read in one store round trip, however many. Only articles' slugs are
    kept (an unknown one counts 0 without a read), so the cache is bounded by the articles."""

    def __init__(self, threads: Threads) -> None:
        self.threads = threads
        self._counts: dict[str, tuple[int, float]] = {}  # slug -> (count, when it was read)

    async def get(self, slugs: list[str]) -> dict[str, int]:
        now = time.monotonic()
        articles = self.threads.articles
        stale = [s for s in slugs if s in articles and now - self._counts.get(s, (0, -COUNTS_TTL))[1] >= COUNTS_TTL]
        if stale:
            for slug, count in (await self.threads.comment_counts(stale)).items():
                self._counts[slug] = (count, now)
        return {slug: self._counts[slug][0] if slug in self._counts else 0 for slug in slugs}


async def counts(request: Request) -> Response:
    """GET /api/counts?slugs=a,b,c -> {"a": 3, "b": 0, "c": 12} (the contract's form)."""
    slugs = list(dict.fromkeys(s.strip() for s in request.query_params.get("slugs", "").split(",") if s.strip()))
    if len(slugs) > MAX_COUNT_SLUGS:
        raise InvalidMessage(f"At most {MAX_COUNT_SLUGS} slugs per request.")
    response = JSONResponse(await request.app.state.comment_counts.get(slugs))
    # Readable by the site's own pages and those of ALLOWED_ORIGINS only; the answer differs by
    # Origin, so caches keep one per origin.
    response.headers["Vary"] = "Origin"
    response.headers["Cache-Control"] = f"public, max-age={int(COUNTS_TTL)}"
    origin = request.headers.get("origin")
    security = request.app.state.security
    if origin and (origin in security.allowed_origins or origin in security.own_origins(request.scope)):
        response.headers["Access-Control-Allow-Origin"] = origin
    return response


async def whoami(request: Request) -> Response:
    """GET /api/tokens/whoami: the token the request came with (any valid token)."""
    return JSONResponse(require_token(request).public())


async def send_test_webhook(request: Request) -> Response:
    """POST /api/webhooks/test (scope articles:write): send a `webhook.test` event to this
    token's webhook, to check the receiver and its signature check."""
    token = require_token(request, "articles:write")
    if not token.webhook_url:
        raise NotFound("This token has no webhook (create-token --webhook URL).")
    request.app.state.webhooks.notify("webhook.test", {"token": token.name}, token=token)
    return JSONResponse({"queued": True, "webhook_url": token.webhook_url}, status_code=202)


# --- articles (token with articles:write; no cookie, no CSRF: a Bearer request has no session) ---


async def _article_request(request: Request) -> tuple[Articles, str, Any]:
    """The checks every write shares, in this order: the token, the slug, then the body."""
    require_token(request, SCOPE_ARTICLES)
    slug = check_slug(request.path_params["slug"])
    if request.method == "DELETE":
        return request.app.state.threads.articles, slug, None
    return request.app.state.threads.articles, slug, await json_body(request, "article")


def _notify(request: Request, event_type: str, data: dict[str, Any]) -> None:
    request.app.state.webhooks.notify(event_type, data)


async def put_article(request: Request) -> Response:
    """PUT /api/articles/{slug}: create (201) or replace (200) the article, and publish it
    (again, if it was unpublished: its comments come back with it)."""
    articles, slug, data = await _article_request(request)
    found = await articles.stored(slug)
    article = article_from_json(slug, data, earlier=found[0] if found else None)
    stored, created = await articles.put(article)
    body = article_json(stored)
    _notify(request, "article.published", {"slug": slug, "title": stored.title, "url": stored.url})
    return JSONResponse(body, status_code=201 if created else 200)


async def patch_article(request: Request) -> Response:
    """PATCH /api/articles/{slug}: change the fields sent, keep the others (published or not)."""
    articles, slug, data = await _article_request(request)
    found = await articles.stored(slug)
    if found is None:
        raise NotFound("No such article: create it with PUT.")
    earlier, published = found
    article = article_from_json(slug, data, earlier=earlier, partial=True)
    stored, _created = await articles.put(article, published=published)
    return JSONResponse(article_json(stored, published))


async def delete_article(request: Request) -> Response:
    """DELETE /api/articles/{slug}: unpublish. The article and its comments are kept; its page
    answers 410 until a PUT publishes it again."""
    articles, slug, _data = await _article_request(request)
    if not await articles.unpublish(slug):
        raise NotFound("No such article.")
    _notify(request, "article.unpublished", {"slug": slug})
    return Response(status_code=204)


async def get_article(request: Request) -> Response:
    """GET /api/articles/{slug}: the published article; a token with articles:write also gets
    an unpublished one (with "published": false), others 410."""
    threads = request.app.state.threads
    articles: Articles = threads.articles
    slug = check_slug(request.path_params["slug"])
    token = token_of(request)
    if token is not None and SCOPE_ARTICLES in token.scopes:
        found = await articles.stored(slug)
        if found is None:
            raise NotFound("No such article.")
        answer = article_json(*found)
    else:
        answer = article_json(await articles.article(slug))  # NotFound, or Gone (410)
    # The thread's state (open, closed, hidden), as the articles list gives it.
    return JSONResponse({**answer, "state": (await threads.states([slug]))[slug]})
