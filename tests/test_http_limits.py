"""What one HTTP request may make a real server hold: head size and count, time, forms."""

from __future__ import annotations

import asyncio
import selectors
import socket
import time
from pathlib import Path

import httpx2 as httpx
from websockets.asyncio.client import connect

from server.http_limits import MAX_HEAD_BYTES, MAX_HEADERS, REQUEST_TIMEOUT

from .servers import DEMO_SLUG
from .visitors import token


def rss_kib(server) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer is still an end)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_a_one_mib_header_is_refused_with_431_and_never_buffered(server):
    before = rss_kib(server)
    connections = []
    for _ in range(20):  # the head is never ended: without a cap each one sits in the parser
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused part-way: the answer is already waiting
        connections.append(sock)
    answers = [answer(sock) for sock in connections]
    after = rss_kib(server)
    print(f"RSS {before} KiB -> {after} KiB after 20 unfinished 1 MiB headers")
    assert all(a.startswith(b"HTTP/1.1 431 ") for a in answers), answers[0][:100]
    assert after - before < 8 * 1024
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_more_header_fields_than_allowed_are_refused_with_431(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        fields = b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_HEADERS + 1))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        assert answer(sock).startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        fields = b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_HEADERS - 2))  # with these two: exactly the cap
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n")
        assert answer(sock).startswith(b"HTTP/1.1 200 ")


def test_a_head_just_under_the_cap_and_a_body_in_the_same_read_are_served(server):
    padding = MAX_HEAD_BYTES - 300  # the rest of the head fits in the 300 bytes left
    body = b'{"name": "Ann", "body": "in one read with its head"}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/articles/" + DEMO_SLUG.encode() + b"/comments HTTP/1.1\r\n"
            b"Host: 127.0.0.1:%d\r\n"
            % server.port
            + b"Connection: close\r\nContent-Type: application/json\r\nX-Pad: "
            + b"p" * padding
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        assert answer(sock).startswith(b"HTTP/1.1 201 ")


async def test_slow_requests_are_closed_within_the_deadline_while_others_are_served(server):
    # A WebSocket opened first must outlive the deadline: it is no longer an HTTP request.
    async with connect(f"{server.ws_url}/articles/{DEMO_SLUG}/live?since=0", origin=server.url, proxy=None) as live:
        await live.recv()
        held = await asyncio.to_thread(_slowloris, server, 200)
        print(f"200 slow requests: closed after {held:.1f} s (deadline {REQUEST_TIMEOUT:g} s)")
        assert held < REQUEST_TIMEOUT + 10
        await live.send('{"type": "post", "ref": "after", "name": "Ann", "body": "still here"}')
        while (frame := await live.recv()) and '"ack"' not in frame:
            pass


def _slowloris(server, count: int) -> float:
    """count connections that send a header line a second and never end their head; while
    they trickle, an ordinary request must be answered. Seconds until the server closed all."""
    start = time.monotonic()
    selector = selectors.DefaultSelector()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        selector.register(sock, selectors.EVENT_READ)
    ordinary = httpx.get(server.url + "/healthz", timeout=5)
    assert ordinary.status_code == 200
    next_trickle = time.monotonic() + 1
    while selector.get_map():
        assert time.monotonic() - start < REQUEST_TIMEOUT + 20, f"{len(selector.get_map())} still open"
        for key, _ in selector.select(timeout=max(0.0, next_trickle - time.monotonic())):
            if not answer(key.fileobj).startswith(b"HTTP/1.1 408 "):
                raise AssertionError("a slow request was not answered 408")
            selector.unregister(key.fileobj)
            key.fileobj.close()
        if time.monotonic() >= next_trickle:
            next_trickle += 1
            for key in list(selector.get_map().values()):
                try:
                    key.fileobj.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass  # closed by the server: select reports it next
    return time.monotonic() - start


def test_a_form_with_a_file_part_is_refused_and_nothing_is_stored(client):
    page = f"/articles/{DEMO_SLUG}"
    fields = {"name": "Ann", "csrf_token": token(client, page)}
    response = client.post(
        f"{page}/comments", data=fields, files={"body": ("note.txt", b"a file's text")}, follow_redirects=False
    )
    assert response.status_code == 400 and "no file" in response.text
    comments = client.get(f"/api/articles/{DEMO_SLUG}/comments").json()["comments"]
    assert not any(c["author"]["name"] == "Ann" for c in comments)
    # The same form as a browser sends it is taken.
    response = client.post(f"{page}/comments", data={**fields, "body": "typed"}, follow_redirects=False)
    assert response.status_code == 303
