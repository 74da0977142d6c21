"""The article parser, pure, and the loader's handling of bad files."""

from pathlib import Path

import pytest

from server.content import ArticleError, load_articles, parse_article, slugify

from .servers import DEMO_SLUG, ROOT

GOOD = """A Title: With, Punctuation!

By Jane Roe | Science Writer

LONDON, March 1 – The dateline paragraph.

Second paragraph.

Third paragraph.

/// USER COMMENTS ///

Ann Lee, Teacher, Leeds: "First "quoted" thought."

Bo, Reader: "Second."

(Reporting by Jane Roe)

Share:

Leave a Reply
"""


def test_the_demo_article_parses_as_the_contract_says():
    article = parse_article((ROOT / "content/moscow-warns-western-troops.txt").read_text(), "demo")
    assert article.slug == DEMO_SLUG
    assert article.title == "Moscow Warns Western Troops in Ukraine Would Be 'Legitimate Targets'"
    assert (article.byline_name, article.byline_role) == ("Sophia Reynolds", "Financial Markets Editor")
    assert article.dateline.startswith("MOSCOW, Feb 2 (Reuters) – Russia has declared")
    assert len(article.paragraphs) == 7
    assert article.credit.startswith("Reporting by Reuters;")
    assert [c.name for c in article.seed_comments] == ["Markus Scholz", "Anya Petrova", "David Chen", "Claire Dubois"]
    assert article.seed_comments[0].about == "Political Analyst, Berlin"
    assert article.seed_comments[3].body.startswith("This is reckless brinkmanship.")
    assert not any("Share:" in p or "Leave a Reply" in p for p in article.paragraphs)


def test_every_part_of_an_article_is_found_and_page_chrome_is_dropped():
    article = parse_article(GOOD, "good.txt")
    assert article.slug == "a-title-with-punctuation"
    assert article.dateline == "LONDON, March 1 – The dateline paragraph."
    assert article.paragraphs == ("Second paragraph.", "Third paragraph.")
    assert article.credit == "Reporting by Jane Roe"
    assert [(c.name, c.about, c.body) for c in article.seed_comments] == [
        ("Ann Lee", "Teacher, Leeds", 'First "quoted" thought.'),
        ("Bo", "Reader", "Second."),
    ]


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Hello, World!", "hello-world"),
        ("  --Already--Dashed--  ", "already-dashed"),
        ("Ünïcode & Co. 2026", "unicode-co-2026"),
    ],
)
def test_slugs_follow_the_contract(title, slug):
    assert slugify(title) == slug


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("Only a title\n", "expected a byline"),
        ("Title\n\nNo byline here\n\nBody.\n", "expected a byline"),
        ("Title\n\nBy  | Role\n\nBody.\n", "no author name"),
        ("Title\n\nBy Jane | Role\n\n(Credit only)\n", "no body"),
        ("Title\n\nBy Jane | Role\n\nBody.\n\n/// USER COMMENTS ///\n\nNo colon or quotes\n", "user comment 1"),
        ("!!!\n\nBy Jane | Role\n\nBody.\n", "empty slug"),
    ],
)
def test_a_malformed_article_names_the_problem(text, problem):
    with pytest.raises(ArticleError, match=problem) as error:
        parse_article(text, "bad.txt")
    assert str(error.value).startswith("bad.txt: ")


def test_one_bad_file_does_not_stop_the_others_loading(tmp_path: Path):
    (tmp_path / "good.txt").write_text(GOOD)
    (tmp_path / "broken.txt").write_text("Title only\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "same-slug.txt").write_text(GOOD)
    articles, errors = load_articles(tmp_path)
    assert list(articles) == ["a-title-with-punctuation"]
    problems = {Path(e.source).name: e.problem for e in errors}
    assert set(problems) == {"broken.txt", "binary.txt", "same-slug.txt"}
    assert "UTF-8" in problems["binary.txt"]
    assert "already used" in problems["same-slug.txt"]
