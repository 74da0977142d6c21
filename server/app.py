"""Wiring: the routes list and the lifespan. Nothing else lives here."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from . import api, metrics, pages, settings as settings_module
from .backends import create_backend
from .content import load_articles
from .errors import BackchannelError
from .fanout import Hub
from .live import live
from .security import Security, SecurityMiddleware
from .settings import Settings
from .threads import Threads

log = logging.getLogger("backchannel")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or settings_module.load()
    security = Security(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        articles, _errors = load_articles(settings.content_dir)  # a bad file is logged and skipped
        backend = create_backend(settings)
        await backend.start()
        hub = Hub(backend)
        threads = Threads(backend, articles, settings)
        await threads.start()
        app.state.backend, app.state.hub, app.state.threads = backend, hub, threads
        app.state.connections_per_ip = Counter()
        metrics.bind(app.state)
        log.info("serving %d article(s) on the %s backend", len(articles), type(backend).__name__)
        try:
            yield
        finally:
            await hub.close()
            await backend.close()

    routes = [
        Route("/", pages.index),
        Route("/articles/{slug}", pages.article_page),
        Route("/articles/{slug}/comments", pages.post_comment_form, methods=["POST"]),
        WebSocketRoute("/articles/{slug}/live", live),
        Route("/api/articles", api.list_articles),
        Route("/api/articles/{slug}/comments", api.list_comments),
        Route("/api/articles/{slug}/comments", api.create_comment, methods=["POST"]),
        Route("/healthz", api.healthz),
        Route("/readyz", api.readyz),
        Route("/metrics", metrics.metrics),
        Mount("/static", StaticFiles(directory=pages.WEB_DIR / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SecurityMiddleware, security=security, settings=settings)],
        exception_handlers={BackchannelError: api.on_backchannel_error, HTTPException: api.on_http_error,
                            Exception: api.on_server_error},
    )
    app.state.settings, app.state.security, app.state.templates = settings, security, pages.create_templates()
    return app
