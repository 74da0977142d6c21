"""Threads open, close and hide: the routes that do it, and the timer that closes old threads.

A thread's state changes through Threads.set_state only, whoever asks: a moderator (the
article page, the desk), a newsroom's system with an API token (`articles:write`), or
AutoClose, AUTO_CLOSE_DAYS after the article's publication. Each change is a sequenced event
(`opened`, `closed`, `hidden`) that every open page applies live, and an entry of the audit
log (which the webhooks send on, like every moderation action).

AutoClose runs on every instance. They agree without talking to each other: each one closes a
thread only if its state is still the one it read (Store.set_thread_state's `expect`), so of
several instances deciding at once exactly one makes the event. A thread reopened (or hidden)
by hand after its time has come is left as it is; so is an article without published_at.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from .comments import CLOSED, HIDDEN, OPEN, ThreadState
from .content import Article
from .errors import InvalidMessage, NotFound, Unauthorized
from .guards import moderator_of, safe_next, submission
from .threads import Threads
from .tokens import TOKEN, require_token

log = logging.getLogger("backchannel.lifecycle")

AUTO_CLOSE_BY = "auto-close"  # who closed it, in the audit log and the event
SWEEP_INTERVAL = 60.0  # seconds between two looks for threads whose time has come
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """An ISO-8601 time as the store and the articles keep it; without an offset, UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- the routes: POST /api/articles/{slug}/close, /open, /hide ---


async def close_thread(request: Request) -> Response:
    return await _set_state(request, CLOSED)


async def open_thread(request: Request) -> Response:
    return await _set_state(request, OPEN)


async def hide_thread(request: Request) -> Response:
    return await _set_state(request, HIDDEN)


async def _set_state(request: Request, state: str) -> Response:
    """A token with articles:write (judged by the token alone, as every Bearer request), or a
    moderator's session with its CSRF token (JSON from the page, or a plain form)."""
    threads: Threads = request.app.state.threads
    slug = request.path_params["slug"]
    threads.article(slug)
    from_form, data = False, {}
    if TOKEN in request.auth.scopes:
        by = "api:" + require_token(request, "articles:write").name
        data = await _optional_json(request)
    elif (moderator := moderator_of(request)) is not None:
        form = await submission(request)
        by, data, from_form = moderator.name, form.data, form.from_form
    else:
        raise Unauthorized("This needs a moderator's session, or an API token with the scope articles:write.")
    reason = str(data.get("reason") or "").strip()[:500] or None
    after, event = await threads.set_state(slug, state, by, reason=reason)
    if from_form:
        return RedirectResponse(safe_next(request, data.get("next"), f"/articles/{slug}#comments"), status_code=303)
    return JSONResponse(
        {
            "slug": slug,
            "state": after.name,
            "changed": event is not None,
            "seq": event.seq if event is not None else None,
            "by": after.by,
            "at": after.at,
        }
    )


async def _optional_json(request: Request) -> dict[str, object]:
    """A token's request may carry {"reason": …}; an empty body is fine."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidMessage("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InvalidMessage('Expected a JSON object, such as {"reason": "…"}.')
    return data


# --- AUTO_CLOSE_DAYS ---


class AutoClose:
    """Closes each thread `days` after its article's published_at, by the clock given (the
    tests give one they move by hand)."""

    def __init__(self, threads: Threads, days: float, clock: Clock = utc_now, interval: float = SWEEP_INTERVAL) -> None:
        self.threads = threads
        self.days = days
        self.clock = clock
        self.interval = interval
        # Threads this instance has seen past their time and settled (closed, by it or anyone,
        # or changed by hand since): never read again, so a sweep reads only threads coming due.
        self._settled: set[str] = set()

    def due(self, article: Article) -> datetime | None:
        if article.published_at is None:
            return None
        return parse_iso(article.published_at) + timedelta(days=self.days)

    async def sweep(self) -> list[str]:
        """Close every thread whose time has come; returns those this call closed."""
        now = self.clock()
        closed = []
        articles = self.threads.articles
        for slug in list(articles):  # the published articles, newest first
            if slug in self._settled:
                continue
            article = articles[slug]
            due = self.due(article)
            if due is None or due > now:
                continue
            try:
                state = (await self.threads.backend.head(article.slug)).state
            except NotFound:  # an article published a moment ago, its thread not made yet
                continue
            if self._wanted(state, due):
                _after, event = await self.threads.set_state(
                    article.slug,
                    CLOSED,
                    AUTO_CLOSE_BY,
                    expect=state,
                    at=iso(now),
                    detail=f"{self.days:g} days after publication",
                )
                if event is not None:
                    closed.append(article.slug)
            self._settled.add(article.slug)
        return closed

    @staticmethod
    def _wanted(state: ThreadState, due: datetime) -> bool:
        """Open, and not reopened by hand since its time came."""
        return state.name == OPEN and (state.at is None or parse_iso(state.at) < due)

    async def run(self) -> None:
        while True:
            try:
                if closed := await self.sweep():
                    log.info("auto-closed %d thread(s): %s", len(closed), ", ".join(closed[:10]))
            except Exception:  # the store is away, most likely: the next sweep tries again
                log.warning("auto-close could not look at the threads now; retrying", exc_info=True)
            await asyncio.sleep(self.interval)
