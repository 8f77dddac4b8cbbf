"""A viewing going round a household: AniList ⇄ Trakt, AniList ⇄ Serializd and Trakt ⇄ Serializd,
each link run in turn against the fakes, as the scheduler may order them. A write of ours to
AniList (a score, a play) moves the entry's `updatedAt`; a link reading the entry after it
must still date the entry's viewings as the user watched them, or Trakt ⇄ Serializd finds
the one viewing days apart on its two sides and copies it both ways (a second diary entry)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt, parse_iso
from tests.household import (
    AOT,
    AOT_P2,
    DAY,
    HouseholdRig,
    open_household,
    start_anilist_with_aot_part_2,
    use_fast_readers,
)
from tests.linkrig_anilist import iso
from tests.test_anilist_viewings import as_the_release_before_the_chains_reads
from tests.test_link_anilist import rate_on_trakt, trakt_plays
from tests.test_sync_scenarios import TraktApp
from watchbridge import anilist_viewings
from watchbridge.deliver.anilist import VIEWED
from watchbridge.http import RetryPolicy
from watchbridge.services.anilist import ListEntry

pytestmark = pytest.mark.anyio

FIRST = 16  # TMDB S4 number before Part 2's episode 1
LINKS = ("trakt-serializd", "anilist-trakt", "anilist-serializd")


class Household(HouseholdRig):
    TARGETS = ("trakt", "serializd", "anilist")

    async def round(self, links: Sequence[str] = LINKS) -> None:
        """Each link run once, its rows delivered before the next runs."""
        await self.run_in_turn(links)

    def diary_entries(self, episode: int) -> int:
        """Serializd diary entries of AniList episode `episode` of Part 2."""
        return len(self.diary_dates(episode))

    def diary_dates(self, episode: int) -> list[float]:
        """The watch dates of those entries."""
        season = self.fakes["serializd"].shows[AOT].seasons[4].id
        return [
            parse_iso(r.backdate or r.date_added)
            for r in self.fakes["serializd"].diary()
            if (r.season_id, r.episode_number) == (season, FIRST + episode)
        ]

    def trakt_plays(self, episode: int) -> int:
        return sum(1 for _, n, _ in trakt_plays(self.fakes["trakt"], AOT) if n == FIRST + episode)


@pytest.fixture
def fakes(start_fake: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    use_fast_readers(monkeypatch, ("anilist", "trakt", "serializd"))
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    anilist = start_anilist_with_aot_part_2(start_fake)
    trakt.add_show("Attack on Titan", 2013, tmdb=AOT, seasons={4: 30})
    serializd.add_show(AOT, "Attack on Titan", {4: 30})
    return {"trakt": trakt, "serializd": serializd, "anilist": anilist}


@pytest.fixture
async def household(tmp_path: Path, fakes: dict[str, Any]) -> AsyncIterator[Household]:
    async with open_household(Household, tmp_path, fakes, LINKS) as house:
        yield house


async def test_a_score_we_write_to_anilist_does_not_redate_its_last_episode(
    household: Household, fakes: dict[str, Any]
) -> None:
    # Episode 5 watched three days ago (AniList's last update); Trakt holds the season's
    # rating, which AniList ⇄ Trakt writes as the entry's score: its `updatedAt` is now ours.
    # AniList ⇄ Serializd, reading the entry for the first time after that, dated episode 5
    # now, so Trakt ⇄ Serializd found it three days apart on its two sides.
    await household.round(("trakt-serializd",))  # the link has met both sides already
    fakes["anilist"].add_entry(
        AOT_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 3 * DAY)
    )
    season = next(s for s in fakes["trakt"].shows if s.tmdb == AOT).seasons[4]
    rate_on_trakt(fakes["trakt"], season, 8, ago=DAY)
    for _ in range(2):
        await household.round()
    assert fakes["anilist"].snapshot()[AOT_P2]["score"] == 80  # our write moved updatedAt
    assert (household.diary_entries(5), household.trakt_plays(5)) == (1, 1)
    assert household.diary_dates(5) == [pytest.approx(time.time() - 3 * DAY, abs=120)]


@pytest.mark.parametrize(
    "order",
    [LINKS, ("anilist-trakt", "anilist-serializd", "trakt-serializd")],
    ids=["trakt-serializd-first", "anilist-links-first"],
)
async def test_a_play_of_another_link_we_write_to_anilist_keeps_its_date(
    household: Household, fakes: dict[str, Any], order: Sequence[str]
) -> None:
    # Episode 6, watched two days ago, logged on Trakt: AniList ⇄ Trakt raises the entry's
    # progress to 6 now. AniList ⇄ Serializd saw that step dated now, two days from the play
    # Trakt (and Serializd, from Trakt ⇄ Serializd) holds: copied as a second viewing.
    fakes["anilist"].add_entry(
        AOT_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 3 * DAY)
    )
    await household.round()
    assert (household.diary_entries(5), household.trakt_plays(5)) == (1, 1)
    show = next(s for s in fakes["trakt"].shows if s.tmdb == AOT)
    fakes["trakt"].log_play(show.episode(4, FIRST + 6), iso(time.time() - 2 * DAY))
    for _ in range(2):
        await household.round(order)
    assert fakes["anilist"].snapshot()[AOT_P2]["progress"] == 6
    assert (household.diary_entries(6), household.trakt_plays(6)) == (1, 1)
    assert household.diary_dates(6) == [pytest.approx(time.time() - 2 * DAY, abs=120)]


async def test_a_play_we_write_to_anilist_is_dated_by_the_release_before_too(
    household: Household, fakes: dict[str, Any]
) -> None:
    # Rolled back after AniList ⇄ Trakt saved episode 6 (watched two days ago), the release
    # before the chains of notes reads what this one kept: it must date the viewing the entry
    # shows two days ago too, or its AniList ⇄ Serializd copies episode 6 dated today and its
    # Trakt ⇄ Serializd a second viewing both ways (seen over the fakes with 9fe78ca).
    fakes["anilist"].add_entry(
        AOT_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 3 * DAY)
    )
    await household.round()
    show = next(s for s in fakes["trakt"].shows if s.tmdb == AOT)
    watched = time.time() - 2 * DAY
    fakes["trakt"].log_play(show.episode(4, FIRST + 6), iso(watched))
    await household.round(("anilist-trakt",))
    shown = fakes["anilist"].snapshot()[AOT_P2]
    assert shown["progress"] == 6
    read = ListEntry(1, AOT_P2, shown["status"], 6, updated_at=float(shown["updatedAt"]))
    kept = household.runtime.store.cache_items(VIEWED, time.time())
    assert [key for key, _ in kept] == [f"me:{AOT_P2}"]
    dated = as_the_release_before_the_chains_reads(read, kept[0][1])
    assert dated == pytest.approx(watched, abs=120)


@pytest.mark.parametrize("runs", [1, 2], ids=["written-together", "written-runs-apart"])
async def test_several_plays_we_write_to_anilist_keep_each_its_own_date(
    household: Household, fakes: dict[str, Any], runs: int
) -> None:
    # Episodes 6 and 7, watched two days and one day ago, logged on Trakt: AniList ⇄ Trakt
    # raises the entry's progress to 6, then 7. AniList ⇄ Serializd, reading the step 5 -> 7
    # at once, dated both episodes by the last save's viewing: episode 6 a day late.
    fakes["anilist"].add_entry(
        AOT_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 3 * DAY)
    )
    await household.round()
    show = next(s for s in fakes["trakt"].shows if s.tmdb == AOT)
    watched = {6: time.time() - 2 * DAY, 7: time.time() - DAY}
    for episodes in ([6, 7],) if runs == 1 else ([6], [7]):
        for episode in episodes:
            fakes["trakt"].log_play(show.episode(4, FIRST + episode), iso(watched[episode]))
        await household.round(("anilist-trakt",))
        fakes["anilist"].advance(60)  # a later run's save is dated later
    assert fakes["anilist"].snapshot()[AOT_P2]["progress"] == 7
    for _ in range(2):
        await household.round(("anilist-serializd", "trakt-serializd", "anilist-trakt"))
    for episode, at in watched.items():
        assert household.diary_dates(episode) == [pytest.approx(at, abs=120)], episode
        assert household.trakt_plays(episode) == 1, episode


async def test_a_progress_drop_we_write_leaves_the_new_last_episode_its_date(
    household: Household, fakes: dict[str, Any]
) -> None:
    # Episodes 10 and 11, watched two days and one day ago, logged on Trakt and written to
    # AniList; episode 11 then removed on Trakt, so AniList ⇄ Trakt lowers the progress to
    # 10 (one play of eleven: no mass removal).
    # AniList ⇄ Serializd, reading the entry for the first time after that drop, dated its
    # new last episode by the drop: now, not when episode 10 was watched.
    fakes["anilist"].add_entry(
        AOT_P2, status="CURRENT", progress=9, updated_at=int(time.time() - 3 * DAY)
    )
    await household.round(("anilist-trakt",))
    show = next(s for s in fakes["trakt"].shows if s.tmdb == AOT)
    watched = {10: time.time() - 2 * DAY, 11: time.time() - DAY}
    plays = {
        n: fakes["trakt"].log_play(show.episode(4, FIRST + n), iso(at)) for n, at in watched.items()
    }
    await household.round(("anilist-trakt",))
    app = TraktApp(fakes["trakt"])
    app.unwatch(plays[11])
    app.http.close()
    fakes["anilist"].advance(60)  # the drop is saved later than the plays
    await household.round(("anilist-trakt",))
    assert fakes["anilist"].snapshot()[AOT_P2]["progress"] == 10
    for _ in range(2):
        await household.round(("anilist-serializd", "trakt-serializd", "anilist-trakt"))
    assert household.diary_dates(10) == [pytest.approx(watched[10], abs=120)]
    assert (household.trakt_plays(10), household.diary_entries(11), household.trakt_plays(11)) == (
        1,
        0,
        0,
    )


async def test_a_play_whose_anilist_answer_was_lost_keeps_its_date(
    household: Household, fakes: dict[str, Any]
) -> None:
    # Episode 6, watched two days ago, logged on Trakt: AniList ⇄ Trakt's save lands on
    # AniList but its answer never comes (every try of the run), so the row is tried again
    # later and finds the entry already showing it. Nothing noted that save: AniList ⇄
    # Serializd dated episode 6 by its `updatedAt`, today, two days from Trakt's play.
    fakes["anilist"].add_entry(
        AOT_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 3 * DAY)
    )
    await household.round()
    show = next(s for s in fakes["trakt"].shows if s.tmdb == AOT)
    watched = time.time() - 2 * DAY
    fakes["trakt"].log_play(show.episode(4, FIRST + 6), iso(watched))
    household.targets["anilist"].client.http.retry = RetryPolicy(attempts=3, backoff=0.0)
    fakes["anilist"].lose_answers("SaveMediaListEntry", 3)
    await household.round(("anilist-trakt",))
    assert fakes["anilist"].snapshot()[AOT_P2]["progress"] == 6  # saved, never heard of
    household.runtime.store.db.execute("UPDATE outbox SET next_attempt_at = 0")
    await household.deliver()
    assert household.runtime.store.outbox_counts()["done"] >= 1
    for _ in range(2):
        await household.round(("anilist-serializd", "trakt-serializd", "anilist-trakt"))
    assert household.diary_dates(6) == [pytest.approx(watched, abs=120)]
    assert household.trakt_plays(6) == 1


async def test_a_score_whose_anilist_answer_was_lost_does_not_redate_its_last_episode(
    household: Household, fakes: dict[str, Any]
) -> None:
    # As test_a_score_we_write_to_anilist_does_not_redate_its_last_episode, but the score's
    # save lands without an answer: tried again, AniList already shows it and nothing is saved
    # or noted, so its `updatedAt` dated episode 5 today.
    await household.round(("trakt-serializd",))
    fakes["anilist"].add_entry(
        AOT_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 3 * DAY)
    )
    season = next(s for s in fakes["trakt"].shows if s.tmdb == AOT).seasons[4]
    rate_on_trakt(fakes["trakt"], season, 8, ago=DAY)
    household.targets["anilist"].client.http.retry = RetryPolicy(attempts=3, backoff=0.0)
    fakes["anilist"].lose_answers("SaveMediaListEntry", 3)
    await household.round(("anilist-trakt",))
    assert fakes["anilist"].snapshot()[AOT_P2]["score"] == 80  # saved, never heard of
    household.runtime.store.db.execute("UPDATE outbox SET next_attempt_at = 0")
    await household.deliver()
    for _ in range(2):
        await household.round(("anilist-serializd", "trakt-serializd", "anilist-trakt"))
    assert (household.diary_entries(5), household.trakt_plays(5)) == (1, 1)
    assert household.diary_dates(5) == [pytest.approx(time.time() - 3 * DAY, abs=120)]


async def test_plays_past_the_notes_kept_are_undated_not_dated_by_our_save(
    household: Household, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long run of our saves between two reads of a link (One Piece written over weeks while
    # AniList ⇄ Serializd was off) keeps its last MAX_NOTES notes (2 here, for four saves).
    # The episodes below them were dated by the oldest save kept's predecessor, a save of
    # ours: the time we wrote it, not when they were watched, so AniList ⇄ Serializd logged
    # them a second time next to Trakt ⇄ Serializd's copies.
    monkeypatch.setattr(anilist_viewings, "MAX_NOTES", 2)
    fakes["anilist"].add_entry(
        AOT_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 9 * DAY)
    )
    await household.round()
    show = next(s for s in fakes["trakt"].shows if s.tmdb == AOT)
    watched = {n: time.time() - (10 - n) * DAY for n in (6, 7, 8, 9)}
    for episode, at in watched.items():
        fakes["trakt"].log_play(show.episode(4, FIRST + episode), iso(at))
        await household.round(("anilist-trakt",))
        fakes["anilist"].advance(3600)
    assert fakes["anilist"].snapshot()[AOT_P2]["progress"] == 9
    for _ in range(2):
        await household.round(("trakt-serializd", "anilist-serializd", "anilist-trakt"))
    for episode, at in watched.items():
        assert household.diary_dates(episode) == [pytest.approx(at, abs=120)], episode
        assert household.trakt_plays(episode) == 1, episode


async def test_a_users_tick_between_our_saves_leaves_our_earlier_episode_its_date(
    household: Household, fakes: dict[str, Any]
) -> None:
    # AniList ⇄ Trakt writes episode 6 (watched three days ago), the user ticks 7 on AniList,
    # AniList ⇄ Trakt writes 8. The user's tick ended the chain of our saves, so AniList ⇄
    # Serializd, reading 5 -> 8 at once, dated episode 6 by the tick, not by its play.
    fakes["anilist"].add_entry(
        AOT_P2, status="CURRENT", progress=5, updated_at=int(time.time() - 9 * DAY)
    )
    await household.round()
    show = next(s for s in fakes["trakt"].shows if s.tmdb == AOT)
    fakes["trakt"].log_play(show.episode(4, FIRST + 6), iso(time.time() - 3 * DAY))
    await household.round(("anilist-trakt",))
    fakes["anilist"].advance(3600)
    entry = fakes["anilist"].viewer.by_media(AOT_P2)
    entry.progress, entry.updated_at = 7, int(fakes["anilist"].now())  # ticked on AniList
    fakes["anilist"].advance(3600)
    fakes["trakt"].log_play(show.episode(4, FIRST + 8), iso(time.time() - DAY))
    await household.round(("anilist-trakt",))
    assert fakes["anilist"].snapshot()[AOT_P2]["progress"] == 8
    for _ in range(2):
        await household.round(("anilist-serializd", "trakt-serializd", "anilist-trakt"))
    for episode in (6, 7, 8):
        assert (household.diary_entries(episode), household.trakt_plays(episode)) == (1, 1)
    assert household.diary_dates(6) == [pytest.approx(time.time() - 3 * DAY, abs=120)]


async def test_old_plays_another_link_wrote_to_trakt_reach_serializd_at_the_next_run(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    # The first day (test_walkthrough_first_day.py): Part 2 finished on AniList two years ago,
    # Trakt holds its first 6 episodes from then. AniList ⇄ Trakt adds the other 6 to Trakt,
    # the last dated by the entry's last change, the others undated: all older than the week
    # Trakt ⇄ Serializd's runs read again. Its next run (not the daily full read) must take
    # them: another link's writes are news to it, not writes of its own.
    finished = time.time() - 730 * DAY
    show = next(s for s in fakes["trakt"].shows if s.tmdb == AOT)
    for n in range(1, 7):
        fakes["trakt"].add_history(show.episode(4, FIRST + n), iso(finished - (12 - n) * 3600))
    fakes["anilist"].add_entry(AOT_P2, status="COMPLETED", progress=12, updated_at=int(finished))
    links = ("trakt-serializd", "anilist-trakt")
    async with open_household(Household, tmp_path, fakes, links) as household:
        await household.run_in_turn(links)
        assert [household.trakt_plays(n) for n in range(1, 13)] == [1] * 12
        await household.run_in_turn(("trakt-serializd",))
        dated = [n for n in range(1, 13) if household.diary_entries(n)]
        assert dated == [1, 2, 3, 4, 5, 6, 12]
        assert household.diary_dates(12) == [pytest.approx(finished, abs=120)]
        assert all(household.diary_entries(n) == 1 for n in dated)
        ticked = {n - FIRST for s, _, n in fakes["serializd"].ticks() if s == AOT}
        assert ticked == set(range(1, 13))
        before = len(fakes["serializd"].diary())
        await household.run_in_turn(links)  # settled: nothing more anywhere
        assert len(fakes["serializd"].diary()) == before
        assert [household.trakt_plays(n) for n in range(1, 13)] == [1] * 12
