"""Anime numbering: AniList entries ⇄ TMDB/TVDB episodes from the pinned dataset samples.

`tests/fixtures/anime/worked-examples.json` holds the test vectors (copied from the shared
reference); "low" confidence vectors are disputed between datasets, so their open (null)
expectations are not checked and list expectations accept any of the listed values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anime_datasets import FIXTURES, sample_bodies
from watchbridge.anime import (
    AnimeIndex,
    AnimeTarget,
    DatasetError,
    EpisodeRef,
    MovieRef,
    Unmatched,
    load_index,
    parse_overrides,
    parse_range,
)

VECTORS = json.loads((FIXTURES / "worked-examples.json").read_text())
FORWARD = VECTORS["forward"]
REVERSE = VECTORS["reverse"]
ALL = ("anibridge", "kometa", "fribb", "animelists")


def index_of(names: tuple[str, ...] = ALL, overrides: str | None = None) -> AnimeIndex:
    bodies = sample_bodies()
    return load_index({name: bodies[name] for name in names}, overrides)


@pytest.fixture(scope="module")
def index() -> AnimeIndex:
    return index_of()


def check_show(result: Any, expect: dict[str, Any] | None, confidence: str) -> None:
    if expect is None:
        if confidence != "low":
            # No season/episode answer: unmatched, a movie, or absolute numbers (Trakt's
            # number_abs), never a season guess.
            assert not (isinstance(result, EpisodeRef) and result.season is not None), result
        return
    assert isinstance(result, EpisodeRef), result
    assert (result.show, result.season) == (expect["show"], expect["season"])
    wanted = expect["episode"]
    if isinstance(wanted, list) and len(result.numbers) > 1:
        assert list(result.numbers) == wanted  # one AniList episode spans several
    elif isinstance(wanted, list):
        assert result.number in wanted  # the datasets disagree; either is accepted
    else:
        assert result.number == wanted


def check_movie(result: Any, expect: dict[str, Any] | None) -> None:
    if expect is None:
        assert not isinstance(result, MovieRef), result
        return
    assert isinstance(result, MovieRef), result
    assert result.tmdb == expect["id"] or (result.tmdb is None and result.imdb == expect["imdb"])


@pytest.mark.parametrize("example", FORWARD, ids=[e["name"] for e in FORWARD])
@pytest.mark.parametrize("scheme", ["tvdb", "tmdb"])
def test_worked_example_forward(index: AnimeIndex, example: dict[str, Any], scheme: str) -> None:
    result = index.episode_for(example["anilist_id"], example["anilist_episode"], scheme)  # type: ignore[arg-type]
    if scheme == "tmdb" and example["expect"]["tmdb_movie"] is not None:
        check_movie(result, example["expect"]["tmdb_movie"])
    else:
        check_show(result, example["expect"][scheme], example["confidence"])


HIGH = [e for e in FORWARD if e["confidence"] != "low"]


@pytest.mark.parametrize("example", HIGH, ids=[e["name"] for e in HIGH])
@pytest.mark.parametrize("scheme", ["tvdb", "tmdb"])
def test_worked_example_forward_without_anibridge(example: dict[str, Any], scheme: str) -> None:
    # The AniDB-keyed datasets alone (Kometa ids + Anime-Lists numbering) give the same answers.
    index = index_of(("kometa", "animelists"))
    result = index.episode_for(example["anilist_id"], example["anilist_episode"], scheme)  # type: ignore[arg-type]
    if scheme == "tmdb" and example["expect"]["tmdb_movie"] is not None:
        check_movie(result, example["expect"]["tmdb_movie"])
    else:
        check_show(result, example["expect"][scheme], example["confidence"])


@pytest.mark.parametrize("example", REVERSE, ids=[e["name"] for e in REVERSE])
def test_worked_example_reverse(index: AnimeIndex, example: dict[str, Any]) -> None:
    given = example["input"]
    if given["provider"] == "tmdb_movie":
        result = index.anilist_for_movie(given["id"])
    else:
        result = index.anilist_for(
            given["show"], given["season"], given["episode"], given["provider"]
        )
    assert result == (example["expect"]["anilist_id"], example["expect"]["anilist_episode"])


@pytest.mark.parametrize("names", [("kometa", "animelists"), ("fribb", "animelists")])
def test_reverse_without_anibridge_cuts_open_ranges_where_the_next_part_starts(
    names: tuple[str, ...],
) -> None:
    index = index_of(names)
    # Re:Zero on TMDB S1: 21355 from E1, 108632 from E27 (+26), 119661 from E39 (+38).
    assert index.anilist_for(65942, 1, 20) == (21355, 20)
    assert index.anilist_for(65942, 1, 41) == (119661, 3)
    assert index.anilist_for(30984, 2, 14) == (159322, 1)


def test_resolve_gives_the_tmdb_season_and_offset_trakt_and_serializd_use(
    index: AnimeIndex,
) -> None:
    target = index.resolve(119661)
    assert target == AnimeTarget(
        tmdb_show=65942,
        tvdb_show=305089,
        season=1,
        offset=38,
        first=39,
        last=50,
        absolute=False,
        source="anibridge",
        tvdb_season=2,
        tvdb_offset=13,
        tvdb_source="anibridge",
    )


def test_an_absolute_entry_resolves_to_absolute_tmdb_numbers(index: AnimeIndex) -> None:
    # Gintama: Anime-Lists says tmdbseason "a"; Trakt takes absolute numbers (number_abs).
    target = index.resolve(918)
    assert isinstance(target, AnimeTarget)
    assert (target.tmdb_show, target.absolute, target.season) == (57041, True, None)
    ref = index.episode_for(918, 120, "tmdb")
    assert isinstance(ref, EpisodeRef)
    assert (ref.season, ref.number, ref.absolute) == (None, 120, True)


def test_absolute_reverse_lookup(index: AnimeIndex) -> None:
    assert index.anilist_for(57041, None, 120) == (918, 120)


def test_a_movie_made_of_several_anilist_episodes_counts_only_with_the_last() -> None:
    index = index_of()
    partial = index.episode_for(151384, 3, "tmdb")
    assert isinstance(partial, Unmatched) and partial.code == "partial"
    assert isinstance(index.episode_for(151384, 4, "tmdb"), MovieRef)
    assert index.anilist_for_movie(997317) == (151384, 4)


def test_a_movie_without_ranges_waits_for_the_known_episode_count() -> None:
    index = index_of(("kometa", "animelists"))  # no anibridge ranges: 4 eps, one movie
    assert isinstance(index.episode_for(151384, 2, "tmdb", total=4), Unmatched)
    movie = index.episode_for(151384, 4, "tmdb", total=4)
    assert movie == MovieRef(997317, "tt23770418", "kometa")  # tmdb id from Anime-Lists


# --------------------------------------------------------------------------- overrides

OVERRIDES = """
119661:            # Re:Zero S2 Part 2: say TMDB S2 from E1 instead
  title: Re:Zero S2 Part 2
  tmdb: {show: 65942, season: 2, offset: 0}
108632:
  tmdb: {show: 65942, season: 1, episodes: {"1-13": "26-38"}}
918:
  tvdb:
    show: 79895
    seasons:
      1: {"1-49": "1-49"}
      2: {"50-": "1-"}
146984:
  tvdb: {show: 267440, season: 4, episodes: {"1": "29-30|2"}}
  tmdb: skip
21355: skip
"anilist:154587":
  "tmdb_show:209867:s1": {"1-28": "101-128"}
"""


def test_an_override_wins_over_every_dataset() -> None:
    index = index_of(overrides=OVERRIDES)
    ref = index.episode_for(119661, 3, "tmdb")
    assert isinstance(ref, EpisodeRef)
    assert (ref.show, ref.season, ref.number, ref.source) == (65942, 2, 3, "override")
    # The TVDB side has no override: the datasets still answer it.
    tvdb = index.episode_for(119661, 3, "tvdb")
    assert isinstance(tvdb, EpisodeRef) and (tvdb.season, tvdb.number) == (2, 16)
    # ...and the reverse direction follows the override too.
    assert index.anilist_for(65942, 2, 3) == (119661, 3)
    assert isinstance(index.anilist_for(65942, 1, 41), Unmatched)


def test_an_override_beats_a_dataset_even_outside_its_ranges() -> None:
    index = index_of(overrides=OVERRIDES)
    ref = index.episode_for(108632, 1, "tmdb")
    assert isinstance(ref, EpisodeRef) and ref.number == 26
    outside = index.episode_for(108632, 14, "tmdb")
    assert isinstance(outside, Unmatched) and outside.code == "outside"


def test_override_forms_seasons_ratio_and_anibridge_grammar() -> None:
    index = index_of(overrides=OVERRIDES)
    gintama = index.episode_for(918, 60, "tvdb")
    assert isinstance(gintama, EpisodeRef) and (gintama.season, gintama.number) == (2, 11)
    final = index.episode_for(146984, 1, "tvdb")
    assert isinstance(final, EpisodeRef) and final.numbers == (29, 30)
    frieren = index.episode_for(154587, 2, "tmdb")
    assert isinstance(frieren, EpisodeRef) and (frieren.number, frieren.source) == (102, "override")


def test_override_skip_leaves_an_entry_or_a_scheme_unmapped() -> None:
    index = index_of(overrides=OVERRIDES)
    assert isinstance(index.resolve(21355), Unmatched)
    assert index.episode_for(21355, 1, "tmdb") == Unmatched(
        "overrides says: do not map", "unmapped"
    )
    skipped = index.episode_for(146984, 1, "tmdb")
    assert isinstance(skipped, Unmatched) and skipped.code == "unmapped"


def test_explain_names_the_override_and_what_it_overrode() -> None:
    lines = index_of(overrides=OVERRIDES).explain(119661)
    text = "\n".join(lines)
    assert "override (overrides): show 65942: S2 1- → 1-" in text
    assert "anibridge: show 65942: S1 1-12 → 39-50 [ignored: override wins]" in text
    assert lines[-2] == "result TMDB: episode 1 → show 65942 S2E1 via override"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc: {tmdb: {show: 1, season: 1}}", "abc: expected an AniList id"),
        ("5: {tmdb: {season: 1}}", "5.tmdb.show: expected a TMDB show id"),
        ("5: {tmdb: {show: 1, season: x}}", "5.tmdb.season: expected a season number"),
        ("5: {tmdb: {show: 1, season: 1, episodes: {'a-b': '1'}}}", "bad source range"),
        ("5: {tvdb: {show: 1, season: 1, ofset: 2}}", "unknown key 'ofset'"),
        ("5: {plex: {}}", "5.plex: unknown key"),
        ("[1, 2]", "expected `ANILIST_ID"),
        ("5: skip\n6: skip\n5: {tmdb: {show: 1, season: 1}}", "line 3: 5 is given twice"),
        ("5: skip\n'5': skip", "'5': AniList 5 is given twice (also as 5)"),
        ("5: skip\nanilist:5: {}", "'anilist:5': AniList 5 is given twice (also as 5)"),
        ("[21, 22]: skip", "line 1: a key must be one AniList id, one per line"),
    ],
)
def test_a_broken_override_names_the_file_and_key(text: str, message: str) -> None:
    with pytest.raises(DatasetError) as caught:
        parse_overrides(text, "anime-overrides.yaml")
    assert "anime-overrides.yaml: " in str(caught.value)
    assert message in str(caught.value)


# --------------------------------------------------------------------------- loose parsing


def test_fribb_rows_in_the_pre_2026_field_names_map_the_same() -> None:
    rows = json.loads(sample_bodies()["fribb"])
    old = []
    for row in rows:
        row = dict(row)
        if "tvdb_id" in row:
            row["thetvdb_id"] = row.pop("tvdb_id")  # renamed to tvdb_id in January 2026
        tmdb = row.pop("themoviedb_id", {})
        row["themoviedb_id"] = tmdb.get("tv") or (tmdb.get("movie") or [None])[0]
        if "imdb_id" in row:
            row["imdb_id"] = ",".join(row["imdb_id"])  # an array since 2026
        row["anilist_id"] = str(row["anilist_id"])  # ids as strings
        old.append(row)
    new_index = index_of(("fribb",))
    old_index = load_index({"fribb": json.dumps(old)})
    for example in FORWARD:
        for scheme in ("tvdb", "tmdb"):
            args = (example["anilist_id"], example["anilist_episode"], scheme)
            assert old_index.episode_for(*args) == new_index.episode_for(*args), example["name"]


def animelists(mappings: str, anidb: int = 5101, tmdb: int = 810000) -> str:
    """An Anime-Lists file of one anime (TMDB season 1 by default) with these mapping nodes."""
    return (
        f'<anime-list><anime anidbid="{anidb}" tvdbid="700000" defaulttvdbseason="1" '
        f'tmdbtv="{tmdb}" tmdbseason="1"><mapping-list>{mappings}</mapping-list></anime>'
        "</anime-list>"
    )


DOUBLE_FIRST_EPISODE = b"""<anime-list><anime anidbid="5001" tvdbid="700000"
 defaulttvdbseason="1" tmdbtv="800000" tmdbseason="1"><mapping-list>
<mapping anidbseason="1" tmdbseason="1">;1-1;2-1;3-2;</mapping>
</mapping-list></anime></anime-list>"""
DOUBLE_KOMETA = {"5001": {"tvdb_id": 700000, "tvdb_season": 1, "anilist_id": 6001}}


def test_two_episodes_listed_onto_one_target_episode_count_it_once_with_the_last() -> None:
    # ;1-1;2-1;: a double-length first episode. Each counted alone made two plays of S1E1.
    index = load_index({"kometa": json.dumps(DOUBLE_KOMETA), "animelists": DOUBLE_FIRST_EPISODE})
    first = index.episode_for(6001, 1, "tmdb")
    assert isinstance(first, Unmatched) and first.code == "partial"
    targets = [index.episode_for(6001, episode, "tmdb") for episode in (2, 3)]
    assert [(t.season, t.number) for t in targets if isinstance(t, EpisodeRef)] == [(1, 1), (1, 2)]
    assert index.anilist_for(800000, 1, 1, "tmdb") == (6001, 2)  # the episode covers both


# anibridge leaves AniList episode 13 (a recap) out: 1-12 -> S1E1-12, 14-25 -> S1E13-24.
ANIBRIDGE_GAP = {"anilist:7001": {"tmdb_show:810000:s1": {"1-12": "1-12", "14-25": "13-24"}}}
SEASON_ONE = {"5101": {"tmdb_show_id": 810000, "tmdb_season": 1, "anilist_id": 7001}}


def test_a_lesser_datasets_row_filling_a_gap_never_lands_on_an_episode_another_counts() -> None:
    # Kometa's "season 1, offset 0" put episode 13 on S1E13, which anibridge maps from 14:
    # finishing the entry made two plays of S1E13.
    index = load_index({"anibridge": json.dumps(ANIBRIDGE_GAP), "kometa": json.dumps(SEASON_ONE)})
    thirteen = index.episode_for(7001, 13, "tmdb")
    fourteen = index.episode_for(7001, 14, "tmdb")
    assert isinstance(thirteen, Unmatched) and thirteen.code == "partial"
    assert isinstance(fourteen, EpisodeRef) and (fourteen.season, fourteen.number) == (1, 13)


@pytest.mark.parametrize(
    "mapping",
    [
        '<mapping anidbseason="1" tmdbseason="1" start="2" end="13" offset="-1">;1-1;</mapping>',
        '<mapping anidbseason="1" tmdbseason="1">;1-1;</mapping>'
        '<mapping anidbseason="1" tmdbseason="1">;2-1;3-2;</mapping>',
    ],
    ids=["a pair beside a range", "pairs in two nodes"],
)
def test_a_double_first_episode_written_otherwise_is_counted_once_by_its_last(mapping: str) -> None:
    xml = animelists(mapping, anidb=5001, tmdb=800000)
    index = load_index({"kometa": json.dumps(DOUBLE_KOMETA), "animelists": xml})
    first = index.episode_for(6001, 1, "tmdb")
    assert isinstance(first, Unmatched) and first.code == "partial"
    assert index.anilist_for(800000, 1, 1, "tmdb") == (6001, 2)


def tmdb_plays(index: AnimeIndex, anilist_id: int, episodes: range) -> dict[int, list[int]]:
    """TMDB season-1 episode -> the AniList episodes whose play lands on it."""
    plays: dict[int, list[int]] = {}
    for episode in episodes:
        ref = index.episode_for(anilist_id, episode, "tmdb")
        if isinstance(ref, EpisodeRef) and ref.season == 1:
            for number in ref.numbers:
                plays.setdefault(number, []).append(episode)
    return plays


def test_a_double_episode_filling_a_gap_keeps_the_target_no_later_episode_plays() -> None:
    # anibridge skips AniList 13 and maps 14 -> S1E14; Anime-Lists says 13 is S1E13+14.
    anibridge = {"anilist:7001": {"tmdb_show:810000:s1": {"1-12": "1-12", "14-25": "14-25"}}}
    xml = animelists('<mapping anidbseason="1" tmdbseason="1">;13-13+14;</mapping>')
    bodies = {"anibridge": json.dumps(anibridge), "kometa": json.dumps(SEASON_ONE)}
    plays = tmdb_plays(load_index({**bodies, "animelists": xml}), 7001, range(1, 26))
    assert plays[13] == [13] and plays[14] == [14]  # each target played once, none lost


def test_a_target_a_later_episode_plays_as_one_of_its_parts_is_played_once() -> None:
    anibridge = {"anilist:7001": {"tmdb_show:810000:s1": {"1-12": "1-12", "14": "13-14|2"}}}
    index = load_index({"anibridge": json.dumps(anibridge), "kometa": json.dumps(SEASON_ONE)})
    assert tmdb_plays(index, 7001, range(1, 15))[13] == [14]


def test_a_target_the_way_back_gives_to_an_episode_that_plays_another_is_kept() -> None:
    # The way back gives S1E7 to 8 through a range, but 8's own pair (a special) wins on the
    # way there: 7 still plays S1E7.
    xml = animelists(
        '<mapping anidbseason="1" tmdbseason="0">;8-1;</mapping>'
        '<mapping anidbseason="1" tmdbseason="1" start="8" end="13" offset="-1"/>'
    )
    index = load_index({"kometa": json.dumps(SEASON_ONE), "animelists": xml})
    assert tmdb_plays(index, 7001, range(1, 14))[7] == [7]


def test_a_chain_of_overlapping_episodes_is_answered_without_recursing_along_it() -> None:
    # ;1-1+2;2-2+3;...: a malformed row of a long runner. Each episode's later-episode check
    # must not ask the next one's, and that one the next, to the end of the list.
    pairs = "".join(f";{e}-{e}+{e + 1}" for e in range(1, 1501)) + ";"
    xml = animelists(f'<mapping anidbseason="1" tmdbseason="1">{pairs}</mapping>')
    index = load_index({"kometa": json.dumps(SEASON_ONE), "animelists": xml})
    first = index.episode_for(7001, 1, "tmdb")
    assert isinstance(first, EpisodeRef) and first.numbers == (1,)  # 2 is played by episode 2


SEQUEL_ROW = {
    "type": "TV",
    "anidb_id": 99902,
    "anilist_id": 990002,
    "tvdb_id": 400000,
    "themoviedb_id": {"tv": 500000},
}


def test_a_fribb_season_object_without_a_tmdb_season_maps_nothing_on_tmdb() -> None:
    # Fribb leaves out a key that is 0 or unknown: read as absolute numbering, a sequel's
    # episode 1 went to TMDB S1E1, an episode the user never watched.
    index = load_index({"fribb": json.dumps([{**SEQUEL_ROW, "season": {"tvdb": 2}}])})
    tvdb = index.episode_for(990002, 1, "tvdb")
    assert isinstance(tvdb, EpisodeRef) and (tvdb.season, tvdb.number) == (2, 1)
    assert not isinstance(index.episode_for(990002, 1, "tmdb"), EpisodeRef)


def test_a_fribb_row_without_a_season_is_absolute_numbering() -> None:
    index = load_index({"fribb": json.dumps([SEQUEL_ROW])})  # how Fribb writes Anime-Lists' "a"
    for scheme in ("tvdb", "tmdb"):
        ref = index.episode_for(990002, 5, scheme)
        assert isinstance(ref, EpisodeRef) and ref.absolute and ref.number == 5


def test_kometa_ids_given_as_strings_and_comma_lists() -> None:
    kometa = {
        "15593": {
            "tvdb_id": "305089",
            "tvdb_season": "2",
            "tvdb_epoffset": "13",
            "mal_id": "42203,99999",
            "anilist_id": "119661",
        }
    }
    index = load_index({"kometa": json.dumps(kometa)})
    ref = index.episode_for(119661, 3, "tvdb")
    assert isinstance(ref, EpisodeRef) and (ref.show, ref.season, ref.number) == (305089, 2, 16)
    assert "MAL 42203,99999" in "\n".join(index.explain(119661))


def test_an_unreadable_dataset_is_left_out_and_reported() -> None:
    bodies = sample_bodies()
    index = load_index({"kometa": b"<html>rate limited</html>", "fribb": bodies["fribb"]})
    assert index.loaded == ("fribb",)
    assert index.problems and index.problems[0].startswith("kometa: not valid JSON")
    assert isinstance(index.episode_for(119661, 3, "tvdb"), EpisodeRef)


@pytest.mark.parametrize(
    ("src", "dst", "episode", "expected"),
    [
        ("1-12", "39-50", 3, (41,)),
        ("1", "29-30|2", 1, (29, 30)),
        ("1-4", "1|-4", 4, (1,)),
        ("1-4", "1|-4", 2, ()),
        ("1-", "29-", 100, (128,)),
        ("1-13", "1-6,8-14", 7, (8,)),
        ("1-3", None, 2, ()),
    ],
)
def test_anibridge_range_grammar(
    src: str, dst: str | None, episode: int, expected: tuple[int, ...]
) -> None:
    assert parse_range(src, dst).targets(episode) == expected


# --------------------------------------------------------------------------- unmatched


def test_an_unknown_entry_is_reported_never_guessed_from_its_title(index: AnimeIndex) -> None:
    # "Re:Zero ... (2024)" shares its title with mapped entries: still unmatched, with why.
    result = index.episode_for(189046, 1, "tmdb")
    assert isinstance(result, Unmatched) and result.code == "unknown"
    assert "in none of the mapping datasets" in result.reason
    assert "add an override" in result.reason
    assert index.explain(189046)[-1].startswith("result: unmatched: AniList 189046")


def test_a_known_entry_without_a_show_says_why(index: AnimeIndex) -> None:
    result = index.episode_for(164, 1, "tvdb")
    assert isinstance(result, Unmatched) and result.code == "no-target"
    assert "tvdbid is 'movie'" in result.reason


def test_explain_shows_where_datasets_disagree(index: AnimeIndex) -> None:
    text = "\n".join(index.explain(108632))
    assert "disagree: TMDB episode 1: anibridge 65942 S1E26, fribb 65942 S1E27" in text
    assert "ids: AniDB 14792, MAL 39587" in text


def test_the_fixtures_are_small_excerpts() -> None:
    # Anime-Lists and Fribb have no licence upstream: only tiny test excerpts live here.
    sizes = {p.name: p.stat().st_size for p in Path(FIXTURES).iterdir()}
    assert all(size < 20_000 for size in sizes.values()), sizes


def test_the_readme_overrides_example_parses_and_wins() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Overrides", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    index = index_of(overrides=example)
    ref = index.episode_for(119661, 3, "tmdb")
    assert isinstance(ref, EpisodeRef) and (ref.number, ref.source) == (41, "override")
    assert index.episode_for(164, 1, "tmdb") == MovieRef(128, "tt0119698", "override")
    assert isinstance(index.resolve(12345), Unmatched)


def test_a_better_source_saying_movie_beats_a_lesser_show_mapping() -> None:
    fribb = [
        {
            "type": "TV",
            "anidb_id": 7,
            "anilist_id": 164,
            "themoviedb_id": {"tv": 555},
            "season": {"tmdb": 1},
        }
    ]
    bodies = sample_bodies()
    index = load_index({"anibridge": bodies["anibridge"], "fribb": json.dumps(fribb)})
    assert index.episode_for(164, 1, "tmdb") == MovieRef(128, "tt0119698", "anibridge")
    only_fribb = load_index({"fribb": json.dumps(fribb)}).episode_for(164, 1, "tmdb")
    assert isinstance(only_fribb, EpisodeRef) and only_fribb.show == 555
