"""The routes a newsroom's own pages and systems call: comment counts for article lists
(any page of an allowed origin, through web/static/counts.js) and the API token's own routes.
docs/api.md describes each with an example."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import InvalidMessage, NotFound
from .threads import Threads
from .tokens import require_token

MAX_COUNT_SLUGS = 100
# A count a few seconds old is as good as a live one on an index page (it is not the thread,
# which is live), and it turns a busy front page's hundreds of loads a second into one store
# read per instance every COUNTS_TTL seconds.
COUNTS_TTL = 5.0


class CommentCounts:
    """Visible comments per thread, read from the store at most once per COUNTS_TTL seconds in
    one round trip, however many slugs are asked for; requests that arrive while it is being
    read wait for that read instead of starting their own."""

    def __init__(self, threads: Threads) -> None:
        self.threads = threads
        self._read_at = float("-inf")
        self._counts: dict[str, int] = {}
        self._reading: asyncio.Future[dict[str, int]] | None = None

    async def get(self, slugs: list[str]) -> dict[str, int]:
        if time.monotonic() - self._read_at > COUNTS_TTL:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read())
            reading = self._reading
            await asyncio.shield(reading)
        return {slug: self._counts.get(slug, 0) for slug in slugs}

    async def _read(self) -> dict[str, int]:
        try:
            self._counts = await self.threads.comment_counts()
            self._read_at = time.monotonic()
            return self._counts
        finally:
            self._reading = None


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
