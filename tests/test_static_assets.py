"""Cache headers on /static: a deploy reaches every browser without a stale module."""

from __future__ import annotations

import re

from .servers import DEMO_SLUG


def test_a_versioned_asset_is_kept_for_a_year_and_the_modules_it_imports_are_revalidated(client):
    page = client.get(f"/articles/{DEMO_SLUG}").text
    entry = re.search(r'<script type="module" src="(/static/[^"]+\?v=[0-9a-f]+)"', page)
    assert entry, "the article page links its entry script with a version"
    versioned = client.get(entry.group(1))
    assert versioned.status_code == 200
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"

    imported = re.search(r'from "\./(live/[a-z]+\.js)"', versioned.text)
    assert imported, "the entry script imports its modules by relative URL"
    module = client.get(f"/static/{imported.group(1)}")
    assert module.status_code == 200
    assert module.headers["cache-control"] == "no-cache"
    revalidated = client.get(f"/static/{imported.group(1)}", headers={"If-None-Match": module.headers["etag"]})
    assert revalidated.status_code == 304


def test_a_missing_asset_is_a_plain_404_with_no_cache_promise(client):
    missing = client.get("/static/no-such-file.js?v=0123456789")
    assert missing.status_code == 404
    assert "immutable" not in missing.headers.get("cache-control", "")
