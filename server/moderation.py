"""Moderators, their sessions, bans, reports, the audit log and per-article pre-moderation.

Everything lives in the backend's shared primitives (kv, sets, bounded lists), so every
instance sees the same state at once: a ban or a logout applies everywhere on the next
request. What happens on the desk is published on the control channel to every instance.

Sessions live on the server: the cookie holds only a signed random id, so logout deletes the
session and a copied cookie stops working (Starlette's SessionMiddleware cannot revoke one).
Each moderator's session ids are kept in a set, so that a password reset or `end-sessions`
ends all of them.

Login attempts are counted before the password is checked (the check takes tens of
milliseconds, and parallel guesses must not all pass the limit before any is counted), per
address and per name, the name in the one normalised form accounts are keyed on. An address
a moderator has logged in from before is exempt from the per-name limit, so that guesses from
elsewhere cannot lock the owner out of their own account.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import limits
from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeSerializer
from limits.errors import StorageError

from .backends.base import Backend
from .comments import Comment, utc_now_iso
from .control import DeskUpdate, SessionEnded, encode_control
from .errors import Banned, Empty, Forbidden, InvalidMessage, RateLimited, TooLong, Unauthorized, Unavailable
from .i18n import N_
from .identity import SESSION_COOKIE, client_network
from .protocol import DeskAction, DeskFrame
from .rate_limits import Check, Limits
from .settings import MAX_NAME_CHARS, Settings
from .text import clean_name, name_skeletons

log = logging.getLogger("backchannel.moderation")

SESSION_TTL = 12 * 3600
AUDIT_KEEP = 10_000
REPORTS_KEPT = 100  # per comment, with their reasons; a card's count stops there
MODERATOR_NAME_CHARS = 40
# Longer than a year is "for good" (leave the duration empty); a bigger number is a mistake.
MAX_BAN_MINUTES = 366 * 24 * 60
# An address a moderator logged in from stays exempt from the per-name login limit this long.
KNOWN_ADDRESS_TTL = 90 * 24 * 3600
# How often each instance looks for sessions that ended without telling it (see watch_sessions).
SESSION_CHECK_INTERVAL = 5.0
# A flood of reports on one comment reaches the desk as one frame per this many seconds.
REPORT_FRAME_INTERVAL = 2.0
# Every attempt counts, from an address (any name) and, from addresses the name has not logged
# in from, against the name: short windows, so a name attacked from many addresses is locked
# for minutes at a time, never for hours.
LOGIN_LIMITS_PER_ADDRESS = "5/minute;20/hour"
LOGIN_LIMITS_PER_NAME = "10/minute;30/15 minutes"
REPORT_LIMITS_PER_READER = "10/minute;60/hour"
REPORT_LIMITS_PER_ADDRESS = "20/minute;200/hour"


def moderator_name(name: str) -> str:
    """A moderator's name as shown: cleaned like every name (Empty or TooLong if it cannot be one)."""
    cleaned = clean_name(name, MODERATOR_NAME_CHARS, "moderator name", required=True)
    if cleaned is None:  # (required=True raises Empty instead)
        raise Empty("Please give a moderator name.")
    return cleaned


def moderator_display_name(name: str) -> str:
    """A moderator's public display name: cleaned like the name on a comment, which it is."""
    cleaned = clean_name(name, MAX_NAME_CHARS, "display name", required=True)
    if cleaned is None:  # (required=True raises Empty instead)
        raise Empty("Please give a display name.")
    return cleaned


def moderator_key(name: str) -> str:
    """The one form of a moderator's name that the account, its sessions and its login limit are
    keyed on: " alice", "ALICE" and "alice\u3000" are all "alice"."""
    return moderator_name(name).casefold()


def password_hasher(profile: str) -> PasswordHasher:
    """argon2id with one of argon2-cffi's named parameter sets (RFC_9106_LOW_MEMORY, its default;
    CHEAPEST for tests). A hash keeps its parameters, so it verifies whatever the setting now is."""
    parameters = getattr(profiles, profile, None) if profile.isupper() else None
    if parameters is None:
        choices = ", ".join(p for p in dir(profiles) if p.isupper())
        raise ValueError(f"PASSWORD_HASH_PROFILE must be one of {choices}, not {profile!r}")
    return PasswordHasher.from_parameters(parameters)


@dataclass(frozen=True)
class ModeratorSession:
    name: str
    session_id: str


@dataclass(frozen=True)
class Bans:
    """Who is banned now: reader ids and addresses, read in one go for a page of comments."""

    readers: frozenset[str] = frozenset()
    addresses: frozenset[str] = frozenset()  # client networks

    def covers(self, comment: Comment) -> bool:
        return comment.reader_id in self.readers or (
            comment.ip is not None and client_network(comment.ip) in self.addresses
        )


class Moderation:
    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend = backend
        secret_key = str(settings.secret_key)
        self._cookie = URLSafeSerializer(secret_key, salt="backchannel.session")
        self._address_key = hashlib.sha256(b"backchannel.address:" + secret_key.encode()).digest()
        self._hasher = password_hasher(settings.password_hash_profile)
        self._dummy_hash: str | None = None
        # Exact counts (a moving window): the estimate of a sliding-window counter rounds down
        # and let one attempt more through at a window's edge.
        self._limits = Limits(backend.rate_limit_storage)
        self._limit_items = {
            "login-ip": limits.parse_many(LOGIN_LIMITS_PER_ADDRESS),
            "login-name": limits.parse_many(LOGIN_LIMITS_PER_NAME),
            "report": limits.parse_many(REPORT_LIMITS_PER_READER),
            "report-ip": limits.parse_many(REPORT_LIMITS_PER_ADDRESS),
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_recorded: Callable[[dict[str, Any]], None] | None = None  # the webhooks; must not block

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- accounts and sessions ---

    async def create_moderator(self, name: str, password: str, display_name: str | None = None) -> str:
        """Create a moderator, or reset one's password: that ends their sessions everywhere and
        lifts the lock on their name. Only a display name is reserved against readers' use,
        never the login name (a refusal would tell readers which names log in); without one,
        the staff badge alone marks the moderator's comments."""
        name = moderator_name(name)
        display = moderator_display_name(display_name) if display_name is not None else None
        if len(password) < 8:
            raise ValueError("a moderator's password needs at least 8 characters")
        key = moderator_key(name)
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        record = await self.backend.kv_get(f"moderator:{key}")
        previous = json.loads(record).get("display_name") if record else None
        # The keys this moderator reserved before go: those of their old display name, and those
        # older versions reserved from the login name (their value is the moderator's name).
        for skeleton in name_skeletons(name) | (name_skeletons(previous) if previous else set()):
            owner = await self.backend.kv_get(f"reserved-name:{skeleton}")
            if owner is not None and owner.casefold() == key:
                await self.backend.kv_delete(f"reserved-name:{skeleton}")
        await self.backend.kv_set(
            f"moderator:{key}", json.dumps({"name": name, "hash": hashed, "display_name": display})
        )
        for skeleton in name_skeletons(display) if display else set():
            await self.backend.kv_set(f"reserved-name:{skeleton}", key)  # whose, for the next reset
        await self.end_sessions(name)
        await self._forget_count("login-name", key)
        return name

    async def login(self, username: str, password: str, ip: str) -> ModeratorSession:
        """A new session (a new id at every login), or Unauthorized / RateLimited."""
        try:
            key = moderator_key(username)
        except (Empty, TooLong):
            key = None  # no account can have such a name
        network = client_network(ip)
        counted = [("login-ip", network)]
        if key is not None and await self.backend.kv_get(f"login-known:{key}:{network}") is None:
            counted.append(("login-name", key))
        # Reserved before the password is checked: parallel guesses are counted as they arrive.
        await self._count(counted, N_("Too many attempts. Please wait a minute and try again."))
        record = await self.backend.kv_get(f"moderator:{key}") if key is not None else None
        account = json.loads(record) if record else None
        hashed = account["hash"] if account else await self._dummy()
        # Verified even for an unknown name, so a wrong name takes as long as a wrong password.
        if not await asyncio.to_thread(self._verify, hashed, password) or account is None or key is None:
            if account is not None:
                await self.record(account["name"], "login_failed", detail=f"from {ip}")
            raise Unauthorized("Wrong name or password.")
        if self._hasher.check_needs_rehash(hashed):  # hashed with other parameters than today's
            account["hash"] = await asyncio.to_thread(self._hasher.hash, password)
            await self.backend.kv_set(f"moderator:{key}", json.dumps(account))
        await self.backend.kv_set(f"login-known:{key}:{network}", "1", ttl=KNOWN_ADDRESS_TTL)
        # Someone here knows a moderator's password: the address's count starts afresh (a newsroom
        # behind one address logs in together). The per-name counts stay, so a moderator cannot
        # use their own login to reset the count of guesses at another's name.
        await self._forget_count("login-ip", network)
        session_id = secrets.token_urlsafe(32)
        await self.backend.kv_set(
            f"session:{session_id}", json.dumps({"name": account["name"], "since": time.time()}), ttl=SESSION_TTL
        )
        await self._forget_expired_sessions(key)
        await self.backend.set_add(f"sessions-of:{key}", session_id)
        await self.record(account["name"], "login", detail=f"from {ip}")
        return ModeratorSession(account["name"], session_id)

    async def _count(self, counted: list[tuple[str, str]], refusal: str) -> None:
        """One more attempt for each (kind, identifier), or RateLimited. hit() checks and counts in
        one atomic step, so attempts made at the same moment cannot all pass."""
        checks: list[Check] = [(item, kind, ident) for kind, ident in counted for item in self._limit_items[kind]]
        try:
            retry_after = await self._limits.hit(checks)
        except StorageError as exc:  # the shared counters (Redis) are out of reach
            raise Unavailable("Moderation is unavailable for a moment; please retry.") from exc
        if retry_after is not None:
            raise RateLimited(refusal, retry_after)

    async def _forget_count(self, kind: str, identifier: str) -> None:
        try:
            for item in self._limit_items[kind]:
                await self._limits.clear(item, kind, identifier)
        except StorageError as exc:
            raise Unavailable("Moderation is unavailable for a moment; please retry.") from exc

    async def _dummy(self) -> str:
        """A hash to verify against when the name is unknown; made at first use (it costs as much
        as a login: hashing it at import slowed every start and every command)."""
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self._hasher.hash, secrets.token_urlsafe(16))
        return self._dummy_hash

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    def session_cookie(self, session: ModeratorSession, secure: bool) -> str:
        return (
            f"{SESSION_COOKIE}={self._cookie.dumps(session.session_id)}; Path=/; Max-Age={SESSION_TTL}; "
            "HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
        )

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
        await self._end_session(moderator_key(session.name), session.session_id)
        await self.record(session.name, "logout")

    async def end_sessions(self, name: str) -> int:
        """End every session of this moderator, on every instance; returns how many were open."""
        key = moderator_key(name)
        ended = 0
        for session_id in await self.backend.set_members(f"sessions-of:{key}"):
            ended += await self.backend.kv_get(f"session:{session_id}") is not None
            await self._end_session(key, session_id)
        return ended

    async def _end_session(self, key: str, session_id: str) -> None:
        await self.backend.kv_delete(f"session:{session_id}")
        await self.backend.set_remove(f"sessions-of:{key}", session_id)
        # Every instance closes this session's open sockets.
        await self.backend.publish_control(encode_control(SessionEnded(session_id)))

    async def watch_sessions(self, open_sessions: Callable[[], Iterable[str]]) -> None:
        """Close this instance's sockets of sessions that ended without a message reaching it:
        expired after SESSION_TTL, or ended by a command on the embedded backend (the command is
        another process, and that backend's control messages stay inside one)."""
        while True:
            await asyncio.sleep(SESSION_CHECK_INTERVAL)
            for session_id in list(open_sessions()):
                try:
                    ended = await self.backend.kv_get(f"session:{session_id}") is None
                except Exception:  # the store is out of reach: that ends no session
                    log.warning("could not check session liveness; retrying in %.0f s", SESSION_CHECK_INTERVAL)
                    break
                if ended:
                    self.backend.on_control(encode_control(SessionEnded(session_id)))

    async def _forget_expired_sessions(self, key: str) -> None:
        """Sessions end by expiring too; their ids leave the moderator's set at the next login."""
        for session_id in await self.backend.set_members(f"sessions-of:{key}"):
            if await self.backend.kv_get(f"session:{session_id}") is None:
                await self.backend.set_remove(f"sessions-of:{key}", session_id)

    # --- what readers may do ---

    def address_reader_id(self, ip: str) -> str:
        """The reader id of a request without a reader cookie (a script): derived from its
        address, so that dropping the cookie resets no per-reader rule. Not reversible to the
        address, which moderators never see."""
        return "addr-" + hmac.new(self._address_key, client_network(ip).encode(), hashlib.sha256).hexdigest()[:22]

    async def check_not_banned(self, reader_id: str, ip: str) -> None:
        """Refuse a banned reader, and any reader from a banned address."""
        keys = self.author_check_keys(reader_id, ip, None, None)
        values, _ = await self.backend.read_records(keys, [])
        self.check_author_records(values)

    def author_check_keys(self, reader_id: str, ip: str, name: str | None, moderator: str | None) -> list[str]:
        """The records that say whether this author may post (their bans, and, for a reader, the
        reserved names theirs looks like), for the post to read with its own in one go."""
        keys = [f"ban:reader:{reader_id}", f"ban:ip:{client_network(ip)}"]
        if moderator is None and name is not None:
            keys += [f"reserved-name:{skeleton}" for skeleton in name_skeletons(name)]
        return keys

    @staticmethod
    def check_author_records(values: Sequence[str | None]) -> None:
        """Refuse a banned author, and a reader using a moderator's display name or one that
        looks like it — in words that never say whose name it is. `values`: the records named
        by author_check_keys, in its order."""
        for ban in values[:2]:
            if ban is not None:
                until = json.loads(ban)["until"]
                if until:
                    raise Banned("You have been banned from commenting until {until}.", until=until)
                raise Banned("You have been banned from commenting.")
        if any(reserved is not None for reserved in values[2:]):
            raise Forbidden("That name is reserved. Please choose another.")

    @staticmethod
    def premoderation_key(slug: str) -> str:
        return f"premoderation:{slug}"

    async def premoderated(self, slug: str) -> bool:
        return await self.backend.kv_get(self.premoderation_key(slug)) is not None

    async def report(self, slug: str, comment_id: str, reader_id: str, ip: str, reason: str | None) -> bool:
        """Record a reader's report once; returns False when this reader had reported it already."""
        await self.check_not_banned(reader_id, ip)
        await self._count(
            [("report", reader_id), ("report-ip", client_network(ip))],
            N_("You are reporting too often. Please wait a little."),
        )
        if not await self.backend.kv_set(f"reported:{comment_id}:{reader_id}", "1", only_if_absent=True):
            return False
        await self.backend.list_push(
            f"reports:{comment_id}", json.dumps({"reason": reason, "at": utc_now_iso()}), keep=REPORTS_KEPT
        )
        await self.backend.set_add("reports-open", f"{slug}/{comment_id}")
        return True

    async def show_report(self, comment_id: str, frame: Callable[[], Awaitable[DeskFrame]]) -> None:
        """Tell the desks of a report: at once for the first of a quiet spell, and a flood as one
        frame per REPORT_FRAME_INTERVAL carrying the count by then (on every instance together)."""
        if await self.backend.kv_set(f"report-shown:{comment_id}", "1", ttl=REPORT_FRAME_INTERVAL, only_if_absent=True):
            await self.publish_desk(await frame())
        elif await self.backend.kv_set(f"report-due:{comment_id}", "1", ttl=REPORT_FRAME_INTERVAL, only_if_absent=True):
            task = asyncio.get_running_loop().create_task(self._show_report_later(comment_id, frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _show_report_later(self, comment_id: str, frame: Callable[[], Awaitable[DeskFrame]]) -> None:
        await asyncio.sleep(REPORT_FRAME_INTERVAL)
        try:
            await self.backend.kv_set(f"report-shown:{comment_id}", "1", ttl=REPORT_FRAME_INTERVAL)
            await self.publish_desk(await frame())
        except Exception:  # nobody awaits this: a desk reload shows the count anyway
            log.exception("could not show the reports on %s", comment_id)

    async def reports(self, comment_id: str) -> list[dict[str, Any]]:
        return [json.loads(r) for r in await self.backend.list_range(f"reports:{comment_id}")]

    async def reports_of(self, comment_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The reports of each comment (newest first), in one read."""
        lists = await self.backend.list_ranges([f"reports:{comment_id}" for comment_id in comment_ids])
        return {
            comment_id: [json.loads(r) for r in items] for comment_id, items in zip(comment_ids, lists, strict=True)
        }

    async def open_reports(self) -> list[tuple[str, str]]:
        return [
            (slug, comment_id)
            for slug, _, comment_id in (key.partition("/") for key in await self.backend.set_members("reports-open"))
        ]

    # --- what moderators do ---

    async def dismiss_reports(self, slug: str, comment_id: str) -> None:
        await self.backend.set_remove("reports-open", f"{slug}/{comment_id}")

    async def ban(
        self,
        reader_id: str,
        minutes: int | None,
        reason: str | None,
        moderator: str,
        ip: str | None,
        reader_name: str | None = None,
    ) -> dict[str, Any]:
        if minutes is not None and not 0 < minutes <= MAX_BAN_MINUTES:
            raise InvalidMessage("duration must be from 1 to {max} minutes, or empty for good.", max=MAX_BAN_MINUTES)
        ip = client_network(ip) if ip else None
        expires = time.time() + minutes * 60 if minutes else None
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)) if expires else None
        ban = {
            "by": moderator,
            "reason": reason,
            "until": until,
            "ip": ip,
            "at": utc_now_iso(),
            "reader_name": reader_name,
        }
        ttl = minutes * 60 if minutes else None
        await self._forget_bans(reader_id, ip)
        await self.backend.kv_set(f"ban:reader:{reader_id}", json.dumps(ban), ttl=ttl)
        await self.backend.set_add("bans", json.dumps(["reader", reader_id, expires]))
        if ip:
            await self.backend.kv_set(f"ban:ip:{ip}", json.dumps(ban), ttl=ttl)
            await self.backend.set_add("bans", json.dumps(["ip", ip, expires]))
        return ban

    async def unban(self, reader_id: str) -> dict[str, Any] | None:
        """Lift a reader's ban (and the address ban that came with it); returns the ban lifted."""
        record = await self.backend.kv_get(f"ban:reader:{reader_id}")
        ban = json.loads(record) if record is not None else None
        ip = ban.get("ip") if ban else None
        if ip:  # (bans from before networks were keyed under the address itself)
            for key in {f"ban:ip:{ip}", f"ban:ip:{client_network(ip)}"}:
                await self.backend.kv_delete(key)
            ip = client_network(ip)
        await self.backend.kv_delete(f"ban:reader:{reader_id}")
        await self._forget_bans(reader_id, ip)
        return ban

    async def bans(self) -> Bans:
        """Every ban in force, in one read: the "bans" set indexes the ban:* keys with their
        expiry (a set member cannot expire by itself, so expired ones are dropped here)."""
        readers: set[str] = set()
        addresses: set[str] = set()
        now = time.time()
        for member in await self.backend.set_members("bans"):
            kind, value, expires = json.loads(member)
            if expires is not None and expires <= now:
                await self.backend.set_remove("bans", member)
            else:
                (readers if kind == "reader" else addresses).add(value)
        return Bans(frozenset(readers), frozenset(addresses))

    async def _forget_bans(self, reader_id: str, ip: str | None) -> None:
        for member in await self.backend.set_members("bans"):
            kind, value, _expires = json.loads(member)
            if (kind, value) in (("reader", reader_id), ("ip", ip)):
                await self.backend.set_remove("bans", member)

    async def set_premoderation(self, slug: str, enabled: bool) -> None:
        if enabled:
            await self.backend.kv_set(self.premoderation_key(slug), "1")
        else:
            await self.backend.kv_delete(self.premoderation_key(slug))

    async def record(self, moderator: str, action: str, **fields: Any) -> dict[str, Any]:
        """Keep an audit entry and show it on every desk."""
        entry = {
            "at": utc_now_iso(),
            "moderator": moderator,
            "action": action,
            "comment_id": None,
            "reader_id": None,
            "slug": None,
            "reason": None,
            "detail": None,
            **fields,
        }
        await self.backend.list_push("audit", json.dumps(entry), keep=AUDIT_KEEP)
        if self.on_recorded:
            self.on_recorded(entry)
        await self.publish_desk(DeskAction(entry))
        return entry

    async def audit_log(self, count: int | None = None) -> list[dict[str, Any]]:
        return [json.loads(e) for e in await self.backend.list_range("audit", count)]

    async def publish_desk(self, frame: DeskFrame) -> None:
        await self.backend.publish_control(encode_control(DeskUpdate(frame)))
