"""Plex ⇄ AniList for shows the HAMA anime agent matched (no TMDB id: an AniDB or TheTVDB id,
numbered the way HAMA's mode numbers them): episodes are placed through the anime mapping on
the AniList entry and episode they are, both ways; what cannot be placed is listed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.plex import FakePlex, guid_list
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.harness import ServiceProcess, free_port
from tests.ingest_samples import HAMA, hama_scrobble
from tests.test_link_plex_anilist import DAY, OP, OP_SEASONS, fakes, link_config, run
from tests.test_webhooks_e2e import SECRET, plex_multipart, wait_for
from tests.test_without_trakt import settled

RE_ZERO_P2, ANIDB_P2 = 119661, 15593  # Re:Zero S2 Part 2: AniDB 15593, TheTVDB 305089 S2E14-25
RE_ZERO_S1 = 21355  # TheTVDB 305089 S1E1-25


def hama_show(plex: FakePlex, key: str, guid: str, episodes: dict[str, str]) -> None:
    """A HAMA-matched show: its guid, and episodes by ratingKey -> their guid's path
    (`anidb-15593/1/3`), numbered as the path numbers them (as HAMA's scanner files them)."""
    plex.add_show(key, "Re:ZERO", 2016, guid=f"{HAMA}{guid}?lang=en")
    for rating_key, path in episodes.items():
        season, number = (int(part) for part in path.split("/")[1:3])
        plex.add_episode(rating_key, key, season, number, guid=f"{HAMA}{path}?lang=en")


def re_zero(
    tmp_path: Path, start_fake: Any, progress: int, guid: str, episodes: dict[str, str]
) -> tuple[Path, FakePlex, FakeAniList]:
    plex, anilist, datasets = fakes(start_fake)
    anilist.add_media(RE_ZERO_P2, episodes=12)
    anilist.add_entry(
        RE_ZERO_P2,
        episodes=12,
        status="CURRENT",
        progress=progress,
        updated_at=int(time.time() - 3 * DAY),
    )
    hama_show(plex, "100", guid, episodes)
    return link_config(tmp_path, plex, anilist, datasets), plex, anilist


def anidb_episodes(prefix: str = "anidb-") -> dict[str, str]:
    return {str(1000 + n): f"{prefix}{ANIDB_P2}/1/{n}" for n in range(1, 13)}


@pytest.mark.parametrize("prefix", ["anidb-", ""], ids=["anidb", "bare-number"])
def test_a_hama_anidb_episode_watched_in_plex_raises_its_entrys_progress(
    tmp_path: Path, start_fake: Any, prefix: str
) -> None:
    path, plex, anilist = re_zero(
        tmp_path, start_fake, 2, f"{prefix}{ANIDB_P2}", anidb_episodes(prefix)
    )
    run(path, "sync", "--link", "plex-anilist")
    plex.watch("1003", time.time() - 3600)  # AniDB episode 3: the entry's episode 3
    run(path, "sync", "--link", "plex-anilist")
    assert anilist.snapshot()[RE_ZERO_P2]["progress"] == 3


def test_anilist_progress_marks_the_hama_anidb_episodes_watched_in_plex(
    tmp_path: Path, start_fake: Any
) -> None:
    path, plex, _ = re_zero(tmp_path, start_fake, 5, f"anidb-{ANIDB_P2}", anidb_episodes())
    run(path, "sync", "--link", "plex-anilist")
    watched = [n for n in range(1, 13) if plex.user_state(str(1000 + n)).get("viewCount")]
    assert watched == [1, 2, 3, 4, 5]


def test_a_hama_tvdb_episode_counts_by_thetvdb_season_numbers(
    tmp_path: Path, start_fake: Any
) -> None:
    # `tvdb-` mode: TheTVDB's S2E14-25 are Part 2's episodes 1-12 (TMDB: S1E39-50).
    episodes = {str(2000 + n): f"tvdb-305089/2/{n}" for n in range(14, 26)}
    path, plex, anilist = re_zero(tmp_path, start_fake, 2, "tvdb-305089", episodes)
    run(path, "sync", "--link", "plex-anilist")
    plex.watch("2016", time.time() - 3600)  # TheTVDB S2E16
    run(path, "sync", "--link", "plex-anilist")
    assert anilist.snapshot()[RE_ZERO_P2]["progress"] == 3


def one_piece_watched(tmp_path: Path, start_fake: Any, mode: str) -> tuple[Path, FakeAniList]:
    """One Piece at progress 1099, HAMA-matched in `mode` (`tvdb3`): its episode filed as
    S22E1100 watched in Plex, with Serializd's season list to place absolute numbers on."""
    plex, anilist, datasets = fakes(start_fake)
    anilist.add_media(OP, episodes=None)
    anilist.add_entry(
        OP, episodes=None, status="CURRENT", progress=1099, updated_at=int(time.time() - 3 * DAY)
    )
    plex.add_show("400", "One Piece", 1999, guid=f"{HAMA}{mode}-81797?lang=en")
    plex.add_episode("4100", "400", 22, 1100, guid=f"{HAMA}{mode}-81797/22/1100?lang=en")
    serializd = start_fake(FakeSerializd())
    serializd.add_show(37854, "One Piece", OP_SEASONS)
    path = link_config(
        tmp_path,
        plex,
        anilist,
        datasets,
        f'\n  serializd: {{api_url: "{serializd.url}"}}',
        f'\n      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}',
    )
    run(path, "sync", "--link", "plex-anilist")
    plex.watch("4100", time.time() - 3600)
    run(path, "sync", "--link", "plex-anilist")
    return path, anilist


def test_a_hama_tvdb3_episode_counts_by_its_absolute_number(
    tmp_path: Path, start_fake: Any
) -> None:
    """`tvdb3-`: TheTVDB's season, One Piece's absolute number: episode 1100, placed on
    TMDB's seasons by Serializd's season list as AniList's side places it."""
    _, anilist = one_piece_watched(tmp_path, start_fake, "tvdb3")
    assert anilist.snapshot()[OP]["progress"] == 1100


def test_a_hama_tvdb5_episode_is_listed_not_guessed(tmp_path: Path, start_fake: Any) -> None:
    """`tvdb5-`: the reference (plex.md, "HAMA numbers depend on the mode") names the prefix
    but not how it numbers episodes; as for `anidb2-`, its number is not taken for an
    absolute one."""
    path, anilist = one_piece_watched(tmp_path, start_fake, "tvdb5")
    assert anilist.snapshot()[OP]["progress"] == 1099
    assert "[hama-mode]" in run(path, "anime", "unmatched")


def test_a_watched_hama_special_no_dataset_maps_is_listed_not_written(
    tmp_path: Path, start_fake: Any
) -> None:
    specials = {"1901": f"anidb-{ANIDB_P2}/0/1"}
    path, plex, anilist = re_zero(
        tmp_path, start_fake, 2, f"anidb-{ANIDB_P2}", anidb_episodes() | specials
    )
    plex.watch("1901", time.time() - 3600)
    run(path, "sync", "--link", "plex-anilist")
    listed = run(path, "anime", "unmatched")
    assert f"episode:anidb:{ANIDB_P2}:s0e1 'Re:ZERO'  [unmapped]" in listed
    assert anilist.snapshot()[RE_ZERO_P2]["progress"] == 2


def test_a_hama_mode_of_unknown_numbering_is_listed_not_guessed(
    tmp_path: Path, start_fake: Any
) -> None:
    # `anidb2-`: an AniDB id with numbers the reference does not define as AniDB's own.
    episodes = {str(3000 + n): f"anidb2-{ANIDB_P2}/1/{n}" for n in range(1, 13)}
    path, plex, anilist = re_zero(tmp_path, start_fake, 2, f"anidb2-{ANIDB_P2}", episodes)
    plex.watch("3003", time.time() - 3600)
    run(path, "sync", "--link", "plex-anilist")
    assert "[hama-mode]" in run(path, "anime", "unmatched")
    assert anilist.snapshot()[RE_ZERO_P2]["progress"] == 2
    assert not plex.user_state("3001").get("viewCount")  # nor written from AniList


def test_an_episode_hama_matched_otherwise_than_its_show_is_listed_not_guessed(
    tmp_path: Path, start_fake: Any
) -> None:
    """The show re-matched (`tvdb-`) while its episodes still carry the old match (`anidb-`,
    AniDB's numbers): Part 2's AniDB episode 3 is no TheTVDB S1E3 (Re:Zero's first season).
    Which numbering the episode has is not known until Plex matches both alike."""
    path, plex, anilist = re_zero(tmp_path, start_fake, 2, "tvdb-305089", anidb_episodes())
    anilist.add_media(RE_ZERO_S1, episodes=25)
    plex.watch("1003", time.time() - 3600)
    run(path, "sync", "--link", "plex-anilist")
    assert RE_ZERO_S1 not in anilist.snapshot()
    assert anilist.snapshot()[RE_ZERO_P2]["progress"] == 2
    assert "[hama-mixed]" in run(path, "anime", "unmatched")


# --------------------------------------------------------------------------- the webhook path


def test_hama_webhook_plays_reach_anilist_only_where_the_link_would_place_them(
    tmp_path: Path, start_fake: Any
) -> None:
    """The webhook path decides as the link does (`watchbridge.hama`): an episode whose guid
    disagrees with its show's (`hama-mixed`), or in a mode whose numbering is not known
    (`tvdb5-`, `anidb2-`), is listed, never written to a guessed AniList episode."""
    _, anilist, datasets = fakes(start_fake)
    for media, episodes, progress in ((RE_ZERO_P2, 12, 2), (OP, None, 1099)):
        anilist.add_media(media, episodes=episodes)
        anilist.add_entry(
            media,
            episodes=episodes,
            status="CURRENT",
            progress=progress,
            updated_at=int(time.time() - 3 * DAY),
        )
    anilist.add_media(RE_ZERO_S1, episodes=25)
    port = free_port()
    urls = "\n".join(f'      {k}: "{v}"' for k, v in datasets.urls().items())
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"""server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  anilist:
    api_url: "{anilist.url}"
    auth_url: "{anilist.auth_url}"
    mapping_urls:
{urls}
profiles:
  alex:
    users: {{plex: ["1"]}}
    accounts:
      anilist: {{token: "{anilist.issue_token()}"}}
""",
        encoding="utf-8",
    )
    plays = [
        # Re:Zero S2 Part 2's AniDB episode 3 in a show matched again as TheTVDB's: no S1E3
        hama_scrobble("11", "Re:ZERO", f"anidb-{ANIDB_P2}/1/3", f"{HAMA}tvdb-305089?lang=en"),
        # `anidb2-`: an AniDB id, with numbers the reference does not define
        hama_scrobble(
            "12", "Re:ZERO", f"anidb2-{ANIDB_P2}/1/5", f"{HAMA}anidb2-{ANIDB_P2}?lang=en"
        ),
        # `tvdb5-`: the same, for TheTVDB (One Piece at 1099)
        hama_scrobble("13", "One Piece", "tvdb5-81797/22/1100", f"{HAMA}tvdb5-81797?lang=en"),
        # and one placed as the link places it: AniDB's own numbering, episode 4
        hama_scrobble("14", "Re:ZERO", f"anidb-{ANIDB_P2}/1/4", f"{HAMA}anidb-{ANIDB_P2}?lang=en"),
    ]
    service = ServiceProcess(path, port).start()
    try:
        for play in plays:
            body, content_type = plex_multipart(play)
            url = f"{service.url}/webhooks/plex/{SECRET}"
            answer = httpx.post(url, content=body, headers={"Content-Type": content_type})
            assert answer.status_code == 202, answer.text
        wait_for(lambda: settled(tmp_path), timeout=30)
    finally:
        service.kill()
    snapshot = anilist.snapshot()
    assert RE_ZERO_S1 not in snapshot  # TheTVDB S1E3 never watched
    assert snapshot[RE_ZERO_P2]["progress"] == 4  # not 5 (`anidb2-` guessed)
    assert snapshot[OP]["progress"] == 1099  # not 1100 (`tvdb5-` guessed absolute)
    listed = run(path, "anime", "unmatched")
    assert listed.count("[hama-mixed]") == 1 and listed.count("[hama-mode]") == 2, listed


# --------------------------------------------------------------------------- Fix Match


def test_a_fix_match_away_from_hama_does_not_move_the_plays_we_wrote(
    tmp_path: Path, start_fake: Any
) -> None:
    """AniList's Part 2 episodes 1-5, written to the HAMA episodes `anidb-15593/1/1-5`; then
    a Fix Match to the Plex TV Series agent: the files keep their ratingKeys and HAMA's
    numbers, S1E1-5, which TMDB's show names Re:Zero's first season's. The plays we wrote
    copied Part 2's: they are no plays of S1E1-5."""
    path, plex, anilist = re_zero(tmp_path, start_fake, 5, f"anidb-{ANIDB_P2}", anidb_episodes())
    anilist.add_media(RE_ZERO_S1, episodes=25)
    run(path, "sync", "--link", "plex-anilist")
    written = [n for n in range(1, 13) if plex.user_state(str(1000 + n)).get("viewCount")]
    assert written == [1, 2, 3, 4, 5]
    run(path, "sync", "--link", "plex-anilist")  # reads back what it wrote

    show = "plex://show/5d9c086c46115600200aa2fe"
    plex.items["100"] |= {"guid": show, "Guid": guid_list(["tmdb://65942", "tvdb://305089"])}
    for n in range(1, 13):
        plex.items[str(1000 + n)] |= {
            "guid": f"plex://episode/{1000 + n:0>24}",
            "grandparentGuid": show,
        }
    said = run(path, "sync", "--link", "plex-anilist", "--full")

    assert RE_ZERO_S1 not in anilist.snapshot(), said
    assert anilist.snapshot()[RE_ZERO_P2]["progress"] == 5, said
    assert "remove" not in said, said
