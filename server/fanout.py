"""Local fan-out, written once above the backends.

The Hub holds, per thread, the set of this instance's live connections. It subscribes to the
backend on a thread's first local reader and unsubscribes after the last, so an instance has
at most one subscription per active thread however many readers it serves. Each event is
serialised and framed once here (or arrives already serialised) and the same bytes are written
to every connection.

Delivery from a backend is at-most-once and may skip (Redis pub/sub drops messages when a
subscriber falls behind or reconnects). The Hub therefore tracks the last seq it delivered per
thread and, on a jump, reads the missing events from the log before delivering anything newer.
When the backend says events may have been lost without a jump to show it (a subscription
rebuilt), the Hub re-reads the log the same way. When the thread's epoch changes (Redis lost
its data) or the log no longer reaches back, local readers are told to `reset`.

Each active thread also keeps its tail here: the last HISTORY_SIZE events the Hub delivered,
in order and gap-free, each with the frames it was written as. A reader reconnecting with a
`since` inside the tail is caught up from memory, with no store query: after a deploy, ten
thousand readers coming back within seconds cost each instance one log read per thread (the
first `since` older than what the Hub has seen since subscribing fills the tail from the
store, once, however many readers wait on it), not one per reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from . import metrics
from .backends.base import Backend
from .comments import HIDDEN, OPEN, STATE_OF_EVENT, Head, ThreadState, public_event
from .protocol import CLOSE_THREAD_HIDDEN, Event, Presence, Reset, encode
from .wire import text_frame

log = logging.getLogger("backchannel.fanout")

PRESENCE_DELAY = 0.25  # coalesce join/leave bursts into one presence frame per thread


class Subscriber(Protocol):
    moderator: bool  # moderators get events whole; readers get public_event(event)

    def send(self, seq: int | None, frame: bytes) -> None:
        """Send a WebSocket frame without waiting; a subscriber that cannot keep up closes itself."""

    def reset(self, seq: int, frame: bytes) -> None:
        """Send a reset frame; events up to seq are covered by the snapshot it points to."""

    def end(self, code: int, reason: str) -> None:
        """Close the connection now (what was sent before still goes first)."""


@dataclass(eq=False)
class Channel:
    slug: str
    subscribers: set[Subscriber] = field(default_factory=set)
    last_seq: int = 0
    epoch: str = ""
    state: str = OPEN  # the thread's state as of last_seq
    pending: list[Event] = field(default_factory=list)  # held while the log is being read
    recovering: bool = False
    resync_requested: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    presence_task: asyncio.Task[None] | None = None
    readers: int = 0  # across all instances, as last announced
    # The tail: (seq, reader frame, moderator frame) of the events after tail_from, up to last_seq.
    tail: deque[tuple[int, bytes, bytes]] = field(default_factory=deque)
    tail_from: int = 0
    tail_filled: bool = False  # read back from the store once (or tried): older since go to the store
    tail_fill: asyncio.Task[None] | None = None  # the one store read every waiting catch-up shares


class Hub:
    def __init__(self, backend: Backend, history_size: int = 1000) -> None:
        self.backend = backend
        self.history_size = history_size
        backend.on_event, backend.on_resync = self.deliver, self.resync
        backend.on_presence = self._presence_from_backend
        self._channels: dict[str, Channel] = {}
        # Subscribe and unsubscribe of one thread run one at a time, in call order: a reader
        # arriving while the last one's unsubscribe is still under way must not be overtaken by it.
        self._subscription_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._heads_due: set[str] = set()  # threads to resync, waiting for the one read of their heads
        self._heads_check: asyncio.Task[None] | None = None

    # --- membership ---

    async def join(self, slug: str, subscriber: Subscriber) -> Channel:
        """Start queuing the thread's events to subscriber. Events are delivered from the
        moment this returns; the caller replays older ones from the log and drops doubles."""
        channel = self._channels.get(slug)
        if channel is None:
            channel = self._channels[slug] = Channel(slug)
            try:
                async with self._subscription_locks[slug]:
                    # Subscribe first, then read the head: an event published in between is either
                    # in the head (and the log) or arrives on the subscription, never neither.
                    await self.backend.subscribe(slug)
                    head = await self.backend.head(slug)
            except BaseException:
                del self._channels[slug]
                channel.ready.set()
                raise
            channel.last_seq, channel.epoch, channel.state = head.seq, head.epoch, head.state.name
            channel.tail_from = head.seq
            channel.ready.set()
        await channel.ready.wait()
        if self._channels.get(slug) is not channel:  # its subscription failed meanwhile
            return await self.join(slug, subscriber)
        channel.subscribers.add(subscriber)
        self._presence_changed(channel)
        return channel

    async def leave(self, slug: str, subscriber: Subscriber) -> None:
        channel = self._channels.get(slug)
        if channel is None or subscriber not in channel.subscribers:
            return
        channel.subscribers.discard(subscriber)
        if channel.subscribers:
            self._presence_changed(channel)
            return
        del self._channels[slug]
        if channel.presence_task:
            channel.presence_task.cancel()
        async with self._subscription_locks[slug]:
            await self.backend.presence(slug, 0)
            await self.backend.unsubscribe(slug)

    def active_threads(self) -> int:
        return len(self._channels)

    def local_readers(self, slug: str) -> int:
        channel = self._channels.get(slug)
        return len(channel.subscribers) if channel else 0

    # --- events ---

    def deliver(self, slug: str, event: Event, epoch: str | None = None) -> None:
        """Called by the backend for every event it receives on a subscribed thread."""
        channel = self._channels.get(slug)
        if channel is None:
            return
        if channel.recovering:
            channel.pending.append(event)
        elif epoch is not None and epoch != channel.epoch:
            self._recover(channel, event)  # the thread's history started afresh
        elif event.seq <= channel.last_seq:
            return  # already delivered (or covered by the head read at subscribe time)
        elif event.seq == channel.last_seq + 1:
            self._fan_out(channel, event)
        else:
            self._recover(channel, event)

    def resync(self, slug: str) -> None:
        """Events of this thread may have been lost: re-read the log before anything newer.

        The requests made together (a lost heartbeat makes one for every thread, the head
        reconciliation one for each thread behind) share one read of their heads, and only the
        threads whose head is past what was delivered read their log: a thousand threads cost
        one query, not two thousand that would queue for the store's few connections."""
        channel = self._channels.get(slug)
        if channel is not None:
            channel.resync_requested = True
            self._heads_due.add(slug)
            if self._heads_check is None:
                self._heads_check = self._spawn(self._check_heads())

    async def _check_heads(self) -> None:
        try:
            await asyncio.sleep(0)  # the rest of this burst of requests joins in
            while self._heads_due:
                slugs, self._heads_due = self._heads_due, set()
                try:
                    heads = await self.backend.heads(sorted(slugs))
                except Exception:
                    log.debug("cannot read the heads; each thread reads its log", exc_info=True)
                    heads = {}
                for slug in slugs:
                    channel = self._channels.get(slug)
                    if channel is None or not channel.resync_requested:
                        continue
                    head = heads.get(slug)
                    if (
                        head is not None
                        and head.epoch == channel.epoch
                        and head.seq <= channel.last_seq
                        and not channel.recovering
                    ):
                        channel.resync_requested = False  # nothing was missed
                    else:
                        self._recover(channel)
        finally:
            self._heads_check = None

    def _fan_out(self, channel: Channel, event: Event) -> None:
        # Serialised and framed once per instance and audience, not once per reader.
        channel.last_seq = event.seq
        public_frame = text_frame(encode(public_event(event)))
        moderator_frame = text_frame(encode(event))
        channel.tail.append((event.seq, public_frame, moderator_frame))
        if len(channel.tail) > self.history_size:
            channel.tail.popleft()
            channel.tail_from += 1
        for subscriber in list(channel.subscribers):
            subscriber.send(event.seq, moderator_frame if subscriber.moderator else public_frame)
        metrics.events_delivered.inc(len(channel.subscribers))
        if event.type in STATE_OF_EVENT:
            channel.state = STATE_OF_EVENT[event.type]
            if channel.state == HIDDEN:
                # Readers are told, then let go: what moderators do on a hidden thread (restore a
                # comment, say) is not for them. A reader reconnecting is turned away (live.py).
                for subscriber in list(channel.subscribers):
                    if not subscriber.moderator:
                        subscriber.end(CLOSE_THREAD_HIDDEN, "the thread is hidden")

    def _recover(self, channel: Channel, event: Event | None = None) -> None:
        if event is not None:
            channel.pending.append(event)
        if not channel.recovering:
            channel.recovering = True
            metrics.gaps_filled.inc()
            self._spawn(self._read_log(channel))

    async def _read_log(self, channel: Channel) -> None:
        """Deliver, in order, what the log has after last_seq, then what arrived meanwhile."""
        backoff = 0.1
        try:
            while channel.pending or channel.resync_requested:
                channel.resync_requested = False
                before = channel.last_seq
                try:
                    head = await self.backend.head(channel.slug)
                    missed = None
                    if head.epoch == channel.epoch:
                        missed = await self.backend.events_since(channel.slug, channel.last_seq)
                except Exception:
                    log.warning("thread %s: cannot read the log yet; retrying", channel.slug, exc_info=True)
                    channel.resync_requested = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if missed is None:
                    self._reset(channel, head)
                    missed = []
                queued, channel.pending = channel.pending, []
                for event in sorted([*missed, *queued], key=lambda e: e.seq):
                    if event.seq == channel.last_seq + 1:
                        self._fan_out(channel, event)
                    elif event.seq > channel.last_seq + 1:
                        channel.pending.append(event)  # still a hole: read the log again
                if channel.pending and channel.last_seq == before:
                    await asyncio.sleep(0.1)  # the log has not caught up with the channel yet
        finally:
            channel.recovering = False

    def _reset(self, channel: Channel, head: Head) -> None:
        """The log cannot fill the gap (trimmed, or a new epoch): every local reader reloads."""
        seq, epoch = head.seq, head.epoch
        log.warning(
            "thread %s: resetting %d reader(s) to seq %d of epoch %s",
            channel.slug,
            len(channel.subscribers),
            seq,
            epoch,
        )
        channel.last_seq, channel.epoch, channel.state = seq, epoch, head.state.name
        channel.tail.clear()
        channel.tail_from, channel.tail_filled = seq, False
        frame = text_frame(encode(Reset(seq=seq, epoch=epoch)))
        for subscriber in list(channel.subscribers):
            subscriber.reset(seq, frame)

    # --- catch-up from the tail ---

    async def replay(
        self, slug: str, since: int, epoch: str | None, moderator: bool
    ) -> tuple[Head, list[tuple[int, bytes]]] | None:
        """The head as this Hub has delivered it and the frames after `since`, from memory; None
        when the tail cannot answer (since older than it, ahead of it, or of another epoch),
        and the caller asks the store. Call after join(): everything after the head returned
        reaches the subscriber live, so replay and live stream meet without a hole."""
        channel = self._channels.get(slug)
        if channel is None or since > channel.last_seq or (epoch is not None and epoch != channel.epoch):
            return None
        if since < channel.tail_from and not channel.tail_filled:
            if channel.tail_fill is None:
                channel.tail_fill = self._spawn(self._fill_tail(channel))
            await asyncio.shield(channel.tail_fill)
            return await self.replay(slug, since, epoch, moderator)
        if since < channel.tail_from:
            return None
        frames = [
            (seq, moderator_frame if moderator else public_frame)
            for seq, public_frame, moderator_frame in islice(channel.tail, since - channel.tail_from, None)
        ]
        return Head(channel.last_seq, channel.epoch, ThreadState(channel.state)), frames

    async def _fill_tail(self, channel: Channel) -> None:
        """Read back from the store the events before the tail, up to HISTORY_SIZE in all. A
        store that fails raises to every catch-up waiting (they close with 1013 and come back),
        and the next one tries again: the readers never each fall through to the store."""
        try:
            epoch, tail_from = channel.epoch, channel.tail_from
            wanted = self.history_size - len(channel.tail)
            if wanted <= 0 or tail_from == 0:
                channel.tail_filled = True
                return
            head = await self.backend.head(channel.slug)
            # The log keeps the newest HISTORY_SIZE events of the store's head, not of ours.
            start = max(0, tail_from - wanted, head.seq - self.history_size)
            events = await self.backend.events_since(channel.slug, start) if head.epoch == epoch else None
            if channel.epoch != epoch or channel.tail_from != tail_from:
                return  # the Hub reset meanwhile: the next catch-up reads again
            channel.tail_filled = True
            older = [event for event in events or [] if event.seq <= tail_from]
            if [event.seq for event in older] != list(range(start + 1, tail_from + 1)):
                return  # the log moved on meanwhile: older since go to the store
            channel.tail.extendleft(
                (event.seq, text_frame(encode(public_event(event))), text_frame(encode(event)))
                for event in reversed(older)
            )
            channel.tail_from = start
            while len(channel.tail) > self.history_size:
                channel.tail.popleft()
                channel.tail_from += 1
        finally:
            channel.tail_fill = None

    # --- presence ---

    def _presence_changed(self, channel: Channel) -> None:
        if channel.presence_task is None or channel.presence_task.done():
            channel.presence_task = self._spawn(self._report_presence(channel))

    async def _report_presence(self, channel: Channel) -> None:
        await asyncio.sleep(PRESENCE_DELAY)
        self._announce(channel, await self.backend.presence(channel.slug, len(channel.subscribers)))

    def _presence_from_backend(self, slug: str, readers: int) -> None:
        channel = self._channels.get(slug)
        if channel is not None:
            self._announce(channel, readers)

    def _announce(self, channel: Channel, readers: int) -> None:
        if readers != channel.readers:
            channel.readers = readers
            self.send_to_readers(channel.slug, text_frame(encode(Presence(readers=readers))))

    def send_to_readers(self, slug: str, frame: bytes) -> None:
        """A frame that is no event of the log (presence, vote counts) to every local reader of the thread."""
        channel = self._channels.get(slug)
        for subscriber in list(channel.subscribers if channel else ()):
            subscriber.send(None, frame)

    def readers(self, slug: str) -> int:
        """The last count announced (at least this instance's own readers), without asking the
        backend: a reader joining must not cost a round trip, let alone a publish to every
        instance (that made connecting N readers O(N²)). The coalesced report corrects it."""
        channel = self._channels.get(slug)
        return max(channel.readers, len(channel.subscribers)) if channel else 0

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
