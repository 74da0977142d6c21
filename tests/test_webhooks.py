"""Webhooks (issue 13, point 7): a real receiver on a free port gets a signed POST for a
published comment and for a moderation action, and checks the signature as docs/api.md says;
a failing receiver gets the delivery again; a dead one costs a bounded queue and one log line,
and never slows a post."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.app import create_app
from server.settings import Settings

from .servers import DEMO_SLUG, ROOT, free_port
from .visitors import PASSWORD, Visitor, login
from .visitors import token as csrf_token

RETRY_SECONDS = 0.05


def verify(secret: str, headers, body: bytes, tolerance: float = 300) -> bool:
    """The receiver's check, as docs/api.md gives it."""
    timestamp = headers["X-Backchannel-Timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return (
        hmac.compare_digest(expected, headers["X-Backchannel-Signature"])
        and abs(time.time() - int(timestamp)) < tolerance
    )


class Receiver(http.server.ThreadingHTTPServer):
    """A newsroom's endpoint: records each delivery; answers the first `failures` with 500."""

    def __init__(self, failures: int = 0) -> None:
        self.deliveries: list[tuple[dict, bytes]] = []
        self.failures = failures
        self.arrived = threading.Condition()
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[tuple[dict, bytes]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.deliveries) >= count, timeout), self.deliveries
            return list(self.deliveries)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.arrived:
            failing = self.server.failures > 0
            self.server.failures -= 1
            self.server.deliveries.append((dict(self.headers), body))
            self.server.arrived.notify_all()
        self.send_response(500 if failing else 204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def newsroom_app(tmp_path: Path, **webhook_settings) -> TestClient:
    settings = Settings(
        data_dir=tmp_path / "data",
        content_dir=ROOT / "content",
        secret_key="test-secret-key",
        password_hash_profile="CHEAPEST",
        webhook_retry_seconds=RETRY_SECONDS,
        **webhook_settings,
    )
    return TestClient(create_app(settings), base_url="http://testserver")


def moderator_of(client: TestClient) -> Visitor:
    client.portal.call(client.app.state.moderation.create_moderator, "alice", PASSWORD)
    alice = Visitor(client)
    assert login(alice).status_code == 303
    return alice


def post_comment(visitor: Visitor, body: str):
    return visitor.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Alice", "body": body},
        headers={"X-CSRF-Token": csrf_token(visitor, f"/articles/{DEMO_SLUG}")},
    )


def test_a_receiver_gets_signed_events_for_comments_and_moderation(tmp_path, receiver) -> None:
    with newsroom_app(tmp_path) as client:
        _token, record = client.portal.call(
            client.app.state.tokens.create, "analytics", ["articles:write"], receiver.url
        )
        alice = moderator_of(client)
        posted = post_comment(alice, "First!")
        assert posted.status_code in (200, 201), posted.text
        comment_id = posted.json()["comment"]["id"]
        removed = alice.post(f"/api/comments/{comment_id}/remove", headers={"X-CSRF-Token": csrf_token(alice)})
        assert removed.status_code == 200, removed.text
        deliveries = receiver.wait_for(2)
    events = {}
    for headers, body in deliveries:
        assert verify(record.webhook_secret, headers, body)
        assert not verify("whsec_another", headers, body)
        assert not verify(record.webhook_secret, headers, body + b" ")  # the body as sent, byte for byte
        event = json.loads(body)
        assert headers["X-Backchannel-Event"] == event["type"] and set(event) == {"type", "at", "data"}
        events[event["type"]] = event["data"]
    assert set(events) == {"comment.published", "moderation.remove"}
    published = events["comment.published"]
    assert (published["id"], published["slug"], published["body"]) == (comment_id, DEMO_SLUG, "First!")
    assert "ip" not in published and "reader_id" not in published
    assert events["moderation.remove"]["comment_id"] == comment_id
    # The moderator's login is an account matter, not sent.
    assert not any(json.loads(body)["type"].startswith("moderation.login") for _h, body in deliveries)


def test_an_article_published_and_unpublished_through_the_api_is_sent(tmp_path, receiver) -> None:
    with newsroom_app(tmp_path) as client:
        token, record = client.portal.call(client.app.state.tokens.create, "cms", ["articles:write"], receiver.url)
        cms = {"Authorization": f"Bearer {token}"}
        article = {"title": "Bridge opens", "paragraphs": ["Today."], "url": "https://news.example/bridge"}
        assert client.put("/api/articles/bridge-opens", json=article, headers=cms).status_code == 201
        assert client.delete("/api/articles/bridge-opens", headers=cms).status_code == 204
        deliveries = receiver.wait_for(2)
    assert all(verify(record.webhook_secret, headers, body) for headers, body in deliveries)
    assert [(json.loads(body)["type"], json.loads(body)["data"]) for _h, body in deliveries] == [
        ("article.published", {"slug": "bridge-opens", "title": "Bridge opens", "url": "https://news.example/bridge"}),
        ("article.unpublished", {"slug": "bridge-opens"}),
    ]


def test_a_replayed_delivery_fails_the_timestamp_check(tmp_path, receiver) -> None:
    with newsroom_app(tmp_path) as client:
        token, record = client.portal.call(
            client.app.state.tokens.create, "analytics", ["articles:write"], receiver.url
        )
        assert client.post("/api/webhooks/test", headers={"Authorization": f"Bearer {token}"}).status_code == 202
        [(headers, body)] = receiver.wait_for(1)
    assert json.loads(body)["type"] == "webhook.test" and verify(record.webhook_secret, headers, body)
    an_hour_later = {**headers, "X-Backchannel-Timestamp": str(int(headers["X-Backchannel-Timestamp"]) - 3600)}
    assert not verify(record.webhook_secret, an_hour_later, body)


def test_a_failed_delivery_is_retried_with_the_same_id(tmp_path) -> None:
    receiver = Receiver(failures=2)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with newsroom_app(tmp_path, webhook_attempts=3) as client:
            token, record = client.portal.call(
                client.app.state.tokens.create, "analytics", ["articles:write"], receiver.url
            )
            client.post("/api/webhooks/test", headers={"Authorization": f"Bearer {token}"})
            deliveries = receiver.wait_for(3)
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert len({headers["X-Backchannel-Delivery"] for headers, _ in deliveries}) == 1
    assert all(verify(record.webhook_secret, headers, body) for headers, body in deliveries)


def test_a_dead_endpoint_costs_a_bounded_queue_and_one_log_line(tmp_path, caplog) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: refused at once
    caplog.set_level(logging.INFO, logger="backchannel.webhooks")
    with newsroom_app(tmp_path, webhook_queue_size=5, webhook_attempts=3) as client:
        webhooks = client.app.state.webhooks
        client.portal.call(client.app.state.tokens.create, "analytics", ["articles:write"], dead)
        highest = 0
        for n in range(50):
            client.portal.call(webhooks.notify, "comment.published", {"n": n})  # on the app's loop
            highest = max(highest, webhooks.queued())
        deadline = time.monotonic() + 20
        while webhooks.queued() or webhooks._in_flight:  # no event to await: ask until it has given up
            assert time.monotonic() < deadline, webhooks.queued()
            time.sleep(0.05)
        dropped = webhooks.dropped
    lines = [r.getMessage() for r in caplog.records if r.name == "backchannel.webhooks"]
    print(f"\ndead webhook: 50 events, queue at most {highest} (size 5), {dropped} dropped; log: {lines}")
    assert highest <= 5 and dropped >= 45
    assert len([line for line in lines if dead in line]) == 1
    # The full queue is said once per overflow (when the worker drains it below half between
    # two bursts, the next overflow is said again): a few lines, not one per dropped delivery.
    full = [line for line in lines if "queue full" in line]
    assert len(lines) == 1 + len(full) and 1 <= len(full) <= 3


def test_an_endpoint_that_never_answers_does_not_slow_posts(tmp_path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as blackhole:  # connects, never reads, never answers
        hanging = f"http://127.0.0.1:{blackhole.getsockname()[1]}/hook"
        with newsroom_app(tmp_path) as client:
            client.portal.call(client.app.state.tokens.create, "analytics", ["articles:write"], hanging)
            alice = moderator_of(client)
            timings = []
            for n in range(5):
                started = time.monotonic()
                assert post_comment(alice, f"comment {n}").status_code in (200, 201)
                timings.append(time.monotonic() - started)
            queued = client.app.state.webhooks.queued() + len(client.app.state.webhooks._in_flight)
    print(
        f"\nposts with a hanging webhook: {', '.join(f'{t * 1000:.0f} ms' for t in timings)}; {queued} deliveries open"
    )
    # A delivery waits up to 5 s for the endpoint; a post that waited for one would take that long.
    assert max(timings) < 2.5 and queued >= 1
