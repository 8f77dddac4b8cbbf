"""AniList ⇄ Serializd end to end: the real runner reads both fakes, maps anime numbering through
the pinned dataset samples (Serializd numbers by TMDB, like Trakt), plans, queues, and the real
targets deliver. Pacing is lifted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.linkrig import fast_serializd, use_fast_readers
from tests.linkrig_anilist import Rig, anilist_target, completed_entry, iso, status_of
from watchbridge import readers
from watchbridge.app import Runtime
from watchbridge.config import parse_config
from watchbridge.deliver.serializd import SerializdTarget
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.ids import Enricher
from watchbridge.maintenance import KEEP_DONE, KEEP_SESSIONS
from watchbridge.model import Account, Ids, MediaEvent, MediaRef
from watchbridge.sync import plan_link, run_link
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

LINK = "anilist-serializd"
REZERO, BREAKING_BAD = 65942, 1396  # TMDB = Serializd show ids
REZERO_P2 = 119661  # AniList: Re:Zero S2 Part 2 = TMDB S1E39-50
MONONOKE = 164  # AniList: a movie (TMDB movie 128): Serializd holds TV only
DAY = 86400.0


def started_serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    """Serializd holding Re:ZERO and Breaking Bad."""
    fake = start_fake(FakeSerializd())
    assert isinstance(fake, FakeSerializd)
    fake.add_show(REZERO, "Re:ZERO", {1: 66, 2: 25})
    fake.seed_reference_catalogue()  # Breaking Bad
    return fake


def started_anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    """AniList with Re:Zero S2 Part 2 and a movie, its pacing lifted."""
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    fake.limit = fake.burst_limit = 100_000
    fake.add_media(REZERO_P2, episodes=12)
    fake.add_media(MONONOKE, episodes=1, format="MOVIE")
    return fake


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    return started_serializd(start_fake)


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    return started_anilist(start_fake)


def link_rig(
    tmp_path: Path,
    serializd: FakeSerializd,
    anilist: FakeAniList,
    monkeypatch: pytest.MonkeyPatch,
    enricher: Callable[[Runtime], Enricher] | None = None,
    link_options: str = "",
) -> Rig:
    """Profile `me` on both fakes (Jellyfin user alice), the link's readers and targets; with
    `enricher`, the targets read show ids through it (a media server's); `link_options` are
    added to the link's (", key: value")."""
    use_fast_readers(monkeypatch)
    monkeypatch.setitem(readers.READERS, "anilist", "tests.linkrig_anilist")
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  serializd: {{api_url: "{serializd.url}"}}
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
profiles:
  me:
    users: {{jellyfin: [alice]}}
    accounts:
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
      anilist: {{token: "{anilist.issue_token()}"}}
links:
  {LINK}: {{services: [anilist, serializd]{link_options}}}
"""
    config = parse_config(text, tmp_path / "watchbridge.yaml", {})
    runtime = build_runtime(config)
    runtime.open()
    to_anilist = anilist_target(config, runtime.store, LINK)
    if enricher is not None:
        to_anilist.enricher = enricher(runtime)
    targets: dict[str, Any] = {
        "serializd": SerializdTarget(
            fast_serializd(config, runtime.store),
            runtime.store,
            config.delivery,
            time.time,
            enricher=enricher(runtime) if enricher is not None else None,
        ),
        "anilist": to_anilist,
    }
    return Rig(runtime, targets, LINK)


@pytest.fixture
async def rig(
    tmp_path: Path,
    serializd: FakeSerializd,
    anilist: FakeAniList,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Rig]:
    rig = link_rig(tmp_path, serializd, anilist, monkeypatch)
    yield rig
    await rig.aclose()


def logged(serializd: FakeSerializd, show: int) -> list[tuple[int | None, int | None]]:
    """(season, episode) of every diary log of one show."""
    seasons = {s.id: s.number for s in serializd.shows[show].seasons.values()}
    return sorted(
        (seasons.get(r.season_id) if r.season_id else None, r.episode_number)
        for r in serializd.diary()
        if r.show_id == show and r.is_log
    )


def season_rating(serializd: FakeSerializd, show: int, season: int) -> int | None:
    season_id = serializd.shows[show].seasons[season].id
    rows = [r for r in serializd.diary() if r.season_id == season_id and r.episode_number is None]
    return rows[-1].rating if rows else None


async def test_serializd_logs_of_rezero_s1e39_to_41_become_anilist_progress_3(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    for number in (39, 40, 41):  # Re:Zero S2 Part 2 episodes 1-3 on TMDB (S1E41 is ep 3)
        serializd.log_entry(None, REZERO, 1, number, backdate=iso(time.time() - 5 * DAY))
    await rig.sync_and_deliver()
    entry = anilist.snapshot()[REZERO_P2]
    assert (entry["status"], entry["progress"]) == ("CURRENT", 3)
    assert (await rig.sync_and_deliver()).queued == 0  # nothing echoes back


async def test_anilist_progress_becomes_serializd_episodes_of_the_tmdb_season(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    anilist.add_entry(REZERO_P2, status="CURRENT", progress=3, updated_at=int(time.time() - DAY))
    await rig.sync_and_deliver()
    season = serializd.shows[REZERO].seasons[1].id
    assert {(show, s, n) for show, s, n in serializd.ticks() if show == REZERO} >= {
        (REZERO, season, 39),  # earlier episodes: watched, date unknown
        (REZERO, season, 40),
    }
    assert logged(serializd, REZERO) == [(1, 41)]  # the last one, dated
    assert (await rig.sync_and_deliver()).queued == 0


async def test_an_anime_movie_on_anilist_is_not_sent_to_serializd(
    rig: Rig, anilist: FakeAniList
) -> None:
    anilist.add_entry(MONONOKE, status="COMPLETED", progress=1, score=90)
    result = await rig.sync_and_deliver()
    assert result.queued == 0


async def test_an_anilist_score_becomes_the_serializd_season_rating_and_back(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    entry = anilist.add_entry(
        REZERO_P2, status="COMPLETED", progress=12, score=80, updated_at=int(time.time() - DAY)
    )
    await rig.sync_and_deliver()
    assert season_rating(serializd, REZERO, 1) == 8  # four stars
    assert (await rig.sync_and_deliver()).queued == 0

    serializd.log_entry(None, REZERO, 1, None, rating=5, is_log=False)  # rated again, later
    await rig.sync_and_deliver()
    assert entry.score == 50
    assert (await rig.sync_and_deliver()).queued == 0


async def test_full_runs_never_plan_a_non_anime_show_to_anilist_nor_remove_it_from_serializd(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    serializd.log_entry(None, REZERO, 1, 39, backdate=iso(time.time() - 3 * DAY))
    serializd.log_entry(None, BREAKING_BAD, 1, 1, backdate=iso(time.time() - 2 * DAY))
    serializd.log_entry(None, BREAKING_BAD, 1, None, rating=9, is_log=False)
    for _ in range(3):
        result = await rig.sync_and_deliver(full=True)
        actions = [(a.target, a.kind, a.item) for p in result.plans for a in p.plan.actions]
        assert not any(
            str(BREAKING_BAD) in item for target, _, item in actions if target == "anilist"
        )
        assert not any(target == "serializd" for target, _, _ in actions)
    assert anilist.snapshot()[REZERO_P2]["progress"] == 1
    assert logged(serializd, BREAKING_BAD) == [(1, 1)]
    assert season_rating(serializd, BREAKING_BAD, 1) == 9


# --------------------------------------------------------------------------- absolute numbering

ONE_PIECE, OP = 37854, 21  # TMDB (= Serializd) show, AniList entry: mapped by absolute number
# TMDB's seasons as Serializd's show answer gives them (S1 = 1-61, S2 = 62-77 as the sample
# anibridge ranges have them; the later ones made up), after 10 specials: absolute 1100 is S23E12.
OP_SEASONS = {0: 10} | dict(enumerate((61, 16, 14, 39, 13, 52, 33, 35, 73, 45, 26, 14, 101, 56,
                                       100, 35, 62, 50, 118, 33, 98, 14, 194), 1))  # fmt: skip


async def test_one_piece_episode_1100_on_anilist_is_planned_as_serializds_s23e12(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    serializd.add_show(ONE_PIECE, "One Piece", OP_SEASONS)
    updated = int(time.time() - DAY)
    anilist.add_entry(OP, episodes=None, status="CURRENT", progress=1100, updated_at=updated)
    (planned,), _ = await plan_link(rig.runtime.config, rig.runtime.store, LINK)
    adds = [a for a in planned.plan.actions if a.target == "serializd" and a.kind == "add_play"]
    assert len(adds) == 1100
    assert [a.item for a in adds if a.at == updated] == [f"episode:tmdb:{ONE_PIECE}:s23e12"]


async def test_a_serializd_log_of_one_piece_s23e12_becomes_anilist_progress_1100(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    serializd.add_show(ONE_PIECE, "One Piece", OP_SEASONS)
    anilist.add_media(OP, episodes=None)
    serializd.log_entry(None, ONE_PIECE, 23, 12, backdate=iso(time.time() - DAY))
    await rig.sync_and_deliver()
    assert anilist.snapshot()[OP]["progress"] == 1100


async def test_a_serializd_rewatch_of_a_completed_entry_starts_one_on_anilist_and_settles(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    finished = time.time() - 30 * DAY
    for number in range(39, 51):  # Re:Zero S2 Part 2 episodes 1-12 on TMDB, a month ago
        serializd.log_entry(None, REZERO, 1, number, backdate=iso(finished - (50 - number) * 60))
    completed_entry(anilist, REZERO_P2, 12, finished)
    await rig.sync_and_deliver()
    for number in (39, 40):  # watched again three days ago
        serializd.log_entry(None, REZERO, 1, number, backdate=iso(time.time() - 3 * DAY + number))
    await rig.sync_and_deliver()
    assert status_of(anilist, REZERO_P2) == ("REPEATING", 2, 0)
    for full in (False, True):
        result = await rig.sync_and_deliver(full=full)
        assert [p.plan.actions for p in result.plans] == [()]
    assert len(logged(serializd, REZERO)) == 14


async def deliver_to(rig: Rig, names: list[str]) -> None:
    """Drain the outbox through some targets only (the others are down)."""
    targets = {name: rig.targets[name] for name in names}
    worker = DeliveryWorker(lambda _: list(targets.values()), rig.runtime.config.delivery)
    worker.targets = targets
    while await worker.pass_once(rig.runtime):
        pass


async def test_a_webhook_play_still_waiting_for_serializd_is_not_added_again_by_the_link(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    anilist.add_entry(
        REZERO_P2, status="CURRENT", progress=2, updated_at=int(time.time() - 5 * DAY)
    )
    for number in (39, 40):
        serializd.log_entry(None, REZERO, 1, number, backdate=iso(time.time() - 5 * DAY))
    await rig.sync_and_deliver()
    # Episode 3 (TMDB S1E41) watched two hours ago: the webhook queues it for both targets.
    item = MediaRef("episode", show_ids=Ids(tmdb=str(REZERO)), season=1, number=41)
    watched = MediaEvent(
        "generic", "played", item, account=Account("alice"), played=True,
        occurred_at=time.time() - 7200,
    )  # fmt: skip
    assert rig.runtime.store.ingest(ingest_job(rig.runtime, "me", watched)) == 2
    await deliver_to(rig, ["anilist"])  # Serializd is down meanwhile
    assert anilist.snapshot()[REZERO_P2]["progress"] == 3
    await run_link(rig.runtime.config, rig.runtime.store, LINK, yes=True, clock=time.time)
    await deliver_to(rig, ["serializd", "anilist"])
    assert logged(serializd, REZERO) == [(1, 39), (1, 40), (1, 41)]


async def part_two_finished(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList, days_ago: float
) -> None:
    """Re:Zero S2 Part 2 (TMDB S1E39-50) watched to its end on both sides, and linked (each
    episode logged in Serializd's app as it was watched)."""
    finished = time.time() - days_ago * DAY
    for number in range(39, 51):
        watched = iso(finished - (50 - number) * 60)
        serializd.log_entry(None, REZERO, 1, number, backdate=watched, date_added=watched)
    completed_entry(anilist, REZERO_P2, 12, finished)
    await rig.sync_and_deliver()


@pytest.mark.parametrize("status", ["PAUSED", "DROPPED"])
async def test_a_rewatch_paused_or_dropped_on_anilist_removes_nothing_from_serializd(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList, status: str
) -> None:
    await part_two_finished(rig, serializd, anilist, days_ago=30)
    entry = anilist.viewer.by_media(REZERO_P2)
    anilist.advance(60)
    entry.status, entry.progress, entry.updated_at = "REPEATING", 2, int(anilist.now())
    await rig.sync_and_deliver()
    assert len(logged(serializd, REZERO)) == 14  # the first viewing and two episodes again
    anilist.advance(60)
    entry.status, entry.updated_at = status, int(anilist.now())  # progress: the rewatch's 2
    for full in (False, True):
        result = await rig.sync_and_deliver(full=full)
        assert [p.plan.actions for p in result.plans] == [()]
    assert len(logged(serializd, REZERO)) == 14


async def test_an_episode_logged_again_on_serializd_is_not_copied_back_while_anilist_waits(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    # A finished part's episode 7 logged once more in Serializd's app: AniList's add waits a
    # while for an episode 1 (a rewatch starting?); a full run meanwhile must not read the
    # waiting play twice on AniList's side and copy one back to Serializd.
    await part_two_finished(rig, serializd, anilist, days_ago=30)
    serializd.log_entry(None, REZERO, 1, 45, backdate=iso(time.time() - 3 * DAY))
    for full in (False, True, False, True):
        await rig.sync_and_deliver(full=full)
    assert [r for r in serializd.diary() if "#watchbridge" in r.tags] == []
    assert logged(serializd, REZERO).count((1, 45)) == 2
    assert status_of(anilist, REZERO_P2) == ("COMPLETED", 12, 0)


def on_serializd(serializd: FakeSerializd) -> list[int]:
    """Re:Zero's TMDB S1 episodes Serializd holds as watched: ticked or in the diary."""
    ticked = {number for show, _, number in serializd.ticks() if show == REZERO}
    return sorted(ticked | {number for _, number in logged(serializd, REZERO)})


async def test_progress_lowered_on_anilist_before_any_full_read_stays_lowered(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    entry = anilist.add_entry(
        REZERO_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 3 * DAY)
    )
    await rig.sync_and_deliver()  # S1E39-42 ticked (undated), S1E43 in the diary
    assert on_serializd(serializd) == [39, 40, 41, 42, 43]
    anilist.advance(60)
    entry.progress, entry.updated_at = 3, int(anilist.now())  # a mis-click fixed
    await rig.sync_and_deliver()  # held: 2 of 5 removals
    await rig.sync_and_deliver(full=True, confirm_removals=True)
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert (status_of(anilist, REZERO_P2)[1], on_serializd(serializd)) == (3, [39, 40, 41])


async def test_an_entry_deleted_on_anilist_before_any_full_read_leaves_no_ticks(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    entry = anilist.add_entry(
        REZERO_P2, status="CURRENT", progress=3, updated_at=int(time.time() - 3 * DAY)
    )
    await rig.sync_and_deliver()
    del anilist.viewer.entries[entry.id]  # the title leaves the user's list
    await rig.sync_and_deliver(full=True, confirm_removals=True)
    await rig.sync_and_deliver(full=True)
    assert on_serializd(serializd) == []


async def test_a_removal_of_a_tick_not_read_back_yet_unticks_it(
    tmp_path: Path,
    serializd: FakeSerializd,
    anilist: FakeAniList,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = link_rig(tmp_path, serializd, anilist, monkeypatch, link_options=", max_removal_share: 1")
    try:
        entry = anilist.add_entry(
            REZERO_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 3 * DAY)
        )
        await rig.sync_and_deliver()
        anilist.advance(60)
        entry.progress, entry.updated_at = 3, int(anilist.now())
        await rig.sync_and_deliver()  # a delta run: S1E42 is still a play it expects
        assert on_serializd(serializd) == [39, 40, 41]
        assert rig.runtime.store.outbox_counts()["dead"] == 0
    finally:
        await rig.aclose()


def webhook_play(rig: Rig, number: int, at: float) -> int:
    """A generic webhook's play of Re:Zero's TMDB S1E`number`: rows queued."""
    item = MediaRef("episode", show_ids=Ids(tmdb=str(REZERO)), season=1, number=number)
    event = MediaEvent(
        "generic", "played", item, account=Account("alice"), played=True, occurred_at=at
    )
    return rig.runtime.store.ingest(ingest_job(rig.runtime, "me", event))


async def test_a_webhook_rewatch_delivered_to_both_is_not_logged_again_by_the_next_runs(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    # A finished part watched again tonight (episodes 1-3): Serializd takes three rewatch
    # entries, AniList a REPEATING 3; a delta read must see our entries, not only AniList's.
    await part_two_finished(rig, serializd, anilist, days_ago=30)
    for i, number in enumerate((39, 40, 41)):
        assert webhook_play(rig, number, time.time() - 3600 + i * 1500) == 2
    await deliver_to(rig, ["serializd", "anilist"])
    assert len(logged(serializd, REZERO)) == 15
    for full in (False, True):
        assert (await rig.sync_and_deliver(full=full)).queued == 0
    assert len(logged(serializd, REZERO)) == 15
    assert status_of(anilist, REZERO_P2) == ("REPEATING", 3, 0)


async def test_a_webhook_rewatch_of_days_ago_is_dated_on_anilist_by_when_it_was_watched(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    # A script (or AniList back from a two-day outage) brings a rewatch of two days ago:
    # AniList counts it now, Serializd logs it then; a full run must pair the two.
    await part_two_finished(rig, serializd, anilist, days_ago=30)
    assert webhook_play(rig, 39, time.time() - 2 * DAY) == 2
    await deliver_to(rig, ["serializd", "anilist"])
    assert status_of(anilist, REZERO_P2) == ("REPEATING", 1, 0)
    assert (await rig.sync_and_deliver(full=True)).queued == 0
    assert len(logged(serializd, REZERO)) == 13


async def test_a_webhook_plays_time_dates_one_step_only(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    # The last episode watched by webhook three days ago; today a rewatch of the whole part
    # on AniList: its E50 is today's, not the first viewing's (which would hide it).
    finished = time.time() - 30 * DAY
    for number in range(39, 50):
        serializd.log_entry(None, REZERO, 1, number, backdate=iso(finished - (50 - number) * 60))
    entry = anilist.add_entry(REZERO_P2, status="CURRENT", progress=11, updated_at=int(finished))
    await rig.sync_and_deliver()
    assert webhook_play(rig, 50, time.time() - 3 * DAY) == 2
    await deliver_to(rig, ["serializd", "anilist"])
    assert (await rig.sync_and_deliver()).queued == 0
    anilist.advance(3600)
    entry.repeat, entry.updated_at = 1, int(anilist.now())
    await rig.sync_and_deliver()
    assert logged(serializd, REZERO).count((1, 50)) == 2
    assert len(logged(serializd, REZERO)) == 24


async def test_a_delivery_ledger_changed_but_not_grown_is_still_a_change(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    # One of our entries removed and another written between two runs: the count is the same.
    anilist.add_entry(REZERO_P2, status="CURRENT", progress=1, updated_at=int(time.time() - DAY))
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()  # reads back our own write
    assert (await rig.sync_and_deliver()).plans[0].unchanged
    store = rig.runtime.store
    ledger = store.mirror_get("serializd", "me", "plays")
    assert len(ledger) == 1
    (key, value), review = next(iter(ledger.items())), serializd.diary()[0].id
    store.mirror_put("serializd", "me", "plays", {key: {**value, "review_id": None}}, time.time())
    store.mirror_put("serializd", "me", "plays", {f"{key}x": {"review_id": review}}, time.time())
    (plan,) = (await rig.sync_and_deliver()).plans
    assert not plan.unchanged


async def test_a_webhook_play_after_a_quiet_week_is_dated_by_its_webhook_too(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    # Pruning a quiet week's rows lets SQLite hand out their ids again: a play must not be
    # taken for one whose time already dated a step.
    await part_two_finished(rig, serializd, anilist, days_ago=60)
    assert webhook_play(rig, 39, time.time() - 2 * DAY) == 2
    await deliver_to(rig, ["serializd", "anilist"])
    assert (await rig.sync_and_deliver(full=True)).queued == 0
    rig.runtime.store.prune(time.time() + 8 * DAY, KEEP_DONE, KEEP_SESSIONS)
    assert (await rig.sync_and_deliver()).queued == 0
    assert webhook_play(rig, 40, time.time() - 2 * DAY) == 2
    await deliver_to(rig, ["serializd", "anilist"])
    assert (await rig.sync_and_deliver(full=True)).queued == 0
    assert len(logged(serializd, REZERO)) == 14
