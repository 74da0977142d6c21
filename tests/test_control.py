"""The control bus, pure: control messages decode once and reach the subscribers of their kind."""

from __future__ import annotations

import logging

import orjson
import pytest

from server.control import ControlBus, DeskUpdate, RulesChanged, SessionEnded, decode_control, encode_control
from server.protocol import DeskAction, DeskComment, DeskReport


@pytest.mark.parametrize(
    "message",
    [
        SessionEnded("s1"),
        DeskUpdate(DeskComment({"id": "c1", "status": "pending", "slug": "a"})),
        DeskUpdate(DeskReport({"comment": {"id": "c1"}, "reasons": ["spam"], "count": 1, "last_reported_at": "t"})),
        DeskUpdate(DeskAction({"at": "t", "moderator": "alice", "action": "remove"})),
        RulesChanged({"banned_words": ["x"]}),
    ],
)
def test_control_messages_survive_the_trip(message) -> None:
    assert decode_control(encode_control(message)) == message


def test_the_wire_form_is_what_every_instance_already_speaks() -> None:
    """Instances of the previous release are on the same channel during a rolling deploy."""
    assert orjson.loads(encode_control(SessionEnded("s1"))) == {"kind": "session_ended", "session": "s1"}
    assert orjson.loads(encode_control(DeskUpdate(DeskAction({"action": "ban"})))) == {
        "kind": "desk",
        "frame": {"type": "desk_action", "action": {"action": "ban"}},
    }


def test_each_kind_reaches_only_its_subscribers() -> None:
    bus, got = ControlBus(), []
    bus.subscribe(SessionEnded, lambda m: got.append(("sessions", m)))
    bus.subscribe(RulesChanged, lambda m: got.append(("spam", m)))
    bus.dispatch(encode_control(SessionEnded("s1")))
    bus.dispatch(encode_control(RulesChanged({"banned_words": []})))
    bus.dispatch(encode_control(DeskUpdate(DeskAction({}))))  # nobody here listens to the desk
    assert got == [("sessions", SessionEnded("s1")), ("spam", RulesChanged({"banned_words": []}))]


def test_malformed_and_unknown_messages_are_dropped(caplog) -> None:
    bus, got = ControlBus(), []
    for kind in (SessionEnded, DeskUpdate, RulesChanged):
        bus.subscribe(kind, got.append)
    with caplog.at_level(logging.WARNING, logger="backchannel.control"):
        for text in (
            "not json",
            "[]",
            '{"kind": "desk", "frame": {"type": "desk_nonsense"}}',
            '{"kind": "desk", "frame": {"type": "desk_action"}}',
            '{"kind": "rules_changed", "rules": 5}',
            '{"session": "no kind"}',
        ):
            bus.dispatch(text)
        bus.dispatch('{"kind": "from_a_newer_release"}')
    assert got == []
    assert len([r for r in caplog.records if "malformed" in r.message]) == 6


def test_a_failing_subscriber_does_not_keep_the_message_from_the_others() -> None:
    bus, got = ControlBus(), []

    def broken(message: SessionEnded) -> None:
        raise RuntimeError("a bug")

    bus.subscribe(SessionEnded, broken)
    bus.subscribe(SessionEnded, got.append)
    bus.dispatch(encode_control(SessionEnded("s1")))
    assert got == [SessionEnded("s1")]
