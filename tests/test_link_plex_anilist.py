"""Plex ⇄ AniList without Trakt: an anime AniList maps by absolute number (One Piece) is placed
on Serializd's season list (its sign-in is enough), and without any season list it is listed
as waiting for one, not as not-anime."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.harness import AppThread, watchbridge, write_config
from tests.test_app import runtime_for
from tests.unpaced import unpaced
from watchbridge import statuspage
from watchbridge.app import create_app

DAY = 86400.0
ONE_PIECE, OP = 37854, 21
# TMDB's seasons as in tests/test_link_anilist_serializd.py: absolute 1100 is S23E12.
# fmt: off
OP_SEASONS = {0: 10} | dict(enumerate((61, 16, 14, 39, 13, 52, 33, 35, 73, 45, 26, 14, 101, 56,
                                       100, 35, 62, 50, 118, 33, 98, 14, 194), 1))
# fmt: on


def fakes(start_fake: Any) -> tuple[FakePlex, FakeAniList, FakeDatasets]:
    plex, anilist = start_fake(FakePlex()), start_fake(FakeAniList())
    anilist.limit = anilist.burst_limit = 100_000
    return plex, anilist, start_fake(FakeDatasets())


def setup(
    tmp_path: Path, start_fake: Any, with_serializd: bool
) -> tuple[Path, FakePlex, FakeAniList, str]:
    plex, anilist, datasets = fakes(start_fake)
    anilist.add_media(OP, episodes=None)
    anilist.add_entry(
        OP, episodes=None, status="CURRENT", progress=1099, updated_at=int(time.time() - 3 * DAY)
    )
    plex.add_show("400", "One Piece", 1999, [f"tmdb://{ONE_PIECE}"])
    key, target = 4000, ""
    for season, count in OP_SEASONS.items():
        if season == 0:
            continue
        for n in range(1, count + 1):
            key += 1
            plex.add_episode(str(key), "400", season, n)
            if (season, n) == (23, 12):
                target = str(key)
    serializd_service = serializd_account = ""
    if with_serializd:
        serializd = start_fake(FakeSerializd())
        serializd.add_show(ONE_PIECE, "One Piece", OP_SEASONS)
        serializd_service = f'\n  serializd: {{api_url: "{serializd.url}"}}'
        serializd_account = f'\n      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}'
    path = link_config(tmp_path, plex, anilist, datasets, serializd_service, serializd_account)
    return path, plex, anilist, target


def link_config(
    tmp_path: Path,
    plex: FakePlex,
    anilist: FakeAniList,
    datasets: FakeDatasets,
    serializd_service: str = "",
    serializd_account: str = "",
    max_removal_share: float = 1,
) -> Path:
    urls = "\n".join(f'      {k}: "{v}"' for k, v in datasets.urls().items())
    return write_config(
        tmp_path,
        f"""services:
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}{serializd_service}
  anilist:
    api_url: "{anilist.url}"
    auth_url: "{anilist.auth_url}"
    mapping_urls:
{urls}
profiles:
  alex:
    accounts:
      plex: {{}}
      anilist: {{token: "{anilist.issue_token()}"}}{serializd_account}
links:
  plex-anilist:
    {{services: [plex, anilist], first_run: apply, max_removal_share: {max_removal_share}}}
""",
    )


def run(path: Path, *args: str) -> str:
    result = watchbridge(*args, "--config", str(path))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


def test_one_piece_watched_in_plex_reaches_anilist_on_serializds_season_list(
    tmp_path: Path, start_fake: Any
) -> None:
    path, plex, anilist, target = setup(tmp_path, start_fake, with_serializd=True)
    run(path, "sync", "--link", "plex-anilist")
    plex.watch(target, time.time() - 3600)  # episode 1100 (S23E12), watched an hour ago
    run(path, "sync", "--link", "plex-anilist")
    assert anilist.snapshot()[OP]["progress"] == 1100


def test_without_a_season_list_one_piece_is_listed_as_waiting_for_one(
    tmp_path: Path, start_fake: Any
) -> None:
    path, _, anilist, _ = setup(tmp_path, start_fake, with_serializd=False)
    run(path, "sync", "--link", "plex-anilist")
    line = next(x for x in run(path, "anime", "unmatched").splitlines() if "anilist:21" in x)
    assert "[absolute]" in line and "maps now" not in line
    assert anilist.snapshot()[OP]["progress"] == 1099


MONONOKE, MONONOKE_TMDB = 164, 128  # a movie in the pinned mapping samples
RE_ZERO = 21355  # TMDB 65942 S1E1-25


def test_an_anime_movie_watched_in_plex_stays_watched_there(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AniList takes the movie: its next full read must read it back, not as removed."""
    unpaced(monkeypatch, "anilist")  # three runs' reads: half a minute at AniList's pace
    plex, anilist, datasets = fakes(start_fake)
    anilist.add_media(MONONOKE, episodes=1)
    anilist.add_media(RE_ZERO, episodes=25)
    plex.add_movie("10", "Princess Mononoke", 1997, [f"tmdb://{MONONOKE_TMDB}"])
    plex.add_show("20", "Re:ZERO", 2016, ["tmdb://65942"])
    for n in range(1, 11):  # the movie is 1 play of 11: under the default removal guard
        plex.add_episode(str(100 + n), "20", 1, n)
        plex.watch(str(100 + n), time.time() - 7 * DAY + n * 3600)
    path = link_config(tmp_path, plex, anilist, datasets, max_removal_share=0.1)
    run(path, "sync", "--link", "plex-anilist")
    plex.watch("10", time.time() - 3600)
    run(path, "sync", "--link", "plex-anilist")
    assert anilist.snapshot()[MONONOKE]["status"] == "COMPLETED"

    run(path, "sync", "--link", "plex-anilist", "--full")

    assert plex.user_state("10").get("viewCount") == 1


BLEACH, TYBW = 30984, 116674  # Bleach TYBW Part 1: TMDB S2E1-13 (TheTVDB: S17, absolute 367-)


def test_anilist_episodes_plex_numbers_in_a_tvdb_order_are_listed_with_the_fix(
    tmp_path: Path, start_fake: Any
) -> None:
    """With no Trakt or Serializd nothing renumbers a show Plex numbers in TheTVDB's absolute
    order: AniList's TMDB S2E1-5 are not among its episodes, so the link cannot write them.
    `anime unmatched`, `status` and `/api/status` say so per title, until the show is set to
    TMDB's order."""
    plex, anilist, datasets = fakes(start_fake)
    anilist.add_media(TYBW, episodes=13)
    anilist.add_entry(
        TYBW, episodes=13, status="CURRENT", progress=5, updated_at=int(time.time() - DAY)
    )
    show = plex.add_show("500", "Bleach", 2004, [f"tmdb://{BLEACH}"], ordering="absolute")
    for n in range(1, 21):  # Bleach's first 20, numbered on in one season
        plex.add_episode(str(5000 + n), "500", 1, n)
    path = link_config(tmp_path, plex, anilist, datasets)
    run(path, "sync", "--link", "plex-anilist")

    listed = run(path, "anime", "unmatched")
    assert f"episode:tmdb:{BLEACH} 'Bleach'  [server-order]  5 episodes: S2E1-5" in listed
    assert "fix: set the show to The Movie Database ordering in Plex" in listed
    said = [x for x in run(path, "status").splitlines() if x.startswith("anime:")]
    assert len(said) == 1 and "alex: Plex numbers 'Bleach'" in said[0], said
    assert "numbered S2E1-5 are not linked" in said[0] and "services.serializd" in said[0]
    with AppThread(create_app(runtime_for(path), extra_routes=statuspage.ROUTES)) as app:
        status = httpx.get(f"{app.url}/api/status").json()
        page = httpx.get(app.url).text
    assert [(t["title"], t["episodes"]) for t in status["anime_numbered_apart"]] == [
        ("Bleach", "S2E1-5")
    ]
    told = said[0].removeprefix("anime:").strip()
    assert status["anime"] == [told]
    assert html.escape(told) in page  # the page in the same words, for the app's household

    del show["showOrdering"]  # TMDB's order: the next read numbers Bleach as AniList does
    for n in range(1, 14):
        plex.add_episode(str(6000 + n), "500", 2, n)
    run(path, "sync", "--link", "plex-anilist", "--full")
    assert plex.user_state("6005").get("viewCount") == 1
    assert "server-order" not in run(path, "anime", "unmatched")
    assert not [x for x in run(path, "status").splitlines() if x.startswith("anime:")]


AOT, AOT_PART_2 = 1429, 131681  # AoT Final Season Part 2: TMDB and TheTVDB alike S4E17-28


def test_episodes_plex_numbers_in_tvdb_aired_order_are_linked_only_where_tmdb_numbers_alike(
    tmp_path: Path, start_fake: Any
) -> None:
    """In TheTVDB's aired order Plex's Bleach S2 is the first series' second season, while
    AniList's TYBW is TMDB's S2: by numbers, AniList's episodes would be written to the old
    ones, and Plex's plays of those counted for TYBW. Neither happens: they are listed. AoT's
    S4 is numbered alike on both (the mapping places the same AniList episodes there), and
    is linked as before."""
    plex, anilist, datasets = fakes(start_fake)
    week_ago = int(time.time() - 7 * DAY)
    for media, count, progress in ((TYBW, 13, 5), (AOT_PART_2, 12, 4)):
        anilist.add_media(media, episodes=count)
        anilist.add_entry(
            media, episodes=count, status="CURRENT", progress=progress, updated_at=week_ago
        )
    plex.add_show("500", "Bleach", 2004, [f"tmdb://{BLEACH}", "tvdb://74796"], ordering="aired")
    for season, count in ((1, 20), (2, 21), (17, 13)):  # TheTVDB's aired seasons
        for n in range(1, count + 1):
            plex.add_episode(f"5{season:02}{n:02}", "500", season, n)
    plex.watch("50208", time.time() - DAY)  # the old S2E8, not TYBW's 8th
    plex.add_show(
        "700", "Attack on Titan", 2013, [f"tmdb://{AOT}", "tvdb://267440"], ordering="aired"
    )
    for n in range(1, 29):
        plex.add_episode(f"704{n:02}", "700", 4, n)
    path = link_config(tmp_path, plex, anilist, datasets)

    run(path, "sync", "--link", "plex-anilist")

    assert [n for n in range(1, 22) if plex.user_state(f"502{n:02}").get("viewCount")] == [8]
    assert anilist.snapshot()[TYBW]["progress"] == 5
    assert [n for n in range(1, 29) if plex.user_state(f"704{n:02}").get("viewCount")] == [
        17,
        18,
        19,
        20,
    ]
    listed = run(path, "anime", "unmatched")
    assert f"episode:tmdb:{BLEACH} 'Bleach'  [server-order]  6 episodes: S2E1-5, S2E8" in listed
    assert "whose S2E1 may be another episode than TMDB's S2E1" in listed, listed
    assert "Attack on Titan" not in listed


def test_an_episode_rated_in_plex_is_not_planned_for_anilist_which_scores_seasons(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AniList scores an entry (a season or a movie), never an episode: the link planned a
    Plex episode's rating for it at every full read, which `sync` showed and counted as
    delivered while the delivery skipped it. The season's rating is the entry's score."""
    unpaced(monkeypatch, "anilist")
    plex, anilist, datasets = fakes(start_fake)
    anilist.add_media(RE_ZERO, episodes=25)
    plex.add_show("20", "Re:ZERO", 2016, ["tmdb://65942"])
    for n in range(1, 4):
        plex.add_episode(str(100 + n), "20", 1, n)
        plex.watch(str(100 + n), time.time() - DAY + n * 3600)
    plex.rate("101", 8.0, time.time() - 3600)  # an episode
    plex.rate("20001", 9.0, time.time() - 3600)  # its season
    path = link_config(tmp_path, plex, anilist, datasets)

    said = run(path, "sync", "--link", "plex-anilist") + run(
        path, "sync", "--link", "plex-anilist", "--full", "--dry-run"
    )

    assert "set_rating anilist episode:" not in said, said
    assert anilist.snapshot()[RE_ZERO]["score"] == 90


BREAKING_BAD, ARRIVAL = 1396, 329865  # in no mapping dataset: not anime


def test_plain_non_anime_in_plex_is_not_counted_as_anime_anilist_cannot_map(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every plex-anilist run said "7 play(s) or rating(s) not written to anilist: not anime
    it can map", counting Breaking Bad and a film: none of AniList's business. Only anime the
    datasets cannot place (here a season newer than them) is counted, as `watchbridge anime
    unmatched` lists it."""
    unpaced(monkeypatch, "anilist")
    plex, anilist, datasets = fakes(start_fake)
    anilist.add_media(RE_ZERO, episodes=25)
    plex.add_show("20", "Re:ZERO", 2016, ["tmdb://65942"])
    plex.add_episode("101", "20", 1, 1)
    plex.add_episode("901", "20", 9, 1)  # a season no dataset knows yet
    plex.add_show("30", "Breaking Bad", 2008, [f"tmdb://{BREAKING_BAD}"])
    for n in range(1, 4):
        plex.add_episode(str(300 + n), "30", 1, n)
        plex.watch(str(300 + n), time.time() - DAY + n * 60)
    plex.add_movie("40", "Arrival", 2016, [f"tmdb://{ARRIVAL}"])
    for key in ("101", "901", "40"):
        plex.watch(key, time.time() - DAY)
    plex.rate("30", 9.0, time.time() - 3600)  # the whole show
    plex.rate("40", 8.0, time.time() - 3600)
    path = link_config(tmp_path, plex, anilist, datasets)

    said = run(path, "sync", "--link", "plex-anilist", "--dry-run")

    assert "add_play anilist episode:tmdb:65942:s1e1" in said, said
    lines = [line for line in said.splitlines() if "not written to anilist" in line]
    assert lines == [
        "  1 play(s) or rating(s) not written to anilist: anime it cannot map "
        "(see `watchbridge anime unmatched`)"
    ], said


def anime_lines(path: Path) -> list[str]:
    """What `watchbridge status` says under `anime:`."""
    said = run(path, "status").splitlines()
    return [line.removeprefix("anime:").strip() for line in said if line.startswith("anime:")]


def test_an_anime_show_rated_as_a_whole_in_plex_is_told_once_until_its_season_is_rated(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AniList scores each season's entry, so a rating of a whole show is never written there
    (a show maps to several entries: a guess would overwrite one's score). The run counted it
    as "anime it cannot map" and nothing said what to do. It is counted apart, and `status`
    (and the status page, calmly: nothing is broken) names the show with what to rate
    instead, until the season is rated."""
    unpaced(monkeypatch, "anilist")
    plex, anilist, datasets = fakes(start_fake)
    anilist.add_media(RE_ZERO, episodes=25)
    plex.add_show("20", "Re:ZERO", 2016, ["tmdb://65942"])
    plex.add_episode("101", "20", 1, 1)
    plex.watch("101", time.time() - DAY)
    plex.rate("20", 9.0, time.time() - 3600)  # the whole show
    plex.add_show("30", "Breaking Bad", 2008, [f"tmdb://{BREAKING_BAD}"])
    plex.rate("30", 9.0, time.time() - 3600)  # no anime: none of AniList's business
    path = link_config(tmp_path, plex, anilist, datasets)

    said = run(path, "sync", "--link", "plex-anilist", "--dry-run")

    lines = [line for line in said.splitlines() if "not written to anilist" in line]
    assert lines == [
        "  1 show rating(s) not written to anilist: it rates each season's entry, not a whole"
        " show (see `watchbridge status`)"
    ], said
    run(path, "sync", "--link", "plex-anilist")
    told = anime_lines(path)
    assert len(told) == 1, told
    assert told[0].startswith("alex: 'Re:ZERO' is rated as a whole show in Plex (9/10)"), told
    assert "AniList rates each season's entry" in told[0]
    assert "rate the season in Plex, or the entry on AniList" in told[0]
    assert anilist.snapshot()[RE_ZERO]["score"] == 0
    with AppThread(create_app(runtime_for(path), extra_routes=statuspage.ROUTES)) as app:
        status = httpx.get(f"{app.url}/api/status").json()
        page = httpx.get(app.url).text
    assert status["anime"] == told
    assert f"<p>{html.escape(told[0])}</p>" in page  # calm: not a problem to look at
    assert "anime for AniList" not in page

    run(path, "sync", "--link", "plex-anilist")  # read again: not told twice
    assert len(anime_lines(path)) == 1

    plex.rate("20001", 8.0, time.time())  # season 1, as the line says
    run(path, "sync", "--link", "plex-anilist", "--full")  # a rating is no history: a full read

    assert anilist.snapshot()[RE_ZERO]["score"] == 80
    assert anime_lines(path) == []
