"""Limits on what one HTTP request may make the server hold, applied where the bytes arrive.

uvicorn's httptools protocol has no cap on a request head and no deadline for it: httptools
buffers a header value until its line ends (a single 50 MiB header was accepted and held), and
a client that sends a byte now and then (slowloris) keeps its connection, and the buffers
behind it, for as long as it likes. This protocol, passed to uvicorn as `http=`, counts the
head's bytes as they arrive and refuses a head over MAX_HEAD_BYTES or MAX_HEADERS with 431
before the parser ever buffers them, and closes a connection whose request is not wholly
received within REQUEST_TIMEOUT. A WebSocket upgrade is an HTTP request first, so its
handshake gets the same limits; the upgraded socket then belongs to the WebSocket protocol.

Forms are read through `read_form`: text fields only, so a file part is refused (400), never
stored as the text of its repr.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import InvalidMessage

log = logging.getLogger("backchannel.http")

# Browsers send 1-3 KiB; a news site's own cookies can add several more. nginx allows 4 x 8 KiB.
MAX_HEAD_BYTES = 32 * 1024
MAX_HEADERS = 100
# From a connection's first byte (or a keep-alive request's first byte) to its request's last
# byte. A comment is at most 64 KiB: even a slow phone sends that in well under this.
REQUEST_TIMEOUT = 10.0
# The no-JavaScript forms have at most a handful of short fields.
MAX_FORM_FIELDS = 20
MAX_FORM_PART_BYTES = 64 * 1024


class _HeadRefused(Exception):
    """Raised from a parser callback to stop httptools at once; uvicorn turns any callback
    error into send_400_response, which answers with the status kept on the protocol."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_room = MAX_HEAD_BYTES
        self._head_complete = False
        self._refusal: tuple[int, str] | None = None
        # When the request being received began (None: none is). One timer per connection checks
        # it and re-arms itself while requests keep coming, rather than a timer per request.
        self._request_began: float | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._request_begins()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused and closing: nothing more is parsed
        if self._head_complete or len(data) <= self._head_room:
            self._head_room -= len(data)
            super().data_received(data)
            return
        # The head may end within the room left and a body follow in the same read: parse up to
        # the cap, and refuse only if the head is still not complete there.
        room = self._head_room
        self._head_room = 0
        super().data_received(data[:room])
        if self._refusal is not None or self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # refused, or upgraded to a WebSocket (whose client waits for the 101 to send more)
        if not self._head_complete:
            self._refuse(431, f"The request head is over {MAX_HEAD_BYTES} bytes.")
            return
        super().data_received(data[room:])

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        if self._request_began is None:  # a keep-alive connection's next request starts its clock
            self._request_begins()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        # Counted once the head is whole: MAX_HEAD_BYTES already bounds what it held meanwhile.
        if len(self.headers) > MAX_HEADERS:
            self._refusal = (431, f"A request may have at most {MAX_HEADERS} header fields.")
            raise _HeadRefused
        self._head_complete = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._request_ends()
        # What comes next is the head of the next request, with a budget of its own. (A pipelined
        # head that arrives in the same read as the end of this body is not counted: one read
        # is bounded by the event loop's read size, so the buffering still is.)
        self._head_room = MAX_HEAD_BYTES
        self._head_complete = False
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # From here the WebSocket protocol keeps its own time; a pending timer would keep this
        # object (parser, head) alive for seconds after each handshake.
        self._stop_deadline()
        super().handle_websocket_upgrade()

    # --- refusing ---

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(*self._refusal)
        else:
            super().send_400_response(msg)

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        log.warning("refused a request from %s: %s", self.client[0] if self.client else "?", message)
        self._answer_and_close(status, message)

    def _answer_and_close(self, status: int, message: str) -> None:
        self._request_ends()
        body = message.encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.transport.close()

    # --- the deadline ---

    def _request_begins(self) -> None:
        self._request_began = self.loop.time()
        if self._deadline_timer is None:
            self._deadline_timer = self.loop.call_later(REQUEST_TIMEOUT, self._check_deadline)

    def _request_ends(self) -> None:
        self._request_began = None

    def _stop_deadline(self) -> None:
        self._request_began = None
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    def _check_deadline(self) -> None:
        self._deadline_timer = None
        if self._request_began is None or self.transport.is_closing():
            return  # between requests: the next one arms the timer again
        left = self._request_began + REQUEST_TIMEOUT - self.loop.time()
        if left > 0:
            self._deadline_timer = self.loop.call_later(left, self._check_deadline)
        elif self._head_complete:
            # The application is already reading the body: closing ends its wait with a disconnect.
            self.transport.close()
        elif self._head_room < MAX_HEAD_BYTES:
            self._refuse(408, f"The request was not received within {REQUEST_TIMEOUT:g} seconds.")
        else:
            self.transport.close()  # connected and said nothing: no answer owed


async def read_form(request: Request) -> FormData:
    """A submitted form, text fields only: a file part (or too many, or too large, parts) is
    refused with 400 rather than read, and a file never reaches the code as text."""
    try:
        return await request.form(max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_PART_BYTES)
    except HTTPException as exc:  # Starlette's answer to a multipart body over these caps
        raise InvalidMessage("This form takes a few text fields, and no file. ({detail})", detail=exc.detail) from None
