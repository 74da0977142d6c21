"""What readers write: cleaned, limited in characters a person sees, rendered without markup."""

import pytest

from server.errors import Empty, InvalidMessage, TooLong
from server.text import (
    CODE_POINTS_PER_CHARACTER,
    clean_body,
    clean_name,
    clean_ref,
    grapheme_length,
    name_skeletons,
    render_body,
)

from .servers import DEMO_SLUG
from .visitors import PASSWORD, token


def test_markup_a_reader_writes_is_shown_as_text_never_run():
    html = render_body("<script>alert(1)</script> <img src=x onerror=alert(2)> \"quoted\" & 'single'")
    assert "<script" not in html and "<img" not in html
    assert html == (
        "<p>&lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(2)&gt; "
        "&#34;quoted&#34; &amp; &#39;single&#39;</p>"
    )


def test_paragraphs_and_line_breaks_are_kept():
    assert render_body("one\ntwo\n\nthree") == "<p>one<br>two</p><p>three</p>"


def test_links_become_clickable_with_nofollow_ugc_noopener():
    html = render_body("see https://example.org/a?b=1&c=2 or www.example.com")
    assert (
        '<a href="https://example.org/a?b=1&amp;c=2" rel="nofollow ugc noopener" target="_blank">'
        "https://example.org/a?b=1&amp;c=2</a>"
    ) in html
    assert '<a href="http://www.example.com" rel="nofollow ugc noopener" target="_blank">www.example.com</a>' in html


@pytest.mark.parametrize(
    "text",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(document.cookie)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
    ],
)
def test_only_http_and_mailto_links_are_made(text):
    assert "<a " not in render_body(text)


def test_a_quote_cannot_break_out_of_a_link():
    html = render_body('https://example.org/"onmouseover="alert(1)')
    assert 'href="https://example.org/&#34;onmouseover=&#34;alert(1)"' in html
    assert '"onmouseover' not in html


def test_empty_and_whitespace_only_comments_are_refused():
    for body in ("", "   ", "\n\n\t", "\u200b\u202e"):
        with pytest.raises(Empty):
            clean_body(body, 5000)


def test_lengths_count_what_a_person_sees():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji made of five code points
    assert grapheme_length(family) == 1
    assert clean_body(family * 1000 + "e\u0301" * 4000, 5000) == family * 1000 + "\u00e9" * 4000
    with pytest.raises(TooLong):
        clean_body("x" * 5001, 5000)


def test_one_character_cannot_carry_any_number_of_code_points():
    # A run of U+1100 is one grapheme cluster: 20,000 of them were stored as a one-character name.
    assert grapheme_length("\u1100" * 20_000) == 1
    with pytest.raises(TooLong):
        clean_name("\u1100" * 20_000, 80, "name", required=True)
    with pytest.raises(TooLong):
        clean_body("\u1100" * 30_000, 5000)
    with pytest.raises(TooLong):
        clean_name("a" + "\u1100" * (80 * CODE_POINTS_PER_CHARACTER), 80, "name", required=True)
    assert clean_name("\u1100" * (80 * CODE_POINTS_PER_CHARACTER), 80, "name", required=True)


def test_a_ref_is_at_most_128_characters_as_documented():
    assert clean_ref("r" * 128) == "r" * 128
    assert clean_ref("") is None and clean_ref(None) is None
    with pytest.raises(InvalidMessage):
        clean_ref("r" * 129)


def test_combining_mark_floods_are_cut_down():
    zalgo = "Z" + "\u0301" * 500
    assert len(clean_body(zalgo, 5000)) <= 5  # the letter and at most four marks


def test_names_lose_control_bidi_and_invisible_characters():
    assert clean_name("Ad\u202emin\u200b\u0000 \t Jones", 80, "name", required=True) == "Admin Jones"
    assert clean_name("\uff21\uff4e\uff4e", 80, "name", required=True) == "Ann"  # NFKC: fullwidth letters
    with pytest.raises(Empty):
        clean_name("\u202e\u200b", 80, "name", required=True)
    assert clean_name("", 120, "description", required=False) is None
    with pytest.raises(TooLong):
        clean_name("n" * 81, 80, "name", required=True)


INVISIBLES = [
    "\u200d",
    "\u200c",
    "\u00ad",
    "\u034f",
    "\u200e",
    "\u2062",
    "\U000e0020",
    "\ufe0f",
    "\u180b",
    "\u3164",
    "\u115f",
    "\uffa0",
    "\u200b",
    "\u2060",
    "\ufeff",
]


@pytest.mark.parametrize("invisible", INVISIBLES, ids=[f"U+{ord(c):04X}" for c in INVISIBLES])
def test_names_and_bodies_lose_every_default_ignorable_character(invisible):
    # "mod\u3164" was shown exactly as a moderator's "mod".
    assert clean_name(f"mod{invisible}", 80, "name", required=True) == "mod"
    assert clean_name(f"m{invisible}od", 80, "name", required=True) == "mod"
    assert clean_body(f"sp{invisible}am", 5000) == "spam"


def test_bodies_keep_the_invisible_characters_emoji_and_scripts_draw_with():
    kept = [
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a family: ZWJ between emoji
        "\u2764\ufe0f",
        "1\ufe0f\u20e3",  # emoji presentation, a keycap
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland's flag
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: ZWNJ between letters
        "\u0915\u094d\u200d\u0937",  # Devanagari: ZWJ after a virama
        "\u845b\U000e0100",
    ]  # an ideographic variation sequence
    for text in kept:
        assert clean_body(text, 5000) == text


def test_bodies_lose_bidi_overrides_but_keep_newlines():
    assert clean_body("abc\u202edef\r\nnext\u0007", 5000) == "abcdef\nnext"


@pytest.mark.parametrize(
    "look_alike", ["mod\u3164", "m\u200dod", "MOD", "m0d", "mod\u034f", "\u041cod", "mo\u0501", "\uff4d\uff4f\uff44"]
)
def test_a_name_that_looks_like_another_shares_a_skeleton_with_it(look_alike):
    assert name_skeletons(look_alike) & name_skeletons("mod")


def test_a_reader_cannot_post_as_a_moderator_with_an_invisible_filler_or_a_digit(app_client, reader):
    # Only a display name is reserved (a login name never is): alice's is "alice" here.
    app_client.portal.call(app_client.app.state.moderation.create_moderator, "alice", PASSWORD, "alice")
    for look_alike in ("alice\u3164", "al1ce", "a\u200blice", "\u0430lice"):
        response = reader.post(
            f"/api/articles/{DEMO_SLUG}/comments",
            json={"name": look_alike, "body": "hi"},
            headers={"X-CSRF-Token": token(reader)},
        )
        assert response.status_code == 403, look_alike


def test_a_json_post_with_a_ref_over_128_characters_is_refused(reader):
    response = reader.post(
        f"/api/articles/{DEMO_SLUG}/comments",
        json={"name": "Ann", "body": "hi", "ref": "r" * 200_000},
        headers={"X-CSRF-Token": token(reader)},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_message"
