"""Moderators, their sessions, bans, reports, the audit log and per-article pre-moderation.

Everything lives in the backend's shared primitives (kv, sets, bounded lists), so every
instance sees the same state at once: a ban or a logout applies everywhere on the next
request. What happens on the desk is published on the control channel to every instance.

Sessions live on the server: the cookie holds only a signed random id, so logout deletes the
session and a copied cookie stops working (Starlette's SessionMiddleware cannot revoke one).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import limits
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeSerializer
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from .backends.base import Backend
from .comments import utc_now_iso
from .control import DeskUpdate, SessionEnded, encode_control
from .errors import Banned, Forbidden, RateLimited, Unauthorized
from .identity import SESSION_COOKIE
from .protocol import DeskAction, DeskFrame
from .text import clean_name, name_skeletons

SESSION_TTL = 12 * 3600
AUDIT_KEEP = 10_000
# argon2id with the library's defaults (t=3, 64 MiB, p=4: about 80 ms a hash here).
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password")


@dataclass(frozen=True)
class ModeratorSession:
    name: str
    session_id: str


class Moderation:
    def __init__(self, backend: Backend, secret_key: str) -> None:
        self.backend = backend
        self._cookie = URLSafeSerializer(secret_key, salt="backchannel.session")
        self._limiter = SlidingWindowCounterRateLimiter(backend.rate_limit_storage)
        self._failed_login_limits = limits.parse_many("5/minute;20/hour")
        self._report_limits = limits.parse_many("10/minute;60/hour")

    # --- accounts and sessions ---

    async def create_moderator(self, name: str, password: str) -> str:
        name = clean_name(name, 40, "moderator name", required=True)
        if len(password) < 8:
            raise ValueError("a moderator's password needs at least 8 characters")
        hashed = await asyncio.to_thread(_hasher.hash, password)
        await self.backend.kv_set(f"moderator:{name.casefold()}", json.dumps({"name": name, "hash": hashed}))
        for skeleton in name_skeletons(name):
            await self.backend.kv_set(f"reserved-name:{skeleton}", name)
        return name

    async def login(self, username: str, password: str, ip: str) -> ModeratorSession:
        """A new session (a new id at every login), or Unauthorized / RateLimited."""
        keys = [("login-name", username.casefold()[:80]), ("login-ip", ip)]
        for item in self._failed_login_limits:
            for kind, key in keys:
                if not await self._limiter.test(item, kind, key):
                    raise RateLimited("Too many failed attempts. Please wait a minute and try again.", 60)
        record = await self.backend.kv_get(f"moderator:{username.strip().casefold()}")
        account = json.loads(record) if record else None
        if not await asyncio.to_thread(_verify, account["hash"] if account else _DUMMY_HASH, password) or not account:
            for item in self._failed_login_limits:  # only failures count
                for kind, key in keys:
                    await self._limiter.hit(item, kind, key)
            raise Unauthorized("Wrong name or password.")
        session_id = secrets.token_urlsafe(32)
        await self.backend.kv_set(f"session:{session_id}", json.dumps({"name": account["name"], "since": time.time()}),
                                  ttl=SESSION_TTL)
        return ModeratorSession(account["name"], session_id)

    def session_cookie(self, session: ModeratorSession, secure: bool) -> str:
        return (f"{SESSION_COOKIE}={self._cookie.dumps(session.session_id)}; Path=/; Max-Age={SESSION_TTL}; "
                "HttpOnly; SameSite=Lax" + ("; Secure" if secure else ""))

    @staticmethod
    def expired_session_cookie() -> str:
        return f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"

    async def identify(self, cookie_value: str) -> ModeratorSession | None:
        """The moderator behind a session cookie, if its session still exists."""
        try:
            session_id = self._cookie.loads(cookie_value)
        except BadSignature:
            return None
        record = await self.backend.kv_get(f"session:{session_id}")
        return ModeratorSession(json.loads(record)["name"], session_id) if record else None

    async def logout(self, session: ModeratorSession) -> None:
        await self.backend.kv_delete(f"session:{session.session_id}")
        # Every instance closes this session's open sockets.
        await self.backend.publish_control(encode_control(SessionEnded(session.session_id)))

    # --- what readers may do ---

    async def check_author(self, reader_id: str, ip: str, name: str, moderator: str | None) -> None:
        """Refuse a banned reader, and a reader using a moderator's name or one that looks like it."""
        for key in (f"ban:reader:{reader_id}", f"ban:ip:{ip}"):
            if (ban := await self.backend.kv_get(key)) is not None:
                until = json.loads(ban)["until"]
                raise Banned("You have been banned from commenting" + (f" until {until}." if until else "."))
        if moderator is None:
            for skeleton in name_skeletons(name):
                if await self.backend.kv_get(f"reserved-name:{skeleton}") is not None:
                    raise Forbidden("That name belongs to a moderator. Please choose another.")

    async def premoderated(self, slug: str) -> bool:
        return await self.backend.kv_get(f"premoderation:{slug}") is not None

    async def report(self, slug: str, comment_id: str, reader_id: str, reason: str | None) -> bool:
        """Record a reader's report once; returns False when this reader had reported it already."""
        for item in self._report_limits:
            if not await self._limiter.hit(item, "report", reader_id):
                raise RateLimited("You are reporting too often. Please wait a little.", 60)
        if not await self.backend.kv_set(f"reported:{comment_id}:{reader_id}", "1", only_if_absent=True):
            return False
        await self.backend.list_push(f"reports:{comment_id}", json.dumps({"reason": reason, "at": utc_now_iso()}),
                                     keep=100)
        await self.backend.set_add("reports-open", f"{slug}/{comment_id}")
        return True

    async def reports(self, comment_id: str) -> list[dict[str, Any]]:
        return [json.loads(r) for r in await self.backend.list_range(f"reports:{comment_id}")]

    async def reports_of(self, comment_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The reports of each comment (newest first), in one read."""
        lists = await self.backend.list_ranges([f"reports:{comment_id}" for comment_id in comment_ids])
        return {comment_id: [json.loads(r) for r in items] for comment_id, items in zip(comment_ids, lists)}

    async def open_reports(self) -> list[tuple[str, str]]:
        return [tuple(key.split("/", 1)) for key in await self.backend.set_members("reports-open")]

    # --- what moderators do ---

    async def dismiss_reports(self, slug: str, comment_id: str) -> None:
        await self.backend.set_remove("reports-open", f"{slug}/{comment_id}")

    async def ban(self, reader_id: str, minutes: int | None, reason: str | None, moderator: str,
                  ip: str | None) -> dict[str, Any]:
        until = None
        if minutes:
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + minutes * 60))
        ban = {"by": moderator, "reason": reason, "until": until, "ip": ip, "at": utc_now_iso()}
        ttl = minutes * 60 if minutes else None
        await self.backend.kv_set(f"ban:reader:{reader_id}", json.dumps(ban), ttl=ttl)
        if ip:
            await self.backend.kv_set(f"ban:ip:{ip}", json.dumps(ban), ttl=ttl)
        return ban

    async def unban(self, reader_id: str) -> None:
        if (ban := await self.backend.kv_get(f"ban:reader:{reader_id}")) is not None and json.loads(ban).get("ip"):
            await self.backend.kv_delete(f"ban:ip:{json.loads(ban)['ip']}")
        await self.backend.kv_delete(f"ban:reader:{reader_id}")

    async def set_premoderation(self, slug: str, enabled: bool) -> None:
        if enabled:
            await self.backend.kv_set(f"premoderation:{slug}", "1")
        else:
            await self.backend.kv_delete(f"premoderation:{slug}")

    async def record(self, moderator: str, action: str, **fields: Any) -> dict[str, Any]:
        """Keep an audit entry and show it on every desk."""
        entry = {"at": utc_now_iso(), "moderator": moderator, "action": action, "comment_id": None,
                 "reader_id": None, "slug": None, "reason": None, "detail": None, **fields}
        await self.backend.list_push("audit", json.dumps(entry), keep=AUDIT_KEEP)
        await self.publish_desk(DeskAction(entry))
        return entry

    async def audit_log(self, count: int | None = None) -> list[dict[str, Any]]:
        return [json.loads(e) for e in await self.backend.list_range("audit", count)]

    async def publish_desk(self, frame: DeskFrame) -> None:
        await self.backend.publish_control(encode_control(DeskUpdate(frame)))


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
