"""Local fan-out, written once above the backends.

The Hub holds, per thread, the set of this instance's live connections. It subscribes to the
backend on a thread's first local reader and unsubscribes after the last, so an instance has
at most one subscription per active thread however many readers it serves. Each event is
serialised once here and the same string is queued to every connection.

Delivery from a backend is at-most-once and may skip (Redis pub/sub drops messages when a
subscriber falls behind or reconnects). The Hub therefore tracks the last seq it delivered per
thread and, on a jump, reads the missing events from the log before delivering anything newer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from .backends.base import Backend
from .protocol import Event, Presence, Reset, encode

log = logging.getLogger("backchannel.fanout")

PRESENCE_DELAY = 0.25  # coalesce join/leave bursts into one presence frame per thread


class Subscriber(Protocol):
    def send(self, seq: int | None, frame: str) -> None:
        """Queue a frame without waiting; a subscriber that cannot keep up closes itself."""


@dataclass(eq=False)
class Channel:
    slug: str
    subscribers: set[Subscriber] = field(default_factory=set)
    last_seq: int = 0
    epoch: str = ""
    pending: list[Event] = field(default_factory=list)  # held while a gap is being filled
    filling: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    presence_task: asyncio.Task | None = None
    readers: int = 0  # across all instances, as last reported


class Hub:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.backend.on_event = self.deliver
        self._channels: dict[str, Channel] = {}
        # Subscribe and unsubscribe of one thread run one at a time, in call order: a reader
        # arriving while the last one's unsubscribe is still under way must not be overtaken by it.
        self._subscription_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task] = set()

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
            channel.last_seq, channel.epoch = head.seq, head.epoch
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

    def local_readers(self, slug: str) -> int:
        channel = self._channels.get(slug)
        return len(channel.subscribers) if channel else 0

    # --- events ---

    def deliver(self, slug: str, event: Event) -> None:
        """Called by the backend for every event it receives on a subscribed thread."""
        channel = self._channels.get(slug)
        if channel is None:
            return
        if channel.filling:
            channel.pending.append(event)
        elif event.seq <= channel.last_seq:
            return  # already delivered (or covered by the head read at subscribe time)
        elif event.seq == channel.last_seq + 1:
            self._fan_out(channel, event)
        else:
            channel.filling = True
            channel.pending.append(event)
            self._spawn(self._fill_gap(channel))

    def _fan_out(self, channel: Channel, event: Event) -> None:
        frame = encode(event)  # once per instance, not once per reader
        channel.last_seq = event.seq
        for subscriber in list(channel.subscribers):
            subscriber.send(event.seq, frame)

    async def _fill_gap(self, channel: Channel) -> None:
        try:
            while channel.pending:
                missed = await self.backend.events_since(channel.slug, channel.last_seq)
                if missed is None:
                    # The log no longer reaches back: every local reader must reload.
                    head = await self.backend.head(channel.slug)
                    log.warning("thread %s: gap after seq %d is older than the log; resetting %d readers",
                                channel.slug, channel.last_seq, len(channel.subscribers))
                    channel.last_seq, channel.epoch = head.seq, head.epoch
                    frame = encode(Reset(seq=head.seq, epoch=head.epoch))
                    for subscriber in list(channel.subscribers):
                        subscriber.send(None, frame)
                    missed = []
                before = channel.last_seq
                queued, channel.pending = channel.pending, []
                for event in sorted([*missed, *queued], key=lambda e: e.seq):
                    if event.seq == channel.last_seq + 1:
                        self._fan_out(channel, event)
                    elif event.seq > channel.last_seq + 1:
                        channel.pending.append(event)  # still a hole: read the log again
                if channel.last_seq == before:
                    await asyncio.sleep(0.1)  # the log has not caught up with the channel yet
        except Exception:
            log.exception("thread %s: could not fill a gap; will retry on the next event", channel.slug)
        finally:
            channel.filling = False

    # --- presence ---

    def _presence_changed(self, channel: Channel) -> None:
        if channel.presence_task is None or channel.presence_task.done():
            channel.presence_task = self._spawn(self._announce_presence(channel))

    async def _announce_presence(self, channel: Channel) -> None:
        await asyncio.sleep(PRESENCE_DELAY)
        readers = await self.backend.presence(channel.slug, len(channel.subscribers))
        if readers != channel.readers:
            channel.readers = readers
            frame = encode(Presence(readers=readers))
            for subscriber in list(channel.subscribers):
                subscriber.send(None, frame)

    async def readers(self, slug: str) -> int:
        return await self.backend.presence(slug, self.local_readers(slug))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
