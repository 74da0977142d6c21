"""Store.comment_page on every store: one parent's comments a page at a time, by seq either way,
with reply counts and the held ones, and each comment once while comments arrive."""

from __future__ import annotations

from server.backends.base import Backend
from server.backends.redis import RedisStore, _keys
from server.comments import PENDING, VISIBLE, Comment, utc_now_iso
from server.threads import new_comment_id

from .test_backend_reads import SLUGS, backend  # noqa: F401  (the fixture: every store)

SLUG = SLUGS[0]


async def post(backend: Backend, parent: str | None = None, status: str = VISIBLE) -> Comment:  # noqa: F811
    comment = Comment(
        id=new_comment_id(SLUG),
        slug=SLUG,
        parent=parent,
        name="Ann",
        about=None,
        body="hi",
        html="<p>hi</p>",
        created_at=utc_now_iso(),
        status=status,
    )
    return (await backend.post(comment, None))[0]


async def read_all(backend: Backend, parent: str | None, newest_first: bool, limit: int) -> list[list[str]]:  # noqa: F811
    pages, after = [], None
    while True:
        page = await backend.comment_page(SLUG, parent, newest_first, after, limit)
        pages.append([c.id for c in page.comments])
        if not page.more:
            return pages
        after = page.comments[-1].seq


async def test_pages_of_one_parent_either_way_with_reply_counts(backend: Backend) -> None:  # noqa: F811
    tops = [await post(backend) for _ in range(5)]
    replies = [await post(backend, tops[1].id) for _ in range(3)]
    await post(backend, replies[0].id)  # a reply to a reply counts for its parent only
    held = await post(backend, status=PENDING)
    await backend.set_status(SLUG, tops[3].id, "removed", "mod", utc_now_iso())  # keeps its place

    ids = [c.id for c in tops]
    assert await read_all(backend, None, False, 2) == [ids[0:2], ids[2:4], ids[4:]]
    assert await read_all(backend, None, True, 2) == [ids[:2:-1], ids[2:0:-1], ids[:1]]
    first = await backend.comment_page(SLUG, None, False, None, 10)
    assert first.reply_counts == {tops[1].id: 3} and not first.more
    assert [c.id for c in first.held] == [held.id]
    assert (await backend.comment_page(SLUG, None, False, tops[0].seq, 10)).held == []  # first page only
    page = await backend.comment_page(SLUG, tops[1].id, False, None, 10)
    assert [c.id for c in page.comments] == [r.id for r in replies] and page.reply_counts == {replies[0].id: 1}
    assert (await backend.comment_page("no-such-thread", None, False, None, 10)).comments == []

    # approval publishes the held comment: now last in seq order, no longer held
    await backend.set_status(SLUG, held.id, VISIBLE, "mod", utc_now_iso())
    last = await backend.comment_page(SLUG, None, True, None, 1)
    assert [c.id for c in last.comments] == [held.id] and last.held == []


async def test_following_the_pages_shows_each_comment_once_while_comments_arrive(backend: Backend) -> None:  # noqa: F811
    before = [(await post(backend)).id for _ in range(7)]
    for newest_first in (False, True):
        seen: list[str] = []
        after = None
        while True:
            page = await backend.comment_page(SLUG, None, newest_first, after, 3)
            seen += [c.id for c in page.comments]
            await post(backend)  # arrives between two pages
            if not page.more:
                break
            after = page.comments[-1].seq
        assert len(seen) == len(set(seen))
        if newest_first:
            assert seen == before[::-1]  # new ones come before the first page: none shows
        else:
            assert seen[: len(before)] == before  # new ones come after: shown once, at the end
        before = [c.id for c in (await backend.comment_page(SLUG, None, False, None, 200)).comments]


async def test_a_redis_thread_stored_before_the_index_is_indexed_at_its_first_page(backend: Backend) -> None:  # noqa: F811
    store = backend.store
    if not isinstance(store, RedisStore):
        return  # the SQL stores' index is migration 5
    top = await post(backend)
    reply = await post(backend, top.id)
    held = await post(backend, status=PENDING)
    keys = _keys(SLUG)
    await store.redis.delete(keys["order"])
    await store.redis.hdel(keys["meta"], "indexed")
    page = await backend.comment_page(SLUG, None, False, None, 10)
    assert [c.id for c in page.comments] == [top.id] and page.reply_counts == {top.id: 1}
    assert [c.id for c in page.held] == [held.id]
    assert [c.id for c in (await backend.comment_page(SLUG, top.id, False, None, 10)).comments] == [reply.id]


async def test_most_recommended_first_pages_by_votes_then_newest(backend: Backend) -> None:  # noqa: F811
    tops = [await post(backend) for _ in range(5)]
    replies = [await post(backend, tops[0].id) for _ in range(2)]
    for comment, voters in ((tops[1], 3), (tops[3], 1), (tops[4], 1), (replies[1], 2)):
        for n in range(voters):
            await backend.vote(SLUG, comment.id, f"reader-{n}", True)
    expected = [tops[1].id, tops[4].id, tops[3].id, tops[2].id, tops[0].id]  # ties: the newer first
    pages, after = [], None
    while True:
        page = await backend.top_page(SLUG, None, after, 2)
        pages.append([c.id for c in page.comments])
        if not page.more:
            break
        last = page.comments[-1]
        assert last.seq is not None
        after = (last.votes, last.seq)
    assert pages == [expected[:2], expected[2:4], expected[4:]]
    first = await backend.top_page(SLUG, None, None, 10)
    assert [c.votes for c in first.comments] == [3, 1, 1, 0, 0] and first.reply_counts == {tops[0].id: 2}
    assert [c.id for c in (await backend.top_page(SLUG, tops[0].id, None, 10)).comments] == [
        replies[1].id,
        replies[0].id,
    ]
