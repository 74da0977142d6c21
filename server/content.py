"""Article files -> Article. Pure: no I/O beyond reading the files in load_articles.

The format (see content/*.txt): a title line, a byline `By NAME | ROLE`, a dateline
paragraph, body paragraphs, optionally a `/// USER COMMENTS ///` section of
`Name, Role, Place: "text"` entries, and a credit line in parentheses. Everything after
the credit ("Share:", "Leave a Reply", ...) is page chrome from the source site and is dropped.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("backchannel.content")

COMMENTS_MARKER = "/// USER COMMENTS ///"
_COMMENT_ENTRY = re.compile(r'^(?P<who>[^:"]+):\s*"(?P<text>.*)"\s*$', re.DOTALL)


@dataclass(frozen=True)
class SeedComment:
    name: str
    about: str | None
    body: str


@dataclass(frozen=True, slots=True)  # slots: every instance holds a summary of each article
class Article:
    slug: str
    title: str
    byline_name: str
    byline_role: str | None
    dateline: str
    paragraphs: tuple[str, ...]
    credit: str | None
    seed_comments: tuple[SeedComment, ...]
    source: str
    # When the newsroom published it (ISO-8601 UTC); None for a file article without one.
    published_at: str | None = None
    url: str | None = None  # the canonical URL of the newsroom's own page, if any
    section: str | None = None
    tags: tuple[str, ...] = ()
    updated_at: str | None = None  # ISO-8601 UTC, set by the store's last write
    # The SHA-256 of the file it was read from (None: from the API). A file whose hash is the
    # stored one is not written again, so a restart neither churns nor undoes an API change.
    file_hash: str | None = None


class ArticleError(ValueError):
    """A malformed article file; names the file and the problem."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


def slugify(title: str) -> str:
    """Lower-case, every run of non-alphanumerics turned into one '-', trimmed of '-'.
    Accents are dropped first (NFKD), so "Ünïcode" gives "unicode", not "n-code"."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^0-9a-z]+", "-", ascii_title.lower()).strip("-")


def _paragraphs(text: str) -> list[str]:
    blocks = re.split(r"\n\s*\n", text)
    return [" ".join(line.strip() for line in b.strip().splitlines()) for b in blocks if b.strip()]


def _is_credit(paragraph: str) -> bool:
    return paragraph.startswith("(") and paragraph.endswith(")")


def parse_article(text: str, source: str = "<article>") -> Article:
    lines = text.replace("\r\n", "\n").strip().split("\n", 1)
    title = lines[0].strip()
    if not title:
        raise ArticleError(source, "the file is empty")
    # The byline may follow the title line directly, without a blank line.
    paragraphs = _paragraphs(lines[1] if len(lines) > 1 else "")
    if not paragraphs:
        raise ArticleError(source, "nothing after the title line: expected a byline 'By NAME | ROLE'")
    byline = paragraphs.pop(0)
    if not byline.startswith("By "):
        raise ArticleError(source, f"expected a byline 'By NAME | ROLE' after the title, found {byline[:60]!r}")
    name, _, role = byline[3:].partition("|")
    if not name.strip():
        raise ArticleError(source, "the byline has no author name")

    body: list[str] = []
    comment_blocks: list[str] = []
    credit: str | None = None
    in_comments = False
    for p in paragraphs:
        if p == COMMENTS_MARKER:
            in_comments = True
        elif _is_credit(p):
            credit = p[1:-1].strip()
            break  # page chrome follows the credit
        elif in_comments:
            comment_blocks.append(p)
        else:
            body.append(p)
    if not body:
        raise ArticleError(source, "the article has no body: expected a dateline paragraph after the byline")

    seeds = []
    for n, block in enumerate(comment_blocks, 1):
        match = _COMMENT_ENTRY.match(block)
        if not match:
            raise ArticleError(source, f'user comment {n} is not of the form Name, Role, Place: "text": {block[:60]!r}')
        who = [part.strip() for part in match["who"].split(",")]
        if not who[0] or not match["text"].strip():
            raise ArticleError(source, f"user comment {n} has an empty name or text")
        seeds.append(
            SeedComment(name=who[0], about=", ".join(w for w in who[1:] if w) or None, body=match["text"].strip())
        )

    slug = slugify(title)
    if not slug:
        raise ArticleError(source, f"the title {title!r} gives an empty slug")
    return Article(
        slug=slug,
        title=title,
        byline_name=name.strip(),
        byline_role=role.strip() or None,
        dateline=body[0],
        paragraphs=tuple(body[1:]),
        credit=credit,
        seed_comments=tuple(seeds),
        source=source,
        file_hash=hashlib.sha256(text.encode()).hexdigest(),
    )


def read_article(path: Path) -> Article:
    """One article file; ArticleError says what is wrong with it (or that it cannot be read)."""
    try:
        return parse_article(path.read_text(encoding="utf-8"), source=str(path))
    except UnicodeDecodeError as exc:
        raise ArticleError(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ArticleError(str(path), f"cannot be read ({exc.strerror})") from None


def load_articles(content_dir: Path) -> tuple[dict[str, Article], list[ArticleError]]:
    """Every *.txt article in content_dir, by slug; a bad file is reported, never fatal."""
    articles: dict[str, Article] = {}
    errors: list[ArticleError] = []
    for path in sorted(Path(content_dir).glob("*.txt")):
        try:
            article = read_article(path)
            if article.slug in articles:
                raise ArticleError(str(path), f"slug {article.slug!r} already used by {articles[article.slug].source}")
        except ArticleError as exc:
            errors.append(exc)
        else:
            articles[article.slug] = article
    for error in errors:
        log.error("skipping article %s", error)
    return articles, errors
