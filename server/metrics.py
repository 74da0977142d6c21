"""Operational metrics in the Prometheus text format (prometheus-client), at /metrics.

Gauges that are cheap to read are computed when scraped (callbacks), so the hot paths only
bump counters. process_resident_memory_bytes and friends come from the default collectors.
"""

from __future__ import annotations

import asyncio

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response

from .errors import Forbidden
from .identity import client_ip

registry = CollectorRegistry(auto_describe=True)
for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    registry.register(collector)

events_delivered = Counter("backchannel_frames_queued", "Event frames queued to live connections", registry=registry)
comments_posted = Counter("backchannel_comments_posted", "Comments stored through this instance", registry=registry)
readers_dropped = Counter(
    "backchannel_slow_readers_closed", "Live connections closed for falling behind (4000)", registry=registry
)
gaps_filled = Counter("backchannel_gaps_filled", "Times the hub read missed events from the log", registry=registry)
# What a reconnect storm costs the store: catch-ups served from the Hub's tail add nothing here.
store_reads = Counter(
    "backchannel_store_reads", "Reads of a thread's head or event log from the store", ["query"], registry=registry
)
live_connections = Gauge("backchannel_live_connections", "Open live WebSocket connections", registry=registry)
active_threads = Gauge("backchannel_active_threads", "Threads this instance is subscribed to", registry=registry)
tasks = Gauge("backchannel_asyncio_tasks", "asyncio tasks alive in the server's event loop", registry=registry)


def bind(app_state: State) -> None:
    """Point the scrape-time gauges at this app's hub and loop."""
    loop = asyncio.get_running_loop()
    live_connections.set_function(lambda: sum(app_state.connections_per_network.values()))
    active_threads.set_function(lambda: app_state.hub.active_threads())
    tasks.set_function(lambda: len(asyncio.all_tasks(loop)))


async def metrics(request: Request) -> Response:
    # Not for the public: only from the addresses allowed (loopback and the trusted proxies'
    # own scrapers by default); a reverse proxy should not route /metrics at all.
    if client_ip(request.scope) not in request.app.state.settings.metrics_allow:
        raise Forbidden("Metrics are not public.")
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
