"""server/wire.py driven the way uvicorn's own protocol tests drive a protocol: bytes in through
data_received, bytes out recorded from a fake transport's write. No server, no network, nothing
timed: `asyncio.sleep(0)` only where a task must run up to its wait.

wire.py extends uvicorn's websockets sans-I/O protocol and websockets' ServerProtocol, so it leans
on their internals. Each override has a test here that fails without it, and the inherited
behaviour the product depends on (the 101 response, denial responses, 500s, keepalive pongs,
shutdown 1012, flow control) is asserted byte for byte. pyproject.toml pins uvicorn and
websockets to the versions these tests pass on: run this file before moving either pin.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.frames import Close, Frame, Opcode

from server import wire
from server.wire import WIRE_EXTENSION, LiveWebSocketProtocol, _Inbox, _Writable, text_frame

pytestmark = pytest.mark.timeout(10)

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The upgrade request as uvicorn's HTTP protocol hands it to the WebSocket protocol (header names
# lowercased by its parser), with RFC 6455's example key, so Sec-WebSocket-Accept is the RFC's too.
HANDSHAKE = (
    b"GET /articles/some-article/live HTTP/1.1\r\nhost: example.test\r\nupgrade: websocket\r\n"
    b"connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
)
ACCEPTED = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
ACCEPT: Message = {"type": "websocket.accept"}


def server_frame(opcode: Opcode, data: bytes = b"") -> bytes:
    """A frame as the server writes it: unmasked."""
    return Frame(opcode, data).serialize(mask=False)


def close_frame(code: int, reason: str = "") -> bytes:
    return server_frame(Opcode.CLOSE, Close(code, reason).serialize())


def text(data: bytes, fin: bool = True) -> Frame:
    return Frame(Opcode.TEXT, data, fin=fin)


def close(code: int, reason: str = "") -> Frame:
    return Frame(Opcode.CLOSE, Close(code, reason).serialize())


class FakeTransport(asyncio.Transport):
    """Every transport method the protocol calls, recorded; nothing is sent anywhere."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        super().__init__()
        self.written = bytearray()
        self.buffered = 0  # what get_write_buffer_size() answers
        self.reading = True
        self.closing = False
        self.aborted = asyncio.Event()
        self._extra = {"peername": ("203.0.113.7", 50000), "sockname": ("127.0.0.1", 8000), "socket": sock}

    def take(self) -> bytes:
        """What was written since the last take()."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.aborted.set()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Peer:
    """The client's end: it feeds masked frames to the protocol and reads what it wrote."""

    def __init__(
        self,
        app: Callable[[Message, Receive, Send], Awaitable[None]],
        sock: socket.socket | None = None,
        **options: Any,
    ) -> None:
        # The product's options (server/__main__.py), keepalive off unless a test turns it on.
        options = {"ws_per_message_deflate": False, "ws_max_size": 65536, "ws_ping_interval": None} | options
        config = Config(
            app=app, ws=LiveWebSocketProtocol, lifespan="off", log_config=None, proxy_headers=False, **options
        )
        self.state = ServerState()
        self.transport = FakeTransport(sock)
        self.wire = LiveWebSocketProtocol(config, self.state, {}, _loop=asyncio.get_running_loop())
        self.wire.connection_made(self.transport)

    def handshake(self) -> asyncio.Task[None]:
        """Send the upgrade request; returns the task running the app."""
        self.wire.data_received(HANDSHAKE)
        (task,) = self.state.tasks
        return task

    def send(self, *frames: Frame) -> None:
        self.wire.data_received(b"".join(frame.serialize(mask=True) for frame in frames))

    def received(self) -> bytes:
        return self.transport.take()


class Recorder:
    """An ASGI app that accepts, then keeps what receive() gives it until the disconnect."""

    def __init__(self) -> None:
        self.scope: Message = {}
        self.messages: list[Message] = []
        self.accepted = asyncio.Event()
        self.disconnected = asyncio.Event()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        self.scope = scope
        assert (await receive())["type"] == "websocket.connect"
        await send(ACCEPT)
        self.accepted.set()
        while True:
            message = await receive()
            self.messages.append(message)
            if message["type"] == "websocket.disconnect":
                self.disconnected.set()
                return


class Detacher:
    """An ASGI app that accepts, detaches (as live.py does once a reader is caught up) and
    returns. Messages go to on_message, which holds "hold" until release is set."""

    def __init__(self) -> None:
        self.handed: asyncio.Queue[str] = asyncio.Queue()
        self.release = asyncio.Event()
        self.accepted = asyncio.Event()
        self.go = asyncio.Event()
        self.go.set()
        self.closed = 0
        self.in_flight = 0

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send(ACCEPT)
        self.accepted.set()
        await self.go.wait()
        scope["extensions"][WIRE_EXTENSION].detach(self.on_message, self.on_closed)

    async def on_message(self, message: Message) -> None:
        self.in_flight += 1
        assert self.in_flight == 1, "a message was handed over while another was being handled"
        self.handed.put_nowait(message["text"])
        if message["text"] == "hold":
            await self.release.wait()
        self.in_flight -= 1

    def on_closed(self) -> None:
        self.closed += 1


async def accepted(app: Recorder, **options: Any) -> Peer:
    peer = Peer(app, **options)
    peer.handshake()
    await app.accepted.wait()
    assert peer.received() == ACCEPTED
    return peer


async def detached(app: Detacher, **options: Any) -> Peer:
    peer = Peer(app, **options)
    await peer.handshake()
    assert peer.received() == ACCEPTED
    return peer


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged_errors() -> Iterator[list[logging.LogRecord]]:
    """ERROR records of uvicorn's logger, on a handler of its own: whatever logging setup
    another test left behind (propagate off, say), nothing escapes this list."""
    handler = _Collect()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


# --- what websockets' ServerProtocol does, corrected (_ServerProtocol.recv_frame) -------------


async def test_a_close_between_fragments_drops_the_message_and_closes_normally() -> None:
    """RFC 6455 §5.4 allows control frames between fragments; Autobahn|Testsuite 7.1.5 sends
    a fragment, a close, then the last fragment. websockets alone answers 1002."""
    app = Recorder()
    peer = await accepted(app)
    peer.send(text(b"Hel", fin=False), close(1000, "bye"), Frame(Opcode.CONT, b"lo"))
    await app.disconnected.wait()
    assert peer.received() == close_frame(1000, "bye")
    assert app.messages == [{"type": "websocket.disconnect", "code": 1000, "reason": "bye"}]
    assert peer.transport.closing


# --- uvicorn's protocol, extended ---------------------------------------------------------


async def test_invalid_utf8_closes_1007_without_an_error_log(logged_errors: list[logging.LogRecord]) -> None:
    app = Recorder()
    peer = await accepted(app)
    peer.send(text(b"caf\xc3", fin=False), Frame(Opcode.CONT, b"!"))  # é cut short
    await app.disconnected.wait()
    assert peer.received() == close_frame(1007, "invalid UTF-8")
    assert app.messages == [{"type": "websocket.disconnect", "code": 1007, "reason": "invalid UTF-8"}]
    assert peer.transport.closing
    assert logged_errors == []


async def test_a_character_split_between_fragments_arrives_whole() -> None:
    app = Recorder()
    peer = await accepted(app)
    peer.send(text(b"caf\xc3", fin=False), Frame(Opcode.CONT, b"\xa9"))
    peer.send(close(1000))
    await app.disconnected.wait()
    assert app.messages[0] == {"type": "websocket.receive", "text": "café"}


async def test_after_the_server_closes_even_invalid_text_is_discarded_until_the_echo() -> None:
    app = Recorder()
    peer = await accepted(app)
    peer.wire.end(4000, "too slow")
    assert peer.received() == close_frame(4000, "too slow")
    peer.send(text(b"\xff"))
    assert peer.received() == b"" and not peer.transport.closing
    peer.send(close(4000, "too slow"))
    assert peer.transport.closing and not peer.transport.aborted.is_set()


async def test_the_app_finds_the_protocol_in_the_scope_and_the_handshake_headers_are_let_go() -> None:
    seen: Message = {}

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        protocol = scope["extensions"][WIRE_EXTENSION]
        seen.update(
            protocol=protocol, request_headers=len(protocol.request.headers), scope_headers=dict(scope["headers"])
        )
        await receive()
        await send(ACCEPT)

    peer = Peer(app)
    await peer.handshake()
    assert seen["protocol"] is peer.wire
    assert seen["request_headers"] == 0  # the parsed request websockets' parser would keep
    assert seen["scope_headers"][b"host"] == b"example.test"  # what the app reads is untouched


async def test_accepting_lets_the_parsed_handshake_go() -> None:
    peer = await accepted(Recorder())
    assert peer.wire.request is None and peer.wire.response is None


async def test_the_extension_leaves_the_scope_when_the_connection_is_lost() -> None:
    app = Recorder()
    peer = await accepted(app)
    assert app.scope["extensions"][WIRE_EXTENSION] is peer.wire
    peer.wire.connection_lost(None)
    await app.disconnected.wait()
    assert WIRE_EXTENSION not in app.scope["extensions"]
    assert app.messages == [{"type": "websocket.disconnect", "code": 1005}]


async def test_a_denial_response_is_a_complete_answer(logged_errors: list[logging.LogRecord]) -> None:
    async def deny(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no such ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"article"})

    peer = Peer(deny)
    await peer.handshake()
    response = peer.received()
    assert response.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"\r\nContent-Length: 15\r\n" in response and response.endswith(b"\r\n\r\nno such article")
    assert peer.transport.closing
    assert logged_errors == []


@pytest.mark.parametrize("fault", ["raises", "returns"])
async def test_an_app_that_fails_before_answering_gets_a_500_and_an_error_log(
    fault: str, logged_errors: list[logging.LogRecord]
) -> None:
    """run_asgi is uvicorn's, copied: what it does besides keeping a detached socket open."""

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        if fault == "raises":
            raise RuntimeError("broken")

    peer = Peer(app)
    await peer.handshake()
    assert peer.received().startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert peer.transport.closing
    expected = (
        "Exception in ASGI application\n"
        if fault == "raises"
        else "ASGI callable returned without completing handshake."
    )
    assert [record.getMessage() for record in logged_errors] == [expected]


async def test_an_attached_connection_closes_when_the_app_returns() -> None:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await receive()
        await send(ACCEPT)

    peer = Peer(app)
    await peer.handshake()
    assert peer.received() == ACCEPTED
    assert peer.transport.closing


async def test_a_detached_connection_stays_open_when_the_app_returns() -> None:
    app = Detacher()
    peer = await detached(app)
    assert not peer.transport.closing and peer.wire.open
    peer.send(text(b"still here"))
    assert await app.handed.get() == "still here"


async def test_detached_messages_are_handed_over_one_at_a_time_in_order_with_reading_paused() -> None:
    app = Detacher()
    app.go.clear()
    peer = Peer(app)
    task = peer.handshake()
    await app.accepted.wait()
    assert peer.received() == ACCEPTED
    peer.send(text(b"first"))  # before detach(): waits in the inbox, is handed over first
    assert not peer.transport.reading
    app.go.set()
    await task
    assert await app.handed.get() == "first"
    assert peer.transport.reading

    peer.send(text(b"hold"), text(b"then"))
    assert await app.handed.get() == "hold"
    assert not peer.transport.reading and app.handed.empty()
    app.release.set()
    assert await app.handed.get() == "then"
    assert peer.transport.reading  # the hand-over finished in the same step as "then"


async def test_a_detached_connection_hears_its_end_once_and_drops_what_waits() -> None:
    app = Detacher()
    peer = await detached(app)
    peer.send(text(b"hold"), text(b"never"))
    assert await app.handed.get() == "hold"
    handing_over = peer.wire._handling
    assert handing_over is not None
    peer.send(close(1001))
    assert app.closed == 1  # at once, while "hold" is still being handled
    assert peer.received() == close_frame(1001)
    app.release.set()
    await handing_over
    assert app.handed.empty()  # "never" was not handed over after the close
    peer.wire.connection_lost(None)  # uvicorn queues a second disconnect here
    assert app.closed == 1


async def test_server_shutdown_closes_a_detached_reader_with_1012() -> None:
    app = Detacher()
    peer = await detached(app)
    peer.wire.shutdown()
    assert peer.received() == close_frame(1012)
    assert app.closed == 1 and peer.transport.closing


# --- for the fan-out ----------------------------------------------------------------------


def test_text_frame_is_one_unmasked_unfragmented_frame() -> None:
    assert text_frame("é") == b"\x81\x02\xc3\xa9"
    assert text_frame(b"{}") == b"\x81\x02{}"
    assert text_frame("x" * 200) == b"\x81\x7e\x00\xc8" + b"x" * 200


async def test_write_sends_only_while_open_and_answers_what_waits_in_the_process() -> None:
    app = Recorder()
    peer = Peer(app)
    peer.handshake()
    assert not peer.wire.open  # upgrade requested, not accepted yet
    assert peer.wire.write(text_frame("early")) == 0 and peer.received() == b""
    await app.accepted.wait()
    assert peer.received() == ACCEPTED and peer.wire.open
    peer.transport.buffered = 1234
    assert peer.wire.write(text_frame("event")) == 1234
    assert peer.received() == text_frame("event")
    assert peer.wire.backlog() == 1234  # no socket to ask the kernel about: only the buffer
    peer.transport.close()
    assert not peer.wire.open
    assert peer.wire.write(text_frame("late")) == 1234 and peer.received() == b""


async def test_backlog_counts_what_the_kernel_holds_unread_by_the_peer() -> None:
    # The one real socket in this file: the kernel's send queue is what backlog() measures.
    # A Unix socket pair counts every byte the peer has not read yet (TCP counts those not
    # acknowledged), deterministically, with nothing listening anywhere.
    ours, theirs = socket.socketpair()
    with ours, theirs:
        peer = await accepted(Recorder(), sock=ours)
        peer.transport.buffered = 100
        assert peer.wire.backlog() == 100
        ours.send(b"x" * 1000)
        assert peer.wire.backlog() >= 1100
        assert len(theirs.recv(4096)) == 1000
        assert peer.wire.backlog() == 100


async def test_the_lag_probe_follows_queued_frames_and_its_pong_is_not_the_keepalives() -> None:
    peer = await accepted(Recorder(), ws_ping_interval=20.0, ws_ping_timeout=20.0)
    lag = peer.wire
    lag.write(text_frame("event"))
    lag.probe_lag()
    assert lag.lag_probe_sent_at > 0
    lag.probe_lag()  # one probe out at a time
    assert peer.received() == text_frame("event") + server_frame(Opcode.PING, b"lag")

    lag.send_keepalive_ping()  # what uvicorn's keepalive timer calls
    keepalive = lag.pending_ping_payload
    assert keepalive is not None and peer.received() == server_frame(Opcode.PING, keepalive)
    peer.send(Frame(Opcode.PONG, b"lag"))
    assert lag.lag_probe_sent_at == 0.0
    assert lag.pending_ping_payload == keepalive and lag.pong_timer is not None
    peer.send(Frame(Opcode.PONG, keepalive))
    assert lag.pending_ping_payload is None and lag.pong_timer is None
    lag.connection_lost(None)  # stops the keepalive timer


async def test_no_lag_probe_on_a_closing_connection() -> None:
    peer = await accepted(Recorder())
    peer.wire.end(4000, "too slow")
    peer.received()
    peer.wire.probe_lag()
    assert peer.received() == b"" and peer.wire.lag_probe_sent_at == 0.0


async def test_end_queues_the_close_behind_the_data_and_aborts_a_silent_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "CLOSE_GRACE", 0.0)  # the abort timer fires on the next loop turn
    app = Detacher()
    peer = await detached(app)
    peer.send(text(b"hold"))  # a message being handled: reading paused
    assert await app.handed.get() == "hold" and not peer.transport.reading
    peer.wire.write(text_frame("one"))
    peer.wire.write(text_frame("two"))
    peer.wire.end(4000, "too slow")
    assert peer.received() == text_frame("one") + text_frame("two") + close_frame(4000, "too slow")
    assert app.closed == 1  # the app hears it at once
    assert peer.transport.reading  # to read the peer's answering close
    assert not peer.wire.open
    peer.wire.end(4000, "again")
    assert peer.wire.write(text_frame("late")) == 0 and peer.received() == b""
    await peer.transport.aborted.wait()
    app.release.set()


async def test_end_lets_a_peer_that_answers_in_time_close_cleanly() -> None:
    app = Recorder()
    peer = await accepted(app)
    loop = asyncio.get_running_loop()
    peer.wire.end(4000, "too slow")
    await app.disconnected.wait()
    assert app.messages == [{"type": "websocket.disconnect", "code": 4000, "reason": "too slow"}]
    timer = peer.wire.close_timer
    assert timer is not None and 0 < timer.when() - loop.time() <= wire.CLOSE_GRACE
    peer.send(close(4000, "too slow"))
    assert peer.transport.closing and not peer.transport.aborted.is_set()
    assert timer.cancelled() and peer.wire.close_timer is None


async def test_send_waits_while_the_transport_asks_the_protocol_to_pause_writing() -> None:
    peer = await accepted(Recorder())
    peer.wire.pause_writing()
    sending = asyncio.ensure_future(peer.wire.send({"type": "websocket.send", "text": "x"}))
    await asyncio.sleep(0)  # the send runs up to waiting on writable
    assert not sending.done() and peer.received() == b""
    peer.wire.resume_writing()
    await sending
    assert peer.received() == text_frame("x")


# --- the lighter queue and event ----------------------------------------------------------


def received(text: str) -> Message:
    return {"type": "websocket.receive", "text": text}


async def test_inbox_hands_messages_out_in_order_and_wakes_a_waiting_get() -> None:
    inbox = _Inbox()
    assert inbox.empty()
    inbox.put_nowait(received("a"))
    inbox.put_nowait(received("b"))
    assert not inbox.empty()
    assert [await inbox.get(), await inbox.get()] == [received("a"), received("b")]
    getting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)  # the get runs up to waiting
    assert not getting.done()
    inbox.put_nowait(received("c"))
    assert await getting == received("c") and inbox.empty()


async def test_inbox_listener_gets_what_waits_first_then_everything_new() -> None:
    inbox = _Inbox()
    heard: list[Message] = []
    inbox.put_nowait(received("waiting"))
    inbox.listen(heard.append)
    inbox.put_nowait(received("new"))
    assert heard == [received("waiting"), received("new")] and inbox.empty()


async def test_writable_starts_set_and_wakes_every_waiter() -> None:
    writable = _Writable()
    assert writable.is_set()
    await writable.wait()
    writable.clear()
    assert not writable.is_set()
    waiters = [asyncio.ensure_future(writable.wait()) for _ in range(3)]
    await asyncio.sleep(0)  # they run up to waiting
    waiters[0].cancel()
    assert not any(waiter.done() for waiter in waiters[1:])
    writable.set()
    await asyncio.gather(*waiters[1:])
    assert writable.is_set()
    writable.set()  # nobody waiting: nothing to do
