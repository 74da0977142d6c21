"""`python -m server serve --workers N`: N processes on one port, each an instance of its own.

Each worker has its own event loop, store connections and bus instance id, and shares Redis
with the others as separate hosts do (so more than one needs REDIS_URL). uvicorn's supervisor
starts them, restarts one that dies, and on SIGHUP replaces them one at a time: a new worker
is serving before the old one stops, and the old one closes its sockets with 1012, so that
its readers reconnect (to any worker) with their `since`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import uvicorn
from uvicorn.supervisors import Multiprocess


def run_workers(config: uvicorn.Config) -> None:
    """Serve config.workers workers on config.host:config.port until told to stop."""
    listener = ReusePortListener(config.host, config.port)
    Multiprocess(config, sockets=[cast(socket.socket, listener)]).run()


@dataclass(frozen=True)
class ReusePortListener:
    """A listening socket that each worker binds for itself with SO_REUSEPORT. uvicorn's
    supervisor would share one socket among its workers, and the kernel then gave nearly
    every new connection to the same worker (measured: 30 readers in a row on one of two).
    Handed to the supervisor in that socket's place, this becomes a socket of the worker's
    own as the worker unpickles it: the kernel spreads connections over the workers, and a
    replacement worker listens before the one it replaces stops."""

    host: str
    port: int

    def __reduce__(self) -> tuple[Callable[[str, int], socket.socket], tuple[str, int]]:
        return listen_reusing_port, (self.host, self.port)


def listen_reusing_port(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock  # the worker's server listens on it
