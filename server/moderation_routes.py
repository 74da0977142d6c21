"""Moderation over HTTP: login and logout, the desk page, and the actions.

Every action accepts JSON (from live.js and desk.js, with the X-CSRF-Token header) or a plain
form (without JavaScript: the csrf_token field, then 303 back to `next`). Roles are enforced
on the server for each request: `@requires(MODERATOR)` (guards.ModeratorSessions) turns away a
reader or a forged or expired session (401, or to the login page), guards.submission a missing
CSRF token or a foreign Origin (403), and nothing changes.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from typing import TYPE_CHECKING, Any

from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from .comments import REMOVED, VISIBLE, Comment
from .errors import BackchannelError, InvalidMessage, NotFound
from .guards import MODERATOR, moderator_of, safe_next, submission
from .identity import client_ip
from .pages import render
from .protocol import DeskReport
from .text import clean_note

if TYPE_CHECKING:
    from .moderation import Bans, ModeratorSession
    from .threads import Threads

QUEUE_SIZE = 100
QUEUE_ARTICLES = 100  # articles whose recent comments the desk loads (newest first)
DESK = "/moderation"  # where a login goes when it was not sent from a page


# --- what every state-changing request passes (guards.submission: Origin, CSRF) ---


async def _checked(request: Request) -> tuple[dict[str, Any], bool, ModeratorSession | None]:
    """(the fields, whether they came from a plain form, the moderator's session if any)."""
    form = await submission(request)
    return form.data, form.from_form, moderator_of(request)


async def _moderated(request: Request) -> tuple[dict[str, Any], bool, ModeratorSession]:
    """_checked, in a route behind @requires(MODERATOR): the session is always there."""
    data, from_form, moderator = await _checked(request)
    assert moderator is not None, "@requires(MODERATOR) lets only a moderator's session in"
    return data, from_form, moderator


def _done(request: Request, data: dict[str, Any], from_form: bool, result: dict[str, Any]) -> Response:
    if from_form:
        return RedirectResponse(safe_next(request, data.get("next"), "/"), status_code=303)
    return JSONResponse({"ok": True, **result})


def _text(data: dict[str, Any], key: str, limit: int = 500) -> str | None:
    value = data.get(key)
    return clean_note(str(value), limit) if value is not None else None


# --- sessions ---


async def login_page(request: Request) -> Response:
    return await render(
        request,
        "login.html",
        {"error": None, "username": "", "next": safe_next(request, request.query_params.get("next"), DESK)},
    )


async def login(request: Request) -> Response:
    state = request.app.state
    form = await submission(request)
    username, password = str(form.data.get("username") or ""), str(form.data.get("password") or "")
    target = safe_next(request, form.data.get("next"), DESK)
    try:
        session = await state.moderation.login(username, password, client_ip(request.scope))
    except BackchannelError as exc:
        return await render(
            request,
            "login.html",
            {"error": exc.in_language(request.app.state.language), "username": username, "next": target},
            status_code=exc.status,
        )
    if (earlier := moderator_of(request)) is not None:  # a new session id at every login; the old one ends
        await state.moderation.logout(earlier)
    response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    response.headers.append(
        "Set-Cookie", state.moderation.session_cookie(session, state.security.secure(request.scope))
    )
    return response


async def logout(request: Request) -> Response:
    _data, _from_form, moderator = await _checked(request)
    response = RedirectResponse("/", status_code=303)
    if moderator is not None:
        await request.app.state.moderation.logout(moderator)
    response.headers.append("Set-Cookie", request.app.state.moderation.expired_session_cookie())
    # A new reader identity too, so that no CSRF token of before (or during) the session works after it.
    response.headers.append(
        "Set-Cookie",
        request.app.state.security.reader_cookie(
            secrets.token_urlsafe(12), request.app.state.security.secure(request.scope)
        ),
    )
    return response


# --- the desk ---


@requires(MODERATOR, redirect="login")
async def desk(request: Request) -> Response:
    return await render(request, "desk.html", {"queue": await _queue(request)})


@requires(MODERATOR, status_code=401)
async def queue(request: Request) -> Response:
    return JSONResponse(await _queue(request))


@requires(MODERATOR, status_code=401)
async def audit_export(request: Request) -> Response:
    entries = await request.app.state.moderation.audit_log()
    return JSONResponse(entries, headers={"Content-Disposition": 'attachment; filename="backchannel-audit.json"'})


async def _queue(request: Request) -> dict[str, Any]:
    """Recent comments of the newest articles, the open reports, the audit log's newest entries,
    and the threads they are on with their state."""
    threads, moderation = request.app.state.threads, request.app.state.moderation
    # The newest articles only: a newsroom has thousands, and the desk's live feed brings every
    # new comment anyway; old articles' comments reach the desk as they come.
    newest = list(itertools.islice(threads.articles, QUEUE_ARTICLES))
    snapshots = await asyncio.gather(*(threads.snapshot(slug) for slug in newest))
    recent = sorted((c for s in snapshots for c in s.comments), key=lambda c: c.created_at, reverse=True)[:QUEUE_SIZE]
    reported = await threads.backend.get_comments(await moderation.open_reports())
    reports_of = await moderation.reports_of([c.id for c in reported])
    bans = await moderation.bans()
    reports = sorted(
        (_report_card(threads, c, reports_of[c.id], bans) for c in reported),
        key=lambda r: r["last_reported_at"],
        reverse=True,
    )
    # The threads the queue is about, with their state (open, closed, hidden) to change it from
    # here: read with the snapshots, or (an older article's report) on its own.
    state_of = {slug: snapshot.state.name for slug, snapshot in zip(newest, snapshots, strict=True)}
    slugs = dict.fromkeys([*(r["comment"]["slug"] for r in reports), *(c.slug for c in recent)])
    for slug in slugs.keys() - state_of.keys():
        state_of[slug] = (await threads.backend.head(slug)).state.name
    return {
        "comments": [threads.desk_view(c, bans) for c in recent],
        "reports": reports,
        "audit": await moderation.audit_log(QUEUE_SIZE),
        "threads": [{"slug": s, "title": threads.articles[s].title, "state": state_of[s]} for s in slugs],
    }


def _report_card(
    threads: Threads, comment: Comment, reports: list[dict[str, Any]], bans: Bans | None = None
) -> dict[str, Any]:
    return {
        "comment": threads.desk_view(comment, bans),
        "reasons": [r["reason"] for r in reports if r["reason"]],
        "count": len(reports),
        "last_reported_at": reports[0]["at"] if reports else comment.created_at,
    }


# --- actions on comments ---


async def _set_status(request: Request, status: str, action: str) -> Response:
    data, from_form, moderator = await _moderated(request)
    state = request.app.state
    comment = await state.threads.set_status(request.path_params["comment_id"], status, moderator.name)
    if action in ("remove", "approve"):
        await state.moderation.dismiss_reports(comment.slug, comment.id)  # acted on: off the reports queue
    await state.moderation.record(
        moderator.name,
        action,
        comment_id=comment.id,
        slug=comment.slug,
        reader_id=comment.reader_id,
        reason=_text(data, "reason"),
    )
    return _done(request, data, from_form, {"comment": comment.moderator_view()})


@requires(MODERATOR, status_code=401)
async def remove(request: Request) -> Response:
    return await _set_status(request, REMOVED, "remove")


@requires(MODERATOR, status_code=401)
async def restore(request: Request) -> Response:
    return await _set_status(request, VISIBLE, "restore")


@requires(MODERATOR, status_code=401)
async def approve(request: Request) -> Response:
    return await _set_status(request, VISIBLE, "approve")


@requires(MODERATOR, status_code=401)
async def dismiss(request: Request) -> Response:
    data, from_form, moderator = await _moderated(request)
    state = request.app.state
    comment = await state.threads.find(request.path_params["comment_id"])
    await state.moderation.dismiss_reports(comment.slug, comment.id)
    await state.moderation.record(
        moderator.name,
        "dismiss",
        comment_id=comment.id,
        slug=comment.slug,
        reader_id=comment.reader_id,
        reason=_text(data, "reason"),
    )
    return _done(request, data, from_form, {})


async def report(request: Request) -> Response:
    """Any reader may report a comment, once; a moderator sees it on the desk at once."""
    data, from_form, _moderator = await _checked(request)
    state = request.app.state
    comment = await state.threads.find(request.path_params["comment_id"])
    if comment.status != VISIBLE:
        raise NotFound("That comment is not shown any more.")
    first = await state.moderation.report(
        comment.slug, comment.id, request.state.reader_id, client_ip(request.scope), _text(data, "reason")
    )

    async def frame() -> DeskReport:  # built when sent: a flood's frame carries the count by then
        reports = (await state.moderation.reports_of([comment.id]))[comment.id]
        return DeskReport(_report_card(state.threads, comment, reports))

    if first:
        await state.moderation.show_report(comment.id, frame)
    return _done(request, data, from_form, {"reported": True, "already": not first})


# --- readers ---


@requires(MODERATOR, status_code=401)
async def ban(request: Request) -> Response:
    data, from_form, moderator = await _moderated(request)
    state = request.app.state
    reader_id = request.path_params["reader_id"]
    raw_minutes = data.get("duration")
    if raw_minutes in (None, ""):
        minutes = None
    elif (isinstance(raw_minutes, int) and not isinstance(raw_minutes, bool)) or (
        isinstance(raw_minutes, str) and raw_minutes.strip().isascii() and raw_minutes.strip().isdigit()
    ):
        minutes = int(raw_minutes)  # the range is checked by moderation.ban
    else:
        raise InvalidMessage("duration must be a whole number of minutes, or empty for good.")
    comment = await state.threads.find(str(data["comment_id"])) if data.get("comment_id") else None
    if comment is not None and comment.reader_id != reader_id:
        raise InvalidMessage("That comment is not this reader's.")
    ip = comment.ip if comment is not None and str(data.get("ip") or "") in ("1", "true", "True", "on") else None
    reader_name = comment.name if comment is not None else None
    ban_record = await state.moderation.ban(reader_id, minutes, _text(data, "reason"), moderator.name, ip, reader_name)
    await state.moderation.record(
        moderator.name,
        "ban",
        reader_id=reader_id,
        reader_name=reader_name,
        reason=_text(data, "reason"),
        comment_id=data.get("comment_id") or None,
        detail=("until " + ban_record["until"] if ban_record["until"] else "for good")
        + (" with the address" if ip else ""),
    )
    return _done(request, data, from_form, {"ban": {k: v for k, v in ban_record.items() if k != "ip"}})


@requires(MODERATOR, status_code=401)
async def unban(request: Request) -> Response:
    data, from_form, moderator = await _moderated(request)
    reader_id = request.path_params["reader_id"]
    lifted = await request.app.state.moderation.unban(reader_id)
    await request.app.state.moderation.record(
        moderator.name, "unban", reader_id=reader_id, reader_name=lifted.get("reader_name") if lifted else None
    )
    return _done(request, data, from_form, {})


@requires(MODERATOR, status_code=401)
async def premoderation(request: Request) -> Response:
    data, from_form, moderator = await _moderated(request)
    slug = request.path_params["slug"]
    request.app.state.threads.article(slug)
    enabled = str(data.get("enabled") or "") in ("1", "true", "True", "on")
    await request.app.state.moderation.set_premoderation(slug, enabled)
    await request.app.state.moderation.record(
        moderator.name, "premoderation", slug=slug, detail="on" if enabled else "off"
    )
    return _done(request, data, from_form, {"enabled": enabled})


# --- spam rules ---


@requires(MODERATOR, redirect="login")
async def rules_page(request: Request) -> Response:
    return await render(
        request, "rules.html", {"rules": request.app.state.threads.spam.current.to_dict(), "saved": False}
    )


@requires(MODERATOR, status_code=401)
async def rules(request: Request) -> Response:
    return JSONResponse(request.app.state.threads.spam.current.to_dict())


@requires(MODERATOR, status_code=401)
async def save_rules(request: Request) -> Response:
    data, from_form, moderator = await _moderated(request)
    spam = request.app.state.threads.spam
    before = spam.current.to_dict()
    fields = {k: v for k, v in data.items() if k in before}
    saved = await spam.save(fields)
    changed = sorted(k for k, v in saved.to_dict().items() if before[k] != v)
    await request.app.state.moderation.record(
        moderator.name, "rules", detail="changed " + (", ".join(changed) or "nothing")
    )
    return _done(
        request, {**data, "next": data.get("next") or "/moderation/rules"}, from_form, {"rules": saved.to_dict()}
    )
