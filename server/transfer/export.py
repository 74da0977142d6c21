"""Every lasting record of a store as JSON lines, and back.

The file: a header line (format and version), then per thread (sorted by slug) its head (with
its state: open, closed or hidden, who set it and when; absent in older files: open), its
comments (published in seq order, then pending ones), its event log as stored and its votes
(comment id and voter, sorted; none in older files, whose comments carry the counts), then the
moderation records (kv, sets, lists, sorted by key), then the articles (newest first, each as
stored: published flag, meta and paragraphs), then an end line with the count of each kind
(a file from before articles were stored counts none, and reads as such). Every line is one
JSON object with a `kind`, keys sorted, so the same data always gives the same bytes:
export -> import -> export is byte-identical, whatever the two stores are.

Import writes each thread in one transaction, comments keyed by id, events by (slug, seq),
records by key, and keeps every seq and epoch: a reader's `since` still works after the move.
Importing a file twice is importing it once. Import into an empty store (or one that only
holds earlier imports of the same data): a thread already written to in the target is
overwritten by the file's version of it, not merged.

Not exported: moderators' sessions (`session:*` and `sessions-of:*`; a session is a bearer
credential, so it stays out of files, and moderators log in again on the new store), and the
bus's state (rate-limit counters, presence), which lasts seconds and is rebuilt as traffic
flows. Records that expire are exported with their absolute expiry, so temporary bans end
when they would have.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import orjson
from tqdm import tqdm

from ..backends.base import Record, Store, StoredArticle, ThreadDump
from ..comments import OPEN, THREAD_STATES, ThreadState

FORMAT = "backchannel-export"
VERSION = 1
KINDS = ("thread", "comment", "event", "vote", "kv", "set", "list", "article")
ARTICLES_READ = 500  # article summaries per store read
# A moderator's session is a credential: it does not go into a file that gets copied around.
_EPHEMERAL_PREFIXES = {"kv": ("session:",), "set": ("sessions-of:",), "list": ()}


class ImportFailed(RuntimeError):
    pass


def _line(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"kind": kind, **fields}, option=orjson.OPT_SORT_KEYS) + b"\n"


def _exported(record: Record) -> bool:
    return not record.key.startswith(_EPHEMERAL_PREFIXES[record.kind])


def _record_line(record: Record) -> bytes:
    if record.kind == "kv":
        # Milliseconds: every store keeps them exactly (PostgreSQL timestamps stop at microseconds).
        expires_at = None if record.expires_at is None else round(record.expires_at, 3)
        return _line("kv", key=record.key, value=record.value, expires_at=expires_at)
    name = "members" if record.kind == "set" else "items"
    return _line(record.kind, key=record.key, **{name: record.value})


async def export(store: Store, out: IO[bytes], progress: bool = True) -> Counter[str]:
    """Write every record of the store to out; returns the count of each kind written."""
    counts: Counter[str] = Counter()
    out.write(_line("header", format=FORMAT, version=VERSION))
    slugs = await store.thread_slugs()
    for slug in tqdm(slugs, desc="export", unit="thread", disable=not progress, file=sys.stderr):
        thread = await store.dump_thread(slug)
        state = thread.state
        out.write(
            _line(
                "thread",
                slug=slug,
                seq=thread.seq,
                epoch=thread.epoch,
                seeded=thread.seeded,
                state=state.name,
                state_by=state.by,
                state_at=state.at,
            )
        )
        for comment in thread.comments:
            out.write(_line("comment", **comment))
        for seq, payload in thread.events:
            out.write(_line("event", slug=slug, seq=seq, event=payload))
        for comment_id, voter in thread.votes:
            out.write(_line("vote", slug=slug, comment_id=comment_id, voter=voter))
        counts.update(thread=1, comment=len(thread.comments), event=len(thread.events))
        if thread.votes:  # a kind the file does not hold is not counted (older files hold none)
            counts["vote"] += len(thread.votes)
    for record in filter(_exported, await store.dump_records()):
        out.write(_record_line(record))
        counts[record.kind] += 1
    async for article in _articles(store):
        out.write(_line("article", **asdict(article)))
        counts["article"] += 1
    out.write(_line("end", counts={kind: counts[kind] for kind in KINDS}))
    return counts


async def _articles(store: Store) -> AsyncIterator[StoredArticle]:
    """Every article with its paragraphs, newest first."""
    before: tuple[str, str] | None = None
    while page := await store.article_summaries(before, ARTICLES_READ):
        for summary in page:
            if (article := await store.get_article(summary.slug)) is not None:
                yield article
        before = (page[-1].published_at, page[-1].slug)


@dataclass
class _Expected:
    """What the file holds, by identity, to check against the target once written."""

    comments: dict[str, set[str]] = field(default_factory=dict)  # slug -> comment ids
    events: dict[str, set[int]] = field(default_factory=dict)  # slug -> seqs
    votes: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # slug -> (comment id, voter)
    records: set[tuple[str, str]] = field(default_factory=set)  # (kind, key)
    articles: set[str] = field(default_factory=set)  # slugs
    counts: Counter[str] = field(default_factory=Counter)


def _lines(source: IO[bytes], progress: bool) -> Iterator[dict[str, Any]]:
    size = None
    if source.seekable():  # a file: the bar shows how much of it is read
        start = source.tell()
        size = source.seek(0, os.SEEK_END) - start
        source.seek(start)
    with tqdm(total=size, desc="import", unit="B", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
        for number, raw in enumerate(source, 1):
            bar.update(len(raw))
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ImportFailed(f"line {number}: not JSON ({exc})") from exc
            if not isinstance(item, dict) or item.get("kind") not in (*KINDS, "header", "end"):
                raise ImportFailed(f"line {number}: not a record of a {FORMAT} file")
            yield item


def _record(kind: str, item: dict[str, Any]) -> Record:
    if kind == "kv":
        return Record("kv", item["key"], item["value"], item["expires_at"])
    return Record(kind, item["key"], item["members" if kind == "set" else "items"])


async def import_file(store: Store, source: IO[bytes], progress: bool = True) -> Counter[str]:
    """Load an export into the store, then check that the store holds every record of the
    file; returns the counts read back. Raises ImportFailed on a bad file or a mismatch."""
    expected = _Expected()
    thread: ThreadDump | None = None
    records: list[Record] = []
    declared: dict[str, int] | None = None
    lines = _lines(source, progress)
    header = next(lines, None)
    if header is None or header["kind"] != "header" or header.get("format") != FORMAT:
        raise ImportFailed(f"not a {FORMAT} file (no header line)")
    if header.get("version") != VERSION:
        raise ImportFailed(f"format version {header.get('version')} is not {VERSION}, which this code reads")

    async def flush_thread() -> None:
        if thread is not None:
            await store.load_thread(thread)

    for item in lines:
        kind = item.pop("kind")
        if declared is not None:
            raise ImportFailed("records after the end line")
        if kind == "thread":
            await flush_thread()
            state = ThreadState(item.get("state", OPEN), item.get("state_by"), item.get("state_at"))
            if state.name not in THREAD_STATES:
                raise ImportFailed(f"thread {item['slug']!r}: unknown state {state.name!r}")
            thread = ThreadDump(item["slug"], item["seq"], item["epoch"], item["seeded"], [], [], state)
            expected.comments[thread.slug], expected.events[thread.slug] = set(), set()
            expected.votes[thread.slug] = set()
        elif kind in ("comment", "event", "vote"):
            if thread is None or item["slug"] != thread.slug:
                raise ImportFailed(f"a {kind} of {item['slug']!r} outside its thread")
            if kind == "comment":
                thread.comments.append(item)
                expected.comments[thread.slug].add(item["id"])
            elif kind == "vote":
                thread.votes.append((item["comment_id"], item["voter"]))
                expected.votes[thread.slug].add((item["comment_id"], item["voter"]))
            else:
                thread.events.append((item["seq"], item["event"]))
                expected.events[thread.slug].add(item["seq"])
        elif kind == "end":
            declared = item["counts"]
            continue
        elif kind == "article":
            await store.put_article(StoredArticle(**item))
            expected.articles.add(item["slug"])
        else:
            records.append(_record(kind, item))
            expected.records.add((kind, item["key"]))
            if len(records) >= 500:
                await store.load_records(records)
                records = []
        expected.counts[kind] += 1
    await flush_thread()
    await store.load_records(records)
    if declared is None:
        raise ImportFailed("the file ends before its end line: it is cut short (what it held is imported)")
    if {kind: declared.get(kind, 0) for kind in KINDS} != {kind: expected.counts[kind] for kind in KINDS}:
        raise ImportFailed(f"the file's end line counts {declared}, its lines {dict(expected.counts)}")
    found = await _read_back(store, expected)
    if found != expected.counts:
        raise ImportFailed(f"the store holds {dict(found)} of the file's {dict(expected.counts)}")
    return found


async def _read_back(store: Store, expected: _Expected) -> Counter[str]:
    """How many of the file's records the store now holds, by kind."""
    found: Counter[str] = Counter()
    slugs = set(await store.thread_slugs())
    for slug, ids in expected.comments.items():
        if slug not in slugs:
            continue
        thread = await store.dump_thread(slug)
        found["thread"] += 1
        found["comment"] += len(ids & {c["id"] for c in thread.comments})
        found["event"] += len(expected.events[slug] & {seq for seq, _payload in thread.events})
        if voted := len(expected.votes[slug] & set(thread.votes)):
            found["vote"] += voted
    for kind, _key in expected.records & {(r.kind, r.key) for r in await store.dump_records()}:
        found[kind] += 1
    for slug in expected.articles:
        found["article"] += await store.get_article(slug) is not None
    return found
