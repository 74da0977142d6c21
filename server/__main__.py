"""`python -m server serve`: run the server with the WebSocket options the product relies on."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from . import settings as settings_module


def serve(host: str | None, port: int | None) -> None:
    settings = settings_module.load()
    uvicorn.run(
        "server.app:create_app", factory=True, host=host or settings.host, port=port or settings.port,
        # websockets' sans-I/O protocol: the fastest of uvicorn's WebSocket implementations here.
        ws="websockets-sansio",
        # Frames over 64 KiB close with 1009, also when a compressed frame would inflate past it.
        ws_max_size=settings_module.MAX_FRAME_BYTES,
        # Pings find dead connections (a peer gone without a FIN) and drop them.
        ws_ping_interval=settings.ws_ping_interval, ws_ping_timeout=settings.ws_ping_interval,
        # The client address comes from X-Forwarded-For only when the peer is a trusted proxy.
        proxy_headers=bool(settings.trusted_proxies), forwarded_allow_ips=settings.trusted_proxies or None,
        loop="uvloop", http="httptools", timeout_graceful_shutdown=5, log_level="info")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description="Backchannel live comment server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve HTTP and WebSocket on HOST:PORT")
    serve_cmd.add_argument("--host", help="listen address (default: the HOST setting)")
    serve_cmd.add_argument("--port", type=int, help="listen port (default: the PORT setting)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        serve(args.host, args.port)


if __name__ == "__main__":
    main()
