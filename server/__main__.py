"""`python -m server serve`: run the server with the WebSocket options the product relies on."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TypeVar

import redis
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from . import settings as settings_module
from .backends import create_backend, create_store
from .backends.migrations import SchemaTooNew
from .errors import BackchannelError
from .http_limits import LimitedHttpToolsProtocol
from .moderation import Moderation, moderator_display_name
from .tokens import SCOPES, Tokens
from .wire import LiveWebSocketProtocol
from .workers import run_workers

T = TypeVar("T")
log = logging.getLogger("backchannel")


def warn_about_redis_durability(url: str) -> None:
    """One warning per setting with which Redis would lose comments (README, "Several
    instances"). A Redis that refuses CONFIG (a managed one) or is not up yet: nothing said.
    On a cluster, the first startup node speaks for all (they are configured alike)."""
    from .backends.redis import cluster_nodes, is_cluster_url

    if is_cluster_url(url):
        node = cluster_nodes(url)[0]
        client = redis.Redis(host=node.host, port=int(node.port), socket_timeout=2, socket_connect_timeout=2)
    else:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        config = {**client.config_get("appendonly"), **client.config_get("maxmemory-policy")}
    except redis.RedisError:
        return
    finally:
        client.close()
    if config.get("appendonly", "yes") == "no":
        log.warning(
            "Redis has no AOF (appendonly no): a Redis restart loses every thread, and readers "
            "get reset; set appendonly yes"
        )
    if (policy := config.get("maxmemory-policy", "noeviction")) != "noeviction":
        log.warning(
            "Redis evicts keys when its memory is full (maxmemory-policy %s): an evicted key is "
            "lost comments or sessions; set maxmemory-policy noeviction",
            policy,
        )


def worker_count(requested: int | None, settings: settings_module.Settings) -> int:
    """How many worker processes serve: as asked, else one per core when Redis joins them (each
    worker is an instance of its own, as on separate hosts), else one — the in-process bus
    cannot reach another process, so more need REDIS_URL."""
    if requested is None:
        return (os.cpu_count() or 1) if settings.redis_url else 1
    if requested < 1:
        raise settings_module.SettingsError("--workers must be 1 or more")
    if requested > 1 and not settings.redis_url:
        raise settings_module.SettingsError(
            "--workers over 1 needs REDIS_URL: workers are separate instances, and only Redis joins them"
        )
    return requested


def serve(host: str | None, port: int | None, workers: int | None = None) -> None:
    settings = settings_module.load()
    processes = worker_count(workers, settings)
    if settings.redis_url and not settings.database_url:  # Redis is the store: it must keep what it took
        warn_about_redis_durability(settings.redis_url)
    migrate(settings, quiet=True)  # before uvicorn, so that a refusal is one line, not a traceback
    host, port = host or settings.host, port or settings.port
    config = uvicorn.Config(
        "server.app:create_app",
        factory=True,
        host=host,
        port=port,
        # uvicorn's websockets sans-I/O protocol (the fastest of its implementations here),
        # extended so the fan-out writes each event's frame, built once, to every socket.
        # No permessage-deflate: every reader's copy would be compressed apart, each socket
        # would keep zlib state (tens of KiB), and comment frames are small.
        ws=LiveWebSocketProtocol,
        ws_per_message_deflate=False,
        # Frames over 64 KiB close with 1009, also when a compressed frame would inflate past it.
        ws_max_size=settings_module.MAX_FRAME_BYTES,
        # Pings find dead connections (a peer gone without a FIN) and drop them.
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_interval,
        # The client address comes from X-Forwarded-For only when the peer is a trusted proxy.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
        # httptools, with caps on the request head and a deadline for each request (http_limits).
        loop="uvloop",
        http=LimitedHttpToolsProtocol,
        timeout_graceful_shutdown=5,
        log_level="info",
        workers=processes,
    )
    if processes > 1:
        run_workers(config)
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # as uvicorn.run does: a start that failed is an exit status


def create_moderator(name: str, password_file: str | None, display_name: str | None = None) -> None:
    """Create or reset a moderator in the configured backend. The password never comes from
    the command line (it would sit in shell history and the process list). Only the display
    name, if given, is reserved: the login name stays private."""
    if password_file:
        password = Path(password_file).read_text(encoding="utf-8").rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {name}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")

    try:
        display = moderator_display_name(display_name) if display_name is not None else None
        created = asyncio.run(
            _with_moderation(lambda moderation: moderation.create_moderator(name, password, display_name=display))
        )
    except (ValueError, BackchannelError) as exc:
        sys.exit(f"create-moderator: {exc}")
    print(f"moderator {created!r} is ready (any sessions they had are ended); log in at /login")
    if display is None:
        print(
            "no name is reserved: readers may post under any name; the staff badge marks this moderator's "
            "comments (--display-name NAME reserves a public name for them)"
        )
    else:
        print(
            f"reserved display name {display!r} (and names that look like it) for this moderator; "
            "the login name is not reserved"
        )


def end_sessions(name: str) -> None:
    """Log a moderator out everywhere: their sessions are deleted and every instance closes
    their open sockets (a lost laptop, a moderator leaving)."""
    try:
        ended = asyncio.run(_with_moderation(lambda moderation: moderation.end_sessions(name)))
    except (ValueError, BackchannelError) as exc:
        sys.exit(f"end-sessions: {exc}")
    print(f"ended {ended} session(s) of {name!r}")


async def _with_moderation(action: Callable[[Moderation], Awaitable[T]]) -> T:
    """Run one moderation action against the configured backend, as the server would."""
    settings = settings_module.load()
    backend = create_backend(settings)
    await backend.start()
    try:
        return await action(Moderation(backend, settings))
    finally:
        await backend.close()


def create_token(name: str, scopes: list[str], webhook: str | None) -> None:
    """Print a new API token once (the last line of stdout, for scripts); only its hash is kept."""
    try:
        token, record = asyncio.run(_with_tokens(lambda tokens: tokens.create(name, scopes, webhook)))
    except (ValueError, BackchannelError) as exc:
        sys.exit(f"create-token: {exc}")
    print(
        f"token {record.name!r} with scope(s) {', '.join(record.scopes) or '(none)'}; "
        "it is shown only now: keep it in your secrets store"
    )
    if record.webhook_secret:
        print(f"webhook {record.webhook_url}, signed with this secret (shown only now):")
        print(record.webhook_secret)
    print(token)


def revoke_token(name: str) -> None:
    if not asyncio.run(_with_tokens(lambda tokens: tokens.revoke(name))):
        sys.exit(f"revoke-token: no token named {name!r}")
    print(f"token {name!r} is revoked")


def list_tokens() -> None:
    for token in asyncio.run(_with_tokens(lambda tokens: tokens.all())):
        print(f"{token.name}\t{','.join(token.scopes) or '-'}\t{token.created_at}\t{token.webhook_url or '-'}")


async def _with_tokens(action: Callable[[Tokens], Awaitable[T]]) -> T:
    settings = settings_module.load()
    backend = create_backend(settings)
    await backend.start()
    try:
        return await action(Tokens(backend))
    finally:
        await backend.close()


def migrate(settings: settings_module.Settings, quiet: bool = False) -> None:
    """Bring the store's schema up to date (the server also does this as it starts)."""

    async def run() -> None:
        store = create_store(settings)
        await store.start()  # runs the migrations
        await store.close()

    try:
        asyncio.run(run())
    except SchemaTooNew as exc:
        sys.exit(f"backchannel: {exc}")
    if not quiet:
        print("the schema is up to date")


def export_data(path: str | None) -> None:
    """Every lasting record of the configured store, as JSON lines, to path or stdout."""
    from .transfer.export import export

    async def run(out: IO[bytes]) -> Counter[str]:
        store = create_store(settings_module.load())
        await store.start()
        try:
            return await export(store, out)
        finally:
            await store.close()

    if path is None or path == "-":
        counts = asyncio.run(run(sys.stdout.buffer))
    else:
        with open(path, "wb") as out:
            counts = asyncio.run(run(out))
    print(f"exported {_counted(counts)}", file=sys.stderr)


def import_data(path: str, source: str) -> None:
    """Load an export (or a Disqus / WXR file) into the configured store; exits non-zero when
    the store does not hold, afterwards, every record of the file."""
    from .content import load_articles
    from .transfer.export import ImportFailed, import_file
    from .transfer.legacy import load_legacy, read_disqus, read_wxr

    settings = settings_module.load()

    async def run(file: IO[bytes]) -> Counter[str]:
        store = create_store(settings)
        await store.start()
        try:
            if source == "backchannel":
                return await import_file(store, file)
            threads, posts = (read_disqus if source == "disqus" else read_wxr)(file)
            articles, _problems = load_articles(settings.content_dir)
            return await load_legacy(store, source, threads, posts, articles)
        finally:
            await store.close()

    try:
        with open(path, "rb") as file:
            counts = asyncio.run(run(file))
    except (ImportFailed, OSError, SyntaxError) as exc:  # SyntaxError: ElementTree's ParseError
        sys.exit(f"import: {exc}")
    print(f"imported {_counted(counts)}", file=sys.stderr)


def _counted(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "nothing"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m server", description="Backchannel live comment server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve HTTP and WebSocket on HOST:PORT")
    serve_cmd.add_argument("--host", help="listen address (default: the HOST setting)")
    serve_cmd.add_argument("--port", type=int, help="listen port (default: the PORT setting)")
    serve_cmd.add_argument(
        "--workers",
        type=int,
        help="worker processes on the one port (default: one per core with REDIS_URL, else 1)",
    )
    moderator_cmd = commands.add_parser("create-moderator", help="create or reset a moderator (password from stdin)")
    moderator_cmd.add_argument("name")
    moderator_cmd.add_argument("--password-file", help="read the password from this file instead of stdin")
    moderator_cmd.add_argument(
        "--display-name",
        help="a public name to reserve for this moderator (default: none; the login name is never reserved)",
    )
    end_cmd = commands.add_parser("end-sessions", help="end a moderator's sessions on every instance")
    end_cmd.add_argument("name")
    commands.add_parser("migrate", help="bring the database schema up to date, then exit")
    export_cmd = commands.add_parser("export", help="write every record of the store as JSON lines")
    export_cmd.add_argument("file", nargs="?", help="where to write (default: stdout)")
    import_cmd = commands.add_parser("import", help="load an export, or a Disqus / WordPress file, into the store")
    import_cmd.add_argument("file")
    import_cmd.add_argument(
        "--from",
        dest="source",
        choices=("backchannel", "disqus", "wxr"),
        default="backchannel",
        help="the file's format (default: a python -m server export)",
    )
    token_cmd = commands.add_parser("create-token", help="create an API token (printed once, as the last line)")
    token_cmd.add_argument("name")
    token_cmd.add_argument(
        "--scope", action="append", default=[], choices=sorted(SCOPES), help="what the token may do (repeatable)"
    )
    token_cmd.add_argument("--webhook", metavar="URL", help="POST signed events (comments, moderation) to this URL")
    revoke_cmd = commands.add_parser("revoke-token", help="revoke an API token at once, on every instance")
    revoke_cmd.add_argument("name")
    commands.add_parser("list-tokens", help="list the API tokens: name, scopes, created, webhook")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        try:
            serve(args.host, args.port, args.workers)
        except settings_module.SettingsError as exc:
            sys.exit(f"python -m server serve: {exc}")
    elif args.command == "migrate":
        migrate(settings_module.load())
    elif args.command == "create-moderator":
        create_moderator(args.name, args.password_file, args.display_name)
    elif args.command == "end-sessions":
        end_sessions(args.name)
    elif args.command == "export":
        export_data(args.file)
    elif args.command == "import":
        import_data(args.file, args.source)
    elif args.command == "create-token":
        create_token(args.name, args.scope, args.webhook)
    elif args.command == "revoke-token":
        revoke_token(args.name)
    elif args.command == "list-tokens":
        list_tokens()


if __name__ == "__main__":
    main()
