"""CONTENT_DIR's article files, published through the store like the API's articles, and watched.

At start every file is read; one whose text (its SHA-256, `Article.file_hash`) differs from the
stored article's is written to the store, with its thread and its seed comments, so every
instance serves it. An unchanged file is not written again: a restart costs one read per file,
announces nothing, and leaves an API change to a file article (PATCH, DELETE) in place.

While the server runs, the directory is watched (watchfiles, which uvicorn already brings): a
new or changed file is published within about a second; a broken one is logged and skipped
(the article stays as it was); a deleted file unpublishes its article (its page answers 410,
its comments are kept), unless another file in the same change now holds that slug (a rename).
A slug that an API article already holds is not taken by a file. A file article the store
lost (a Redis flushed) is written again from its file when a reader asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import watchfiles

from .articles import Articles
from .comments import Comment
from .content import Article, ArticleError, load_articles, read_article

log = logging.getLogger("backchannel.content")

# watchfiles groups the changes of this many milliseconds into one batch (an editor's save is
# several writes); a file is published this long after its last write, at most.
DEBOUNCE_MS = 300


class ContentDir:
    def __init__(self, directory: Path, articles: Articles, seeds: Callable[[Article], list[Comment]]) -> None:
        self.directory = directory
        self.articles = articles
        self.seeds = seeds
        self._slugs: dict[str, str] = {}  # file path -> the slug it published
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_batch: Callable[[], None] = lambda: None  # after each batch of changes (the tests wait on it)

    async def load(self) -> None:
        """Publish every file that changed since it was last stored (a broken one is logged)."""
        found, _errors = await asyncio.to_thread(load_articles, self.directory)
        for article in found.values():
            await self._publish(dataclasses.replace(article, published_at=_modified_at(Path(article.source))))

    def watch(self) -> None:
        if not self.directory.is_dir():
            log.warning("CONTENT_DIR %s is not a directory: not watching it", self.directory)
            return
        self._task = asyncio.create_task(self._watch(), name="watch-content")

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        changes_of = watchfiles.awatch(
            self.directory,
            watch_filter=lambda _change, path: path.endswith(".txt"),
            debounce=DEBOUNCE_MS,
            stop_event=self._stop,
            recursive=False,
        )
        async for changes in changes_of:
            try:
                await self._changed(changes)
            except Exception:  # the store away, a bug: log, and keep watching
                log.exception("could not publish the changes in %s", self.directory)
            self.on_batch()

    async def _changed(self, changes: Iterable[tuple[watchfiles.Change, str]]) -> None:
        found, gone = await asyncio.to_thread(self._read, {path for _change, path in changes})
        published = set()
        for article in found:
            await self._publish(article)
            published.add(article.slug)
        for path in gone:
            slug = self._slugs.pop(path, None)
            if slug is not None and slug not in published and slug in self.articles:
                log.info("article file %s is gone: unpublishing %s", path, slug)
                await self.articles.unpublish(slug)

    def _read(self, paths: set[str]) -> tuple[list[Article], list[str]]:
        """The changed files' articles (a broken one logged and left out), and the files gone."""
        found, gone = [], []
        for path in sorted(paths):
            if not Path(path).is_file():
                gone.append(path)
                continue
            try:
                article = read_article(Path(path))
                owner = next((p for p, slug in self._slugs.items() if slug == article.slug and p != path), None)
                if owner is not None and Path(owner).is_file():
                    raise ArticleError(path, f"slug {article.slug!r} already used by {owner}")
            except ArticleError as exc:
                log.error("skipping article %s", exc)
            else:
                found.append(dataclasses.replace(article, published_at=_modified_at(Path(path))))
        return found, gone

    async def restore(self, slug: str) -> bool:
        """Write the file that holds this slug to the store again (the store lost it: a Redis
        flushed). Whether it could."""
        path = next((p for p, held in self._slugs.items() if held == slug), None)
        if path is None:
            return False
        try:
            article = await asyncio.to_thread(read_article, Path(path))
        except ArticleError as exc:
            log.error("cannot restore article %s: %s", slug, exc)
            return False
        if article.slug != slug:
            return False
        summary = self.articles[slug]
        await self.articles.put(dataclasses.replace(article, published_at=summary.published_at), self.seeds(article))
        log.warning("article %s was missing from the store: written again from %s", slug, path)
        return True

    async def _publish(self, article: Article) -> None:
        """Store the file's article (its published_at: the file's time) unless it is stored as it is."""
        self._slugs[article.source] = article.slug
        stored = await self.articles.stored(article.slug)
        if stored is not None:
            earlier, _published = stored
            if earlier.file_hash is None:
                log.error("skipping article %s: slug %r is an article from the API", article.source, article.slug)
                return
            if earlier.file_hash == article.file_hash:
                # Stored as it is, maybe by another instance starting at this moment, after this
                # one read the summaries and before it listens to ArticleChanged: served from
                # what was just read, not left unknown ("No such article." until a restart).
                self.articles.apply(*stored)
                # Its thread is ensured all the same, as every instance did before articles were
                # stored: the Redis store recreates a flushed thread with the seeds it was given here.
                await self.articles.backend.ensure_thread(article.slug, self.seeds(article))
                return
            # A corrected file keeps its first publication's time (and its place in the index).
            article = dataclasses.replace(article, published_at=earlier.published_at)
        await self.articles.put(article, self.seeds(article))
        log.info("published %s from %s", article.slug, article.source)


def _modified_at(path: Path) -> str | None:
    """A new file article's publication time: when the file was last written."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
