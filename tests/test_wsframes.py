"""The tests' own WebSocket frames (tests/wsframes.py) against the websockets library's: what
websockets writes as a server, FrameReader reads back, however the bytes are cut; what
client_frame writes, websockets reads as a masked client frame."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame as LibraryFrame
from websockets.frames import Opcode
from websockets.streams import StreamReader

from .wsframes import OP_CLOSE, OP_TEXT, Frame, FrameReader, client_frame, server_messages

# Payload sizes on both sides of the 7-bit, 16-bit and 64-bit length encodings.
SIZES = st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]) | st.integers(0, 300)
DATA = st.sampled_from([Opcode.TEXT, Opcode.BINARY, Opcode.CONT])
CONTROL = st.sampled_from([Opcode.PING, Opcode.PONG, Opcode.CLOSE])


@st.composite
def frames(draw) -> LibraryFrame:
    if draw(st.booleans()):
        return LibraryFrame(draw(CONTROL), draw(st.binary(max_size=125)))
    size = draw(SIZES)
    return LibraryFrame(draw(DATA), bytes([draw(st.integers(0, 255))]) * size, fin=draw(st.booleans()))


def as_tuple(frame: LibraryFrame) -> Frame:
    return Frame(int(frame.opcode), frame.fin, bytes(frame.data))


@settings(max_examples=200, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=6), st.lists(st.integers(1, 80_000), max_size=8))
def test_the_reader_reads_what_a_server_writes_however_it_is_cut(sent: list[LibraryFrame], cuts: list[int]) -> None:
    stream = b"".join(frame.serialize(mask=False) for frame in sent)
    reader, got, pos = FrameReader(), [], 0
    for cut in [*sorted(c % len(stream) for c in cuts), len(stream)]:
        got += reader.feed(stream[pos:cut])
        pos = max(pos, cut)
    assert got == [as_tuple(frame) for frame in sent]
    assert not reader.partial


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([Opcode.TEXT, Opcode.BINARY]), SIZES)
def test_client_frames_are_masked_frames_websockets_reads(opcode: Opcode, size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    wire = client_frame(int(opcode), payload)
    assert wire[1] & 0x80, "client frames must be masked"
    stream = StreamReader()
    stream.feed_data(wire)
    parser = LibraryFrame.parse(stream.read_exact, mask=True)
    with pytest.raises(StopIteration) as parsed:
        next(parser)
    assert (parsed.value.value.opcode, parsed.value.value.data) == (opcode, payload)


def test_a_whole_stream_gives_its_messages_and_close_code() -> None:
    stream = (
        LibraryFrame(Opcode.TEXT, b'{"type":"welcome","seq":4}').serialize(mask=False)
        + LibraryFrame(Opcode.PING, b"").serialize(mask=False)
        + LibraryFrame(Opcode.CLOSE, (4000).to_bytes(2, "big") + b"too slow").serialize(mask=False)
    )
    assert server_messages(stream) == ([{"type": "welcome", "seq": 4}], 4000)
    cut = stream + bytes([0x80 | OP_TEXT, 100]) + b"{"
    with pytest.raises(AssertionError, match="ends inside a frame"):
        server_messages(cut)
    assert server_messages(cut, may_end_mid_frame=True) == ([{"type": "welcome", "seq": 4}], 4000)
    assert server_messages(bytes([0x80 | OP_CLOSE, 0])) == ([], 1005)
