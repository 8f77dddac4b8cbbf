"""A rating going round a household: Plex ⇄ Trakt, AniList ⇄ Trakt and Plex ⇄ AniList, each
link run in turn against the fakes, as the scheduler may order them. A rating reaches a fine
side (Plex's halves, AniList's 0-100) both directly and through Trakt's whole points; the
whole point must not overwrite the user's finer rating, and the links settle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.plex import FakePlex
from tests.fakes.trakt import FakeTrakt
from tests.household import (
    AOT,
    AOT_P2,
    DAY,
    HouseholdRig,
    open_household,
    start_anilist_with_aot_part_2,
    use_fast_readers,
)

pytestmark = pytest.mark.anyio

SEASON_4 = "300004"  # the Plex season's ratingKey (FakePlex: show key + season number)
LINKS = ("anilist-trakt", "plex-trakt", "plex-anilist")


class Household(HouseholdRig):
    TARGETS = ("trakt", "anilist", "plex")

    async def round(self, links: Sequence[str], full: bool = False) -> int:
        """Each link run once, its rows delivered before the next runs: the rating writes."""
        before = self.rating_writes()
        await self.run_in_turn(links, full=full)
        return self.rating_writes() - before

    def rating_writes(self) -> int:
        plex, trakt, anilist = self.fakes["plex"], self.fakes["trakt"], self.fakes["anilist"]
        scores = [r for r in anilist.requests if b"scoreRaw" in (r.body or b"")]
        ratings = trakt.count("POST", "/sync/ratings") + trakt.count("POST", "/sync/ratings/remove")
        return plex.count("PUT", "/:/rate") + ratings + len(scores)

    def held(self) -> tuple[float | None, list[int], float]:
        """Plex's rating of season 4, Trakt's, AniList's raw score."""
        fakes = self.fakes
        return (
            fakes["plex"].user_state(SEASON_4).get("userRating"),
            [r.rating for r in fakes["trakt"].ratings()],
            fakes["anilist"].snapshot()[AOT_P2]["score"],
        )


@pytest.fixture
def fakes(start_fake: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    use_fast_readers(monkeypatch, ("anilist", "trakt"))
    plex, trakt = start_fake(FakePlex()), start_fake(FakeTrakt())
    anilist = start_anilist_with_aot_part_2(start_fake)
    trakt.add_show("Attack on Titan", 2013, tmdb=AOT, seasons={4: 30})
    plex.add_show("300", "Attack on Titan", 2013, [f"tmdb://{AOT}"])
    for n in range(1, 31):
        plex.add_episode(str(3000 + n), "300", 4, n)
    return {"plex": plex, "trakt": trakt, "anilist": anilist}


@pytest.fixture
async def household(tmp_path: Path, fakes: dict[str, Any]) -> AsyncIterator[Household]:
    async with open_household(Household, tmp_path, fakes, LINKS) as house:
        yield house


def scored_entry(anilist: FakeAniList, score: int, score_format: str) -> Any:
    anilist.user().score_format = score_format
    updated = int(time.time() - 3 * DAY)
    return anilist.add_entry(
        AOT_P2, status="COMPLETED", progress=12, updated_at=updated, score=score
    )


@pytest.mark.parametrize("score_format", ["POINT_100", "POINT_10", "POINT_10_DECIMAL"])
async def test_an_anilist_score_back_from_trakt_through_plex_does_not_overwrite_it(
    household: Household, fakes: dict[str, Any], score_format: str
) -> None:
    # Raw 75 (a POINT_10 user sees 7) is 8 on Trakt, so 8.0 on Plex by the Plex-Trakt link,
    # given just now: Plex-AniList took that for the newer rating and wrote 80 over the
    # user's 75 (a 7 became an 8 on AniList with nobody touching it).
    scored_entry(fakes["anilist"], 75, score_format)
    await household.round(LINKS)
    assert household.held() == (7.5, [8], 75)  # Plex takes the finer score, once
    assert [await household.round(LINKS) for _ in range(3)] == [0, 0, 0]
    assert household.held() == (7.5, [8], 75)


async def test_a_plex_half_star_back_from_trakt_through_anilist_does_not_overwrite_it(
    household: Household, fakes: dict[str, Any]
) -> None:
    # Plex's 7.5 is 8 on Trakt, so raw 80 on AniList by the AniList-Trakt link: the Plex-AniList
    # link wrote 8.0 over the 7.5 Plex held.
    scored_entry(fakes["anilist"], 0, "POINT_100")
    fakes["plex"].rate(SEASON_4, 7.5, time.time() - DAY)
    await household.round(("plex-trakt", "anilist-trakt", "plex-anilist"))
    assert household.held() == (7.5, [8], 75)
    assert [await household.round(LINKS) for _ in range(3)] == [0, 0, 0]


async def test_a_whole_point_the_user_gives_still_wins_over_the_finer_rating(
    household: Household, fakes: dict[str, Any]
) -> None:
    scored_entry(fakes["anilist"], 75, "POINT_100")
    await household.round(LINKS)
    fakes["plex"].rate(SEASON_4, 8.0, time.time())  # four stars, given in Plex
    await household.round(LINKS, full=True)  # a full read sees Plex's ratings
    assert household.held() == (8.0, [8], 80)
    assert await household.round(LINKS, full=True) == 0


async def test_a_score_changed_on_anilist_is_not_overwritten_by_its_whole_point_back_from_plex(
    household: Household, fakes: dict[str, Any]
) -> None:
    # 80 everywhere; the user lowers AniList to 65: Trakt gets 7, Plex 7.0 from Trakt, so the
    # Plex-AniList link finds both changed, and the newer (Plex's 7.0) wrote 70 over the 65.
    entry = scored_entry(fakes["anilist"], 80, "POINT_100")
    await household.round(LINKS)
    assert await household.round(LINKS, full=True) == 0  # each baseline holds the 8s
    entry.score, entry.updated_at = 65, int(time.time())
    await household.round(LINKS, full=True)  # a full read sees Plex's ratings
    assert household.held() == (6.5, [7], 65)
    assert await household.round(LINKS, full=True) == 0
