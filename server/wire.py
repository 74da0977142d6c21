"""The WebSocket protocol the server runs under uvicorn: uvicorn's websockets sans-I/O protocol,
with what a live fan-out needs and the ASGI interface cannot give.

* **Frames built once, written straight to each socket.** Through ASGI every reader's copy of an
  event costs an `await send()`, a task wake-up and its own framing. The fan-out instead builds
  an event's frame once (`text_frame`) and `write()`s the same bytes to every reader's
  transport, synchronously, in the loop iteration the event arrived in. Frames from the
  server are not masked, and permessage-deflate is off (`python -m server serve`), so the bytes
  are the same for every reader.
* **A measure of how far behind a reader is** (`backlog()`, `probe_lag()`): bytes written but
  not yet acknowledged by the peer (the transport's buffer plus the kernel's send queue), and
  a ping whose answer says the reader has read everything sent before it.
* **Closing without waiting on the peer** (`end()`): the close frame goes out behind what is
  queued, the app hears `websocket.disconnect` at once, and the socket is aborted if the peer
  has not answered within CLOSE_GRACE seconds (a reader that reads nothing never will).
* **No task per idle reader** (`detach()`): once a reader is caught up, the app's ASGI call
  returns and the socket stays open; incoming messages and the end go to callbacks. With the
  handshake request dropped and a lighter inbox, an idle reader costs ~7 KiB instead of ~28.
* **A close frame between the fragments of a message closes normally.** RFC 6455 §5.4 allows
  control frames between fragments; websockets fails the connection with 1002 instead
  (Autobahn|Testsuite case 7.1.5). The unfinished message is dropped, the close echoed.
* Two quiet fixes: invalid UTF-8 from a client closes 1007 without an ERROR traceback, and a
  denial response (404 for an unknown article) is not logged as an unfinished handshake.

The app finds the protocol in the scope: `scope["extensions"]["backchannel.wire"]`.

None of what this extends is public API, so pyproject.toml pins uvicorn and websockets to the
versions tests/test_wire.py passes on: it drives every override here through a fake transport,
and must pass before either pin moves. The close-between-fragments and the two quiet fixes
belong upstream; docs/upstream/ has them as reports ready to file.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import termios
from collections.abc import Awaitable, Callable
from typing import Any, cast

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

WIRE_EXTENSION = "backchannel.wire"
CLOSE_GRACE = 1.0  # seconds a peer has to answer our close frame before the socket is aborted
_LAG_PROBE_PAYLOAD = b"lag"
_LAG_PROBE = Frame(Opcode.PING, _LAG_PROBE_PAYLOAD).serialize(mask=False)
_OUTQ = array.array("i", [0])  # backlog()'s ioctl buffer, reused: everything here runs on one loop

Message = dict[str, Any]  # an ASGI message


def text_frame(payload: str | bytes) -> bytes:
    """One unfragmented, uncompressed text frame, as the server sends it to any reader."""
    return Frame(Opcode.TEXT, payload.encode() if isinstance(payload, str) else payload).serialize(mask=False)


class _ServerProtocol(ServerProtocol):
    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            self.current_size = None  # a close between fragments: drop the unfinished message
        super().recv_frame(frame)


class _Inbox:
    """What uvicorn's asyncio.Queue does for the app's receive(), for its one consumer: messages
    are few (a handshake, the odd post, a disconnect), and an asyncio.Queue with its Event and
    three deques costs ~3 KiB per idle connection."""

    __slots__ = ("_items", "_listener", "_waiter")

    def __init__(self) -> None:
        self._items: list[Message] = []
        self._waiter: asyncio.Future[None] | None = None
        self._listener: Callable[[Message], None] | None = None

    def listen(self, listener: Callable[[Message], None]) -> None:
        """From now on hand every message to listener, beginning with those waiting."""
        self._listener = listener
        items, self._items = self._items, []
        for item in items:
            listener(item)

    def put_nowait(self, item: Message) -> None:
        if self._listener is not None:
            self._listener(item)
            return
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Message:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _Writable:
    """uvicorn's `writable` asyncio.Event, without the Event's deque when nobody waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._waiters is not None:
            waiters, self._waiters = self._waiters, None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters = [*(self._waiters or ()), waiter]
        await waiter


class LiveWebSocketProtocol(WebSocketsSansIOProtocol):
    # uvicorn's asyncio.Queue and asyncio.Event, replaced by lighter objects with the same methods.
    queue: _Inbox  # type: ignore[assignment]
    writable: _Writable  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()
        self.writable = _Writable()
        # The same ServerProtocol uvicorn made, but for the fragment-then-close fix above.
        self.conn = _ServerProtocol(
            extensions=self.conn.available_extensions, max_size=self.config.ws_max_size, logger=self.conn.logger
        )
        self.lag_probe_sent_at = 0.0  # loop time of the unanswered lag probe, 0 when none is out
        self._fd = -1
        # Once detached (see detach()): where messages and the end go, and the one task, while
        # there are messages, that hands them over in order.
        self._detached = False
        self._on_message: Callable[[Message], Awaitable[None]] | None = None
        self._on_closed: Callable[[], None] | None = None
        self._messages: list[Message] = []
        self._handling: asyncio.Task[None] | None = None

    # --- uvicorn's protocol, extended ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The app's task was created above but has not run yet: it sees the extension. (ASGI
        # lets an extension's value be anything; uvicorn's scope type says a dict.)
        if hasattr(self, "scope"):
            cast(dict[str, Any], self.scope["extensions"])[WIRE_EXTENSION] = self
        # websockets' parser generator keeps the handshake request for the connection's whole
        # life; its headers are in the scope now, so let their ~3 KiB go.
        event.headers.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if getattr(self, "scope", None) is not None:
            self.scope["extensions"].pop(WIRE_EXTENSION, None)  # no cycle left for the collector

    async def run_asgi(self) -> None:
        # uvicorn's, but for the last line: a detached connection stays open when the app returns.
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        else:
            if not self.handshake_complete:
                self.logger.error("ASGI callable returned without completing handshake.")
                self.send_500_response()
            elif result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
        if self.close_timer is None and not self._detached:
            self.transport.close()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                # A client's bad bytes: close 1007 as uvicorn does, without its ERROR traceback.
                self.frames = []
                self.conn.fail(1007, "invalid UTF-8")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    def handle_pong(self, event: Frame) -> None:
        if bytes(event.data) == _LAG_PROBE_PAYLOAD:
            self.lag_probe_sent_at = 0.0
            return
        super().handle_pong(event)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The parsed handshake is done with (the app has its scope): ~4 KiB per connection.
            self.request = self.response = None  # type: ignore[assignment]
        elif message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            # A denial response (e.g. 404 for an unknown article) is a complete answer: without
            # this, uvicorn logs "ASGI callable returned without completing handshake".
            self.handshake_complete = True

    # --- for the fan-out ---

    @property
    def open(self) -> bool:
        """Accepted, and neither side has begun to close: data frames may still go out. (Every
        way the connection starts closing either sets close_sent or closes the transport.)"""
        return self.handshake_complete and not self.close_sent and not self.transport.is_closing()

    def write(self, frame: bytes) -> int:
        """Queue a frame built by text_frame() behind what is already on its way. Returns the
        bytes now waiting in this process for the kernel to take them."""
        transport = self.transport  # (the open check inlined: this runs once per reader per event)
        if self.handshake_complete and not self.close_sent and not transport.is_closing():
            transport.write(frame)
        return transport.get_write_buffer_size()

    def backlog(self) -> int:
        """Bytes written to this socket that the peer has not acknowledged yet."""
        _OUTQ[0] = 0
        if self._fd >= 0:
            try:
                fcntl.ioctl(self._fd, termios.TIOCOUTQ, _OUTQ)  # SIOCOUTQ on a socket
            except OSError:
                pass
        return self.transport.get_write_buffer_size() + _OUTQ[0]

    def probe_lag(self) -> None:
        """Send a ping behind everything queued; its pong clears lag_probe_sent_at."""
        if self.open and not self.lag_probe_sent_at:
            self.lag_probe_sent_at = self.loop.time()
            self.transport.write(_LAG_PROBE)

    def detach(self, on_message: Callable[[Message], Awaitable[None]], on_closed: Callable[[], None]) -> None:
        """Go on without the app's task: the ASGI call returns and the socket stays open. Each
        `websocket.receive` message is awaited in on_message, one at a time, in order (reading
        pauses meanwhile); `websocket.disconnect` calls on_closed, once. An idle connection
        then holds no task and none of the app's coroutine frames, only this object."""
        self._detached = True
        self._on_message, self._on_closed = on_message, on_closed
        self.scope = None  # type: ignore[assignment]  # the app has taken what it needs from it
        self.queue.listen(self._dispatch)

    def _dispatch(self, message: Message) -> None:
        if message["type"] == "websocket.disconnect":
            on_closed, self._on_closed, self._on_message = self._on_closed, None, None
            if on_closed is not None:
                on_closed()
        elif self._on_message is not None:
            self._messages.append(message)
            if self._handling is None:
                self._handling = self.loop.create_task(self._hand_over())

    async def _hand_over(self) -> None:
        try:
            while self._messages and self._on_message is not None:
                await self._on_message(self._messages.pop(0))
        finally:
            self._handling = None
            self._messages.clear()
            if self.read_paused and not self.disconnected:
                self.read_paused = False
                self.transport.resume_reading()

    def end(self, code: int, reason: str) -> None:
        """Close now: the close frame follows what is queued; the app hears the disconnect at
        once; the socket is aborted if the peer has not finished closing in CLOSE_GRACE."""
        if not self.open:
            return
        self.close_sent = True
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(CLOSE_GRACE, self.transport.abort)
