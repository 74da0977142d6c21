"""`python -m server serve`: run the server with the WebSocket options the product relies on."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys

import uvicorn

from . import settings as settings_module
from .backends import create_backend
from .errors import BackchannelError
from .moderation import Moderation
from .wire import LiveWebSocketProtocol


def serve(host: str | None, port: int | None) -> None:
    settings = settings_module.load()
    uvicorn.run(
        "server.app:create_app", factory=True, host=host or settings.host, port=port or settings.port,
        # uvicorn's websockets sans-I/O protocol (the fastest of its implementations here),
        # extended so the fan-out writes each event's frame, built once, to every socket.
        # No permessage-deflate: every reader's copy would be compressed apart, each socket
        # would keep zlib state (tens of KiB), and comment frames are small.
        ws=LiveWebSocketProtocol, ws_per_message_deflate=False,
        # Frames over 64 KiB close with 1009, also when a compressed frame would inflate past it.
        ws_max_size=settings_module.MAX_FRAME_BYTES,
        # Pings find dead connections (a peer gone without a FIN) and drop them.
        ws_ping_interval=settings.ws_ping_interval, ws_ping_timeout=settings.ws_ping_interval,
        # The client address comes from X-Forwarded-For only when the peer is a trusted proxy.
        proxy_headers=bool(settings.trusted_proxies), forwarded_allow_ips=settings.trusted_proxies or None,
        loop="uvloop", http="httptools", timeout_graceful_shutdown=5, log_level="info")


def create_moderator(name: str, password_file: str | None) -> None:
    """Create or reset a moderator in the configured backend. The password never comes from
    the command line (it would sit in shell history and the process list)."""
    if password_file:
        password = open(password_file, encoding="utf-8").read().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {name}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")

    async def run() -> str:
        settings = settings_module.load()
        backend = create_backend(settings)
        await backend.start()
        try:
            return await Moderation(backend, str(settings.secret_key)).create_moderator(name, password)
        finally:
            await backend.close()

    try:
        created = asyncio.run(run())
    except (ValueError, BackchannelError) as exc:
        sys.exit(f"create-moderator: {exc}")
    print(f"moderator {created!r} is ready; log in at /login")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description="Backchannel live comment server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve HTTP and WebSocket on HOST:PORT")
    serve_cmd.add_argument("--host", help="listen address (default: the HOST setting)")
    serve_cmd.add_argument("--port", type=int, help="listen port (default: the PORT setting)")
    moderator_cmd = commands.add_parser("create-moderator", help="create or reset a moderator (password from stdin)")
    moderator_cmd.add_argument("name")
    moderator_cmd.add_argument("--password-file", help="read the password from this file instead of stdin")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        serve(args.host, args.port)
    elif args.command == "create-moderator":
        create_moderator(args.name, args.password_file)


if __name__ == "__main__":
    main()
