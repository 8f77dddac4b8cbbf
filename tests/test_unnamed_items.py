"""An item one side can no longer name is not its plays, ratings or watchlist entry removed.

A link reads each side, diffs it with the last read and carries what is gone to the other
side. An item the service still holds but watchbridge can no longer key (Plex's "Unmatch",
a Fix Match or refresh that drops the external ids for a while, an anime mapping refresh
without the entry, a Trakt show whose TMDB id goes) must not read as the user's plays and
ratings of it removed: that would delete them on the other side. Each test does the user's
(or the service's) thing against the fakes and looks at what they hold afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import FakePlex
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.linkrig import Rig
from tests.test_link_plex_serializd import link_config, sync
from tests.test_sync_scenarios import (
    log,
)
from tests.unpaced import unpaced_while
from watchbridge import readers
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.sync import run_link
from watchbridge.wiring import build_runtime, make_targets


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    """The clients' pacing lifted: these tests are about
    what the links copy, not the services' pace."""
    with unpaced_while("trakt", "serializd"):
        yield


HOUR = 3600.0
BCS = 60059  # Better Call Saul's TMDB id


# --------------------------------------------------------------------------- Plex


def plex_with_two_shows(start_fake: Any) -> tuple[FakePlex, FakeSerializd]:
    """Ten episodes of Breaking Bad and one of Better Call Saul watched in Plex, the last one
    rated (one play of eleven: within the default removal share)."""
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    serializd.add_show(BCS, "Better Call Saul", {1: 10})
    plex.add_show("20", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    for n in range(1, 11):
        plex.add_episode(str(100 + n), "20", 2, n)
        plex.watch(str(100 + n), time.time() - 40 * HOUR + n * HOUR)
    plex.add_show("30", "Better Call Saul", 2015, ["tmdb://60059", "tvdb://273181"])
    plex.add_episode("301", "30", 1, 1)
    plex.watch("301", time.time() - 50 * HOUR)
    plex.rate("301", 8.0, time.time() - 50 * HOUR)
    plex.add_episode("302", "30", 1, 2)
    return plex, serializd


def unmatch(plex: FakePlex, rating_key: str) -> dict[str, Any]:
    """Plex's "Unmatch": the item keeps its ratingKey, its history and its watched state, and
    loses its external ids (a `local://` guid, no `Guid` list). What it had, to match again."""
    item = plex.items[rating_key]
    had = {"guid": item["guid"], "Guid": item.pop("Guid")}
    item["guid"] = f"local://{rating_key}"
    return had


def bcs_on_serializd(serializd: FakeSerializd) -> list[tuple[int, int]]:
    """Better Call Saul's diary rows: (episode, rating)."""
    return [(r.episode_number or 0, r.rating) for r in serializd.diary() if r.show_id == BCS]


def test_a_show_unmatched_in_plex_keeps_its_plays_and_rating_on_serializd(
    tmp_path: Path, start_fake: Any
) -> None:
    plex, serializd = plex_with_two_shows(start_fake)
    path = link_config(tmp_path, plex, serializd)
    sync(path)
    # S1E2 logged on Serializd: the link plays it in Plex (a play watchbridge wrote there).
    serializd.log_entry(None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z")
    sync(path)
    assert len(plex.history_of("302")) == 1
    before = bcs_on_serializd(serializd)
    assert sorted(before) == [(1, 0), (1, 8), (2, 0)]  # plays, a rating
    had = unmatch(plex, "30")

    said = sync(path) + sync(path)

    assert bcs_on_serializd(serializd) == before, said  # nothing of it removed
    assert len(serializd.diary()) == 13
    # Matched again: nothing is written either way, nor played twice in Plex.
    plex.items["30"].update(had)
    sync(path)
    assert bcs_on_serializd(serializd) == before and len(serializd.diary()) == 13
    assert len(plex.history_of("301")) == 1 and len(plex.history_of("302")) == 1


@dataclass
class Days:
    """Every party's clock (the link's, the deliveries', the fake Plex's), `days` ahead."""

    days: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.days * 24 * HOUR


@pytest.mark.anyio
async def test_a_show_unmatched_days_after_a_play_was_written_to_it_keeps_that_play(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Days after the link played S1E2 in Plex (from Serializd), the show is unmatched, then
    # matched again. While unmatched it is no TMDB item, but still listed and watched: the
    # play written to it is still there. Read as unwatched, it was gone for good once matched
    # again, and the link deleted the user's own Serializd entry of it.
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    plex, serializd = plex_with_two_shows(start_fake)
    clock = Days()
    plex.clock = clock
    monkeypatch.setattr(serializd, "date_clock", clock)
    config = load_config(link_config(tmp_path, plex, serializd), {})
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}

    async def run() -> int:
        # In full, as the daily read does: the days between hold one each.
        result = await run_link(
            config, runtime.store, "plex-serializd", yes=True, full=True, clock=clock
        )
        while await worker.pass_once(runtime):
            pass
        return result.queued

    try:
        await run()
        serializd.log_entry(None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z")
        await run()
        assert len(plex.history_of("302")) == 1  # the play the link wrote to Plex
        clock.days = 1
        assert await run() == 0  # the next day's read: read back as that play
        before = bcs_on_serializd(serializd)
        clock.days = 2
        had = unmatch(plex, "30")
        assert [await run(), await run()] == [0, 0]
        plex.items["30"].update(had)
        clock.days = 3

        queued = [await run(), await run(), await run()]

        assert bcs_on_serializd(serializd) == before and len(serializd.diary()) == 13
        assert queued == [0, 0, 0]
        assert len(plex.history_of("302")) == 1
        assert plex.user_state("302")["viewCount"] == 1
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


# --------------------------------------------------------------------------- Trakt


@pytest.fixture
def trakt(trakt: FakeTrakt) -> FakeTrakt:
    """The shared Breaking Bad Trakt (tests/conftest.py), knowing Better Call Saul too."""
    trakt.add_show("Better Call Saul", 2015, tmdb=BCS, tvdb=273181, seasons={1: 10})
    return trakt


@pytest.fixture
def serializd(serializd: FakeSerializd) -> FakeSerializd:
    """The shared Breaking Bad Serializd (tests/conftest.py), knowing Better Call Saul too."""
    serializd.add_show(BCS, "Better Call Saul", seasons={1: 10})
    return serializd


def trakt_show(trakt: FakeTrakt, tmdb: int) -> Any:
    return next(show for show in trakt.shows if show.tmdb == tmdb)


@pytest.mark.anyio
async def test_a_trakt_show_that_loses_its_tmdb_id_keeps_its_plays_and_rating_on_serializd(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, caplog: pytest.LogCaptureFixture
) -> None:
    """TMDB merges or deletes a show's entry, and Trakt answers the show without `tmdb` for
    a while: its plays and rating are still on Trakt, only watchbridge cannot key them."""
    for n in range(1, 8):
        log(serializd, 1, n, f"2024-01-0{n}T20:00:00.000Z", rating=6 + (n < 4))
    for n in range(1, 4):
        serializd.log_entry(None, BCS, 1, n, backdate=f"2024-02-0{n}T20:00:00.000Z")
    serializd.log_entry(None, BCS, 1, 1, rating=8, is_log=False, date_added="2024-05-01T20:00:00Z")
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)  # the copies read back from Trakt
    assert len(trakt.history()) == 10 and trakt_bcs_rating(trakt) == 8
    assert len(bcs_diary(serializd)) == 4
    show = trakt_show(trakt, BCS)
    show.tmdb = None
    caplog.clear()

    for full in (True, False):
        result = await rig.sync_and_deliver(full=full)
        (planned,) = result.plans
        assert planned.plan.held == ""

    assert len(bcs_diary(serializd)) == 4  # nothing of it removed
    assert diary_rating_of(serializd, BCS, 1, 1) == 8
    assert len(trakt.history()) == 10 and trakt_bcs_rating(trakt) == 8
    assert trakt.count("POST", "/sync/history/remove") == 0
    told = [r for r in caplog.records if "Trakt no longer gives the TMDB id" in r.getMessage()]
    assert len(told) == 1 and told[0].levelname == "WARNING"  # once, not at every run
    assert "it gave before for Better Call Saul: their plays and ratings" in told[0].getMessage()
    # Trakt gives the id again: nothing was forgotten, nothing is written twice.
    show.tmdb = BCS
    await rig.sync_and_deliver(full=True)
    assert len(bcs_diary(serializd)) == 4 and len(trakt.history()) == 10
    assert diary_rating_of(serializd, BCS, 1, 1) == 8 and trakt_bcs_rating(trakt) == 8


def bcs_diary(serializd: FakeSerializd) -> list[Any]:
    return [r for r in serializd.diary() if r.show_id == BCS]


def diary_rating_of(serializd: FakeSerializd, show: int, season: int, number: int) -> int | None:
    rows = [
        r
        for r in serializd.diary()
        if r.show_id == show and r.episode_number == number and r.rating
    ]
    return max(rows, key=lambda r: (r.date_added, r.id)).rating if rows else None


def trakt_bcs_rating(trakt: FakeTrakt) -> int | None:
    show = next(show for show in trakt.shows if show.title == "Better Call Saul")
    found = [r.rating for r in trakt.ratings() if getattr(r.item, "show", None) is show]
    return found[0] if found else None


# --------------------------------------------------------------------------- AniList


REZERO, AOT = 65942, 1429  # TMDB shows = Serializd show ids
REZERO_P2, AOT_P2 = 119661, 131681  # AniList entries mapped to TMDB S1E39-50 and S4E17-28


def a_refresh_without(
    monkeypatch: pytest.MonkeyPatch, dropped: int, to: tuple[int, int, int] | None = None
) -> None:
    """A mapping dataset refresh no longer maps AniList `dropped` (either way), or (`to`:
    TMDB show, season, first episode) maps it elsewhere."""
    from tests import linkrig_anilist
    from watchbridge.anime import EpisodeRef, Forward, Unmatched
    from watchbridge.model import MediaRef

    mapper, reverse = linkrig_anilist.sample_mapper, linkrig_anilist.sample_reverse

    async def refreshed_mapper() -> Any:
        forward = await mapper()

        def mapped(anilist: int, episode: int, total: int | None) -> Forward:
            if anilist != dropped:
                return forward(anilist, episode, total)
            if to is None:
                return Unmatched(f"AniList {anilist} is in no dataset", "unknown")
            return EpisodeRef("tmdb", to[0], to[1], to[2] + episode - 1, False, "override")

        return mapped

    async def refreshed_reverse() -> Any:
        back = await reverse()

        def mapped(ref: MediaRef) -> Any:
            hit = back(ref)
            if isinstance(hit, tuple) and hit[0] == dropped:
                return Unmatched("in no dataset", "unknown")
            return hit

        return mapped

    monkeypatch.setattr(linkrig_anilist, "sample_mapper", refreshed_mapper)
    monkeypatch.setattr(linkrig_anilist, "sample_reverse", refreshed_reverse)


@pytest.fixture
def anime_serializd(start_fake: Any) -> FakeSerializd:
    fake: FakeSerializd = start_fake(FakeSerializd())
    fake.add_show(REZERO, "Re:ZERO", {1: 66, 2: 25})
    fake.add_show(AOT, "Attack on Titan", {1: 25, 2: 12, 3: 22, 4: 30})
    return fake


@pytest.fixture
def anilist(start_fake: Any) -> Any:
    from tests.test_link_anilist_serializd import started_anilist

    fake = started_anilist(start_fake)
    fake.add_media(AOT_P2, episodes=12)
    return fake


def anime_held(serializd: FakeSerializd, show: int) -> tuple[int, int]:
    """How many diary logs and ticked episodes Serializd holds of `show` (AniList dates an
    entry's last episode only: the others are ticked, watched without a date)."""
    logs = sum(1 for r in serializd.diary() if r.show_id == show and r.is_log)
    return logs, sum(1 for tick in serializd.ticks() if tick[0] == show)


@pytest.mark.anyio
@pytest.mark.parametrize("to", [None, (REZERO, 2, 1)], ids=["dropped", "mapped-elsewhere"])
async def test_an_anime_entry_a_mapping_refresh_no_longer_places_keeps_its_plays_on_serializd(
    tmp_path: Path,
    anime_serializd: FakeSerializd,
    anilist: Any,
    monkeypatch: pytest.MonkeyPatch,
    to: tuple[int, int, int] | None,
) -> None:
    from tests.linkrig_anilist import completed_entry
    from tests.test_link_anilist_serializd import link_rig

    serializd = anime_serializd
    rig = link_rig(
        tmp_path, serializd, anilist, monkeypatch, link_options=", max_removal_share: 0.6"
    )
    try:
        completed_entry(anilist, REZERO_P2, 12, time.time() - 20 * 86400)
        completed_entry(anilist, AOT_P2, 12, time.time() - 10 * 86400)
        await rig.sync_and_deliver()
        await rig.sync_and_deliver(full=True)
        held = anime_held(serializd, REZERO), anime_held(serializd, AOT)
        assert held[1][1] == 12, held
        a_refresh_without(monkeypatch, AOT_P2, to)
        for _ in range(2):
            result = await rig.sync_and_deliver(full=True)
            (planned,) = result.plans
            assert planned.plan.held == ""
        assert anime_held(serializd, AOT) == held[1]  # nothing of it removed
    finally:
        await rig.aclose()
