"""Webhooks: a signed JSON POST to each token's webhook URL for every published comment and
every moderation action, so a newsroom can feed its own analytics.

The post path only appends to a bounded in-process queue (no await, no I/O); one background
task per instance delivers, a few at a time. Each instance sends what happened on it, so every
event is sent once across instances. A delivery that fails is tried again after 1, 2, 4, … ×
WEBHOOK_RETRY_SECONDS, WEBHOOK_ATTEMPTS times in all, then dropped. When the queue (events and
retries together) is full, the oldest entry is dropped. A dead endpoint therefore costs a queue
of bounded size and one log line (when it starts failing; another when it recovers).

The body is signed with the token's webhook secret (HMAC-SHA256) over "<timestamp>.<body>":

    X-Backchannel-Timestamp: 1764480000
    X-Backchannel-Signature: sha256=<hex>

The receiver recomputes the HMAC, compares in constant time, and refuses a timestamp more than
a few minutes old (a replayed request); docs/api.md has the few lines of Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import itertools
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import orjson

from .comments import Comment, utc_now_iso
from .settings import Settings
from .tokens import ApiToken, Tokens

log = logging.getLogger("backchannel.webhooks")

SIGNATURE_HEADER = "X-Backchannel-Signature"
TIMESTAMP_HEADER = "X-Backchannel-Timestamp"
# Audit entries that are about a moderator's account, not about the comments: not sent.
PRIVATE_ACTIONS = frozenset({"login", "login_failed", "logout"})
DELIVERY_TIMEOUT = 5.0  # seconds for one POST, connection included
CONCURRENT_DELIVERIES = 4  # a slow endpoint cannot hold up every other token's
# A token created by the command line reaches running instances within this many seconds.
TARGETS_TTL = 10.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass
class _Job:
    body: bytes
    event_type: str
    token: ApiToken | None = None  # None: not yet fanned out to the tokens that have a webhook
    attempt: int = 1
    delivery_id: str = field(default_factory=lambda: secrets.token_hex(8))


class Webhooks:
    def __init__(self, tokens: Tokens, settings: Settings) -> None:
        self.tokens = tokens
        self.queue_size = settings.webhook_queue_size
        self.attempts = settings.webhook_attempts
        self.retry_seconds = settings.webhook_retry_seconds
        self._due: list[tuple[float, int, _Job]] = []  # a heap by due time; the counter is age
        self._counter = itertools.count()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENT_DELIVERIES)
        self._failing: set[str] = set()  # URLs whose last delivery failed (logged once)
        self._overflowing = False
        self._targets: tuple[float, list[ApiToken]] = (float("-inf"), [])
        self._in_flight: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=DELIVERY_TIMEOUT, follow_redirects=False)
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._in_flight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def queued(self) -> int:
        return len(self._due)

    # --- what happened (called on the post path: never blocks) ---

    def comment_published(self, comment: Comment) -> None:
        self.notify("comment.published", {"slug": comment.slug, **comment.public()})

    def comment_changed(self, kind: str, comment: Comment) -> None:
        """`comment.edited` / `comment.deleted`: its author changed it."""
        self.notify(f"comment.{kind}", {"slug": comment.slug, **comment.public()})

    def moderation_recorded(self, entry: dict[str, Any]) -> None:
        if entry.get("action") not in PRIVATE_ACTIONS:
            self.notify(f"moderation.{entry['action']}", entry)

    def notify(self, event_type: str, data: dict[str, Any], token: ApiToken | None = None) -> None:
        """Queue an event for every token with a webhook (or for this one token)."""
        if self._task is None:  # not serving (a command-line tool)
            return
        body = orjson.dumps({"type": event_type, "at": utc_now_iso(), "data": data})
        self._push(_Job(body, event_type, token), time.monotonic())

    def _push(self, job: _Job, due: float) -> None:
        if len(self._due) >= self.queue_size:
            oldest = min(range(len(self._due)), key=lambda i: self._due[i][1])
            self._due[oldest] = self._due[-1]
            self._due.pop()
            heapq.heapify(self._due)
            self.dropped += 1
            if not self._overflowing:
                log.warning("webhook queue full (%d): dropping the oldest deliveries", self.queue_size)
                self._overflowing = True
        elif self._overflowing and len(self._due) < self.queue_size // 2:
            self._overflowing = False
        heapq.heappush(self._due, (due, next(self._counter), job))
        self._wake.set()

    # --- delivery ---

    async def _run(self) -> None:
        while True:
            if not self._due:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._due[0][0] - time.monotonic()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            _due, _age, job = heapq.heappop(self._due)
            if job.token is None:
                for token in await self._webhook_tokens():
                    self._push(_Job(job.body, job.event_type, token), time.monotonic())
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(job))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _webhook_tokens(self) -> list[ApiToken]:
        read_at, tokens = self._targets
        if time.monotonic() - read_at > TARGETS_TTL:
            try:
                tokens = [t for t in await self.tokens.all() if t.webhook_url and t.webhook_secret]
            except Exception:  # the store is away: the last list we had
                log.debug("cannot read the webhook targets", exc_info=True)
            else:
                self._targets = (time.monotonic(), tokens)
        return tokens

    async def _deliver(self, job: _Job) -> None:
        assert job.token is not None and job.token.webhook_url and job.token.webhook_secret and self._client
        url = job.token.webhook_url
        timestamp = str(int(time.time()))
        try:
            try:
                response = await self._client.post(
                    url,
                    content=job.body,
                    headers={
                        "Content-Type": "application/json",
                        "User-Agent": "Backchannel-Webhooks",
                        "X-Backchannel-Event": job.event_type,
                        "X-Backchannel-Delivery": job.delivery_id,
                        TIMESTAMP_HEADER: timestamp,
                        SIGNATURE_HEADER: sign(job.token.webhook_secret, timestamp, job.body),
                    },
                )
                failure = None if response.is_success else f"HTTP {response.status_code}"
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            self._slots.release()
        if failure is None:
            if url in self._failing:
                self._failing.discard(url)
                log.info("webhook %s of token %s answers again", url, job.token.name)
            return
        if url not in self._failing:
            self._failing.add(url)
            log.warning(
                "webhook %s of token %s failed (%s); retrying with backoff, up to %d attempts",
                url,
                job.token.name,
                failure,
                self.attempts,
            )
        if job.attempt < self.attempts:
            job.attempt += 1
            self._push(job, time.monotonic() + self.retry_seconds * 2 ** (job.attempt - 2))
