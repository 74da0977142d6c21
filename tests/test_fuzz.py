"""Property and fuzz tests (hypothesis) of what a reader can send us.

- The frame parser: any text, any bytes, any JSON shape -> a Post, or InvalidMessage. Nothing else.
- The text cleaner and renderer, fed adversarial unicode and markup: the HTML that comes out
  holds only <p>, <br> and <a href=http(s)/mailto rel=... target=_blank>, shows exactly the
  text that went in, is stable, and the cleaners are idempotent and keep their limits.

Each property is checked against an oracle written here, not against the code under test, so
a renderer that let a tag, an attribute or a scheme through, or dropped text, fails.
"""

from __future__ import annotations

import json
import unicodedata
from html.parser import HTMLParser

import pytest
import regex
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server.errors import Empty, InvalidMessage, TooLong
from server.protocol import Post, parse_client_frame
from server.text import CODE_POINTS_PER_CHARACTER, clean_body, clean_name, render_body

# About 10 s for the whole file on 2 cores. A failure prints its falsifying example: pin it with
# @example. (Hypothesis keeps its example database in .hypothesis/, which ignores itself in git.)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_MORE = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- adversarial ingredients ---------------------------------------------------------------------

BIDI = [
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
]
INVISIBLE = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u180e",
    "\u00ad",
    "\u034f",
    "\u2061",
    "\u2064",
    "\ufe0f",
    "\U000e0041",
    "\u115f",
    "\u3164",
]
MARKS = [
    "\u0301",
    "\u0308",
    "\u0323",
    "\u0344",
    "\u0345",
    "\u0f73",
    "\u0f75",
    "\u20dd",
    "\u0903",
    "\u3099",
    "\u05b0",
    "\u0e31",
    "\u1ab0",
    "\u0300\u0301\u0302\u0303\u0304\u0305",
]
SPACES_AND_CONTROLS = [
    "\n",
    "\r",
    "\r\n",
    "\t",
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\x0b",
    "\x0c",
    "\u2028",
    "\u2029",
    "\u00a0",
    "\u3000",
    "\u1680",
    "\u200a",
    "\u205f",
    " ",
    "\n\n",
    "\n \n",
    "\n\u3000\n",
    "\n\n\n\n",
]
COMPOSING = [
    "e",
    "a",
    "o",
    "\u1100",
    "\u1161",
    "\u11a8",
    "\uac00",
    "\u0915",
    "\u093c",
    "\u1e9b",
    "\u0130",
    "\u212b",
    "\u2126",
    "\ufb01",
    "\u2460",
    "\uff1c",
    "\ufe64",
    "\u2174",
    "\u33a1",
    "\u00bd",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f44d\U0001f3fd",
    "\U0001f1fa\U0001f1f8",
]
MARKUP = [
    "<",
    ">",
    "&",
    '"',
    "'",
    "`",
    "=",
    "/",
    "<script>",
    "</script>",
    "<SCRIPT SRC=//x.example/x.js>",
    "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    " onmouseover=alert(1) ",
    '" onfocus="alert(1)" autofocus="',
    "</textarea>",
    "</title>",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<p>",
    "</p>",
    "<br>",
    "<math><mtext><table><mglyph><style>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<template>",
    "<iframe srcdoc=",
    "&lt;",
    "&#60;",
    "&#x3C;",
    "&amp;lt;",
    "&quot;",
    "&#34;",
    "&NewLine;",
    "&colon;",
    "\\u003c",
    "%3Cscript%3E",
    "<style>*{x:expression(alert(1))}</style>",
    "<?xml ?>",
    "<!DOCTYPE html>",
    "<base href=//x.example/>",
    "<meta http-equiv=refresh content=0;url=javascript:alert(1)>",
]
URLS = [
    "http://example.org",
    "https://example.org/a?b=1&c=2",
    "www.example.com",
    "example.org/path",
    "mailto:ann@example.org",
    "ann@example.org",
    'https://example.org/"onclick="alert(1)',
    "https://example.org/'onclick='alert(1)'",
    "http://example.org/<script>",
    "https://例え.jp/パス",
    "http://xn--80ak6aa92e.com/",
    "https://example.org/javascript:alert(1)",
    "http://[::1]:8000/",
    "http://user:pass@example.org/",
    'https://example.org/#"><svg onload=alert(1)>',
    "//example.org/x",
    "ftp://example.org/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "java&#x09;script:alert(1)",
    " javascript:alert(1)",
    "vbscript:msgbox(1)",
    "VBScript:x",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "data:image/svg+xml,<svg onload=alert(1)>",
    "http://example.org/\u202e",
    "https://example.org/\u200b/x",
    "https://ex.org/a)b(c].d}",
    "http://a.b",
    "https://example.org/?q=\u0000",
    "http://ex.org/%0d%0aSet-Cookie:x",
    "https://example.org:99999/",
    "https://exa\u0301mple.org/",
    "https://\uff45xample.org/",
]

FRAGMENTS = BIDI + INVISIBLE + MARKS + SPACES_AND_CONTROLS + COMPOSING + MARKUP + URLS

any_char = st.characters(exclude_categories=["Cs"])  # every code point a UTF-8 frame can carry
adversarial_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.sampled_from(FRAGMENTS), st.text(any_char, max_size=8), any_char),
    max_size=40,
).map("".join)
# Long runs of one mark and long words make the flood and length rules work.
floods = st.tuples(
    st.sampled_from(["Z", "e", "\u1100", " ", "\u200d", ""]), st.sampled_from(MARKS), st.integers(0, 40)
).map(lambda t: t[0] + t[1] * t[2])
reader_text = st.one_of(
    adversarial_text,
    st.text(any_char, max_size=60),
    st.lists(st.one_of(adversarial_text, floods), max_size=5).map("".join),
)


# --- an HTML oracle: what a browser would build from the rendered HTML ----------------------------

ALLOWED_REL = "nofollow ugc noopener"
SAFE_SCHEMES = ("http://", "https://", "mailto:")


class RenderedComment(HTMLParser):
    """Parses render_body's output; records anything that is not the allowed shape."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.stack: list[str] = []
        self.paragraphs = 0
        self.text: list[str] = []
        self.hrefs: list[str] = []
        self.link_texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = [name for name, _ in attrs]
        if tag == "p":
            if self.stack:
                self.problems.append(f"<p> nested in {self.stack}")
            if self.paragraphs:
                self.text.append("\n\n")
            self.paragraphs += 1
            self.stack.append("p")
            if attrs:
                self.problems.append(f"<p> with attributes {attrs}")
        elif tag == "br":
            if self.stack != ["p"]:
                self.problems.append(f"<br> outside a bare paragraph: {self.stack}")
            if attrs:
                self.problems.append(f"<br> with attributes {attrs}")
            self.text.append("\n")
        elif tag == "a":
            if self.stack != ["p"]:
                self.problems.append(f"<a> outside a bare paragraph: {self.stack}")
            self.stack.append("a")
            self.link_texts.append("")
            if sorted(names) != ["href", "rel", "target"] or len(set(names)) != 3:
                self.problems.append(f"<a> with attributes {names}")
            values = dict(attrs)
            if values.get("rel") != ALLOWED_REL or values.get("target") != "_blank":
                self.problems.append(f"<a> with rel/target {values}")
            href = values.get("href") or ""
            self.hrefs.append(href)
            # What a browser makes of it: leading C0/space stripped, tab/newline removed anywhere.
            seen = regex.sub(r"[\t\n\r]", "", href).lstrip("".join(map(chr, range(0x21)))).lower()
            if not seen.startswith(SAFE_SCHEMES):
                self.problems.append(f"href with an unsafe scheme: {href!r}")
        else:
            self.problems.append(f"tag <{tag}> {attrs}")
        if any(name.startswith("on") for name in names):
            self.problems.append(f"event handler attribute on <{tag}>")

    def handle_startendtag(self, tag, attrs):
        self.problems.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> does not close {self.stack}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        if not self.stack:
            self.problems.append(f"text outside a paragraph: {data!r}")
        self.text.append(data)
        if self.stack and self.stack[-1] == "a":
            self.link_texts[-1] += data

    def handle_comment(self, data):
        self.problems.append(f"comment <!--{data}-->")

    def handle_decl(self, decl):
        self.problems.append(f"declaration <!{decl}>")

    def handle_pi(self, data):
        self.problems.append(f"processing instruction <?{data}>")

    def unknown_decl(self, data):
        self.problems.append(f"unknown declaration {data}")


def parse_rendered(rendered: str) -> RenderedComment:
    parser = RenderedComment()
    parser.feed(rendered)
    parser.close()
    if parser.stack:
        parser.problems.append(f"unclosed {parser.stack}")
    return parser


def shown_text(text: str) -> str:
    """What a reader should see: paragraphs split at blank lines, each trimmed, empty ones gone."""
    return "\n\n".join(p.strip() for p in regex.split(r"\n\s*\n", text) if p.strip())


def assert_safe_rendering(text: str) -> str:
    rendered = render_body(text)
    assert isinstance(rendered, str)
    lowered = rendered.lower()
    assert "<script" not in lowered
    for tag in regex.findall(r"<[^>]*>", rendered):
        assert not regex.search(r"\son\w+\s*=", tag, flags=regex.I), tag
        assert regex.fullmatch(r"</?(p|br|a)(\s[^>]*)?>", tag), tag
    parsed = parse_rendered(rendered)
    assert parsed.problems == [], (text, rendered, parsed.problems)
    # Nothing is lost and nothing is added: the reader sees exactly the text, as text.
    assert "".join(parsed.text) == shown_text(text), (text, rendered)
    # A link shows the text it was made from; its target is an http(s)/mailto URL (the parser's problems).
    for label in parsed.link_texts:
        assert label and label in text
    # Stable: the same text renders to the same HTML.
    assert render_body(text) == rendered
    return rendered


# --- the frame parser ----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(any_char, max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(any_char, max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = {"ref": 128, "body": 64_000, "parent": 64, "name": 1000, "about": 1000}


def field_values(cap: int):
    return st.one_of(
        json_values, st.text(any_char, max_size=30), st.integers(cap - 2, cap + 2).map(lambda n: "r" * n), st.just("")
    )


post_shaped = st.fixed_dictionaries(
    {
        "type": st.one_of(
            st.just("post"), st.just("post"), st.sampled_from(["Post", "post ", "subscribe", ""]), json_values
        )
    },
    optional={key: field_values(cap) for key, cap in FIELDS.items()}
    | {"extra": json_values, "__proto__": json_values, "constructor": json_values},
)


def expected_post(data) -> Post | None:
    """The oracle: the Post a JSON document must parse to, or None where it must be refused."""
    if not isinstance(data, dict) or data.get("type") != "post":
        return None
    values = {}
    for key, cap in FIELDS.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > cap):
            return None
        values[key] = value
    return Post(
        ref=values["ref"],
        body=values["body"] or "",
        parent=values["parent"] or None,
        name=values["name"] or "",
        about=values["about"],
    )


def parse_or_refuse(frame: str | bytes) -> Post | None:
    """parse_client_frame, allowed to return a Post or raise InvalidMessage and nothing else."""
    try:
        post = parse_client_frame(frame)
    except InvalidMessage as refused:
        # Either outcome is allowed, so pytest.raises does not fit: the refusal is checked here.
        assert refused.code == "invalid_message"  # noqa: PT017
        assert isinstance(refused.message, str) and 0 < len(refused.message) <= 200  # noqa: PT017
        return None
    assert type(post) is Post
    assert post.ref is None or (isinstance(post.ref, str) and len(post.ref) <= 128)
    assert isinstance(post.body, str) and len(post.body) <= 64_000
    assert post.parent is None or (isinstance(post.parent, str) and 0 < len(post.parent) <= 64)
    assert isinstance(post.name, str) and len(post.name) <= 1000
    assert post.about is None or (isinstance(post.about, str) and len(post.about) <= 1000)
    return post


@FUZZ
@given(st.one_of(st.text(st.characters(), max_size=200), st.binary(max_size=200)))
@example("")
@example(b"\xff\xfe")
@example("\ud800")
@example('"\\ud800"')
@example("[" * 100_000)
@example('{"type":"post","body":' * 2000)
@example('{"type": "post", "name": "A", "body": "x"}' + "\x00")
@example('\ufeff{"type": "post", "name": "A", "body": "x"}')
@example('{"type": "post", "name": "A", "body": "x", "body": 5}')
@example('{"type": 1e999}')
@example('{"type": "post", "name": "A", "body": "\\u0000"}')
def test_any_text_or_bytes_parse_to_a_post_or_are_refused(frame):
    parse_or_refuse(frame)


@FUZZ_MORE
@given(st.one_of(post_shaped, json_values), st.booleans())
@example({"type": "post", "name": "A", "body": "x", "ref": "r" * 129}, False)
@example({"type": "post", "name": "A", "body": "x", "parent": ""}, True)
@example({"type": "post", "name": "A", "body": float("nan")}, False)
@example({"type": ["post"], "name": "A", "body": "x"}, False)
def test_any_json_document_parses_exactly_as_the_protocol_says(data, as_bytes):
    frame = json.dumps(data, allow_nan=True)
    got = parse_or_refuse(frame.encode() if as_bytes else frame)
    try:
        json.dumps(data, allow_nan=False)
    except ValueError:  # NaN/Infinity are not JSON: refused whatever the rest says
        assert got is None
        return
    assert got == expected_post(data)


# --- cleaning and rendering ----------------------------------------------------------------------


def clean_or_refuse(clean, *args):
    try:
        return clean(*args)
    except (Empty, TooLong):
        return None


@FUZZ_MORE
@given(reader_text)
@example("<script>alert(1)</script>")
@example("e\u200b\u0301")
@example("a" + "\u0344" * 3)
@example("a\u0301\u0301\u0301\u0301\u200b\u0301")
@example("\u1100\u200b\u1161")
@example("x\n\u200b\n\ny")
@example('https://example.org/"onclick="alert(1)')
def test_a_cleaned_comment_renders_to_safe_html_that_shows_exactly_its_text(raw):
    text = clean_or_refuse(clean_body, raw, 5000)
    if text is None:
        return
    assert_safe_rendering(text)
    # What the cleaner promises (docs/protocol.md): no bidi embeddings/overrides/isolates, no
    # zero-width spaces, no controls but newline and tab, at most four marks on one letter.
    assert not regex.search(r"[\u202a-\u202e\u2066-\u2069\u200b\u2060\ufeff\u180e\r]", text)
    assert not regex.search(r"[\p{Cc}--[\n\t]]", text, flags=regex.V1)
    assert not regex.search(r"\p{M}{5}", text)
    assert text == text.strip() and "\n\n\n" not in text


@FUZZ
@given(reader_text)
def test_even_uncleaned_text_renders_to_safe_html(raw):
    assert_safe_rendering(raw)


@FUZZ_MORE
@given(reader_text)
@example("e\u200b\u0301")
@example("a\u0301\u0301\u0301\u0301\u200b\u0301")
@example("\u1100\u200b\u1161")
@example("a" + "\u0344" * 3)
@example("x \u200b\n\n\ny")
@example("\u0300\u0300\u0300\u0300\u08fb\u200c\u0600")  # a flood cut left a joiner with nothing to join
def test_cleaning_a_comment_twice_changes_nothing(raw):
    once = clean_or_refuse(clean_body, raw, 5000)
    if once is None:
        return
    assert clean_body(once, 5000) == once
    assert render_body(clean_body(once, 5000)) == render_body(once)


@FUZZ_MORE
@given(reader_text, st.booleans())
@example("e\u200b\u0301", True)
@example("a\u0301\u0301\u0301\u0301\u200b\u0301", True)
@example("\u1100\u200b\u1161", True)
@example("a" + "\u0344" * 3, True)
@example("Ad\u202emin\u200b\u0000 \t Jones", True)
def test_cleaning_a_name_twice_changes_nothing(raw, required):
    once = clean_or_refuse(clean_name, raw, 80, "name", required)
    if once is None:
        return
    assert clean_name(once, 80, "name", required) == once
    # What the cleaner promises: NFKC, no control/format/line-separator characters, single spaces.
    assert unicodedata.is_normalized("NFKC", once)
    assert not regex.search(r"[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]", once)
    assert once == " ".join(once.split())
    assert not regex.search(r"\p{M}{5}", once)


@FUZZ
@given(reader_text, st.integers(1, 12))
@example("\U0001f468\u200d\U0001f469\u200d\U0001f467" * 3, 3)
@example("Z" + "\u0301" * 40 + "a", 2)
def test_a_cleaned_text_never_exceeds_its_limit_in_characters_a_person_sees(raw, limit):
    unlimited = clean_or_refuse(clean_body, raw, 10**9)
    limited = clean_or_refuse(clean_body, raw, limit)
    if unlimited is not None:
        seen = len(regex.findall(r"\X", unlimited))
        fits = seen <= limit and len(unlimited) <= limit * CODE_POINTS_PER_CHARACTER
        assert limited == (unlimited if fits else None)
        if not fits:
            with pytest.raises(TooLong):
                clean_body(raw, limit)
    if limited is not None:
        assert len(regex.findall(r"\X", limited)) <= limit

    for clean_limit in (limit, 80):
        name = clean_or_refuse(clean_name, raw, clean_limit, "name", True)
        if name is not None:
            assert len(regex.findall(r"\X", name)) <= clean_limit
        unlimited_name = clean_or_refuse(clean_name, raw, 10**9, "name", True)
        if unlimited_name is not None and len(regex.findall(r"\X", unlimited_name)) > clean_limit:
            assert name is None


@FUZZ
@given(st.lists(st.sampled_from(URLS + MARKUP + [" ", "\n", "x", "."]), min_size=1, max_size=12).map("".join))
def test_links_are_only_ever_http_https_or_mailto(raw):
    assert_safe_rendering(raw)
