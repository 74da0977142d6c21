"""What readers write: cleaned, limited in characters a person sees, rendered without markup."""

import pytest

from server.errors import Empty, TooLong
from server.text import clean_body, clean_name, grapheme_length, render_body


def test_markup_a_reader_writes_is_shown_as_text_never_run():
    html = render_body('<script>alert(1)</script> <img src=x onerror=alert(2)> "quoted" & \'single\'')
    assert "<script" not in html and "<img" not in html
    assert html == ("<p>&lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror=alert(2)&gt; "
                    "&#34;quoted&#34; &amp; &#39;single&#39;</p>")


def test_paragraphs_and_line_breaks_are_kept():
    assert render_body("one\ntwo\n\nthree") == "<p>one<br>two</p><p>three</p>"


def test_links_become_clickable_with_nofollow_ugc_noopener():
    html = render_body("see https://example.org/a?b=1&c=2 or www.example.com")
    assert ('<a href="https://example.org/a?b=1&amp;c=2" rel="nofollow ugc noopener" target="_blank">'
            "https://example.org/a?b=1&amp;c=2</a>") in html
    assert '<a href="http://www.example.com" rel="nofollow ugc noopener" target="_blank">www.example.com</a>' in html


@pytest.mark.parametrize("text", [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
])
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
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"  # one emoji made of five code points
    assert grapheme_length(family) == 1
    assert clean_body(family * 5000, 5000)
    with pytest.raises(TooLong):
        clean_body("x" * 5001, 5000)


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


def test_bodies_lose_bidi_overrides_but_keep_newlines():
    assert clean_body("abc\u202edef\r\nnext\u0007", 5000) == "abcdef\nnext"
