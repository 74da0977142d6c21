"""The comment record and the thread snapshot, shared by the service and every backend."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from .protocol import Event

VISIBLE, REMOVED, PENDING = "visible", "removed", "pending"


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Comment:
    id: str
    slug: str
    parent: str | None
    name: str
    about: str | None
    body: str          # as typed (after cleaning)
    html: str          # the safe rendering of body
    created_at: str    # ISO-8601 UTC
    status: str = VISIBLE
    reader_id: str | None = None
    seq: int | None = None  # the seq of the event that published it

    def public(self) -> dict[str, Any]:
        """The contract's comment object, as readers see it: a removed comment keeps its
        place but not its text."""
        hidden = self.status == REMOVED
        return {
            "id": self.id,
            "parent": self.parent,
            "author": {"name": "" if hidden else self.name, "about": None if hidden else self.about},
            "body": "" if hidden else self.body,
            "html": "" if hidden else self.html,
            "created_at": self.created_at,
            "status": self.status,
        }

    def with_seq(self, seq: int) -> Comment:
        return replace(self, seq=seq)


def comment_event(comment: Comment) -> Event:
    assert comment.seq is not None
    return Event("comment", comment.seq, {"comment": comment.public()})


@dataclass(frozen=True)
class Head:
    """Where a thread's log stands: its latest seq and the epoch that seq belongs to."""
    seq: int
    epoch: str


@dataclass(frozen=True)
class Snapshot:
    seq: int
    epoch: str
    comments: list[Comment]  # in seq order
