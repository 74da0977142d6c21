"""The client side of a WebSocket on a bare socket, for the tests and the fan-out bench.

A websockets client hides what some tests are about (a reader that completes the handshake and
never reads, a text frame that is not UTF-8, the exact close code on the wire) and costs too
much where there are many readers (a hundred in the test process, thousands in the bench's load
generator). Those speak the protocol themselves, through this module: the upgrade request,
masked client frames and one parser of server frames (RFC 6455, section 5.2). It needs nothing
beyond the product's own dependencies, so the bench's load generator imports it too.
"""

from __future__ import annotations

import base64
import os
from typing import NamedTuple

import orjson

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NO_STATUS = 1005  # a close frame without a code (RFC 6455, 7.4.1)


def handshake(port: int, path: str) -> bytes:
    """The upgrade request, without compression (the server's frames stay readable here)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One whole masked client frame (RFC 6455 requires clients to mask)."""
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    if not length:
        return head + mask
    # One big-integer XOR instead of a loop over the bytes: the bench's poster sends thousands.
    key = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return head + mask + masked


def frame_header(data: bytes | bytearray, pos: int) -> tuple[int, int, int] | None:
    """(first byte, payload length, header length) of the server frame at data[pos], or None
    while its header has not all arrived. Server frames are never masked."""
    available = len(data) - pos
    if available < 2:
        return None
    length = data[pos + 1] & 0x7F
    if length < 126:
        return data[pos], length, 2
    if length == 126:
        if available < 4:
            return None
        return data[pos], int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
    if available < 10:
        return None
    return data[pos], int.from_bytes(data[pos + 2 : pos + 10], "big"), 10


def close_code(payload: bytes) -> int:
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS


class Frame(NamedTuple):
    opcode: int
    fin: bool
    payload: bytes


class FrameReader:
    """Server frames out of a byte stream that arrives in pieces: feed() returns the frames the
    bytes so far complete and keeps the rest for the next call."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buf = self.buffer
        buf += data
        frames, pos = [], 0
        while (header := frame_header(buf, pos)) is not None:
            first, length, header_length = header
            start = pos + header_length
            end = start + length
            if end > len(buf):
                break
            frames.append(Frame(first & 0x0F, bool(first & 0x80), bytes(buf[start:end])))
            pos = end
        del buf[:pos]
        return frames

    @property
    def partial(self) -> bool:
        """Whether bytes of an incomplete frame are waiting for the rest of it."""
        return bool(self.buffer)


def server_messages(data: bytes, *, may_end_mid_frame: bool = False) -> tuple[list[dict], int | None]:
    """A whole stream of server frames -> (its text frames as JSON, its close code or None).
    A stream that ends inside a frame fails, unless the connection may have been reset
    mid-frame (may_end_mid_frame), when that last frame is left out."""
    reader = FrameReader()
    messages, code = [], None
    for frame in reader.feed(data):
        if frame.opcode == OP_TEXT:
            messages.append(orjson.loads(frame.payload))
        elif frame.opcode == OP_CLOSE:
            code = close_code(frame.payload)
    if reader.partial and not may_end_mid_frame:
        raise AssertionError("the stream ends inside a frame")
    return messages, code
