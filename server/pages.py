"""HTML routes: the index, the article page with its thread, and the no-JavaScript comment form."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .articles import cursor_of, decode_cursor, encode_cursor
from .backends.base import Backend
from .comments import HIDDEN, PENDING, Comment, editable_until
from .errors import BackchannelError, NotFound
from .guards import author, moderator_of, submission
from .i18n import N_, Language
from .paging import REPLIES_SORT, SORTS, TOP_LEVEL_SORT, Cursor, read_page
from .paging import decode_cursor as decode_page_cursor
from .settings import MAX_ABOUT_CHARS, MAX_BODY_CHARS, MAX_NAME_CHARS, Settings
from .static_assets import UNVERSIONED, VERSIONED
from .threads import Threads, moderator_view, thread_tag

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
LIMITS = {"body": MAX_BODY_CHARS, "name": MAX_NAME_CHARS, "about": MAX_ABOUT_CHARS}
# The article page's first screenful: top-level comments, each with its first replies; the rest
# behind "Load more" and "N more replies" (a 20,000-comment thread's page stays under 300 KB).
TOP_PAGE, FIRST_REPLIES = 30, 3
REPLIES_PAGE = 50  # a permalinked comment's replies
MAX_PATH = 100  # ancestors followed up from a permalinked comment (replies nest no deeper in practice)
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
    request: Request, name: str, context: dict[str, Any], status_code: int = 200, off_loop: bool = False
) -> Response:
    """A page. off_loop (a thread's page: a hundred comments or more) renders it on a worker
    thread, so the event loop stays free to serve everyone else meanwhile."""
    template = request.app.state.templates.get_template(name)
    context = {**_page_context(request), **context}
    if not off_loop:
        return HTMLResponse(template.render(context), status_code=status_code)
    html = await asyncio.to_thread(lambda: template.render(context).encode())
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
    """The article with the first screenful of its thread (server/paging.py): TOP_PAGE top-level
    comments in the reader's sort (?sort=), each with its first FIRST_REPLIES replies, and links
    (real ones, for readers without JavaScript) to the rest: "Load more" (?after=CURSOR) and each
    comment's "N more replies". ?comment=ID is the permalink's other spelling."""
    slug = request.path_params["slug"]
    if comment_id := request.query_params.get("comment"):
        return RedirectResponse(f"/articles/{slug}/comments/{quote(comment_id)}#c-{quote(comment_id)}", status_code=303)
    sort = _reader_sort(request)
    after = decode_page_cursor(request.query_params.get("after"), sort)
    return await _article_page(request, sort, form, status_code, lambda view: view.top_level(after))


async def comment_page(request: Request) -> Response:
    """GET /articles/{slug}/comments/{id}: the permalink. The article with that comment's
    conversation: its top-level ancestor, the path down to it, and the comment with a page of
    its replies (?after= the next one), marked as the target (id="c-ID" in view, highlighted)."""
    comment_id = request.path_params["id"]
    sort = _reader_sort(request)
    after = decode_page_cursor(request.query_params.get("after"), REPLIES_SORT)
    return await _article_page(request, sort, None, 200, lambda view: view.conversation(comment_id, after), comment_id)


def _reader_sort(request: Request) -> str:
    """The sort the reader asked for (?sort=); one this server does not know is the default."""
    raw = request.query_params.get("sort")
    return raw if raw in SORTS else TOP_LEVEL_SORT


class ThreadView:
    """What the article page shows of the thread, read a page at a time for one reader."""

    def __init__(self, backend: Backend, slug: str, sort: str, may_see_held: Callable[[Comment], bool]) -> None:
        self.backend, self.slug, self.sort, self.may_see_held = backend, slug, sort, may_see_held
        self.comments: list[Comment] = []  # every comment shown, for the moderator's report counts

    async def top_level(self, after: Cursor | None) -> tuple[list[dict[str, Any]], str | None]:
        """(the top-level comments with their first replies, the cursor of "Load more")."""
        page = await read_page(self.backend, self.slug, None, self.sort, after, TOP_PAGE, self.may_see_held)
        nodes = [self._node(c, page.reply_counts) for c in page.comments]
        await asyncio.gather(*(self._first_replies(node, None, FIRST_REPLIES) for node in nodes))
        return nodes, page.next

    async def conversation(self, comment_id: str, after: Cursor | None) -> tuple[list[dict[str, Any]], str | None]:
        """The permalinked comment's conversation (see comment_page), nothing to load after it."""
        path = [await self._comment(comment_id)]
        while path[0].parent is not None and len(path) < MAX_PATH:
            path.insert(0, await self._comment(path[0].parent))
        counts = {}
        if path[0].seq is not None:  # published: its reply count comes with it as a page of one
            counts = (
                await self.backend.comment_page(self.slug, path[0].parent, False, path[0].seq - 1, 1)
            ).reply_counts
        root = node = self._node(path[0], counts)
        for child in path[1:]:  # each ancestor's replies begin at the one on the path (earlier ones: "all comments")
            assert child.seq is not None
            await self._first_replies(node, (child.seq - 1,), FIRST_REPLIES, always=True)
            node = next(n for n in node["replies"] if n["comment"].id == child.id)
        node["target"] = True
        await self._first_replies(node, after, REPLIES_PAGE, always=True)
        return [root], None

    async def _comment(self, comment_id: str) -> Comment:
        comment = await self.backend.get_comment(self.slug, comment_id)
        if comment is None or (comment.status == PENDING and not self.may_see_held(comment)):
            raise NotFound(N_("There is no such comment here."))
        return comment

    def _node(self, comment: Comment, reply_counts: dict[str, int]) -> dict[str, Any]:
        self.comments.append(comment)
        count = reply_counts.get(comment.id, 0)
        return {"comment": comment, "replies": [], "more_replies": count, "replies_after": None}

    async def _first_replies(
        self, node: dict[str, Any], after: Cursor | None, limit: int, always: bool = False
    ) -> None:
        """Read the node's replies (after the one whose seq is `after`). Unless `always`, a comment
        without published replies is not asked: a reader's own held reply to it shows on its permalink."""
        comment: Comment = node["comment"]
        if not (always or node["more_replies"]):
            return
        page = await read_page(self.backend, self.slug, comment.id, REPLIES_SORT, after, limit, self.may_see_held)
        node["replies"] = [self._node(c, page.reply_counts) for c in page.comments]
        published = sum(c.seq is not None for c in page.comments)
        node["more_replies"] = max(0, node["more_replies"] - published) if page.next else 0
        node["replies_after"] = page.next


async def _article_page(
    request: Request,
    sort: str,
    form: dict[str, Any] | None,
    status_code: int,
    read: Callable[[ThreadView], Awaitable[tuple[list[dict[str, Any]], str | None]]],
    target: str | None = None,
) -> Response:
    threads = request.app.state.threads
    slug = request.path_params["slug"]
    article = await threads.articles.article(slug)  # NotFound, or Gone: the 410 page
    head = await threads.backend.head(slug)
    moderator = moderator_of(request) is not None
    reader_id = request.state.reader_id
    hidden = head.state.name == HIDDEN and not moderator  # readers see none of a hidden thread
    view = ThreadView(threads.backend, slug, sort, lambda c: moderator or c.reader_id == reader_id)
    nodes, load_more = ([], None) if hidden else await read(view)
    counts = await threads.comment_counts([slug])
    report_counts: dict[str, int] = {}
    bans = None
    if moderator:
        bans = await threads.moderation.bans()
        shown = {c.id for c in view.comments}
        reported = [
            comment_id
            for report_slug, comment_id in await threads.moderation.open_reports()
            if report_slug == slug and comment_id in shown
        ]
        report_counts = {
            comment_id: len(reports) for comment_id, reports in (await threads.moderation.reports_of(reported)).items()
        }

    def as_viewed(node: dict[str, Any]) -> dict[str, Any]:
        c: Comment = node["comment"]
        comment = {**moderator_view(c, bans), "report_count": report_counts.get(c.id, 0)} if moderator else c.public()
        return {**node, "comment": comment, "replies": [as_viewed(n) for n in node["replies"]]}

    # A hidden thread shows a reader none of its comments, their own included.
    my_votes, mine = ([], {}) if hidden else await _readers_own(threads, slug, reader_id)
    context = {
        "article": article,
        "premoderated": await threads.moderation.premoderated(slug),
        "edit_window": threads.edit_window,
        "my_votes": my_votes,
        "mine": mine,
        "seq": head.seq,
        "epoch": head.epoch,
        "thread_state": head.state.name,
        "thread": [as_viewed(n) for n in nodes],
        "comment_count": 0 if hidden else counts[slug],
        "sort": sort,
        "sorts": list(SORTS),
        "load_more": load_more,
        "paged": request.query_params.get("after") is not None,  # not the first page: link back to it
        "target": target,
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
    return await render(request, "article.html", context, status_code=status_code, off_loop=True)


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
    # The permalink: the new comment may be on no first page (a reply deep in a big thread).
    return RedirectResponse(f"/articles/{slug}/comments/{comment.id}#c-{comment.id}", status_code=303)
