"""All state in one SQLite file: events, the outbox, mirrors, cursors, id cache, tokens, runs.

The store knows no network. Every write that acknowledges something to the outside world is
committed (synchronous=FULL by default) before the caller answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import random
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import sqlite_utils
from sqlite_utils.migrations import Migrations

from watchbridge import servelock
from watchbridge.beside import Noted
from watchbridge.clocksteps import Reading, Step
from watchbridge.defaulted import KEEP as DEFAULTED_KEPT
from watchbridge.errors import NewerDatabase, StoreError
from watchbridge.filesystems import read_mountinfo, shared_filesystem_warning
from watchbridge.forplex import KEEP as FOR_PLEX_KEPT
from watchbridge.forplex import KEPT as FOR_PLEX_WAITING
from watchbridge.forplex import TAKEN as FOR_PLEX_TAKEN
from watchbridge.forplex import ForPlex
from watchbridge.lastwebhooks import SERVERS_KEPT, LastWebhook
from watchbridge.logs import masked_as_logged
from watchbridge.model import percent_watched, ref_from_dict
from watchbridge.playback import (
    Naming,
    Report,
    Session,
    after_the_others_report,
    begins_another_viewing,
    ends_a_viewing,
    finished_its_rest,
    got_into_a_viewing,
    one_of_two_reports,
    players_named,
    recorded_completion,
    recorded_rest_end,
    recorded_start,
    report_from_record,
    report_keys,
    sent_the_reported,
)
from watchbridge.privatefiles import make_private_folder
from watchbridge.senders import TOGETHER_WITHIN
from watchbridge.storagefault import DatabaseMoved, fault_of
from watchbridge.tautulliwatched import Reports, Seen
from watchbridge.unlisted import KEEP as UNLISTED_KEPT
from watchbridge.unlisted import Unlisted, account_key

OutboxStatus = Literal["pending", "inflight", "done", "dead"]

if TYPE_CHECKING:
    from watchbridge.accounts import AccountChange

log = logging.getLogger(__name__)

ACCOUNT_CURSOR = "account"  # cursors (service, profile, this): whose account it is (accounts.py)
# cursors (target, profile, this): a count of the profile's sign-ins to the target
# (`resume_after_sign_in`), whichever process made them: the delivery worker compares it with
# the one a held row's last try went with, and lifts the hold once it differs.
SIGNED_IN_CURSOR = "signed_in"

migrations = Migrations("watchbridge")
OPEN_TRIES = 6  # another process may be creating or migrating the same database: wait for it
OPEN_PAUSE = 0.25


def _when_free(action: Callable[[], object]) -> None:
    """Run `action`, again after a pause while another process's work on the database makes
    it fail (what that process did first is then taken as done). A damaged file, or one that
    is not a database, fails at once: waiting does not mend it."""
    for attempt in range(1, OPEN_TRIES + 1):
        try:
            action()
            return
        except sqlite3.Error as exc:
            if attempt == OPEN_TRIES or _damaged(exc):
                raise
            time.sleep(OPEN_PAUSE * attempt)


# Commits between background checkpoints (see Store.checkpoint_apart). Small ones: a
# checkpoint's sync of the database file holds up the commit beside it (a webhook group's
# answer) for about as long as it has pages to write; every 100 commits under a flood, that
# was 10-17 ms twice a second (bench/ingest.py p99 13-16 ms; every 25: 10-12 ms).
CHECKPOINT_EVERY = 25
WAL_RESTART_FRAMES = 8192  # a log this long (32 MB of 4 KB pages) must start over soon
# A row whose last send may have landed has a `last_error` starting with this: it is checked
# against the service before it is ever sent again.
UNKNOWN_OUTCOME = "unknown outcome"
# How a row settled done without a write starts its `last_error` (deliver.worker's skips).
SKIPPED = "skipped: "
# How a rate limit's hold of one profile's rows starts its reason (deliver.worker's
# `rate_limit_hold`): nothing to do but wait, as for a service held down as a whole.
RATE_LIMITED = "rate limited until "
# The deliveries a person counts (`Store.sent_counts`): a play, a rating. Not a scrobble's
# start or pause (`watching`), nor a resume point (`progress`).
COUNTED_SENT = ("play", "rating")
QUEUED_AGAIN = "queued again by `watchbridge deadletters retry`"  # a retried dead letter's reason
# A dead letter of the service's own failure (a server error answered to its write, a dropped
# connection), queued again by itself once the service took a delivery again: its reason.
QUEUED_ONCE_MORE = "queued again by itself, once: the service took a delivery again"
# outbox.once_more: a dead letter of the service's own failure waits to be queued again by
# itself (ONCE_MORE_DUE); one queued so (ONCE_MORE_SPENT) is final if it gives up again. With
# no delivery to the service to show it takes writes again, the oldest is sent alone now and
# then (ONCE_MORE_PROBE, `Store.queue_probe`): through, it shows that, and the rest go; not
# through, it is a dead letter waiting again (ONCE_MORE_DUE), still told of.
ONCE_MORE_DUE, ONCE_MORE_SPENT, ONCE_MORE_PROBE = "due", "spent", "probe"
# In a rating's payload: the item as its send named it (a Serializd send: by the show's TMDB
# id, which the queued item may lack), added when the send goes (`Store.note_resolved`).
PLACED = "placed"
# A row whose try a crash cut short (its attempt spent) ends its `last_error` with this, the
# earlier error kept in front: only such a row at its last attempt gives up untried (one
# past a lowered `delivery.max_attempts` is tried once more).
CUT_SHORT = "a try cut short by the process stopping"
# A row found in flight after this many crashes (killed while it was being delivered: out of
# memory, a power cut) is claimed alone from then on. Any row of a batch may be what took the
# process down, so a crash spends the attempt of a row in flight alone only (`_taken_back`): a
# dozen kills during one batch leave its innocent rows as they were, and one that takes the
# process down by itself dies of it alone.
CRASHES_ALONE = 2
# SQL: `last_error` with CUT_SHORT at its end, once.
_CUT_SHORT_NOTED = (
    f"CASE WHEN last_error IS NULL OR last_error = '' THEN '{CUT_SHORT}'"
    f" WHEN substr(last_error, -{len(CUT_SHORT)}) = '{CUT_SHORT}' THEN last_error"
    f" ELSE last_error || '; then {CUT_SHORT}' END"
)
# Settings. Only a `backup_to` copy holds COPIED_AT (when it was taken): a database that has it
# is a copy put back (a restore, whichever way it came back), found and cleared as it opens.
# RESTORED_COPY holds that time ("" when unknown: an older release's copy) until the service
# or a `watchbridge sync` has told the user of the restore (`Store.tell_restore`); one told by a
# sync leaves RESTORE_TOLD for the service's next start (`Store.restore_told_elsewhere`).
COPIED_AT = "copied_at"
RESTORED_COPY = "restored_copy"
RESTORE_TOLD = "restore_told"
ENGINE = "watchbridge"  # the service name under which the engine keeps its own state
# The cursor (ENGINE, profile, RESTORED_LINK + link) a restore leaves for each link and
# profile with sync state in the copy, until that link's next applied run: it pairs the plays
# new on both sides since its baseline as a first run does (`reconcile.plan`'s `restored`).
RESTORED_LINK = "restored:"
# SQL: the row carries that mark (its last send may have landed).
_MARKED = f"substr(COALESCE(last_error, ''), 1, {len(UNKNOWN_OUTCOME)}) = '{UNKNOWN_OUTCOME}'"
# SQL: `last_error` without the mark of a send that may have landed (`_MARKED`, as
# deliver.worker.unsure puts it: "unknown outcome: REASON"): what the row waits for.
_UNMARKED_REASON = (
    f"CASE WHEN substr(last_error, 1, {len(UNKNOWN_OUTCOME) + 2}) = '{UNKNOWN_OUTCOME}: '"
    f" THEN substr(last_error, {len(UNKNOWN_OUTCOME) + 3}) ELSE last_error END"
)
# SQL: what holds a pending row back, for counting the rows one cause holds together. Rows
# held for a sign-in of one target and profile wait for that one sign-in, whatever their
# words (Serializd's refusal quotes its answer at the login, not when on record), and those
# held for a media server's own key (outbox.waits_for_server) for that key; else the reason
# as worded.
_HOLD_CAUSE = (
    "CASE WHEN waits_for_server IS NOT NULL THEN 'server key ' || waits_for_server"
    f" WHEN waits_for_sign_in = 1 THEN '' ELSE {_UNMARKED_REASON} END"
)
# Rows waiting for ids a target can use, also those whose earlier send may have landed.
_UNMATCHED = f"(last_error LIKE 'unmatched:%' OR last_error LIKE '{UNKNOWN_OUTCOME}: unmatched:%')"
# SQL: the errors releases before m012 held a row for a sign-in with (a Trakt, AniList or Plex
# person's sign-in refused: `watchbridge auth ...`; a Serializd account or the Plex server's
# token refused: its config key).
_OLD_SIGN_IN_HOLD = (
    "instr(last_error, 'watchbridge auth ') > 0"
    " OR instr(last_error, '.accounts.serializd') > 0"
    " OR instr(last_error, 'services.plex.token') > 0"
)
# Rows `deadletters discard` takes by id: dead letters, and queued rows waiting for ids
# (`_UNMATCHED`), which the user may give up rather than wait for (an unplaced HAMA episode waits
# so without end). Not in flight: a try under way settles the row as it ends.
_DISCARDABLE = f"(status = 'dead' OR (status = 'pending' AND {_UNMATCHED}))"
# Pruned rows leave free pages in the file; once this many (16 MB of 4 KB pages) and half the
# file, housekeeping gives them back (`Store.reclaim_space`).
RECLAIM_MIN_PAGES = 4096
RECLAIM_DISK_MARGIN = 64 * 2**20  # bytes left free beyond the rewrite's two copies
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes of write-ahead log kept on disk once it starts over
WAL = "wal"  # the journal mode the store asks SQLite for (`PRAGMA journal_mode`'s answer)
KEEP_RUNS = 30 * 86400.0  # finished sync runs stay a month
DIED = (
    "the process running it stopped before its end (killed: out of memory, a power cut, or "
    "a container stopped without time to finish?); if it happens again, look at the "
    "system's log for the out-of-memory killer and give the container more memory"
)
WAITING_SHOWN = 5  # reasons rows are held for, shown by `status` and the page
DEAD_SHOWN = 5  # dead letters the status page lists (the newest), beside their count
# The uptime and boot of the service's last note that it was alive (`note_alive`).
ALIVE_CLOCK = "alive_clock"
KEEP_MARKS = 400 * 86400.0  # an item's last completion (marks session) stays over a year
# What holds a row back (outbox.held): its target as a whole (down, rate-limits, fails), or
# its profile's deliveries to it (a lost sign-in, an account limit, the profile rate-limited).
HELD_TARGET, HELD_PROFILE = "target", "profile"
_HELD_BY = "status = 'inflight' AND claimed_by = ?"  # rows a worker has claimed and holds
CLAIM_LEASE = 30 * 60.0  # seconds a claimed row may stay in flight before others take it back
# Seconds a claim stays the sign of a worker still delivering (renewed every 5 minutes while it
# does, deliver.worker.CLAIM_RENEW_EVERY): meanwhile no other worker (a `watchbridge sync`
# beside the service) claims rows of that target and profile. Each target checks what it
# wrote for the profile (its ledger) before it writes: two workers at once could both find
# nothing and log one viewing twice (a webhook's play and a link's copy of it). A worker
# killed mid-delivery holds them up this long at most, not the whole lease.
CLAIM_ALIVE = 10 * 60.0
BESIDE_LOOK = 10.0  # seconds between looks at rows held up by another worker (`next_due`)
# SQL: whether in-flight row o is the only row its worker holds, of any target: nothing else
# of its process was being delivered (its target loops wait for a row that goes alone:
# deliver.solo), so a crash then is its own.
_ALONE = (
    "NOT EXISTS (SELECT 1 FROM outbox x WHERE x.status = 'inflight'"
    " AND x.claimed_by = o.claimed_by AND x.id != o.id)"
)
# SQL (parameters: the claiming worker, now - CLAIM_ALIVE): whether another worker is
# delivering to row o's target for o's profile.
_ANOTHER_DELIVERING = (
    "EXISTS (SELECT 1 FROM outbox x WHERE x.status = 'inflight' AND x.target = o.target"
    " AND x.profile = o.profile AND x.claimed_by IS NOT ? AND x.updated_at > ?)"
)
LOCK_POLL = 0.002  # seconds between a blocked thread's calls to Store.before_waiting
RUN_LEASE = 300.0  # a sync run that has not stamped its heartbeat for this long is dead
# SQL: a sync run that went through (ok, or held for a confirmation); each link's last one
# outlives KEEP_RUNS (see Store.prune), so its time is known however long the link fails.
_WENT_THROUGH = "outcome IN ('ok', 'held')"
# Mirror collections (service, collection) whose entries belong to one outbox row (their data's
# "row": its id), forgotten with it (`Store._forget_ended_rows`): a Plex removal's first try.
ROW_ENTRIES = (("plex", "unwatching"),)  # deliver.plex.UNWATCHING
# Mirror collections whose entries name an outbox row (`data.row`) and stand for it as long as
# it exists, done too: forgotten once it is gone (pruned, discarded). A dead letter keeps its.
ROW_KEPT_ENTRIES = (("serializd", "hand-logs"),)  # deliver.serializd.HAND_LOGS
# SQL: a whole mirror collection's rows (parameters: service, profile, collection).
_COLLECTION_ROWS = (
    "SELECT item_key, data FROM mirror WHERE service = ? AND profile = ? AND collection = ?"
)


def _collection(
    conn: sqlite3.Connection, service: str, profile: str, collection: str
) -> dict[str, Any]:
    """A whole mirror collection, decoded row by row: the rows fetched are never all held at
    once."""
    fetched = conn.execute(_COLLECTION_ROWS, (service, profile, collection))
    return {key: json.loads(data) for key, data in fetched}


# SQL: a mirror row put, written only where it is new or its value differs (an unchanged
# row's updated_at stays: only the rows a start over carried are pruned by it, never put).
_MIRROR_UPSERT = (
    "INSERT INTO mirror (service, profile, collection, item_key, data, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (service, profile, collection, item_key)"
    " DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
    " WHERE data IS NOT excluded.data"
)
# Rows a transaction of a write in parts (`Store.mirror_replace_in_parts`,
# `Store.mirror_change_in_parts`, `sync.applying`) writes: ~10 ms of the store's lock on a
# quiet machine; on a loaded one, each row's step waits for the GIL, and 5,000 took 100-300 ms.
REPLACE_PART = 1_000
# SQL: the server a stored webhook event names ("" none: Tautulli's templates, generic).
_EVENT_SERVER = "COALESCE(json_extract(payload, '$.server'), '')"
# The `source` of the events a catch-up records (catchup.py): plays no webhook brought, so no
# sign that a source or server sends webhooks (`last_webhooks`, `recent_sources`).
CAUGHT_UP = "caught_up"
# The start of the names of the catch-up's cursors (catchup.CURSOR, AT_CURSOR), dropped when a
# backup copy is put back (`_mark_restored_rows`), with its play counts (`catch_up_counts`).
CATCH_UP_CURSORS = "catch_up"
# Mirror collection (service trakt): a show's TMDB id -> since when (and last when) Trakt's
# episode dates of it could not be had (`release_marks.failed_lookups`), kept by the Trakt
# reader; a forward step of the clock moves its times (`_restamp_forward`).
FAILED_LOOKUPS = "failed_release_lookups"
# SQL, before a FROM of (source, server, at) rows grouped by source and server: each with `n`,
# its rank among its source's servers, the most recently seen first (lastwebhooks.SERVERS_KEPT).
_LATEST_SERVERS = (
    "SELECT source, server, MAX(at) AS at,"
    " ROW_NUMBER() OVER (PARTITION BY source ORDER BY MAX(at) DESC, server) AS n"
)
# SQL: a run alive, its heartbeat younger than the lease (parameter: now - lease).
_ALIVE = "outcome = 'running' AND COALESCE(heartbeat_at, started_at) > ?"


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            received_at REAL NOT NULL,
            source TEXT NOT NULL,
            kind TEXT NOT NULL,
            profile TEXT,
            idempotency_key TEXT UNIQUE,
            payload TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            event_id INTEGER REFERENCES events(id),
            target TEXT NOT NULL,
            profile TEXT NOT NULL,
            action TEXT NOT NULL,
            payload TEXT NOT NULL,
            ordering_key TEXT NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            claimed_by TEXT,
            last_error TEXT
        )"""
    )
    db.execute("CREATE INDEX outbox_due ON outbox(status, next_attempt_at)")
    db.execute("CREATE INDEX outbox_order ON outbox(ordering_key, status, id)")
    db.execute(
        """CREATE TABLE mirror (
            service TEXT NOT NULL,
            profile TEXT NOT NULL,
            collection TEXT NOT NULL,
            item_key TEXT NOT NULL,
            data TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (service, profile, collection, item_key)
        )"""
    )
    db.execute(
        """CREATE TABLE cursors (
            service TEXT NOT NULL,
            profile TEXT NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (service, profile, name)
        )"""
    )
    db.execute(
        """CREATE TABLE id_cache (
            namespace TEXT NOT NULL,
            lookup TEXT NOT NULL,
            result TEXT,
            fetched_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (namespace, lookup)
        )"""
    )
    db.execute(
        """CREATE TABLE tokens (
            service TEXT NOT NULL,
            profile TEXT NOT NULL,
            data TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (service, profile)
        )"""
    )
    db.execute(
        """CREATE TABLE sync_runs (
            id INTEGER PRIMARY KEY,
            link TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            outcome TEXT NOT NULL DEFAULT 'running',
            counts TEXT NOT NULL DEFAULT '{}',
            api_calls INTEGER NOT NULL DEFAULT 0,
            error TEXT
        )"""
    )
    db.execute("CREATE INDEX sync_runs_link ON sync_runs(link, started_at)")
    # Dead letters are outbox rows that gave up; a view keeps one source of truth for them.
    db.execute(
        """CREATE VIEW dead_letters AS
           SELECT id, target, profile, action, payload, attempts, last_error, updated_at AS died_at
           FROM outbox WHERE status = 'dead'"""
    )


@migrations()
def m002_settings(db: sqlite_utils.Database) -> None:
    # Values the service generates for itself, such as a webhook secret when none is configured.
    db.execute(
        """CREATE TABLE settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )


@migrations()
def m003_playback_sessions(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE playback_sessions (
            key TEXT PRIMARY KEY,
            profile TEXT NOT NULL,
            state TEXT NOT NULL,
            progress REAL,
            generation INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX playback_sessions_age ON playback_sessions(updated_at)")


@migrations()
def m004_sync_run_heartbeat(db: sqlite_utils.Database) -> None:
    # A running sync stamps this while it works, so a run left "running" by a process that
    # died can be told from one that is still going.
    db.execute("ALTER TABLE sync_runs ADD COLUMN heartbeat_at REAL")


@migrations()
def m005_outbox_due_per_target(db: sqlite_utils.Database) -> None:
    # The worker asks per open target: with one target held (an outage backlog), the old index
    # made every pass walk that target's rows to find another target's first due row.
    db.execute("DROP INDEX outbox_due")
    db.execute("CREATE INDEX outbox_due ON outbox(status, target, next_attempt_at)")


@migrations()
def m006_event_raw_document(db: sqlite_utils.Database) -> None:
    # The webhook's JSON as the server sent it, for events that queued deliveries: what
    # `watchbridge unmatched --payload` shows when a play cannot be matched.
    db.execute("ALTER TABLE events ADD COLUMN raw TEXT")


@migrations()
def m007_outbox_failing_since_and_told(db: sqlite_utils.Database) -> None:
    # failing_since: the row's first real failure (not a hold, not an interrupted try) since
    # it was last held: delivery.max_age counts from it. told_at: when a dead-letter alert
    # told of the dead row; rows dead before this version were alerted as they died.
    db.execute("ALTER TABLE outbox ADD COLUMN failing_since REAL")
    db.execute("ALTER TABLE outbox ADD COLUMN told_at REAL")
    db.execute(
        "UPDATE outbox SET failing_since = created_at"
        " WHERE attempts >= 1 AND status IN ('pending', 'inflight')"
    )
    db.execute("UPDATE outbox SET told_at = updated_at WHERE status = 'dead'")


@migrations()
def m008_trakt_ratings_ordered_apart(db: sqlite_utils.Database) -> None:
    # See ordering_key: Trakt ratings take turns apart from the item's plays.
    db.execute(
        "UPDATE outbox SET ordering_key = ordering_key || ':ratings'"
        " WHERE target = 'trakt' AND action IN ('rating', 'remove_rating')"
    )


@migrations()
def m009_lasting_marks_sessions(db: sqlite_utils.Database) -> None:
    # An item's marks session (its last completion) outlives idle playback sessions: see
    # Store.prune.
    db.execute("ALTER TABLE playback_sessions ADD COLUMN lasting INTEGER NOT NULL DEFAULT 0")


@migrations()
def m010_playback_session_began(db: sqlite_utils.Database) -> None:
    # When a session's viewing began: see playback.Session.began_at (NULL: not known).
    db.execute("ALTER TABLE playback_sessions ADD COLUMN began_at REAL")


# How a run record names a watchlist hold ("PROFILE: watchlist: 3 of 5 watchlist titles on
# Plex would be removed ..."; see plexlink.ListsRun.held).
_WATCHLIST_HELD = re.compile(
    r"(?:^|; )(?P<profile>[^;:]+): watchlist: (?P<why>\d+ of \d+ watchlist titles on [^;]+)"
)


@migrations()
def m011_watchlist_holds(db: sqlite_utils.Database) -> None:
    # Watchlist removals held until confirmed keep a cursor since this release (see
    # plexlink.watchlist_holding). The last release kept only its run records: per profile, the
    # newest run that planned its watchlist says whether a hold still waits. (This migration
    # also makes that release refuse a database whose holds it would not keep.)
    links = [row[0] for row in db.execute("SELECT DISTINCT link FROM sync_runs")]
    for link in links:
        runs = db.execute(
            "SELECT outcome, COALESCE(error, ''), COALESCE(finished_at, started_at)"
            " FROM sync_runs WHERE link = ? AND outcome IN ('ok', 'held', 'failed')"
            " ORDER BY id DESC LIMIT 100",
            (link,),
        ).fetchall()
        for profile, (why, at) in _watchlist_holds(runs).items():
            db.execute(
                "INSERT OR IGNORE INTO cursors (service, profile, name, value, updated_at)"
                " VALUES ('trakt', ?, ?, ?, ?)",
                (profile, f"watchlist_held:{link}", why, at),
            )


@migrations()
def m012_outbox_waits_for_sign_in(db: sqlite_utils.Database) -> None:
    # Rows held for a sign-in or a key (a password refused, a media server's API key): a
    # changed config is tried at once for those, not for a rate limit's or a backoff's waits.
    # (This migration also makes the last release refuse a database it would misread.)
    db.execute("ALTER TABLE outbox ADD COLUMN waits_for_sign_in INTEGER NOT NULL DEFAULT 0")
    # The rows the last release held for a sign-in kept only their error, which names the
    # command or the config key that gives one: marked too, or the first look after the
    # upgrade took the refused sign-in for working again (a false "works again" notice).
    db.execute(
        "UPDATE outbox SET waits_for_sign_in = 1 WHERE status = 'pending'"
        f" AND NOT COALESCE({_UNMATCHED}, 0) AND ({_OLD_SIGN_IN_HOLD})"
    )


@migrations()
def m013_lighter_webhook_writes(db: sqlite_utils.Database) -> None:
    # Pruning a week of events checked each one's foreign key against the whole outbox,
    # holding the write lock for seconds (minutes after a first link sync's 100,000 rows).
    db.execute("CREATE INDEX outbox_event ON outbox(event_id)")
    # Rewritten by every progress webhook, for an hourly prune that scans the table as fast.
    db.execute("DROP INDEX playback_sessions_age")


@migrations(transactional=False)
def m014_event_keys_only_where_set(db: sqlite_utils.Database) -> None:
    # A UNIQUE column indexes every webhook's NULL key too: a page written per webhook for
    # keys only `record_event` sets. SQLite cannot drop the constraint, so the table is
    # copied; the outbox's references to it stay valid, so their checks are off meanwhile
    # (possible outside a transaction only). Done again from the start if interrupted.
    db.execute("PRAGMA foreign_keys=OFF")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DROP TABLE IF EXISTS events_copy")
            db.execute(
                """CREATE TABLE events_copy (
                    id INTEGER PRIMARY KEY,
                    received_at REAL NOT NULL,
                    source TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    profile TEXT,
                    idempotency_key TEXT,
                    payload TEXT NOT NULL,
                    raw TEXT
                )"""
            )
            db.execute(
                "INSERT INTO events_copy SELECT id, received_at, source, kind, profile,"
                " idempotency_key, payload, raw FROM events"
            )
            db.execute("DROP TABLE events")
            db.execute("ALTER TABLE events_copy RENAME TO events")
            db.execute(
                "CREATE UNIQUE INDEX events_key ON events(idempotency_key)"
                " WHERE idempotency_key IS NOT NULL"
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.execute("PRAGMA foreign_keys=ON")


@migrations()
def m015_outbox_ids_never_reused(db: sqlite_utils.Database) -> None:
    # SQLite gives a new row the largest id + 1: once the newest rows were discarded or
    # pruned, a new row took the id of a gone one, which the account-limit rows
    # (deliver.worker._LimitedRows) and alerts and `deadletters list` naming "#id" still meant.
    # AUTOINCREMENT never hands an id out twice; SQLite cannot add it to a table, so the table
    # is copied (nothing refers to outbox rows; the view over it is made again).
    db.execute("DROP VIEW IF EXISTS dead_letters")
    db.execute(
        """CREATE TABLE outbox_copy (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id INTEGER REFERENCES events(id),
            target TEXT NOT NULL,
            profile TEXT NOT NULL,
            action TEXT NOT NULL,
            payload TEXT NOT NULL,
            ordering_key TEXT NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            claimed_by TEXT,
            last_error TEXT,
            failing_since REAL,
            told_at REAL,
            waits_for_sign_in INTEGER NOT NULL DEFAULT 0
        )"""
    )
    columns = (
        "id, event_id, target, profile, action, payload, ordering_key, idempotency_key, status,"
        " attempts, next_attempt_at, created_at, updated_at, claimed_by, last_error,"
        " failing_since, told_at, waits_for_sign_in"
    )
    db.execute(f"INSERT INTO outbox_copy ({columns}) SELECT {columns} FROM outbox")
    db.execute("DROP TABLE outbox")
    db.execute("ALTER TABLE outbox_copy RENAME TO outbox")
    db.execute("CREATE INDEX outbox_due ON outbox(status, target, next_attempt_at)")
    db.execute("CREATE INDEX outbox_order ON outbox(ordering_key, status, id)")
    db.execute("CREATE INDEX outbox_event ON outbox(event_id)")
    db.execute(
        """CREATE VIEW dead_letters AS
           SELECT id, target, profile, action, payload, attempts, last_error, updated_at AS died_at
           FROM outbox WHERE status = 'dead'"""
    )
    # Ids of rows already gone that the account-limit records still name are not handed out.
    highest = 0
    for (text,) in db.execute(
        "SELECT result FROM id_cache WHERE namespace = 'account-limit' AND result IS NOT NULL"
    ).fetchall():
        named = json.loads(text)
        if isinstance(named, list):
            highest = max([highest, *(n for n in named if isinstance(n, int))])
    db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'outbox'", (highest,))
    db.execute(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox', ?"
        " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox')",
        (highest,),
    )


@migrations()
def m016_unmatched_rows_indexed(db: sqlite_utils.Database) -> None:
    # Every /metrics scrape and status read counts the rows waiting for ids: with thousands
    # of rows held for a sign-in (kept for weeks), that read each held row, every 15 s. Only
    # rows a target could not match are in this index: a webhook's new row (no error yet) and
    # a delivered one are not, so recording a webhook writes nothing more.
    db.execute(f"CREATE INDEX outbox_unmatched ON outbox(status) WHERE {_UNMATCHED}")


@migrations()
def m017_webhook_account_ids(db: sqlite_utils.Database) -> None:
    # The media-server account ids seen with the names profiles list (account_ids.py): a
    # renamed account keeps reaching its own profile. A few rows (KEPT at most).
    db.execute(
        """CREATE TABLE webhook_account_ids (
            source TEXT NOT NULL,
            server TEXT NOT NULL,
            account_id TEXT NOT NULL,
            profile TEXT NOT NULL,
            entry TEXT NOT NULL,
            name TEXT NOT NULL,
            learnt_at REAL NOT NULL,
            PRIMARY KEY (source, server, account_id)
        )"""
    )


@migrations()
def m018_playback_session_rest_ended(db: sqlite_utils.Database) -> None:
    # When a playback of the rest of an item's last completed viewing ended: see
    # playback.Session.rest_ended_at (NULL: none).
    db.execute("ALTER TABLE playback_sessions ADD COLUMN rest_ended_at REAL")


@migrations()
def m019_playback_session_completed(db: sqlite_utils.Database) -> None:
    # When a player's session completed its viewing: see playback.Session.completed_at (NULL:
    # none, or not known).
    db.execute("ALTER TABLE playback_sessions ADD COLUMN completed_at REAL")


@migrations()
def m020_sync_run_progress(db: sqlite_utils.Database) -> None:
    # How far a running link run has got (see RunProgress), stamped with its heartbeat.
    db.execute("ALTER TABLE sync_runs ADD COLUMN progress TEXT")


@migrations()
def m021_tautulli_servers(db: sqlite_utils.Database) -> None:
    # The Plex servers Tautulli's webhook reported to a profile, and how its template names
    # players (playback.Naming): only their Plex webhooks note their completions for the
    # other sender's to pair with (see Store._pair_reports). A few rows. seen_at: when
    # Tautulli last reported it (noted once a day at most); Store.prune forgets a lapsed one.
    db.execute(
        """CREATE TABLE tautulli_servers (
            profile TEXT NOT NULL,
            server TEXT NOT NULL,
            naming TEXT NOT NULL,
            seen_at REAL NOT NULL,
            PRIMARY KEY (profile, server)
        )"""
    )


@migrations()
def m022_mirror_versions(db: sqlite_utils.Database) -> None:
    # Each mirror collection's version: a random number every write of it replaces
    # (`Store.mirror_copy`), so that a reader keeping a collection decoded between reads
    # (the Plex deliverer's ~100,000 rows per batch) reads again only what was written since.
    # Random, never counted: a row moved or written anew can never take an older version's
    # number back. No row: never versioned (read every time).
    db.execute(
        """CREATE TABLE mirror_versions (
            service TEXT NOT NULL,
            profile TEXT NOT NULL,
            collection TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (service, profile, collection)
        ) WITHOUT ROWID"""
    )


@migrations()
def m023_mirror_replaced_in_parts(db: sqlite_utils.Database) -> None:
    # The replace in parts (`Store.mirror_replace_in_parts`, a random number of its own)
    # writing the collection, until its last part: not whole meanwhile, nor after a crash
    # halfway. NULL: whole.
    db.execute("ALTER TABLE mirror_versions ADD COLUMN replacing INTEGER")


@migrations()
def m024_outbox_held(db: sqlite_utils.Database) -> None:
    # What holds a pending row back (HELD_TARGET, HELD_PROFILE; NULL: nothing), kept with
    # the row so that /metrics says it from a restart's first scrape and as soon as a command
    # beside the service (`watchbridge auth`, `deadletters retry`) ends it. Only held rows
    # are in the index: every scrape reads them, never the queue.
    db.execute("ALTER TABLE outbox ADD COLUMN held TEXT")
    db.execute("CREATE INDEX outbox_held ON outbox(target, profile) WHERE held IS NOT NULL")


@migrations()
def m025_outbox_once_more(db: sqlite_utils.Database) -> None:
    # Dead letters of the service's own failure are queued again by themselves once it takes
    # a delivery again (ONCE_MORE_DUE), and only once (ONCE_MORE_SPENT). Every pass that
    # delivers looks for those due: only they are in the index.
    db.execute("ALTER TABLE outbox ADD COLUMN once_more TEXT")
    db.execute("CREATE INDEX outbox_once_more ON outbox(target) WHERE once_more = 'due'")


@migrations()
def m026_outbox_once_more_latest(db: sqlite_utils.Database) -> None:
    # When the last of a target's dead letters waiting to go once more died
    # (`Store.once_more_latest`), read at every idle wake: the last entry of this index, not
    # every dead letter of the target (a removed profile's may be 50,000).
    db.execute(
        "CREATE INDEX outbox_once_more_latest ON outbox(target, updated_at) WHERE once_more = 'due'"
    )


@migrations()
def m027_webhooks_last_seen(db: sqlite_utils.Database) -> None:
    # When each webhook source and server last had a webhook accepted, for the sources whose
    # events pruning deleted (lastwebhooks.py): the status still says when they last sent.
    # Written by the hourly prune only, never per webhook.
    db.execute(
        """CREATE TABLE webhooks_last_seen (
            source TEXT NOT NULL,
            server TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (source, server)
        ) WITHOUT ROWID"""
    )


@migrations()
def m028_outbox_ordered_as_links_key_items(db: sqlite_utils.Database) -> None:
    # One item's rows take turns by ordering key, which is now the key a link gives the item
    # (MediaRef.order_key); earlier releases keyed a webhook's rows by its strongest id. A row
    # queued before the upgrade is keyed anew from its item, or a row of the same item queued
    # after could go first (a dead letter too: retried, it waits its turn). Delivered rows
    # too: a waiting row looks at them by its key (the ratings sent since it was given, a
    # Serializd rating still to be looked for, a play since a removal was queued).
    rekeyed = []
    for row_id, profile, target, action, was, payload in db.execute(
        "SELECT id, profile, target, action, ordering_key, payload FROM outbox"
    ):
        now = _ordering_key_of(profile, target, action, payload)
        if now is not None and now != was:
            rekeyed.append((now, row_id))
    db.conn.executemany("UPDATE outbox SET ordering_key = ? WHERE id = ?", rekeyed)


@migrations()
def m029_playback_session_playing_since(db: sqlite_utils.Database) -> None:
    # When the playback a player's session follows after a completed viewing began: see
    # playback.Session.playing_since (NULL: none since the completion). Safe to apply again,
    # as the newest migration must be: tests take its record back to stand for the release
    # before it (tests/test_serve_lock.py).
    if "playing_since" not in db["playback_sessions"].columns_dict:
        db.execute("ALTER TABLE playback_sessions ADD COLUMN playing_since REAL")


@migrations()
def m030_outbox_crashes(db: sqlite_utils.Database) -> None:
    # How many times a process died while it delivered the row (CRASHES_ALONE): taken back
    # from a killed process, a row no longer spends an attempt unless it was in flight alone.
    # Safe to apply again, as the newest migration must be (tests/test_serve_lock.py).
    if "crashes" not in db["outbox"].columns_dict:
        db.execute("ALTER TABLE outbox ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0")


@migrations()
def m031_unlisted_accounts(db: sqlite_utils.Database) -> None:
    # The media-server accounts no profile lists that sent webhooks (unlisted.py): kept
    # across restarts for the status and the `unlisted_account` alert, pruned after
    # unlisted.KEEP without a webhook. Safe to apply again, as the newest migration must be
    # (tests/test_serve_lock.py).
    db.execute(
        """CREATE TABLE IF NOT EXISTS unlisted_accounts (
            source TEXT NOT NULL,
            server TEXT NOT NULL,
            account TEXT NOT NULL,
            account_id TEXT NOT NULL,
            name TEXT NOT NULL,
            server_name TEXT NOT NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            webhooks INTEGER NOT NULL,
            plays INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT '',
            profile TEXT NOT NULL DEFAULT '',
            active TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (source, server, account)
        ) WITHOUT ROWID"""
    )


@migrations()
def m032_defaulted_accounts(db: sqlite_utils.Database) -> None:
    # The media-server accounts no profile lists whose webhooks the default profile takes
    # (defaulted.py): kept across restarts for the status and the `unlisted_account` alert,
    # pruned after defaulted.KEEP without a webhook. Safe to apply again, as the newest
    # migration must be (tests/test_serve_lock.py).
    db.execute(
        """CREATE TABLE IF NOT EXISTS defaulted_accounts (
            source TEXT NOT NULL,
            server TEXT NOT NULL,
            account TEXT NOT NULL,
            account_id TEXT NOT NULL,
            name TEXT NOT NULL,
            server_name TEXT NOT NULL,
            default_profile TEXT NOT NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            webhooks INTEGER NOT NULL,
            plays INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT '',
            profile TEXT NOT NULL DEFAULT '',
            active TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (source, server, account)
        ) WITHOUT ROWID"""
    )


@migrations()
def m033_catch_up_counts(db: sqlite_utils.Database) -> None:
    # The catch-up's play counts (catchup.py `State.items`), a row per item, so that a read
    # writes the counts that changed, not the whole account's (some 100 KB for a big
    # library, each read someone watched): moved out of the states' JSON (the cursors
    # "catch_up:<user id>"), whose rest stays there. Safe to apply again, as the newest
    # migration must be (tests/test_serve_lock.py): a state moved has no counts left to move.
    db.execute(
        """CREATE TABLE IF NOT EXISTS catch_up_counts (
            service TEXT NOT NULL,
            profile TEXT NOT NULL,
            account TEXT NOT NULL,
            item TEXT NOT NULL,
            play_count INTEGER NOT NULL,
            PRIMARY KEY (service, profile, account, item)
        ) WITHOUT ROWID"""
    )
    prefix = f"{CATCH_UP_CURSORS}:"
    moving = (
        "substr(cursors.name, 1, ?) = ? AND json_valid(cursors.value)"
        " AND json_type(cursors.value, '$.counts') = 'object'"
    )
    db.execute(
        "INSERT OR REPLACE INTO catch_up_counts (service, profile, account, item, play_count)"
        " SELECT service, profile, substr(cursors.name, ?), counts.key,"
        " CAST(counts.value AS INTEGER)"
        f" FROM cursors, json_each(cursors.value, '$.counts') AS counts WHERE {moving}",
        (len(prefix) + 1, len(prefix), prefix),
    )
    db.execute(
        f"UPDATE cursors SET value = json_remove(value, '$.counts') WHERE {moving}",
        (len(prefix), prefix),
    )


@migrations()
def m034_catch_up_identities(db: sqlite_utils.Database) -> None:
    # Beside each play count of the catch-up, the item's identity by its provider ids
    # (catchup.py `identity`): an item the server lists under a new id (a library added again,
    # a file replaced, a second version) carries its user data over, and is known by it, not
    # taken for a new play. Rows written before have none ('') until their item is listed
    # again. Safe to apply again, as the newest migration must be (tests/test_serve_lock.py).
    if "identity" not in db["catch_up_counts"].columns_dict:
        db.execute("ALTER TABLE catch_up_counts ADD COLUMN identity TEXT NOT NULL DEFAULT ''")


@migrations()
def m035_catch_up_dates(db: sqlite_utils.Database) -> None:
    # Beside each play count of the catch-up, the item's LastPlayedDate then (catchup.py
    # `Seen.dated`): an item under a new id is the item of the same identity only with the
    # same count and date (its user data carried over); one with user data of its own (a
    # second version of a film, a special sharing a TVDB id) is not, and its first play is
    # copied. Rows written before have none (NULL) until their item is listed again. Safe to
    # apply again, as the newest migration must be (tests/test_serve_lock.py).
    if "played_at" not in db["catch_up_counts"].columns_dict:
        db.execute("ALTER TABLE catch_up_counts ADD COLUMN played_at REAL")


@migrations()
def m036_tautulli_for_plex(db: sqlite_utils.Database) -> None:
    # Tautulli's reports of plays of people a profile lists under users.plex (forplex.py):
    # kept until Plex's own webhook is seen to send the same play, or taken in its stead
    # after forplex.GRACE (without Plex Pass Plex sends no webhook); those taken stay, for
    # the status, until forplex.KEEP. Safe to apply again, as the newest migration must be
    # (tests/test_serve_lock.py).
    db.execute(
        """CREATE TABLE IF NOT EXISTS tautulli_for_plex (
            id INTEGER PRIMARY KEY,
            profile TEXT NOT NULL,
            server TEXT NOT NULL,
            account TEXT NOT NULL,
            account_id TEXT NOT NULL,
            name TEXT NOT NULL,
            item TEXT NOT NULL,
            received_at REAL NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT ''
        )"""
    )


@migrations()
def m037_tautulli_for_plex_waiting(db: sqlite_utils.Database) -> None:
    # The 5-minute look for a report kept past forplex.GRACE (Store.for_plex_due) finds it
    # by this index, not by reading the plays taken (6 weeks of them, each with its body).
    db.execute(
        "CREATE INDEX IF NOT EXISTS tautulli_for_plex_waiting"
        " ON tautulli_for_plex(state, received_at)"
    )


# The words releases before m038 told a row held for the Plex server's own token by (then
# services.plex.SERVER_TOKEN_REFUSED): kept as they were, whatever that text says now.
_OLD_SERVER_TOKEN_WORDS = "the Plex server does not accept services.plex.token"


@migrations()
def m038_outbox_waits_for_server_token(db: sqlite_utils.Database) -> None:
    # Rows held because the Plex server refuses its own token (services.plex.token, the
    # owner's, in the config), whoever's they are: no profile's sign-in lifts them, and they
    # say nothing of one (`Store.waits_for_sign_in`); a start with a changed config tries
    # them. Told apart by their words before; those rows are marked by them once (m039
    # makes the flag the server's name).
    if "waits_for_server_token" not in db["outbox"].columns_dict:
        db.execute(
            "ALTER TABLE outbox ADD COLUMN waits_for_server_token INTEGER NOT NULL DEFAULT 0"
        )
    db.execute(
        "UPDATE outbox SET waits_for_server_token = 1"
        " WHERE waits_for_sign_in = 1 AND instr(COALESCE(last_error, ''), ?) > 0",
        (_OLD_SERVER_TOKEN_WORDS,),
    )


# The words releases before m039 told a row held for a Jellyfin or Emby server's API key by
# (services.jellyfin.MediaServerAuthError's): kept as they were, whatever that text says now.
_OLD_SERVER_KEY_WORDS = {
    "jellyfin": "server does not accept services.jellyfin.api_key",
    "emby": "server does not accept services.emby.api_key",
}


@migrations()
def m039_outbox_waits_for_server(db: sqlite_utils.Database) -> None:
    # The server whose own key holds a row (m038's flag, for Plex only, made the server's
    # name): a Jellyfin or Emby server refusing its API key holds a Trakt, AniList or
    # Serializd row as the Plex server's token does, and says nothing of the profile's
    # sign-in there either. Rows held so before are marked by their words once; m038's
    # column goes where SQLite can drop it (3.35), else it stays, unused. Safe to apply
    # again, as the newest migration must be (tests/test_serve_lock.py).
    columns = db["outbox"].columns_dict
    if "waits_for_server" not in columns:
        db.execute("ALTER TABLE outbox ADD COLUMN waits_for_server TEXT")
    if "waits_for_server_token" in columns:
        db.execute(
            "UPDATE outbox SET waits_for_server = 'plex'"
            " WHERE waits_for_server_token = 1 AND waits_for_server IS NULL"
        )
        if sqlite3.sqlite_version_info >= (3, 35, 0):
            db.execute("ALTER TABLE outbox DROP COLUMN waits_for_server_token")
    for server, words in _OLD_SERVER_KEY_WORDS.items():
        db.execute(
            "UPDATE outbox SET waits_for_server = ? WHERE waits_for_sign_in = 1"
            " AND waits_for_server IS NULL AND instr(COALESCE(last_error, ''), ?) > 0",
            (server, words),
        )


@migrations()
def m040_tautulli_reports(db: sqlite_utils.Database) -> None:
    # Per Tautulli server (its Plex server's machine id, "" where the template names none):
    # its stops since its last Watched, those at or past Tautulli's watched percent, and when
    # its last Watched came (tautulliwatched.py), counted in the webhook's own write. A few
    # rows. Safe to apply again, as the newest migration must be (tests/test_serve_lock.py).
    db.execute(
        """CREATE TABLE IF NOT EXISTS tautulli_reports (
            server TEXT PRIMARY KEY,
            name TEXT NOT NULL DEFAULT '',
            stops INTEGER NOT NULL DEFAULT 0,
            reached INTEGER NOT NULL DEFAULT 0,
            first_stop_at REAL,
            last_stop_at REAL,
            watched_at REAL
        )"""
    )


@migrations()
def m041_webhook_server_names(db: sqlite_utils.Database) -> None:
    # Each webhook server's own name, as its webhooks give it (Plex's Server.title, Jellyfin's
    # ServerName, ...: unlisted.server_name), for the status to say `plex from Home`, not a
    # machine id. Written when a server's name is new to the service (or changed), never per
    # webhook; `at`: then. Safe to apply again, as the newest migration must be.
    db.execute(
        """CREATE TABLE IF NOT EXISTS webhook_server_names (
            source TEXT NOT NULL,
            server TEXT NOT NULL,
            name TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (source, server)
        ) WITHOUT ROWID"""
    )


# The columns of times `_restamp_forward` moves, by table.
_RESTAMPED = {
    # A viewing's later events are judged against them (hours idle is a new viewing), and
    # housekeeping forgets them by age (a board booted at 1970, set to now, would forget
    # every session of its first hour).
    "playback_sessions": (
        "updated_at", "began_at", "rest_ended_at", "completed_at", "playing_since"
    ),
    # Stops counted before the step and after it would be days (or decades) of stops at once:
    # a Tautulli told it sends no Watched, alerted, after one evening (tautulliwatched.SPAN).
    "tautulli_reports": ("first_stop_at", "last_stop_at", "watched_at"),
}  # fmt: skip


def _restamp_forward(conn: sqlite3.Connection, step: Step) -> None:
    """Move the times stamped within the frame a forward `step` ended (`_RESTAMPED`), and
    since when and last when a show's release lookup failed (FAILED_LOOKUPS: its plays wait
    a day from the first failure, not a step less). Not back: a time stamped after a step
    back (by a webhook or a link run before the worker's next pass) can fall within the
    ended frame's times, and would move twice; one left ahead of the clock by a step back
    counts a span hours short, and a lookup's failure counts from now (release_marks)."""
    params = {
        "began": step.began,
        "seen": step.seen,
        "seconds": step.seconds,
        "right": step.right_until,
    }

    def within(value: str) -> str:
        return f"({value} BETWEEN :began AND :seen AND {value} > :right)"

    for table, columns in _RESTAMPED.items():
        moved = ", ".join(
            f"{c} = CASE WHEN {within(c)} THEN {c} + :seconds ELSE {c} END" for c in columns
        )
        conn.execute(
            f"UPDATE {table} SET {moved} WHERE {' OR '.join(within(c) for c in columns)}",
            params,
        )
    times = {k: f"CAST(json_extract(data, '$.{k}') AS REAL)" for k in ("since", "last")}
    replaced = ", ".join(
        f"'$.{k}', CASE WHEN {within(t)} THEN {t} + :seconds ELSE json_extract(data, '$.{k}') END"
        for k, t in times.items()
    )
    found = conn.execute(
        f"UPDATE mirror SET data = json_replace(data, {replaced})"
        " WHERE service = :service AND collection = :collection AND profile IN"
        " (SELECT profile FROM mirror_versions WHERE service = :service"
        " AND collection = :collection)"
        f" AND json_valid(data) AND ({' OR '.join(within(t) for t in times.values())})",
        params | {"service": "trakt", "collection": FAILED_LOOKUPS},
    )
    if found.rowcount:
        _mirrors_changed(conn, "service = ? AND collection = ?", ("trakt", FAILED_LOOKUPS))


def _batch(due: Sequence[sqlite3.Row], alone: bool) -> list[int]:
    """The ids one claim takes of `due` (in their turn): those before the first row a crash
    makes go alone (CRASHES_ALONE), or that row when it is first and nothing else is taken
    yet (`alone`)."""
    ids: list[int] = []
    for row in due:
        if row["crashes"] >= CRASHES_ALONE:
            return [int(row["id"])] if alone and not ids else ids
        ids.append(int(row["id"]))
    return ids


def _ordering_key_of(profile: str, target: str, action: str, payload: str) -> str | None:
    """A stored row's ordering key from the item in its payload (None: a payload this release
    cannot read; its delivery makes a dead letter of it, saying why)."""
    try:
        item = json.loads(payload).get("item")
        ref = ref_from_dict(item) if isinstance(item, dict) else None
    except (AttributeError, TypeError, ValueError):
        return None
    return None if ref is None else ordering_key(profile, target, ref.order_key(), action)


@dataclass(frozen=True)
class MirrorWritten:
    """A write's mark on a mirror collection: its version before the write (None: never
    versioned) and the one the write gave it. A reader keeping the collection decoded, whose
    copy was at `before`, is at `after` once it made the same change to its copy."""

    before: int | None
    after: int


@dataclass
class MirrorCopy:
    """Whole mirror collections of one service and profile, decoded, each with the version
    it was read at (`Store.mirror_copy`); kept between reads, only the collections written
    since are read again. A collection without a version is read again every time."""

    service: str
    profile: str
    collections: dict[str, dict[str, Any]]
    versions: dict[str, int]
    # Those a write in parts was writing (`Store.mirror_change_in_parts`), or left cut short:
    # a mix of its rows and those before it, never to be taken for a whole copy.
    partial: set[str] = field(default_factory=set)

    def following(self, collection: str) -> int | None:
        """The version of `collection` this copy holds, taken away until a write of ours
        is known to have ended (`wrote`): a write cut short (an error, a cancelled wait)
        leaves the collection to be read again, never the copy's change taken for the
        store's."""
        return self.versions.pop(collection, None)

    def wrote(self, collection: str, was: int | None, written: MirrorWritten) -> None:
        """Our write `written` of `collection` ended, the copy changed alike: the copy is at
        its version when nothing else wrote the collection since the copy's version `was`."""
        if was is not None and written.before == was:
            self.versions[collection] = written.after


@dataclass(frozen=True)
class MirrorEncoded:
    """A whole mirror collection as stored, undecoded (key -> JSON text), and the version it
    was read at (None: never versioned)."""

    rows: dict[str, str]
    version: int | None


def _mirror_written(
    conn: sqlite3.Connection, service: str, profile: str, collection: str
) -> MirrorWritten:
    """A new version of a mirror collection, for a write to it in this transaction."""
    before = _version_of(conn, service, profile, collection)
    after = conn.execute(
        "INSERT INTO mirror_versions (service, profile, collection, version)"
        " VALUES (?, ?, ?, random()) ON CONFLICT DO UPDATE SET version = excluded.version"
        " RETURNING version",
        (service, profile, collection),
    ).fetchone()
    return MirrorWritten(before, int(after[0]))


@dataclass(frozen=True)
class MirrorChange:
    """Entries to write to a mirror collection, encoded (key, JSON text), and keys to take
    out of it."""

    put: Sequence[tuple[str, str]] = ()
    taken: Sequence[str] = ()


def _parts(changes: Mapping[str, MirrorChange], part: int) -> Iterator[dict[str, MirrorChange]]:
    """`changes` cut in parts of at most `part` entries, one collection's puts or keys taken
    each."""
    for collection, change in sorted(changes.items()):
        for start in range(0, len(change.put), part):
            yield {collection: MirrorChange(change.put[start : start + part])}
        for start in range(0, len(change.taken), part):
            yield {collection: MirrorChange((), change.taken[start : start + part])}


def _version_of(
    conn: sqlite3.Connection, service: str, profile: str, collection: str
) -> int | None:
    row = conn.execute(
        "SELECT version FROM mirror_versions WHERE service = ? AND profile = ? AND collection = ?",
        (service, profile, collection),
    ).fetchone()
    return None if row is None else int(row[0])


def _mark_replacing(
    conn: sqlite3.Connection, service: str, profile: str, collection: str, mine: int
) -> int:
    """Mark a collection as written in parts by `mine` (a new version); that version."""
    written = _mirror_written(conn, service, profile, collection)
    conn.execute(
        "UPDATE mirror_versions SET replacing = ? WHERE service = ? AND profile = ?"
        " AND collection = ?",
        (mine, service, profile, collection),
    )
    return written.after


def _whole_again(
    conn: sqlite3.Connection, service: str, profile: str, collections: Sequence[str]
) -> None:
    """Take the not-whole marks off collections just written whole (each a new version)."""
    for collection in collections:
        _mirror_written(conn, service, profile, collection)
        conn.execute(
            "UPDATE mirror_versions SET replacing = NULL WHERE service = ? AND profile = ?"
            " AND collection = ?",
            (service, profile, collection),
        )


def _marked(conn: sqlite3.Connection, service: str, profile: str, collection: str) -> bool:
    """Whether a write in parts is writing the collection, or left it cut short."""
    row = conn.execute(
        "SELECT replacing FROM mirror_versions WHERE service = ? AND profile = ?"
        " AND collection = ?",
        (service, profile, collection),
    ).fetchone()
    return row is not None and row[0] is not None


def _still_mine(
    conn: sqlite3.Connection, service: str, profile: str, expected: Mapping[str, int], mine: int
) -> bool:
    """Whether each collection is still at the version our last write of it left, and marked
    ours: nothing else wrote it since."""
    for collection, version in expected.items():
        row = conn.execute(
            "SELECT version, replacing FROM mirror_versions WHERE service = ? AND profile = ?"
            " AND collection = ?",
            (service, profile, collection),
        ).fetchone()
        if row is None or row[0] != version or row[1] != mine:
            return False
    return True


def _mirror_written_if(
    conn: sqlite3.Connection, service: str, profile: str, collection: str, changed: bool
) -> MirrorWritten:
    """`_mirror_written` for a write in this transaction that `changed` rows; one that
    changed none keeps the version the collection has (a copy kept at it is still right), so
    a run finding nothing new writes nothing. A collection never versioned gets one all the
    same: a copy of it is read again until it has one."""
    if not changed and (kept := _version_of(conn, service, profile, collection)) is not None:
        return MirrorWritten(kept, kept)
    return _mirror_written(conn, service, profile, collection)


def _replacing(
    conn: sqlite3.Connection, service: str, profile: str, collection: str, mine: int
) -> bool:
    """Whether the replace in parts marked `mine` still has the collection's mark: another
    process's replace takes it over, a reset or a profile's move takes it away."""
    row = conn.execute(
        "SELECT replacing FROM mirror_versions WHERE service = ? AND profile = ?"
        " AND collection = ?",
        (service, profile, collection),
    ).fetchone()
    return row is not None and row[0] == mine


def _mirrors_changed(conn: sqlite3.Connection, where: str, params: Sequence[Any] = ()) -> None:
    """New versions for the mirror collections `where` picks (a literal of ours, never
    input), for a write to them in SQL of its own (not through `mirror_put` and the like)."""
    conn.execute(f"UPDATE mirror_versions SET version = random() WHERE {where}", params)


def _rename_kept_rows(
    conn: sqlite3.Connection, service: str, collection: str, old: str, new: str
) -> None:
    """The outbox rows a mirror collection keeps to queue later (by idempotency key; each a
    row's profile, action, payload and ordering key), moved to `new` already, renamed inside:
    queued as they were, they would be rows of `old`, given up as no longer in the config."""

    def renamed(key: object) -> object:
        text = str(key)
        return new + text.removeprefix(old) if text.startswith(f"{old}:") else key

    kept = conn.execute(
        "SELECT item_key, data FROM mirror WHERE service = ? AND profile = ? AND collection = ?",
        (service, new, collection),
    ).fetchall()
    for item_key, data in kept:
        try:
            row = json.loads(data)
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        if row.get("profile") == old:
            row["profile"] = new
        if "ordering_key" in row:
            row["ordering_key"] = renamed(row["ordering_key"])
        conn.execute(
            "UPDATE OR IGNORE mirror SET item_key = ?, data = ?"
            " WHERE service = ? AND profile = ? AND collection = ? AND item_key = ?",
            (renamed(item_key), json.dumps(row), service, new, collection, item_key),
        )


def _watchlist_holds(runs: Sequence[tuple[str, str, float]]) -> dict[str, tuple[str, float]]:
    """Per profile, the watchlist hold (why, when) the newest of `runs` (newest first:
    outcome, error, time) that planned its watchlist names. A run that went through (ok,
    held) planned every profile's; a failed one may not have: it counts only for the holds
    it names. Pure."""
    holds: dict[str, tuple[str, float]] = {}
    for outcome, error, at in runs:
        for found in _WATCHLIST_HELD.finditer(error):
            holds.setdefault(found["profile"], (found["why"], at))
        if outcome in ("ok", "held"):
            break  # the profiles it does not name held nothing
    return holds


@dataclass(frozen=True)
class QueuedPlay:
    """A play queued for a target that may still be sent (`Store.plays_not_given_up`)."""

    row: int
    item: dict[str, Any]
    at: float
    given_up: bool  # a dead letter
    queued_at: float
    # An earlier send may have landed (UNKNOWN_OUTCOME, as `OutboxItem.may_have_landed`): a
    # backup copy put back marks every row it held. So may a link's queued before this
    # process opened the database (`OutboxItem.links_since`: a folder copy put back).
    may_have_landed: bool
    # A view after this (our clock) is none of the send `may_have_landed` means: for a link's
    # row queued before the open alone, the open (`Store.opened_at`); None: any view since.
    landed_by: float | None = None


WAITED_AFTER = 60.0  # seconds queued that make a webhook's row one that waited (OutboxItem)


@dataclass(frozen=True)
class OutboxItem:
    """One action for one target, as the delivery worker sees it."""

    id: int
    target: str
    profile: str
    action: str
    payload: dict[str, Any]
    ordering_key: str
    idempotency_key: str
    status: OutboxStatus
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float = 0.0
    updated_at: float = 0.0
    failing_since: float | None = None  # first real failure since its last hold (max_age)
    once_more: str | None = None  # ONCE_MORE_DUE, _SPENT, _PROBE or None (see m025)
    claimed_by: str | None = None  # the worker whose claim it was read by (None: not in flight)
    crashes: int = 0  # processes that died while delivering it (CRASHES_ALONE)

    @property
    def may_have_landed(self) -> bool:
        """Whether an earlier send of this row may have landed (it carries UNKNOWN_OUTCOME)."""
        return (self.last_error or "").startswith(UNKNOWN_OUTCOME)

    @property
    def duration(self) -> float | None:
        """The length in seconds of the item a webhook's play is of, as the media server told
        it (Plex's `duration`, Jellyfin's and Emby's `RunTimeTicks`); None when unknown (a
        link's copy, a sender naming none)."""
        duration = self.payload.get("duration")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > 0:
            return float(duration)
        return None

    @property
    def cut_short(self) -> bool:
        """Whether its latest try was cut short by a crash, its attempt spent (CUT_SHORT)."""
        return (self.last_error or "").endswith(CUT_SHORT)

    def waited(self, now: float) -> bool:
        """Whether this row waited: tried before, or a webhook's row queued over WAITED_AFTER
        ago (a paused target claims nothing). What it sets may have been changed on the
        target meanwhile. A link's rows wait behind the link's own backlog, planned on a read of
        the target, and are not counted (each check of theirs would cost a read)."""
        if self.attempts or self.crashes or self.last_error:
            return True
        return "link" not in self.payload and now - self.created_at > WAITED_AFTER

    def links_since(self, outbox_at_open: int) -> bool:
        """Whether a link queued this row since this process opened the database
        (`Store.outbox_at_open`): planned on its read of the target, it need not be looked
        for there first. One queued before may be a data folder's, copied as it is (an
        appdata backup) and put back after it went out: it holds no `backup_to` stamp to tell
        it by, and is waiting again."""
        return "link" in self.payload and self.id > outbox_at_open

    @property
    def planned_on_a_read(self) -> bool:
        """Whether a link's run planned this row from its read of the target (`READ_AT`):
        what it sets may have been changed there between that read and its delivery (the run
        may read the other side for minutes before it queues, and the row may wait behind
        others), which `waited` does not count."""
        return self.planned_from < self.created_at

    @property
    def planned_from(self) -> float:
        """When the target was last seen by what planned this row (our clock): the link's
        read of it (`READ_AT`), else (a row of an older release, a webhook's) its queuing. A
        change made on the target since is one the plan did not know of."""
        read_at = self.payload.get(READ_AT)
        if isinstance(read_at, (int, float)) and not isinstance(read_at, bool):
            return min(float(read_at), self.created_at)
        return self.created_at

    def discarded_before(self) -> str:
        """For a dead letter of a link's copy of a play that the link queued again after an
        earlier dead letter of it was discarded: that, and how to stop it ("" otherwise)."""
        if self.status != "dead" or not self.payload.get(DISCARDED_BEFORE):
            return ""
        return (
            f"links.{self.payload.get('link')} copied it again after an earlier dead letter of"
            f" it was discarded; to keep it off for good: `watchbridge deadletters discard"
            f" {self.id} --for-good`"
        )

    def describe(self) -> str:
        """The item, as people name it: "Breaking Bad S05E16", "Heat (1995)"."""
        item = self.payload.get("item")
        try:
            return ref_from_dict(item).describe() if isinstance(item, dict) else "?"
        except (KeyError, TypeError, ValueError):
            return (
                str(item.get("title") or item.get("kind") or "?") if isinstance(item, dict) else "?"
            )

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict[str, Any]) -> OutboxItem:
        return cls(
            id=row["id"],
            target=row["target"],
            profile=row["profile"],
            action=row["action"],
            payload=json.loads(row["payload"]),
            ordering_key=row["ordering_key"],
            idempotency_key=row["idempotency_key"],
            status=row["status"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            failing_since=row["failing_since"],
            once_more=row["once_more"],
            claimed_by=row["claimed_by"],
            crashes=row["crashes"],
        )


@dataclass(frozen=True)
class Untold:
    """Dead letters no alert has told of (`Store.untold_dead`)."""

    count: int
    latest: list[OutboxItem]  # the last few, oldest first
    read_at: float
    once_more: int = 0  # of `count`, those to be queued again by themselves (ONCE_MORE_DUE)


@dataclass(frozen=True)
class NewOutboxRow:
    """An outbox row to create; `idempotency_key` makes re-enqueueing the same action a no-op."""

    target: str
    profile: str
    action: str
    payload: dict[str, Any]
    ordering_key: str
    idempotency_key: str
    not_before: float | None = None
    supersedes: tuple[str, ...] = ()  # pending rows of these actions, same ordering key


@dataclass(frozen=True)
class Retried:
    """What `deadletters retry` did: rows queued again, and ratings a newer one replaced."""

    queued: int
    superseded: int
    removed: int = 0  # plays not sent again by themselves: removed since (REMOVED_SINCE)


# In the payload of a link's add queued again after its earlier row, a dead letter, was
# discarded (`OutboxItem.discarded_before`).
DISCARDED_BEFORE = "discarded_before"
# In the payload of a link's row: when the run that planned it began reading the target (our
# clock; `OutboxItem.planned_from`). Removals of plays and ratings look at what changed there
# since.
READ_AT = "read_at"
# Where the plays a user keeps off a link's target are remembered (`Store.keep_off`): one
# mirror collection for every link and profile, so that neither an account's start-over nor
# `reset-state` forgets a choice no service tells again.
KEPT_OFF_SERVICE, KEPT_OFF = "watchbridge", "kept_off"


@dataclass(frozen=True)
class KeptOff:
    """A play a link must not copy to `target` again: its dead letter was discarded with
    `watchbridge deadletters discard --for-good`."""

    row: int  # the id of the row discarded, as `deadletters list` (or `unmatched`) showed it
    link: str
    profile: str
    target: str
    record: str  # the play's record on the link's other side (`reconcile.Play.record`)
    item: str  # as people name it ("Breaking Bad S01E01")
    at: float  # when it was watched
    since: float  # when it was kept off

    def to_json(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "target": self.target,
            "record": self.record,
            "item": self.item,
            "at": self.at,
            "since": self.since,
        }

    @classmethod
    def from_mirror(cls, row: int, profile: str, data: Mapping[str, Any]) -> KeptOff:
        return cls(
            row,
            str(data["link"]),
            profile,
            str(data["target"]),
            str(data["record"]),
            str(data["item"]),
            float(data["at"]),
            float(data["since"]),
        )


@dataclass(frozen=True)
class KeptOffCount:
    """How many plays one link keeps off its target for one profile (`Store.kept_off_counts`)."""

    link: str
    profile: str
    target: str
    plays: int


# What lists the plays kept off, and what lets a link copy one again (status, page, API).
KEPT_OFF_FIX = (
    "`watchbridge deadletters list --for-good` lists them; "
    "`watchbridge deadletters allow ID` lets the link copy one again"
)


# The row of an item (ordering key) that goes next: its oldest unfinished one. `o` is the row.
# A link's row waiting for ids (tried again hourly, for days) holds no webhook's row: the
# webhook names the item by its own ids, which the target may place (a live scrobble).
_LINKS_WAITING_FOR_IDS = (
    "o.event_id IS NOT NULL AND h.event_id IS NULL AND h.status = 'pending'"
    " AND " + _UNMATCHED.replace("last_error", "COALESCE(h.last_error, '')")
)


def _signed_in_marks(
    conn: sqlite3.Connection, pairs: Collection[tuple[str, str]]
) -> dict[tuple[str, str], str | None]:
    """The sign-in mark (SIGNED_IN_CURSOR) of each (target, profile) of `pairs`."""
    marks: dict[tuple[str, str], str | None] = dict.fromkeys(pairs)
    for target, profile in marks:
        row = conn.execute(
            "SELECT value FROM cursors WHERE service = ? AND profile = ? AND name = ?",
            (target, profile, SIGNED_IN_CURSOR),
        ).fetchone()
        marks[target, profile] = None if row is None else str(row[0])
    return marks


def _lift_sign_in_holds(conn: sqlite3.Connection, target: str, profile: str, now: float) -> int:
    """`Store.lift_sign_in_holds` in the caller's transaction."""
    cursor = conn.execute(
        "UPDATE outbox SET next_attempt_at = ?, held = NULL"
        " WHERE status = 'pending' AND target = ? AND profile = ? AND next_attempt_at > ?"
        f" AND ((waits_for_sign_in = 1 AND held = '{HELD_PROFILE}') OR instr(last_error, ?) > 0)"
        " AND waits_for_server IS NULL",
        (now, target, profile, now, f"watchbridge auth {target}"),
    )
    return cursor.rowcount


_HEAD_OF_ITEM = (
    "(SELECT MIN(h.id) FROM outbox h WHERE h.ordering_key = o.ordering_key"
    f" AND h.status IN ('pending', 'inflight') AND NOT ({_LINKS_WAITING_FOR_IDS}))"
)
# A service's reads may show what a write just changed as it was, for seconds (Trakt:
# trakt-api#773): a rating removal delivered this recently may not show in a read yet.
READ_LAG = 300.0
RATING_ACTIONS = ("rating", "remove_rating")
# The rows `Store.waiting_behind` counts, in words (after their number).
BEHIND = (
    "waiting for an earlier delivery of the same item to the same service (they go out in "
    "order: each follows once the one before it is delivered or given up)"
)


def ordering_key(profile: str, target: str, item_key: str, action: str) -> str:
    """The key whose rows go out one at a time, oldest first: one item's rows for one target.
    Trakt keeps ratings and history apart, so there ratings take turns on their own: a rating a
    full ratings list holds (420) must not hold up the item's plays."""
    key = f"{profile}:{target}:{item_key}"
    return f"{key}:ratings" if target == "trakt" and action in RATING_ACTIONS else key


# A Serializd rating whose send may have landed (marked), settled by a newer one of its item
# before a retry found it: its diary row, if it landed, is a copy of ours that nothing has
# recorded yet. The reader takes it for ours (`unanswered_ratings`), and the newer one's
# delivery looks for it first (`unfound_ratings`), then settles it as plainly superseded.
UNFOUND = f"{UNKNOWN_OUTCOME}: superseded before it was looked for"
# A dead rating (or removal) that a newer one of the same item followed never goes out again:
# retried, even after the newer row is pruned, it would overwrite what the user chose since.
# A Serializd one that may have landed stays known as that (UNFOUND; see
# _SUPERSEDE_WAITING_RATINGS for why). Applied when a rating is queued, when one dies, and
# when dead letters are retried; callers add `AND <their filter>`.
_RATINGS_SQL = "(" + ", ".join(f"'{action}'" for action in RATING_ACTIONS) + ")"
_SUPERSEDE_DEAD_RATINGS = (
    "UPDATE outbox SET status = 'done', updated_at = ?, last_error = CASE"
    f" WHEN target = 'serializd' AND action = 'rating' AND {_MARKED} THEN '{UNFOUND}'"
    " ELSE 'superseded' END"
    f" WHERE status = 'dead' AND action IN {_RATINGS_SQL} AND EXISTS (SELECT 1"
    " FROM outbox AS newer WHERE newer.ordering_key = outbox.ordering_key"
    f" AND newer.id > outbox.id AND newer.action IN {_RATINGS_SQL})"
)

# A dead play whose very play (its item, at its minute) a newer removal took off the service
# since: going by itself after that removal went through, it would put back a play the user
# removed (the removal was the write that set it going). Applied to the dead letters going
# once more by themselves; callers add `AND <their filter>`.
REMOVED_SINCE = "not sent again: a removal of this play went through after it gave up"
_SETTLE_DEAD_PLAYS_REMOVED_SINCE = (
    "UPDATE outbox SET status = 'done', updated_at = ?, last_error = ?"
    " WHERE status = 'dead' AND action = 'play' AND EXISTS (SELECT 1 FROM outbox AS removal"
    " WHERE removal.ordering_key = outbox.ordering_key AND removal.id > outbox.id"
    " AND removal.action = 'remove_play' AND removal.status = 'done'"
    " AND CAST(json_extract(removal.payload, '$.at') / 60 AS INTEGER)"
    " = CAST(json_extract(outbox.payload, '$.at') / 60 AS INTEGER))"
)

# A waiting rating (or removal) that a newer one of the same item follows is settled at once:
# sent later, a target would stamp it "now", and the newer one would look older than it and
# be skipped as undoing the user's latest choice. One in flight ('inflight') finishes, and so
# does a Serializd one whose send may have landed (marked): there every rating is a diary row
# of its own that stays behind a newer one, and only its retry finds it and records it as
# ours. Left unknown, it reads as a rating the user gave when it landed (a link copies it
# back over the newer one), and the ledger misses that it was the last one sent (the newer
# one, back to the value before it, is taken as already there). Elsewhere a rating is one
# value that the newer write replaces.
_SUPERSEDE_WAITING_RATINGS = (
    "UPDATE outbox SET status = 'done', last_error = 'superseded', updated_at = ?"
    f" WHERE status = 'pending' AND action IN {_RATINGS_SQL} AND ordering_key = ? AND id < ?"
    f" AND NOT (target = 'serializd' AND {_MARKED})"
)

# A removal needs no waiting Serializd rating before it to go first, even one whose send may
# have landed: the removal's delivery looks for such a one (UNFOUND, `unfound_ratings`) and
# deletes it if it landed. Sent first, a rating the user cleared would be added to the diary
# only to be deleted.
_SUPERSEDE_MARKED_BY_REMOVAL = (
    f"UPDATE outbox SET status = 'done', last_error = '{UNFOUND}', updated_at = ?"
    " WHERE status = 'pending' AND action = 'rating' AND ordering_key = ? AND id < ?"
    f" AND target = 'serializd' AND {_MARKED}"
)


@dataclass(frozen=True)
class AccountLearnt:
    """A media-server account id (or name) a webhook's route learnt (account_ids.py):
    `account` (source, server, id) as `learnt` (profile, entry, name). Only the `kept` most
    recently learnt stay. `clash_forgets`: the id cache entries (namespace, lookup prefix) to
    forget when the same profile's entry was learnt with another id on the same server (two
    accounts answer to its name: the Plex reader asks the server's accounts again and tells)."""

    account: tuple[str, str, str]
    learnt: tuple[str, str, str]
    kept: int
    clash_forgets: tuple[str, str] | None = None


@dataclass(frozen=True)
class IngestJob:
    """One webhook event to record with its playback session and outbox rows."""

    source: str
    kind: str
    profile: str
    payload: dict[str, Any]
    now: float
    session_key: str
    # (the event's session, the item's marks session) -> the new session and the rows
    decide: Callable[
        [Session | None, Session | None], tuple[Session | None, Sequence[NewOutboxRow]]
    ]
    # The webhook's JSON as sent: kept when the event queues deliveries (`unmatched --payload`).
    document: Mapping[str, Any] | None = None
    # Where a viewing this event completes is recorded too (playback.completion_key).
    completion_key: str | None = None
    # `session_key` is kept long: the item's marks session (a mark naming no player), or the
    # last rating a server that sends ratings again sent (playback.remembers_rating).
    marks: bool = False
    # Where an earlier release kept these sessions, by key (playback.earlier_keys).
    earlier_keys: Mapping[str, str] = field(default_factory=dict)
    # Written with the event, so that a webhook answered has its account id kept (a process
    # that stopped after answering would otherwise forget it, and a rename meanwhile).
    learnt: AccountLearnt | None = None
    # A Plex sender's event (Plex's webhook, Tautulli's) as both name it, to pair the two
    # senders' reports of one viewing (playback.report_of). None: other sources.
    report: Report | None = None
    # Tautulli's report taken in Plex's webhook's stead (forplex.py): when it was made.
    taken_at: float | None = None
    # The event's progress (MediaEvent.progress): a Plex playback at most half way after such
    # a report begins another viewing (playback.begins_another_viewing).
    progress: float | None = None
    # Tautulli's stops and Watched the webhook adds to its server's count (tautulliwatched.py):
    # on its first job, counted in the same write.
    tautulli_reports: Reports | None = None
    # The webhook server's own name (server, name), new to the service or changed: noted in
    # the same write (lastwebhooks.py), on its first job.
    server_named: tuple[str, str] | None = None


# One webhook's events (recorded all or none), who waits for their rows, and on which loop.
Waiter = tuple[Sequence[IngestJob], "asyncio.Future[int]", asyncio.AbstractEventLoop]


class _Group:
    """One group commit: the webhooks it records and what became of each."""

    def __init__(self) -> None:
        self.waiters: list[Waiter] = []
        self.results: list[int | Exception] = []
        self.error: Exception | None = None  # the database failed: the whole group fails
        self.claimed = False  # someone is running (or ran) its inserts
        self.inserted = threading.Event()


class IngestWriter:
    """Records webhook events for the whole app in group commits: whatever has queued up
    while the previous group was being synced goes in one transaction, and each webhook gets
    its answer only after its own rows are committed.

    The writer thread takes the write lock (BEGIN IMMEDIATE, which may wait for another
    process) and commits (the disk sync); the inserts in between run on the event loop, in one
    callback per group. On the writer thread each of a webhook's ~8 statements had to win the
    GIL back from the busy event loop, so a group took many milliseconds; on the loop they cost
    only their CPU time. If the loop does not get to them in time, the writer thread runs them.
    If the loop itself calls the store meanwhile (a delivery reading a token), it would wait for
    the lock the writer holds while the writer waits for it: it runs the inserts first instead.
    """

    LOOP_GRACE = 0.025  # seconds the writer waits for the loop before inserting itself
    MAX_GROUP = 128  # webhooks per transaction: bounds the loop's time in one callback

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()  # guards _pending, _closing and group claims
        self._pending: list[Waiter] = []
        self._closing = False
        self._wake = threading.Event()
        # The group whose inserts the writer is waiting for, and the loop asked to run them.
        self._waiting_for: tuple[_Group, asyncio.AbstractEventLoop] | None = None
        store.before_waiting = self._help_if_waited_on
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._thread.start()

    async def write(self, job: IngestJob) -> int:
        """Record a webhook's one event; returns the outbox rows added, once they are durable."""
        return await self.write_all((job,))

    async def write_all(self, jobs: Sequence[IngestJob]) -> int:
        """Record a webhook's events (a file of several episodes), all or none: a webhook
        refused halfway and sent again must not record its first events twice. Returns the
        outbox rows added, once they are durable."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        with self._lock:
            if self._closing:
                raise StoreError("the store is closing")
            self._pending.append((jobs, done, loop))
        if not self._wake.is_set():
            self._wake.set()
        return await done

    def close(self) -> None:
        with self._lock:
            self._closing = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.store.before_waiting = _nothing

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                if not self._pending:
                    if self._closing:
                        return
                    self._wake.clear()
                    continue
                loop = self._pending[0][2]
            self._commit(loop)

    def _commit(self, loop: asyncio.AbstractEventLoop) -> None:
        group = _Group()
        try:
            with self.store.transaction():
                self._waiting_for = (group, loop)
                try:
                    self._inserted_by_loop(group, loop)
                finally:
                    self._waiting_for = None
                if group.error is not None:
                    raise group.error
                if len(group.results) != len(group.waiters):
                    raise StoreError("recording webhooks was interrupted")
        except Exception as exc:  # the database itself failed: every webhook in the group
            self._claim(group)  # if the transaction could not even start
            group.results = [exc] * len(group.waiters)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | Exception]]]
        by_loop = {}
        for (_, done, waiting), result in zip(group.waiters, group.results, strict=True):
            by_loop.setdefault(waiting, []).append((done, result))
        for waiting, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
                waiting.call_soon_threadsafe(_settle, settled)

    def _inserted_by_loop(self, group: _Group, loop: asyncio.AbstractEventLoop) -> None:
        """Have `loop` run the group's inserts, or run them here if it does not in time."""
        try:
            loop.call_soon_threadsafe(self._insert, group)
            if not group.inserted.wait(self.LOOP_GRACE):
                self._insert(group)
        except RuntimeError:  # that loop is closed
            self._insert(group)
        group.inserted.wait()

    def _help_if_waited_on(self) -> None:
        """Run the pending group's inserts if this thread runs the loop the writer waits for."""
        waiting = self._waiting_for
        if waiting is None:
            return
        group, loop = waiting
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # not an event loop's thread
            return
        if running is loop:
            self._insert(group)  # inside the writer's open transaction, like the callback

    def _claim(self, group: _Group) -> bool:
        """Make the webhooks queued so far this group's; False if it already has them."""
        with self._lock:
            if group.claimed:
                return False
            group.claimed = True
            group.waiters = self._pending[: self.MAX_GROUP]
            del self._pending[: self.MAX_GROUP]
            return True

    def _insert(self, group: _Group) -> None:
        """A group's inserts, inside the writer thread's open transaction; runs once."""
        if not self._claim(group):
            return
        try:
            webhooks = [jobs for jobs, _, _ in group.waiters]
            group.results = self.store.ingest_webhooks(self.store._conn, webhooks)
        except Exception as exc:
            group.error = exc
        finally:
            group.inserted.set()


def _remember_account(conn: sqlite3.Connection, learnt: AccountLearnt, now: float) -> None:
    if learnt.clash_forgets is not None:
        (source, server, account_id), (profile, entry, _) = learnt.account, learnt.learnt
        clash = conn.execute(
            "SELECT 1 FROM webhook_account_ids WHERE source = ? AND server = ?"
            " AND account_id != ? AND profile = ? AND entry = ? LIMIT 1",
            (source, server, account_id, profile, entry),
        ).fetchone()
        if clash is not None:
            namespace, prefix = learnt.clash_forgets
            conn.execute(
                "DELETE FROM id_cache WHERE namespace = ? AND substr(lookup, 1, ?) = ?",
                (namespace, len(prefix), prefix),
            )
    conn.execute(
        "INSERT OR REPLACE INTO webhook_account_ids"
        " (source, server, account_id, profile, entry, name, learnt_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (*learnt.account, *learnt.learnt, now),
    )
    conn.execute(
        "DELETE FROM webhook_account_ids WHERE rowid NOT IN (SELECT rowid FROM"
        " webhook_account_ids ORDER BY learnt_at DESC LIMIT ?)",
        (learnt.kept,),
    )


def _name_webhook_server(
    conn: sqlite3.Connection, source: str, server: str, name: str, now: float
) -> None:
    """Remember `source`'s `server` by the name its webhooks give it (lastwebhooks.py)."""
    conn.execute(
        "INSERT INTO webhook_server_names (source, server, name, at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (source, server) DO UPDATE SET name = excluded.name, at = excluded.at",
        (source, server, name, now),
    )


def _count_tautulli_reports(conn: sqlite3.Connection, reports: Reports, now: float) -> None:
    """Add one Tautulli webhook's stops, or its Watched, to its server's count: a Watched
    starts the count again (the trigger is ticked)."""
    if reports.watched:
        conn.execute(
            "INSERT INTO tautulli_reports (server, name, watched_at) VALUES (?, ?, ?)"
            " ON CONFLICT (server) DO UPDATE SET stops = 0, reached = 0, first_stop_at = NULL,"
            " watched_at = excluded.watched_at,"
            " name = CASE WHEN excluded.name = '' THEN name ELSE excluded.name END",
            (reports.server, reports.name, now),
        )
        return
    conn.execute(
        "INSERT INTO tautulli_reports (server, name, stops, reached, first_stop_at, last_stop_at)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (server) DO UPDATE SET stops = stops + excluded.stops,"
        " reached = reached + excluded.reached,"
        " first_stop_at = COALESCE(first_stop_at, excluded.first_stop_at),"
        " last_stop_at = excluded.last_stop_at,"
        " name = CASE WHEN excluded.name = '' THEN name ELSE excluded.name END",
        (reports.server, reports.name, reports.stops, reports.reached, now, now),
    )


# The tables whose rows a profile keeps by its name in a `profile` column (`move_profile`).
_KEPT_BY_PROFILE = (
    "tokens",
    "cursors",
    "mirror",
    "events",
    "playback_sessions",
    "webhook_account_ids",
    "catch_up_counts",
)
# Everything `move_profile` moves by a `profile` column: those, and the outbox (whose keys
# it renames too). Its "nothing to move" looks at the same list, or a profile keeping only
# events or a playback session would be refused and they would stay under the old name.
_MOVED_BY_PROFILE = (*_KEPT_BY_PROFILE, "outbox")


def _keeps_rows_of(conn: sqlite3.Connection, table: str, profile: str) -> bool:
    """Whether `table` (a name from a literal tuple, never input) has a row of `profile`."""
    query = f"SELECT 1 FROM {table} WHERE profile = ? LIMIT 1"
    return conn.execute(query, (profile,)).fetchone() is not None


def _cache_renamed(
    conn: sqlite3.Connection, old: str, cache: Mapping[str, Callable[[str], str | None]]
) -> list[tuple[str, str, str]]:
    """The cache rows `cache` renames for profile `old` (see `Store.move_profile`), each as
    (namespace, lookup, its lookup under the new name)."""
    found: list[tuple[str, str, str]] = []
    for namespace, renamed in cache.items():
        named = conn.execute(
            "SELECT lookup FROM id_cache WHERE namespace = ? AND instr(lookup, ?) > 0",
            (namespace, old),
        ).fetchall()
        for (lookup,) in named:
            if (moved := renamed(str(lookup))) is not None:
                found.append((namespace, str(lookup), moved))
    return found


def _links_running(conn: sqlite3.Connection, alive_since: float) -> list[str]:
    """The links with a sync run alive (its lease renewed since `alive_since`), by name."""
    query = f"SELECT DISTINCT link FROM sync_runs WHERE {_ALIVE} ORDER BY link"
    return [str(link) for (link,) in conn.execute(query, (alive_since,))]


def _session(conn: sqlite3.Connection, key: str, earlier: str | None = None) -> Session | None:
    """The session `key`, or the one an earlier release kept under `earlier` (as `key`)."""
    found = conn.execute("SELECT * FROM playback_sessions WHERE key = ?", (key,)).fetchone()
    if found is None and earlier is not None:
        found = conn.execute("SELECT * FROM playback_sessions WHERE key = ?", (earlier,)).fetchone()
    if found is None:
        return None
    return Session(
        key,
        found["state"],
        found["progress"],
        found["generation"],
        found["updated_at"],
        found["began_at"] or 0.0,
        found["rest_ended_at"] or 0.0,
        found["completed_at"] or 0.0,
        found["playing_since"] or 0.0,
    )


def _record_in_marks(
    conn: sqlite3.Connection,
    key: str,
    profile: str,
    before: Session | None,
    after: Session,
    marks: Session | None,
) -> None:
    """A viewing that ended (or a playback of its rest), or got going again, is noted in the
    item's marks session `key` (`marks`: as it is)."""
    if ends_a_viewing(before, after):
        completion = recorded_completion(after, marks, key)
        _save_session(conn, completion, profile, lasting=True)
    elif finished_its_rest(before, after) and marks is not None:
        ended = recorded_rest_end(marks, after.updated_at)
        if ended != marks:
            _save_session(conn, ended, profile, lasting=True)
    elif got_into_a_viewing(before, after) and marks is not None:
        began = recorded_start(marks, after.updated_at)
        if began != marks:
            _save_session(conn, began, profile, lasting=True)


def _remember_tautulli_server(
    conn: sqlite3.Connection, report: Report, naming: Naming, now: float
) -> None:
    conn.execute(
        "INSERT INTO tautulli_servers (profile, server, naming, seen_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (profile, server) DO UPDATE SET naming = excluded.naming,"
        " seen_at = excluded.seen_at",
        (report.profile, report.server, naming, now),
    )


LOOKED_BACK_AT_MOST = 2000  # events Tautulli's first report looks through for Plex's
# A server Tautulli has not reported to a profile for this long is forgotten (Store.prune): a
# household that removed Tautulli stops paying for Plex's notes. Longer than a household goes
# without watching (a long journey, a summer away); one that still has Tautulli loses nothing
# when it lapses anyway: Tautulli's next report remembers it again, and its first report of a
# viewing Plex's webhook reported first looks for Plex's (`_plex_report_at`).
TAUTULLI_SERVER_LAPSES = 90 * 86400.0
# How often a server's seen_at is written again while Tautulli keeps reporting it: not on
# every webhook.
TAUTULLI_SEEN_NOTED_EVERY = 86400.0


def _plex_report_at(
    conn: sqlite3.Connection, job: IngestJob, other_key: str, naming: Naming
) -> float | None:
    """When Plex's webhook reported, within TOGETHER_WITHIN and with a play queued, the
    viewing whose Plex report would be noted at `other_key`: what Tautulli's first report of a
    server (or first since its template named players otherwise) pairs with, Plex's webhook
    not having noted its reports of that server before. Once per server: it reads back."""
    since = job.now - TOGETHER_WITHIN
    recent = conn.execute(
        "SELECT id, received_at, source, profile FROM events ORDER BY id DESC LIMIT ?",
        (LOOKED_BACK_AT_MOST,),
    ).fetchall()
    for event_id, received_at, source, profile in recent:
        if received_at < since:
            break
        if source != "plex" or profile != job.profile:
            continue
        queued = conn.execute(
            "SELECT 1 FROM outbox WHERE event_id = ? AND action = 'play' LIMIT 1", (event_id,)
        ).fetchone()
        if queued is None:
            continue
        (payload,) = conn.execute("SELECT payload FROM events WHERE id = ?", (event_id,)).fetchone()
        try:
            report = report_from_record(json.loads(payload), job.profile)
        except ValueError:
            continue
        keys = None if report is None else report_keys(report, naming)
        if keys is not None and keys[0] == other_key:
            return float(received_at)
    return None


def _one_play_of_two_reports(
    conn: sqlite3.Connection,
    job: IngestJob,
    keys: tuple[str, str],
    rows: Sequence[NewOutboxRow],
    look_back: Naming | None,
) -> Sequence[NewOutboxRow]:
    """`rows` without their play when it is a Plex sender's report of a viewing the other
    sender reported already (Plex's webhook and Tautulli's both set up for one server): the
    viewing counts once. Either way the report is noted for the other sender's to match.
    `look_back`: Tautulli's first report of the server, named so; Plex's was not noted, so it
    is looked for among the events (`_plex_report_at`)."""
    own_key, other_key = keys
    other = _session(conn, other_key)
    if other is None and look_back is not None:
        at = _plex_report_at(conn, job, other_key, look_back)
        if at is not None:
            other = Session(other_key, "reported", None, 0, at)
    twice, own, other_after = one_of_two_reports(own_key, other, job.now, job.taken_at)
    _save_session(conn, own, job.profile)
    if other_after is not None and other_after != other:
        _save_session(conn, other_after, job.profile)
    return [row for row in rows if row.action != "play"] if twice else rows


def _live_states_of_its_own_viewing(
    job: IngestJob, rows: Sequence[NewOutboxRow], other: Callable[[], Session | None]
) -> Sequence[NewOutboxRow]:
    """`rows` without their live states when they are a Plex sender's of a viewing the other
    sender (its session: `other`, read only for a live state) reported complete already
    (playback.after_the_others_report): Trakt's live state of it ended with that play."""
    watching = [row for row in rows if row.action == "watching"]
    if not watching:
        return rows
    progress = watching[0].payload.get("progress")
    if not after_the_others_report(other(), job.now, progress):
        return rows
    return [row for row in rows if row.action != "watching"]


def _save_session(
    conn: sqlite3.Connection, session: Session, profile: str, lasting: bool = False
) -> None:
    # An upsert, not INSERT OR REPLACE: a replace deletes the row and rewrites its key's index
    # page too, once per progress webhook.
    conn.execute(
        "INSERT INTO playback_sessions"
        " (key, profile, state, progress, generation, updated_at, lasting, began_at,"
        " rest_ended_at, completed_at, playing_since)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET"
        " profile = excluded.profile, state = excluded.state, progress = excluded.progress,"
        " generation = excluded.generation, updated_at = excluded.updated_at,"
        " lasting = excluded.lasting, began_at = excluded.began_at,"
        " rest_ended_at = excluded.rest_ended_at, completed_at = excluded.completed_at,"
        " playing_since = excluded.playing_since",
        (
            session.key,
            profile,
            session.state,
            session.progress,
            session.generation,
            session.updated_at,
            int(lasting),
            session.began_at or None,
            session.rest_ended_at or None,
            session.completed_at or None,
            session.playing_since or None,
        ),
    )


def _json_text(value: Mapping[str, Any]) -> str:
    """Compact JSON, several times faster than json.dumps (the ingest path runs it per event)."""
    try:
        return msgspec.json.encode(value).decode()
    except UnicodeEncodeError:  # a lone surrogate (from a service: webhook bodies have none)
        return json.dumps(value)


def _nothing() -> None:
    pass


def _settle(settled: list[tuple[asyncio.Future[int], int | Exception]]) -> None:
    for done, result in settled:
        if done.cancelled():
            continue
        if isinstance(result, Exception):
            done.set_exception(result)
        else:
            done.set_result(result)


@dataclass(frozen=True)
class Unmatched:
    """A delivery waiting for ids, with the webhook it came from (None: a sync planned it)."""

    item: OutboxItem
    event: str | None  # the event as recorded (JSON)
    raw: str | None  # the webhook's JSON as the server sent it


@dataclass(frozen=True)
class Claimed:
    """What one claim took (`Store.claim_turn`), and whether the row due next in its turn goes
    alone (CRASHES_ALONE) and was left for a claim that may take it."""

    items: list[OutboxItem]
    alone_next: bool
    # (target, profile) of the rows taken: the sign-in mark (SIGNED_IN_CURSOR) as the claim
    # read it, in its transaction; None where none was made since the database began.
    signed_in: dict[tuple[str, str], str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Settlement:
    """The outcome of one delivery attempt for one outbox row."""

    item_id: int
    status: OutboxStatus
    next_attempt_at: float | None = None
    error: str | None = None
    spend_attempt: bool = True
    waits_for_sign_in: bool = False  # held for a sign-in or key a changed config may give
    held: str | None = None  # HELD_TARGET or HELD_PROFILE: what holds it (None: nothing)
    # Of those, held for a media server's own key (its name: services.plex.token, or a
    # Jellyfin or Emby api_key): no profile's sign-in gives that one.
    waits_for_server: str | None = None
    # Dead of the service's own failure: queued again by itself once (ONCE_MORE_DUE), unless
    # it was already.
    once_more: bool = False
    # A probe (ONCE_MORE_PROBE) not through: dead again, waiting (ONCE_MORE_DUE, told of
    # already), or final (ONCE_MORE_SPENT, told of anew). A probe through is spent.
    probe_end: str | None = None
    # Handed back untried (a fenced batch): neither a failure nor a hold, so a failing row
    # keeps counting delivery.max_age from its first failure.
    handed_back: bool = False


@dataclass(frozen=True)
class RunProgress:
    """How far a running link run had got when its heartbeat last recorded it."""

    step: str  # "reading plex", "comparing serializd", "writing", ... ("starting": none yet)
    profile: str | None
    requests: int  # API requests its reads made so far
    at: float  # when it was recorded
    done: int | None = None  # of `total` `unit`s (None: the step counts nothing)
    total: int | None = None
    unit: str | None = None  # what `done` and `total` count ("shows")

    def words(self) -> str:
        """`comparing serializd for alex: 1,200 of 2,000 shows, 2,431 API requests so far`."""
        whose = f" for {self.profile}" if self.profile else ""
        counted = ""
        if self.done is not None and self.total is not None:
            counted = f"{self.done:,} of {self.total:,} {self.unit or 'done'}, "
        return f"{self.step}{whose}: {counted}{self.requests:,} API requests so far"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> RunProgress | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(
            step=str(data["step"]),
            profile=data.get("profile"),
            requests=int(data["requests"]),
            at=float(data["at"]),
            done=data.get("done"),
            total=data.get("total"),
            unit=data.get("unit"),
        )


@dataclass(frozen=True)
class SyncRun:
    id: int
    link: str
    started_at: float
    finished_at: float | None
    outcome: str
    counts: dict[str, int]
    api_calls: int
    error: str | None
    heartbeat_at: float | None = None
    progress: RunProgress | None = None  # while running, from its last heartbeat

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SyncRun:
        return cls(
            id=row["id"],
            link=row["link"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            outcome=row["outcome"],
            counts=json.loads(row["counts"]),
            api_calls=row["api_calls"],
            error=row["error"],
            heartbeat_at=row["heartbeat_at"],
            progress=(
                RunProgress.from_json(row["progress"]) if row["outcome"] == "running" else None
            ),
        )

    def as_seen(self, now: float, lease: float = RUN_LEASE) -> SyncRun:
        """The run as the next start will close it: one still "running" whose heartbeat
        stopped a lease ago died before its end."""
        beat = self.heartbeat_at if self.heartbeat_at is not None else self.started_at
        if self.outcome != "running" or now - beat <= lease:
            return self
        return replace(self, outcome="failed", error=DIED)


@dataclass(frozen=True)
class Waiting:
    """Queued rows of one target and profile that a failure holds back, with its reason."""

    target: str
    profile: str
    reason: str
    rows: int
    next_at: float
    # Held only because the service does not take deliveries now (down, or rate-limiting):
    # they go by themselves once it does, with nothing for the user to do.
    service_waits: bool = False
    since: float | None = None  # when the first of them was queued


@dataclass(frozen=True)
class KeptState:
    """What the database keeps for one profile or link (`Store.kept_for_profile`,
    `Store.kept_for_link`)."""

    queued: int = 0  # writes pending or in flight
    dead_letters: int = 0
    kept_off: int = 0  # a link's: plays kept off its target (`deadletters discard --for-good`)
    sign_ins: tuple[str, ...] = ()  # a profile's: the services it is signed in to
    links: tuple[str, ...] = ()  # a profile's: the links keeping sync state for it
    profiles: tuple[str, ...] = ()  # a link's: the profiles it keeps sync state for


@dataclass(frozen=True)
class ProfileMoved:
    """What `Store.move_profile` did, or why it did nothing (`refused`, a message)."""

    kept: KeptState = field(default_factory=KeptState)  # what moved, as it was kept
    requeued: int = 0  # dead letters given up for the old name's absence, queued again
    refused: str = ""


@dataclass(frozen=True)
class TargetQueue:
    """One target's outbox rows as /metrics shows them (Store.queue_gauges)."""

    pending: int = 0
    inflight: int = 0
    dead: int = 0
    unmatched: int = 0  # pending, waiting for ids a service can use
    # pending, held for a sign-in or key of the profile's (not unmatched)
    waiting_for_sign_in: int = 0
    # pending, held for a media server's own key (outbox.waits_for_server): no sign-in of
    # the profile's gives that one
    waiting_for_server_key: int = 0
    oldest_pending_at: float | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as the status page lists it: what it was, where to, whose, when it was
    given up and why (the reason without the mark of a send that may have landed)."""

    id: int
    target: str
    profile: str
    action: str
    title: str  # "Breaking Bad S05E16", as `deadletters list` names it
    at: float
    reason: str


@dataclass(frozen=True)
class StoreStatus:
    """What `watchbridge status` and `/readyz` need at a glance."""

    outbox: dict[str, int]
    dead_letters: int
    unmatched: int
    oldest_pending_at: float | None
    cursors: list[tuple[str, str, str, str, float]]
    last_runs: list[SyncRun]
    waiting: list[Waiting] = field(default_factory=list)  # held or retrying, not unmatched
    waiting_left_out: int = 0  # reasons rows wait for beyond the WAITING_SHOWN listed
    behind: int = 0  # rows waiting for an earlier one of their item (waiting_behind)
    last_success_at: dict[str, float] = field(default_factory=dict)  # per link (last_successes)
    kept_off: list[KeptOffCount] = field(default_factory=list)  # `discard --for-good`'s plays
    # Of the rows done (kept a week), those a person counts as sent, by action (COUNTED_SENT).
    sent: dict[str, int] = field(default_factory=dict)
    # The newest dead letters (DEAD_SHOWN at most), newest first: `dead_letters` counts them all.
    dead_shown: list[DeadLetter] = field(default_factory=list)

    def shown(self, redact: Callable[[str], str]) -> StoreStatus:
        """This status with its stored error texts (held rows' reasons, runs' errors) passed
        through `redact` (redaction.redactor), as every display shows them: a service's message
        may quote a URL with a key in it, or a token."""
        return replace(
            self,
            waiting=[replace(w, reason=redact(w.reason)) for w in self.waiting],
            dead_shown=[replace(d, reason=redact(d.reason)) for d in self.dead_shown],
            last_runs=[
                replace(r, error=None if r.error is None else redact(r.error))
                for r in self.last_runs
            ],
        )


def backup_path(database: Path) -> Path:
    """Where `watchbridge backup` writes by default, and a missing database is restored from."""
    return database.with_name(f"{database.name}.backup")


def damaged_backup_path(database: Path) -> Path:
    """Where a damaged backup copy of `database` is set aside (see `_restore_missing`)."""
    copy = backup_path(database)
    return copy.with_name(f"{copy.name}.damaged")


def backup_damage(database: Path) -> str | None:
    """What SQLite's quick check finds wrong in the backup copy a missing `database` would
    start from, or None when it finds nothing: read as it is (immutable: nothing written
    beside it), so that a start can say what it will do before `Store.open` does it."""
    try:
        look = sqlite3.connect(f"{backup_path(database).resolve().as_uri()}?immutable=1", uri=True)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        return _damage(look)
    finally:
        look.close()


def _stamp_copy(copy: sqlite3.Connection, now: float) -> None:
    """Write into a backup copy (never the database) when it was taken: put back in the
    database's place however it comes back, it is known for a copy (`Store.open`)."""
    tables = copy.execute("SELECT 1 FROM sqlite_master WHERE name = 'settings'").fetchall()
    if not tables:  # a database no release has set up yet: nothing to put back
        return
    with copy:
        copy.execute(
            "INSERT OR REPLACE INTO settings (name, value, updated_at) VALUES (?, ?, ?)",
            (COPIED_AT, repr(now), now),
        )


def _ran_since(conn: sqlite3.Connection, copied: str) -> bool:
    """Whether a service noted itself alive on this database after its copy was taken (a
    minute's margin for the clock): the stamp outlived the copy, which has been the live
    database since (a release that knew no stamp ran on it), not a copy just put back."""
    found = conn.execute("SELECT value FROM settings WHERE name = 'alive_at'").fetchone()
    try:
        return found is not None and float(found[0]) > float(copied) + 60.0
    except ValueError:  # an older release's copy, its time unknown
        return False


def _restore_missing(database: Path) -> bool:
    """Put the backup copy in place of a missing database; whether it did."""
    copy = backup_path(database)
    if database.exists() or not copy.is_file():
        return False
    # The journal files of a deleted database would be replayed over the copy (SQLite cannot
    # tell they are another file's): set them aside.
    for stale in _sidecars(database):
        if stale.exists():
            stale.replace(stale.with_name(stale.name + ".orphaned"))
    restoring = database.with_name(f".{database.name}.restoring")
    _create_private_file(restoring)
    with open(copy, "rb") as source, open(restoring, "wb") as restored:
        shutil.copyfileobj(source, restored)
        restored.flush()
        os.fsync(restored.fileno())
    if (damage := _damage_in(restoring)) is not None:
        # Started from, it would be refused as damaged at every start (each one restoring it
        # again): it is set aside, for the user to rescue what they can, and a new one begun.
        restoring.unlink(missing_ok=True)
        aside = damaged_backup_path(database)
        os.replace(copy, aside)
        log.warning(
            f"the database was missing and its backup copy is damaged ({damage}): started "
            f"from a new database (sign in again); the copy is kept as {aside}",
            extra={"copy": str(copy)},
        )
        return False
    os.replace(restoring, database)  # whole or not at all: a cut-short copy is not opened
    log.warning(
        "the database was missing: started from its backup copy (sign-ins refreshed since the "
        "copy may have to be done again)",
        extra={"copy": str(copy)},
    )
    return True


def _cannot_open(database: Path, exc: OSError | sqlite3.Error) -> str:
    """Why the database at `database` could not be opened, and what to check."""
    if locked_by_another(exc):
        return f"storage.path {database}: cannot open the database: {LOCKED_BY_ANOTHER}"
    fault = fault_of(exc, str(database))
    if fault is not None and fault.kind in ("read_only", "full"):  # the others are guesses
        return (
            f"storage.path {database}: cannot open the database: {fault.problem} "
            f"({fault.said}). {fault.fix}"
        )
    if _on_read_only_disk(database):  # SQLite can only say it cannot make its -shm there
        fault = fault_of(OSError(errno.EROFS, "read-only"), str(database))
        assert fault is not None
        return (
            f"storage.path {database}: cannot open the database ({exc}): {fault.problem} "
            f"(its filesystem is mounted read-only). {fault.fix}"
        )
    return (
        f"storage.path {database}: cannot open the database ({exc}): check that its folder "
        "exists, that the user watchbridge runs as can write there, and that the disk is not full"
    )


def _on_read_only_disk(database: Path) -> bool:
    """Whether the filesystem holding `database` (its nearest folder that exists) is mounted
    read-only."""
    existing = next((p for p in database.absolute().parents if p.exists()), None)
    try:
        return existing is not None and bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _damage(database: sqlite3.Connection) -> str | None:
    """What SQLite's quick check finds wrong in a database (a failing disk's lost pages), or
    None when it finds nothing."""
    try:
        found = [str(row[0]) for row in database.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:  # "database disk image is malformed"
        return str(exc)
    return None if found == ["ok"] else "; ".join(found)


def _damage_in(file: Path) -> str | None:
    """`_damage` of the database file `file` (one no other connection has open)."""
    look = sqlite3.connect(file)
    try:
        return _damage(look)
    finally:
        look.close()


def _beside(database: Path | None) -> str:
    return "" if database is None else f" {backup_path(database)}"


def _damaged(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is damaged or not a database (its extended codes, such
    as SQLITE_CORRUPT_INDEX, carry the primary code in their low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _refuse_foreign(database: Path, busy_timeout: float) -> None:
    """Raise StoreError for a database another application made (storage.path naming Home
    Assistant's or a media server's by mistake): watchbridge would add its tables to it.

    Looked at through a connection of its own, closed before the store's is opened. That is
    not what once left deliveries in flight (the Emby-to-Serializd air-date tests, when the
    look ran on the store's connection): `_create_private_file` then ran after the look, and
    its os.close of the file dropped every POSIX lock this process held on it (see
    `_create_private_file`). An SQLite connection, like this one, is safe at any time."""
    look = sqlite3.connect(database, timeout=busy_timeout, isolation_level=None)
    try:
        tables = [
            str(row[0])
            for row in look.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite%' AND name != ? ORDER BY name",
                (migrations.migrations_table,),
            )
        ]
        ours = bool(tables) and bool(migrations.applied(sqlite_utils.Database(look)))
    finally:
        look.close()
    if not tables or ours:
        return  # new (or being made by another process), or watchbridge's
    listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    raise StoreError(
        f"storage.path {database}: not a watchbridge database (it holds another "
        f"application's tables: {listed}); name a file of watchbridge's own, a new one is made"
    )


def _sidecars(database: Path) -> list[Path]:
    """The files SQLite keeps beside a database while it is open (write-ahead log, index)."""
    return [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _create_private_file(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite opens it (it holds tokens).

    Never on a database (or its -wal, -shm) an SQLite connection of this process has open: the
    close of any descriptor of a file drops all the process's POSIX locks on it, and SQLite
    does not notice. Another process's last connection to close (a `watchbridge status`, the
    sqlite3 shell) then finds none left, checkpoints and deletes the log and index, and all
    this process writes after goes to the deleted log: unseen by others, lost at restart
    (a delivery sent but shown in flight for good). os.chmod opens nothing."""
    make_private_folder(path.parent)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _on_shared_filesystem(path: Path) -> bool:
    """Whether the database is on a network, host-shared or FUSE filesystem (see
    filesystems.shared_filesystem_warning)."""
    where = str(path.resolve())
    return shared_filesystem_warning("storage.path", where, read_mountinfo()) is not None


class OpenFiles:
    """The database's files as the store has them open: a commit to one no longer at its path
    (deleted, moved or replaced while the service runs: a user tidying the data folder) would
    be acknowledged, and gone at the next start. Each is known by its device and inode from
    the first time it is seen; the log and index (WAL mode) stay while a connection is open.

    On a network, host-shared or FUSE filesystem (`shared`) only a file gone from its path
    counts: the inode numbers some of them make up are no proof of another file, and a false
    alarm would refuse every webhook."""

    def __init__(self, database: Path, wal: bool, shared: bool = False) -> None:
        real = database.resolve()
        files = [database]
        if wal:
            files += [real.with_name(real.name + suffix) for suffix in ("-wal", "-shm")]
        self._known: dict[Path, tuple[int, int] | None] = dict.fromkeys(files)
        self._by_inode = not shared

    def check(self) -> None:
        """Raise DatabaseMoved unless each file seen before is still the one at its path."""
        for path, known in self._known.items():
            try:
                found = os.stat(path)
            except FileNotFoundError:
                if known is None:
                    continue
                raise DatabaseMoved(str(path)) from None
            seen = (found.st_dev, found.st_ino)
            if known is None:
                self._known[path] = seen
            elif seen != known and self._by_inode:
                raise DatabaseMoved(str(path))


class Checkpointer:
    """Runs SQLite's checkpoints on a thread and connection of its own (see Store.checkpoint_apart).

    A passive checkpoint copies what it can without waiting for, or holding up, any writer.
    Under a long flood those copies never quite catch up, and the log only starts over once
    one has: then the next commit finishes the copy itself, a short one, on the store's
    connection.
    """

    def __init__(self, path: Path, every: int, restart_frames: int = WAL_RESTART_FRAMES) -> None:
        self.every = every
        self.restart_frames = restart_frames
        self.runs = 0
        self.catch_up = False  # the log is long: the next commit completes a checkpoint
        self._commits = 0
        self._due = threading.Event()
        self._closing = False
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)
        self._thread.start()

    def committed(self, conn: sqlite3.Connection) -> None:
        """Count one commit made on `conn` (called under the store's lock)."""
        if self.catch_up:
            # After the commit: a failure here must not make a committed write look failed.
            with contextlib.suppress(sqlite3.Error):
                busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.catch_up = bool(busy) or copied < frames
        self._commits += 1
        if self._commits >= self.every:
            self._commits = 0
            self._due.set()

    def close(self) -> None:
        self._closing = True
        self._due.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._closing:
                    return
                try:
                    _, frames, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except Exception as exc:  # the next one tries again; the log only grows
                    log.warning("database checkpoint failed", extra={"reason": str(exc)})
                    continue
                self.catch_up = self.catch_up or frames >= self.restart_frames
                self.runs += 1
        finally:
            self._conn.close()


LOCKED_BY_ANOTHER = (
    "the database stayed locked by another process (a `watchbridge sync`, a sqlite3 shell) for"
    " longer than storage.busy_timeout"
)


def journal_warning(path: Path, journal_mode: str) -> str | None:
    """What to tell a user whose database SQLite keeps in `journal_mode` instead of its
    write-ahead log (WAL mode), or None for one in WAL mode or not on disk."""
    if journal_mode in (WAL, "memory"):
        return None
    return (
        f"storage.path: {path}: SQLite could not put the database in WAL mode (its write-ahead "
        f"log) and keeps its '{journal_mode}' journal, as it does where the files beside it "
        "cannot share memory (some network, FUSE and shared-folder filesystems): every write "
        "now waits for the disk, storage.durability: normal included (a commit to this "
        "journal that did not wait may leave the file damaged after a power cut), so writes "
        "are slower and reads (status, /metrics) hold them up; stop watchbridge and move the "
        "database, with the files beside it, to a local disk of this machine (ext4, xfs, "
        "btrfs, zfs), then point storage.path (or the container's data folder) there"
    )


# The row a check of the store's writes writes (or writes and rolls back).
_WRITE_CHECK = (
    "INSERT OR REPLACE INTO settings (name, value, updated_at) VALUES ('write_check', '', ?)"
)


def locked_by_another(exc: BaseException) -> bool:
    """Another process (a `watchbridge sync`, a sqlite3 shell) held the write lock for longer
    than storage.busy_timeout: nothing is wrong with the database, try again later."""
    # SQLITE_BUSY's words; "database table is locked" (SQLITE_LOCKED) is this connection's own.
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(
        ("database is locked", "database is busy")
    )


def storage_fault(exc: sqlite3.DatabaseError) -> bool:
    """The database or its disk failed (locked, full, read-only, damaged), not our SQL."""
    return not isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError)


class ReadConnection:
    """A connection of the store's own for reads that need not wait for its lock: in WAL a
    reader and the writer do not wait for each other, so a long read here holds up no
    webhook's record. Opened at its first use, used by one thread at a time; it never sees
    a transaction the store's connection has not committed."""

    def __init__(self, path: Path | None, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed or self._path is None:  # a read racing the shutdown: none opened
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            if self._conn is None:
                # mode=rw: never a new (world-readable) file where the database went missing.
                uri = f"{self._path.resolve().as_uri()}?mode=rw"
                self._conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
                self._conn.row_factory = sqlite3.Row
                self._conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# The error texts the database keeps: (table, column), each table's rows by `id`.
_KEPT_ERRORS = (("outbox", "last_error"), ("sync_runs", "error"))


def _masked_column(
    conn: sqlite3.Connection, table: str, column: str, mask: Callable[[str], str]
) -> list[tuple[str, int]]:
    """The texts of `column` that `mask` changes, masked, with their rows' ids; each distinct
    text masked once (many rows share theirs: `superseded`, one refusal)."""
    masked: dict[str, str] = {}
    changed = []
    for row_id, text in conn.execute(f"SELECT id, {column} FROM {table} WHERE {column} != ''"):
        if text not in masked:
            masked[text] = mask(text)
        if masked[text] != text:
            changed.append((masked[text], row_id))
    return changed


class Store:
    """The SQLite store. Thread-safe: one connection, one lock; writes are short transactions."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path | None = None, busy_timeout: float = 5.0
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout  # the overview's connection waits as long
        self._conn = conn
        self._lock = threading.RLock()
        # What a thread does before it blocks on the lock (see IngestWriter._help_if_waited_on).
        self.before_waiting: Callable[[], None] = _nothing
        self.checkpointer: Checkpointer | None = None
        # Why the last write failed (a full disk, a read-only file system), until one works.
        self.write_error: str | None = None
        # Told of each token set `put_token` stores, and of one `get_token` reads that
        # another process stored (`auth` run beside the service): redaction masks its tokens
        # from then on.
        self.on_token_stored: list[Callable[[str, str, Mapping[str, Any]], None]] = []
        self._told_tokens: dict[tuple[str, str], str] = {}  # the set last told, as stored
        # The newest outbox row when this process opened the database (`open`); every row
        # queued since has a higher id (AUTOINCREMENT). See `OutboxItem.links_since`.
        self.outbox_at_open = 0
        # When this process opened the database, on the clock its rows are dated by
        # (`Runtime.open` stamps its own): a write of a process before it was made before it.
        self.opened_at = time.time()
        self.db = sqlite_utils.Database(conn)
        # Reads on connections of their own, without the store's lock (see `ReadConnection`):
        # the overview's counts, and the whole mirror collections a deliverer loads.
        self._overview_reads = ReadConnection(path, busy_timeout)
        self._mirror_reads = ReadConnection(path, busy_timeout)
        # `mirror_get`'s, apart from the deliverer's long snapshots (`mirror_copy`).
        self._collection_reads = ReadConnection(path, busy_timeout)
        self._holding = threading.local()  # how deep this thread is in `_locked`
        # (service, profile, collection) -> held by its `mirror_replace_in_parts`
        self._replaces: dict[tuple[str, str, str], threading.Lock] = {}
        self._replaces_lock = threading.Lock()
        # WAL, as Store.open asks; else every commit is synced (see `journal_warning`).
        self.journal_mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        self._files = (
            OpenFiles(path, self.journal_mode == WAL, _on_shared_filesystem(path))
            if path is not None
            else None
        )
        # (profile, Plex server) -> how Tautulli's template names players and when Tautulli
        # last reported it (as noted: TAUTULLI_SEEN_NOTED_EVERY), for each server Tautulli
        # reported to a profile (table tautulli_servers); read at the first webhook, and again
        # after Store.prune forgot a lapsed one.
        self._tautulli_servers: dict[tuple[str, str], tuple[Naming, float]] | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        durability: str = "full",
        busy_timeout: float = 5.0,
        *,
        upgrade: bool = True,
    ) -> Store:
        """Open (creating and migrating if needed) the store at `path`; a missing database
        with a `watchbridge backup` copy beside it (a restored backup) starts from the copy.
        `upgrade=False` (commands that only look) leaves an older schema as it is: the
        release still running on it would find it changed under it (`behind` says so)."""
        file = Path(path)
        try:
            restored = _restore_missing(file)
            new = not file.exists() or file.stat().st_size == 0
            if new:
                _create_private_file(file)
            else:
                # Before anything changes it: another application's file is left as it was.
                _when_free(lambda: _refuse_foreign(file, busy_timeout))
                # Made private (a copy restored as 0644), with the log and index another
                # process keeps open, which took the file's mode (chmod: never an open and
                # close of a database this process may hold, see `_create_private_file`).
                for made in [file, *_sidecars(file)]:
                    with contextlib.suppress(FileNotFoundError):
                        os.chmod(made, 0o600)
            conn = sqlite3.connect(
                file, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            # Another process opening a new database at the same moment may hold it a moment.
            answers: list[str] = []
            _when_free(
                lambda: answers.append(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            )
            # The log grows while a reader pins it (a long sync read); once it starts over,
            # give the disk space back down to this size.
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            # Where SQLite answers with another journal (no shared memory there), it stays in
            # it silently; a commit of a rollback journal that did not wait for the disk may
            # leave the file damaged after a power cut, so each waits (journal_warning).
            relaxed = durability != "full" and str(answers[-1]).lower() == WAL
            conn.execute(f"PRAGMA synchronous={'NORMAL' if relaxed else 'FULL'}")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(conn, file, busy_timeout)
            if upgrade or new:
                store.migrate()
            # A copy put back over the database by hand (or a whole folder restored) is
            # known by the stamp `backup_to` left in it; one started from as the missing
            # database's may be an older release's, without one.
            copied = store._copy_taken_at()
            if restored or (copied is not None and (upgrade or new)):
                store._mark_restored_rows(copied, restored)
            if upgrade or new:
                found = conn.execute("SELECT MAX(id) FROM outbox").fetchone()[0]
                store.outbox_at_open = int(found or 0)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise StoreError(_cannot_open(file, exc)) from None
            raise StoreError(
                f"storage.path {file}: the file is damaged or not a database ({exc}): stop "
                "watchbridge and move it aside; the next start begins from its backup copy "
                f"{backup_path(file)} (`watchbridge backup`) if there is one, else from a new "
                "database (sign in again then)"
            ) from None
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(_cannot_open(file, exc)) from None
        return store

    def _copy_taken_at(self) -> str | None:
        """When the `backup_to` copy this database is was taken ("" unknown), or None when it
        is no copy (COPIED_AT)."""
        return self.known_setting(COPIED_AT)

    def _mark_restored_rows(self, copied: str | None = None, restored: bool = False) -> None:
        """A backup copy's undelivered rows may have gone out after it was taken, and what
        records their sends (mirrors, ledgers) is as old as the copy: mark them as possibly
        sent, so each target looks before sending again (Trakt history and the Serializd
        diary would record a second play), and each link's next run pairs its new plays as a
        first run does (RESTORED_LINK). The copy's stamp goes in the same transaction
        (each row is marked once), and the restore is kept for the service to tell. Nothing
        is marked for a stamp (`copied`) put back by hand that another process opening the
        copy has cleared since it was read, or that a service ran with after it was taken."""
        with self.transaction() as conn:
            cleared = conn.execute("DELETE FROM settings WHERE name = ?", (COPIED_AT,)).rowcount
            if copied is not None and not restored and (not cleared or _ran_since(conn, copied)):
                return
            conn.execute(
                "INSERT OR REPLACE INTO settings (name, value, updated_at) VALUES (?, ?, ?)",
                (RESTORED_COPY, copied or "", time.time()),
            )
            conn.execute(
                "INSERT OR IGNORE INTO cursors (service, profile, name, value, updated_at)"
                " SELECT service, profile, ? || substr(name, 6), ?, ? FROM cursors"
                " WHERE service = ? AND substr(name, 1, 5) = 'link:'",
                (RESTORED_LINK, copied or "", time.time(), ENGINE),
            )
            # The catch-up's state (catchup.py) is as old as the copy, and so are the events it
            # checks its plays against: each play a webhook sent since would be sent again. Its
            # next read is a first one (a baseline).
            conn.execute(
                "DELETE FROM cursors WHERE substr(name, 1, ?) = ?",
                (len(CATCH_UP_CURSORS), CATCH_UP_CURSORS),
            )
            conn.execute("DELETE FROM catch_up_counts")
            conn.execute(
                "UPDATE outbox SET last_error = ? || ': ' || CASE"
                " WHEN last_error IS NULL OR last_error = '' THEN 'restored from a backup copy'"
                " ELSE last_error END"
                f" WHERE status IN ('pending', 'inflight', 'dead') AND NOT {_MARKED}",
                (UNKNOWN_OUTCOME,),
            )

    def backup_to(self, target: Path) -> None:
        """A consistent copy of the database at `target` (mode 0600), taken while the
        service runs (SQLite's online backup: a file copy of a database being written may be
        damaged). Written beside `target` first, then put in its place; a copy of a damaged
        database (SQLite's quick check) replaces nothing: StoreError, `target` left as it was."""
        live = [] if self.path is None else [self.path, *_sidecars(self.path)]
        if any(_same_file(target, path) for path in live):
            raise StoreError(f"{target} is the database itself: name another file to copy it to")
        partial = target.with_name(f".{target.name}.partial")
        try:
            partial.unlink(missing_ok=True)
            _create_private_file(partial)
            copy = sqlite3.connect(partial)
            try:
                with self._locked():
                    self._conn.backup(copy)
                damage = _damage(copy)  # the copy is page for page what the database holds
                if damage is None:
                    _stamp_copy(copy, time.time())
            finally:
                copy.close()
            if damage is None:
                os.replace(partial, target)
        except (OSError, sqlite3.Error) as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            reason = getattr(exc, "strerror", None) or exc
            raise StoreError(f"cannot write the copy to {target} ({reason})") from None
        if damage is not None:
            # The copy that would replace an earlier one (the copy a damaged database is
            # started over from) is left out.
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            database = self.path or "the database"
            raise StoreError(
                f"{database} is damaged ({damage}), and so would its copy be: {target} is left "
                "as it was; stop watchbridge and move the database aside (keep it): the next "
                f"start begins from its backup copy{_beside(self.path)} if there is one"
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            self.before_waiting()
            while not self._lock.acquire(timeout=LOCK_POLL):
                self.before_waiting()
        depth = getattr(self._holding, "depth", 0)
        self._holding.depth = depth + 1
        try:
            yield
        finally:
            self._holding.depth = depth
            self._lock.release()

    def _held_here(self) -> bool:
        """Whether this thread holds the store's lock (is inside a transaction of its own)."""
        return getattr(self._holding, "depth", 0) > 0

    def checkpoint_apart(
        self, every: int = CHECKPOINT_EVERY, restart_frames: int = WAL_RESTART_FRAMES
    ) -> None:
        """Copy the write-ahead log into the database on a thread of its own, every `every`
        commits, instead of in whichever commit fills the log: that commit (a webhook's
        answer) would wait for it, about 10 ms where a commit takes 1."""
        if self.path is None or self.checkpointer is not None:
            return
        with self._locked():
            self.checkpointer = Checkpointer(self.path, every, restart_frames)
            self._conn.execute("PRAGMA wal_autocheckpoint=0")

    def migrate(self) -> None:
        """Bring the schema up to date. Another process opening the database at the same
        moment (the service and a CLI command) may be migrating it: what it applied first is
        taken as done, and the rest applied after it."""
        with self._locked():
            self._refuse_newer()
            pending = migrations.pending(self.db)
            if self.path is not None and pending:
                self._refuse_under_a_service([m.name for m in pending])
            # An upgrade (not a new database) is told, so that the user sees it ran and how
            # long it took; a large events table takes seconds.
            upgrading = bool(pending) and bool(migrations.applied(self.db))
            started = time.monotonic()
            _when_free(lambda: migrations.apply(self.db))
            if upgrading:
                log.info(
                    "database upgraded",
                    extra={
                        "steps": ",".join(m.name for m in pending),
                        "seconds": round(time.monotonic() - started, 2),
                    },
                )

    def _refuse_under_a_service(self, pending: Sequence[str]) -> None:
        """A database a service of an earlier release runs on is not upgraded under it (a
        command of this release beside it, a second container's newer image): that service
        would go on writing what this release then misreads. One of this release would have
        upgraded it as it started."""
        assert self.path is not None
        holder = servelock.held_elsewhere(self.path)
        if holder is not None:
            raise StoreError(
                f"storage.path {self.path}: a service of an earlier watchbridge is running on "
                f"this database{servelock.described(holder)}, and this one would upgrade the "
                f"database under it ({', '.join(pending)}): stop that service and start this "
                "version's (it upgrades the database as it starts), then run this again"
            )

    def _refuse_newer(self) -> None:
        """A database a newer release made is left alone: this one would misread it."""
        known = {m.name for m in migrations.pending(sqlite_utils.Database(memory=True))}
        unknown = [m.name for m in migrations.applied(self.db) if m.name not in known]
        if unknown:
            raise NewerDatabase(
                f"storage.path {self.path}: the database was made by a newer watchbridge "
                f"({', '.join(unknown)}); run that version again, or restore a backup "
                "taken before the upgrade"
            )

    def behind(self) -> bool:
        """Whether the schema is older than this release's (opened with `upgrade=False`);
        raises StoreError for one a newer release made."""
        with self._locked():
            self._refuse_newer()
            return bool(migrations.pending(self.db))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._overview_reads.close()
        self._mirror_reads.close()
        self._collection_reads.close()
        with self._locked():
            if self.checkpointer is not None:
                self.checkpointer.close()
                self.checkpointer = None
            self._conn.close()  # the last connection to close checkpoints what is left

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locking) transaction; commits on success, rolls back on error.
        One begun inside another of the same thread is part of the outer one."""
        with self._locked():
            if self._conn.in_transaction:
                yield self._conn
                return
            changes = self._conn.total_changes
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    if self._files is not None:
                        self._files.check()
                except BaseException:
                    self._rollback()
                    raise
                self._commit()
            except sqlite3.DatabaseError as exc:
                if storage_fault(exc):
                    self.write_error = str(exc)
                raise
            # Only a transaction that wrote something proves the store takes writes again.
            if self._conn.total_changes != changes:
                self.write_error = None
            if self.checkpointer is not None:
                self.checkpointer.committed(self._conn)

    def _rollback(self) -> None:
        """ROLLBACK, unless SQLite rolled the transaction back by itself (an I/O error, a full
        disk outside a statement journal): a ROLLBACK then fails, and would hide why."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _commit(self) -> None:
        """COMMIT; one that fails may leave the transaction open (SQLite says so of a full
        disk or an I/O error): it is rolled back, or every later transaction would join it
        as a nested one and nothing written after would ever reach the disk."""
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._locked():
            return list(self._conn.execute(sql, params))

    def _overview(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A read of the overview (status, /metrics) on a connection of its own: counting a
        backlog of 100,000 rows takes a tenth of a second, which would hold up every webhook
        behind the store's lock (in WAL, readers and the writer do not wait for each other)."""
        if not self._reads_beside_the_lock():
            return self._query(sql, params)
        with self._overview_reads.connection() as reader:
            return list(reader.execute(sql, params))

    # ------------------------------------------------------------------ health

    def check_writable(self, now: float) -> None:
        """Raise StoreError unless the store takes writes: the write lock can be taken now,
        and after a write failed, a real write works again."""
        try:
            with self.transaction() as conn:
                if self.write_error is not None:
                    conn.execute(_WRITE_CHECK, (now,))
        except sqlite3.Error as exc:
            raise StoreError(f"database not writable ({exc})") from exc

    def try_write(self) -> None:
        """Raise StoreError unless a write would be taken now: the write lock within
        storage.busy_timeout and a row written, then rolled back, so nothing lasts (another
        process's look, `watchbridge status`; a full disk shows only at a commit)."""
        with self._locked():
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.execute(_WRITE_CHECK, (0.0,))
                finally:
                    if self._conn.in_transaction:  # SQLite may have rolled it back itself
                        self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise StoreError(f"database not writable ({exc})") from exc

    # ------------------------------------------------------------------ events + outbox

    def record_event(
        self,
        *,
        source: str,
        kind: str,
        payload: dict[str, Any],
        now: float,
        rows: Sequence[NewOutboxRow] = (),
        profile: str | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Store one ingested event and its outbox rows in one transaction; returns the event id.

        A repeated `idempotency_key` returns the first event's id and adds nothing.
        """
        with self.transaction() as conn:
            if idempotency_key is not None:
                found = conn.execute(
                    "SELECT id FROM events WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if found:
                    return int(found["id"])
            cursor = conn.execute(
                "INSERT INTO events (received_at, source, kind, profile, idempotency_key, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (now, source, kind, profile, idempotency_key, json.dumps(payload)),
            )
            event_id = int(cursor.lastrowid or 0)
            self._insert_outbox(conn, rows, now, event_id)
            return event_id

    def ingest(self, job: IngestJob) -> int:
        """Record one webhook event (see `ingest_many`); returns the outbox rows added."""
        result = self.ingest_many([job])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def ingest_many(self, jobs: Sequence[IngestJob]) -> list[int | Exception]:
        """Record webhook events in one transaction (one disk sync for the whole group).

        For each: read its playback session, let `decide` (pure) say what follows, write the
        new session, the event and its outbox rows. A job that fails is rolled back alone
        (savepoint) and its exception returned in its place. Newer playback-state rows
        supersede older, still-pending start/pause rows of the same item.
        """
        with self.transaction() as conn:
            return self.ingest_jobs(conn, jobs)

    def ingest_jobs(
        self, conn: sqlite3.Connection, jobs: Sequence[IngestJob]
    ) -> list[int | Exception]:
        """`ingest_many`'s work inside a transaction the caller holds: each job a webhook."""
        return self.ingest_webhooks(conn, [(job,) for job in jobs])

    def ingest_webhooks(
        self, conn: sqlite3.Connection, webhooks: Sequence[Sequence[IngestJob]]
    ) -> list[int | Exception]:
        """Each webhook's events, all or none, inside a transaction the caller holds (see
        IngestWriter): the outbox rows each added, or why it recorded nothing."""
        results: list[int | Exception] = []
        for jobs in webhooks:
            conn.execute("SAVEPOINT job")
            try:
                added = 0
                for job in jobs:
                    added += self._ingest_one(conn, job)
                results.append(added)
            except Exception as exc:
                if not conn.in_transaction:
                    # SQLite rolled back the whole transaction (an I/O error, a full disk):
                    # the webhooks recorded before this one are gone too, so all fail, and
                    # with this reason (a ROLLBACK TO would fail with "no such savepoint").
                    raise
                conn.execute("ROLLBACK TO SAVEPOINT job")
                results.append(exc)
                if isinstance(exc, sqlite3.DatabaseError) and storage_fault(exc):
                    self.write_error = str(exc)  # a damaged page fails each webhook alone
            conn.execute("RELEASE SAVEPOINT job")
        return results

    def _ingest_one(self, conn: sqlite3.Connection, job: IngestJob) -> int:
        earlier = job.earlier_keys
        current = _session(conn, job.session_key, earlier.get(job.session_key))
        marks = (
            _session(conn, job.completion_key, earlier.get(job.completion_key))
            if job.completion_key
            else None
        )
        session, rows = job.decide(current, marks)
        if session is not None and session != current:
            _save_session(conn, session, job.profile, job.marks)
        if job.completion_key and session is not None:
            # The marks session read above: the session saved since is another (its own key).
            _record_in_marks(conn, job.completion_key, job.profile, current, session, marks)
        superseding = [row for row in rows if row.supersedes]
        if job.report is not None:
            rows = self._pair_reports(conn, job, job.report, rows)
        raw = _json_text(job.document) if rows and job.document is not None else None
        cursor = conn.execute(
            "INSERT INTO events (received_at, source, kind, profile, payload, raw)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (job.now, job.source, job.kind, job.profile, _json_text(job.payload), raw),
        )
        if job.learnt is not None:
            _remember_account(conn, job.learnt, job.now)
        if job.tautulli_reports is not None:
            _count_tautulli_reports(conn, job.tautulli_reports, job.now)
        if job.server_named is not None:
            _name_webhook_server(conn, job.source, *job.server_named, job.now)
        # A play or live state left out still ends its sender's pending live states.
        for row in superseding:
            conn.execute(
                "UPDATE outbox SET status = 'done', last_error = 'superseded',"
                " updated_at = ? WHERE ordering_key = ? AND status = 'pending'"
                f" AND action IN ({', '.join('?' for _ in row.supersedes)})",
                (job.now, row.ordering_key, *row.supersedes),
            )
        # Webhook payloads hold only finite numbers (progress is clamped), so the fast
        # encoder writes the same JSON data as json.dumps.
        return self._insert_outbox(conn, rows, job.now, int(cursor.lastrowid or 0), _json_text)

    def _pair_reports(
        self,
        conn: sqlite3.Connection,
        job: IngestJob,
        report: Report,
        rows: Sequence[NewOutboxRow],
    ) -> Sequence[NewOutboxRow]:
        """`rows` as the other sender's report of the viewing leaves them (the play of a
        viewing it reported counted once, the credits after it not shown as watching).
        Tautulli's reports are always noted; Plex's webhook notes (and looks up) its own only
        for servers Tautulli reported to the profile: most households have no Tautulli, and
        their Plex webhooks pay a lookup in memory."""
        named = self._tautulli_servers
        if named is None:
            found = conn.execute("SELECT profile, server, naming, seen_at FROM tautulli_servers")
            named = self._tautulli_servers = {(p, s): (n, at) for p, s, n, at in found}
        where = (report.profile, report.server)
        look_back: Naming | None = None
        if report.source == "plex":
            known = named.get(where)
            naming = None if known is None else known[0]
        elif (naming := players_named(report)) is not None:
            noted, seen_at = named.get(where, (None, -math.inf))
            if noted != naming:
                look_back = naming  # new, or its template names players otherwise now
            if look_back is not None or job.now - seen_at >= TAUTULLI_SEEN_NOTED_EVERY:
                # Written with the event: the next start knows it. In memory at once (a
                # rollback leaves it there: Plex's webhook then notes its reports needlessly
                # until then).
                _remember_tautulli_server(conn, report, naming, job.now)
                named[where] = (naming, job.now)
        keys = None if naming is None else report_keys(report, naming)
        if keys is None:
            return rows
        if any(row.action == "play" for row in rows):
            return _one_play_of_two_reports(conn, job, keys, rows, look_back)
        if report.source != "plex":
            return _live_states_of_its_own_viewing(job, rows, lambda: _session(conn, keys[1]))
        taken = _session(conn, keys[1])  # read once, for both looks
        if (after := begins_another_viewing(taken, job.kind, job.progress)) is not None:
            _save_session(conn, after, job.profile)
            return rows
        return _live_states_of_its_own_viewing(job, rows, lambda: taken)

    def prune(
        self,
        now: float,
        keep_done: float,
        keep_sessions: float,
        keep_runs: float = KEEP_RUNS,
        keep_marks: float = KEEP_MARKS,
        keep_carried: Mapping[tuple[str, str], float] | None = None,
        keep_tautulli_servers: float = TAUTULLI_SERVER_LAPSES,
        keep_unlisted: float = UNLISTED_KEPT,
        keep_defaulted: float = DEFAULTED_KEPT,
        keep_for_plex: float = FOR_PLEX_KEPT,
    ) -> dict[str, int]:
        """Forget delivered rows and their events after `keep_done` seconds, idle playback
        sessions after `keep_sessions` (items' marks sessions, which say an item was watched,
        after `keep_marks`), finished sync runs after `keep_runs` (each link's last one stays
        for `status`, and its last one that went through for `last_successes`: a link failing
        for longer still says since when), expired id lookups, and the rows of the mirror
        collections `keep_carried` names ((service, collection) -> seconds) a start over
        carried (`start_over`) once they waited that long since, and the entries of rows ended
        (`ROW_ENTRIES`) or gone (`ROW_KEPT_ENTRIES`). Pending and dead rows are never
        pruned, nor a link's delivered add of a play its baseline still lists as expected:
        that row is how the next full read tells a play removed there from one on its way,
        nor a Serializd rating settled before it was looked for (UNFOUND) until its newer
        rating's delivery looks (that newer one may wait longer than a week). A Plex server
        Tautulli has not reported to a profile for `keep_tautulli_servers` is forgotten: Plex's
        webhook stops noting its reports for Tautulli's to pair with. Of the servers whose
        last webhook is kept after their events went, each source's SERVERS_KEPT seen most
        recently stay. An account no profile lists goes `keep_unlisted` after its last
        webhook (unlisted.py), one the default profile takes for want of an entry
        `keep_defaulted` after it (defaulted.py)."""
        # Read before the write lock is taken: only rows delivered a week ago are looked at.
        kept = self._expected_link_adds(now - keep_done)
        with self.transaction() as conn:
            done = conn.execute(
                "DELETE FROM outbox WHERE status = 'done' AND updated_at < ?"
                " AND last_error IS NOT ? AND id NOT IN (SELECT value FROM json_each(?))",
                (now - keep_done, UNFOUND, json.dumps(kept)),
            ).rowcount
            # What the events about to go tell of their senders stays (lastwebhooks.py).
            conn.execute(
                "INSERT INTO webhooks_last_seen (source, server, at)"
                f" SELECT source, {_EVENT_SERVER}, MAX(received_at) FROM events"
                " WHERE received_at < ? AND source <> ? GROUP BY 1, 2"
                " ON CONFLICT (source, server) DO UPDATE SET at = MAX(at, excluded.at)",
                (now - keep_done, CAUGHT_UP),
            )
            webhook_servers = conn.execute(
                "DELETE FROM webhooks_last_seen WHERE (source, server) IN (SELECT source, server"
                f" FROM ({_LATEST_SERVERS} FROM webhooks_last_seen GROUP BY 1, 2) WHERE n > ?)",
                (SERVERS_KEPT,),
            ).rowcount
            # A server's name goes with its last webhook's time (named within the week: its
            # events are still kept).
            conn.execute(
                "DELETE FROM webhook_server_names WHERE at < ? AND (source, server) NOT IN"
                " (SELECT source, server FROM webhooks_last_seen)",
                (now - keep_done,),
            )
            events = conn.execute(
                "DELETE FROM events WHERE received_at < ? AND id NOT IN"
                " (SELECT event_id FROM outbox WHERE event_id IS NOT NULL)",
                (now - keep_done,),
            ).rowcount
            sessions = conn.execute(
                "DELETE FROM playback_sessions WHERE updated_at < ?"
                " AND (lasting = 0 OR updated_at < ?)",
                (now - keep_sessions, now - keep_marks),
            ).rowcount
            runs = conn.execute(
                "DELETE FROM sync_runs WHERE finished_at < ? AND id NOT IN"
                " (SELECT MAX(id) FROM sync_runs GROUP BY link"
                f" UNION SELECT MAX(id) FROM sync_runs WHERE {_WENT_THROUGH} GROUP BY link)",
                (now - keep_runs,),
            ).rowcount
            lookups = conn.execute("DELETE FROM id_cache WHERE expires_at < ?", (now,)).rowcount
            self._forget_ended_rows(conn)
            carried = 0
            for (service, collection), keep in (keep_carried or {}).items():
                gone = conn.execute(
                    "DELETE FROM mirror WHERE service = ? AND collection = ? AND updated_at < ?",
                    (service, collection, now - keep),
                ).rowcount
                if gone:
                    _mirrors_changed(conn, "service = ? AND collection = ?", (service, collection))
                carried += gone
            unlisted = conn.execute(
                "DELETE FROM unlisted_accounts WHERE last_at < ?", (now - keep_unlisted,)
            ).rowcount
            defaulted = conn.execute(
                "DELETE FROM defaulted_accounts WHERE last_at < ?", (now - keep_defaulted,)
            ).rowcount
            for_plex = conn.execute(
                "DELETE FROM tautulli_for_plex WHERE state = ? AND received_at < ?",
                (FOR_PLEX_TAKEN, now - keep_for_plex),
            ).rowcount
            lapsed = conn.execute(
                "DELETE FROM tautulli_servers WHERE seen_at < ?", (now - keep_tautulli_servers,)
            ).rowcount
            if lapsed:
                # Read again at the next webhook (under this lock, so none reads it meanwhile;
                # a rollback of this leaves the table as it was, and that is what is read).
                self._tautulli_servers = None
        return {
            "outbox": done,
            "events": events,
            "sessions": sessions,
            "sync_runs": runs,
            "id_cache": lookups,
            "carried": carried,
            "tautulli_servers": lapsed,
            "webhook_servers": webhook_servers,
            "unlisted_accounts": unlisted,
            "defaulted_accounts": defaulted,
            "tautulli_for_plex": for_plex,
        }

    def reclaim_space(
        self,
        min_free_pages: int = RECLAIM_MIN_PAGES,
        disk_free: Callable[[Path], int] = lambda folder: shutil.disk_usage(folder).free,
    ) -> int:
        """Give the disk back the pages pruning freed, once they are many (at least
        `min_free_pages` and half the file: after a first backfill or an outage's backlog);
        returns how many. The file is rewritten (VACUUM), which holds writes up for as long
        as copying what is left takes; SQLite's incremental vacuum would instead cost every
        webhook's commit ~10 % (its pointer map), for what happens a few times a year. The
        rewrite needs room for two copies of what is left (`disk_free`: bytes free in a
        folder): on a fuller disk it would fail, filling the disk for other writes meanwhile."""
        with self._locked():
            free = int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])
            pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
            if free < min_free_pages or free * 2 < pages:
                return 0
            page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
            needed = 2 * (pages - free) * page_size + RECLAIM_DISK_MARGIN
            room = disk_free(self.path.parent) if self.path is not None else needed
            if room < needed:
                log.warning(
                    "the database keeps its free space: the disk lacks room to rewrite it",
                    extra={"needed_mb": needed // 2**20, "free_mb": room // 2**20},
                )
                return 0
            # A file a release of 2026-11-25 switched to incremental vacuum drops its pointer
            # map in the rewrite (the setting applies to this connection's VACUUM).
            self._conn.execute("PRAGMA auto_vacuum=NONE")
            self._conn.execute("VACUUM")
            self._give_back_file()
            return free

    def _give_back_file(self) -> None:
        """Copy the log into the file, which shrinks it, without waiting for readers (another
        process's `status` or `backup`): what they hold back, the checkpointer copies later."""
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _expected_link_adds(self, before: float) -> list[int]:
        """Ids of the link adds delivered before `before` whose plays their link's baseline
        still expects (`reconcile.expect`: mirror `link:NAME:plays`, of any generation,
        records `expect:...` with the item and time). One pass over each table, not one per row."""
        expected: dict[tuple[str, str, str, float], list[str]] = {}
        for row in self._query(
            "SELECT service, profile, collection, data FROM mirror WHERE item_key >= 'expect:'"
            " AND item_key < 'expect;'"
            " AND (collection LIKE 'link:%:plays' OR collection LIKE 'link:%:plays@%')"
        ):
            data = json.loads(row["data"])
            # `link:NAME:plays`, or of a generation: `link:NAME:plays@...` (sync.GENERATIONS)
            collection = str(row["collection"])
            link = collection[len("link:") : collection.rindex(":plays")]
            where = (row["service"], row["profile"], link, data.get("at"))
            expected.setdefault(where, []).append(str(data.get("item")))
        if not expected:
            return []
        kept = []
        for row in self._query(
            "SELECT id, target, profile, payload, idempotency_key FROM outbox"
            " WHERE status = 'done' AND updated_at < ? AND instr(idempotency_key, ?) > 0",
            (before, ":sync:add_play:"),
        ):
            payload = json.loads(row["payload"])
            where = (row["target"], row["profile"], payload.get("link"), payload.get("at"))
            start = f"{row['profile']}:{row['target']}:sync:add_play:"
            key = row["idempotency_key"]
            if any(key.startswith(f"{start}{item}:") for item in expected.get(where, ())):
                kept.append(int(row["id"]))
        return kept

    def waiting_behind(self, unmatched_only: bool = False) -> int:
        """Pending rows of no reason of their own that wait for an earlier unfinished row of
        their item (one item's rows to one target go out in order, see `claim`): counted apart,
        so that the queue adds up to what `unmatched` and the held rows show. With
        `unmatched_only`, those whose earlier row waits for ids."""
        sql = (
            "SELECT COUNT(*) AS n FROM outbox o WHERE o.status = 'pending'"
            f" AND o.last_error IS NULL AND o.id != {_HEAD_OF_ITEM}"
        )
        if unmatched_only:
            # Unqualified, _UNMATCHED's columns are the head row's (`first`).
            sql += f" AND (SELECT {_UNMATCHED} FROM outbox first WHERE first.id = {_HEAD_OF_ITEM})"
        return int(self._overview(sql)[0]["n"])

    def unmatched_count(self) -> int:
        """Rows waiting for ids a target can use (read from their own index)."""
        rows = self._overview(
            f"SELECT COUNT(*) AS n FROM outbox WHERE status = 'pending' AND {_UNMATCHED}"
        )
        return int(rows[0]["n"])

    def enqueue(self, rows: Sequence[NewOutboxRow], now: float) -> int:
        """Add outbox rows not tied to an event (reconcile plans); returns how many were new."""
        with self.transaction() as conn:
            return self._insert_outbox(conn, rows, now, None)

    @staticmethod
    def _insert_outbox(
        conn: sqlite3.Connection,
        rows: Sequence[NewOutboxRow],
        now: float,
        event_id: int | None,
        encode: Callable[[dict[str, Any]], str] = json.dumps,
    ) -> int:
        added = 0
        for row in rows:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO outbox (event_id, target, profile, action, payload,"
                " ordering_key, idempotency_key, next_attempt_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    row.target,
                    row.profile,
                    row.action,
                    encode(row.payload),
                    row.ordering_key,
                    row.idempotency_key,
                    row.not_before if row.not_before is not None else now,
                    now,
                    now,
                ),
            )
            added += cursor.rowcount
            if cursor.rowcount and row.action in RATING_ACTIONS:
                conn.execute(
                    f"{_SUPERSEDE_DEAD_RATINGS} AND ordering_key = ?", (now, row.ordering_key)
                )
                conn.execute(_SUPERSEDE_WAITING_RATINGS, (now, row.ordering_key, cursor.lastrowid))
                if row.action == "remove_rating":
                    superseding = (now, row.ordering_key, cursor.lastrowid)
                    conn.execute(_SUPERSEDE_MARKED_BY_REMOVAL, superseding)
        return added

    def claim(
        self, worker: str, now: float, limit: int = 10, targets: Sequence[str] | None = None
    ) -> list[OutboxItem]:
        """Atomically claim due rows for `worker`, webhooks' first: a live scrobble does not
        wait behind a link's backlog (a first sync's thousands of plays).

        Only the oldest unfinished row of each ordering key is claimable, so per
        (profile, target, item) order holds: a `stop` never overtakes its `start`. Nor is a
        row of a target and profile another worker is delivering to (`CLAIM_ALIVE`). A row
        crashes found in flight CRASHES_ALONE times goes alone, in its turn: a batch ends
        before it.
        """
        return self.claim_turn(worker, now, limit, targets, alone=True).items

    def claim_turn(
        self,
        worker: str,
        now: float,
        limit: int,
        targets: Sequence[str] | None,
        *,
        alone: bool,
    ) -> Claimed:
        """`claim`, taking a row that goes alone when it is next only if `alone` says so (its
        worker has nothing else in flight: deliver.solo); else the claim ends before it, and
        says it waits (`Claimed.alone_next`)."""
        target_filter = ""
        params: list[Any] = [now]
        if targets is not None:
            if not targets:
                return Claimed([], False)
            target_filter = f"AND o.target IN ({', '.join('?' for _ in targets)})"
            params += list(targets)
        params += [worker, now - CLAIM_ALIVE]
        rows: list[sqlite3.Row] = []
        alone_next = False
        with self.transaction() as conn:
            for only in ("AND o.event_id IS NOT NULL", ""):
                if len(rows) >= limit:
                    break
                due = conn.execute(
                    f"""SELECT o.id, o.crashes FROM outbox o
                       WHERE o.status = 'pending' AND o.next_attempt_at <= ? {target_filter}
                         {only} AND o.id = {_HEAD_OF_ITEM} AND NOT {_ANOTHER_DELIVERING}
                       ORDER BY o.next_attempt_at, o.id
                       LIMIT ?""",
                    (*params, limit - len(rows)),
                ).fetchall()
                batch = _batch(due, alone=alone and not rows)
                if batch:
                    rows += conn.execute(
                        "UPDATE outbox SET status = 'inflight', claimed_by = ?, updated_at = ?"
                        " WHERE id IN (SELECT value FROM json_each(?)) RETURNING *",
                        (worker, now, json.dumps(batch)),
                    ).fetchall()
                if any(r["crashes"] >= CRASHES_ALONE for r in due):
                    # One goes alone: taken now, or first at the next claim.
                    alone_next = not any(r["crashes"] >= CRASHES_ALONE for r in rows)
                    break
            pairs = {(r["target"], r["profile"]) for r in rows}
            marks = _signed_in_marks(conn, pairs) if pairs else {}
        items = sorted((OutboxItem.from_row(r) for r in rows), key=lambda i: i.id)
        return Claimed(items, alone_next, marks)

    def complete(self, item_id: int, now: float) -> None:
        self.settle(now, [Settlement(item_id, "done")])

    def retry_later(self, item_id: int, now: float, next_attempt_at: float, error: str) -> None:
        self.settle(now, [Settlement(item_id, "pending", next_attempt_at, error)])

    def mark_dead(self, item_id: int, now: float, error: str) -> None:
        self.settle(now, [Settlement(item_id, "dead", None, error)])

    def hold(self, item_id: int, now: float, next_attempt_at: float, reason: str) -> None:
        """Back to pending without spending an attempt: the target, not the item, failed."""
        self.settle(now, [Settlement(item_id, "pending", next_attempt_at, reason, False)])

    def settle(
        self, now: float, settlements: Sequence[Settlement], claimed_by: str | None = None
    ) -> set[int]:
        """Record the outcomes of one delivery batch in one transaction; returns the rows
        that died as superseded ratings (no dead letters: a newer rating follows them).

        With `claimed_by`, only rows that worker still holds change (checked again here, in
        the write transaction): a worker stalled past its lease lost them to another."""
        with self.transaction() as conn:
            if claimed_by is not None:
                settlements = self._still_held(conn, settlements, claimed_by)
            conn.executemany(
                """UPDATE outbox SET status = :status, attempts = attempts + :spend_attempt,
                   updated_at = :now, next_attempt_at = COALESCE(:next_at, next_attempt_at),
                   last_error = :error, claimed_by = NULL, waits_for_sign_in = :sign_in,
                   waits_for_server = :server, held = :held,
                   failing_since = CASE WHEN :failing THEN COALESCE(failing_since, :now)
                                   WHEN :failing_over THEN NULL ELSE failing_since END,
                   once_more = CASE WHEN :probe_end IS NOT NULL THEN :probe_end
                                    WHEN once_more = :probe THEN :spent_mark
                                    WHEN :dies_once_more AND once_more IS NULL THEN :due
                                    ELSE once_more END,
                   told_at = CASE WHEN :probe_end = :spent_mark THEN NULL ELSE told_at END
                   WHERE id = :id""",
                [
                    {
                        "status": s.status,
                        "spend_attempt": int(s.spend_attempt),
                        "now": now,
                        "next_at": s.next_attempt_at,
                        # A service's words may quote a password or a token: kept masked.
                        "error": None if s.error is None else masked_as_logged(s.error),
                        "sign_in": int(s.waits_for_sign_in),
                        "server": s.waits_for_server if s.waits_for_sign_in else None,
                        "held": s.held if s.status == "pending" else None,
                        "failing": s.spend_attempt and s.status != "done",
                        # Held (the target, not the row, failed): its failing is over.
                        "failing_over": not s.spend_attempt
                        and s.status == "pending"
                        and not s.handed_back,
                        "probe_end": s.probe_end,
                        "probe": ONCE_MORE_PROBE,
                        "spent_mark": ONCE_MORE_SPENT,
                        "dies_once_more": s.once_more and s.status == "dead",
                        "due": ONCE_MORE_DUE,
                        "id": s.item_id,
                    }
                    for s in settlements
                ],
            )
            dead = [s.item_id for s in settlements if s.status == "dead"]
            if not dead:
                return set()
            marks = ", ".join("?" for _ in dead)
            rows = conn.execute(
                f"{_SUPERSEDE_DEAD_RATINGS} AND id IN ({marks}) RETURNING id", (now, *dead)
            ).fetchall()
            return {int(row["id"]) for row in rows}

    @staticmethod
    def _still_held(
        conn: sqlite3.Connection, settlements: Sequence[Settlement], claimed_by: str
    ) -> list[Settlement]:
        ids = json.dumps([s.item_id for s in settlements])
        held = {
            int(r["id"])
            for r in conn.execute(
                "SELECT id FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
                f" AND {_HELD_BY}",
                (ids, claimed_by),
            )
        }
        return [s for s in settlements if s.item_id in held]

    def renew_claims(self, worker: str, now: float) -> None:
        """Renew the lease of every row `worker` has in flight (it is still delivering)."""
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE outbox SET updated_at = ? WHERE {_HELD_BY}",
                (now, worker),
            )

    def fence(self, worker: str, item_ids: Sequence[int], now: float) -> set[int]:
        """Which of these rows `worker` still holds, their lease renewed from `now` in the
        same statement: once it answers, no other worker can take them back for CLAIM_LEASE
        (`release_stale_claims` and `claim` wait for this write, or it for theirs). Checked
        just before a send (deliver.fence): a worker suspended past its lease lost its rows
        to another, which may have delivered them."""
        with self.transaction() as conn:
            rows = conn.execute(
                "UPDATE outbox SET updated_at = ?"
                f" WHERE id IN (SELECT value FROM json_each(?)) AND {_HELD_BY} RETURNING id",
                (now, json.dumps(list(item_ids)), worker),
            ).fetchall()
        return {int(r["id"]) for r in rows}

    def claimed_by(self, worker: str, item_ids: Sequence[int]) -> set[int]:
        """Which of these rows `worker` still holds (in flight under its claim)."""
        return self._rows_among(item_ids, _HELD_BY, (worker,))

    def pending_among(self, item_ids: Sequence[int]) -> set[int]:
        """Which of these rows are still waiting to go out (pending or being delivered)."""
        return self._rows_among(item_ids, "status IN ('pending', 'inflight')")

    def marked(self, item_ids: Sequence[int]) -> set[int]:
        """Which of these rows are marked as possibly sent (`last_error` starts UNKNOWN_OUTCOME)."""
        return self._rows_among(item_ids, _MARKED)

    def _rows_among(
        self, item_ids: Sequence[int], condition: str, params: Sequence[Any] = ()
    ) -> set[int]:
        """Which of these outbox rows meet `condition` (500 ids per query)."""
        found: set[int] = set()
        for start in range(0, len(item_ids), 500):
            chunk = list(item_ids[start : start + 500])
            rows = self._query(
                f"SELECT id FROM outbox WHERE id IN ({', '.join('?' for _ in chunk)})"
                f" AND {condition}",
                [*chunk, *params],
            )
            found |= {int(r["id"]) for r in rows}
        return found

    def note(self, items: Sequence[OutboxItem], message: str, now: float) -> None:
        """Write down what is about to happen to these rows, so a crash leaves a trace.

        Synced to disk whatever storage.durability says: lost in a power cut after a send
        that landed, the next try would send again instead of looking (a second play). Only
        rows still held by the claim each was read by (`OutboxItem.claimed_by`): one a
        worker lost while suspended may be settled by another since, or be in flight under
        another's claim, its mark of a send under way not to be overwritten (deliver.fence)."""
        with self._synchronous("FULL"), self.transaction() as conn:
            conn.executemany(
                f"UPDATE outbox SET last_error = ?, updated_at = ? WHERE id = ? AND {_HELD_BY}",
                [(message, now, item.id, item.claimed_by) for item in items],
            )

    def note_resolved(
        self, resolved: Sequence[tuple[OutboxItem, Mapping[str, Any]]], message: str, now: float
    ) -> None:
        """`note`, and in the same write add to each row's payload what this attempt resolved
        (`resolved`: (row, keys) pairs), so that every later try of the row sends the same
        thing, however a crash or a lost answer left it. Synced to disk, and only rows still
        held by their claim, as `note`."""
        with self._synchronous("FULL"), self.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET payload = json_patch(payload, ?), last_error = ?,"
                f" updated_at = ? WHERE id = ? AND {_HELD_BY}",
                [
                    (_json_text(added), message, now, item.id, item.claimed_by)
                    for item, added in resolved
                ],
            )

    def bring_forward(self, step: float, now: float) -> int:
        """Move the next tries of waiting rows due after `now` `step` seconds earlier (not
        before `now`): the clock was set back that much. How many moved (in flight too: a
        claim taken back goes out as due).

        Claims stamped ahead of `now` move back as much: a worker killed while the clock ran
        fast would otherwise hold its target and profile up (CLAIM_ALIVE) and keep its rows
        from being taken back (CLAIM_LEASE) for as long as the step, not minutes. A worker
        still delivering stamps them again as it renews them."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE outbox SET next_attempt_at = MAX(?, next_attempt_at - ?)"
                " WHERE status IN ('pending', 'inflight') AND next_attempt_at > ?",
                (now, step, now),
            )
            conn.execute(
                "UPDATE outbox SET updated_at = updated_at - ?"
                " WHERE status = 'inflight' AND updated_at > ?",
                (step, now),
            )
            return cursor.rowcount

    def restamp(self, step: Step) -> int:
        """Move the times the clock stamped in `step.frame` by the step (clocksteps): the
        plays' `at` (then of the frame the step began), of rows failing since within that
        frame their failing_since (delivery.max_age counts from it), the events' receipt, and
        of a forward step the other times stamped within it (`_restamp_forward`); none
        stamped by `step.right_until` (an outside clock agreed then: they were right). How
        many plays moved."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE outbox SET payload = json_set(payload,"
                " '$.at', CAST(json_extract(payload, '$.at') AS REAL) + ?, '$.frame', ?)"
                " WHERE status IN ('pending', 'inflight')"
                " AND json_extract(payload, '$.frame') = ?"
                " AND CAST(json_extract(payload, '$.at') AS REAL) > ?",
                (step.seconds, step.into, step.frame, step.right_until),
            )
            conn.execute(
                "UPDATE outbox SET failing_since = failing_since + ?"
                " WHERE status IN ('pending', 'inflight') AND failing_since BETWEEN ? AND ?"
                " AND failing_since > ?",
                (step.seconds, step.began, step.last, step.right_until),
            )
            # When each source last sent a webhook is read from its events at start
            # (`last_webhooks`): the times a stepped clock gave them move with the plays'.
            conn.execute(
                "UPDATE events SET received_at = received_at + ?"
                " WHERE received_at BETWEEN ? AND ? AND received_at > ?",
                (step.seconds, step.began, max(step.last, step.seen), step.right_until),
            )
            if step.seconds > 0:
                _restamp_forward(conn, step)
            return cursor.rowcount

    def redate_ahead(self, now: float, sent_at: Callable[[float, float], float]) -> int:
        """Date the pending rows whose `at` is ahead of `now` as `sent_at(at, now)` says
        (clocksteps.sent_at), once, so every try of a row sends one time. A link's rows keep
        the time their source service holds (its copy must match it). How many moved."""
        with self.transaction() as conn:
            ahead = conn.execute(
                "SELECT id, CAST(json_extract(payload, '$.at') AS REAL) AS at FROM outbox"
                " WHERE status = 'pending' AND json_extract(payload, '$.link') IS NULL"
                " AND CAST(json_extract(payload, '$.at') AS REAL) > ?",
                (now,),
            ).fetchall()
            dated = ((sent_at(row["at"], now), row) for row in ahead)
            moved = [(at, row["id"]) for at, row in dated if at != row["at"]]
            conn.executemany(
                "UPDATE outbox SET payload = json_set(payload, '$.at', ?) WHERE id = ?", moved
            )
            return len(moved)

    def due_after_config_change(self, fingerprint: str, now: float) -> int | None:
        """When `fingerprint` (`Config.delivery_fingerprint`) differs from the last start's,
        make the pending rows a config can unblock due now and keep the new one: those held
        for a sign-in or key (a password Serializd refused, a media server's API key) and the
        unmatched (the server or service that knows their ids may just have been set). A rate
        limit's, an outage's or a backoff's waits stay. An unmatched row gets back the attempt
        this extra try spends. How many rows moved; None when the config is as it was, or
        none was kept yet (the first start, or the first after an upgrade: nothing to compare).
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT value FROM settings WHERE name = 'delivery_config'"
            ).fetchone()
            if row is not None and row["value"] == fingerprint:
                return None
            conn.execute(
                "INSERT OR REPLACE INTO settings (name, value, updated_at)"
                " VALUES ('delivery_config', ?, ?)",
                (fingerprint, now),
            )
            if row is None:
                return None
            cursor = conn.execute(
                f"UPDATE outbox SET next_attempt_at = ?,"
                f" attempts = CASE WHEN {_UNMATCHED} THEN MAX(attempts - 1, 0) ELSE attempts END"
                f" WHERE status = 'pending' AND next_attempt_at > ?"
                f" AND (waits_for_sign_in = 1 OR {_UNMATCHED})",
                (now, now),
            )
            return cursor.rowcount

    def resume_after_sign_in(self, target: str, profile: str, now: float) -> int:
        """`profile` was just signed in to `target` again: count the sign-in (SIGNED_IN_CURSOR,
        which a service running beside this process looks at) and lift its sign-in holds
        (`lift_sign_in_holds`), in one transaction. How many rows were lifted."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO cursors (service, profile, name, value, updated_at)"
                " VALUES (?, ?, ?, '1', ?) ON CONFLICT (service, profile, name)"
                " DO UPDATE SET value = CAST(value AS INTEGER) + 1,"
                " updated_at = excluded.updated_at",
                (target, profile, SIGNED_IN_CURSOR, now),
            )
            return _lift_sign_in_holds(conn, target, profile, now)

    def lift_sign_in_holds(self, target: str, profile: str, now: float) -> int:
        """Make the rows of `profile` that wait for a sign-in to `target` due now (a new one
        came): those held for the profile's own sign-in there, or whose reason asks for
        `watchbridge auth TARGET`. The others keep their waits (a rate limit's, a lockout's,
        an outage's, a retry's backoff, a media server's own key: `lift_server_holds`).
        They are held no more (`holds`): the next try says whether they still are. How many."""
        with self.transaction() as conn:
            return _lift_sign_in_holds(conn, target, profile, now)

    def signed_in_marks(
        self, pairs: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], str | None]:
        """The sign-in mark (SIGNED_IN_CURSOR) of each (target, profile) of `pairs`."""
        with self._locked():
            return _signed_in_marks(self._conn, pairs)

    def held_for_sign_in(self) -> list[tuple[str, str]]:
        """The (target, profile) pairs with rows held for the profile's own sign-in there (as
        `lift_sign_in_holds` lifts them; found by the held rows' index): not for a media
        server's own key, which no sign-in of a profile gives."""
        rows = self._query(
            f"SELECT DISTINCT target, profile FROM outbox WHERE held = '{HELD_PROFILE}'"
            " AND status = 'pending' AND waits_for_sign_in = 1 AND waits_for_server IS NULL"
            " ORDER BY target, profile"
        )
        return [(row["target"], row["profile"]) for row in rows]

    def next_due(
        self, targets: Sequence[str] | None = None, worker: str | None = None, now: float = 0.0
    ) -> float | None:
        """When the earliest row `claim` could take becomes due (None when nothing is
        pending): a row behind an older unfinished one of its item waits for that one. With
        `worker` (claiming at `now`), a row another worker is delivering beside (`claim`)
        is due BESIDE_LOOK seconds after `now` at the earliest: when that one is done is not
        known, and it may be soon."""
        due = "o.next_attempt_at"
        params: tuple[Any, ...] = ()
        if worker is not None:
            due = f"CASE WHEN {_ANOTHER_DELIVERING} THEN MAX(o.next_attempt_at, ?) ELSE {due} END"
            params = (worker, now - CLAIM_ALIVE, now + BESIDE_LOOK)
        sql = (
            f"SELECT MIN({due}) AS t FROM outbox o WHERE o.status = 'pending'"
            f" AND o.id = {_HEAD_OF_ITEM}"
        )
        if targets is not None:
            sql += f" AND o.target IN ({', '.join('?' for _ in targets)})"
            params += tuple(targets)
        rows = self._query(sql, params)
        return rows[0]["t"] if rows else None

    def release_claims(
        self, now: float, claimed_by: str = "", spend: bool = True, settle: float = 0.0
    ) -> int:
        """Return in-flight rows whose claimer's id starts with `claimed_by` ("" for all) to
        pending: after a crash, or when a worker stops. After a crash (`spend`) each counts
        it, and a row in flight alone spends its attempt on it (`_taken_back`), so a row that
        keeps taking the process down ends as a dead letter; a stop asked for is no fault of
        the rows'. A row whose send may have landed is due `settle` seconds after it was
        sent, as after a lost answer: the write may still be under way at the service (a
        container restarted at once), and the check before the next send would not see it
        yet. One that spent its try is due `settle` seconds from `now`: the rows due before
        it go first (a process that keeps dying of something else blames none twice in a
        row)."""
        where = "o.status = 'inflight' AND substr(COALESCE(o.claimed_by, ''), 1, :length) = :by"
        whose = {"length": len(claimed_by), "by": claimed_by}
        with self.transaction() as conn:
            return self._taken_back(conn, now, where, whose, spend, settle)

    def release_stale_claims(
        self, now: float, lease: float = CLAIM_LEASE, spare: str = "\x00", settle: float = 0.0
    ) -> int:
        """Return rows claimed more than `lease` seconds ago (by a process that was killed
        while it delivered, e.g. a `watchbridge sync`) to pending, except those whose
        claimer's id starts with `spare` (the caller's own kind, which it releases itself).
        A worker renews its claims while it delivers (`renew_claims`, and `note`). Each
        counts the crash, as `release_claims` does, a row that spent its try on it due
        `settle` seconds from `now`."""
        where = (
            "o.status = 'inflight' AND o.updated_at < :before"
            " AND substr(COALESCE(o.claimed_by, ''), 1, :length) != :spare"
        )
        whose = {"before": now - lease, "length": len(spare), "spare": spare}
        with self.transaction() as conn:
            return self._taken_back(conn, now, where, whose, True, settle)

    @staticmethod
    def _taken_back(
        conn: sqlite3.Connection,
        now: float,
        where: str,
        whose: Mapping[str, Any],
        crash: bool,
        settle: float = 0.0,
    ) -> int:
        """Put the in-flight rows `where` says (of outbox o, its named parameters `whose`)
        back to pending; with `crash`, their process died (CRASHES_ALONE): each counts it,
        and a row that was the only one its process was delivering (`_ALONE`) spends the try,
        noted as cut short (CUT_SHORT). How many."""
        alone: list[int] = []
        if crash:  # read before any goes back: a row of a batch must not look alone then
            found = conn.execute(f"SELECT o.id FROM outbox o WHERE {where} AND {_ALONE}", whose)
            alone = [int(r["id"]) for r in found]
        spent = "id IN (SELECT value FROM json_each(:alone))"
        return conn.execute(
            "UPDATE outbox AS o SET status = 'pending', claimed_by = NULL, updated_at = :now,"
            f" crashes = crashes + :crash, attempts = attempts + ({spent}),"
            f" next_attempt_at = CASE WHEN :settle > 0 AND {spent}"
            " THEN MAX(next_attempt_at, :now + :settle)"
            f" WHEN :settle > 0 AND {_MARKED}"
            " THEN MAX(next_attempt_at, updated_at + :settle) ELSE next_attempt_at END,"
            f" last_error = CASE WHEN {spent} THEN {_CUT_SHORT_NOTED} ELSE last_error END"
            f" WHERE {where}",
            {
                **whose,
                "now": now,
                "crash": int(crash),
                "alone": json.dumps(alone),
                "settle": settle,
            },
        ).rowcount

    def waiting_webhook_plays(
        self, profile: str
    ) -> list[tuple[str, dict[str, Any], float, str | None, str | None]]:
        """(target, item, watched at, webhook source, its server) of the plays webhooks
        queued for `profile` that are not delivered yet: pending, in flight, or dead letters.
        A dead letter is still the play's one delivery, as a link's own is: it goes once more
        by itself after the service's own failure, or by `deadletters retry`; a link's copy
        beside it would be a second alert where it cannot be placed, and a second play once
        both go. Discarded, it is gone, and a link copies the play again. The server: the id
        a Plex, Jellyfin or Emby webhook named, if any."""
        return self._webhook_plays(
            "target", "profile = ? AND status IN ('pending', 'inflight', 'dead')", (profile,)
        )

    def waiting_webhook_ratings(
        self, profile: str
    ) -> list[tuple[str, dict[str, Any], int, str | None, str | None]]:
        """(target, item, rating 0-100, webhook source, its server) of the ratings webhooks
        queued for `profile` that are not delivered yet: pending, in flight, or dead letters.
        A dead letter is still the rating's one delivery, as for plays (see
        `waiting_webhook_plays`): a link's copy beside it would be a second alert where it
        cannot be placed, and a second rating row once both go. Discarded, it is gone, and a
        link copies the rating again."""
        rows = self._query(
            "SELECT target, payload FROM outbox WHERE profile = ? AND action = 'rating'"
            " AND event_id IS NOT NULL AND status IN ('pending', 'inflight', 'dead')",
            (profile,),
        )
        found = []
        for row in rows:
            payload = json.loads(row["payload"])
            if isinstance(payload.get("rating"), int) and isinstance(payload.get("item"), dict):
                item, rating = payload["item"], payload["rating"]
                found.append(
                    (row["target"], item, rating, payload.get("source"), payload.get("server"))
                )
        return found

    def unanswered_ratings(
        self, profile: str, target: str
    ) -> list[tuple[dict[str, Any], float, int]]:
        """(item, rated at, rating 0-100) of the ratings queued for `profile` on `target` whose
        send may have landed unanswered (marked; waiting for the retry that looks for it, a
        dead letter of it, or settled by a newer rating before it was looked for: UNFOUND).
        The item is the one the send named (PLACED), when the row holds it."""
        rows = self._query(
            "SELECT payload FROM outbox WHERE profile = ? AND target = ? AND action = 'rating'"
            f" AND (status IN ('pending', 'inflight', 'dead') AND {_MARKED}"
            " OR status = 'done' AND last_error = ?)",
            (profile, target, UNFOUND),
        )
        found = []
        for row in rows:
            payload = json.loads(row["payload"])
            try:
                item = payload.get(PLACED) or payload["item"]
                found.append((item, float(payload["at"]), int(payload["rating"])))
            except (KeyError, TypeError, ValueError):
                continue  # its delivery makes a dead letter of it, saying why
        return found

    def unfound_ratings(self, row: OutboxItem) -> list[tuple[int, dict[str, Any]]]:
        """(id, payload) of the ratings of `row`'s item (its ordering key) queued before it
        whose send may have landed and that a newer rating settled before they were looked
        for (UNFOUND), oldest first: `row`'s delivery looks for them (see `looked_for`)."""
        rows = self._query(
            "SELECT id, payload FROM outbox WHERE ordering_key = ? AND id < ?"
            " AND status = 'done' AND action = 'rating' AND last_error = ? ORDER BY id",
            (row.ordering_key, row.id, UNFOUND),
        )
        return [(int(r["id"]), json.loads(r["payload"])) for r in rows]

    def looked_for(self, item_ids: Sequence[int], now: float) -> None:
        """Settle these UNFOUND ratings as plainly superseded: a newer rating's delivery
        looked for them in the diary (and recorded those it found as copies of ours)."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET last_error = 'superseded', updated_at = ?"
                " WHERE id = ? AND last_error = ?",
                [(now, item_id, UNFOUND) for item_id in item_ids],
            )

    def ratings_sent_since(self, row: OutboxItem, since: float) -> list[int | None]:
        """The values (0-100; None: a removal) of the ratings of `row`'s item on its target
        (its ordering key) queued before it and done at or after `since` (our clock): a
        rating the target shows given since may be one of those writes, not the user's."""
        rows = self._query(
            "SELECT action, payload FROM outbox WHERE ordering_key = ? AND id < ?"
            f" AND status = 'done' AND last_error IS NULL AND action IN {_RATINGS_SQL}"
            " AND updated_at >= ?",
            (row.ordering_key, row.id, since),
        )
        values: list[int | None] = []
        for found in rows:
            value = json.loads(found["payload"]).get("rating")
            if found["action"] == "remove_rating":
                values.append(None)
            elif isinstance(value, int) and not isinstance(value, bool):
                values.append(value)
        return values

    def pending_rating_removals(
        self, profile: str, now: float
    ) -> list[tuple[str, dict[str, Any], float | None]]:
        """(target, item, queued at) of the rating removals queued for `profile` not delivered
        yet, dead letters too (the rating is still there, waiting for the human: a Serializd
        log's stars to clear by hand), and those delivered within READ_LAG of `now` (a read
        may still show the rating); queued at is None for all but the dead letters."""
        rows = self._query(
            "SELECT target, payload, status, created_at FROM outbox WHERE profile = ?"
            " AND action = 'remove_rating' AND (status IN ('pending', 'inflight', 'dead')"
            " OR (status = 'done' AND last_error IS NULL AND updated_at > ?))",
            (profile, now - READ_LAG),
        )
        return [
            (
                row["target"],
                json.loads(row["payload"])["item"],
                float(row["created_at"]) if row["status"] == "dead" else None,
            )
            for row in rows
        ]

    def delivered_rating_copies(
        self, profile: str, link: str
    ) -> list[tuple[str, dict[str, Any], int, float]]:
        """(target, item, value, rated at) of the ratings `link` queued for `profile` that their
        target took (not settled unsent; delivered rows are kept a week, see maintenance)."""
        return self._rating_copies(profile, link, "status = 'done' AND last_error IS NULL")

    def rating_removals_on_their_way(
        self, profile: str, link: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """(target, item) of the rating removals `link` queued for `profile` that are still to
        be tried (not dead letters: those may never land)."""
        rows = self._query(
            "SELECT target, payload FROM outbox WHERE profile = ? AND action = 'remove_rating'"
            " AND status IN ('pending', 'inflight') AND json_extract(payload, '$.link') = ?",
            (profile, link),
        )
        return [(row["target"], json.loads(row["payload"])["item"]) for row in rows]

    def waiting_rating_copies(
        self, profile: str, link: str
    ) -> list[tuple[str, dict[str, Any], int]]:
        """(target, item, value) of the ratings `link` queued for `profile` not delivered yet,
        dead letters too (the choice they carry still stands until one is discarded)."""
        waiting = self._rating_copies(profile, link, "status IN ('pending', 'inflight', 'dead')")
        return [(target, item, value) for target, item, value, _ in waiting]

    def _rating_copies(
        self, profile: str, link: str, status: str
    ) -> list[tuple[str, dict[str, Any], int, float]]:
        """(target, item, value, rated at) of the ratings `link` queued for `profile` whose
        rows the `status` condition takes."""
        rows = self._query(
            "SELECT target, payload FROM outbox WHERE profile = ? AND action = 'rating'"
            f" AND {status} AND json_extract(payload, '$.link') = ?",
            (profile, link),
        )
        copies = []
        for row in rows:
            payload = json.loads(row["payload"])
            if isinstance(payload.get("rating"), int):
                at = float(payload.get("at") or 0.0)
                copies.append((row["target"], payload["item"], payload["rating"], at))
        return copies

    def delivered_webhook_plays(
        self, profile: str, target: str
    ) -> list[tuple[str, dict[str, Any], float, str | None]]:
        """(idempotency key, item, watched at, webhook source) of the plays webhooks queued for
        `profile` that `target` took (delivered rows are kept a week, see maintenance). Keys,
        not row ids: ids come back once old rows are pruned."""
        plays = self._webhook_plays(
            "idempotency_key", "profile = ? AND target = ? AND status = 'done'", (profile, target)
        )
        return [(key, item, at, source) for key, item, at, source, _server in plays]

    def plays_delivered_since(
        self, profile: str, target: str, since: float
    ) -> list[tuple[dict[str, Any], float]]:
        """(item, watched at) of the plays delivered to `target` for `profile` at or after
        `since` (delivered rows are kept a week, see maintenance), webhooks' and links' alike."""
        rows = self._query(
            "SELECT payload FROM outbox WHERE target = ? AND profile = ? AND action = 'play'"
            " AND status = 'done' AND updated_at >= ?",
            (target, profile, since),
        )
        plays = []
        for row in rows:
            payload = json.loads(row["payload"])
            item, at = payload.get("item"), payload.get("at")
            if isinstance(item, dict) and isinstance(at, int | float):
                plays.append((item, float(at)))
        return plays

    def plays_not_given_up(self, target: str, profile: str) -> list[QueuedPlay]:
        """The plays queued for `profile` on `target` that may still be sent: pending, in
        flight, or dead letters (which `deadletters retry` sends)."""
        rows = self._query(
            "SELECT id, payload, status, created_at, last_error FROM outbox"
            " WHERE target = ? AND profile = ? AND action = 'play'"
            " AND status IN ('pending', 'inflight', 'dead')",
            (target, profile),
        )
        found = []
        for row in rows:
            payload = json.loads(row["payload"])
            try:
                item, at = payload["item"], float(payload["at"])
            except (KeyError, TypeError, ValueError):
                continue  # its delivery makes a dead letter of it, saying why
            before_open = "link" in payload and int(row["id"]) <= self.outbox_at_open
            unsure = (row["last_error"] or "").startswith(UNKNOWN_OUTCOME)
            found.append(
                QueuedPlay(
                    int(row["id"]),
                    item,
                    at,
                    row["status"] == "dead",
                    float(row["created_at"]),
                    before_open or unsure,
                    None if unsure else self.opened_at,
                )
            )
        return found

    def waiting_plays_span(self, target: str, profile: str) -> tuple[float, float] | None:
        """The earliest and latest times of the plays queued for `profile` on `target` by
        anything but a link (a webhook) that are not delivered yet (pending or in flight);
        None: there is none."""
        rows = self._query(
            "SELECT MIN(CAST(json_extract(payload, '$.at') AS REAL)) AS oldest,"
            " MAX(CAST(json_extract(payload, '$.at') AS REAL)) AS newest FROM outbox"
            " WHERE target = ? AND profile = ? AND action = 'play'"
            " AND status IN ('pending', 'inflight') AND json_extract(payload, '$.link') IS NULL",
            (target, profile),
        )
        if not rows or rows[0]["newest"] is None:
            return None
        return float(rows[0]["oldest"]), float(rows[0]["newest"])

    def _webhook_plays(
        self, first: str, where: str, params: Sequence[Any]
    ) -> list[tuple[str, dict[str, Any], float, str | None, str | None]]:
        """(column `first`, item, watched at, webhook source, the server it named) of the
        webhook plays `where` selects (both are literals of this class, never input)."""
        rows = self._query(
            f"SELECT {first} AS first, payload FROM outbox WHERE action = 'play'"
            f" AND event_id IS NOT NULL AND {where}",
            params,
        )
        plays = []
        for row in rows:
            payload = json.loads(row["payload"])
            item, at = payload.get("item") or {}, float(payload.get("at", 0))
            plays.append(
                (str(row["first"]), item, at, payload.get("source"), payload.get("server"))
            )
        return plays

    def delivered_keys(self, profile: str, target: str, prefix: str) -> list[str]:
        """Sorted idempotency keys of the rows delivered to `target` for `profile` that start
        with `prefix` (delivered rows are kept a week, see maintenance; a link's add of a play
        it still expects, until the play is settled: see `prune`)."""
        return self.keys_by_delivery(profile, target, prefix)[0]

    def plays_written_at(
        self, profile: str, target: str, since: float, link: str | None = None
    ) -> tuple[float | None, bool]:
        """Of the rows adding or removing a play on `target` for `profile` delivered at
        `since` or later: when the last of `link`'s own or a webhook's was (None: none was),
        and whether another link's was. Our own writes move the target's activity stamps
        too; another link's are news to `link`, dated maybe years back (without `link`:
        every link's are taken as own)."""
        own = "1" if link is None else "coalesce(json_extract(payload, '$.link'), ?) = ?"
        rows = self._query(
            f"SELECT max(CASE WHEN {own} THEN updated_at END) AS at,"
            f" count(CASE WHEN NOT {own} THEN 1 END) AS others FROM outbox"
            " WHERE profile = ? AND target = ? AND status = 'done'"
            " AND action IN ('play', 'remove_play') AND updated_at >= ?",
            (*([link, link] * 2 if link is not None else ()), profile, target, since),
        )
        at = rows[0]["at"] if rows else None
        return (None if at is None else float(at)), bool(rows and rows[0]["others"])

    def keys_by_delivery(
        self, profile: str, target: str, prefix: str
    ) -> tuple[list[str], list[str]]:
        """Sorted idempotency keys of the rows to `target` for `profile` that start with
        `prefix`: those delivered, and those not (waiting, being delivered, dead letters)."""
        rows = self._query(
            "SELECT idempotency_key AS k, status = 'done' AS done FROM outbox WHERE profile = ?"
            " AND target = ? AND substr(idempotency_key, 1, ?) = ? ORDER BY idempotency_key",
            (profile, target, len(prefix), prefix),
        )
        delivered: list[str] = []
        undelivered: list[str] = []
        for row in rows:
            (delivered if row["done"] else undelivered).append(row["k"])
        return delivered, undelivered

    def unmatched(self) -> list[Unmatched]:
        """Queued rows waiting for ids a target can use, each with the webhook event it came
        from (as recorded, and as the server sent it); None for rows a sync planned."""
        rows = self._query(
            "SELECT o.*, e.payload AS event_payload, e.raw AS event_raw FROM outbox o"
            " LEFT JOIN events e ON e.id = o.event_id"
            f" WHERE o.status = 'pending' AND {_UNMATCHED} ORDER BY o.id"
        )
        return [Unmatched(OutboxItem.from_row(r), r["event_payload"], r["event_raw"]) for r in rows]

    def dead_letters(self, item_ids: Sequence[int] | None = None) -> list[OutboxItem]:
        """The dead rows (those of `item_ids` only, when given), oldest first."""
        where, params = self._dead_filter(item_ids)
        rows = self._query(f"SELECT * FROM outbox WHERE {where} ORDER BY id", params)
        return [OutboxItem.from_row(r) for r in rows]

    def retry_dead(
        self, item_ids: Sequence[int] | None, now: float, *, by_itself: bool = False
    ) -> Retried:
        """Put dead rows (all when `item_ids` is None) back in the queue with fresh attempts,
        fresh crashes (a later dead letter tells of the kills of its tries since, not before:
        CRASHES_ALONE) and a fresh delivery.max_age;
        a rating a newer one of its item followed is settled as superseded instead (left by
        versions that let such rows die). `by_itself`: queued again once after the service's
        own failure (ONCE_MORE_SPENT: a death after it is final); by the user, a row starts
        afresh, and a play the user removed since is settled instead (REMOVED_SINCE)."""
        where, params = self._dead_filter(item_ids)
        reason, once_more = (
            (QUEUED_ONCE_MORE, ONCE_MORE_SPENT) if by_itself else (QUEUED_AGAIN, None)
        )
        if by_itself:
            # Checked in the write: another process may have sent it once more meanwhile.
            where = f"{where} AND once_more = '{ONCE_MORE_DUE}'"
        removed = 0
        with self.transaction() as conn:
            if by_itself:
                removed = conn.execute(
                    f"{_SETTLE_DEAD_PLAYS_REMOVED_SINCE} AND {where}",
                    (now, REMOVED_SINCE, *params),
                ).rowcount
            superseded = conn.execute(
                f"{_SUPERSEDE_DEAD_RATINGS} AND {where}", (now, *params)
            ).rowcount
            # Its reason says what was done (the status shows it until the row is tried), not
            # why it gave up; a row whose send may have landed keeps that mark in front.
            queued = conn.execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, crashes = 0,"
                " next_attempt_at = ?, updated_at = ?, failing_since = NULL, told_at = NULL,"
                " held = NULL,"
                f" once_more = ?, last_error = CASE WHEN {_MARKED} THEN ? ELSE ? END"
                f" WHERE {where}",
                (now, now, once_more, f"{UNKNOWN_OUTCOME}: {reason}", reason, *params),
            ).rowcount
        return Retried(queued, superseded, removed)

    def once_more_latest(self, target: str) -> float | None:
        """When the last of `target`'s dead letters waiting to go once more by themselves
        (ONCE_MORE_DUE) died, or was last sent alone and failed; None when none waits."""
        rows = self._query(  # its literal 'due' matches the index's (m026)
            "SELECT MAX(updated_at) AS latest FROM outbox"
            f" WHERE target = ? AND once_more = '{ONCE_MORE_DUE}' AND status = 'dead'",
            (target,),
        )
        latest = rows[0]["latest"] if rows else None
        return None if latest is None else float(latest)

    def queue_probe(
        self, target: str, now: float, skip: Callable[[OutboxItem], bool] = lambda _: False
    ) -> int | None:
        """Queue the oldest of `target`'s dead letters waiting to go once more by themselves
        (ONCE_MORE_DUE) alone, as ONCE_MORE_PROBE, to see whether the service takes writes
        again; its id, None when none can go. It keeps its attempts, reason and told mark (a
        probe not through is the same dead letter again). Those `skip` says cannot go (the
        config no longer delivers them) stay; those a later write made stale are settled on
        the way, as when they all go (a play removed since, a rating followed by another)."""
        after = 0
        with self.transaction() as conn:
            while True:
                rows = conn.execute(
                    "SELECT * FROM outbox WHERE target = ? AND once_more = ? AND status = 'dead'"
                    " AND id > ? ORDER BY id LIMIT 50",
                    (target, ONCE_MORE_DUE, after),
                ).fetchall()
                if not rows:
                    return None
                for row in rows:
                    item = OutboxItem.from_row(row)
                    after = item.id
                    if skip(item):
                        continue
                    stale = conn.execute(
                        f"{_SETTLE_DEAD_PLAYS_REMOVED_SINCE} AND id = ?",
                        (now, REMOVED_SINCE, item.id),
                    ).rowcount
                    stale += conn.execute(
                        f"{_SUPERSEDE_DEAD_RATINGS} AND id = ?", (now, item.id)
                    ).rowcount
                    if stale:
                        continue
                    conn.execute(
                        "UPDATE outbox SET status = 'pending', next_attempt_at = ?, updated_at = ?,"
                        " held = NULL, once_more = ? WHERE id = ?",
                        (now, now, ONCE_MORE_PROBE, item.id),
                    )
                    return item.id

    def played_after(self, row: OutboxItem) -> bool:
        """Whether a play of `row`'s item (its ordering key) queued after it was delivered:
        the user's later word on that item, which a removal decided before it must not undo."""
        rows = self._query(
            "SELECT 1 FROM outbox WHERE ordering_key = ? AND id > ? AND action = 'play'"
            " AND status = 'done' LIMIT 1",
            (row.ordering_key, row.id),
        )
        return bool(rows)

    def once_more_due(self, target: str) -> list[int]:
        """The dead letters of `target` that died of the service's own failure and wait to be
        queued again by themselves (ONCE_MORE_DUE), oldest first."""
        rows = self._query(
            "SELECT id FROM outbox WHERE target = ? AND once_more = ? AND status = 'dead'"
            " ORDER BY id",
            (target, ONCE_MORE_DUE),
        )
        return [int(row["id"]) for row in rows]

    def waiting_for(self) -> list[tuple[str, str]]:
        """The (target, profile) pairs with rows waiting to go out."""
        rows = self._query(
            "SELECT DISTINCT target, profile FROM outbox WHERE status = 'pending'"
            " ORDER BY target, profile"
        )
        return [(row["target"], row["profile"]) for row in rows]

    def waits_for_sign_in(self, target: str, profile: str) -> bool:
        """Whether a row of `profile` for `target` is held for a sign-in (or a key): not for
        a media server's own key (the Plex server's token, a Jellyfin or Emby API key), no
        sign-in of the profile's."""
        rows = self._query(
            "SELECT 1 FROM outbox WHERE status = 'pending' AND target = ? AND profile = ?"
            " AND waits_for_sign_in = 1 AND waits_for_server IS NULL LIMIT 1",
            (target, profile),
        )
        return bool(rows)

    def waiting_for_server(self, server: str, target: str | None = None) -> list[str]:
        """The profiles with rows (for `target`, if given) held for `server`'s own key (the
        Plex server's token, a Jellyfin or Emby API key), in order."""
        where = "status = 'pending' AND waits_for_server = ?"
        params: tuple[str, ...] = (server,)
        if target is not None:
            where, params = f"{where} AND target = ?", (server, target)
        rows = self._query(
            f"SELECT DISTINCT profile FROM outbox WHERE {where} ORDER BY profile", params
        )
        return [row["profile"] for row in rows]

    def waits_for_server_key(self, server: str) -> bool:
        """Whether a row waits for `server`'s own key (`waiting_for_server`), or is being
        tried (held for it when claimed: its try may be refused again)."""
        rows = self._query(
            "SELECT 1 FROM outbox WHERE status IN ('pending', 'inflight')"
            " AND waits_for_server = ? LIMIT 1",
            (server,),
        )
        return bool(rows)

    def held_for_servers(self) -> set[str]:
        """The targets with rows held for a media server's own key (`waiting_for_server`)."""
        rows = self._query(
            "SELECT DISTINCT target FROM outbox"
            " WHERE status = 'pending' AND waits_for_server IS NOT NULL"
        )
        return {row["target"] for row in rows}

    def lift_server_holds(self, server: str, now: float) -> int:
        """`server` took its own key again (a link's read, an id lookup): the rows that key
        held go now, not at the end of their half hour. They keep what they wait for
        (`waiting_for_server`) until their next try says. How many; no write when none."""
        where = "status = 'pending' AND waits_for_server = ? AND next_attempt_at > ?"
        if not self._query(f"SELECT 1 FROM outbox WHERE {where} LIMIT 1", (server, now)):
            return 0
        with self.transaction() as conn:
            return conn.execute(
                f"UPDATE outbox SET next_attempt_at = ?, held = NULL WHERE {where}",
                (now, server, now),
            ).rowcount

    def waiting_from_links(self) -> list[tuple[str, str, str, str]]:
        """The (target, profile, link, action) of the rows links queued that wait to go out."""
        rows = self._query(
            "SELECT DISTINCT target, profile, json_extract(payload, '$.link') AS link, action"
            " FROM outbox WHERE status = 'pending' AND json_extract(payload, '$.link') IS NOT NULL"
            " ORDER BY target, profile, link, action"
        )
        return [(r["target"], r["profile"], str(r["link"]), r["action"]) for r in rows]

    def give_up_waiting(
        self,
        target: str,
        profile: str,
        now: float,
        reason: str,
        link: str | None = None,
        action: str | None = None,
    ) -> int:
        """Make the waiting rows of `profile` on `target` (only those link `link` queued for
        `action`, when given) dead letters (`reason`); returns how many. A row whose last send
        may have landed keeps that mark in front of the reason. A dead letter sent alone as a
        probe (ONCE_MORE_PROBE) waits to go once more again (ONCE_MORE_DUE): a probe no longer
        under way is looked for by nothing, and would never go once more."""
        marked = f"{UNKNOWN_OUTCOME}: {reason}"
        where, params = "target = ? AND profile = ? AND status = 'pending'", [target, profile]
        if link is not None:
            where += " AND json_extract(payload, '$.link') = ? AND action = ?"
            params += [link, action or ""]
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE outbox SET status = 'dead', updated_at = ?, held = NULL,"
                f" last_error = CASE WHEN {_MARKED} THEN ? ELSE ? END,"
                " once_more = CASE WHEN once_more = ? THEN ? ELSE once_more END"
                f" WHERE {where}",
                (now, marked, reason, ONCE_MORE_PROBE, ONCE_MORE_DUE, *params),
            ).rowcount

    def untold_dead(self, target: str, now: float, latest: int = 5) -> Untold:
        """The dead rows of `target` no dead-letter alert has told of yet, read at `now`: how
        many, and the `latest` of them, oldest first (never all: a removed profile's backlog
        may be 50,000 rows)."""
        untold = "FROM outbox WHERE status = 'dead' AND target = ? AND told_at IS NULL"
        count, again = self._query(
            f"SELECT COUNT(*), COUNT(*) FILTER (WHERE once_more = ?) {untold}",
            (ONCE_MORE_DUE, target),
        )[0]
        rows = self._query(f"SELECT * {untold} ORDER BY id DESC LIMIT ?", (target, latest))
        latest_rows = [OutboxItem.from_row(r) for r in reversed(rows)]
        return Untold(int(count), latest_rows, now, int(again))

    def untold_dead_targets(self) -> list[str]:
        """The targets with dead rows no dead-letter alert has told of yet."""
        return self._dead_targets(" AND told_at IS NULL")

    def dead_targets(self) -> list[str]:
        """The targets with dead rows."""
        return self._dead_targets("")

    def _dead_targets(self, condition: str) -> list[str]:
        rows = self._query(
            f"SELECT DISTINCT target FROM outbox WHERE status = 'dead'{condition} ORDER BY target"
        )
        return [row["target"] for row in rows]

    def told_dead(self, target: str, told: Untold, now: float) -> None:
        """A dead-letter alert told of the rows `told` counted: those still dead, no newer
        than its latest and dead since before it was read (one retried meanwhile is owed an
        alert again if it dies again)."""
        if not told.latest:
            return
        last = told.latest[-1]
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET told_at = ? WHERE status = 'dead' AND target = ?"
                " AND told_at IS NULL AND id <= ? AND updated_at <= ?",
                (now, target, last.id, told.read_at),
            )

    def discard_dead(self, item_ids: Sequence[int] | None) -> int:
        where, params = self._dead_filter(item_ids)
        with self.transaction() as conn:
            discarded = conn.execute(f"DELETE FROM outbox WHERE {where}", params).rowcount
            self._forget_ended_rows(conn)
            return discarded

    def discard_unmatched(self, item_ids: Sequence[int]) -> int:
        """Delete the rows of `item_ids` still waiting for ids (`unmatched`): never sent. A
        row that has ended meanwhile (delivered, given up) or is being tried is left. Later
        deliveries of the same items waiting behind one go out in their turn. How many."""
        ids = json.dumps(list(item_ids))
        with self.transaction() as conn:
            discarded = conn.execute(
                f"DELETE FROM outbox WHERE status = 'pending' AND {_UNMATCHED}"
                " AND id IN (SELECT value FROM json_each(?))",
                (ids,),
            ).rowcount
            self._forget_ended_rows(conn)
            return discarded

    @staticmethod
    def _forget_ended_rows(conn: sqlite3.Connection) -> None:
        """Forget the entries of ROW_ENTRIES whose row has ended: delivered or settled, or
        gone (discarded, pruned). A dead letter has not: `deadletters retry` goes on with it.
        Those of ROW_KEPT_ENTRIES are forgotten once their row is gone; one naming no row
        (written before rows were named) is kept."""
        # (collection, which of its entries may go, what of their row keeps them)
        kept_while = [(c, "", " AND o.status != 'done'") for c in ROW_ENTRIES]
        kept_while += [
            (c, " AND json_extract(data, '$.row') IS NOT NULL", "") for c in ROW_KEPT_ENTRIES
        ]
        for (service, collection), entries, alive in kept_while:
            gone = conn.execute(
                f"DELETE FROM mirror WHERE service = ? AND collection = ?{entries} AND NOT EXISTS"
                " (SELECT 1 FROM outbox o WHERE o.id = json_extract(mirror.data, '$.row')"
                f"{alive})",
                (service, collection),
            ).rowcount
            if gone:
                _mirrors_changed(conn, "service = ? AND collection = ?", (service, collection))

    def keep_off(self, kept: Sequence[KeptOff]) -> int:
        """Discard the dead letters (or rows waiting for ids: `discard_unmatched`) `kept`
        names (by row id) and remember each as a play its link keeps off its target
        (`KEPT_OFF`), in one transaction; returns how many. A row neither (retried, discarded
        or delivered meanwhile) is left, and not remembered."""
        done = 0
        with self.transaction() as conn:
            for entry in kept:
                gone = conn.execute(
                    f"DELETE FROM outbox WHERE id = ? AND {_DISCARDABLE}", (entry.row,)
                ).rowcount
                if not gone:
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO mirror (service, profile, collection, item_key, data,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        KEPT_OFF_SERVICE,
                        entry.profile,
                        KEPT_OFF,
                        str(entry.row),
                        json.dumps(entry.to_json()),
                        entry.since,
                    ),
                )
                _mirror_written(conn, KEPT_OFF_SERVICE, entry.profile, KEPT_OFF)
                done += 1
            self._forget_ended_rows(conn)
        return done

    def kept_off(self, profile: str | None = None, link: str | None = None) -> list[KeptOff]:
        """The plays kept off their link's target (those of `profile` and `link`, when given),
        by the id of the dead letter discarded."""
        where, params = "service = ? AND collection = ?", [KEPT_OFF_SERVICE, KEPT_OFF]
        if profile is not None:
            where += " AND profile = ?"
            params.append(profile)
        rows = self._query(f"SELECT profile, item_key, data FROM mirror WHERE {where}", params)
        kept = [
            KeptOff.from_mirror(int(r["item_key"]), r["profile"], json.loads(r["data"]))
            for r in rows
        ]
        return sorted((k for k in kept if link is None or k.link == link), key=lambda k: k.row)

    def kept_off_counts(self) -> list[KeptOffCount]:
        """How many plays each link keeps off its target, per profile (the overview's read)."""
        rows = self._overview(
            "SELECT json_extract(data, '$.link') AS link, profile,"
            " json_extract(data, '$.target') AS target, COUNT(*) AS n FROM mirror"
            " WHERE service = ? AND collection = ? GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            (KEPT_OFF_SERVICE, KEPT_OFF),
        )
        return [
            KeptOffCount(str(r["link"]), str(r["profile"]), str(r["target"]), int(r["n"]))
            for r in rows
        ]

    def allow_kept_off(self, row_ids: Sequence[int] | None) -> int:
        """Forget that these plays (all when `row_ids` is None) are kept off: their links copy
        them again while the other side lacks them. Returns how many."""
        where, params = "service = ? AND collection = ?", [KEPT_OFF_SERVICE, KEPT_OFF]
        if row_ids is not None:
            where += " AND item_key IN (SELECT value FROM json_each(?))"
            params.append(json.dumps([str(i) for i in row_ids]))
        with self.transaction() as conn:
            _mirrors_changed(conn, "service = ? AND collection = ?", (KEPT_OFF_SERVICE, KEPT_OFF))
            return conn.execute(f"DELETE FROM mirror WHERE {where}", params).rowcount

    @staticmethod
    def _dead_filter(item_ids: Sequence[int] | None) -> tuple[str, tuple[str, ...]]:
        if item_ids is None:
            return "status = 'dead'", ()
        # One JSON parameter, however many ids (`--all` past the undeliverable ones may be
        # tens of thousands: more than SQLite binds).
        ids = json.dumps(list(item_ids))
        return "status = 'dead' AND id IN (SELECT value FROM json_each(?))", (ids,)

    def outbox_counts(self) -> dict[str, int]:
        counts = {"pending": 0, "inflight": 0, "done": 0, "dead": 0}
        for row in self._overview("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status"):
            counts[row["status"]] = row["n"]
        return counts

    def queue_gauges(self) -> dict[str, TargetQueue]:
        """What /metrics shows of the outbox, per target: the rows pending, in flight, dead,
        waiting for ids (`unmatched`), for a sign-in and for a media server's own key, and
        when the oldest pending one was queued, in one read. Only the pending, in-flight and
        dead ranges of an index are walked: the delivered rows, which no gauge shows and
        which stay a week (a first sync's 100,000 at once), are not read at every scrape."""
        rows = self._overview(
            # Only a pending row's own columns are read (a dead letter's are not needed).
            "SELECT target, status, COUNT(*) AS n,"
            " MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest,"
            f" TOTAL(CASE WHEN status = 'pending' THEN COALESCE({_UNMATCHED}, 0) END) AS unmatched,"
            " TOTAL(CASE WHEN status = 'pending' AND waits_for_server IS NULL"
            f" THEN waits_for_sign_in = 1 AND NOT COALESCE({_UNMATCHED}, 0) END) AS sign_in,"
            " TOTAL(CASE WHEN status = 'pending' AND waits_for_server IS NOT NULL"
            " THEN waits_for_sign_in = 1 END) AS server_key"
            " FROM outbox WHERE status IN ('pending', 'inflight', 'dead')"
            " GROUP BY status, target"
        )
        counts: dict[str, dict[str, Any]] = {}
        for row in rows:
            one = counts.setdefault(row["target"], {})
            one[row["status"]] = int(row["n"])
            if row["status"] == "pending":
                one["unmatched"] = int(row["unmatched"])
                one["waiting_for_sign_in"] = int(row["sign_in"])
                one["waiting_for_server_key"] = int(row["server_key"])
                one["oldest_pending_at"] = row["oldest"]
        return {target: TargetQueue(**one) for target, one in counts.items()}

    def holds(self) -> set[tuple[str, str, str]]:
        """(target, profile, HELD_TARGET or HELD_PROFILE) for each hold keeping rows waiting
        or in flight (a try of a held row under way is no end of its hold): what /metrics
        says is held, across restarts and whichever process held them. Not the rows a media
        server's own key holds (outbox.waits_for_server): no profile is held by those, whose
        gauge is watchbridge_outbox_waiting_for_server_key (left out here, not when held, so
        also those an earlier release kept as a profile's hold)."""
        rows = self._overview(
            "SELECT DISTINCT target, profile, held FROM outbox"
            " WHERE held IS NOT NULL AND status IN ('pending', 'inflight')"
            " AND waits_for_server IS NULL"
        )
        return {(row["target"], row["profile"], row["held"]) for row in rows}

    def waits_to_go(self, target: str, profile: str | None = None) -> bool:
        """Whether any row for `target` (of `profile`, if given) still waits to go out or is
        being delivered."""
        where = "target = ? AND status IN ('pending', 'inflight')"
        if profile is None:
            return bool(self._query(f"SELECT 1 FROM outbox WHERE {where} LIMIT 1", (target,)))
        where += " AND profile = ?"
        return bool(self._query(f"SELECT 1 FROM outbox WHERE {where} LIMIT 1", (target, profile)))

    def unhold_target(self, target: str) -> int:
        """The target took a delivery: its rows a hold of the whole target kept are held no
        more (they go at their next try, as they were due). How many; no write when none."""
        where = "target = ? AND held = ? AND status IN ('pending', 'inflight')"
        if not self._query(f"SELECT 1 FROM outbox WHERE {where} LIMIT 1", (target, HELD_TARGET)):
            return 0
        with self.transaction() as conn:
            return conn.execute(
                f"UPDATE outbox SET held = NULL WHERE {where}", (target, HELD_TARGET)
            ).rowcount

    # ------------------------------------------------------------------ cursors, cache, tokens

    def get_cursor(self, service: str, profile: str, name: str) -> str | None:
        rows = self._query(
            "SELECT value FROM cursors WHERE service = ? AND profile = ? AND name = ?",
            (service, profile, name),
        )
        return str(rows[0]["value"]) if rows else None

    def set_cursor(self, service: str, profile: str, name: str, value: str, now: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO cursors (service, profile, name, value, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (service, profile, name)"
                " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
                " WHERE value IS NOT excluded.value",  # the same value again writes nothing
                (service, profile, name, value, now),
            )

    def forget_cursor(
        self, service: str, profile: str, name: str, value: str | None = None
    ) -> None:
        """Forget a cursor; with `value`, only while it still holds that value (not one
        another process wrote since)."""
        where = "service = ? AND profile = ? AND name = ?"
        params: tuple[str, ...] = (service, profile, name)
        if value is not None:
            where, params = f"{where} AND value = ?", (*params, value)
        with self.transaction() as conn:
            conn.execute(f"DELETE FROM cursors WHERE {where}", params)

    def catch_up_counts(
        self, service: str, profile: str, account: str
    ) -> dict[str, tuple[int, str, float | None]]:
        """The play counts the catch-up keeps of `account`, each with its item's identity
        ('' none known) and last played date then (None: none known) (catchup.py `State`)."""
        rows = self._query(
            "SELECT item, play_count, identity, played_at FROM catch_up_counts"
            " WHERE service = ? AND profile = ? AND account = ?",
            (service, profile, account),
        )
        return {
            str(row["item"]): (
                int(row["play_count"]),
                str(row["identity"]),
                None if row["played_at"] is None else float(row["played_at"]),
            )
            for row in rows
        }

    def save_catch_up(
        self,
        where: tuple[str, str, str],
        header: str,
        counts: Mapping[str, tuple[int, str, float | None]],
        whole: bool,
        now: float,
    ) -> None:
        """A catch-up read's state (catchup.py `Saved`) of an account (`where`: server,
        profile, account), in one transaction: its `header` (all but the counts) in its
        cursor, and the item `counts` that changed, each with its item's identity and last
        played date (`whole`: all of them, the account's other rows dropped)."""
        service, profile, account = where
        with self.transaction() as conn:
            name = f"{CATCH_UP_CURSORS}:{account}"
            self.set_cursor(service, profile, name, header, now)
            if whole:
                conn.execute(
                    "DELETE FROM catch_up_counts WHERE service = ? AND profile = ? AND account = ?",
                    (service, profile, account),
                )
            conn.executemany(
                "INSERT INTO catch_up_counts"
                " (service, profile, account, item, play_count, identity, played_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (service, profile, account, item)"
                " DO UPDATE SET play_count = excluded.play_count, identity = excluded.identity,"
                " played_at = excluded.played_at",
                [
                    (service, profile, account, item, n, known, at)
                    for item, (n, known, at) in counts.items()
                ],
            )

    def forget_catch_up(self, service: str, profile: str, account: str) -> None:
        """Forget all the catch-up keeps of `account` for `profile` (catchup.py `State`, and
        since when no round read it), in one transaction: its next read is a first one."""
        names = [f"{CATCH_UP_CURSORS}{kind}:{account}" for kind in ("", "_at", "_left")]
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM cursors WHERE service = ? AND profile = ? AND name IN (?, ?, ?)",
                (service, profile, *names),
            )
            conn.execute(
                "DELETE FROM catch_up_counts WHERE service = ? AND profile = ? AND account = ?",
                (service, profile, account),
            )

    def cursors_named(self, service: str, prefix: str) -> list[tuple[str, str, str]]:
        """(profile, name, value) of `service`'s cursors whose name starts with `prefix`."""
        rows = self._query(
            "SELECT profile, name, value FROM cursors WHERE service = ?"
            " AND substr(name, 1, ?) = ? ORDER BY profile, name",
            (service, len(prefix), prefix),
        )
        return [(str(row["profile"]), str(row["name"]), str(row["value"])) for row in rows]

    def cache_get(self, namespace: str, lookup: str, now: float) -> tuple[bool, Any]:
        """(hit, value). A cached "not found" is a hit whose value is None."""
        rows = self._query(
            "SELECT result FROM id_cache WHERE namespace = ? AND lookup = ? AND expires_at > ?",
            (namespace, lookup, now),
        )
        if not rows:
            return False, None
        result = rows[0]["result"]
        return True, None if result is None else json.loads(result)

    def cache_expires(self, namespace: str, lookup: str, now: float) -> float | None:
        """When an entry that has not expired at `now` expires (None: there is none)."""
        rows = self._query(
            "SELECT expires_at FROM id_cache WHERE namespace = ? AND lookup = ? AND expires_at > ?",
            (namespace, lookup, now),
        )
        return float(rows[0]["expires_at"]) if rows else None

    def cache_put(
        self,
        namespace: str,
        lookup: str,
        value: Any,
        now: float,
        ttl: float,
        *,
        synced: bool | Literal["always"] = True,
    ) -> None:
        """Keep `value` for `ttl` seconds, synced to disk as `mirror_put`'s `synced` says."""
        with self._sync_level(synced):
            self.cache_put_many(namespace, {lookup: value}, now, ttl)

    def cache_claim(self, namespace: str, lookup: str, value: Any, now: float, ttl: float) -> bool:
        """`cache_put` unless an entry holding another value has not expired; whether it was
        kept. One transaction: of two processes claiming at once, one gets it."""
        text = json.dumps(value)
        with self.transaction() as conn:
            held = conn.execute(
                "SELECT result FROM id_cache WHERE namespace = ? AND lookup = ? AND expires_at > ?",
                (namespace, lookup, now),
            ).fetchone()
            if held is not None and held[0] != text:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO id_cache"
                " (namespace, lookup, result, fetched_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (namespace, lookup, text, now, now + ttl),
            )
        return True

    def cache_put_many(
        self, namespace: str, values: Mapping[str, Any], now: float, ttl: float
    ) -> None:
        """`cache_put` for several lookups at once, in one transaction."""
        if not values:
            return
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO id_cache"
                " (namespace, lookup, result, fetched_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                [
                    (namespace, lookup, None if v is None else json.dumps(v), now, now + ttl)
                    for lookup, v in values.items()
                ],
            )

    def cache_items(self, namespace: str, now: float) -> list[tuple[str, Any]]:
        """(lookup, value) of every entry of `namespace` that has not expired."""
        rows = self._query(
            "SELECT lookup, result FROM id_cache WHERE namespace = ? AND expires_at > ?",
            (namespace, now),
        )
        return [
            (row["lookup"], None if row["result"] is None else json.loads(row["result"]))
            for row in rows
        ]

    def cache_forget(self, namespace: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM id_cache WHERE namespace = ?", (namespace,))

    def cache_update(
        self,
        namespace: str,
        lookup: str,
        now: float,
        change: Callable[[Any], tuple[Any, float, Any]],
        *,
        renew: bool = False,
    ) -> Any:
        """Change one entry atomically, also against other processes (BEGIN IMMEDIATE): `change`
        gets its value (None when there is none or it expired) and returns the new value, its
        ttl (0 or less deletes it) and the result to return. An unchanged value is not written,
        unless `renew`: then its ttl starts again."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT result FROM id_cache WHERE namespace = ? AND lookup = ? AND expires_at > ?",
                (namespace, lookup, now),
            ).fetchone()
            old = None if row is None else row["result"]
            value, ttl, result = change(None if old is None else json.loads(old))
            text = None if value is None else json.dumps(value)
            if ttl <= 0:
                conn.execute(
                    "DELETE FROM id_cache WHERE namespace = ? AND lookup = ?", (namespace, lookup)
                )
            elif row is None or text != old or renew:
                conn.execute(
                    "INSERT OR REPLACE INTO id_cache"
                    " (namespace, lookup, result, fetched_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (namespace, lookup, text, now, now + ttl),
                )
            return result

    def get_token(self, service: str, profile: str) -> dict[str, Any] | None:
        """A sign-in's token set; read before every use of its token, so a set another
        process stored since is told to `on_token_stored` here, before any use could quote it."""
        rows = self._query(
            "SELECT data FROM tokens WHERE service = ? AND profile = ?", (service, profile)
        )
        if not rows:
            return None
        text = rows[0]["data"]
        data: dict[str, Any] = json.loads(text)
        if self.on_token_stored and self._told_tokens.get((service, profile)) != text:
            self._tell_token_stored(service, profile, text, data)
        return data

    def put_token(
        self,
        service: str,
        profile: str,
        data: dict[str, Any],
        now: float,
        *,
        replacing: str | None = None,
    ) -> bool:
        """Store a token set atomically (a refresh token may be single-use: keep the newest);
        with `replacing`, only over a set holding that refresh token (or none): a refreshed
        pair must not replace a sign-in made meanwhile. Returns whether it was stored.

        Synced to disk whatever storage.durability says: after a power cut the old, spent
        refresh token would need a new sign-in."""
        with self._synchronous("FULL"), self.transaction() as conn:
            if replacing is not None:
                stored = self.get_token(service, profile)  # in this transaction
                if stored is not None and stored.get("refresh_token") != replacing:
                    return False
            conn.execute(
                "INSERT OR REPLACE INTO tokens (service, profile, data, updated_at)"
                " VALUES (?, ?, ?, ?)",
                (service, profile, text := json.dumps(data), now),
            )
        self._tell_token_stored(service, profile, text, data)
        return True

    def _tell_token_stored(
        self, service: str, profile: str, text: str, data: Mapping[str, Any]
    ) -> None:
        self._told_tokens[(service, profile)] = text
        for told in self.on_token_stored:
            told(service, profile, data)

    def token_texts(self, fields: Collection[str]) -> list[str]:
        """Every text the tokens table keeps under one of `fields`, of any service and profile."""
        found = []
        for row in self._query("SELECT data FROM tokens"):
            with contextlib.suppress(ValueError):
                data = json.loads(row["data"])
                if isinstance(data, dict):
                    found += [v for k, v in data.items() if k in fields and isinstance(v, str)]
        return found

    @property
    def journal_problem(self) -> str | None:
        """What to tell the user when SQLite keeps this database out of WAL mode, or None."""
        return None if self.path is None else journal_warning(self.path, self.journal_mode)

    @contextmanager
    def _synchronous(self, level: Literal["FULL", "NORMAL"]) -> Iterator[None]:
        """Commits made inside wait for the disk (FULL) or not (NORMAL: in WAL mode a power
        cut may lose them, never a crash, and a later FULL commit makes them durable too, the
        log being written in order), whatever storage.durability says; the store's lock is
        held throughout, so no other thread's commit runs at this level. Out of WAL mode
        NORMAL stays FULL: a rollback journal's unsynced commit may damage the file."""
        if level == "NORMAL" and self.journal_mode != WAL:
            level = "FULL"
        with self._locked():
            synchronous = self._conn.execute("PRAGMA synchronous").fetchone()[0]
            self._conn.execute(f"PRAGMA synchronous={level}")
            try:
                yield
            finally:
                self._conn.execute(f"PRAGMA synchronous={int(synchronous)}")

    def _sync_level(
        self, synced: bool | Literal["always"]
    ) -> contextlib.AbstractContextManager[None]:
        """Commits made inside wait for the disk as `synced` says: True as storage.durability
        says, False not (see `_synchronous`), "always" whatever storage.durability says."""
        if synced == "always":
            return self._synchronous("FULL")
        return contextlib.nullcontext() if synced else self._synchronous("NORMAL")

    def setting(self, name: str, make: Callable[[], str], now: float) -> str:
        """The stored value of a generated setting, created with `make()` on first use. Only
        the first use writes: a start while another process writes must not wait for it."""
        if known := self._query("SELECT value FROM settings WHERE name = ?", (name,)):
            return str(known[0]["value"])
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            if row:
                return str(row["value"])
            value = make()
            conn.execute(
                "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?)",
                (name, value, now),
            )
            return value

    def newly_told(self, topic: str, message: str, now: float) -> bool:
        """Whether `message` differs from what was last told under `topic` (a setting); it is
        noted as told. So a message is said once, and again once it changes; "" (nothing to
        tell) forgets it, so that it is said again should it come back. Writes only then."""
        if self.known_setting(topic) == (message or None):
            return False
        with self.transaction() as conn:
            if message:
                conn.execute(
                    "INSERT OR REPLACE INTO settings (name, value, updated_at) VALUES (?, ?, ?)",
                    (topic, message, now),
                )
            else:
                conn.execute("DELETE FROM settings WHERE name = ?", (topic,))
        return bool(message)

    def known_setting(self, name: str) -> str | None:
        """The stored value of a generated setting, or None if none was made (never writes)."""
        known = self._query("SELECT value FROM settings WHERE name = ?", (name,))
        return str(known[0]["value"]) if known else None

    def remember_account(self, learnt: AccountLearnt, now: float) -> None:
        """Remember what a route learnt of a media-server account outside a webhook's events
        (the catch-up's read of a server's accounts), as `IngestJob.learnt` does."""
        with self.transaction() as conn:
            _remember_account(conn, learnt, now)

    def webhook_account_ids(self) -> list[tuple[str, str, str, str, str, str]]:
        """(source, server, account id, profile, entry, name) of each media-server account id
        remembered for a name a profile listed, or name for an id it listed (account_ids.py:
        the entry tells which), the least recently learnt first."""
        rows = self._query(
            "SELECT source, server, account_id, profile, entry, name FROM webhook_account_ids"
            " ORDER BY learnt_at"
        )
        return [
            (row["source"], row["server"], row["account_id"], row["profile"], row["entry"],
             row["name"])
            for row in rows
        ]  # fmt: skip

    def saw_unlisted(self, seen: Unlisted, played: bool) -> None:
        """One more ignored webhook of an account no profile lists (unlisted.py): the one
        write an ignored webhook makes. `played`: it told of a completed play."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO unlisted_accounts (source, server, account, account_id, name,"
                " server_name, first_at, last_at, webhooks, plays) VALUES (?, ?, ?, ?, ?, ?, ?,"
                " ?, 1, ?) ON CONFLICT (source, server, account) DO UPDATE SET"
                " account_id = excluded.account_id, name = excluded.name,"
                " server_name = CASE WHEN excluded.server_name = '' THEN server_name"
                " ELSE excluded.server_name END, last_at = MAX(last_at, excluded.last_at),"
                " webhooks = webhooks + 1, plays = plays + excluded.plays",
                (
                    seen.source,
                    seen.server,
                    seen.account,
                    seen.account_id,
                    seen.name,
                    seen.server_name,
                    seen.first_at,
                    seen.last_at,
                    int(played),
                ),
            )

    def unlisted_accounts(self) -> list[Unlisted]:
        """The accounts no profile lists that sent webhooks, the most recently seen first."""
        rows = self._overview("SELECT * FROM unlisted_accounts ORDER BY last_at DESC")
        return [
            Unlisted(
                row["source"], row["server"], row["account"], row["account_id"], row["name"],
                row["server_name"], row["first_at"], row["last_at"], row["webhooks"],
                row["plays"], row["state"], row["profile"],
                frozenset(str(one) for one in json.loads(row["active"] or "[]")),
            )
            for row in rows
        ]  # fmt: skip

    def note_unlisted(self, unlisted: Unlisted) -> None:
        """Keep what the housekeeping found of an account (its state, the profile its alert
        named, the profiles seen sending since it began)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE unlisted_accounts SET state = ?, profile = ?, active = ?"
                " WHERE source = ? AND server = ? AND account = ?",
                (
                    unlisted.state,
                    unlisted.profile,
                    json.dumps(sorted(unlisted.active)),
                    unlisted.source,
                    unlisted.server,
                    unlisted.account,
                ),
            )

    def forget_unlisted(self, unlisted: Unlisted) -> None:
        """Forget an account a profile now takes the webhooks of."""
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM unlisted_accounts WHERE source = ? AND server = ? AND account = ?",
                (unlisted.source, unlisted.server, unlisted.account),
            )

    def saw_defaulted(self, seen: Unlisted) -> None:
        """Webhooks of an account the default profile takes for want of an entry
        (defaulted.py): `seen.webhooks` and `seen.plays` are those since its last write. A
        new row begins at the account's first event the database keeps for that profile (a
        week's), if earlier: on upgrade, it began before the table did."""
        with self.transaction() as conn:
            known = conn.execute(
                "SELECT 1 FROM defaulted_accounts WHERE source = ? AND server = ? AND account = ?",
                (seen.source, seen.server, seen.account),
            ).fetchone()
            if known is None:
                began = _first_event_of(conn, seen, seen.default_profile)
                if began is not None and began < seen.first_at:
                    seen = replace(seen, first_at=began)
            conn.execute(
                "INSERT INTO defaulted_accounts (source, server, account, account_id, name,"
                " server_name, default_profile, first_at, last_at, webhooks, plays) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, server, account) DO"
                " UPDATE SET account_id = excluded.account_id, name = excluded.name,"
                " server_name = CASE WHEN excluded.server_name = '' THEN server_name"
                " ELSE excluded.server_name END, default_profile = excluded.default_profile,"
                " last_at = MAX(last_at, excluded.last_at),"
                " webhooks = webhooks + excluded.webhooks, plays = plays + excluded.plays",
                (
                    seen.source,
                    seen.server,
                    seen.account,
                    seen.account_id,
                    seen.name,
                    seen.server_name,
                    seen.default_profile,
                    seen.first_at,
                    seen.last_at,
                    seen.webhooks,
                    seen.plays,
                ),
            )

    def defaulted_accounts(self) -> list[Unlisted]:
        """The accounts the default profile takes for want of an entry, the most recently
        seen first."""
        rows = self._overview("SELECT * FROM defaulted_accounts ORDER BY last_at DESC")
        return [
            Unlisted(
                row["source"], row["server"], row["account"], row["account_id"], row["name"],
                row["server_name"], row["first_at"], row["last_at"], row["webhooks"],
                row["plays"], row["state"], row["profile"],
                frozenset(str(one) for one in json.loads(row["active"] or "[]")),
                row["default_profile"],
            )
            for row in rows
        ]  # fmt: skip

    def note_defaulted(self, defaulted: Unlisted) -> None:
        """Keep what the housekeeping found of such an account (as `note_unlisted`)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE defaulted_accounts SET state = ?, profile = ?, active = ?"
                " WHERE source = ? AND server = ? AND account = ?",
                (
                    defaulted.state,
                    defaulted.profile,
                    json.dumps(sorted(defaulted.active)),
                    defaulted.source,
                    defaulted.server,
                    defaulted.account,
                ),
            )

    def forget_defaulted(self, defaulted: Unlisted) -> None:
        """Forget an account the default profile no longer takes for want of an entry."""
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM defaulted_accounts WHERE source = ? AND server = ? AND account = ?",
                (defaulted.source, defaulted.server, defaulted.account),
            )

    def count_tautulli_reports(self, reports: Reports, now: float) -> None:
        """Add a Tautulli webhook that records no event to its server's count
        (tautulliwatched.py)."""
        with self.transaction() as conn:
            _count_tautulli_reports(conn, reports, now)

    def tautulli_reports(self) -> list[Seen]:
        """Each Tautulli server's count (tautulliwatched.py), by server."""
        rows = self._query("SELECT * FROM tautulli_reports ORDER BY server")
        return [
            Seen(
                row["server"], row["name"], row["stops"], row["reached"], row["first_stop_at"],
                row["last_stop_at"], row["watched_at"],
            )
            for row in rows
        ]  # fmt: skip

    def forget_tautulli_reports(self, server: str, before: float) -> None:
        """Forget a Tautulli server's count, unless a report came after `before`."""
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM tautulli_reports WHERE server = ?"
                " AND MAX(COALESCE(last_stop_at, 0), COALESCE(watched_at, 0)) <= ?",
                (server, before),
            )

    def keep_for_plex(self, kept: Sequence[ForPlex], reports: Reports | None = None) -> None:
        """Keep Tautulli's reports of plays Plex's own webhook should send (forplex.py),
        before they are answered; with `reports`, the webhook's count (tautulliwatched.py),
        `now` its first report's receipt."""
        with self.transaction() as conn:
            if reports is not None and kept:
                _count_tautulli_reports(conn, reports, kept[0].received_at)
            conn.executemany(
                "INSERT INTO tautulli_for_plex (profile, server, account, account_id, name,"
                " item, received_at, body, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (k.profile, k.server, k.account, k.account_id, k.name, k.item,
                     k.received_at, k.body, k.state)
                    for k in kept
                ],
            )  # fmt: skip

    def for_plex(self, state: str | None = None) -> list[ForPlex]:
        """The reports kept for Plex's webhook (of `state` alone, when given), oldest first."""
        where, params = ("WHERE state = ?", (state,)) if state is not None else ("", ())
        rows = self._query(
            f"SELECT * FROM tautulli_for_plex {where} ORDER BY received_at, id", params
        )
        return [
            ForPlex(
                row["id"], row["profile"], row["server"], row["account"], row["account_id"],
                row["name"], row["item"], row["received_at"], row["body"], row["state"],
            )
            for row in rows
        ]  # fmt: skip

    def for_plex_due(self, before: float) -> bool:
        """Whether a report kept for Plex's webhook (not taken) came at `before` or earlier:
        one indexed look, the plays taken are not read."""
        rows = self._query(
            "SELECT 1 FROM tautulli_for_plex WHERE state = ? AND received_at <= ? LIMIT 1",
            (FOR_PLEX_WAITING, before),
        )
        return bool(rows)

    def sent_by_plex(
        self, profile: str, server: str, item: str, since: float, reported_at: float
    ) -> bool:
        """Whether Plex's own webhook told of `item` (its rating key) on `server` ("": any)
        for `profile`, by its events since `since`, the viewing Tautulli reported at
        `reported_at` (playback.sent_the_reported: not a playback of it begun again after)."""
        rows = self._query(
            "SELECT received_at, json_extract(payload, '$.action') AS action,"
            " json_extract(payload, '$.position_ms') AS position,"
            " json_extract(payload, '$.duration_ms') AS duration,"
            " json_extract(payload, '$.percent') AS percent"
            " FROM events WHERE source = 'plex' AND profile = ? AND received_at >= ?"
            " AND json_extract(payload, '$.item.source_key') = ?"
            f" AND (? = '' OR {_EVENT_SERVER} = ?) ORDER BY received_at, id LIMIT 1",
            (profile, since, item, server, server),
        )
        told = [
            (
                float(r["received_at"]),
                str(r["action"]),
                percent_watched(r["position"], r["duration"], r["percent"]),
            )
            for r in rows
        ]
        return sent_the_reported(reported_at, told)

    def settle_for_plex(self, one: ForPlex, state: str | None) -> None:
        """A kept report taken (`state` TAKEN, kept for the status) or dropped (None)."""
        with self.transaction() as conn:
            if state is None:
                conn.execute("DELETE FROM tautulli_for_plex WHERE id = ?", (one.id,))
            else:
                conn.execute("UPDATE tautulli_for_plex SET state = ? WHERE id = ?", (state, one.id))

    def forget_for_plex(self, one: ForPlex) -> None:
        """Forget the reports taken of `one`'s person and server (their alert is over)."""
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM tautulli_for_plex WHERE state = ? AND profile = ? AND server = ?"
                " AND account = ?",
                (FOR_PLEX_TAKEN, one.profile, one.server, one.account),
            )

    def last_from_server(self, source: str, server: str) -> dict[str, float]:
        """Each profile's last event from `source`'s `server` among those kept (a week, or
        longer while their deliveries wait)."""
        rows = self._overview(
            "SELECT profile, MAX(received_at) AS at FROM events WHERE source = ?"
            f" AND {_EVENT_SERVER} = ? GROUP BY profile",
            (source, server),
        )
        return {row["profile"]: row["at"] for row in rows}

    def last_webhooks(self, sources: Sequence[str] = ()) -> list[LastWebhook]:
        """When each webhook source (or each of `sources` alone) and server last had a
        webhook accepted: from the events recorded, and for those pruned since, from what the
        prune kept (one query)."""
        marks = ", ".join("?" for _ in sources)
        where = f" WHERE source IN ({marks})" if sources else ""
        webhooks = f"{where} AND source <> ?" if sources else " WHERE source <> ?"
        rows = self._overview(
            "SELECT last.source, last.server, last.at, COALESCE(named.name, '') AS name FROM"
            f" ({_LATEST_SERVERS} FROM ("
            f" SELECT source, {_EVENT_SERVER} AS server, MAX(received_at) AS at FROM events"
            f"{webhooks} GROUP BY 1, 2"
            f" UNION ALL SELECT source, server, at FROM webhooks_last_seen{where}"
            ") GROUP BY source, server) AS last LEFT JOIN webhook_server_names AS named"
            " ON named.source = last.source AND named.server = last.server WHERE last.n <= ?",
            (*sources, CAUGHT_UP, *sources, SERVERS_KEPT),
        )
        return [
            LastWebhook(str(r["source"]), str(r["server"]), float(r["at"]), str(r["name"]))
            for r in rows
        ]

    def caught_up_since(self, since: float) -> list[tuple[str, str, int, float]]:
        """(server kind, server id, plays, when the last was recorded) of the plays the
        catch-up recorded (catchup.py) at or after `since`, by server (`watchbridge status`,
        the status page). A play recorded again (a crash between queuing a read's plays and
        saving its state: the same profile, account, item and date, its writes the same keys)
        is one play."""
        play = (
            "json_array(profile, json_extract(payload, '$.account.id'),"
            " json_extract(payload, '$.item.source_key'), json_extract(payload, '$.occurred_at'))"
        )
        rows = self._overview(
            f"SELECT json_extract(payload, '$.source') AS kind, server, COUNT(DISTINCT {play})"
            f" AS n, MAX(received_at) AS at FROM (SELECT profile, payload, received_at,"
            f" {_EVENT_SERVER} AS server FROM events WHERE source = ? AND received_at >= ?)"
            " GROUP BY 1, 2 ORDER BY 1, 2",
            (CAUGHT_UP, since),
        )
        return [(str(r["kind"]), str(r["server"]), int(r["n"]), float(r["at"])) for r in rows]

    def recent_sources(self, last: int = 1000) -> set[str]:
        """The webhook sources of the `last` events recorded (a week's at most, see prune)."""
        rows = self._query(
            "SELECT DISTINCT source FROM (SELECT source FROM events ORDER BY id DESC LIMIT ?)",
            (last,),
        )
        return {str(row["source"]) for row in rows} - {CAUGHT_UP}

    def events_since(
        self, sources: Sequence[str], profile: str, since: float
    ) -> list[tuple[float, dict[str, Any]]]:
        """The events of `sources` for `profile` received at or after `since`, as recorded
        (`webhooks.event_record`), with when each was received, oldest first: what a catch-up
        checks the plays it found against (catchup.py). Called only when a read found plays:
        a scan of the week of events kept."""
        marks = ", ".join("?" for _ in sources)
        rows = self._query(
            "SELECT received_at, payload FROM events WHERE received_at >= ? AND profile = ?"
            f" AND source IN ({marks}) ORDER BY id",
            (since, profile, *sources),
        )
        found = []
        for row in rows:
            with contextlib.suppress(ValueError):
                payload = json.loads(row["payload"])
                if isinstance(payload, dict):
                    found.append((float(row["received_at"]), payload))
        return found

    def webhooks_pruned_to(self, source: str) -> float | None:
        """When the newest of `source`'s webhook events pruning reached was received (None:
        it reached none): before then its webhooks' record is no longer whole, after it
        nothing was deleted (`prune` keeps that time in webhooks_last_seen). A catch-up cannot
        check the plays it finds dated before then against it (catchup.py)."""
        rows = self._query(
            "SELECT MAX(at) AS at FROM webhooks_last_seen WHERE source = ?", (source,)
        )
        at = rows[0]["at"] if rows else None
        return None if at is None else float(at)

    def restore_untold(self) -> str | None:
        """When the backup copy this database was put back from was taken ("" unknown), until
        a process has told of it (`tell_restore`); None when there is nothing to tell."""
        return self.known_setting(RESTORED_COPY)

    def tell_restore(self, *, by_service: bool) -> str | None:
        """The restore to tell, taken by the one process that tells it: when the copy was
        taken ("" unknown); None when there is none, or another process took it first. One
        transaction reads and forgets it, so a service starting and a `watchbridge sync`
        starting at the same moment cannot both have it. One a sync takes is noted for the
        service's next start (`restore_told_elsewhere`); the service's own forgets that note.
        Nothing is written when there is nothing to take: a start must not wait for another
        process's write lock (a sync, a backup) to learn that."""
        if self.known_setting(RESTORED_COPY) is None:
            return None
        with self.transaction() as conn:
            found = conn.execute(
                "SELECT value FROM settings WHERE name = ?", (RESTORED_COPY,)
            ).fetchone()
            if found is None:
                return None
            conn.execute("DELETE FROM settings WHERE name = ?", (RESTORED_COPY,))
            if by_service:
                conn.execute("DELETE FROM settings WHERE name = ?", (RESTORE_TOLD,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO settings (name, value, updated_at) VALUES (?, ?, ?)",
                    (RESTORE_TOLD, found[0], time.time()),
                )
            return str(found[0])

    def restore_told_elsewhere(self) -> bool:
        """True once, for the service's start, when a `watchbridge sync` told of a restore
        since the service last started: the alive note is then the copy's, no absence."""
        if self.known_setting(RESTORE_TOLD) is None:
            return False
        with self.transaction() as conn:
            return bool(
                conn.execute("DELETE FROM settings WHERE name = ?", (RESTORE_TOLD,)).rowcount
            )

    def alive_at(self) -> float | None:
        """When the service last noted it was running (`note_alive`), if ever."""
        found = self._query("SELECT value FROM settings WHERE name = 'alive_at'")
        return float(found[0]["value"]) if found else None

    def alive_reading(self) -> Reading | None:
        """The service's last note that it was running, with the uptime and boot it was
        noted in when the note of them is of that very note (not one an older release, or a
        hand, left behind)."""
        alive_at = self.alive_at()
        if alive_at is None:
            return None
        with contextlib.suppress(TypeError, ValueError, KeyError):
            noted = json.loads(self.known_setting(ALIVE_CLOCK) or "null")
            if float(noted["wall"]) == alive_at:
                return Reading(alive_at, float(noted["uptime"]), str(noted["boot"]))
        return Reading(alive_at)

    def note_alive(
        self, now: float, reading: Reading | None = None, mine: Mapping[str, Any] | None = None
    ) -> Noted:
        """Note the service alive at `now`; `reading`: the uptime and boot of the note,
        `mine`: whose note it is (beside.Mine). Returns the note it replaced, read in the same
        transaction: another service's, when two write to one database (beside.py). Not
        waiting for the disk: the service's one write while idle, every ALIVE_EVERY, and on an
        SD card a sync takes 5-50 ms, with the store's lock (a webhook's record) held
        throughout. A power cut loses at most the last notes (the next boot's uptime is never
        compared with them), and the absence the next start tells then begins a few minutes
        early: never a shorter one."""
        with self._synchronous("NORMAL"), self.transaction() as conn:
            found = dict(
                conn.execute(
                    "SELECT name, value FROM settings WHERE name IN ('alive_at', ?)",
                    (ALIVE_CLOCK,),
                ).fetchall()
            )
            conn.execute(
                "INSERT OR REPLACE INTO settings (name, value, updated_at)"
                " VALUES ('alive_at', ?, ?)",
                (repr(now), now),
            )
            clock: dict[str, Any] = {"wall": now, **(mine or {})}
            if reading is not None and reading.uptime is not None and reading.boot:
                clock |= {"uptime": reading.uptime, "boot": reading.boot}
            if len(clock) > 1:
                conn.execute(
                    "INSERT OR REPLACE INTO settings (name, value, updated_at) VALUES (?, ?, ?)",
                    (ALIVE_CLOCK, json.dumps(clock), now),
                )
        with contextlib.suppress(TypeError, ValueError, KeyError):
            return Noted(float(found["alive_at"]), found.get(ALIVE_CLOCK))
        return Noted(None, found.get(ALIVE_CLOCK))

    # ------------------------------------------------------------------ mirrors

    def mirror_put(
        self,
        service: str,
        profile: str,
        collection: str,
        items: dict[str, Any],
        now: float,
        *,
        synced: bool | Literal["always"] = True,
    ) -> MirrorWritten:
        """Write `items` into the mirror, synced to disk as storage.durability says;
        `synced=False` does not wait for the disk (on an SD card a sync takes 10-50 ms): only
        for a record whose loss in a power cut costs a check on the service, never a second
        write there (a synced note written before the write says to check). That note is
        `synced="always"`: it waits for the disk whatever storage.durability says."""
        encoded = [(key, json.dumps(value)) for key, value in items.items()]
        return self.mirror_put_encoded(service, profile, collection, encoded, now, synced=synced)

    def mirror_put_encoded(
        self,
        service: str,
        profile: str,
        collection: str,
        items: Sequence[tuple[str, str]],
        now: float,
        *,
        synced: bool | Literal["always"] = True,
    ) -> MirrorWritten:
        """`mirror_put` with the items already encoded: (key, its value as JSON text), so
        that a caller inside a bigger transaction encodes them before it takes the lock."""
        with self._sync_level(synced), self.transaction() as conn:
            changes = conn.total_changes
            conn.executemany(
                _MIRROR_UPSERT, [(service, profile, collection, *i, now) for i in items]
            )
            changed = conn.total_changes != changes
            return _mirror_written_if(conn, service, profile, collection, changed)

    def profiles_with_state(self) -> set[str]:
        """The profiles the database keeps sign-ins, sync state or records of writes for."""
        rows = self._query("SELECT profile FROM cursors UNION SELECT profile FROM tokens")
        # "": no profile's (a refusal of the Plex server's own token, `refusals.SERVICE_WIDE`).
        found = {row["profile"] for row in rows} - {""}
        # The mirror can hold millions of rows: hop from one (service, profile) pair of its
        # key to the next instead of reading them all (at every start).
        pair = self._query("SELECT service, profile FROM mirror ORDER BY service, profile LIMIT 1")
        while pair:
            found.add(pair[0]["profile"])
            pair = self._query(
                "SELECT service, profile FROM mirror WHERE (service, profile) > (?, ?)"
                " ORDER BY service, profile LIMIT 1",
                (pair[0]["service"], pair[0]["profile"]),
            )
        return found

    def links_with_state(self) -> set[str]:
        """The links whose sync state (cursors of an applied run) the database keeps."""
        rows = self._query("SELECT DISTINCT name FROM cursors WHERE name LIKE 'link:%'")
        return {str(row["name"]).removeprefix("link:") for row in rows}

    def kept_for_profile(self, profile: str) -> KeptState:
        """What the database keeps for `profile`: its queue, dead letters, sign-ins and the
        links keeping sync state for it."""
        queued, dead = self._outbox_of("profile = ?", (profile,))
        tokens = self._query("SELECT service FROM tokens WHERE profile = ? ORDER BY 1", (profile,))
        links = self._query(
            "SELECT DISTINCT name FROM cursors WHERE profile = ? AND name LIKE 'link:%' ORDER BY 1",
            (profile,),
        )
        return KeptState(
            queued,
            dead,
            sign_ins=tuple(str(r["service"]) for r in tokens),
            links=tuple(str(r["name"]).removeprefix("link:") for r in links),
        )

    def kept_for_link(self, link: str) -> KeptState:
        """What the database keeps for `link`: the writes it queued, its dead letters and the
        profiles it keeps sync state for."""
        queued, dead = self._outbox_of("json_extract(payload, '$.link') = ?", (link,))
        profiles = self._query(
            "SELECT DISTINCT profile FROM cursors WHERE name = ? ORDER BY 1", (f"link:{link}",)
        )
        return KeptState(
            queued,
            dead,
            kept_off=len(self.kept_off(link=link)),
            profiles=tuple(str(r["profile"]) for r in profiles),
        )

    def move_profile(
        self,
        old: str,
        new: str,
        gave_up: str,
        now: float,
        lease: float = RUN_LEASE,
        cache: Mapping[str, Callable[[str], str | None]] | None = None,
        queued_later: Sequence[tuple[str, str]] = (),
    ) -> ProfileMoved:
        """Keep everything the database holds for profile `old` under `new` instead (a
        profile renamed in the config): sign-ins, accounts on record, link state, records of
        what watchbridge wrote, plays kept off, the queue and dead letters (their ordering and
        idempotency keys, which start with the profile's name, too), and the cache rows
        `cache` renames (by namespace: a row's new lookup, None for one not of `old`; one the
        new name has already stays as it was), and the outbox rows kept to be queued again
        later in the mirror collections `queued_later` (service, collection; by idempotency
        key): their keys, profile and ordering key, or they would be queued for `old`. The
        dead letters given up because the config lacked `old` (their reason holds `gave_up`)
        are queued again, in the same transaction: all of it happens, or none.

        Refuses (nothing moved) when the database keeps none of that for `old`, while a sync
        run is alive, or once `new` has sign-ins or sync state of its own: two people's state,
        or two starts of one link, cannot be merged."""
        with self.transaction() as conn:
            cache_moves = _cache_renamed(conn, old, cache or {})
            if not cache_moves and not any(
                _keeps_rows_of(conn, table, old) for table in _MOVED_BY_PROFILE
            ):
                return ProfileMoved(
                    refused=f"the database keeps nothing for profile {old}: nothing to move"
                )
            running = _links_running(conn, now - lease)
            if running:
                return ProfileMoved(
                    refused=f"a sync of {', '.join(running)} is running now: run this again "
                    "once it has finished (`watchbridge status` shows the links' runs)"
                )
            own = [t for t in ("tokens", "cursors", "mirror") if _keeps_rows_of(conn, t, new)]
            if own:
                return ProfileMoved(
                    refused=f"profile {new} already has sign-ins or sync state of its own "
                    f"(watchbridge used it since the rename): nothing was moved; give the "
                    f"profile its old name {old} back in the config instead"
                )
            # In this transaction: what moves, as `watchbridge status` counted it.
            kept = replace(self.kept_for_profile(old), kept_off=len(self.kept_off(profile=old)))
            for table in _KEPT_BY_PROFILE:
                conn.execute(f"UPDATE {table} SET profile = ? WHERE profile = ?", (new, old))
            conn.execute(
                "UPDATE OR IGNORE tautulli_servers SET profile = ? WHERE profile = ?", (new, old)
            )
            self._tautulli_servers = None  # read again
            prefix, start = f"{old}:", len(old) + 2
            conn.execute(
                "UPDATE outbox SET profile = ?, ordering_key = CASE"
                " WHEN substr(ordering_key, 1, ?) = ? THEN ? || substr(ordering_key, ?)"
                " ELSE ordering_key END WHERE profile = ?",
                (new, len(prefix), prefix, f"{new}:", start, old),
            )
            # A key already taken under the new name stays as it was (the same write queued
            # twice: the unique key keeps one of each).
            conn.execute(
                "UPDATE OR IGNORE outbox SET idempotency_key = ? || substr(idempotency_key, ?)"
                " WHERE profile = ? AND substr(idempotency_key, 1, ?) = ?",
                (f"{new}:", start, new, len(prefix), prefix),
            )
            for service, collection in queued_later:
                _rename_kept_rows(conn, service, collection, old, new)
            # The collections' versions and not-whole marks go with their rows: a history
            # replace cut halfway stays no whole copy under the new name.
            conn.execute(
                "UPDATE OR REPLACE mirror_versions SET profile = ? WHERE profile = ?", (new, old)
            )
            _mirrors_changed(conn, "profile = ?", (new,))
            conn.executemany(
                "UPDATE OR IGNORE id_cache SET lookup = ? WHERE namespace = ? AND lookup = ?",
                [(moved, namespace, lookup) for namespace, lookup, moved in cache_moves],
            )
            given_up = [
                int(row[0])
                for row in conn.execute(
                    "SELECT id FROM outbox WHERE status = 'dead' AND profile = ?"
                    " AND instr(COALESCE(last_error, ''), ?) > 0",
                    (new, gave_up),
                )
            ]
            # In the move's transaction: queued again after it, a crash in between would
            # leave them dead under the new name, and a rerun would find nothing to move.
            requeued = self.retry_dead(given_up, now).queued if given_up else 0
        return ProfileMoved(kept, requeued)

    def _outbox_of(self, where: str, params: tuple[str, ...]) -> tuple[int, int]:
        """(queued: pending or in flight, dead letters) of the outbox rows `where` picks."""
        rows = self._query(
            "SELECT status, COUNT(*) AS n FROM outbox WHERE status IN"
            f" ('pending', 'inflight', 'dead') AND {where} GROUP BY status",
            params,
        )
        counts = {str(r["status"]): int(r["n"]) for r in rows}
        return counts.get("pending", 0) + counts.get("inflight", 0), counts.get("dead", 0)

    def _reads_beside_the_lock(self) -> bool:
        """Whether a long read may go on a connection of its own (`ReadConnection`): only in
        WAL. In a rollback journal (a network share, see `journal_warning`) a reader's shared
        lock keeps the writer from committing, and a webhook's record would fail as "database
        is locked" after busy_timeout instead of waiting for the read under the store's lock."""
        return self.path is not None and self.journal_mode == WAL

    def mirror_get(self, service: str, profile: str, collection: str) -> dict[str, Any]:
        """A whole mirror collection. Outside a transaction of the caller's own it is read on
        a connection of its own, as `mirror_copy` reads: a reader's Plex history or listings
        are ~50,000 rows, a second and more to fetch on a busy machine, which every webhook's
        record waited for behind the store's lock. Inside one, the transaction's own view
        (what it wrote included) is read."""
        if not self._reads_beside_the_lock() or self._held_here():
            with self._locked():
                return _collection(self._conn, service, profile, collection)
        with self._collection_reads.connection() as reader:
            return _collection(reader, service, profile, collection)

    def mirror_get_if_whole(
        self, service: str, profile: str, collection: str
    ) -> dict[str, Any] | None:
        """`mirror_get`, or None while a replace in parts writes the collection, or when one
        was cut halfway (`mirror_replace_in_parts`): a mix of its rows and those before it,
        never to be taken for a whole copy of anything. Both read in one snapshot."""
        whole = (
            "SELECT 1 FROM mirror_versions WHERE service = ? AND profile = ? AND collection = ?"
            " AND replacing IS NOT NULL"
        )
        if not self._reads_beside_the_lock() or self._held_here():
            with self._locked():
                if self._query(whole, (service, profile, collection)):
                    return None
                return _collection(self._conn, service, profile, collection)
        with self._collection_reads.connection() as reader:
            reader.execute("BEGIN")  # one snapshot for the mark and the rows
            try:
                if reader.execute(whole, (service, profile, collection)).fetchone():
                    return None
                return _collection(reader, service, profile, collection)
            finally:
                reader.execute("COMMIT")

    def mirror_encoded(self, service: str, profile: str, collection: str) -> MirrorEncoded:
        """A whole mirror collection as stored, for a caller comparing it with rows it encoded
        itself (decoding 100,000 rows to compare them takes far longer); rows and version read
        in one snapshot, beside the lock as `mirror_get` reads (inside a transaction of the
        caller's own: its view)."""

        def read(conn: sqlite3.Connection) -> MirrorEncoded:
            names = (service, profile, collection)
            rows = {str(key): str(data) for key, data in conn.execute(_COLLECTION_ROWS, names)}
            return MirrorEncoded(rows, _version_of(conn, *names))

        if not self._reads_beside_the_lock() or self._held_here():
            with self._locked():
                return read(self._conn)
        with self._collection_reads.connection() as reader:
            reader.execute("BEGIN")  # one snapshot for the rows and the version
            try:
                return read(reader)
            finally:
                reader.execute("COMMIT")

    def mirror_copy(
        self,
        service: str,
        profile: str,
        collections: Sequence[str],
        kept: MirrorCopy | None = None,
    ) -> MirrorCopy:
        """Whole mirror collections, decoded, as one moment saw them all, read on a
        connection of their own: at a big library they are ~100,000 rows, a tenth of a
        second and more to fetch, which every webhook's record would wait for behind the
        store's lock. Of `kept` (an earlier copy), the collections still at its version are
        taken as they are, not read again: decoding them all for each batch of 200 rows kept
        the Plex deliverer's thread busy for most of a big link run. Only what is committed:
        never for a caller inside a transaction that wrote to them."""
        if not self._reads_beside_the_lock():
            with self._locked():  # one moment for all of them
                return self._copy(self._conn, service, profile, collections, kept)
        with self._mirror_reads.connection() as reader:
            reader.execute("BEGIN")  # one snapshot for all of them
            try:
                return self._copy(reader, service, profile, collections, kept)
            finally:
                reader.execute("COMMIT")

    @staticmethod
    def _copy(
        conn: sqlite3.Connection,
        service: str,
        profile: str,
        collections: Sequence[str],
        kept: MirrorCopy | None,
    ) -> MirrorCopy:
        versions: dict[str, int] = {}
        partial: set[str] = set()
        for collection, version, replacing in conn.execute(
            "SELECT collection, version, replacing FROM mirror_versions"
            " WHERE service = ? AND profile = ?",
            (service, profile),
        ):
            if collection in collections:
                versions[str(collection)] = int(version)
                if replacing is not None:
                    partial.add(str(collection))
        copy = MirrorCopy(service, profile, {}, {}, partial)
        for collection in collections:
            version = versions.get(collection)
            if version is not None:
                copy.versions[collection] = version
            if (
                kept is not None
                and version is not None
                and kept.versions.get(collection) == version
                and collection in kept.collections
            ):
                copy.collections[collection] = kept.collections[collection]
                continue
            copy.collections[collection] = _collection(conn, service, profile, collection)
        return copy

    def mirror_versions(self, service: str, profile: str) -> dict[str, int]:
        """The versions of a service's and profile's mirror collections (those versioned),
        as this thread's transaction sees them when it holds one."""
        rows = self._query(
            "SELECT collection, version FROM mirror_versions WHERE service = ? AND profile = ?",
            (service, profile),
        )
        return {str(r["collection"]): int(r["version"]) for r in rows}

    def mirror_any(self, service: str, profile: str, collection: str) -> bool:
        """Whether the mirror holds anything in a collection (one index lookup)."""
        rows = self._query(
            "SELECT 1 FROM mirror WHERE service = ? AND profile = ? AND collection = ? LIMIT 1",
            (service, profile, collection),
        )
        return bool(rows)

    def mirror_get_prefixed(
        self, service: str, profile: str, collection: str, prefix: str
    ) -> dict[str, Any]:
        """The entries whose key starts with `prefix` (a range scan of the primary key)."""
        rows = self._query(
            "SELECT item_key, data FROM mirror WHERE service = ? AND profile = ?"
            " AND collection = ? AND item_key >= ? AND item_key < ?",
            (service, profile, collection, prefix, prefix + "\U0010ffff"),
        )
        return {r["item_key"]: json.loads(r["data"]) for r in rows}

    def mirror_get_prefixed_dated(
        self, service: str, profile: str, collection: str, prefix: str
    ) -> dict[str, tuple[Any, float]]:
        """`mirror_get_prefixed`, each entry with when it was last written (`updated_at`: the
        clock of the process that wrote it, this one or another beside it)."""
        rows = self._query(
            "SELECT item_key, data, updated_at FROM mirror WHERE service = ? AND profile = ?"
            " AND collection = ? AND item_key >= ? AND item_key < ?",
            (service, profile, collection, prefix, prefix + "\U0010ffff"),
        )
        return {r["item_key"]: (json.loads(r["data"]), float(r["updated_at"])) for r in rows}

    def mirror_has(
        self, service: str, profile: str, collection: str, keys: Sequence[str]
    ) -> set[str]:
        """Which of `keys` the mirror holds."""
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            rows = self._query(
                "SELECT item_key FROM mirror WHERE service = ? AND profile = ? AND collection = ?"
                f" AND item_key IN ({', '.join('?' for _ in chunk)})",
                (service, profile, collection, *chunk),
            )
            found |= {r["item_key"] for r in rows}
        return found

    def mirror_keys_of(
        self, service: str, profile: str, collection: str, items: Sequence[str], sep: str = "@"
    ) -> set[str]:
        """The keys the mirror holds that are one of `items` followed by `sep` and more (a
        play's key: its item's alias at its minute), read off the key's index."""
        found: set[str] = set()
        after = chr(ord(sep) + 1)
        for item in items:
            rows = self._query(
                "SELECT item_key FROM mirror WHERE service = ? AND profile = ? AND collection = ?"
                " AND item_key >= ? AND item_key < ?",
                (service, profile, collection, item + sep, item + after),
            )
            found |= {r["item_key"] for r in rows}
        return found

    def mirror_replace(
        self, service: str, profile: str, collection: str, items: dict[str, Any], now: float
    ) -> MirrorWritten:
        """Make a mirror collection hold exactly `items` (one transaction)."""
        encoded = [(k, json.dumps(v)) for k, v in items.items()]
        return self.mirror_replace_encoded(service, profile, collection, encoded, now)

    def mirror_replace_encoded(
        self,
        service: str,
        profile: str,
        collection: str,
        items: Sequence[tuple[str, str]],
        now: float,
    ) -> MirrorWritten:
        """`mirror_replace` with the items already encoded: (key, its value as JSON text), so
        that a caller inside a bigger transaction encodes them before it takes the lock."""
        # Only the rows that differ are written: a run that read what the last one did
        # rewrote whole collections, each commit a wait for the disk and wear on an SD card.
        keys = json.dumps([key for key, _ in items])
        with self.transaction() as conn:
            changes = conn.total_changes
            conn.execute(
                "DELETE FROM mirror WHERE service = ? AND profile = ? AND collection = ?"
                " AND item_key NOT IN (SELECT value FROM json_each(?))",
                (service, profile, collection, keys),
            )
            conn.executemany(
                _MIRROR_UPSERT, [(service, profile, collection, *i, now) for i in items]
            )
            changed = conn.total_changes != changes
            return _mirror_written_if(conn, service, profile, collection, changed)

    def mirror_replace_in_parts(
        self,
        service: str,
        profile: str,
        collection: str,
        items: Mapping[str, Any],
        now: float,
        part: int = REPLACE_PART,
    ) -> bool:
        """Make a mirror collection hold exactly `items`, in transactions of `part` rows: a
        webhook's record waits for one of them, not for all (a Plex history of 43,000 rows
        held the store's lock ~0.4 s in one). Until the last ends, the collection is marked
        not whole (`mirror_get_if_whole`), for a reader meanwhile and after a crash halfway
        alike. Each row is meanwhile the old one or the new, never neither: the new rows go
        over the old first, and only then are those not among them taken out. Two replaces of
        one collection in one process go one after the other; one begun by another process
        (a `watchbridge sync` beside the service) takes the mark over, and this one stops at
        its next part, leaving the collection to it. Whether this replace ended (False: it
        stopped, its mark taken over or gone). Inside a transaction: one transaction."""
        encoded = [(key, json.dumps(value)) for key, value in items.items()]
        if self._held_here():
            self.mirror_replace_encoded(service, profile, collection, encoded, now)
            return True
        where = "service = ? AND profile = ? AND collection = ?"
        names = (service, profile, collection)
        # Its own: each part looks for it, so that two processes' parts never mix.
        mine = random.getrandbits(62)
        with self._replace_of(service, profile, collection):
            with self.transaction() as conn:
                _mirror_written(conn, *names)
                conn.execute(
                    f"UPDATE mirror_versions SET replacing = ? WHERE {where}", (mine, *names)
                )
            for start in range(0, len(encoded), part):
                # Not waiting for the disk: a power cut takes the last commits (WAL), never
                # one before them, so a part lost leaves the mark in place.
                with self._sync_level(False), self.transaction() as conn:
                    if not _replacing(conn, *names, mine):
                        return False
                    chunk = encoded[start : start + part]
                    self.mirror_put_encoded(service, profile, collection, chunk, now)
            wanted = set(items)
            extra = [
                key for key in self._keys_of(service, profile, collection) if key not in wanted
            ]
            parts = [extra[start : start + part] for start in range(0, len(extra), part)] or [[]]
            for taken in parts[:-1]:
                with self.transaction() as conn:
                    if not _replacing(conn, *names, mine):
                        return False
                    self.mirror_remove(service, profile, collection, taken)
            with self.transaction() as conn:
                if not _replacing(conn, *names, mine):
                    return False
                self.mirror_remove(service, profile, collection, parts[-1])
                conn.execute(f"UPDATE mirror_versions SET replacing = NULL WHERE {where}", names)
            return True

    def mirror_change_in_parts(
        self,
        service: str,
        profile: str,
        changes: Mapping[str, MirrorChange],
        was: Mapping[str, int | None],
        then: Callable[[sqlite3.Connection], None],
        now: float,
        part: int = REPLACE_PART,
    ) -> bool:
        """Write `changes` to mirror collections in transactions of `part` rows, then run
        `then` and end the write in one more: a webhook's record waits for one of them, not
        for all (a Plex read's maps at a big library are ~86,000 rows, ~0.5 s of the store's
        lock in one). From the first to the last, the collections are marked not whole
        (`MirrorCopy.partial`, `mirror_get_if_whole`), for a reader meanwhile and after a
        crash halfway alike. `was`: the versions the changes were worked out from; False
        (nothing more written, the marks left in place) as soon as another write of one of
        them is found (at the start, or between two parts: a deliverer writing as it goes, a
        replace by another process taking a mark over): the caller works the changes out
        again from what the store holds then. Nothing to change and no marks: `then` alone,
        the versions kept. Inside a transaction: one transaction, the changes worked out in
        it: the collections whole again, whoever's marks they had."""
        names = sorted(changes)
        if self._held_here():
            with self.transaction() as conn:
                self._change(conn, service, profile, changes, now)
                then(conn)
                _whole_again(conn, service, profile, names)
            return True
        mine = random.getrandbits(62)
        with contextlib.ExitStack() as replaces:
            for collection in names:  # one order: two of them never wait for each other
                replaces.enter_context(self._replace_of(service, profile, collection))
            with self.transaction() as conn:
                if any(_version_of(conn, service, profile, c) != was.get(c) for c in names):
                    return False
                # Nothing to change (a read finding nothing new) writes nothing and keeps the
                # versions, unless a write cut short left marks: those go with new versions.
                unchanged = not any(c.put or c.taken for c in changes.values())
                if unchanged and not any(_marked(conn, service, profile, c) for c in names):
                    then(conn)
                    return True
                expected = {c: _mark_replacing(conn, service, profile, c, mine) for c in names}
            for chunk in _parts(changes, part):
                # Not waiting for the disk: a power cut takes the last commits (WAL), never
                # one before them, so a part lost leaves the marks in place.
                with self._sync_level(False), self.transaction() as conn:
                    if not _still_mine(conn, service, profile, expected, mine):
                        return False
                    expected |= self._change(conn, service, profile, chunk, now)
            with self.transaction() as conn:
                if not _still_mine(conn, service, profile, expected, mine):
                    return False
                then(conn)
                _whole_again(conn, service, profile, names)
            return True

    @staticmethod
    def _change(
        conn: sqlite3.Connection,
        service: str,
        profile: str,
        changes: Mapping[str, MirrorChange],
        now: float,
    ) -> dict[str, int]:
        """Write `changes`; each collection's new version."""
        versions: dict[str, int] = {}
        for collection, change in changes.items():
            conn.executemany(
                "INSERT OR REPLACE INTO mirror (service, profile, collection, item_key, data,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(service, profile, collection, key, data, now) for key, data in change.put],
            )
            conn.executemany(
                "DELETE FROM mirror WHERE service = ? AND profile = ? AND collection = ?"
                " AND item_key = ?",
                [(service, profile, collection, key) for key in change.taken],
            )
            versions[collection] = _mirror_written(conn, service, profile, collection).after
        return versions

    def mirror_drop_part(
        self, service: str, profile: str, collection: str, part: int = REPLACE_PART
    ) -> bool:
        """Take up to `part` rows of a mirror collection out (one transaction, not waiting
        for the disk); the last one takes its version too. Whether it is gone."""
        with self._sync_level(False), self.transaction() as conn:
            taken = conn.execute(
                "DELETE FROM mirror WHERE rowid IN (SELECT rowid FROM mirror WHERE service = ?"
                " AND profile = ? AND collection = ? LIMIT ?)",
                (service, profile, collection, part),
            ).rowcount
            if taken < part:
                conn.execute(
                    "DELETE FROM mirror_versions WHERE service = ? AND profile = ?"
                    " AND collection = ?",
                    (service, profile, collection),
                )
                return True
            return False

    def mirror_collections(self, service: str, profile: str, prefix: str) -> list[str]:
        """The collections of a service and profile whose names start with `prefix` that
        were ever written through the store (those with a version: `mirror_versions`)."""
        rows = self._query(
            "SELECT collection FROM mirror_versions WHERE service = ? AND profile = ?"
            " AND collection >= ? AND collection < ?",
            (service, profile, prefix, prefix + "\U0010ffff"),
        )
        return [str(r["collection"]) for r in rows]

    @contextmanager
    def _replace_of(self, service: str, profile: str, collection: str) -> Iterator[None]:
        with self._replaces_lock:
            lock = self._replaces.setdefault((service, profile, collection), threading.Lock())
        with lock:
            yield

    def _keys_of(self, service: str, profile: str, collection: str) -> list[str]:
        """The keys a mirror collection holds, read beside the lock."""
        sql = "SELECT item_key FROM mirror WHERE service = ? AND profile = ? AND collection = ?"
        if not self._reads_beside_the_lock():
            return [str(r["item_key"]) for r in self._query(sql, (service, profile, collection))]
        with self._collection_reads.connection() as reader:
            return [str(key) for (key,) in reader.execute(sql, (service, profile, collection))]

    def mirror_remove(
        self, service: str, profile: str, collection: str, keys: Sequence[str]
    ) -> MirrorWritten:
        with self.transaction() as conn:
            changes = conn.total_changes
            conn.executemany(
                "DELETE FROM mirror WHERE service = ? AND profile = ? AND collection = ?"
                " AND item_key = ?",
                [(service, profile, collection, key) for key in keys],
            )
            changed = conn.total_changes != changes
            return _mirror_written_if(conn, service, profile, collection, changed)

    def start_over(
        self, change: AccountChange, now: float, carried: Mapping[str, str] | None = None
    ) -> int:
        """Forget what was kept for `change.profile`'s old account on `change.service`, and
        the state of the links using it, then remember the new account: all in one
        transaction, and only while the old account is still the one on record (two runs that
        both saw the change start over once). `carried`: mirror collections of the service
        kept under another name (old -> new) for its reader to judge against the new account,
        rows already there kept too. Returns the removals still to be sent to the old account
        (meant for its plays and ratings) now made dead letters, or -1 when another run
        already started over. The alert owed for the change is noted in the same
        transaction (`accounts.send_account_alerts` sends it), so each change is told once."""
        service, profile = change.service, change.profile
        carried = carried or {}
        with self.transaction() as conn:
            on_record = conn.execute(
                "SELECT value FROM cursors WHERE service = ? AND profile = ? AND name = ?",
                (service, profile, ACCOUNT_CURSOR),
            ).fetchone()
            if on_record is None or on_record[0] != change.before:
                return -1
            for old, new in carried.items():
                # Dated by the start over: `prune` drops what waits there too long.
                conn.execute(
                    "UPDATE OR REPLACE mirror SET collection = ?, updated_at = ?"
                    " WHERE service = ? AND profile = ? AND collection = ?",
                    (new, now, service, profile, old),
                )
            kept = tuple(carried.values())
            _mirrors_changed(conn, "profile = ?", (profile,))
            conn.execute(
                "DELETE FROM mirror WHERE service = ? AND profile = ?"
                f" AND collection NOT IN ({','.join('?' * len(kept))})",
                (service, profile, *kept),
            )
            conn.execute(
                "DELETE FROM cursors WHERE service = ? AND profile = ?", (service, profile)
            )
            conn.execute(
                "DELETE FROM catch_up_counts WHERE service = ? AND profile = ?", (service, profile)
            )
            for link in change.links:
                conn.execute(
                    "DELETE FROM mirror WHERE profile = ? AND (service = ?"
                    " OR (collection >= ? AND collection < ?))",
                    (profile, f"link:{link}", f"link:{link}:", f"link:{link};"),
                )
            for name in change.cursors:
                conn.execute("DELETE FROM cursors WHERE profile = ? AND name = ?", (profile, name))
            conn.execute(
                "DELETE FROM outbox WHERE target = ? AND profile = ? AND status = 'done'",
                (service, profile),
            )
            dead = conn.execute(
                "UPDATE outbox SET status = 'dead', updated_at = ?, last_error = ?"
                " WHERE target = ? AND profile = ? AND status = 'pending'"
                " AND action IN ('remove_play', 'remove_rating')",
                (now, change.not_sent(), service, profile),
            ).rowcount
            notes = [(service, ACCOUNT_CURSOR, change.after), *change.notes(int(dead))]
            conn.executemany(
                "INSERT OR REPLACE INTO cursors (service, profile, name, value, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(where, profile, name, value, now) for where, name, value in notes],
            )
            return int(dead)

    # ------------------------------------------------------------------ sync runs

    def start_run(self, link: str, now: float, lease: float = RUN_LEASE) -> int | None:
        """Record a new run of `link`, or None while another one is alive (its heartbeat is
        younger than `lease`). Check and insert are one write transaction, so two processes
        can never both start. Runs whose process died are closed as failed (`DIED`): killed
        every time (out of memory on a big first read), the link would never sync again."""
        with self.transaction() as conn:
            alive = conn.execute(
                f"SELECT 1 FROM sync_runs WHERE link = ? AND {_ALIVE}", (link, now - lease)
            ).fetchone()
            if alive:
                return None
            conn.execute(
                "UPDATE sync_runs SET outcome = 'failed', finished_at = ?, error = ?"
                " WHERE link = ? AND outcome = 'running'",
                (now, DIED, link),
            )
            cursor = conn.execute(
                "INSERT INTO sync_runs (link, started_at, heartbeat_at) VALUES (?, ?, ?)",
                (link, now, now),
            )
            return int(cursor.lastrowid or 0)

    def run_lease_ends(self, link: str, lease: float = RUN_LEASE) -> float:
        """When the lease of the running run(s) of `link` ends, unless a heartbeat renews it
        (0: none is running)."""
        (row,) = self._query(
            "SELECT MAX(COALESCE(heartbeat_at, started_at)) FROM sync_runs"
            " WHERE link = ? AND outcome = 'running'",
            (link,),
        )
        return float(row[0]) + lease if row[0] is not None else 0.0

    def heartbeat_run(self, run_id: int, now: float, progress: RunProgress | None = None) -> None:
        """Renew a running run's lease, and record how far it has got (`progress`, if given;
        the same write); a beat racing the run's end leaves its record as it finished."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE sync_runs SET heartbeat_at = ?, progress = COALESCE(?, progress)"
                " WHERE id = ? AND outcome = 'running'",
                (now, progress.to_json() if progress is not None else None, run_id),
            )

    def finish_run(
        self,
        run_id: int,
        now: float,
        outcome: str,
        counts: dict[str, int],
        api_calls: int,
        error: str | None = None,
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE sync_runs SET finished_at = ?, outcome = ?, counts = ?, api_calls = ?,"
                " error = ?, progress = NULL WHERE id = ?",
                (
                    now,
                    outcome,
                    json.dumps(counts),
                    api_calls,
                    None if error is None else masked_as_logged(error),
                    run_id,
                ),
            )

    def mask_kept_errors(self, mask: Callable[[str], str] = masked_as_logged) -> int:
        """Rewrite the error texts kept (deliveries' `last_error`, link runs' `error`) that
        `mask` changes: an earlier release kept them as the services said them, perhaps
        quoting a password or a token, which every text written since is masked of. How many
        texts changed. A look without the write lock first: a start with nothing to change
        (every one after the first) takes no lock, and starts on a read-only file alike."""
        with self._locked():
            if not any(_masked_column(self._conn, *kept, mask) for kept in _KEPT_ERRORS):
                return 0
            # The old text's bytes zeroed in its page too, not only left out of the row.
            was = self._conn.execute("PRAGMA secure_delete").fetchone()[0]
            self._conn.execute("PRAGMA secure_delete = ON")
            try:
                with self.transaction() as conn:  # read again under the write lock
                    changed = 0
                    for table, column in _KEPT_ERRORS:
                        masked = _masked_column(conn, table, column, mask)
                        conn.executemany(f"UPDATE {table} SET {column} = ? WHERE id = ?", masked)
                        changed += len(masked)
                    return changed
            finally:
                self._conn.execute(f"PRAGMA secure_delete = {int(was)}")

    def last_runs(self) -> list[SyncRun]:
        rows = self._overview(
            "SELECT * FROM sync_runs WHERE id IN (SELECT MAX(id) FROM sync_runs GROUP BY link)"
            " ORDER BY link"
        )
        return [SyncRun.from_row(r) for r in rows]

    def last_decided_runs(self) -> list[SyncRun]:
        """Each link's last run that went any way (not a dry run, not one going on or cut
        short by a stop): whether it waits for a review, say, while dry runs read its plan."""
        rows = self._overview(
            "SELECT * FROM sync_runs WHERE id IN (SELECT MAX(id) FROM sync_runs WHERE outcome"
            " NOT IN ('dry-run', 'running', 'interrupted') GROUP BY link) ORDER BY link"
        )
        return [SyncRun.from_row(r) for r in rows]

    def last_successes(self) -> dict[str, float]:
        """When each link's last run that went through (ok, or held for a confirmation) ended."""
        rows = self._overview(
            f"SELECT link, MAX(finished_at) AS t FROM sync_runs WHERE {_WENT_THROUGH} GROUP BY link"
        )
        return {r["link"]: r["t"] for r in rows}

    def recent_runs(self, link: str, limit: int) -> list[SyncRun]:
        """The link's last `limit` runs, newest first."""
        rows = self._query(
            "SELECT * FROM sync_runs WHERE link = ? ORDER BY id DESC LIMIT ?", (link, limit)
        )
        return [SyncRun.from_row(r) for r in rows]

    # ------------------------------------------------------------------ overview

    def oldest_pending_at(self) -> float | None:
        """When the oldest row still queued was queued (None: none is)."""
        oldest = self._overview("SELECT MIN(created_at) AS t FROM outbox WHERE status = 'pending'")
        return oldest[0]["t"] if oldest else None

    def status(self) -> StoreStatus:
        cursors = [
            (r["service"], r["profile"], r["name"], r["value"], r["updated_at"])
            for r in self._overview("SELECT * FROM cursors ORDER BY service, profile, name")
        ]
        counts = self.outbox_counts()
        # Each held profile's first reason before any's second: one person's reasons (a
        # backlog rate-limited minute after minute, each its own "until") must not crowd out
        # another's lost sign-in. Holds first (a lost sign-in, an outage: a hold clears
        # failing_since), then most rows. A row whose earlier send may have landed waits for
        # the same reason as the rows beside it, only marked (`unsure`): counted with them, or
        # a hold of two rows would show as two holds of one each. So are the rows one sign-in
        # holds (`_HOLD_CAUSE`), said in the words of the one held last.
        reasons = self._overview(
            "SELECT target, profile, last_error, n, t, service_waits, since FROM ("
            " SELECT target, profile, MAX(CASE WHEN newest = 1 THEN reason END) AS last_error,"
            " COUNT(*) AS n, MIN(next_attempt_at) AS t, MAX(failing_since IS NOT NULL) AS failing,"
            # Each of them held as the service's own (a target held as a whole, a rate limit).
            f" MIN(COALESCE(held = '{HELD_TARGET}', 0) OR reason LIKE '{RATE_LIMITED}%')"
            " AS service_waits, MIN(created_at) AS since"
            " FROM (SELECT target, profile, next_attempt_at, failing_since, cause, reason,"
            "  held, created_at,"
            "  ROW_NUMBER() OVER (PARTITION BY target, profile, cause"
            "   ORDER BY updated_at DESC, id DESC) AS newest"
            f"  FROM (SELECT *, {_UNMARKED_REASON} AS reason, {_HOLD_CAUSE} AS cause FROM outbox"
            f"   WHERE status = 'pending' AND last_error IS NOT NULL AND NOT {_UNMATCHED}))"
            " GROUP BY target, profile, cause)"
            " ORDER BY ROW_NUMBER() OVER (PARTITION BY target, profile ORDER BY failing, n DESC,"
            " t), failing, n DESC, target, profile"
        )
        waiting = reasons[:WAITING_SHOWN]
        return StoreStatus(
            outbox=counts,
            dead_letters=counts["dead"],
            unmatched=self.unmatched_count(),
            oldest_pending_at=self.oldest_pending_at(),
            cursors=cursors,
            last_runs=self.last_runs(),
            last_success_at=self.last_successes(),
            waiting=[
                Waiting(
                    r["target"],
                    r["profile"],
                    r["last_error"],
                    r["n"],
                    r["t"],
                    bool(r["service_waits"]),
                    r["since"],
                )
                for r in waiting
            ],
            waiting_left_out=len(reasons) - len(waiting),
            behind=self.waiting_behind(),
            kept_off=self.kept_off_counts(),
            sent=self.sent_counts(),
            dead_shown=self.newest_dead_letters(DEAD_SHOWN) if counts["dead"] else [],
        )

    def newest_dead_letters(self, limit: int) -> list[DeadLetter]:
        """The last `limit` rows given up, newest first, as the status page lists them."""
        rows = self._overview(
            "SELECT * FROM outbox WHERE status = 'dead' ORDER BY updated_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        dead = [OutboxItem.from_row(r) for r in rows]
        return [
            DeadLetter(
                d.id,
                d.target,
                d.profile,
                d.action,
                d.describe(),
                d.updated_at,
                (d.last_error or "gave up").removeprefix(UNKNOWN_OUTCOME).removeprefix(": "),
            )
            for d in dead
        ]

    def sent_counts(self) -> dict[str, int]:
        """The done rows (kept a week) a person counts as sent, by action: each play and
        rating written, once; not a skipped one, nor a scrobble's start or pause."""
        marks = ", ".join("?" for _ in COUNTED_SENT)
        rows = self._overview(
            "SELECT action, COUNT(*) AS n FROM outbox WHERE status = 'done'"
            f" AND action IN ({marks}) AND (last_error IS NULL OR last_error NOT LIKE ?)"
            " GROUP BY action",
            (*COUNTED_SENT, SKIPPED + "%"),
        )
        return {r["action"]: int(r["n"]) for r in rows}

    def reset(
        self,
        now: float,
        keep_mirror: Sequence[tuple[str, str]] = (),
        keep_cache: Sequence[str] = (),
        lease: float = RUN_LEASE,
    ) -> list[str]:
        """Forget all sync state (mirrors, cursors, cache, runs, queue); keep sign-ins, and
        the mirror collections `keep_mirror` ((service, collection)) and cache namespaces
        `keep_cache` name: records of what watchbridge wrote, which no service tells again.

        Forgets nothing while a sync run is alive and returns its links instead (empty: done):
        what it writes after the reset would bring part of the forgotten state back, and its
        end could be recorded on a new run's record."""
        with self.transaction() as conn:
            running = _links_running(conn, now - lease)
            if running:
                return running
            for table in (
                "outbox",
                "events",
                "cursors",
                "catch_up_counts",
                "sync_runs",
                "playback_sessions",
            ):
                # Table names come from this literal tuple, never from input.
                conn.execute(f"DELETE FROM {table}")
            kept = " AND ".join(["NOT (service = ? AND collection = ?)"] * len(keep_mirror))
            _mirrors_changed(conn, "1")
            conn.execute(
                f"DELETE FROM mirror WHERE {kept or '1'}",
                [name for pair in keep_mirror for name in pair],
            )
            namespaces = ",".join("?" * len(keep_cache))
            conn.execute(f"DELETE FROM id_cache WHERE namespace NOT IN ({namespaces})", keep_cache)
        return []


def _first_event_of(conn: sqlite3.Connection, account: Unlisted, profile: str) -> float | None:
    """When the earliest event kept of `account` (its source, server and key) for `profile`
    was received, if one is: a scan of the week of events kept, made once per account."""
    rows = conn.execute(
        "SELECT received_at, json_extract(payload, '$.account.id') AS id,"
        " json_extract(payload, '$.account.name') AS name FROM events"
        f" WHERE source = ? AND profile = ? AND {_EVENT_SERVER} = ? ORDER BY received_at",
        (account.source, profile, account.server),
    )
    for row in rows:
        id_, name = row["id"], row["name"]
        key = account_key(None if id_ is None else str(id_), None if name is None else str(name))
        if key == account.account:
            return float(row["received_at"])
    return None
