"""Votes and a reader's own edits in the store contract, run on every store and bus.

A vote is one per voter per comment, counted on the comment (its `votes` in every read) in the
same write, kept across restarts, and no event of the log. An edit or a deletion is a
sequenced event written with the change (`edited`, `deleted`), replayed with `since`, exported
and imported byte for byte; what the change function refuses leaves everything as it was.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from server.backends.base import Backend
from server.backends.local import LocalBackend
from server.comments import CLOSED, DELETED, REMOVED, Comment, public_event, utc_now_iso
from server.errors import Closed, Forbidden, NotFound
from server.transfer.export import export, import_file

from . import test_backend as contract
from .test_backend import OTHER, SLUG, BackendFactory, make_comment

backend_factory, backend = contract.backend_factory, contract.backend

AT = "2026-11-30T08:00:00.000Z"


async def test_a_vote_counts_once_per_voter_and_toggles(backend: Backend) -> None:
    comment, _ = await backend.post(make_comment(), None)
    assert await backend.vote(SLUG, comment.id, "reader-2", True) == 1
    assert await backend.vote(SLUG, comment.id, "reader-2", True) == 1  # the same voter again: still one
    assert await backend.vote(SLUG, comment.id, "reader-3", True) == 2
    assert await backend.vote(SLUG, comment.id, "reader-2", False) == 1
    assert await backend.vote(SLUG, comment.id, "reader-2", False) == 1  # withdrawn twice: once
    assert (await backend.get_comment(SLUG, comment.id)).votes == 1
    assert [c.votes for c in (await backend.snapshot(SLUG)).comments] == [1]
    assert [c.votes for c in (await backend.comment_page(SLUG, None, False, None, 10)).comments] == [1]
    assert await backend.vote_counts(SLUG, [comment.id]) == {comment.id: 1}
    assert await backend.votes_by(SLUG, "reader-3") == {comment.id}
    assert await backend.votes_by(SLUG, "reader-2") == set()
    assert (await backend.head(SLUG)).seq == 1  # no event in the log


async def test_votes_from_several_instances_at_once_are_all_counted_and_survive_a_restart(
    backend_factory: BackendFactory,
) -> None:
    instances = [backend_factory() for _ in range(3)]
    for instance in instances:
        await instance.start()
        await instance.ensure_thread(SLUG, [])
    try:
        comment, _ = await instances[0].post(make_comment(), None)
        await asyncio.gather(
            *(instances[n % 3].vote(SLUG, comment.id, f"voter-{n}", True) for n in range(30)),
            *(instances[n % 3].vote(SLUG, comment.id, f"voter-{n}", True) for n in range(10)),  # doubles
        )
    finally:
        for instance in instances:
            await instance.close()
    reopened = backend_factory()
    await reopened.start()
    try:
        assert (await reopened.get_comment(SLUG, comment.id)).votes == 30
        assert await reopened.votes_by(SLUG, "voter-7") == {comment.id}
    finally:
        await reopened.close()


async def test_votes_are_refused_on_a_closed_thread_and_on_a_comment_not_shown(backend: Backend) -> None:
    shown, _ = await backend.post(make_comment(), None)
    removed, _ = await backend.post(make_comment(body="gone"), None)
    await backend.set_status(SLUG, removed.id, REMOVED, "mod", AT)
    with pytest.raises(NotFound):
        await backend.vote(SLUG, removed.id, "reader-2", True)
    with pytest.raises(NotFound):
        await backend.vote(OTHER, shown.id, "reader-2", True)  # not a comment of that thread
    await backend.set_thread_state(SLUG, CLOSED, "mod", AT)
    with pytest.raises(Closed):
        await backend.vote(SLUG, shown.id, "reader-2", True)
    assert (await backend.get_comment(SLUG, shown.id)).votes == 0


def _edit(body: str):
    def change(stored: Comment) -> Comment:
        return replace(stored, body=body, html=f"<p>{body}</p>", edited_at=AT)

    return change


async def test_an_edit_is_the_next_event_kept_in_the_log_and_in_the_comment(backend: Backend) -> None:
    comment, _ = await backend.post(make_comment(), None)
    await backend.vote(SLUG, comment.id, "reader-2", True)
    changed, event = await backend.change_comment(SLUG, comment.id, "edited", _edit("hello, fixed"))
    assert (changed.body, changed.edited_at, changed.seq, changed.votes) == ("hello, fixed", AT, 1, 1)
    assert event is not None and (event.type, event.seq) == ("edited", 2)
    assert public_event(event).data["comment"]["body"] == "hello, fixed"
    stored = await backend.get_comment(SLUG, comment.id)
    assert (stored.body, stored.html, stored.edited_at, stored.votes) == ("hello, fixed", "<p>hello, fixed</p>", AT, 1)
    replayed = await backend.events_since(SLUG, 1)
    assert replayed == [event]


async def test_a_deletion_keeps_the_comment_in_place_without_its_text(backend: Backend) -> None:
    parent, _ = await backend.post(make_comment(), None)
    reply, _ = await backend.post(make_comment(body="a reply", parent=parent.id), None)

    def delete(stored: Comment) -> Comment:
        return replace(stored, status=DELETED, edited_at=AT)

    _changed, event = await backend.change_comment(SLUG, parent.id, "deleted", delete)
    assert event is not None and (event.type, event.seq, event.data) == ("deleted", 3, {"id": parent.id})
    snapshot = await backend.snapshot(SLUG)
    assert [(c.id, c.status) for c in snapshot.comments] == [(parent.id, DELETED), (reply.id, "visible")]
    assert snapshot.comments[0].public()["body"] == ""
    assert (await backend.comment_counts([SLUG]))[SLUG] == 1
    with pytest.raises(NotFound):
        await backend.vote(SLUG, parent.id, "reader-2", True)


async def test_a_refused_change_or_a_closed_thread_leaves_everything_as_it_was(backend: Backend) -> None:
    comment, _ = await backend.post(make_comment(), None)

    def refuse(stored: Comment) -> Comment:
        raise Forbidden("not yours")

    with pytest.raises(Forbidden):
        await backend.change_comment(SLUG, comment.id, "edited", refuse)
    with pytest.raises(NotFound):
        await backend.change_comment(SLUG, "no-such-comment", "edited", _edit("x"))
    await backend.set_thread_state(SLUG, CLOSED, "mod", AT)
    with pytest.raises(Closed):
        await backend.change_comment(SLUG, comment.id, "edited", _edit("x"))
    assert (await backend.head(SLUG)).seq == 2  # the post and the close
    assert (await backend.get_comment(SLUG, comment.id)).body == "hello"


async def test_edits_and_votes_export_and_import_byte_for_byte(backend: Backend, tmp_path) -> None:
    comment, _ = await backend.post(make_comment(), None)
    await backend.vote(SLUG, comment.id, "reader-2", True)
    await backend.change_comment(SLUG, comment.id, "edited", _edit("edited " + utc_now_iso()))
    dump = tmp_path / "export.jsonl"
    with dump.open("wb") as out:
        await export(backend.store, out, progress=False)
    assert b'\\"type\\":\\"edited\\"' in dump.read_bytes() and b'"votes":1' in dump.read_bytes()
    with dump.open("rb") as source:
        await import_file(backend.store, source, progress=False)
    again = tmp_path / "again.jsonl"
    with again.open("wb") as out:
        await export(backend.store, out, progress=False)
    assert again.read_bytes() == dump.read_bytes()
    assert (await backend.get_comment(SLUG, comment.id)).votes == 1


async def test_who_voted_moves_with_an_export_so_a_vote_again_counts_nothing(
    backend: Backend, backend_factory: BackendFactory, tmp_path
) -> None:
    """Exported from this store and imported into an empty SQLite one (and back), the voters
    come along: after the move, a reader who had voted cannot vote a second time."""
    comment, _ = await backend.post(make_comment(), None)
    await backend.vote(SLUG, comment.id, "reader-2", True)
    await backend.vote(SLUG, comment.id, "reader-3", True)
    dump = tmp_path / "export.jsonl"
    with dump.open("wb") as out:
        counts = await export(backend.store, out, progress=False)
    assert counts["vote"] == 2
    target = LocalBackend(tmp_path / "target.sqlite3")
    await target.start()
    try:
        with dump.open("rb") as source:
            await import_file(target.store, source, progress=False)
        assert await target.vote(SLUG, comment.id, "reader-2", True) == 2  # voted already
        assert await target.votes_by(SLUG, "reader-3") == {comment.id}
        assert await target.vote(SLUG, comment.id, "reader-4", True) == 3
        again = tmp_path / "again.jsonl"
        with again.open("wb") as out:
            await export(target.store, out, progress=False)
        with again.open("rb") as source:
            await import_file(backend.store, source, progress=False)
        assert await backend.vote(SLUG, comment.id, "reader-4", True) == 3
        assert await backend.votes_by(SLUG, "reader-4") == {comment.id}
    finally:
        await target.close()
