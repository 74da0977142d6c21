"""Wiring: the routes list and the lifespan. Nothing else lives here."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Mount, Route, WebSocketRoute

from . import api, error_handlers, lifecycle, metrics, moderation_routes, newsroom_api, pages
from . import settings as settings_module
from .articles import Articles
from .backends import create_backend
from .content_watch import ContentDir
from .control import ArticleChanged, ControlBus, DeskUpdate, RulesChanged, SessionEnded, VotesChanged
from .errors import BackchannelError
from .fanout import Hub
from .i18n import load_languages
from .live import LiveSessions, desk_live, live
from .moderation import Moderation
from .security import Security, SecurityMiddleware
from .settings import Settings
from .spam import SpamRules
from .static_assets import StaticAssets
from .threads import Threads
from .tokens import BearerTokens, Tokens, on_token_refused
from .votes import VoteCounts
from .webhooks import Webhooks

log = logging.getLogger("backchannel")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or settings_module.load()
    security = Security(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        backend = create_backend(settings)
        await backend.start()
        hub = Hub(backend, settings.history_size)
        moderation = Moderation(backend, settings)
        spam = SpamRules(backend)
        await spam.load()
        articles = Articles(backend)
        # Listening before reading: an article another instance writes meanwhile (it is starting
        # too, or its newsroom publishes) is re-read here, not lost until a restart.
        control = ControlBus()
        control.subscribe(ArticleChanged, articles.on_article_changed)
        backend.on_control = control.dispatch
        backend.on_control_resync = articles.on_control_resync
        await articles.load()
        threads = Threads(backend, articles, settings, moderation, spam)
        content = ContentDir(settings.content_dir, articles, Threads._seed_comments)
        articles.restore = content.restore
        await content.load()  # a bad file is logged and skipped
        if settings.content_watch:
            content.watch()
        app.state.content = content
        tokens = Tokens(backend)
        webhooks = Webhooks(tokens, settings)
        webhooks.start()
        threads.on_published, moderation.on_recorded = webhooks.comment_published, webhooks.moderation_recorded
        threads.on_changed = webhooks.comment_changed
        vote_counts = VoteCounts(backend, hub, backend.publish_control)
        vote_counts.start()
        threads.on_voted = vote_counts.voted
        app.state.tokens, app.state.webhooks = tokens, webhooks
        app.state.comment_counts = newsroom_api.CommentCounts(threads)
        live_sessions = LiveSessions()
        control.subscribe(SessionEnded, live_sessions.on_session_ended)
        control.subscribe(DeskUpdate, live_sessions.on_desk_update)
        control.subscribe(RulesChanged, spam.on_rules_changed)
        control.subscribe(VotesChanged, vote_counts.on_votes_changed)
        app.state.backend, app.state.hub, app.state.threads = backend, hub, threads
        app.state.moderation, app.state.live_sessions = moderation, live_sessions
        app.state.connections_per_network = Counter()
        metrics.bind(app.state)
        lag_watch = asyncio.create_task(live_sessions.watch_lag())
        session_watch = asyncio.create_task(moderation.watch_sessions(lambda: live_sessions.by_session))
        background = [lag_watch, session_watch]
        if settings.auto_close_days:
            background.append(asyncio.create_task(lifecycle.AutoClose(threads, settings.auto_close_days).run()))
        # What start-up allocated lives as long as the process: keep it out of every collection.
        gc.freeze()
        log.info("serving %d article(s) on %r", len(articles), backend)
        try:
            yield
        finally:
            await content.close()
            for task in background:
                task.cancel()
            await live_sessions.close()
            await vote_counts.close()
            await moderation.close()
            await webhooks.close()
            await hub.close()
            await backend.close()

    routes = [
        Route("/", pages.index),
        Route("/articles/{slug}", pages.article_page),
        Route("/articles/{slug}/comments", pages.post_comment_form, methods=["POST"]),
        Route("/articles/{slug}/comments/{id}", pages.comment_page),
        WebSocketRoute("/articles/{slug}/live", live),
        Route("/login", moderation_routes.login_page, name="login"),
        Route("/login", moderation_routes.login, methods=["POST"]),
        Route("/logout", moderation_routes.logout, methods=["POST"]),
        Route("/moderation", moderation_routes.desk),
        WebSocketRoute("/moderation/live", desk_live),
        Route("/api/moderation/queue", moderation_routes.queue),
        Route("/api/moderation/audit", moderation_routes.audit_export),
        Route("/moderation/rules", moderation_routes.rules_page),
        Route("/api/moderation/rules", moderation_routes.rules),
        Route("/api/moderation/rules", moderation_routes.save_rules, methods=["POST"]),
        Route("/api/comments/{comment_id}", api.edit_comment, methods=["PATCH"]),
        Route("/api/comments/{comment_id}", api.delete_comment, methods=["DELETE"]),
        Route("/api/comments/{comment_id}/vote", api.vote, methods=["POST"]),
        Route("/api/comments/{comment_id}/remove", moderation_routes.remove, methods=["POST"]),
        Route("/api/comments/{comment_id}/restore", moderation_routes.restore, methods=["POST"]),
        Route("/api/comments/{comment_id}/approve", moderation_routes.approve, methods=["POST"]),
        Route("/api/comments/{comment_id}/dismiss", moderation_routes.dismiss, methods=["POST"]),
        Route("/api/comments/{comment_id}/report", moderation_routes.report, methods=["POST"]),
        Route("/api/readers/{reader_id}/ban", moderation_routes.ban, methods=["POST"]),
        Route("/api/readers/{reader_id}/unban", moderation_routes.unban, methods=["POST"]),
        Route("/api/articles/{slug}/premoderation", moderation_routes.premoderation, methods=["POST"]),
        Route("/api/articles/{slug}/close", lifecycle.close_thread, methods=["POST"]),
        Route("/api/articles/{slug}/open", lifecycle.open_thread, methods=["POST"]),
        Route("/api/articles/{slug}/hide", lifecycle.hide_thread, methods=["POST"]),
        Route("/api/articles", api.list_articles),
        Route("/api/articles/{slug}", newsroom_api.get_article),
        Route("/api/articles/{slug}", newsroom_api.put_article, methods=["PUT"]),
        Route("/api/articles/{slug}", newsroom_api.patch_article, methods=["PATCH"]),
        Route("/api/articles/{slug}", newsroom_api.delete_article, methods=["DELETE"]),
        Route("/api/articles/{slug}/comments", api.list_comments),
        Route("/api/articles/{slug}/comments", api.create_comment, methods=["POST"]),
        Route("/api/counts", newsroom_api.counts),
        Route("/api/tokens/whoami", newsroom_api.whoami),
        Route("/api/webhooks/test", newsroom_api.send_test_webhook, methods=["POST"]),
        Route("/healthz", api.healthz),
        Route("/readyz", api.readyz),
        Route("/metrics", metrics.metrics),
        Route("/i18n/{lang}.js", pages.messages_module),
        Mount("/static", StaticAssets(directory=pages.WEB_DIR / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityMiddleware, security=security, settings=settings),
            # A Bearer token (server/tokens.py) or else the moderator's session.
            Middleware(AuthenticationMiddleware, backend=BearerTokens(), on_error=on_token_refused),
        ],
        exception_handlers={
            BackchannelError: error_handlers.on_backchannel_error,
            HTTPException: error_handlers.on_http_error,
            Exception: error_handlers.on_server_error,
        },
    )
    app.state.settings, app.state.security = settings, security
    app.state.languages = load_languages()
    app.state.language = app.state.languages[settings.language]
    app.state.templates = pages.create_templates(settings, app.state.language)
    return app
