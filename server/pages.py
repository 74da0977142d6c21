"""HTML routes: the index, the article page with its thread, and the no-JavaScript comment form."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .articles import cursor_of, decode_cursor, encode_cursor
from .comments import HIDDEN, VISIBLE, editable_until
from .content import Article
from .errors import BackchannelError, NotFound
from .guards import author, moderator_of, submission
from .i18n import N_, Language
from .settings import MAX_ABOUT_CHARS, MAX_BODY_CHARS, MAX_NAME_CHARS, Settings
from .static_assets import UNVERSIONED, VERSIONED
from .threads import Threads, thread_tag, thread_tree, visible_to

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
LIMITS = {"body": MAX_BODY_CHARS, "name": MAX_NAME_CHARS, "about": MAX_ABOUT_CHARS}
# A thread with more events than this makes a page of megabytes (a 10,000-comment one: 24 MB,
# 2 s of CPU). Such pages are built and rendered off the event loop, one at a time per
# instance (app.state.big_pages): each one more at once would only make the loop wait longer
# for the GIL, and hold another whole thread in memory.
BIG_THREAD_EVENTS = 500
INDEX_PAGE = 30  # articles per page of the front page


def create_templates(settings: Settings, language: Language) -> Jinja2Templates:
    """The pages' templates, in one language: {% trans %} and _() read its catalogue."""
    # Autoescape every template whatever its name: Starlette's default escapes only
    # .html/.htm/.xml, and reader text must never reach a page unescaped.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(WEB_DIR / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(language.translations, newstyle=True)  # type: ignore[attr-defined]
    versions = {
        p.relative_to(WEB_DIR / "static").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:10]
        for p in (WEB_DIR / "static").rglob("*")
        if p.is_file()
    }
    env.globals["static"] = lambda path: f"/static/{path}?v={versions.get(path, '0')}"
    env.globals["lang"] = language.code
    # The scripts' part of the catalogue (lib/i18n.js imports it); English needs none.
    env.globals["messages_url"] = messages_url(language) if language.script_messages else ""
    env.filters["ago"] = language.ago
    env.globals["theme_css_url"] = settings.theme_css_url
    env.filters["day"] = language.day
    env.filters["audit_detail"] = lambda detail: audit_detail(language, detail)
    return Jinja2Templates(env=env)


# The audit log's details, stored in English by moderation.py, moderation_routes.py and
# lifecycle.py: the known shapes, said in the page's language (desk.js's DETAILS, the same).
_AUDIT_DETAILS: list[tuple[re.Pattern[str], Callable[[Language, re.Match[str]], str]]] = [
    (re.compile(r"for good"), lambda lang, m: lang.gettext("for good")),
    (re.compile(r"until (.+)"), lambda lang, m: lang.format(N_("until {when}"), {"when": lang.moment(m[1])})),
    (re.compile(r"from (.+)"), lambda lang, m: lang.format(N_("from {address}"), {"address": m[1]})),
    (re.compile(r"on|off"), lambda lang, m: lang.pgettext("pre-moderation", m[0])),
    (re.compile(r"changed nothing"), lambda lang, m: lang.gettext(N_("changed nothing"))),
    (re.compile(r"changed (.+)"), lambda lang, m: lang.format(N_("changed {settings}"), {"settings": m[1]})),
    (
        re.compile(r"([\d.]+) days after publication"),
        lambda lang, m: lang.format(N_("{days} days after publication"), {"days": m[1]}),
    ),
]


def audit_detail(language: Language, detail: object) -> str:
    text = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
    for shape, say in _AUDIT_DETAILS:
        if match := shape.fullmatch(text):
            return say(language, match)
    return text


def _messages_module(language: Language) -> bytes:
    return b"export default " + orjson.dumps(language.script_messages) + b";\n"


def messages_url(language: Language) -> str:
    version = hashlib.sha256(_messages_module(language)).hexdigest()[:10]
    return f"/i18n/{language.code}.js?v={version}"


async def messages_module(request: Request) -> Response:
    """/i18n/LANG.js: the scripts' messages in LANG, an ES module (`export default {…}`)."""
    language = request.app.state.languages.get(request.path_params["lang"])
    if language is None:
        raise NotFound(N_("There is nothing at this address."))
    versioned = "v" in request.query_params
    return Response(
        _messages_module(language),
        media_type="text/javascript",
        headers={"Cache-Control": VERSIONED if versioned else UNVERSIONED},
    )


def _page_context(request: Request) -> dict[str, Any]:
    session = moderator_of(request)
    return {
        "csrf_token": request.app.state.security.csrf_token(
            request.state.reader_id, session.session_id if session else None
        ),
        "moderator": session.name if session else None,
    }


async def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
    build: Callable[[], dict[str, Any]] | None = None,
) -> Response:
    """A page. With `build` (a big thread's page), build's context and the rendering run on a
    worker thread, so the event loop stays free to serve everyone else."""
    template = request.app.state.templates.get_template(name)
    context = {**_page_context(request), **context}
    if build is None:
        return HTMLResponse(template.render(context), status_code=status_code)
    # Encoded there too: a big page is tens of MB.
    html = await asyncio.to_thread(lambda: template.render({**context, **build()}).encode())
    return HTMLResponse(html, status_code=status_code)


async def index(request: Request) -> Response:
    """The front page: published articles newest first, INDEX_PAGE at a time, with plain links
    to older and newer pages (?before= / ?after= the cursor of the page's last / first). Read
    from memory (server/articles.py), and the page's comment counts in one store read."""
    threads = request.app.state.threads
    articles = threads.articles
    params = request.query_params
    after = decode_cursor(params.get("after"), "after")
    page = articles.page(INDEX_PAGE, before=decode_cursor(params.get("before"), "before"), after=after)
    if after is not None and len(page) < INDEX_PAGE:  # the newest page is always a whole one
        page = articles.page(INDEX_PAGE)
    slugs = [a.slug for a in page]
    counts, states = await asyncio.gather(threads.comment_counts(slugs), threads.states(slugs))
    rows = [
        {
            "slug": a.slug,
            "title": a.title,
            "byline_name": a.byline_name,
            "byline_role": a.byline_role,
            "dateline": a.dateline,
            "published_at": a.published_at,
            "section": a.section,
            "comment_count": counts[a.slug],
            "state": states[a.slug],
        }
        for a in page
    ]
    first, last = (page[0], page[-1]) if page else (None, None)
    return await render(
        request,
        "index.html",
        {
            "articles": rows,
            "older": encode_cursor(last) if last and articles.has_older(cursor_of(last)) else None,
            "newer": encode_cursor(first) if first and articles.has_newer(cursor_of(first)) else None,
        },
    )


async def article_page(request: Request, form: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    threads = request.app.state.threads
    slug = request.path_params["slug"]
    article = await threads.articles.article(slug)  # NotFound, or Gone: the 410 page
    big = (await threads.backend.head(slug)).seq > BIG_THREAD_EVENTS
    async with request.app.state.big_pages if big else contextlib.nullcontext():
        return await _article_page(request, article, big, form, status_code)


async def _article_page(
    request: Request, article: Article, big: bool, form: dict[str, Any] | None, status_code: int
) -> Response:
    threads = request.app.state.threads
    slug = article.slug
    snapshot = await threads.snapshot(slug)
    moderator = moderator_of(request) is not None
    reader_id = request.state.reader_id
    report_counts: dict[str, int] = {}
    bans = None
    if moderator:
        bans = await threads.moderation.bans()
        reported = [
            comment_id for report_slug, comment_id in await threads.moderation.open_reports() if report_slug == slug
        ]
        report_counts = {
            comment_id: len(reports) for comment_id, reports in (await threads.moderation.reports_of(reported)).items()
        }

    hidden = snapshot.state.name == HIDDEN and not moderator  # readers see none of a hidden thread

    def thread() -> dict[str, Any]:  # linear in the thread's size
        comments = [] if hidden else visible_to(snapshot.comments, reader_id, moderator)
        return {
            "thread": thread_tree(comments, moderator, report_counts, bans),
            "comment_count": sum(1 for c in comments if c.status == VISIBLE),
        }

    # A hidden thread shows a reader none of its comments, their own included.
    my_votes, mine = ([], {}) if hidden else await _readers_own(threads, slug, reader_id)
    context = {
        "article": article,
        "premoderated": await threads.moderation.premoderated(slug),
        "edit_window": threads.edit_window,
        "my_votes": my_votes,
        "mine": mine,
        "seq": snapshot.seq,
        "epoch": snapshot.epoch,
        "thread_state": snapshot.state.name,
        # ?reply=ID / ?report=ID: the no-JavaScript way to that comment's form (see _comment.html)
        "form": form
        or {
            "name": "",
            "about": "",
            "body": "",
            "parent": "",
            "error": None,
            "error_parent": None,
            "reply_to": request.query_params.get("reply", ""),
            "report_to": request.query_params.get("report", ""),
        },
        "limits": LIMITS,
    }
    if big:
        return await render(request, "article.html", context, status_code=status_code, build=thread)
    return await render(request, "article.html", {**context, **thread()}, status_code=status_code)


async def _readers_own(threads: Threads, slug: str, reader_id: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """For the page's script: the comments of the thread this reader recommends, and theirs that
    they may still edit (id -> until when, and the text to edit), from their recent comments."""
    recent = [
        i for i in await threads.backend.list_range(f"published-by:{reader_id}", 20) if i.startswith(thread_tag(slug))
    ]
    voted, comments = await asyncio.gather(
        threads.backend.votes_by(slug, reader_id), threads.backend.get_comments([(slug, i) for i in recent])
    )
    mine = {}
    for comment in comments:
        until = editable_until(comment, threads.edit_window)
        if until is not None and comment.reader_id == reader_id:
            mine[comment.id] = {"until": until, "body": comment.body}
    return sorted(voted), mine


async def post_comment_form(request: Request) -> Response:
    """The no-JavaScript path: a form POST answered with 303 to the new comment."""
    slug = request.path_params["slug"]
    request.app.state.threads.article(slug)
    form = await submission(request)
    fields = {key: str(form.data.get(key) or "") for key in ("name", "about", "body", "parent")}
    try:
        comment, _ = await request.app.state.threads.post(
            slug,
            author(request),
            name=fields["name"],
            about=fields["about"],
            body=fields["body"],
            parent=fields["parent"] or None,
            ref=str(form.data.get("ref") or "")[:128] or None,
        )
    except BackchannelError as exc:
        # Show the page again with the reader's text kept and the problem next to the form.
        form_state = {
            **fields,
            "error": exc.in_language(request.app.state.language),
            "error_parent": fields["parent"] or None,
        }
        response = await article_page(request, form=form_state, status_code=exc.status)
        if retry_after := getattr(exc, "retry_after", None):
            response.headers["Retry-After"] = str(retry_after)
        return response
    return RedirectResponse(f"/articles/{slug}#c-{comment.id}", status_code=303)
