"""The wire protocol, pure: client frames parse to a typed message or a typed error."""

import orjson
import pytest

from server.errors import InvalidMessage
from server.protocol import (
    Ack,
    DeskAction,
    DeskComment,
    DeskReport,
    DeskWelcome,
    Error,
    Event,
    Pending,
    Post,
    Presence,
    Reset,
    Welcome,
    decode_event,
    desk_frame,
    encode,
    parse_client_frame,
)


def test_a_post_frame_parses_to_a_post():
    frame = '{"type": "post", "ref": "r1", "body": "Hello", "parent": null, "name": "Ann", "about": "Leeds"}'
    assert parse_client_frame(frame) == Post(ref="r1", body="Hello", parent=None, name="Ann", about="Leeds")


def test_optional_fields_may_be_left_out():
    assert parse_client_frame('{"type": "post", "body": "x", "name": "A"}') == Post(
        ref=None, body="x", parent=None, name="A", about=None
    )


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"post"', "JSON object"),
        ("{}", 'no "type"'),
        ('{"type": "subscribe"}', "unknown message type 'subscribe'"),
        ('{"type": "post", "body": 5, "name": "A"}', '"body" must be a string'),
        ('{"type": "post", "body": "x", "name": ["A"]}', '"name" must be a string'),
        ('{"type": "post", "body": "x", "name": "A", "ref": "' + "r" * 200 + '"}', '"ref" is too long'),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(frame, says):
    with pytest.raises(InvalidMessage, match=says) as refused:
        parse_client_frame(frame)
    assert refused.value.code == "invalid_message"


def test_server_frames_encode_with_their_type_and_without_empty_optionals():
    assert orjson.loads(encode(Welcome(seq=3, readers=2, epoch="e1"))) == {
        "type": "welcome",
        "seq": 3,
        "readers": 2,
        "epoch": "e1",
        "state": "open",
    }
    assert orjson.loads(encode(Error(code="empty", message="The comment is empty."))) == {
        "type": "error",
        "code": "empty",
        "message": "The comment is empty.",
    }
    assert orjson.loads(encode(Error(code="rate_limited", message="m", ref="r", retry_after=4)))["retry_after"] == 4
    assert orjson.loads(encode(Ack(ref="r", id="c1", seq=9))) == {"type": "ack", "ref": "r", "id": "c1", "seq": 9}
    assert orjson.loads(encode(Presence(readers=7))) == {"type": "presence", "readers": 7}
    assert orjson.loads(encode(Reset(seq=4, epoch="e"))) == {"type": "reset", "seq": 4, "epoch": "e"}


def test_an_event_round_trips_through_the_log_unchanged():
    event = Event("comment", 12, {"comment": {"id": "c1", "body": "<b>hi</b>"}})
    assert decode_event(encode(event)) == event
    assert orjson.loads(encode(event)) == {"type": "comment", "seq": 12, "comment": {"id": "c1", "body": "<b>hi</b>"}}


def test_every_frame_the_server_sends_is_encoded_in_one_place():
    comment = {"id": "c1", "status": "pending", "body": "held"}
    assert orjson.loads(encode(Pending(comment))) == {"type": "pending", "comment": comment}
    assert orjson.loads(encode(DeskWelcome(moderator="alice"))) == {"type": "desk_welcome", "moderator": "alice"}
    assert orjson.loads(encode(DeskComment(comment))) == {"type": "desk_comment", "comment": comment}
    assert orjson.loads(encode(DeskReport({"count": 1}))) == {"type": "desk_report", "report": {"count": 1}}
    assert orjson.loads(encode(DeskAction({"action": "ban"}))) == {"type": "desk_action", "action": {"action": "ban"}}


def test_a_desk_frame_carried_as_an_object_comes_back_as_its_dataclass():
    assert desk_frame({"type": "desk_action", "action": {"action": "ban"}}) == DeskAction({"action": "ban"})
    for malformed in ({"type": "welcome", "seq": 1}, {"type": "desk_action"}, {"action": {}}):
        with pytest.raises((KeyError, TypeError)):
            desk_frame(malformed)
