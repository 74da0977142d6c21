"""The WebSocket endpoint: catch-up from the log, then live events, posts, presence.

Frames go straight to the reader's socket (server/wire.py): the fan-out never waits on a
reader and never wakes a task per reader. A reader that falls behind is closed with 4000 and
recovers with `since`: when more than SEND_BUFFER_BYTES wait for it in this process, or when it
leaves a lag probe unanswered for MAX_LAG seconds (LiveSessions.watch_lag) — a reader that
reads nothing is found that way long before the kernel's socket buffers fill.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from starlette.authentication import requires
from starlette.responses import PlainTextResponse
from starlette.types import Message
from starlette.websockets import WebSocket

from . import metrics
from .comments import HIDDEN, PENDING, Head, public_event
from .control import DeskUpdate, SessionEnded
from .errors import BackchannelError, InvalidMessage, NotFound, RateLimited, Unavailable
from .guards import MODERATOR, author, moderator_of
from .i18n import N_
from .identity import client_ip, client_network
from .protocol import (
    CLOSE_POLICY,
    CLOSE_SESSION_ENDED,
    CLOSE_THREAD_HIDDEN,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_TOO_SLOW,
    CLOSE_TRY_AGAIN,
    Ack,
    DeskComment,
    DeskWelcome,
    Error,
    Frame,
    Pending,
    Reset,
    Vote,
    Votes,
    Welcome,
    encode,
    parse_client_frame,
)
from .wire import WIRE_EXTENSION, LiveWebSocketProtocol, text_frame

if TYPE_CHECKING:
    from .moderation import ModeratorSession

log = logging.getLogger("backchannel.live")

# A reader that sends this many refused frames within the window is closed with 1008.
MAX_REFUSED_FRAMES, REFUSED_WINDOW = 20, 10.0
# The lag watch: every LAG_SWEEP seconds, a reader with more than PROBE_BACKLOG bytes
# unacknowledged gets a ping behind them; one that has not answered it after MAX_LAG seconds
# has not read what was sent that long ago, and is closed. Honest readers on a fast link stay
# far below PROBE_BACKLOG (a few KiB in flight), so they are never probed.
LAG_SWEEP, PROBE_BACKLOG, MAX_LAG = 0.5, 16 * 1024, 1.5


@dataclass(frozen=True)
class ResetTo:
    """A reset frame's place in the stream: events up to seq are covered by it."""

    seq: int


class Connection:
    """One reader's socket, as the Hub sees it. While the reader is catching up from the log,
    live events are held (up to max_backlog bytes) and written after the replay, doubles dropped."""

    # one per reader
    __slots__ = ("_held_bytes", "held", "last_seq", "max_backlog", "moderator", "slug", "wire", "written")

    def __init__(
        self, wire: LiveWebSocketProtocol, max_backlog: int, moderator: bool = False, slug: str | None = None
    ) -> None:
        self.wire = wire
        self.slug = slug  # the article's thread; None for a moderation desk
        self.moderator = moderator
        self.max_backlog = max_backlog
        self.last_seq = 0  # the last sequenced event sent; replays and live events at or below it are doubles
        self.held: list[tuple[int | ResetTo | None, bytes]] | None = []  # None once live
        self.written = False  # since the lag watch last looked
        self._held_bytes = 0

    @property
    def ended(self) -> bool:
        return not self.wire.open

    def send(self, seq: int | ResetTo | None, frame: bytes) -> None:
        """Write a frame built by text_frame(), or hold it while catching up. Never waits."""
        if self.held is None:
            self.write_now(seq, frame)
        elif self._held_bytes + len(frame) > self.max_backlog:
            self.too_slow()
        else:
            self.held.append((seq, frame))
            self._held_bytes += len(frame)

    def reset(self, seq: int, frame: bytes) -> None:
        self.send(ResetTo(seq), frame)

    def send_frame(self, frame: Frame) -> None:
        self.send(None, text_frame(encode(frame)))

    def go_live(self) -> None:
        """The replay is written: write what was held during it, then everything as it comes."""
        held, self.held = self.held or [], None
        for seq, frame in held:
            self.write_now(seq, frame)

    def end(self, code: int, reason: str) -> None:
        """Close this connection now, from anywhere, without waiting on the peer."""
        if not self.ended:
            log.info("closing a live connection: %s", reason)
            self.wire.end(code, reason)

    def write_now(self, seq: int | ResetTo | None, frame: bytes) -> None:
        """Write a frame even while live events are held (the catch-up's own frames)."""
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return
            self.last_seq = seq
        elif isinstance(seq, ResetTo):
            self.last_seq = seq.seq  # a new epoch may count from 1 again
        self.written = True
        if self.wire.write(frame) > self.max_backlog:
            self.too_slow()

    def too_slow(self) -> None:
        if not self.ended:
            metrics.readers_dropped.inc()
            self.end(CLOSE_TOO_SLOW, "too slow: reconnect with since")


async def live(websocket: WebSocket) -> None:
    """Checks, handshake and catch-up run in this ASGI call; then it returns and the socket
    lives on in its protocol (LiveReader): an idle reader costs no task and no coroutine frames."""
    state = websocket.app.state
    slug = websocket.path_params["slug"]
    wire = _wire(websocket)
    if wire is None:
        log.error("live connections need the server's own WebSocket protocol: run `python -m server serve`")
        await websocket.close(CLOSE_TRY_AGAIN)
        return
    if not state.security.origin_allowed(websocket.scope):
        await websocket.close(CLOSE_POLICY)  # before accept(): the upgrade is answered 403
        return
    try:
        state.threads.article(slug)
    except NotFound as exc:  # or Gone (410): the article was unpublished
        await websocket.send_denial_response(PlainTextResponse(exc.message, status_code=exc.status))
        return
    ip = client_ip(websocket.scope)
    # Counted per network, as the other per-address limits are: an IPv6 host holds a whole /64
    # and could otherwise open MAX_CONNECTIONS_PER_IP sockets from each of its addresses.
    network = client_network(ip)
    if state.connections_per_network[network] >= state.settings.max_connections_per_ip:
        log.warning(
            "refusing a live connection from %s: %d already open", network, state.connections_per_network[network]
        )
        # Accepted, then closed: a browser sees an HTTP refusal only as a nameless failure, but
        # reads a close code and reason, so the page can say why and retry later.
        await websocket.accept()
        await websocket.close(CLOSE_TOO_MANY_CONNECTIONS, "too many connections from your network")
        return
    await websocket.accept()
    await LiveReader(websocket, wire, slug, ip).open(websocket)


def _wire(websocket: WebSocket) -> LiveWebSocketProtocol | None:
    """The socket's protocol, when the server runs under `python -m server serve`."""
    return cast("LiveWebSocketProtocol | None", websocket.scope.get("extensions", {}).get(WIRE_EXTENSION))


class LiveReader:
    """One reader's open socket on one thread: joined to the Hub, counted against its IP,
    posting through Threads. It outlives the ASGI call that opened it: once caught up, the
    socket's protocol hands it each message (on_message) and the end (on_closed)."""

    __slots__ = ("_left", "author", "connection", "ip", "network", "refused", "session", "slug", "state")

    def __init__(self, websocket: WebSocket, wire: LiveWebSocketProtocol, slug: str, ip: str) -> None:
        self.state = websocket.app.state
        self.slug, self.ip = slug, ip
        self.network = client_network(ip)
        self.session: ModeratorSession | None = moderator_of(websocket)
        self.author = author(websocket)
        self.connection = Connection(
            wire, self.state.settings.send_buffer_bytes, moderator=self.session is not None, slug=slug
        )
        self.refused: list[float] = []  # when recent frames were refused (a list: most readers never have one)
        self._left = False

    async def open(self, websocket: WebSocket) -> None:
        state, connection = self.state, self.connection
        state.connections_per_network[self.network] += 1
        state.live_sessions.add(self.session, connection)
        try:
            await state.hub.join(self.slug, connection)
            await _catch_up(websocket, connection, self.slug)
        except Unavailable:
            connection.end(CLOSE_TRY_AGAIN, "the backend is unavailable: retry with since")
        except BaseException:
            connection.end(1011, "")
            await self._leave()
            raise
        connection.wire.detach(self.on_message, self.on_closed)

    def on_closed(self) -> None:
        self.state.live_sessions.spawn(self._leave())

    async def _leave(self) -> None:
        if self._left:
            return
        self._left = True
        state = self.state
        state.live_sessions.discard(self.session, self.connection)
        state.connections_per_network[self.network] -= 1
        if not state.connections_per_network[self.network]:
            del state.connections_per_network[self.network]
        await state.hub.leave(self.slug, self.connection)

    async def on_message(self, message: Message) -> None:
        """A frame from the reader: a post, answered with ack or error on this socket, or a vote,
        answered with its count (or error)."""
        connection, ref = self.connection, None
        try:
            text = message.get("text")
            if text is None:
                raise InvalidMessage("frames must be JSON text, not binary")
            post = parse_client_frame(text)
            if isinstance(post, Vote):
                # Answered with the count on this socket; every reader gets it coalesced.
                _comment, count = await self.state.threads.vote(post.id, self.author, post.up)
                connection.send_frame(Votes({post.id: count}))
                return
            ref = post.ref
            comment, _ = await self.state.threads.post(
                self.slug, self.author, name=post.name, about=post.about, body=post.body, parent=post.parent, ref=ref
            )
            # A comment held for moderation is no event yet: its author gets it in the ack.
            connection.send_frame(
                Ack(
                    ref=ref,
                    id=comment.id,
                    seq=comment.seq,
                    comment=comment.public() if comment.status == PENDING else None,
                )
            )
        except BackchannelError as exc:
            retry_after = getattr(exc, "retry_after", None)
            refusal = exc.in_language(self.state.language)
            connection.send_frame(Error(code=exc.code, message=refusal, ref=ref, retry_after=retry_after))
            if isinstance(exc, RateLimited):
                return  # answered cheaply; the socket stays open
            now = time.monotonic()
            self.refused = [t for t in self.refused if t >= now - REFUSED_WINDOW] + [now]
            if len(self.refused) > MAX_REFUSED_FRAMES:
                connection.end(CLOSE_POLICY, "too many refused messages")
        except Exception:
            log.exception("could not store a post on %s", self.slug)
            connection.send_frame(
                Error(
                    code="unavailable",
                    message=self.state.language.gettext(N_("The comment could not be stored; please retry.")),
                    ref=ref,
                )
            )


class LiveSessions:
    """This instance's live connections: all of them (for the lag watch), by moderator session
    (to close them when it ends), and the open moderation desks (to give them what happens on
    every instance)."""

    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self.by_session: dict[str, set[Connection]] = {}
        self.desks: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, session: ModeratorSession | None, connection: Connection, desk: bool = False) -> None:
        self.connections.add(connection)
        if session is not None:
            self.by_session.setdefault(session.session_id, set()).add(connection)
        if desk:
            self.desks.add(connection)

    def discard(self, session: ModeratorSession | None, connection: Connection) -> None:
        self.connections.discard(connection)
        self.desks.discard(connection)
        if session is not None:
            connections = self.by_session.get(session.session_id, set())
            connections.discard(connection)
            if not connections:
                self.by_session.pop(session.session_id, None)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a reader's leaving (Hub, presence) to its end, even when nothing awaits it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _show_pending(self, comment: dict[str, Any]) -> None:
        """A comment held for moderation is no event (readers must not see it), but moderators
        reading its article see it arrive, and can approve it there."""
        frame = text_frame(encode(Pending(comment)))
        for connections in list(self.by_session.values()):
            for connection in list(connections):
                if connection.slug == comment.get("slug"):
                    connection.send(None, frame)

    async def close(self) -> None:
        """At shutdown: let the readers' leaving finish before the Hub and backend go."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)

    async def watch_lag(self) -> None:
        """Close readers that have stopped reading (see LAG_SWEEP, PROBE_BACKLOG, MAX_LAG)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(LAG_SWEEP)
            now = loop.time()
            for connection in list(self.connections):
                wire = connection.wire
                if wire.lag_probe_sent_at:
                    if now - wire.lag_probe_sent_at > MAX_LAG:
                        connection.too_slow()
                elif connection.written:  # a reader nothing was sent to cannot fall further behind
                    connection.written = False
                    if wire.backlog() > PROBE_BACKLOG:
                        wire.probe_lag()

    def on_session_ended(self, message: SessionEnded) -> None:
        """A moderator logged out, on any instance: their sockets here close."""
        for connection in list(self.by_session.get(message.session, ())):
            connection.end(CLOSE_SESSION_ENDED, "the moderator's session ended")

    def on_desk_update(self, message: DeskUpdate) -> None:
        """Something happened for the desks, on any instance: every desk here gets it."""
        frame = text_frame(encode(message.frame))  # once, for every desk here
        for connection in list(self.desks):
            connection.send(None, frame)
        if isinstance(message.frame, DeskComment) and message.frame.comment.get("status") == PENDING:
            self._show_pending(message.frame.comment)


@requires(MODERATOR)  # anyone else: closed before accept(), so the upgrade is answered 403
async def desk_live(websocket: WebSocket) -> None:
    """The moderation desk's socket: what happens on every instance, as it happens."""
    state = websocket.app.state
    session = moderator_of(websocket)
    assert session is not None, "@requires(MODERATOR) lets only a moderator's session in"
    wire = _wire(websocket)
    if wire is None or not state.security.origin_allowed(websocket.scope):
        await websocket.close(CLOSE_POLICY)  # before accept(): the upgrade is answered 403
        return
    await websocket.accept()
    connection = Connection(wire, state.settings.send_buffer_bytes, moderator=True)
    connection.go_live()
    state.live_sessions.add(session, connection, desk=True)
    try:
        connection.send_frame(DeskWelcome(moderator=session.name))
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # the desk acts over HTTP; anything it sends here is ignored
    finally:
        state.live_sessions.discard(session, connection)


def _parse_since(websocket: WebSocket) -> tuple[int | None, str | None, bool]:
    """(since, epoch, valid). A since that is not a non-negative integer is answered with reset."""
    raw = websocket.query_params.get("since")
    epoch = websocket.query_params.get("epoch") or None
    if raw is None or raw == "":
        return None, epoch, True
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²".isdigit() is True too
        return None, epoch, False
    return int(raw), epoch, True


def _welcome(connection: Connection, head: Head, readers: int) -> bool:
    """Write the welcome frame; False when the connection ends there: a reader of a hidden
    thread has nothing to catch up on (its comments are not theirs to see)."""
    welcome = Welcome(seq=head.seq, readers=readers, epoch=head.epoch, state=head.state.name)
    connection.write_now(None, text_frame(encode(welcome)))
    if head.state.name == HIDDEN and not connection.moderator:
        connection.end(CLOSE_THREAD_HIDDEN, "the thread is hidden")
        return False
    return True


async def _catch_up(websocket: WebSocket, connection: Connection, slug: str) -> None:
    """welcome, then every event after `since` from the log (or reset). The connection is
    already receiving live events, held until this is written; go_live() drops the doubles."""
    state = websocket.app.state
    since, epoch, valid = _parse_since(websocket)
    # A reconnect (a deploy sends every reader back at once) is served from the Hub's tail
    # when it can be, with no store query; only a since the tail cannot answer reads the store.
    replayed = None if since is None else await state.hub.replay(slug, since, epoch, connection.moderator)
    if since is not None and replayed is not None:
        head, frames = replayed
        if not _welcome(connection, head, state.hub.readers(slug)):
            return
        connection.last_seq = since
        for seq, frame in frames:
            connection.write_now(seq, frame)
            if connection.ended:
                return  # too far behind to replay at once (too_slow): it comes back with a later since
        connection.go_live()
        return
    head = await state.backend.head(slug)
    if not _welcome(connection, head, state.hub.readers(slug)):
        return
    missed = None
    if since is not None and since <= head.seq and (epoch is None or epoch == head.epoch):
        missed = await state.backend.events_since(slug, since)
    if since is None and valid:
        connection.last_seq = head.seq
    elif since is None or missed is None:  # missed is read only for a since
        connection.write_now(ResetTo(head.seq), text_frame(encode(Reset(seq=head.seq, epoch=head.epoch))))
    else:
        connection.last_seq = since
        for event in missed:
            connection.write_now(event.seq, text_frame(encode(event if connection.moderator else public_event(event))))
            if connection.ended:
                return  # too far behind to replay at once (too_slow): it comes back with a later since
    connection.go_live()
