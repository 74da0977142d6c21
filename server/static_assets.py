"""The files under web/static, with cache headers that let a deploy reach every browser.

Pages link their entry scripts and stylesheet as `/static/PATH?v=HASH` (pages.py): such a URL
names one version of the file, so a browser may keep it for a year. The ES modules those
scripts import are named without a version (there is no build step to write one in), so a
browser must revalidate them on each load (`no-cache`: a 304 when unchanged, by ETag);
otherwise, after a deploy, a new entry script could run against an old module it imports.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

VERSIONED = "public, max-age=31536000, immutable"
UNVERSIONED = "no-cache"


class StaticAssets(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            versioned = b"v=" in scope.get("query_string", b"")
            response.headers["Cache-Control"] = VERSIONED if versioned else UNVERSIONED
        return response
