"""Vote counts reach every reader coalesced, not as events of the thread's log.

A vote is stored at once (Store.vote), but readers are told of counts at most once per thread
per VOTES_INTERVAL: a burst of a thousand votes on a busy thread is one `votes` frame a second
to each reader, and no seq in the log (the log is for what a reconnecting reader must not miss;
a count is read afresh with the page).

How a count crosses instances: the instance that took votes names the comments voted on, all
threads together, in one control message per interval (VotesChanged). Every instance with
readers of such a thread reads those comments' counts from the store, one read per thread,
and writes one `votes` frame to its readers. Counts are read after the votes were committed,
so the last frame of a burst carries the final count on every instance: readers converge
within about two intervals, whichever instance each vote went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .backends.base import Backend
from .control import VotesChanged, encode_control
from .fanout import Hub
from .protocol import Votes, encode
from .wire import text_frame

log = logging.getLogger("backchannel.votes")

VOTES_INTERVAL = 0.5  # seconds between two `votes` frames of a thread (and two notices from an instance)


class VoteCounts:
    def __init__(self, backend: Backend, hub: Hub, publish_control: Callable[[str], Awaitable[None]]) -> None:
        self.backend, self.hub = backend, hub
        self._publish_control = publish_control
        self._voted_here: dict[str, set[str]] = {}  # slug -> comments voted on here, not yet announced
        self._to_send: dict[str, set[str]] = {}  # slug -> comments whose counts this instance's readers need
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vote-counts")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def voted(self, slug: str, comment_id: str) -> None:
        """A vote was committed on this instance (Threads.on_voted)."""
        self._voted_here.setdefault(slug, set()).add(comment_id)
        self._wake.set()

    def on_votes_changed(self, message: VotesChanged) -> None:
        """Some instance (this one too) took votes: the threads read here get their counts."""
        for slug, comment_ids in message.threads.items():
            if self.hub.local_readers(slug):
                self._to_send.setdefault(slug, set()).update(comment_ids)
        if self._to_send:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._announce()
            await self._send_counts()
            await asyncio.sleep(VOTES_INTERVAL)  # whatever comes meanwhile waits for the next pass

    async def _announce(self) -> None:
        voted, self._voted_here = self._voted_here, {}
        if not voted:
            return
        try:
            await self._publish_control(encode_control(VotesChanged({s: sorted(ids) for s, ids in voted.items()})))
        except Exception:  # the bus is away: announce them with the next pass
            log.warning("cannot announce votes now; retrying", exc_info=True)
            for slug, ids in voted.items():
                self._voted_here.setdefault(slug, set()).update(ids)
            self._wake.set()

    async def _send_counts(self) -> None:
        wanted, self._to_send = self._to_send, {}
        for slug, comment_ids in wanted.items():
            try:
                counts = await self.backend.vote_counts(slug, sorted(comment_ids))
            except Exception:  # the store is away: try again with the next pass
                log.warning("cannot read the vote counts of %s now; retrying", slug, exc_info=True)
                self._to_send.setdefault(slug, set()).update(comment_ids)
                self._wake.set()
                continue
            if counts:
                self.hub.send_to_readers(slug, text_frame(encode(Votes(counts))))
