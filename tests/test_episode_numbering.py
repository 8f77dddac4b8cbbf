"""A media server numbers episodes in its library's order (TVDB's aired, DVD or absolute order,
or TMDB's); Serializd takes TMDB's. A webhook's episode goes where its own TMDB id is, so it
lands on the same episode on Trakt (matched by episode ids) and on Serializd, and a link
between them finds nothing to copy."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.jellyfin import API_KEY as JELLYFIN_KEY
from tests.fakes.jellyfin import FakeJellyfin
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, Episode, FakeTrakt
from tests.harness import sign_in_trakt
from tests.ingest_samples import sample_json
from tests.linkrig import LINK, PROFILE, Rig, fast_serializd, fast_trakt, use_fast_readers
from watchbridge.catalogue import find_episode
from watchbridge.config import parse_config
from watchbridge.deliver.serializd import SerializdTarget
from watchbridge.deliver.trakt import TraktTarget
from watchbridge.ids import Enricher
from watchbridge.ingest import jellyfin
from watchbridge.model import Accepted
from watchbridge.playback import decide
from watchbridge.services.jellyfin import media_server_client
from watchbridge.webhooks import rows_for
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

# Re:ZERO (reference anime-mapping.md): TVDB 305089 S2E16 is TMDB 65942 S1E41.
TMDB_SHOW, TVDB_SHOW = 65942, 305089
SERIES_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def rig(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    use_fast_readers(monkeypatch)
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    server = start_fake(FakeJellyfin())
    # TMDB's numbering (Trakt's and Serializd's): season 1 has 50 episodes, season 2 has 16.
    show = trakt.add_show("Re:ZERO", 2016, tmdb=TMDB_SHOW, tvdb=TVDB_SHOW, seasons={1: 50, 2: 16})
    listed = serializd.add_show(TMDB_SHOW, "Re:ZERO", seasons={1: 50, 2: 16})
    for season in (1, 2):
        for number, episode in show.seasons[season].episodes.items():
            episode.tmdb = listed.seasons[season].first_episode_id + number
    serializd.diary_order = "newest"
    server.add_series(SERIES_ID, "Re:ZERO", Tmdb=str(TMDB_SHOW), Tvdb=str(TVDB_SHOW))
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
  jellyfin: {{url: "{server.url}", api_key: "{JELLYFIN_KEY}"}}
profiles:
  {PROFILE}:
    users: {{jellyfin: [alex]}}
    accounts:
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  {LINK}: {{services: [trakt, serializd], first_run: apply}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, PROFILE, now=time.time())
    rig = Rig(trakt, serializd, runtime)
    client = fast_trakt(config, runtime.store)
    assert config.services.jellyfin is not None
    ids = Enricher(
        runtime.store,
        time.time,
        jellyfin=media_server_client(config.services.jellyfin),
        search=client.search,
    )
    rig.targets = {
        "trakt": TraktTarget(client, runtime.store, config.delivery, time.time, enricher=ids),
        "serializd": SerializdTarget(
            fast_serializd(config, runtime.store),
            runtime.store,
            config.delivery,
            time.time,
            enricher=ids,
        ),
    }
    yield rig
    await rig.aclose()


def tvdb_ordered_play(rig: Rig, **provider_ids: str) -> None:
    """Jellyfin's PlaybackStop of TVDB S2E16 from a library in TVDB order, with only the
    episode ids given (the others left out, as often for anime), queued as the route would."""
    payload = copy.deepcopy(sample_json("jellyfin", "playback_stop_episode_completed.json"))
    for key in ("Provider_imdb", "Provider_tmdb", "Provider_tvdb"):
        payload.pop(key, None)
    when = datetime.fromtimestamp(time.time() - 3600, UTC)
    payload |= {
        "SeriesName": "Re:ZERO",
        "SeriesId": SERIES_ID,
        "SeasonNumber": 2,
        "EpisodeNumber": 16,
        "UtcTimestamp": when.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        **{f"Provider_{name}": value for name, value in provider_ids.items()},
    }
    parsed = jellyfin.parse(payload)
    assert isinstance(parsed, Accepted), parsed
    (event,) = parsed.events
    _, intents = decide(None, event, 90.0, time.time())
    assert rig.store.enqueue(rows_for(PROFILE, ["trakt", "serializd"], event, intents), time.time())


def trakt_episodes(trakt: FakeTrakt) -> list[tuple[int, int]]:
    return sorted(
        (h.item.season, h.item.number) for h in trakt.history() if isinstance(h.item, Episode)
    )


def serializd_episodes(serializd: FakeSerializd) -> list[tuple[int, int]]:
    logged = []
    for entry in serializd.diary():
        season = serializd.shows[entry.show_id].season_by_id(entry.season_id or 0)
        if season is not None and entry.episode_number is not None:
            logged.append((season.number, entry.episode_number))
    return sorted(logged)


def s1e41(rig: Rig) -> Episode:
    return rig.trakt.shows[0].seasons[1].episodes[41]


async def test_an_episode_with_its_tmdb_id_is_logged_on_serializd_where_that_id_is(
    rig: Rig,
) -> None:
    tvdb_ordered_play(rig, tmdb=str(s1e41(rig).tmdb))
    await rig.deliver()
    assert serializd_episodes(rig.serializd) == [(1, 41)]


async def test_an_episode_with_only_its_tvdb_id_gets_its_tmdb_id_from_trakts_search(
    rig: Rig,
) -> None:
    tvdb_ordered_play(rig, tvdb=str(s1e41(rig).tvdb))
    await rig.deliver()
    assert trakt_episodes(rig.trakt) == [(1, 41)]
    assert serializd_episodes(rig.serializd) == [(1, 41)]


async def test_a_link_after_a_tvdb_ordered_play_duplicates_nothing(rig: Rig) -> None:
    tvdb_ordered_play(rig, tvdb=str(s1e41(rig).tvdb))
    await rig.deliver()
    for _ in range(2):
        await rig.sync_and_deliver()
    assert trakt_episodes(rig.trakt) == [(1, 41)]
    assert serializd_episodes(rig.serializd) == [(1, 41)]


async def test_an_episode_without_ids_of_its_own_keeps_the_numbers_sent(rig: Rig) -> None:
    tvdb_ordered_play(rig)
    await rig.deliver()
    assert serializd_episodes(rig.serializd) == [(2, 16)]  # nothing says otherwise


async def test_unlisted_episodes_read_a_shows_seasons_again_at_most_hourly(rig: Rig) -> None:
    long_runner = 4000
    rig.serializd.add_show(long_runner, "Long Runner", seasons={n: 20 for n in range(1, 31)})
    target = rig.targets["serializd"]
    assert isinstance(target, SerializdTarget)
    for unlisted in range(1, 6):  # an evening of plays of episodes not listed yet
        episode_id = 10_000_000 + unlisted
        found = await find_episode(target.client, rig.store, long_runner, episode_id, 30, time.time)
        assert found is None
    # The listings once, then once more fresh: not once more per play.
    assert rig.serializd.count("GET", "/api/show/{id}/season/{number}") == 2 * 30


def two_episode_file(
    rig: Rig, season: int, first: int, targets: Sequence[str] = ("trakt",), **provider_ids: str
) -> None:
    """Jellyfin's PlaybackStop of a file holding episodes `first` and `first + 1` of `season`
    (EpisodeNumberEnd), the first named by `provider_ids`, queued for `targets` as the route
    would."""
    payload = copy.deepcopy(sample_json("jellyfin", "playback_stop_episode_completed.json"))
    for key in ("Provider_imdb", "Provider_tmdb", "Provider_tvdb"):
        payload.pop(key, None)
    when = datetime.fromtimestamp(time.time() - 3600, UTC)
    payload |= {
        "SeriesName": "Re:ZERO",
        "SeriesId": SERIES_ID,
        "SeasonNumber": season,
        "EpisodeNumber": first,
        "EpisodeNumberEnd": first + 1,
        "UtcTimestamp": when.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        **{f"Provider_{name}": value for name, value in provider_ids.items()},
    }
    parsed = jellyfin.parse(payload)
    assert isinstance(parsed, Accepted), parsed
    for event in parsed.events:
        _, intents = decide(None, event, 90.0, time.time())
        assert rig.store.enqueue(rows_for(PROFILE, targets, event, intents), time.time())


async def test_a_two_episode_file_across_the_end_of_a_trakt_season_records_the_next_seasons_first(
    rig: Rig,
) -> None:
    # Review s32 (094c4dc): a library in one long season (absolute order) holds Trakt's
    # S1E50 (the last of its season 1) and S2E01 in one file, its S1E50-E51. The second is
    # "the episode after the one Trakt's search gives for the first": Trakt's S2E01, not a
    # S1E51 Trakt does not have (unmatched hourly, then a dead letter: the play is lost).
    last_of_season = rig.trakt.shows[0].seasons[1].episodes[50]
    two_episode_file(rig, 1, 50, tvdb=str(last_of_season.tvdb))
    await rig.deliver()
    assert trakt_episodes(rig.trakt) == [(1, 50), (2, 1)]


async def test_a_two_episode_file_whose_first_trakt_knows_by_imdb_only_places_the_second(
    rig: Rig,
) -> None:
    # 6c0bb2b: "the first is searched by its TVDB/TMDB id *before* its IMDb id", but
    # first_of_file drops the IMDb id whenever a TVDB or TMDB id is there, so IMDb is never
    # asked. Trakt lost many episodes' TVDB ids (ids.TraktEpisodes): a library in one long
    # season holds Trakt's S2E01-E02 as its S1E51-E52. Before 6c0bb2b the IMDb search placed
    # the second as S2E02; now the TVDB search alone fails and the second falls back to the
    # server's S1E52, which Trakt does not have: unmatched, then a dead letter.
    first = rig.trakt.shows[0].seasons[2].episodes[1]
    first.imdb, first.tvdb = "tt9005001", None
    two_episode_file(rig, 1, 51, tvdb="8000051", imdb="tt9005001")
    await rig.deliver()
    # (The first itself, sent with both ids, is a separate matter: the second is placed.)
    assert (2, 2) in trakt_episodes(rig.trakt)


async def test_a_show_trakt_knows_under_another_tvdb_id_still_gets_the_episodes_tmdb_id(
    rig: Rig,
) -> None:
    # The server's series says TVDB 305089 (and TMDB 65942, as Trakt); Trakt lists the show
    # under another TVDB id (TVDB merged a duplicate record). The episode's own TVDB id is
    # its alone: Trakt's search finds the right episode, of the same show.
    rig.trakt.shows[0].tvdb = 999_001
    tvdb_ordered_play(rig, tvdb=str(s1e41(rig).tvdb))
    await rig.deliver()
    assert serializd_episodes(rig.serializd) == [(1, 41)]


async def test_a_two_episode_files_second_episode_is_logged_on_serializd_after_the_first(
    rig: Rig,
) -> None:
    # A Jellyfin library in TVDB's order plays a file holding TVDB's S2E10-E11, which TMDB
    # numbers S1E35-E36. The first is placed by its own TMDB id; the second has no ids of its
    # own, and its numbers as sent, S2E11, name an episode TMDB has too (one never watched):
    # it is the episode after the first on TMDB's list, as on Trakt.
    first = rig.trakt.shows[0].seasons[1].episodes[35]
    two_episode_file(rig, 2, 10, targets=("trakt", "serializd"), tmdb=str(first.tmdb))
    await rig.deliver()
    assert trakt_episodes(rig.trakt) == [(1, 35), (1, 36)]
    assert serializd_episodes(rig.serializd) == [(1, 35), (1, 36)]


async def test_a_two_episode_file_across_the_end_of_a_tmdb_season_is_logged_into_the_next(
    rig: Rig,
) -> None:
    last_of_season = rig.trakt.shows[0].seasons[1].episodes[50]
    two_episode_file(rig, 1, 50, targets=("serializd",), tmdb=str(last_of_season.tmdb))
    # As sent, S1E51: no such episode on TMDB; the next one after S1E50 is S2E01.
    await rig.deliver()
    assert serializd_episodes(rig.serializd) == [(1, 50), (2, 1)]
