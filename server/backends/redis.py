"""The Redis store and the Redis bus. Paired on one Redis (REDIS_URL alone), Redis is the system
of record and pub/sub carries events between instances; with DATABASE_URL, PostgreSQL is the
store and only the bus is here.

Data model, per thread (every key of a thread shares the hash tag {bc:SLUG}, so that a Redis
Cluster keeps a thread on one shard):

    {bc:SLUG}:meta      hash    seq (latest event), epoch, seeded, visible (comment count)
    {bc:SLUG}:comments  hash    comment id -> the comment record as JSON (with its seq)
    {bc:SLUG}:refs      hash    reader:ref idempotency key -> comment id
    {bc:SLUG}:log       stream  entry id "<seq>-0", field e = the event as it goes on the wire
    {bc:SLUG}:presence  hash    instance id -> "<readers> <unix time>"
    bc:events:SLUG      channel "<epoch> <event JSON>" published for every event
    bc:hb:INSTANCE      channel this instance's heartbeat, through its own subscription

The articles share one hash tag of their own (not {bc:…}, so no scan takes them for a thread):

    {bc-articles}:order        sorted set  "<published_at> <slug>", all scores 0: newest first by
                                           ZREVRANGEBYLEX (published_at is fixed-width ISO-8601)
    {bc-articles}:at           hash        slug -> published_at (to find its member in :order)
    {bc-articles}:meta         hash        slug -> every field but the paragraphs, as JSON
    {bc-articles}:paragraphs   hash        slug -> the paragraphs, as a JSON list
    {bc-articles}:unpublished  set         the slugs unpublished (kept, answered 410)

With the Redis store, one event is one Lua script: assign the seq, store the comment, append
to the log, publish on the bus's channel. Redis runs a script atomically, so seqs are
contiguous and the publishes leave in seq order.
Pub/sub is still at-most-once (a subscriber that reconnects, or falls 32 MiB behind, loses
what was published meanwhile, silently), so the subscription only says "something happened":
the Hub fills every gap from the log, and after any doubt about the subscription (a lost
heartbeat, a reconnect) every subscribed thread is re-read from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from ..comments import PENDING, VISIBLE, Comment, Head, Snapshot, comment_event, status_change, status_event
from ..errors import NotFound, Unavailable
from ..protocol import Event, decode_event, encode
from .base import Backend, Bus, Record, Store, StoredArticle, ThreadDump, Written

log = logging.getLogger("backchannel.redis")
T = TypeVar("T")

HEARTBEAT_INTERVAL = 0.5  # seconds between heartbeats through this instance's own subscription
HEARTBEAT_TIMEOUT = 3.0  # no heartbeat for this long: the subscription is dead, rebuild it
PRESENCE_TTL = 6.0  # an instance that has not refreshed its counts for this long is gone
PRESENCE_REFRESH = 2.0
REDIS_TIMEOUT = 2.0  # every command: a silent link raises instead of hanging
CONTROL_CHANNEL = "bc:control"  # moderation desk events and ended sessions, for every instance

# KEYS: meta, comments, refs, log   ARGV: id, record (JSON object without seq, from after its "{"),
# the comment's moderator view as JSON, ref key or "", parent or "", history size, visible flag
# ("1"/"0"), channel, pending flag ("1": store it, but it is no event until approved)
POST_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nothread'} end
if ARGV[4] ~= '' then
  local earlier = redis.call('HGET', KEYS[3], ARGV[4])
  if earlier then return {'duplicate', redis.call('HGET', KEYS[2], earlier)} end
end
if ARGV[5] ~= '' and redis.call('HEXISTS', KEYS[2], ARGV[5]) == 0 then return {'noparent'} end
if ARGV[9] == '1' then
  local pending = '{"seq":null,' .. ARGV[2]
  redis.call('HSET', KEYS[2], ARGV[1], pending)
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[4], ARGV[1]) end
  return {'ok', pending}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[1], 'visible', 1) end
local record = '{"seq":' .. seq .. ',' .. ARGV[2]
redis.call('HSET', KEYS[2], ARGV[1], record)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[4], ARGV[1]) end
local event = '{"type":"comment","seq":' .. seq .. ',"comment":' .. ARGV[3] .. '}'
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[6], seq .. '-0', 'e', event)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
redis.call('PUBLISH', ARGV[8], epoch .. ' ' .. event)
return {'ok', record}
"""

# KEYS: meta   ARGV: epoch — creates the thread's meta unless it exists; answers the epoch in force
ENSURE_SCRIPT = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
redis.call('HSETNX', KEYS[1], 'seq', 0)
redis.call('HSETNX', KEYS[1], 'visible', 0)
return redis.call('HMGET', KEYS[1], 'epoch', 'seeded')
"""


def _keys(slug: str) -> dict[str, str]:
    tag = "{bc:" + slug + "}"
    return {name: f"{tag}:{name}" for name in ("meta", "comments", "refs", "log", "presence")}


def _channel(slug: str) -> str:
    return f"bc:events:{slug}"


def _record_without_seq(comment: Comment) -> dict[str, Any]:
    record = comment.record()
    del record["seq"]  # the script puts the seq it assigns first
    return record


def _comment(record: bytes | str) -> Comment:
    return Comment(**orjson.loads(record))


def _options() -> dict[str, Any]:
    return {"socket_timeout": REDIS_TIMEOUT, "socket_connect_timeout": REDIS_TIMEOUT, "health_check_interval": 10}


def retry_once_on_a_fresh_connection() -> Retry:
    """For every command pool. After a Redis restart each pooled connection is still open to the
    old process and fails on its next use: /readyz's PING found a live one while the first post
    on each instance got 503. One retry reconnects that connection; none on a timeout, so a
    silent link still fails within REDIS_TIMEOUT. (A clean close means the command never ran,
    and posts carry a ref besides.) redis-py's from_url gives no retry at all by default."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _client(url: str, pool_size: int) -> aioredis.Redis:
    """A command client (retrying once on a fresh connection) whose pool holds at most
    pool_size connections; a command finding them all busy waits for one (up to
    REDIS_TIMEOUT, then Unavailable) rather than failing at once."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=REDIS_TIMEOUT, retry=retry_once_on_a_fresh_connection(), **_options()
    )
    return aioredis.Redis.from_pool(pool)


def RedisBackend(url: str, history_size: int = 1000) -> Backend:
    """Redis-only: Redis is both the store and the bus."""
    return Backend(RedisStore(url, history_size), RedisBus(url))


def _text(reply: bytes | str) -> str:
    """A reply as text. redis-py types replies bytes | str (decode_responses decides which at run
    time); this module's clients leave it off, so they are bytes."""
    return reply.decode() if isinstance(reply, bytes) else reply


async def _call(awaitable: Awaitable[T]) -> T:
    """Every Redis call: failures of the link become Unavailable, never a hang or a 500."""
    try:
        return await awaitable
    except (TimeoutError, RedisError, OSError) as exc:
        raise Unavailable("Comments are unavailable for a moment; please retry.") from exc


ARTICLE_KEYS = [f"{{bc-articles}}:{name}" for name in ("order", "at", "meta", "paragraphs", "unpublished")]
# KEYS: ARTICLE_KEYS   ARGV: slug, published_at, meta, paragraphs, published ("1"/"0"). Returns 1 if new.
PUT_ARTICLE_SCRIPT = """
local earlier = redis.call('HGET', KEYS[2], ARGV[1])
if earlier then redis.call('ZREM', KEYS[1], earlier .. ' ' .. ARGV[1]) end
redis.call('ZADD', KEYS[1], 0, ARGV[2] .. ' ' .. ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
if ARGV[5] == '1' then redis.call('SREM', KEYS[5], ARGV[1]) else redis.call('SADD', KEYS[5], ARGV[1]) end
if earlier then return 0 end
return 1
"""
# KEYS: ARTICLE_KEYS   ARGV: slug, published ("1"/"0"), meta. Returns 0 when there is no such article.
PUBLISH_ARTICLE_SCRIPT = """
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
if ARGV[2] == '1' then redis.call('SREM', KEYS[5], ARGV[1]) else redis.call('SADD', KEYS[5], ARGV[1]) end
return 1
"""


class RedisStore(Store):
    publishes = True  # the post script and the status transaction publish on RedisBus's channel

    def __init__(self, url: str, history_size: int = 1000, pool_size: int = 50) -> None:
        self.url = url
        self.history_size = history_size
        self.redis = _client(url, pool_size)
        self._post_script = self.redis.register_script(POST_SCRIPT)
        self._ensure_script = self.redis.register_script(ENSURE_SCRIPT)
        self._put_article_script = self.redis.register_script(PUT_ARTICLE_SCRIPT)
        self._publish_article_script = self.redis.register_script(PUBLISH_ARTICLE_SCRIPT)
        self._seeds: dict[str, Sequence[Comment]] = {}

    async def start(self) -> None:
        await _call(self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()

    async def ready(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), REDIS_TIMEOUT))
        except (TimeoutError, RedisError, OSError):
            return False

    # --- threads ---

    async def ensure_thread(self, slug: str, seeds: Sequence[Comment]) -> None:
        self._seeds[slug] = seeds
        keys = _keys(slug)
        _epoch, seeded = await _call(self._ensure_script(keys=[keys["meta"]], args=[secrets.token_hex(8)]))
        if seeded:
            return
        for seed in seeds:  # fixed ids and ref keys: an import cut short resumes without doubles
            await self._post_once(seed, f"seed:{seed.id}")
        await _call(self.redis.hset(keys["meta"], "seeded", 1))

    async def post(self, comment: Comment, ref_key: str | None) -> Written:
        result = await self._post_once(comment, ref_key)
        if result is None:  # the thread is gone from Redis (flushed, or an old AOF): start a new epoch
            log.warning("thread %s is missing from Redis: recreating it in a new epoch", comment.slug)
            await self.ensure_thread(comment.slug, self._seeds.get(comment.slug, ()))
            result = await self._post_once(comment, ref_key)
            if result is None:
                raise Unavailable("The thread could not be recreated; please retry.")
        stored, created = result
        # The script has published already; the event and epoch only tell the Backend there was one.
        event = comment_event(stored) if created and stored.seq is not None else None
        return Written(stored, event, "", created)

    async def _post_once(self, comment: Comment, ref_key: str | None) -> tuple[Comment, bool] | None:
        keys = _keys(comment.slug)
        record = orjson.dumps(_record_without_seq(comment)).decode()
        view = orjson.dumps(comment.moderator_view()).decode()
        reply = await _call(
            self._post_script(
                keys=[keys["meta"], keys["comments"], keys["refs"], keys["log"]],
                args=[
                    comment.id,
                    record[1:],
                    view,
                    ref_key or "",
                    comment.parent or "",
                    self.history_size,
                    "1" if comment.status == VISIBLE else "0",
                    _channel(comment.slug),
                    "1" if comment.status == PENDING else "0",
                ],
            )
        )
        outcome = reply[0].decode()
        if outcome == "nothread":
            return None
        if outcome == "noparent":
            raise NotFound("The comment you are replying to does not exist.")
        return _comment(reply[1]), outcome == "ok"

    async def set_status(self, slug: str, comment_id: str, status: str, moderator: str | None, at: str) -> Written:
        return await _call(self._set_status(slug, comment_id, status, moderator, at))

    async def _set_status(self, slug: str, comment_id: str, status: str, moderator: str | None, at: str) -> Written:
        # Moderation is rare, so optimistic locking: read under WATCH, decide in Python (the same
        # status_change as the SQL stores), write in MULTI; a concurrent post retries it.
        keys = _keys(slug)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(keys["meta"], keys["comments"])
                    record = await pipe.hget(keys["comments"], comment_id)
                    seq, epoch = await pipe.hmget(keys["meta"], "seq", "epoch")
                    if record is None or epoch is None:
                        raise NotFound("No such comment.")
                    assert seq is not None, "ENSURE_SCRIPT sets a thread's seq with its epoch"
                    before = _comment(record)
                    changed, kind = status_change(before, status, moderator, at)
                    if changed is None:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                        return Written(before, None, _text(epoch))
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    event = None
                    if kind is not None:
                        new_seq = int(seq) + 1
                        if kind == "comment":  # approval: the comment is published now, with this seq
                            changed = changed.with_seq(new_seq)
                        event = status_event(kind, new_seq, changed)
                        wire = encode(event)
                        pipe.hset(keys["meta"], "seq", new_seq)
                        pipe.xadd(
                            keys["log"], {"e": wire}, id=f"{new_seq}-0", maxlen=self.history_size, approximate=False
                        )
                        pipe.publish(_channel(slug), f"{_text(epoch)} {wire}")
                    visible_change = (changed.status == VISIBLE) - (before.status == VISIBLE)
                    if visible_change:
                        pipe.hincrby(keys["meta"], "visible", visible_change)
                    pipe.hset(keys["comments"], comment_id, orjson.dumps(changed.record()))
                    await pipe.execute()
                    return Written(changed, event, _text(epoch))
                except WatchError:
                    continue

    async def get_comment(self, slug: str, comment_id: str) -> Comment | None:
        record = await _call(self.redis.hget(_keys(slug)["comments"], comment_id))
        return _comment(record) if record is not None else None

    async def get_comments(self, refs: Sequence[tuple[str, str]]) -> list[Comment]:
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            for slug, comment_id in refs:
                pipe.hget(_keys(slug)["comments"], comment_id)
            records = await _call(pipe.execute())
        return [_comment(record) for record in records if record is not None]

    async def comment_by_ref(self, slug: str, ref_key: str) -> Comment | None:
        keys = _keys(slug)
        comment_id = await _call(self.redis.hget(keys["refs"], ref_key))
        if comment_id is None:
            return None
        record = await _call(self.redis.hget(keys["comments"], comment_id))
        return _comment(record) if record is not None else None

    async def _read_head(self, slug: str) -> Head | None:
        seq, epoch = await _call(self.redis.hmget(_keys(slug)["meta"], "seq", "epoch"))
        if epoch is None:
            return None
        assert seq is not None, "ENSURE_SCRIPT sets a thread's seq with its epoch"
        return Head(seq=int(seq), epoch=_text(epoch))

    async def head(self, slug: str) -> Head:
        head = await self._read_head(slug)
        if head is None:
            if slug not in self._seeds:
                raise NotFound("No such article.")
            await self.ensure_thread(slug, self._seeds[slug])  # flushed: a new epoch begins
            head = await self._read_head(slug)
            assert head is not None
        return head

    async def snapshot(self, slug: str) -> Snapshot:
        keys = _keys(slug)
        await self.head(slug)  # recreates a flushed thread
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(keys["meta"], "seq", "epoch")
            pipe.hgetall(keys["comments"])
            (seq, epoch), records = await _call(pipe.execute())
        comments = sorted(
            (_comment(r) for r in records.values()), key=lambda c: (c.seq is None, c.seq or 0, c.created_at)
        )  # pending ones last
        return Snapshot(seq=int(seq), epoch=epoch.decode(), comments=comments)

    async def events_since(self, slug: str, since: int) -> list[Event] | None:
        keys = _keys(slug)
        async with self.redis.pipeline(transaction=True) as pipe:  # one consistent view of head and log
            pipe.hget(keys["meta"], "seq")
            pipe.xrange(keys["log"], "-", "+", count=1)
            pipe.xrange(keys["log"], f"{since + 1}-0", "+")
            seq, first, entries = await _call(pipe.execute())
        if seq is None or since > int(seq) or since < 0:
            return None
        if since == int(seq):
            return []
        oldest = int(first[0][0].split(b"-")[0]) if first else int(seq) + 1
        if since < oldest - 1:
            return None
        return [decode_event(fields[b"e"]) for _id, fields in entries]

    async def comment_counts(self, slugs: Sequence[str]) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            for slug in slugs:
                pipe.hget(_keys(slug)["meta"], "visible")
            counts = await _call(pipe.execute())
        return {slug: int(count or 0) for slug, count in zip(slugs, counts, strict=True)}

    # --- articles ---

    async def put_article(self, article: StoredArticle) -> bool:
        args: list[str | int] = [
            article.slug,
            article.published_at,
            article.meta,
            article.paragraphs or "[]",
            int(article.published),
        ]
        return bool(await _call(self._put_article_script(keys=ARTICLE_KEYS, args=args)))

    async def get_article(self, slug: str) -> StoredArticle | None:
        _order, at, meta, paragraphs, unpublished = ARTICLE_KEYS
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(at, slug)
            pipe.hget(meta, slug)
            pipe.hget(paragraphs, slug)
            pipe.sismember(unpublished, slug)
            published_at, meta_json, paragraphs_json, is_unpublished = await _call(pipe.execute())
        if published_at is None or meta_json is None:
            return None
        return StoredArticle(
            slug, _text(published_at), not is_unpublished, _text(meta_json), _text(paragraphs_json or b"[]")
        )

    async def set_article_published(self, slug: str, published: bool, meta: str) -> bool:
        return bool(await _call(self._publish_article_script(keys=ARTICLE_KEYS, args=[slug, int(published), meta])))

    async def article_summaries(self, before: tuple[str, str] | None, limit: int) -> list[StoredArticle]:
        order, _at, meta, _paragraphs, unpublished = ARTICLE_KEYS
        start = f"({before[0]} {before[1]}" if before else "+"
        members = await _call(self.redis.zrevrangebylex(order, start, "-", start=0, num=limit))
        keys = [_text(member).split(" ", 1) for member in members]
        if not keys:
            return []
        slugs = [slug for _at, slug in keys]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(meta, slugs)
            pipe.smismember(unpublished, slugs)
            metas, flags = await _call(pipe.execute())
        return [
            StoredArticle(slug, published_at, not flag, _text(meta_json))
            for (published_at, slug), meta_json, flag in zip(keys, metas, flags, strict=True)
            if meta_json is not None  # put between the two reads: the next page has it
        ]

    # --- moderation records ---

    async def kv_get(self, key: str) -> str | None:
        value = await _call(self.redis.get(f"bc:kv:{key}"))
        return _text(value) if value is not None else None

    async def kv_set(self, key: str, value: str, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        return bool(
            await _call(self.redis.set(f"bc:kv:{key}", value, px=int(ttl * 1000) if ttl else None, nx=only_if_absent))
        )

    async def kv_delete(self, key: str) -> None:
        await _call(self.redis.delete(f"bc:kv:{key}"))

    async def set_add(self, key: str, member: str) -> None:
        await _call(self.redis.sadd(f"bc:set:{key}", member))

    async def set_remove(self, key: str, member: str) -> None:
        await _call(self.redis.srem(f"bc:set:{key}", member))

    async def set_members(self, key: str) -> set[str]:
        return {_text(m) for m in await _call(self.redis.smembers(f"bc:set:{key}"))}

    async def list_push(self, key: str, value: str, keep: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(f"bc:list:{key}", value)
            pipe.ltrim(f"bc:list:{key}", 0, keep - 1)
            await _call(pipe.execute())

    async def list_range(self, key: str, count: int | None = None) -> list[str]:
        items = await _call(self.redis.lrange(f"bc:list:{key}", 0, -1 if count is None else count - 1))
        return [_text(item) for item in items]

    async def list_ranges(self, keys: Sequence[str]) -> list[list[str]]:
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            for key in keys:
                pipe.lrange(f"bc:list:{key}", 0, -1)
            lists = await _call(pipe.execute())
        return [[item.decode() for item in items] for items in lists]

    async def read_records(
        self, kv_keys: Sequence[str], lists: Sequence[tuple[str, int]]
    ) -> tuple[list[str | None], list[list[str]]]:
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            for key in kv_keys:
                pipe.get(f"bc:kv:{key}")
            for key, count in lists:
                pipe.lrange(f"bc:list:{key}", 0, count - 1)
            replies = await _call(pipe.execute())
        values = [_text(value) if value is not None else None for value in replies[: len(kv_keys)]]
        return values, [[_text(item) for item in items] for items in replies[len(kv_keys) :]]

    # --- moving data (SCAN: one Redis, not a Cluster, whose keys are spread over its nodes) ---

    async def thread_slugs(self) -> list[str]:
        metas = [key.decode() async for key in self.redis.scan_iter(match="{bc:*}:meta", count=1000)]
        return sorted(meta[len("{bc:") : -len("}:meta")] for meta in metas)

    async def dump_thread(self, slug: str) -> ThreadDump:
        keys = _keys(slug)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(keys["meta"], "seq", "epoch", "seeded")
            pipe.hgetall(keys["comments"])
            pipe.hgetall(keys["refs"])
            pipe.xrange(keys["log"], "-", "+")
            (seq, epoch, seeded), records, refs, entries = await _call(pipe.execute())
        if seq is None:
            raise NotFound("No such article.")
        ref_of = {comment_id.decode(): ref.decode() for ref, comment_id in refs.items()}
        comments = sorted(
            (_comment(r) for r in records.values()), key=lambda c: (c.seq is None, c.seq or 0, c.created_at, c.id)
        )
        return ThreadDump(
            slug,
            int(seq),
            epoch.decode(),
            seeded == b"1",
            [{**c.record(), "ref_key": ref_of.get(c.id)} for c in comments],
            [(int(entry_id.split(b"-")[0]), fields[b"e"].decode()) for entry_id, fields in entries],
        )

    async def load_thread(self, thread: ThreadDump) -> None:
        keys = _keys(thread.slug)
        comments = {c["id"]: {k: v for k, v in c.items() if k != "ref_key"} for c in thread.comments}
        async with self.redis.pipeline(transaction=True) as pipe:  # MULTI: all of it or none
            pipe.delete(keys["log"])  # a stream entry cannot be overwritten: the log is rebuilt whole
            visible = sum(c["status"] == VISIBLE for c in comments.values())
            meta = {"seq": thread.seq, "epoch": thread.epoch, "seeded": int(thread.seeded), "visible": visible}
            pipe.hset(keys["meta"], mapping=meta)  # type: ignore[arg-type]
            if comments:
                pipe.hset(keys["comments"], mapping={i: orjson.dumps(c) for i, c in comments.items()})
            if refs := {c["ref_key"]: c["id"] for c in thread.comments if c["ref_key"] is not None}:
                pipe.hset(keys["refs"], mapping=refs)
            for seq, payload in thread.events:
                pipe.xadd(keys["log"], {"e": payload}, id=f"{seq}-0")
            await _call(pipe.execute())

    async def dump_records(self) -> list[Record]:
        records = []
        for prefix in ("kv", "set", "list"):
            for key in sorted([k.decode() async for k in self.redis.scan_iter(match=f"bc:{prefix}:*", count=1000)]):
                name = key[len(f"bc:{prefix}:") :]
                if prefix == "kv":
                    async with self.redis.pipeline(transaction=True) as pipe:
                        pipe.get(key)
                        pipe.pexpiretime(key)
                        value, expires_ms = await _call(pipe.execute())
                    if value is not None:
                        expires_at = round(expires_ms / 1000, 3) if expires_ms > 0 else None
                        records.append(Record("kv", name, value.decode(), expires_at))
                elif prefix == "set":
                    members = sorted(_text(m) for m in await _call(self.redis.smembers(key)))
                    records.append(Record("set", name, members))
                else:  # stored newest first (LPUSH)
                    items = [_text(item) for item in await _call(self.redis.lrange(key, 0, -1))]
                    records.append(Record("list", name, items[::-1]))
        return [r for r in records if r.value]

    async def load_records(self, records: Sequence[Record]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for record in records:
                key = f"bc:{record.kind}:{record.key}"
                if isinstance(record.value, str):  # kv
                    pipe.set(key, record.value)
                    if record.expires_at is not None:
                        pipe.pexpireat(key, int(record.expires_at * 1000))
                elif record.kind == "set":
                    pipe.sadd(key, *record.value)
                else:
                    pipe.delete(key)
                    pipe.lpush(key, *record.value)
            await _call(pipe.execute())


# KEYS: moving windows in the `limits` library's layout (a list of hit timestamps, newest first)
# ARGV: now, then each window's limit and expiry — its acquire_moving_window for every key in
# order, stopping at the first full one. Answers the 1-based index of that one, or 0.
ACQUIRE_IN_ORDER_SCRIPT = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local oldest = redis.call('LINDEX', key, limit - 1)
  if oldest and tonumber(oldest) >= now - expiry then return i end
  redis.call('LPUSH', key, now)
  redis.call('LTRIM', key, 0, limit - 1)
  redis.call('EXPIRE', key, expiry)
end
return 0
"""


class SharedLimits(RedisStorage):
    """Rate-limit counters in Redis, shared by every instance. While Redis is out of reach each
    instance counts on its own, so an outage loosens the limits instead of refusing every post
    (with a PostgreSQL store, posts go on while Redis is down)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__("async+" + url, implementation="redispy", wrap_exceptions=True, **options)
        self._local = MemoryStorage()
        assert isinstance(self.bridge, RedispyBridge), "implementation='redispy' above"
        self._acquire_in_order = self.bridge.get_connection().register_script(ACQUIRE_IN_ORDER_SCRIPT.encode())

    async def acquire_in_order(self, entries: Sequence[tuple[str, int, int]]) -> int | None:
        """server.rate_limits.AcquiresInOrder: every limit of an action in one round trip."""
        try:
            refused = await self._acquire_in_order(
                keys=[self.bridge.prefixed_key(key) for key, _limit, _expiry in entries],
                args=[time.time(), *(n for _key, limit, expiry in entries for n in (limit, expiry))],
            )
        except (TimeoutError, RedisError, OSError):
            for index, (key, limit, expiry) in enumerate(entries):
                if not await self._local.acquire_entry(key, limit, expiry):
                    return index
            return None
        return int(refused) - 1 if refused else None

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        try:
            return await super().acquire_entry(key, limit, expiry, amount)
        except StorageError:
            return await self._local.acquire_entry(key, limit, expiry, amount)

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        try:
            return await super().get_moving_window(key, limit, expiry)
        except StorageError:
            return await self._local.get_moving_window(key, limit, expiry)

    async def clear(self, key: str) -> None:
        try:
            await super().clear(key)
        finally:
            await self._local.clear(key)


class RedisBus(Bus):
    shared = True

    def __init__(self, url: str, pool_size: int = 50) -> None:
        super().__init__()
        self.url = url
        self.instance = secrets.token_hex(6)
        self.redis = _client(url, pool_size)
        # The subscription recovers by itself (resubscribe, then re-read every thread): a silent
        # reconnect inside redis-py would skip the re-read, so it has a client that never retries.
        self._subscriber_redis = aioredis.Redis.from_url(url, **_options())
        self.rate_limit_storage = SharedLimits(url, retry=retry_once_on_a_fresh_connection(), **_options())
        self._subscribed: set[str] = set()
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._pubsub: aioredis.client.PubSub | None = None
        self._subscriber_up = asyncio.Event()
        self._local_readers: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # redis-py can turn a cancellation into a TimeoutError inside its own timeouts, so the
        # background loops also stop on this flag rather than trusting cancel() alone.
        self._running = False
        self._heartbeat_sent = 0
        self._heartbeat_seen = 0
        self._last_heartbeat = 0.0

    # --- lifecycle ---

    async def start(self) -> None:
        await _call(self.redis.ping())
        self._running = True
        self._tasks = [
            asyncio.create_task(self._listen(), name="redis-listener"),
            asyncio.create_task(self._heartbeat(), name="redis-heartbeat"),
            asyncio.create_task(self._refresh_presence(), name="redis-presence"),
        ]
        await _call(asyncio.wait_for(self._subscriber_up.wait(), 2 * REDIS_TIMEOUT))

    async def close(self) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=REDIS_TIMEOUT + 1)
        with contextlib.suppress(Exception):
            for slug in list(self._local_readers):
                await self.redis.hdel(_keys(slug)["presence"], self.instance)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]  # unannotated in redis-py
        await self.redis.aclose()
        await self._subscriber_redis.aclose()

    async def publish(self, slug: str, event: Event, epoch: str) -> None:
        await _call(self.redis.publish(_channel(slug), f"{epoch} {encode(event)}"))

    # --- subscription ---

    async def subscribe(self, slug: str) -> None:
        self._subscribed.add(slug)
        try:
            await asyncio.wait_for(self._subscriber_up.wait(), REDIS_TIMEOUT)
        except TimeoutError:
            self._subscribed.discard(slug)
            raise Unavailable("Live updates are reconnecting; please retry.") from None
        assert self._pubsub is not None
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[_channel(slug)] = confirmed
        try:
            await _call(self._pubsub.subscribe(_channel(slug)))
            # Only once Redis confirms is every later publish sure to reach us: the caller reads
            # the head after this, and anything published before is in that head.
            await _call(asyncio.wait_for(confirmed, REDIS_TIMEOUT))
        except BaseException:
            self._subscribed.discard(slug)
            raise
        finally:
            self._confirmations.pop(_channel(slug), None)

    async def unsubscribe(self, slug: str) -> None:
        self._subscribed.discard(slug)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await self._pubsub.unsubscribe(_channel(slug))

    async def _connect_subscriber(self) -> aioredis.client.PubSub:
        pubsub = self._subscriber_redis.pubsub()
        channels = [f"bc:hb:{self.instance}", CONTROL_CHANNEL, *(_channel(slug) for slug in self._subscribed)]
        await pubsub.subscribe(*channels)
        confirmed = 0
        deadline = time.monotonic() + REDIS_TIMEOUT
        while confirmed < len(channels):
            if time.monotonic() > deadline:
                raise TimeoutError("Redis did not confirm the subscriptions")
            message = await pubsub.get_message(timeout=REDIS_TIMEOUT)
            if message and message["type"] == "subscribe":
                confirmed += 1
        return pubsub

    async def _listen(self) -> None:
        """One task per instance reads the one subscription connection. It survives every error:
        re-raises cancellation, logs, backs off, resubscribes, then has every thread re-read."""
        backoff = 0.1
        while self._running:
            try:
                if self._pubsub is None:
                    self._pubsub = await self._connect_subscriber()
                    self._subscriber_up.set()
                    self._last_heartbeat = time.monotonic()
                    self._heartbeat_seen = 0
                    log.info("subscribed to %d thread(s)", len(self._subscribed))
                    backoff = 0.1
                    self._resync_all()
                message = await self._pubsub.get_message(timeout=HEARTBEAT_INTERVAL)
                if message is not None:
                    self._handle(message)
                if time.monotonic() - self._last_heartbeat > HEARTBEAT_TIMEOUT:
                    raise ConnectionError(f"no heartbeat through the subscription for {HEARTBEAT_TIMEOUT} s")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Redis subscription lost (%s); reconnecting in %.1f s", exc, backoff)
                await self._drop_subscriber()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _drop_subscriber(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._subscriber_up.clear()
        for future in self._confirmations.values():
            if not future.done():
                future.set_exception(ConnectionError("the subscription was lost"))
        if pubsub is not None:
            with contextlib.suppress(Exception):
                # A blackholed link must not hang the close: drop the socket without a goodbye.
                if pubsub.connection is not None:
                    await pubsub.connection.disconnect(nowait=True)
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]  # unannotated in redis-py

    def _handle(self, message: dict[str, Any]) -> None:  # a pubsub message, as redis-py gives it
        channel = message["channel"].decode()
        if message["type"] == "subscribe":
            future = self._confirmations.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if message["type"] != "message":
            return
        if channel == CONTROL_CHANNEL:
            self.on_control(message["data"].decode())
            return
        if channel.startswith("bc:hb:"):
            number = int(message["data"])
            if self._heartbeat_seen and number != self._heartbeat_seen + 1:
                # A heartbeat went missing, so other messages may have too.
                log.warning("a heartbeat was lost on the subscription; re-reading every thread")
                self._resync_all()
            self._heartbeat_seen = number
            self._last_heartbeat = time.monotonic()
            return
        slug = channel.removeprefix("bc:events:")
        data: bytes = message["data"]
        if data.startswith(b"presence "):
            self.on_presence(slug, int(data.split(b" ", 1)[1]))
            return
        epoch, _, wire = data.partition(b" ")
        event = decode_event(wire)
        self.on_event(slug, Event(event.type, event.seq, event.data, wire=wire.decode()), epoch.decode())

    def _resync_all(self) -> None:
        for slug in list(self._subscribed):
            self.on_resync(slug)

    async def _heartbeat(self) -> None:
        channel = f"bc:hb:{self.instance}"
        while self._running:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            self._heartbeat_sent += 1
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await self.redis.publish(channel, self._heartbeat_sent)

    # --- presence: each instance's count per thread, summed; dead instances age out ---

    async def presence(self, slug: str, local_readers: int) -> int:
        if local_readers:
            self._local_readers[slug] = local_readers
        else:
            self._local_readers.pop(slug, None)
        try:
            total = await self._report_presence(slug, local_readers)
            await self.redis.publish(_channel(slug), f"presence {total}")
        except (TimeoutError, RedisError, OSError):
            return local_readers  # the best we know while Redis is away
        return total

    async def _report_presence(self, slug: str, local_readers: int) -> int:
        key = _keys(slug)["presence"]
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            if local_readers:
                pipe.hset(key, self.instance, f"{local_readers} {now:.3f}")
            else:
                pipe.hdel(key, self.instance)
            pipe.hgetall(key)
            *_, entries = await pipe.execute()
        total, stale = 0, []
        for instance, value in entries.items():
            count, seen = value.split()
            if now - float(seen) > PRESENCE_TTL:
                stale.append(instance)
            else:
                total += int(count)
        if stale:
            await self.redis.hdel(key, *stale)
        return total

    async def _refresh_presence(self) -> None:
        """Keeps this instance's counts alive, and lets every instance notice a dead one's
        readers leaving: when a thread's total changes, the new count is announced."""
        totals: dict[str, int] = {}
        while self._running:
            await asyncio.sleep(PRESENCE_REFRESH)
            for slug in list(self._subscribed):
                try:
                    total = await self._report_presence(slug, self._local_readers.get(slug, 0))
                except (TimeoutError, RedisError, OSError):
                    break
                if totals.get(slug) != total:
                    totals[slug] = total
                    self.on_presence(slug, total)

    async def publish_control(self, message: str) -> None:
        await _call(self.redis.publish(CONTROL_CHANNEL, message))
