"""Versioned schemas of the SQL stores: migration N is the (N-1)th entry of a list, run once.

Each store keeps a `schema_version` table with one row per migration applied. At start (and
by `python -m server migrate`) the missing migrations run in order, each in the transaction
that records it; a database already newer than the code is refused, since old code writing
to a newer schema could corrupt it.

SQLite and PostgreSQL keep separate lists: their DDL differs exactly where it matters
(integer keys, WITHOUT ROWID, timestamps); the queries are written once, in sql.py. Add a
migration at the end of both; never edit one that has shipped. sql.migrate() runs them.
"""

from __future__ import annotations

SQLITE: list[list[str]] = [
    [  # 1: the schema as it stood before versioning (IF NOT EXISTS: older databases take it as is)
        """CREATE TABLE IF NOT EXISTS threads (
            slug   TEXT PRIMARY KEY,
            seq    INTEGER NOT NULL DEFAULT 0,   -- the latest event's seq
            epoch  TEXT NOT NULL,                -- new whenever the thread's history starts afresh
            seeded INTEGER NOT NULL DEFAULT 0    -- the article's own comments have been imported
        )""",
        """CREATE TABLE IF NOT EXISTS comments (
            id         TEXT PRIMARY KEY,
            slug       TEXT NOT NULL REFERENCES threads(slug),
            seq        INTEGER,                  -- NULL while pending moderation
            parent     TEXT,
            name       TEXT NOT NULL,
            about      TEXT,
            body       TEXT NOT NULL,
            html       TEXT NOT NULL,
            created_at TEXT NOT NULL,
            status     TEXT NOT NULL,
            reader_id  TEXT,
            removed_by TEXT,
            removed_at TEXT,
            ip         TEXT,
            ref_key    TEXT UNIQUE                -- reader + client ref: a retried post is stored once
        )""",
        "CREATE INDEX IF NOT EXISTS comments_by_thread ON comments (slug, seq)",
        """CREATE TABLE IF NOT EXISTS events (
            slug    TEXT NOT NULL,
            seq     INTEGER NOT NULL,
            payload TEXT NOT NULL,               -- the event exactly as it goes on the wire
            PRIMARY KEY (slug, seq)
        ) WITHOUT ROWID""",
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)",
        """CREATE TABLE IF NOT EXISTS sets (key TEXT NOT NULL, member TEXT NOT NULL,
            PRIMARY KEY (key, member)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS lists (n INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
            value TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS lists_by_key ON lists (key, n)",
    ],
    [  # 2: a comment posted from a moderator's session carries the staff badge
        "ALTER TABLE comments ADD COLUMN staff INTEGER NOT NULL DEFAULT 0",
    ],
    [  # 3: articles live in the store (the newsroom's API and CONTENT_DIR), so every instance serves them
        """CREATE TABLE articles (
            slug         TEXT PRIMARY KEY,
            published_at TEXT NOT NULL,             -- fixed-width ISO-8601 UTC: text order is time order
            published    INTEGER NOT NULL,          -- 0: unpublished, kept (its page answers 410)
            meta         TEXT NOT NULL,             -- JSON: every field but the paragraphs
            paragraphs   TEXT NOT NULL              -- JSON list
        )""",
        "CREATE INDEX articles_newest ON articles (published_at, slug)",
    ],
    [  # 4: a thread is open, closed or hidden, set by someone at some time (none: open, never changed)
        "ALTER TABLE threads ADD COLUMN state TEXT NOT NULL DEFAULT 'open'",
        "ALTER TABLE threads ADD COLUMN state_by TEXT",
        "ALTER TABLE threads ADD COLUMN state_at TEXT",
    ],
    [  # 5: expired kv rows are found (and purged) without reading the others
        "CREATE INDEX IF NOT EXISTS kv_by_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL",
    ],
    [  # 6: a thread is read a page at a time, each comment's replies apart (Store.comment_page)
        "CREATE INDEX comments_by_parent ON comments (slug, parent, seq)",
    ],
    [  # 7: readers recommend comments (one vote per reader per comment) and edit their own
        "ALTER TABLE comments ADD COLUMN edited_at TEXT",
        "ALTER TABLE comments ADD COLUMN votes INTEGER NOT NULL DEFAULT 0",  # kept in step with the votes' rows
        """CREATE TABLE votes (
            comment_id TEXT NOT NULL,
            voter      TEXT NOT NULL,             -- the reader id
            slug       TEXT NOT NULL,
            PRIMARY KEY (comment_id, voter)
        ) WITHOUT ROWID""",
        "CREATE INDEX votes_by_voter ON votes (slug, voter)",
    ],
]

POSTGRES: list[list[str]] = [
    [  # 1
        """CREATE TABLE threads (
            slug   text PRIMARY KEY,
            seq    bigint NOT NULL DEFAULT 0,   -- the latest event's seq; its row lock orders writers
            epoch  text NOT NULL,
            seeded boolean NOT NULL DEFAULT false
        )""",
        """CREATE TABLE comments (
            id         text PRIMARY KEY,
            slug       text NOT NULL REFERENCES threads(slug),
            seq        bigint,
            parent     text,
            name       text NOT NULL,
            about      text,
            body       text NOT NULL,
            html       text NOT NULL,
            created_at text NOT NULL,
            status     text NOT NULL,
            reader_id  text,
            removed_by text,
            removed_at text,
            ip         text,
            ref_key    text UNIQUE
        )""",
        "CREATE INDEX comments_by_thread ON comments (slug, seq)",
        """CREATE TABLE events (
            slug    text NOT NULL,
            seq     bigint NOT NULL,
            payload text NOT NULL,
            PRIMARY KEY (slug, seq)
        )""",
        "CREATE TABLE kv (key text PRIMARY KEY, value text NOT NULL, expires_at timestamptz)",
        "CREATE TABLE sets (key text NOT NULL, member text NOT NULL, PRIMARY KEY (key, member))",
        """CREATE TABLE lists (n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key text NOT NULL,
            value text NOT NULL)""",
        "CREATE INDEX lists_by_key ON lists (key, n)",
    ],
    [  # 2
        "ALTER TABLE comments ADD COLUMN staff boolean NOT NULL DEFAULT false",
    ],
    [  # 3
        # COLLATE "C": ordered by code point, as SQLite and Redis order them (a locale's collation
        # skips hyphens, and would page slugs in another order than the other stores).
        """CREATE TABLE articles (
            slug         text COLLATE "C" PRIMARY KEY,
            published_at text COLLATE "C" NOT NULL,
            published    boolean NOT NULL,
            meta         text NOT NULL,
            paragraphs   text NOT NULL
        )""",
        "CREATE INDEX articles_newest ON articles (published_at, slug)",
    ],
    [  # 4
        "ALTER TABLE threads ADD COLUMN state text NOT NULL DEFAULT 'open'",
        "ALTER TABLE threads ADD COLUMN state_by text",
        "ALTER TABLE threads ADD COLUMN state_at text",
    ],
    [  # 5
        "CREATE INDEX kv_by_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL",
    ],
    [  # 6
        "CREATE INDEX comments_by_parent ON comments (slug, parent, seq)",
    ],
    [  # 7
        "ALTER TABLE comments ADD COLUMN edited_at text",
        "ALTER TABLE comments ADD COLUMN votes integer NOT NULL DEFAULT 0",
        """CREATE TABLE votes (
            comment_id text NOT NULL,
            voter      text NOT NULL,
            slug       text NOT NULL,
            PRIMARY KEY (comment_id, voter)
        )""",
        "CREATE INDEX votes_by_voter ON votes (slug, voter)",
    ],
]


class SchemaTooNew(RuntimeError):
    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database schema is version {found}, newer than this code knows ({known}); "
            "not starting: run the newer code, or restore a backup taken before the upgrade"
        )
