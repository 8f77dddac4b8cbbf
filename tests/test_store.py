"""The SQLite store: durability settings, migrations, the outbox and its atomic claims."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from tests.harness import paused_read, put_back, store_connections
from watchbridge.errors import StoreError
from watchbridge.playback import Session
from watchbridge.store import (
    BESIDE_LOOK,
    CLAIM_ALIVE,
    CLAIM_LEASE,
    CUT_SHORT,
    RESTORED_COPY,
    UNKNOWN_OUTCOME,
    WAL_SIZE_LIMIT,
    Checkpointer,
    IngestJob,
    IngestWriter,
    MirrorChange,
    NewOutboxRow,
    OutboxItem,
    Retried,
    Settlement,
    Store,
    TargetQueue,
    backup_path,
    migrations,
    ordering_key,
)


def row(key: str, ordering: str = "me:trakt:movie1", action: str = "scrobble") -> NewOutboxRow:
    return NewOutboxRow("trakt", "me", action, {"key": key}, ordering, key)


def test_database_and_its_journal_files_are_private(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db" / "state.db")
    store.set_cursor("trakt", "me", "history", "x", 1.0)
    for name in os.listdir(tmp_path / "db"):
        assert stat.S_IMODE(os.stat(tmp_path / "db" / name).st_mode) == 0o600, name
    store.close()


def test_a_database_others_can_read_is_made_private_when_opened(tmp_path: Path) -> None:
    Store.open(tmp_path / "wb.db").close()
    os.chmod(tmp_path / "wb.db", 0o644)  # copied back with `cp`, or left so by an older release
    with Store.open(tmp_path / "wb.db") as store:
        store.put_token("trakt", "me", {"access_token": "a"}, 1.0)
        for name in os.listdir(tmp_path):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def test_the_log_and_index_another_process_keeps_open_are_made_private_too(
    tmp_path: Path,
) -> None:
    Store.open(tmp_path / "wb.db").close()
    os.chmod(tmp_path / "wb.db", 0o644)
    other = sqlite3.connect(tmp_path / "wb.db")  # a sqlite3 shell: its -wal and -shm are 0644
    try:
        other.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        assert stat.S_IMODE(os.stat(tmp_path / "wb.db-shm").st_mode) == 0o644
        with Store.open(tmp_path / "wb.db"):
            for name in os.listdir(tmp_path):
                assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    finally:
        other.close()


def test_folders_made_for_the_database_and_its_copy_are_the_owners_only_under_umask_000(
    tmp_path: Path,
) -> None:
    # Unraid runs containers with umask 000: a folder anyone may write lets anyone replace the
    # database with a copy of theirs, or put a -wal file of their own beside it for SQLite to
    # write the tokens into. The commands run as a user or cron runs them, with that umask.
    tmp_path.chmod(0o755)
    database = tmp_path / "data" / "watchbridge" / "wb.db"
    config = tmp_path / "watchbridge.yaml"
    config.write_text(f"storage: {{path: {database}}}\n", encoding="utf-8")
    copy = tmp_path / "copies" / "nightly" / "wb.db"
    for command in (["webhook-urls"], ["backup", "--to", str(copy)]):
        result = subprocess.run(
            [sys.executable, "-m", "watchbridge", *command, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=lambda: os.umask(0),
        )
        assert result.returncode == 0, result.stderr
    made = [database.parent, database.parent.parent, copy.parent, copy.parent.parent]
    assert {folder.name: stat.S_IMODE(folder.stat().st_mode) for folder in made} == {
        folder.name: 0o700 for folder in made
    }
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # one already there is left as it was


def _read_alive_in_another_process(path: Path) -> str:
    """What a second process (`watchbridge status`, an sqlite3 shell) reads, closing after."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute(\"SELECT value FROM settings WHERE name = 'alive_at'\").fetchone()[0]); "
        "c.close()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_writes_after_another_process_read_and_closed_are_not_lost(tmp_path: Path) -> None:
    # Opening an existing database must never drop this process's locks on it (an os.close of
    # any descriptor of the file does): another process closing last would then delete the
    # write-ahead log this store goes on writing to, and lose what it writes after.
    path = tmp_path / "watchbridge.db"
    Store.open(path).close()
    with Store.open(path) as store:
        store.note_alive(1.0)
        assert _read_alive_in_another_process(path) == "1.0"
        store.note_alive(2.0)
        assert _read_alive_in_another_process(path) == "2.0"
        assert (tmp_path / "watchbridge.db-wal").exists()


def test_wal_and_full_durability_by_default(store: Store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_normal_durability_when_configured(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db", durability="normal")
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1
    store.close()


def test_unwritable_path_gives_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=r"storage.path .*file/state.db: cannot open the database"):
        Store.open(blocker / "state.db")


def test_a_database_that_cannot_be_opened_says_what_to_check(tmp_path: Path) -> None:
    # The same words for a folder the user cannot write and a full disk ("disk I/O error").
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError) as refused:
        Store.open(blocker / "state.db")
    assert refused.value.message.endswith(
        ": check that its folder exists, that the user watchbridge runs as can write there,"
        " and that the disk is not full"
    )


def test_migration_from_an_older_schema_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="m002_settings")
    old.execute(
        "INSERT INTO cursors (service, profile, name, value, updated_at)"
        " VALUES ('trakt', 'me', 'history', '2026-01-01', 1)"
    )
    old.conn.commit()
    old.close()

    store = Store.open(path)
    assert store.get_cursor("trakt", "me", "history") == "2026-01-01"
    assert store.setting("webhook_secret", lambda: "generated", 2.0) == "generated"
    assert [m.name for m in migrations.pending(store.db)] == []
    store.close()


def outbox_before(path: Path, migration: str, rows: list[dict[str, Any]]) -> None:
    """A database as the version before `migration` left it, with these outbox rows."""
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before=migration)
    for row in rows:
        values = {"profile": "me", "action": "play", "payload": "{}", "next_attempt_at": 5}
        values |= {"created_at": 1, "updated_at": 5, "ordering_key": row["idempotency_key"]}
        old["outbox"].insert(values | row)
    old.conn.commit()
    old.close()


def test_dead_letters_of_an_older_version_are_not_alerted_again_after_the_upgrade(
    tmp_path: Path,
) -> None:
    # That version alerted each dead letter as it died; failed rows keep their age.
    path = tmp_path / "old.db"
    outbox_before(
        path,
        "m007_outbox_failing_since_and_told",
        [
            {"target": "trakt", "idempotency_key": "dead", "status": "dead", "attempts": 12},
            {"target": "trakt", "idempotency_key": "failed", "status": "pending", "attempts": 2},
        ],
    )
    store = Store.open(path)
    assert store.untold_dead("trakt", 10.0).count == 0
    (failed,) = store.claim("w", 10.0)
    assert failed.failing_since == 1
    store.close()


def test_rows_an_older_version_held_for_a_sign_in_wait_for_one_after_the_upgrade(
    tmp_path: Path,
) -> None:
    # That version kept only the error saying how to sign in again; other waits stay as they
    # were (an outage's, an unmatched row's naming the Plex token, a dead letter's).
    path = tmp_path / "old.db"
    auth = "trakt: Trakt no longer accepts the sign-in of profile ann: run `watchbridge auth trakt`"
    password = "Serializd refused the email or password of profile bob: check profiles.bob."
    errors = {
        ("trakt", "ann", "pending"): auth,
        ("serializd", "bob", "pending"): password + "accounts.serializd (tried again hourly)",
        ("trakt", "cat", "pending"): "trakt: answered 503 after 3 attempt(s)",
        ("plex", "dan", "pending"): "unmatched: set services.plex.url and services.plex.token",
        ("trakt", "eve", "dead"): auth,
    }
    rows = [
        {"target": target, "profile": profile, "status": status, "last_error": error}
        | {"idempotency_key": profile}
        for (target, profile, status), error in errors.items()
    ]
    outbox_before(path, "m012_outbox_waits_for_sign_in", rows)
    store = Store.open(path)
    waiting = [p for t, p, _ in errors if store.waits_for_sign_in(t, p)]
    assert waiting == ["ann", "bob"]
    store.close()


def test_rows_an_older_version_held_for_the_plex_servers_own_token_wait_for_no_sign_in(
    tmp_path: Path,
) -> None:
    # That version told them from a sign-in hold by their words only: a profile's sign-in
    # (`watchbridge auth plex`) made them due, to be refused again. Once the upgrade marked
    # them, only a changed config (the owner's current token) does.
    path = tmp_path / "old.db"
    server = (
        "Plex: profile ann: deleting history row 7: the Plex server does not accept"
        " services.plex.token (401): set the server owner's current token there"
    )
    person = "Plex: profile bob: the Plex server does not accept their token (401): run ..."
    rows = [
        {"target": "plex", "profile": profile, "last_error": error, "idempotency_key": profile}
        | {"waits_for_sign_in": 1, "held": "profile", "next_attempt_at": 900}
        for profile, error in [("ann", server), ("bob", person)]
    ]
    outbox_before(path, "m038_outbox_waits_for_server_token", rows)
    store = Store.open(path)
    try:
        assert [p for p in ("ann", "bob") if store.waits_for_sign_in("plex", p)] == ["bob"]
        assert store.held_for_sign_in() == [("plex", "bob")]
        assert store.resume_after_sign_in("plex", "ann", 10.0) == 0
        assert store.resume_after_sign_in("plex", "bob", 10.0) == 1
        store.due_after_config_change("before", 10.0)  # the first start keeps the config's
        assert store.due_after_config_change("the owner's new token", 20.0) == 1  # ann's
    finally:
        store.close()


def test_rows_an_older_version_held_for_a_media_servers_key_wait_for_that_server(
    tmp_path: Path,
) -> None:
    # That version flagged rows held for the Plex server's token (m038) but not those a
    # Jellyfin or Emby server's API key held for Trakt, AniList or Serializd: the profile's
    # sign-in there was said to be what they waited for. Once the upgrade marked them, each
    # waits for its server, which lifts them once it takes the key again.
    path = tmp_path / "old.db"
    jellyfin = (
        "the Jellyfin server does not accept services.jellyfin.api_key (401): create an API"
        " key in Jellyfin's dashboard (API Keys) and set it there"
    )
    plex = "Plex: profile ann: the Plex server does not accept services.plex.token (401): ..."
    expired = "Trakt no longer accepts the sign-in of profile dan: run `watchbridge auth trakt`"
    errors = {
        ("trakt", "ann"): (jellyfin, 0),
        ("serializd", "bob"): (jellyfin.replace("Jellyfin", "Emby").replace("jellyfin", "emby"), 0),
        ("plex", "ann"): (plex, 1),
        ("trakt", "dan"): (expired, 0),
    }
    rows = [
        {
            "target": target,
            "profile": profile,
            "last_error": error,
            "idempotency_key": target + profile,
        }
        | {"waits_for_sign_in": 1, "waits_for_server_token": flag, "next_attempt_at": 900}
        for (target, profile), (error, flag) in errors.items()
    ]
    outbox_before(path, "m039_outbox_waits_for_server", rows)
    store = Store.open(path)
    try:
        assert "waits_for_server_token" not in store.db["outbox"].columns_dict
        waiting = [pair for pair in errors if store.waits_for_sign_in(*pair)]
        assert waiting == [("trakt", "dan")]
        assert store.resume_after_sign_in("trakt", "ann", 10.0) == 0
        assert store.waiting_for_server("jellyfin") == ["ann"]
        assert store.waiting_for_server("emby") == ["bob"]
        assert store.waiting_for_server("plex") == ["ann"]
        assert store.held_for_servers() == {"trakt", "serializd", "plex"}
        assert store.lift_server_holds("jellyfin", 10.0) == 1
        assert store.next_due(["trakt"]) == 10.0
        assert store.lift_server_holds("jellyfin", 10.0) == 0
    finally:
        store.close()


def test_rows_m038_flagged_wait_for_the_plex_server_on_a_sqlite_that_cannot_drop_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite before 3.35 (an older NAS's Python) keeps m038's column: m039 must still carry
    # its flag over, rows in flight at the upgrade included, and nothing may read the old
    # column after it (a row settled since would be held again by its stale flag).
    path = tmp_path / "old.db"
    plex = "Plex: profile ann: the Plex server does not accept services.plex.token (401): ..."
    rows = [
        {"target": "plex", "profile": "ann", "idempotency_key": "held", "last_error": plex}
        | {"waits_for_sign_in": 1, "waits_for_server_token": 1, "next_attempt_at": 900},
        {"target": "plex", "profile": "bob", "idempotency_key": "flying", "last_error": plex}
        | {"waits_for_sign_in": 1, "waits_for_server_token": 1, "status": "inflight"},
    ]
    outbox_before(path, "m039_outbox_waits_for_server", rows)
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    store = Store.open(path)
    try:
        assert "waits_for_server_token" in store.db["outbox"].columns_dict  # kept, unused
        flags = "SELECT idempotency_key, waits_for_server FROM outbox ORDER BY id"
        assert [tuple(r) for r in store.db.execute(flags)] == [("held", "plex"), ("flying", "plex")]
        assert store.waiting_for_server("plex") == ["ann"]  # bob's: its try under way decides
        assert store.lift_server_holds("plex", 10.0) == 1
        (item,) = store.claim("w", 10.0, limit=5)
        store.settle(10.0, [Settlement(item.id, "done")])
        assert store.waiting_for_server("plex") == []
        assert store.held_for_servers() == set()
    finally:
        store.close()


def test_trakt_ratings_queued_before_the_upgrade_take_turns_apart_from_plays(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    rows = [
        {"target": target, "action": action, "idempotency_key": f"{target}-{action}"}
        | {"ordering_key": f"me:{target}:movie:imdb:tt1"}
        for target, action in [("trakt", "rating"), ("trakt", "play"), ("serializd", "rating")]
    ]
    outbox_before(path, "m008_trakt_ratings_ordered_apart", rows)
    store = Store.open(path)
    keys = {row.idempotency_key: row.ordering_key for row in store.claim("w", 10.0)}
    assert keys == {
        "trakt-rating": ordering_key("me", "trakt", "movie:imdb:tt1", "rating"),
        "trakt-play": "me:trakt:movie:imdb:tt1",
        "serializd-rating": "me:serializd:movie:imdb:tt1",
    }
    store.close()


def test_a_dead_letter_retried_while_its_alert_was_sent_is_owed_one_if_it_dies_again(
    store: Store,
) -> None:
    store.enqueue([row("k1")], 1.0)
    (item,) = store.claim("w", 1.0)
    store.mark_dead(item.id, 2.0, "gave up")
    told = store.untold_dead("trakt", 2.5)
    store.retry_dead(None, 3.0)  # `deadletters retry` while the alert was on its way
    store.told_dead("trakt", told, 4.0)
    (again,) = store.claim("w", 5.0)
    store.mark_dead(again.id, 6.0, "gave up")
    assert [r.id for r in store.untold_dead("trakt", 7.0).latest] == [item.id]
    assert store.untold_dead_targets() == ["trakt"]


def test_many_dead_letters_are_counted_and_only_the_latest_read(store: Store) -> None:
    store.enqueue([row(f"k{n}", ordering=f"o{n}") for n in range(8)], 1.0)
    for item in store.claim("w", 1.0, limit=8):
        store.mark_dead(item.id, 2.0, "gave up")
    untold = store.untold_dead("trakt", 3.0, latest=3)
    assert untold.count == 8 and [r.idempotency_key for r in untold.latest] == ["k5", "k6", "k7"]
    store.told_dead("trakt", untold, 4.0)
    assert store.untold_dead("trakt", 5.0).count == 0


def test_a_loop_blocked_on_the_store_before_the_writer_asks_it_still_runs_the_inserts(
    store: Store,
) -> None:
    # The loop may block on the lock in the moment between the writer taking it and asking
    # the loop for the inserts: it keeps checking while it waits.
    writer = IngestWriter(store)
    writer.LOOP_GRACE = 5.0
    released = threading.Event()

    def hold_the_store() -> None:
        with store.transaction():
            released.wait(5)

    holder = threading.Thread(target=hold_the_store)
    holder.start()

    async def until_the_writer_waits_for_the_lock() -> None:
        await asyncio.sleep(0.05)  # the writer now waits for the lock, as will this loop
        threading.Timer(0.05, released.set).start()

    try:
        added, read_seconds = _read_on_the_loop_during_a_write(
            store, writer, until_the_writer_waits_for_the_lock
        )
    finally:
        released.set()
        holder.join()
        writer.close()
    assert added == 1
    assert read_seconds < 1.0


def test_one_targets_due_rows_are_found_without_walking_another_targets_backlog(
    store: Store,
) -> None:
    # A held Trakt with thousands of queued plays must not slow every Serializd pass.
    plan = " ".join(
        str(r[3])
        for r in store.db.execute(
            "EXPLAIN QUERY PLAN SELECT MIN(next_attempt_at) FROM outbox"
            " WHERE status = 'pending' AND target IN (?)",
            ("serializd",),
        )
    )
    assert "outbox_due (status=? AND target=?" in plan


def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    Store.open(tmp_path / "s.db").close()
    store = Store.open(tmp_path / "s.db")
    assert len(migrations.applied(store.db)) == len(migrations._migrations)
    store.close()


def test_a_store_used_in_a_with_block_is_closed_after_it(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        store.status()
    with pytest.raises(sqlite3.ProgrammingError):
        store.status()


def test_event_and_outbox_rows_commit_together(store: Store) -> None:
    store.record_event(
        source="plex", kind="scrobble", payload={}, now=1.0, rows=[row("a"), row("b")]
    )
    assert store.outbox_counts()["pending"] == 2


def test_failed_event_transaction_leaves_nothing(store: Store) -> None:
    bad = NewOutboxRow("trakt", "me", "scrobble", {"x": object()}, "k", "bad")
    with pytest.raises(TypeError):
        store.record_event(
            source="plex", kind="scrobble", payload={}, now=1.0, rows=[row("a"), bad]
        )
    assert store.outbox_counts()["pending"] == 0
    assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_same_idempotency_key_is_enqueued_once(store: Store) -> None:
    assert store.enqueue([row("a")], 1.0) == 1
    assert store.enqueue([row("a")], 2.0) == 0
    assert store.outbox_counts()["pending"] == 1


def test_repeated_event_key_returns_first_event(store: Store) -> None:
    first = store.record_event(source="plex", kind="k", payload={}, now=1, idempotency_key="e1")
    again = store.record_event(
        source="plex", kind="k", payload={}, now=2, idempotency_key="e1", rows=[row("a")]
    )
    assert again == first
    assert store.outbox_counts()["pending"] == 0


def test_claim_takes_only_due_rows(store: Store) -> None:
    store.enqueue([NewOutboxRow("trakt", "me", "a", {}, "k1", "i1", not_before=100.0)], 1.0)
    assert store.claim("w", now=50.0) == []
    assert [i.idempotency_key for i in store.claim("w", now=100.0)] == ["i1"]


def test_claim_keeps_order_within_an_ordering_key(store: Store) -> None:
    store.enqueue([row("start"), row("stop"), row("other", ordering="me:trakt:movie2")], 1.0)
    first = store.claim("w", 2.0)
    assert [i.idempotency_key for i in first] == ["start", "other"]
    assert store.claim("w", 2.0) == []  # "stop" waits for "start"
    store.complete(first[0].id, 3.0)
    assert [i.idempotency_key for i in store.claim("w", 3.0)] == ["stop"]


def test_a_retrying_row_holds_back_later_rows_of_its_key(store: Store) -> None:
    store.enqueue([row("start"), row("stop")], 1.0)
    (start,) = store.claim("w", 2.0)
    store.retry_later(start.id, 2.0, next_attempt_at=60.0, error="503")
    assert store.claim("w", 10.0) == []
    assert [i.idempotency_key for i in store.claim("w", 60.0)] == ["start"]


def test_two_workers_never_claim_the_same_row(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    seed = Store.open(path)
    # A profile each: a worker leaves a profile another one delivers for to it (next test).
    seed.enqueue(
        [NewOutboxRow("trakt", f"p{n}", "scrobble", {}, f"k{n}", f"r{n}") for n in range(400)],
        1.0,
    )
    seed.close()
    claimed: dict[str, list[int]] = {"a": [], "b": []}
    both_ready = threading.Barrier(2)
    has_claimed = {name: threading.Event() for name in claimed}

    def work(name: str) -> None:
        store = Store.open(path)  # each worker its own connection, as two processes would
        other = "b" if name == "a" else "a"
        both_ready.wait()
        while batch := store.claim(name, 2.0, limit=7):
            claimed[name].extend(item.id for item in batch)
            has_claimed[name].set()
            # The workers really interleave, however loaded the machine: the first to claim
            # waits for the other's first claim.
            has_claimed[other].wait(timeout=10)
            time.sleep(0.001)
        store.close()

    threads = [threading.Thread(target=work, args=(name,)) for name in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = claimed["a"] + claimed["b"]
    assert len(every) == 400
    assert len(set(every)) == 400
    assert claimed["a"] and claimed["b"]


def keys(items: list[OutboxItem]) -> list[str]:
    return [item.idempotency_key for item in items]


def test_a_worker_leaves_a_target_and_profile_another_worker_delivers_to_alone(
    store: Store,
) -> None:
    # Each target checks what it wrote for a profile before it writes: two workers at once
    # (`watchbridge sync` beside the service) could both find nothing and send one play twice.
    store.enqueue(
        [
            row("a", ordering="me:trakt:1"),
            row("b", ordering="me:trakt:2"),
            NewOutboxRow("trakt", "you", "scrobble", {}, "you:trakt:1", "c"),
            NewOutboxRow("serializd", "me", "play", {}, "me:serializd:1", "d"),
        ],
        1.0,
    )
    assert keys(store.claim("cli-1", 2.0, limit=1)) == ["a"]
    assert keys(store.claim("service-1", 2.0)) == ["c", "d"]  # not "b"
    # Not due before the other is done, nor so late that it waits long after: looked at soon.
    assert store.next_due(["trakt"], "service-1", 2.0) == 2.0 + BESIDE_LOOK
    assert store.next_due(["trakt"]) == 1.0
    assert keys(store.claim("cli-1", 2.0)) == ["b"]  # its own worker goes on


def test_a_worker_killed_mid_delivery_holds_the_others_up_for_a_while_only(
    store: Store,
) -> None:
    store.enqueue([row("a", ordering="me:trakt:1"), row("b", ordering="me:trakt:2")], 1.0)
    store.claim("cli-1", 2.0, limit=1)
    store.renew_claims("cli-1", 100.0)  # still delivering
    assert store.claim("service-1", 100.0 + CLAIM_ALIVE - 1) == []
    # Killed since: it renews no more, and its claim no longer holds the others up.
    assert keys(store.claim("service-1", 100.0 + CLAIM_ALIVE + 1)) == ["b"]


def test_released_claims_return_to_pending_with_the_interrupted_try_counted(
    store: Store,
) -> None:
    store.enqueue([row("a")], 1.0)
    store.claim("dead-worker", 2.0)
    assert store.release_claims(3.0) == 1
    (again,) = store.claim("w", 3.0)
    assert again.idempotency_key == "a" and again.attempts == 1


def test_a_try_a_crash_cut_short_is_noted_after_the_rows_earlier_error(store: Store) -> None:
    targets = ("trakt", "serializd", "anilist")  # each one alone in its process
    store.enqueue(
        [
            NewOutboxRow(t, "me", "play", {}, f"me:{t}:1", key)
            for t, key in zip(targets, "abc", strict=True)
        ],
        1.0,
    )
    first, second, _ = (store.claim(f"service-{t}", 2.0, targets=[t])[0] for t in targets)
    store.note([first], "unmatched: no Trakt id", 2.0)
    store.note([second], "unknown outcome: sent", 2.0)
    store.release_claims(3.0)  # the process died
    for target in targets:
        store.claim(f"cli-{target}", 4.0, targets=[target])
    store.release_stale_claims(4.0 + CLAIM_LEASE + 1)  # and died again
    later = 4.0 + CLAIM_LEASE + 1
    by_key = {i.idempotency_key: i for t in targets for i in store.claim("w", later, targets=[t])}
    assert by_key["a"].last_error == f"unmatched: no Trakt id; then {CUT_SHORT}"
    assert by_key["b"].may_have_landed and by_key["b"].cut_short
    assert by_key["c"].last_error == CUT_SHORT
    assert all(i.attempts == 2 for i in by_key.values())


def crashes(store: Store) -> dict[str, tuple[int, int]]:
    """Each row's key -> (attempts, crashes)."""
    found = store.db.execute("SELECT idempotency_key, attempts, crashes FROM outbox")
    return {key: (attempts, crashed) for key, attempts, crashed in found.fetchall()}


def test_a_crash_spends_the_try_only_of_a_row_it_found_in_flight_alone(store: Store) -> None:
    # Any row of the batch may be what took the process down: each counts the crash, and
    # none spends an attempt on it; a row in flight alone took it down by itself.
    store.enqueue([row("a"), row("b", ordering="k2"), row("c", ordering="k3")], 1.0)
    store.claim("service-1", 2.0, limit=2)
    assert store.release_claims(3.0, "service-", settle=30.0) == 2
    assert crashes(store) == {"a": (0, 1), "b": (0, 1), "c": (0, 0)}
    assert not any(i.cut_short for i in store.claim("service-2", 4.0, limit=2))
    store.release_claims(5.0, "service-2", spend=False)  # a stop asked for: no crash
    assert crashes(store) == {"a": (0, 1), "b": (0, 1), "c": (0, 0)}
    store.claim("cli-1", 6.0, limit=1)  # a `watchbridge sync` killed, its row alone
    assert store.release_stale_claims(6.0 + CLAIM_LEASE + 1) == 1
    assert crashes(store) == {"a": (1, 2), "b": (0, 1), "c": (0, 0)}
    (again,) = store.claim("service-3", 7.0 + CLAIM_LEASE, limit=1)
    assert again.cut_short and (again.attempts, again.crashes) == (1, 2)


def test_a_row_two_crashes_found_in_flight_goes_alone_in_its_turn(store: Store) -> None:
    store.enqueue([row("a"), row("b", ordering="k2"), row("c", ordering="k3")], 1.0)
    for n in range(2):  # two kills during the batch
        store.claim(f"service-{n}", 2.0)
        store.release_claims(3.0, "service-")
    store.enqueue([row("d", ordering="k4"), row("e", ordering="k5")], 4.0)
    assert keys(store.claim("w", 5.0)) == ["a"]  # alone, before those queued after it
    store.release_claims(5.0, "w")  # it took the process down by itself
    assert crashes(store)["a"] == (1, 3)
    for key in ("a", "b", "c"):  # each alone, through
        (alone,) = store.claim("w", 6.0)
        assert alone.idempotency_key == key
        store.complete(alone.id, 6.0)
    assert keys(store.claim("w", 7.0)) == ["d", "e"]  # no crash: a batch as ever


def test_a_batch_goes_up_to_the_row_that_goes_alone_next(store: Store) -> None:
    store.enqueue([row("a", ordering="k1")], 1.0)
    for n in range(2):
        store.claim(f"service-{n}", 2.0)
        store.release_claims(3.0, "service-")
    store.enqueue([row("b", ordering="k2"), row("c", ordering="k3")], 4.0)
    with store.transaction() as conn:  # "b" came due first, "a" then, "c" last
        conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE idempotency_key = 'b'")
        conn.execute("UPDATE outbox SET next_attempt_at = 9 WHERE idempotency_key = 'c'")
    for key in ("b", "a", "c"):
        (claimed,) = store.claim("w", 10.0)
        assert claimed.idempotency_key == key
        store.complete(claimed.id, 10.0)


def test_a_crash_spends_no_try_of_a_row_alone_in_its_batch_beside_another_targets(
    store: Store,
) -> None:
    # One row of Trakt's and one of Serializd's in flight in one process, each alone in its
    # batch: either may be what took it down, so neither spends a try on the crash.
    serializd = NewOutboxRow("serializd", "me", "play", {"key": "s"}, "me:serializd:e1", "s")
    store.enqueue([row("a"), serializd], 1.0)
    for target in ("trakt", "serializd"):
        store.claim("service-1", 2.0, targets=[target])
    store.release_claims(3.0, "service-", settle=30.0)
    assert crashes(store) == {"a": (0, 1), "s": (0, 1)}


def test_a_claim_that_may_not_take_a_row_alone_says_it_is_next(store: Store) -> None:
    store.enqueue([row("a", ordering="k1")], 1.0)
    for n in range(2):
        store.claim(f"service-{n}", 2.0)
        store.release_claims(3.0, "service-")
    store.enqueue([row("b", ordering="k2")], 4.0)
    with store.transaction() as conn:  # "b" came due first
        conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE idempotency_key = 'b'")
    first = store.claim_turn("w", 10.0, 10, None, alone=False)
    assert (keys(first.items), first.alone_next) == (["b"], True)
    store.complete(first.items[0].id, 10.0)
    held_back = store.claim_turn("w", 10.0, 10, None, alone=False)
    assert (held_back.items, held_back.alone_next) == ([], True)
    taken = store.claim_turn("w", 10.0, 10, None, alone=True)
    assert (keys(taken.items), taken.alone_next) == (["a"], False)


def test_a_killed_syncs_row_alone_waits_before_its_next_try(store: Store) -> None:
    # As a killed service's: the rows due before it go first.
    store.enqueue([row("a")], 1.0)
    store.claim("cli-1", 2.0)  # `watchbridge sync`, killed
    later = 2.0 + CLAIM_LEASE + 1
    assert store.release_stale_claims(later, settle=30.0) == 1
    assert crashes(store) == {"a": (1, 1)}
    assert store.claim("w", later + 29) == []
    assert keys(store.claim("w", later + 30)) == ["a"]


def test_a_stop_asked_for_notes_no_try_cut_short(store: Store) -> None:
    store.enqueue([row("a")], 1.0)
    (item,) = store.claim("w", 2.0)
    store.note([item], "unmatched: no Trakt id", 2.0)
    store.release_claims(3.0, spend=False)
    (again,) = store.claim("w", 4.0)
    assert (again.attempts, again.last_error) == (0, "unmatched: no Trakt id")
    assert not again.cut_short


def test_a_restart_takes_back_only_the_claims_of_its_own_kind(store: Store) -> None:
    store.enqueue([row("a"), NewOutboxRow("trakt", "you", "scrobble", {}, "k2", "b")], 1.0)
    store.claim("service-0a1b", 2.0, limit=1)
    store.claim("cli-9f8e", 2.0, limit=1)  # a `watchbridge sync` still delivering
    assert store.release_claims(3.0, "service-") == 1
    assert store.outbox_counts()["inflight"] == 1


def test_a_claim_older_than_its_lease_is_taken_back(store: Store) -> None:
    store.enqueue([row("a")], 1.0)
    store.claim("cli-9f8e", 2.0)  # then the process was killed
    assert store.release_stale_claims(2.0 + CLAIM_LEASE - 1) == 0
    assert store.release_stale_claims(2.0 + CLAIM_LEASE + 1) == 1
    (again,) = store.claim("service-0a1b", 2.0 + CLAIM_LEASE + 1)
    assert again.attempts == 1


def test_the_lease_spares_the_callers_own_kind_of_claims(store: Store) -> None:
    store.enqueue([row("a")], 1.0)
    store.claim("service-0a1b", 2.0)  # the running service's worker, mid-pass
    assert store.release_stale_claims(2.0 + CLAIM_LEASE + 1, spare="service-") == 0


def test_an_outcome_from_a_worker_that_lost_its_claim_changes_nothing(store: Store) -> None:
    store.enqueue([row("a")], 1.0)
    (stalled,) = store.claim("cli-9f8e", 2.0)  # a `watchbridge sync` stopped mid-batch
    later = 2.0 + CLAIM_LEASE + 1
    store.release_stale_claims(later, spare="service-")
    (taken,) = store.claim("service-0a1b", later)
    store.settle(later, [Settlement(taken.id, "done")], claimed_by="service-0a1b")
    failed = Settlement(stalled.id, "pending", later + 60, "503")
    store.settle(later + 1, [failed], claimed_by="cli-9f8e")  # it woke up and its send failed
    assert store.outbox_counts().get("done") == 1  # not pending again: no second delivery


def test_a_note_about_a_claimed_row_renews_its_lease(store: Store) -> None:
    store.enqueue([row("a")], 1.0)
    (item,) = store.claim("cli-9f8e", 2.0)
    store.note([item], "unknown outcome: sent", 2.0 + CLAIM_LEASE)
    assert store.release_stale_claims(2.0 + CLAIM_LEASE + 1) == 0


def test_a_note_from_a_worker_that_lost_its_claim_leaves_the_new_holders_mark(
    store: Store,
) -> None:
    store.enqueue([row("a")], 1.0)
    (stalled,) = store.claim("cli-9f8e", 2.0)  # a `watchbridge sync` suspended mid-batch
    later = 2.0 + CLAIM_LEASE + 1
    store.release_stale_claims(later, spare="service-")
    (taken,) = store.claim("service-0a1b", later)
    store.note([taken], "unknown outcome: sent", later)  # the service is sending it
    store.note_resolved([(stalled, {"history_id": 7})], "unknown outcome: sent", later + 1)
    store.note([stalled], "not sent: fenced off", later + 1)  # the sync run wakes up
    (held,) = store._query("SELECT payload, last_error, claimed_by FROM outbox")
    assert (held["last_error"], held["claimed_by"]) == ("unknown outcome: sent", "service-0a1b")
    assert json.loads(held["payload"]) == {"key": "a"}  # not the sync run's resolved id


def test_what_a_try_resolved_stays_in_its_rows_payload_through_a_crash_and_a_retry(
    store: Store,
) -> None:
    store.enqueue([row("a")], 1.0)
    (item,) = store.claim("w", 2.0)
    store.note_resolved([(item, {"history_id": 42})], "unknown outcome: sent", 2.0)
    store.release_claims(3.0)  # the process died before Trakt answered
    (again,) = store.claim("w", 4.0)
    assert again.payload == {"key": "a", "history_id": 42}
    assert again.may_have_landed
    store.mark_dead(again.id, 5.0, "gave up")
    store.retry_dead(None, 6.0)  # `deadletters retry`
    (retried,) = store.claim("w", 7.0)
    assert retried.payload["history_id"] == 42


def test_dead_rows_are_listed_retried_and_discarded(store: Store) -> None:
    store.enqueue([row("a"), row("b", ordering="k2")], 1.0)
    a, b = store.claim("w", 2.0)
    store.mark_dead(a.id, 3.0, "gave up after 10 attempts: 500")
    store.mark_dead(b.id, 3.0, "404")
    assert [(d.id, d.last_error) for d in store.dead_letters()] == [
        (a.id, "gave up after 10 attempts: 500"),
        (b.id, "404"),
    ]
    assert store.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 2
    assert store.retry_dead([a.id], 4.0) == Retried(queued=1, superseded=0)
    assert store.discard_dead(None) == 1
    assert store.dead_letters() == []
    (again,) = store.claim("w", 4.0)
    assert again.id == a.id and again.attempts == 0


def test_dead_letters_asked_for_by_id_are_those_alone(store: Store) -> None:
    store.enqueue([row("a"), row("b", ordering="k2"), row("c", ordering="k3")], 1.0)
    a, b, c = store.claim("w", 2.0)
    for item in (a, b, c):
        store.mark_dead(item.id, 3.0, "gave up")
    assert [d.id for d in store.dead_letters([c.id, a.id, 999])] == [a.id, c.id]


def dead_row(store: Store, key: str, action: str) -> None:
    """A row of `action` that gave up (at t=1..3)."""
    store.enqueue([row(key, action=action)], 1.0)
    (claimed,) = store.claim("w", 2.0)
    store.mark_dead(claimed.id, 3.0, "gave up after 12 attempts: 500")


def test_a_dead_rating_a_newer_one_of_its_item_followed_is_not_sent_again(store: Store) -> None:
    dead_row(store, "old", "rating")
    store.enqueue([row("new", action="remove_rating")], 4.0)
    (new,) = store.claim("w", 5.0)
    store.complete(new.id, 6.0)
    assert store.dead_letters() == []
    assert store.retry_dead(None, 7.0) == Retried(queued=0, superseded=0)
    assert store.claim("w", 8.0) == []


def test_a_rating_that_dies_behind_a_newer_one_is_superseded_not_dead(store: Store) -> None:
    store.enqueue([row("old", action="rating")], 1.0)
    (old,) = store.claim("w", 2.0)
    store.enqueue([row("new", action="rating")], 3.0)  # re-rated while the old one retries
    store.mark_dead(old.id, 4.0, "gave up after 12 attempts: 500")
    assert store.dead_letters() == []
    (new,) = store.claim("w", 5.0)
    assert new.idempotency_key == "new"


def test_retrying_dead_letters_left_beside_a_newer_rating_supersedes_them(store: Store) -> None:
    store.enqueue([row("old", action="rating")], 1.0)
    (old,) = store.claim("w", 2.0)
    store.enqueue([row("new", action="rating")], 3.0)
    store.db.execute("UPDATE outbox SET status = 'dead' WHERE id = ?", (old.id,))  # an old version
    assert store.retry_dead(None, 4.0) == Retried(queued=0, superseded=1)


def test_a_newer_rating_of_its_item_settles_a_dead_rating_for_good(store: Store) -> None:
    dead_row(store, "old", "rating")
    store.enqueue([row("new", action="rating")], 4.0)
    (new,) = store.claim("w", 5.0)
    store.complete(new.id, 6.0)
    store.db.execute("DELETE FROM outbox WHERE id = ?", (new.id,))  # pruned a week later
    assert store.dead_letters() == []
    assert store.retry_dead(None, 7.0) == Retried(queued=0, superseded=0)


def test_a_waiting_rating_a_newer_one_of_its_item_follows_is_settled_as_superseded(
    store: Store,
) -> None:
    store.enqueue([row("old", action="rating")], 1.0)
    (old,) = store.claim("w", 2.0)
    store.hold(old.id, 3.0, 60.0, "the target is down")  # waits through an outage
    store.enqueue([row("new", action="rating")], 4.0)  # re-rated meanwhile
    (next_up,) = store.claim("w", 61.0)
    assert next_up.idempotency_key == "new"
    assert store.claim("w", 62.0) == []


@pytest.mark.parametrize(
    ("target", "kept"), [("serializd", True), ("trakt", False), ("plex", False)]
)
def test_a_waiting_rating_whose_send_may_have_landed_goes_first_on_serializd_only(
    store: Store, target: str, kept: bool
) -> None:
    """On Serializd each rating is a diary row that stays: the retry looks for it and records
    it as ours. Elsewhere the newer rating replaces it, and it is settled as any waiting one."""
    ordering = f"me:{target}:episode1"
    store.enqueue([replace(row("old", ordering, "rating"), target=target)], 1.0)
    (old,) = store.claim("w", 2.0)
    store.retry_later(old.id, 3.0, 60.0, "unknown outcome: connection dropped")  # answer lost
    store.enqueue([replace(row("new", ordering, "rating"), target=target)], 4.0)
    (next_up,) = store.claim("w", 63.0)
    assert next_up.idempotency_key == ("old" if kept else "new")


def test_a_rating_in_flight_is_not_superseded_by_a_newer_one(store: Store) -> None:
    store.enqueue([row("old", action="rating")], 1.0)
    (old,) = store.claim("w", 2.0)
    store.enqueue([row("new", action="rating")], 3.0)  # while the old one is being sent
    query = "SELECT status, claimed_by FROM outbox WHERE id = ?"
    assert tuple(store.db.execute(query, (old.id,)).fetchone()) == ("inflight", "w")


def test_a_dead_play_is_sent_again_whatever_followed_it(store: Store) -> None:
    dead_row(store, "play", "play")
    store.enqueue([row("rating", action="rating")], 4.0)
    assert store.retry_dead(None, 5.0) == Retried(queued=1, superseded=0)


def test_a_sign_in_makes_due_only_the_rows_waiting_for_it(store: Store) -> None:
    store.enqueue([row("signin", "a"), row("limited", "b"), row("other profile", "c")], 1.0)
    signin, limited, other = store.claim("w", 2.0, 3)
    store.hold(signin.id, 3.0, 900.0, "run `watchbridge auth trakt --profile me`")
    store.hold(limited.id, 3.0, 600.0, "rate limited for 600 s")
    store.db.execute("UPDATE outbox SET profile = 'you' WHERE id = ?", (other.id,))
    store.hold(other.id, 3.0, 900.0, "run `watchbridge auth trakt --profile you`")
    assert store.resume_after_sign_in("trakt", "me", 4.0) == 1
    assert [r.idempotency_key for r in store.claim("w", 4.0, 3)] == ["signin"]


def test_tokens_round_trip_and_replace(store: Store) -> None:
    store.put_token("trakt", "me", {"refresh_token": "r1"}, 1.0)
    store.put_token("trakt", "me", {"refresh_token": "r2"}, 2.0)
    assert store.get_token("trakt", "me") == {"refresh_token": "r2"}
    assert store.get_token("trakt", "you") is None


def test_a_token_is_synced_to_disk_even_with_normal_durability(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db", durability="normal")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    store.put_token("trakt", "me", {"refresh_token": "r1"}, 1.0)
    store._conn.set_trace_callback(None)
    write = next(i for i, s in enumerate(statements) if "INTO tokens" in s)
    assert "PRAGMA synchronous=FULL" in statements[:write]
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again
    store.close()


def test_id_cache_remembers_not_found_until_expiry(store: Store) -> None:
    store.cache_put("trakt-search", "imdb:tt1", None, now=1.0, ttl=10.0)
    assert store.cache_get("trakt-search", "imdb:tt1", now=5.0) == (True, None)
    assert store.cache_get("trakt-search", "imdb:tt1", now=12.0) == (False, None)


def test_profiles_with_state_are_found_in_every_table_that_keeps_some(store: Store) -> None:
    for service, profile in (("plex", "alex"), ("plex", "bob"), ("trakt", "alex"), ("x", "cy")):
        store.mirror_put(service, profile, "plays", {"a": {}, "b": {}}, 1.0)
    store.set_cursor("serializd", "dana", "link:ts", "{}", 1.0)
    store.put_token("anilist", "eve", {"access_token": "t"}, 1.0)
    assert store.profiles_with_state() == {"alex", "bob", "cy", "dana", "eve"}


def test_mirror_put_get_remove(store: Store) -> None:
    store.mirror_put("trakt", "me", "ratings", {"movie:1": {"rating": 8}}, 1.0)
    assert store.mirror_get("trakt", "me", "ratings") == {"movie:1": {"rating": 8}}
    store.mirror_remove("trakt", "me", "ratings", ["movie:1"])
    assert store.mirror_get("trakt", "me", "ratings") == {}


def test_sync_runs_report_the_last_one_per_link(store: Store) -> None:
    first = store.start_run("ts", 1.0)
    store.finish_run(first, 2.0, "failed", {}, 3, "trakt: 502")
    second = store.start_run("ts", 10.0)
    store.finish_run(second, 11.0, "ok", {"added": 4}, 2)
    (last,) = store.last_runs()
    assert (last.outcome, last.counts, last.api_calls) == ("ok", {"added": 4}, 2)


def test_reset_forgets_sync_state_but_keeps_sign_ins(store: Store) -> None:
    store.put_token("trakt", "me", {"a": 1}, 1.0)
    store.enqueue([row("a")], 1.0)
    store.set_cursor("trakt", "me", "h", "v", 1.0)
    assert store.reset(2.0) == []
    assert store.outbox_counts()["pending"] == 0
    assert store.get_cursor("trakt", "me", "h") is None
    assert store.get_token("trakt", "me") == {"a": 1}


def test_reset_keeps_the_records_it_is_told_to(store: Store) -> None:
    store.mirror_put("plex", "me", "written", {"r": {"at": 1}}, 1.0)
    store.mirror_put("plex", "me", "plays", {"p": {"at": 1}}, 1.0)
    store.cache_put("kept", "k", 1, 1.0, 3600)
    store.cache_put("search", "s", 1, 1.0, 3600)
    store.reset(2.0, keep_mirror=[("plex", "written")], keep_cache=["kept"])
    assert store.mirror_get("plex", "me", "written") == {"r": {"at": 1}}
    assert store.mirror_get("plex", "me", "plays") == {}
    assert store.cache_get("kept", "k", 2.0) == (True, 1)
    assert store.cache_get("search", "s", 2.0)[0] is False


def test_reset_forgets_nothing_while_a_sync_run_is_alive(store: Store) -> None:
    # Its later writes would bring part of the state back; its end could land on a new run.
    run_id = store.start_run("trakt-serializd", 100.0)
    store.set_cursor("trakt", "me", "h", "v", 100.0)
    assert store.reset(150.0) == ["trakt-serializd"]
    assert store.get_cursor("trakt", "me", "h") == "v"
    assert run_id is not None
    store.finish_run(run_id, 160.0, "ok", {}, 1)
    assert store.reset(170.0) == []
    assert store.get_cursor("trakt", "me", "h") is None


def test_reset_goes_ahead_past_a_run_whose_process_died(store: Store) -> None:
    store.start_run("trakt-serializd", 100.0, lease=300.0)
    assert store.reset(100.0 + 301.0, lease=300.0) == []
    assert store.last_runs() == []


def test_the_catch_up_counts_go_where_its_state_goes(store: Store) -> None:
    # A read writes only the counts that changed (catchup.py `Saved`); a baseline drops
    # what an earlier state kept; a renamed profile takes them along; a reset forgets them.
    store.save_catch_up(
        ("jellyfin", "me", "alex"),
        '{"a":1}',
        {"i1": (1, "imdb:tt1", 5.0), "i2": (3, "", None)},
        True,
        1.0,
    )
    store.save_catch_up(("jellyfin", "me", "alex"), '{"a":2}', {"i2": (4, "", None)}, False, 2.0)
    assert store.get_cursor("jellyfin", "me", "catch_up:alex") == '{"a":2}'
    assert store.catch_up_counts("jellyfin", "me", "alex") == {
        "i1": (1, "imdb:tt1", 5.0),
        "i2": (4, "", None),
    }
    store.save_catch_up(("jellyfin", "me", "alex"), '{"a":3}', {"i3": (1, "", None)}, True, 3.0)
    assert store.catch_up_counts("jellyfin", "me", "alex") == {"i3": (1, "", None)}
    assert store.move_profile("me", "myself", "gone", 4.0).refused == ""
    assert store.catch_up_counts("jellyfin", "me", "alex") == {}
    assert store.catch_up_counts("jellyfin", "myself", "alex") == {"i3": (1, "", None)}
    assert store.reset(5.0) == []
    assert store.catch_up_counts("jellyfin", "myself", "alex") == {}


def test_a_failed_write_is_remembered_until_a_write_works(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store.open(path, busy_timeout=0.1)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError):
        store.enqueue([row("a")], 1.0)
    blocker.execute("ROLLBACK")
    assert "locked" in (store.write_error or "")
    assert store.claim("w", 2.0) == []  # a transaction that writes nothing proves nothing
    assert store.write_error is not None
    store.check_writable(3.0)  # a real write, since the last one failed
    assert store.write_error is None
    store.close()


def test_busy_database_answers_within_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    store = Store.open(path, busy_timeout=0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="not writable"):
        store.check_writable(1.0)
    blocker.execute("ROLLBACK")
    store.check_writable(1.0)
    store.close()


def test_prune_forgets_old_delivered_rows_but_keeps_pending_and_dead(store: Store) -> None:
    store.record_event(
        source="plex",
        kind="k",
        payload={},
        now=1.0,
        rows=[row("a"), row("b", ordering="k2"), row("c", ordering="k3")],
    )
    a, b, _ = store.claim("w", 2.0)
    store.complete(a.id, 3.0)
    store.mark_dead(b.id, 3.0, "gave up")
    store.release_claims(3.0)
    pruned = store.prune(now=1000.0, keep_done=100.0, keep_sessions=100.0)
    assert pruned["outbox"] == 1
    assert store.outbox_counts() == {"pending": 1, "inflight": 0, "done": 0, "dead": 1}
    assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


def test_a_serializd_hand_log_note_goes_once_its_row_is_gone_not_while_a_dead_letter(
    store: Store,
) -> None:
    # deliver.serializd.HAND_LOGS: which copy a log made by hand stood for. Its row delivered
    # and pruned, or a dead letter discarded, takes it along; a dead letter (retried months
    # later, perhaps) keeps it; one naming no row (an earlier build's) stays.
    store.record_event(
        source="plex", kind="k", payload={}, now=1.0, rows=[row("a"), row("b", ordering="k2")]
    )
    done, dead = store.claim("w", 2.0)
    store.complete(done.id, 3.0)
    store.mark_dead(dead.id, 3.0, "gave up")
    store.release_claims(3.0)
    notes = {
        "e@1": {"review_id": 1, "row": done.id},
        "e@2": {"review_id": 2, "row": dead.id},
        "e@3": {"review_id": 3},
    }
    store.mirror_put("serializd", "me", "hand-logs", notes, 3.0)
    store.prune(now=50.0, keep_done=100.0, keep_sessions=100.0)
    assert set(store.mirror_get("serializd", "me", "hand-logs")) == {"e@1", "e@2", "e@3"}
    store.prune(now=1000.0, keep_done=100.0, keep_sessions=100.0)
    assert set(store.mirror_get("serializd", "me", "hand-logs")) == {"e@2", "e@3"}
    assert store.discard_dead([dead.id]) == 1
    assert set(store.mirror_get("serializd", "me", "hand-logs")) == {"e@3"}


def test_prune_forgets_old_sync_runs_but_keeps_each_links_last(store: Store) -> None:
    for link, started in (("a", 1.0), ("a", 2.0), ("b", 3.0)):
        run = store.start_run(link, started)
        assert run is not None
        store.finish_run(run, started, "ok", {}, 0)
    pruned = store.prune(now=1000.0, keep_done=100.0, keep_sessions=100.0, keep_runs=100.0)
    assert pruned["sync_runs"] == 1
    assert [(r.link, r.started_at) for r in store.last_runs()] == [("a", 2.0), ("b", 3.0)]


def test_prune_keeps_each_links_last_run_that_went_through(store: Store) -> None:
    # The metric watchbridge_sync_last_success_timestamp_seconds reads it: pruned, the series
    # would vanish (and an alert on its age fall silent) once a link failed for a month.
    for link, started, outcome in [
        ("a", 1.0, "ok"),
        ("a", 2.0, "held"),
        ("a", 3.0, "failed"),
        ("a", 4.0, "failed"),
        ("b", 5.0, "failed"),
        ("b", 6.0, "failed"),
    ]:
        run = store.start_run(link, started)
        assert run is not None
        store.finish_run(run, started, outcome, {}, 0)
    pruned = store.prune(now=1000.0, keep_done=100.0, keep_sessions=100.0, keep_runs=100.0)
    assert pruned["sync_runs"] == 3  # a's first ok and first failure, b's first failure
    assert store.last_successes() == {"a": 2.0}  # b never went through: no time at all
    assert [(r.link, r.outcome) for r in store.last_runs()] == [("a", "failed"), ("b", "failed")]


def test_prune_forgets_expired_id_lookups(store: Store) -> None:
    store.cache_put("trakt-search", "imdb:tt1", None, now=1.0, ttl=10.0)
    store.cache_put("trakt-search", "imdb:tt2", None, now=1.0, ttl=5000.0)
    pruned = store.prune(now=1000.0, keep_done=100.0, keep_sessions=100.0)
    assert pruned["id_cache"] == 1
    assert store.cache_get("trakt-search", "imdb:tt2", now=1000.0) == (True, None)


def test_status_lists_what_holds_a_target_before_items_failing_on_their_own(
    store: Store,
) -> None:
    for n in range(6):  # six plays retried each for a reason of its own
        store.enqueue([row(f"r{n}", ordering=f"o{n}")], 1.0)
        (item,) = store.claim("w", 1.0)
        store.retry_later(item.id, 1.0, 9.0, f"Serializd refused item {n}")
    store.enqueue([row("held", ordering="held")], 1.0)
    (item,) = store.claim("w", 1.0)
    store.retry_later(item.id, 1.0, 1.5, "answered 502")  # an attempt spent before
    (item,) = store.claim("w", 2.0)
    store.hold(item.id, 2.0, 9.0, "Trakt no longer accepts the sign-in: run `auth trakt`")
    status = store.status()
    assert status.waiting[0].reason.startswith("Trakt no longer accepts the sign-in")
    assert len(status.waiting) == 5 and status.waiting_left_out == 2


def test_status_tells_holds_of_a_service_alone_from_those_that_need_the_user(
    store: Store,
) -> None:
    # The status page lists the first calmly ("no action needed"), the others as needs.
    held = {
        "down": ("trakt", "Trakt: answered 503 after 3 attempt(s)", False, "target"),
        "limit": ("trakt", "rate limited until 2026-12-01 10:00 UTC", False, "profile"),
        "signin": ("trakt", "Trakt no longer accepts the sign-in: run `auth`", True, "profile"),
        "locked": ("trakt", "Trakt: the account is locked: contact support", False, "profile"),
    }
    for n, (key, (_, reason, sign_in, how)) in enumerate(held.items()):
        new = NewOutboxRow("trakt", f"p{n}", "play", {"key": key}, key, key)
        store.enqueue([new], 1.0 + n)
        (item,) = store.claim("w", 5.0)
        store.settle(5.0, [Settlement(item.id, "pending", 9.0, reason, False, sign_in, how)])
    waits = {w.profile: (w.service_waits, w.since) for w in store.status().waiting}
    assert waits == {"p0": (True, 1.0), "p1": (True, 2.0), "p2": (False, 3.0), "p3": (False, 4.0)}


def test_unmatched_rows_are_counted(store: Store) -> None:
    store.enqueue([row("a")], 1.0)
    (item,) = store.claim("w", 2.0)
    store.retry_later(item.id, 2.0, 3.0, "unmatched: Trakt has no id for X yet")
    assert store.status().unmatched == 1


def plans_of(store: Store, read: Callable[[], object]) -> list[str]:
    """The query plan lines of every statement `read` runs on the store's connections."""
    statements: list[str] = []
    with store._overview_reads.connection() as overview:  # opened here, kept open
        connections = [store._conn, overview]
    for conn in connections:
        conn.set_trace_callback(statements.append)
    try:
        read()
    finally:
        for conn in connections:
            conn.set_trace_callback(None)
    return [
        str(line[3])
        for sql in statements
        for line in store.db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    ]


def held_backlog(store: Store, rows: int) -> None:
    """`rows` rows held for a sign-in, one waiting for ids, one marked possibly sent and
    waiting for ids, one dead waiting for ids."""
    store.enqueue([row(f"k{n}", ordering=f"o{n}") for n in range(rows + 3)], 1.0)
    items = store.claim("w", 2.0, limit=rows + 3)
    store.settle(
        2.0,
        [
            Settlement(i.id, "pending", 9e9, "run `watchbridge auth trakt`", False, True)
            for i in items[3:]
        ]
        + [
            Settlement(items[0].id, "pending", 9e9, "unmatched: no TMDB id"),
            Settlement(items[1].id, "pending", 9e9, f"{UNKNOWN_OUTCOME}: unmatched: no id"),
            Settlement(items[2].id, "dead", None, "unmatched: no TMDB id"),
        ],
    )


def test_rows_waiting_for_ids_are_counted_without_reading_every_waiting_row(
    store: Store,
) -> None:
    # Each scrape and status read counts the rows waiting for ids: among thousands held for
    # a sign-in (kept for weeks), that read each one of them, every 15 s.
    held_backlog(store, 50)
    assert store.unmatched_count() == 2
    assert store.status().unmatched == 2
    plan = plans_of(store, store.unmatched_count)
    assert any("outbox_unmatched" in line for line in plan), plan


def test_a_scrape_counts_the_queue_without_walking_the_delivered_rows(store: Store) -> None:
    # Delivered rows stay a week (a first sync's 100,000 at once) and no gauge shows them:
    # each scrape counted them all, every 15 s.
    held_backlog(store, 5)
    store.enqueue([row(f"d{n}", ordering=f"d{n}") for n in range(4)], 3.0)
    store.settle(3.0, [Settlement(i.id, "done") for i in store.claim("w", 3.0, limit=4)])
    store.enqueue([row("flying", ordering="f")], 3.0)
    store.claim("w", 3.0)
    store.enqueue([NewOutboxRow("serializd", "me", "play", {}, "s", "s")], 4.0)
    plan = plans_of(store, store.queue_gauges)
    assert not [line for line in plan if line.startswith("SCAN outbox")], plan
    assert store.queue_gauges() == {
        "trakt": TargetQueue(
            pending=7,
            inflight=1,
            dead=1,
            unmatched=2,
            waiting_for_sign_in=5,
            oldest_pending_at=1.0,
        ),
        "serializd": TargetQueue(pending=1, oldest_pending_at=4.0),
    }


def _job(key: str, fail: bool = False) -> IngestJob:
    def decide(
        session: Session | None, marks: Session | None
    ) -> tuple[Session | None, list[NewOutboxRow]]:
        if fail:
            raise ValueError("a bug in one decision")
        return Session(key, "playing", 1.0, 0, 1.0), [row(key, ordering=key)]

    return IngestJob("plex", "start", "me", {}, 1.0, key, decide)


def test_an_event_with_half_an_emoji_is_stored(store: Store) -> None:
    # The lenient body reader lets a lone surrogate through (a title cut inside an emoji).
    document = {"Metadata": {"summary": "\ud83d cut"}}
    decide = lambda s, _marks: (s, [row("a")])  # noqa: E731
    job = IngestJob("plex", "stop", "me", {"title": "\ud83d"}, 1.0, "s", decide, document)
    assert store.ingest(job) == 1
    (raw,) = store.db.execute("SELECT raw FROM events").fetchone()
    assert json.loads(raw) == document


def test_an_event_that_queues_nothing_keeps_only_its_record(store: Store) -> None:
    job = IngestJob("plex", "progress", "me", {}, 1.0, "s", lambda s, _marks: (s, []), {"a": 1})
    store.ingest(job)
    assert [tuple(r) for r in store.db.execute("SELECT raw FROM events")] == [(None,)]


def test_a_failing_event_in_a_group_is_rolled_back_alone(store: Store) -> None:
    results = store.ingest_many([_job("a"), _job("b", fail=True), _job("c")])
    assert results[0] == 1 and isinstance(results[1], ValueError) and results[2] == 1
    assert store.outbox_counts()["pending"] == 2
    assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2


def test_the_writer_answers_each_event_after_its_commit(store: Store) -> None:
    writer = IngestWriter(store)

    async def write_many() -> list[int]:
        return await asyncio.gather(*(writer.write(_job(f"k{n}")) for n in range(50)))

    try:
        assert asyncio.run(write_many()) == [1] * 50
    finally:
        writer.close()
    assert store.outbox_counts()["pending"] == 50


def test_the_loop_reading_the_store_while_the_writer_waits_for_it_does_not_stall(
    store: Store,
) -> None:
    # The writer holds the transaction and waits for the loop to run the inserts; a store read
    # on that loop (a delivery loading its token) must run them rather than wait out the grace.
    writer = IngestWriter(store)
    writer.LOOP_GRACE = 30.0

    async def until_the_writer_asks_the_loop() -> None:
        await asyncio.sleep(0)  # the job is queued and the writer woken
        deadline = time.monotonic() + 5
        while writer._waiting_for is None and time.monotonic() < deadline:
            time.sleep(0.001)  # the loop stays busy, as a long callback would

    try:
        added, read_seconds = _read_on_the_loop_during_a_write(
            store, writer, until_the_writer_asks_the_loop
        )
    finally:
        writer.close()
    assert added == 1
    assert read_seconds < 1.0


def test_a_webhook_is_recorded_while_a_whole_mirror_collection_is_read(store: Store) -> None:
    # A link run's reader loads whole collections (the Plex history, its listings: ~50,000
    # rows at a big library, seconds on a busy machine): a webhook answered meanwhile must not
    # wait for that read. Here it stops halfway, and the webhook's record goes through all
    # the same; before, the read held the store's lock, and the record waited for its end.
    store.mirror_put("plex", "me", "history", {str(n): {"at": n} for n in range(500)}, 1.0)
    writer = IngestWriter(store)
    read = "FROM mirror WHERE service = 'plex' AND profile = 'me' AND collection = 'history'"

    async def record_while_the_read_is_paused() -> dict[str, Any]:
        with paused_read(read, store.db.conn) as paused:
            reading = asyncio.ensure_future(
                asyncio.to_thread(store.mirror_get, "plex", "me", "history")
            )
            assert await asyncio.to_thread(paused.reached.wait, 10)
            recorded = asyncio.ensure_future(writer.write(_job("during")))
            finished, _ = await asyncio.wait([recorded], timeout=5)
            assert finished == {recorded}, "the webhook waited for the read"
        return await reading

    try:
        got = asyncio.run(record_while_the_read_is_paused())
    finally:
        writer.close()
    assert got == {str(n): {"at": n} for n in range(500)}
    assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


def test_a_webhook_waits_for_a_collection_read_on_a_database_kept_out_of_wal(
    tmp_path: Path,
) -> None:
    # Without WAL (a network share: see journal_warning) a reader's shared lock keeps a
    # writer from committing: a read beside the store's lock had the webhook's record fail
    # after busy_timeout (here 0.2 s) as "database is locked". Read under the lock, the
    # record waits for the read, then goes. (The `no_shared_memory` fixture's VFS takes no
    # locks at all, so the rollback journal is asked for here as that share leaves it.)
    store = Store.open(tmp_path / "state.db", busy_timeout=0.2)
    store.db.execute("PRAGMA journal_mode=DELETE")
    store.journal_mode = "delete"
    store.mirror_put("plex", "me", "history", {str(n): {"at": n} for n in range(500)}, 1.0)
    writer = IngestWriter(store)
    read = "FROM mirror WHERE service = 'plex' AND profile = 'me' AND collection = 'history'"

    async def record_while_the_read_is_paused() -> dict[str, Any]:
        with paused_read(read, store.db.conn, steps=200) as paused:
            reading = asyncio.ensure_future(
                asyncio.to_thread(store.mirror_get, "plex", "me", "history")
            )
            assert await asyncio.to_thread(paused.reached.wait, 10)
            recorded = asyncio.ensure_future(writer.write(_job("during")))
            await asyncio.sleep(0.5)  # past busy_timeout
            paused.release.set()
            await recorded
        return await reading

    try:
        got = asyncio.run(record_while_the_read_is_paused())
    finally:
        writer.close()
        store.close()
    assert len(got) == 500
    check = Store.open(tmp_path / "state.db")
    try:
        assert check.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    finally:
        check.close()


def test_a_mirror_collection_read_inside_a_transaction_sees_its_own_writes(store: Store) -> None:
    store.mirror_put("plex", "me", "keys", {"a": 1}, 1.0)
    with store.transaction():
        store.mirror_put("plex", "me", "keys", {"b": 2}, 1.0)
        assert store.mirror_get("plex", "me", "keys") == {"a": 1, "b": 2}
    assert store.mirror_get("plex", "me", "keys") == {"a": 1, "b": 2}


def wait_for_runs(checkpointer: Checkpointer, runs: int, timeout: float = 30.0) -> None:
    """Until the checkpointer's thread has made `runs` runs; the timeout only bounds a failure
    (on a busy machine that thread may wait a long while to be scheduled)."""
    deadline = time.monotonic() + timeout
    while checkpointer.runs < runs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.runs == runs


def test_a_service_store_checkpoints_apart_from_its_commits(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    store.checkpoint_apart(every=10)
    checkpointer = store.checkpointer
    assert checkpointer is not None
    try:
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        # Each tenth commit asks for one run. The thread is let run before the next ten: two
        # asks it has not yet woken for are one run (all the log is copied either way).
        for batch in range(2):
            for n in range(10 * batch, 10 * batch + 10):
                store.set_cursor("trakt", "me", "history", f"v{n}", float(n))
            wait_for_runs(checkpointer, batch + 1)
        for n in range(20, 25):
            store.set_cursor("trakt", "me", "history", f"v{n}", float(n))
    finally:
        store.close()
    assert checkpointer.runs == 2  # its thread is done: five more commits, and closing, ran none
    reopened = Store.open(tmp_path / "s.db")
    assert reopened.get_cursor("trakt", "me", "history") == "v24"
    reopened.close()


@pytest.mark.parametrize(("restart_frames", "restarted"), [(1, True), (10**9, False)])
def test_a_long_write_ahead_log_is_started_over_once_its_readers_are_done(
    tmp_path: Path, restart_frames: int, restarted: bool
) -> None:
    # A reader pins the log, so the background copy cannot finish: once the log is long, the
    # next commit completes the copy (the reader is gone by then) and the log starts over.
    store = Store.open(tmp_path / "s.db")
    store.checkpoint_apart(every=60, restart_frames=restart_frames)
    reader = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        for n in range(50):
            store.set_cursor("trakt", "me", f"h{n}", "x" * 3000, float(n))
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM cursors").fetchall()
        for n in range(10):  # the 60th commit asks for a checkpoint
            store.set_cursor("trakt", "me", f"i{n}", "x" * 3000, float(n))
        checkpointer = store.checkpointer
        assert checkpointer is not None
        wait_for_runs(checkpointer, 1)
        reader.execute("COMMIT")
        store.set_cursor("trakt", "me", "after", "x", 1.0)  # completes the copy if asked to
        store.set_cursor("trakt", "me", "after", "y", 2.0)  # the log starts over if complete
        _, log_frames, _ = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        reader.close()
        store.close()
    assert (log_frames < 10) is restarted


def test_a_write_ahead_log_that_grew_is_cut_back_once_it_starts_over(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    store._conn.execute("PRAGMA journal_size_limit=65536")  # the test's limit: 64 KB
    reader = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM cursors").fetchall()  # pins the log while it grows
    for n in range(100):
        store.set_cursor("trakt", "me", f"h{n}", "x" * 10_000, float(n))
    wal = tmp_path / "s.db-wal"
    assert wal.stat().st_size > 1_000_000
    reader.execute("COMMIT")
    reader.execute("PRAGMA wal_checkpoint(PASSIVE)")
    reader.close()
    store.set_cursor("trakt", "me", "after", "y", 1.0)  # the log starts over: cut back
    assert wal.stat().st_size <= 65536 + 2 * 4096
    assert store._conn.execute("PRAGMA journal_size_limit").fetchone()[0] == 65536
    store.close()


def test_the_store_caps_the_log_it_keeps(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    assert store._conn.execute("PRAGMA journal_size_limit").fetchone()[0] == WAL_SIZE_LIMIT
    store.close()


def test_a_failing_catch_up_checkpoint_does_not_fail_the_committed_write(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "s.db")
    store.checkpoint_apart(every=10**6)
    checkpointer = store.checkpointer
    assert checkpointer is not None
    checkpointer.catch_up = True

    def no_pragmas(action: int, *_: object) -> int:
        return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_PRAGMA else sqlite3.SQLITE_OK

    store.db.conn.set_authorizer(no_pragmas)
    try:
        store.set_cursor("trakt", "me", "history", "kept", 1.0)
        assert checkpointer.catch_up  # tried again after the next commit
        assert store.get_cursor("trakt", "me", "history") == "kept"
    finally:
        store.db.conn.set_authorizer(None)
        store.close()


def _read_on_the_loop_during_a_write(
    store: Store, writer: IngestWriter, meanwhile: Callable[[], Awaitable[None]]
) -> tuple[int, float]:
    """Queue one webhook, run `meanwhile`, then read the store from the same event loop:
    the rows added and how long the read took."""

    async def write_then_read() -> tuple[int, float]:
        written = asyncio.ensure_future(writer.write(_job("k")))
        await meanwhile()
        started = time.monotonic()
        store.next_due()
        return await written, time.monotonic() - started

    return asyncio.run(write_then_read())


def test_an_items_marks_session_outlasts_idle_playback_sessions_up_to_keep_marks(
    store: Store,
) -> None:
    for key, marks in (("player", False), ("marks", True)):
        done = Session(key, "completed", 95.0, 1, 1.0)
        store.ingest(
            IngestJob(
                "jellyfin",
                "played",
                "me",
                {},
                1.0,
                key,
                lambda s, _marks, d=done: (d, []),
                marks=marks,
            )
        )
    store.prune(now=1000.0, keep_done=100.0, keep_sessions=100.0, keep_marks=5000.0)
    assert [r[0] for r in store.db.execute("SELECT key FROM playback_sessions")] == ["marks"]
    store.prune(now=6000.0, keep_done=100.0, keep_sessions=100.0, keep_marks=5000.0)
    assert store.db.execute("SELECT COUNT(*) FROM playback_sessions").fetchone()[0] == 0


def test_dead_letters_retried_by_id_are_not_limited_by_how_many_sqlite_binds(
    store: Store,
) -> None:
    store.enqueue([row(f"r{n}", ordering=f"k{n}") for n in range(1200)], 1.0)
    dead = store.claim("w", 2.0, limit=1200)
    store.settle(3.0, [Settlement(item.id, "dead", None, "gave up") for item in dead])
    store.db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    assert store.retry_dead([item.id for item in dead], 4.0).queued == 1200


def test_a_row_given_up_waiting_keeps_its_may_have_landed_mark(store: Store) -> None:
    store.enqueue([row("a")], 1.0)
    (item,) = store.claim("w", 2.0)
    store.note([item], "unknown outcome: sent", 2.0)  # then the process died
    store.release_claims(3.0)
    store.give_up_waiting("trakt", "me", 4.0, "profile me is no longer in the config")
    assert store.marked([item.id]) == {item.id}


def test_a_probe_given_up_for_the_config_waits_to_go_once_more_again(store: Store) -> None:
    # A dead letter sent alone as a probe was still waiting as the service stopped, which
    # starts again without its profile: a dead letter again, still to go once more by itself
    # once the config delivers it, not left marked as a probe under way (nothing looks for one).
    store.enqueue([row("play", action="play")], 1.0)
    (claimed,) = store.claim("w", 2.0)
    store.settle(3.0, [Settlement(claimed.id, "dead", None, "gave up: 502", once_more=True)])
    assert store.queue_probe("trakt", 4.0) == claimed.id
    store.give_up_waiting("trakt", "me", 5.0, "profile me is no longer in the config")
    assert [dead.once_more for dead in store.dead_letters()] == ["due"]
    assert store.once_more_due("trakt") == [claimed.id]


def test_a_rename_that_fails_queueing_the_given_up_rows_again_moves_nothing(
    store: Store,
) -> None:
    """`rename-profile` queues again, in the move's transaction, the dead letters a start
    gave up for the old name's absence: a failure there (a trigger stands in for a crash or
    a full disk) leaves everything under the old name, and running it again moves it and
    queues them. Queued after the move, they stayed dead and the rerun found nothing."""
    gone = "profile me is no longer in the config"
    store.enqueue([row("a")], 1.0)
    store.give_up_waiting("trakt", "me", 2.0, gone)
    store.db.execute(
        "CREATE TRIGGER queueing_again_fails BEFORE UPDATE OF status ON outbox"
        " WHEN OLD.status = 'dead' AND NEW.status = 'pending'"
        " BEGIN SELECT RAISE(ABORT, 'stands in for a crash'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="stands in for a crash"):
        store.move_profile("me", "myself", gone, 3.0)
    assert [(item.profile, item.status) for item in store.dead_letters()] == [("me", "dead")]

    store.db.execute("DROP TRIGGER queueing_again_fails")
    moved = store.move_profile("me", "myself", gone, 4.0)

    assert (moved.refused, moved.requeued) == ("", 1)
    (item,) = store.claim("w", 5.0)
    assert (item.profile, item.idempotency_key) == ("myself", "a")


def test_a_backup_is_a_consistent_private_copy_taken_while_the_service_writes(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "wb.db") as store:
        store.put_token("trakt", "me", {"access_token": "a"}, 1.0)
        writer = sqlite3.connect(tmp_path / "wb.db", isolation_level=None)
        writer.execute("BEGIN")
        writer.execute("INSERT INTO cursors (service, profile, name, value, updated_at)"
                       " VALUES ('x', 'me', 'n', 'v', 1)")  # fmt: skip
        store.backup_to(tmp_path / "copy.db")  # an open write of another process: not in it
        writer.execute("ROLLBACK")
        writer.close()
    assert stat.S_IMODE(os.stat(tmp_path / "copy.db").st_mode) == 0o600
    with Store.open(tmp_path / "copy.db") as copy:
        assert copy.get_token("trakt", "me") == {"access_token": "a"}
        assert copy.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_missing_database_starts_from_its_backup_copy(tmp_path: Path) -> None:
    with Store.open(tmp_path / "wb.db") as store:
        store.put_token("trakt", "me", {"access_token": "a"}, 1.0)
        store.backup_to(backup_path(tmp_path / "wb.db"))
    for name in ("wb.db", "wb.db-wal", "wb.db-shm"):  # a restored backup holds only the copy
        (tmp_path / name).unlink(missing_ok=True)
    with Store.open(tmp_path / "wb.db") as restored:
        assert restored.get_token("trakt", "me") == {"access_token": "a"}
    assert stat.S_IMODE(os.stat(tmp_path / "wb.db").st_mode) == 0o600


def test_rows_waiting_in_a_restored_copy_are_marked_as_possibly_sent(tmp_path: Path) -> None:
    database = tmp_path / "wb.db"
    with Store.open(database) as store:
        store.enqueue([row("waiting", ordering="a"), row("unmatched", ordering="b")], 1.0)
        (_, unmatched) = store.claim("w", 2.0)
        store.retry_later(unmatched.id, 2.0, 3.0, "unmatched: Trakt has no id for X yet")
        store.backup_to(backup_path(database))
    for name in ("wb.db", "wb.db-wal", "wb.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with Store.open(database) as restored:
        reasons = dict(restored.db.execute("SELECT id, last_error FROM outbox").fetchall())
        assert restored.marked(list(reasons)) == set(reasons)  # each is looked up first
        assert restored.status().unmatched == 1  # and still listed as what it was
    assert sorted(reasons.values()) == [
        f"{UNKNOWN_OUTCOME}: restored from a backup copy",
        f"{UNKNOWN_OUTCOME}: unmatched: Trakt has no id for X yet",
    ]


def test_a_copy_put_back_over_the_database_is_known_and_its_waiting_rows_marked(
    tmp_path: Path,
) -> None:
    # A docker user's restore: the copy copied over watchbridge.db, not started from as a
    # missing database's. Its rows may have gone out after it was taken: each is looked up.
    database = tmp_path / "wb.db"
    with Store.open(database) as store:
        store.enqueue([row("waiting", ordering="a")], 1.0)
        store.backup_to(tmp_path / "nightly.db")
        assert store.restore_untold() is None  # the database itself is no copy
    put_back(tmp_path / "nightly.db", database)
    with Store.open(database, upgrade=False) as looked:  # `status`: only looks, marks nothing
        assert looked.marked([1]) == set() and looked.restore_untold() is None
    with Store.open(database) as restored:
        assert restored.marked([1]) == {1}
        copied = restored.restore_untold()
        assert copied is not None and abs(float(copied) - time.time()) < 60
        assert restored.tell_restore(by_service=True) == copied
    with Store.open(database) as again:  # told once; the rows stay marked until sent
        assert again.restore_untold() is None and again.marked([1]) == {1}


def fill_and_prune(store: Store, rows: int = 3000) -> int:
    """A delivered backlog pruned a week later; the file's size at its peak."""
    note = {"note": "x" * 400}
    store.enqueue(
        [NewOutboxRow("trakt", "me", "add", note, f"o{n}", f"k{n}") for n in range(rows)], 1.0
    )
    while batch := store.claim("w", 1.0, 1000):
        store.settle(1.0, [Settlement(item.id, "done") for item in batch])
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    peak = Path(str(store.path)).stat().st_size
    assert store.prune(1.0 + 8 * 86400, 7 * 86400, 7 * 86400)["outbox"] == rows
    return peak


def test_the_space_of_a_pruned_backlog_goes_back_to_the_disk(tmp_path: Path) -> None:
    with Store.open(tmp_path / "wb.db") as store:
        peak = fill_and_prune(store)
        assert store.reclaim_space(min_free_pages=100) > 0
        assert (tmp_path / "wb.db").stat().st_size < peak / 4


def test_giving_space_back_does_not_wait_for_another_process_reading(tmp_path: Path) -> None:
    # It runs under the store's lock: waiting for a reader (`watchbridge backup`, `status`)
    # would hold every webhook up for storage.busy_timeout.
    with Store.open(tmp_path / "wb.db", busy_timeout=2.0) as store:
        fill_and_prune(store)
        reader = sqlite3.connect(tmp_path / "wb.db", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM outbox").fetchone()
        try:
            started = time.monotonic()
            assert store.reclaim_space(min_free_pages=100) > 0
            assert time.monotonic() - started < 1.0
        finally:
            reader.close()


def test_space_is_not_given_back_on_a_disk_too_full_to_rewrite_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The rewrite needs room for two copies: failing hourly, it would fill the disk each time.
    with Store.open(tmp_path / "wb.db") as store:
        peak = fill_and_prune(store)
        assert store.reclaim_space(min_free_pages=100, disk_free=lambda folder: 10 * 2**20) == 0
        assert (tmp_path / "wb.db").stat().st_size == peak
    assert "the disk lacks room to rewrite it" in caplog.text


def test_a_few_free_pages_are_left_for_the_next_rows(tmp_path: Path) -> None:
    with Store.open(tmp_path / "wb.db") as store:
        fill_and_prune(store, rows=300)
        assert store.reclaim_space() == 0  # no rewrite for a few megabytes


def test_a_database_keeps_no_pointer_map_that_every_commit_would_pay_for(
    tmp_path: Path,
) -> None:
    # SQLite's incremental vacuum keeps one: ~10 % of each webhook's commit (bench/ingest.py).
    with Store.open(tmp_path / "wb.db") as store:
        assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0


def test_giving_space_back_drops_the_pointer_map_an_older_release_turned_on(
    tmp_path: Path,
) -> None:
    # A release of 2026-11-25 kept SQLite's incremental vacuum on (new files, and older ones
    # rewritten once); the rewrite that gives space back leaves the file without it.
    Store.open(tmp_path / "wb.db").close()
    older = sqlite3.connect(tmp_path / "wb.db", isolation_level=None)
    older.execute("PRAGMA auto_vacuum=INCREMENTAL")
    older.execute("VACUUM")
    older.close()
    with Store.open(tmp_path / "wb.db") as store:
        assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        fill_and_prune(store)
        assert store.reclaim_space(min_free_pages=100) > 0
        assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
        assert store.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_the_overview_is_read_without_waiting_for_writes(tmp_path: Path) -> None:
    # /metrics and the status page count a backlog of 100,000 rows in a tenth of a second:
    # behind the store's lock, every webhook would wait for it, and it for them.
    with Store.open(tmp_path / "wb.db") as store:
        store.enqueue([row("a")], 1.0)
        writing, done = threading.Event(), threading.Event()

        def write() -> None:
            with store.transaction():
                writing.set()
                done.wait(10)

        writer = threading.Thread(target=write)
        writer.start()
        writing.wait(10)
        try:
            counted: list[dict[str, TargetQueue]] = []
            reader = threading.Thread(target=lambda: counted.append(store.queue_gauges()))
            reader.start()
            reader.join(2)
            assert counted == [{"trakt": TargetQueue(pending=1, oldest_pending_at=1.0)}]
            assert store.status().outbox["pending"] == 1
        finally:
            done.set()
            writer.join(10)


OPEN_AT = """
import sys, time
from watchbridge.store import Store
while time.time() < float(sys.argv[2]):
    pass
Store.open(sys.argv[1]).close()
"""


def open_together(path: Path) -> list[int]:
    """Two processes (the service and a CLI command) opening `path` at the same moment."""
    start = str(time.time() + 0.5)
    runs = [
        subprocess.Popen([sys.executable, "-c", OPEN_AT, str(path), start], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    return [run.wait(30) for run in runs]


def test_two_processes_creating_the_database_at_once_both_open_it(tmp_path: Path) -> None:
    for attempt in range(2):
        assert open_together(tmp_path / f"new{attempt}.db") == [0, 0]


def test_two_processes_upgrading_an_old_database_at_once_both_open_it(tmp_path: Path) -> None:
    old = sqlite_utils.Database(tmp_path / "old.db")
    migrations.apply(old, stop_before="m004_sync_run_heartbeat")
    old.execute(
        "INSERT INTO tokens (service, profile, data, updated_at) VALUES ('t', 'me', '{}', 1)"
    )
    old.conn.commit()
    old.close()
    assert open_together(tmp_path / "old.db") == [0, 0]
    with Store.open(tmp_path / "old.db") as store:
        assert store.get_token("t", "me") == {}
        assert migrations.pending(store.db) == []


def test_a_database_of_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    Store.open(tmp_path / "wb.db").close()
    newer = sqlite_utils.Database(tmp_path / "wb.db")
    newer["_sqlite_migrations"].insert(
        {"migration_set": "watchbridge", "name": "m099_next", "applied_at": "2027-01-01"}
    )
    newer.conn.commit()
    newer.close()
    before = (tmp_path / "wb.db").read_bytes()
    with pytest.raises(StoreError, match="made by a newer watchbridge \\(m099_next\\)"):
        Store.open(tmp_path / "wb.db")
    assert (tmp_path / "wb.db").read_bytes() == before


def test_another_applications_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    # storage.path pointed at Home Assistant's or a media server's database by mistake.
    other = tmp_path / "home-assistant_v2.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE states (state_id INTEGER PRIMARY KEY, state TEXT)")
        conn.execute("INSERT INTO states (state) VALUES ('on')")
    conn.close()
    other.chmod(0o644)
    before = other.read_bytes()
    with pytest.raises(StoreError) as refused:
        Store.open(other)
    assert refused.value.message.startswith(f"storage.path {other}: not a watchbridge database")
    assert "states" in refused.value.message
    assert other.read_bytes() == before
    assert stat.S_IMODE(other.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home-assistant_v2.db"]


def test_a_damaged_database_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "wb.db"
    db.write_bytes(b"\xa5" * 8192)  # an SD card's lost pages, its header among them
    with pytest.raises(StoreError) as refused:
        Store.open(db)
    assert refused.value.message == (
        f"storage.path {db}: the file is damaged or not a database (file is not a database):"
        f" stop watchbridge and move it aside; the next start begins from its backup copy"
        f" {db}.backup (`watchbridge backup`) if there is one, else from a new database"
        " (sign in again then)"
    )


def _pages_lost(db: Path) -> None:
    """A watchbridge database whose pages after the first (its tables) an SD card lost."""
    Store.open(db).close()
    data = db.read_bytes()
    db.write_bytes(data[:4096] + b"\xa5" * (len(data) - 4096))


def _header_lost(db: Path) -> None:
    db.write_bytes(b"\xa5" * 8192)


@pytest.mark.parametrize("damage", [_header_lost, _pages_lost])
def test_a_damaged_database_file_is_refused_at_once(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    # Waiting mends no damaged file: only a lock another process holds is waited for.
    db = tmp_path / "wb.db"
    damage(db)
    started = time.monotonic()
    with pytest.raises(StoreError, match="the file is damaged or not a database"):
        Store.open(db, busy_timeout=0.1)
    assert time.monotonic() - started < 1.0


def test_a_database_another_process_holds_locked_is_waited_for_when_opened(
    tmp_path: Path,
) -> None:
    db = tmp_path / "wb.db"
    # A sqlite3 shell, not in WAL mode.
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA user_version = 1")
    holder.execute("BEGIN EXCLUSIVE")  # no reader gets in
    letting_go = threading.Timer(0.6, lambda: holder.execute("ROLLBACK"))
    letting_go.start()
    started = time.monotonic()
    try:
        Store.open(db, busy_timeout=0.1).close()  # waits past its busy_timeout, then opens
    finally:
        letting_go.join()
        holder.close()
    assert time.monotonic() - started >= 0.5


def test_a_restore_sets_aside_the_journal_of_the_deleted_database(tmp_path: Path) -> None:
    # Deleted after a crash, the database leaves its write-ahead log: replayed over the copy,
    # it would damage it, or pass off newer rows as the backup's.
    db = tmp_path / "wb.db"
    crash = tmp_path / "crash"
    crash.mkdir()
    with Store.open(db) as store:
        store.put_token("trakt", "me", {"access_token": "a"}, 1.0)
        store.backup_to(backup_path(db))
        store.db.execute("PRAGMA wal_autocheckpoint=0")
        for n in range(200):  # still only in the log when the process is killed
            store.put_token("svc", f"p{n}", {"access_token": "y" * 500}, 2.0)
        for name in ("wb.db", "wb.db-wal", "wb.db-shm"):
            shutil.copy(tmp_path / name, crash / name)
    for name in ("wb.db-wal", "wb.db-shm"):  # the files as the crash left them, db removed
        shutil.copy(crash / name, tmp_path / name)
    db.unlink()
    with Store.open(db) as restored:
        assert restored.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert restored.db.execute("SELECT COUNT(*) FROM tokens").fetchone()[0] == 1
    assert (tmp_path / "wb.db-wal.orphaned").is_file()


def test_a_commit_that_fails_leaves_no_transaction_open_for_later_writes(
    store: Store, tmp_path: Path
) -> None:
    # A deferred constraint fails at COMMIT and SQLite keeps the transaction open (as it may
    # after a full disk): later writes must not join it and never reach the disk.
    store.db.execute("PRAGMA foreign_keys = ON")
    store.db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    store.db.execute(
        "CREATE TABLE child (parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as conn:
        conn.execute("INSERT INTO child VALUES (1)")
    with store.transaction() as conn:
        conn.execute("INSERT INTO parent VALUES (7)")
    with sqlite3.connect(tmp_path / "state.db") as other:
        assert other.execute("SELECT id FROM parent").fetchall() == [(7,)]


def last_release_db(path: Path, runs: list[tuple[str, str | None]]) -> None:
    """A database of the last release (before m011) with these runs of link plex-trakt
    (outcome, error), oldest first."""
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="m011_watchlist_holds")
    for n, (outcome, error) in enumerate(runs):
        run = {"link": "plex-trakt", "started_at": n, "finished_at": n}
        old["sync_runs"].insert(run | {"outcome": outcome, "error": error})
    old.conn.commit()
    old.close()


def held_watchlist_error(profile: str) -> str:
    """How the last release's run record named a profile's watchlist hold."""
    from watchbridge.guard import for_link, removals_held

    why = removals_held(3, 3, "watchlist titles on Plex", 0.1, 3)
    return f"{profile}: watchlist: {for_link(why, 'plex-trakt')}"


def test_watchlist_removals_the_last_release_held_stay_held_after_the_upgrade(
    tmp_path: Path,
) -> None:
    from watchbridge.plexlink import watchlist_holding

    error = f"sam: plays failed; {held_watchlist_error('me')}"
    last_release_db(tmp_path / "old.db", [("held", error), ("failed", "me: sign-in expired")])
    with Store.open(tmp_path / "old.db") as store:
        assert watchlist_holding(store, "plex-trakt", "me")  # the failed run may not have read
        assert not watchlist_holding(store, "plex-trakt", "sam")


def test_a_watchlist_hold_confirmed_before_the_upgrade_is_not_held_again(tmp_path: Path) -> None:
    from watchbridge.plexlink import watchlist_holding

    last_release_db(tmp_path / "old.db", [("held", held_watchlist_error("me")), ("ok", None)])
    with Store.open(tmp_path / "old.db") as store:
        assert not watchlist_holding(store, "plex-trakt", "me")


def test_a_changed_config_makes_the_rows_held_for_a_sign_in_or_ids_due(store: Store) -> None:
    store.enqueue([row(k, ordering=f"me:trakt:{k}") for k in ("signin", "limit", "ids")], 0.0)
    assert store.due_after_config_change("first start", 0.0) is None  # nothing to compare
    signin, limit, ids = store.claim("w", 0.0, 10)
    store.settle(
        10.0,
        [
            Settlement(signin.id, "pending", 1800.0, "Serializd refused the password", False, True),
            Settlement(limit.id, "pending", 2850.0, "rate limited until 00:47", False),
            Settlement(ids.id, "pending", 3600.0, "unmatched: no show TMDB id"),
        ],
    )
    assert store.due_after_config_change("first start", 20.0) is None  # as it was
    assert store.claim("w", 20.0, 10) == []
    assert store.due_after_config_change("password fixed", 30.0) == 2
    again = {i.id: i for i in store.claim("w", 30.0, 10)}
    assert set(again) == {signin.id, ids.id}  # the rate limit's wait stands
    assert again[ids.id].attempts == 0  # the extra try is not the row's failure


def fill_a_busy_week(store: Store, outbox_rows: int, old_events: int) -> None:
    """`outbox_rows` delivered rows of a day ago (a first link sync's), and `old_events`
    events of eight days ago that queued nothing (a week's progress webhooks)."""
    now, day = 10 * 86400.0, 86400.0
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO events (received_at, source, kind, profile, payload)"
            " VALUES (?, 'jellyfin', 'progress', 'me', '{}')",
            [(now - 8 * day,)] * old_events,
        )
        conn.executemany(
            "INSERT INTO outbox (target, profile, action, payload, ordering_key,"
            " idempotency_key, status, next_attempt_at, created_at, updated_at)"
            " VALUES ('trakt', 'me', 'play', '{}', ?, ?, 'done', ?, ?, ?)",
            [(f"o{i}", f"k{i}", now - day, now - day, now - day) for i in range(outbox_rows)],
        )


def test_pruning_a_weeks_events_beside_a_large_outbox_is_quick(store: Store) -> None:
    # It holds the write lock: every webhook's answer waits for it (it took 10 s and more).
    fill_a_busy_week(store, outbox_rows=20_000, old_events=5_000)
    started = time.perf_counter()
    pruned = store.prune(now=10 * 86400.0, keep_done=7 * 86400.0, keep_sessions=400 * 86400.0)
    assert pruned["events"] == 5_000
    assert time.perf_counter() - started < 1.0


def pages_written_by(store: Store, write: Callable[[int], None], times: int) -> float:
    """Pages the write-ahead log gained per call of `write(i)`, each in its own commit."""
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.db.execute("PRAGMA wal_autocheckpoint=0")
    for i in range(times):
        write(i)
    _, frames, _ = store.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return float(frames) / times


def test_a_progress_webhook_writes_few_pages(store: Store) -> None:
    # Jellyfin reports progress every 10 s while playing: each one's writes wear SD cards.
    playing = Session("jellyfin:s1:alice:tv:movie1", "playing", 10.0, 1, 0.0, 0.0)
    store.ingest(progress_job(playing, 0))

    def progress(i: int) -> None:
        store.ingest(progress_job(playing, 1 + i))

    assert pages_written_by(store, progress, 100) <= 3.5


def progress_job(playing: Session, i: int) -> IngestJob:
    """The i-th progress report of a viewing that goes on (it queues nothing)."""
    now = 100.0 + 10 * i
    event = {"item": {"kind": "movie", "title": "Heat", "ids": {"imdb": "tt0113277"}}}
    event |= {"player": "tv", "account": "alice", "position_ms": 10_000 * i, "pad": "x" * 400}

    def decide(
        session: Session | None, _marks: Session | None
    ) -> tuple[Session | None, list[NewOutboxRow]]:
        return replace(playing, progress=10.0 + i / 100, updated_at=now), []

    return IngestJob("jellyfin", "progress", "me", event, now, playing.key, decide)


def test_events_and_their_deliveries_of_the_last_release_survive_the_upgrade(
    tmp_path: Path,
) -> None:
    old = sqlite_utils.Database(tmp_path / "old.db")
    migrations.apply(old, stop_before="m013_lighter_webhook_writes")
    old.execute(
        "INSERT INTO events (id, received_at, source, kind, profile, idempotency_key, payload)"
        " VALUES (7, 1, 'plex', 'stop', 'me', 'e7', '{}')"
    )
    old["outbox"].insert(
        {"event_id": 7, "target": "trakt", "profile": "me", "action": "play", "payload": "{}"}
        | {"ordering_key": "o", "idempotency_key": "k", "next_attempt_at": 1, "created_at": 1}
        | {"updated_at": 1}
    )
    old.conn.commit()
    old.close()
    with Store.open(tmp_path / "old.db") as store:
        (row,) = store.claim("w", 2.0)
        assert row.idempotency_key == "k"
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
        again = store.record_event(
            source="plex", kind="stop", payload={}, now=3, idempotency_key="e7"
        )
        assert again == 7  # the key still names one event
        with pytest.raises(sqlite3.IntegrityError):  # and the outbox still refers to events
            store.db.execute("DELETE FROM events WHERE id = 7")


def test_an_extended_corruption_code_counts_as_a_damaged_file() -> None:
    from watchbridge.store import _damaged

    index = sqlite3.DatabaseError("database disk image is malformed")
    index.sqlite_errorcode = 779  # type: ignore[attr-defined]  # SQLITE_CORRUPT_INDEX
    locked = sqlite3.OperationalError("database is locked")
    locked.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    assert _damaged(index)
    assert not _damaged(locked) and not _damaged(sqlite3.DatabaseError("made by hand"))


def test_an_outbox_row_never_takes_the_id_of_one_discarded_or_pruned(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "wb.db")
    store.enqueue([row("a", "order-a"), row("b", "order-b")], 1.0)
    newest = max(item.id for item in store.claim("w", 1.0))
    store.mark_dead(newest, 2.0, "gave up")
    assert store.discard_dead([newest]) == 1  # `watchbridge deadletters discard`
    store.enqueue([row("c", "order-c")], 3.0)
    (later,) = [item for item in store.claim("w", 3.0) if item.idempotency_key == "c"]
    assert later.id > newest
    store.complete(later.id, 4.0)
    store.prune(30 * 86400.0, keep_done=86400.0, keep_sessions=86400.0)  # a quiet month
    store.enqueue([row("d", "order-d")], 30 * 86400.0)
    assert max(item.id for item in store.claim("w", 30 * 86400.0)) > later.id
    store.close()


def test_the_outbox_of_the_last_release_keeps_its_rows_and_hands_out_no_gone_id(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="m015_outbox_ids_never_reused")
    old.execute(
        "INSERT INTO events (id, received_at, source, kind, profile, payload)"
        " VALUES (7, 1, 'plex', 'stop', 'me', '{}')"
    )
    base = {"profile": "me", "action": "play", "payload": "{}", "next_attempt_at": 1}
    base |= {"created_at": 1, "updated_at": 1, "target": "trakt"}
    for values in (
        {"id": 3, "event_id": 7, "ordering_key": "o3", "idempotency_key": "k3"},
        {"id": 5, "ordering_key": "o5", "idempotency_key": "k5", "status": "dead"}
        | {"attempts": 12, "last_error": "gave up", "told_at": 2.0},
        {"id": 6, "ordering_key": "o6", "idempotency_key": "k6", "waits_for_sign_in": 1}
        | {"failing_since": 1.5, "last_error": "sign in"},
    ):
        old["outbox"].insert(base | values)
    # Rows an account limit held, the newest (9) discarded since: its id is not handed out.
    old["id_cache"].insert(
        {"namespace": "account-limit", "lookup": "trakt:me", "result": "[6, 9]"}
        | {"fetched_at": 1, "expires_at": 10**10}
    )
    before = old.execute("SELECT * FROM outbox ORDER BY id").fetchall()
    columns = [c.name for c in old["outbox"].columns]
    old.conn.commit()
    old.close()
    with Store.open(path) as store:
        assert [m.name for m in migrations.pending(store.db)] == []
        # Those of the last release, and what later migrations added (m024: `held`, m025:
        # `once_more`, m030: `crashes`, m039: `waits_for_server`, once m038's flag).
        added = ["held", "once_more", "crashes", "waits_for_server"]
        assert [c.name for c in store.db["outbox"].columns] == [*columns, *added]
        kept = ", ".join(columns)
        after = store.db.execute(f"SELECT {kept} FROM outbox ORDER BY id").fetchall()
        assert [tuple(r) for r in after] == before
        assert [item.id for item in store.dead_letters()] == [5]
        assert [tuple(r) for r in store.db.execute("SELECT id FROM dead_letters")] == [(5,)]
        assert store.db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert [tuple(r) for r in store.db.execute("PRAGMA integrity_check")] == [("ok",)]
        store.enqueue([row("new", "order-new")], 2.0)
        ids = {item.idempotency_key: item.id for item in store.claim("w", 2.0, limit=10)}
        assert ids["new"] == 10
        with pytest.raises(sqlite3.IntegrityError):  # the outbox still refers to events
            store.db.execute("DELETE FROM events WHERE id = 7")


def copy_put_back(tmp_path: Path) -> Path:
    """A database with a `backup` copy of it put back in its place."""
    database = tmp_path / "wb.db"
    with Store.open(database) as store:
        store.backup_to(tmp_path / "copy.db")
    put_back(tmp_path / "copy.db", database)
    return database


def unchecked(database: Path) -> Store:
    """The database as a Store that has not opened it (no migration, no stamp read)."""
    conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return Store(conn, database)


def test_a_copy_an_older_release_went_back_to_and_ran_on_is_not_taken_for_a_copy_on_upgrade(
    tmp_path: Path,
) -> None:
    # README's "Upgrading": to go back, a copy taken before the upgrade is started from by the
    # older release. That release knows no stamp and leaves it in the file; it runs for weeks
    # (notes it is alive, takes in webhooks). Upgraded again, the database is the live one.
    database = copy_put_back(tmp_path)
    with unchecked(database) as older:  # what an older release's open makes: no stamp check
        weeks_later = time.time() + 14 * 86400
        older.note_alive(weeks_later)
        older.enqueue([row("taken in by the older release", ordering="a")], weeks_later)
    with Store.open(database) as upgraded:
        assert upgraded.restore_untold() is None  # no "a backup copy put back" at this start
        assert upgraded.marked([1]) == set()  # nor its own webhook's row looked up first


def test_a_copy_another_process_marked_as_both_opened_it_is_not_marked_again(
    tmp_path: Path,
) -> None:
    # The service and a `watchbridge sync` open the copy put back at once: both read its
    # stamp before either marks. The one that marks second would mark the rows taken in since
    # (each looked up before it goes) and have the restore told a second time.
    database = copy_put_back(tmp_path)
    with unchecked(database) as second:
        copied = second._copy_taken_at()
        assert copied is not None
        with Store.open(database) as first:
            first.tell_restore(by_service=True)
            first.enqueue([row("taken in since", ordering="a")], time.time())
        second._mark_restored_rows(copied)
    with Store.open(database) as store:
        assert store.restore_untold() is None
        assert store.marked([1]) == set()


def test_a_start_with_no_restore_to_tell_writes_nothing_while_another_process_writes(
    tmp_path: Path,
) -> None:
    # A service starting while a `watchbridge sync` from cron holds the database for longer
    # than busy_timeout: with no restore to tell, its start must not need the write lock (the
    # start failed, "database is locked", and the service exited).
    database = tmp_path / "watchbridge.db"
    with Store.open(database, busy_timeout=0.2) as service:
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            assert service.tell_restore(by_service=True) is None
            assert not service.restore_told_elsewhere()
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def take_at_once(
    both: threading.Barrier, took: dict[str, str | None], name: str, store: Store
) -> None:
    """The restore taken by `name` (the service's start, or a sync's) as the other does."""
    both.wait()
    took[name] = store.tell_restore(by_service=name == "service")


def test_a_restore_is_taken_by_one_process_of_two_starting_at_once(tmp_path: Path) -> None:
    # The service's start and a `watchbridge sync` from cron, each on its own connection,
    # reach the restore at the same moment: one of them tells it, never both, and a service
    # that lost it learns the sync told it (its alive note is the copy's: no absence).
    database = copy_put_back(tmp_path)
    with Store.open(database) as service, Store.open(database) as sync:
        for _ in range(20):
            copied = service.restore_untold()
            assert copied is not None
            both = threading.Barrier(2)
            took: dict[str, str | None] = {}
            racing = [
                threading.Thread(target=take_at_once, args=(both, took, "service", service)),
                threading.Thread(target=take_at_once, args=(both, took, "sync", sync)),
            ]
            for thread in racing:
                thread.start()
            for thread in racing:
                thread.join()
            assert sorted(str(v) for v in took.values()) == sorted([copied, "None"]), took
            assert service.restore_told_elsewhere() == (took["sync"] is not None)
            assert not service.restore_told_elsewhere()  # once
            with sync.transaction() as conn:  # put back again, for the next round
                conn.execute(
                    "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, 0)",
                    (RESTORED_COPY, copied),
                )


def test_a_kept_mirror_copy_is_read_again_only_where_written_since(store: Store) -> None:
    store.mirror_put("plex", "me", "keys", {"a": 1}, 1.0)
    store.mirror_put("plex", "me", "unwatching", {"h:1": {"at": 1.0, "row": 404}}, 1.0)
    first = store.mirror_copy("plex", "me", ["keys", "unwatching"])
    again = store.mirror_copy("plex", "me", ["keys", "unwatching"], first)
    assert again.collections["keys"] is first.collections["keys"]  # not read again
    store.mirror_put("plex", "me", "keys", {"b": 2}, 2.0)
    # Written in SQL of their own, not by mirror_put: a removal's note whose row is gone
    # (`ROW_ENTRIES`), the whole mirror at a reset.
    store.prune(10.0, keep_done=1.0, keep_sessions=1.0)
    pruned = store.mirror_copy("plex", "me", ["keys", "unwatching"], again)
    assert pruned.collections == {"keys": {"a": 1, "b": 2}, "unwatching": {}}
    assert store.reset(10.0) == []
    assert store.mirror_copy("plex", "me", ["keys"], pruned).collections == {"keys": {}}


def test_a_copy_following_its_own_write_is_not_read_again(store: Store) -> None:
    store.mirror_put("plex", "me", "keys", {"a": 1}, 1.0)
    copy = store.mirror_copy("plex", "me", ["keys"])
    copy.collections["keys"]["b"] = 2
    was = copy.following("keys")
    copy.wrote("keys", was, store.mirror_put("plex", "me", "keys", {"b": 2}, 2.0))
    assert (
        store.mirror_copy("plex", "me", ["keys"], copy).collections["keys"]
        is (copy.collections["keys"])
    )
    # Another write between the copy's read and ours: the copy lacks it, and reads again.
    was = copy.following("keys")
    store.mirror_put("plex", "me", "keys", {"c": 3}, 3.0)
    copy.collections["keys"]["d"] = 4
    copy.wrote("keys", was, store.mirror_put("plex", "me", "keys", {"d": 4}, 3.0))
    assert store.mirror_copy("plex", "me", ["keys"], copy).collections["keys"] == {
        "a": 1,
        "b": 2,
        "c": 3,
        "d": 4,
    }


def test_a_collection_replaced_in_parts_is_whole_only_once_its_last_part_is_written(
    store: Store, tmp_path: Path
) -> None:
    # A Plex history of 43,000 rows held the store's lock ~0.4 s when replaced in one
    # transaction: in parts, a webhook's record waits for one part only. Halfway (here,
    # stopped as it looks for the rows to take out), the collection is no whole copy: not
    # to a reader, nor to a start after a crash then (another Store on the file, another
    # process's view: what a kill would leave). Each row is the old one or the new
    # meanwhile, never neither.
    store.mirror_put("plex", "me", "history", {"1": 1, "2": 2, "3": 3}, 1.0)
    new = {"2": 20, "3": 30, "4": 40, "5": 50, "6": 60}
    writer = IngestWriter(store)
    taking_out = "SELECT item_key FROM mirror WHERE service = 'plex' AND profile = 'me'"

    async def replace_and_record() -> None:
        with paused_read(taking_out, *store_connections(store)) as paused:
            replacing = asyncio.ensure_future(
                asyncio.to_thread(
                    store.mirror_replace_in_parts, "plex", "me", "history", new, 2.0, 2
                )
            )
            assert await asyncio.to_thread(paused.reached.wait, 10)
            recorded = asyncio.ensure_future(writer.write(_job("during")))
            finished, _ = await asyncio.wait([recorded], timeout=5)
            assert finished == {recorded}, "the webhook waited for the whole replace"
            with Store.open(store.path or tmp_path) as other:
                assert other.mirror_get_if_whole("plex", "me", "history") is None
                assert other.mirror_get("plex", "me", "history") == {"1": 1, **new}
        await replacing

    try:
        asyncio.run(replace_and_record())
    finally:
        writer.close()
    assert store.mirror_get_if_whole("plex", "me", "history") == new
    assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


def test_a_write_in_parts_with_nothing_left_to_change_still_ends_the_marks_of_one_cut_short(
    store: Store,
) -> None:
    # A read that finds nothing new writes nothing back and keeps its maps' versions; but one
    # after a write cut short (here its last transaction failed, every part written) has
    # nothing left to change either: writing nothing then would leave the maps marked not
    # whole for good, the Plex deliverer holding the profile's rows.
    store.mirror_put("plex", "me", "keys", {"a": 1}, 1.0)
    was = store.mirror_versions("plex", "me")

    def cut(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("stands in for a crash")

    with pytest.raises(sqlite3.OperationalError, match="stands in for a crash"):
        store.mirror_change_in_parts(
            "plex", "me", {"keys": MirrorChange([("b", "2")])}, was, cut, 2.0
        )
    cut_short = store.mirror_copy("plex", "me", ["keys"])
    assert cut_short.partial == {"keys"}
    assert cut_short.collections["keys"] == {"a": 1, "b": 2}

    nothing = {"keys": MirrorChange()}

    assert store.mirror_change_in_parts(
        "plex", "me", nothing, cut_short.versions, lambda _: None, 3.0
    )
    whole = store.mirror_copy("plex", "me", ["keys"], cut_short)
    assert whole.partial == set()
    assert whole.versions["keys"] != cut_short.versions["keys"]
    assert store.mirror_get_if_whole("plex", "me", "keys") == {"a": 1, "b": 2}
    # Then, marks gone, nothing to change writes nothing.
    changes = store._conn.total_changes
    assert store.mirror_change_in_parts("plex", "me", nothing, whole.versions, lambda _: None, 4.0)
    assert store._conn.total_changes == changes
    assert store.mirror_versions("plex", "me") == whole.versions


def test_a_history_replace_cut_halfway_is_still_no_whole_copy_once_its_profile_is_renamed(
    store: Store,
) -> None:
    # A crash halfway through a replace in parts leaves its collection marked not whole;
    # `rename-profile` before the next read moved the rows but left the mark under the old
    # name, and the reader then read on from the mix as though it were the whole history.
    store.mirror_put("plex", "me", "history", {"1": 1, "2": 2, "3": 3}, 1.0)
    store.db.execute(
        "CREATE TRIGGER the_second_part_fails BEFORE INSERT ON mirror WHEN NEW.item_key = '5'"
        " BEGIN SELECT RAISE(ABORT, 'stands in for a crash'); END"
    )
    new = {"2": 20, "3": 30, "4": 40, "5": 50}
    with pytest.raises(sqlite3.IntegrityError, match="stands in for a crash"):
        store.mirror_replace_in_parts("plex", "me", "history", new, 2.0, 2)
    store.db.execute("DROP TRIGGER the_second_part_fails")
    assert store.mirror_get_if_whole("plex", "me", "history") is None

    moved = store.move_profile("me", "myself", "profile me is no longer in the config", 3.0)

    assert moved.refused == ""
    assert store.mirror_get("plex", "myself", "history") == {"1": 1, "2": 20, "3": 30}
    assert store.mirror_get_if_whole("plex", "myself", "history") is None


# Where the first replace stops while the second runs whole: as it looks for the rows to take
# out (its new rows all written), or between two parts of its new rows (the second part's
# first statement, outside any transaction: its look at the commit's sync level), with what
# it wrote by then.
BETWEEN_PARTS = {
    "before taking out": (
        "SELECT item_key FROM mirror WHERE service = 'plex'",
        0,
        {"1": 1, "2": 20, "3": 30, "4": 40, "5": 50},
    ),
    "between two parts": ("PRAGMA synchronous", 3, {"1": 1, "2": 20, "3": 30}),
}


@pytest.mark.parametrize("stopped_at", BETWEEN_PARTS)
def test_a_history_replace_another_process_took_over_stops_and_leaves_the_collection_to_it(
    store: Store, stopped_at: str
) -> None:
    # The service and a `watchbridge sync` both replacing one Plex history: the first went
    # on after the second ended, wrote its rows over the second's or took out rows the
    # second had written, and the history read as whole was a mix of both.
    store.mirror_put("plex", "me", "history", {"1": 1, "2": 2, "3": 3}, 1.0)
    first = {"2": 20, "3": 30, "4": 40, "5": 50}
    second = {"1": 100, "2": 200, "6": 600}
    what, after, written = BETWEEN_PARTS[stopped_at]
    finished: list[bool] = []
    assert store.path is not None
    with (
        Store.open(store.path) as other_process,
        paused_read(what, *store_connections(store), after=after) as paused,
    ):
        replacing = threading.Thread(
            target=lambda: finished.append(
                store.mirror_replace_in_parts("plex", "me", "history", first, 2.0, 2)
            )
        )
        replacing.start()
        assert paused.reached.wait(10)
        assert other_process.mirror_get("plex", "me", "history") == written
        finished.append(
            other_process.mirror_replace_in_parts("plex", "me", "history", second, 3.0, 2)
        )
        paused.release.set()
        replacing.join(10)
    assert store.mirror_get_if_whole("plex", "me", "history") == second
    assert finished == [True, False]  # the second replace ended whole; the first stopped


def test_a_dead_letter_goes_once_more_by_itself_only_once_though_two_processes_ask(
    store: Store,
) -> None:
    # The service and a `watchbridge sync` both see a write go through and read the rows due
    # to go once more; one queues the row, it gives up again, then the other (suspended since
    # its read) asks for the same id: a second death is final, whatever list it read.
    store.enqueue([row("play", action="play")], 1.0)
    (claimed,) = store.claim("w", 2.0)
    store.settle(3.0, [Settlement(claimed.id, "dead", None, "gave up: 502", once_more=True)])
    stale = store.once_more_due("trakt")
    assert stale == [claimed.id]
    assert store.retry_dead(stale, 4.0, by_itself=True).queued == 1
    (again,) = store.claim("w", 5.0)
    store.settle(6.0, [Settlement(again.id, "dead", None, "gave up: 502", once_more=True)])
    assert store.retry_dead(stale, 7.0, by_itself=True).queued == 0
    assert [r.id for r in store.dead_letters()] == [claimed.id]


def test_an_upgrade_says_in_the_log_that_it_brought_the_database_up_to_date(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A household pulling a new image saw nothing of the upgrade: not that it ran, nor how
    # long it took (a large events table takes seconds), nor which steps. A new database is
    # no upgrade, and says nothing.
    from tests.test_serve_lock import as_an_earlier_release_left_it

    caplog.set_level("INFO", logger="watchbridge.store")
    database = tmp_path / "wb.db"
    taken_back = as_an_earlier_release_left_it(database)
    assert "database upgraded" not in caplog.text
    Store.open(database).close()
    (upgraded,) = [r for r in caplog.records if r.getMessage() == "database upgraded"]
    assert upgraded.__dict__["steps"] == taken_back
    assert isinstance(upgraded.__dict__["seconds"], float)
    caplog.clear()
    Store.open(database).close()  # up to date: no line
    assert "database upgraded" not in caplog.text
