"""The one interface between the service and storage + fan-out.

Nothing above this interface knows which backend it has. A backend owns three things:
- the system of record: comments and each thread's contiguous seq;
- each thread's event log, kept to a documented length, for `since` catch-up;
- cross-instance delivery: after an event is stored it is published, and every instance
  subscribed to that thread hands it to `on_event`. Delivery may lose or reorder events
  (Redis pub/sub does); the Hub above fills gaps from the log, so backends need not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from limits.aio.storage import Storage

from ..comments import Comment, Head, Snapshot
from ..protocol import Event

class Backend(ABC):
    """The callbacks are set by the Hub: on_event(slug, event, epoch) for each event received,
    on_resync(slug) when events may have been lost (the Hub then re-reads the log), and
    on_presence(slug, readers) when another instance changed a thread's reader count, and
    on_control(message) for each control message (moderation desk, ended sessions)."""

    rate_limit_storage: Storage  # where rate-limit counters live: in-process, or shared by all instances

    def __init__(self) -> None:
        self.on_event: Callable[[str, Event, str | None], None] = lambda slug, event, epoch: None
        self.on_resync: Callable[[str], None] = lambda slug: None
        self.on_presence: Callable[[str, int], None] = lambda slug, readers: None
        self.on_control: Callable[[str], None] = lambda message: None

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ready(self) -> bool:
        """True while the backend can take writes (drives /readyz)."""

    @abstractmethod
    async def ensure_thread(self, slug: str, seeds: Sequence[Comment]) -> None:
        """Create the thread if new and import its seed comments exactly once, ever."""

    @abstractmethod
    async def post(self, comment: Comment, ref_key: str | None) -> tuple[Comment, bool]:
        """Atomically assign the next seq, store the comment, append its event to the log;
        then publish. Returns (the stored comment with its seq, created). A ref_key seen
        before returns the comment stored then and created=False: retries never double-post.
        Raises NotFound when comment.parent is not a comment of the same thread."""

    @abstractmethod
    async def set_status(self, slug: str, comment_id: str, status: str, moderator: str | None,
                         at: str) -> tuple[Comment, Event | None]:
        """Atomically change a comment's status and, when readers must hear of it, append and
        publish the event: visible->removed `removed`, removed->visible `restored`, pending->
        visible `comment` (approval publishes it for the first time). An unchanged status, or
        a pending comment rejected, makes no event. Raises NotFound."""

    @abstractmethod
    async def get_comment(self, slug: str, comment_id: str) -> Comment | None: ...

    @abstractmethod
    async def get_comments(self, refs: Sequence[tuple[str, str]]) -> list[Comment]:
        """The comments named by (slug, comment id), in one read, in the order asked; the
        ones that do not exist are left out (the moderation desk's reported comments)."""

    @abstractmethod
    async def comment_by_ref(self, slug: str, ref_key: str) -> Comment | None:
        """The comment stored earlier under this idempotency key, if any."""

    @abstractmethod
    async def snapshot(self, slug: str) -> Snapshot:
        """Every comment of the thread, consistent with the seq it is taken at."""

    @abstractmethod
    async def head(self, slug: str) -> Head: ...

    @abstractmethod
    async def events_since(self, slug: str, since: int) -> list[Event] | None:
        """Events with seq > since, in order; None when the log no longer reaches back to since."""

    @abstractmethod
    async def comment_counts(self) -> dict[str, int]:
        """Visible comments per thread."""

    @abstractmethod
    async def subscribe(self, slug: str) -> None:
        """Start delivering this thread's events to on_event (first local reader arrived)."""

    @abstractmethod
    async def unsubscribe(self, slug: str) -> None:
        """Stop delivering (last local reader left)."""

    @abstractmethod
    async def presence(self, slug: str, local_readers: int) -> int:
        """Report this instance's reader count for the thread; return the count everywhere."""

    # --- small shared state for moderation (accounts, sessions, bans, reports, audit) ---
    # Plain primitives, so that what they mean is written once, above the backends.

    @abstractmethod
    async def kv_get(self, key: str) -> str | None: ...

    @abstractmethod
    async def kv_set(self, key: str, value: str, ttl: float | None = None, only_if_absent: bool = False) -> bool:
        """Set key (expiring after ttl seconds); with only_if_absent, only when it is not set.
        Returns whether it was set."""

    @abstractmethod
    async def kv_delete(self, key: str) -> None: ...

    @abstractmethod
    async def set_add(self, key: str, member: str) -> None: ...

    @abstractmethod
    async def set_remove(self, key: str, member: str) -> None: ...

    @abstractmethod
    async def set_members(self, key: str) -> set[str]: ...

    @abstractmethod
    async def list_push(self, key: str, value: str, keep: int) -> None:
        """Prepend value; keep only the newest `keep` items."""

    @abstractmethod
    async def list_range(self, key: str, count: int | None = None) -> list[str]:
        """The newest `count` items (all when None), newest first."""

    @abstractmethod
    async def list_ranges(self, keys: Sequence[str]) -> list[list[str]]:
        """list_range(key) of every key, in one read."""

    @abstractmethod
    async def publish_control(self, message: str) -> None:
        """Send message to on_control on every instance, this one included (not sequenced)."""
