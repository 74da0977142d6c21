"""An echo WebSocket under uvicorn, run with the product's own WebSocket options, for Autobahn.

The route exists only here, never in the product. The uvicorn options are not copied: they are
taken from `python -m server serve` itself (server/__main__.py), by calling it with uvicorn.run
replaced, so this app always runs with whatever the product runs with: the WebSocket
implementation (unless --ws picks another to compare), the frame size limit, pings,
per-message deflate, event loop and HTTP parser. The product runs its own protocol class
(server/wire.py: uvicorn's websockets sans-I/O protocol, extended); --ws picks one of uvicorn's
stock implementations instead.

Text messages are echoed the way the product sends to readers: `wire.write(text_frame(...))` on
the protocol found at scope["extensions"]["backchannel.wire"], not ASGI websocket.send; when
that extension is absent (a stock --ws), through websocket.send_text. Binary messages, which
the product never sends, go through websocket.send_bytes.

    python -m tests.conformance.echo_app --port 9001 [--ws websockets-sansio|websockets|wsproto]
"""

from __future__ import annotations

import argparse
import os
from typing import Any
from unittest import mock

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from server.wire import WIRE_EXTENSION, text_frame

# Of the options serve() gives uvicorn.run, these are this app's own: where it listens, what it runs.
LEFT_TO_THIS_APP = {"app", "factory", "host", "port", "proxy_headers", "timeout_graceful_shutdown", "log_level"}


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    wire = (websocket.scope.get("extensions") or {}).get(WIRE_EXTENSION)  # the product's protocol
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                if wire is not None:
                    wire.write(text_frame(message["text"]))
                else:
                    await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:  # the peer went away while its echo was being sent
        return


app = Starlette(routes=[WebSocketRoute("/", echo)])


def product_options() -> dict[str, Any]:
    """The keyword arguments `python -m server serve` gives uvicorn.run."""
    from server import __main__ as product

    captured: dict[str, Any] = {}
    os.environ.setdefault("SECRET_KEY", "conformance-only")  # else settings would write a dev key to ./data
    with mock.patch.object(uvicorn, "run", lambda app, **options: captured.update(options)):
        product.serve("127.0.0.1", 0)
    if not captured:
        raise RuntimeError("server/__main__.py serve() did not call uvicorn.run")
    return captured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", help="uvicorn WebSocket implementation (default: the product's)")
    args = parser.parse_args()
    options = {k: v for k, v in product_options().items() if k not in LEFT_TO_THIS_APP}
    if args.ws:
        options["ws"] = args.ws
    print("echo app: uvicorn options " + ", ".join(f"{k}={v!r}" for k, v in sorted(options.items())), flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", **options)


if __name__ == "__main__":
    main()
