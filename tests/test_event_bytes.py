"""The contract between the backends and the wire: an event read back from either backend's
log is, byte for byte, `encode(comment_event(...))` — the Redis post script builds its event
JSON in Lua, and must not drift from the Python that builds it everywhere else."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson

from server.backends import create_backend
from server.backends.base import Backend
from server.comments import PENDING, REMOVED, VISIBLE, Comment, comment_event, status_event
from server.protocol import encode
from server.settings import Settings
from server.threads import new_comment_id

SLUG = "a-thread"


def _comments() -> list[Comment]:
    """One of each shape the script must spell: nulls, a reply, text that needs escaping."""
    first = Comment(
        id=new_comment_id(SLUG),
        slug=SLUG,
        parent=None,
        name="Ann",
        about=None,
        body='quotes " and \\ and \u2028 and é and 😀 and </script>',
        html="<p>quotes &#34; and \\ and \u2028 and é and 😀 and &lt;/script&gt;</p>",
        created_at="2026-11-30T04:00:00.000Z",
        reader_id="reader-1",
        ip="203.0.113.9",
    )
    reply = Comment(
        id=new_comment_id(SLUG),
        slug=SLUG,
        parent=first.id,
        name="Bo",
        about="Teacher, Leeds",
        body="a reply",
        html="<p>a reply</p>",
        created_at="2026-11-30T04:00:01.000Z",
        reader_id=None,
    )
    held = replace(reply, id=new_comment_id(SLUG), parent=None, status=PENDING, body="held", html="<p>held</p>")
    return [first, reply, held]


async def _events(backend: Backend, comments: list[Comment]) -> tuple[list[str], list[str]]:
    """(the events as the backend's log gives them, the events as Python encodes them)."""
    await backend.start()
    try:
        await backend.ensure_thread(SLUG, [])
        expected = []
        for comment in comments:
            stored, _ = await backend.post(comment, None)
            if stored.status != PENDING:
                expected.append(encode(comment_event(stored)))
        first, _reply, held = comments
        for target, status in ((first, REMOVED), (first, VISIBLE), (held, VISIBLE)):
            changed, event = await backend.set_status(SLUG, target.id, status, "alice", "2026-11-30T04:01:00.000Z")
            assert event is not None
            expected.append(encode(status_event(event.type, event.seq, changed)))
        logged = await backend.events_since(SLUG, 0)
        assert logged is not None
        return [encode(event) for event in logged], expected
    finally:
        await backend.close()


async def test_both_backends_log_the_bytes_comment_event_encodes(redis_server, tmp_path: Path) -> None:
    redis_server.client().flushall()
    comments = _comments()
    local = create_backend(Settings(data_dir=tmp_path))
    remote = create_backend(Settings(data_dir=tmp_path, redis_url=redis_server.url))
    local_logged, local_expected = await _events(local, comments)
    redis_logged, redis_expected = await _events(remote, comments)
    assert local_logged == local_expected
    assert redis_logged == redis_expected
    assert redis_logged == local_logged  # the same comments make the same bytes on either backend
    assert [orjson.loads(e)["type"] for e in redis_logged] == ["comment", "comment", "removed", "restored", "comment"]
