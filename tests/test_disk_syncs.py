"""How many commits that wait for the disk common jobs make. On an SD card one takes 10-50 ms:
a job that commits per row where a batch would do makes a 10,000-row job take minutes.

`DiskSyncs` watches the SQL the store's connection runs (sqlite3's trace callback) and counts
the commits that changed something while `PRAGMA synchronous` was FULL (a commit that wrote
nothing writes no log, and in WAL mode a NORMAL commit does not sync)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import FakePlex
from tests.fakes.receiver import FakeClock
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.fakes.trakt import iso as trakt_iso
from tests.harness import sign_in_trakt
from tests.linkrig import PROFILE, open_rig, use_fast_readers
from tests.test_plex_reader import JAMIE, JAMIE_TOKEN, make_config
from watchbridge.config import Link, parse_config
from watchbridge.deliver.plex import PlexTarget
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.http import Pacer, RetryPolicy
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.readers.plex import make_reader, plex_client
from watchbridge.store import NewOutboxRow, Settlement, Store
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

# `PRAGMA synchronous=N`: by name, or by number as the store sets back the level it read.
_SYNCED = {"FULL": True, "EXTRA": True, "NORMAL": False, "OFF": False}
_SYNCED |= {"3": True, "2": True, "1": False, "0": False}


class DiskSyncs:
    """Counts the commits on `conn` that wait for the disk, from now on."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.synced = int(conn.execute("PRAGMA synchronous").fetchone()[0]) >= 2
        self.count = 0
        self._changes_at_begin = conn.total_changes
        conn.set_trace_callback(self._ran)

    def _ran(self, sql: str) -> None:
        statement = " ".join(sql.split()).upper()
        if statement.startswith("PRAGMA SYNCHRONOUS="):
            self.synced = _SYNCED.get(statement.partition("=")[2].strip(), True)
        elif statement.startswith("BEGIN"):
            self._changes_at_begin = self.conn.total_changes
        elif statement.startswith("COMMIT"):
            if self.synced and self.conn.total_changes != self._changes_at_begin:
                self.count += 1
        elif self.synced and not self.conn.in_transaction:  # a statement of its own
            self.count += statement.startswith(("INSERT", "UPDATE", "DELETE", "REPLACE"))

    def stop(self) -> int:
        self.conn.set_trace_callback(None)
        return self.count


class UnsyncedWrites:
    """The writes a power cut now would lose, from now on: those committed on `conn` while
    `PRAGMA synchronous` was NORMAL since its last commit that waited for the disk (in WAL
    mode that commit made every earlier one durable too, the log being written in order and
    read back only up to its first torn frame)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.synced = int(conn.execute("PRAGMA synchronous").fetchone()[0]) >= 2
        self.writes: list[str] = []
        self._in_transaction: list[str] = []
        conn.set_trace_callback(self._ran)

    def _ran(self, sql: str) -> None:
        statement = " ".join(sql.split())
        upper = statement.upper()
        if upper.startswith("PRAGMA SYNCHRONOUS="):
            self.synced = _SYNCED.get(upper.partition("=")[2].strip(), True)
        elif upper.startswith("BEGIN"):
            self._in_transaction = []
        elif upper.startswith("COMMIT"):
            self._committed(self._in_transaction)
        elif upper.startswith(("INSERT", "UPDATE", "DELETE", "REPLACE")):
            if self.conn.in_transaction:
                self._in_transaction.append(statement)
            else:
                self._committed([statement])

    def _committed(self, writes: list[str]) -> None:
        if not writes:  # wrote no log: waited for nothing, made nothing durable
            return
        self.writes = [] if self.synced else [*self.writes, *writes]

    def stop(self) -> list[str]:
        self.conn.set_trace_callback(None)
        return self.writes


async def test_a_backlog_to_trakt_is_a_few_disk_syncs_per_batch_not_per_play(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], clock: FakeClock
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    plays = 300
    rows = []
    for n in range(plays):
        trakt.add_movie(f"Movie {n}", 2000, imdb=f"tt{1_000_000 + n}", tmdb=10_000 + n)
        item = MediaRef("movie", Ids(imdb=f"tt{1_000_000 + n}"), title=f"Movie {n}", year=2000)
        payload = {"item": ref_to_dict(item), "at": clock() - 86400 + n, "progress": 95.0}
        rows.append(NewOutboxRow("trakt", "me", "play", payload, f"me:trakt:{n}", f"k{n}"))
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me: {{accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    try:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())
        runtime.store.enqueue(rows, clock())
        worker.targets = {t.name: t for t in make_targets(runtime)}
        worker.targets["trakt"].client.http.pacers["me"] = Pacer()  # type: ignore[attr-defined]
        syncs = DiskSyncs(runtime.store._conn)
        while await worker.pass_once(runtime):
            clock.advance(1)
        assert runtime.store.outbox_counts()["done"] == plays
        # Two batches of up to 250: claim, a note before the send, what landed, the outcomes.
        assert syncs.stop() <= 10
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


async def test_a_links_first_sync_queues_thousands_of_plays_in_a_few_disk_syncs(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_fast_readers(monkeypatch)
    trakt = start_fake(FakeTrakt())
    serializd = start_fake(FakeSerializd())
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    shows, seasons = 20, {1: 50, 2: 50}
    start = time.time() - 400 * 86400
    for n in range(shows):
        show = trakt.add_show(f"Show {n}", 2000, tmdb=100_000 + n, seasons=seasons)
        serializd.add_show(100_000 + n, f"Show {n}", seasons)
        for e in range(100):
            episode = show.seasons[e // 50 + 1].episodes[e % 50 + 1]
            trakt.add_history(episode, trakt_iso(start + (n * 100 + e) * 3600))
    rig = open_rig(tmp_path, trakt, serializd, ", first_run: apply")
    try:
        syncs = DiskSyncs(rig.store._conn)
        result = await rig.sync()
        assert result.queued == shows * 100
        # The run's record, cursors, the account read (its id and username), one id lookup
        # per show, the plan queued in one commit.
        assert syncs.stop() <= shows + 16
    finally:
        await rig.aclose()


T0 = 1_700_000_000
NOW = T0 + 30 * 86400


async def test_plays_written_to_plex_wait_for_the_disk_once_each(
    start_fake: Callable[[FakeServer], FakeServer], store: Store
) -> None:
    # A Trakt -> Plex first sync marks thousands of items watched on a server that answers
    # in milliseconds: the disk sets the pace. Before each scrobble a synced record says it
    # was sent (a crash then asks Plex instead of scrobbling twice); the record that it went
    # through need not wait for the disk.
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plays = 100
    for n in range(plays):
        plex.add_movie(str(1000 + n), f"Movie {n}", 2000, [f"tmdb://{5000 + n}"])
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    plex.clock = lambda: NOW
    clock = FakeClock(NOW)
    config = make_config(plex)
    reader = make_reader(config, store, Link(["plex", "trakt"]), ["alex", "jamie"], clock)
    await reader.read("alex", {}, None, True)  # the libraries the rows are looked up in
    await reader.aclose()
    rows = []
    for n in range(plays):
        item = MediaRef("movie", Ids(tmdb=str(5000 + n)))
        payload = {"item": ref_to_dict(item), "at": T0 + n, "link": "plex-trakt"}
        rows.append(NewOutboxRow("plex", "alex", "play", payload, f"alex:plex:{n}", f"k{n}"))
    store.enqueue(rows, NOW)
    client = plex_client(config, store, clock)
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    target = PlexTarget(client, config, store, clock)
    try:
        syncs = DiskSyncs(store._conn)
        while claimed := store.claim("worker", NOW, target.batch_size, ["plex"]):
            outcomes = await target.deliver(claimed, NOW)
            store.settle(NOW, [Settlement(row, "done") for row in outcomes], "worker")
        assert syncs.stop() <= plays + 5  # was two per play
    finally:
        await target.aclose()
    assert all(plex.user_state(str(1000 + n))["viewCount"] == 1 for n in range(plays))


# A link runs every 30 minutes (or every minute) for months, nearly always finding nothing
# new. On a Pi's SD card each write wears the card and each commit waits 5-50 ms for it: a run
# with nothing to do writes its record, and no cursor, mirror row or version again unchanged.


async def test_a_link_run_that_finds_nothing_new_writes_only_its_record(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_fast_readers(monkeypatch)
    trakt = start_fake(FakeTrakt())
    serializd = start_fake(FakeSerializd())
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    start = time.time() - 40 * 86400
    for n in range(3):
        show = trakt.add_show(f"Show {n}", 2000, tmdb=100_000 + n, seasons={1: 5})
        serializd.add_show(100_000 + n, f"Show {n}", {1: 5})
        for e in (1, 2):
            trakt.add_history(show.seasons[1].episodes[e], trakt_iso(start + (n * 10 + e) * 3600))
    kinds = ", first_run: apply, kinds: [history, ratings, watchlist]"
    rig = open_rig(tmp_path, trakt, serializd, kinds)
    try:
        assert (await rig.sync_and_deliver()).queued == 6
        await rig.sync_and_deliver()  # reads back what the first one wrote
        conn = rig.store._conn
        versions = rig.store.mirror_versions("link:trakt-serializd", PROFILE)
        changes, syncs = conn.total_changes, DiskSyncs(conn)
        assert (await rig.sync()).queued == 0
        # Its record's start and end; before, also its watchlist's mirror and two cursors.
        assert syncs.stop() == 2
        assert conn.total_changes - changes == 2
        assert rig.store.mirror_versions("link:trakt-serializd", PROFILE) == versions
    finally:
        await rig.aclose()


async def test_a_daily_full_read_that_finds_nothing_new_writes_no_baseline_again(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_fast_readers(monkeypatch)
    trakt = start_fake(FakeTrakt())
    serializd = start_fake(FakeSerializd())
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    start = time.time() - 40 * 86400
    for n in range(10):
        show = trakt.add_show(f"Show {n}", 2000, tmdb=100_000 + n, seasons={1: 5})
        serializd.add_show(100_000 + n, f"Show {n}", {1: 5})
        for e in range(1, 6):
            trakt.add_history(show.seasons[1].episodes[e], trakt_iso(start + (n * 10 + e) * 3600))
    rig = open_rig(tmp_path, trakt, serializd, ", first_run: apply")
    try:
        assert (await rig.sync_and_deliver()).queued == 50
        await rig.sync_and_deliver(full=True)  # reads back what the first one wrote
        conn = rig.store._conn
        sides = ("trakt", "serializd")
        versions = {s: rig.store.mirror_versions(s, PROFILE) for s in sides}
        changes, syncs = conn.total_changes, DiskSyncs(conn)
        assert (await rig.sync(full=True)).queued == 0
        assert {s: rig.store.mirror_versions(s, PROFILE) for s in sides} == versions
        # Its record's start and end, and the cursors saying when the sides were read in full
        # (the switch's one commit); before, also each side's 50 plays written under a new
        # generation and the last one's taken out: 200 rows more, a commit per part.
        assert conn.total_changes - changes <= 4
        assert syncs.stop() <= 3
    finally:
        await rig.aclose()


async def test_a_plex_read_that_finds_nothing_new_writes_nothing(
    start_fake: Callable[[FakeServer], FakeServer], store: Store
) -> None:
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    for n in range(20):
        plex.add_movie(str(1000 + n), f"Movie {n}", 2000, [f"tmdb://{5000 + n}"])
        if n % 2:
            plex.watch(str(1000 + n), T0 + n * 100)
    plex.clock = lambda: NOW
    clock = FakeClock(NOW)
    reader = make_reader(make_config(plex), store, Link(["plex", "trakt"]), ["alex"], clock)
    try:
        first = await reader.read("alex", {}, None, True)
        changes, syncs = store._conn.total_changes, DiskSyncs(store._conn)
        again = await reader.read("alex", first.cursors, first.side, False)
        assert again.side.plays == first.side.plays
        assert syncs.stop() == 0  # was 2, rewriting each history row and cursor as it was
        assert store._conn.total_changes == changes
        # The daily full read marks the history cache not whole while it replaces it in parts.
        syncs = DiskSyncs(store._conn)
        await reader.read("alex", again.cursors, again.side, True)
        assert syncs.stop() <= 2  # was 3
    finally:
        await reader.aclose()


def test_a_mirror_written_as_it_is_keeps_its_version_and_only_changed_rows_are_written(
    store: Store,
) -> None:
    items = {f"k{n}": {"n": n} for n in range(50)}
    store.mirror_replace("plex", "alex", "plays", items, 1.0)
    store.mirror_put("plex", "alex", "keys", {}, 1.0)  # nothing, but a version all the same
    versions = store.mirror_versions("plex", "alex")
    assert set(versions) == {"plays", "keys"}
    changes = store._conn.total_changes
    store.mirror_replace("plex", "alex", "plays", dict(items), 2.0)
    store.mirror_put("plex", "alex", "plays", {"k1": {"n": 1}}, 2.0)
    store.mirror_remove("plex", "alex", "plays", ["gone"])
    store.mirror_put("plex", "alex", "keys", {}, 2.0)
    store.set_cursor("plex", "alex", "keys_from", "m1", 2.0)
    store.set_cursor("plex", "alex", "keys_from", "m1", 3.0)
    assert store._conn.total_changes == changes + 1  # the cursor's first write alone
    assert store.mirror_versions("plex", "alex") == versions
    changed = {**items, "k3": {"n": -3}, "new": {}}
    del changed["k4"]
    written = store.mirror_replace("plex", "alex", "plays", changed, 3.0)
    assert store._conn.total_changes == changes + 1 + 3 + 1  # 3 rows and the version
    assert written.before == versions["plays"] != written.after
    assert store.mirror_get("plex", "alex", "plays") == changed


def test_the_alive_note_of_an_idle_service_does_not_wait_for_the_disk(store: Store) -> None:
    syncs = DiskSyncs(store._conn)
    store.note_alive(NOW)
    store.note_alive(NOW + 300)
    assert syncs.stop() == 0  # was one each, 12 an hour
    assert store.alive_at() == NOW + 300
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again


def test_a_record_not_waiting_for_the_disk_leaves_the_durability_setting_as_it_was(
    tmp_path: Path,
) -> None:
    for durability, level in (("full", 2), ("normal", 1)):
        store = Store.open(tmp_path / f"{durability}.db", durability=durability)
        try:
            store.mirror_put("plex", "alex", "written", {"a": 1}, 0.0, synced=False)
            store.mirror_put("plex", "alex", "written", {"b": 1}, 0.0)
            assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == level
            assert store.mirror_get("plex", "alex", "written") == {"a": 1, "b": 1}
        finally:
            store.close()


# storage.durability: normal may lose the last moments in a power cut, never the note written
# before a send the service cannot tell from a repeat: the next try looks there instead.


async def cut_while_answered(
    work: Coroutine[Any, Any, object], fake: FakeServer, method: str, path: str
) -> None:
    """Run `work` until `fake` has taken its request to `path`, then stop it there (the
    answer is held back): what a power cut at that moment leaves. Waits on the request, not a
    timer, so a busy machine changes nothing."""
    task = asyncio.ensure_future(work)
    deadline = time.monotonic() + 30
    while fake.count(method, path) == 0 and not task.done():
        assert time.monotonic() < deadline, f"{method} {path} never reached the fake"
        await asyncio.sleep(0.01)
    assert not task.done(), "the work ended before its request was answered"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_under_normal_durability_the_note_before_a_plex_scrobble_waits_for_the_disk(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plex.add_movie("1000", "Movie", 2000, ["tmdb://5000"])
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    plex.clock = lambda: NOW
    clock = FakeClock(NOW)
    config = make_config(plex)
    store = Store.open(tmp_path / "wb.db", durability="normal")
    reader = make_reader(config, store, Link(["plex", "trakt"]), ["alex", "jamie"], clock)
    await reader.read("alex", {}, None, True)  # the libraries the row is looked up in
    await reader.aclose()
    item = MediaRef("movie", Ids(tmdb="5000"))
    payload = {"item": ref_to_dict(item), "at": T0, "link": "plex-trakt"}
    store.enqueue([NewOutboxRow("plex", "alex", "play", payload, "alex:plex:1", "k1")], NOW)
    client = plex_client(config, store, clock)
    target = PlexTarget(client, config, store, clock)
    try:
        rows = store.claim("worker", NOW, target.batch_size, ["plex"])
        cut = UnsyncedWrites(store._conn)
        released = plex.hold_next(route="GET /:/scrobble")  # Plex took it; no answer yet
        # The power goes while the scrobble is answered.
        await cut_while_answered(target.deliver(rows, NOW), plex, "GET", "/:/scrobble")
        released.set()
        assert plex.user_state("1000")["viewCount"] == 1
        # Nothing a cut now takes: the pending record of the scrobble went to the disk first.
        assert cut.stop() == []
        (record,) = store.mirror_get("plex", "alex", "written").values()
        assert record["pending"]
    finally:
        await target.aclose()
        store.close()


async def test_under_normal_durability_the_note_before_a_trakt_history_add_waits_for_the_disk(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], clock: FakeClock
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.add_movie("Movie", 2000, imdb="tt1000000", tmdb=10_000)
    item = MediaRef("movie", Ids(imdb="tt1000000"), title="Movie", year=2000)
    payload = {"item": ref_to_dict(item), "at": clock() - 86400, "progress": 95.0}
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}, durability: normal}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me: {{accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    try:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())
        runtime.store.enqueue(
            [NewOutboxRow("trakt", "me", "play", payload, "me:t:1", "k1")], clock()
        )
        worker.targets = {t.name: t for t in make_targets(runtime)}
        cut = UnsyncedWrites(runtime.store._conn)
        released = trakt.hold_next(route="POST /sync/history")  # Trakt took it; no answer yet
        # The power goes while the play is answered.
        await cut_while_answered(worker.pass_once(runtime), trakt, "POST", "/sync/history")
        released.set()
        assert len(trakt.history()) == 1
        # Nothing a cut now takes: the note that the play was sent went to the disk first.
        assert cut.stop() == []
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()
