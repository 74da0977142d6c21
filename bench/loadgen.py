"""The fan-out bench's load generator: worker processes driven by bench/fanout.py.

    python -m bench.loadgen bulk|sampled|poster

Each worker is one process on uvloop, speaking a minimal WebSocket client on bare sockets (the
tests' own frames, tests/wsframes.py; no client library), so the same generator drives every peer:

- ``bulk``: thousands of readers that only walk frame headers and count event frames (text
  frames of at least EVENT_MIN bytes), answer pings (WebSocket ping, Engine.IO "2") and never
  decode a payload. Their sockets are read in epoll sweeps (every 0.2 s by default, see
  Sweeper) rather than one callback per frame: about 2 µs of generator CPU per delivery
  instead of 8-9 µs, which on a small machine is CPU the servers under test get back;
- ``sampled``: ~50 readers per instance that decode every frame, read the post's monotonic
  stamp from the comment body and record post-to-delivery latency, seq gaps and losses;
- ``poster``: one connection per instance; posts at a fixed rate, alternating instances,
  each body stamped ``t=<time.monotonic_ns()> i=<instance> n=<post number>``.

Two wire flavours: ``ws`` (Backchannel and the raw peer: JSON text frames) and ``sio``
(Engine.IO v4 over WebSocket: open "0{...}", we send "40", events arrive as "42[...]").

Control: one JSON object per line on stdin, one JSON reply per line on stdout. EOF on stdin
(the orchestrator is gone) ends the worker.
"""

from __future__ import annotations

import asyncio
import os
import resource
import select
import socket
import sys
import time

import orjson

from tests.wsframes import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    client_frame,
    close_code,
    frame_header,
    handshake,
)

try:
    import uvloop
except ImportError:  # pragma: no cover - the product's dependencies bring uvloop
    uvloop = None

EVENT_MIN = 160  # bytes: comment frames are ~400; welcome, presence, acks and Engine.IO chatter are smaller
FILLER = (
    "I read the whole piece and I think the ministry is speaking to two audiences at once; "
    "the second paragraph says more than the headline."
)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


PONG_EIO = client_frame(OP_TEXT, b"3")
CONNECT_SIO = client_frame(OP_TEXT, b"40")


class Client(asyncio.Protocol):
    """A reader that counts event frames and never decodes them (the bulk readers)."""

    def __init__(self, worker: Worker, target: dict, index: int) -> None:
        self.worker = worker
        self.port = target["port"]
        self.path = target["path"]
        self.sio = target["kind"] == "sio"
        self.instance = target.get("instance", 0)
        self.index = index
        self.transport: asyncio.Transport | SocketTransport | None = None
        self.sock: socket.socket | None = None  # swept readers only
        self.ready = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.head = bytearray()
        self.pending = b""  # an incomplete frame header (or small frame) carried to the next read
        self.skip = 0  # payload bytes of the current event frame still to come
        self.texts = 0  # small text frames seen (welcome, presence, Engine.IO open/connect)
        self.events = 0  # event frames counted
        self.mark = 0  # self.events at the start of the current step
        self.closed = False
        self.counted = False  # in worker.clients: its loss counts as a lost connection

    # --- connection ---

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.write(handshake(self.port, self.path))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self.counted and not self.worker.stopping:
                self.worker.lost_connections += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc!r}"))

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 16384:
                    self.fail("handshake answer too long")
                return
            status = bytes(self.head[:end]).split(b"\r\n", 1)[0]
            data = bytes(self.head[end + 4 :])
            self.head = bytearray()
            if not status.startswith(b"HTTP/1.1 101"):
                self.fail(status.decode(errors="replace"))
                return
            self.upgraded = True
            if not data:
                return
        self.feed(data)

    # --- frames ---

    def feed(self, data: bytes) -> None:
        skip = self.skip
        if skip:
            if skip >= len(data):
                self.skip = skip - len(data)
                return
            pos, self.skip = skip, 0
        elif self.pending:
            data, self.pending, pos = self.pending + data, b"", 0
        else:
            pos = 0
        n = len(data)
        events = 0
        while pos < n:
            header = frame_header(data, pos)
            if header is None:
                self.pending = data[pos:]
                break
            b0, length, hl = header
            end = pos + hl + length
            opcode = b0 & 0x0F
            if opcode <= OP_TEXT and length >= EVENT_MIN:
                events += 1
                if end > n:
                    self.skip = end - n
                    break
            else:
                if end > n:  # a small frame cut in two: wait for the rest of it
                    self.pending = data[pos:]
                    break
                if opcode <= OP_TEXT:
                    self.small_text(data[pos + hl : end])
                else:
                    self.control(opcode, data[pos + hl : end])
            pos = end
        if events:
            self.events += events
            worker = self.worker
            worker.delivered += events
            worker.last_ns = time.monotonic_ns()

    def small_text(self, payload: bytes) -> None:
        self.texts += 1
        if self.sio:
            if payload == b"2":
                self.transport.write(PONG_EIO)
            elif payload[:1] == b"0":
                self.transport.write(CONNECT_SIO)
            elif payload[:2] == b"40" and not self.ready.done():
                self.ready.set_result(True)
        elif not self.ready.done():
            self.ready.set_result(True)  # welcome

    def control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self.transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            code = close_code(payload)
            self.worker.close_codes[str(code)] = self.worker.close_codes.get(str(code), 0) + 1
            if not self.closed:
                self.transport.write(client_frame(OP_CLOSE, payload[:2]))
                self.transport.close()

    def send_text(self, text: str | bytes) -> None:
        if isinstance(text, str):
            text = text.encode()
        self.transport.write(client_frame(OP_TEXT, text))


class SocketTransport:
    """What a swept Client needs of a transport: write a few bytes, close."""

    __slots__ = ("client", "sock", "sweeper")

    def __init__(self, sock: socket.socket, sweeper: Sweeper, client: Client) -> None:
        self.sock, self.sweeper, self.client = sock, sweeper, client

    def write(self, data: bytes) -> None:
        try:
            self.sock.send(data)  # pongs and the like: tiny, the send buffer always has room
        except OSError:
            pass

    def close(self) -> None:
        self.sweeper.drop(self.client)


class Sweeper:
    """Reads the bulk readers' sockets outside the event loop, in sweeps.

    A bulk reader's own latency is never measured, so instead of one wake-up and one callback
    per frame per socket (uvloop's data_received), one epoll sweep every `interval` seconds
    reads whatever each socket holds: at load several frames per recv, for a fraction of the
    CPU. The kernel buffers the frames meanwhile (a few KiB); the server never notices."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.epoll = select.epoll()
        self.clients: dict[int, Client] = {}
        self.task: asyncio.Task | None = None

    def add(self, client: Client, sock: socket.socket) -> None:
        self.clients[sock.fileno()] = client
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    def drop(self, client: Client) -> None:
        sock = client.sock
        if sock is None:
            return
        client.sock = None
        fd = sock.fileno()
        if self.clients.pop(fd, None) is not None:
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass
        sock.close()
        client.connection_lost(None)

    async def run(self) -> None:
        clients, poll = self.clients, self.epoll.poll
        buffer = bytearray(1 << 18)
        view = memoryview(buffer)
        while True:
            await asyncio.sleep(self.interval)
            ready = poll(0, len(clients) + 1)  # maxevents: the default is only 1023
            for fd, _ in ready:
                client = clients.get(fd)
                if client is None:
                    continue
                try:
                    n = client.sock.recv_into(buffer)
                except BlockingIOError:
                    continue
                except OSError:
                    n = 0
                if n:
                    client.data_received(bytes(view[:n]))
                else:
                    self.drop(client)


class FullClient(Client):
    """A reader that reassembles and hands every text frame to on_text."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.frames = FrameReader()
        self.fragments: list[bytes] = []

    def feed(self, data: bytes) -> None:
        now = time.monotonic_ns()
        for opcode, fin, payload in self.frames.feed(data):
            if opcode >= OP_CLOSE:
                self.control(opcode, payload)
                continue
            self.fragments.append(payload)
            if fin:
                message = b"".join(self.fragments)
                self.fragments.clear()
                self.on_text(message, now)

    def on_text(self, payload: bytes, now: int) -> None:
        """One whole text frame: Engine.IO chatter is answered here, events go to event(), the rest to other()."""
        if self.sio:
            if payload[:2] == b"42":
                event = orjson.loads(payload[2:])
                if len(event) == 2 and event[0] == "comment":
                    self.event(event[1], now)
                else:
                    self.other(event[1] if len(event) > 1 else None)
            else:
                self.small_text(payload)
            return
        frame = orjson.loads(payload)
        if not self.ready.done():
            self.ready.set_result(True)
        if frame.get("type") == "comment":
            self.event(frame, now)
        else:
            self.other(frame)

    def event(self, frame: dict, now: int) -> None:
        pass

    def other(self, frame) -> None:
        pass


class Sampled(FullClient):
    """Decodes every frame: latency from the body's stamp, seq gaps, which posts arrived."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.seen: set[int] = set()
        self.last_seq: int | None = None

    def event(self, frame: dict, now: int) -> None:
        worker = self.worker
        comment = frame["comment"]
        stamp, posted_to, number = comment["body"].split(" ", 3)[:3]
        latency_us = (now - int(stamp[2:])) // 1000
        n = int(number[2:])
        if n in self.seen:
            worker.duplicates += 1
        self.seen.add(n)
        (worker.same if int(posted_to[2:]) == self.instance else worker.cross).append(latency_us)
        seq = frame.get("seq")
        if self.last_seq is not None and seq != self.last_seq + 1:
            worker.seq_gaps += 1
        self.last_seq = seq
        self.events += 1
        worker.delivered += 1
        worker.last_ns = now


class PosterConnection(FullClient):
    """The poster's socket on one instance: reads acks and errors, ignores the events."""

    def event(self, frame: dict, now: int) -> None:
        pass

    def other(self, frame) -> None:
        if isinstance(frame, dict):
            kind = frame.get("type")
            if kind == "ack":
                self.worker.acked += 1
            elif kind == "error":
                code = str(frame.get("code"))
                self.worker.post_errors[code] = self.worker.post_errors.get(code, 0) + 1
                ref = frame.get("ref") or ""
                if ref.startswith("p") and ref[1:].isdigit():
                    self.worker.failed.append(int(ref[1:]))


class Worker:
    def __init__(self, role: str) -> None:
        self.role = role
        self.cls = {"bulk": Client, "sampled": Sampled, "poster": PosterConnection}[role]
        self.clients: list[Client] = []
        self.stopping = False
        self.delivered = 0
        self.delivered_mark = 0
        self.last_ns = 0
        self.lost_connections = 0
        self.close_codes: dict[str, int] = {}
        self.same: list[int] = []
        self.cross: list[int] = []
        self.duplicates = 0
        self.seq_gaps = 0
        self.acked = 0
        self.failed: list[int] = []
        self.post_errors: dict[str, int] = {}
        self.next_n = 1
        self.sweeper: Sweeper | None = None

    async def handle(self, cmd: dict) -> dict:
        op = cmd["op"]
        if op == "connect":
            return await self.connect(
                cmd["targets"], cmd.get("concurrency", 64), cmd.get("timeout", 120.0), cmd.get("sweep", 0.0)
            )
        if op == "mark":
            self.delivered_mark = self.delivered
            self.same, self.cross = [], []
            self.duplicates = self.seq_gaps = 0
            self.acked, self.failed, self.post_errors = 0, [], {}
            for client in self.clients:
                client.mark = client.events
                if isinstance(client, Sampled):
                    client.seen = set()
            return {"ok": True}
        if op == "count":
            return self.count(cmd.get("expected"))
        if op == "report":
            return self.report(cmd["n0"], cmd["n1"], set(cmd.get("failed", ())))
        if op == "post":
            return await self.post(cmd["rate"], cmd["duration"], cmd.get("kind", "ws"))
        if op == "poststats":
            return {"acked": self.acked, "failed": self.failed, "errors": self.post_errors}
        if op == "stop":
            self.stopping = True
            for client in self.clients:
                if client.transport:
                    client.transport.close()
            await asyncio.sleep(0)
            return {"ok": True}
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        return {"error": f"unknown op {op!r}"}

    async def connect(self, targets: list[dict], concurrency: int, timeout: float, sweep: float) -> dict:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)
        errors: dict[str, int] = {}

        swept = self.role == "bulk" and sweep > 0
        if swept:
            if self.sweeper is None:
                self.sweeper = Sweeper(sweep)
            self.sweeper.interval = 0.002  # handshakes: answer promptly

        async def open_swept(target: dict, index: int) -> Client:
            client = Client(self, target, index)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", target["port"]))
                client.sock = sock
                client.transport = SocketTransport(sock, self.sweeper, client)
                sock.send(handshake(client.port, client.path))
            except BaseException:
                sock.close()
                raise
            self.sweeper.add(client, sock)
            return client

        async def one(target: dict, index: int) -> bool:
            async with gate:
                for attempt in range(3):
                    client = None
                    try:
                        if swept:
                            client = await asyncio.wait_for(open_swept(target, index), 10.0)
                        else:
                            _, client = await asyncio.wait_for(
                                loop.create_connection(
                                    lambda: self.cls(self, target, index), "127.0.0.1", target["port"]
                                ),
                                10.0,
                            )
                        await asyncio.wait_for(client.ready, 20.0)
                        if client.closed:
                            raise ConnectionError("closed right after it was ready")
                        client.counted = True
                        self.clients.append(client)
                        return True
                    except Exception as exc:
                        key = f"{type(exc).__name__}: {exc}"[:120]
                        errors[key] = errors.get(key, 0) + 1
                        if client is not None and client.transport:
                            client.transport.close()
                        await asyncio.sleep(0.2 * (attempt + 1))
                return False

        jobs = []
        for target in targets:
            for _ in range(target["count"]):
                jobs.append(one(target, len(jobs)))
        started = time.monotonic()
        try:
            results = await asyncio.wait_for(asyncio.gather(*jobs), timeout)
        except TimeoutError:
            results = []
        if swept:
            self.sweeper.interval = sweep
        return {
            "connected": sum(1 for r in results if r),
            "wanted": len(jobs),
            "errors": errors,
            "seconds": round(time.monotonic() - started, 2),
        }

    def open_clients(self) -> int:
        return len(self.clients) - self.lost_connections

    def count(self, expected: int | None) -> dict:
        reply = {
            "delivered": self.delivered - self.delivered_mark,
            "last_ns": self.last_ns,
            "open": self.open_clients(),
            "lost_connections": self.lost_connections,
            "close_codes": self.close_codes,
        }
        if expected is not None:
            got = [c.events - c.mark for c in self.clients if not c.closed]
            reply["short_readers"] = sum(1 for g in got if g < expected)
            reply["extra_readers"] = sum(1 for g in got if g > expected)
            reply["min"] = min(got) if got else 0
            reply["max"] = max(got) if got else 0
        return reply

    def report(self, n0: int, n1: int, failed: set[int]) -> dict:
        expected = set(range(n0, n1)) - failed
        missing = sum(len(expected - c.seen) for c in self.clients if isinstance(c, Sampled))
        reply = self.count(None)
        reply.update(
            {
                "same": self.same,
                "cross": self.cross,
                "missing": missing,
                "duplicates": self.duplicates,
                "seq_gaps": self.seq_gaps,
            }
        )
        return reply

    async def post(self, rate: float, duration: float, kind: str) -> dict:
        """Posts at `rate` per second for `duration` seconds, post n to instance n % len(clients)."""
        if not self.clients:
            return {"error": "poster is not connected"}
        by_instance = sorted(self.clients, key=lambda c: c.instance)
        count = max(1, round(rate * duration))
        n0 = self.next_n
        started = time.monotonic()
        first_ns = last_ns = 0
        lag_max = 0.0
        for k in range(count):
            due = started + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag_max = max(lag_max, -delay)
            n = n0 + k
            connection = by_instance[n % len(by_instance)]
            now = time.monotonic_ns()
            body = f"t={now} i={connection.instance} n={n} {FILLER}"
            if kind == "sio":
                payload = b"42" + orjson.dumps(["post", {"ref": f"p{n}", "name": "Bench Poster", "body": body}])
            else:
                payload = orjson.dumps(
                    {
                        "type": "post",
                        "ref": f"p{n}",
                        "name": "Bench Poster",
                        "about": None,
                        "body": body,
                        "parent": None,
                    }
                )
            connection.send_text(payload)
            first_ns = first_ns or now
            last_ns = now
        self.next_n = n0 + count
        return {
            "n0": n0,
            "n1": n0 + count,
            "sent": count,
            "first_ns": first_ns,
            "last_ns": last_ns,
            "lag_max_ms": round(lag_max * 1000, 1),
            "open": self.open_clients(),
        }


async def serve(role: str) -> None:
    worker = Worker(role)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    while True:
        line = await reader.readline()
        if not line:
            break  # the orchestrator is gone
        try:
            cmd = orjson.loads(line)
            reply = await worker.handle(cmd)
        except Exception as exc:
            cmd = {}
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(orjson.dumps(reply) + b"\n")
        out.flush()
        if cmd.get("op") == "stop":
            break


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role not in ("bulk", "sampled", "poster"):
        sys.exit("usage: python -m bench.loadgen bulk|sampled|poster")
    raise_nofile()
    if uvloop is not None:
        uvloop.run(serve(role))
    else:
        asyncio.run(serve(role))


if __name__ == "__main__":
    main()
