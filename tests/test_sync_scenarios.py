"""Trakt ⇄ Serializd end to end, one behaviour each: the real runner reads both fakes over HTTP
(changes made the way a user makes them: Trakt through its API, as its website and apps do;
Serializd in its diary), plans, queues, and the real delivery worker drains the outbox into the
fakes. Only pacing is lifted (`tests.linkrig`), so the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.fakes.serializd import FakeSerializd, Review, iso
from tests.fakes.trakt import CLIENT_ID, Episode, FakeTrakt, HistoryEntry
from tests.linkrig import (
    BB,
    LINK,
    PROFILE,
    Rig,
    fast_trakt,
    open_rig,
    rig_config,
    rig_for,
    use_fast_readers,
)
from watchbridge.config import parse_config
from watchbridge.deliver.serializd import FIRST_MISSES, HAND_LOGS
from watchbridge.ids import Enricher
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.readers import serializd as serializd_reader
from watchbridge.readers.serializd import UNLOGGED
from watchbridge.services.serializd import SerializdUnavailable
from watchbridge.store import ENGINE, NewOutboxRow, ordering_key
from watchbridge.sync import (
    HOLD_FULL_READ_EVERY,
    SYNCED_KINDS,
    NeedsReview,
    kept_off_of,
    load_cursors,
    run_link,
)

pytestmark = pytest.mark.anyio

DAY = 86400.0
RigFactory = Callable[..., Awaitable[Rig]]


def ago(days: float) -> str:
    """An ISO time `days` before now, to the minute (as both services keep plays)."""
    at = int((time.time() - days * DAY) // 60 * 60)
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class TraktApp:
    """What the user does on Trakt's website or phone app: the same API, their own token."""

    def __init__(self, trakt: FakeTrakt) -> None:
        self.trakt = trakt
        self.http = httpx.Client(
            base_url=trakt.url,
            headers={
                "content-type": "application/json",
                "trakt-api-key": CLIENT_ID,
                "trakt-api-version": "2",
                "authorization": f"Bearer {trakt.issue_token().access_token}",
                "user-agent": "trakt-phone-app",
            },
        )

    def episode(self, season: int, number: int) -> dict[str, Any]:
        show = next(s for s in self.trakt.shows if s.tmdb == BB)
        return {"ids": {"trakt": show.seasons[season].episodes[number].trakt}}

    def watch(self, season: int, number: int, at: str) -> None:
        episode = {**self.episode(season, number), "watched_at": at}
        self.post("/sync/history", {"episodes": [episode]})

    def unwatch(self, entry: HistoryEntry) -> None:
        self.post("/sync/history/remove", {"ids": [entry.id]})

    def rate(self, season: int, number: int, rating: int, at: str) -> None:
        episode = {**self.episode(season, number), "rating": rating, "rated_at": at}
        self.post("/sync/ratings", {"episodes": [episode]})

    def post(self, path: str, body: dict[str, Any]) -> None:
        self.http.post(path, json=body).raise_for_status()


def trakt_plays(trakt: FakeTrakt) -> list[tuple[int, int, str]]:
    """(season, number, day watched) of every Trakt play, oldest first."""
    plays = []
    for entry in trakt.history():
        assert isinstance(entry.item, Episode) and entry.watched_at
        plays.append((entry.item.season, entry.item.number, entry.watched_at[:10]))
    return sorted(plays)


def trakt_episodes(trakt: FakeTrakt) -> list[tuple[int, int]]:
    """(season, number) of every Trakt play, dated or not, in order."""
    return sorted((e.item.season, e.item.number) for e in trakt.history())


def trakt_rating(trakt: FakeTrakt, season: int, number: int) -> int | None:
    found = [
        r.rating
        for r in trakt.ratings()
        if getattr(r.item, "season", None) == season and getattr(r.item, "number", None) == number
    ]
    return found[0] if found else None


def diary_plays(serializd: FakeSerializd) -> list[tuple[int, int, str]]:
    """(season, number, day watched) of every episode logged in the Serializd diary."""
    return sorted(
        (_season(serializd, r), r.episode_number, r.watched_at[:10])
        for r in serializd.diary()
        if r.is_log and r.episode_number is not None
    )


def diary_rating(serializd: FakeSerializd, season: int, number: int) -> int | None:
    """The episode's rating as Serializd shows it: the newest diary row that rates it."""
    rows = [
        r
        for r in serializd.diary()
        if r.episode_number == number and _season(serializd, r) == season and r.rating
    ]
    return max(rows, key=lambda r: (r.date_added, r.id)).rating if rows else None


def _season(serializd: FakeSerializd, review: Review) -> int:
    season = serializd.shows[review.show_id].season_by_id(review.season_id or 0)
    assert season is not None
    return season.number


def log(serializd: FakeSerializd, season: int, number: int, at: str, **fields: Any) -> Review:
    return serializd.log_entry(None, BB, season, number, backdate=at, **fields)


def assert_only_s1e1_rated(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, before: dict[str, Any], rating: int | None
) -> None:
    """Both sides rate S1E1 `rating` and are as `before` (both_sides) in all else; nothing died."""
    assert both_sides(trakt, serializd) == {
        "ratings": [(rating, rating), before["ratings"][1]],
        "plays": before["plays"],
    }
    assert rig.store.outbox_counts()["dead"] == 0


async def rated_8_copied_then_cleared(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, rated_at: str
) -> dict[str, Any]:
    """S1E1 rated 8 on Serializd (`rated_at`) and copied to Trakt; a minute later the user
    deletes the rating and the run removes Trakt's 8. Both sides as they were with the 8."""
    watched_s1e1_rated_s1e2(serializd)
    rated = log(serializd, 1, 1, rated_at, rating=8, is_log=False)
    await rig.sync_and_deliver()
    assert trakt_rating(trakt, 1, 1) == 8
    before = both_sides(trakt, serializd)
    serializd.advance(60)
    serializd.delete_entry(rated)
    await rig.sync_and_deliver(full=True)  # a deleted diary row shows on a full read
    assert trakt_rating(trakt, 1, 1) is None
    return before


def watched_s1e1_rated_s1e2(serializd: FakeSerializd) -> None:
    """S1E1 watched a month ago and S1E2 rated 6 then: a removal of one of the two ratings
    later is no mass removal the guard holds."""
    log(serializd, 1, 1, ago(30))
    log(serializd, 1, 2, ago(30), rating=6, is_log=False)


def unlog(serializd: FakeSerializd, review: Review) -> None:
    """The user removes a play on Serializd: deletes its diary entry and unticks the episode
    (a tick left behind still says "watched", reference §5.2)."""
    with serializd.lock:
        serializd.user.reviews.remove(review)
        serializd.user.ticks.pop((review.show_id, review.season_id, review.episode_number), None)


def trakt_writes(trakt: FakeTrakt, since: int = 0) -> list[str]:
    return [r.path for r in trakt.requests[since:] if r.method == "POST"]


def serializd_writes(serializd: FakeSerializd, since: int = 0) -> list[str]:
    return [
        r.path for r in serializd.requests[since:] if r.method == "POST" and r.path != "/api/login"
    ]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def app(trakt: FakeTrakt) -> Iterator[TraktApp]:
    app = TraktApp(trakt)
    yield app
    app.http.close()


@pytest.fixture
async def make_rig(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[RigFactory]:
    """`await make_rig(prefer="trakt")`: the link, with options on top of first_run: apply."""
    use_fast_readers(monkeypatch)
    rigs: list[Rig] = []

    async def make(**options: Any) -> Rig:
        settings = {"first_run": "apply", "max_removal_share": 0.5, **options}
        extra = "".join(f", {k}: {v}" for k, v in settings.items())
        rigs.append(open_rig(tmp_path, trakt, serializd, extra))
        return rigs[-1]

    yield make
    for rig in rigs:
        await rig.aclose()


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    return await make_rig()


# --------------------------------------------------------------------------- first backfill


async def test_a_first_run_copies_trakt_into_an_empty_serializd(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    app.watch(1, 2, "2024-01-02T20:00:00.000Z")
    app.watch(2, 1, "2024-02-01T20:00:00.000Z")
    app.rate(1, 2, 9, "2024-01-02T21:00:00.000Z")
    await rig.sync_and_deliver()
    assert diary_plays(serializd) == [
        (1, 1, "2024-01-01"),
        (1, 2, "2024-01-02"),
        (2, 1, "2024-02-01"),
    ]
    assert diary_rating(serializd, 1, 2) == 9
    assert rig.store.outbox_counts()["dead"] == 0


async def test_a_first_run_copies_serializd_into_an_empty_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    log(serializd, 1, 2, "2024-01-02T20:00:00.000Z", rating=7)
    log(serializd, 2, 1, "2024-02-01T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert trakt_plays(trakt) == [(1, 1, "2024-01-01"), (1, 2, "2024-01-02"), (2, 1, "2024-02-01")]
    assert trakt_rating(trakt, 1, 2) == 7
    assert rig.store.outbox_counts()["dead"] == 0


async def test_a_first_run_copies_seasons_marked_on_serializd_into_an_empty_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    serializd.mark(None, BB, 1)  # 7 episodes, no diary entry, no tick
    await rig.sync_and_deliver()
    assert trakt_episodes(trakt) == [(1, n) for n in range(1, 8)]
    assert serializd.diary() == [] and serializd.ticks() == set()
    assert rig.store.outbox_counts()["dead"] == 0


async def test_a_first_run_copies_ticks_without_diary_entries_into_an_empty_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    serializd.tick(None, BB, 1, 1, 2, 3)  # 2 and 3 ticked only
    serializd.tick(None, BB, 2, 1)  # the next season, ticked only
    await rig.sync_and_deliver()
    assert trakt_episodes(trakt) == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1)]


@pytest.mark.parametrize("full", [False, True])
async def test_the_run_after_a_backfill_from_marks_and_ticks_writes_nothing(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, full: bool
) -> None:
    serializd.mark(None, BB, 1)
    serializd.tick(None, BB, 2, 1, 2)
    serializd.start_watching(None, BB)
    await rig.sync_and_deliver()
    trakt_before, serializd_before = len(trakt.requests), len(serializd.requests)
    result = await rig.sync_and_deliver(full=full)  # full: the daily read, marks and ticks again
    assert [a for p in result.plans for a in p.plan.actions] == []
    assert trakt_writes(trakt, trakt_before) == []
    assert serializd_writes(serializd, serializd_before) == []
    assert len(trakt.history()) == 9


# --------------------------------------------------------------------------- incremental


async def test_a_new_play_on_trakt_reaches_serializd_on_the_next_run(
    rig: Rig, serializd: FakeSerializd, app: TraktApp
) -> None:
    app.watch(1, 1, ago(3))
    await rig.sync_and_deliver()
    app.watch(1, 2, ago(1))
    await rig.sync_and_deliver()
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 2)]


async def test_a_new_diary_entry_on_serializd_reaches_trakt_on_the_next_run(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, ago(3))
    await rig.sync_and_deliver()
    log(serializd, 1, 2, ago(1))
    await rig.sync_and_deliver()
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2)]


# --------------------------------------------------------------------------- rewatches


async def test_two_plays_of_one_episode_on_trakt_stay_two_diary_entries(
    rig: Rig, serializd: FakeSerializd, app: TraktApp
) -> None:
    app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    app.watch(1, 1, "2024-03-01T20:00:00.000Z")
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert diary_plays(serializd) == [(1, 1, "2024-01-01"), (1, 1, "2024-03-01")]


async def test_two_diary_entries_of_one_episode_stay_two_plays_on_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    log(serializd, 1, 1, "2024-03-01T20:00:00.000Z", is_rewatch=True)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert trakt_plays(trakt) == [(1, 1, "2024-01-01"), (1, 1, "2024-03-01")]


async def test_two_diary_entries_logged_with_one_date_stay_two_plays_on_both_sides(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    day = ago(3)
    log(serializd, 1, 1, day)
    log(serializd, 1, 1, day)  # watched twice that day, both logged with its date
    for full in (False, True, False, True):
        await rig.sync_and_deliver(full=full)
    assert len(diary_plays(serializd)) == 2
    assert len(trakt_plays(trakt)) == 2


@pytest.mark.parametrize(
    ("logged_at", "trakt_plays_after"),
    [("T23:10:00.000Z", 2), ("T20:01:00.000Z", 1)],
    ids=["logged apart that evening", "posted twice within a minute"],
)
async def test_a_second_viewing_that_day_logged_by_hand_reaches_trakt(
    rig: Rig,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    app: TraktApp,
    logged_at: str,
    trakt_plays_after: int,
) -> None:
    """s1e1 watched on Plex (Trakt has its scrobble, 19:00), logged by hand in the Serializd
    app at 20:00, dated by the day alone; watched again that evening on a phone and logged
    again at 23:10, dated so too. Both logs are the day's midnight, within two minutes of each
    other: the second was taken for an old tool's duplicate and never reached Trakt. Logged
    within a minute of the first (a double tap, a tool posting twice) it still is one."""
    day = ago(3)[:10]
    app.watch(1, 1, f"{day}T19:00:00.000Z")
    log(serializd, 1, 1, day_only(day), date_added=f"{day}T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert len(trakt_plays(trakt)) == 1 and len(diary_plays(serializd)) == 1

    log(serializd, 1, 1, day_only(day), date_added=f"{day}{logged_at}")
    for full in (False, True, False):
        await rig.sync_and_deliver(full=full)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1)] * trakt_plays_after
    assert len(diary_plays(serializd)) == 2  # the user's logs, as they are
    assert rig.store.outbox_counts()["dead"] == 0


async def test_a_second_viewing_logged_by_hand_after_the_upgrade_reaches_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """As above, the first log read by the release before, which kept no `day_logged`
    cursor: the run after the upgrade read only the second log's dateAdded, took the first
    one's as unknown, and held the second viewing as an old tool's duplicate (until a daily
    full read). The first read by this release reads the whole diary once, to learn them."""
    day = ago(3)[:10]
    app.watch(1, 1, f"{day}T19:00:00.000Z")
    log(serializd, 1, 1, day_only(day), date_added=f"{day}T20:00:00.000Z")
    await rig.sync_and_deliver()
    name = f"link:{LINK}"
    cursors = json.loads(rig.store.get_cursor("serializd", PROFILE, name) or "{}")
    del cursors["day_logged"]  # as 0.1.0 left them
    rig.store.set_cursor("serializd", PROFILE, name, json.dumps(cursors), time.time())

    log(serializd, 1, 1, day_only(day), date_added=f"{day}T23:10:00.000Z")
    await rig.sync_and_deliver()
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1)] * 2
    await rig.sync_and_deliver()  # and a run that reads only the new entries after it
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1)] * 2
    assert len(diary_plays(serializd)) == 2


async def test_two_trakt_plays_at_one_time_are_a_viewing_and_a_rewatch_on_serializd(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    day = ago(3)
    app.watch(1, 1, day)
    app.watch(1, 1, day)
    await rig.sync_and_deliver()
    # Not ordered by time: the copy set minutes apart goes earlier near midnight (to keep its
    # day), and is still the rewatch (reconcile.apart_from).
    assert sorted(r.is_rewatch for r in serializd.diary() if r.is_log) == [False, True]


async def test_two_trakt_plays_at_one_time_stay_two_plays_on_both_sides(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    day = ago(3)
    app.watch(1, 1, day)
    app.watch(1, 1, day)
    for full in (False, True, False, True):
        await rig.sync_and_deliver(full=full)
    assert len(trakt_plays(trakt)) == 2
    assert len(diary_plays(serializd)) == 2


# --------------------------------------------------------------------------- conflict policies


async def test_the_newer_of_two_copies_of_a_rating_that_land_together_stays_the_rating(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    app.watch(1, 1, ago(30))
    app.rate(1, 1, 8, ago(1))
    await rig.sync()  # the 8 queued for Serializd, not delivered yet
    app.rate(1, 1, 6, ago(0.5))  # changed on Trakt: the next run queues the 6 behind it
    await rig.sync()
    serializd.advance(3600)  # both land an hour later, the 6 last
    await rig.deliver()
    for _ in range(2):
        await rig.sync_and_deliver()
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)


async def test_a_rating_changed_on_trakt_while_its_old_copy_waits_keeps_the_new_value(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    app.watch(1, 1, ago(30))
    app.rate(1, 1, 8, ago(30))
    await rig.sync()  # the 8 queued for Serializd, not delivered yet (Serializd was down)
    app.rate(1, 1, 6, ago(0))  # the user changes their mind on Trakt meanwhile
    serializd.advance(3600)  # the old copy lands an hour later
    await rig.deliver()
    for _ in range(2):
        await rig.sync_and_deliver()
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)


# ------------------------------------------------- a rating cleared while the link's copy waits


def unrate_on_trakt(app: TraktApp, season: int, number: int) -> None:
    app.post("/sync/ratings/remove", {"episodes": [app.episode(season, number)]})


def lift_the_waits(rig: Rig) -> None:
    """The outage is over and the retries' waits have run out."""
    rig.store._conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")


def both_sides(trakt: FakeTrakt, serializd: FakeSerializd) -> dict[str, Any]:
    """Everything this story may touch: S1E1 and S1E2's ratings on both sides, and the plays."""
    return {
        "ratings": [(trakt_rating(trakt, 1, n), diary_rating(serializd, 1, n)) for n in (1, 2)],
        "plays": (trakt_plays(trakt), diary_plays(serializd)),
    }


@pytest.mark.parametrize("change", ["cleared", "changed"])
async def test_a_rating_cleared_or_changed_on_trakt_while_its_copy_waits_out_an_outage_stays_so(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, change: str
) -> None:
    """S1E1 rated 8 on Trakt: the link queues its copy, and Serializd answers 503 to it. The
    user clears the rating on Trakt (or changes it to 6) before Serializd is back. The run
    meanwhile read neither side rated: left to land, the 8 would reach Serializd and the run
    after copy it back to Trakt, undoing the user's choice on both sides."""
    app.watch(1, 1, ago(30))
    app.rate(1, 2, 7, ago(30))
    await rig.sync_and_deliver()
    before = both_sides(trakt, serializd)
    app.rate(1, 1, 8, ago(1))
    await rig.sync()
    serializd.fail_next(2, 503, route="POST /api/show/reviews/add")  # a send and its retry
    await rig.deliver()
    assert rig.store.outbox_counts()["pending"] == 1
    posted = len(serializd.requests)
    if change == "cleared":
        unrate_on_trakt(app, 1, 1)
    else:
        app.rate(1, 1, 6, ago(0))
    await rig.sync()
    lift_the_waits(rig)
    await rig.deliver()
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    want = None if change == "cleared" else 6
    if change == "cleared":  # its send may have landed: looked for, not sent and then removed
        assert "/api/show/reviews/add" not in serializd_writes(serializd, posted)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (want, want)
    assert_only_s1e1_rated(rig, trakt, serializd, before, want)


async def test_a_rating_cleared_on_trakt_after_its_copy_landed_unanswered_is_removed_unsent(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The copy of the 8 landed on Serializd but its answer was lost (its retry waits); the
    user clears the 8 on Trakt. The removal the next run queues settles the retry unsent:
    it finds the landed row in the diary and deletes it (not added a second time first)."""
    app.watch(1, 1, ago(30))
    app.rate(1, 2, 7, ago(30))
    await rig.sync_and_deliver()
    app.rate(1, 1, 8, ago(1))
    await rig.sync()
    serializd.advance(3600)
    serializd.drop_next(1, route="POST /api/show/reviews/add", after_handler=True)
    await rig.deliver()  # landed, answer lost; its retry waits
    assert diary_rating(serializd, 1, 1) == 8
    posted = len(serializd.requests)
    unrate_on_trakt(app, 1, 1)
    await rig.sync()
    lift_the_waits(rig)
    await rig.deliver()
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert both_sides(trakt, serializd)["ratings"] == [(None, None), (7, 7)]
    assert serializd_writes(serializd, posted) == ["/api/show/reviews/delete"]
    assert rig.store.outbox_counts()["dead"] == 0


@pytest.mark.parametrize("change", ["cleared", "changed"])
async def test_a_rating_cleared_or_changed_on_serializd_while_its_copy_waits_out_an_outage_stays_so(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, change: str
) -> None:
    """The other way round: rated on Serializd, Trakt answers 503 to the copy, the user
    deletes the rating's diary row (or rates 6 anew) before Trakt is back."""
    log(serializd, 1, 1, ago(30))
    log(serializd, 1, 2, ago(30), rating=7, is_log=False)
    await rig.sync_and_deliver()
    before = both_sides(trakt, serializd)
    rated = log(serializd, 1, 1, ago(1), rating=8, is_log=False)
    await rig.sync()
    trakt.fail_next(2, 503, route="POST /sync/ratings")  # a send and its retry
    await rig.deliver()
    assert rig.store.outbox_counts()["pending"] == 1
    serializd.advance(60)
    posted = len(trakt.requests)
    if change == "cleared":
        serializd.delete_entry(rated)
    else:
        log(serializd, 1, 1, ago(0), rating=6, is_log=False)
    await rig.sync(full=True)  # a deleted diary row shows on a full read
    lift_the_waits(rig)
    await rig.deliver()
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    want = None if change == "cleared" else 6
    if change == "cleared":  # the copy was taken back unsent, not sent and then removed
        assert "/sync/ratings" not in trakt_writes(trakt, posted)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (want, want)
    assert_only_s1e1_rated(rig, trakt, serializd, before, want)


# ------------------------------------------------- a rating cleared twice within the week


async def test_a_rating_cleared_again_on_serializd_within_the_week_is_removed_on_trakt_again(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """S1E1 rated 8 on Serializd and copied to Trakt; the user deletes the rating (the link
    removes Trakt's), rates it 7 days later... within the week, and deletes that too. The
    second removal is its own: the first one's row, delivered and still kept, must not stand
    in for it, or Trakt keeps the 7 and a later run copies it back to Serializd."""
    watched_s1e1_rated_s1e2(serializd)
    for value in (8, 7):
        rated = log(serializd, 1, 1, ago(1), rating=value, is_log=False)
        await rig.sync_and_deliver()
        assert trakt_rating(trakt, 1, 1) == value
        serializd.advance(60)
        serializd.delete_entry(rated)
        await rig.sync_and_deliver(full=True)  # a deleted diary row shows on a full read
        assert trakt_rating(trakt, 1, 1) is None
        await rig.sync_and_deliver()  # a run finds neither side rated before the next rating
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert both_sides(trakt, serializd)["ratings"] == [(None, None), (6, 6)]
    assert rig.store.outbox_counts()["dead"] == 0


async def test_a_rating_cleared_again_on_trakt_within_the_week_is_removed_on_serializd_again(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The same story the other way: rated on Trakt, copied to Serializd, cleared on Trakt,
    rated again and cleared again; each removal takes its own copy off Serializd."""
    app.watch(1, 1, ago(30))
    app.rate(1, 2, 6, ago(30))  # one removal of two is no mass one
    for value in (8, 7):
        app.rate(1, 1, value, ago(1))
        await rig.sync_and_deliver()
        assert diary_rating(serializd, 1, 1) == value
        serializd.advance(60)
        unrate_on_trakt(app, 1, 1)
        await rig.sync_and_deliver()
        assert diary_rating(serializd, 1, 1) is None
        await rig.sync_and_deliver()  # a run finds neither side rated before the next rating
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert both_sides(trakt, serializd)["ratings"] == [(None, None), (6, 6)]
    assert rig.store.outbox_counts()["dead"] == 0


# ------------------------------------------------- a rating given again right after a clear


@pytest.mark.parametrize("full", [False, True])
async def test_a_rating_given_again_on_serializd_right_after_a_clear_reaches_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, full: bool
) -> None:
    """S1E1 rated 8 on Serializd, copied to Trakt; the user deletes the rating and the run
    removes Trakt's 8. Minutes later, before the next run, the user rates S1E1 7 on
    Serializd. Trakt's 8 is gone by our own removal, not the user's: the next run copies the
    7 to Trakt, it does not delete it from Serializd."""
    before = await rated_8_copied_then_cleared(rig, trakt, serializd, ago(1))
    serializd.advance(300)
    log(serializd, 1, 1, ago(0), rating=7, is_log=False)
    await rig.sync_and_deliver(full=full)
    for again in (False, True):
        await rig.sync_and_deliver(full=again)
    assert_only_s1e1_rated(rig, trakt, serializd, before, 7)


@pytest.mark.parametrize("full", [False, True])
async def test_a_rating_given_again_on_trakt_right_after_a_clear_reaches_serializd(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, full: bool
) -> None:
    """The other way round: rated 8 on Trakt, copied to Serializd, cleared on Trakt (the run
    removes Serializd's 8), rated 7 on Trakt minutes later, before the next run."""
    app.watch(1, 1, ago(30))
    app.rate(1, 2, 6, ago(30))  # one removal of two is no mass one
    app.rate(1, 1, 8, ago(1))
    await rig.sync_and_deliver()
    assert diary_rating(serializd, 1, 1) == 8
    before = both_sides(trakt, serializd)
    serializd.advance(60)
    unrate_on_trakt(app, 1, 1)
    await rig.sync_and_deliver()
    assert diary_rating(serializd, 1, 1) is None
    serializd.advance(300)
    app.rate(1, 1, 7, ago(0))
    await rig.sync_and_deliver(full=full)
    for again in (False, True):
        await rig.sync_and_deliver(full=again)
    assert_only_s1e1_rated(rig, trakt, serializd, before, 7)


async def test_a_rating_given_again_after_a_removal_that_waited_out_an_outage_reaches_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """As above, but Trakt answers 503 to the removal of its 8, and a run reads both sides
    while the removal waits (Trakt still shows the 8). The outage over, the removal lands;
    the user rates S1E1 7 on Serializd before the next run: it reaches Trakt."""
    watched_s1e1_rated_s1e2(serializd)
    rated = log(serializd, 1, 1, ago(1), rating=8, is_log=False)
    await rig.sync_and_deliver()
    before = both_sides(trakt, serializd)
    serializd.advance(60)
    serializd.delete_entry(rated)
    await rig.sync(full=True)
    trakt.fail_next(2, 503, route="POST /sync/ratings/remove")  # a send and its retry
    await rig.deliver()
    assert rig.store.outbox_counts()["pending"] == 1
    await rig.sync_and_deliver(full=True)  # Trakt still shows the 8: its removal waits
    assert trakt_rating(trakt, 1, 1) == 8
    lift_the_waits(rig)
    await rig.deliver()
    assert trakt_rating(trakt, 1, 1) is None
    serializd.advance(300)
    log(serializd, 1, 1, ago(0), rating=7, is_log=False)
    for full in (True, False, True):
        await rig.sync_and_deliver(full=full)
    assert_only_s1e1_rated(rig, trakt, serializd, before, 7)


async def test_a_rating_cleared_on_trakt_after_its_copy_landed_is_removed_on_serializd(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The mirror of the two above: S1E1 rated 8 on Serializd, the run copies it to the
    unrated Trakt; the user clears it on Trakt before the next run. That clear is the user's
    (the copy landed): the next run removes Serializd's 8, it does not copy it back."""
    watched_s1e1_rated_s1e2(serializd)
    await rig.sync_and_deliver()
    before = both_sides(trakt, serializd)
    log(serializd, 1, 1, ago(1), rating=8, is_log=False)
    await rig.sync_and_deliver()
    assert trakt_rating(trakt, 1, 1) == 8
    serializd.advance(300)
    unrate_on_trakt(app, 1, 1)
    for full in (False, True, False):
        await rig.sync_and_deliver(full=full)
    assert_only_s1e1_rated(rig, trakt, serializd, before, None)


async def test_a_read_that_still_shows_a_rating_the_link_just_removed_copies_nothing_back(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """S1E1 rated 8 on Serializd, copied to Trakt; cleared on Serializd, the run removes
    Trakt's 8. Trakt's reads lag its writes by seconds (trakt-api#773): a run reading Trakt
    right after the removal landed still finds the 8. That is our removal not shown yet, not
    a rating the user gave there: nothing goes back to Serializd, and once Trakt's reads
    catch up both sides stay unrated."""
    before = await rated_8_copied_then_cleared(rig, trakt, serializd, ago(1))
    app.rate(1, 1, 8, ago(1))  # what Trakt's lagging read shows
    await rig.sync_and_deliver(full=True)
    assert diary_rating(serializd, 1, 1) is None  # not even for a run
    unrate_on_trakt(app, 1, 1)  # its reads caught up
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert_only_s1e1_rated(rig, trakt, serializd, before, None)


async def test_a_copy_of_the_same_rating_again_waiting_out_an_outage_takes_nothing_from_its_source(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """S1E1 rated 8 on Serializd, copied to Trakt; cleared on Serializd, the run removes
    Trakt's 8. The user rates S1E1 8 again on Serializd: its copy to Trakt meets a Trakt
    outage and waits through the daily full read. Trakt's missing 8 is no removal of the
    user's (the copy delivered days ago is not this one): Serializd's 8 stays, and reaches
    Trakt once Trakt is back."""
    before = await rated_8_copied_then_cleared(rig, trakt, serializd, ago(2))
    serializd.advance(300)
    log(serializd, 1, 1, ago(1), rating=8, is_log=False)
    await rig.sync()
    trakt.fail_next(2, 503, route="POST /sync/ratings")  # a send and its retry
    await rig.deliver()
    assert rig.store.outbox_counts()["pending"] == 1
    await rig.sync_and_deliver(full=True)  # the copy still waits: Trakt shows no rating
    assert diary_rating(serializd, 1, 1) == 8
    lift_the_waits(rig)
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert both_sides(trakt, serializd) == before
    assert rig.store.outbox_counts()["dead"] == 0


async def test_a_rating_given_on_trakt_while_the_run_reads_serializd_is_not_overwritten(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    # S1E1 rated 8 on Trakt, copied to Serializd; the user then rates it 6 on Serializd. The
    # next run reads Trakt (8 there), plans to set Trakt to Serializd's 6, and while it reads
    # Serializd (paced: minutes on a big diary) the user rates S1E1 9 on Trakt. That 9 is the
    # user's latest word: the 6, planned from the older read, must not overwrite it.
    app.watch(1, 1, ago(30))
    app.rate(1, 1, 8, ago(30))
    await rig.sync_and_deliver()
    assert diary_rating(serializd, 1, 1) == 8
    serializd.log_entry(None, BB, 1, 1, rating=6, is_log=False)
    rated: list[str] = []

    def rate_on_trakt_while_serializd_is_read(answer: Any) -> None:
        rated.append(iso(time.time() + 180))  # three minutes into the read
        app.rate(1, 1, 9, rated[0])

    serializd.reshape_next(
        1, rate_on_trakt_while_serializd_is_read, "GET /api/user/{username}/diary"
    )
    result = await rig.sync()
    assert rated and result.queued == 1
    posted = len(trakt.requests)
    await rig.deliver()
    assert trakt_rating(trakt, 1, 1) == 9  # the user's rating stands
    assert trakt_writes(trakt, posted) == []  # not rated over

    # The next runs copy the 9 to Serializd, the newer one.
    for _ in range(2):
        await rig.sync_and_deliver()
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 9)


@pytest.mark.parametrize(
    ("prefer", "newer", "winner"),
    [
        ("trakt", "serializd", "trakt"),
        ("serializd", "trakt", "serializd"),
        ("newest-wins", "trakt", "trakt"),
        ("newest-wins", "serializd", "serializd"),
    ],
)
async def test_a_rating_that_differs_follows_the_conflict_policy(
    make_rig: RigFactory,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    app: TraktApp,
    prefer: str,
    newer: str,
    winner: str,
) -> None:
    old, new = "2024-01-01T20:00:00.000Z", "2024-06-01T20:00:00.000Z"
    app.watch(1, 1, old)
    app.rate(1, 1, 9, new if newer == "trakt" else old)
    log(serializd, 1, 1, old, rating=4, date_added=new if newer == "serializd" else old)
    rig = await make_rig(prefer=prefer)
    await rig.sync_and_deliver()
    expected = 9 if winner == "trakt" else 4
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (expected, expected)


# --------------------------------------------------------------------------- removals


async def four_plays_on_both_sides(
    rig: Rig, app: TraktApp, serializd: FakeSerializd, origin: str, days_ago: float = 3
) -> None:
    """Plays of s1e1-4 logged by the user on `origin`, copied by a run, read back by another."""
    for number in range(1, 5):
        at = ago(days_ago - number / 10)
        if origin == "trakt":
            app.watch(1, number, at)
        else:
            log(serializd, 1, number, at)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()


def entry(trakt: FakeTrakt, number: int) -> HistoryEntry:
    return next(h for h in trakt.history() if getattr(h.item, "number", None) == number)


def review(serializd: FakeSerializd, number: int) -> Review:
    return next(r for r in serializd.diary() if r.episode_number == number)


async def test_a_play_removed_on_trakt_this_week_is_removed_on_serializd_by_a_delta_run(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    app.unwatch(entry(trakt, 2))
    before = len(trakt.requests)
    await rig.sync_and_deliver()
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 3), (1, 4)]
    history_reads = [r for r in trakt.requests[before:] if r.path.startswith("/sync/history/")]
    assert history_reads and all("start_at" in r.query for r in history_reads)  # a delta


async def test_a_play_removed_on_serializd_is_removed_on_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    unlog(serializd, review(serializd, 3))
    await rig.sync_and_deliver(full=True)  # diary removals show in a full read (daily)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 4)]


async def test_a_play_logged_again_after_a_mistaken_removal_reaches_trakt_again(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    gone = review(serializd, 2)
    unlog(serializd, gone)  # deleted by mistake: the link removes it from Trakt
    await rig.sync_and_deliver(full=True)
    log(serializd, 1, 2, gone.backdate)  # logged again, with its date
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert (1, 2) in [p[:2] for p in trakt_plays(trakt)]
    assert (1, 2) in [p[:2] for p in diary_plays(serializd)]


def untick(serializd: FakeSerializd, number: int) -> None:
    with serializd.lock:
        serializd.user.ticks.pop((BB, serializd.shows[BB].seasons[1].id, number))


@pytest.mark.parametrize("runs_between", [0, 2])
async def test_an_episode_ticked_again_after_an_untick_reaches_trakt_again_each_time(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, runs_between: int
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    serializd.tick(None, BB, 1, 1, 2)  # s1e2 ticked only
    await rig.sync_and_deliver()
    for _ in range(2):
        untick(serializd, 2)  # carried to Trakt
        await rig.sync_and_deliver(full=True)
        assert trakt_episodes(trakt) == [(1, 1)]
        for _ in range(runs_between):
            await rig.sync_and_deliver(full=True)
        serializd.tick(None, BB, 1, 2)  # watched after all: ticked again
        await rig.sync_and_deliver(full=True)
        assert trakt_episodes(trakt) == [(1, 1), (1, 2)]


def ticked(serializd: FakeSerializd, number: int) -> bool:
    with serializd.lock:
        return (BB, serializd.shows[BB].seasons[1].id, number) in serializd.user.ticks


async def test_a_ticked_episodes_play_removed_again_on_trakt_within_the_week_is_unticked_again(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """s1e2 ticked only on Serializd (an undated play, its record the tick's own), copied to
    Trakt; its play removed on Trakt unticks it; ticked again, copied again, removed again
    within the week: the second untick is a removal of its own, not the first one's kept
    row (an undated removal of the same tick otherwise has the same key)."""
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    serializd.tick(None, BB, 1, 2)
    await rig.sync_and_deliver()
    for _ in range(2):
        assert trakt_episodes(trakt) == [(1, 1), (1, 2)]
        app.unwatch(entry(trakt, 2))
        await rig.sync_and_deliver(full=True)
        assert not ticked(serializd, 2)
        await rig.sync_and_deliver(full=True)
        serializd.tick(None, BB, 1, 2)  # watched after all: ticked again
        await rig.sync_and_deliver(full=True)
    assert rig.store.outbox_counts()["dead"] == 0


async def test_a_removal_carried_one_way_is_not_copied_back_while_on_its_way(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    for number in range(1, 5):
        app.watch(1, number, ago(3 - number / 10))
    await rig.sync_and_deliver()  # copied to Serializd
    app.unwatch(entry(trakt, 2))  # removed on Trakt
    await rig.sync(direction="trakt-to-serializd", full=True)  # its removal queued
    result = await rig.sync(full=True)  # the next run, before the removal is delivered
    assert not [a for p in result.plans for a in p.plan.actions if a.target == "trakt"]
    await rig.deliver()
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 3), (1, 4)]


@pytest.mark.parametrize("origin", ["serializd", "trakt"])
async def test_a_removal_left_alone_for_a_rewatch_logged_meanwhile_settles_on_both_sides(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, origin: str
) -> None:
    """Removed on Trakt; the run reads Serializd and queues the removal of its diary entry;
    the user logs a rewatch of the episode on Serializd before the removal goes out. The old
    entry stays (skipped), its tombstone keeps it from being copied back to Trakt, and the
    rewatch reaches Trakt once, over the next runs, delta and full."""
    await four_plays_on_both_sides(rig, app, serializd, origin=origin)
    old = review(serializd, 2)
    app.unwatch(entry(trakt, 2))
    await rig.sync()  # the removal of `old` queued
    rewatch = log(serializd, 1, 2, ago(0), is_rewatch=True)  # in the app, meanwhile
    await rig.deliver()
    assert old in serializd.diary() and rewatch in serializd.diary()
    for full in (False, True, False):
        await rig.sync_and_deliver(full=full)
        assert trakt_plays(trakt) == sorted(
            [p for p in diary_plays(serializd) if p != (1, 2, old.backdate[:10])]
        )
    result = await rig.sync_and_deliver(full=True)
    assert [a for p in result.plans for a in p.plan.actions] == []
    assert sorted(p[:2] for p in trakt_plays(trakt)) == [(1, 1), (1, 2), (1, 3), (1, 4)]
    assert sorted(p[:2] for p in diary_plays(serializd)) == [(1, 1), (1, 2), (1, 2), (1, 3), (1, 4)]


async def test_an_untick_left_alone_for_a_log_made_meanwhile_reaches_trakt_once(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """s1e2 ticked only on Serializd (copied to Trakt without a date), removed on Trakt; the
    user logs it on Serializd before the run's untick goes out: the tick stays, and the log
    reaches Trakt once; the undated play is not copied back."""
    log(serializd, 1, 1, ago(3))
    serializd.tick(None, BB, 1, 1, 2)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert trakt_episodes(trakt) == [(1, 1), (1, 2)]
    app.unwatch(entry(trakt, 2))
    await rig.sync(full=True)  # the untick of s1e2 queued
    log(serializd, 1, 2, ago(0))  # in the app, meanwhile
    await rig.deliver()
    assert (BB, serializd.shows[BB].seasons[1].id, 2) in serializd.user.ticks
    for full in (False, True, False, True):
        result = await rig.sync_and_deliver(full=full)
        assert trakt_plays(trakt) == [(1, 1, ago(3)[:10]), (1, 2, ago(0)[:10])]
    assert [a for p in result.plans for a in p.plan.actions] == []


@pytest.mark.parametrize("days_ago", [3, 30])  # 30: copied, not read back under its Trakt id
async def test_a_play_removed_on_trakt_then_logged_again_on_serializd_reaches_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, days_ago: float
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd", days_ago=days_ago)
    at = review(serializd, 2).backdate
    app.unwatch(entry(trakt, 2))  # removed on Trakt by mistake: taken off Serializd too
    await rig.sync_and_deliver(full=True)
    log(serializd, 1, 2, at)  # logged again on Serializd, with its date
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert (1, 2) in [p[:2] for p in trakt_plays(trakt)]
    assert (1, 2) in [p[:2] for p in diary_plays(serializd)]


def a_webhooks_finished_episode(
    rig: Rig,
    at: float,
    targets: tuple[str, ...] = ("trakt", "serializd"),
    tag: str = "",
    number: int = 1,
    event: bool = False,
) -> None:
    """What the webhook route queues for s1e`number` finished at `at` (webhooks.rows_for);
    with `event`, tied to the webhook's event, as the route stores them."""
    item = MediaRef("episode", show_ids=Ids(tmdb=str(BB)), season=1, number=number)
    payload = {"item": ref_to_dict(item), "at": at, "source": "generic", "progress": 96.0}
    payload |= {"live": True, "duration": 2900.0}
    rows = [
        NewOutboxRow(
            target,
            PROFILE,
            "play",
            payload,
            ordering_key(PROFILE, target, item.key(), "play"),
            f"{PROFILE}:{target}:play:{item.key()}:{at}:{tag}",
        )
        for target in targets
    ]
    if event:
        rig.store.record_event(
            source="generic", kind="play", payload={}, now=time.time(), rows=rows, profile=PROFILE
        )
    else:
        rig.store.enqueue(rows, time.time())


async def test_a_play_scrobbled_late_removed_on_trakt_then_logged_again_reaches_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    ended = (time.time() - 300) // 60 * 60  # Trakt was busy: scrobbled 5 minutes after
    log(serializd, 1, 2, iso(ended - 86400))
    a_webhooks_finished_episode(rig, ended)
    await rig.deliver()
    await rig.sync_and_deliver(full=True)
    app.unwatch(next(e for e in trakt.history() if e.item.number == 1))  # by mistake
    await rig.sync_and_deliver(full=True)
    log(serializd, 1, 1, iso(ended))  # logged again on Serializd, with its date
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert (1, 1) in [p[:2] for p in trakt_plays(trakt)]
    assert (1, 1) in [p[:2] for p in diary_plays(serializd)]


@pytest.mark.parametrize("rewatch_removed", [False, True])
async def test_removing_a_rewatch_leaves_the_first_play_known_to_be_on_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, rewatch_removed: bool
) -> None:
    first = (time.time() - 2 * 86400) // 60 * 60
    a_webhooks_finished_episode(rig, first)
    a_webhooks_finished_episode(rig, first + 8 * 60)  # a short episode watched twice
    await rig.deliver()
    await rig.sync_and_deliver(full=True)

    def s1e1() -> list[str]:
        return sorted(str(e.watched_at)[:16] for e in trakt.history() if e.item.number == 1)

    if rewatch_removed:
        app.unwatch(
            max((e for e in trakt.history() if e.item.number == 1), key=lambda e: str(e.watched_at))
        )
        await rig.sync_and_deliver(full=True)
    kept = s1e1()
    a_webhooks_finished_episode(rig, first, ("trakt",), "again")  # the first play sent again
    await rig.deliver()
    assert s1e1() == kept


async def test_a_run_that_dies_before_its_state_is_saved_is_carried_by_the_next_once(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    app.unwatch(entry(trakt, 2))
    rig.store.db.execute(  # the disk fails (or the process dies) at the run's last write
        "CREATE TEMP TRIGGER dies BEFORE INSERT ON main.mirror"
        " WHEN NEW.collection LIKE '%:tombstones' BEGIN SELECT RAISE(ABORT, 'died'); END"
    )
    with pytest.raises(Exception, match="died"):
        await rig.sync()
    # The rows go first (a webhook's record waits for a part of them, not for all), the state
    # last: the removal is queued, the baseline and tombstones are as they were, and the
    # next run plans it again from them (its idempotency key), never a second row.
    assert rig.store.outbox_counts()["pending"] == 1
    rig.store.db.execute("DROP TRIGGER dies")
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    removals = "SELECT COUNT(*) FROM outbox WHERE action = 'remove_play'"
    assert rig.store.db.execute(removals).fetchone()[0] == 1
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 3), (1, 4)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 3), (1, 4)]


async def test_an_entry_deleted_while_the_diary_is_read_takes_only_its_own_play_from_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    serializd.diary_page_size = 2  # four entries on two pages
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    # The newest entry goes while page 1 is already read: every row moves up one place, and
    # the first row of page 2 lands on page 1, never seen.
    serializd.deleted_before_page = (2, review(serializd, 4))
    with pytest.raises(SerializdUnavailable, match="the diary changed while it was read"):
        await rig.sync(full=True)
    await rig.sync_and_deliver(full=True)  # the next run
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3)]


DIARY_PAGE = "GET /api/user/{username}/diary"


@pytest.mark.parametrize("order", ["newest", "jittered"])
async def test_a_play_logged_while_the_diary_is_read_holds_up_no_run(
    rig: Rig,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    app: TraktApp,
    order: Literal["newest", "jittered"],
) -> None:
    """A busy household: a play lands in the diary (the user's app, or our own delivery of
    a webhook) while the daily read pages through it. The read goes on: an entry added at
    the top pushes the rows after it onto pages still to be read ("newest"); in pages not
    reliably in order (§5.1, "jittered") a row may move onto a page already read, and its
    miss proves nothing (the next run reads the diary again). The run copies what it read
    (Trakt's new play reaches Serializd, nothing is taken from Trakt), and the next run
    brings the new entry. Failing such a read would let every play logged during a full
    read hold the whole link up, and a busy evening set off its 'keeps failing' alert."""
    serializd.diary_page_size = 2  # four entries on two pages
    serializd.diary_order = order
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    app.watch(1, 5, ago(1))
    e6 = log(serializd, 1, 6, ago(0.5))
    with serializd.lock:
        serializd.user.reviews.remove(e6)
    serializd.logged_before_page = (2, e6)
    await rig.sync_and_deliver(full=True)
    assert serializd.logged_before_page is None  # it happened, during the read
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 7)]
    # e6 too if the read happened to list it; every other play is there, and none twice
    assert [p[:2] for p in trakt_plays(trakt)][:5] == [(1, n) for n in range(1, 6)]
    await rig.sync_and_deliver()
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, n) for n in range(1, 7)]
    assert rig.store.outbox_counts()["dead"] == 0


async def test_an_entry_a_growing_diary_read_misses_keeps_its_play_on_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The diary grows under the daily read, but not only: e4 (page 1, listed) is deleted
    and e5 and e6 are logged (older `dateAdded`: the pages are not reliably newest first,
    §5.1, so they land on page 2), and e2 moves up onto page 1, never seen. A read that saw
    the count move cannot tell it listed every row: e2's miss proves nothing, its play stays
    on Trakt and the next run reads the whole diary again (listing e2); e4 goes with the
    next daily read, which sees no change."""
    serializd.diary_page_size = 2
    serializd.diary_order = "newest"  # e4 e3 | e2 e1; page 2 then answers e1 e5 (e2 moved up)
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    logged = [
        log(serializd, 1, n, ago(1), date_added=iso(serializd.now() - DAY - n)) for n in (5, 6)
    ]
    with serializd.lock:
        for review_ in logged:
            serializd.user.reviews.remove(review_)
    serializd.deleted_before_page = (2, review(serializd, 4))
    serializd.logged_before_page = (2, logged)
    await rig.sync_and_deliver(full=True)
    assert serializd.logged_before_page is None  # it happened, during the read
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, n) for n in range(1, 7)]
    before = serializd.count(*DIARY_PAGE.split(" "))
    await rig.sync_and_deliver()
    assert serializd.count(*DIARY_PAGE.split(" ")) - before == 3  # the whole diary again
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, n) for n in range(1, 7)]
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3), (1, 5), (1, 6)]


async def test_a_link_s_first_read_of_a_diary_growing_under_it_logs_no_play_twice(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """A new link between histories both sides hold: the first run's read of the whole diary
    sees it grow (the user deletes e4 and logs two plays with older dates, §5.1), and e2 moves
    up onto the page already read. Nothing is known of the diary yet, so no miss can be told
    from a play Serializd lacks: taken, that read would have Trakt's e2 logged on Serializd a
    second time. It fails as before the growing reads were taken, and the next run reads it
    again: every play once on each side."""
    serializd.diary_page_size = 2
    serializd.diary_order = "newest"
    for number in range(1, 5):
        at = ago(3 - number / 10)
        app.watch(1, number, at)
        log(serializd, 1, number, at)
    logged = [
        log(serializd, 1, n, ago(1), date_added=iso(serializd.now() - DAY - n)) for n in (5, 6)
    ]
    with serializd.lock:
        for review_ in logged:
            serializd.user.reviews.remove(review_)
    serializd.deleted_before_page = (2, review(serializd, 4))  # e4 e3 | (e2 moves up) e1 e5
    serializd.logged_before_page = (2, logged)
    with contextlib.suppress(SerializdUnavailable):  # (the run fails: read again)
        await rig.sync_and_deliver()
    assert serializd.logged_before_page is None  # it happened, during the read
    await rig.sync_and_deliver()
    # (e4, deleted before the link ever ran, is Trakt's play like any other to a first run)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 7)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, n) for n in range(1, 7)]
    assert rig.store.outbox_counts()["dead"] == 0


async def test_an_entry_two_growing_diary_reads_miss_keeps_its_play_until_a_quiet_read(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Two busy evenings: each read of the whole diary sees it grow (an entry deleted, two
    logged with older dates, §5.1) and misses e2, which the user never deleted, as the rows
    move up. A read that saw the count move proves nothing, the second no more than the
    first: e2's play stays on Trakt, and the run after reads the whole diary again. The first
    read that sees no change lists e2 (its miss forgotten); e4, deleted by the user, goes
    with the daily read that sees it missing, and the quiet read after it."""
    serializd.diary_page_size = 2
    serializd.diary_order = "newest"
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")

    def busy_while_read(deleted: Review, season: int, days: float) -> None:
        """The user deletes `deleted` and logs two plays as page 2 is about to be read."""
        logged = [
            log(serializd, season, n, ago(1), date_added=iso(serializd.now() - days * DAY - n))
            for n in (5, 6)
        ]
        with serializd.lock:
            for review_ in logged:
                serializd.user.reviews.remove(review_)
        serializd.deleted_before_page = (2, deleted)
        serializd.logged_before_page = (2, logged)

    busy_while_read(review(serializd, 4), 1, 1)  # e4 e3 | (e2 moves up) e1 e5 | e6
    await rig.sync_and_deliver(full=True)
    assert serializd.logged_before_page is None  # it happened, during the read
    e7 = log(serializd, 1, 7, ago(0.1))  # on top: e7 e3 | e2 e1 | ...
    busy_while_read(e7, 2, 2)  # e7 e3 | (e2 moves up again) e1 e5 | ...
    await rig.sync_and_deliver()  # the whole diary again, growing again
    assert serializd.logged_before_page is None
    assert (1, 2) in [p[:2] for p in trakt_plays(trakt)]
    before = serializd.count(*DIARY_PAGE.split(" "))
    await rig.sync_and_deliver()  # the whole diary again, quiet: e2 is listed
    assert serializd.count(*DIARY_PAGE.split(" ")) - before == 4  # seven entries
    assert (1, 2) in [p[:2] for p in trakt_plays(trakt)]
    before = serializd.count(*DIARY_PAGE.split(" "))
    await rig.sync_and_deliver()
    assert serializd.count(*DIARY_PAGE.split(" ")) - before == 1  # nothing missed is left
    await rig.sync_and_deliver(full=True)
    await rig.sync_and_deliver()
    assert [p[:2] for p in trakt_plays(trakt) if p[0] == 1] == [
        (1, 1),
        (1, 2),
        (1, 3),
        (1, 5),
        (1, 6),
    ]
    assert rig.store.outbox_counts()["dead"] == 0


async def test_an_entry_a_shifting_diary_read_misses_keeps_its_play_and_rating_on_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """As above, but Serializd answers no count (`totalReviews` null, §5.1), so the daily full
    read cannot see the diary change under it: e4 is deleted after page 1 listed it, and e2,
    moved up onto page 1, is never seen. One read missing an entry proves nothing: e2's play
    and its stars stay on Trakt. The next run reads the whole diary again (only because one
    was missed) and lists e2: nothing goes; the run after reads no more than before (the
    first page). e4 is missed by the next daily read, and goes with the next run's read."""
    serializd.diary_page_size = 2  # four entries on two pages
    for number in range(1, 5):
        log(serializd, 1, number, ago(3 - number / 10), rating=8)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert trakt_rating(trakt, 1, 2) == 8
    serializd.diary_total_reviews = "null"
    serializd.deleted_before_page = (2, review(serializd, 4))

    async def run(full: bool = False, pages: int | None = None) -> list[Any]:
        before = serializd.count(*DIARY_PAGE.split(" "))
        result = await rig.sync_and_deliver(full=full)
        if pages is not None:
            assert serializd.count(*DIARY_PAGE.split(" ")) - before == pages
        return [a for p in result.plans for a in p.plan.actions]

    await run(full=True)
    assert serializd.deleted_before_page is None  # it happened, during the read
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3), (1, 4)]
    assert trakt_rating(trakt, 1, 2) == 8
    assert await run(pages=2) == []  # the whole diary again: e2 is listed
    assert await run(pages=1) == []
    await run(full=True)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3), (1, 4)]
    await run(pages=2)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3)]
    assert trakt_rating(trakt, 1, 2) == 8 and trakt_rating(trakt, 1, 4) is None


async def test_a_log_a_shifting_read_misses_keeps_its_stars_over_an_older_rating_of_the_item(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """e2 was rated 6 without a log (a rating-only row, a week ago), then logged with 8
    stars: Serializd shows 8, and so does Trakt. Serializd answers no count; the daily read
    misses e2's log as e4 is deleted under it, and lists the older row's 6. The log is only
    missed once (kept): its newer stars stay the item's rating, not the older row's 6, which
    Trakt got until the next daily read listed the log again."""
    serializd.diary_page_size = 2
    serializd.diary_order = "newest"  # pages: e4 e3 | e2 e1 | the 6
    log(serializd, 1, 2, ago(7), rating=6, is_log=False, date_added=ago(7))
    for number in range(1, 5):
        log(serializd, 1, number, ago(3 - number / 10), rating=8 if number == 2 else 0)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert trakt_rating(trakt, 1, 2) == 8
    serializd.diary_total_reviews = "null"
    serializd.deleted_before_page = (2, review(serializd, 4))
    await rig.sync_and_deliver(full=True)
    assert serializd.deleted_before_page is None  # it happened, during the read
    assert diary_rating(serializd, 1, 2) == 8
    assert trakt_rating(trakt, 1, 2) == 8
    await rig.sync_and_deliver()  # the whole diary again: e2's log is listed
    assert trakt_rating(trakt, 1, 2) == 8
    assert (1, 2) in [p[:2] for p in trakt_plays(trakt)]


async def test_an_entry_deleted_and_another_logged_while_the_diary_is_read_keep_the_count(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Serializd answers its count, but the user deletes e4 (page 1, already listed) and logs
    e5 while the daily read goes on: the count holds, and e5 lands on page 2 (the pages are
    not reliably newest first, §5.1; here by an older `dateAdded`), so e2 moves up onto page
    1 and is never seen. The read lists as many rows as counted, yet missed an entry that
    stands: a listed entry new since the last run says the diary changed meanwhile, so e2's
    play stays on Trakt and the next run reads the whole diary again. e4, listed by that
    read, goes with the next daily read (nothing new then: the count is proof enough)."""
    serializd.diary_page_size = 2  # four entries on two pages
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    e5 = log(serializd, 1, 5, ago(1), date_added=iso(serializd.now() - DAY))
    with serializd.lock:
        serializd.user.reviews.remove(e5)
    serializd.deleted_before_page = (2, review(serializd, 4))
    serializd.logged_before_page = (2, e5)
    await rig.sync_and_deliver(full=True)
    assert serializd.logged_before_page is None  # it happened, during the read
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
    before = serializd.count(*DIARY_PAGE.split(" "))
    await rig.sync_and_deliver()
    assert serializd.count(*DIARY_PAGE.split(" ")) - before == 2  # the whole diary again
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3), (1, 5)]


async def test_a_play_logged_by_hand_off_the_first_diary_page_is_not_logged_again_from_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Four plays synced; then s1e5 is watched (Trakt has it) and logged by hand on
    Serializd, its entry off the diary's first page (the pages are not reliably newest
    first, §5.1; here by an older `dateAdded`). The run's delta read stops at the first page
    holding nothing new, which proves no entry missing: before Trakt's play is copied there,
    the whole diary is read, and the log found. One entry of s1e5 on Serializd, one play on
    Trakt, also after the daily read."""
    serializd.diary_page_size = 2
    serializd.diary_order = "newest"  # e4 e3 | e2 e1 | the log of e5
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    at = ago(1)
    app.watch(1, 5, at)
    log(serializd, 1, 5, at, date_added=iso(serializd.now() - 2 * DAY))
    await rig.sync_and_deliver()
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 6)]
    await rig.sync_and_deliver(full=True)
    await rig.sync_and_deliver()
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 6)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, n) for n in range(1, 6)]
    assert rig.store.outbox_counts()["dead"] == 0


@pytest.mark.parametrize("count", ["count", "null"])
async def test_a_play_logged_by_hand_while_a_growing_daily_read_misses_it_is_not_logged_again(
    rig: Rig,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    app: TraktApp,
    count: Literal["count", "null"],
) -> None:
    """s1e5 is watched (Trakt has it) and logged by hand on Serializd while the daily read
    is between its pages: the log lands on top, pushing e3 onto page 2, and is never seen.
    That read saw the count grow, or (a diary answering no count, §5.1) cannot see it grow:
    either way it cannot tell it listed every row, and before Trakt's play is copied, the
    whole diary is read again, and the log found. One entry, one play."""
    serializd.diary_total_reviews = count
    serializd.diary_page_size = 2
    serializd.diary_order = "newest"  # e4 e3 | e2 e1; then e5 e4 | e3 e2 | e1
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    at = ago(0.1)
    app.watch(1, 5, at)
    e5 = log(serializd, 1, 5, at)
    with serializd.lock:
        serializd.user.reviews.remove(e5)
    serializd.logged_before_page = (2, e5)
    await rig.sync_and_deliver(full=True)
    assert serializd.logged_before_page is None  # it happened, during the read
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 6)]
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 6)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, n) for n in range(1, 6)]


async def test_a_play_logged_by_hand_while_the_daily_read_keeps_its_count_is_not_logged_again(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """s1e5 is watched (Trakt has it) and logged by hand on Serializd while the daily read
    is between its pages, and e1 is deleted meanwhile (the user's tidying, or a link's
    removal): the count holds, the log lands on top, on the page already read, and is never
    seen. The read lists one row fewer than the pages count: it cannot tell it saw every
    entry, and before Trakt's play is copied the whole diary is read again, and the log
    found. One entry of s1e5, one play."""
    serializd.diary_page_size = 2
    serializd.diary_order = "newest"  # e4 e3 | e2 e1; then e5 e4 | e3 e2
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    at = ago(0.1)
    app.watch(1, 5, at)
    e5 = log(serializd, 1, 5, at)
    with serializd.lock:
        serializd.user.reviews.remove(e5)
    serializd.deleted_before_page = (2, review(serializd, 1))
    serializd.logged_before_page = (2, e5)
    await rig.sync_and_deliver(full=True)
    assert serializd.logged_before_page is None  # it happened, during the read
    assert [p[:2] for p in diary_plays(serializd)].count((1, 5)) == 1
    await rig.sync_and_deliver(full=True)
    await rig.sync_and_deliver()
    assert [p[:2] for p in diary_plays(serializd)].count((1, 5)) == 1
    assert [p[:2] for p in trakt_plays(trakt)].count((1, 5)) == 1
    assert rig.store.outbox_counts()["dead"] == 0


async def test_a_play_logged_by_hand_while_the_confirming_whole_read_misses_it_is_not_logged_again(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """s1e5 is watched (Trakt has it); a delta run reads the newest page and, before copying
    Trakt's play, the whole diary. The user logs s1e5 by hand while that read is between
    its pages: the log lands on top, pushing e3 onto page 2, and that read misses it too.
    It saw the count grow: the run copies nothing to Serializd, and the next run's read
    finds the log. One entry, one play."""
    serializd.diary_page_size = 2
    serializd.diary_order = "newest"  # e4 e3 | e2 e1; then e5 e4 | e3 e2 | e1
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    at = ago(0.1)
    app.watch(1, 5, at)
    e5 = log(serializd, 1, 5, at)
    with serializd.lock:
        serializd.user.reviews.remove(e5)
    serializd.logged_before_page = (2, e5)  # the delta read stops at page 1: the whole one
    since = len(serializd.requests)
    await rig.sync_and_deliver()
    assert serializd.logged_before_page is None  # it happened, during the whole read
    assert diary_pages_read(serializd, since) == 1 + 3  # the newest page; the whole diary
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 6)]
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 6)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, n) for n in range(1, 6)]


def a_minute_on(serializd: FakeSerializd) -> str:
    """Serializd's stamp of a log made a minute after the run that just ended read it (the
    fake's clock is not moved: its Date header, whence the skew, stays as it is)."""
    return iso(serializd.now() + 60)


def day_only(at: str) -> str:
    """A watch date by the day alone, as a log made in the app may carry."""
    return f"{at[:10]}T00:00:00.000Z"


@pytest.mark.parametrize("dated", ["as watched", "by the day", "when logged"])
async def test_a_play_logged_by_hand_after_the_link_read_is_not_logged_again_by_its_copy(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, dated: str
) -> None:
    """s1e5 is watched (Trakt has it); the link's run reads Serializd and queues the copy.
    Before the worker sends it, the user logs s1e5 by hand in the Serializd app (dated as
    watched, by the day alone, or not at all: when logged). The copy looks at the diary's
    newest entries first, finds that log (dated as the link pairs plays) and is done without
    a write. One entry of s1e5, one Trakt play, now and after the next runs."""
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    at = ago(0.1)
    app.watch(1, 5, at)
    await rig.sync()
    assert rig.store.outbox_counts()["pending"] == 1  # the copy to Serializd
    backdate = {"as watched": at, "by the day": day_only(at), "when logged": None}[dated]
    serializd.log_entry(None, BB, 1, 5, backdate=backdate, date_added=a_minute_on(serializd))
    await rig.deliver()
    assert [p[:2] for p in diary_plays(serializd)].count((1, 5)) == 1
    query = "SELECT status, last_error FROM outbox WHERE target = 'serializd' ORDER BY id DESC"
    status, reason = rig.store._conn.execute(query).fetchone()
    assert status == "done"
    assert "found logged by hand" in reason and "logged in the Serializd app" in reason
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 6)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, n) for n in range(1, 6)]
    assert rig.store.outbox_counts()["dead"] == 0


async def test_a_log_found_made_by_hand_is_forgotten_once_its_copys_row_is_pruned(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The note that a log made by hand stands for a copy (HAND_LOGS) is kept while the copy's
    row is, and goes with it: housekeeping's pruning of old rows left one per copy for ever."""
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    at = ago(0.1)
    app.watch(1, 5, at)
    await rig.sync()
    log(serializd, 1, 5, at, date_added=a_minute_on(serializd))
    await rig.deliver()
    assert len(rig.store.mirror_get("serializd", PROFILE, HAND_LOGS)) == 1
    rig.store.prune(time.time(), keep_done=86400.0, keep_sessions=0.0)  # the row stays
    assert len(rig.store.mirror_get("serializd", PROFILE, HAND_LOGS)) == 1
    query = "SELECT COUNT(*) FROM outbox WHERE last_error LIKE '%found logged by hand%'"
    await rig.sync()  # the link's next run reads the log: no play of it is expected any more
    rig.store.prune(time.time() + 1, keep_done=0.0, keep_sessions=0.0)
    assert rig.store._conn.execute(query).fetchone()[0] == 0
    assert rig.store.mirror_get("serializd", PROFILE, HAND_LOGS) == {}


async def test_a_log_made_by_hand_after_the_link_read_stands_for_one_copy_only(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """s1e5 watched twice on one evening (Trakt has both), both copies queued; the user logs
    one viewing by hand before they go. That log is one viewing: the other is still copied."""
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    first, second = ago(0.2), ago(0.1)
    app.watch(1, 5, first)
    app.watch(1, 5, second)
    await rig.sync()
    assert rig.store.outbox_counts()["pending"] == 2
    log(serializd, 1, 5, second, date_added=a_minute_on(serializd))
    await rig.deliver()
    assert [p[:2] for p in diary_plays(serializd)].count((1, 5)) == 2
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)].count((1, 5)) == 2
    assert [p[:2] for p in trakt_plays(trakt)].count((1, 5)) == 2


async def test_a_copy_of_a_rewatch_is_not_taken_as_logged_by_hand_by_the_other_copy_s_entry(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """s1e5 watched twice one evening (Trakt has both), both copies queued. Serializd's add
    answers no review id, so the ledger cannot name the first copy's entry; the second copy's
    send fails (503, it may have landed) and its retry reads the diary. The first copy's
    entry (tagged #watchbridge, added since the link read) is ours, not a log made by hand:
    the rewatch is still logged, two entries, two Trakt plays."""
    serializd.reviews_add_answer = "message"
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    first, second = ago(0.2), ago(0.1)
    app.watch(1, 5, first)
    app.watch(1, 5, second)
    await rig.sync()
    assert rig.store.outbox_counts()["pending"] == 2

    def the_rewatch(req: Any) -> bool:
        return str(req.json().get("backdate", ""))[:16] == second[:16]

    # The copies wait behind others a minute: the link read Serializd a minute before.
    rig.store._conn.execute(
        "UPDATE outbox SET payload = json_set(payload, '$.read_at', "
        "json_extract(payload, '$.read_at') - 60) WHERE status = 'pending'"
    )
    route = "POST /api/show/reviews/add"
    serializd.fail_next(2, 503, route=route, when=the_rewatch)  # a send and its retry
    await rig.deliver()
    assert [p[:2] for p in diary_plays(serializd)].count((1, 5)) == 1
    lift_the_waits(rig)
    await rig.deliver()
    assert [p[:2] for p in diary_plays(serializd)].count((1, 5)) == 2
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)].count((1, 5)) == 2
    assert [p[:2] for p in trakt_plays(trakt)].count((1, 5)) == 2


async def test_a_batch_of_link_copies_costs_one_look_at_the_diary(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Three plays copied to Serializd, nothing logged there meanwhile: the copies share one
    look at the diary's newest page before they go, not one each."""
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    for number in range(5, 8):
        app.watch(1, number, ago(0.5 - number / 100))
    await rig.sync()
    assert rig.store.outbox_counts()["pending"] == 3
    since = len(serializd.requests)
    await rig.deliver()
    assert diary_pages_read(serializd, since) == 1
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 8)]


@pytest.mark.parametrize("full", [False, True])
async def test_a_webhook_play_waiting_to_go_to_serializd_costs_no_read_of_the_whole_diary(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, full: bool
) -> None:
    """s1e5 is watched: Trakt has it (scrobbled there on its own), and the webhook's row to
    Serializd waits (an outage, a rate limit). The link's run sees a Trakt play Serializd's
    side lacks, but our own row is logging it: it reads the newest diary pages only (or, a
    daily read on a diary answering no count, the diary once), and queues no copy. Once the
    row is delivered, s1e5 is in the diary once."""
    serializd.diary_total_reviews = "null"  # a daily read too cannot tell it listed all
    serializd.diary_page_size = 2
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    ended = (time.time() - 600) // 60 * 60
    app.watch(1, 5, iso(ended))
    a_webhooks_finished_episode(rig, ended, ("serializd",), number=5, event=True)
    since = len(serializd.requests)
    await rig.sync(full=full)
    whole = -(-len(serializd.diary()) // 2)
    # The newest page, holding nothing new; or the whole diary, once.
    assert diary_pages_read(serializd, since) == (whole if full else 1)
    assert rig.store.outbox_counts()["pending"] == 1  # the webhook's row alone
    await rig.deliver()
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 6)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, n) for n in range(1, 6)]


def diary_pages_read(serializd: FakeSerializd, since: int) -> int:
    """How many diary pages Serializd answered since its request number `since`."""
    return sum(1 for r in serializd.requests[since:] if r.route == "/api/user/{username}/diary")


@pytest.mark.parametrize("count", ["count", "null"])
async def test_a_play_kept_off_for_good_costs_no_read_of_the_whole_diary_each_run(
    giving_up_at_once: Rig,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    app: TraktApp,
    count: Literal["count", "null"],
) -> None:
    """Serializd refuses s1e5 for good; the user keeps Trakt's play of it off Serializd
    (`deadletters discard --for-good`). It stays a Trakt play Serializd's side does not
    explain, but the whole diary is read for it once: the runs after (a new log on Serializd
    each, for them to read something) read the newest pages only, and a daily read the
    diary once. A diary answering no count (§5.1) never shows a read complete: the run after
    the daily read that dropped the given-up copy's expected play reads it again, that once."""
    rig = giving_up_at_once
    serializd.diary_total_reviews = count
    serializd.diary_page_size = 2
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    serializd.episodes_refused.add(5)
    app.watch(1, 5, ago(1))
    await rig.sync_and_deliver()  # the whole diary read for s1e5, copied, refused
    (dead,) = rig.store.dead_letters()
    kept = kept_off_of(dead, time.time())
    assert kept is not None and rig.store.keep_off([kept]) == 1
    again = []
    for number, full in enumerate((False, True, False, False, True, False, False), start=1):
        log(serializd, 2, number, ago(0.5 - number / 100))
        since = len(serializd.requests)
        await rig.sync_and_deliver(full=full)
        whole = -(-len(serializd.diary()) // 2)
        # The newest page and the one after it, holding nothing new; or the whole diary.
        pages = diary_pages_read(serializd, since) - (whole if full else 2)
        if pages:
            again.append(pages // whole)
    assert again == ([] if count == "count" else [1])
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 5)] + [
        (2, n) for n in range(1, 8)
    ]
    assert rig.store.outbox_counts()["dead"] == 0


async def test_plays_kept_off_beyond_the_cap_cost_no_read_and_an_older_one_logged_by_hand_one(
    giving_up_at_once: Rig,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    app: TraktApp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Serializd refuses s1e5-7 for good and the user keeps Trakt's plays of them off it:
    found missing by a whole read, they stay so. The memory of them is capped (here at one
    play named, the newest): it does not grow with them, and the runs after read the newest
    pages only (a daily read, the diary once). Then an older play comes to Trakt (s2e12,
    backdated), also logged by hand on Serializd off the diary's first page: older than the
    play named, it is read for all the same (one whole read), the log found, and the episode
    logged once; the runs after read the newest pages only again."""
    monkeypatch.setattr(serializd_reader, "UNLOGGED_NAMED", 1, raising=False)
    rig = giving_up_at_once
    serializd.diary_page_size = 2
    serializd.diary_order = "newest"
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    serializd.episodes_refused |= {5, 6, 7}
    for number in (5, 6, 7):
        app.watch(1, number, ago(1 - number / 100))
    await rig.sync_and_deliver()  # the whole diary read for them, copied, refused
    kept = [kept_off_of(dead, time.time()) for dead in rig.store.dead_letters()]
    assert rig.store.keep_off([k for k in kept if k is not None]) == 3
    logged = 0

    async def whole_reads(*runs: bool) -> list[int]:
        """How many times each run (full or not) read the whole diary beyond its own read
        (the newest page and the next, or the whole diary): a new log on Serializd each."""
        nonlocal logged
        again = []
        for full in runs:
            logged += 1
            log(serializd, 2, logged, ago(0.5 - logged / 100))
            since = len(serializd.requests)
            await rig.sync_and_deliver(full=full)
            whole = -(-len(serializd.diary()) // 2)
            again.append((diary_pages_read(serializd, since) - (whole if full else 2)) // whole)
        return again

    assert await whole_reads(False, True, False) == [0, 0, 0]
    (named,) = json.loads(load_cursors(rig.store, LINK, "serializd", PROFILE)[UNLOGGED])
    assert named.startswith(f"episode:tmdb:{BB}:s1e7@")
    app.watch(2, 12, ago(5))
    log(serializd, 2, 12, ago(5), date_added=iso(serializd.now() - 4 * DAY))
    assert await whole_reads(False, False, True, False) == [1, 0, 0, 0]
    assert [p[:2] for p in diary_plays(serializd)] == [(1, n) for n in range(1, 5)] + [
        (2, n) for n in [*range(1, logged + 1), 12]
    ]
    assert [p[:2] for p in trakt_plays(trakt)].count((2, 12)) == 1
    assert rig.store.outbox_counts()["dead"] == 0


@pytest.mark.parametrize("full", [True, False])
async def test_a_dry_run_leaves_the_deliverys_first_misses_as_they_were(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, full: bool
) -> None:
    """A whole read by the delivery missed our entry of e3 once (the diary shifting under
    it). A dry run's read of the diary lists it, its daily read or its cheap check alike: it
    writes nothing, so the miss stays; the run after forgets it, the entry being there."""
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    ours = str(review(serializd, 3).id)
    rig.store.mirror_put("serializd", PROFILE, FIRST_MISSES, {ours: time.time()}, time.time())
    await rig.sync(dry_run=True, full=full)
    assert set(rig.store.mirror_get("serializd", PROFILE, FIRST_MISSES)) == {ours}
    await rig.sync(full=full)
    assert rig.store.mirror_get("serializd", PROFILE, FIRST_MISSES) == {}


async def test_a_rating_deleted_on_serializd_that_answers_no_count_leaves_trakt_a_run_later(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Stars given to e1-e3 on Serializd without a log (rating-only diary rows); the user
    deletes e3's, and Serializd answers no count: the daily read missing it proves nothing
    yet, so the rating stays on Trakt; the next run's whole read misses it too, and it goes."""
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    rated = [log(serializd, 1, number, ago(1), rating=8, is_log=False) for number in (1, 2, 3)]
    await rig.sync_and_deliver()
    assert trakt_rating(trakt, 1, 3) == 8
    serializd.diary_total_reviews = "null"
    with serializd.lock:
        serializd.user.reviews.remove(rated[2])
    await rig.sync_and_deliver(full=True)
    assert trakt_rating(trakt, 1, 3) == 8
    await rig.sync_and_deliver()
    assert trakt_rating(trakt, 1, 3) is None and trakt_rating(trakt, 1, 2) == 8
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3), (1, 4)]


async def test_a_diary_row_that_cannot_be_read_does_not_stop_the_full_reads(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    odd = serializd.log_entry(None, BB, 1, 6)  # counted by Serializd, unreadable to us
    with serializd.lock:
        odd.date_added, odd.backdate = "not a date", None
    # (known to the runs before: a row new since the last run, listed by the full read, says
    # the diary may have changed under it, and a miss then waits for the next run's read)
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    unlog(serializd, review(serializd, 3))
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 4)]


async def test_a_diary_entry_naming_a_season_its_show_no_longer_lists_keeps_its_trakt_play(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    serializd.rows_without_their_season.add(review(serializd, 3).id)
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 3), (1, 4)]


async def test_the_rating_of_a_diary_entry_naming_a_season_no_longer_listed_stays_on_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    for number in range(1, 5):
        log(serializd, 1, number, ago(3 - number / 10), rating=8)  # stars given when logging
    await rig.sync_and_deliver()
    serializd.rows_without_their_season.add(review(serializd, 3).id)
    await rig.sync_and_deliver(full=True)
    assert trakt_rating(trakt, 1, 3) == 8


async def test_a_play_removed_on_trakt_is_removed_from_serializd_where_we_wrote_it(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    app.unwatch(entry(trakt, 2))
    await rig.sync_and_deliver()
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 3), (1, 4)]


async def test_a_play_we_wrote_to_serializd_and_the_user_deleted_there_is_removed_on_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    unlog(serializd, review(serializd, 3))
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 4)]


async def test_a_play_removed_on_serializd_is_not_copied_back_later(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    unlog(serializd, review(serializd, 3))
    await rig.sync_and_deliver(full=True)
    result = await rig.sync_and_deliver(full=True)
    assert [a for p in result.plans for a in p.plan.actions] == []
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 2), (1, 4)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 4)]


async def test_a_play_removed_on_trakt_is_not_copied_back_later(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    app.unwatch(entry(trakt, 2))
    await rig.sync_and_deliver()
    result = await rig.sync_and_deliver(full=True)
    assert [a for p in result.plans for a in p.plan.actions] == []
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 3), (1, 4)]


async def test_an_old_play_removed_on_trakt_is_removed_by_the_full_read(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt", days_ago=60)
    app.unwatch(entry(trakt, 2))
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 3), (1, 4)]


async def test_an_old_play_we_wrote_to_trakt_and_the_user_removed_is_removed_on_serializd(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd", days_ago=60)
    app.unwatch(entry(trakt, 2))
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 3), (1, 4)]


async def test_an_old_play_still_waiting_for_delivery_is_not_taken_for_a_removal(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, ago(60))
    await rig.sync()  # queued for Trakt, not delivered yet
    result = await rig.sync(full=True)
    assert [a.kind for p in result.plans for a in p.plan.actions] == []
    await rig.deliver()
    assert len(diary_plays(serializd)) == 1 and len(trakt_plays(trakt)) == 1


async def test_removing_more_than_the_allowed_share_holds_every_removal(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    for number in (1, 2, 3):
        app.unwatch(entry(trakt, number))
    result = await rig.sync_and_deliver()
    assert result.held and "3 of 4 plays on serializd" in result.held[0]
    assert len(diary_plays(serializd)) == 4
    await rig.sync_and_deliver(confirm_removals=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 4)]


async def test_serializd_removals_held_by_a_full_read_apply_when_confirmed(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    for number in (1, 2, 3):
        unlog(serializd, review(serializd, number))
    result = await rig.sync_and_deliver(full=True)
    assert result.held and len(trakt_plays(trakt)) == 4
    await rig.sync_and_deliver(confirm_removals=True)  # as the held message says
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 4)]


async def three_of_four_removals_held(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Four plays on both sides; three removed on Trakt: the run holds their removals."""
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    for number in (1, 2, 3):
        app.unwatch(entry(trakt, number))
    assert (await rig.sync_and_deliver()).held


async def test_a_hold_with_nothing_changed_since_is_told_again_without_reading_in_full(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    # Ignored for weeks, a hold must not cost both whole histories every half hour.
    await three_of_four_removals_held(rig, trakt, serializd, app)
    await rig.sync_and_deliver()  # the hold as found again: nothing moves any more
    asked = len(trakt.requests), len(serializd.requests)
    result = await rig.sync_and_deliver()
    assert result.held and "3 of 4 plays on serializd" in result.held[0]
    trakt_asked = [r.path for r in trakt.requests[asked[0] :]]
    assert trakt_asked == ["/sync/last_activities"]
    assert len(serializd.requests) - asked[1] <= 2  # the diary's first page and the account
    log(serializd, 2, 1, ago(1))  # a new play: read in full, the hold found again
    assert (await rig.sync_and_deliver()).held
    assert any(r.path == "/sync/history/episodes" for r in trakt.requests[asked[0] :])


async def test_a_held_runs_record_counts_what_it_held_apart_from_what_it_queued(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await three_of_four_removals_held(rig, trakt, serializd, app)
    app.watch(1, 1, ago(0.01))  # watched again on Trakt: its copy waits with the removals
    assert (await rig.sync_and_deliver()).held
    assert rig.store.recent_runs(LINK, 1)[0].counts == {"held": 4}


async def test_a_hold_told_again_without_a_read_counts_what_it_holds(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await three_of_four_removals_held(rig, trakt, serializd, app)
    await rig.sync_and_deliver()  # settled
    result = await rig.sync_and_deliver()
    assert result.plans[0].unchanged and result.held
    assert rig.store.recent_runs(LINK, 1)[0].counts == {"held": 3}


async def test_a_hold_settled_by_hand_on_the_other_side_is_over_within_hours(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    # The user removes the three plays on Serializd too instead of confirming: no cheap check
    # sees a removal, so a run while holding reads in full again after a few hours.
    await three_of_four_removals_held(rig, trakt, serializd, app)
    await rig.sync_and_deliver()  # settled
    for number in (1, 2, 3):
        unlog(serializd, review(serializd, number))
    later = time.time() + HOLD_FULL_READ_EVERY + 60
    result = await run_link(rig.runtime.config, rig.store, LINK, yes=True, clock=lambda: later)
    assert result.held == ()


async def test_a_clock_set_back_does_not_put_off_the_full_read_that_ends_a_hold_settled_by_hand(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    # As above, with the clock set back two days since the last full read (it ran fast): that
    # read's age is unknown, not "recent" for two days more.
    await three_of_four_removals_held(rig, trakt, serializd, app)
    await rig.sync_and_deliver()  # settled
    for number in (1, 2, 3):
        unlog(serializd, review(serializd, number))
    earlier = time.time() - 2 * 86400
    result = await run_link(rig.runtime.config, rig.store, LINK, yes=True, clock=lambda: earlier)
    assert result.held == ()


async def test_a_hold_is_not_told_again_once_the_link_no_longer_syncs_plays(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    first = await make_rig()
    await three_of_four_removals_held(first, trakt, serializd, app)
    await first.sync_and_deliver()  # settled
    second = await make_rig(kinds="[ratings]")  # the user's answer: ratings only
    assert (await second.sync_and_deliver()).held == ()
    assert len(diary_plays(serializd)) == 4


async def test_removals_a_full_read_found_stay_held_on_the_next_scheduled_run(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    for number in (1, 2, 3):
        unlog(serializd, review(serializd, number))
    assert (await rig.sync_and_deliver(full=True)).held
    for _ in range(2):  # not found gone and back by turns (an alert resolved, then raised)
        result = await rig.sync_and_deliver()
        assert result.held and "3 of 4 plays on trakt" in result.held[0]
    assert len(trakt_plays(trakt)) == 4


async def test_a_play_copied_while_removals_are_held_and_then_removed_is_not_copied_back(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await three_of_four_removals_held(rig, trakt, serializd, app)
    fifth = log(serializd, 1, 5, ago(1))
    await rig.sync_and_deliver()  # copied to Trakt; the removals still held
    await rig.sync_and_deliver()  # read back on both sides
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 4), (1, 5)]
    unlog(serializd, fifth)  # a mistake, undone on Serializd
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 2), (1, 3), (1, 4)]
    await rig.sync_and_deliver(confirm_removals=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 4)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 4)]


async def test_held_removals_stay_held_however_much_the_side_grows_until_confirmed(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await three_of_four_removals_held(rig, trakt, serializd, app)
    for number in range(1, 5):  # a season watched meanwhile: 3 of 8 would be within 50 %
        log(serializd, 2, number, ago(2 - number / 10))
    await rig.sync_and_deliver()
    result = await rig.sync_and_deliver()
    assert result.held and "3 of 8 plays on serializd" in result.held[0]
    assert len(diary_plays(serializd)) == 8


async def test_removals_a_release_before_the_holding_cursor_held_stay_held_after_the_upgrade(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    for number in (1, 2, 3):
        app.unwatch(entry(trakt, number))
    # What that release left: cursors without `holding`; of its held run, the run's record
    # (baseline and cursors unmoved).
    engine = json.loads(rig.store.get_cursor("watchbridge", PROFILE, f"link:{LINK}") or "{}")
    del engine["holding"]
    rig.store.set_cursor("watchbridge", PROFILE, f"link:{LINK}", json.dumps(engine), time.time())
    run = rig.store.start_run(LINK, time.time())
    assert run is not None
    held = f"{PROFILE}: 3 of 4 plays on serializd would be removed (more than 50%); confirm"
    rig.store.finish_run(run, time.time(), "held", {}, 2, held)
    for outcome, error in (("ok", None), ("failed", f"{PROFILE}: serializd: 502")):
        later = rig.store.start_run(LINK, time.time())  # runs since, which said nothing of it
        assert later is not None
        rig.store.finish_run(later, time.time(), outcome, {}, 1, error)
    for number in range(1, 5):  # a season watched before the upgrade's first run
        log(serializd, 2, number, ago(2 - number / 10))
    result = await rig.sync_and_deliver()
    assert result.held and "3 of 8 plays on serializd" in result.held[0]
    assert len(diary_plays(serializd)) == 8


async def test_plays_logged_again_while_their_removals_are_held_end_the_hold(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    gone = [review(serializd, n) for n in (1, 2, 3)]
    for mistake in gone:
        unlog(serializd, mistake)
    assert (await rig.sync_and_deliver(full=True)).held
    for mistake in gone:  # undone: logged again, same dates
        log(serializd, 1, mistake.episode_number, mistake.watched_at)
    await rig.sync_and_deliver()
    assert not (await rig.sync_and_deliver()).held
    assert len(trakt_plays(trakt)) == 4 and len(diary_plays(serializd)) == 4


async def test_plays_logged_again_while_removals_a_countless_diary_proved_are_held_stay_single(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """As above, Serializd answering no count: the daily read misses e1-e3 once, the next
    run's whole read again, and their removals are held (the baseline keeps their plays while
    they wait). Logged again, they are new entries; the deleted ones, missed by the next full
    read again, stay deleted: taken for a first miss, their plays came back beside the new
    ones, and each was copied a second time to both sides."""
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    serializd.diary_total_reviews = "null"
    gone = [review(serializd, n) for n in (1, 2, 3)]
    for mistake in gone:
        unlog(serializd, mistake)
    assert not (await rig.sync_and_deliver(full=True)).held  # missed once
    assert (await rig.sync_and_deliver()).held  # missed twice: deleted, 3 of 4 held
    for mistake in gone:  # undone: logged again, same dates
        log(serializd, 1, mistake.episode_number, mistake.watched_at)
    await rig.sync_and_deliver()
    assert not (await rig.sync_and_deliver()).held
    await rig.sync_and_deliver(full=True)
    assert len(trakt_plays(trakt)) == 4 and len(diary_plays(serializd)) == 4


async def test_a_first_runs_pair_removed_while_held_and_logged_again_is_not_doubled(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    # The first run takes Trakt's play and the entry logged on Serializd four days later for
    # one viewing; a rewatch a day after that entry is copied to Serializd. The rewatch's
    # copy, read back, is no re-log of the paired entry: that entry's partner is the paired
    # play, not the rewatch nearest to it.
    app.watch(1, 1, ago(10))
    paired = log(serializd, 1, 1, ago(6))
    rig = await make_rig(max_removal_share=0.1)
    assert (await rig.sync_and_deliver()).plans[0].plan.same_viewing
    app.watch(1, 1, ago(5))
    await rig.sync_and_deliver(full=True)
    unlog(serializd, paired)  # Trakt's play goes with it: 1 of 2, held
    assert (await rig.sync_and_deliver(full=True)).held
    log(serializd, 1, 1, ago(5.9))  # logged again, a few hours off: days from its partner
    for _ in range(2):
        assert (await rig.sync_and_deliver(full=True)).held
    assert len(trakt_plays(trakt)) == len(diary_plays(serializd)) == 2
    await rig.sync_and_deliver(confirm_removals=True)
    await rig.sync_and_deliver(full=True)
    days = sorted([(1, 1, ago(5.9)[:10]), (1, 1, ago(5)[:10])])
    assert trakt_plays(trakt) == diary_plays(serializd) == days


async def test_a_play_removed_while_held_stays_removed_when_its_episode_is_watched_again(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd", days_ago=1)
    for number in (1, 2, 3):
        unlog(serializd, review(serializd, number))
    assert (await rig.sync_and_deliver(full=True)).held
    tonight = ago(0)  # s1e1 watched again, logged on both (a media server's webhooks)
    app.watch(1, 1, tonight)
    log(serializd, 1, 1, tonight)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(confirm_removals=True)
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 4)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 4)]


async def test_a_rating_cleared_and_given_anew_on_the_other_side_while_held_is_kept(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    for number in range(1, 5):
        app.rate(1, number, 8, ago(2))
    await rig.sync_and_deliver()
    for number in (1, 2, 3):
        app.unwatch(entry(trakt, number))
    result = await rig.sync_and_deliver()
    app.post("/sync/ratings/remove", {"episodes": [app.episode(1, 4)]})
    result = await rig.sync_and_deliver()
    assert "1 of 4 ratings on serializd would be removed" in result.held[0]  # named too
    serializd.advance(3600)
    serializd.log_entry(None, BB, 1, 4, rating=6, is_log=False)  # rated anew, an hour later
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(confirm_removals=True)
    await rig.sync_and_deliver(full=True)
    assert (trakt_rating(trakt, 1, 4), diary_rating(serializd, 1, 4)) == (6, 6)


async def test_a_rating_cleared_on_both_sides_and_given_again_while_plays_are_held_is_copied(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    for number in range(1, 5):
        log(serializd, 1, number, ago(3 - number / 10), **({"rating": 8} if number == 4 else {}))
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    for number in (1, 2, 3):
        app.unwatch(entry(trakt, number))
    assert (await rig.sync_and_deliver()).held
    app.post("/sync/ratings/remove", {"episodes": [app.episode(1, 4)]})
    with serializd.lock:
        review(serializd, 4).rating = 0
    await rig.sync_and_deliver()
    app.rate(1, 4, 6, ago(0.1))  # days later, rated again on Trakt
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(confirm_removals=True)
    assert (trakt_rating(trakt, 1, 4), diary_rating(serializd, 1, 4)) == (6, 6)


async def test_a_play_removed_on_trakt_stays_removed_after_a_one_way_run_the_other_way(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    app.unwatch(entry(trakt, 2))
    await rig.sync_and_deliver(direction="serializd-to-trakt")  # leaves the removal for later
    await rig.sync_and_deliver()
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 3), (1, 4)]
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 3), (1, 4)]


async def test_a_play_removed_on_serializd_stays_removed_after_a_one_way_run_the_other_way(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    unlog(serializd, review(serializd, 3))
    await rig.sync_and_deliver(full=True, direction="trakt-to-serializd")
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 2), (1, 4)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 4)]


# --------------------------------------------------------------------------- nothing twice


async def test_a_second_run_writes_nothing(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    app.rate(1, 1, 8, "2024-01-01T21:00:00.000Z")
    log(serializd, 1, 2, "2024-01-02T20:00:00.000Z", rating=6)
    await rig.sync_and_deliver()
    trakt_before, serializd_before = len(trakt.requests), len(serializd.requests)
    result = await rig.sync_and_deliver()
    assert [a for p in result.plans for a in p.plan.actions] == []
    assert trakt_writes(trakt, trakt_before) == []
    assert serializd_writes(serializd, serializd_before) == []


async def test_a_run_after_a_quiet_one_makes_one_request_per_service(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    log(serializd, 1, 2, "2024-01-02T20:00:00.000Z")
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    trakt_before, serializd_before = len(trakt.requests), len(serializd.requests)
    result = await rig.sync_and_deliver()
    assert [p.unchanged for p in result.plans] == [True]
    assert [r.path for r in trakt.requests[trakt_before:]] == ["/sync/last_activities"]
    assert len(serializd.requests) - serializd_before == 1


async def test_the_run_after_a_writing_run_reads_only_trakts_recent_window(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    # Our own writes move Trakt's activity stamps. Reading the window again costs a page or
    # two; taking a stamp as ours could hide a play the user logged at the same moment.
    app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    log(serializd, 1, 2, "2024-01-02T20:00:00.000Z")
    await rig.sync_and_deliver()
    trakt_before, serializd_before = len(trakt.requests), len(serializd.requests)
    await rig.sync_and_deliver()
    asked = trakt.requests[trakt_before:]
    assert [r.path for r in asked] == ["/sync/last_activities", "/sync/history/episodes"]
    assert "start_at" in asked[1].query
    assert len(serializd.requests) - serializd_before == 1


async def test_a_back_dated_play_written_to_trakt_is_not_planned_again_by_a_delta_run(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, ago(60))  # older than the delta read's week
    await rig.sync_and_deliver()
    result = await rig.sync_and_deliver()  # Trakt changed (our write): a delta read
    assert not any(p.unchanged for p in result.plans)
    assert [a for p in result.plans for a in p.plan.actions] == []
    assert len(trakt_plays(trakt)) == 1


# --------------------------------------------------------------------------- whole shows


async def test_a_rating_set_back_to_the_one_we_copied_before_reaches_serializd(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    app.rate(1, 1, 8, ago(1))
    await rig.sync_and_deliver()  # 8 copied to Serializd
    serializd.advance(120)  # then changed to 6 on Serializd, which reaches Trakt
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z", rating=6, is_log=False)
    await rig.sync_and_deliver(full=True)
    app.rate(1, 1, 8, ago(-0.01))  # and set back to 8 on Trakt
    await rig.sync_and_deliver()
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (8, 8)


async def test_a_show_rating_on_trakt_reaches_serializd_without_any_plays(
    rig: Rig, serializd: FakeSerializd, app: TraktApp
) -> None:
    app.post("/sync/ratings", {"shows": [{"ids": {"tmdb": BB}, "rating": 9}]})
    await rig.sync_and_deliver()
    rows = [r for r in serializd.diary() if r.season_id is None and r.episode_number is None]
    assert [r.rating for r in rows] == [9]


async def test_a_show_rating_on_serializd_reaches_trakt_without_any_plays(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    serializd.log_entry(None, BB, None, None, rating=7, is_log=False)
    await rig.sync_and_deliver()
    assert [(r.item.kind, r.rating) for r in trakt.ratings()] == [("show", 7)]


# --------------------------------------------------------------------------- crashes


async def test_a_crash_between_the_diary_entry_and_its_tick_ends_with_one_entry_and_the_tick(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    rig = await make_rig()
    app.watch(1, 1, ago(2))
    await rig.sync()
    # Serializd takes the entry and then the process dies, before the answer (so before the
    # ledger knows the entry) and before the tick.
    serializd.delay_next(1, 5.0, route="POST /api/show/reviews/add")
    delivery = asyncio.create_task(rig.deliver())
    while serializd.count("POST", "/api/show/reviews/add") == 0:
        await asyncio.sleep(0.01)
    delivery.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await delivery
    assert (len(serializd.diary()), serializd.ticks()) == (1, set())
    restarted = await make_rig()  # the same database, new clients and targets
    restarted.store.release_claims(time.time())  # as the delivery worker does when it starts
    await restarted.sync_and_deliver()
    second = await restarted.sync_and_deliver(full=True)
    assert [a for p in second.plans for a in p.plan.actions] == []
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1)]
    assert serializd.ticks() == {(BB, serializd.shows[BB].seasons[1].id, 1)}
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1)]


async def test_a_viewing_added_later_hours_before_one_on_both_sides_is_copied(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Sunday evening's viewing is synced; the user then adds on Trakt that they also watched
    the episode on Saturday night, 20 hours earlier (within the match window)."""
    saturday, sunday = ago(3), ago(3 - 20 / 24)
    app.watch(1, 1, sunday)
    await rig.sync_and_deliver()
    app.watch(1, 1, saturday)
    await rig.sync_and_deliver()
    assert diary_plays(serializd) == [(1, 1, saturday[:10]), (1, 1, sunday[:10])]


# --------------------------------------------------------------------------- kinds taken in


async def ratings_given_while_the_link_synced_plays_only(
    make_rig: RigFactory, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Both plays synced by a `kinds: [history]` link; then s1e1 rated 9 on Trakt, s1e2 4 on
    Serializd, and a run of that link (which reads the ratings and copies none)."""
    app.watch(1, 1, ago(30))
    log(serializd, 1, 2, ago(29))
    plays_only = await make_rig(kinds="[history]")
    await plays_only.sync_and_deliver()
    app.rate(1, 1, 9, ago(2))
    log(serializd, 1, 2, ago(2), rating=4, is_log=False)
    await plays_only.sync_and_deliver(full=True)


async def test_ratings_taken_into_a_links_kinds_wait_for_a_review_as_a_first_run_does(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Before, the link was past its first run: every rating went out at once, unreviewed."""
    await ratings_given_while_the_link_synced_plays_only(make_rig, serializd, app)
    rig = await make_rig(kinds="[history, ratings]", first_run="dry-run")
    config = rig.runtime.config

    with pytest.raises(NeedsReview) as review:
        await run_link(config, rig.store, LINK, clock=time.time)
    assert rig.store.outbox_counts().get("pending", 0) == 0
    assert f"first sync of ratings since links.{LINK}.kinds took it in" in review.value.message
    assert f"`watchbridge sync --link {LINK} --yes`" in review.value.message
    planned = await run_link(config, rig.store, LINK, dry_run=True, clock=time.time)
    assert sorted((a.kind, a.target) for a in planned.plans[0].plan.actions) == [
        ("set_rating", "serializd"),
        ("set_rating", "trakt"),
    ]

    await run_link(config, rig.store, LINK, yes=True, clock=time.time)
    await rig.deliver()
    assert (diary_rating(serializd, 1, 1), trakt_rating(trakt, 1, 2)) == (9, 4)
    app.rate(1, 1, 7, ago(0))  # from now on ratings sync as usual: no review asked
    await run_link(config, rig.store, LINK, clock=time.time)
    await rig.deliver()
    assert diary_rating(serializd, 1, 1) == 7


async def test_a_rating_cleared_while_the_link_synced_plays_only_is_no_removal_once_taken_in(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The link read Serializd's 4 but never synced it; its first ratings sync copies Trakt's
    9 as a first run does, rather than removing it for a Serializd rating that went away."""
    app.watch(1, 1, ago(30))
    plays_only = await make_rig(kinds="[history]")
    await plays_only.sync_and_deliver()
    app.rate(1, 1, 9, ago(3))
    rated = log(serializd, 1, 1, ago(3), rating=4, is_log=False)
    await plays_only.sync_and_deliver(full=True)
    with serializd.lock:
        serializd.user.reviews.remove(rated)  # the user clears it on serializd.com

    rig = await make_rig(kinds="[history, ratings]")
    result = await rig.sync_and_deliver(full=True)  # as the daily read would find it

    assert [(a.kind, a.target) for a in result.plans[0].plan.actions] == [
        ("set_rating", "serializd")
    ]
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 9)


async def test_plays_taken_into_a_ratings_only_links_kinds_wait_for_a_review(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    ratings_only = await make_rig(kinds="[ratings]")
    app.rate(1, 1, 8, ago(5))
    await ratings_only.sync_and_deliver()
    app.watch(1, 1, ago(5))
    rig = await make_rig(kinds="[history, ratings]", first_run="dry-run")

    with pytest.raises(NeedsReview) as review:
        await run_link(rig.runtime.config, rig.store, LINK, clock=time.time)

    assert "first sync of history since" in review.value.message
    assert diary_plays(serializd) == []


async def test_ratings_taken_into_a_links_kinds_wait_alone_while_its_plays_go_on_syncing(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Before, the whole profile waited for the review: an episode watched meanwhile was not
    copied until someone ran it (a household without a terminal, for weeks)."""
    await ratings_given_while_the_link_synced_plays_only(make_rig, serializd, app)
    rig = await make_rig(kinds="[history, ratings]", first_run="dry-run")
    config = rig.runtime.config
    app.watch(1, 3, ago(1))  # watched on since

    with pytest.raises(NeedsReview) as review:
        await run_link(config, rig.store, LINK, clock=time.time)
    await rig.deliver()

    assert review.value.waiting == {PROFILE: frozenset({"ratings"})}
    assert "the rest of the link syncs as usual meanwhile" in review.value.message
    assert (1, 3) in [(season, n) for season, n, _ in diary_plays(serializd)]
    assert (diary_rating(serializd, 1, 1), trakt_rating(trakt, 1, 2)) == (None, None)
    app.watch(1, 4, ago(0.5))
    with pytest.raises(NeedsReview):  # not reviewed yet: the ratings wait again, plays go on
        await run_link(config, rig.store, LINK, clock=time.time)
    await rig.deliver()
    assert (1, 4) in [(season, n) for season, n, _ in diary_plays(serializd)]
    assert trakt_rating(trakt, 1, 2) is None

    planned = await run_link(config, rig.store, LINK, dry_run=True, clock=time.time)
    assert sorted((a.kind, a.target) for a in planned.plans[0].plan.actions) == [
        ("set_rating", "serializd"),
        ("set_rating", "trakt"),
    ]
    await run_link(config, rig.store, LINK, yes=True, clock=time.time)
    await rig.deliver()
    assert (diary_rating(serializd, 1, 1), trakt_rating(trakt, 1, 2)) == (9, 4)
    assert (await run_link(config, rig.store, LINK, clock=time.time)).outcome == "ok"


async def test_plays_taken_into_a_ratings_only_link_wait_alone_while_its_ratings_go_on(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    ratings_only = await make_rig(kinds="[ratings]")
    app.rate(1, 1, 8, ago(5))
    await ratings_only.sync_and_deliver()
    app.watch(1, 1, ago(5))
    app.rate(1, 1, 6, ago(0))  # rated again since
    rig = await make_rig(kinds="[history, ratings]", first_run="dry-run")
    config = rig.runtime.config

    with pytest.raises(NeedsReview, match="first sync of history since") as review:
        await run_link(config, rig.store, LINK, clock=time.time)
    await rig.deliver()

    assert review.value.waiting == {PROFILE: frozenset({"history"})}
    assert diary_plays(serializd) == []
    assert diary_rating(serializd, 1, 1) == 6  # the kind synced before went on
    planned = await run_link(config, rig.store, LINK, dry_run=True, clock=time.time)
    assert [(a.kind, a.target) for a in planned.plans[0].plan.actions] == [
        ("add_play", "serializd")
    ]
    await run_link(config, rig.store, LINK, yes=True, clock=time.time)
    await rig.deliver()
    assert [(season, n) for season, n, _ in diary_plays(serializd)] == [(1, 1)]


async def test_a_link_that_synced_ratings_before_the_kinds_were_kept_asks_no_review_after(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """A database of a release that kept no record of the kinds a link synced: its baseline
    holding ratings says it synced them."""
    app.watch(1, 1, ago(30))
    app.rate(1, 1, 8, ago(30))
    rig = await make_rig(first_run="dry-run")
    await rig.sync_and_deliver()  # yes: the first run, reviewed
    engine = json.loads(rig.store.get_cursor(ENGINE, PROFILE, f"link:{LINK}") or "{}")
    assert engine.pop(SYNCED_KINDS) == "history,ratings"
    rig.store.set_cursor(ENGINE, PROFILE, f"link:{LINK}", json.dumps(engine), time.time())
    app.rate(1, 1, 6, ago(0))

    await run_link(rig.runtime.config, rig.store, LINK, clock=time.time)  # no NeedsReview
    await rig.deliver()

    assert diary_rating(serializd, 1, 1) == 6


# --------------------------------------------------------------------------- diary edits in
# the Serializd app: a delta read sees only new entry ids, the daily full read sees the edits


def trakt_play_days(trakt: FakeTrakt, number: int) -> list[str]:
    return [day for season, n, day in trakt_plays(trakt) if (season, n) == (1, number)]


def diary_days(serializd: FakeSerializd, number: int) -> list[str]:
    return [day for season, n, day in diary_plays(serializd) if (season, n) == (1, number)]


@pytest.mark.parametrize("origin", ["trakt", "serializd"])
@pytest.mark.parametrize("new_id", [False, True])
async def test_a_diary_entry_backdated_on_serializd_moves_its_play_on_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, origin: str, new_id: bool
) -> None:
    """Whether the app keeps the entry's id (read as the same play, moved: its Trakt play is
    removed and one at the new date added, by the full read) or gives the edit a new one (a
    new play the delta read copies, and a removal the full read carries)."""
    await four_plays_on_both_sides(rig, app, serializd, origin=origin)
    moved_to = ago(20)
    serializd.edit_entry(review(serializd, 2), backdate=moved_to, new_id=new_id)
    for full in (False, True, False, True):
        await rig.sync_and_deliver(full=full)
    assert trakt_play_days(trakt, 2) == [moved_to[:10]]
    assert diary_days(serializd, 2) == [moved_to[:10]]
    assert len(trakt_plays(trakt)) == len(diary_plays(serializd)) == 4


async def test_diary_entries_backdated_past_the_removal_share_wait_without_doubling(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    moved_to = ago(20)
    for number in (1, 2, 3):
        serializd.edit_entry(review(serializd, number), backdate=moved_to)
    result = await rig.sync_and_deliver(full=True)
    assert result.held and "3 of 4 plays on trakt" in result.held[0]
    assert len(trakt_plays(trakt)) == 4  # neither removed nor added while held
    await rig.sync_and_deliver(confirm_removals=True)
    assert [day for _, _, day in trakt_plays(trakt)].count(moved_to[:10]) == 3
    assert len(trakt_plays(trakt)) == 4


@pytest.mark.parametrize("untick", [False, True])
async def test_a_diary_entry_we_wrote_deleted_on_serializd_is_removed_on_trakt_for_good(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, untick: bool
) -> None:
    """The entry copied from Trakt deleted in the app, its tick (ours too) left or cleared."""
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    serializd.delete_entry(review(serializd, 3), untick=untick)
    for full in (False, True, False, True):
        await rig.sync_and_deliver(full=full)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1), (1, 2), (1, 4)]
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 2), (1, 4)]
    assert trakt_episodes(trakt) == [(1, 1), (1, 2), (1, 4)]  # nor copied back undated


@pytest.mark.parametrize("origin", ["trakt", "serializd"])
async def test_a_rating_changed_on_a_diary_entry_reaches_trakt_at_the_full_read(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, origin: str
) -> None:
    """The stars of an entry edited in the app: the row keeps its `dateAdded`, older than the
    copy on Trakt, yet the edit is the newer rating."""
    app.watch(1, 1, ago(3))
    if origin == "trakt":
        app.rate(1, 1, 6, ago(3))
    else:
        log(serializd, 1, 1, ago(3), rating=6, is_log=False)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)
    rated = next(r for r in serializd.diary() if r.rating)
    serializd.edit_entry(rated, rating=9)
    await rig.sync_and_deliver()
    assert trakt_rating(trakt, 1, 1) == 6  # the delta read does not see edits
    for full in (True, False, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 9)


async def test_stars_edited_on_our_copy_before_the_next_run_reach_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """S1E1 rated 6 on Trakt, the run copies it to the unrated Serializd. Before the next
    run, the user edits the stars of that copy's diary row in the app (to 9): the row keeps
    its id and date, and no run has read it yet. The 9 is the user's newer rating: it reaches
    Trakt, and Trakt's 6 does not overwrite it."""
    app.watch(1, 1, ago(3))
    app.rate(1, 2, 7, ago(3))
    await rig.sync_and_deliver()
    app.rate(1, 1, 6, ago(1))
    await rig.sync_and_deliver()
    assert diary_rating(serializd, 1, 1) == 6
    copied = next(r for r in serializd.diary() if r.rating == 6)
    serializd.edit_entry(copied, rating=9)
    for full in (True, False, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 9)


async def test_a_logs_stars_showing_again_once_a_rewatch_is_deleted_keep_their_date(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Logged with 3 stars (6), rewatched with 4 (8, a second log): Trakt got the 8. The user
    rates it 9 on Trakt and deletes the rewatch in the app, so the first log's 6 shows again:
    that is no edit (its row keeps its date), and the 9 the user set since stays on both sides."""
    rig = await make_rig(max_removal_share=1)
    log(serializd, 1, 1, ago(10), rating=6, date_added=ago(10))
    rewatch = log(serializd, 1, 1, ago(5), rating=8, is_rewatch=True, date_added=ago(5))
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert trakt_rating(trakt, 1, 1) == 8
    app.rate(1, 1, 9, ago(1))
    serializd.delete_entry(rewatch)
    for full in (True, False, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 9)


@pytest.mark.parametrize("runs_before_delivery", [0, 2])
async def test_a_rewatchs_log_deleted_leaves_the_older_logs_stars_on_both_sides(
    make_rig: RigFactory,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    runs_before_delivery: int,
) -> None:
    """Logged with 3 stars (6), rewatched with 4 (8): Trakt got the 8. The user deletes the
    rewatch's log and rates nothing new: the first log's 6, older than Trakt's copy of the 8,
    is the one change since the last run, and reaches Trakt (newest-wins is a three-way merge).
    Runs while the copy waits (an outage, a backlog) see nothing change on either side: the
    copy waiting says who won, and the dates never overturn it (Serializd set back to 8)."""
    rig = await make_rig(max_removal_share=1)
    log(serializd, 1, 1, ago(10), rating=6, date_added=ago(10))
    rewatch = log(serializd, 1, 1, ago(5), rating=8, is_rewatch=True, date_added=ago(5))
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (8, 8)
    serializd.delete_entry(rewatch)
    for full in (True, False, True)[:runs_before_delivery]:
        await rig.sync(full=full)
    for full in (True, False, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)
    assert [e.rating for e in serializd.diary()] == [6]


@pytest.mark.parametrize("edited", [False, True])
async def test_log_stars_read_by_a_release_that_named_no_log_are_neither_taken_as_edits_nor_missed(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp, edited: bool
) -> None:
    """A rating held by a diary log, last read by a release whose cursors kept a bare `log`
    for it (now `log:<id>`): the first full read after the upgrade writes nothing for stars
    left alone, and still carries stars edited in place on that log."""
    logged = log(serializd, 1, 1, ago(10), rating=6, date_added=ago(10))
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert trakt_rating(trakt, 1, 1) == 6
    name = f"link:{LINK}"
    cursors = json.loads(rig.store.get_cursor("serializd", PROFILE, name) or "{}")
    assert json.loads(cursors["rating_rows"]) == {f"episode:tmdb:{BB}:s1e1": f"log:{logged.id}"}
    cursors["rating_rows"] = json.dumps({f"episode:tmdb:{BB}:s1e1": "log"})
    rig.store.set_cursor("serializd", PROFILE, name, json.dumps(cursors), time.time())
    if edited:
        serializd.edit_entry(logged, rating=9)
    since = (len(trakt.requests), len(serializd.requests))
    for full in (True, False, True):
        await rig.sync_and_deliver(full=full)
    want = 9 if edited else 6
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (want, want)
    if not edited:
        assert trakt_writes(trakt, since[0]) == serializd_writes(serializd, since[1]) == []


async def test_a_rating_copy_found_after_a_lost_answer_stays_ours_once_a_newer_one_replaces_it(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The copy of the 8 lands an hour late and its answer is lost: the retry finds it in the
    diary (it is ours). Dated by when it landed, it would read as a rating given after the 6
    the user set on Trakt meanwhile, and take Trakt back to 8."""
    app.rate(1, 1, 8, ago(30))
    await rig.sync()
    serializd.advance(3600)
    serializd.drop_next(1, route="POST /api/show/reviews/add", after_handler=True)
    await rig.deliver()  # landed, answer lost
    assert [r.rating for r in serializd.diary() if not r.is_log] == [8]
    # the retry, an hour on (its wait lifted)
    rig.store._conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
    await rig.deliver()
    assert rig.store.outbox_counts()["pending"] == 0
    app.rate(1, 1, 6, ago(0))
    for full in (False, True, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)


async def test_diary_entries_deleted_past_the_removal_share_are_not_copied_back_from_their_ticks(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Three of four entries copied from Trakt deleted in the app, their ticks left: the hold
    waits, the confirming run removes them on Trakt, and no later run copies the ticks back
    as undated plays (the flags are what those viewings left, as without a hold)."""
    await four_plays_on_both_sides(rig, app, serializd, origin="trakt")
    for number in (1, 2, 3):
        serializd.delete_entry(review(serializd, number), untick=False)
    result = await rig.sync_and_deliver(full=True)
    assert result.held and "3 of 4 plays on trakt" in result.held[0]
    assert len(trakt_plays(trakt)) == 4
    await rig.sync_and_deliver(full=True)  # still held: nothing changed
    await rig.sync_and_deliver(confirm_removals=True)
    for full in (False, True, False, True):
        await rig.sync_and_deliver(full=full)
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 4)]
    assert trakt_episodes(trakt) == [(1, 4)]  # nor copied back undated


def a_webhooks_rating(rig: Rig, rating: int, at: float, item: MediaRef | None = None) -> None:
    """What the webhook route queues when s1e1 (or `item`) is rated `rating` (0-100) at `at`
    in a media server (webhooks.rows_for): one row for each of the link's services."""
    item = item or MediaRef("episode", show_ids=Ids(tmdb=str(BB)), season=1, number=1)
    payload = {"item": ref_to_dict(item), "at": at, "source": "generic", "rating": rating}
    rig.store.enqueue(
        [
            NewOutboxRow(
                target,
                PROFILE,
                "rating",
                payload,
                ordering_key(PROFILE, target, item.key(), "rating"),
                f"{PROFILE}:{target}:rate:{item.key()}:{rating}:{int(at)}",
            )
            for target in ("trakt", "serializd")
        ],
        time.time(),
    )


async def test_a_rating_copy_whose_answer_was_lost_stays_ours_when_a_newer_rating_follows_first(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The copy of the 8 lands an hour late and its answer is lost; before its retry the user
    rates 6 in the media server, which queues the 6 for both sides. Settled as superseded
    without being looked for, the 8's diary row was never known as ours: dated by when it
    landed, it outranked the 6 (shown on Serializd, its row being newer) and took Trakt back
    to 8."""
    app.rate(1, 1, 8, ago(30))
    await rig.sync()
    serializd.advance(3600)
    serializd.drop_next(1, route="POST /api/show/reviews/add", after_handler=True)
    await rig.deliver()  # landed, answer lost
    assert [r.rating for r in serializd.diary() if not r.is_log] == [8]
    a_webhooks_rating(rig, 60, time.time())  # rated 6 in the media server before the retry
    # the retry's wait lifted
    rig.store._conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
    await rig.deliver()
    assert rig.store.outbox_counts()["pending"] == 0
    for full in (False, True, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)


async def test_a_rating_copy_to_trakt_whose_answer_was_lost_is_replaced_by_a_newer_rating(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The other way round, settled as superseded as before: Trakt keeps one rating per item,
    dated as sent, which the newer one replaces, so the lost answer leaves nothing behind."""
    log(serializd, 1, 1, ago(30), rating=8, is_log=False)
    await rig.sync()
    trakt.drop_next(2, route="POST /sync/ratings", after_handler=True)  # landed, answers lost
    await rig.deliver()
    assert trakt_rating(trakt, 1, 1) == 8
    assert rig.store.outbox_counts()["pending"] == 1
    a_webhooks_rating(rig, 60, time.time())  # rated 6 in the media server before the retry
    query = "SELECT last_error FROM outbox WHERE target = 'trakt' ORDER BY id LIMIT 1"
    assert rig.store._conn.execute(query).fetchone()[0] == "superseded"
    rig.store._conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
    await rig.deliver()
    assert rig.store.outbox_counts()["pending"] == 0
    for full in (False, True, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)


async def test_a_rating_copy_whose_answer_was_lost_is_not_copied_back_before_its_retry(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The copy of the 8 lands an hour late and its answer is lost; meanwhile the user rated 6
    on Trakt. Until the copy's retry found its row and recorded it as ours, the reader dated
    it by when it landed: a run in that gap took it for a rating newer than the 6 and set
    Trakt back to 8 (and the date a read gave the rating stayed with it)."""
    app.rate(1, 1, 8, ago(30))
    await rig.sync()
    serializd.advance(3600)
    serializd.drop_next(1, route="POST /api/show/reviews/add", after_handler=True)
    await rig.deliver()  # landed, answer lost; its retry waits
    assert rig.store.outbox_counts()["pending"] == 1
    app.rate(1, 1, 6, ago(0))  # rated 6 on Trakt, before the copy landed on Serializd's clock
    for full in (False, True):
        await rig.sync_and_deliver(full=full)  # the retry still waiting
    assert trakt_rating(trakt, 1, 1) == 6
    # the retry's wait lifted
    rig.store._conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
    await rig.deliver()
    assert rig.store.outbox_counts()["pending"] == 0
    for full in (False, True, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)


async def test_a_rating_given_on_serializd_before_a_lost_answers_retry_reaches_trakt(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The lost copy's row is taken for ours before its retry, not the user's own rating of
    the item given meanwhile: that one is the newest, and reaches Trakt at once."""
    app.rate(1, 1, 8, ago(30))
    await rig.sync()
    serializd.advance(3600)
    serializd.drop_next(1, route="POST /api/show/reviews/add", after_handler=True)
    await rig.deliver()  # landed, answer lost; its retry waits
    serializd.advance(60)
    serializd.log_entry(None, BB, 1, 1, rating=9, is_log=False)  # rated 9 in the app
    for full in (False, True):
        await rig.sync_and_deliver(full=full)  # the retry still waiting
    assert trakt_rating(trakt, 1, 1) == 9
    rig.store._conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
    await rig.deliver()
    for full in (False, True, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 9)


@pytest.fixture
async def giving_up_at_once(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    """The link's rig with `delivery.max_attempts: 1`: a row that fails once is a dead letter."""
    use_fast_readers(monkeypatch)
    options = ", first_run: apply, max_removal_share: 0.5"
    text = rig_config(tmp_path, trakt, serializd, options) + "delivery: {max_attempts: 1}\n"
    config = parse_config(text, Path("watchbridge.yaml"), {})
    rig = rig_for(config, trakt, serializd, {PROFILE: None})
    yield rig
    await rig.aclose()


async def test_a_rating_copy_whose_answer_was_lost_and_that_gave_up_stays_ours_behind_a_newer_one(
    giving_up_at_once: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The copy of the 8 lands an hour late, its answer is lost, and it gives up (a dead
    letter, marked as possibly sent); then the user rates 6 on Trakt. Settled as superseded
    when the 6 was queued, the 8's diary row was never known as ours: dated by when it
    landed, it outranked the 6 and took Trakt back to 8. Neither is sent twice, and the 8
    stays known as a copy once the delivered rows are pruned (a week on)."""
    rig = giving_up_at_once
    app.rate(1, 1, 8, ago(30))
    await rig.sync()
    serializd.advance(3600)
    serializd.drop_next(1, route="POST /api/show/reviews/add", after_handler=True)
    await rig.deliver()  # landed, answer lost: its one attempt spent
    assert rig.store.outbox_counts()["dead"] == 1
    app.rate(1, 1, 6, ago(0))
    for full in (False, True, False, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)
    rig.store.prune(time.time() + 8 * DAY, 7 * DAY, 7 * DAY)
    for full in (False, True, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)
    assert [r.rating for r in serializd.diary() if not r.is_log] == [8, 6]


async def test_a_rating_copy_that_died_and_was_discarded_takes_nothing_from_its_source(
    giving_up_at_once: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """S1E1 rated 8 on Serializd; its copy to the unrated Trakt fails and gives up (a dead
    letter), and the user discards it. The 8 never reached Trakt: Trakt's missing rating is
    no removal of the user's, and Serializd's 8 stays (copied again, it reaches Trakt)."""
    rig = giving_up_at_once
    watched_s1e1_rated_s1e2(serializd)
    await rig.sync_and_deliver()
    before = both_sides(trakt, serializd)
    log(serializd, 1, 1, ago(1), rating=8, is_log=False)
    await rig.sync()
    trakt.fail_next(1, 422, route="POST /sync/ratings")
    await rig.deliver()
    assert rig.store.outbox_counts()["dead"] == 1
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert both_sides(trakt, serializd)["ratings"][0] == (None, 8)
    assert rig.store.discard_dead(None) == 1
    for full in (True, False, True):
        await rig.sync_and_deliver(full=full)
    assert both_sides(trakt, serializd) == {
        "ratings": [(8, 8), before["ratings"][1]],
        "plays": before["plays"],
    }


@pytest.fixture
async def finding_ids(rig: Rig) -> Rig:
    """The link's rig whose deliveries find the ids a webhook left out through Trakt's
    search, as the service's do (wiring.enricher)."""
    search = fast_trakt(rig.runtime.config, rig.store)
    enricher = Enricher(
        rig.store,
        time.time,
        search=search.search,
        title_search=search.search_title,
        closers=[search.aclose],
    )
    for target in rig.targets.values():
        target.enricher = enricher
    return rig


def a_webhooks_rating_by_title(rig: Rig, rating: int, at: float) -> None:
    """`a_webhooks_rating`, the episode named by its show's title only, as a generic webhook
    may: the deliveries look the show's ids up before they send."""
    item = MediaRef("episode", show_title="Breaking Bad", season=1, number=1)
    a_webhooks_rating(rig, rating, at, item)


async def test_a_rating_copy_named_by_title_whose_answer_was_lost_is_not_copied_back(
    finding_ids: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """A webhook's 8, its show named by title only, lands on Serializd an hour late
    and its answer is lost; meanwhile the user rated 6 on Trakt. Before the copy's retry
    recorded its row as ours, a run took it for a rating given when it landed (the queued
    row names no TMDB id to know it by) and set Trakt back to 8, where both then stayed."""
    rig = finding_ids
    a_webhooks_rating_by_title(rig, 80, time.time() - 120)
    serializd.advance(3600)
    serializd.drop_next(1, route="POST /api/show/reviews/add", after_handler=True)
    await rig.deliver()  # Trakt has the 8; on Serializd it landed, answer lost
    assert trakt_rating(trakt, 1, 1) == 8
    assert [r.rating for r in serializd.diary() if not r.is_log] == [8]
    assert rig.store.outbox_counts()["pending"] == 1  # its retry waits
    app.rate(1, 1, 6, ago(0))
    for full in (False, True):
        await rig.sync_and_deliver(full=full)  # the retry still waiting
    assert trakt_rating(trakt, 1, 1) == 6
    rig.store._conn.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
    await rig.deliver()
    assert rig.store.outbox_counts()["pending"] == 0
    for full in (False, True, True):
        await rig.sync_and_deliver(full=full)
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)
    assert [r.rating for r in serializd.diary() if not r.is_log] == [8, 6]
