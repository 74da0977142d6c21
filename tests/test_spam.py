"""Spam rules: the matcher (pure) and the rules applied to posts (in-process)."""

from __future__ import annotations

from server.spam import Rules, text_fingerprint

from .servers import DEMO_SLUG
from .visitors import token


def test_listed_words_and_phrases_match_whatever_their_case_or_punctuation():
    rules = Rules.from_dict({"banned_words": ["Casino", "buy now", "ｆｒｅｅ　ｍｏｎｅｙ"], "suspect_words": "crypto\n"})
    assert rules.matches("Visit our CASINO!", banned=True) == "casino"
    assert rules.matches("please... BUY, now", banned=True) == "buy now"
    assert rules.matches("free money here", banned=True) == "free money"  # the list is NFKC-normalised too
    assert rules.matches("casinos and buying", banned=True) is None  # whole words only
    assert rules.matches("my crypto wallet", banned=False) == "crypto"
    assert rules.matches("my crypto wallet", banned=True) is None


def test_list_entries_longer_than_the_phrase_limit_are_dropped_not_slowing_every_match():
    rules = Rules.from_dict({"banned_words": ["one two three four", "ok phrase here"]})
    assert rules.banned_words == ("ok phrase here",)


def test_a_huge_list_and_a_huge_comment_still_match_correctly():
    listed = [f"word{n}" for n in range(5000)]
    rules = Rules.from_dict({"banned_words": listed})
    comment = " ".join(f"clean{n}" for n in range(5000)) + " word4999"
    assert rules.matches(comment, banned=True) == "word4999"


def test_the_same_text_has_the_same_fingerprint_whatever_the_spacing():
    assert text_fingerprint("Buy NOW!!  at example") == text_fingerprint("buy now at   example.")
    assert text_fingerprint("buy now") != text_fingerprint("now buy")


def post(browser_, body: str, name: str = "Reader"):
    return browser_.post(f"/api/articles/{DEMO_SLUG}/comments", json={"name": name, "body": body},
                         headers={"X-CSRF-Token": token(browser_)})


def save_rules(moderator_, **rules):
    response = moderator_.post("/api/moderation/rules", json=rules, headers={"X-CSRF-Token": token(moderator_)})
    assert response.status_code == 200, response.text
    return response.json()["rules"]


def test_the_same_text_twice_is_refused_as_a_repeat(reader):
    assert post(reader, "I said this").status_code == 201
    again = post(reader, "i said  THIS!")
    assert again.status_code == 409 and again.json()["error"]["code"] == "repeat"
    assert post(reader, "I said something else").status_code == 201


def test_banned_words_refuse_and_suspect_words_hold_and_the_moderators_edit_them(moderator, reader):
    assert post(reader, "Win at the casino tonight").status_code == 201  # not listed yet
    save_rules(moderator, banned_words=["casino"], suspect_words=["lottery"])
    refused = post(reader, "Another casino offer")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "rejected"
    held = post(reader, "Lottery results are in")
    assert held.status_code == 202 and held.json()["comment"]["status"] == "pending"
    audit = moderator.get("/api/moderation/audit").json()
    assert audit[0]["action"] == "rules" and "banned_words" in audit[0]["detail"]


def test_links_from_a_reader_new_to_the_site_are_held(reader, moderator):
    links = "see https://a.example https://b.example https://c.example"
    assert post(reader, links).status_code == 202
    assert post(moderator, links + " (moderator)").status_code == 201  # moderators are not held
    save_rules(moderator, new_reader_comments=0)
    assert post(reader, links + " again").status_code == 201


def test_a_readers_first_comments_can_be_premoderated(moderator, new_visitor):
    save_rules(moderator, premoderate_first_comments=1)
    newcomer = new_visitor()
    first = post(newcomer, "my first comment")
    assert first.status_code == 202
    moderator.post(f"/api/comments/{first.json()['comment']['id']}/approve", json={},
                   headers={"X-CSRF-Token": token(moderator)})
    assert post(newcomer, "my second comment").status_code == 201  # one published: trusted now


def test_the_rules_page_and_api_are_for_moderators_only(reader, moderator):
    assert reader.get("/api/moderation/rules").status_code == 401
    assert reader.post("/api/moderation/rules", json={"banned_words": ["x"]},
                       headers={"X-CSRF-Token": token(reader)}).status_code == 401
    assert reader.get("/moderation/rules", follow_redirects=False).status_code == 303
    page = moderator.get("/moderation/rules")
    assert page.status_code == 200 and "Banned words" in page.text
    form = moderator.post("/api/moderation/rules", follow_redirects=False,
                          data={"csrf_token": token(moderator), "banned_words": "spam\r\neggs", "next": "/moderation/rules"})
    assert form.status_code == 303 and moderator.get("/api/moderation/rules").json()["banned_words"] == ["eggs", "spam"]
