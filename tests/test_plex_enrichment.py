"""PlexEnricher: ids Plex webhooks leave out, read from the fake PMS and cached in the store."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt
from tests.ingest_samples import only_event, sample_json
from watchbridge.app import Runtime
from watchbridge.config import PlexConfig, Secret, parse_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.http import RetryPolicy
from watchbridge.ids import (
    PLEX_FOUND_TTL,
    PLEX_MISSING_TTL,
    PlexEnricher,
    merge_plex_item,
    merge_plex_show,
    needs_plex_ids,
)
from watchbridge.ingest import emby, jellyfin
from watchbridge.ingest import plex as plex_ingest
from watchbridge.model import Ids, MediaRef, ref_from_dict, ref_to_dict
from watchbridge.services.plex import PlexClient, PlexItem
from watchbridge.services.refusals import SERVICE_WIDE
from watchbridge.services.trakt import can_send, media_body
from watchbridge.signins import current_sign_ins
from watchbridge.store import Store
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime, make_targets

YUMA_GUID = "plex://movie/5d7768a696b655001fdc0e5c"
YUMA_GUIDS = ["imdb://tt0050086", "tmdb://14168"]
BAKI_SHOW_GUID = "plex://show/60e81fd8d8000e002d7d2976"
BAKI_SHOW_GUIDS = ["imdb://tt14271498", "tmdb://131041", "tvdb://397934"]
BAKI_EPISODE_GUID = "plex://episode/615580a9fa828e7f1a0caabd"
BAKI_EPISODE_GUIDS = ["imdb://tt14765720", "tmdb://3087250", "tvdb://8530933"]
METADATA = "/library/metadata/{key}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def add_baki_hanma(fake: FakePlex) -> None:
    """The show the new-agent episode samples name by grandparentRatingKey, with its ids."""
    fake.add_show("40275", "Baki Hanma", 2021, BAKI_SHOW_GUIDS, guid=BAKI_SHOW_GUID)


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    fake.add_movie("8372", "3:10 to Yuma", 1957, YUMA_GUIDS, guid=YUMA_GUID)
    add_baki_hanma(fake)
    fake.add_episode(
        "40294",
        "40275",
        1,
        1,
        BAKI_EPISODE_GUIDS,
        guid=BAKI_EPISODE_GUID,
        title="The World's Strongest Senior",
    )
    return fake


@pytest.fixture
async def client(plex: FakePlex) -> AsyncIterator[PlexClient]:
    client = PlexClient(PlexConfig(url=plex.url, token=Secret(TOKEN)))
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def enricher(client: PlexClient, store: Store, clock: Clock) -> PlexEnricher:
    return PlexEnricher(client.metadata, store, clock)


def plex_item(name: str, **metadata_changes: Any) -> MediaRef:
    """The item of a Plex sample, as the outbox stores it (through ref_to_dict/ref_from_dict)."""
    payload = copy.deepcopy(sample_json("plex", name))
    for key, value in metadata_changes.items():
        if value is None:
            payload["Metadata"].pop(key, None)
        else:
            payload["Metadata"][key] = value
    item = only_event(plex_ingest.parse(payload)).item
    return ref_from_dict(ref_to_dict(item))


def yuma() -> MediaRef:
    return plex_item("movie_new_agent_no_guid_array_media_scrobble.json")


# --------------------------------------------------------------------------- movies


@pytest.mark.anyio
async def test_movie_with_only_a_plex_guid_gets_imdb_and_tmdb(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    item = yuma()
    assert not can_send(item)
    enriched = await enricher.enrich(item)
    assert enriched.ids == Ids(imdb="tt0050086", tmdb="14168", plex_guid=YUMA_GUID)
    assert can_send(enriched)
    assert media_body(enriched) == {"movie": {"ids": {"imdb": "tt0050086", "tmdb": 14168}}}
    assert (enriched.source_key, enriched.title, enriched.year) == ("8372", "3:10 to Yuma", 1957)
    assert plex.count("GET", METADATA) == 1
    assert plex.requests[0].path == "/library/metadata/8372"


@pytest.mark.anyio
async def test_second_enrichment_is_a_cache_hit(
    client: PlexClient, store: Store, clock: Clock, plex: FakePlex
) -> None:
    first = await PlexEnricher(client.metadata, store, clock).enrich(yuma())
    clock.now += PLEX_FOUND_TTL - 60
    # A new enricher on the same store: the cache is the database, not the object.
    second = await PlexEnricher(client.metadata, store, clock).enrich(yuma())
    assert second == first
    assert plex.count("GET", METADATA) == 1


@pytest.mark.anyio
async def test_found_items_are_read_again_after_a_week(
    enricher: PlexEnricher, clock: Clock, plex: FakePlex
) -> None:
    await enricher.enrich(yuma())
    clock.now += PLEX_FOUND_TTL + 1
    await enricher.enrich(yuma())
    assert plex.count("GET", METADATA) == 2


@pytest.mark.anyio
async def test_sendable_movie_makes_no_request(enricher: PlexEnricher, plex: FakePlex) -> None:
    item = plex_item("movie_media_scrobble.json")  # Arrival with Guid[] imdb + tmdb
    assert await enricher.enrich(item) is item
    assert plex.requests == []


# --------------------------------------------------------------------------- episodes


@pytest.mark.anyio
async def test_new_agent_episode_gets_show_ids_from_its_show(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    # Episode-level imdb/tmdb only: Trakt matches episodes by tvdb/trakt id or show + numbers.
    item = plex_item(
        "episode_new_agent_friend_media_scrobble.json",
        Guid=[{"id": "imdb://tt14765720"}, {"id": "tmdb://3087250"}],
    )
    assert not can_send(item)
    enriched = await enricher.enrich(item)
    assert enriched.show_ids == Ids(
        imdb="tt14271498", tmdb="131041", tvdb="397934", plex_guid=BAKI_SHOW_GUID
    )
    assert enriched.ids.tvdb == "8530933"  # the episode's own, from the episode's Guid[]
    assert can_send(enriched)
    assert [r.path for r in plex.requests] == ["/library/metadata/40294", "/library/metadata/40275"]


@pytest.mark.anyio
async def test_episode_without_guid_array_gets_episode_and_show_ids(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    item = plex_item("episode_new_agent_friend_media_scrobble.json", Guid=None)
    assert item.ids == Ids(plex_guid=BAKI_EPISODE_GUID)
    enriched = await enricher.enrich(item)
    assert enriched.ids == Ids(
        imdb="tt14765720", tmdb="3087250", tvdb="8530933", plex_guid=BAKI_EPISODE_GUID
    )
    assert enriched.show_ids.tvdb == "397934"
    assert (enriched.season, enriched.number) == (1, 1)
    assert plex.count("GET", METADATA) == 2


@pytest.mark.anyio
async def test_show_key_comes_from_the_episode_when_the_webhook_had_none(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    item = plex_item(
        "episode_new_agent_friend_media_scrobble.json", Guid=None, grandparentRatingKey=None
    )
    assert item.show_source_key is None
    enriched = await enricher.enrich(item)
    assert enriched.show_source_key == "40275"
    assert enriched.show_ids.tvdb == "397934"


@pytest.mark.anyio
async def test_episodes_of_one_show_read_the_show_once(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    plex.add_episode("40295", "40275", 1, 2, ["imdb://tt14765721"])
    first = plex_item("episode_new_agent_friend_media_scrobble.json", Guid=None)
    second = plex_item(
        "episode_new_agent_friend_media_scrobble.json",
        Guid=None,
        ratingKey="40295",
        guid="plex://episode/000000000000000000040295",
        index=2,
    )
    await enricher.enrich(first)
    enriched = await enricher.enrich(second)
    assert (enriched.show_ids.tvdb, enriched.number) == ("397934", 2)
    paths = [r.path for r in plex.requests]
    assert paths.count("/library/metadata/40275") == 1
    assert len(paths) == 3


@pytest.mark.anyio
async def test_sendable_episode_makes_no_request(enricher: PlexEnricher, plex: FakePlex) -> None:
    new_agent = plex_item("episode_new_agent_friend_media_scrobble.json")  # episode tvdb id
    legacy = plex_item("episode_legacy_media_scrobble.json")  # show tvdb + numbers
    assert await enricher.enrich(new_agent) is new_agent
    assert await enricher.enrich(legacy) is legacy
    assert plex.requests == []


# --------------------------------------------------------------------------- misses and failures


@pytest.mark.anyio
async def test_unknown_key_leaves_the_item_unchanged_and_is_asked_again_after_an_hour(
    enricher: PlexEnricher, clock: Clock, plex: FakePlex
) -> None:
    item = plex_item("movie_new_agent_no_guid_array_media_scrobble.json", ratingKey="99999")
    assert await enricher.enrich(item) == item
    assert await enricher.enrich(item) == item
    assert plex.count("GET", METADATA) == 1  # the miss is cached
    clock.now += PLEX_MISSING_TTL + 1
    plex.add_movie("99999", "3:10 to Yuma", 1957, YUMA_GUIDS, guid=YUMA_GUID)  # matched now
    enriched = await enricher.enrich(item)
    assert enriched.ids.imdb == "tt0050086"
    assert plex.count("GET", METADATA) == 2


@pytest.mark.anyio
async def test_plex_down_leaves_the_item_unchanged_and_caches_nothing(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    plex.fail_next(2, 503)
    assert await enricher.enrich(yuma()) == yuma()
    enriched = await enricher.enrich(yuma())
    assert enriched.ids.imdb == "tt0050086"
    assert plex.count("GET", METADATA) == 3


@pytest.mark.anyio
async def test_rejected_token_leaves_the_item_unchanged(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    plex.token = "rotated"
    assert await enricher.enrich(yuma()) == yuma()
    assert plex.count("GET", METADATA) == 1


@pytest.mark.anyio
async def test_show_failure_keeps_what_the_episode_gave(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    plex.fail_next(2, 500, route="/library/metadata/40275")
    item = plex_item("episode_new_agent_friend_media_scrobble.json", Guid=None)
    enriched = await enricher.enrich(item)
    assert enriched.ids.tvdb == "8530933"
    assert enriched.show_ids == item.show_ids


@pytest.mark.anyio
async def test_jellyfin_and_emby_items_are_never_looked_up_on_plex(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    # Emby's numeric item ids look like Plex ratingKeys: a lookup would find another item.
    plex.add_movie("40127", "Not this one", 2000, ["imdb://tt0000001"])
    emby_payload = sample_json("emby", "item_markplayed_movie.json")
    emby_payload["Item"]["ProviderIds"] = {}
    emby_item = only_event(emby.parse(emby_payload)).item
    jellyfin_payload = sample_json("jellyfin", "user_data_saved_toggle_played_movie.json")
    for key in [k for k in jellyfin_payload if k.startswith("Provider_")]:
        del jellyfin_payload[key]
    jellyfin_item = only_event(jellyfin.parse(jellyfin_payload)).item
    assert emby_item.source_key == "40127"
    assert await enricher.enrich(emby_item) is emby_item
    assert await enricher.enrich(jellyfin_item) is jellyfin_item
    assert plex.requests == []


# --------------------------------------------------------------------------- pure rules


def test_needs_plex_ids_rules() -> None:
    plex_movie = MediaRef("movie", Ids(plex_guid=YUMA_GUID), source_key="8372")
    assert needs_plex_ids(plex_movie)
    assert not needs_plex_ids(MediaRef("movie", Ids(plex_guid=YUMA_GUID)))  # no key to read
    assert not needs_plex_ids(MediaRef("movie", Ids(tmdb="14168", plex_guid="p"), source_key="1"))
    assert not needs_plex_ids(MediaRef("movie", source_key="8372"))  # not known to be Plex's
    episode = MediaRef(
        "episode",
        Ids(imdb="tt14765720", plex_guid=BAKI_EPISODE_GUID),
        show_ids=Ids(plex_guid=BAKI_SHOW_GUID),
        season=1,
        number=1,
        source_key="40294",
        show_source_key="40275",
    )
    assert needs_plex_ids(episode)
    assert not needs_plex_ids(
        MediaRef("episode", Ids(tvdb="8530933", plex_guid="p"), source_key="1")
    )
    with_show = MediaRef(
        "episode", show_ids=Ids(tvdb="397934", plex_guid="p"), season=1, number=1, source_key="1"
    )
    assert not needs_plex_ids(with_show)
    assert needs_plex_ids(
        MediaRef("episode", show_ids=Ids(tvdb="397934", plex_guid="p"), source_key="1")
    )


def test_merges_keep_our_values() -> None:
    item = MediaRef(
        "episode",
        Ids(imdb="tt1111111", plex_guid="plex://episode/a"),
        title="Ours",
        show_ids=Ids(plex_guid="plex://show/s"),
        season=2,
        number=3,
        source_key="10",
    )
    found = PlexItem(
        rating_key="10",
        type="episode",
        title="Theirs",
        ids=Ids(imdb="tt2222222", tvdb="42", plex_guid="plex://episode/a"),
        season=9,
        number=9,
        grandparent_rating_key="5",
    )
    merged = merge_plex_item(item, found)
    assert merged.ids == Ids(imdb="tt1111111", tvdb="42", plex_guid="plex://episode/a")
    assert (merged.title, merged.season, merged.number) == ("Ours", 2, 3)
    assert merged.show_source_key == "5"
    show = PlexItem(
        rating_key="5", type="show", title="Show", ids=Ids(tvdb="7", plex_guid="plex://show/s")
    )
    assert merge_plex_show(merged, show).show_ids == Ids(tvdb="7", plex_guid="plex://show/s")
    not_a_show = PlexItem(rating_key="5", type="season", ids=Ids(tvdb="8"))
    assert merge_plex_show(merged, not_a_show) is merged
    reused_key = PlexItem(rating_key="10", type="movie", ids=Ids(imdb="tt3333333"))
    assert merge_plex_item(item, reused_key) is item


def test_a_key_naming_another_item_here_adds_nothing() -> None:
    """The webhook's ratingKey is its own server's: on a friend's server, or after a library
    rebuild, the same key here is another item (another plex:// guid)."""
    episode = MediaRef(
        "episode",
        Ids(plex_guid="plex://episode/a"),
        show_ids=Ids(plex_guid="plex://show/s"),
        source_key="10",
        show_source_key="5",
    )
    other_episode = PlexItem(
        rating_key="10", type="episode", ids=Ids(tvdb="42", plex_guid="plex://episode/z")
    )
    assert merge_plex_item(episode, other_episode) is episode
    other_show = PlexItem(rating_key="5", type="show", ids=Ids(tvdb="7", plex_guid="plex://show/z"))
    assert merge_plex_show(episode, other_show) is episode
    legacy_show = PlexItem(rating_key="5", type="show", ids=Ids(tvdb="7"))  # cannot be told apart
    assert merge_plex_show(episode, legacy_show) is episode


@pytest.mark.anyio
async def test_a_movie_played_on_another_server_is_not_read_as_the_one_with_its_key_here(
    enricher: PlexEnricher, plex: FakePlex
) -> None:
    plex.add_movie("4242", "Heat", 1995, ["imdb://tt0113277"], guid="plex://movie/5d7768257")
    item = plex_item("movie_new_agent_no_guid_array_media_scrobble.json", ratingKey="4242")
    assert await enricher.enrich(item) == item  # 3:10 to Yuma still, unmatched for now


@pytest.mark.anyio
async def test_unreadable_cache_entries_are_read_again(
    enricher: PlexEnricher, store: Store, clock: Clock, plex: FakePlex
) -> None:
    store.cache_put("plex-metadata", "8372", {"rating_key": "8372", "new_field": 1}, clock(), 60)
    enriched = await enricher.enrich(yuma())
    assert enriched.ids.imdb == "tt0050086"
    assert plex.count("GET", METADATA) == 1


# --------------------------------------------------------------------------- the Trakt target


@contextlib.asynccontextmanager
async def yuma_household(
    tmp_path: Path, trakt: FakeTrakt, plex: FakePlex, clock: Clock
) -> AsyncIterator[tuple[Runtime, DeliveryWorker]]:
    """One profile whose Plex plays go to Trakt (signed in), which knows 3:10 to Yuma; with
    services.plex set."""
    trakt.add_movie("3:10 to Yuma", 1957, imdb="tt0050086", tmdb=14168)
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    try:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())
        yield runtime, worker
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


def yuma_scrobbled(runtime: Runtime, server: str | None = None) -> None:
    """The new-agent Plex scrobble of 3:10 to Yuma (no Guid[]), played on `server`."""
    payload = sample_json("plex", "movie_new_agent_no_guid_array_media_scrobble.json")
    if server is not None:
        payload["Server"]["uuid"] = server
    runtime.store.ingest(ingest_job(runtime, "me", only_event(plex_ingest.parse(payload))))


@pytest.mark.anyio
async def test_the_trakt_target_adds_a_plex_guid_only_movie_read_from_plex(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    plex: FakePlex,
    clock: Clock,
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    async with yuma_household(tmp_path, trakt, plex, clock) as (runtime, worker):
        yuma_scrobbled(runtime)
        for _ in range(3):
            await worker.pass_once(runtime)
        assert [h.item.title for h in trakt.history()] == ["3:10 to Yuma"]
        assert plex.count("GET", METADATA) == 1


@pytest.mark.anyio
async def test_a_movie_plex_matched_without_its_ids_yet_goes_out_once_plex_has_them(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    plex: FakePlex,
    clock: Clock,
) -> None:
    # Plex matched the film (a plex:// guid) but names no TMDB or IMDb id for it yet: the play
    # waits as unmatched, telling the user to refresh its metadata in Plex. Once that gives the
    # ids, the next hourly try must read them, not a week-old copy of the item without them.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    plex.add_movie("8372", "3:10 to Yuma", 1957, [], guid=YUMA_GUID)
    async with yuma_household(tmp_path, trakt, plex, clock) as (runtime, worker):
        yuma_scrobbled(runtime, server=plex.machine_id)  # played on services.plex.url
        await worker.pass_once(runtime)
        assert trakt.history() == []
        (waiting,) = runtime.store.unmatched()
        reason = waiting.item.last_error or ""
        assert "refresh its metadata there (Refresh Metadata)" in reason
        assert "after a Fix Match, only the plays after it go out" in reason
        plex.add_movie("8372", "3:10 to Yuma", 1957, YUMA_GUIDS, guid=YUMA_GUID)  # refreshed
        clock.now += 3700
        for _ in range(3):
            await worker.pass_once(runtime)
        assert [h.item.title for h in trakt.history()] == ["3:10 to Yuma"]
        assert runtime.store.unmatched() == []


@pytest.mark.anyio
async def test_a_refused_server_token_met_by_a_webhooks_lookup_is_the_services_sign_in_line(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    plex: FakePlex,
    clock: Clock,
) -> None:
    # The play was held for it, but the sign-in health (`watchbridge status`, the page,
    # /api/status's service_sign_ins, the metric) did not say: no link reads this server.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    async with yuma_household(tmp_path, trakt, plex, clock) as (runtime, worker):

        def plex_sign_ins() -> list[tuple[str, str, str]]:
            found = current_sign_ins(runtime.config, runtime.store, clock())
            return [(s.profile, s.state, s.message) for s in found if s.service == "plex"]

        plex.token = "the-owners-new-token"  # services.plex.token is refused from now on
        yuma_scrobbled(runtime)
        await worker.pass_once(runtime)
        assert trakt.history() == []  # held for it
        ((profile, state, message),) = plex_sign_ins()
        assert (profile, state) == (SERVICE_WIDE, "refused")
        assert message.startswith("the Plex server refuses services.plex.token since ")
        plex.token = TOKEN  # the server takes it again: the next lookup with it ends it
        clock.now += 3 * 3600
        for _ in range(3):
            await worker.pass_once(runtime)
        assert [h.item.title for h in trakt.history()] == ["3:10 to Yuma"]
        assert plex_sign_ins() == []


@pytest.mark.anyio
async def test_a_cached_item_of_another_guid_is_read_again_after_fix_match(
    enricher: PlexEnricher, plex: FakePlex, clock: Clock
) -> None:
    wrong, right = "plex://movie/5d7768aaaaaaaaaaaaaaaaaa", "plex://movie/5d7768bbbbbbbbbbbbbbbbbb"
    plex.add_movie("4242", "Dune", 1984, ["imdb://tt0087182", "tmdb://841"], guid=wrong)
    name = "movie_new_agent_no_guid_array_media_scrobble.json"
    assert (await enricher.enrich(plex_item(name, ratingKey="4242", guid=wrong))).ids.imdb == (
        "tt0087182"
    )
    # "Fix Match" in Plex: the same ratingKey now holds the 2021 film.
    plex.add_movie("4242", "Dune", 2021, ["imdb://tt1160419", "tmdb://438631"], guid=right)
    clock.now += 3600
    watched = await enricher.enrich(plex_item(name, ratingKey="4242", guid=right))
    assert watched.ids.imdb == "tt1160419"


@pytest.mark.anyio
async def test_an_episode_plex_numbers_in_tvdb_order_goes_to_the_trakt_episode_its_own_ids_name(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    plex: FakePlex,
    clock: Clock,
) -> None:
    # The show set to TheTVDB's ordering in Plex: its S02E01 is Trakt's (TMDB's) S01E13. The
    # episode's Guid[] has its IMDb and TMDB ids only (no TVDB id to send it by): those name
    # it on Trakt, while its show and Plex's numbers name another episode there.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    show = trakt.add_show("Baki Hanma", 2021, imdb="tt14271498", tmdb=131041, tvdb=397934)
    trakt.add_episode(show, 1, 13, title="The World's Strongest Senior", tmdb=3087250)
    trakt.add_episode(show, 2, 1, title="Another Fight", tmdb=3500001)
    own_ids = [{"id": "imdb://tt14765720"}, {"id": "tmdb://3087250"}]
    plex.items["40294"]["Guid"] = own_ids  # PMS knows no TVDB id of it either
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  me: {{users: {{plex: ["48151623"]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    try:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())
        payload = copy.deepcopy(sample_json("plex", "episode_new_agent_friend_media_scrobble.json"))
        payload["Metadata"]["Guid"] = own_ids
        payload["Metadata"]["parentIndex"], payload["Metadata"]["index"] = 2, 1
        runtime.store.ingest(ingest_job(runtime, "me", only_event(plex_ingest.parse(payload))))
        for _ in range(3):
            await worker.pass_once(runtime)
        (play,) = trakt.history()
        assert (play.item.season, play.item.number) == (1, 13)
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


@pytest.mark.anyio
async def test_an_episode_whose_own_ids_trakt_cannot_search_now_waits_not_sent_by_plex_numbers(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    plex: FakePlex,
    clock: Clock,
) -> None:
    # As above, but Trakt's id search is down (502s) when the row is first tried (rate limited
    # alike, by a bulk sync spending the read budget): it waits for the search, not goes by
    # Plex's TVDB-order numbers to another episode.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    show = trakt.add_show("Baki Hanma", 2021, imdb="tt14271498", tmdb=131041, tvdb=397934)
    trakt.add_episode(show, 1, 13, title="The World's Strongest Senior", tmdb=3087250)
    trakt.add_episode(show, 2, 1, title="Another Fight", tmdb=3500001)
    own_ids = [{"id": "imdb://tt14765720"}, {"id": "tmdb://3087250"}]
    plex.items["40294"]["Guid"] = own_ids
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  me: {{users: {{plex: ["48151623"]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    try:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())
        payload = copy.deepcopy(sample_json("plex", "episode_new_agent_friend_media_scrobble.json"))
        payload["Metadata"]["Guid"] = own_ids
        payload["Metadata"]["parentIndex"], payload["Metadata"]["index"] = 2, 1
        runtime.store.ingest(ingest_job(runtime, "me", only_event(plex_ingest.parse(payload))))
        trakt.fail_next(3, 502, route="GET /search/{id_type}/{id}")
        await worker.pass_once(runtime)
        assert trakt.history() == []
        for _ in range(3):
            clock.now += 600
            await worker.pass_once(runtime)
        (play,) = trakt.history()
        assert (play.item.season, play.item.number) == (1, 13)
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()
