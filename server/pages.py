"""HTML routes: the index, the article page with its thread, and the no-JavaScript comment form."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .comments import VISIBLE
from .errors import BackchannelError, Forbidden
from .security import client_ip
from .settings import MAX_ABOUT_CHARS, MAX_BODY_CHARS, MAX_NAME_CHARS
from .threads import Author, thread_tree, visible_to

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
LIMITS = {"body": MAX_BODY_CHARS, "name": MAX_NAME_CHARS, "about": MAX_ABOUT_CHARS}


def ago(iso: str, now: datetime | None = None) -> str:
    """'just now', '5 minutes ago', ... as a reader would say it; live.js keeps it current."""
    then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = int(((now or datetime.now(timezone.utc)) - then).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            if unit == "day" and seconds >= 30 * 86400:
                return then.strftime("%-d %b %Y")
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def create_templates() -> Jinja2Templates:
    # Autoescape every template whatever its name: Starlette's default escapes only
    # .html/.htm/.xml, and reader text must never reach a page unescaped.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(WEB_DIR / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    versions = {p.relative_to(WEB_DIR / "static").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()[:10]
                for p in (WEB_DIR / "static").rglob("*") if p.is_file()}
    env.globals["static"] = lambda path: f"/static/{path}?v={versions.get(path, '0')}"
    env.filters["ago"] = ago
    return Jinja2Templates(env=env)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    reader_id = request.state.reader_id
    moderator = request.state.moderator
    context = {"csrf_token": request.app.state.security.csrf_token(reader_id),
               "moderator": moderator.name if moderator else None, **context}
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)


async def index(request: Request) -> Response:
    threads = request.app.state.threads
    counts = await threads.comment_counts()
    articles = [{"slug": a.slug, "title": a.title, "byline_name": a.byline_name, "byline_role": a.byline_role,
                 "dateline": a.dateline, "comment_count": counts.get(a.slug, 0)} for a in threads.articles.values()]
    return render(request, "index.html", {"articles": articles})


async def article_page(request: Request, form: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    threads = request.app.state.threads
    slug = request.path_params["slug"]
    article = threads.article(slug)
    snapshot = await threads.snapshot(slug)
    moderator = request.state.moderator is not None
    comments = visible_to(snapshot.comments, request.state.reader_id, moderator)
    report_counts = {}
    if moderator:
        reported = {comment_id for report_slug, comment_id in await threads.moderation.open_reports()
                    if report_slug == slug}
        report_counts = {comment_id: len(await threads.moderation.reports(comment_id)) for comment_id in reported}
    return render(request, "article.html", {
        "article": article,
        "thread": thread_tree(comments, moderator, report_counts),
        "premoderated": await threads.moderation.premoderated(slug),
        "comment_count": sum(1 for c in snapshot.comments if c.status == VISIBLE),
        "seq": snapshot.seq,
        "epoch": snapshot.epoch,
        # ?reply=ID / ?report=ID: the no-JavaScript way to that comment's form (see _comment.html)
        "form": form or {"name": "", "about": "", "body": "", "parent": "", "error": None, "error_parent": None,
                         "reply_to": request.query_params.get("reply", ""),
                         "report_to": request.query_params.get("report", "")},
        "limits": LIMITS,
    }, status_code=status_code)


def check_comment_post(request: Request) -> str:
    """What every comment POST (form or JSON) must pass before its body is read; returns the slug."""
    state = request.app.state
    slug = request.path_params["slug"]
    state.threads.article(slug)
    if not state.security.origin_allowed(request.scope):
        raise Forbidden("Posting from another site is not allowed.")
    return slug


async def post_comment_form(request: Request) -> Response:
    """The no-JavaScript path: a form POST answered with 303 to the new comment."""
    state = request.app.state
    slug = check_comment_post(request)
    form = await request.form()
    fields = {key: str(form.get(key) or "") for key in ("name", "about", "body", "parent")}
    if not state.security.csrf_ok(request.state.reader_id, str(form.get("csrf_token") or "")):
        raise Forbidden("The form has expired. Please reload the page and try again.")
    author = Author(reader_id=request.state.reader_id, ip=client_ip(request.scope),
                    moderator=request.state.moderator.name if request.state.moderator else None)
    try:
        comment, _ = await state.threads.post(slug, author, name=fields["name"], about=fields["about"],
                                              body=fields["body"], parent=fields["parent"] or None,
                                              ref=str(form.get("ref") or "")[:128] or None)
    except BackchannelError as exc:
        # Show the page again with the reader's text kept and the problem next to the form.
        form_state = {**fields, "error": exc.message, "error_parent": fields["parent"] or None}
        response = await article_page(request, form=form_state, status_code=exc.status)
        if retry_after := getattr(exc, "retry_after", None):
            response.headers["Retry-After"] = str(retry_after)
        return response
    return RedirectResponse(f"/articles/{slug}#c-{comment.id}", status_code=303)
