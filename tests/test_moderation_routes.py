"""The moderation desk and a moderator's article page read the reports in one go, however many
comments are reported (they made one read, or two, per reported comment)."""

from __future__ import annotations

from collections.abc import Callable

from .servers import DEMO_SLUG
from .test_api import write_comments


def statements_during(visitor, request: Callable[[], object]) -> list[str]:
    """The SQL the embedded store ran while serving the request."""
    db = visitor.client.app.state.backend.store._db
    ran: list[str] = []
    db.set_trace_callback(ran.append)
    try:
        request()
    finally:
        db.set_trace_callback(None)
    return ran


def report(visitor, comment_ids: list[str]) -> None:
    moderation = visitor.client.app.state.moderation
    for n, comment_id in enumerate(comment_ids):
        visitor.client.portal.call(moderation.report, DEMO_SLUG, comment_id, f"reader-{n}", f"192.0.2.{n}", "off topic")


def test_the_desk_queue_reads_every_report_at_once(moderator) -> None:
    ids = write_comments(moderator.client, 12)
    report(moderator, ids[:2])
    few = statements_during(moderator, lambda: moderator.get("/api/moderation/queue"))
    report(moderator, ids[2:])
    queue = None

    def read_queue() -> None:
        nonlocal queue
        queue = moderator.get("/api/moderation/queue").json()

    many = statements_during(moderator, read_queue)
    assert len(queue["reports"]) == 12 and {r["count"] for r in queue["reports"]} == {1}
    print(f"\ndesk queue: {len(few)} statements with 2 reports, {len(many)} with 12")
    assert len(many) == len(few)


def test_a_moderators_article_page_reads_every_report_at_once(moderator) -> None:
    ids = write_comments(moderator.client, 12)
    report(moderator, ids[:2])
    few = statements_during(moderator, lambda: moderator.get(f"/articles/{DEMO_SLUG}"))
    report(moderator, ids[2:])
    many = statements_during(moderator, lambda: moderator.get(f"/articles/{DEMO_SLUG}"))
    print(f"\narticle page: {len(few)} statements with 2 reports, {len(many)} with 12")
    assert len(many) == len(few)
