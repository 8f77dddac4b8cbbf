"""The one id enricher: the show ids Jellyfin, Emby and Plex new-agent webhooks leave out, read
from the server each item came from (fake servers over HTTP), cached in the store; and what the
Serializd target makes of what it could not find."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import (
    API_KEY,
    BREAKING_BAD_PROVIDER_IDS,
    EMBY_SERIES,
    JELLYFIN_SERIES,
    FakeJellyfin,
    sample_server,
)
from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.plextv import FakePlexTv
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, Rating, Show, iso, key_of
from tests.harness import sign_in_trakt
from tests.ingest_samples import only_event, sample_json
from tests.test_jellyfin_emby_to_trakt import jellyfin_episode as jellyfin_webhook_episode
from tests.test_jellyfin_emby_to_trakt import series_id_mixup
from tests.test_plex_enrichment import BAKI_SHOW_GUID, BAKI_SHOW_GUIDS, add_baki_hanma
from tests.unpaced import unpaced
from watchbridge.app import Runtime
from watchbridge.config import (
    EmbyConfig,
    JellyfinConfig,
    PlexConfig,
    Secret,
    TraktConfig,
    parse_config,
)
from watchbridge.deliver.serializd import AUTH_HOLD, SerializdTarget
from watchbridge.deliver.worker import DeliveryWorker, Hold, Retry
from watchbridge.deliver.worker import enriched as waiting_for_ids
from watchbridge.http import HttpClient, Pacer, RetryPolicy
from watchbridge.ids import (
    ANIME,
    RETRY_LOOKUP_SPACING,
    SERIES_MISSING_TTL,
    SERVER_OUTAGE_PAUSE,
    SHOW_TMDB,
    TRAKT,
    Enricher,
    distrusted,
    origin,
    same_episode,
    title_lookup,
    title_match,
)
from watchbridge.ingest import emby, jellyfin, parse
from watchbridge.ingest import plex as plex_ingest
from watchbridge.model import Accepted, Ids, MediaRef, ref_to_dict
from watchbridge.readers.plex import key_for_ref
from watchbridge.services.jellyfin import MediaServerClient
from watchbridge.services.plex import PlexClient
from watchbridge.services.trakt import TraktClient
from watchbridge.store import IngestJob, NewOutboxRow, OutboxItem, Store, ordering_key
from watchbridge.sync import _waiting as sync_waiting
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime, make_targets
from watchbridge.wiring import enricher as runtime_enricher

pytestmark = pytest.mark.anyio

EMAIL, PASSWORD, _ = ALICE
FAST = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)


COMPLETED = "playback_stop_episode_completed.json"


def jellyfin_episode() -> MediaRef:
    return only_event(jellyfin.parse(sample_json("jellyfin", COMPLETED))).item


def emby_episode() -> MediaRef:
    return only_event(emby.parse(sample_json("emby", COMPLETED))).item


@pytest.fixture
def jellyfin_server(start_fake: Callable[[FakeServer], FakeServer]) -> FakeJellyfin:
    return sample_server(start_fake, "jellyfin")


@pytest.fixture
async def jellyfin_client(jellyfin_server: FakeJellyfin) -> AsyncIterator[MediaServerClient]:
    client = MediaServerClient(JellyfinConfig(url=jellyfin_server.url, api_key=Secret(API_KEY)))
    client.http.retry = FAST
    yield client
    await client.aclose()


@pytest.fixture
def enricher(jellyfin_client: MediaServerClient, store: Store, clock: FakeClock) -> Enricher:
    return Enricher(store, clock, jellyfin=jellyfin_client)


# --------------------------------------------------------------------------- Jellyfin / Emby


async def test_a_jellyfin_episode_gets_its_show_ids_from_its_series(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    item = jellyfin_episode()
    assert item.show_ids == Ids() and item.ids.tmdb == "62161"  # the episode's TMDB id
    enriched = await enricher.enrich(item, SHOW_TMDB, "jellyfin")
    assert enriched.problem is None
    assert enriched.item.show_ids == Ids(imdb="tt0903747", tmdb="1396", tvdb="81189")
    assert enriched.item.ids == item.ids
    assert [r.path for r in jellyfin_server.requests] == [f"/Items/{JELLYFIN_SERIES}"]


async def test_a_series_is_read_once_the_store_remembers_it(
    jellyfin_client: MediaServerClient,
    jellyfin_server: FakeJellyfin,
    store: Store,
    clock: FakeClock,
) -> None:
    first = await Enricher(store, clock, jellyfin=jellyfin_client).enrich(
        jellyfin_episode(), SHOW_TMDB, "jellyfin"
    )
    second = await Enricher(store, clock, jellyfin=jellyfin_client).enrich(
        jellyfin_episode(), SHOW_TMDB, "jellyfin"
    )
    assert second == first
    assert len(jellyfin_server.requests) == 1


async def test_an_emby_episode_gets_its_show_ids_from_emby(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    server = sample_server(start_fake, "emby")
    client = MediaServerClient(EmbyConfig(url=server.url, api_key=Secret(API_KEY)))
    try:
        enriched = await Enricher(store, clock, emby=client).enrich(
            emby_episode(), SHOW_TMDB, "emby"
        )
    finally:
        await client.aclose()
    assert enriched.item.show_ids.tmdb == "1396"
    assert [r.query.get("Ids") for r in server.requests] == [EMBY_SERIES]


async def test_an_anime_series_known_only_by_its_anime_ids_is_placed_by_them(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    # Emby's (or Jellyfin's) anime plugins identify a series by AniList and AniDB ids only.
    server = sample_server(start_fake, "emby")
    server.add_series(EMBY_SERIES, "Frieren", AniList="154587", AniDB="17617")
    client = MediaServerClient(EmbyConfig(url=server.url, api_key=Secret(API_KEY)))
    try:
        enriched = await Enricher(store, clock, emby=client).enrich(emby_episode(), ANIME, "emby")
    finally:
        await client.aclose()
    assert enriched.problem is None
    assert (enriched.item.show_ids.anilist, enriched.item.show_ids.anidb) == ("154587", "17617")


OTHER_EMBY_SERVER = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"


async def test_an_emby_series_id_from_another_server_is_not_taken_as_this_servers_series(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    # Emby ids are small numbers: 51801 on the configured server is Breaking Bad; on the
    # other server the webhook came from, it is some other show.
    server = sample_server(start_fake, "emby")
    client = MediaServerClient(EmbyConfig(url=server.url, api_key=Secret(API_KEY)))
    enricher = Enricher(store, clock, emby=client)
    try:
        elsewhere = await enricher.enrich(
            emby_episode(), SHOW_TMDB, "emby", from_server=OTHER_EMBY_SERVER
        )
        here = await enricher.enrich(
            emby_episode(), SHOW_TMDB, "emby", from_server=server.server_id
        )
    finally:
        await client.aclose()
    assert elsewhere.item.show_ids == Ids() and elsewhere.problem is not None
    assert here.item.show_ids.tmdb == "1396"


async def test_a_replaced_emby_servers_series_is_asked_of_it_not_taken_from_the_old_ones(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    """services.emby.url now names a new server: its series 51801 is another show, and the
    old server's answer, cached for a week, is not taken for it."""
    old = sample_server(start_fake, "emby")
    new = start_fake(FakeJellyfin("emby", server_id=OTHER_EMBY_SERVER))
    assert isinstance(new, FakeJellyfin)
    new.add_series(EMBY_SERIES, "Frieren", Tmdb="209867", Tvdb="424536")
    found = []
    for server in (old, new):
        client = MediaServerClient(EmbyConfig(url=server.url, api_key=Secret(API_KEY)))
        try:
            enricher = Enricher(store, clock, emby=client)
            webhook = await enricher.enrich(
                emby_episode(), SHOW_TMDB, "emby", from_server=server.server_id
            )
        finally:
            await client.aclose()
        found.append(webhook.item.show_ids.tmdb)
    assert found == ["1396", "209867"]


async def test_webhooks_of_an_unconfigured_server_ask_the_configured_one_once(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    server = sample_server(start_fake, "emby")
    client = MediaServerClient(EmbyConfig(url=server.url, api_key=Secret(API_KEY)))
    enricher = Enricher(store, clock, emby=client)
    try:
        for _ in range(5):
            await enricher.enrich(emby_episode(), SHOW_TMDB, "emby", from_server=OTHER_EMBY_SERVER)
    finally:
        await client.aclose()
    assert len(server.requests) == 1


async def test_an_item_the_target_can_already_use_makes_no_request(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    item = jellyfin_episode()  # Trakt takes an episode by its own TVDB id
    assert (await enricher.enrich(item, TRAKT, "jellyfin")).item is item
    assert jellyfin_server.requests == []


async def test_an_unconfigured_server_is_a_problem_naming_its_settings(
    store: Store, clock: FakeClock
) -> None:
    enriched = await Enricher(store, clock).enrich(emby_episode(), SHOW_TMDB, "emby")
    assert enriched.problem is not None
    assert "services.emby.url and services.emby.api_key" in enriched.problem.message
    assert not (enriched.problem.credentials or enriched.problem.transient)


async def test_a_refused_key_is_a_credentials_problem_and_nothing_is_cached(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    jellyfin_server.api_key = "rotated-on-the-server"
    refused = await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    assert refused.problem is not None and refused.problem.credentials
    assert "services.jellyfin.api_key" in refused.problem.message
    jellyfin_server.api_key = API_KEY
    assert (await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")).problem is None


async def test_a_failing_server_is_a_transient_problem(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    jellyfin_server.fail_next(2, 500)
    enriched = await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    assert enriched.problem is not None and enriched.problem.transient
    assert enriched.item.show_ids == Ids()


async def test_a_server_that_failed_to_answer_is_left_alone_for_a_minute(
    enricher: Enricher, jellyfin_server: FakeJellyfin, clock: FakeClock
) -> None:
    jellyfin_server.fail_next(2, 503)  # both tries of the first lookup
    await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    asked = len(jellyfin_server.requests)
    clock.advance(10)
    waiting = [await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin") for _ in range(5)]
    assert len(jellyfin_server.requests) == asked  # five rows, no request, no timeout each
    for enriched in waiting:
        assert enriched.problem is not None and enriched.problem.transient
        assert "Jellyfin could not be asked for the show's ids" in enriched.problem.message
        assert enriched.problem.retry_after == pytest.approx(SERVER_OUTAGE_PAUSE - 10)
    clock.advance(SERVER_OUTAGE_PAUSE)
    assert (await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")).problem is None


async def test_a_server_failing_on_one_item_is_no_outage_and_still_asked_about_others(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    jellyfin_server.fail_next(2, 500)  # a 500: the server answers, failing on this item
    failed = await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    assert failed.problem is not None and failed.problem.transient
    assert not failed.problem.outage  # its row spends an attempt: a dead letter if it stays
    again = await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    assert again.problem is None  # not left alone for a minute


OTHER_SERIES = "5eed" * 8
THIRD_SERIES = "7ead" * 8


def episode_of(jellyfin_server: FakeJellyfin, series: str, name: str) -> MediaRef:
    """An episode of another show, which the server holds under `series`."""
    jellyfin_server.add_series(series, name, Tmdb="60059")
    return replace(jellyfin_episode(), show_source_key=series)


def other_show_episode(jellyfin_server: FakeJellyfin) -> MediaRef:
    return episode_of(jellyfin_server, OTHER_SERIES, "Better Call Saul")


async def test_a_server_timing_out_on_one_item_while_answering_others_fails_that_item(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    other = other_show_episode(jellyfin_server)
    assert (await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")).problem is None
    jellyfin_server.drop_next(2, route=f"/Items/{OTHER_SERIES}")  # both tries of the lookup
    failed = await enricher.enrich(other, SHOW_TMDB, "jellyfin")
    assert failed.problem is not None and failed.problem.transient
    # Its row spends an attempt and ends as a dead letter if it keeps failing; held as an
    # outage it would wait for ever, unsaid, while the server answers every other lookup.
    assert not failed.problem.outage
    assert "the server answers otherwise: this item fails" in failed.problem.message


async def test_rows_asking_just_after_one_item_timed_out_wait_without_a_request(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    other = other_show_episode(jellyfin_server)
    third = episode_of(jellyfin_server, THIRD_SERIES, "El Camino")
    await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    jellyfin_server.drop_next(2, route=f"/Items/{OTHER_SERIES}")
    await enricher.enrich(other, SHOW_TMDB, "jellyfin")
    asked = len(jellyfin_server.requests)
    waiting = await enricher.enrich(third, SHOW_TMDB, "jellyfin")
    # As after any failure to answer: a hanging server must not cost each row its timeout.
    assert len(jellyfin_server.requests) == asked
    assert waiting.problem is not None and waiting.problem.outage  # held, spending nothing


async def test_one_item_timing_out_on_a_quiet_server_that_answers_is_that_items_failure(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    # Nothing else asked lately: the server's "are you there" answer says it is up.
    other = other_show_episode(jellyfin_server)
    jellyfin_server.fail_next(2, 504, route=f"/Items/{OTHER_SERIES}")  # a proxy, this item
    failed = await enricher.enrich(other, SHOW_TMDB, "jellyfin")
    assert failed.problem is not None and not failed.problem.outage
    assert jellyfin_server.count("GET", "/System/Info/Public") == 1


async def test_a_server_gone_right_after_answering_is_an_outage_not_one_items_failure(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    # A restart for an update, a NAS reboot: it answered a moment ago, and now nothing.
    other = other_show_episode(jellyfin_server)
    assert (await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")).problem is None
    jellyfin_server.drop_next(4)  # the lookup's two tries, and the check's two
    failed = await enricher.enrich(other, SHOW_TMDB, "jellyfin")
    assert failed.problem is not None and failed.problem.outage  # held, spending nothing
    assert "this item fails" not in failed.problem.message


async def test_a_server_asking_to_wait_longer_than_a_minute_is_left_alone_that_long(
    enricher: Enricher, jellyfin_server: FakeJellyfin, clock: FakeClock
) -> None:
    jellyfin_server.fail_next(2, 503, headers={"Retry-After": "600"})
    await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    clock.advance(SERVER_OUTAGE_PAUSE + 1)
    waiting = await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    assert waiting.problem is not None and waiting.problem.transient
    assert waiting.problem.retry_after == pytest.approx(600 - SERVER_OUTAGE_PAUSE - 1)


async def test_a_refused_key_does_not_stop_the_next_row_from_asking(
    enricher: Enricher, jellyfin_server: FakeJellyfin
) -> None:
    jellyfin_server.api_key = "rotated-on-the-server"
    await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    jellyfin_server.api_key = API_KEY  # fixed in the config: the next row finds the ids
    assert (await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")).problem is None


async def test_a_series_without_a_tmdb_id_is_asked_again_after_an_hour(
    enricher: Enricher, jellyfin_server: FakeJellyfin, clock: FakeClock
) -> None:
    jellyfin_server.add_series(JELLYFIN_SERIES, "Breaking Bad", Tvdb="81189")
    missing = await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    assert missing.problem is not None
    assert "Jellyfin does not know the show's TMDB id for Breaking Bad" in missing.problem.message
    jellyfin_server.add_series(
        JELLYFIN_SERIES, "Breaking Bad", **BREAKING_BAD_PROVIDER_IDS
    )  # identified
    clock.advance(SERIES_MISSING_TTL + 1)
    found = await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    assert found.item.show_ids.tmdb == "1396"
    assert len(jellyfin_server.requests) == 2


def trakt_with_the_show(
    start_fake: Callable[[FakeServer], FakeServer],
) -> tuple[FakeTrakt, Show]:
    """A running fake Trakt holding Breaking Bad (its TVDB, IMDb and TMDB ids), no episodes."""
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    return trakt, trakt.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)


async def test_trakt_search_finds_the_show_when_no_media_server_is_configured(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    trakt, show = trakt_with_the_show(start_fake)
    trakt.add_episode(show, 5, 14, tvdb=4637661, imdb="tt2301451")
    client = TraktClient(TraktConfig(CLIENT_ID, api_url=trakt.url, auth_url=trakt.url), store)
    try:
        enriched = await Enricher(store, clock, search=client.search).enrich(
            jellyfin_episode(), SHOW_TMDB, "jellyfin"
        )
    finally:
        await client.aclose()
    assert enriched.problem is None
    assert enriched.item.show_ids.tmdb == "1396"


async def test_an_episode_known_by_its_show_title_gets_the_show_ids_from_trakts_title_search(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    trakt.add_show("Breaking Bad: Original Minisodes", 2009, tmdb=99999)
    client = TraktClient(TraktConfig(CLIENT_ID, api_url=trakt.url, auth_url=trakt.url), store)
    by_title = MediaRef("episode", show_title="breaking bad", season=5, number=14)
    try:
        enricher = Enricher(store, clock, search=client.search, title_search=client.search_title)
        enriched = await enricher.enrich(by_title, SHOW_TMDB, "generic")
    finally:
        await client.aclose()
    assert enriched.problem is None
    assert enriched.item.show_ids.tmdb == "1396"
    (search,) = [r for r in trakt.requests if r.path == "/search/show"]
    assert search.query["limit"] == "50"  # every same-titled show, not Trakt's first page of 10


def test_a_title_names_an_item_only_when_exactly_one_answers_to_it() -> None:
    def show(title: str, year: int, trakt: int) -> dict[str, Any]:
        return {"type": "show", "show": {"title": title, "year": year, "ids": {"trakt": trakt}}}

    office = [show("The Office", 2005, 1), show("The Office", 2001, 2), show("Office", 2015, 3)]
    assert title_match(office, "show", "The Office", None) is None  # two of them
    assert title_match(office, "show", "the office!", 2001) == office[1]
    assert title_match(office, "movie", "The Office", 2001) is None
    assert title_match(office, "show", "The Office", 1999) is None


def test_only_an_item_no_id_names_is_looked_up_by_title() -> None:
    assert title_lookup(MediaRef("movie", title="Arrival", year=2016)) == ("movie", "Arrival", 2016)
    assert title_lookup(MediaRef("movie", Ids(imdb="tt2543164"), title="Arrival")) is None
    episode = MediaRef("episode", show_title="Breaking Bad", season=5, number=14)
    assert title_lookup(episode) == ("show", "Breaking Bad", None)
    assert title_lookup(replace(episode, show_ids=Ids(tvdb="81189"))) is None
    assert title_lookup(replace(episode, number=None)) is None  # nothing would place it
    sonarr = replace(episode, show_title="Doctor Who (2005)")
    assert title_lookup(sonarr) == ("show", "Doctor Who", 2005)  # the year is no part of it
    assert title_lookup(MediaRef("movie", title="1917")) == ("movie", "1917", None)


# --------------------------------------------------------------------------- Plex


async def test_a_plex_new_agent_episode_reads_only_its_show_for_the_show_tmdb_id(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    add_baki_hanma(plex)
    payload = sample_json("plex", "episode_new_agent_friend_media_scrobble.json")
    item = only_event(plex_ingest.parse(payload)).item
    client = PlexClient(PlexConfig(url=plex.url, token=Secret(TOKEN)))
    try:
        enriched = await Enricher(store, clock, plex=client.metadata).enrich(
            item, SHOW_TMDB, "plex"
        )
    finally:
        await client.aclose()
    assert enriched.item.show_ids.tmdb == "131041"
    assert [r.path for r in plex.requests] == ["/library/metadata/40275"]


async def test_a_plex_server_replaced_while_watchbridge_runs_is_not_taken_for_a_friends(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    """Plex reinstalled at the same address answers with a new machine id: a play from it
    whose show is not found is not said to come from "another Plex server (a friend's?)". The
    identity is asked again for a server named anew, then at most hourly for each."""
    old, new, friends = "a1" * 20, "b2" * 20, "c3" * 20
    plex = start_fake(FakePlex(machine_id=old))  # no Baki Hanma: its show is not found
    assert isinstance(plex, FakePlex)
    item = only_event(
        plex_ingest.parse(sample_json("plex", "episode_new_agent_friend_media_scrobble.json"))
    ).item
    client = PlexClient(PlexConfig(url=plex.url, token=Secret(TOKEN)))
    enricher = Enricher(store, clock, plex=client.metadata, plex_identity=client.identity)

    async def reason(server: str) -> str:
        enriched = await enricher.enrich(item, SHOW_TMDB, "plex", from_server=server)
        assert enriched.problem is not None
        return enriched.problem.message

    elsewhere = "was played on another Plex server than services.plex.url"
    try:
        assert elsewhere not in await reason(old)
        plex.machine_id = new  # reinstalled while watchbridge runs
        assert elsewhere not in await reason(new.upper())
        assert "Plex does not know" in await reason(new)
        assert elsewhere in await reason(friends)
        asked = plex.count("GET", "/identity")
        clock.advance(3599)
        assert elsewhere in await reason(friends)
        assert plex.count("GET", "/identity") == asked  # a friend's plays: not every time
        clock.advance(1)
        assert elsewhere in await reason(friends)
    finally:
        await client.aclose()
    # The hourly ask, and one that vouches for the 404 of the show read again (a 404 is
    # Plex's own only once /identity says so: the first one's was asked too).
    assert plex.count("GET", "/identity") == asked + 2 == 6


async def test_a_replaced_plex_server_whose_identity_could_not_be_asked_is_asked_again_soon(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    """Plex reinstalled at the same address fails its first identity ask (still starting, a
    timeout): the plays meanwhile are not taken for a friend's server's (the old id is all
    watchbridge knows): the reason says the server could not be asked. The ask is made again
    after a minute, not an hour, and not once per webhook meanwhile."""
    old, new = "a1" * 20, "b2" * 20
    plex = start_fake(FakePlex(machine_id=old))  # no Baki Hanma: its show is not found
    assert isinstance(plex, FakePlex)
    item = only_event(
        plex_ingest.parse(sample_json("plex", "episode_new_agent_friend_media_scrobble.json"))
    ).item
    client = PlexClient(PlexConfig(url=plex.url, token=Secret(TOKEN)))
    enricher = Enricher(store, clock, plex=client.metadata, plex_identity=client.identity)

    async def reason(server: str) -> str:
        enriched = await enricher.enrich(item, SHOW_TMDB, "plex", from_server=server)
        assert enriched.problem is not None
        return enriched.problem.message

    elsewhere = "was played on another Plex server than services.plex.url"
    try:
        assert elsewhere not in await reason(old)
        plex.machine_id = new  # reinstalled while watchbridge runs
        plex.fail_next(10, 503, route="/identity")
        not_asked = "the Plex server at services.plex.url could not be asked which server it is"
        said = await reason(new)
        assert not_asked in said and elsewhere not in said  # the old id is all it knows
        asked = plex.count("GET", "/identity")
        clock.advance(59)
        assert not_asked in await reason(new)
        assert plex.count("GET", "/identity") == asked  # a storm of webhooks: no ask each
        plex.clear_knobs()
        clock.advance(1)
        assert "Plex does not know" in await reason(new)
        assert plex.count("GET", "/identity") == asked + 1
        clock.advance(1)
        assert "Plex does not know" in await reason(new)
    finally:
        await client.aclose()
    assert plex.count("GET", "/identity") == asked + 1


async def test_a_plex_play_while_the_servers_identity_fails_waits_a_minute_saying_so(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    """Watchbridge started while Plex's /identity fails: a play whose show the server does
    not give is not "unmatched" for an hour with a reason about ids (identify the show in
    Plex). Its 404 is not taken for Plex's own while /identity fails (a proxy answers so for
    a Plex that is restarting): the play waits as for Plex down, spending no try, saying why,
    and is tried again in a minute."""
    plex = start_fake(FakePlex(machine_id="a1" * 20))  # no Baki Hanma: its show is not found
    assert isinstance(plex, FakePlex)
    item = only_event(
        plex_ingest.parse(sample_json("plex", "episode_new_agent_friend_media_scrobble.json"))
    ).item
    client = PlexClient(PlexConfig(url=plex.url, token=Secret(TOKEN)))
    enricher = Enricher(store, clock, plex=client.metadata, plex_identity=client.identity)
    plex.fail_next(100, 503, route="/identity")
    try:
        _, outcome = await waiting_for_ids(
            enricher,
            item,
            SHOW_TMDB,
            "plex",
            credentials_hold=AUTH_HOLD,
            unmatched_retry=3600.0,
            why="",
            from_server="a1" * 20,
        )
    finally:
        await client.aclose()
    assert isinstance(outcome, Hold) and not outcome.spends and outcome.after == 60.0
    assert not outcome.reason.startswith("unmatched")
    assert "reading item 40275 answered 404, and asking /identity" in outcome.reason
    assert "answered 503" in outcome.reason and "does not know" not in outcome.reason


async def test_a_friends_play_while_the_servers_identity_fails_is_named_by_plexs_catalogue(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    # The catalogue names a plex:// guid's ids whichever server played it: the play need not
    # wait for services.plex.url to say which server it is.
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plex.fail_next(100, 503, route="/identity")
    plextv = start_fake(FakePlexTv())
    assert isinstance(plextv, FakePlexTv)
    plextv.owner.token = TOKEN
    baki = BAKI_SHOW_GUID.rpartition("/")[2]
    plextv.add_title("show", "Baki Hanma", 2021, BAKI_SHOW_GUIDS, rating_key=baki)
    plex_line = f'  plex: {{url: "{plex.url}", token: "{TOKEN}", metadata_url: "{plextv.url}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, plex_line)
    item = only_event(
        plex_ingest.parse(sample_json("plex", "episode_new_agent_friend_media_scrobble.json"))
    ).item
    ids = runtime_enricher(runtime, None)
    try:
        found = await ids.enrich(item, SHOW_TMDB, "plex", from_server="f" * 40)
    finally:
        await ids.aclose()
        runtime.close()
    assert found.problem is None and found.item.show_ids.tmdb == "131041"


async def test_a_friends_play_whose_show_plexs_catalogue_names_no_id_for_yet_asks_it_again(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    # Plex's catalogue has the show (a new one) without its TMDB id yet: the play waits as
    # unmatched and is tried hourly; a try after the catalogue has the ids must find them,
    # not the answer without them kept for a week.
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plextv = start_fake(FakePlexTv())
    assert isinstance(plextv, FakePlexTv)
    plextv.owner.token = TOKEN
    baki = BAKI_SHOW_GUID.rpartition("/")[2]
    plextv.add_title("show", "Baki Hanma", 2021, [], rating_key=baki)
    plex_line = f'  plex: {{url: "{plex.url}", token: "{TOKEN}", metadata_url: "{plextv.url}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, plex_line)
    item = only_event(
        plex_ingest.parse(sample_json("plex", "episode_new_agent_friend_media_scrobble.json"))
    ).item
    ids = runtime_enricher(runtime, None)
    try:
        waiting = await ids.enrich(item, SHOW_TMDB, "plex", from_server="f" * 40)
        assert waiting.problem is not None and waiting.item.show_ids.tmdb is None
        plextv.add_title("show", "Baki Hanma", 2021, BAKI_SHOW_GUIDS, rating_key=baki)
        clock.advance(3700)  # the unmatched row's next try
        found = await ids.enrich(item, SHOW_TMDB, "plex", from_server="f" * 40)
    finally:
        await ids.aclose()
        runtime.close()
    assert found.problem is None and found.item.show_ids.tmdb == "131041"


async def test_plex_webhooks_while_the_servers_identity_was_never_answered_ask_it_once_a_minute(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    """Watchbridge started while Plex's /identity fails: a storm of webhooks whose shows are
    not found asks it once, then once a minute, not once per webhook."""
    plex = start_fake(FakePlex(machine_id="a1" * 20))
    assert isinstance(plex, FakePlex)
    item = only_event(
        plex_ingest.parse(sample_json("plex", "episode_new_agent_friend_media_scrobble.json"))
    ).item
    client = PlexClient(PlexConfig(url=plex.url, token=Secret(TOKEN)))
    enricher = Enricher(store, clock, plex=client.metadata, plex_identity=client.identity)
    plex.fail_next(100, 503, route="/identity")
    try:
        await enricher.enrich(item, SHOW_TMDB, "plex", from_server="a1" * 20)
        asked = plex.count("GET", "/identity")
        for _ in range(5):
            await enricher.enrich(item, SHOW_TMDB, "plex", from_server="a1" * 20)
        assert plex.count("GET", "/identity") == asked
        clock.advance(60)
        await enricher.enrich(item, SHOW_TMDB, "plex", from_server="a1" * 20)
    finally:
        await client.aclose()
    assert plex.count("GET", "/identity") == 2 * asked


# --------------------------------------------------------------------------- which server


def test_each_item_is_asked_of_the_server_it_came_from() -> None:
    jellyfin_item = jellyfin_episode()
    emby_item = emby_episode()
    plex_item = MediaRef(
        "episode", show_ids=Ids(plex_guid="plex://show/x"), show_source_key="40275"
    )
    assert origin(jellyfin_item, "jellyfin") == "jellyfin"
    assert origin(emby_item, "emby") == "emby"
    assert origin(plex_item, "plex") == "plex"
    assert origin(plex_item, None) == "plex"
    assert origin(jellyfin_item, None) == "jellyfin"  # a Jellyfin Guid: no other server's shape
    # Emby's numeric ids look like Plex ratingKeys: without a source nobody is asked.
    assert origin(emby_item, None) is None
    assert origin(MediaRef("episode", show_source_key="40275"), "plex") is None  # not Plex's
    assert origin(MediaRef("episode", show_ids=Ids(plex_guid="plex://show/x")), None) is None


def test_what_each_target_needs() -> None:
    episode_ids_only = MediaRef("episode", Ids(tmdb="62161", tvdb="4637661"), season=5, number=14)
    with_show_tvdb = MediaRef("episode", show_ids=Ids(tvdb="81189"), season=5, number=14)
    with_show_tmdb = MediaRef("episode", show_ids=Ids(tmdb="1396"), season=5, number=14)
    assert TRAKT.met(episode_ids_only) and TRAKT.met(with_show_tvdb)
    assert not SHOW_TMDB.met(episode_ids_only) and not SHOW_TMDB.met(with_show_tvdb)
    assert SHOW_TMDB.met(with_show_tmdb)
    assert SHOW_TMDB.met(MediaRef("movie"))  # Serializd skips movies: nothing to look up
    assert not ANIME.met(episode_ids_only)
    assert ANIME.met(with_show_tvdb) and ANIME.met(with_show_tmdb)
    assert ANIME.met(MediaRef("episode", show_ids=Ids(anidb="8692"), number=3))
    assert not ANIME.met(MediaRef("episode", Ids(anidb="8692"), number=3))  # an episode's eid
    assert ANIME.met(MediaRef("episode", Ids(anilist="21"), number=3))
    assert ANIME.met(MediaRef("movie", Ids(tmdb="372058")))


# --------------------------------------------------------------------------- Serializd target


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = FakeSerializd()
    fake.seed_reference_catalogue()
    start_fake(fake)
    return fake


def serializd_runtime(
    tmp_path: Path, serializd: FakeSerializd, receiver: AlertReceiver, clock: FakeClock, extra: str
) -> Runtime:
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  serializd: {{api_url: "{serializd.url}"}}
{extra}
profiles:
  me:
    users: {{jellyfin: [alex]}}
    accounts: {{serializd: {{email: "{EMAIL}", password: "{PASSWORD}"}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    return runtime


def jellyfin_service(server: FakeJellyfin, key: str = API_KEY) -> str:
    """The `services.jellyfin` line of `serializd_runtime`'s config for the fake `server`."""
    return f'  jellyfin: {{url: "{server.url}", api_key: "{key}"}}'


@contextlib.contextmanager
def serializd_and_jellyfin(
    tmp_path: Path,
    serializd: FakeSerializd,
    jellyfin_server: FakeJellyfin,
    receiver: AlertReceiver,
    clock: FakeClock,
) -> Iterator[Runtime]:
    """`serializd_runtime` with the fake Jellyfin's API configured, closed after."""
    runtime = serializd_runtime(
        tmp_path, serializd, receiver, clock, jellyfin_service(jellyfin_server)
    )
    try:
        yield runtime
    finally:
        runtime.close()


async def play_held_on_a_refused_key(
    runtime: Runtime, jellyfin_server: FakeJellyfin, close_targets: list[DeliveryWorker]
) -> DeliveryWorker:
    """A worker that took the Jellyfin sample play while Jellyfin refuses our API key."""
    jellyfin_server.api_key = "a-new-key-made-on-the-server"
    worker = await worker_for(runtime)
    close_targets.append(worker)
    post_jellyfin(runtime)
    await drain(worker, runtime)
    return worker


async def worker_for(runtime: Runtime) -> DeliveryWorker:
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    target = worker.targets["serializd"]
    assert isinstance(target, SerializdTarget)
    target.client.requests_per_second = 1000
    target.client.http.retry = FAST
    return worker


def post_jellyfin(runtime: Runtime) -> None:
    """The Jellyfin sample completion, as the webhook route would queue it."""
    body = json.dumps(sample_json("jellyfin", COMPLETED)).encode()
    result = parse("jellyfin", body, "application/json")
    assert isinstance(result, Accepted)
    for event in result.events:
        runtime.store.ingest(ingest_job(runtime, "me", event))


def waiting_rows(runtime: Runtime, clock: FakeClock) -> list[OutboxItem]:
    """Every pending Serializd row, however far off its next try."""
    return runtime.store.claim("test", clock() + 365 * 86400, 10, ["serializd"])


async def drain(worker: DeliveryWorker, runtime: Runtime, passes: int = 3) -> None:
    for _ in range(passes):
        await worker.pass_once(runtime)


@pytest.fixture
async def close_targets() -> AsyncIterator[list[DeliveryWorker]]:
    workers: list[DeliveryWorker] = []
    yield workers
    for worker in workers:
        for target in worker.targets.values():
            await target.aclose()


async def test_a_jellyfin_play_without_jellyfin_configured_waits_unmatched_naming_the_settings(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, "")
    try:
        worker = await worker_for(runtime)
        close_targets.append(worker)
        post_jellyfin(runtime)
        await drain(worker, runtime)
        assert runtime.store.unmatched_count() == 1
        (row,) = waiting_rows(runtime, clock)
        error = row.last_error or ""
        assert error.startswith("unmatched: Breaking Bad S05E14 came from Jellyfin")
        assert "set services.jellyfin.url and services.jellyfin.api_key" in error
        assert serializd.diary() == [] and serializd.ticks() == set()
    finally:
        runtime.close()


async def test_a_refused_jellyfin_key_holds_the_play_with_one_jellyfin_alert_until_fixed(
    tmp_path: Path,
    serializd: FakeSerializd,
    jellyfin_server: FakeJellyfin,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    with serializd_and_jellyfin(tmp_path, serializd, jellyfin_server, receiver, clock) as runtime:
        worker = await play_held_on_a_refused_key(runtime, jellyfin_server, close_targets)
        # Held, not retried in a loop (and one check that the 401 is Jellyfin's own).
        assert jellyfin_server.count("GET", jellyfin_server.item_route) == 1
        (alert,) = receiver.messages
        assert alert["title"] == "watchbridge: Jellyfin does not accept watchbridge's API key"
        assert "does not accept services.jellyfin.api_key (401)" in alert["message"]
        assert serializd.diary() == []
        jellyfin_server.api_key = API_KEY  # the user sets the server's current key
        clock.advance(AUTH_HOLD + 1)
        await drain(worker, runtime)
        assert [(r.show_id, r.episode_number) for r in serializd.diary()] == [(1396, 14)]
        assert serializd.ticks() == {(1396, 3578, 14)}
        assert runtime.store.outbox_counts()["dead"] == 0
        assert receiver.titles()[1:] == [
            "Resolved: watchbridge: Jellyfin does not accept watchbridge's API key"
        ]


async def test_a_refused_jellyfin_key_is_no_lost_sign_in_and_a_lookup_it_passes_sends_the_play(
    tmp_path: Path,
    serializd: FakeSerializd,
    jellyfin_server: FakeJellyfin,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # The play waits for Jellyfin's API key, not for profile me's Serializd sign-in: the store
    # said it waited for that sign-in (the status page and `watchbridge status` said so), and
    # it waited out its half hour after Jellyfin took the key again. Now a lookup the key
    # passes (the next play's) sends it at once, the service's clock standing still.
    with serializd_and_jellyfin(tmp_path, serializd, jellyfin_server, receiver, clock) as runtime:
        worker = await play_held_on_a_refused_key(runtime, jellyfin_server, close_targets)
        assert serializd.diary() == []
        assert not runtime.store.waits_for_sign_in("serializd", "me")
        assert runtime.store.held_for_sign_in() == []
        assert runtime.store.resume_after_sign_in("serializd", "me", clock()) == 0
        (alert,) = receiver.messages
        assert alert["title"] == "watchbridge: Jellyfin does not accept watchbridge's API key"
        assert "of profile me " in alert["message"]
        # The catch-up's own part, as it says it when it meets the refusal first: one text.
        assert "not caught up from Jellyfin until then" in alert["message"]
        jellyfin_server.api_key = API_KEY  # made again on the server: it takes the key
        jellyfin_server.add_episode(
            "d8e3b02f5c4a5f7b9e1c2d3f4a5b6c7d", JELLYFIN_SERIES, 5, 13, Tvdb="4637660"
        )
        post_jellyfin_episode(
            runtime, ItemId="d8e3b02f5c4a5f7b9e1c2d3f4a5b6c7d", EpisodeNumber=13, Name="13"
        )
        await drain(worker, runtime)
        assert sorted(r.episode_number for r in serializd.diary()) == [13, 14]
        assert receiver.titles()[1:] == [
            "Resolved: watchbridge: Jellyfin does not accept watchbridge's API key"
        ]


async def test_plays_held_for_a_servers_key_are_counted_apart_from_lost_sign_ins_in_metrics(
    tmp_path: Path,
    serializd: FakeSerializd,
    jellyfin_server: FakeJellyfin,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # A play held because Jellyfin refuses its API key was counted by
    # watchbridge_outbox_waiting_for_sign_in: a rule on it sent the user to sign in again to
    # Serializd, which changes nothing. It has a gauge of its own.
    with serializd_and_jellyfin(tmp_path, serializd, jellyfin_server, receiver, clock) as runtime:
        await play_held_on_a_refused_key(runtime, jellyfin_server, close_targets)
        assert runtime.store.waiting_for_server("jellyfin") == ["me"]
        text = runtime.metrics.render().decode()
        assert 'watchbridge_outbox_waiting_for_sign_in{target="serializd"} 0.0' in text
        assert 'watchbridge_outbox_waiting_for_server_key{target="serializd"} 1.0' in text


async def test_plays_wait_out_a_day_without_jellyfin_with_one_alert_and_its_resolution(
    tmp_path: Path,
    serializd: FakeSerializd,
    jellyfin_server: FakeJellyfin,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    jellyfin_server.fail_next(10_000, 503)  # the box is off (its proxy answers)
    with serializd_and_jellyfin(tmp_path, serializd, jellyfin_server, receiver, clock) as runtime:
        worker = await worker_for(runtime)
        close_targets.append(worker)
        enricher = worker.targets["serializd"].enricher  # type: ignore[attr-defined]
        enricher.series["jellyfin"].client.http.retry = FAST
        post_jellyfin(runtime)
        for _ in range(24):  # a day; the worker looks every hour
            await drain(worker, runtime, passes=1)
            clock.advance(3600)
        assert runtime.store.outbox_counts()["dead"] == 0  # no attempt spent
        told = receiver.titles()  # from 15 minutes in, then once per alerts.throttle
        assert told and set(told) == {"watchbridge: Jellyfin cannot be reached"}
        jellyfin_server.clear_knobs()  # back
        await drain(worker, runtime)
        assert [(r.show_id, r.episode_number) for r in serializd.diary()] == [(1396, 14)]
        assert receiver.titles()[len(told) :] == [
            "Resolved: watchbridge: Jellyfin cannot be reached"
        ]


async def test_jellyfin_back_from_an_outage_refusing_its_key_ends_the_outage_alert(
    tmp_path: Path,
    serializd: FakeSerializd,
    jellyfin_server: FakeJellyfin,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # Jellyfin off for hours, then back with the key deleted on it: "Jellyfin cannot be
    # reached ... go out once it answers" stayed open, reminded of, while Jellyfin answered
    # every lookup with a 401, until the key was fixed.
    jellyfin_server.fail_next(10_000, 503)
    down = "watchbridge: Jellyfin cannot be reached"
    refused = "watchbridge: Jellyfin does not accept watchbridge's API key"
    with serializd_and_jellyfin(tmp_path, serializd, jellyfin_server, receiver, clock) as runtime:
        worker = await worker_for(runtime)
        close_targets.append(worker)
        enricher = worker.targets["serializd"].enricher  # type: ignore[attr-defined]
        enricher.series["jellyfin"].client.http.retry = FAST
        post_jellyfin(runtime)
        for _ in range(3):
            await drain(worker, runtime, passes=1)
            clock.advance(3600)
        assert set(receiver.titles()) == {down}
        told = len(receiver.titles())
        jellyfin_server.clear_knobs()
        jellyfin_server.api_key = "a-new-key-made-on-the-server"
        await drain(worker, runtime)
        clock.advance(1800)  # the held play's next look
        await drain(worker, runtime)
        assert set(receiver.titles()[told:]) == {f"Resolved: {down}", refused}
        assert serializd.diary() == []


async def test_a_server_rate_limiting_lookups_holds_plays_and_says_so_not_that_it_is_down(
    tmp_path: Path,
    serializd: FakeSerializd,
    jellyfin_server: FakeJellyfin,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    jellyfin_server.fail_next(10_000, 429, headers={"Retry-After": "300"})  # a proxy's limit
    with serializd_and_jellyfin(tmp_path, serializd, jellyfin_server, receiver, clock) as runtime:
        worker = await worker_for(runtime)
        close_targets.append(worker)
        post_jellyfin(runtime)
        for _ in range(6):  # an hour, looking every ten minutes
            await drain(worker, runtime, passes=1)
            clock.advance(600)
        assert runtime.store.outbox_counts()["dead"] == 0  # held: no attempt spent
        told = "watchbridge: Jellyfin keeps rate-limiting watchbridge"  # it answers: not down
        assert receiver.titles() == [told]
        jellyfin_server.clear_knobs()
        await drain(worker, runtime)
        assert [(r.show_id, r.episode_number) for r in serializd.diary()] == [(1396, 14)]
        assert receiver.titles() == [told, f"Resolved: {told}"]


def jellyfin_with_trakt_search(
    start_fake: Callable[[FakeServer], FakeServer], monkeypatch: pytest.MonkeyPatch
) -> tuple[FakeTrakt, str]:
    """A Jellyfin episode known by its TheTVDB id, and Trakt for its id search alone: the fake
    Trakt and the `services` lines for both."""
    unpaced(monkeypatch, "trakt")
    monkeypatch.setitem(HttpClient.__init__.__kwdefaults__, "retry", FAST)
    jellyfin_server = start_fake(FakeJellyfin("jellyfin"))
    assert isinstance(jellyfin_server, FakeJellyfin)
    jellyfin_server.add_series(JELLYFIN_SERIES, "Breaking Bad", Tvdb="81189")
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={5: 16})
    extra = (
        f'  jellyfin: {{url: "{jellyfin_server.url}", api_key: "{API_KEY}"}}\n'
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}'
    )
    return trakt, extra


async def test_a_play_waiting_on_trakts_id_search_waits_out_its_outage_and_is_told_of(
    tmp_path: Path,
    serializd: FakeSerializd,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Jellyfin's TVDB metadata: Serializd needs the TMDB id, which Trakt's search would give.
    # services.trakt is set for that search alone (no profile delivers to Trakt), so no alert
    # of Trakt's own deliveries tells of its outage: the search's own does, once.
    trakt, extra = jellyfin_with_trakt_search(start_fake, monkeypatch)
    trakt.fail_next(1_000_000, 503, route="/search/{id_type}/{id}")  # down for days
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, extra)
    try:
        worker = await worker_for(runtime)
        close_targets.append(worker)
        post_jellyfin(runtime)
        for _ in range(8 * 24):  # eight days, past delivery.max_age; a look every hour
            await drain(worker, runtime, passes=1)
            clock.advance(3600)
        assert runtime.store.outbox_counts().get("dead", 0) == 0
        (row,) = runtime.store._query("SELECT attempts FROM outbox WHERE status = 'pending'", ())
        assert row["attempts"] == 0
        told = "watchbridge: Trakt's id search cannot be reached"
        assert receiver.titles()[:1] == [told]
        assert set(receiver.titles()) == {told}  # then reminded daily, then weekly
        body = receiver.messages[0]["message"]
        assert "Trakt's id search has not answered for 1h (answered 503" in body, body
        assert "wait for it without giving up, and go out once it answers" in body, body
        trakt.clear_knobs()
        clock.advance(300)
        await drain(worker, runtime)
        assert [(r.show_id, r.episode_number) for r in serializd.diary()] == [(1396, 14)]
        assert receiver.titles()[-1] == f"Resolved: {told}"
    finally:
        runtime.close()


async def test_two_failed_id_searches_days_apart_are_no_outage_of_days(
    tmp_path: Path,
    serializd: FakeSerializd,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A gateway's error today and another in three days, with nothing asked between: the
    # search was not down those three days, so nothing tells of an outage.
    trakt, extra = jellyfin_with_trakt_search(start_fake, monkeypatch)
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, extra)
    try:
        worker = await worker_for(runtime)
        close_targets.append(worker)
        post_jellyfin(runtime)
        trakt.fail_next(2, 503, route="/search/{id_type}/{id}")  # and its retry
        await drain(worker, runtime, passes=1)
        clock.advance(3 * 86400)
        trakt.fail_next(2, 503, route="/search/{id_type}/{id}")  # and its retry
        await drain(worker, runtime, passes=1)
        assert receiver.titles() == []
        clock.advance(300)
        await drain(worker, runtime)
        assert [(r.show_id, r.episode_number) for r in serializd.diary()] == [(1396, 14)]
        assert receiver.titles() == []
    finally:
        runtime.close()


async def test_a_key_fixed_in_the_config_and_restarted_resolves_the_alert(
    tmp_path: Path,
    serializd: FakeSerializd,
    jellyfin_server: FakeJellyfin,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    jellyfin_server.api_key = "a-new-key-made-on-the-server"  # ours was revoked
    for key in (API_KEY, jellyfin_server.api_key):  # then set in the config, and restarted
        extra = jellyfin_service(jellyfin_server, key)
        runtime = serializd_runtime(tmp_path, serializd, receiver, clock, extra)
        try:
            worker = await worker_for(runtime)
            close_targets.append(worker)
            if key == API_KEY:
                post_jellyfin(runtime)
            else:
                clock.advance(AUTH_HOLD + 1)
            await drain(worker, runtime)
        finally:
            runtime.close()
    assert [(r.show_id, r.episode_number) for r in serializd.diary()] == [(1396, 14)]
    assert receiver.titles() == [
        "watchbridge: Jellyfin does not accept watchbridge's API key",
        "Resolved: watchbridge: Jellyfin does not accept watchbridge's API key",
    ]


# --------------------------------------------------------------------------- Trakt target


@contextlib.contextmanager
def trakt_and_jellyfin(
    tmp_path: Path,
    trakt: FakeTrakt,
    jellyfin: FakeJellyfin | None,
    clock: FakeClock,
    alerts: str = "",
) -> Iterator[Runtime]:
    """A runtime delivering to Trakt, with Jellyfin's API configured unless `jellyfin` is None."""
    server = f'jellyfin: {{url: "{jellyfin.url}", api_key: "{API_KEY}"}}' if jellyfin else ""
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
{alerts}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  {server}
profiles:
  me: {{users: {{jellyfin: [alex]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    try:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def trakt_with_breaking_bad(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    trakt, show = trakt_with_the_show(start_fake)
    trakt.add_episode(show, 5, 14)  # Trakt knows no episode-level ids for it
    return trakt


def post_episode_needing_its_show(runtime: Runtime) -> None:
    payload = sample_json("jellyfin", COMPLETED)
    del payload["Provider_tvdb"]  # the episode's imdb/tmdb ids only: Trakt needs the show
    result = parse("jellyfin", json.dumps(payload).encode(), "application/json")
    assert isinstance(result, Accepted)
    runtime.store.ingest(ingest_job(runtime, "me", only_event(result)))


async def trakt_worker(runtime: Runtime, close_targets: list[DeliveryWorker]) -> DeliveryWorker:
    """A worker for the runtime's targets, Trakt's pacing lifted (the clock is moved by hand)."""
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    for account in ("", "me"):  # searches, writes
        worker.targets["trakt"].client.http.pacers[account] = Pacer()  # type: ignore[attr-defined]
    close_targets.append(worker)
    return worker


async def test_the_trakt_target_places_a_jellyfin_episode_by_the_series_ids(
    tmp_path: Path,
    trakt_with_breaking_bad: FakeTrakt,
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    trakt = trakt_with_breaking_bad
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_episode_needing_its_show(runtime)
        await drain(worker, runtime)
        (play,) = trakt.history()
        assert (play.item.season, play.item.number) == (5, 14)
        assert [r.path for r in jellyfin_server.requests] == [f"/Items/{JELLYFIN_SERIES}"]


async def test_a_refused_jellyfin_key_holds_a_trakt_play_without_spending_its_tries(
    tmp_path: Path,
    trakt_with_breaking_bad: FakeTrakt,
    jellyfin_server: FakeJellyfin,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # The user rotated the key on the server: the alert says the plays wait, and they must.
    trakt, alerts = trakt_with_breaking_bad, f'alerts: {{urls: ["{receiver.apprise_url}"]}}'
    jellyfin_server.api_key = "a-new-key-made-on-the-server"
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock, alerts) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_episode_needing_its_show(runtime)
        for _ in range(60):  # a weekend away: 30 hours
            await worker.pass_once(runtime)
            clock.advance(1800)
        assert runtime.store.outbox_counts()["dead"] == 0
        jellyfin_server.api_key = API_KEY  # the user puts the new key in the config
        clock.advance(AUTH_HOLD + 1)
        await drain(worker, runtime)
        (play,) = trakt.history()
        assert (play.item.season, play.item.number) == (5, 14)


def test_a_waiting_jellyfin_play_is_keyed_by_the_show_ids_a_delivery_read(store: Store) -> None:
    # The play went to Serializd (which read the series from Jellyfin) and waits for Trakt:
    # a link must see it as waiting under the key it plans by, the show's TMDB id.
    episode = MediaRef("episode", Ids(imdb="tt2301451"), season=5, number=14, show_source_key="s1")
    row = NewOutboxRow("trakt", "me", "play", {"item": ref_to_dict(episode), "at": 1e9,
                                               "source": "jellyfin"}, "o", "i")  # fmt: skip
    assert store.ingest(IngestJob("jellyfin", "stop", "me", {}, 1e9, "s", lambda *_: (None, [row])))
    store.cache_put("media-server-series", "jellyfin:s1", {"title": "BB", "ids": {"tmdb": "1396"}},
                    1e9, 3600)  # fmt: skip
    known = replace(episode, show_ids=Ids(tmdb="1396"))
    assert sync_waiting(store, "me", {}, 1e9) == {("trakt", key_for_ref(known)): [1e9]}


async def test_an_episode_trakt_adds_an_hour_after_the_play_goes_out_at_a_retry(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # Trakt's "not found" is remembered for less than the hour an unmatched row waits.
    trakt, show = trakt_with_the_show(start_fake)
    with trakt_and_jellyfin(tmp_path, trakt, None, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_episode_needing_its_show(runtime)
        await worker.pass_once(runtime)
        assert len(runtime.store.unmatched()) == 1
        episode = sample_json("jellyfin", COMPLETED)
        trakt.add_episode(show, 5, 14, imdb=episode["Provider_imdb"],
                          tmdb=int(episode["Provider_tmdb"]))  # fmt: skip
        for _ in range(3):
            clock.advance(3600)
            await worker.pass_once(runtime)
        assert len(trakt.history()) == 1


def post_jellyfin_episode(runtime: Runtime, *, stop: bool = True, **changes: Any) -> None:
    """The Jellyfin sample episode (TVDB, IMDb and TMDB ids), completed or just started."""
    payload = sample_json("jellyfin", COMPLETED if stop else "playback_start_episode.json")
    payload.update(changes)
    result = parse("jellyfin", json.dumps(payload).encode(), "application/json")
    assert isinstance(result, Accepted)
    runtime.store.ingest(ingest_job(runtime, "me", only_event(result)))


@pytest.fixture
def trakt_without_tvdb(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    """Trakt after its move to TMDB: it lost the episode's TVDB id, kept its TMDB id."""
    trakt, show = trakt_with_the_show(start_fake)
    trakt.add_episode(show, 5, 13, title="To'hajiilee", trakt=62160)
    trakt.add_episode(show, 5, 14, title="Ozymandias", trakt=62161, tmdb=62161)
    return trakt


async def test_an_episode_trakt_lost_the_tvdb_id_of_goes_by_its_numbers_once_confirmed(
    tmp_path: Path,
    trakt_without_tvdb: FakeTrakt,
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    trakt = trakt_without_tvdb
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_jellyfin_episode(runtime)
        await drain(worker, runtime)
        (play,) = trakt.history()
        assert (play.item.season, play.item.number) == (5, 14)
        assert runtime.store.outbox_counts()["dead"] == 0 and not runtime.store.unmatched()


async def test_an_episode_trakt_lost_the_tvdb_id_of_is_found_by_its_tmdb_id_without_its_server(
    tmp_path: Path,
    trakt_without_tvdb: FakeTrakt,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # services.jellyfin not set: the show cannot be read, but Trakt's id search knows the
    # episode's own TMDB id.
    trakt = trakt_without_tvdb
    with trakt_and_jellyfin(tmp_path, trakt, None, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_jellyfin_episode(runtime)
        await drain(worker, runtime)
        (play,) = trakt.history()
        assert (play.item.season, play.item.number) == (5, 14)
        assert runtime.store.outbox_counts()["dead"] == 0 and not runtime.store.unmatched()


async def test_an_episode_trakt_numbers_elsewhere_and_lost_the_tvdb_id_of_is_found_by_its_tmdb_id(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # Trakt (TMDB's order) has our S05E14 as S05E15, without its TVDB id: its own TMDB id
    # names it; the S05E14 there is another episode and must not get the play.
    trakt, show = trakt_with_the_show(start_fake)
    trakt.add_episode(show, 5, 14, title="To'hajiilee", tmdb=62160)
    trakt.add_episode(show, 5, 15, title="Ozymandias", tmdb=62161)
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_jellyfin_episode(runtime)
        await drain(worker, runtime)
        (play,) = trakt.history()
        assert (play.item.season, play.item.number) == (5, 15)
        assert not runtime.store.unmatched()


async def test_an_episode_at_the_same_numbers_with_another_id_is_not_taken_for_it(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # Trakt numbers the show its own way: its S05E14 is another episode (another TMDB id).
    trakt, show = trakt_with_the_show(start_fake)
    trakt.add_episode(show, 5, 14, title="Ozymandias", tmdb=99999)
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_jellyfin_episode(runtime)
        await drain(worker, runtime)
        assert trakt.history() == []
        assert len(runtime.store.unmatched()) == 1


async def test_an_episode_with_no_ids_on_trakt_goes_by_its_numbers_only_if_the_title_agrees(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    trakt, show = trakt_with_the_show(start_fake)
    trakt.add_episode(show, 5, 13, title="Ozymandias")  # Trakt's S05E13 is named like ours
    trakt.add_episode(show, 5, 14, title="Felina")
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_jellyfin_episode(runtime)
        await drain(worker, runtime)
        assert trakt.history() == []
        other_ids = {"Provider_tvdb": "4637660", "Provider_imdb": "", "Provider_tmdb": ""}
        post_jellyfin_episode(runtime, EpisodeNumber=13, ItemId="e13", **other_ids)
        await drain(worker, runtime)
        (play,) = trakt.history()
        assert (play.item.season, play.item.number) == (5, 13)


async def test_an_episode_trakt_lists_under_a_placeholder_is_placed_once_trakt_names_it(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    trakt, show = trakt_with_the_show(start_fake)
    episode = trakt.add_episode(show, 5, 14)  # new: "Episode 14", no episode ids yet
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_jellyfin_episode(runtime)
        await drain(worker, runtime)
        assert trakt.history() == []
        episode.title = "Ozymandias"  # Trakt names it hours later
        for _ in range(3):  # hourly retries
            clock.advance(3700)
            await worker.pass_once(runtime)
        (play,) = trakt.history()
        assert (play.item.season, play.item.number) == (5, 14)


async def test_twin_rows_of_an_episode_placed_by_its_numbers_add_one_play(
    tmp_path: Path,
    trakt_without_tvdb: FakeTrakt,
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    trakt = trakt_without_tvdb
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_jellyfin_episode(runtime)
        # The same play a minute later (another session of one viewing): one play on Trakt.
        post_jellyfin_episode(runtime, UtcTimestamp="2025-03-14T20:49:02Z", DeviceId="tv-2")
        await drain(worker, runtime)
        assert len(trakt.history()) == 1
        assert runtime.store.outbox_counts()["dead"] == 0 and not runtime.store.unmatched()


async def test_a_lost_answer_to_a_play_placed_by_its_numbers_is_checked_not_sent_again(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # Only the title ties Trakt's episode to ours: none of our ids finds it in Trakt's history.
    trakt, show = trakt_with_the_show(start_fake)
    trakt.add_episode(show, 5, 14, title="Ozymandias")
    trakt.delay_next(1, 0, route="POST /sync/history")  # the add by TVDB id: not found
    trakt.drop_next(1, route="POST /sync/history", after_handler=True)  # by numbers: lost
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_jellyfin_episode(runtime)
        for _ in range(4):
            await worker.pass_once(runtime)
            clock.advance(3600)
        assert len(trakt.history()) == 1
        assert runtime.store.outbox_counts()["dead"] == 0 and not runtime.store.unmatched()


async def test_an_episode_placed_by_its_numbers_shows_as_watching(
    tmp_path: Path,
    trakt_without_tvdb: FakeTrakt,
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    trakt = trakt_without_tvdb
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        clock.now = datetime(2025, 3, 14, 20, 1, tzinfo=UTC).timestamp()
        post_jellyfin_episode(runtime, stop=False)
        await drain(worker, runtime)
        watching = trakt.watching()
        assert watching is not None and watching.item.number == 14


def queue_for_trakt(runtime: Runtime, action: str, at: float, **extra: Any) -> None:
    """A row for Breaking Bad S05E14 (its own TVDB, IMDb and TMDB ids, the show's), queued
    now."""
    item = replace(jellyfin_episode(), show_ids=Ids(tvdb="81189", tmdb="1396"))
    payload = {"item": ref_to_dict(item), "at": at, "source": "jellyfin", **extra}
    order = ordering_key("me", "trakt", item.key(), action)
    row = NewOutboxRow("trakt", "me", action, payload, order, action)
    runtime.store.enqueue([row], runtime.clock())


async def test_a_rating_of_an_episode_trakt_lost_the_tvdb_id_of_goes_by_its_numbers(
    tmp_path: Path,
    trakt_without_tvdb: FakeTrakt,
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    trakt = trakt_without_tvdb
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        queue_for_trakt(runtime, "rating", clock() - 600, rating=90)
        await drain(worker, runtime)
        (rating,) = trakt.ratings()
        assert (rating.item.season, rating.item.number, rating.rating) == (5, 14, 9)


async def test_a_rating_removal_of_an_episode_trakt_lost_the_tvdb_id_of_goes_by_its_numbers(
    tmp_path: Path,
    trakt_without_tvdb: FakeTrakt,
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    trakt = trakt_without_tvdb
    episode = trakt.shows[0].episode(5, 14)
    trakt.user.ratings[key_of(episode)] = Rating(episode, 9, iso(clock() - 86400))
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        queue_for_trakt(runtime, "remove_rating", 0.0)
        await drain(worker, runtime)
        assert trakt.ratings() == []


def test_the_episode_at_our_numbers_is_ours_only_by_an_agreeing_id_or_real_title() -> None:
    ours = MediaRef("episode", Ids(tvdb="4637661", tmdb="62161"), title="Ozymandias",
                    season=5, number=14)  # fmt: skip
    assert same_episode(ours, Ids(trakt="7", tmdb="62161"), "Another title")
    assert not same_episode(ours, Ids(trakt="7", tmdb="62161", tvdb="1"), "Ozymandias")
    assert same_episode(ours, Ids(trakt="7"), "ozymandias!")
    assert not same_episode(ours, Ids(trakt="7"), "Felina")
    assert not same_episode(replace(ours, title="Episode 14"), Ids(trakt="7"), "Episode 14")
    assert not same_episode(replace(ours, title=None), Ids(trakt="7"), "Ozymandias")


async def test_a_movie_played_before_jellyfin_identified_it_goes_out_once_identified(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # The unmatched reason says: identify it there, the next try finds it. It must.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    payload = sample_json("jellyfin", "user_data_saved_toggle_played_movie.json")
    del payload["Provider_tmdb"], payload["Provider_imdb"]
    movie = jellyfin_server.add_item(payload["ItemId"], "Arrival", "Movie")  # no ids yet
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        result = parse("jellyfin", json.dumps(payload).encode(), "application/json")
        assert isinstance(result, Accepted)
        runtime.store.ingest(ingest_job(runtime, "me", only_event(result)))
        await worker.pass_once(runtime)
        (row,) = runtime.store.unmatched()
        assert "the next try will find it" in (row.item.last_error or "")
        movie["ProviderIds"] = {"Tmdb": "329865", "Imdb": "tt2543164"}  # Identify in Jellyfin
        for _ in range(3):
            clock.advance(3600)
            await worker.pass_once(runtime)
        assert [e.item.title for e in trakt.history()] == ["Arrival"]


async def test_a_play_from_a_second_emby_server_is_not_logged_as_the_first_servers_show(
    tmp_path: Path,
    serializd: FakeSerializd,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    clock: FakeClock,
) -> None:
    server = sample_server(start_fake, "emby")  # its series 51801: Breaking Bad
    extra = f'  emby: {{url: "{server.url}", api_key: "{API_KEY}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, extra)
    try:
        worker = await worker_for(runtime)
        doc = sample_json("emby", COMPLETED)  # from the other server, where 51801 is another show
        doc["Server"]["Id"] = doc["Item"]["ServerId"] = OTHER_EMBY_SERVER
        doc["Item"]["ProviderIds"] = {}
        result = parse("emby", json.dumps(doc).encode(), "application/json")
        assert isinstance(result, Accepted)
        for event in result.events:
            runtime.store.ingest(ingest_job(runtime, "me", event))
        await drain(worker, runtime)
        assert serializd.diary() == []
        for target in worker.targets.values():
            await target.aclose()
    finally:
        runtime.close()


def post_plex(runtime: Runtime, sample: str) -> None:
    """A Plex webhook sample, as the webhook route would queue it (for profile me)."""
    result = parse("plex", json.dumps(sample_json("plex", sample)).encode(), "application/json")
    assert isinstance(result, Accepted)
    for event in result.events:
        runtime.store.ingest(ingest_job(runtime, "me", event))


async def unmatched_reason(runtime: Runtime, clock: FakeClock, workers: list[Any]) -> str:
    worker = await worker_for(runtime)
    workers.append(worker)
    await drain(worker, runtime)
    (row,) = waiting_rows(runtime, clock)
    return row.last_error or ""


async def test_a_play_on_a_friends_plex_server_says_so_where_trakt_is_not_configured(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    """Its ratingKeys are the friend's server's: re-identifying the show on one's own server
    (what the reason said) cannot help."""
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plex.add_show("50275", "Baki Hanma", 2021, BAKI_SHOW_GUIDS, guid=BAKI_SHOW_GUID)  # own keys
    plextv = start_fake(FakePlexTv())  # Plex's catalogue, which does not know the show
    assert isinstance(plextv, FakePlexTv)
    plextv.owner.token = TOKEN
    plex_line = f'  plex: {{url: "{plex.url}", token: "{TOKEN}", metadata_url: "{plextv.url}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, plex_line)
    try:
        post_plex(runtime, "episode_new_agent_friend_media_scrobble.json")
        reason = await unmatched_reason(runtime, clock, close_targets)
    finally:
        runtime.close()
    assert "was played on another Plex server than services.plex.url" in reason
    assert "Plex's catalogue does not know its plex:// guid" in reason
    assert "add services.trakt" in reason and "identify it there" not in reason


async def test_a_catalogue_refusing_the_owners_token_names_the_setting_to_fix(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    # The catalogue is read with services.plex.token: a refusal is that setting's, not a
    # profile's sign-in (there is no profile ":owner" to run `auth plex --profile` for).
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plex.add_show("50275", "Baki Hanma", 2021, BAKI_SHOW_GUIDS, guid=BAKI_SHOW_GUID)
    plextv = start_fake(FakePlexTv())
    assert isinstance(plextv, FakePlexTv)
    plextv.owner.token = "the-owners-current-token"  # services.plex.token is an old one
    plex_line = f'  plex: {{url: "{plex.url}", token: "{TOKEN}", metadata_url: "{plextv.url}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, plex_line)
    try:
        post_plex(runtime, "episode_new_agent_friend_media_scrobble.json")
        reason = await unmatched_reason(runtime, clock, close_targets)
    finally:
        runtime.close()
    assert "Plex's catalogue could not be asked" in reason
    assert "plex.tv does not accept services.plex.token" in reason, reason
    assert ":owner" not in reason and "accounts.plex.token" not in reason, reason
    assert TOKEN not in reason


async def test_a_legacy_agent_episode_without_trakt_is_told_to_switch_the_agent(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, "")
    try:
        post_plex(runtime, "episode_legacy_media_scrobble.json")
        reason = await unmatched_reason(runtime, clock, close_targets)
    finally:
        runtime.close()
    assert "known by its TheTVDB id only" in reason
    assert "Plex TV Series agent" in reason and "add services.trakt" in reason


async def test_a_hama_agent_episode_without_trakt_is_told_to_switch_the_agent(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # AniDB ids only: Trakt's search would not know them either.
    payload = sample_json("plex", "episode_legacy_media_scrobble.json")
    meta = payload["Metadata"]
    meta["guid"] = "com.plexapp.agents.hama://anidb-11370/1/3?lang=en"
    meta["parentGuid"] = "com.plexapp.agents.hama://anidb-11370/1?lang=en"
    meta["grandparentGuid"] = "com.plexapp.agents.hama://anidb-11370?lang=en"
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, "")
    try:
        result = parse("plex", json.dumps(payload).encode(), "application/json")
        assert isinstance(result, Accepted)
        for event in result.events:
            runtime.store.ingest(ingest_job(runtime, "me", event))
        reason = await unmatched_reason(runtime, clock, close_targets)
    finally:
        runtime.close()
    assert "known by its AniDB id only" in reason and "Plex TV Series agent" in reason
    assert "add services.trakt" not in reason


async def test_a_legacy_agent_play_on_a_friends_plex_server_is_not_told_to_switch_its_agent(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    """The library is the friend's: only services.trakt can find its show."""
    plex = start_fake(FakePlex())  # another machine id than the sample's Server.uuid
    plex_line = f'  plex: {{url: "{plex.url}", token: "{TOKEN}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, plex_line)
    try:
        post_plex(runtime, "episode_legacy_media_scrobble.json")
        reason = await unmatched_reason(runtime, clock, close_targets)
    finally:
        runtime.close()
    assert "was played on another Plex server" in reason and "agent" not in reason


async def test_a_hama_agent_episode_with_trakt_configured_is_told_to_switch_the_agent(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    # f78c86a: "Trakt's search knows no AniDB ids", yet the hint is given only where no Trakt
    # search is configured. With services.trakt the same HAMA episode's reason still says
    # nothing to do, and it ends as a dead letter after delivery.max_age.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    payload = sample_json("plex", "episode_legacy_media_scrobble.json")
    meta = payload["Metadata"]
    meta["guid"] = "com.plexapp.agents.hama://anidb-11370/1/3?lang=en"
    meta["parentGuid"] = "com.plexapp.agents.hama://anidb-11370/1?lang=en"
    meta["grandparentGuid"] = "com.plexapp.agents.hama://anidb-11370?lang=en"
    extra = f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, extra)
    try:
        result = parse("plex", json.dumps(payload).encode(), "application/json")
        assert isinstance(result, Accepted)
        for event in result.events:
            runtime.store.ingest(ingest_job(runtime, "me", event))
        reason = await unmatched_reason(runtime, clock, close_targets)
    finally:
        runtime.close()
    assert "Plex TV Series agent" in reason, reason


async def test_a_legacy_agent_episode_reaches_serializd_by_trakts_search_of_its_show(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    # Plex's legacy TheTVDB agent names the show by its TVDB id alone and the episode by none:
    # Trakt's id search of the show (what the README tells such a library to add
    # services.trakt for) gives its TMDB id. It waited unmatched, hourly, to a dead letter.
    trakt, _ = trakt_with_the_show(start_fake)
    extra = f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, extra)
    try:
        worker = await worker_for(runtime)
        close_targets.append(worker)
        post_plex(runtime, "episode_legacy_media_scrobble.json")
        await drain(worker, runtime)
        clock.advance(3600)
        await drain(worker, runtime)
        assert [(r.show_id, r.episode_number) for r in serializd.diary()] == [(1396, 16)]
        assert runtime.store.unmatched_count() == 0
        (search,) = [r for r in trakt.requests if r.path.startswith("/search/")]
        assert (search.path, search.query.get("type")) == ("/search/tvdb/81189", "show")
    finally:
        runtime.close()


async def test_a_legacy_agent_episode_whose_show_trakt_does_not_know_is_told_to_switch_agent(
    tmp_path: Path,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    # Searched and not found: the agent is what is left to change (adding services.trakt,
    # there already, is not said).
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    extra = f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, extra)
    try:
        post_plex(runtime, "episode_legacy_media_scrobble.json")
        reason = await unmatched_reason(runtime, clock, close_targets)
    finally:
        runtime.close()
    assert trakt.count("GET", "/search/{id_type}/{id}") == 1
    assert "known by its TheTVDB id only" in reason and "Plex TV Series agent" in reason, reason
    assert "add services.trakt" not in reason, reason


async def test_a_play_on_another_jellyfin_server_is_not_told_to_identify_the_show_there(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # services.jellyfin knows the show; the play came from another server, whose show it
    # cannot name: nothing done there places it.
    trakt, show = trakt_with_the_show(start_fake)
    trakt.add_episode(show, 5, 14)  # Trakt knows it by its numbers only
    with trakt_and_jellyfin(tmp_path, trakt, jellyfin_server, clock) as runtime:
        worker = await trakt_worker(runtime, close_targets)
        post_jellyfin_episode(runtime, ServerId="0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c")
        await drain(worker, runtime)
        (row,) = runtime.store.unmatched()
        assert "identify it there" not in (row.item.last_error or "")


def warnings_of(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.getMessage() == message]


async def test_trakts_id_search_down_for_a_backlog_is_logged_hourly_not_per_row(
    start_fake: Callable[[FakeServer], FakeServer],
    store: Store,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trakt, show = trakt_with_the_show(start_fake)
    trakt.add_episode(show, 5, 14, tvdb=4637661, imdb="tt2301451")
    trakt.fail_next(10_000, 503)  # Trakt down while Serializd works through a backlog
    config = TraktConfig(CLIENT_ID, api_url=trakt.url, auth_url=trakt.url)
    client = TraktClient(config, store, clock=clock)
    client.http.retry = FAST
    client.http.pacers[""] = Pacer()  # Trakt's read pacing runs on the real clock
    enricher = Enricher(store, clock, search=client.search)
    try:
        with caplog.at_level(logging.INFO, logger="watchbridge"):
            for _ in range(100):  # a row every 2 minutes for over 3 hours
                await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
                clock.advance(120)
            trakt.clear_knobs()
            back = await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    finally:
        await client.aclose()
    assert back.problem is None
    # The first, then one an hour (of the search, and of its request).
    assert 1 <= len(warnings_of(caplog, "trakt id search failed")) <= 4
    assert 1 <= len(warnings_of(caplog, "request failed")) <= 4
    (over,) = [r for r in caplog.records if r.getMessage() == "trakt id search works again"]
    assert over.times == 100  # type: ignore[attr-defined]


async def test_a_media_server_down_for_hours_logs_its_lookups_hourly_not_each_minute(
    store: Store,
    jellyfin_server: FakeJellyfin,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = JellyfinConfig(url=jellyfin_server.url, api_key=Secret(API_KEY))
    client = MediaServerClient(config, clock=clock)
    client.http.retry = FAST
    enricher = Enricher(store, clock, jellyfin=client)
    jellyfin_server.fail_next(10_000, 503)
    try:
        with caplog.at_level(logging.INFO, logger="watchbridge"):
            for _ in range(3 * 60):  # plays waiting for it, asked every minute for 3 hours
                await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
                clock.advance(SERVER_OUTAGE_PAUSE)
            jellyfin_server.clear_knobs()
            back = await enricher.enrich(jellyfin_episode(), SHOW_TMDB, "jellyfin")
    finally:
        await client.aclose()
    assert back.problem is None
    # The first, then one an hour (of the lookup, and of its requests).
    assert 1 <= len(warnings_of(caplog, "series lookup failed")) <= 3
    assert 1 <= len(warnings_of(caplog, "request failed")) <= 3
    assert [r.getMessage() for r in caplog.records].count("series lookups work again") == 1


async def test_unmatched_rows_of_one_round_are_tried_again_each_at_a_moment_of_their_own(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, clock: FakeClock
) -> None:
    # Serializd's rows of episodes Trakt's id search does not know (their TMDB ids only), all
    # tried at once: their next tries, and so their searches, come RETRY_LOOKUP_SPACING apart.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    client = TraktClient(TraktConfig(CLIENT_ID, api_url=trakt.url, auth_url=trakt.url), store)
    client.http.pacers[""] = Pacer()  # Trakt's read pacing runs on the real clock
    enricher = Enricher(store, clock, search=client.search)
    try:
        waits = []
        for n in range(3):
            episode = MediaRef("episode", Ids(tmdb=str(8_000_000 + n)), season=1, number=n + 1)
            _, waiting = await waiting_for_ids(
                enricher,
                episode,
                SHOW_TMDB,
                "generic",
                credentials_hold=900,
                unmatched_retry=3600,
                why="Serializd keys shows by TMDB id",
            )
            assert isinstance(waiting, Retry) and waiting.reason.startswith("unmatched:")
            waits.append(waiting.after)
    finally:
        await client.aclose()
    assert trakt.count("GET", "/search/{id_type}/{id}") == 3
    assert waits == [3600, 3600 + RETRY_LOOKUP_SPACING, 3600 + 2 * RETRY_LOOKUP_SPACING]


def test_a_search_result_contradicting_the_episodes_show_is_not_trusted() -> None:
    ours = MediaRef("episode", Ids(tvdb="4637661"), show_ids=Ids(tvdb="81189", tmdb="1396"))
    ours = replace(ours, show_title="Breaking Bad", season=5, number=14)

    def result(title: str, season: int, number: int, **show_ids: Any) -> dict[str, Any]:
        episode = {"season": season, "number": number}
        return {"type": "episode", "episode": episode, "show": {"title": title, "ids": show_ids}}

    assert distrusted(ours, "tvdb", result("Show A", 3, 7, tvdb=70001, trakt=9))
    # One id agreeing is the same show, listed under an old TVDB id (TVDB merged a record).
    assert distrusted(ours, "tvdb", result("Breaking Bad", 5, 14, tvdb=999, tmdb=1396)) is None
    copied = replace(ours, ids=Ids(tvdb="81189"))
    assert "is its series' id" in (distrusted(copied, "tvdb", {}) or "")
    # Without show ids: numbers and title must both differ.
    bare = replace(ours, show_ids=Ids())
    assert distrusted(bare, "tvdb", result("Show A", 3, 7, tvdb=70001))
    # Unless the id names no show on Trakt: a localised title in TheTVDB's order.
    assert distrusted(bare, "tvdb", result("Show A", 3, 7, tvdb=70001), names_a_show=False) is None
    assert distrusted(bare, "tvdb", result("Breaking Bad", 1, 62, tvdb=81189)) is None
    assert distrusted(bare, "tvdb", result("Breaking Bad (2008)", 1, 62)) is None
    assert distrusted(bare, "tvdb", result("Breaking Bad ES", 5, 14)) is None


async def test_a_serializd_play_carrying_its_series_id_waits_unmatched_not_on_another_show(
    tmp_path: Path,
    serializd: FakeSerializd,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
) -> None:
    # A wrong NFO gave Show B's S01E02 its series' TMDB id, which Trakt's id search finds as
    # show A's S03E07: Serializd's show would be A's. No Jellyfin to name the show instead.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    series_id_mixup(trakt)
    serializd.add_show(500, "Show A", {3: 10})
    serializd.add_show(1400, "Show B", {1: 10})
    extra = f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}'
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, extra)
    try:
        worker = await worker_for(runtime)
        close_targets.append(worker)
        body = json.dumps(jellyfin_webhook_episode("Show B", 1, 2, tmdb="1400")).encode()
        result = parse("jellyfin", body, "application/json")
        assert isinstance(result, Accepted)
        for event in result.events:
            runtime.store.ingest(ingest_job(runtime, "me", event))
        await drain(worker, runtime)
        (row,) = waiting_rows(runtime, clock)
    finally:
        runtime.close()
    assert serializd.diary() == []
    # The conflict and its fix first; then, briefly, what else would name the show.
    assert row.last_error == (
        "unmatched: the episode's TMDB id 1400 names Show A S03E07 on Trakt, likely its"
        " series' id put there by an NFO or metadata agent: refresh the episode's metadata"
        " (setting services.jellyfin.url and services.jellyfin.api_key would also help, to read"
        " its show there)"
    )
