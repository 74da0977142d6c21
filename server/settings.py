"""Every setting, read once from the environment (and a .env file), 12-factor style."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from starlette.config import Config
from starlette.datastructures import CommaSeparatedStrings, Secret

from .i18n import LANGUAGES

log = logging.getLogger("backchannel")

# Limits documented in README and docs/protocol.md; the page's maxlength attributes use them too.
MAX_BODY_CHARS = 5000  # counted in user-perceived characters (grapheme clusters)
MAX_NAME_CHARS = 80
MAX_ABOUT_CHARS = 120
MAX_REF_CHARS = 128  # a client's idempotency key, in code points
MAX_FRAME_BYTES = 64 * 1024  # uvicorn's --ws-max-size: also caps what a compressed frame inflates to


class SettingsError(ValueError):
    """A setting is missing or wrong: said in one line, and the server does not start."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    # postgresql://…: PostgreSQL holds the comments, and REDIS_URL (if set) is only the bus.
    database_url: str | None = None
    # Connections each instance may hold: to PostgreSQL (asyncpg's pool), and to Redis for
    # commands (the bus's subscription has one more of its own). A request that finds every
    # connection busy waits for one, up to the store's timeout, then is answered 503.
    database_pool_size: int = 10
    redis_pool_size: int = 50
    # PostgreSQL queries slower than this are logged (warning, with the statement); 0: none.
    slow_query_ms: float = 100.0
    # Fault injection, for the fault tests only (FAULT_KILL_AFTER_COMMITS): the instance
    # SIGKILLs itself right after the store committed its Nth post, before publishing it, as
    # an instance dying at the worst moment would. 0, the default: never.
    fault_kill_after_commits: int = 0
    data_dir: Path = Path("./data")
    content_dir: Path = Path("./content")
    # Watch CONTENT_DIR and publish a new or changed file without a restart (server/content_watch.py).
    content_watch: bool = True
    secret_key: Secret = field(default_factory=lambda: Secret(secrets.token_urlsafe(32)))
    allowed_origins: tuple[str, ...] = ()
    # The site's own origins (PUBLIC_URL). Unset: the loopback origins of the port served on.
    public_url: tuple[str, ...] = ()
    # Events kept per thread for `since` catch-up; older history answers `reset`.
    history_size: int = 1000
    # limits-library rate strings, per reader and per client IP.
    post_rate_per_reader: str = "5/10 seconds;30/hour"
    post_rate_per_ip: str = "30/minute"
    # Votes: per reader and per client network, refused past these (as posts are).
    vote_rate_per_reader: str = "10/10 seconds;300/hour"
    vote_rate_per_ip: str = "120/minute"
    # An address (network) casting more votes than this is shown to moderators, once an hour,
    # in the audit log (action `many_votes`): one person voting from many reader cookies.
    vote_flag_per_ip: str = "200/hour"
    # Seconds in which a reader may edit or delete their own comment; 0: never.
    edit_window: float = 300.0
    # Bytes that may wait in this process for one reader (behind its socket's kernel buffer, or
    # held while it catches up) before it counts as too slow and is closed (4000). A whole
    # HISTORY_SIZE replay of ordinary comments fits.
    send_buffer_bytes: int = 1024 * 1024
    # Live connections one client IP may hold on one instance: room for a carrier's NAT or a
    # newsroom's office, still far from one host opening tens of thousands of sockets.
    max_connections_per_ip: int = 2000
    # Peers whose X-Forwarded-For / -Proto are believed (uvicorn's forwarded_allow_ips); from
    # anyone else the headers are ignored, so a client cannot pick its own IP.
    trusted_proxies: str = "127.0.0.1"
    # Client addresses that may read /metrics.
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")
    # Seconds between WebSocket pings; a connection that has not answered within as long is dropped.
    ws_ping_interval: float = 20.0
    # argon2-cffi's parameter set for moderators' passwords (argon2.profiles); tests use CHEAPEST.
    password_hash_profile: str = "RFC_9106_LOW_MEMORY"
    # Webhook deliveries (events and retries) waiting per instance; past it the oldest is dropped.
    webhook_queue_size: int = 1000
    # Tries per delivery; the waits between them double from WEBHOOK_RETRY_SECONDS (1+2+4+8+16 s).
    webhook_attempts: int = 6
    webhook_retry_seconds: float = 1.0
    # A newsroom's stylesheet, linked after ours on every page (docs/theming.md): an http(s)
    # URL, whose origin the Content-Security-Policy then allows for styles, or a path here.
    theme_css_url: str | None = None
    # Threads close this many days after their article's published_at; None: never by themselves.
    auto_close_days: float | None = None
    # The UI's language (i18n.LANGUAGES): pages, scripts and the error messages readers see.
    language: str = "en"


def _development_key(data_dir: Path) -> str:
    """A key generated once and kept in DATA_DIR, so that readers' cookies survive restarts."""
    path = data_dir / "development-secret-key"
    if path.exists():
        return path.read_text().strip()
    log.warning("SECRET_KEY is not set: generated a development key in %s; set SECRET_KEY in production", path)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(key)
    return key


def _theme_css_url(value: str | None) -> str | None:
    if not value or not value.strip():
        return None
    value = value.strip()
    parts = urlsplit(value)
    local_path = not parts.scheme and not parts.netloc and value.startswith("/")
    if not local_path and (parts.scheme not in ("http", "https") or not parts.hostname):
        raise SettingsError(f"THEME_CSS_URL must be an http(s) URL or a path starting with /, not {value!r}")
    return value


def _language(value: str) -> str:
    code = value.strip().lower() or "en"
    if code not in LANGUAGES:
        raise SettingsError(f"LANGUAGE must be one of {', '.join(LANGUAGES)}, not {value!r}")
    return code


def load(env_file: str | Path | None = ".env") -> Settings:
    config = Config(env_file if env_file and Path(env_file).exists() else None)
    secret = config("SECRET_KEY", cast=Secret, default=None)
    redis_url = config("REDIS_URL", default=None) or None
    if secret is None or not str(secret).strip():  # an empty key would sign with nothing secret
        if redis_url:
            # Several instances must sign cookies with the same key, so a per-process key is wrong.
            raise SettingsError(
                "SECRET_KEY is missing: it is required when REDIS_URL is set (every instance "
                "must sign cookies with the same key)"
            )
        secret = Secret(_development_key(Path(config("DATA_DIR", default="./data"))))
    origins = config("ALLOWED_ORIGINS", cast=CommaSeparatedStrings, default="")
    return Settings(
        host=config("HOST", default="127.0.0.1"),
        port=config("PORT", cast=int, default=8000),
        redis_url=redis_url,
        database_url=config("DATABASE_URL", default=None) or None,
        database_pool_size=config("DATABASE_POOL_SIZE", cast=int, default=10),
        redis_pool_size=config("REDIS_POOL_SIZE", cast=int, default=50),
        slow_query_ms=config("SLOW_QUERY_MS", cast=float, default=100.0),
        fault_kill_after_commits=config("FAULT_KILL_AFTER_COMMITS", cast=int, default=0),
        data_dir=Path(config("DATA_DIR", default="./data")),
        content_dir=Path(config("CONTENT_DIR", default="./content")),
        content_watch=config("CONTENT_WATCH", cast=bool, default=True),
        secret_key=secret,
        allowed_origins=tuple(o.strip().rstrip("/") for o in origins if o.strip()),
        public_url=tuple(o.strip() for o in config("PUBLIC_URL", cast=CommaSeparatedStrings, default="") if o.strip()),
        history_size=config("HISTORY_SIZE", cast=int, default=1000),
        post_rate_per_reader=config("POST_RATE_PER_READER", default="5/10 seconds;30/hour"),
        post_rate_per_ip=config("POST_RATE_PER_IP", default="30/minute"),
        vote_rate_per_reader=config("VOTE_RATE_PER_READER", default="10/10 seconds;300/hour"),
        vote_rate_per_ip=config("VOTE_RATE_PER_IP", default="120/minute"),
        vote_flag_per_ip=config("VOTE_FLAG_PER_IP", default="200/hour"),
        edit_window=config("EDIT_WINDOW", cast=float, default=300.0),
        send_buffer_bytes=config("SEND_BUFFER_BYTES", cast=int, default=1024 * 1024),
        ws_ping_interval=config("WS_PING_INTERVAL", cast=float, default=20.0),
        max_connections_per_ip=config("MAX_CONNECTIONS_PER_IP", cast=int, default=2000),
        trusted_proxies=config("TRUSTED_PROXIES", default="127.0.0.1"),
        metrics_allow=tuple(
            a.strip() for a in config("METRICS_ALLOW", cast=CommaSeparatedStrings, default="127.0.0.1,::1") if a.strip()
        ),
        password_hash_profile=config("PASSWORD_HASH_PROFILE", default="RFC_9106_LOW_MEMORY"),
        webhook_queue_size=config("WEBHOOK_QUEUE_SIZE", cast=int, default=1000),
        webhook_attempts=config("WEBHOOK_ATTEMPTS", cast=int, default=6),
        webhook_retry_seconds=config("WEBHOOK_RETRY_SECONDS", cast=float, default=1.0),
        theme_css_url=_theme_css_url(config("THEME_CSS_URL", default=None)),
        auto_close_days=_auto_close_days(config("AUTO_CLOSE_DAYS", default="")),
        language=_language(config("LANGUAGE", default="en")),
    )


def _auto_close_days(raw: str) -> float | None:
    if not raw.strip():
        return None
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not days > 0 or days == float("inf"):
        raise SettingsError(f"AUTO_CLOSE_DAYS must be a number of days above 0 (or unset), not {raw!r}")
    return days
