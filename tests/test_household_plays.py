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

from tests.fakes.anilist import FakeAniList
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, parse_iso
from tests.harness import sign_in_trakt
from tests.linkrig import fast_serializd, fast_trakt
from tests.linkrig_anilist import anilist_target, iso
from tests.test_link_anilist import rate_on_trakt, trakt_plays
from watchbridge import readers
from watchbridge.app import Runtime
from watchbridge.config import Config, parse_config
from watchbridge.deliver.serializd import SerializdTarget
from watchbridge.deliver.trakt import TraktTarget
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.sync import run_link
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

AOT, AOT_P2 = 1429, 131681  # TMDB show; AniList: Final Season Part 2 = TMDB S4E17-28
FIRST = 16  # TMDB S4 number before Part 2's episode 1
DAY = 86400.0
LINKS = ("trakt-serializd", "anilist-trakt", "anilist-serializd")


class Household:
    def __init__(self, config: Config, runtime: Runtime, fakes: dict[str, Any]) -> None:
        self.config, self.runtime, self.fakes = config, runtime, fakes
        store = runtime.store
        self.targets = {
            "trakt": TraktTarget(fast_trakt(config, store), store, config.delivery, time.time),
            "serializd": SerializdTarget(
                fast_serializd(config, store), store, config.delivery, time.time
            ),
            "anilist": anilist_target(config, store, "anilist-trakt"),
        }

    async def round(self, links: Sequence[str] = LINKS) -> None:
        """Each link run once, its rows delivered before the next runs."""
        for link in links:
            await run_link(self.config, self.runtime.store, link, yes=True)
            worker = DeliveryWorker(lambda _: list(self.targets.values()), self.config.delivery)
            worker.targets = dict(self.targets)
            for _ in range(20):
                if not await worker.pass_once(self.runtime):
                    break

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
    monkeypatch.setitem(readers.READERS, "anilist", "tests.linkrig_anilist")
    monkeypatch.setitem(readers.READERS, "trakt", "tests.linkrig_trakt")
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    anilist = start_fake(FakeAniList())
    anilist.limit = anilist.burst_limit = 100_000
    anilist.add_media(AOT_P2, episodes=12)
    trakt.add_show("Attack on Titan", 2013, tmdb=AOT, seasons={4: 30})
    serializd.add_show(AOT, "Attack on Titan", {4: 30})
    return {"trakt": trakt, "serializd": serializd, "anilist": anilist}


@pytest.fixture
async def household(tmp_path: Path, fakes: dict[str, Any]) -> AsyncIterator[Household]:
    trakt, serializd, anilist = fakes["trakt"], fakes["serializd"], fakes["anilist"]
    links = "\n".join(
        f"  {name}: {{services: [{name.replace('-', ', ')}], first_run: apply}}" for name in LINKS
    )
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
profiles:
  me:
    accounts:
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
      anilist: {{token: "{anilist.issue_token()}"}}
links:
{links}
"""
    config = parse_config(text, tmp_path / "watchbridge.yaml", {})
    runtime = build_runtime(config)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=time.time())
    house = Household(config, runtime, fakes)
    yield house
    for target in house.targets.values():
        await target.aclose()
    runtime.close()


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
