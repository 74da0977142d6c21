"""A thread's state (open, closed, hidden) in the store contract, run on every store and bus.

Changing the state is a sequenced event written with it, in one step: the next seq, in the log
for `since`, delivered on the bus. Asking for the state a thread is in already, or deciding on a
state that has changed meanwhile (`expect`), writes nothing. A post to a thread that is not open
is refused by the store itself, so none lands after a close however the two race.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from server.backends.base import Backend
from server.comments import CLOSED, HIDDEN, OPEN, PENDING, REMOVED, VISIBLE, ThreadState, public_event, utc_now_iso
from server.errors import Closed
from server.protocol import Event
from server.transfer.export import export, import_file

from . import test_backend as contract
from .test_backend import OTHER, SLUG, BackendFactory, make_comment

# The contract suite's fixtures: every store and bus pairing.
backend_factory, backend = contract.backend_factory, contract.backend

AT = "2026-11-30T08:00:00.000Z"


async def test_closing_is_the_next_event_and_the_head_says_so(backend: Backend) -> None:
    await backend.post(make_comment(), None)
    state, event = await backend.set_thread_state(SLUG, CLOSED, "alice", AT)
    assert state == ThreadState(CLOSED, "alice", AT)
    assert event == Event("closed", 2, {"by": "alice", "at": AT})
    head = await backend.head(SLUG)
    assert (head.seq, head.state) == (2, state)
    snapshot = await backend.snapshot(SLUG)
    assert (snapshot.seq, snapshot.state) == (2, state)
    assert (await backend.head(OTHER)).state == ThreadState()  # a thread never changed is open


async def test_the_same_state_again_writes_nothing(backend: Backend) -> None:
    await backend.set_thread_state(SLUG, CLOSED, "alice", AT)
    state, event = await backend.set_thread_state(SLUG, CLOSED, "bob", "2026-11-30T09:00:00.000Z")
    assert event is None and state == ThreadState(CLOSED, "alice", AT)
    assert (await backend.head(SLUG)).seq == 1


async def test_open_closed_hidden_and_back_each_make_their_event(backend: Backend) -> None:
    kinds = []
    for state in (CLOSED, HIDDEN, OPEN, HIDDEN, CLOSED, OPEN):
        _state, event = await backend.set_thread_state(SLUG, state, "alice", utc_now_iso())
        assert event is not None
        kinds.append(event.type)
    assert kinds == ["closed", "hidden", "opened", "hidden", "closed", "opened"]
    replayed = await backend.events_since(SLUG, 0)
    assert replayed is not None and [(e.seq, e.type) for e in replayed] == list(enumerate(kinds, 1))
    with pytest.raises(ValueError, match="archived"):
        await backend.set_thread_state(SLUG, "archived", "alice", AT)


async def test_a_decision_on_a_state_that_changed_meanwhile_writes_nothing(backend: Backend) -> None:
    seen = (await backend.head(SLUG)).state
    await backend.set_thread_state(SLUG, CLOSED, "alice", AT)
    await backend.set_thread_state(SLUG, OPEN, "alice", "2026-11-30T08:01:00.000Z")  # reopened by hand
    state, event = await backend.set_thread_state(SLUG, CLOSED, "auto-close", AT, expect=seen)
    assert event is None and state.name == OPEN and (await backend.head(SLUG)).seq == 2


async def test_of_several_instances_closing_at_once_exactly_one_makes_the_event(
    backend_factory: BackendFactory,
) -> None:
    instances = [backend_factory() for _ in range(3)]
    for instance in instances:
        await instance.start()
        await instance.ensure_thread(SLUG, [])
    try:
        seen = (await instances[0].head(SLUG)).state
        results = await asyncio.gather(
            *(b.set_thread_state(SLUG, CLOSED, f"instance-{n}", AT, expect=seen) for n, b in enumerate(instances))
        )
        assert sum(event is not None for _state, event in results) == 1
        assert [e.type for e in await instances[0].events_since(SLUG, 0) or []] == ["closed"]
    finally:
        for instance in instances:
            await instance.close()


async def test_a_closed_thread_refuses_posts_and_keeps_everything(backend: Backend) -> None:
    kept, _ = await backend.post(make_comment(body="before"), "reader-1:early")
    await backend.set_thread_state(SLUG, CLOSED, "alice", AT)
    for status in (VISIBLE, PENDING):  # held for moderation or not
        with pytest.raises(Closed) as refused:
            await backend.post(replace(make_comment(body="after"), status=status), None)
        assert refused.value.code == "closed" and refused.value.status == 403
    # A retry of a post stored before the close is that post, not a new one.
    again, created = await backend.post(make_comment(body="before"), "reader-1:early")
    assert (again.id, created) == (kept.id, False)
    await backend.post(make_comment(slug=OTHER), None)  # other threads are not concerned
    snapshot = await backend.snapshot(SLUG)
    assert [c.body for c in snapshot.comments] == ["before"] and snapshot.seq == 2
    await backend.set_thread_state(SLUG, OPEN, "alice", AT)
    reopened, _ = await backend.post(make_comment(body="reopened"), None)
    assert reopened.seq == 4


async def test_a_hidden_thread_refuses_posts_too(backend: Backend) -> None:
    await backend.set_thread_state(SLUG, HIDDEN, "alice", AT)
    with pytest.raises(Closed, match="hidden"):
        await backend.post(make_comment(), None)


async def test_moderators_still_remove_and_restore_on_a_closed_thread(backend: Backend) -> None:
    comment, _ = await backend.post(make_comment(), None)
    await backend.set_thread_state(SLUG, CLOSED, "alice", AT)
    removed, event = await backend.set_status(SLUG, comment.id, REMOVED, "alice", AT)
    assert removed.status == REMOVED and event is not None and event.seq == 3
    restored, event = await backend.set_status(SLUG, comment.id, VISIBLE, "alice", AT)
    assert restored.status == VISIBLE and event is not None and event.seq == 4
    assert (await backend.head(SLUG)).state.name == CLOSED


async def test_readers_get_the_event_without_the_moderators_name(backend: Backend) -> None:
    _state, event = await backend.set_thread_state(SLUG, CLOSED, "alice", AT)
    assert event is not None
    assert public_event(event) == Event("closed", 1, {"at": AT})
    [logged] = await backend.events_since(SLUG, 0) or []
    assert logged == event and public_event(logged).data == {"at": AT}


async def test_the_state_is_delivered_on_the_bus(backend: Backend) -> None:
    arrived: asyncio.Queue[Event] = asyncio.Queue()
    backend.on_event = lambda slug, event, epoch: arrived.put_nowait(event) if slug == SLUG else None
    await backend.subscribe(SLUG)
    await backend.set_thread_state(SLUG, CLOSED, "alice", AT)
    event = await asyncio.wait_for(arrived.get(), 5)
    assert (event.type, event.seq) == ("closed", 1)


async def test_the_state_survives_a_restart(backend_factory: BackendFactory) -> None:
    backend = backend_factory()
    await backend.start()
    await backend.ensure_thread(SLUG, [])
    await backend.set_thread_state(SLUG, HIDDEN, "alice", AT)
    await backend.close()
    backend = backend_factory()
    await backend.start()
    try:
        await backend.ensure_thread(SLUG, [])
        assert (await backend.head(SLUG)).state == ThreadState(HIDDEN, "alice", AT)
    finally:
        await backend.close()


async def test_an_export_carries_the_state_and_imports_it_byte_for_byte(backend: Backend, tmp_path) -> None:
    await backend.post(make_comment(), None)
    await backend.set_thread_state(SLUG, CLOSED, "api:cms", AT)
    dump = tmp_path / "export.jsonl"
    with dump.open("wb") as out:
        await export(backend.store, out, progress=False)
    assert b'"state":"closed","state_at":"2026-11-30T08:00:00.000Z","state_by":"api:cms"' in dump.read_bytes()
    with dump.open("rb") as source:
        await import_file(backend.store, source, progress=False)
    assert (await backend.head(SLUG)).state == ThreadState(CLOSED, "api:cms", AT)
    assert (await backend.head(OTHER)).state == ThreadState()
    again = tmp_path / "again.jsonl"
    with again.open("wb") as out:
        await export(backend.store, out, progress=False)
    assert again.read_bytes() == dump.read_bytes()


async def test_the_states_of_many_threads_come_in_one_read(backend: Backend) -> None:
    await backend.set_thread_state(SLUG, CLOSED, "alice", AT)
    states = await backend.thread_states([SLUG, OTHER, "no-such-thread"])
    assert states == {SLUG: ThreadState(CLOSED, "alice", AT), OTHER: ThreadState()}
