"""The article page a screenful at a time, without JavaScript: "Load more" and "N more replies"
are links that work, the sort is in the URL, and a permalink opens a comment deep in the thread."""

from __future__ import annotations

import html
import re

from starlette.testclient import TestClient

from server.pages import FIRST_REPLIES, TOP_PAGE

from .servers import DEMO_SLUG
from .test_api_paging import write

PAGE = f"/articles/{DEMO_SLUG}"
SEEDS = 4  # the demo article's own comments, oldest of all


def top_level_ids(page_html: str) -> list[str]:
    """The ids of the top-level comments, in page order."""
    thread = page_html.split("data-thread>", 1)[1].split("comment-template", 1)[0]
    return re.findall(r'<li class="comment[^"]*" id="c-(\w+)"[^>]*data-depth="0"', thread)


def link(page_html: str, cls: str) -> str:
    return html.unescape(re.search(rf'class="{cls}" href="([^"]+)"', page_html).group(1))


def test_load_more_and_sorting_are_links_that_page_the_thread(client: TestClient) -> None:
    ids = [write(client) for _ in range(2 * TOP_PAGE)]  # oldest first
    first = client.get(PAGE).text  # newest first, as before sorting
    assert top_level_ids(first) == ids[::-1][:TOP_PAGE]
    assert f'href="/articles/{DEMO_SLUG}?sort=oldest#comments"' in first
    second = client.get(link(first, "button load-more")).text
    assert top_level_ids(second) == ids[::-1][TOP_PAGE:]
    third = client.get(link(second, "button load-more")).text  # the demo's seeds
    assert len(top_level_ids(third)) == SEEDS and re.search(r'class="button load-more"[^>]* hidden>', third)
    oldest = client.get(PAGE, params={"sort": "oldest"}).text
    assert top_level_ids(oldest)[SEEDS:] == ids[: TOP_PAGE - SEEDS]
    assert 'data-sort="oldest" aria-current="true"' in oldest
    assert 'data-sort="top" aria-current="true"' in client.get(PAGE, params={"sort": "top"}).text
    assert top_level_ids(client.get(PAGE, params={"sort": "loudest"}).text) == ids[::-1][:TOP_PAGE]  # the default
    refused = client.get(PAGE, params={"sort": "oldest", "after": "not-a-cursor"})
    assert refused.status_code == 400


def test_a_long_reply_chain_waits_behind_n_more_replies(client: TestClient) -> None:
    parent = write(client)
    replies = [write(client, parent) for _ in range(FIRST_REPLIES + 5)]
    page = client.get(PAGE).text
    for reply in replies[:FIRST_REPLIES]:
        assert f'id="c-{reply}"' in page
    assert f'id="c-{replies[FIRST_REPLIES]}"' not in page
    assert "5 more replies" in page
    rest = client.get(link(page, "more-replies")).text  # the parent's permalink, its replies after the first
    assert all(f'id="c-{reply}"' in rest for reply in replies[FIRST_REPLIES:])
    assert "You are viewing one conversation." in rest


def test_a_permalink_opens_a_reply_deep_in_a_big_thread(client: TestClient) -> None:
    early = write(client)
    reply = write(client, early)
    deep = write(client, reply)
    for _ in range(3 * TOP_PAGE):
        write(client)
    assert f'id="c-{deep}"' not in client.get(PAGE).text
    page = client.get(f"{PAGE}/comments/{deep}")
    assert page.status_code == 200
    assert re.search(rf'<li class="comment comment-target" id="c-{deep}"', page.text)
    assert top_level_ids(page.text) == [early] and f'id="c-{reply}"' in page.text  # its ancestors
    assert f'data-target="{deep}"' in page.text
    redirect = client.get(PAGE, params={"comment": deep}, follow_redirects=False)
    assert redirect.status_code == 303 and redirect.headers["location"] == f"{PAGE}/comments/{deep}#c-{deep}"
    missing = client.get(f"{PAGE}/comments/nope")
    assert missing.status_code == 404 and "There is no such comment here." in missing.text
