"""The comment record, its views, the thread snapshot, and the thread events built from them.
Shared by the service and every backend.

A thread is open, closed (read-only: nothing new is written, everything stays readable) or
hidden (taken off the page: readers see none of it; moderators still do, and still act on it).
Every change of state is a sequenced event of its thread, like a comment: `opened`, `closed`,
`hidden`.

A comment has three views: the record (everything, as stored), the moderator view (all but
the author's IP), and the public view readers get, in which a removed comment keeps its place
but not its text. Events are stored in the log in the moderator view; each instance derives
the public frame once per event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import EditWindowClosed, Forbidden, NotFound
from .i18n import N_
from .protocol import Event

VISIBLE, REMOVED, PENDING, DELETED = "visible", "removed", "pending", "deleted"
# A comment in one of these keeps its place in the thread (its replies stay) but not its text.
WITHOUT_TEXT = (REMOVED, DELETED)
OPEN, CLOSED, HIDDEN = "open", "closed", "hidden"
THREAD_STATES = (OPEN, CLOSED, HIDDEN)
# The event each state is entered with; a reader's page changes on it.
STATE_EVENTS = {OPEN: "opened", CLOSED: "closed", HIDDEN: "hidden"}
STATE_OF_EVENT = {kind: state for state, kind in STATE_EVENTS.items()}


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Comment:
    id: str
    slug: str
    parent: str | None
    name: str
    about: str | None
    body: str  # as typed (after cleaning)
    html: str  # the safe rendering of body
    created_at: str  # ISO-8601 UTC
    status: str = VISIBLE
    reader_id: str | None = None
    seq: int | None = None  # the seq of the event that published it; None while pending
    removed_by: str | None = None  # the moderator, while removed
    removed_at: str | None = None
    ip: str | None = None  # the author's address, for IP bans; never shown
    staff: bool = False  # posted from a moderator's session (the badge readers cannot fake)
    edited_at: str | None = None  # when its author last edited it (ISO-8601 UTC)
    votes: int = 0  # readers recommending it, kept in step with the votes themselves

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def moderator_view(self) -> dict[str, Any]:
        return moderator_view(self.record())

    def public(self) -> dict[str, Any]:
        return public_view(self.record())

    def with_seq(self, seq: int) -> Comment:
        return replace(self, seq=seq)


def moderator_view(record: dict[str, Any]) -> dict[str, Any]:
    """Everything a moderator sees of a comment: the text even when removed, who wrote it
    (reader_id, which the ban routes take) and who removed it."""
    return {
        "id": record["id"],
        "parent": record["parent"],
        "author": _author(record["name"], record["about"], record.get("staff", False)),
        "body": record["body"],
        "html": record["html"],
        "created_at": record["created_at"],
        "status": record["status"],
        "reader_id": record["reader_id"],
        "removed_by": record.get("removed_by"),
        "removed_at": record.get("removed_at"),
        "edited_at": record.get("edited_at"),
        "votes": record.get("votes", 0),
    }


def public_view(view: dict[str, Any]) -> dict[str, Any]:
    """The contract's comment object, from a record or a moderator view."""
    author = view.get("author") or _author(view["name"], view["about"], view.get("staff", False))
    hidden = view["status"] in WITHOUT_TEXT
    return {
        "id": view["id"],
        "parent": view["parent"],
        "author": {"name": "", "about": None}
        if hidden
        else _author(author["name"], author["about"], author.get("staff", False)),
        "body": "" if hidden else view["body"],
        "html": "" if hidden else view["html"],
        "created_at": view["created_at"],
        "status": view["status"],
        "edited_at": view.get("edited_at"),
        "votes": view.get("votes", 0),
    }


def _author(name: str, about: str | None, staff: bool) -> dict[str, Any]:
    """ "staff": true only for a moderator's comment, so a reader's author object is as before."""
    return {"name": name, "about": about, "staff": True} if staff else {"name": name, "about": about}


# --- events: stored in the moderator view; public_event() derives what readers get -----------


def comment_event(comment: Comment, kind: str = "comment") -> Event:
    """`comment` when published (or approved), `restored` when a moderator brings it back."""
    assert comment.seq is not None
    return Event(kind, comment.seq, {"comment": comment.moderator_view()})


def removed_event(seq: int, comment: Comment) -> Event:
    return Event("removed", seq, {"id": comment.id, "removed_by": comment.removed_by, "removed_at": comment.removed_at})


def status_change(before: Comment, status: str, moderator: str | None, at: str) -> tuple[Comment | None, str | None]:
    """(the comment after the change, the kind of event readers must get, if any).
    None, None when nothing changes."""
    if status == before.status:
        return None, None
    if status == REMOVED:
        after = replace(before, status=REMOVED, removed_by=moderator, removed_at=at)
        return after, ("removed" if before.status == VISIBLE else None)  # a rejected pending one: nobody saw it
    if status == VISIBLE:
        after = replace(before, status=VISIBLE, removed_by=None, removed_at=None)
        return after, ("restored" if before.seq is not None else "comment")  # never published: approval
    raise ValueError(f"cannot move a comment to {status!r}")


def status_event(kind: str, seq: int, comment: Comment) -> Event:
    if kind == "removed":
        return removed_event(seq, comment)
    return Event(kind, seq, {"comment": comment.moderator_view()})


def edit_change(before: Comment, author: str, body: str, html: str, at: str, window: float) -> Comment:
    """The comment after its author's edit: the text replaced, edited_at set. Raises when the
    edit is not theirs to make (see may_change)."""
    may_change(before, author, at, window)
    return replace(before, body=body, html=html, edited_at=at)


def delete_change(before: Comment, author: str, at: str, window: float) -> Comment:
    """The comment after its author deleted it: it keeps its place (and its replies)."""
    may_change(before, author, at, window)
    return replace(before, status=DELETED, edited_at=at)


def may_change(comment: Comment, author: str, at: str, window: float) -> None:
    """A reader may edit or delete their own published comment for `window` seconds after
    posting it (0: never). Judged on the stored record, in the store's write."""
    if comment.reader_id is None or comment.reader_id != author:
        raise Forbidden(N_("Only its author can change this comment."))
    if comment.status != VISIBLE:
        raise NotFound(N_("No such comment."))
    age = (_parse_iso(at) - _parse_iso(comment.created_at)).total_seconds()
    if window <= 0 or age > window:
        raise EditWindowClosed(
            N_("Too late to change this comment: a comment can be changed for {minutes} min after it is posted."),
            minutes=max(1, round(window / 60)),
        )


def editable_until(comment: Comment, window: float) -> str | None:
    """Until when its author may still change the comment (ISO-8601 UTC), or None."""
    if window <= 0 or comment.status != VISIBLE:
        return None
    until = _parse_iso(comment.created_at) + timedelta(seconds=window)
    if until <= datetime.now(UTC):
        return None
    return until.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def change_event(kind: str, seq: int, comment: Comment) -> Event:
    """`edited` (with the comment as it is now) or `deleted` (its id)."""
    if kind == "deleted":
        return Event("deleted", seq, {"id": comment.id})
    return Event("edited", seq, {"comment": comment.moderator_view()})


def public_event(event: Event) -> Event:
    """What a reader gets of an event: no reader ids, no moderator names, no removed text."""
    if "comment" in event.data:
        return Event(event.type, event.seq, {**event.data, "comment": public_view(event.data["comment"])})
    if event.type == "removed":
        return Event(event.type, event.seq, {"id": event.data["id"]})
    if event.type in STATE_OF_EVENT:
        return Event(event.type, event.seq, {"at": event.data.get("at")})
    return event


# --- the thread's state ------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadState:
    """Open, closed or hidden, and who (a moderator, `api:TOKEN`, `auto-close`) set it when.
    A thread never changed is open, by nobody."""

    name: str = OPEN
    by: str | None = None
    at: str | None = None  # ISO-8601 UTC

    @property
    def open(self) -> bool:
        return self.name == OPEN


def state_change(before: ThreadState, state: str, by: str, at: str, expect: ThreadState | None) -> ThreadState | None:
    """The thread's state after asking for `state`, or None when nothing changes: it is in that
    state already, or (with `expect`) it is no longer in the state the caller decided on."""
    if state not in THREAD_STATES:
        raise ValueError(f"a thread cannot be {state!r}")
    if (expect is not None and expect != before) or before.name == state:
        return None
    return ThreadState(state, by, at)


def state_event(seq: int, state: ThreadState) -> Event:
    return Event(STATE_EVENTS[state.name], seq, {"by": state.by, "at": state.at})


@dataclass(frozen=True)
class Head:
    """Where a thread's log stands: its latest seq and the epoch that seq belongs to."""

    seq: int
    epoch: str
    state: ThreadState = ThreadState()


@dataclass(frozen=True)
class Snapshot:
    seq: int
    epoch: str
    comments: list[Comment]  # published ones in seq order, then pending ones
    state: ThreadState = ThreadState()  # as of seq
