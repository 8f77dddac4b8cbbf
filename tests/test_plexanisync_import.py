"""`watchbridge anime import-plexanisync`: a PlexAniSync custom_mappings.yaml (Plex titles and
seasons) translated into our overrides (AniList ids and TVDB/TMDB ranges) by reading the user's
Plex library on the fake Plex server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN, FakePlex
from tests.harness import watchbridge, write_config
from watchbridge.anime import DatasetError, EpisodeRef, load_index, parse_overrides
from watchbridge.model import Ids
from watchbridge.plexanisync import (
    UNUSABLE,
    MappingEntry,
    PlexShow,
    SeasonLink,
    Skipped,
    find_show,
    merged,
    numbering,
    parse_mappings,
    translate,
)

SAMPLE = Path(__file__).parent / "fixtures" / "anime" / "plexanisync-custom_mappings.yaml"
SPY_GUID = "plex://show/0123456789abcdef01234567"  # the sample's placeholder guid


def add_show(
    plex: FakePlex,
    key: str,
    title: str,
    seasons: dict[int, int],
    guids: list[str],
    *,
    guid: str | None = None,
    ordering: str | None = None,
    section: str = "2",
) -> None:
    """A show with `seasons` (number -> episode count) of episodes."""
    plex.add_show(key, title, None, guids, guid=guid, ordering=ordering, section=section)
    for season, count in seasons.items():
        for number in range(1, count + 1):
            plex.add_episode(f"{key}-{season}-{number}", key, season, number)


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    """The sample's shows as a TVDB-ordered anime library would hold them (real ids)."""
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    # TheTVDB (aired): S3 = 12 + 10, S4 = 16 + 12 + the two Final Chapters.
    aot = {1: 25, 2: 12, 3: 22, 4: 30}
    add_show(
        fake, "100", "Attack on Titan", aot, ["tvdb://267440", "tmdb://1429"], ordering="aired"
    )
    # Found by the entry's synonym, whatever its case.
    rezero_ids = ["tvdb://305089", "tmdb://65942"]
    add_show(fake, "200", "RE:ZERO KARA HAJIMERU ISEKAI SEIKATSU", {1: 25, 2: 25}, rezero_ids)
    fake.items["200"]["showOrdering"] = "aired"
    gintama = {1: 49, 2: 50, 3: 51, 4: 51}
    add_show(fake, "300", "Gintama", gintama, ["tvdb://79895", "tmdb://57041"], ordering="aired")
    # Two shows titled alike: the entry's guid picks one; no ordering of its own: TMDB's.
    add_show(
        fake, "400", "Spy x Family", {1: 25}, ["tvdb://405920", "tmdb://120089"], guid=SPY_GUID
    )
    add_show(fake, "500", "Spy x Family", {1: 3}, ["tmdb://999001"])
    return fake


def plex_config(tmp_path: Path, plex: FakePlex, overrides: str | None = None) -> Path:
    anilist = f"  anilist: {{mapping_overrides: {overrides}}}\n" if overrides else ""
    services = f'services:\n  plex: {{url: "{plex.url}", token: "{TOKEN}"}}\n{anilist}'
    return write_config(tmp_path, services)


def imported(tmp_path: Path, plex: FakePlex, *args: str) -> tuple[str, str]:
    result = watchbridge(
        "anime", "import-plexanisync", *args, "--config", str(plex_config(tmp_path, plex))
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_the_sample_maps_plex_plays_to_the_right_anilist_entries(
    tmp_path: Path, plex: FakePlex
) -> None:
    out, err = imported(tmp_path, plex, str(SAMPLE))
    assert "imported 13 override(s); skipped: none" in err
    assert "remote-urls were not fetched (1 URL(s))" in err
    index = load_index({}, parse_overrides(out, "printed"))
    # TVDB-ordered shows: Plex's numbers are TheTVDB's.
    assert index.anilist_for(267440, 3, 13, "tvdb") == (104578, 1)
    assert index.anilist_for(267440, 4, 20, "tvdb") == (131681, 4)
    assert index.anilist_for(267440, 4, 30, "tvdb") == (146984, 2)
    assert index.anilist_for(305089, 2, 16, "tvdb") == (119661, 3)
    assert index.anilist_for(305089, 1, 25, "tvdb") == (21355, 25)
    # Gintama: one AniList entry counted up across four Plex seasons (49, 50, 51, 51).
    assert index.anilist_for(79895, 3, 21, "tvdb") == (918, 120)
    assert index.anilist_for(79895, 4, 1, "tvdb") == (918, 151)
    ref = index.episode_for(918, 120, "tvdb")
    assert isinstance(ref, EpisodeRef) and (ref.show, ref.season, ref.number) == (79895, 3, 21)
    # The guid's show, in Plex's default ordering (TMDB's), not the other Spy x Family.
    assert index.anilist_for(120089, 1, 15, "tmdb") == (142838, 3)
    assert "note: 'Spy x Family' has no episode ordering of its own" in err
    assert '  title: "Gintama (Plex S1-S4, from PlexAniSync)"' in out.splitlines()


def test_titles_not_in_plex_and_titles_several_shows_have_are_reported(
    tmp_path: Path, plex: FakePlex
) -> None:
    plex.add_section("3", "Anime 4K", "show")
    # The same show in a second library is one show, not two.
    add_show(plex, "600", "Gintama", {1: 49}, ["tvdb://79895"], ordering="aired", section="3")
    mappings = tmp_path / "custom_mappings.yaml"
    mappings.write_text(
        "entries:\n"
        "  - title: Bleach\n    seasons: [{season: 1, anilist-id: 269}]\n"
        "  - title: Spy x Family\n    seasons: [{season: 1, anilist-id: 140960}]\n"
        "  - title: Spy x Family\n    guid: plex://show/fedcba9876543210fedcba98\n"
        "    seasons: [{season: 1, anilist-id: 142838}]\n"
        "  - title: GINTAMA\n    seasons: [{season: 1, anilist-id: 918}]\n",
        encoding="utf-8",
    )
    out, err = imported(tmp_path, plex, str(mappings))
    assert (
        "skipped 'Bleach' (not found in Plex): no show in your TV libraries is titled 'Bleach'"
    ) in err
    assert "skipped 'Spy x Family' (ambiguous): 2 shows match:" in err
    assert "no show in Plex has the guid plex://show/fedcba9876543210fedcba98" in err
    assert "imported 1 override(s); skipped: 2 not found in Plex, 1 ambiguous" in err
    assert parse_overrides(out, "printed").shows.keys() == {918}


def test_write_adds_to_the_overrides_file_and_leaves_its_entries_alone(
    tmp_path: Path, plex: FakePlex
) -> None:
    mine = (
        "# my own fixes\n"
        "131681:   # AoT Final Season Part 2, by hand\n"
        "  tvdb: {show: 267440, season: 4, offset: 16}\n"
        "21: {tmdb: {show: 37854, absolute: true}}"  # no newline at the end
    )
    overrides = tmp_path / "anime-overrides.yaml"
    overrides.write_text(mine, encoding="utf-8")
    overrides.chmod(0o640)
    config = plex_config(tmp_path, plex, "anime-overrides.yaml")
    result = watchbridge(
        "anime", "import-plexanisync", str(SAMPLE), "--write", "--config", str(config)
    )
    assert result.returncode == 0, result.stderr
    assert "skipped 'Attack on Titan' (already in your overrides): AniList 131681" in result.stderr
    assert f"added 12 override(s) to {overrides}" in result.stdout
    text = overrides.read_text(encoding="utf-8")
    assert text.startswith(mine + "\n")
    assert overrides.stat().st_mode & 0o777 == 0o640
    index = load_index({}, parse_overrides(text, overrides.name))
    assert index.anilist_for(267440, 4, 17, "tvdb") == (131681, 1)  # theirs, still
    assert index.anilist_for(79895, 4, 1, "tvdb") == (918, 151)
    assert not list(tmp_path.glob("*.tmp"))
    # The service's own reading of the file takes it, as `anime explain` shows.
    explained = watchbridge("anime", "explain", "918", "--offline", "--config", str(config))
    assert "result TVDB: episode 1 → show 79895 S1E1 via override" in explained.stdout
    # Again: everything is there already; the file is left as it is.
    again = watchbridge(
        "anime", "import-plexanisync", str(SAMPLE), "--write", "--config", str(config)
    )
    assert again.returncode == 0, again.stderr
    assert "imported 0 override(s); skipped: 13 already in your overrides" in again.stderr
    assert overrides.read_text(encoding="utf-8") == text


def test_write_without_an_overrides_file_set_prints_the_yaml_and_says_to_set_it(
    tmp_path: Path, plex: FakePlex
) -> None:
    config = plex_config(tmp_path, plex)
    result = watchbridge(
        "anime", "import-plexanisync", str(SAMPLE), "--write", "--config", str(config)
    )
    assert result.returncode == 1
    assert "error: services.anilist.mapping_overrides is not set" in result.stderr
    assert len(parse_overrides(result.stdout, "printed")) == 13


def test_a_malformed_file_is_named_with_its_key(tmp_path: Path, plex: FakePlex) -> None:
    mappings = tmp_path / "custom_mappings.yaml"
    mappings.write_text(
        "entries:\n  - title: Gintama\n    seasons:\n      - season: 1\n        anilist_id: 918\n",
        encoding="utf-8",
    )
    config = plex_config(tmp_path, plex)
    result = watchbridge("anime", "import-plexanisync", str(mappings), "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: custom_mappings.yaml: entries[0] ('Gintama').seasons[0].anilist_id: unknown "
        "key; expected season, anilist-id, start"
    )
    assert not plex.requests


def test_without_plex_it_says_what_to_set(tmp_path: Path) -> None:
    config = write_config(tmp_path, "services:\n  anilist: {}\n")
    result = watchbridge("anime", "import-plexanisync", str(SAMPLE), "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith("error: services.plex must be set: PlexAniSync names shows")


def test_a_refused_plex_token_is_one_line(tmp_path: Path, plex: FakePlex) -> None:
    plex.token = "another-token"
    config = plex_config(tmp_path, plex)
    result = watchbridge("anime", "import-plexanisync", str(SAMPLE), "--config", str(config))
    assert result.returncode == 1
    assert "does not accept services.plex.token (401)" in result.stderr
    assert TOKEN not in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- pure parts


def show(title: str, ordering: str | None = "aired", **episodes: int) -> PlexShow:
    counts = {int(k.removeprefix("s")): v for k, v in episodes.items()}
    return PlexShow(
        "1", title, "Anime", "plex://show/1", Ids(tvdb="1", tmdb="2"), None, (), ordering, counts
    )


def test_titles_match_without_case_accents_or_punctuation() -> None:
    entry = MappingEntry("Kaguya-sama: Love Is War", (), None, (SeasonLink(1, 101921),))
    found = find_show(entry, [show("KAGUYA SAMA LOVE IS WÁR")])
    assert isinstance(found, PlexShow)


def test_a_later_season_of_one_entry_needs_the_earlier_seasons_count() -> None:
    entry = MappingEntry("Gintama", (), None, (SeasonLink(1, 918), SeasonLink(2, 918)))
    skipped = translate(entry, show("Gintama", s2=50))
    assert isinstance(skipped, Skipped)
    assert "Plex holds no episode(s) of that season" in skipped.reason


def test_two_entries_starting_at_one_episode_are_not_guessed() -> None:
    entry = MappingEntry("AoT", (), None, (SeasonLink(4, 110277, 17), SeasonLink(4, 131681, 17)))
    skipped = translate(entry, show("AoT", s4=30))
    assert isinstance(skipped, Skipped) and "at the same episode 17" in skipped.reason


def test_shows_in_an_order_no_override_follows_are_skipped_with_why() -> None:
    entry = MappingEntry("One Piece", (), None, (SeasonLink(1, 21),))
    skipped = translate(entry, show("One Piece", "absolute", s1=1100))
    assert isinstance(skipped, Skipped) and "absolute: true" in skipped.reason
    assert skipped.kind == UNUSABLE


def test_merging_under_an_overrides_key_keeps_its_indentation() -> None:
    entry = MappingEntry("AoT", (), None, (SeasonLink(4, 131681, 17),))
    found = translate(entry, show("AoT", s4=30))
    assert isinstance(found, list)
    text = merged("overrides:\n    21: skip\n", found, "# imported", "o.yaml")
    assert "    131681:\n      title:" in text
    assert parse_overrides(text, "o.yaml").shows.keys() == {131681}


def test_malformed_files_name_the_key() -> None:
    cases = {
        "entries: {title: x}": "x.yaml: entries: expected a list of shows",
        "entries:\n  - seasons: [{season: 1, anilist-id: 1}]": "entries[0].title: expected",
        "entries:\n  - title: A\n    seasons: [{season: 0, anilist-id: 1}]": ".season: expected",
        "entries:\n  - title: A\n    guid: tvdb://1\n    seasons: []": ".guid: expected a Plex",
        "remote-urls: x": "remote-urls: expected a list",
        "entries: [": "x.yaml: invalid YAML",
    }
    for body, message in cases.items():
        with pytest.raises(DatasetError) as raised:
            parse_mappings(body, "x.yaml")
        assert message in str(raised.value), body


@pytest.mark.parametrize(
    ("guid", "ordering", "expected"),
    [
        ("plex://show/5d9c086c46115600200aa2fe", None, ("tmdb", 2)),
        ("plex://show/5d9c086c46115600200aa2fe", "tmdbAiring", ("tmdb", 2)),
        ("plex://show/5d9c086c46115600200aa2fe", "aired", ("tvdb", 1)),
        ("com.plexapp.agents.thetvdb://1?lang=en", None, ("tvdb", 1)),
        ("com.plexapp.agents.themoviedb://2?lang=en", None, ("tmdb", 2)),
        ("com.plexapp.agents.hama://tvdb-1?lang=en", None, ("tvdb", 1)),
        ("com.plexapp.agents.hama://anidb-9541?lang=en", None, "HAMA agent numbers it"),
        ("com.plexapp.agents.thetvdbdvdorder://1?lang=en", None, "DVD order"),
        ("plex://show/5d9c086c46115600200aa2fe", "dvd", "DVD order"),
        ("local://5", None, "neither TheTVDB's nor TMDB's"),
    ],
)
def test_the_numbering_follows_the_agent_and_the_shows_ordering(
    guid: str, ordering: str | None, expected: tuple[str, int] | str
) -> None:
    found = numbering(PlexShow("1", "t", "Anime", guid, Ids(tvdb="1", tmdb="2"), ordering=ordering))
    if isinstance(expected, str):
        assert isinstance(found, str) and expected in found
    else:
        assert found == expected
