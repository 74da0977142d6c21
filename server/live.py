"""The WebSocket endpoint: catch-up from the log, then live events, posts, presence.

Each connection has a bounded queue drained by its own writer task, so fan-out never waits
on a reader: a reader whose queue overflows is closed with 4000 and recovers with `since`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

import orjson
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import metrics
from .comments import PENDING, public_event
from .errors import BackchannelError, InvalidMessage, NotFound, RateLimited, Unavailable
from .moderation import ModeratorSession
from .protocol import (CLOSE_POLICY, CLOSE_SESSION_ENDED, CLOSE_TOO_SLOW, CLOSE_TRY_AGAIN, Ack, Error, Frame,
                       Reset, Welcome, encode, parse_client_frame)
from .security import client_ip
from .threads import Author

log = logging.getLogger("backchannel.live")

# A reader that sends this many refused frames within the window is closed with 1008.
MAX_REFUSED_FRAMES, REFUSED_WINDOW = 20, 10.0


@dataclass(frozen=True)
class ResetTo:
    """In a connection's queue: a reset frame, after which the stream goes on from seq."""
    seq: int


class Connection:
    """One reader's socket, as the Hub sees it: a bounded queue of (seq, frame)."""

    def __init__(self, websocket: WebSocket, max_queue: int, moderator: bool = False) -> None:
        self.websocket = websocket
        self.moderator = moderator
        self.max_queue = max_queue
        self.queue: deque[tuple[int | ResetTo | None, str]] = deque()
        self.last_seq = 0  # the last sequenced event sent; replays and live events at or below it are doubles
        self.ended = asyncio.Event()  # set with the close code and reason the server will send
        self.close_code, self.close_reason = 1000, ""
        self._wake = asyncio.Event()

    def send(self, seq: int | ResetTo | None, frame: str) -> None:
        if self.ended.is_set():
            return
        if len(self.queue) >= self.max_queue:
            self.queue.clear()
            metrics.readers_dropped.inc()
            self.end(CLOSE_TOO_SLOW, "too slow: reconnect with since")
            return
        self.queue.append((seq, frame))
        self._wake.set()

    def end(self, code: int, reason: str) -> None:
        """Close this connection soon, from anywhere, without waiting on the peer."""
        if not self.ended.is_set():
            self.close_code, self.close_reason = code, reason
            self.ended.set()

    def reset(self, seq: int, frame: str) -> None:
        self.send(ResetTo(seq), frame)

    def send_frame(self, frame: Frame) -> None:
        self.send(None, encode(frame))

    async def write_loop(self) -> None:
        while True:
            while not self.queue:
                self._wake.clear()
                await self._wake.wait()
            seq, frame = self.queue.popleft()
            if isinstance(seq, int):
                if seq <= self.last_seq:
                    continue
                self.last_seq = seq
            elif isinstance(seq, ResetTo):
                self.last_seq = seq.seq  # a new epoch may count from 1 again
            await self.websocket.send_text(frame)


async def live(websocket: WebSocket) -> None:
    state = websocket.app.state
    slug = websocket.path_params["slug"]
    if not state.security.origin_allowed(websocket.scope):
        await websocket.close(CLOSE_POLICY)  # before accept(): the upgrade is answered 403
        return
    try:
        state.threads.article(slug)
    except NotFound:
        await websocket.send_denial_response(PlainTextResponse("No such article.", status_code=404))
        return
    ip = client_ip(websocket.scope)
    if state.connections_per_ip[ip] >= state.settings.max_connections_per_ip:
        log.warning("refusing a live connection from %s: %d already open", ip, state.connections_per_ip[ip])
        await websocket.close(CLOSE_POLICY)  # before accept(): the upgrade is answered 403
        return
    state.connections_per_ip[ip] += 1
    try:
        await _serve(websocket, slug)
    finally:
        state.connections_per_ip[ip] -= 1
        if not state.connections_per_ip[ip]:
            del state.connections_per_ip[ip]


async def _serve(websocket: WebSocket, slug: str) -> None:
    state = websocket.app.state
    await websocket.accept()
    session = websocket.scope["state"]["moderator"]
    connection = Connection(websocket, state.settings.send_queue_size, moderator=session is not None)
    try:
        await state.hub.join(slug, connection)
    except Unavailable:
        await websocket.close(CLOSE_TRY_AGAIN, "the backend is unavailable: retry with since")
        return
    try:
        with state.live_sessions.track(session, connection):
            await _catch_up(websocket, connection, slug)
            await _run(websocket, connection, _read_loop(websocket, connection, slug))
    except Unavailable:
        await websocket.close(CLOSE_TRY_AGAIN, "the backend is unavailable: retry with since")
    except WebSocketDisconnect:
        pass
    finally:
        await state.hub.leave(slug, connection)


async def _run(websocket: WebSocket, connection: Connection, read_loop) -> None:
    """Drain the connection's queue and read the client until either side ends, or until the
    server ends it (too slow, session ended): then close with the code set."""
    tasks = [asyncio.create_task(connection.write_loop()), asyncio.create_task(read_loop),
             asyncio.create_task(connection.ended.wait())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() and not isinstance(task.exception(), WebSocketDisconnect):
                raise task.exception()
        if connection.ended.is_set():
            log.info("closing a live connection: %s", connection.close_reason)
            # A reader that reads nothing never takes the close frame: do not wait on it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(connection.close_code, connection.close_reason), 1.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class LiveSessions:
    """This instance's live connections: by moderator session (to close them when it ends),
    and the open moderation desks (to give them what happens on every instance)."""

    def __init__(self) -> None:
        self.by_session: dict[str, set[Connection]] = {}
        self.desks: set[Connection] = set()

    @contextlib.contextmanager
    def track(self, session: ModeratorSession | None, connection: Connection, desk: bool = False):
        if session is not None:
            self.by_session.setdefault(session.session_id, set()).add(connection)
        if desk:
            self.desks.add(connection)
        try:
            yield
        finally:
            self.desks.discard(connection)
            if session is not None:
                connections = self.by_session.get(session.session_id, set())
                connections.discard(connection)
                if not connections:
                    self.by_session.pop(session.session_id, None)

    def on_control(self, message: str) -> None:
        """A control message from any instance (the backend's control channel)."""
        try:
            control = orjson.loads(message)
            if control["kind"] == "session_ended":
                for connection in list(self.by_session.get(control["session"], ())):
                    connection.end(CLOSE_SESSION_ENDED, "the moderator's session ended")
            elif control["kind"] == "desk":  # (other kinds are for others: spam rules reload themselves)
                frame = orjson.dumps(control["frame"]).decode()  # once, for every desk here
                for connection in list(self.desks):
                    connection.send(None, frame)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed control message: %.200s", message)


async def desk_live(websocket: WebSocket) -> None:
    """The moderation desk's socket: what happens on every instance, as it happens."""
    state = websocket.app.state
    session = websocket.scope["state"]["moderator"]
    if session is None or not state.security.origin_allowed(websocket.scope):
        await websocket.close(CLOSE_POLICY)  # before accept(): the upgrade is answered 403
        return
    await websocket.accept()
    connection = Connection(websocket, state.settings.send_queue_size, moderator=True)
    with state.live_sessions.track(session, connection, desk=True):
        connection.send(None, orjson.dumps({"type": "desk_welcome", "moderator": session.name}).decode())
        with contextlib.suppress(WebSocketDisconnect):
            await _run(websocket, connection, _ignore_incoming(websocket))


async def _ignore_incoming(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


def _parse_since(websocket: WebSocket) -> tuple[int | None, str | None, bool]:
    """(since, epoch, valid). A since that is not a non-negative integer is answered with reset."""
    raw = websocket.query_params.get("since")
    epoch = websocket.query_params.get("epoch") or None
    if raw is None or raw == "":
        return None, epoch, True
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²".isdigit() is True too
        return None, epoch, False
    return int(raw), epoch, True


async def _catch_up(websocket: WebSocket, connection: Connection, slug: str) -> None:
    """welcome, then every event after `since` from the log (or reset). The connection is
    already receiving live events into its queue; the writer drops those already replayed."""
    state = websocket.app.state
    head = await state.backend.head(slug)
    readers = state.hub.readers(slug)
    await websocket.send_text(encode(Welcome(seq=head.seq, readers=readers, epoch=head.epoch)))
    since, epoch, valid = _parse_since(websocket)
    if since is None and valid:
        connection.last_seq = head.seq
        return
    missed = None
    if valid and since <= head.seq and (epoch is None or epoch == head.epoch):
        missed = await state.backend.events_since(slug, since)
    if missed is None:
        await websocket.send_text(encode(Reset(seq=head.seq, epoch=head.epoch)))
        connection.last_seq = head.seq
        return
    connection.last_seq = since
    for event in missed:
        await websocket.send_text(encode(event if connection.moderator else public_event(event)))
        connection.last_seq = event.seq


async def _read_loop(websocket: WebSocket, connection: Connection, slug: str) -> None:
    state = websocket.app.state
    session = websocket.scope["state"]["moderator"]
    author = Author(reader_id=websocket.scope["state"]["reader_id"], ip=client_ip(websocket.scope),
                    moderator=session.name if session else None)
    refused: deque[float] = deque()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        ref = None
        try:
            text = message.get("text")
            if text is None:
                raise InvalidMessage("frames must be JSON text, not binary")
            post = parse_client_frame(text)
            ref = post.ref
            comment, _ = await state.threads.post(slug, author, name=post.name, about=post.about,
                                                  body=post.body, parent=post.parent, ref=ref)
            # A comment held for moderation is no event yet: its author gets it in the ack.
            connection.send_frame(Ack(ref=ref, id=comment.id, seq=comment.seq,
                                      comment=comment.public() if comment.status == PENDING else None))
        except BackchannelError as exc:
            retry_after = getattr(exc, "retry_after", None)
            connection.send_frame(Error(code=exc.code, message=exc.message, ref=ref, retry_after=retry_after))
            if isinstance(exc, RateLimited):
                continue  # answered cheaply; the socket stays open
            now = time.monotonic()
            refused.append(now)
            while refused and refused[0] < now - REFUSED_WINDOW:
                refused.popleft()
            if len(refused) > MAX_REFUSED_FRAMES:
                await websocket.close(CLOSE_POLICY, "too many refused messages")
                return
        except Exception:
            log.exception("could not store a post on %s", slug)
            connection.send_frame(Error(code="unavailable", message="The comment could not be stored; please retry.",
                                        ref=ref))
