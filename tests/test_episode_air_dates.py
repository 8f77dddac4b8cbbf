"""Without an episode's own TMDB id (Jellyfin and Emby name episodes by their TVDB id; no
Trakt to search), its air date places it in TMDB's numbering: a library in TVDB order never
logs another episode on Serializd."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, FakeJellyfin
from tests.fakes.plex import TOKEN as PLEX_TOKEN
from tests.fakes.plex import FakePlex
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.harness import ServiceProcess, free_port
from tests.ingest_samples import sample_json
from tests.test_enrich import drain, serializd_runtime, worker_for
from watchbridge.air_dates import aired_on, by_air_date
from watchbridge.app import Runtime
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.ingest import parse
from watchbridge.model import Accepted
from watchbridge.services.serializd import SeasonListing
from watchbridge.webhooks import ingest_job

SECRET = "hook-secret-1234567890"
REZERO_TMDB, REZERO_TVDB = 65942, 305089


def weekly(first: str, count: int) -> dict[int, str]:
    start = date.fromisoformat(first)
    return {n: (start + timedelta(weeks=n - 1)).isoformat() for n in range(1, count + 1)}


def listing(aired: dict[int, str]) -> SeasonListing:
    return SeasonListing(dict.fromkeys(aired), aired)


# TMDB: season 1 runs on (TVDB's seasons 1 and 2 as one: 2016, then from 2020 after a
# four-year break), season 2 is TVDB's season 3.
TMDB_SEASONS = {
    1: {**weekly("2016-04-04", 25), **{n + 25: d for n, d in weekly("2020-07-08", 25).items()}},
    2: weekly("2024-10-02", 16),
}
S1E39_AIRED = TMDB_SEASONS[1][39]  # TVDB S2E14 (TVDB's season 2 starts at TMDB's S1E26)


def test_the_sent_numbers_stay_when_tmdbs_episode_there_aired_that_day() -> None:
    listings = {2: listing(TMDB_SEASONS[2])}
    assert by_air_date(listings, 2, 14, TMDB_SEASONS[2][14]) is None


def test_the_one_episode_that_aired_that_day_is_where_it_goes() -> None:
    listings = {n: listing(days) for n, days in TMDB_SEASONS.items()}
    assert by_air_date(listings, 2, 14, S1E39_AIRED) == (1, 39)


def test_a_day_apart_is_the_same_air_date_a_time_zone_away() -> None:
    listings = {n: listing(days) for n, days in TMDB_SEASONS.items()}
    next_day = (date.fromisoformat(S1E39_AIRED) + timedelta(days=1)).isoformat()
    assert by_air_date(listings, 2, 14, next_day) == (1, 39)


def test_two_episodes_of_one_day_leave_the_numbers_as_sent() -> None:
    double = {**TMDB_SEASONS[1], 40: S1E39_AIRED}  # a two-episode premiere day
    assert (
        by_air_date({1: listing(double), 2: listing(TMDB_SEASONS[2])}, 2, 14, S1E39_AIRED) is None
    )


def test_a_special_of_the_same_day_is_not_taken_for_the_episode() -> None:
    listings = {0: listing({3: S1E39_AIRED}), 1: listing(TMDB_SEASONS[1])}
    assert by_air_date(listings, 2, 14, S1E39_AIRED) == (1, 39)


# --------------------------------------------------------------------------- end to end


@dataclass
class Household:
    service: ServiceProcess
    serializd: FakeSerializd
    db: Path

    def post(self, payload: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.service.url}/webhooks/emby/{SECRET}", json=payload)

    def settled(self) -> bool:
        with sqlite3.connect(self.db) as db:
            rows = db.execute("SELECT status FROM outbox WHERE target = 'serializd'").fetchall()
        return bool(rows) and all(status not in ("pending", "inflight") for (status,) in rows)

    def logged(self) -> list[tuple[int, int]]:
        show = self.serializd.shows[REZERO_TMDB]
        seasons = {season.id: number for number, season in show.seasons.items()}
        return sorted(
            (seasons[entry.season_id or 0], entry.episode_number or 0)
            for entry in self.serializd.diary()
        )


def start_household(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    tmdb_seasons: Mapping[int, dict[int, str]],
) -> Household:
    """The service for one Emby user logging on Serializd (no Trakt), whose catalogue holds
    Re:ZERO's TMDB id with `tmdb_seasons` (season -> episode -> air date)."""
    serializd = start_fake(FakeSerializd())
    assert isinstance(serializd, FakeSerializd)
    counts = {number: len(days) for number, days in tmdb_seasons.items()}
    show = serializd.add_show(REZERO_TMDB, "Re:ZERO", counts)
    for number, days in tmdb_seasons.items():
        show.seasons[number].aired = days
    emby = start_fake(FakeJellyfin("emby"))
    assert isinstance(emby, FakeJellyfin)
    emby.add_series("60001", "Re:ZERO", Tvdb=str(REZERO_TVDB), Tmdb=str(REZERO_TMDB))
    port = free_port()
    config = tmp_path / "watchbridge.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  emby: {{url: "{emby.url}", api_key: "{API_KEY}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  alex:
    users: {{emby: [alex]}}
    accounts: {{serializd: {{email: "{ALICE[0]}", password: "{ALICE[1]}"}}}}
""",
        encoding="utf-8",
    )
    return Household(ServiceProcess(config, port).start(), serializd, tmp_path / "wb.db")


@pytest.fixture
def household(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> Iterator[Household]:
    home = start_household(tmp_path, start_fake, TMDB_SEASONS)
    yield home
    home.service.kill()


def emby_stop(season: int, number: int, aired: str) -> dict[str, Any]:
    """Emby's completed stop of a Re:ZERO episode named by its own TVDB id only, as Emby
    usually does, with its PremiereDate."""
    payload = sample_json("emby", "playback_stop_episode_completed.json")
    payload["Item"] |= {
        "Id": f"70{season}{number:02}",
        "SeriesName": "Re:ZERO",
        "SeriesId": "60001",
        "ParentIndexNumber": season,
        "IndexNumber": number,
        "ProviderIds": {"Tvdb": f"80{season}{number:02}"},
        "PremiereDate": f"{aired}T04:00:00.0000000Z",  # a US server's local midnight
    }
    payload["Date"] = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime())
    return payload


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_tvdb_ordered_emby_episode_is_logged_as_the_tmdb_episode_of_its_air_date(
    household: Household,
) -> None:
    assert household.post(emby_stop(2, 14, S1E39_AIRED)).status_code == 202
    wait_for(household.settled)
    assert household.logged() == [(1, 39)]


def test_a_tvdb_ordered_emby_episode_carrying_its_series_tmdb_id_goes_by_its_air_date(
    household: Household,
) -> None:
    # A wrong NFO gave the episode Re:ZERO's series TMDB id as its own: no season of the show
    # holds it, and it must not stand in for the air date that places the episode.
    stop = emby_stop(2, 14, S1E39_AIRED)
    stop["Item"]["ProviderIds"] |= {"Tmdb": str(REZERO_TMDB)}
    assert household.post(stop).status_code == 202
    wait_for(household.settled)
    assert household.logged() == [(1, 39)]


def test_a_tmdb_ordered_emby_episode_keeps_its_numbers(household: Household) -> None:
    assert household.post(emby_stop(2, 14, TMDB_SEASONS[2][14])).status_code == 202
    wait_for(household.settled)
    assert household.logged() == [(2, 14)]


def test_an_episode_past_the_end_of_tmdbs_season_goes_to_the_season_tmdb_split_off() -> None:
    # TVDB runs one 24-episode season on; TMDB splits it into two of 12.
    run = weekly("2019-01-06", 24)
    listings = {
        1: listing({n: run[n] for n in range(1, 13)}),
        2: listing({n - 12: run[n] for n in range(13, 25)}),
    }
    assert by_air_date(listings, 1, 13, run[13]) == (2, 1)


def test_a_date_tmdb_has_weeks_apart_is_a_disagreement_not_another_episode() -> None:
    listings = {n: listing(days) for n, days in TMDB_SEASONS.items()}
    three_weeks_on = (date.fromisoformat(TMDB_SEASONS[2][14]) + timedelta(weeks=3)).isoformat()
    assert by_air_date(listings, 2, 14, three_weeks_on) is None


def test_a_folded_season_must_start_after_a_break_in_airing() -> None:
    # TMDB runs on without a pause where TVDB's season 2 would have to start: not a fold.
    unbroken = {1: listing(weekly("2016-04-04", 50)), 2: listing(TMDB_SEASONS[2])}
    assert by_air_date(unbroken, 2, 14, unbroken[1].aired[39]) is None


# --------------------------------------------------------------------------- Plex

PLEX_SHOW, PLEX_EPISODE = "300", "3214"
NIGHTLY_TMDB, NIGHTLY_SHOW, NIGHTLY_EPISODE = 5001, "400", "4001"
NIGHTLY = {n: f"2010-05-{n + 2:02}" for n in range(1, 6)}  # TMDB S1E1-E5, Monday to Friday


@dataclass
class PlexHome:
    runtime: Runtime
    plex: FakePlex
    serializd: FakeSerializd
    worker: DeliveryWorker

    def post(self, key: str, aired: str, **changes: Any) -> None:
        """Plex's scrobble of item `key` of the fake Plex server, first aired on `aired`, as
        the webhook route queues it."""
        payload = sample_json("plex", "episode_new_agent_friend_media_scrobble.json")
        payload["Server"]["uuid"] = self.plex.machine_id
        item = self.plex.items[key]
        payload["Metadata"] = {
            **payload["Metadata"],
            **{k: item[k] for k in PLEX_FIELDS if k in item},
            "originallyAvailableAt": aired,
            **changes,
        }
        if "index" not in item:  # a daily show's: Plex numbers it by its air date alone
            del payload["Metadata"]["index"]
        result = parse("plex", json.dumps(payload).encode(), "application/json")
        assert isinstance(result, Accepted), result
        for event in result.events:
            self.runtime.store.ingest(ingest_job(self.runtime, "me", event))

    def logged(self, show_id: int) -> list[tuple[int, int]]:
        show = self.serializd.shows[show_id]
        seasons = {season.id: number for number, season in show.seasons.items()}
        return sorted(
            (seasons[entry.season_id or 0], entry.episode_number or 0)
            for entry in self.serializd.diary()
        )


PLEX_FIELDS = ("ratingKey", "guid", "Guid", "grandparentGuid", "grandparentRatingKey")
PLEX_FIELDS += ("grandparentTitle", "parentIndex", "index", "title")


@pytest.fixture
async def plex_home(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    clock: FakeClock,
) -> AsyncIterator[PlexHome]:
    """A Plex library in TheTVDB's order (no Trakt): Re:ZERO's TVDB S2E14, named by its own
    TVDB id only, and a daily show's episode of 2010-05-05 with no episode number (Plex
    numbers it by its air date). Serializd's catalogue holds both shows with air dates."""
    serializd = start_fake(FakeSerializd())
    assert isinstance(serializd, FakeSerializd)
    show = serializd.add_show(REZERO_TMDB, "Re:ZERO", {n: len(d) for n, d in TMDB_SEASONS.items()})
    for number, days in TMDB_SEASONS.items():
        show.seasons[number].aired = days
    nightly = serializd.add_show(NIGHTLY_TMDB, "Nightly", {0: 1, 1: len(NIGHTLY)})
    nightly.seasons[1].aired = NIGHTLY
    nightly.seasons[0].aired = {1: NIGHTLY[3]}  # a special of the same day: never taken
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plex.add_show(PLEX_SHOW, "Re:ZERO", 2016, [f"tmdb://{REZERO_TMDB}"], ordering="aired")
    plex.add_episode(PLEX_EPISODE, PLEX_SHOW, 2, 14, ["tvdb://8214"])
    plex.add_show(NIGHTLY_SHOW, "Nightly", 2010, [f"tmdb://{NIGHTLY_TMDB}"])
    plex.add_episode(NIGHTLY_EPISODE, NIGHTLY_SHOW, 2010, 1, ["imdb://tt9100503"])
    del plex.items[NIGHTLY_EPISODE]["index"]
    plex_line = f'  plex: {{url: "{plex.url}", token: "{PLEX_TOKEN}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, plex_line)
    worker = await worker_for(runtime)
    yield PlexHome(runtime, plex, serializd, worker)
    for target in worker.targets.values():
        await target.aclose()
    runtime.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("aired", "logged"),
    [
        (S1E39_AIRED, [(1, 39)]),
        (TMDB_SEASONS[2][14], [(2, 14)]),  # TMDB's S2E14 aired that day: the numbers agree
        ("2016-02-30", [(2, 14)]),  # no day: nothing to place it by
    ],
)
async def test_a_tvdb_ordered_plex_episode_is_logged_as_the_tmdb_episode_of_its_air_date(
    plex_home: PlexHome, aired: str, logged: list[tuple[int, int]]
) -> None:
    plex_home.post(PLEX_EPISODE, aired)
    await drain(plex_home.worker, plex_home.runtime)
    assert plex_home.logged(REZERO_TMDB) == logged, plex_home.runtime.store.unmatched()


@pytest.mark.anyio
async def test_a_plex_daily_shows_episode_without_a_number_is_the_one_tmdb_aired_that_day(
    plex_home: PlexHome,
) -> None:
    plex_home.post(NIGHTLY_EPISODE, NIGHTLY[3])
    await drain(plex_home.worker, plex_home.runtime)
    assert plex_home.logged(NIGHTLY_TMDB) == [(1, 3)], plex_home.runtime.store.unmatched()


def test_a_day_with_two_regular_episodes_places_neither() -> None:
    nightly = {1: "2010-05-03", 2: "2010-05-04", 3: "2010-05-04"}  # a two-episode night
    assert aired_on({1: listing(nightly)}, "2010-05-04") is None
    assert aired_on({1: listing(nightly)}, "2010-05-03") == (1, 1)
