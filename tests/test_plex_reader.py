"""Plex's side of a link, read from the stateful fake PMS: keys, plays, ratings, per person."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import MACHINE_ID, TOKEN, FakePlex, guid_list
from tests.fakes.plextv import Account, FakePlexTv
from tests.fakes.receiver import FakeClock
from tests.harness import loop_held, paused_read, store_connections
from watchbridge.config import (
    Accounts,
    AniListConfig,
    AnimeMappingUrls,
    Config,
    Link,
    MediaUsers,
    PlexAccount,
    PlexConfig,
    Profile,
    Secret,
    ServicesConfig,
    parse_config,
)
from watchbridge.errors import ConfigError
from watchbridge.metrics import Metrics
from watchbridge.model import Ids, MediaRef
from watchbridge.readers.plex import (
    KEYS,
    Library,
    MaybeSent,
    Memory,
    PlayRows,
    PlexReader,
    Written,
    arrivals,
    build_side,
    choose_sections,
    key_for_ref,
    make_reader,
    written_record,
)
from watchbridge.reconcile import Play, Rated
from watchbridge.services.plex import (
    HistoryEntry,
    HistoryPage,
    HistoryRow,
    LibraryItem,
    PlexAuthError,
    Section,
)
from watchbridge.store import Store

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000
DAY = 86400
ARRIVAL = "movie:tmdb:329865"
BB = "show:tmdb:1396"
BB_S1E1 = "episode:tmdb:1396:s1e1"
BB_S1E2 = "episode:tmdb:1396:s1e2"
JAMIE_TOKEN = "managed-user-token-5d4c3b2a"
JAMIE = 48151623


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    fake.add_movie("100", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    fake.add_movie("101", "Heat", 1995, guid="com.plexapp.agents.imdb://tt0113277?lang=en")
    fake.add_show("200", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    fake.add_episode("201", "200", 1, 1, ["tvdb://349232"])
    fake.add_episode("202", "200", 1, 2, ["tvdb://349235"])
    fake.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    fake.clock = lambda: T0 + 30 * DAY
    return fake


# The anime mapping datasets switched off: a show in a TheTVDB ordering has a read look
# them up, which otherwise downloaded them from GitHub into the default storage folder
# (/data/anime-datasets, shared by every run) or, offline, waited out 3 tries of each.
NO_ANIME_DATASETS = AniListConfig(mapping_urls=AnimeMappingUrls("", "", "", ""))


def make_config(plex: FakePlex, libraries: list[str] | None = None) -> Config:
    return Config(
        services=ServicesConfig(
            plex=PlexConfig(url=plex.url, token=Secret(TOKEN), libraries=libraries or []),
            anilist=NO_ANIME_DATASETS,
        ),
        profiles={
            "alex": Profile(accounts=Accounts(plex=PlexAccount())),
            "jamie": Profile(
                users=MediaUsers(plex=["jamie"]),
                accounts=Accounts(plex=PlexAccount(token=Secret(JAMIE_TOKEN))),
            ),
        },
    )


LINK = Link(["plex", "trakt"])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + 30 * DAY)


@pytest.fixture
async def reader(plex: FakePlex, store: Store, clock: FakeClock) -> AsyncIterator[PlexReader]:
    reader = make_reader(make_config(plex), store, LINK, ["alex", "jamie"], clock)
    yield reader
    await reader.aclose()


async def read(reader: PlexReader, profile: str = "alex", full: bool = True) -> list[Play]:
    result = await reader.read(profile, {}, None, full)
    return sorted(result.side.plays, key=lambda p: (p.item, p.at))


async def test_a_big_library_is_read_without_holding_the_event_loop(
    reader: PlexReader, plex: FakePlex
) -> None:
    """The service reads a link's sides on the loop that answers webhooks: turning the item
    listings into items and building the side (CPU alone, ~1.5 s of the loop at 43,000 plays)
    go to a thread, so a webhook is not kept waiting behind a first run. The pages' reads stay
    on the loop, each a few ms."""
    for s in range(1000):
        plex.add_show(f"9{s:05d}", f"Show {s}", 2000, [f"tmdb://{900_000 + s}"])
        for e in range(20):
            plex.add_episode(f"9{s:05d}{e:02d}", f"9{s:05d}", 1, e + 1)
            plex.watch(f"9{s:05d}{e:02d}", T0 - (s * 20 + e) * 60)
    async with loop_held(collecting=True) as held:
        assert len(await read(reader)) >= 20_000
    # Before the work moved off the loop it was held 0.70 s at once; a page's JSON is still
    # read on it (tens of ms), and a collection of the garbage a busy machine's run makes
    # may land in either thread.
    assert max(held) < 0.4, f"the loop was held {max(held):.2f} s at once"


# --------------------------------------------------------------------------- keys


async def test_movies_are_keyed_by_tmdb_and_a_legacy_imdb_only_one_is_not_linked(
    reader: PlexReader, plex: FakePlex, caplog: pytest.LogCaptureFixture
) -> None:
    # Every other side keys movies by TMDB id: keyed by IMDb, its plays would never meet.
    plex.watch("100", T0)
    plex.watch("101", T0)
    with caplog.at_level(logging.WARNING, logger="watchbridge.readers.plex"):
        assert {p.item for p in await read(reader)} == {ARRIVAL}
    assert "legacy agents) are not linked" in caplog.text


def unmatched_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if "(unmatched) are not synced" in r.getMessage()
    ]


async def test_a_full_read_names_the_titles_unmatched_in_plex_and_how_many_more(
    reader: PlexReader, plex: FakePlex, caplog: pytest.LogCaptureFixture
) -> None:
    # A show unmatched by mistake (Plex's Unmatch: a `local://` guid, no Guid list), and
    # movies of a library whose agent gives no ids: their plays are synced nowhere.
    plex.items["200"]["guid"] = "local://200"
    del plex.items["200"]["Guid"]
    for n in range(6):
        plex.add_movie(f"90{n}", f"Clip {n}", None, guid=f"com.plexapp.agents.none://90{n}")
    with caplog.at_level(logging.WARNING, logger="watchbridge.readers.plex"):
        await read(reader, full=False)
        assert unmatched_warnings(caplog) == []  # hourly reads say nothing
        await read(reader)
    (warning,) = unmatched_warnings(caplog)
    assert "not synced: Clip 0, Clip 1, Clip 2, Clip 3, Clip 4 and 2 more." in warning
    assert "Fix Match" in warning
    plex.items["200"]["Guid"] = guid_list(["tmdb://1396"])
    for n in range(6):
        plex.items[f"90{n}"]["Guid"] = guid_list([f"tmdb://{9000 + n}"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="watchbridge.readers.plex"):
        await read(reader)
    assert unmatched_warnings(caplog) == []


@pytest.mark.parametrize("agent", ["tv.plex.agents.none", "com.plexapp.agents.none"])
async def test_a_library_of_home_videos_is_not_warned_about_an_unmatched_movie_is(
    reader: PlexReader, plex: FakePlex, caplog: pytest.LogCaptureFixture, agent: str
) -> None:
    # An "Other Videos" library (Personal Media agent): a movie library as Plex lists it,
    # whose items never get an id.
    plex.add_section("3", "Home Videos", "movie", agent=agent)
    plex.add_movie("900", "Birthday 2019", 2019, guid="local://900", section="3")
    plex.add_movie("901", "Holiday", None, guid=f"{agent}://901?lang=xn", section="3")
    plex.watch("900", T0)
    plex.add_movie("902", "Stray", 2020, guid="local://902")  # in Movies: unmatched
    with caplog.at_level(logging.WARNING, logger="watchbridge.readers.plex"):
        assert await read(reader) == []
    (warning,) = unmatched_warnings(caplog)
    assert "are not synced: Stray." in warning


async def test_episodes_are_keyed_by_their_shows_tmdb_id_from_the_show_listing(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.watch("201", T0)
    assert [p.item for p in await read(reader)] == [BB_S1E1]


async def test_an_episode_of_a_show_known_by_its_tvdb_id_only_is_not_linked(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.add_show("300", "Legacy Show", guid="com.plexapp.agents.thetvdb://81797?lang=en")
    plex.add_episode("301", "300", 2, 5, guid="com.plexapp.agents.thetvdb://81797/2/5?lang=en")
    plex.watch("301", T0)
    assert [p.item for p in await read(reader)] == []


async def test_a_full_read_names_the_shows_set_to_a_tvdb_episode_ordering(
    reader: PlexReader, plex: FakePlex, caplog: pytest.LogCaptureFixture
) -> None:
    plex.add_show("300", "Re:ZERO", 2016, ["tmdb://65942"])["showOrdering"] = "aired"
    plex.add_show("400", "Frieren", 2023, ["tmdb://209867"])["showOrdering"] = "tmdbAiring"
    with caplog.at_level(logging.WARNING, logger="watchbridge.readers.plex"):
        await read(reader)
    (warning,) = [r for r in caplog.records if "TheTVDB episode ordering" in r.getMessage()]
    assert warning.shows == "Re:ZERO"  # type: ignore[attr-defined]


def test_outbox_items_map_back_to_the_same_keys() -> None:
    assert key_for_ref(MediaRef("movie", ids=Ids(tmdb="329865", imdb="tt2543164"))) == ARRIVAL
    assert key_for_ref(MediaRef("season", show_ids=Ids(tmdb="1396"), season=2)) == f"{BB}:s2"
    episode = MediaRef("episode", show_ids=Ids(tmdb="1396"), season=1, number=2)
    assert key_for_ref(episode) == BB_S1E2


# --------------------------------------------------------------------------- plays


async def test_history_rows_are_plays_at_their_time(reader: PlexReader, plex: FakePlex) -> None:
    number = plex.watch("100", T0)
    assert await read(reader) == [Play(ARRIVAL, T0, f"history:{number}")]


async def test_rewatches_are_several_plays(reader: PlexReader, plex: FakePlex) -> None:
    plex.watch("201", T0)
    plex.watch("201", T0 + DAY)
    assert [p.at for p in await read(reader)] == [T0, T0 + DAY]


async def test_a_watched_item_without_history_is_one_play_at_last_viewed_at(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.watch("100", T0, history=False)
    assert await read(reader) == [Play(ARRIVAL, T0, f"watched:100:{T0}")]


async def test_that_play_keeps_its_record_when_the_item_is_watched_again(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.watch("100", T0, history=False)
    first = await read(reader)
    plex.watch("100", T0 + DAY)
    assert first[0] in await read(reader)
    assert len(await read(reader)) == 2


async def test_unwatching_in_plex_takes_the_items_plays_away_for_good(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.watch("100", T0)
    await read(reader)
    plex.state[(1, "100")] = {}  # marked unwatched in Plex: history rows stay on the server
    assert await read(reader) == []
    number = plex.watch("100", T0 + DAY)
    assert await read(reader) == [Play(ARRIVAL, T0 + DAY, f"history:{number}")]


async def test_a_title_in_two_libraries_watched_once_is_one_play(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.add_section("3", "Movies 4K", "movie")
    plex.add_movie("400", "Arrival", 2016, ["tmdb://329865"], section="3")
    plex.watch("100", T0, history=False)
    plex.watch("400", T0 + 30, history=False)
    assert [p.item for p in await read(reader)] == [ARRIVAL]


async def test_a_play_we_wrote_is_not_read_back_as_new(
    reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    trakt_time = T0 - 400 * DAY
    scrobbled_at = T0 + 30 * DAY  # Plex stamps the scrobble "now"
    record = written_record("100", trakt_time)
    written = Written("100", ARRIVAL, trakt_time, (scrobbled_at + 3,))
    store.mirror_put("plex", "alex", "written", {record: written.to_dict()}, T0)
    plex.watch("100", scrobbled_at)  # what our scrobble did on the server
    assert await read(reader) == [Play(ARRIVAL, trakt_time, record)]


# --------------------------------------------------------------------------- ratings


async def test_ratings_are_read_on_every_level(reader: PlexReader, plex: FakePlex) -> None:
    plex.rate("100", 9.0, T0)
    plex.rate("200", 7.5, T0 + 1)
    plex.rate("200001", 6.0, T0 + 2)  # season 1
    plex.rate("202", 10.0, T0 + 3)
    result = await reader.read("alex", {}, None, True)
    assert result.side.ratings == {
        ARRIVAL: Rated(90, T0),
        BB: Rated(75, T0 + 1),
        f"{BB}:s1": Rated(60, T0 + 2),
        BB_S1E2: Rated(100, T0 + 3),
    }


async def test_seasons_are_not_listed_when_the_link_syncs_no_ratings(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    reader = make_reader(
        make_config(plex), store, Link(["plex", "trakt"], kinds=["history"]), [], clock
    )
    try:
        result = await reader.read("alex", {}, None, True)
    finally:
        await reader.aclose()
    assert result.side.ratings == {}
    assert all(r.query.get("type") != "3" for r in plex.requests)


# --------------------------------------------------------------------------- per person


async def test_a_managed_users_state_stays_theirs(reader: PlexReader, plex: FakePlex) -> None:
    plex.watch("100", T0)
    plex.rate("100", 9.0, T0)
    jamie_play = plex.watch("201", T0 + 5, account=JAMIE)
    plex.rate("201", 4.0, T0 + 5, account=JAMIE)
    alex = await reader.read("alex", {}, None, True)
    jamie = await reader.read("jamie", {}, None, True)
    assert [p.item for p in alex.side.plays] == [ARRIVAL]
    assert list(alex.side.ratings) == [ARRIVAL]
    assert jamie.side.plays == (Play(BB_S1E1, T0 + 5, f"history:{jamie_play}"),)
    assert list(jamie.side.ratings) == [BB_S1E1]
    listings = plex.calls("GET", "/library/sections/{key}/all")
    assert {r.headers["x-plex-token"] for r in listings} == {TOKEN, JAMIE_TOKEN}
    history = plex.calls("GET", "/status/sessions/history/all")
    assert [r.query["accountID"] for r in history] == ["1", str(JAMIE)]


async def test_a_server_ignoring_the_history_account_filter_gives_nobody_anothers_plays(
    plex: FakePlex, store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An older server, or a proxy dropping the query string, sends every account's rows:
    jamie's viewing of Arrival would be an owner's rewatch. Dropped, counted, and told (log,
    status page): the next read with the filter honoured takes the status back."""
    plex.filters_history_by_account = False
    plex.watch("100", T0)
    plex.watch("100", T0 + 5 * DAY, account=JAMIE)
    metrics = Metrics()
    reader = make_reader(make_config(plex), store, LINK, ["alex", "jamie"], clock, metrics)
    try:
        with caplog.at_level(logging.WARNING, logger="watchbridge.readers.plex"):
            assert [p.at for p in await read(reader)] == [T0]
            assert [p.at for p in await read(reader, "jamie")] == [T0 + 5 * DAY]
        told = [r.getMessage() for r in caplog.records if "accountID filter" in r.getMessage()]
        assert len(told) == 2
        assert "reading profile alex's (account 1) it also sent 1 play(s) of other" in told[0]
        assert set(metrics.unfiltered) == {"alex", "jamie"}
        assert metrics.plex_foreign_rows.labels("alex")._value.get() == 1
        plex.filters_history_by_account = True
        await read(reader)
        assert set(metrics.unfiltered) == {"jamie"}
    finally:
        await reader.aclose()


async def test_a_server_ignoring_the_history_account_filter_is_checked_cheaply(
    reader: PlexReader, plex: FakePlex
) -> None:
    """Such a server answered the check with everyone's total: never the person's count, so
    every run read the whole history. The check reads the newest page of everyone's rows
    (one request) and says "changed" only when the person's rows are among those that
    arrived, or the count does not add up: a row deleted, or one arriving late (dated before
    the newest seen, it sorts below it). A read then takes the page alone."""
    plex.filters_history_by_account = False
    history = "/status/sessions/history/all"
    plex.watch("100", T0)
    plex.watch("201", T0 + DAY, account=JAMIE)
    found = (await reader.read("alex", {}, None, True)).cursors
    # Found ignoring the filter only now: the next read takes the page the check goes by.
    assert await reader.unchanged("alex", found) is False
    cursors = (await reader.read("alex", found, None, False)).cursors

    async def check() -> tuple[bool, int]:
        plex.requests.clear()
        return await reader.unchanged("alex", cursors), len(plex.requests)

    assert await check() == (True, 1)
    for day in (2, 3, 4):
        plex.watch("202", T0 + day * DAY, account=JAMIE)
    assert await check() == (True, 1)  # only others watched

    rewatch = plex.watch("100", T0 + 5 * DAY)
    assert await check() == (False, 1)
    plex.requests.clear()
    result = await reader.read("alex", cursors, None, False)
    assert len(plex.calls("GET", history)) == 1  # the page held every new row
    assert sorted(p.at for p in result.side.plays) == [T0, T0 + 5 * DAY]
    cursors = result.cursors
    assert await check() == (True, 1)

    plex.watch("201", T0 - DAY)  # a client that was offline reports a view
    assert await check() == (False, 1)
    result = await reader.read("alex", cursors, None, False)
    assert sorted(p.at for p in result.side.plays) == [T0 - DAY, T0, T0 + 5 * DAY]
    cursors = result.cursors
    assert await check() == (True, 1)

    del plex.history[rewatch]  # "Remove from history" in Plex
    assert await check() == (False, 1)
    result = await reader.read("alex", cursors, None, False)
    assert sorted(p.at for p in result.side.plays) == [T0 - DAY, T0]
    cursors = result.cursors
    assert await check() == (True, 1)


async def test_history_rows_of_items_deleted_from_the_library_do_not_make_every_check_read(
    reader: PlexReader, plex: FakePlex
) -> None:
    """The server counts the rows of a deleted item (no `ratingKey`) in its total; the reader
    left them out of its own count, so every check said "changed" and every delta read fell
    back to a whole read. It counts what the server counts."""
    history = "/status/sessions/history/all"
    plex.watch("100", T0)
    plex.watch("101", T0 + DAY)
    plex.watch("101", T0 + 2 * DAY, account=JAMIE)
    plex.delete_item("101")  # its rows stay in the history, without a ratingKey
    cursors = (await reader.read("alex", {}, None, True)).cursors

    async def check() -> tuple[bool, int]:
        plex.requests.clear()
        return await reader.unchanged("alex", cursors), len(plex.requests)

    assert await check() == (True, 1)
    plex.watch("201", T0 + 3 * DAY)
    assert await check() == (False, 1)
    plex.requests.clear()
    result = await reader.read("alex", cursors, None, False)
    # the rows since the newest, then the count: no whole read
    assert len(plex.calls("GET", history)) == 2
    assert sorted(p.at for p in result.side.plays) == [T0, T0 + 3 * DAY]
    cursors = result.cursors
    assert await check() == (True, 1)

    plex.add_movie("102", "Heat", 1995, ["imdb://tt0113277"])
    plex.watch("102", T0 + 4 * DAY)
    plex.delete_item("102")  # the newest row is now one of a deleted item
    assert await check() == (False, 1)
    result = await reader.read("alex", cursors, None, False)
    cursors = result.cursors
    assert await check() == (True, 1)
    plex.requests.clear()
    result = await reader.read("alex", cursors, None, False)
    assert len(plex.calls("GET", history)) == 2
    assert result.cursors == cursors


def test_arrivals_are_told_only_when_the_page_accounts_for_every_row() -> None:
    def page(total: int, *ids: str) -> HistoryPage:
        return HistoryPage(total, tuple(HistoryRow(i, "7", None) for i in ids))

    assert arrivals(page(5, "9", "8", "3"), "all:3:3") == [HistoryRow(i, "7", None) for i in "98"]
    assert arrivals(page(2, "9", "8"), "all:0:") == [HistoryRow(i, "7", None) for i in "98"]
    assert arrivals(page(5, "3", "2"), "all:5:3") == []
    assert arrivals(page(7, "9", "8"), "all:3:3") is None  # the newest seen is beyond the page
    assert arrivals(page(4, "9", "3"), "all:4:3") is None  # one arrived, one was deleted
    assert arrivals(page(5, "9", "3"), "all:3:3") is None  # and one arrived late, below it
    assert arrivals(page(4, "9", "3"), "all:") is None  # the read could not take a page


@pytest.fixture
def plextv(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlexTv:
    fake = start_fake(FakePlexTv())
    assert isinstance(fake, FakePlexTv)
    fake.owner.token = TOKEN  # the owner's one token, for the server and plex.tv
    return fake


def with_plextv(plex: FakePlex, plextv: FakePlexTv, **profiles: Profile) -> Config:
    """`make_config` with plex.tv on the fake and more profiles."""
    config = make_config(plex)
    assert config.services.plex is not None
    services = replace(config.services, plex=replace(config.services.plex, account_url=plextv.url))
    return replace(config, services=services, profiles={**config.profiles, **profiles})


def sign_in(store: Store, profile: str, account: Account) -> None:
    """What `watchbridge auth plex` keeps: the person's plex.tv token and id."""
    data = {"token": account.token, "plextv_id": account.id, "username": account.title}
    store.put_token("plex", profile, data, T0)


async def read_as(config: Config, store: Store, clock: FakeClock, profile: str) -> list[Play]:
    reader = make_reader(config, store, LINK, [profile], clock)
    try:
        return await read(reader, profile)
    finally:
        await reader.aclose()


async def test_a_home_members_token_pasted_for_the_owner_is_refused_once_asked(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    """users.plex names account 1 (the owner) and accounts.plex.token is a Home member's:
    the member's watched state would be read beside the owner's history. plex.tv says whose
    the token is (once per token: later runs ask nothing), and the read is refused saying
    which key, whose token it is and what to write; the owner's own token pasted reads."""
    kid = plextv.add_account("kid", home=True)
    plex.add_user(kid.token, kid.id, "kid")  # the server takes it: read, it would mix the two
    plex.watch("100", T0)

    def config(token: str) -> Config:
        sam = Profile(
            users=MediaUsers(plex=["1"]), accounts=Accounts(plex=PlexAccount(token=Secret(token)))
        )
        return with_plextv(plex, plextv, sam=sam)

    told = rf"profiles\.sam\.accounts\.plex\.token belongs to Plex account {kid.id} \(kid\)"
    for _next_run in range(2):
        with pytest.raises(PlexAuthError, match=told) as refused:
            await read_as(config(kid.token), store, clock, "sam")
        assert f"write their id {kid.id} in profiles.sam.users.plex" in refused.value.message
        assert plextv.count("GET", "/api/v2/user") == 2  # the token's account, the owner's
        assert kid.token not in refused.value.message and TOKEN not in refused.value.message
    assert [p.at for p in await read_as(config(TOKEN), store, clock, "sam")] == [T0]


async def test_a_signed_in_friend_is_read_with_their_server_token_from_plex_tv(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    friend = plextv.add_account("sam.k")
    server_token = plextv.share_on(plex, friend)
    sign_in(store, "sam", friend)
    plex.watch("202", T0, account=friend.id)
    config = with_plextv(plex, plextv, sam=Profile(accounts=Accounts(plex=PlexAccount())))
    assert [p.item for p in await read_as(config, store, clock, "sam")] == [BB_S1E2]
    listings = plex.calls("GET", "/library/sections/{key}/all")
    assert {r.headers["x-plex-token"] for r in listings} == {server_token}  # not friend.token
    assert plextv.count("GET", "/api/servers/{machine}/shared_servers") == 1


async def test_a_found_server_token_is_kept_for_the_next_runs(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    friend = plextv.add_account("sam.k")
    plextv.share_on(plex, friend)
    sign_in(store, "sam", friend)
    config = with_plextv(plex, plextv, sam=Profile(accounts=Accounts(plex=PlexAccount())))
    await read_as(config, store, clock, "sam")
    asked = len(plextv.requests)
    await read_as(config, store, clock, "sam")
    assert len(plextv.requests) == asked


async def test_a_token_plex_tv_gave_for_the_server_before_a_reinstall_is_not_sent_to_the_new(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    """Plex reinstalled at the same address (a new machine id), and plex.tv gives sam a new
    token for it. Even a new server that would take the old token is not sent it: a token is
    kept for the server it was found for, and asked of plex.tv again for another."""
    friend = plextv.add_account("sam.k")
    plextv.share_on(plex, friend)
    sign_in(store, "sam", friend)
    config = with_plextv(plex, plextv, sam=Profile(accounts=Accounts(plex=PlexAccount())))
    await read_as(config, store, clock, "sam")
    plex.machine_id = "ab" * 20
    new_token = plextv.share_on(plex, friend)  # the old one is still known to the fake PMS
    plex.requests.clear()
    reader = make_reader(config, store, LINK, ["sam"], clock)
    try:
        await reader.account("sam", True)  # as a link run asks before its read
        await read(reader, "sam")
    finally:
        await reader.aclose()
    assert {r.headers.get("x-plex-token") for r in plex.requests} - {TOKEN, None} == {new_token}
    assert (store.get_token("plex-server", "sam") or {})["machine_id"] == "ab" * 20


async def test_a_pasted_server_token_is_used_as_is_without_asking_plex_tv(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    plex.watch("201", T0, account=JAMIE)
    config = with_plextv(plex, plextv)
    assert [p.item for p in await read_as(config, store, clock, "jamie")] == [BB_S1E1]
    assert plextv.requests == []


async def test_a_refused_pasted_token_is_replaced_through_the_persons_sign_in(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    jamie = plextv.add_account("jamie")
    plex.users.clear()  # the pasted token was revoked
    server_token = plextv.share_on(plex, jamie)
    sign_in(store, "jamie", jamie)
    plex.watch("201", T0, account=jamie.id)
    config = with_plextv(plex, plextv)
    assert [p.item for p in await read_as(config, store, clock, "jamie")] == [BB_S1E1]
    refused = [r for r in plex.requests if r.status == 401]
    assert [r.headers["x-plex-token"] for r in refused] == [JAMIE_TOKEN]
    assert (store.get_token("plex-server", "jamie") or {}).get("token") == server_token


async def test_a_refused_profile_token_is_an_auth_error(reader: PlexReader, plex: FakePlex) -> None:
    del plex.users[JAMIE_TOKEN]
    with pytest.raises(PlexAuthError):
        await reader.read("jamie", {}, None, True)


@pytest.mark.parametrize("refused_at", ["accounts", "libraries", "history"])
async def test_the_servers_own_token_refused_while_reading_a_person_is_the_owners_to_renew(
    plex: FakePlex, store: Store, clock: FakeClock, refused_at: str
) -> None:
    # jamie's read also goes with the server's own token: the server's accounts (jamie's id by
    # name), which libraries exist (one is not shared with jamie), jamie's history. Its
    # refusal was taken for jamie's: jamie's token was kept as refused, with jamie's fix
    # (paste a new one), or kept as nobody's; the owner's fix was said nowhere.
    from watchbridge.services.refusals import SERVICE_WIDE, entry, refusal_of
    from watchbridge.signins import current_sign_ins

    shared = {"1"} if refused_at == "libraries" else None
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie", shared)
    plex.token = "the-owners-new-token"  # services.plex.token (TOKEN) is refused from now on
    config = make_config(plex, ["Movies", "TV Shows"])
    if refused_at != "accounts":  # jamie's id is in the config: no need to ask the server
        jamie = replace(config.profiles["jamie"], users=MediaUsers(plex=[str(JAMIE)]))
        config = replace(config, profiles={**config.profiles, "jamie": jamie})
    reader = make_reader(config, store, LINK, ["jamie"], clock)
    try:
        with pytest.raises(PlexAuthError) as refused:
            await reader.read("jamie", {}, None, True)
    finally:
        await reader.aclose()
    refused_requests = [r for r in plex.requests if r.status == 401]
    assert {r.headers["x-plex-token"] for r in refused_requests} == {TOKEN}
    assert "does not accept services.plex.token (401): set the server owner's current token" in (
        refused.value.message
    )
    assert "accounts.plex.token" not in refused.value.message
    assert store.get_token(entry("plex"), "jamie") is None
    assert store.get_token(entry("plex"), "alex") is None  # the household's, not alex's
    assert refusal_of(store.get_token(entry("plex"), SERVICE_WIDE), TOKEN) is not None
    (server,) = current_sign_ins(config, store, clock())
    assert (server.service_wide, server.service, server.state) == (True, "plex", "refused")
    assert server.message.startswith("the Plex server refuses services.plex.token since ")
    assert server.message.endswith(": set the server owner's current token there")

    plex.token = TOKEN  # taken again: jamie's next read ends the refusal
    reader = make_reader(config, store, LINK, ["jamie"], clock)
    try:
        await reader.read("jamie", {}, None, True)
    finally:
        await reader.aclose()
    assert current_sign_ins(config, store, clock()) == []


# --------------------------------------------------------------------------- requests


async def test_a_read_asks_per_page_never_per_item(reader: PlexReader, plex: FakePlex) -> None:
    for n in range(3, 40):
        plex.add_episode(f"2{n:02d}", "200", 1, n)
        plex.watch(f"2{n:02d}", T0 + n)
    await reader.read("alex", {}, None, True)
    routes = sorted({r.route or r.path for r in plex.requests})
    assert routes == [
        "/library/sections",
        "/library/sections/{key}/all",
        "/status/sessions/history/all",
    ]
    # movies, shows, episodes, seasons and the history: one page each at this size
    assert len(plex.requests) == 6


async def test_libraries_are_chosen_by_name(plex: FakePlex, store: Store, clock: FakeClock) -> None:
    plex.watch("100", T0)
    plex.watch("201", T0)
    reader = make_reader(make_config(plex, ["tv shows"]), store, LINK, [], clock)
    try:
        plays = await read(reader)
    finally:
        await reader.aclose()
    assert [p.item for p in plays] == [BB_S1E1]
    assert {r.path for r in plex.calls("GET", "/library/sections/{key}/all")} == {
        "/library/sections/2/all"
    }


async def test_an_unknown_library_name_is_an_error_naming_it(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    reader = make_reader(make_config(plex, ["Movies", "Films"]), store, LINK, [], clock)
    try:
        with pytest.raises(ConfigError, match=r"services\.plex\.libraries.*'Films'.*Movies"):
            await reader.read("alex", {}, None, True)
    finally:
        await reader.aclose()


async def test_the_reader_saves_where_each_item_lives(
    reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    plex.watch("100", T0)
    await reader.read("alex", {}, None, True)
    keys = store.mirror_get("plex", "alex", KEYS)
    assert keys[ARRIVAL] == {"rating_keys": ["100"], "watched_at": T0}
    assert keys[BB_S1E2] == {"rating_keys": ["202"], "watched_at": None}


async def test_nothing_changed_is_one_request(reader: PlexReader, plex: FakePlex) -> None:
    plex.watch("100", T0)
    cursors = (await reader.read("alex", {}, None, True)).cursors
    plex.requests.clear()
    assert await reader.unchanged("alex", cursors) is True
    assert len(plex.requests) == 1


async def test_a_new_play_is_a_change(reader: PlexReader, plex: FakePlex) -> None:
    cursors = (await reader.read("alex", {}, None, True)).cursors
    plex.watch("201", T0 + DAY)
    assert await reader.unchanged("alex", cursors) is False


async def test_a_delta_read_asks_history_only_since_the_newest_row(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.watch("100", T0)
    await reader.read("alex", {}, None, True)
    later = plex.watch("201", T0 + 3 * DAY)
    plays = await read(reader, full=False)
    reads = plex.calls("GET", "/status/sessions/history/all")
    (since,) = [r.query["viewedAt>"] for r in reads[-2:] if "viewedAt>" in r.query]
    assert int(since) == T0 - DAY
    assert Play(BB_S1E1, T0 + 3 * DAY, f"history:{later}") in plays
    assert len(plays) == 2


# --------------------------------------------------------------------------- pure


def test_an_echo_of_a_retried_scrobble_is_recognised_too() -> None:
    movie = LibraryItem("100", "movie", ids=Ids(tmdb="329865"), view_count=2)
    rows = [HistoryEntry("1", "100", 5000.0, "1"), HistoryEntry("2", "100", 9000.0, "1")]
    written = Written("100", ARRIVAL, 10.0, (5000.0, 9000.0))
    memory = Memory(written={written_record("100", 10.0): written})
    built = build_side(Library(movies=[movie]), rows, memory, with_ratings=False)
    assert built.side.plays == (Play(ARRIVAL, 10.0, written_record("100", 10.0)),)


def test_writes_to_a_server_replaced_since_are_its_copies_where_it_shows_them() -> None:
    """A new server with the old one's history: our scrobbles of two copies of Arrival (4K and
    HD, written apart on the old server as its 100 and 101) are there under 7 and 8."""
    copies = [LibraryItem(rk, "movie", ids=Ids(tmdb="329865"), view_count=1) for rk in ("7", "8")]
    rows = [HistoryEntry("51", "7", 5000.0, "1"), HistoryEntry("52", "8", 5001.0, "1")]
    before = {
        written_record(rk, 10.0): Written(rk, ARRIVAL, 10.0, (at,), skew=0.0)
        for rk, at in (("100", 5000.0), ("101", 5001.0))
    }
    built = build_side(Library(movies=copies), rows, Memory(before=before), with_ratings=False)
    assert built.side.plays == (Play(ARRIVAL, 10.0, written_record("7", 10.0)),)
    assert {w.rating_key for w in built.memory.written.values()} == {"7", "8"}
    assert built.memory.before == {}


def test_a_write_to_a_replaced_server_waits_until_the_new_one_shows_it() -> None:
    movie = LibraryItem("7", "movie", ids=Ids(tmdb="329865"))
    before = {written_record("100", 10.0): Written("100", ARRIVAL, 10.0, (5000.0,), skew=0.0)}
    empty = build_side(Library(movies=[movie]), [], Memory(before=before), with_ratings=False)
    assert empty.side.plays == ()
    assert empty.memory.before == before  # its history not imported yet

    imported = replace(movie, view_count=1, last_viewed_at=5000.0)
    row = HistoryEntry("51", "7", 5000.0, "1")
    built = build_side(Library(movies=[imported]), [row], empty.memory, with_ratings=False)
    assert built.side.plays == (Play(ARRIVAL, 10.0, written_record("7", 10.0)),)


def read_with_a_row_marked_possibly_sent(
    queued_at: float, views: list[float]
) -> tuple[tuple[Play, ...], Mapping[str, Written]]:
    """Arrival's play of time 10 waits for Plex in a backup copy put back (its row 7, marked
    possibly sent, queued at `queued_at`); Plex shows Arrival viewed at `views`. The plays read
    and our writes."""
    movie = LibraryItem(
        "100", "movie", ids=Ids(tmdb="329865"), view_count=len(views), last_viewed_at=max(views)
    )
    rows = [HistoryEntry(str(n), "100", at, "1") for n, at in enumerate(views, 1)]
    rows_out = PlayRows(
        waiting=frozenset({PlayRows.play(ARRIVAL, 10.0)}),
        maybe_sent=(MaybeSent(ARRIVAL, 10.0, 7, queued_at),),
    )
    built = build_side(
        Library(movies=[movie]), rows, Memory(), with_ratings=False, on_their_way=rows_out
    )
    return built.side.plays, built.memory.written


def test_a_view_since_a_row_marked_possibly_sent_was_queued_is_its_write() -> None:
    # Sent after the copy was taken: its scrobble's row is our echo, the play its own time.
    plays, written = read_with_a_row_marked_possibly_sent(4000.0, [5000.0])
    record = written_record("100", 10.0)
    assert plays == (Play(ARRIVAL, 10.0, record),)
    assert written[record].attempts == (5000.0,) and written[record].row == 7


def test_a_view_before_a_row_marked_possibly_sent_was_queued_is_a_play_of_its_own() -> None:
    plays, written = read_with_a_row_marked_possibly_sent(6000.0, [5000.0])
    assert plays == (Play(ARRIVAL, 5000.0, "history:1"),)
    assert written == {}


def test_only_the_first_view_since_a_row_marked_possibly_sent_was_queued_is_its_write() -> None:
    # Our scrobble at 5000, the user's rewatch at 9000: that one stays the user's play.
    plays, _ = read_with_a_row_marked_possibly_sent(4000.0, [5000.0, 9000.0])
    assert plays == (
        Play(ARRIVAL, 10.0, written_record("100", 10.0)),
        Play(ARRIVAL, 9000.0, "history:2"),
    )


async def test_without_an_account_id_plays_come_from_watched_state_alone(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    config = make_config(plex)
    config.profiles["sam"] = Profile(accounts=Accounts(plex=PlexAccount(Secret(JAMIE_TOKEN))))
    plex.watch("100", T0, account=JAMIE)
    reader = make_reader(config, store, LINK, ["sam"], clock)
    try:
        plays = await read(reader, "sam")
    finally:
        await reader.aclose()
    assert plays == [Play(ARRIVAL, T0, f"watched:100:{T0}")]
    assert plex.count("GET", "/status/sessions/history/all") == 0


async def test_the_owner_reads_account_1_though_users_plex_lists_their_plex_tv_id(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    # Their plex.tv id is there for their webhook plays on friends' servers.
    config = make_config(plex)
    config.profiles["alex"] = replace(
        config.profiles["alex"], users=MediaUsers(plex=["27160034", "1"])
    )
    plex.watch("100", T0)
    plex.watch("100", T0 + 10 * DAY)  # a rewatch
    reader = make_reader(config, store, LINK, ["alex"], clock)
    try:
        assert [p.at for p in await read(reader)] == [T0, T0 + 10 * DAY]
    finally:
        await reader.aclose()


@pytest.mark.parametrize("server", [MACHINE_ID, MACHINE_ID.upper(), "another-server"])
async def test_a_server_account_entry_names_the_account_on_its_own_server_only(
    plex: FakePlex, store: Store, clock: FakeClock, server: str
) -> None:
    config = make_config(plex)
    config.profiles["jamie"] = replace(
        config.profiles["jamie"], users=MediaUsers(plex=[f"{server}:{JAMIE}"])
    )
    reader = make_reader(config, store, LINK, ["jamie"], clock)
    try:
        access = await reader.access("jamie")
    finally:
        await reader.aclose()
    assert access.account_id == (str(JAMIE) if server.lower() == MACHINE_ID else None)


OLD_MACHINE = "0ld5e7e7" * 5  # the server's machine id before Plex was reinstalled


async def test_a_server_account_entry_of_the_server_before_a_reinstall_says_what_to_change(
    plex: FakePlex, store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """After a reinstall the server has a new machine id: the account IS named in users.plex,
    only for the old server. The warning names both ids and the change, not "name the
    account in users.plex"."""
    config = make_config(plex)
    config.profiles["jamie"] = replace(
        config.profiles["jamie"], users=MediaUsers(plex=[f"{OLD_MACHINE}:{JAMIE}"])
    )
    reader = make_reader(config, store, LINK, ["jamie"], clock)
    try:
        with caplog.at_level(logging.WARNING, logger="watchbridge.readers.plex"):
            assert (await reader.access("jamie")).account_id is None
    finally:
        await reader.aclose()
    (warning,) = [r.getMessage() for r in caplog.records if "no Plex account id" in r.getMessage()]
    assert (
        f"users.plex of profile jamie names server {OLD_MACHINE}; services.plex.url answers as "
        f"server {MACHINE_ID}: replace {OLD_MACHINE} with {MACHINE_ID} (or drop the SERVER: "
        "part)"
    ) in warning
    assert "name the account (id or username)" not in warning


def test_a_row_newer_than_the_listing_is_not_retired_with_an_unwatched_item() -> None:
    """The listing may have been taken just before the play: the next read counts it."""
    unwatched = LibraryItem("100", "movie", ids=Ids(tmdb="329865"))
    row = HistoryEntry("7", "100", 5000.0, "1")
    built = build_side(Library(movies=[unwatched]), [row], Memory(), False, listed_at=4900.0)
    assert built.side.plays == () and built.memory.retired == frozenset()
    watched = replace(unwatched, view_count=1, last_viewed_at=5000.0)
    again = build_side(Library(movies=[watched]), [row], built.memory, False, listed_at=9000.0)
    assert again.side.plays == (Play(ARRIVAL, 5000.0, "history:7"),)


def test_a_history_row_for_a_play_first_read_from_the_watched_flag_keeps_its_record() -> None:
    watched = LibraryItem("100", "movie", ids=Ids(tmdb="329865"), view_count=1, last_viewed_at=50.0)
    first = build_side(Library(movies=[watched]), [], Memory(), False)
    row = HistoryEntry("7", "100", 50.0, "1")
    second = build_side(Library(movies=[watched]), [row], first.memory, False)
    assert second.side.plays == first.side.plays == (Play(ARRIVAL, 50.0, "watched:100:50"),)


async def test_an_account_named_by_username_is_looked_up_once(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    for _ in range(2):
        reader = make_reader(make_config(plex), store, LINK, ["jamie"], clock)
        try:
            await reader.read("jamie", {}, None, True)
        finally:
            await reader.aclose()
    assert plex.count("GET", "/accounts") == 1
    history = plex.calls("GET", "/status/sessions/history/all")
    assert {r.query["accountID"] for r in history} == {str(JAMIE)}


async def test_a_username_the_server_does_not_list_is_told_with_the_names_it_does(
    plex: FakePlex, store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in users.plex: "name the account in users.plex" would send the user to write
    what they wrote. The server's names are told (never a token), also from the cache."""
    config = make_config(plex)
    config.profiles["jamie"] = replace(config.profiles["jamie"], users=MediaUsers(plex=["Jamy"]))
    told = (
        "the server lists no account named Jamy; it lists: owner, jamie: write one of those, "
        "or the account's id, in profiles.jamie.users.plex"
    )
    for _ in range(2):  # the second from the week's cache
        reader = make_reader(config, store, LINK, ["jamie"], clock)
        try:
            with caplog.at_level(logging.WARNING, logger="watchbridge.readers.plex"):
                assert (await reader.access("jamie")).account_id is None
        finally:
            await reader.aclose()
    warnings = [r.getMessage() for r in caplog.records if "no Plex account id" in r.getMessage()]
    assert len(warnings) == 2 and all(told in w for w in warnings)
    assert not any(JAMIE_TOKEN in w or TOKEN in w for w in warnings)
    assert plex.count("GET", "/accounts") == 1


async def test_two_accounts_by_the_name_users_plex_gives_are_refused_naming_their_ids(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    """A friend "Jamie" beside the managed user "jamie": whichever the server lists first
    would have been read, maybe the friend's history beside jamie's watched state."""
    plex.add_user("friend-token-1e2d", 7, "Jamie")
    reader = make_reader(make_config(plex), store, LINK, ["jamie"], clock)
    told = (
        f"profile jamie: the Plex server lists 2 accounts by the name(s) "
        f"profiles.jamie.users.plex (or its plex.tv sign-in) gives, ignoring case: "
        f"jamie (id {JAMIE}), Jamie (id 7); whose history to read is not known, so jamie's "
        f"Plex is not read: write the id of theirs ({JAMIE} or 7) in profiles.jamie.users.plex"
    )
    try:
        with pytest.raises(PlexAuthError, match=re.escape(told)):
            await reader.read("jamie", {}, None, True)
    finally:
        await reader.aclose()
    assert plex.count("GET", "/status/sessions/history/all") == 0


async def test_two_names_each_finding_their_own_account_are_no_clash(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    """One person's two accounts in users.plex (as their webhooks take both): each name finds
    one account, so nothing is unknown; the first the server lists is read, as before."""
    plex.add_user("second-account-token-9f8e", 7, "jamie-tv")
    config = make_config(plex)
    plex_names = MediaUsers(plex=["jamie", "jamie-tv"])
    config.profiles["jamie"] = replace(config.profiles["jamie"], users=plex_names)
    reader = make_reader(config, store, LINK, ["jamie"], clock)
    try:
        await reader.read("jamie", {}, None, True)
    finally:
        await reader.aclose()
    (history,) = plex.calls("GET", "/status/sessions/history/all")
    assert history.query["accountID"] == str(JAMIE)


async def test_of_two_accounts_by_one_name_the_signed_in_one_is_read(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    friend = plextv.add_account("Robin")
    plextv.share_on(plex, friend)
    plex.add_user("another-robins-token", 7, "robin")
    sign_in(store, "sam", friend)
    config = with_plextv(plex, plextv, sam=Profile(users=MediaUsers(plex=["robin"])))
    await read_as(config, store, clock, "sam")
    (history,) = plex.calls("GET", "/status/sessions/history/all")
    assert history.query["accountID"] == str(friend.id)


async def test_an_episode_numbered_absolutely_is_not_linked(
    reader: PlexReader, plex: FakePlex
) -> None:
    plex.add_show("500", "One Piece", guid="com.plexapp.agents.hama://tvdb3-81797?lang=en")
    plex.add_episode("501", "500", 2, 80, guid="com.plexapp.agents.hama://tvdb3-81797/2/80")
    plex.watch("501", T0)
    assert await read(reader) == []


async def test_a_plex_sign_in_is_matched_to_its_server_account_by_username(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    friend = plextv.add_account("Robin")
    plextv.share_on(plex, friend)
    signed_in = {"token": friend.token, "plextv_id": 999, "username": "Robin"}
    store.put_token("plex", "sam", signed_in, T0)
    config = with_plextv(plex, plextv, sam=Profile(accounts=Accounts(plex=PlexAccount())))
    await read_as(config, store, clock, "sam")
    (history,) = plex.calls("GET", "/status/sessions/history/all")
    assert history.query["accountID"] == str(friend.id)


async def test_a_home_user_signed_in_for_a_profile_naming_the_owners_account_1_is_refused(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    """`--home-user` given for the owner's profile: its watched state would be the member's
    and its history the owner's (account 1). plex.tv told, giving the member's server token,
    that the server is not theirs."""
    sam = plextv.add_account("sam", home=True)
    plextv.share_on(plex, sam)
    sign_in(store, "alex", sam)
    plex.watch("100", T0)  # the owner's
    config = with_plextv(plex, plextv)
    config.profiles["alex"] = replace(config.profiles["alex"], users=MediaUsers(plex=["1"]))
    told = (
        f"profile alex: users.plex names Plex account 1, the server owner's, but its plex.tv "
        f"sign-in is account {sam.id} (sam), not the owner"
    )
    with pytest.raises(PlexAuthError, match=re.escape(told)):
        await read_as(config, store, clock, "alex")
    assert plex.count("GET", "/status/sessions/history/all") == 0


@pytest.mark.parametrize("who", ["owner", "member listed beside 1"])
async def test_a_sign_in_agreeing_with_users_plex_naming_1_is_read(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock, who: str
) -> None:
    """The owner signed in as themselves is account 1; a member signed in for a profile that
    lists 1 beside their id is read by their id."""
    sam = plextv.add_account("sam", home=True)
    plextv.share_on(plex, sam)
    plex.watch("100", T0)  # the owner's
    plex.watch("202", T0, account=sam.id)
    config = with_plextv(plex, plextv)
    account = plextv.owner if who == "owner" else sam
    listed = ["1"] if who == "owner" else ["1", str(sam.id)]
    config.profiles["alex"] = replace(config.profiles["alex"], users=MediaUsers(plex=listed))
    sign_in(store, "alex", account)
    plays = [p.item for p in await read_as(config, store, clock, "alex")]
    assert plays == ([ARRIVAL] if who == "owner" else [BB_S1E2])
    (history,) = plex.calls("GET", "/status/sessions/history/all")
    assert history.query["accountID"] == ("1" if who == "owner" else str(sam.id))


def test_libraries_are_named_in_the_config_file() -> None:
    text = 'services: {plex: {url: "http://pms:32400", libraries: [Movies, "TV Shows"]}}'
    config = parse_config(text, Path("watchbridge.yaml"), {})
    assert config.services.plex is not None
    assert config.services.plex.libraries == ["Movies", "TV Shows"]


async def test_without_the_owners_token_a_person_falls_back_to_watched_state(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    sam = Profile(
        users=MediaUsers(plex=[str(JAMIE)]),
        accounts=Accounts(plex=PlexAccount(Secret(JAMIE_TOKEN))),
    )
    config = Config(services=ServicesConfig(plex=PlexConfig(url=plex.url)), profiles={"sam": sam})
    plex.watch("100", T0, account=JAMIE)
    reader = make_reader(config, store, LINK, ["sam"], clock)
    try:
        plays = await read(reader, "sam")
        assert await reader.unchanged("sam", {"history": "1:1"}) is False
    finally:
        await reader.aclose()
    assert plays == [Play(ARRIVAL, T0, f"watched:100:{T0}")]
    refused = plex.calls("GET", "/status/sessions/history/all")
    assert len(refused) == 2 and all(r.status == 401 for r in refused)


def read_without_history(plex: FakePlex, token: str | None) -> tuple[Config, str]:
    """A person whose plays come from the watched state: jamie's pasted token with no server
    token (the server serves its history to the owner only), or, with `token` (the server's),
    sam, whose account id is not known (no `users.plex`, no sign-in)."""
    if token is None:
        person = Profile(
            users=MediaUsers(plex=[str(JAMIE)]),
            accounts=Accounts(plex=PlexAccount(Secret(JAMIE_TOKEN))),
        )
        plex_config = PlexConfig(url=plex.url)
    else:
        person = Profile(accounts=Accounts(plex=PlexAccount(Secret(JAMIE_TOKEN))))
        plex_config = PlexConfig(url=plex.url, token=Secret(token))
    config = Config(services=ServicesConfig(plex=plex_config), profiles={"sam": person})
    return config, "sam"


@dataclass
class Runs:
    """A link's runs of one person's Plex side: a reader each, as `sync` makes them."""

    config: Config
    store: Store
    clock: FakeClock
    person: str

    async def read(self, cursors: Mapping[str, str], full: bool) -> Mapping[str, str]:
        reader = make_reader(self.config, self.store, LINK, [self.person], self.clock)
        try:
            return (await reader.read(self.person, cursors, None, full)).cursors
        finally:
            await reader.aclose()

    async def unchanged(self, cursors: Mapping[str, str]) -> bool:
        reader = make_reader(self.config, self.store, LINK, [self.person], self.clock)
        try:
            return await reader.unchanged(self.person, cursors)
        finally:
            await reader.aclose()


async def test_a_history_served_to_the_owner_only_is_said_once_and_again_once_it_changed(
    plex: FakePlex, store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """No server token: every run reads jamie's plays from the watched state, for as long as
    the config stays so (months). One line says it, not one per run; once the history is read
    (a server token set) and refused again (taken out), it is said again."""
    config, person = read_without_history(plex, None)
    with_token = replace(
        config, services=replace(config.services, plex=make_config(plex).services.plex)
    )
    plex.watch("100", T0, account=JAMIE)

    async def one_run(config: Config) -> None:  # a reader per run, as a link's runs make
        reader = make_reader(config, store, LINK, [person], clock)
        try:
            await reader.read(person, {}, None, True)
        finally:
            await reader.aclose()
        clock.advance(1800)

    with caplog.at_level(logging.INFO, logger="watchbridge.readers.plex"):
        for settings in [config] * 3 + [with_token] + [config] * 2:
            await one_run(settings)

    said = [
        (r.levelname, r.getMessage().split(";")[0])
        for r in caplog.records
        if "owner only" in r.getMessage() or "read again" in r.getMessage()
    ]
    assert said == [
        ("WARNING", "the Plex server serves its watch history to the owner only"),
        ("INFO", "the Plex watch history is read again"),
        ("WARNING", "the Plex server serves its watch history to the owner only"),
    ]


@pytest.mark.parametrize("server_token", [None, TOKEN], ids=["no server token", "no account id"])
async def test_a_person_read_without_history_asks_two_counts_per_library_when_idle(
    plex: FakePlex, store: Store, clock: FakeClock, server_token: str | None
) -> None:
    """Their cheap check cannot ask the history: it asks how many of their movies and episodes
    were viewed since the newest view read and how many are watched (the server's identity,
    then two counts per library), so a run with nothing new reads no listing; a play, or a
    mark without a history row, is a change; another account's play is none."""
    config, person = read_without_history(plex, server_token)
    plex.watch("100", T0, account=JAMIE)
    runs = Runs(config, store, clock, person)
    cursors = await runs.read({}, True)
    plex.requests.clear()
    assert await runs.unchanged(cursors) is True
    assert [(r.path, counted(r.query)) for r in plex.requests] == [
        ("/identity", None),
        ("/library/sections/1/all", "lastViewedAt>>"),
        ("/library/sections/1/all", "viewCount>>"),
        ("/library/sections/2/all", "lastViewedAt>>"),
        ("/library/sections/2/all", "viewCount>>"),
    ]
    plex.watch("201", T0 + DAY)  # the owner's
    assert await runs.unchanged(cursors) is True
    plex.watch("202", T0 + DAY, account=JAMIE, history=False)  # marked watched
    assert await runs.unchanged(cursors) is False
    cursors = await runs.read(cursors, False)
    assert await runs.unchanged(cursors) is True
    plex.watch("100", T0 + 2 * DAY, account=JAMIE)  # watched again
    assert await runs.unchanged(cursors) is False


def counted(query: Mapping[str, str]) -> str | None:
    """The filter a count request of the cheap check sent (None: no count)."""
    return next((name for name in query if name.endswith(">>")), None)


async def test_a_person_read_without_history_sees_an_offline_view_synced_late(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    """A phone's download watched offline reaches the server days later with its real
    `lastViewedAt`, older than the newest view read: no count "viewed since" includes it, the
    count of watched episodes does. Read, the person is idle again."""
    config, person = read_without_history(plex, None)
    plex.watch("100", T0 + 2 * DAY, account=JAMIE)
    runs = Runs(config, store, clock, person)
    cursors = await runs.read({}, True)
    plex.watch("202", T0, account=JAMIE)  # watched on the plane before 100, synced now
    assert await runs.unchanged(cursors) is False
    cursors = await runs.read(cursors, False)
    assert await runs.unchanged(cursors) is True


@pytest.mark.parametrize("server_token", [None, TOKEN], ids=["no server token", "no account id"])
async def test_a_person_read_without_history_with_much_watched_is_idle_in_counts_alone(
    plex: FakePlex, store: Store, clock: FakeClock, server_token: str | None
) -> None:
    """The watched counts kept in the cursor are the listing's, and the server's count of
    watched items must agree with them, or every run would read in full: with movies and
    episodes watched, some twice, one unwatched and another person's views beside, idle runs
    ask the identity and two counts per library, and nothing else. Unwatching is a change."""
    config, person = read_without_history(plex, server_token)
    for key in ("100", "101", "201", "202"):
        plex.watch(key, T0, account=JAMIE)
    plex.watch("201", T0 + DAY, account=JAMIE)  # watched again
    plex.watch("101", T0 + DAY)  # the owner's
    plex.state[(JAMIE, "101")] = {}  # marked unwatched in Plex
    runs = Runs(config, store, clock, person)
    cursors = await runs.read({}, True)
    assert cursors["watched"].endswith(" 1/movie:1 2/episode:2")
    plex.requests.clear()
    for _ in range(3):
        clock.advance(1800)
        assert await runs.unchanged(cursors) is True
    assert len(plex.requests) == 3 * 5
    assert all(r.status == 200 for r in plex.requests)
    plex.state[(JAMIE, "202")] = {}  # marked unwatched in Plex
    assert await runs.unchanged(cursors) is False


@pytest.mark.parametrize("server_token", [None, TOKEN], ids=["no server token", "no account id"])
@pytest.mark.parametrize(
    "saved",
    ["", "ab" * 20, "ab 12", f"{MACHINE_ID} {T0} 1/movie 2/episode"],
    ids=["older version", "bare", "cut", "without watched counts"],
)
async def test_a_person_read_without_history_by_an_older_version_is_read_again(
    plex: FakePlex, store: Store, clock: FakeClock, server_token: str | None, saved: str
) -> None:
    """A link run by a version before the watched-state check kept `history: ""` and no
    `watched` cursor for this person (or one it cannot parse, or one without the watched
    counts, which could hide a view synced late): the cheap check says "changed" (the read
    writes the cursor), rather than failing every run after the upgrade."""
    config, person = read_without_history(plex, server_token)
    plex.watch("100", T0, account=JAMIE)
    reader = make_reader(config, store, LINK, [person], clock)
    try:
        cursors = {"history": ""} | ({"watched": saved} if saved else {})
        assert await reader.unchanged(person, cursors) is False
        cursors = (await reader.read(person, cursors, None, True)).cursors
        assert await reader.unchanged(person, cursors) is True
    finally:
        await reader.aclose()


async def test_a_person_with_a_token_from_plex_tv_read_without_history_asks_the_identity_once(
    plex: FakePlex, plextv: FakePlexTv, store: Store, clock: FakeClock
) -> None:
    """sam signed in to plex.tv, no services.plex.token: the server serves its history to the
    owner only, so the cheap check asks the server's identity, and sam's token (from plex.tv,
    for one server) is checked against it too. Idle daily runs (a reader each) ask it once
    each, also the run after the server's remembered machine id has expired (a week)."""
    friend = plextv.add_account("sam.k")
    plextv.share_on(plex, friend)
    sign_in(store, "sam", friend)
    plex.watch("202", T0, account=friend.id)
    plex_config = PlexConfig(url=plex.url, account_url=plextv.url)
    config = Config(
        services=ServicesConfig(plex=plex_config),
        profiles={"sam": Profile(accounts=Accounts(plex=PlexAccount()))},
    )
    reader = make_reader(config, store, LINK, ["sam"], clock)
    try:
        await reader.account("sam", True)
        cursors = (await reader.read("sam", {}, None, True)).cursors
    finally:
        await reader.aclose()
    assert cursors["history"] == "" and cursors["watched"]
    asked = []
    for _ in range(8):
        clock.advance(DAY)
        plex.requests.clear()
        reader = make_reader(config, store, LINK, ["sam"], clock)
        try:
            assert await reader.account("sam", False) is None
            assert await reader.unchanged("sam", cursors) is True
        finally:
            await reader.aclose()
        asked.append(plex.count("GET", "/identity"))
    assert asked == [1] * 8


async def test_a_person_read_without_history_on_another_server_is_a_change(
    plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    config, person = read_without_history(plex, None)
    runs = Runs(config, store, clock, person)
    cursors = await runs.read({}, True)
    plex.machine_id = "ab" * 20  # a new server answering at the same address
    assert await runs.unchanged(cursors) is False


SECTIONS = [Section("1", "Movies", "movie"), Section("2", "TV Shows", "show")]


def test_a_library_name_the_owner_does_not_see_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no movie or show library named 'Films'"):
        choose_sections(SECTIONS, ["Movies", "Films"], "alex")


def test_a_library_not_shared_with_a_friend_is_left_out_for_them_alone() -> None:
    # Plex shares libraries one by one: the friend sees Movies only.
    chosen = choose_sections(SECTIONS[:1], ["Movies", "TV Shows"], "sam", SECTIONS, owner=False)
    assert [s.title for s in chosen] == ["Movies"]


def test_a_misspelt_library_is_a_config_error_whoever_reads_it() -> None:
    # The owner with a token of their own reads as anyone else: the server's list decides.
    with pytest.raises(ConfigError, match="no movie or show library named 'TV Shos'"):
        choose_sections(SECTIONS, ["Movies", "TV Shos"], "alex", SECTIONS, owner=False)


@pytest.mark.parametrize("skew", [0.0, 2 * 3600.0])
def test_a_write_the_listing_predates_is_not_read_as_unwatched_whatever_the_servers_clock(
    skew: float,
) -> None:
    now = 1_700_000_000.0
    unwatched = LibraryItem("100", "movie", ids=Ids(tmdb="329865"))  # listed just before
    written = Written("100", ARRIVAL, now - 5 * 86400, (now - 30.0,))  # scrobbled 30 s ago
    record = written_record("100", written.at)
    built = build_side(
        Library(movies=[unwatched]),
        [],
        Memory(written={record: written}),
        False,
        listed_at=now - 10.0,
        skew=skew,
    )
    assert not built.memory.written[record].removed


def test_only_unwatching_its_item_undoes_a_write_of_ours_however_long_ago() -> None:
    # Days after our write, its item is unmatched in Plex (listed, watched, no TMDB id) or its
    # library is left out for a while: when it is linked again, the play is there again.
    # Unwatched while unmatched, it is gone.
    now = 1_700_000_000.0
    written = Written("100", ARRIVAL, now - 400 * DAY, (now - 5 * DAY,))
    memory = Memory(written={written_record("100", written.at): written})
    matched = LibraryItem("100", "movie", ids=Ids(tmdb="329865"), view_count=1)
    unmatched = replace(matched, ids=Ids())
    for library in (Library(movies=[unmatched]), Library()):
        away = build_side(library, [], memory, False, listed_at=now)
        assert away.side.plays == ()
        back = build_side(Library(movies=[matched]), [], away.memory, False, listed_at=now)
        assert back.side.plays == (Play(ARRIVAL, written.at, written_record("100", written.at)),)
    unwatched = replace(unmatched, view_count=0)
    away = build_side(Library(movies=[unwatched]), [], memory, False, listed_at=now)
    back = build_side(Library(movies=[matched]), [], away.memory, False, listed_at=now)
    assert back.side.plays == ()


def test_a_write_whose_answer_was_lost_is_no_unwatch_while_its_outcome_is_unknown() -> None:
    # Its scrobble's answer lost and its row waiting to be tried again, the write is listed
    # unwatched an hour later: it did not land, and the retry writes it. Once it landed
    # (its outcome known), the item unwatched is the user's unwatch.
    now = 1_700_000_000.0
    lost = Written("100", ARRIVAL, now - 5 * DAY, (now - 3600.0,), pending=True)
    record = written_record("100", lost.at)
    unwatched = LibraryItem("100", "movie", ids=Ids(tmdb="329865"))
    waiting = build_side(
        Library(movies=[unwatched]), [], Memory(written={record: lost}), False, listed_at=now
    )
    assert not waiting.memory.written[record].removed
    assert waiting.side.plays == (Play(ARRIVAL, lost.at, record),)
    landed = replace(lost, pending=False)
    gone = build_side(
        Library(movies=[unwatched]), [], Memory(written={record: landed}), False, listed_at=now
    )
    assert gone.memory.written[record].removed and gone.side.plays == ()


async def test_a_write_back_cut_between_its_parts_is_never_read_as_whole(
    reader: PlexReader, plex: FakePlex, store: Store, tmp_path: Path
) -> None:
    # A read writes its big maps back in parts (a webhook's record waits for one part, not
    # ~0.5 s at 43,000 plays). Killed between two (a stop no longer waits for a run, a disk
    # fails), the keys map is this read's and the plays map the last one's: the next run must
    # not read against that mix as the last read's memory, nor find this read's server id and
    # small maps beside it.
    plex.watch("100", T0, history=False)  # marked watched, no history row: a synthetic play
    plex.watch("202", T0)
    store.db.execute(
        "CREATE TRIGGER cut BEFORE INSERT ON mirror WHEN NEW.collection = 'plays'"
        " BEGIN SELECT RAISE(ABORT, 'the store closed'); END"
    )
    with pytest.raises(Exception, match="the store closed"):
        await read(reader)
    store.db.execute("DROP TRIGGER cut")
    assert store.path is not None
    with Store.open(store.path) as after_a_restart:
        for collection in (KEYS, "plays"):
            assert after_a_restart.mirror_get_if_whole("plex", "alex", collection) is None
        # The server's history is cached as it is read: true of the server whatever the run
        # makes of it. Of the rest, nothing.
        kept = after_a_restart.db.execute(
            "SELECT DISTINCT collection FROM mirror WHERE collection NOT IN ('history', 'keys')"
        )
        assert [tuple(r) for r in kept] == []
        assert after_a_restart.get_cursor("plex", "alex", "keys_from") is None
    # The next read writes the maps whole: as a read into an empty store writes them.
    plays = await read(reader)
    fresh = Store.open(tmp_path / "fresh.db")
    try:
        again = make_reader(make_config(plex), fresh, LINK, ["alex"], FakeClock(T0 + 30 * DAY))
        try:
            assert await read(again) == plays
        finally:
            await again.aclose()
        for collection in (KEYS, "plays"):
            whole = store.mirror_get_if_whole("plex", "alex", collection)
            assert whole == fresh.mirror_get("plex", "alex", collection)
            assert whole
    finally:
        fresh.close()


async def test_a_history_cache_halfway_through_its_replace_is_never_read_on_from(
    reader: PlexReader, plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    # A full read replaces the cached history in parts (a webhook's record waits for one
    # part, not ~0.4 s at 43,000 rows). Halfway, or after a crash there, the cache is a mix
    # of the old rows and the new: a read then (another process's, or the next start's:
    # another Store on the file) reads the whole history, never on from that cache.
    plex.watch("100", T0)
    plex.watch("201", T0 + DAY)
    await read(reader)
    plex.watch("202", T0 + 2 * DAY)
    taking_out = (
        "SELECT item_key FROM mirror WHERE service = 'plex' AND profile = 'alex'"
        " AND collection = 'history'"
    )
    assert store.path is not None
    history = "/status/sessions/history/all"
    with paused_read(taking_out, *store_connections(store)) as paused:
        first = asyncio.ensure_future(read(reader))
        assert await asyncio.to_thread(paused.reached.wait, 10)
        asked = plex.count("GET", history)
        with Store.open(store.path) as other:
            second = make_reader(make_config(plex), other, LINK, ["alex"], clock)
            try:
                seen = await read(second, full=False)
            finally:
                await second.aclose()
        new_asks = plex.calls("GET", history)[asked:]
        assert new_asks and all("viewedAt>" not in r.query for r in new_asks)
    assert [p.item for p in seen] == [BB_S1E1, BB_S1E2, ARRIVAL]
    assert [p.item for p in await first] == [BB_S1E1, BB_S1E2, ARRIVAL]
