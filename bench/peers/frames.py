"""The frames the Python peers send: the same shape as Backchannel's `comment` event.

Peers do the minimum a live comment server must: give the post a thread-wide seq (Redis
INCR when instances share Redis), build one comment frame, serialise it once, fan it out.
"""

from __future__ import annotations

import html
import secrets
from datetime import datetime, timezone


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def comment_frame(seq: int, post: dict) -> dict:
    body = str(post.get("body") or "")[:20000]
    about = post.get("about")
    return {"type": "comment", "seq": seq, "comment": {
        "id": secrets.token_hex(6), "parent": post.get("parent"),
        "author": {"name": str(post.get("name") or "")[:80], "about": str(about)[:120] if about else None},
        "body": body, "html": "<p>" + html.escape(body) + "</p>", "created_at": now_iso(), "status": "visible"}}


def welcome_frame(seq: int, readers: int) -> dict:
    return {"type": "welcome", "seq": seq, "readers": readers, "epoch": "bench"}


def raise_nofile() -> None:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
