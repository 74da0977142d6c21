"""The Redis store and the Redis bus. Paired on one Redis (REDIS_URL alone), Redis is the system
of record and pub/sub carries events between instances; with DATABASE_URL, PostgreSQL is the
store and only the bus is here. REDIS_URL=redis+cluster://host:port[,host:port…] runs both on a
Redis Cluster, with sharded pub/sub (SSUBSCRIBE/SPUBLISH: a classic PUBLISH is copied to every
node of a cluster).

Data model, per thread (every key of a thread shares the hash tag {bc:SLUG}, so that a Redis
Cluster keeps a thread on one shard):

    {bc:SLUG}:meta      hash    seq (latest event), epoch, seeded, visible (comment count),
                                state, state_by, state_at (absent: open, never changed)
    {bc:SLUG}:comments  hash    comment id -> the comment record as JSON (with its seq)
    {bc:SLUG}:refs      hash    reader:ref idempotency key -> comment id
    {bc:SLUG}:order     sorted set  every published comment as "<parent id or ''>|<seq, 12 digits>|<id>"
                                and every held one as "!held|<id>", all scores 0: a page of one
                                parent's comments is a ZRANGEBYLEX, its reply count a ZLEXCOUNT
                                (meta's `indexed` says it is complete: threads older than it are
                                indexed at their first page read, by INDEX_SCRIPT)
    {bc:SLUG}:votes     hash    comment id -> its vote count (a record's own "votes" is ignored)
    {bc:SLUG}:voted:R   set     the comment ids reader R recommends
    {bc:SLUG}:voters    hash    "<comment id> <reader>" -> 1, for every vote (what an export carries)
    {bc:SLUG}:log       stream  entry id "<seq>-0", field e = the event as it goes on the wire
    {bc:SLUG}:presence  hash    instance id -> "<readers> <unix time>"
    {bc:SLUG}:events    channel "<epoch> <event JSON>" published for every event
    {bc}:control        channel moderation desk events and ended sessions, for every instance
    {bc:hb:INSTANCE:N}  channel this instance's heartbeat through one subscription connection
                                (N picks a slot that connection's node serves)

Moderation records (bc:kv:*, bc:set:*, bc:list:*) and rate-limit counters are one key each,
so that no command crosses slots; reads of several go in one pipeline (per node, in a cluster).

The articles share one hash tag of their own (not {bc:…}, so no scan takes them for a thread):

    {bc-articles}:order        sorted set  "<published_at> <slug>", all scores 0: newest first by
                                           ZREVRANGEBYLEX (published_at is fixed-width ISO-8601)
    {bc-articles}:at           hash        slug -> published_at (to find its member in :order)
    {bc-articles}:meta         hash        slug -> every field but the paragraphs, as JSON
    {bc-articles}:paragraphs   hash        slug -> the paragraphs, as a JSON list
    {bc-articles}:unpublished  set         the slugs unpublished (kept, answered 410)

With the Redis store, one event is one Lua script: assign the seq, store the comment, append
to the log, publish on the thread's channel. Redis runs a script atomically, so seqs are
contiguous and the publishes leave in seq order. The script refuses to store a comment id
twice: redis-py re-runs a script whose connection closed mid-command (in a cluster, up to 9
times for one call), and a post carries its id.
Pub/sub is still at-most-once (a subscriber that reconnects, or falls 32 MiB behind, loses
what was published meanwhile, silently), so the subscription only says "something happened":
the Hub fills every gap from the log, and after any doubt about a subscription connection (a
lost heartbeat, a reconnect, a slot moved to another node) every thread it carried is re-read
from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.errors import StorageError
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from ..comments import (
    HIDDEN,
    PENDING,
    VISIBLE,
    Comment,
    Head,
    Snapshot,
    ThreadState,
    change_event,
    comment_event,
    state_change,
    state_event,
    status_change,
    status_event,
)
from ..errors import Closed, NotFound, Unavailable
from ..protocol import Event, decode_event, encode
from .base import Backend, Bus, CommentPage, Record, StateWritten, Store, StoredArticle, ThreadDump, Written

log = logging.getLogger("backchannel.redis")
T = TypeVar("T")

HEARTBEAT_INTERVAL = 0.5  # seconds between heartbeats through this instance's own subscription
HEARTBEAT_TIMEOUT = 3.0  # no heartbeat for this long: the subscription is dead, rebuild it
REMAP_INTERVAL = 0.5  # a cluster's slot map is read again this often while a shard is down
PRESENCE_TTL = 6.0  # an instance that has not refreshed its counts for this long is gone
PRESENCE_REFRESH = 2.0
REDIS_TIMEOUT = 2.0  # every command: a silent link raises instead of hanging
CONTROL_CHANNEL = "{bc}:control"  # moderation desk events and ended sessions, for every instance
CLUSTER_SCHEME = "redis+cluster://"

# KEYS: meta, comments, refs, log, order   ARGV: id, record (JSON object without seq, from after its "{"),
# the comment's moderator view as JSON, ref key or "", parent or "", history size, visible flag
# ("1"/"0"), channel, pending flag ("1": store it, but it is no event until approved), the
# publish command (PUBLISH, or SPUBLISH in a cluster).
# A comment id stored already is this same post run again (ids are random): it answers as the
# first run did. The log entry is written before the seq is taken, so that no seq is ever burnt
# without its event (a script that fails half-way is not rolled back).
POST_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nothread'} end
local again = redis.call('HGET', KEYS[2], ARGV[1])
if again then return {'ok', again} end
if ARGV[4] ~= '' then
  local earlier = redis.call('HGET', KEYS[3], ARGV[4])
  if earlier then return {'duplicate', redis.call('HGET', KEYS[2], earlier)} end
end
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'open' then return {'closed', state} end
if ARGV[5] ~= '' and redis.call('HEXISTS', KEYS[2], ARGV[5]) == 0 then return {'noparent'} end
if ARGV[9] == '1' then
  local pending = '{"seq":null,' .. ARGV[2]
  redis.call('HSET', KEYS[2], ARGV[1], pending)
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[4], ARGV[1]) end
  redis.call('ZADD', KEYS[5], 0, '!held|' .. ARGV[1])
  return {'ok', pending}
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq')) + 1
redis.call('ZADD', KEYS[5], 0, ARGV[5] .. '|' .. string.format('%012d', seq) .. '|' .. ARGV[1])
local event = '{"type":"comment","seq":' .. seq .. ',"comment":' .. ARGV[3] .. '}'
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[6], seq .. '-0', 'e', event)
redis.call('HSET', KEYS[1], 'seq', seq)
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[1], 'visible', 1) end
local record = '{"seq":' .. seq .. ',' .. ARGV[2]
redis.call('HSET', KEYS[2], ARGV[1], record)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[4], ARGV[1]) end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
redis.call(ARGV[10], ARGV[8], epoch .. ' ' .. event)
return {'ok', record}
"""

# KEYS: meta, comments, votes, the voter's voted set, voters   ARGV: comment id, "1" to recommend /
# "0" to withdraw, the voter. Answers {'ok', count}; refused like a post on a thread not open,
# and on a comment that is not visible.
VOTE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'nothread'} end
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'open' then return {'closed', state} end
local record = redis.call('HGET', KEYS[2], ARGV[1])
if not record or cjson.decode(record)['status'] ~= 'visible' then return {'nocomment'} end
local changed = redis.call(ARGV[2] == '1' and 'SADD' or 'SREM', KEYS[4], ARGV[1])
local vote = ARGV[1] .. ' ' .. ARGV[3]
if ARGV[2] == '1' then redis.call('HSET', KEYS[5], vote, 1) else redis.call('HDEL', KEYS[5], vote) end
if changed == 1 then return {'ok', redis.call('HINCRBY', KEYS[3], ARGV[1], ARGV[2] == '1' and 1 or -1)} end
return {'ok', tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')}
"""

# KEYS: meta   ARGV: epoch — creates the thread's meta unless it exists; answers the epoch in force
ENSURE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[1], 'indexed', 1) end
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
redis.call('HSETNX', KEYS[1], 'seq', 0)
redis.call('HSETNX', KEYS[1], 'visible', 0)
return redis.call('HMGET', KEYS[1], 'epoch', 'seeded')
"""


# KEYS: meta, order, comments — builds the order index of a thread stored before it existed, once.
INDEX_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'indexed') == 1 then return 0 end
redis.call('DEL', KEYS[2])
for _, record in ipairs(redis.call('HVALS', KEYS[3])) do
  local c = cjson.decode(record)
  local parent = c.parent
  if type(parent) ~= 'string' then parent = '' end
  if type(c.seq) == 'number' then
    redis.call('ZADD', KEYS[2], 0, parent .. '|' .. string.format('%012d', c.seq) .. '|' .. c.id)
  elseif c.status == 'pending' then
    redis.call('ZADD', KEYS[2], 0, '!held|' .. c.id)
  end
end
redis.call('HSET', KEYS[1], 'indexed', 1)
return 1
"""


def _keys(slug: str) -> dict[str, str]:
    tag = "{bc:" + slug + "}"
    names = ("meta", "comments", "refs", "log", "presence", "order", "votes", "voters")
    return {name: f"{tag}:{name}" for name in names}


def _voted_key(slug: str, voter: str) -> str:
    return "{bc:" + slug + "}:voted:" + voter


def _order_member(comment: Comment) -> str:
    """The comment's member of its thread's :order index (see the module's docstring)."""
    if comment.seq is None:
        return f"!held|{comment.id}"
    return f"{comment.parent or ''}|{comment.seq:012d}|{comment.id}"


def _channel(slug: str) -> str:
    """The thread's channel: with its keys' hash tag, so that in a cluster the post script
    publishes it on the node that holds the thread (elsewhere SPUBLISH fails in a script, or
    works until the slot moves)."""
    return "{bc:" + slug + "}:events"


def _thread_of(channel: str) -> str | None:
    """The slug whose channel this is, if it is a thread's."""
    if channel.startswith("{bc:") and channel.endswith("}:events"):
        return channel[len("{bc:") : -len("}:events")]
    return None


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def _publish_command(url: str) -> str:
    """Sharded pub/sub in a cluster: SPUBLISH reaches only the nodes of the channel's shard."""
    return "SPUBLISH" if is_cluster_url(url) else "PUBLISH"


def cluster_nodes(url: str) -> list[ClusterNode]:
    """The startup nodes of redis+cluster://host:port[,host:port…] (any one is enough to find
    the rest; several let an instance start while one is down)."""
    nodes = []
    for address in url.removeprefix(CLUSTER_SCHEME).split("/", 1)[0].split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_URL: {address!r} is not host:port (redis+cluster://host:port[,host:port…])")
        nodes.append(ClusterNode(host, int(port)))
    return nodes


def _record_without_seq(comment: Comment) -> dict[str, Any]:
    record = comment.record()
    del record["seq"]  # the script puts the seq it assigns first
    return record


def _comment(record: bytes | str, votes: bytes | str | int | None = None) -> Comment:
    """A comment from its stored record, with its count from the votes hash (what the record
    holds of it is as of its last write, not kept in step)."""
    return Comment(**{**orjson.loads(record), "votes": int(votes or 0)})


_STATE_FIELDS = ("state", "state_by", "state_at")


def _state(name: bytes | str | None, by: bytes | str | None, at: bytes | str | None) -> ThreadState:
    """A thread's state from its meta fields (none of them: open, never changed)."""
    if name is None:
        return ThreadState()
    return ThreadState(_text(name), _text(by or b"") or None, _text(at or b"") or None)


def _state_fields(state: ThreadState) -> dict[str, str]:
    return {"state": state.name, "state_by": state.by or "", "state_at": state.at or ""}


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
    REDIS_TIMEOUT, then Unavailable) rather than failing at once.

    On a cluster, a RedisCluster: it routes each command (whose keys share one slot) to the
    primary of that slot, follows MOVED and refreshes its slot map itself, and pools
    pool_size connections per node. It takes the same commands, so one code path serves
    both (typed as Redis for that)."""
    if is_cluster_url(url):
        return cast(aioredis.Redis, _cluster_client(url, pool_size))
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=REDIS_TIMEOUT, retry=retry_once_on_a_fresh_connection(), **_options()
    )
    return aioredis.Redis.from_pool(pool)


class _Cluster(RedisCluster):
    """redis-py's RedisCluster, except that it reads the slot map again after an error (a
    failover, a moved slot) without closing every connection first. Its own aclose() there
    (on ClusterDownError, SlotNotCoveredError, every 5th MOVED) dropped the healthy shards'
    connections with commands in flight on them: they failed with AttributeError or
    RuntimeError (not RedisError, so a 500) and scripts ran again (../shared/FACTS.md).
    Only close_for_good() closes it.

    Its pool of connections per node does not wait when all are busy: it raises
    MaxConnectionsError (1,000 posters on 1,000 threads: every post refused). So at most
    max_connections commands (or pipelines) are in flight; more wait their turn, up to
    REDIS_TIMEOUT, as on one Redis's BlockingConnectionPool."""

    def __init__(self, *, max_connections: int, **options: Any) -> None:
        super().__init__(max_connections=max_connections, **options)
        self._in_flight = asyncio.Semaphore(max_connections)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with asyncio.timeout(REDIS_TIMEOUT):
            await self._in_flight.acquire()
        try:
            yield
        finally:
            self._in_flight.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise ValueError("no shard_hint in a cluster")
        return _Pipeline(self, transaction)  # type: ignore[abstract]  # as redis-py makes its ClusterPipeline

    async def aclose(self) -> None:
        self._initialize = True  # the next command reads the slot map first

    async def close_for_good(self) -> None:
        await super().aclose()


class _Pipeline(ClusterPipeline):
    """A cluster pipeline that takes its turn (see _Cluster)."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        async with cast(_Cluster, self.cluster_client).turn():
            return await super().execute(raise_on_error, allow_redirections)


def _cluster_client(url: str, pool_size: int) -> _Cluster:
    return _Cluster(
        startup_nodes=cluster_nodes(url),
        max_connections=pool_size,
        require_full_coverage=False,  # a shard failing over stops only its own threads
        **_options(),
    )


async def _close(client: aioredis.Redis) -> None:
    if isinstance(client, _Cluster):
        await client.close_for_good()
    else:
        await client.aclose()


def RedisBackend(url: str, history_size: int = 1000) -> Backend:
    """Redis-only: Redis is both the store and the bus."""
    return Backend(RedisStore(url, history_size), RedisBus(url))


def _text(reply: bytes | str) -> str:
    """A reply as text. redis-py types replies bytes | str (decode_responses decides which at run
    time); this module's clients leave it off, so they are bytes."""
    return reply.decode() if isinstance(reply, bytes) else reply


def _link_failed(exc: Exception) -> bool:
    """Whether a Redis call failed on its link: a timeout, a RedisError, a socket error; or,
    raised inside redis-py when a connection closed under a command in flight (a cluster node
    killed), the RuntimeError of a closed uvloop transport or an AttributeError on the dropped
    writer, which redis-py does not turn into its ConnectionError."""
    if isinstance(exc, (TimeoutError, RedisError, OSError)):
        return True
    if isinstance(exc, (RuntimeError, AttributeError)):
        frame, module = exc.__traceback__, ""
        while frame is not None:  # the innermost Python frame says whose error it is
            module, frame = frame.tb_frame.f_globals.get("__name__", ""), frame.tb_next
        return module.startswith("redis.")
    return False


async def _call(awaitable: Awaitable[T]) -> T:
    """Every Redis call: failures of the link become Unavailable, never a hang or a 500."""
    try:
        return await awaitable
    except Exception as exc:
        if not _link_failed(exc):
            raise
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
        self.publish_command = _publish_command(url)
        self._post_script = self.redis.register_script(POST_SCRIPT)
        self._ensure_script = self.redis.register_script(ENSURE_SCRIPT)
        self._index_script = self.redis.register_script(INDEX_SCRIPT)
        self._vote_script = self.redis.register_script(VOTE_SCRIPT)
        self._put_article_script = self.redis.register_script(PUT_ARTICLE_SCRIPT)
        self._publish_article_script = self.redis.register_script(PUBLISH_ARTICLE_SCRIPT)
        self._seeds: dict[str, Sequence[Comment]] = {}

    async def start(self) -> None:
        await _call(self.redis.ping())

    async def close(self) -> None:
        await _close(self.redis)

    async def ready(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), REDIS_TIMEOUT))
        except Exception as exc:
            if not _link_failed(exc):
                raise
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
                keys=[keys["meta"], keys["comments"], keys["refs"], keys["log"], keys["order"]],
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
                    self.publish_command,
                ],
            )
        )
        outcome = reply[0].decode()
        if outcome == "nothread":
            return None
        if outcome == "closed":
            raise Closed.because(reply[1].decode())
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
                        pipe.hset(keys["meta"], "seq", new_seq)
                        self._append(pipe, slug, _text(epoch), event)
                    if before.status == PENDING:  # approved (now published) or rejected: no longer held
                        pipe.zrem(keys["order"], _order_member(before))
                        if changed.seq is not None:
                            pipe.zadd(keys["order"], {_order_member(changed): 0})
                    visible_change = (changed.status == VISIBLE) - (before.status == VISIBLE)
                    if visible_change:
                        pipe.hincrby(keys["meta"], "visible", visible_change)
                    pipe.hset(keys["comments"], comment_id, orjson.dumps(changed.record()))
                    await pipe.execute()
                    return Written(changed, event, _text(epoch))
                except WatchError:
                    continue

    async def set_thread_state(
        self, slug: str, state: str, by: str, at: str, expect: ThreadState | None = None
    ) -> StateWritten:
        return await _call(self._set_thread_state(slug, state, by, at, expect))

    async def _set_thread_state(
        self, slug: str, state: str, by: str, at: str, expect: ThreadState | None
    ) -> StateWritten:
        # As _set_status: read under WATCH, decide with the SQL stores' state_change, write in MULTI.
        keys = _keys(slug)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(keys["meta"])
                    seq, epoch, *fields = await pipe.hmget(keys["meta"], "seq", "epoch", *_STATE_FIELDS)
                    if epoch is None:
                        raise NotFound("No such article.")
                    assert seq is not None, "ENSURE_SCRIPT sets a thread's seq with its epoch"
                    before = _state(*fields)
                    after = state_change(before, state, by, at, expect)
                    if after is None:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                        return StateWritten(before, None, _text(epoch))
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    event = state_event(int(seq) + 1, after)
                    meta = {"seq": str(event.seq), **_state_fields(after)}
                    pipe.hset(keys["meta"], mapping=meta)  # type: ignore[arg-type]  # str values are fine
                    self._append(pipe, slug, _text(epoch), event)
                    await pipe.execute()
                    return StateWritten(after, event, _text(epoch))
                except WatchError:
                    continue

    def _append(self, pipe: Any, slug: str, epoch: str, event: Event) -> None:
        """Queue in the transaction: the event into the thread's log, and its publication."""
        wire = encode(event)
        pipe.xadd(_keys(slug)["log"], {"e": wire}, id=f"{event.seq}-0", maxlen=self.history_size, approximate=False)
        pipe.execute_command(self.publish_command, _channel(slug), f"{epoch} {wire}")

    async def change_comment(
        self, slug: str, comment_id: str, kind: str, change: Callable[[Comment], Comment]
    ) -> Written:
        return await _call(self._change_comment(slug, comment_id, kind, change))

    async def _change_comment(
        self, slug: str, comment_id: str, kind: str, change: Callable[[Comment], Comment]
    ) -> Written:
        # As _set_status: read under WATCH, decide in Python, write in MULTI.
        keys = _keys(slug)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(keys["meta"], keys["comments"])
                    record = await pipe.hget(keys["comments"], comment_id)
                    votes = await pipe.hget(keys["votes"], comment_id)
                    seq, epoch, *state = await pipe.hmget(keys["meta"], "seq", "epoch", *_STATE_FIELDS)
                    if record is None or epoch is None:
                        raise NotFound("No such comment.")
                    assert seq is not None, "ENSURE_SCRIPT sets a thread's seq with its epoch"
                    if not (thread := _state(*state)).open:
                        raise Closed.because(thread.name)
                    before = _comment(record, votes)
                    after = change(before)
                    event = change_event(kind, int(seq) + 1, after)
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    pipe.hset(keys["meta"], "seq", event.seq)
                    if (after.status == VISIBLE) != (before.status == VISIBLE):
                        pipe.hincrby(keys["meta"], "visible", -1 if before.status == VISIBLE else 1)
                    self._append(pipe, slug, _text(epoch), event)
                    pipe.hset(keys["comments"], comment_id, orjson.dumps(after.record()))
                    await pipe.execute()
                    return Written(after, event, _text(epoch))
                except WatchError:
                    continue

    async def vote(self, slug: str, comment_id: str, voter: str, up: bool) -> int:
        keys = _keys(slug)
        reply = await _call(
            self._vote_script(
                keys=[keys["meta"], keys["comments"], keys["votes"], _voted_key(slug, voter), keys["voters"]],
                args=[comment_id, "1" if up else "0", voter],
            )
        )
        outcome = reply[0].decode()
        if outcome == "closed":
            raise Closed.because(reply[1].decode())
        if outcome != "ok":
            raise NotFound("No such comment.")
        return int(reply[1])

    async def vote_counts(self, slug: str, comment_ids: Sequence[str]) -> dict[str, int]:
        if not comment_ids:
            return {}
        counts = await _call(self.redis.hmget(_keys(slug)["votes"], list(comment_ids)))
        return {comment_id: int(n or 0) for comment_id, n in zip(comment_ids, counts, strict=True)}

    async def votes_by(self, slug: str, voter: str) -> set[str]:
        return {_text(member) for member in await _call(self.redis.smembers(_voted_key(slug, voter)))}

    async def get_comment(self, slug: str, comment_id: str) -> Comment | None:
        comments = await self.get_comments([(slug, comment_id)])
        return comments[0] if comments else None

    async def get_comments(self, refs: Sequence[tuple[str, str]]) -> list[Comment]:
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            for slug, comment_id in refs:
                pipe.hget(_keys(slug)["comments"], comment_id)
                pipe.hget(_keys(slug)["votes"], comment_id)
            replies = await _call(pipe.execute())
        return [
            _comment(record, votes)
            for record, votes in zip(replies[::2], replies[1::2], strict=True)
            if record is not None
        ]

    async def comment_by_ref(self, slug: str, ref_key: str) -> Comment | None:
        comment_id = await _call(self.redis.hget(_keys(slug)["refs"], ref_key))
        return None if comment_id is None else await self.get_comment(slug, _text(comment_id))

    async def _read_head(self, slug: str) -> Head | None:
        seq, epoch, *state = await _call(self.redis.hmget(_keys(slug)["meta"], "seq", "epoch", *_STATE_FIELDS))
        if epoch is None:
            return None
        assert seq is not None, "ENSURE_SCRIPT sets a thread's seq with its epoch"
        return Head(seq=int(seq), epoch=_text(epoch), state=_state(*state))

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
            pipe.hmget(keys["meta"], "seq", "epoch", *_STATE_FIELDS)
            pipe.hgetall(keys["comments"])
            pipe.hgetall(keys["votes"])
            (seq, epoch, *state), records, votes = await _call(pipe.execute())
        comments = sorted(
            (_comment(r, votes.get(i)) for i, r in records.items()),
            key=lambda c: (c.seq is None, c.seq or 0, c.created_at),
        )  # pending ones last
        return Snapshot(seq=int(seq), epoch=epoch.decode(), comments=comments, state=_state(*state))

    async def comment_page(
        self, slug: str, parent: str | None, newest_first: bool, after: int | None, limit: int
    ) -> CommentPage:
        keys = _keys(slug)
        prefix, end = f"{parent or ''}|", f"({parent or ''}}}"  # "}" follows "|": the end of the prefix
        if newest_first:
            high = f"({prefix}{after:012d}" if after is not None else end
            members, held_members = await self._read_order(
                keys, lambda pipe: pipe.zrevrangebylex(keys["order"], high, f"[{prefix}", start=0, num=limit + 1)
            )
        else:
            low = f"[{prefix}{(after or 0) + 1:012d}"
            members, held_members = await self._read_order(
                keys, lambda pipe: pipe.zrangebylex(keys["order"], low, end, start=0, num=limit + 1)
            )
        ids = [_text(m).rsplit("|", 1)[1] for m in members[:limit]]
        held_ids = [_text(m).split("|", 1)[1] for m in held_members] if after is None else []
        return await self._page(keys, parent, ids, len(members) > limit, held_ids)

    async def top_page(self, slug: str, parent: str | None, after: tuple[int, int] | None, limit: int) -> CommentPage:
        # Counts change with every vote, so no index orders by them: the parent's comments are
        # ranked here from the order index and the votes hash (two reads for the whole parent).
        keys = _keys(slug)
        prefix, end = f"{parent or ''}|", f"({parent or ''}}}"
        members, held_members = await self._read_order(
            keys, lambda pipe: pipe.zrangebylex(keys["order"], f"[{prefix}", end)
        )
        ranked = []
        if members:
            seq_ids = [_text(m).split("|")[1:] for m in members]
            counts = await _call(self.redis.hmget(keys["votes"], [i for _seq, i in seq_ids]))
            ranked = sorted(
                ((int(n or 0), int(seq), i) for (seq, i), n in zip(seq_ids, counts, strict=True)), reverse=True
            )
        if after is not None:
            ranked = [r for r in ranked if (r[0], r[1]) < after]
        held_ids = [_text(m).split("|", 1)[1] for m in held_members] if after is None else []
        return await self._page(keys, parent, [i for _n, _seq, i in ranked[:limit]], len(ranked) > limit, held_ids)

    async def _read_order(self, keys: dict[str, str], read: Callable[[Any], Any]) -> tuple[list[bytes], list[bytes]]:
        """(what `read` queues on a transaction of the thread's :order index, its held members),
        indexing first a thread stored before the index existed (INDEX_SCRIPT, once)."""
        for _attempt in range(2):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hget(keys["meta"], "indexed")
                read(pipe)
                pipe.zrangebylex(keys["order"], "[!held|", "(!held}")
                indexed, members, held_members = await _call(pipe.execute())
            if indexed is not None:
                break
            await _call(self._index_script(keys=[keys["meta"], keys["order"], keys["comments"]]))
        return members, held_members

    async def _page(
        self, keys: dict[str, str], parent: str | None, ids: list[str], more: bool, held_ids: list[str]
    ) -> CommentPage:
        """The page of these comments (in this order), their reply counts, and the held ones."""
        if not ids and not held_ids:
            return CommentPage([], False, {}, [])
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            pipe.hmget(keys["comments"], [*ids, *held_ids])
            pipe.hmget(keys["votes"], [*ids, *held_ids])
            for comment_id in ids:
                pipe.zlexcount(keys["order"], f"[{comment_id}|", f"({comment_id}}}")
            records, votes, *counts = await _call(pipe.execute())
        found = [_comment(r, n) if r is not None else None for r, n in zip(records, votes, strict=True)]
        held = [c for c in found[len(ids) :] if c is not None and c.parent == parent and c.status == PENDING]
        return CommentPage(
            [c for c in found[: len(ids)] if c is not None],
            more,
            {comment_id: n for comment_id, n in zip(ids, counts, strict=True) if n},
            sorted(held, key=lambda c: c.created_at),
        )

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
                pipe.hmget(_keys(slug)["meta"], "visible", "state")
            replies = await _call(pipe.execute())
        # A hidden thread shows readers no comments, so it counts none on an index page either.
        return {
            slug: 0 if _text(state or b"") == HIDDEN else int(count or 0)
            for slug, (count, state) in zip(slugs, replies, strict=True)
        }

    async def thread_states(self, slugs: Sequence[str]) -> dict[str, ThreadState]:
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip
            for slug in slugs:
                pipe.hmget(_keys(slug)["meta"], "epoch", *_STATE_FIELDS)
            replies = await _call(pipe.execute())
        return {
            slug: _state(*fields) for slug, (epoch, *fields) in zip(slugs, replies, strict=True) if epoch is not None
        }

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

    # --- moving data (on a cluster, redis-py's SCAN goes over every primary) ---

    async def thread_slugs(self) -> list[str]:
        metas = [key.decode() async for key in self.redis.scan_iter(match="{bc:*}:meta", count=1000)]
        return sorted(meta[len("{bc:") : -len("}:meta")] for meta in metas)

    async def dump_thread(self, slug: str) -> ThreadDump:
        keys = _keys(slug)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(keys["meta"], "seq", "epoch", "seeded", *_STATE_FIELDS)
            pipe.hgetall(keys["comments"])
            pipe.hgetall(keys["refs"])
            pipe.xrange(keys["log"], "-", "+")
            pipe.hgetall(keys["votes"])
            pipe.hgetall(keys["voters"])
            (seq, epoch, seeded, *state), records, refs, entries, votes, voters = await _call(pipe.execute())
        if seq is None:
            raise NotFound("No such article.")
        ref_of = {comment_id.decode(): ref.decode() for ref, comment_id in refs.items()}
        comments = sorted(
            (_comment(r, votes.get(i)) for i, r in records.items()),
            key=lambda c: (c.seq is None, c.seq or 0, c.created_at, c.id),
        )
        return ThreadDump(
            slug,
            int(seq),
            epoch.decode(),
            seeded == b"1",
            [{**c.record(), "ref_key": ref_of.get(c.id)} for c in comments],
            [(int(entry_id.split(b"-")[0]), fields[b"e"].decode()) for entry_id, fields in entries],
            _state(*state),
            sorted((comment_id, voter) for comment_id, voter in (_text(v).split(" ", 1) for v in voters)),
        )

    async def load_thread(self, thread: ThreadDump) -> None:
        keys = _keys(thread.slug)
        comments = {c["id"]: {k: v for k, v in c.items() if k != "ref_key"} for c in thread.comments}
        async with self.redis.pipeline(transaction=True) as pipe:  # MULTI: all of it or none
            pipe.delete(keys["log"])  # a stream entry cannot be overwritten: the log is rebuilt whole
            visible = sum(c["status"] == VISIBLE for c in comments.values())
            meta = {
                "seq": thread.seq,
                "epoch": thread.epoch,
                "seeded": int(thread.seeded),
                "visible": visible,
                "indexed": 1,
            }
            pipe.hdel(keys["meta"], *_STATE_FIELDS)  # a thread never changed keeps none of them
            if thread.state != ThreadState():
                meta.update(_state_fields(thread.state))
            pipe.hset(keys["meta"], mapping=meta)  # type: ignore[arg-type]
            if comments:
                pipe.hset(keys["comments"], mapping={i: orjson.dumps(c) for i, c in comments.items()})
            pipe.delete(keys["order"])
            members = [
                _order_member(Comment(**c)) for c in comments.values() if c["seq"] is not None or c["status"] == PENDING
            ]
            if members:
                pipe.zadd(keys["order"], dict.fromkeys(members, 0))
            if refs := {c["ref_key"]: c["id"] for c in thread.comments if c["ref_key"] is not None}:
                pipe.hset(keys["refs"], mapping=refs)
            pipe.delete(keys["votes"])
            if votes := {i: c["votes"] for i, c in comments.items() if c.get("votes")}:
                pipe.hset(keys["votes"], mapping=votes)
            for comment_id, voter in thread.votes:
                pipe.hset(keys["voters"], f"{comment_id} {voter}", 1)
                pipe.sadd(_voted_key(thread.slug, voter), comment_id)
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
        # One MULTI on one Redis; a cluster cannot run one over many slots (loading is idempotent).
        async with self.redis.pipeline(transaction=not is_cluster_url(self.url)) as pipe:
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
        """server.rate_limits.AcquiresInOrder: every limit of an action in one round trip (in a
        cluster, one per run of keys in one slot)."""
        keys = [self.bridge.prefixed_key(key) for key, _limit, _expiry in entries]
        now = time.time()
        start = 0
        try:
            while start < len(entries):
                end = start + 1
                while end < len(entries) and self._same_slot(keys[start], keys[end]):
                    end += 1
                refused = await self._acquire_in_order(
                    keys=keys[start:end],
                    args=[now, *(n for _key, limit, expiry in entries[start:end] for n in (limit, expiry))],
                )
                if refused:
                    return start + int(refused) - 1
                start = end
        except Exception as exc:
            if not _link_failed(exc):
                raise
            for index, (key, limit, expiry) in enumerate(entries[start:], start):
                if not await self._local.acquire_entry(key, limit, expiry):
                    return index
        return None

    def _same_slot(self, key: str, other: str) -> bool:
        return True  # one Redis: one script can touch any keys

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


class SharedClusterLimits(SharedLimits, RedisClusterStorage):
    """The same counters on a Redis Cluster, each key on the node of its slot, through the same
    kind of cluster client as the commands (see _Cluster)."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        assert isinstance(self.bridge, RedispyBridge), "implementation='redispy'"
        self.bridge.storage = _cluster_client(url, pool_size=50)
        self.bridge.register_scripts()
        self._acquire_in_order = self.bridge.get_connection().register_script(ACQUIRE_IN_ORDER_SCRIPT.encode())

    def _same_slot(self, key: str, other: str) -> bool:
        return key_slot(key.encode()) == key_slot(other.encode())


def shared_limits(url: str, **options: Any) -> SharedLimits:
    return (SharedClusterLimits if is_cluster_url(url) else SharedLimits)(url, **options)


class _Shard:
    """One subscription connection, to the one Redis or to one primary of a cluster, read by its
    own task: the channels whose slots that node serves, their pending confirmations, and the
    heartbeat this instance sends itself through it."""

    def __init__(self, name: str, client: aioredis.Redis) -> None:
        self.name = name  # "host:port" of a cluster primary; "redis" for the one Redis
        self.client = client  # never retries: the reader recovers itself, then has its threads re-read
        self.channels: set[str] = set()
        self.confirmations: dict[str, asyncio.Future[None]] = {}
        self.resync_on_confirm: set[str] = set()  # moved here: re-read once the subscription holds
        self.pubsub: aioredis.client.PubSub | None = None
        self.up = asyncio.Event()
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.heartbeat_channel = ""
        self.heartbeat_sent = 0
        self.heartbeat_seen = 0
        self.last_heartbeat = 0.0


class RedisBus(Bus):
    """Pub/sub between instances. One subscription connection per Redis node that holds a
    channel this instance listens to (on one Redis, one), each with its own reader task and
    heartbeat: a stall of any is noticed within HEARTBEAT_TIMEOUT and its threads re-read.

    In a cluster, redis-py's sharded subscriber does not follow the cluster by itself (after a
    failover it retries the dead node forever; a slot move unsubscribes it silently — see
    ../shared/FACTS.md), so this bus does: on a lost connection, a missed heartbeat or a
    `sunsubscribe` it did not ask for, it refreshes the slot map, moves each channel to the
    node that serves its slot now, and has the thread re-read once the new subscription holds."""

    shared = True

    def __init__(self, url: str, pool_size: int = 50) -> None:
        super().__init__()
        self.url = url
        self.cluster = is_cluster_url(url)
        self.publish_command = _publish_command(url)
        self.instance = secrets.token_hex(6)
        self.redis = _client(url, pool_size)
        self.rate_limit_storage = shared_limits(url, retry=retry_once_on_a_fresh_connection(), **_options())
        self._subscribed: set[str] = set()
        self._shards: dict[str, _Shard] = {}
        self._placing = asyncio.Lock()  # channels move between shards under it
        self._remap_wanted = asyncio.Event()
        self._local_readers: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # redis-py can turn a cancellation into a TimeoutError inside its own timeouts, so the
        # background loops also stop on this flag rather than trusting cancel() alone.
        self._running = False

    # --- lifecycle ---

    async def start(self) -> None:
        await _call(self.redis.ping())  # (a cluster client reads the slot map here)
        self._running = True
        async with self._placing:
            control = self._place(CONTROL_CHANNEL)
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="redis-heartbeat"),
            asyncio.create_task(self._refresh_presence(), name="redis-presence"),
        ]
        if self.cluster:
            self._tasks.append(asyncio.create_task(self._follow_the_cluster(), name="redis-cluster-map"))
        await _call(asyncio.wait_for(control.up.wait(), 2 * REDIS_TIMEOUT))

    async def close(self) -> None:
        self._running = False
        shards = list(self._shards.values())
        tasks = self._tasks + [shard.task for shard in shards if shard.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=REDIS_TIMEOUT + 1)
        with contextlib.suppress(Exception):
            for slug in list(self._local_readers):
                await self.redis.hdel(_keys(slug)["presence"], self.instance)
        for shard in shards:
            await self._drop(shard)
            with contextlib.suppress(Exception):
                await shard.client.aclose()
        await _close(self.redis)

    def _publish(self, channel: str, message: str | int) -> Awaitable[Any]:
        return self.redis.execute_command(self.publish_command, channel, message)  # type: ignore[no-untyped-call]  # unannotated in redis-py

    async def publish(self, slug: str, event: Event, epoch: str) -> None:
        await _call(self._publish(_channel(slug), f"{epoch} {encode(event)}"))

    async def publish_control(self, message: str) -> None:
        await _call(self._publish(CONTROL_CHANNEL, message))

    # --- subscription ---

    async def subscribe(self, slug: str) -> None:
        channel = _channel(slug)
        async with self._placing:
            self._subscribed.add(slug)
            shard = self._place(channel)
        try:
            try:
                await asyncio.wait_for(shard.up.wait(), REDIS_TIMEOUT)
            except TimeoutError:
                raise Unavailable("Live updates are reconnecting; please retry.") from None
            assert shard.pubsub is not None
            confirmed = asyncio.get_running_loop().create_future()
            shard.confirmations[channel] = confirmed
            try:
                await _call(self._subscribe_to(shard.pubsub, channel))
                # Only once Redis confirms is every later publish sure to reach us: the caller reads
                # the head after this, and anything published before is in that head.
                await _call(asyncio.wait_for(confirmed, REDIS_TIMEOUT))
            finally:
                shard.confirmations.pop(channel, None)
        except BaseException:
            self._subscribed.discard(slug)
            shard.channels.discard(channel)
            raise

    async def unsubscribe(self, slug: str) -> None:
        self._subscribed.discard(slug)
        channel = _channel(slug)
        for shard in list(self._shards.values()):
            if channel in shard.channels:
                shard.channels.discard(channel)  # first: the unsubscribe Redis confirms is then ours
                if shard.pubsub is not None:
                    with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                        await self._unsubscribe_from(shard.pubsub, channel)

    def _subscribe_to(self, pubsub: aioredis.client.PubSub, *channels: str) -> Awaitable[Any]:
        return pubsub.ssubscribe(*channels) if self.cluster else pubsub.subscribe(*channels)

    def _unsubscribe_from(self, pubsub: aioredis.client.PubSub, channel: str) -> Awaitable[Any]:
        return pubsub.sunsubscribe(channel) if self.cluster else pubsub.unsubscribe(channel)

    def _owner(self, channel: str) -> str:
        """The node that serves the channel's slot, as this instance's slot map has it."""
        if not self.cluster:
            return "redis"
        node = cast(RedisCluster, self.redis).nodes_manager.get_node_from_slot(key_slot(channel.encode()))
        return str(node.name)

    def _place(self, channel: str) -> _Shard:
        """Put the channel on the shard of the node that serves it (under self._placing),
        starting that shard's connection if this instance had none to the node."""
        name = self._owner(channel)
        shard = self._shards.get(name)
        if shard is None:
            if self.cluster:
                node = cast(RedisCluster, self.redis).nodes_manager.get_node(node_name=name)
                assert node is not None, "the node came from the slot map"
                client = aioredis.Redis(host=node.host, port=int(node.port), **_options())
            else:
                client = aioredis.Redis.from_url(self.url, **_options())
            shard = self._shards[name] = _Shard(name, client)
            shard.task = asyncio.create_task(self._listen(shard), name=f"redis-subscriber {name}")
        shard.channels.add(channel)
        return shard

    def _heartbeat_channel(self, shard: _Shard) -> str:
        """A channel of this instance's own whose slot the shard's node serves."""
        for n in range(100_000):
            channel = "{bc:hb:" + self.instance + ":" + str(n) + "}"
            if self._owner(channel) == shard.name:
                return channel
        raise ConnectionError(f"{shard.name} serves no slot")

    async def _connect(self, shard: _Shard) -> None:
        shard.heartbeat_channel = self._heartbeat_channel(shard)
        pubsub = shard.client.pubsub()
        try:
            channels = [shard.heartbeat_channel, *shard.channels]
            if self.cluster:  # one SSUBSCRIBE names channels of one slot only
                for channel in channels:
                    await self._subscribe_to(pubsub, channel)
            else:
                await self._subscribe_to(pubsub, *channels)
            confirmed = 0
            deadline = time.monotonic() + REDIS_TIMEOUT
            while confirmed < len(channels):
                if time.monotonic() > deadline:
                    raise TimeoutError("Redis did not confirm the subscriptions")
                message = await pubsub.get_message(timeout=REDIS_TIMEOUT)
                if message and message["type"] in ("subscribe", "ssubscribe"):
                    confirmed += 1
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]  # unannotated in redis-py
            raise
        shard.pubsub = pubsub
        shard.up.set()
        shard.last_heartbeat = time.monotonic()
        shard.heartbeat_seen = 0
        shard.resync_on_confirm.clear()
        log.info(
            "subscribed to %d thread(s) on %s", len(shard.channels) - (CONTROL_CHANNEL in shard.channels), shard.name
        )
        self._resync(shard)

    async def _listen(self, shard: _Shard) -> None:
        """The shard's reader. It survives every error: re-raises cancellation, logs, backs off,
        resubscribes (and in a cluster has the slot map refreshed), then has its threads re-read."""
        backoff = 0.1
        while self._running and not shard.stopping:
            try:
                if shard.pubsub is None:
                    await self._connect(shard)
                    backoff = 0.1
                assert shard.pubsub is not None
                message = await shard.pubsub.get_message(timeout=HEARTBEAT_INTERVAL)
                if message is not None:
                    self._handle(shard, message)
                if time.monotonic() - shard.last_heartbeat > HEARTBEAT_TIMEOUT:
                    raise ConnectionError(f"no heartbeat through the subscription for {HEARTBEAT_TIMEOUT} s")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if shard.stopping:
                    break
                log.warning("Redis subscription on %s lost (%s); reconnecting in %.1f s", shard.name, exc, backoff)
                await self._drop(shard)
                self._remap_wanted.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _drop(self, shard: _Shard) -> None:
        pubsub, shard.pubsub = shard.pubsub, None
        shard.up.clear()
        for future in shard.confirmations.values():
            if not future.done():
                future.set_exception(ConnectionError("the subscription was lost"))
        if pubsub is not None:
            with contextlib.suppress(Exception):
                # A blackholed link must not hang the close: drop the socket without a goodbye.
                if pubsub.connection is not None:
                    await pubsub.connection.disconnect(nowait=True)
                await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]  # unannotated in redis-py

    def _handle(self, shard: _Shard, message: dict[str, Any]) -> None:  # a pubsub message, as redis-py gives it
        kind = message["type"]
        channel = message["channel"].decode()
        if kind in ("subscribe", "ssubscribe"):
            future = shard.confirmations.get(channel)
            if future is not None and not future.done():
                future.set_result(None)
            if channel in shard.resync_on_confirm:
                shard.resync_on_confirm.discard(channel)
                if (slug := _thread_of(channel)) is not None:
                    self.on_resync(slug)
            return
        if kind == "sunsubscribe" and channel in shard.channels:
            # Not asked for (ours leave shard.channels first): the slot moved to another node.
            log.info("%s moved away from %s; following it", channel, shard.name)
            self._remap_wanted.set()
            return
        if kind not in ("message", "smessage"):
            return
        if channel == CONTROL_CHANNEL:
            self.on_control(message["data"].decode())
            return
        if channel == shard.heartbeat_channel:
            number = int(message["data"])
            if shard.heartbeat_seen and number != shard.heartbeat_seen + 1:
                # A heartbeat went missing, so other messages may have too.
                log.warning("a heartbeat was lost on the subscription to %s; re-reading its threads", shard.name)
                self._resync(shard)
            shard.heartbeat_seen = number
            shard.last_heartbeat = time.monotonic()
            return
        slug = _thread_of(channel)
        if slug is None or slug not in self._subscribed:
            # Published before Redis took our unsubscribe: the thread has no readers here now.
            return
        data: bytes = message["data"]
        if data.startswith(b"presence "):
            self.on_presence(slug, int(data.split(b" ", 1)[1]))
            return
        epoch, _, wire = data.partition(b" ")
        event = decode_event(wire)
        self.on_event(slug, Event(event.type, event.seq, event.data, wire=wire.decode()), epoch.decode())

    def _resync(self, shard: _Shard) -> None:
        if CONTROL_CHANNEL in shard.channels:  # control messages may have been lost with the rest
            self.on_control_resync()
        for channel in list(shard.channels):
            if (slug := _thread_of(channel)) is not None and slug in self._subscribed:
                self.on_resync(slug)

    # --- following the cluster ---

    async def _follow_the_cluster(self) -> None:
        """Refresh the slot map when a shard asks (lost connection, moved slot), and every
        REMAP_INTERVAL while any shard is down (a failover takes seconds to elect a primary)."""
        while self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._remap_wanted.wait(), REMAP_INTERVAL)
            if not self._remap_wanted.is_set() and all(shard.up.is_set() for shard in self._shards.values()):
                continue
            self._remap_wanted.clear()
            try:
                await self._remap()
            except Exception as exc:  # the cluster is in the middle of a change: look again soon
                log.info("could not refresh the cluster's slot map (%s)", exc)

    async def _remap(self) -> None:
        await cast(RedisCluster, self.redis).nodes_manager.initialize()
        async with self._placing:
            moved: list[tuple[_Shard, _Shard, str]] = []
            for shard in list(self._shards.values()):
                for channel in list(shard.channels):
                    if self._owner(channel) != shard.name:
                        shard.channels.discard(channel)
                        moved.append((shard, self._place(channel), channel))
            for old, new, channel in moved:
                # The old node dropped the subscription as it lost the slot (or died): no
                # SUNSUBSCRIBE for it there, which would only get a MOVED back.
                log.info("%s: subscribing on %s instead of %s", channel, new.name, old.name)
                if new.pubsub is not None:  # else its connection subscribes it, then re-reads
                    new.resync_on_confirm.add(channel)
                    with contextlib.suppress(Exception):  # a failure drops that shard: it reconnects
                        await self._subscribe_to(new.pubsub, channel)
            for name, shard in list(self._shards.items()):
                if not shard.channels:  # a node that serves none of ours any more
                    del self._shards[name]
                    await self._stop(shard)

    async def _stop(self, shard: _Shard) -> None:
        shard.stopping = True
        if shard.task is not None:
            shard.task.cancel()
            await asyncio.wait([shard.task], timeout=REDIS_TIMEOUT + 1)
        await self._drop(shard)
        with contextlib.suppress(Exception):
            await shard.client.aclose()

    async def _heartbeat(self) -> None:
        while self._running:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            # All shards at once: a node out of reach must not delay the others' heartbeats.
            await asyncio.gather(*(self._beat(shard) for shard in list(self._shards.values()) if shard.up.is_set()))

    async def _beat(self, shard: _Shard) -> None:
        shard.heartbeat_sent += 1
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await self._publish(shard.heartbeat_channel, shard.heartbeat_sent)

    # --- presence: each instance's count per thread, summed; dead instances age out ---

    async def presence(self, slug: str, local_readers: int) -> int:
        if local_readers:
            self._local_readers[slug] = local_readers
        else:
            self._local_readers.pop(slug, None)
        try:
            total = await self._report_presence(slug, local_readers)
            await self._publish(_channel(slug), f"presence {total}")
        except Exception as exc:
            if not _link_failed(exc):
                raise
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
                except Exception as exc:
                    if not _link_failed(exc):
                        raise
                    break
                if totals.get(slug) != total:
                    totals[slug] = total
                    self.on_presence(slug, total)
