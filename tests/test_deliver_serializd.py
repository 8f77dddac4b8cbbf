"""The Serializd target against the stateful fake, driven pass by pass with a hand-moved clock."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.base import Request as FakeRequest
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd, Review, iso
from tests.harness import put_back, statements_run, until
from tests.test_delivery import AnotherProcessLocking
from tests.test_disk_syncs import DiskSyncs, UnsyncedWrites
from tests.test_sign_in_health import REFUSED_EXPIRY, metric, served
from tests.test_storage_faults import full_at_the_note_of_a_play
from tests.unpaced import unpaced
from watchbridge import serializdlist
from watchbridge.accounts import AccountNotes
from watchbridge.app import Runtime
from watchbridge.catalogue import SEASONS_CACHE
from watchbridge.config import Link, Secret, SerializdAccount, parse_config
from watchbridge.deliver.fence import FENCE_FRESH, STORE_LOCKED
from watchbridge.deliver.serializd import SECOND_READ_AFTER, SerializdTarget
from watchbridge.deliver.worker import SERVICE_ROLE, DeliveryWorker, Hold
from watchbridge.http import RetryPolicy
from watchbridge.logs import setup_logging
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.ratings import to_serializd
from watchbridge.readers.serializd import SerializdReader, make_reader, unanswered_copies
from watchbridge.reconcile import UNDATED, Play, Side, plan
from watchbridge.redaction import secret_values
from watchbridge.services.serializd import (
    DEFAULT_TAG,
    SerializdClient,
    SerializdUnavailable,
    host,
    token_expiry,
)
from watchbridge.store import CLAIM_LEASE, UNKNOWN_OUTCOME, NewOutboxRow, OutboxItem
from watchbridge.wiring import build_runtime, make_targets, serializd_client

pytestmark = pytest.mark.anyio

EMAIL, PASSWORD, USERNAME = ALICE
SHOW, SEASON_1 = 1396, 3572  # Breaking Bad and its season 1 (TMDB ids, as Serializd keys them)
REVIEWS_ADD = "/api/show/reviews/add"
EPISODE_LOG_ADD = "/api/episode_log/add"
DAY = 86400.0


def episode(number: int = 4, season: int = 1) -> MediaRef:
    return MediaRef(
        "episode",
        show_ids=Ids(tmdb=str(SHOW), tvdb="81189"),
        show_title="Breaking Bad",
        season=season,
        number=number,
    )


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = FakeSerializd()
    fake.seed_reference_catalogue()
    start_fake(fake)
    return fake


@pytest.fixture
def durability() -> str:
    """storage.durability (a test parametrizes it to run under another)."""
    return "full"


@pytest.fixture
def storage_settings() -> str:
    """More keys of the runtime's `storage:` (a test sets them by parametrizing this name)."""
    return ""


@pytest.fixture
def uptime() -> FakeClock | None:
    """The machine's uptime beside `clock` (None: it follows the clock, which never steps)."""
    return None


@pytest.fixture
async def runtime(
    tmp_path: Path,
    fake: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    durability: str,
    uptime: FakeClock | None,
    storage_settings: str,
) -> AsyncIterator[Runtime]:
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}, durability: {durability}{storage_settings}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
delivery: {{max_attempts: 5}}
services:
  serializd: {{api_url: "{fake.url}"}}
  trakt: {{client_id: trakt-app}}
  plex: {{url: "http://127.0.0.1:9", token: plex-owner-token}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts:
      serializd: {{email: "{EMAIL}", password: "{PASSWORD}"}}
      trakt: {{}}
      plex: {{}}
links:  # what queued the tests' link rows (the service gives up those no link asks for)
  ts: {{services: [trakt, serializd]}}
  plex-serializd: {{services: [plex, serializd]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock, uptime=uptime)
    runtime.open()
    yield runtime
    runtime.close()


def serializd_target(runtime: Runtime, clock: FakeClock) -> SerializdTarget:
    services = runtime.config.services.serializd
    assert services is not None
    client = SerializdClient(
        services,
        runtime.store,
        accounts={"me": SerializdAccount(EMAIL, Secret(PASSWORD))},
        clock=clock,
        requests_per_second=1000,
    )
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    return SerializdTarget(client, runtime.store, runtime.config.delivery, clock)


@pytest.fixture
async def target(runtime: Runtime, clock: FakeClock) -> AsyncIterator[SerializdTarget]:
    target = serializd_target(runtime, clock)
    yield target
    await target.aclose()


@pytest.fixture
def worker(runtime: Runtime, target: SerializdTarget) -> DeliveryWorker:
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery)
    worker.targets = {target.name: target}
    return worker


def enqueue(runtime: Runtime, action: str, item: MediaRef, at: float, **extra: Any) -> None:
    payload = {"item": ref_to_dict(item), "at": at, **extra}
    row = NewOutboxRow(
        "serializd",
        "me",
        action,
        payload,
        ordering_key=f"me:serializd:{item.key()}",
        idempotency_key=f"me:serializd:{action}:{item.key()}:{at}:{extra}",
    )
    assert runtime.store.enqueue([row], runtime.clock()) == 1


def claim(runtime: Runtime) -> list[OutboxItem]:
    return runtime.store.claim("test", runtime.clock(), 10, ["serializd"])


async def drain(
    worker: DeliveryWorker, runtime: Runtime, clock: FakeClock, passes: int = 4, step: float = 0.0
) -> None:
    for _ in range(passes):
        await worker.pass_once(runtime)
        clock.advance(step)


async def test_a_completed_episode_is_one_dated_diary_entry_and_one_tick(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    at = clock() - 3600
    enqueue(runtime, "play", episode(4), at, progress=97.0)
    await drain(worker, runtime, clock)
    (entry,) = fake.diary()
    assert (entry.show_id, entry.season_id, entry.episode_number) == (SHOW, SEASON_1, 4)
    assert entry.backdate == iso(at)
    assert entry.is_log and not entry.is_rewatch
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert runtime.store.outbox_counts()["done"] == 1


async def test_two_rows_for_the_same_viewing_make_one_entry(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    at = clock() - 3600
    enqueue(runtime, "play", episode(4), at)
    enqueue(runtime, "play", episode(4), at + 60)  # e.g. Plex and Tautulli both reported it
    await drain(worker, runtime, clock)
    assert len(fake.diary()) == 1
    assert fake.count("POST", REVIEWS_ADD) == 1
    assert runtime.store.outbox_counts()["done"] == 2


async def test_a_row_delivered_again_makes_no_second_entry(
    runtime: Runtime, target: SerializdTarget, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(4), clock() - 3600)
    rows = claim(runtime)
    first = await target.deliver(rows, clock())
    again = await target.deliver(rows, clock())  # as if its outcome had never been recorded
    assert [type(o).__name__ for o in (*first.values(), *again.values())] == ["Delivered"] * 2
    assert len(fake.diary()) == 1
    assert fake.count("POST", EPISODE_LOG_ADD) == 1


async def test_a_rewatch_a_month_later_is_a_second_entry_flagged_rewatch(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    at = clock() - 3600
    enqueue(runtime, "play", episode(4), at)
    await drain(worker, runtime, clock, passes=1)
    clock.advance(30 * DAY)
    enqueue(runtime, "play", episode(4), at + 30 * DAY)
    await drain(worker, runtime, clock, passes=2)
    assert [(e.backdate, e.is_rewatch) for e in fake.diary()] == [
        (iso(at), False),
        (iso(at + 30 * DAY), True),
    ]


async def test_a_movie_is_skipped_without_asking_serializd(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    movie = MediaRef("movie", ids=Ids(imdb="tt0113277", tmdb="949"), title="Heat", year=1995)
    enqueue(runtime, "play", movie, clock() - 3600)
    await drain(worker, runtime, clock, passes=1)
    assert fake.requests == []
    assert runtime.store.outbox_counts()["done"] == 1


async def test_an_episode_without_a_tmdb_show_id_waits_as_unmatched(
    runtime: Runtime, target: SerializdTarget, fake: FakeSerializd, clock: FakeClock
) -> None:
    item = MediaRef("episode", show_ids=Ids(tvdb="81189"), show_title="Breaking Bad", season=1)
    enqueue(runtime, "play", item, clock())
    (outcome,) = (await target.deliver(claim(runtime), clock())).values()
    assert "unmatched" in getattr(outcome, "reason", "")
    assert fake.requests == []


async def test_a_connection_dropped_after_the_add_lands_makes_one_entry_and_the_tick(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    fake.drop_next(1, route=f"POST {REVIEWS_ADD}", after_handler=True)
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1, step=120)
    assert "serializd" not in worker.holds  # only this row waits
    await drain(worker, runtime, clock, passes=3, step=120)
    assert len(fake.diary()) == 1
    assert fake.count("POST", REVIEWS_ADD) == 1  # the retry found the entry in the diary
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_disk_full_as_an_entry_serializd_took_is_noted_is_no_bug_and_adds_it_once(
    runtime: Runtime,
    target: SerializdTarget,
    fake: FakeSerializd,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The disk is full at the ledger's note of the entry, after Serializd took it: the fault
    # goes up to the delivery task's supervisor, which tells of it as the disk's (no
    # traceback, no row called a bug); the row keeps the mark noted before the add.
    enqueue(runtime, "play", episode(4), clock() - 3600)
    full = pytest.raises(sqlite3.OperationalError, match="database or disk is full")
    with full_at_the_note_of_a_play(runtime.store, "serializd"), full:
        await target.deliver(claim(runtime), clock())
    assert "unexpected error" not in caplog.text
    assert fake.count("POST", REVIEWS_ADD) == 1
    runtime.store.release_claims(clock(), "test")  # the task's restart, the disk freed
    clock.advance(120)
    again = await target.deliver(claim(runtime), clock())
    assert [type(outcome).__name__ for outcome in again.values()] == ["Delivered"]
    assert len(fake.diary()) == 1
    assert fake.count("POST", REVIEWS_ADD) == 1  # found in the diary, not added again


@pytest.mark.parametrize("storage_settings", [", busy_timeout: 0.5"], ids=["busy_timeout=0.5"])
@pytest.mark.parametrize("held", [1.9, 2.5], ids=["let-go-before-the-note", "held-past-the-note"])
async def test_a_fence_check_meeting_a_locked_database_leaves_the_diary_add_unmarked(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock, held: float
) -> None:
    # A play's diary add is answered 503 a minute after the claim (the check of the claim is
    # due); just then another process (a `watchbridge sync`, a backup) takes the database's
    # write lock past storage.busy_timeout. The try again cannot be checked, so it does not
    # go: nothing reached Serializd, and the row waits unmarked, without an attempt spent.
    # Marked as maybe sent, its next try would read the whole diary before adding it (and
    # wait hourly, not sent, while Serializd answers diary rows it cannot read).
    clock.now = fake.now()
    old_history(fake, 100)  # 5 pages
    enqueue(runtime, "play", episode(4), clock() - 3600)
    busy = float(runtime.config.storage.busy_timeout)
    # Let go once the check gave up: before the target's note that nothing went gives up too
    # (1.9), or after it did and before the batch's record gives up (2.5: that record, a plain
    # wait for the row, takes the mark back).
    other = AnotherProcessLocking(runtime.config.storage.path, busy * held)

    def a_minute_later_the_database_is_locked(request: FakeRequest) -> bool:
        clock.advance(FENCE_FRESH + 1)
        other.take()
        return True

    fake.fail_next(1, 503, route=f"POST {REVIEWS_ADD}", when=a_minute_later_the_database_is_locked)
    try:
        await worker.pass_once(runtime)
        other.wait()
        (row,) = runtime.store._query("SELECT * FROM outbox")
        assert (row["status"], row["attempts"]) == ("pending", 0)
        assert STORE_LOCKED in row["last_error"]
        assert not row["last_error"].startswith(UNKNOWN_OUTCOME)  # nothing went
        assert fake.count("POST", REVIEWS_ADD) == 1  # the try again did not go
        looked = fake.count("GET", DIARY_PAGE)
        clock.advance(runtime.config.delivery.retry_after + 1)
        await drain(worker, runtime, clock, passes=2, step=120)
    finally:
        other.close()
    # The try's look at the diary's newest entries, as the first; not the whole diary read
    # for an add that may have landed (5 pages here, a page per 24 entries in a real one).
    assert fake.count("GET", DIARY_PAGE) - looked == looked
    assert fake.count("POST", REVIEWS_ADD) == 2
    assert [e.episode_number for e in fake.diary() if e.show_id == SHOW] == [4]
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_tick_failing_past_the_retries_is_finished_with_a_tick_only(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    fake.fail_next(2, 500, route=f"POST {EPISODE_LOG_ADD}")  # both inline attempts
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1)
    assert len(fake.diary()) == 1 and fake.ticks() == set()
    assert worker.holds["serializd"].until > clock()
    await drain(worker, runtime, clock, passes=4, step=120)
    assert len(fake.diary()) == 1
    assert fake.count("POST", REVIEWS_ADD) == 1
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_row_left_by_a_crash_during_the_add_finds_its_entry_in_the_diary(
    runtime: Runtime, target: SerializdTarget, fake: FakeSerializd, clock: FakeClock
) -> None:
    at = clock() - 3600
    enqueue(runtime, "play", episode(4), at)
    # The state a crash right after Serializd took the entry leaves: the write-ahead note
    # on the row, the entry in the diary, nothing in the ledger, no tick.
    (row,) = claim(runtime)
    runtime.store.note([row], "unknown outcome: diary entry sent", clock())
    runtime.store.release_claims(clock())
    fake.log_entry(None, SHOW, 1, 4, backdate=iso(at + 30), is_log=True, tags=[DEFAULT_TAG])
    outcomes = await target.deliver(claim(runtime), clock())
    assert [type(o).__name__ for o in outcomes.values()] == ["Delivered"]
    assert fake.count("POST", REVIEWS_ADD) == 0
    assert len(fake.diary()) == 1
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}


async def test_a_log_made_in_the_app_is_not_taken_for_a_play_whose_answer_was_lost(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """The play's add goes unanswered (it never landed); the user logs the episode in the app
    meanwhile. The retry's look for the lost add takes only an entry carrying our tag: the
    user's untagged log is theirs, so the play counts as logged there. Taken for ours, it was
    in the ledger, and the link's later removal of the play deleted the user's log."""
    at = clock() - 60
    fake.drop_next(1, route=f"POST {REVIEWS_ADD}")  # dropped before Serializd wrote anything
    enqueue(runtime, "play", episode(4), at)
    await drain(worker, runtime, clock, passes=1, step=120)
    (row,) = waiting(runtime)
    assert row["last_error"].startswith("unknown outcome")
    by_hand = fake.log_entry(None, SHOW, 1, 4, backdate=iso(at + 30))  # in the app, untagged
    await drain(worker, runtime, clock, passes=2, step=120)
    (row,) = waiting(runtime)
    assert row["status"] == "done" and "logged in the Serializd app" in (row["last_error"] or "")
    assert fake.count("POST", REVIEWS_ADD) == 1  # the dropped one
    # The link then removes the play it expected our delivery to have made.
    enqueue(runtime, "remove_play", episode(4), at, record=f"expect:{episode(4).key()}@{at:.0f}",
            link="ts", read_at=clock())  # fmt: skip
    await drain(worker, runtime, clock, passes=2, step=120)
    assert fake.diary() == [by_hand]
    assert waiting(runtime)[-1]["status"] == "done"


async def test_a_links_play_logged_after_a_folder_copy_is_not_logged_again_from_it_put_back(
    runtime: Runtime,
    fake: FakeSerializd,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unraid's appdata backup: the service stopped, the data folder copied as it is (no
    # `watchbridge backup` stamp), started again; the link's play waiting in it is logged. The
    # folder put back holds it waiting again, and the ledger does not know the entry.
    unpaced(monkeypatch, "serializd")
    enqueue(runtime, "play", episode(4), clock() - 3600, link="ts")
    runtime.close()
    shutil.copy(tmp_path / "wb.db", tmp_path / "appdata.db")
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    for copy in (None, tmp_path / "appdata.db"):
        if copy is not None:
            clock.advance(14 * DAY)
            put_back(copy, tmp_path / "wb.db")
        started = build_runtime(runtime.config, clock=clock)
        started.open()
        worker.targets = {t.name: t for t in make_targets(started)}
        try:
            await drain(worker, started, clock, step=600)
            assert started.store.outbox_counts()["done"] == 1
        finally:
            for target in worker.targets.values():
                await target.aclose()
            started.close()
    assert len(fake.diary()) == 1


async def test_a_links_old_play_queued_before_a_restart_looks_only_at_entries_added_since(
    runtime: Runtime, fake: FakeSerializd, clock: FakeClock
) -> None:
    # A link's backfill of last year's plays, the service restarted while it drains: the
    # look for its send from a data folder put back is for entries added since it was queued,
    # not for the whole year of diary since the play.
    for day in range(1, 241):
        fake.log_entry(None, SHOW, 1, 1 + day % 7, date_added=iso(clock() - day * DAY))
    enqueue(runtime, "play", episode(4, season=2), clock() - 300 * DAY, link="ts")
    clock.advance(60)
    restarted = serializd_target(runtime, clock)
    worker = DeliveryWorker(lambda _: [restarted], runtime.config.delivery)
    worker.targets = {restarted.name: restarted}
    try:
        await drain(worker, runtime, clock)
    finally:
        await restarted.aclose()
    assert runtime.store.outbox_counts()["done"] == 1
    assert fake.count("GET", "/api/user/{username}/diary") <= 2


async def test_a_play_logged_after_the_backup_is_not_logged_again_from_the_copy_put_back(
    runtime: Runtime,
    fake: FakeSerializd,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The nightly copy holds the play waiting; it is logged; the copy is later copied back
    # over watchbridge.db. Its ledger does not know the entry: it was logged a second time.
    unpaced(monkeypatch, "serializd")
    enqueue(runtime, "play", episode(4), clock() - 3600)
    runtime.store.backup_to(tmp_path / "nightly.db")
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    await drain(worker, runtime, clock)
    assert len(fake.diary()) == 1
    for target in worker.targets.values():
        await target.aclose()
    runtime.close()
    clock.advance(14 * DAY)
    put_back(tmp_path / "nightly.db", tmp_path / "wb.db")
    again = build_runtime(runtime.config, clock=clock)
    again.open()
    worker.targets = {t.name: t for t in make_targets(again)}
    try:
        await drain(worker, again, clock, step=600)
        assert again.store.outbox_counts()["done"] == 1
    finally:
        for target in worker.targets.values():
            await target.aclose()
        again.close()
    assert len(fake.diary()) == 1
    assert fake.count("POST", REVIEWS_ADD) == 1


@pytest.mark.parametrize(("durability", "tick_syncs"), [("full", 1), ("normal", 0)])
async def test_plays_delivered_to_serializd_wait_for_the_disk_once_each(
    runtime: Runtime,
    target: SerializdTarget,
    fake: FakeSerializd,
    clock: FakeClock,
    tick_syncs: int,
) -> None:
    # Before each diary entry a synced note says it was sent, whatever storage.durability
    # says; the ledger record of the entry need not wait (see the power cut below), the
    # season's tick record does as storage.durability says.
    for number in range(1, 8):
        enqueue(runtime, "play", episode(number), clock() - 3600 + number * 1800)
    rows = claim(runtime)
    await target.deliver([rows[0]], clock())  # the sign-in, the season map
    syncs = DiskSyncs(runtime.store._conn)
    outcomes = await target.deliver(rows[1:], clock())
    assert [type(o).__name__ for o in outcomes.values()] == ["Delivered"] * 6
    assert syncs.stop() == 6 + tick_syncs  # a note per play, the tick record; was 13 at first


# storage.durability: normal may lose the last moments, never the note before a diary entry.
@pytest.mark.parametrize("durability", ["full", "normal"])
async def test_a_power_cut_losing_a_plays_ledger_record_costs_a_diary_read_not_a_second_entry(
    runtime: Runtime, target: SerializdTarget, fake: FakeSerializd, clock: FakeClock
) -> None:
    at = clock() - 3600
    enqueue(runtime, "play", episode(4), at)
    rows = claim(runtime)
    cut = UnsyncedWrites(runtime.store._conn)
    fake.delay_next(1, 2.0, route=f"POST {EPISODE_LOG_ADD}")
    with pytest.raises(TimeoutError):  # the power goes while the tick is being sent
        await asyncio.wait_for(target.deliver(rows, clock()), 0.5)
    lost = cut.stop()
    assert fake.count("POST", REVIEWS_ADD) == 1
    # What the cut takes: the entry's ledger record (with its collection's new version, in
    # the same transaction), and nothing before it (the note on the row that the entry was
    # sent was synced before the send).
    assert len(lost) == 2 and lost[0].startswith("INSERT INTO mirror ")
    assert "'serializd', 'me', 'plays'" in lost[0]
    assert lost[1].startswith("INSERT INTO mirror_versions")
    assert "'serializd', 'me', 'plays'" in lost[1]
    runtime.store._conn.execute("DELETE FROM mirror WHERE collection = 'plays'")
    runtime.store.release_claims(clock())  # the start after the power came back
    (row,) = claim(runtime)
    assert row.may_have_landed
    outcomes = await target.deliver([row], clock())
    assert [type(o).__name__ for o in outcomes.values()] == ["Delivered"]
    assert fake.count("POST", REVIEWS_ADD) == 1  # found in the diary, not sent again
    assert len(fake.diary()) == 1
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}


async def test_a_power_cut_losing_a_ratings_ledger_record_costs_a_diary_read_not_a_second_row(
    runtime: Runtime, target: SerializdTarget, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=80)
    rows = claim(runtime)
    cut = UnsyncedWrites(runtime.store._conn)
    await target.deliver(rows, clock())
    # The rating's record does not wait for the disk; the record of its diary row after it
    # does, and makes it durable too: a cut between the two loses both.
    assert cut.stop() == []
    runtime.store._conn.execute("DELETE FROM mirror WHERE collection IN ('ratings', 'rated-rows')")
    runtime.store.release_claims(clock())
    (row,) = claim(runtime)
    assert row.may_have_landed
    outcomes = await target.deliver([row], clock())
    assert [type(o).__name__ for o in outcomes.values()] == ["Delivered"]
    assert fake.count("POST", REVIEWS_ADD) == 1
    assert [entry.rating for entry in fake.diary()] == [8]


DIARY = "GET /api/user/{username}/diary"
CHANGED = "Serializd may have changed its answers, and watchbridge may need an update"


def dates_in_milliseconds(body: dict[str, Any]) -> None:
    """Every diary row dated in epoch milliseconds instead of ISO text (a changed answer)."""
    for row in body["reviews"]:
        row["dateAdded"] = row["backdate"] = 1_700_000_000_000


async def test_a_play_whose_answer_was_lost_is_not_logged_again_while_the_diary_reads_otherwise(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # The entry landed; its retry finds the diary in a form it cannot read. Not seen there is
    # not absent: sent again, the play would be logged twice.
    fake.drop_next(1, route=f"POST {REVIEWS_ADD}", after_handler=True)
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1, step=120)
    fake.reshape_always(dates_in_milliseconds, route=DIARY)
    await drain(worker, runtime, clock, passes=3, step=600)
    assert len(fake.diary()) == 1 and fake.count("POST", REVIEWS_ADD) == 1
    (row,) = waiting(runtime)
    assert row["status"] == "pending" and row["last_error"].startswith("unknown outcome")
    assert CHANGED in row["last_error"] and "the play sent before" in row["last_error"]
    fake.clear_knobs()  # the diary reads again (Serializd went back, or an update reads it)
    await drain(worker, runtime, clock, passes=3, step=3600)
    assert len(fake.diary()) == 1 and fake.count("POST", REVIEWS_ADD) == 1
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_lasting_change_of_the_diary_holds_the_play_without_spending_its_tries(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    # Retried, the row spent its tries on a diary no try could read and died: sent again by
    # hand (`deadletters retry`) after the update. Held, it waits and goes by itself.
    fake.drop_next(1, route=f"POST {REVIEWS_ADD}", after_handler=True)
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1, step=120)
    (lost,) = attempts(runtime)
    fake.reshape_always(dates_in_milliseconds, route=DIARY)
    await drain(worker, runtime, clock, passes=12, step=4 * 3600)  # two days of it
    assert attempts(runtime) == [lost]
    (row,) = waiting(runtime)
    assert row["status"] == "pending" and CHANGED in row["last_error"]
    assert "without giving up" in row["last_error"]
    paused = "watchbridge: Serializd deliveries paused (profile me)"
    told = receiver.titles()
    assert told and set(told) == {paused}  # the alert, and its reminders while it lasts
    fake.clear_knobs()  # the diary reads again (Serializd went back, or an update reads it)
    await drain(worker, runtime, clock, passes=2, step=3600)
    assert len(fake.diary()) == 1 and fake.count("POST", REVIEWS_ADD) == 1
    assert runtime.store.outbox_counts()["done"] == 1
    assert receiver.titles()[len(told) :] == [f"Resolved: {paused}"]


def attempts(runtime: Runtime) -> list[int]:
    with sqlite3.connect(runtime.config.storage.path) as conn:
        return [n for (n,) in conn.execute("SELECT attempts FROM outbox")]


async def test_a_cleared_rating_waits_while_the_diary_rows_that_may_hold_it_cannot_be_read(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # Taken for "no rating there", the removal was done and Serializd kept showing the stars.
    fake.log_entry(None, SHOW, 1, 4, rating=6, is_log=False)
    fake.reshape_always(dates_in_milliseconds, route=DIARY)
    enqueue(runtime, "remove_rating", episode(4), clock() - 60)  # from a webhook: no record
    await drain(worker, runtime, clock, passes=2, step=600)
    (row,) = waiting(runtime)
    assert row["status"] == "pending" and CHANGED in row["last_error"]
    assert "its removal waits" in row["last_error"]
    fake.clear_knobs()
    await drain(worker, runtime, clock, passes=3, step=3600)
    assert [e for e in fake.diary() if e.rating] == []
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_rating_that_waited_does_not_undo_a_newer_one_the_diary_cannot_read(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=60)
    fake.fail_next(2, 503, route=f"POST {REVIEWS_ADD}")  # both inline attempts: it waits
    await drain(worker, runtime, clock, passes=1)
    clock.advance(3600)
    fake.advance(3600)
    fake.log_entry(None, SHOW, 1, 4, rating=9, is_log=False)  # rated on serializd.com since
    fake.reshape_always(dates_in_milliseconds, route=DIARY)
    await drain(worker, runtime, clock, passes=3, step=600)
    assert [e.rating for e in fake.diary()] == [9]
    fake.clear_knobs()
    await drain(worker, runtime, clock, passes=3, step=3600)
    assert [e.rating for e in fake.diary()] == [9]
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_wrong_password_holds_the_profile_with_a_credentials_alert(
    runtime: Runtime, target: SerializdTarget, fake: FakeSerializd, clock: FakeClock
) -> None:
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("wrong"))
    enqueue(runtime, "play", episode(4), clock() - 3600)
    (outcome,) = (await target.deliver(claim(runtime), clock())).values()
    assert isinstance(outcome, Hold)
    assert (outcome.alert, outcome.target_wide) == ("credentials", False)
    assert "profiles.me.accounts.serializd" in outcome.reason


async def test_a_wrong_password_says_to_restart_watchbridge_once_the_config_is_fixed(
    runtime: Runtime, target: SerializdTarget, clock: FakeClock
) -> None:
    # The service reads its config at its start: a password put right in the file while it
    # runs is not tried for 6 hours, so the hold (status, page, alert) must say to restart.
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("wrong"))
    enqueue(runtime, "play", episode(4), clock() - 3600)
    (refused,) = (await target.deliver(claim(runtime), clock())).values()
    clock.advance(60)
    enqueue(runtime, "play", episode(5), clock() - 60)  # held by the refusal on record
    (on_record,) = (await target.deliver(claim(runtime), clock())).values()
    for outcome in (refused, on_record):
        assert isinstance(outcome, Hold)
        assert "check profiles.me.accounts.serializd, then restart watchbridge" in (
            outcome.reason
        ), outcome.reason


async def test_a_wrong_password_is_not_sent_again_and_alerts_once(
    runtime: Runtime,
    worker: DeliveryWorker,
    target: SerializdTarget,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("wrong"))
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=3, step=1000)  # claimed again at +2000 s
    assert fake.count("POST", "/api/login") == 1
    assert runtime.store.outbox_counts()["pending"] == 1
    assert runtime.store.dead_letters() == []
    assert receiver.titles() == ["watchbridge: Serializd sign-in needed (profile me)"]


async def test_a_refused_password_alert_names_serializd_once(
    runtime: Runtime,
    worker: DeliveryWorker,
    target: SerializdTarget,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("wrong"))
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1)
    (message,) = [m["message"] for m in receiver.messages]
    # It read "serializd: Serializd refused the email or password ...".
    assert message.startswith("Serializd refused the email or password of profile me"), message


async def test_serializd_answering_again_but_refusing_the_password_ends_its_outage_alert(
    runtime: Runtime,
    worker: DeliveryWorker,
    target: SerializdTarget,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    paused = "watchbridge: Serializd unreachable"
    fake.fail_next(10**6, 503)
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=5, step=301)
    assert receiver.titles() == [paused]
    fake.clear_knobs()
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("wrong"))
    await drain(worker, runtime, clock, passes=2, step=301)
    signed_out = "watchbridge: Serializd sign-in needed (profile me)"
    assert receiver.titles() == [paused, signed_out, f"Resolved: {paused}"]
    assert runtime.notifier.raised("credentials", "serializd:me")
    assert runtime.store.outbox_counts()["pending"] == 1


async def test_a_rating_held_by_a_refused_password_then_skipped_for_a_newer_one_ends_the_alert(
    runtime: Runtime,
    worker: DeliveryWorker,
    target: SerializdTarget,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    # Serializd's diary, read with the password put right, holds a rating the user gave there
    # meanwhile: the waiting rating is skipped, and the sign-in it waited for works.
    paused = "watchbridge: Serializd sign-in needed (profile me)"
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("wrong"))
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=60)
    await drain(worker, runtime, clock, passes=1)
    assert receiver.titles() == [paused]
    clock.advance(3600)
    fake.advance(3600)
    fake.log_entry(None, SHOW, 1, 4, rating=9, is_log=False)  # rated on serializd.com since
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret(PASSWORD))
    await drain(worker, runtime, clock, passes=2, step=6 * 3600)  # past the password's hold
    assert [e.rating for e in fake.diary()] == [9]
    assert runtime.store.outbox_counts()["done"] == 1
    assert receiver.titles() == [paused, f"Resolved: {paused}"]


async def test_deliveries_held_by_a_refused_password_say_their_next_try_when_it_is_made(
    runtime: Runtime, worker: DeliveryWorker, target: SerializdTarget, clock: FakeClock
) -> None:
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("wrong"))
    refused_at = clock()
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await worker.pass_once(runtime)
    clock.advance(3600)
    enqueue(runtime, "play", episode(5), clock() - 60)  # held by the refusal on record
    await worker.pass_once(runtime)
    held = runtime.store.status().waiting
    assert held and all("every 6 hours" in w.reason for w in held)
    # `watchbridge status` shows the next try: when the sign-in is tried again, not sooner.
    assert {w.next_at for w in held} == {refused_at + 6 * 3600}


async def test_deliveries_held_by_one_refused_password_are_one_hold_on_the_status(
    runtime: Runtime, worker: DeliveryWorker, target: SerializdTarget, clock: FakeClock
) -> None:
    # The login's refusal quotes Serializd's words, the refusal on record does not: one cause,
    # so one `on hold:` line (status, page) with both rows, not two lines of one each.
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("wrong"))
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await worker.pass_once(runtime)
    clock.advance(3600)
    enqueue(runtime, "play", episode(5), clock() - 60)  # held by the refusal on record
    await worker.pass_once(runtime)
    (held,) = runtime.store.status().waiting
    assert (held.target, held.profile, held.rows) == ("serializd", "me", 2)
    assert "Serializd refused the email or password of profile me" in held.reason


async def test_a_write_refused_for_a_changed_password_is_not_said_to_have_maybe_landed(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # The session ran out and the password was changed on serializd.com: a rating's diary add was
    # answered 401 and the sign-in refused, so nothing was written. The held play must not
    # read "unknown outcome" on the status page (as if it might have been logged already).
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1)
    assert len(fake.diary()) == 1
    fake.expire_tokens()
    fake.user.password = "changed on serializd.com"
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=8)
    await drain(worker, runtime, clock, passes=1)
    assert len(fake.diary()) == 1
    (held,) = [r for r in waiting(runtime) if r["status"] == "pending"]
    assert "Serializd refused the email or password" in held["last_error"]
    assert not held["last_error"].startswith("unknown outcome"), held["last_error"]


async def test_a_password_changed_on_serializd_reads_refused_everywhere_until_a_login_works(
    runtime: Runtime,
    worker: DeliveryWorker,
    target: SerializdTarget,
    fake: FakeSerializd,
    clock: FakeClock,
) -> None:
    """The session ran out and the password was changed on serializd.com: the login refused
    read "refused" with the old token's expiry beside it, months away: /api/status said
    `refused: false`, the expiry metric counted down to that end and the page showed its
    date, where a refused Trakt, AniList or pasted Serializd token reads refused everywhere."""
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1)
    fake.expire_tokens()
    fake.user.password = "changed on serializd.com"
    enqueue(runtime, "play", episode(5), clock() - 600)
    await drain(worker, runtime, clock, passes=1)
    assert runtime.store.outbox_counts()["pending"] == 1  # held, not dropped

    sign_ins, page, metrics = served(runtime.config, FakeClock(clock()))
    (me,) = [s for s in sign_ins["me"] if s["service"] == "serializd"]
    assert me["state"] == "refused" and me["refused"] is True
    assert me["message"].startswith("Serializd refused the email or password at the last login")
    assert metric(metrics, "watchbridge_sign_in_ok", "serializd", "me") == 0.0
    assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "serializd", "me") == 0.0
    row = '<td>me</td><td>serializd</td><td><span class="bad">refused</span></td>'
    assert f"{row}<td>{REFUSED_EXPIRY}</td>" in page

    # The new password put into the config, the restarted service's next request logs in.
    fake.user.password = "new"
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("new"))
    clock.advance(60)  # long before the refusal's 6 hours are over
    assert len(await target.client.diary("me")) == 1  # the old token refused, a login
    sign_ins, page, metrics = served(runtime.config, FakeClock(clock()))
    (me,) = [s for s in sign_ins["me"] if s["service"] == "serializd"]
    assert (me["state"], me["refused"]) == ("ok", False)
    assert metric(metrics, "watchbridge_sign_in_ok", "serializd", "me") == 1.0
    newest = max(fake.tokens.values(), key=lambda t: t.expires_at)
    claim = token_expiry(newest.value)  # the new token's own, not the one refused
    assert claim is not None and claim > clock() + 300 * DAY
    left = metric(metrics, "watchbridge_sign_in_expiry_seconds", "serializd", "me")
    assert left == round(claim - clock())
    assert REFUSED_EXPIRY not in page


def waiting(runtime: Runtime) -> list[dict[str, Any]]:
    with sqlite3.connect(runtime.config.storage.path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT status, last_error FROM outbox")]


async def test_a_login_answered_403_is_tried_again_at_the_next_credentials_hold(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # Serializd answers a wrong password with 401 (reference section 1); a 403 is something
    # else (a firewall, a deploy), which the same, right, password may pass next time.
    fake.fail_next(1, 403, body={"message": "Forbidden"}, route="POST /api/login")
    enqueue(runtime, "play", episode(4), clock() - 60)
    await drain(worker, runtime, clock, passes=1)
    await drain(worker, runtime, clock, passes=2, step=1800)
    assert fake.count("POST", "/api/login") == 2
    assert len(fake.diary()) == 1


async def test_a_login_answered_403_is_not_sent_again_for_every_batch_of_a_backlog(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    fake.fail_next(1000, 403, body={"message": "Forbidden"}, route="POST /api/login")
    for number in range(1, 37):  # a season's backlog: three batches
        enqueue(runtime, "play", episode(number % 13 + 1, season=number // 13 + 1), clock() - 60)
    await drain(worker, runtime, clock, passes=4)
    assert fake.count("POST", "/api/login") == 1


@pytest.mark.parametrize("outage", ["checkpoint", "5xx"])
async def test_an_outage_holds_the_target_and_nothing_is_lost(
    outage: str,
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
) -> None:
    if outage == "checkpoint":
        fake.checkpoint_next(1)
    else:
        fake.fail_next(2, 503)
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1)
    assert worker.holds["serializd"].until > clock()
    assert runtime.store.outbox_counts()["pending"] == 1
    await drain(worker, runtime, clock, passes=2)  # still held: nothing is sent
    assert fake.diary() == []
    clock.advance(3600)
    await drain(worker, runtime, clock, passes=2)
    assert len(fake.diary()) == 1
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert runtime.store.outbox_counts()["done"] == 1


async def test_status_counts_every_row_a_checkpoint_holds_the_marked_one_too(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # One play's send got no answer (marked: the diary is read before it goes again), then
    # the host answers its bot checkpoint: both plays wait for it, and `status` (and
    # /api/status) said "1 waiting" twice, once under an "unknown outcome" reason.
    fake.drop_next(2, route=f"POST {REVIEWS_ADD}", after_handler=True)
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1)
    clock.advance(7200)
    fake.checkpoint_next(100)
    enqueue(runtime, "play", episode(5), clock() - 3600)
    await drain(worker, runtime, clock, passes=1)
    (held,) = runtime.store.status().waiting
    assert held.rows == 2
    assert "bot checkpoint" in held.reason and not held.reason.startswith("unknown outcome")


@pytest.mark.parametrize("answer", ["rate limit", "checkpoint"])
async def test_a_write_answered_429_is_sent_again_after_its_wait_without_a_diary_read(
    answer: str,
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
) -> None:
    # A 429 says the request was not taken: the play is not "unknown outcome" (shown so, and
    # the whole diary read before its next send), it waits out the Retry-After and goes again,
    # after a new look at the diary's newest pages (a log made by hand meanwhile): 2 of 5.
    clock.now = fake.now()
    old_history(fake, 100)
    wait = {"Retry-After": "120"}
    if answer == "rate limit":
        too_many = {"message": "Too Many Requests"}
        fake.fail_next(1, 429, wait, too_many, route=f"POST {REVIEWS_ADD}")
    else:  # the www host's bot checkpoint, on the write itself
        body = "<html><title>Vercel Security Checkpoint</title></html>"
        fake.fail_next(1, 429, wait, body, route=f"POST {REVIEWS_ADD}")
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock, passes=1)
    (held,) = waiting(runtime)
    assert held["status"] == "pending"
    assert not held["last_error"].startswith("unknown outcome"), held["last_error"]
    reads = fake.count("GET", f"/api/user/{USERNAME}/diary")
    # Its wait is over (the test's clock is a fake one; pacing keeps real time).
    host(fake.url, 1000).pause.until = 0.0
    await drain(worker, runtime, clock, passes=2, step=3601)
    assert len(fake.diary()) == 101
    assert runtime.store.outbox_counts()["done"] == 1
    assert fake.count("GET", f"/api/user/{USERNAME}/diary") == reads + 2


async def test_a_rating_is_a_diary_entry_that_is_not_a_play(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=75)
    await drain(worker, runtime, clock, passes=2)
    (entry,) = fake.diary()
    assert (entry.episode_number, entry.rating, entry.is_log) == (4, to_serializd(75), False)
    assert fake.ticks() == set()


async def test_a_rating_that_waited_does_not_undo_a_newer_one_given_on_serializd(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=60)
    fake.fail_next(2, 503, route=f"POST {REVIEWS_ADD}")  # both inline attempts: it waits
    await drain(worker, runtime, clock, passes=1)
    clock.advance(3600)
    fake.advance(3600)
    fake.log_entry(None, SHOW, 1, 4, rating=9, is_log=False)  # rated on serializd.com since
    await drain(worker, runtime, clock, passes=3, step=600)
    assert [e.rating for e in fake.diary()] == [9]


async def test_a_links_rating_that_waited_still_rates_over_the_rating_its_plan_read(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    clock.now = fake.now()  # one clock for both
    fake.log_entry(None, SHOW, 1, 4, rating=4, is_log=False)  # Serializd's 4, the plan read it
    clock.advance(60)
    fake.advance(60)
    # prefer: trakt: Trakt's 9, given a month ago, goes over it.
    enqueue(runtime, "rating", episode(4), clock() - 30 * DAY, rating=90, link="ts")
    fake.fail_next(2, 503, route=f"POST {REVIEWS_ADD}")  # both inline attempts: it waits
    await drain(worker, runtime, clock, passes=1)
    clock.advance(3600)
    fake.advance(3600)
    await drain(worker, runtime, clock, passes=3, step=600)
    assert sorted(e.rating for e in fake.diary()) == [4, 9]  # the newest row is shown


async def test_a_rating_whose_send_landed_unanswered_is_not_taken_for_a_newer_one(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    clock.now = fake.now()
    enqueue(runtime, "rating", episode(4), clock() - 600, rating=80)
    fake.drop_next(1, route=f"POST {REVIEWS_ADD}", after_handler=True)  # landed, answer lost
    fake.fail_next(1, 503, route=f"POST {REVIEWS_ADD}")  # and the inline retry refused
    await drain(worker, runtime, clock, passes=1)
    clock.advance(3600)
    fake.advance(3600)
    await drain(worker, runtime, clock, passes=3, step=600)
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=80)  # the same stars again
    await drain(worker, runtime, clock, passes=3, step=600)
    assert [e.rating for e in fake.diary()] == [8]


async def test_a_rating_set_back_before_a_lost_answers_retry_reaches_serializd(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """7, then 9 (it lands, its answer is lost), then 7 again before the 9's retry. Serializd
    shows its newest row: the 9 settled as superseded without being looked for, the ledger
    still said 7 was sent last, and the new 7 was taken for one already there."""
    clock.now = fake.now()
    enqueue(runtime, "rating", episode(4), clock() - 600, rating=70)
    await drain(worker, runtime, clock, passes=1)
    enqueue(runtime, "rating", episode(4), clock() - 300, rating=90)
    fake.drop_next(1, route=f"POST {REVIEWS_ADD}", after_handler=True)  # landed, answer lost
    fake.fail_next(1, 503, route=f"POST {REVIEWS_ADD}")  # and the inline retry refused
    await drain(worker, runtime, clock, passes=1)
    assert sorted(e.rating for e in fake.diary()) == [7, 9]
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=70)  # set back to 7
    clock.advance(3600)
    fake.advance(3600)
    await drain(worker, runtime, clock, passes=3, step=600)
    shown = max(fake.diary(), key=lambda e: (e.date_added, e.id))
    assert shown.rating == 7
    assert runtime.store.outbox_counts()["pending"] == 0


async def test_the_same_rating_twice_is_sent_once(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "rating", episode(4), clock() - 600, rating=80)
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=80)
    await drain(worker, runtime, clock, passes=3)
    assert len(fake.diary()) == 1
    assert runtime.store.outbox_counts()["done"] == 2


async def test_a_links_rating_whose_batch_was_cut_off_after_it_landed_is_not_added_twice(
    runtime: Runtime,
    target: SerializdTarget,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
) -> None:
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=80, link="plex-serializd")
    await target.deliver(claim(runtime), clock())  # it landed; the process died before settling
    runtime.store.release_claims(clock())  # the restart
    await drain(worker, runtime, clock, passes=2)
    assert [entry.rating for entry in fake.diary()] == [8]
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_cleared_rating_removes_every_rating_the_diary_holds_for_the_item(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # Each change of a rating is a diary row of its own; Serializd shows the newest one, so
    # leaving an older row would bring back a rating the user did not keep.
    enqueue(runtime, "rating", episode(4), clock() - 600, rating=70)
    await drain(worker, runtime, clock, passes=2)
    enqueue(runtime, "rating", episode(4), clock() - 300, rating=80)
    await drain(worker, runtime, clock, passes=2)
    assert len(fake.diary()) == 2
    enqueue(runtime, "remove_rating", episode(4), clock() - 60)  # from a webhook: no record
    await drain(worker, runtime, clock, passes=2)
    assert [e for e in fake.diary() if e.rating] == []


async def test_a_cleared_rating_given_with_a_diary_log_is_a_dead_letter_saying_what_to_do(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # Stars given when logging belong to the log, which is a play: deleting it is no option.
    fake.log_entry(None, SHOW, 1, 4, backdate=iso(clock() - DAY), rating=8)
    enqueue(runtime, "remove_rating", episode(4), clock() - 60)
    await drain(worker, runtime, clock, passes=2)
    (dead,) = runtime.store.dead_letters()
    assert "is on a diary log on Serializd" in (dead.last_error or "")
    assert [e.rating for e in fake.diary()] == [8]


@pytest.mark.parametrize("log_named", [True, False])  # (False: queued by an older release)
async def test_a_cleared_rating_a_link_read_on_a_row_and_a_log_deletes_the_row_and_says_what_to_do(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock, log_named: bool
) -> None:
    logged = fake.log_entry(None, SHOW, 1, 4, backdate=iso(clock() - DAY), rating=8)
    row = fake.log_entry(None, SHOW, 1, 4, rating=6, is_log=False)
    record = f"{row.id},log:{logged.id}" if log_named else f"{row.id},log"
    enqueue(runtime, "remove_rating", episode(4), clock() - 60, record=record)
    await drain(worker, runtime, clock, passes=2)
    (dead,) = runtime.store.dead_letters()
    assert "is on a diary log on Serializd" in (dead.last_error or "")
    assert [(e.id, e.rating) for e in fake.diary()] == [(logged.id, 8)]


async def test_a_cleared_rating_serializd_never_had_is_done_without_a_write(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "remove_rating", episode(4), clock() - 60)
    await drain(worker, runtime, clock, passes=2)
    assert runtime.store.outbox_counts()["done"] == 1 and fake.diary() == []


async def plays_behind_it_outlive_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """Plays of episodes 1-3 queued behind a row Serializd always fails on: after a few days
    of passes they are logged, and only that row is a dead letter."""
    for number in (1, 2, 3):
        enqueue(runtime, "play", episode(number), clock() - 3600 + number)
    for _ in range(12):
        await worker.pass_once(runtime)
        clock.advance(8 * 3600)
    assert sorted(e.episode_number for e in fake.diary()) == [1, 2, 3]
    assert runtime.store.outbox_counts()["dead"] == 1


async def test_plays_behind_one_serializd_always_fails_are_not_killed_with_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    fake.episodes_that_crash.add(6)
    enqueue(runtime, "play", episode(6), clock() - 3600)  # the failing one first in the batch
    await plays_behind_it_outlive_it(runtime, worker, fake, clock)


async def test_plays_behind_a_removal_serializd_always_fails_are_not_killed_with_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    fake.fail_next(1000, 500, body="Server Error (500)", route="POST /api/episode_log/remove",
                   content_type="text/plain")  # fmt: skip
    enqueue(runtime, "remove_play", episode(6), clock() - 7200, record="tick:1396:1:6")
    await plays_behind_it_outlive_it(runtime, worker, fake, clock)


async def test_an_unknown_action_is_a_dead_letter(
    runtime: Runtime, target: SerializdTarget, clock: FakeClock
) -> None:
    enqueue(runtime, "scrobble", episode(4), clock())
    (outcome,) = (await target.deliver(claim(runtime), clock())).values()
    assert type(outcome).__name__ == "Dead"


async def test_a_live_state_row_left_by_an_older_version_is_settled_without_a_request(
    runtime: Runtime, target: SerializdTarget, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "watching", episode(4), clock())
    (outcome,) = (await target.deliver(claim(runtime), clock())).values()
    assert type(outcome).__name__ == "Skipped"
    assert fake.requests == []


async def test_a_season_map_cached_without_episode_counts_still_places_deliveries(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # An entry cached before the catalogue's episode counts were kept: {number: season id}.
    runtime.store.cache_put(SEASONS_CACHE, str(SHOW), {"1": SEASON_1}, clock(), DAY)
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(worker, runtime, clock)
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    # One read fills in the counts, which say the season has that episode (`season_end`).
    assert fake.count("GET", "/api/show/{id}") == 1
    enqueue(runtime, "play", episode(5), clock() - 1800)
    await drain(worker, runtime, clock)
    assert fake.ticks() == {(SHOW, SEASON_1, 4), (SHOW, SEASON_1, 5)}
    assert fake.count("GET", "/api/show/{id}") == 1


# --------------------------------------------------------------------------- one account, one lane


def client_at(runtime: Runtime, clock: FakeClock, rate: float) -> SerializdClient:
    services = runtime.config.services.serializd
    assert services is not None
    account = SerializdAccount(EMAIL, Secret(PASSWORD))
    return SerializdClient(
        services, runtime.store, accounts={"me": account}, clock=clock, requests_per_second=rate
    )


async def read_and_deliver_at_once(
    runtime: Runtime, fake: FakeSerializd, clock: FakeClock, rate: float
) -> list[float]:
    """A full diary read and the delivery of a play for one account, started together, each
    through its own client paced at `rate`: when their requests reached Serializd."""
    fake.diary_page_size = 1
    for number in (1, 2, 3):
        fake.log_entry(None, SHOW, 1, number, backdate=iso(clock() - number * DAY))
    # The season map is cached, with the season's episode count: catalogue reads are no
    # account's (they need no sign-in).
    cached = {"ids": {"1": SEASON_1}, "episodes": {"1": 7}}
    runtime.store.cache_put(SEASONS_CACHE, str(SHOW), cached, clock(), DAY)
    enqueue(runtime, "play", episode(5), clock() - 3600)
    reader = SerializdReader(client_at(runtime, clock, rate), runtime.store, clock)
    target = SerializdTarget(
        client_at(runtime, clock, rate), runtime.store, runtime.config.delivery, clock
    )
    try:
        # The read sees the diary change under it (the delivery's entry) and says so.
        read, delivered = await asyncio.gather(
            reader.read("me", {}, None, full=True),
            target.deliver(claim(runtime), clock()),
            return_exceptions=True,
        )
        assert not isinstance(read, BaseException) or isinstance(read, SerializdUnavailable)
        assert not isinstance(delivered, BaseException)
    finally:
        await reader.aclose()
        await target.aclose()
    routes = {r.route for r in fake.requests}
    assert {"/api/user/{username}/diary", REVIEWS_ADD, EPISODE_LOG_ADD} <= routes
    return [r.time for r in fake.requests]


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in pairwise(times)]


async def test_a_read_and_a_delivery_for_one_account_never_overlap(
    runtime: Runtime, fake: FakeSerializd, clock: FakeClock
) -> None:
    fake.delay_next(50, 0.1)  # every answer takes 0.1 s: a request sent meanwhile overlaps
    arrivals = await read_and_deliver_at_once(runtime, fake, clock, rate=1000)
    assert min(gaps(arrivals)) >= 0.095


async def test_a_read_and_a_delivery_for_one_account_share_its_pacing(
    runtime: Runtime, fake: FakeSerializd, clock: FakeClock
) -> None:
    arrivals = await read_and_deliver_at_once(runtime, fake, clock, rate=8)
    # 8 requests/s: 0.125 s apart, both clients together (two lanes would send pairs ~0 s
    # apart); arrivals on a busy machine come up to a few tens of ms late, so a gap may shrink.
    assert min(gaps(arrivals)) >= 0.07


async def test_the_services_serializd_clients_share_one_lane_per_account(
    runtime: Runtime, clock: FakeClock
) -> None:
    link = Link(services=["trakt", "serializd"])
    delivery = serializd_client(runtime.config, runtime)
    reader = make_reader(runtime.config, runtime.store, link, ["me"], clock)
    watchlist = serializdlist.serializd_client(runtime.config, runtime.store, clock)
    assert delivery is not None
    try:
        assert delivery.lane("me") is reader.client.lane("me") is watchlist.lane("me")
        assert delivery.lane("me") is not delivery.lane("someone else")
    finally:
        for client in (delivery, reader.client, watchlist):
            await client.aclose()


SEASON_TICKS = "GET /mobile/page/show/{id}/season_v2_part_3/{number}"


async def test_a_rewatch_of_an_episode_ticked_on_serializd_before_is_logged_as_one(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    first = clock() - 400 * DAY
    fake.log_entry(None, SHOW, 1, 4, backdate=iso(first))  # in the Serializd app, long ago
    fake.tick(None, SHOW, 1, 4)
    at = clock() - 3600
    enqueue(runtime, "play", episode(4), at)  # from a webhook
    await drain(worker, runtime, clock, passes=2)
    assert sorted((e.backdate, e.is_rewatch) for e in fake.diary()) == [
        (iso(first), False),
        (iso(at), True),
    ]


async def test_a_burst_of_webhook_plays_shares_one_look_for_logs_made_by_hand(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # Behind 5 pages of old history: the look at the newest pages costs 2, once for the three.
    clock.now = fake.now()
    old_history(fake, 100)
    for number in (4, 5, 6):
        enqueue(runtime, "play", episode(number), clock() - 60)  # from a webhook
    await drain(worker, runtime, clock, passes=1)
    assert [e.episode_number for e in fake.diary() if e.show_id == SHOW] == [4, 5, 6]
    assert fake.count("GET", DIARY_PAGE) == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, "<html><body><h1>Page not found (404)</h1></body></html>"), (404, '{"detail": "x"}')],
)
async def test_a_season_page_that_cannot_be_read_does_not_stop_the_play_being_logged(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    status: int,
    body: str,
) -> None:
    # The season's ticks are read only to flag a rewatch; Serializd renames such mobile
    # pages now and then (reference section 9).
    fake.fail_next(50, status, body=body, route=SEASON_TICKS.split(" ")[1])
    enqueue(runtime, "play", episode(4), clock() - 60)
    await drain(worker, runtime, clock, passes=3, step=7200)
    assert [e.is_rewatch for e in fake.diary()] == [False]


async def test_a_season_page_broken_for_hours_is_told_hourly_not_per_play(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.fail_next(1000, 404, body='{"detail": "x"}', route=SEASON_TICKS.split(" ")[1])
    plays = [episode(number, season) for season in (2, 3) for number in range(1, 13)]
    with caplog.at_level(logging.DEBUG, logger="watchbridge.deliver.serializd"):
        for play in plays:  # a play every 10 minutes for 4 hours
            enqueue(runtime, "play", play, clock() - 60)
            await drain(worker, runtime, clock, passes=2)
            clock.advance(600)
        fake.clear_knobs()
        enqueue(runtime, "play", episode(13, 3), clock() - 60)  # the page reads again
        await drain(worker, runtime, clock, passes=2)
    lines = [r for r in caplog.records if r.getMessage().startswith("serializd season ticks un")]
    warned = [r for r in lines if r.levelno == logging.WARNING]
    assert len(fake.diary()) == 25  # every play logged, as a first viewing
    assert len(warned) == 4  # the first, then one an hour
    assert len({r.item for r in lines}) == 24  # type: ignore[attr-defined]  # a line per play
    assert [getattr(r, "more_since_last_line", 0) for r in warned] == [0, 5, 5, 5]
    (over,) = [r for r in caplog.records if r.getMessage() == "serializd season ticks read again"]
    assert over.times == 24  # type: ignore[attr-defined]


async def test_a_sync_says_whether_serializd_held_the_episode_and_nothing_is_read(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(4), clock() - 3600, link="ts", earlier_plays=1)
    await drain(worker, runtime, clock, passes=2)
    assert [e.is_rewatch for e in fake.diary()] == [True]
    assert fake.count(*SEASON_TICKS.split(" ")) == 0


async def test_an_older_viewing_a_link_backfills_is_not_a_rewatch(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    first, second = clock() - 400 * DAY, clock() - 2 * DAY
    fake.log_entry(None, SHOW, 1, 4, backdate=iso(second))  # Serializd has the recent one only
    fake.tick(None, SHOW, 1, 4)
    key = f"episode:tmdb:{SHOW}:s1e4"
    current = {
        "trakt": Side(plays=(Play(key, first, "t1"), Play(key, second, "t2"))),
        "serializd": Side(plays=(Play(key, second, "s2"),)),
    }
    (add,) = plan(Link(services=["trakt", "serializd"]), current, {}).actions
    enqueue(runtime, "play", episode(4), add.at, link="ts", earlier_plays=add.earlier_plays)
    await drain(worker, runtime, clock, passes=2)
    assert sorted((e.backdate, e.is_rewatch) for e in fake.diary()) == [
        (iso(first), False),
        (iso(second), False),
    ]


def episode_of_an_unknown_show(number: int, own_tmdb: str | None) -> MediaRef:
    return MediaRef(
        "episode",
        ids=Ids(tmdb=own_tmdb),
        show_ids=Ids(tmdb="99999901"),
        show_title="A Show Serializd Lacks",
        season=1,
        number=number,
    )


@pytest.mark.parametrize("own_tmdb", [None, "5550001"], ids=["no-episode-id", "episode-id"])
async def test_an_episode_of_a_show_serializd_lacks_waits_as_unmatched(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, own_tmdb: str | None
) -> None:
    enqueue(runtime, "play", episode_of_an_unknown_show(1, own_tmdb), clock() - 600)
    await drain(worker, runtime, clock, passes=1)
    (unmatched,) = runtime.store.unmatched()  # listed by `watchbridge unmatched`
    assert unmatched.item.last_error is not None
    assert unmatched.item.last_error.startswith("unmatched: ")


async def test_serializd_is_asked_about_a_show_it_lacks_once_a_day_not_per_play(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    for number in (1, 2, 3):
        item = episode_of_an_unknown_show(number, f"555000{number}")
        enqueue(runtime, "play", item, clock() - 600 + number)
    await drain(worker, runtime, clock, passes=1)
    assert fake.count("GET", "/api/show/99999901") == 1


async def test_a_rating_sent_to_the_profiles_previous_account_goes_to_its_new_one(
    runtime: Runtime, fake: FakeSerializd, clock: FakeClock
) -> None:
    """The profile's Serializd email changed (webhooks only, no link to notice): what was
    sent to the old account says nothing of the new one."""
    services = runtime.config.services.serializd
    assert services is not None
    bob = fake.add_user("bob@example.com", "another long passphrase", "bob_tv")
    for email, password in ((EMAIL, PASSWORD), (bob.email, bob.password)):
        account = SerializdAccount(email, Secret(password))
        client = SerializdClient(
            services, runtime.store, accounts={"me": account}, clock=clock, requests_per_second=1000
        )
        notes = AccountNotes(runtime.store, runtime.config, clock)
        target = SerializdTarget(client, runtime.store, runtime.config.delivery, clock, None, notes)
        enqueue(runtime, "rating", episode(4), clock() - 60, rating=80, sent_as=email)
        worker = DeliveryWorker(lambda _, target=target: [target], runtime.config.delivery)
        worker.targets = {target.name: target}
        try:
            await drain(worker, runtime, clock, passes=2)
        finally:
            await target.aclose()
    assert [r.rating for r in fake.diary()] == [to_serializd(80)]  # alice's
    assert [r.rating for r in fake.diary(bob)] == [to_serializd(80)]


async def test_a_rating_queued_while_serializd_is_paused_does_not_undo_a_newer_one_there(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    clock.now = fake.now()
    enqueue(runtime, "rating", episode(3), clock() - 60, rating=70)
    fake.fail_next(1, 503, headers={"Retry-After": "1800"}, route=f"POST {REVIEWS_ADD}")
    await drain(worker, runtime, clock, passes=1)
    assert "serializd" in worker.holds
    enqueue(runtime, "rating", episode(4), clock(), rating=60)  # 3 stars in Plex meanwhile
    await drain(worker, runtime, clock, passes=5, step=60)
    fake.advance(300)
    fake.log_entry(None, SHOW, 1, 4, rating=9, is_log=False)  # then 4.5 on serializd.com
    await drain(worker, runtime, clock, passes=40, step=60)
    assert runtime.store.outbox_counts()["pending"] == 0
    assert [e.rating for e in fake.diary() if e.episode_number == 4] == [9]


# --------------------------------------------------------------------------- absolute numbers


def absolute_episode(absolute: int, season: int | None = None) -> MediaRef:
    """An episode known by its absolute number (a generic webhook's `item.absolute`; with a
    season, HAMA's tvdb3/tvdb4 modes, whose season is TheTVDB's)."""
    return MediaRef(
        "episode",
        show_ids=Ids(tmdb=str(SHOW)),
        show_title="Breaking Bad",
        season=season,
        absolute=absolute,
    )


@pytest.mark.parametrize("season", [None, 9], ids=["absolute-only", "hama-tvdb-season"])
async def test_an_episode_known_by_its_absolute_number_goes_where_serializds_seasons_count_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock, season: Any
) -> None:
    # Breaking Bad's regular seasons hold 7, 13, 13, 13 and 16 episodes (its 11 specials are
    # not counted): absolute episode 20 is S2E13.
    enqueue(runtime, "play", absolute_episode(20, season), clock() - 600)
    await drain(worker, runtime, clock)
    logged = [(r.show_id, r.season_id, r.episode_number, r.is_log) for r in fake.diary()]
    assert logged == [(SHOW, 3573, 13, True)], runtime.store.unmatched()
    assert fake.ticks() == {(SHOW, 3573, 13)}
    assert fake.count("GET", "/api/show/{id}") == 1


async def test_an_absolute_number_past_serializds_seasons_says_so_and_lands_once_listed(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    enqueue(runtime, "play", absolute_episode(63), clock() - 600)
    await drain(worker, runtime, clock, passes=1)
    (waiting,) = runtime.store.unmatched()
    said = waiting.item.last_error or ""
    assert said.startswith("unmatched: Breaking Bad absolute episode 63"), said
    assert "past the last one" in said and "(62)" in said, said
    assert "item.season and item.number" in said, said
    assert fake.count("GET", "/api/show/{id}") == 1
    # TMDB lists a 17th episode of season 5: the next try, an hour on, reads the show again.
    fake.shows[SHOW].seasons[5].episode_count = 17
    clock.advance(3601)
    await drain(worker, runtime, clock, passes=1)
    assert fake.ticks() == {(SHOW, 3578, 17)}, runtime.store.unmatched()
    assert len(fake.diary()) == 1
    assert fake.count("GET", "/api/show/{id}") == 2


async def test_an_episode_past_the_end_of_tmdbs_season_waits_unmatched_and_lands_once_listed(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # A library in TheTVDB's order sends S1E8 with no TMDB id of its own nor an air date:
    # TMDB's (Serializd's) season 1 has 7 episodes, so S1E8 is no episode there. Logged as
    # sent, the diary entry named an episode Serializd does not have.
    enqueue(runtime, "play", episode(8), clock() - 600)
    enqueue(runtime, "rating", episode(9), clock() - 500, rating=8)
    await drain(worker, runtime, clock, passes=1)
    waiting = {row.item.id: row.item.last_error or "" for row in runtime.store.unmatched()}
    assert len(waiting) == 2, runtime.store.unmatched()
    for said in waiting.values():
        assert said.startswith("unmatched: Breaking Bad S01E0"), said
        assert "past the end of season 1 as TMDB (and so Serializd) numbers it" in said, said
        assert "(7 episodes)" in said and "log it on Serializd by hand" in said, said
    assert fake.diary() == [] and fake.ticks() == set()
    assert fake.count("GET", "/api/show/{id}") == 1
    # TMDB lists an 8th episode: the next try, an hour on, reads the show again.
    fake.shows[SHOW].seasons[1].episode_count = 8
    clock.advance(3601)
    await drain(worker, runtime, clock, passes=1)
    assert fake.ticks() == {(SHOW, SEASON_1, 8)}, runtime.store.unmatched()
    assert [(r.season_id, r.episode_number) for r in fake.diary()] == [(SEASON_1, 8)]
    assert fake.count("GET", "/api/show/{id}") == 2
    (still,) = runtime.store.unmatched()  # S1E9: still past the end (8)
    assert "(8 episodes)" in (still.item.last_error or "")


async def test_an_episode_past_the_end_of_a_season_counted_from_its_listing_waits_unmatched(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # A show answer without episode counts (fields can be null, reference §4): the season's
    # listing says how many it has.
    fake.show_episode_counts = False
    enqueue(runtime, "play", episode(8), clock() - 600)
    enqueue(runtime, "play", episode(7), clock() - 300)
    await drain(worker, runtime, clock, passes=2)
    assert fake.ticks() == {(SHOW, SEASON_1, 7)}
    (waiting,) = runtime.store.unmatched()
    assert "(7 episodes)" in (waiting.item.last_error or ""), waiting.item.last_error


async def test_a_removal_past_the_end_of_tmdbs_season_still_reaches_what_was_logged(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # An earlier version ticked S1E8 as sent (season 1 has 7): its removal is not held.
    fake.tick(None, SHOW, 1, 8)
    enqueue(runtime, "remove_play", episode(8), clock() - 7200, record="tick:1396:1:8")
    await drain(worker, runtime, clock, passes=2)
    assert runtime.store.unmatched() == []
    assert fake.ticks() == set()


async def test_a_waiting_play_known_by_its_absolute_number_is_listed_by_that_number(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock
) -> None:
    # `watchbridge unmatched` and the status page name a row by its item: an episode known by
    # its absolute number alone was listed as "Breaking Bad S00E00", a special it is not.
    enqueue(runtime, "play", absolute_episode(63), clock() - 600)
    await drain(worker, runtime, clock, passes=1)
    (waiting,) = runtime.store.unmatched()
    assert waiting.item.describe() == "Breaking Bad absolute episode 63"


async def test_a_daily_shows_episode_without_a_number_goes_where_its_own_tmdb_id_is(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # Plex numbers a daily show's episodes by air date: its season the year (2010), no `index`
    # at all; its agent still gives the episode's own TMDB id. It waited as unmatched ("has no
    # TMDB season and episode number") for as long as it was retried.
    own_id = fake.shows[SHOW].seasons[2].first_episode_id + 5
    dated = MediaRef(
        "episode",
        ids=Ids(tmdb=str(own_id)),
        show_ids=Ids(tmdb=str(SHOW)),
        show_title="Breaking Bad",
        season=2010,
    )
    enqueue(runtime, "play", dated, clock() - 600)
    await drain(worker, runtime, clock)
    assert fake.ticks() == {(SHOW, 3573, 5)}, runtime.store.unmatched()


async def test_an_episode_without_a_number_nor_ids_of_its_own_waits_named_as_such(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # Plex left a daily show's file unmatched (a `local://` guid, no numbers): nothing places
    # it, so it waits, named for what it is, not as "Breaking Bad S00E00", a special.
    enqueue(runtime, "play", replace(absolute_episode(1), absolute=None), clock() - 600)
    await drain(worker, runtime, clock, passes=1)
    (waiting,) = runtime.store.unmatched()
    assert waiting.item.describe() == "Breaking Bad an episode without a number"
    assert fake.diary() == []


async def deliver_as_the_service(runtime: Runtime, clock: FakeClock) -> None:
    """Two delivery passes with the targets the service builds (wiring.make_targets)."""
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}  # as `DeliveryWorker.run`
    try:
        await drain(worker, runtime, clock, passes=2)
    finally:
        for target in worker.targets.values():
            await target.aclose()


async def test_another_serializd_account_a_delivery_notices_is_alerted_at_once(
    runtime: Runtime,
    fake: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Webhooks only for a while: the profile's Serializd email changed to another person's.
    The delivery's sign-in names the other username before it writes (wiring's AccountNotes),
    and the account_changed alert goes out then, not at the next link run or housekeeping."""
    unpaced(monkeypatch, "serializd")
    enqueue(runtime, "play", episode(4), clock() - 600)
    await deliver_as_the_service(runtime, clock)
    assert len(fake.diary()) == 1  # alice_tv's: the account first seen, only remembered
    bob = fake.add_user("bob@example.com", "another long passphrase", "bob_tv")
    me = runtime.config.profiles["me"]
    accounts = replace(me.accounts, serializd=SerializdAccount(bob.email, Secret(bob.password)))
    profiles = {**runtime.config.profiles, "me": replace(me, accounts=accounts)}
    runtime.config = replace(runtime.config, profiles=profiles)  # and the service restarted
    enqueue(runtime, "play", episode(5), clock() - 300)

    await deliver_as_the_service(runtime, clock)

    (alert,) = [m for m in receiver.messages if "is another account" in str(m.get("title"))]
    assert alert["title"] == "watchbridge: profile me's Serializd is another account"
    assert "Profile me's Serializd is now user bob_tv (was user alice_tv)." in alert["message"]
    assert bob.password not in alert["message"]


async def seven_then_a_lost_nine_that_gave_up(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> Review:
    """The rating 7 sent, then 9: it lands, its answer is lost, and it gives up (a dead letter
    marked as possibly sent). The 7's diary row."""
    clock.now = fake.now()
    enqueue(runtime, "rating", episode(4), clock() - 600, rating=70)
    await drain(worker, runtime, clock, passes=1)
    (seven,) = fake.diary()
    enqueue(runtime, "rating", episode(4), clock() - 300, rating=90)
    fake.drop_next(1, route=f"POST {REVIEWS_ADD}", after_handler=True)  # landed, answer lost
    fake.fail_next(1, 503, route=f"POST {REVIEWS_ADD}")  # and the inline retry refused
    await drain(worker, runtime, clock, passes=1)
    assert runtime.store.give_up_waiting("serializd", "me", clock(), "the link was removed") == 1
    return seven


@pytest.mark.parametrize("waits", [3600.0, 8 * DAY], ids=["an-hour", "past-the-pruning"])
async def test_a_rating_set_back_after_a_lost_answer_gave_up_reaches_serializd(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock, waits: float
) -> None:
    """7, then 9 (lost, given up), then 7 again. Serializd shows its newest row: the 9 was
    settled as superseded when the 7 was queued, the ledger still said 7 was sent last, and
    the new 7 was taken for one already there. The same when the new 7 waits longer than
    delivered rows are kept (Serializd down, a password to renew): pruned with them, the 9
    was forgotten before anything looked for it."""
    await seven_then_a_lost_nine_that_gave_up(runtime, worker, fake, clock)
    enqueue(runtime, "rating", episode(4), clock() - 60, rating=70)  # set back to 7
    clock.advance(waits)
    fake.advance(waits)
    runtime.store.prune(clock(), keep_done=7 * DAY, keep_sessions=7 * DAY)  # the housekeeping
    await drain(worker, runtime, clock, passes=3, step=600)
    shown = max(fake.diary(), key=lambda e: (e.date_added, e.id))
    assert shown.rating == 7
    assert sorted(e.rating for e in fake.diary()) == [7, 7, 9]  # the 9 not sent again
    assert runtime.store.outbox_counts()["pending"] == 0


async def test_a_links_rating_removal_after_a_lost_answer_gave_up_deletes_that_copy_too(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """7, then 9 (lost, given up), then the link removes the rating, naming the row it read
    (the 7's). The 9's row, never recorded as ours, stayed: Serializd went on showing 9."""
    seven = await seven_then_a_lost_nine_that_gave_up(runtime, worker, fake, clock)
    enqueue(runtime, "remove_rating", episode(4), clock() - 60, record=str(seven.id), link="ts")
    await drain(worker, runtime, clock, passes=3, step=600)
    assert [e.rating for e in fake.diary() if e.rating] == []


@pytest.mark.parametrize(
    "item",
    [
        episode(4),
        MediaRef("season", show_ids=Ids(tmdb=str(SHOW)), season=1),
        MediaRef("show", ids=Ids(tmdb=str(SHOW))),
    ],
    ids=["episode", "season", "show"],
)
async def test_a_rating_whose_answer_was_lost_is_known_to_a_links_read_before_its_retry(
    runtime: Runtime,
    target: SerializdTarget,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    item: MediaRef,
) -> None:
    """Whatever its scope, the row a lost send made is the one a link's read takes for ours
    (by item, value and backdate) until the retry records it."""
    clock.now = fake.now()
    enqueue(runtime, "rating", item, clock() - 600, rating=80)
    fake.drop_next(1, route=f"POST {REVIEWS_ADD}", after_handler=True)  # landed, answer lost
    fake.fail_next(1, 503, route=f"POST {REVIEWS_ADD}")  # and the inline retry refused
    await drain(worker, runtime, clock, passes=1)
    (landed,) = fake.diary()
    diary = (await target.client.diary_read("me")).entries
    sends = runtime.store.unanswered_ratings("me", "serializd")
    assert unanswered_copies(diary, sends) == {landed.id}


# --------------------------------------------------------------------------- a link's plan vs now

DIARY_PAGE = "/api/user/{username}/diary"


def skipped_total(runtime: Runtime) -> float:
    value = runtime.metrics.registry.get_sample_value(
        "watchbridge_deliveries_skipped_total", {"target": "serializd"}
    )
    return value or 0.0


def old_history(fake: FakeSerializd, entries: int) -> None:
    """A diary of `entries` logs of other shows' episodes, added a year ago (pages of 24,
    newest first: what a look at the newest entries reads is exact)."""
    fake.diary_order = "newest"
    fake.add_show(1399, "Game of Thrones", {1: 10, 2: 10, 3: 10})
    for n in range(entries):
        fake.log_entry(
            None, 1399, 1 + n // 10 % 3, 1 + n % 10, date_added=iso(fake.now() - 365 * DAY + n)
        )


def logged_then_read(fake: FakeSerializd, clock: FakeClock) -> tuple[Review, float]:
    """Behind 5 pages of old history, episode 4 logged a month ago and ticked; 10 minutes
    later a link's run reads Serializd (then the other side for a while): that entry, and
    when the run read."""
    clock.now = fake.now()
    old_history(fake, 100)  # 5 pages
    first = fake.log_entry(None, SHOW, 1, 4, backdate=iso(fake.now() - 30 * DAY))
    fake.tick(None, SHOW, 1, 4)
    clock.advance(600)
    fake.advance(600)
    return first, clock()


@pytest.mark.parametrize("logged_again", [True, False], ids=["rewatched-since", "not-since"])
async def test_a_links_removal_of_a_play_leaves_an_episode_logged_again_since_its_read(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    logged_again: bool,
) -> None:
    """Trakt's play removed: the link's run read Serializd, then queued the removal of the
    diary entry it found. The user logged a rewatch on Serializd in between: that viewing
    stands (entry and tick kept), the row settles as skipped, saying so, and is counted. The
    look costs the diary's newest pages (one when nothing is new), not the whole diary."""
    first, read_at = logged_then_read(fake, clock)
    clock.advance(300)
    fake.advance(300)
    if logged_again:
        fake.log_entry(None, SHOW, 1, 4, is_rewatch=True)  # in the app, meanwhile
    clock.advance(60)
    fake.advance(60)
    enqueue(runtime, "remove_play", episode(4), clock() - 30 * DAY,
            record=str(first.id), link="ts", read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    (row,) = waiting(runtime)
    assert row["status"] == "done"
    if logged_again:
        assert fake.ticks() == {(SHOW, SEASON_1, 4)}
        assert first in fake.diary()
        assert row["last_error"].startswith("skipped: not removed: the episode was logged")
        assert skipped_total(runtime) == 1
    else:
        assert fake.ticks() == set() and first not in fake.diary()
        assert row["last_error"] is None and skipped_total(runtime) == 0
    # Pages until two in a row hold nothing new (§5.1: the order is not guaranteed): the
    # rewatch is on the first.
    assert fake.count("GET", DIARY_PAGE) == (3 if logged_again else 2)


async def test_a_links_removal_leaves_a_rewatch_logged_on_a_serializd_clock_behind_ours(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """Serializd's clock 10 minutes behind ours: the user's rewatch, logged 5 minutes after the
    link's read, carries a `dateAdded` 5 minutes before it on our clock. Read as is, it was no
    log since the read: the removal deleted the entry and unticked the episode."""
    first, read_at = logged_then_read(fake, clock)
    fake.advance(-600)
    clock.advance(300)
    fake.advance(300)
    fake.log_entry(None, SHOW, 1, 4, is_rewatch=True)  # in the app, meanwhile
    clock.advance(60)
    fake.advance(60)
    enqueue(runtime, "remove_play", episode(4), clock() - 30 * DAY,
            record=str(first.id), link="ts", read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    (row,) = waiting(runtime)
    assert row["last_error"].startswith("skipped: not removed: the episode was logged")
    assert fake.ticks() == {(SHOW, SEASON_1, 4)} and first in fake.diary()


async def test_a_links_removal_sees_a_rewatch_the_diary_shows_behind_a_page_of_older_entries(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """The diary's order is not guaranteed (reference §5.1): the user's rewatch, the one entry
    added since the run's read, may come on the second page behind a first of older ones. The
    look reads on past one such page, and the episode stays ticked."""
    first, read_at = logged_then_read(fake, clock)
    clock.advance(300)
    fake.advance(300)
    rewatch = fake.log_entry(None, SHOW, 1, 4, is_rewatch=True)  # in the app, meanwhile
    fake.diary_order = "jittered"

    def page_of_the_rewatch(seed: int) -> int:
        fake.diary_seed = seed
        order = [r.id for r in fake._diary_order(fake.diary())]
        return order.index(rewatch.id) // 24 + 1

    seed = next(s for s in range(500) if page_of_the_rewatch(s) == 2)
    fake.diary_seed = seed
    clock.advance(60)
    fake.advance(60)
    enqueue(runtime, "remove_play", episode(4), clock() - 30 * DAY,
            record=str(first.id), link="ts", read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    (row,) = waiting(runtime)
    assert row["last_error"].startswith("skipped: not removed: the episode was logged")
    assert fake.ticks() == {(SHOW, SEASON_1, 4)} and first in fake.diary()


async def test_a_links_removal_of_a_tick_leaves_an_episode_logged_since_its_read_ticked(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    clock.now = fake.now()
    fake.tick(None, SHOW, 1, 6)  # watched, date unknown: the link read a `tick:` play
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    fake.log_entry(None, SHOW, 1, 6)  # logged in the app before the removal went out
    enqueue(runtime, "remove_play", episode(6), clock() - 7200, record="tick:1396:1:6",
            link="ts", read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    assert fake.ticks() == {(SHOW, SEASON_1, 6)}
    (row,) = waiting(runtime)
    assert row["status"] == "done" and row["last_error"].startswith("skipped: not removed")


async def test_a_links_removal_made_with_a_rewatch_of_ours_since_still_deletes_its_entry(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """A play Trakt moved to another day: the link queues the new one and the removal of the
    old. Our log of the new one, landed first, is no rewatch of the user's."""
    clock.now = fake.now()
    first = fake.log_entry(None, SHOW, 1, 4, backdate=iso(fake.now() - 30 * DAY))
    fake.tick(None, SHOW, 1, 4)
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    enqueue(runtime, "play", episode(4), clock() - 3 * DAY, link="ts", read_at=read_at)
    enqueue(runtime, "remove_play", episode(4), clock() - 30 * DAY, record=str(first.id),
            link="ts", read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=3)
    assert first not in fake.diary() and len(fake.diary()) == 1
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}  # the new play's
    assert skipped_total(runtime) == 0


@pytest.mark.parametrize("given", ["after-the-read", "before-the-read"])
async def test_a_links_rating_is_not_written_over_one_given_on_serializd_after_its_read(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock, given: str
) -> None:
    """Trakt's 9 (given a month ago) planned for Serializd, whose own rating the run read and
    rates over (`prefer: trakt`); a rating given on Serializd after the read is newer than
    the plan knew: it stands, at the cost of the diary's newest pages."""
    clock.now = fake.now()
    old_history(fake, 100)
    if given == "before-the-read":
        fake.log_entry(None, SHOW, 1, 4, rating=4, is_log=False)
    clock.advance(120)
    fake.advance(120)
    read_at = clock()
    clock.advance(300)
    fake.advance(300)
    if given == "after-the-read":
        fake.log_entry(None, SHOW, 1, 4, rating=4, is_log=False)
    enqueue(runtime, "rating", episode(4), clock() - 30 * DAY, rating=90, link="ts",
            read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    rated = [e.rating for e in fake.diary() if e.show_id == SHOW]
    (row,) = waiting(runtime)
    if given == "after-the-read":
        assert rated == [4]
        assert row["last_error"] == "skipped: a newer rating was given on Serializd since"
    else:
        assert rated == [4, 9] and row["last_error"] is None
    # Pages until two in a row hold nothing new (§5.1).
    assert fake.count("GET", DIARY_PAGE) == (3 if given == "after-the-read" else 2)


async def test_a_links_rating_is_not_written_over_one_given_on_a_serializd_clock_behind_ours(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """Serializd's clock 10 minutes behind ours: a rating given there 5 minutes after the
    link's read is stamped 5 minutes before it on our clock. Read as is, the link's older
    rating was written over it."""
    clock.now = fake.now()
    old_history(fake, 100)
    fake.advance(-600)
    read_at = clock()
    clock.advance(300)
    fake.advance(300)
    fake.log_entry(None, SHOW, 1, 4, rating=4, is_log=False)
    enqueue(runtime, "rating", episode(4), clock() - 30 * DAY, rating=90, link="ts",
            read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    assert [e.rating for e in fake.diary() if e.show_id == SHOW] == [4]
    (row,) = waiting(runtime)
    assert row["last_error"] == "skipped: a newer rating was given on Serializd since"


async def test_a_links_ratings_share_one_look_at_the_diary(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    clock.now = fake.now()
    read_at = clock()
    clock.advance(60)
    for number in range(1, 7):
        enqueue(runtime, "rating", episode(number), clock() - DAY, rating=80, link="ts",
                read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    assert len(fake.diary()) == 6
    assert fake.count("GET", DIARY_PAGE) == 1


async def test_a_links_removal_sees_a_rewatch_logged_since_its_read_behind_a_page_of_ours(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """The same run queued the removal and more than a page of new logs (a backfill); the user
    logged a rewatch of the removed episode in the app after the read, before those logs
    landed. The look at what the diary gained since the read must not stop at a first page
    that holds only our logs: the rewatch is on the next, and that viewing stands."""
    first, read_at = logged_then_read(fake, clock)
    clock.advance(60)
    fake.advance(60)
    fake.log_entry(None, SHOW, 1, 4, is_rewatch=True)  # in the app, meanwhile
    clock.advance(60)
    fake.advance(60)
    for season, number in [(2, n) for n in range(1, 14)] + [(3, n) for n in range(1, 14)]:
        enqueue(runtime, "play", episode(number, season), clock() - 3 * DAY,
                link="ts", read_at=read_at)  # fmt: skip
    enqueue(runtime, "remove_play", episode(4), clock() - 30 * DAY,
            record=str(first.id), link="ts", read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=6)
    ours = [e for e in fake.diary() if e.show_id == SHOW and e.season_id != SEASON_1]
    assert len(ours) == 26  # more than a page (24) of our logs, newer than the rewatch
    assert (SHOW, SEASON_1, 4) in fake.ticks()
    assert first in fake.diary()


async def test_a_links_removal_of_a_tick_keeps_it_for_a_webhook_play_of_ours_logged_since(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """s1e6 ticked only; the link's run read that tick, then queued its removal (removed on
    Trakt). Meanwhile a webhook play of s1e6 was logged there by us: unticking would leave
    our diary entry of it unwatched (a play lost). The tick stays, skipped, saying why."""
    clock.now = fake.now()
    fake.tick(None, SHOW, 1, 6)
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    enqueue(runtime, "play", episode(6), clock() - 60, progress=98.0)  # the webhook's
    await drain(worker, runtime, clock, passes=2)
    (ours,) = fake.diary()
    enqueue(runtime, "remove_play", episode(6), clock() - 7200, record="tick:1396:1:6",
            link="ts", read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    assert fake.ticks() == {(SHOW, SEASON_1, 6)} and fake.diary() == [ours]
    removal = waiting(runtime)[-1]
    assert removal["status"] == "done"
    assert removal["last_error"].startswith("skipped: not unticked: a play of the episode")
    assert skipped_total(runtime) == 1


async def test_a_links_removal_of_a_tick_keeps_it_for_our_entry_answered_without_its_id(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """A webhook play of s1e6 logged by us, the add answered with only a message (no id to
    look for in the diary); a link's run read the tick and queues its removal: our entry
    stands, so the tick stays (unticked, that play would read as unwatched), as a removal of
    a play of ours does for one without an id."""
    clock.now = fake.now()
    fake.reviews_add_answer = "message"
    enqueue(runtime, "play", episode(6), clock() - 60, progress=98.0)  # the webhook's
    await drain(worker, runtime, clock, passes=2)
    (ours,) = fake.diary()
    assert fake.ticks() == {(SHOW, SEASON_1, 6)}
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    enqueue(runtime, "remove_play", episode(6), UNDATED, record="tick:1396:1:6",
            link="ts", read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    assert fake.ticks() == {(SHOW, SEASON_1, 6)} and fake.diary() == [ours]
    removal = waiting(runtime)[-1]
    assert removal["status"] == "done"
    assert removal["last_error"].startswith("skipped: not unticked: a play of the episode")


async def logged_twice_by_us(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> tuple[Review, Review, float]:
    """Behind 5 pages of old history, s1e4 watched in Plex a month ago and again yesterday:
    two diary entries of ours and the tick, 10 minutes ago. Those entries, and when the second
    was watched."""
    return (await each_logged_twice_by_us(runtime, worker, fake, clock, [4]))[4]


async def each_logged_twice_by_us(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    numbers: list[int],
    history: int = 100,
) -> dict[int, tuple[Review, Review, float]]:
    """`logged_twice_by_us` for each episode of season 1 in `numbers`, behind `history` old
    entries: episode number -> its two entries and when the second was watched."""
    clock.now = fake.now()
    old_history(fake, history)
    again_at = clock() - DAY
    for number in numbers:
        enqueue(runtime, "play", episode(number), clock() - 30 * DAY, progress=98.0)
        enqueue(runtime, "play", episode(number), again_at, progress=98.0)
    await drain(worker, runtime, clock, passes=3)
    ours = [e for e in fake.diary() if e.show_id == SHOW]
    assert fake.ticks() == {(SHOW, SEASON_1, n) for n in numbers}
    clock.advance(600)
    fake.advance(600)
    found = {}
    for number in numbers:
        first, again = [e for e in ours if e.episode_number == number]
        found[number] = (first, again, again_at)
    return found


def ledger_plays(runtime: Runtime) -> dict[str, Any]:
    return runtime.store.mirror_get("serializd", "me", "plays")


def first_misses(runtime: Runtime) -> set[int]:
    """The entries of ours one whole read of the diary missed, not proven gone yet."""
    return {int(review) for review in runtime.store.mirror_get("serializd", "me", "first-misses")}


async def next_run(
    worker: DeliveryWorker, runtime: Runtime, clock: FakeClock, fake: FakeSerializd
) -> None:
    """The removals waiting for a second whole read of the diary go again, and read it."""
    clock.advance(SECOND_READ_AFTER + 1)
    fake.advance(SECOND_READ_AFTER + 1)
    await drain(worker, runtime, clock, passes=2)


@pytest.mark.parametrize(
    "in_the_app", ["deleted-the-other", "kept-the-other", "deleted-it-and-logged-a-rewatch"]
)
async def test_a_links_removal_of_our_entry_unticks_once_the_user_deleted_our_other_one(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    in_the_app: str,
) -> None:
    """s1e4 logged twice by us; the user deletes the older entry in the Serializd app (the
    tick stays: two systems, §6), then removes yesterday's play on Trakt: the link deletes its
    entry, and as no entry of ours of the episode is left, unticks it, although the ledger
    still named the deleted one (forgotten now). Proving an entry gone costs the whole diary
    once (no read by show or entry, §5.1); one still there, the pages until it shows (here
    those the look at what is new since the read saw), and it keeps the tick. A rewatch the
    user logged since the read keeps it too (before any look)."""
    first, again, again_at = await logged_twice_by_us(runtime, worker, fake, clock)
    if in_the_app != "kept-the-other":
        fake.delete_entry(first)
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    if in_the_app == "deleted-it-and-logged-a-rewatch":
        fake.log_entry(None, SHOW, 1, 4, is_rewatch=True)
    pages_before = fake.count("GET", DIARY_PAGE)
    enqueue(runtime, "remove_play", episode(4), again_at, record=str(again.id), link="ts",
            read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    removal = waiting(runtime)[-1]
    pages = fake.count("GET", DIARY_PAGE) - pages_before
    if in_the_app != "deleted-the-other":
        assert removal["status"] == "done"
    if in_the_app == "deleted-the-other":
        # One whole read missed our other entry: not proven gone yet (pages may have shifted
        # under that read); the removal waits, without spending a try, for the next run's.
        assert removal["status"] == "pending" and removal["last_error"].startswith(
            "diary entry deleted; one read of the Serializd diary did not list"
        )
        assert fake.ticks() == {(SHOW, SEASON_1, 4)} and again not in fake.diary()
        assert first_misses(runtime) == {first.id}
        assert pages == 2 + 5  # the look at what is new since the read, then the whole diary
        await next_run(worker, runtime, clock, fake)
        removal = waiting(runtime)[-1]
        assert removal["status"] == "done" and removal["last_error"] is None
        assert fake.ticks() == set()
        assert all(v.get("removed") for v in ledger_plays(runtime).values())
        assert first_misses(runtime) == set()
        assert fake.count("GET", DIARY_PAGE) - pages_before == 2 * (2 + 5)
    elif in_the_app == "kept-the-other":
        assert fake.ticks() == {(SHOW, SEASON_1, 4)} and again not in fake.diary()
        assert first in fake.diary() and removal["last_error"] is None
        assert pages == 2  # the look at what is new since the read saw our other entry
    else:
        assert fake.ticks() == {(SHOW, SEASON_1, 4)} and again in fake.diary()
        assert removal["last_error"].startswith("skipped: not removed: the episode was logged")


async def tick_removal_queued(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    read_at: float,
    passes: int = 2,
) -> None:
    """2 minutes after its run read Serializd (`read_at`), the link `ts` queues the removal
    of s1e4's tick; `passes` passes of the worker."""
    clock.advance(120)
    fake.advance(120)
    enqueue(runtime, "remove_play", episode(4), UNDATED, record="tick:1396:1:4", link="ts",
            read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=passes)


@pytest.mark.parametrize("between_the_reads", ["service-runs-on", "service-restarted"])
async def test_a_links_removal_of_a_tick_unticks_once_the_user_deleted_our_entries_of_it(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    between_the_reads: str,
) -> None:
    """s1e4 logged twice by us; the user deletes both entries in the app, leaving the tick,
    which the link's read takes for a play of unknown date. Removed on Trakt: the whole diary
    read for it misses our entries, which proves them gone only once the next run's whole
    read misses them too (also after a restart: the store keeps when the first read ended);
    then unticked, although the ledger still named our entries (forgotten now)."""
    first, again, _ = await logged_twice_by_us(runtime, worker, fake, clock)
    fake.delete_entry(first)
    fake.delete_entry(again)
    read_at = clock()
    await tick_removal_queued(runtime, worker, fake, clock, read_at)
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    removal = waiting(runtime)[-1]
    assert removal["status"] == "pending"
    assert removal["last_error"].startswith("not unticked yet: one read of the Serializd diary")
    assert first_misses(runtime) == {first.id, again.id}
    assert not any(v.get("removed") for v in ledger_plays(runtime).values())
    if between_the_reads == "service-restarted":
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()
        runtime = build_runtime(runtime.config, clock=clock)
        runtime.open()
        restarted = serializd_target(runtime, clock)
        worker.targets = {restarted.name: restarted}
    try:
        await next_run(worker, runtime, clock, fake)
        assert fake.ticks() == set()
        removal = waiting(runtime)[-1]
        assert removal["status"] == "done" and removal["last_error"] is None
        assert all(v.get("removed") for v in ledger_plays(runtime).values())
        assert first_misses(runtime) == set()
    finally:
        if between_the_reads == "service-restarted":
            for target in worker.targets.values():
                await target.aclose()
            runtime.close()


@pytest.mark.parametrize("failure", ["503", "changed-while-read"])
async def test_a_removal_whose_look_for_our_other_entry_fails_waits_and_unticks_nothing(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock, failure: str
) -> None:
    """As above, but the diary cannot be read whole while the delivery looks for our other
    entry (an outage, or the user deleting an entry meanwhile, which shifts the pages): not
    seen is not gone. The tick and the ledger stay, the removal waits without being dropped,
    and once the diary reads (twice, a run apart), the episode is unticked."""
    first, again, again_at = await logged_twice_by_us(runtime, worker, fake, clock)
    fake.delete_entry(first)
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    if failure == "503":
        fake.delay_next(2, 0.0, route=DIARY_PAGE)  # the look at what is new since the read
        fake.fail_next(2, 503, route=DIARY_PAGE)  # past the inline retry
    else:
        old = next(e for e in fake.diary() if e.show_id != SHOW)
        fake.deleted_before_page = (3, old)  # a page only the whole read reaches
    enqueue(runtime, "remove_play", episode(4), again_at, record=str(again.id), link="ts",
            read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert [r["status"] for r in waiting(runtime)][-1] == "pending"
    standing = {v.get("review_id") for v in ledger_plays(runtime).values() if not v.get("removed")}
    assert first.id in standing  # not forgotten on a read that failed
    assert first_misses(runtime) == set()  # nor missed by a read that failed
    clock.advance(3600)
    fake.advance(3600)
    await drain(worker, runtime, clock, passes=2)
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}  # the first whole read missed it
    await next_run(worker, runtime, clock, fake)
    assert fake.ticks() == set()
    assert waiting(runtime)[-1]["status"] == "done"


def first_on_page_3(fake: FakeSerializd, ours: Review) -> list[Review]:
    """Move our entry to the first row of the diary's page 3; the other rows, in order."""
    others = [r for r in fake._diary_order(fake.diary()) if r.id != ours.id]
    ours.date_added = others[48].date_added  # ours sorts right before it (a newer id)
    assert [r.id for r in fake._diary_order(fake.diary())].index(ours.id) == 48
    return others


async def ours_logged_behind(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock, entries: int
) -> Review:
    """One clock for both; `entries` of old history (`old_history`), then a webhook play of
    s1e4 logged by us: our entry."""
    clock.now = fake.now()
    old_history(fake, entries)
    enqueue(runtime, "play", episode(4), clock() - 3600, progress=98.0)
    await drain(worker, runtime, clock, passes=2)
    (ours,) = [e for e in fake.diary() if e.show_id == SHOW]
    return ours


async def removal_whose_whole_read_misses(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    ours: Review,
    passes: int,
) -> float:
    """Our entry moved first on the diary's page 3; a link's run reads the tick and queues its
    removal 2 minutes later. While `passes` passes read the whole diary for it, the user
    deletes an entry on page 1 just before page 3 is answered (`totalReviews` null): our
    entry moves up onto page 2, already read, and no page lists it. When the run read."""
    others = first_on_page_3(fake, ours)
    read_at = clock()
    fake.diary_total_reviews = "null"
    fake.deleted_before_page = (3, others[0])
    await tick_removal_queued(runtime, worker, fake, clock, read_at, passes)
    return read_at


async def test_an_entry_of_ours_a_whole_read_misses_as_the_diary_shifts_keeps_its_tick(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """A webhook play of s1e4 logged by us, its entry first on the diary's page 3 (pages are
    not reliably newest first, §5.1); a link's run read the tick and queues its removal.
    While the whole diary is read to see whether our entry stands, the user deletes an entry
    on page 1 just before page 3 is answered: our entry moves up onto page 2, already read,
    and no page lists it. Serializd answers `totalReviews` null (§5.1), so the read cannot
    see the diary change. Our entry stands: the tick stays, the ledger keeps it, and the
    next run's read lists it and settles the removal (skipped, our play keeps the tick)."""
    ours = await ours_logged_behind(runtime, worker, fake, clock, entries=100)  # 5 pages of 24
    await removal_whose_whole_read_misses(runtime, worker, fake, clock, ours, passes=2)
    assert fake.deleted_before_page is None  # it happened, during the whole read
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert ours.id in {v.get("review_id") for v in ledger_plays(runtime).values()}
    assert first_misses(runtime) == {ours.id}
    assert waiting(runtime)[-1]["status"] == "pending"
    await next_run(worker, runtime, clock, fake)
    assert fake.ticks() == {(SHOW, SEASON_1, 4)} and ours in fake.diary()
    removal = waiting(runtime)[-1]
    assert removal["status"] == "done"
    assert removal["last_error"].startswith("skipped: not unticked: a play of the episode")
    assert first_misses(runtime) == set()  # listed: forgotten


async def links_read(runtime: Runtime, clock: FakeClock, fake: FakeSerializd, how: str) -> None:
    """The link's reader reads Serializd for `me`: the whole diary (`full`), or a delta read
    (`delta`: the pages from the first until one holds nothing new)."""
    reader = SerializdReader(client_at(runtime, clock, 1000), runtime.store, clock)
    try:
        if how == "full":
            await reader.read("me", {}, None, full=True)
        else:
            ids = json.dumps(sorted(e.id for e in fake.diary()))
            await reader.read("me", {"diary_ids": ids}, Side(), full=False)
    finally:
        await reader.aclose()


@pytest.mark.parametrize("read", ["full", "delta"])
async def test_a_first_miss_of_an_entry_the_links_read_lists_is_forgotten(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock, read: str
) -> None:
    """As above, a whole read for the removal of s1e4's tick misses our entry as the diary
    shifts: missed once. Then the link's reader reads Serializd (its daily full read, or a
    delta read whose first page holds the entry, the user having edited it): it lists our
    entry, so that miss is forgotten. The next run's whole read misses it again as the diary
    shifts once more: missed once again, not proven gone: the tick stays. (A miss the
    reader's sight left standing made that second miss a proof: our entry taken for deleted
    in the app and the episode unticked under it.)"""
    ours = await ours_logged_behind(runtime, worker, fake, clock, entries=100)  # 5 pages of 24
    newest = ours.date_added
    await removal_whose_whole_read_misses(runtime, worker, fake, clock, ours, passes=2)
    assert fake.deleted_before_page is None
    assert first_misses(runtime) == {ours.id}
    ours.date_added = newest  # on page 1 again
    await links_read(runtime, clock, fake, read)
    assert first_misses(runtime) == set()
    fake.deleted_before_page = (3, first_on_page_3(fake, ours)[0])
    await next_run(worker, runtime, clock, fake)
    assert fake.deleted_before_page is None  # the whole read missed it again
    assert fake.ticks() == {(SHOW, SEASON_1, 4)} and ours in fake.diary()
    assert not any(v.get("removed") for v in ledger_plays(runtime).values())
    assert first_misses(runtime) == {ours.id}
    assert waiting(runtime)[-1]["status"] == "pending"


async def test_a_kept_whole_read_records_its_miss_once_not_again_after_the_links_read(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """As above: the whole read for the removal of s1e4's tick misses our entry as the diary
    shifts (missed once), and the link's reader then lists it (forgotten). Within the 5
    minutes that read is kept, a removal of the same tick queued by another link, which
    knows the episode by its absolute number (4: S1E4, another queue of its own), asks about
    our entry: the kept read answers it, and must not record its miss a second time (the
    entry was seen since). Else the next run's read, the diary shifting once more, completed
    a proof against an entry that stands, and unticked the episode under it."""
    ours = await ours_logged_behind(runtime, worker, fake, clock, entries=100)  # 5 pages of 24
    newest = ours.date_added
    read_at = await removal_whose_whole_read_misses(runtime, worker, fake, clock, ours, passes=1)
    assert fake.deleted_before_page is None
    assert first_misses(runtime) == {ours.id}
    ours.date_added = newest  # on page 1 again
    await links_read(runtime, clock, fake, "delta")
    assert first_misses(runtime) == set()
    enqueue(runtime, "remove_play", absolute_episode(4), UNDATED, record="tick:1396:1:4",
            link="ps", read_at=read_at)  # fmt: skip
    pages = fake.count("GET", DIARY_PAGE)
    await drain(worker, runtime, clock, passes=1)
    assert [r["status"] for r in waiting(runtime)][-2:] == ["pending", "pending"]
    assert fake.count("GET", DIARY_PAGE) == pages  # the kept reads answer it
    assert first_misses(runtime) == set()
    fake.deleted_before_page = (3, first_on_page_3(fake, ours)[0])
    await next_run(worker, runtime, clock, fake)
    assert fake.deleted_before_page is None  # the whole read missed it again
    assert fake.ticks() == {(SHOW, SEASON_1, 4)} and ours in fake.diary()
    assert first_misses(runtime) == {ours.id}


async def test_the_links_whole_read_missing_our_entry_is_no_miss_of_a_proof(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """The user deletes our entry of s1e4 in the app; the link's daily full read does not list
    it. That read counts as no miss: it cannot tell our adds in flight while it read (the
    delivery's reads can), and no removal waits on it. The removal of the tick it planned
    then reads the whole diary itself: one miss, not a proof; the next run's read proves it."""
    ours = await ours_logged_behind(runtime, worker, fake, clock, entries=30)
    fake.delete_entry(ours)
    clock.advance(600)
    fake.advance(600)
    read_at = clock()
    await links_read(runtime, clock, fake, "full")
    assert first_misses(runtime) == set()
    await tick_removal_queued(runtime, worker, fake, clock, read_at)
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert first_misses(runtime) == {ours.id}
    await next_run(worker, runtime, clock, fake)
    assert fake.ticks() == set()
    assert waiting(runtime)[-1]["status"] == "done"


def removals_planned(
    runtime: Runtime, ours: dict[int, tuple[Review, Review, float]], read_at: float
) -> None:
    """A link's run that read Serializd at `read_at` removes the second play of each."""
    for _, again, again_at in ours.values():
        enqueue(runtime, "remove_play", episode(again.episode_number), again_at,
                record=str(again.id), link="ts", read_at=read_at)  # fmt: skip


async def test_a_runs_removals_share_one_read_of_the_diary_to_find_our_entries_gone(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """s1e4-e7 each logged twice by us behind 5 pages of old history; in the app the user
    deletes the older entry of e4, e5 and e6 (not e7's); a link's run removes the other play
    of each. Proving the three gone costs the whole diary once in each of two runs (two whole
    reads must miss an entry), not once each (before: 2 + 3 x 5 pages, and one more page for
    e7's); e7's older entry, on the newest pages the look at what is new since the read just
    read, costs nothing more."""
    ours = await each_logged_twice_by_us(runtime, worker, fake, clock, [7, 4, 5, 6])
    for number in (4, 5, 6):
        fake.delete_entry(ours[number][0])
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    pages_before = fake.count("GET", DIARY_PAGE)
    removals_planned(runtime, ours, read_at)
    await drain(worker, runtime, clock, passes=2)
    statuses = [r["status"] for r in waiting(runtime)[-4:]]
    assert statuses == ["done"] + ["pending"] * 3  # e7's; the others wait for the next read
    assert fake.count("GET", DIARY_PAGE) - pages_before == 2 + 5
    await next_run(worker, runtime, clock, fake)
    assert [r["status"] for r in waiting(runtime)[-4:]] == ["done"] * 4
    assert fake.ticks() == {(SHOW, SEASON_1, 7)}
    assert fake.diary() == [e for e in fake.diary() if e.show_id != SHOW] + [ours[7][0]]
    pages = fake.count("GET", DIARY_PAGE) - pages_before
    # Each run: the look at what is new since the read, then the whole diary once.
    assert pages == 2 * (2 + 5)


@pytest.mark.parametrize("in_the_app", ["deleted-the-other", "kept-the-other"])
async def test_a_removal_on_a_big_diary_reads_it_whole_only_to_find_our_entry_gone(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    in_the_app: str,
) -> None:
    """A diary of 2,400 entries (100 pages): one removal whose other entry of ours the user
    deleted costs the look at what is new since the read and the whole diary, in each of two
    runs (pages are not reliably newest first, §5.1: no page but the last proves an entry
    gone, and one read can miss an entry); one whose other entry stands costs only the look,
    which saw it (before: one page more)."""
    ours = await each_logged_twice_by_us(runtime, worker, fake, clock, [4], history=2400)
    first = ours[4][0]
    if in_the_app == "deleted-the-other":
        fake.delete_entry(first)
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    pages_before = fake.count("GET", DIARY_PAGE)
    removals_planned(runtime, ours, read_at)
    await drain(worker, runtime, clock, passes=2)
    pages = fake.count("GET", DIARY_PAGE) - pages_before
    if in_the_app == "deleted-the-other":
        assert waiting(runtime)[-1]["status"] == "pending"
        assert pages == 2 + 100  # our entries deleted: 2,400 left, 100 pages of 24
        await next_run(worker, runtime, clock, fake)
        assert waiting(runtime)[-1]["status"] == "done"
        assert fake.ticks() == set()
        assert fake.count("GET", DIARY_PAGE) - pages_before == 2 * (2 + 100)
    else:
        assert waiting(runtime)[-1]["status"] == "done"
        assert fake.ticks() == {(SHOW, SEASON_1, 4)} and first in fake.diary()
        assert pages == 2


async def test_an_entry_we_add_after_the_runs_whole_read_still_keeps_its_episode_ticked(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """The run's whole read (for s1e4's removal) did not list the entry a webhook play of s1e7
    adds after it: when a removal of e7 then asks which of our entries of it stand, that entry
    is there (we just added it), not gone for missing from the read, and keeps the tick; the
    other one, deleted in the app before the read, is missed once (forgotten once a second
    whole read misses it). No second read for e7."""
    ours = await each_logged_twice_by_us(runtime, worker, fake, clock, [4, 7])
    fake.delete_entry(ours[4][0])
    fake.delete_entry(ours[7][1])
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    pages_before = fake.count("GET", DIARY_PAGE)
    removals_planned(runtime, {4: ours[4]}, read_at)
    enqueue(runtime, "play", episode(7), clock() - 60, progress=98.0)
    first_7, first_7_at = ours[7][0], ours[7][2] - 29 * DAY  # a month ago, the other yesterday
    enqueue(runtime, "remove_play", episode(7), first_7_at, record=str(first_7.id), link="ts",
            read_at=read_at)  # fmt: skip
    await drain(worker, runtime, clock, passes=3)
    assert [r["status"] for r in waiting(runtime)[-3:]] == ["pending", "done", "done"]
    (webhook_play,) = [e for e in fake.diary() if e.show_id == SHOW]
    assert webhook_play.episode_number == 7
    assert fake.ticks() == {(SHOW, SEASON_1, 4), (SHOW, SEASON_1, 7)}
    # e7's other entry, missed by that read once, is not forgotten yet; it keeps no tick
    # the webhook play's entry does not keep.
    assert first_misses(runtime) == {ours[4][0].id, ours[7][1].id}
    standing = {v.get("review_id") for v in ledger_plays(runtime).values() if not v.get("removed")}
    assert standing == {webhook_play.id, ours[4][0].id, ours[7][1].id}
    # The removals' look at the newest pages, the whole read, and the webhook play's own look
    # for a log made by hand (it begins minutes before the play, before the removals' look).
    assert fake.count("GET", DIARY_PAGE) - pages_before == 2 + 5 + 2
    await next_run(worker, runtime, clock, fake)  # e4's removal: a second whole read
    assert fake.ticks() == {(SHOW, SEASON_1, 7)}
    standing = {v.get("review_id") for v in ledger_plays(runtime).values() if not v.get("removed")}
    assert standing == {webhook_play.id, ours[7][1].id}


async def test_an_entry_another_process_adds_after_the_runs_whole_read_keeps_its_tick(
    runtime: Runtime,
    worker: DeliveryWorker,
    target: SerializdTarget,
    fake: FakeSerializd,
    clock: FakeClock,
) -> None:
    """A link's run removes the second play of s1e4 and of s1e7 (the user deleted the older
    entry of each in the app); the service delivers them a batch apart. Between the batches a
    `watchbridge sync` beside it (another process: its own target, the same database) logs a
    webhook play of e7. The service's whole read, made for e4's removal, could not list that
    entry, and the service never noted it: the entry is not gone for missing from a read begun
    before it was written. e7's removal reads the diary again and the entry keeps the tick."""
    ours = await each_logged_twice_by_us(runtime, worker, fake, clock, [4, 7])
    fake.delete_entry(ours[4][0])
    fake.delete_entry(ours[7][0])
    read_at = clock()
    clock.advance(120)
    fake.advance(120)
    target.batch_size = 1  # a run's rows go out in batches: here, one row each
    removals_planned(runtime, {4: ours[4]}, read_at)
    enqueue(runtime, "play", episode(7), clock() - 60, progress=98.0)  # a webhook's
    removals_planned(runtime, {7: ours[7]}, read_at)
    await drain(worker, runtime, clock, passes=1)  # e4's removal: the whole diary read
    assert first_misses(runtime) == {ours[4][0].id}  # not proven gone by one read

    beside = SerializdTarget(target.client, runtime.store, runtime.config.delivery, clock)
    beside.batch_size = 1
    cli = DeliveryWorker(lambda _: [beside], runtime.config.delivery, role="cli")
    cli.targets = {beside.name: beside}
    await drain(cli, runtime, clock, passes=1)  # the webhook's play of e7
    (added,) = [e for e in fake.diary() if e.show_id == SHOW and e.id != ours[7][1].id]

    pages_before = fake.count("GET", DIARY_PAGE)
    await drain(worker, runtime, clock, passes=1)  # e7's removal
    assert [r["status"] for r in waiting(runtime)[-3:]] == ["pending", "done", "done"]
    assert [e for e in fake.diary() if e.show_id == SHOW] == [added]
    assert (SHOW, SEASON_1, 7) in fake.ticks()
    standing = {v.get("review_id") for v in ledger_plays(runtime).values() if not v.get("removed")}
    assert standing == {ours[4][0].id, added.id, ours[7][0].id}  # these two missed once
    assert fake.count("GET", DIARY_PAGE) - pages_before >= 1  # read again: it showed


async def test_a_runs_read_does_not_serve_a_removal_planned_after_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """A run's whole read saw our older entry of s1e7; the user deletes it in the app, then a
    second run (a minute later, within the 5 minutes a read is kept) removes e7's other play:
    what the first run read predates that plan, so the diary is read again (and, as that read
    misses the entry, once more a run later), and e7 unticked."""
    ours = await each_logged_twice_by_us(runtime, worker, fake, clock, [4, 7])
    fake.delete_entry(ours[4][0])
    read_at = clock()
    clock.advance(60)
    fake.advance(60)
    removals_planned(runtime, {4: ours[4]}, read_at)
    await drain(worker, runtime, clock, passes=2)
    await next_run(worker, runtime, clock, fake)
    assert fake.ticks() == {(SHOW, SEASON_1, 7)}
    fake.delete_entry(ours[7][0])
    clock.advance(30)
    fake.advance(30)
    read_again_at = clock()
    clock.advance(30)
    fake.advance(30)
    pages_before = fake.count("GET", DIARY_PAGE)
    removals_planned(runtime, {7: ours[7]}, read_again_at)
    await drain(worker, runtime, clock, passes=2)
    assert first_misses(runtime) == {ours[7][0].id}  # read again, and missed once
    assert fake.count("GET", DIARY_PAGE) - pages_before == 2 + 5
    await next_run(worker, runtime, clock, fake)
    assert waiting(runtime)[-1]["status"] == "done"
    assert fake.ticks() == set()


async def test_an_undated_play_queued_again_after_a_links_untick_ticks_again(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    """Trakt's play without a date ticked s1e6; removed there, the link unticked it; the
    user marks it watched on Trakt again: ticked again, not taken as already on Serializd."""
    clock.now = fake.now()
    enqueue(runtime, "play", episode(6), UNDATED, link="ts", read_at=clock())
    await drain(worker, runtime, clock, passes=2)
    assert fake.ticks() == {(SHOW, SEASON_1, 6)}
    clock.advance(60)
    enqueue(runtime, "remove_play", episode(6), UNDATED, record="tick:1396:1:6",
            link="ts", read_at=clock())  # fmt: skip
    await drain(worker, runtime, clock, passes=2)
    assert fake.ticks() == set()
    clock.advance(60)
    enqueue(runtime, "play", episode(6), UNDATED, link="ts", read_at=clock(), source="again")
    await drain(worker, runtime, clock, passes=2)
    assert fake.ticks() == {(SHOW, SEASON_1, 6)} and fake.diary() == []


async def test_a_row_that_cannot_be_read_is_a_dead_letter_told_as_a_bug_to_report(
    runtime: Runtime, worker: DeliveryWorker, receiver: AlertReceiver, clock: FakeClock
) -> None:
    enqueue(runtime, "rating", episode(4), clock() - 3600)  # damaged: no "rating" in it
    await drain(worker, runtime, clock)
    (dead,) = runtime.store.dead_letters()
    assert dead.last_error == (
        "an unexpected error in watchbridge, a bug: what it stored of this rating for Serializd"
        " cannot be read (KeyError 'rating'); please report it (a retry fails the same way)"
    )
    (told,) = [m["message"] for m in receiver.messages if "gave up" in m["title"]]
    assert f"Breaking Bad S01E04: rating for profile me (#{dead.id}): an unexpected error" in told


@pytest.mark.parametrize("uptime", [FakeClock(1_000.0)])
async def test_an_entry_whose_answer_was_lost_before_the_clock_is_set_is_not_added_twice(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # Stamped while the clock ran 3 days behind; the diary entry dated so lands, the answer
    # is lost. Time sync then sets the clock (the uptime, which no one sets, stands): the
    # play's time moves by the step, the entry stays where it was sent.
    at = clock() - 3600
    enqueue(runtime, "play", episode(4), at, frame=runtime.clock_watch.look())
    fake.drop_next(1, route=f"POST {REVIEWS_ADD}", after_handler=True)
    await drain(worker, runtime, clock, passes=1)
    (entry,) = fake.diary()
    clock.advance(3 * DAY)
    await drain(worker, runtime, clock, passes=3, step=120)
    assert fake.diary() == [entry]
    assert fake.count("POST", REVIEWS_ADD) == 1
    assert runtime.store.outbox_counts()["done"] == 1


async def stopped_while_answering(
    runtime: Runtime, fake: FakeSerializd, clock: FakeClock, route: str
) -> None:
    """The service runs its delivery until its request `route` has gone; it is then asked to
    stop (SIGTERM) while that request's answer is on its way."""
    answering = fake.hold_next(route=route)
    stop = asyncio.Event()
    service = DeliveryWorker(lambda _: [serializd_target(runtime, clock)], runtime.config.delivery)
    method, _, path = route.partition(" ")
    running = asyncio.create_task(service.run(runtime, stop))
    await until(lambda: len(fake.calls(method, path)) == 1)
    stop.set()
    answering.set()
    await running


async def test_a_stop_between_a_diary_entry_and_its_tick_ticks_it_at_the_next_start(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # The diary entry landed; the stop keeps the tick (a second write) from going. The next
    # start must tick the episode, not log the play a second time.
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await stopped_while_answering(runtime, fake, clock, f"POST {REVIEWS_ADD}")
    assert len(fake.diary()) == 1 and fake.ticks() == set()
    (row,) = runtime.store._query("SELECT status, attempts FROM outbox")
    assert (row["status"], row["attempts"]) == ("pending", 0)
    clock.advance(runtime.config.delivery.retry_after + 1)
    await drain(worker, runtime, clock)
    assert len(fake.diary()) == 1 and fake.count("POST", REVIEWS_ADD) == 1
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_stop_asked_while_a_play_reads_the_diary_sends_no_entry_and_leaves_no_mark(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # A webhook's play looks at the diary's newest entries (a log made in the app) before its
    # add; the stop comes while that look is answered. No add goes, so the row goes back as
    # it was: marked as maybe logged, its next try would read the diary for nothing.
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await stopped_while_answering(runtime, fake, clock, DIARY)
    assert fake.count("POST", REVIEWS_ADD) == 0
    (row,) = runtime.store._query("SELECT status, attempts, last_error FROM outbox")
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 0, None)


async def test_a_play_fenced_off_by_claims_taken_back_goes_back_unmarked_and_each_play_once(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeSerializd, clock: FakeClock
) -> None:
    # A `watchbridge sync` logs episode 4 (answered 30 s late), then sends episode 5's add,
    # answered 503 (nothing written); it is suspended before the client's try again, past the
    # lease of episode 4's row (renewed last at its note) but not of episode 5's. The service
    # takes episode 4's back; the try again is fenced off. Episode 5's add did not land: it
    # goes back as claimed, not marked as maybe logged. Episode 4's diary entry did: the
    # service ticks it, and logs neither play twice.
    enqueue(runtime, "play", episode(4), clock() - 3600)
    enqueue(runtime, "play", episode(5), clock() - 1800)
    sync_run = DeliveryWorker(
        lambda _: [serializd_target(runtime, clock)], runtime.config.delivery, role="cli"
    )
    sync_run.targets = {"serializd": serializd_target(runtime, clock)}

    def answered_late(request: FakeRequest) -> bool:
        if json.loads(request.body)["episode_number"] == 4:
            clock.advance(30)
        return False

    def asleep_then_taken_back(request: FakeRequest) -> bool:
        if json.loads(request.body)["episode_number"] != 5:
            return False
        clock.advance(CLAIM_LEASE - 29)
        runtime.store.release_stale_claims(clock(), CLAIM_LEASE, f"{SERVICE_ROLE}-")
        return True

    route = f"POST {REVIEWS_ADD}"
    fake.fail_next(1, 200, route=route, when=answered_late)  # never answers: a clock hook
    fake.fail_next(1, 503, route=route, when=asleep_then_taken_back)
    try:
        await sync_run.pass_once(runtime)
    finally:
        fake.clear_knobs()
        await sync_run.targets["serializd"].aclose()
    assert fake.count("POST", REVIEWS_ADD) == 2  # the try again did not go
    assert [entry.episode_number for entry in fake.diary()] == [4]
    (row,) = runtime.store._query(
        "SELECT * FROM outbox WHERE json_extract(payload, '$.item.number') = 5"
    )
    assert (row["status"], row["claimed_by"], row["attempts"]) == ("pending", None, 0)
    assert row["last_error"] is None
    clock.advance(runtime.config.delivery.retry_after + 1)
    await drain(worker, runtime, clock, step=120)
    assert sorted(entry.episode_number for entry in fake.diary()) == [4, 5]
    assert fake.ticks() == {(SHOW, SEASON_1, 4), (SHOW, SEASON_1, 5)}
    assert runtime.store.outbox_counts()["done"] == 2


def kept_texts(database: Path) -> str:
    """Every text the database keeps, as `sqlite3 .dump` writes them (a backup, a bug report)."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return "\n".join(conn.iterdump())


@contextlib.contextmanager
def logged_as_served(runtime: Runtime) -> Iterator[io.StringIO]:
    """The log as `serve` sets it up, with every level: its text."""
    stream = io.StringIO()
    setup_logging("debug", "text", secret_values(runtime.config, runtime.store), stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().handlers.clear()


async def test_a_password_a_login_refusal_quotes_is_kept_in_no_error_text(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    # The password is never kept (only a slow fingerprint of it): Serializd's refusal quoting
    # it must not put it in the delivery's error, which the database keeps for weeks.
    said = {"message": f"Incorrect password: {PASSWORD}"}
    fake.fail_next(3, 401, body=said, route="POST /api/login")
    enqueue(runtime, "play", episode(), clock())
    with logged_as_served(runtime) as log:
        await drain(worker, runtime, clock)
    kept = kept_texts(runtime.config.storage.path)
    assert "Incorrect password: ********" in kept
    for text in (kept, log.getvalue(), repr(receiver.messages)):
        assert PASSWORD not in text


async def test_a_refused_password_leaves_the_running_service_idle(
    runtime: Runtime, target: SerializdTarget, clock: FakeClock
) -> None:
    # No sign-in to Serializd is made beside the service (its password is the config's, read
    # at its start): the rows a refused password holds are no reason for a pass every 10 s
    # (the look for a `watchbridge auth` run beside it), for as long as the password is wrong.
    target.client.accounts["me"] = SerializdAccount(EMAIL, Secret("wrong"))
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery, sign_in_look=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(runtime, stop))
    try:
        enqueue(runtime, "play", episode(4), clock() - 3600)
        worker.notify()
        await until(lambda: runtime.store.waits_for_sign_in("serializd", "me"))
        await asyncio.sleep(0.2)
        with statements_run("IMMEDIATE", runtime.store._conn) as claims:
            await asyncio.sleep(0.5)  # ten of those looks' time
        assert claims == []
    finally:
        stop.set()
        worker.notify()
        await asyncio.wait_for(task, 10)
