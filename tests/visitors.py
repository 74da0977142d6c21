"""Several visitors (each with its own cookies) on one in-process app, for the moderation tests."""

from __future__ import annotations

import re

import httpx2 as httpx
from starlette.testclient import TestClient

PASSWORD = "correct horse battery"


def token(client, path: str = "/") -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get(path).text).group(1)


def login(client, name: str = "alice", password: str = PASSWORD):
    return client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token(client, "/login"), "next": "/moderation"},
        follow_redirects=False,
    )


class Visitor:
    """One visitor (its own cookies) on the shared in-process app. A second TestClient would run
    the app's lifespan again on another event loop, so visitors take turns on one client."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.cookies = httpx.Cookies()

    def _as_me(self, method: str, *args, **kwargs):
        saved, self.client.cookies = self.client.cookies, self.cookies
        try:
            return getattr(self.client, method)(*args, **kwargs)
        finally:
            self.cookies, self.client.cookies = self.client.cookies, saved

    def get(self, *args, **kwargs):
        return self._as_me("get", *args, **kwargs)

    def post(self, *args, **kwargs):
        return self._as_me("post", *args, **kwargs)

    def patch(self, *args, **kwargs):
        return self._as_me("patch", *args, **kwargs)

    def delete(self, *args, **kwargs):
        return self._as_me("delete", *args, **kwargs)
