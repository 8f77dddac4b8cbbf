"""The Plex <-> Trakt watchlist and collection runs, end to end against the fakes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plextv import FakePlexTv, Title
from tests.fakes.receiver import AlertReceiver
from tests.fakes.trakt import CLIENT_ID, VIP_LIMITS, FakeTrakt
from tests.harness import sign_in_trakt
from watchbridge.alerts import Notifier
from watchbridge.config import AlertsConfig, PlexConfig, Secret, TraktConfig
from watchbridge.http import Pacer, RetryPolicy
from watchbridge.model import Ids, MediaRef
from watchbridge.plexlink import (
    ListsRun,
    hold_watchlist,
    lists_still_held,
    load_pause,
    sync_collection,
    sync_watchlist,
    watchlist_holding,
)
from watchbridge.services.plextv import PlexTvClient, WatchlistUnavailable, container_entries
from watchbridge.services.trakt import CollectionWrite, TraktClient
from watchbridge.store import Store

pytestmark = pytest.mark.anyio
PROFILE = "me"
PLEX_FIXTURES = Path(__file__).parent / "fixtures" / "plex_library"
ARRIVAL = ["imdb://tt2543164", "tmdb://329865", "tvdb://1204"]
HEAT = ["imdb://tt0113277", "tmdb://949"]
GOT = ["imdb://tt0944947", "tmdb://1399", "tvdb://121361"]
GUARDIANS = ["imdb://tt2015381", "tmdb://118340"]
BATMAN = ["imdb://tt0372784", "tmdb://272"]


@dataclass
class Link:
    plextv: FakePlexTv
    trakt: FakeTrakt
    plex_client: PlexTvClient
    trakt_client: TraktClient
    store: Store
    titles: dict[str, Title]
    days: int = 0  # how long after the first run this one is

    async def watchlist(self, **options: Any) -> Any:
        return await sync_watchlist(
            self.plex_client,
            self.trakt_client,
            self.store,
            PROFILE,
            clock=lambda: 1_800_000_000.0 + self.days * 86400,
            **options,
        )

    def plex_watchlist(self) -> set[str]:
        return {t.title for t in self.plextv.watchlist()}

    def trakt_watchlist(self) -> set[str]:
        return {str(getattr(e.item, "title", "")) for e in self.trakt.watchlist()}


@pytest.fixture
async def link(start_fake: Callable[[FakeServer], FakeServer], store: Store) -> AsyncIterator[Link]:
    async with plex_trakt_link(start_fake, store) as made:
        yield made


@asynccontextmanager
async def plex_trakt_link(
    start_fake: Callable[[FakeServer], FakeServer], store: Store
) -> AsyncIterator[Link]:
    """plex.tv's and Trakt's fakes knowing a few titles, and profile me's clients of both."""
    plextv = start_fake(FakePlexTv())
    trakt = start_fake(FakeTrakt())
    assert isinstance(plextv, FakePlexTv) and isinstance(trakt, FakeTrakt)
    trakt.seed_reference_catalogue()
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    titles = {
        "Arrival": plextv.add_title("movie", "Arrival", 2016, ARRIVAL),
        "Heat": plextv.add_title("movie", "Heat", 1995, HEAT),
        "Game of Thrones": plextv.add_title("show", "Game of Thrones", 2011, GOT),
        "Guardians of the Galaxy": plextv.add_title(
            "movie", "Guardians of the Galaxy", 2014, GUARDIANS
        ),
        "Batman Begins": plextv.add_title("movie", "Batman Begins", 2005, BATMAN),
    }
    config = PlexConfig(account_url=plextv.url, discover_url=plextv.url, metadata_url=plextv.url)
    plex_client = PlexTvClient(
        config,
        store,
        client_identifier="test-install",
        account_tokens={PROFILE: Secret(plextv.owner.token)},
    )
    plex_client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    trakt_config = TraktConfig(CLIENT_ID, None, api_url=trakt.url, auth_url=trakt.url)
    trakt_client = TraktClient(trakt_config, store, sleep=no_wait)
    trakt_client.http.pacers[PROFILE] = Pacer()  # pacing is http.py's, tested there
    sign_in_trakt(store, trakt, PROFILE)
    yield Link(plextv, trakt, plex_client, trakt_client, store, titles)
    await plex_client.aclose()
    await trakt_client.aclose()


def plex_add(link: Link, *names: str) -> None:
    for name in names:
        link.plextv.watchlist_add(link.plextv.owner, link.titles[name])


def trakt_add(link: Link, *names: str) -> None:
    user = link.trakt.user
    from tests.fakes.trakt import WatchlistEntry, key_of

    for name in names:
        item = next((m for m in link.trakt.movies if m.title == name), None) or next(
            s for s in link.trakt.shows if s.title == name
        )
        user.watchlist[key_of(item)] = WatchlistEntry(
            len(user.watchlist) + 1, item, "2026-09-01T08:00:00.000Z"
        )


# --------------------------------------------------------------------------- watchlist


async def test_first_run_merges_both_watchlists(link: Link) -> None:
    plex_add(link, "Arrival")
    trakt_add(link, "Game of Thrones", "Guardians of the Galaxy")
    result = await link.watchlist()
    assert (result.added_to_plex, result.added_to_trakt) == (2, 1)
    assert link.plex_watchlist() == {"Arrival", "Game of Thrones", "Guardians of the Galaxy"}
    assert link.trakt_watchlist() == {"Arrival", "Game of Thrones", "Guardians of the Galaxy"}


async def test_titles_in_no_library_are_found_on_discover_by_external_id(link: Link) -> None:
    trakt_add(link, "Heat")  # on no Plex server at all: only discover knows it
    await link.watchlist()
    assert link.plex_watchlist() == {"Heat"}
    (match,) = [r for r in link.plextv.requests if r.query.get("guid")]
    assert match.query == {"type": "1", "guid": "tmdb://949"}


async def test_a_second_run_without_changes_writes_nothing(link: Link) -> None:
    plex_add(link, "Arrival")
    trakt_add(link, "Heat")
    await link.watchlist()
    before = len(link.plextv.requests), len(link.trakt.requests)
    result = await link.watchlist()
    assert result.plan.changes == 0
    assert result.requests == {"plextv": 1, "trakt": 1}  # the two lists, nothing else
    assert len(link.plextv.requests) - before[0] == 1


async def test_with_trakts_activity_stamps_an_unchanged_run_only_reads_the_plex_list(
    link: Link,
) -> None:
    plex_add(link, "Arrival")
    trakt_add(link, "Heat")
    await link.watchlist(activities=await link.trakt_client.last_activities(PROFILE))
    # The run after one that wrote reads in full: someone may have changed a list meanwhile.
    await link.watchlist(activities=await link.trakt_client.last_activities(PROFILE))
    before = len(link.trakt.requests)
    quiet = await link.watchlist(activities=await link.trakt_client.last_activities(PROFILE))
    assert quiet.requests == {"plextv": 1, "trakt": 0}
    assert len(link.trakt.requests) - before == 1  # only the test's own last_activities
    await link.trakt_client.remove_watchlist(PROFILE, [MediaRef("movie", ids=Ids(tmdb="949"))])
    moved = await link.watchlist(activities=await link.trakt_client.last_activities(PROFILE))
    assert moved.removed_from_plex == 1  # the Trakt stamp moved: a full run
    plex_add(link, "Batman Begins")
    grown = await link.watchlist(activities=await link.trakt_client.last_activities(PROFILE))
    assert grown.added_to_trakt == 1  # the Plex list changed: a full run


async def test_a_trakt_change_made_while_a_run_wrote_reaches_plex_on_the_next_run(
    link: Link,
) -> None:
    trakt_add(link, "Heat")  # the run adds it to Plex
    activities = await link.trakt_client.last_activities(PROFILE)
    await link.watchlist(activities=activities)
    # Meanwhile (another link, the user) Batman Begins went onto Trakt's watchlist: stamps
    # read after the run's own writes would already show it.
    trakt_add(link, "Batman Begins")
    await link.watchlist(activities=await link.trakt_client.last_activities(PROFILE))
    assert link.plex_watchlist() == {"Heat", "Batman Begins"}


async def test_removal_on_plex_removes_from_trakt(link: Link) -> None:
    plex_add(link, "Arrival", "Heat")
    await link.watchlist()
    await link.plex_client.remove_from_watchlist(PROFILE, link.titles["Heat"].rating_key)
    result = await link.watchlist()
    assert result.removed_from_trakt == 1
    assert link.trakt_watchlist() == {"Arrival"}


async def test_removal_on_trakt_removes_from_plex(link: Link) -> None:
    trakt_add(link, "Arrival", "Heat")
    await link.watchlist()
    link.trakt.user.watchlist = {
        k: v for k, v in link.trakt.user.watchlist.items() if v.item.title != "Arrival"
    }
    result = await link.watchlist()
    assert result.removed_from_plex == 1
    assert link.plex_watchlist() == {"Heat"}


async def test_a_watchlist_404_stops_the_run_before_anything_is_written(link: Link) -> None:
    plex_add(link, "Arrival", "Heat", "Batman Begins")
    await link.watchlist()
    link.plextv.watchlist_moved = True
    with pytest.raises(WatchlistUnavailable, match="404"):
        await link.watchlist()
    assert link.trakt_watchlist() == {"Arrival", "Heat", "Batman Begins"}
    assert link.trakt.count("POST", "/sync/watchlist/remove") == 0
    link.plextv.watchlist_moved = False
    result = await link.watchlist()  # the baseline survived the failed run
    assert result.plan.changes == 0


async def test_held_watchlist_removals_stay_held_as_the_list_grows(link: Link) -> None:
    share = {"max_removal_share": 0.5}
    plex_add(link, "Arrival", "Heat", "Batman Begins")
    await link.watchlist(**share)
    link.plextv.owner.watchlist.clear()  # Plex's watchlist reads empty (a new host, say)
    link.days = 1
    assert (await link.watchlist(**share)).plan.held
    link.trakt.add_movie("Inception", 2010, imdb="tt1375666", tmdb=27205)
    link.titles["Inception"] = link.plextv.add_title(
        "movie", "Inception", 2010, ["imdb://tt1375666", "tmdb://27205"]
    )
    # Days pass and the household adds titles on Trakt: 3 of 6 is no longer over the share.
    for day, name in enumerate(("Guardians of the Galaxy", "Game of Thrones", "Inception"), 2):
        trakt_add(link, name)
        link.days = day
        await link.watchlist(**share)
    assert {"Arrival", "Heat", "Batman Begins"} <= link.trakt_watchlist()
    link.days = 6
    await link.watchlist(confirm_removals=True, **share)
    assert not {"Arrival", "Heat", "Batman Begins"} & link.trakt_watchlist()


def test_a_watchlist_hold_is_still_told_by_a_run_that_could_not_read_the_watchlist(
    store: Store,
) -> None:
    hold_watchlist(store, "plex-trakt", "me", "3 of 3 watchlist titles on Plex ...", 1.0)
    still = lists_still_held(store, "plex-trakt", "watchlist", ["me", "sam"], True, 2.0)
    assert still == ["me: watchlist: 3 of 3 watchlist titles on Plex ..."]
    # A link no longer syncing watchlists forgets it.
    assert lists_still_held(store, "plex-trakt", "watchlist", ["me"], False, 3.0) == []
    assert not watchlist_holding(store, "plex-trakt", "me")


async def test_an_empty_read_that_would_remove_everything_is_held(link: Link) -> None:
    plex_add(link, "Arrival", "Heat", "Batman Begins")
    await link.watchlist()
    link.plextv.owner.watchlist.clear()  # e.g. a new host that answers an empty list
    result = await link.watchlist()
    assert result.plan.held and result.removed_from_trakt == 0
    assert link.trakt_watchlist() == {"Arrival", "Heat", "Batman Begins"}
    confirmed = await link.watchlist(confirm_removals=True)  # the baseline kept them
    assert confirmed.removed_from_trakt == 3


async def test_entries_without_ids_are_identified_once_and_cached(link: Link) -> None:
    plex_add(link, "Arrival")
    link.plextv.watchlist_guids = False
    await link.watchlist()
    await link.watchlist()
    assert link.trakt_watchlist() == {"Arrival"}
    details = [
        r for r in link.plextv.requests if r.path.endswith(link.titles["Arrival"].rating_key)
    ]
    assert len(details) == 1


async def test_titles_one_side_cannot_identify_are_reported(link: Link) -> None:
    trakt_add(link, "Parks and Recreation")  # discover does not know it here
    result = await link.watchlist()
    assert result.unresolved == ("Parks and Recreation (2009) (Plex discover does not know it)",)
    again = await link.watchlist()  # the negative match is cached for a day
    assert again.unresolved and link.plextv.count("GET", "/library/metadata/{id}") == 3


async def test_a_plex_title_without_external_ids_is_named_and_left_alone(link: Link) -> None:
    home_video = link.plextv.add_title("movie", "Our Wedding", 2019, [])
    link.plextv.watchlist_add(link.plextv.owner, home_video)
    result = await link.watchlist()
    assert result.unresolved == ("Our Wedding (2019) (Plex knows no external id for it)",)
    assert result.plan.changes == 0 and link.trakt.count("POST", "/sync/watchlist") == 0
    assert link.plex_watchlist() == {"Our Wedding"}


async def test_a_title_discover_learns_ids_for_later_syncs_within_days(link: Link) -> None:
    link.plextv.watchlist_guids = False
    heat = link.titles["Heat"]
    guids, heat.guids = heat.guids, []  # announced: no external ids yet
    link.plextv.watchlist_add(link.plextv.owner, heat)
    first = await link.watchlist()
    assert any("Heat" in title for title in first.unresolved)
    heat.guids = guids
    link.days = 2  # not cached for a month like ids found
    await link.watchlist()
    assert link.trakt_watchlist() == {"Heat"}


async def test_a_title_plex_refuses_is_reported_and_the_run_goes_on(link: Link) -> None:
    trakt_add(link, "Heat", "Arrival")
    link.plextv.fail_next(1, 400, route="PUT /actions/addToWatchlist")
    result = await link.watchlist()
    assert result.added_to_plex == 1 and len(result.unresolved) == 1
    assert "not added to Plex" in result.unresolved[0]
    again = await link.watchlist()  # not in the baseline: tried again
    assert again.added_to_plex == 1
    assert link.plex_watchlist() == {"Heat", "Arrival"}


async def test_a_title_plextv_fails_to_add_is_reported_and_the_run_goes_on(link: Link) -> None:
    trakt_add(link, "Arrival", "Heat")
    link.plextv.fail_next(20, 503, route="PUT /actions/addToWatchlist")  # plex.tv failing
    result = await link.watchlist()
    assert result.added_to_plex == 0 and "not added to Plex" in result.unresolved[0]
    link.plextv.clear_knobs()
    assert (await link.watchlist()).added_to_plex == 2


async def test_a_failed_removal_from_plex_is_tried_again_not_undone_on_trakt(link: Link) -> None:
    trakt_add(link, "Arrival", "Heat")
    await link.watchlist()
    watchlist = link.trakt.user.watchlist  # the user takes Arrival off the Trakt watchlist
    link.trakt.user.watchlist = {k: v for k, v in watchlist.items() if v.item.title != "Arrival"}
    link.plextv.fail_next(1, 403, route="PUT /actions/removeFromWatchlist")
    first = await link.watchlist()
    assert first.removed_from_plex == 0 and "not removed from Plex" in first.unresolved[0]
    await link.watchlist()
    assert link.trakt_watchlist() == {"Heat"} and link.plex_watchlist() == {"Heat"}


async def test_dry_run_writes_nothing(link: Link) -> None:
    plex_add(link, "Arrival")
    trakt_add(link, "Heat")
    result = await link.watchlist(dry_run=True)
    assert result.dry_run and result.plan.changes == 2
    assert link.plex_watchlist() == {"Arrival"} and link.trakt_watchlist() == {"Heat"}
    assert link.store.mirror_get("link:plex-trakt", PROFILE, "watchlist") == {}


@pytest.fixture
def notifier(receiver: AlertReceiver) -> Notifier:
    return Notifier(AlertsConfig(urls=[Secret(receiver.apprise_url)]), timeout=2.0)


async def test_a_free_watchlist_at_its_limit_pauses_with_one_alert_until_the_limit_changes(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    link.trakt.user.limits["watchlist"] = {"item_count": 1}
    trakt_add(link, "Heat")
    plex_add(link, "Arrival", "Batman Begins")
    first = await link.watchlist(alerts=notifier)
    assert first.limit is not None and first.limit.paused and first.limit.not_sent == 2
    assert link.trakt_watchlist() == {"Heat"}
    assert link.plex_watchlist() == {"Arrival", "Batman Begins", "Heat"}  # the rest runs
    (alert,) = receiver.messages
    assert "https://app.trakt.tv/vip" in alert["message"] and PROFILE in alert["message"]
    posts = link.trakt.count("POST", "/sync/watchlist")

    second = await link.watchlist(alerts=notifier)
    assert second.limit is not None and second.limit.paused
    assert link.trakt.count("POST", "/sync/watchlist") == posts  # no retry against the limit
    assert len(receiver.messages) == 1

    link.trakt.set_limits(vip=True, limits=VIP_LIMITS)
    third = await link.watchlist(alerts=notifier)
    assert third.limit is not None and not third.limit.paused and third.limit.resolved
    assert link.trakt_watchlist() == {"Heat", "Arrival", "Batman Begins"}
    assert load_pause(link.store, PROFILE, "watchlist") is None
    assert receiver.titles()[-1].startswith("Resolved")


async def test_a_limit_raised_while_the_watchlist_is_full_again_sends_no_resolved_notice(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    link.trakt.user.limits["watchlist"] = {"item_count": 1}
    trakt_add(link, "Heat")
    plex_add(link, "Arrival", "Batman Begins")
    await link.watchlist(alerts=notifier)
    assert receiver.titles() == ["watchbridge: Trakt watchlist full (profile me)"]

    link.trakt.set_limits(limits={"watchlist": {"item_count": 2}})  # Trakt raised it ...
    trakt_add(link, "Arrival")  # ... and the person filled it on Trakt's site meanwhile
    second = await link.watchlist(alerts=notifier)
    assert second.limit is not None and second.limit.paused and not second.limit.resolved
    assert not any(title.startswith("Resolved") for title in receiver.titles())
    pause = load_pause(link.store, PROFILE, "watchlist")
    assert pause is not None and pause.limit == 2  # the limit a later change is seen against

    link.trakt.set_limits(limits={"watchlist": {"item_count": 10}})
    third = await link.watchlist(alerts=notifier)
    assert third.limit is not None and not third.limit.paused and third.limit.resolved
    assert receiver.titles()[-1] == "Resolved: watchbridge: Trakt watchlist full (profile me)"


async def untrakt(link: Link, *tmdb: str) -> None:
    """The person takes movies off Trakt's watchlist on Trakt's site (its stamps move)."""
    refs = [MediaRef("movie", ids=Ids(tmdb=t)) for t in tmdb]
    await link.trakt_client.remove_watchlist(PROFILE, refs)


async def test_a_full_watchlist_made_room_on_trakt_adds_what_waited_and_resolves_once(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    link.trakt.user.limits["watchlist"] = {"item_count": 1}
    trakt_add(link, "Heat")
    plex_add(link, "Arrival")
    first = await link.watchlist(alerts=notifier)
    assert first.limit is not None and first.limit.paused
    assert receiver.titles() == ["watchbridge: Trakt watchlist full (profile me)"]

    await untrakt(link, "949")  # the person tidies Trakt's watchlist: Heat goes
    second = await link.watchlist(alerts=notifier)
    assert second.added_to_trakt == 1 and link.trakt_watchlist() == {"Arrival"}
    assert second.limit is not None and not second.limit.paused
    assert load_pause(link.store, PROFILE, "watchlist") is None
    assert receiver.titles() == [
        "watchbridge: Trakt watchlist full (profile me)",
        "Resolved: watchbridge: Trakt watchlist full (profile me)",
    ]
    assert receiver.messages[-1]["message"] == (
        "There is room again in the Trakt watchlist of profile me: 1 title added."
    )


async def test_a_vip_watchlist_at_its_limit_resumes_when_titles_are_taken_off_it(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    link.trakt.set_limits(vip=True, limits={"watchlist": {"item_count": 1}})  # 5000, smaller
    trakt_add(link, "Heat")
    plex_add(link, "Arrival")
    await link.watchlist(alerts=notifier)
    assert "even with VIP" in receiver.messages[0]["message"]
    await untrakt(link, "949")
    resumed = await link.watchlist(alerts=notifier)
    assert resumed.added_to_trakt == 1 and resumed.limit is not None and resumed.limit.resolved


async def test_room_for_part_of_what_waits_adds_that_part_and_keeps_the_one_alert(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    link.trakt.user.limits["watchlist"] = {"item_count": 1}
    trakt_add(link, "Heat")
    plex_add(link, "Arrival", "Batman Begins")
    await link.watchlist(alerts=notifier)
    await untrakt(link, "949")
    partly = await link.watchlist(alerts=notifier)
    assert partly.added_to_trakt == 1 and len(link.trakt_watchlist()) == 1
    assert partly.limit is not None and partly.limit.paused and partly.limit.not_sent == 1
    assert receiver.titles() == ["watchbridge: Trakt watchlist full (profile me)"]
    posts = link.trakt.count("POST", "/sync/watchlist")
    full = await link.watchlist(alerts=notifier)  # full again: nothing is tried
    assert full.limit is not None and full.limit.paused
    assert link.trakt.count("POST", "/sync/watchlist") == posts
    assert len(receiver.messages) == 1

    link.trakt.set_limits(limits={"watchlist": {"item_count": 10}})
    done = await link.watchlist(alerts=notifier)
    assert done.added_to_trakt == 1 and link.trakt_watchlist() == {"Arrival", "Batman Begins"}
    assert receiver.titles()[-1] == "Resolved: watchbridge: Trakt watchlist full (profile me)"


async def test_a_420_when_trying_again_in_the_room_read_pauses_again_without_a_new_alert(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    link.trakt.user.limits["watchlist"] = {"item_count": 1}
    trakt_add(link, "Heat")
    plex_add(link, "Arrival")
    await link.watchlist(alerts=notifier)
    await untrakt(link, "949")
    link.trakt.account_limit(route="POST /sync/watchlist", limit=1)  # Trakt counts otherwise
    refused = await link.watchlist(alerts=notifier)
    assert refused.added_to_trakt == 0
    assert refused.limit is not None and refused.limit.paused and refused.limit.not_sent == 1
    assert receiver.titles() == ["watchbridge: Trakt watchlist full (profile me)"]
    pause = load_pause(link.store, PROFILE, "watchlist")
    assert pause is not None and pause.since == 1_800_000_000.0 and pause.count == 0
    posts = link.trakt.count("POST", "/sync/watchlist")
    await link.watchlist(alerts=notifier)  # the same room Trakt refused: not tried again
    assert link.trakt.count("POST", "/sync/watchlist") == posts
    assert len(receiver.messages) == 1


async def test_a_watchlist_404_alerts_at_once_and_recovers(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    link.plextv.watchlist_moved = True
    with pytest.raises(WatchlistUnavailable):
        await link.watchlist(alerts=notifier)
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: Plex watchlist not found"
    assert "services.plex.discover_url" in alert["message"]
    link.plextv.watchlist_moved = False
    await link.watchlist(alerts=notifier)
    assert receiver.titles()[-1] == "Resolved: watchbridge: Plex watchlist not found"


async def test_a_420_from_trakt_pauses_with_its_upgrade_url(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    plex_add(link, "Arrival")
    link.trakt.account_limit(route="POST /sync/watchlist", limit=250)
    result = await link.watchlist(alerts=notifier)
    assert result.limit is not None and result.limit.paused
    pause = load_pause(link.store, PROFILE, "watchlist")
    assert pause is not None and pause.upgrade_url == "https://trakt.tv/vip"
    assert "https://trakt.tv/vip" in receiver.messages[0]["message"]


# --------------------------------------------------------------------------- collection


def listing(name: str) -> list[dict[str, Any]]:
    entries, _ = container_entries(json.loads((PLEX_FIXTURES / name).read_text()))
    return [dict(e) for e in entries]


async def collect(link: Link, **options: Any) -> Any:
    return await sync_collection(
        link.trakt_client,
        link.store,
        PROFILE,
        movies=options.pop("movies", listing("library_movies_all.json")),
        episodes=options.pop("episodes", listing("library_episodes_all.json")),
        shows=listing("library_shows_all.json"),
        clock=lambda: 1_800_000_000.0,
        **options,
    )


def collected(trakt: FakeTrakt) -> dict[str, dict[str, Any]]:
    """Trakt's collection by title (episodes as "Show S01E02") with each entry's metadata."""
    out = {}
    for entry in trakt.collection():
        item = entry.item
        name = getattr(item, "title", None) if entry.item.kind == "movie" else None
        name = name or f"{item.show.title} S{item.season:02d}E{item.number:02d}"  # type: ignore[union-attr]
        out[name] = entry.metadata
    return out


# What the listings in PLEX_FIXTURES are on Trakt (their README names each case).
FIXTURES_COLLECTED = {
    "Batman Begins": {
        "media_type": "digital",
        "resolution": "uhd_4k",
        "hdr": "dolby_vision",
        "audio": "dolby_atmos",
        "audio_channels": "7.1",
    },
    "TRON: Legacy": {  # the better of two versions
        "media_type": "digital",
        "resolution": "uhd_4k",
        "hdr": "hdr10",
        "audio": "dolby_digital_plus_atmos",
        "audio_channels": "5.1",
    },
    "Guardians of the Galaxy": {
        "media_type": "digital",
        "resolution": "hd_1080p",
        "audio": "dts_ma",
        "audio_channels": "7.1",
    },
    "Breaking Bad S04E01": {
        "media_type": "digital",
        "resolution": "hd_1080p",
        "audio": "aac",
        "audio_channels": "2.0",
    },
    "Breaking Bad S04E08": {
        "media_type": "digital",
        "resolution": "hd_720p",
        "audio": "dolby_digital_plus",
        "audio_channels": "5.1",
    },
}


async def test_first_collection_run_sends_the_library_with_media_details(link: Link) -> None:
    result = await collect(link)
    assert (result.added, result.updated, result.removed) == (5, 0, 0)
    assert collected(link.trakt) == FIXTURES_COLLECTED
    assert link.trakt.count("POST", "/sync/collection") == 1  # one batch, not per item


async def test_a_collection_run_without_changes_only_reads(link: Link) -> None:
    await collect(link)
    posts = link.trakt.count("POST", "/sync/collection")
    result = await collect(link)
    assert result.plan.unchanged == 5 and (result.added, result.updated) == (0, 0)
    assert link.trakt.count("POST", "/sync/collection") == posts
    assert result.requests == {"trakt": 2}  # movies and shows; no limits needed


async def test_a_better_version_updates_the_details(link: Link) -> None:
    await collect(link)
    movies = listing("library_movies_all.json")
    guardians = movies[2]["Media"][0]
    guardians["width"], guardians["videoResolution"] = 3840, "4k"
    result = await collect(link, movies=movies)
    assert result.updated == 1
    assert collected(link.trakt)["Guardians of the Galaxy"]["resolution"] == "uhd_4k"


async def test_items_gone_from_the_server_are_removed_only_when_asked_and_only_ours(
    link: Link,
) -> None:
    await collect(link)
    from tests.fakes.trakt import CollectionEntry, key_of

    heat = next(m for m in link.trakt.movies if m.title == "Heat")
    link.trakt.user.collection[key_of(heat)] = CollectionEntry(
        heat, "2025-01-01T00:00:00.000Z", "2025-01-01T00:00:00.000Z"
    )
    fewer = listing("library_movies_all.json")[:2]
    kept = await collect(link, movies=fewer)
    assert kept.removed == 0 and "Guardians of the Galaxy" in collected(link.trakt)
    await collect(link)  # Guardians is back on the server
    removed = await collect(link, movies=fewer, remove_missing=True)
    assert removed.removed == 1
    assert "Guardians of the Galaxy" not in collected(link.trakt)
    assert "Heat" in collected(link.trakt)  # not ours: never removed


async def test_a_library_that_reads_empty_holds_the_collections_removals_until_confirmed(
    link: Link,
) -> None:
    await collect(link)
    # The NAS share is unmounted and a scan emptied the movie library: removing its titles
    # would wipe them from the Trakt collection, to be added again (newly dated) once it is back.
    guard = {"remove_missing": True, "max_removal_share": 0.10}
    held = await collect(link, movies=[], **guard)
    assert held.removed == 0 and len(collected(link.trakt)) == 5
    assert "3 of 3 movies in the Trakt collection would be removed" in held.plan.held_reason
    assert ListsRun((held,)).held == (f"{PROFILE}: collection: {held.plan.held_reason}",)
    confirmed = await collect(link, movies=[], confirm_removals=True, **guard)
    assert confirmed.removed == 3 and len(collected(link.trakt)) == 2


async def test_held_collection_removals_stay_held_as_the_collection_grows(link: Link) -> None:
    from tests.fakes.trakt import CollectionEntry, key_of

    await collect(link)
    guard = {"remove_missing": True, "max_removal_share": 0.5}
    assert (await collect(link, movies=[], **guard)).plan.held_reason
    for n in range(10):  # others collect movies meanwhile: 3 of 13 is under the share
        movie = link.trakt.add_movie(f"Other {n}", 2000 + n, tmdb=900_000 + n)
        link.trakt.user.collection[key_of(movie)] = CollectionEntry(
            movie, "2025-01-01T00:00:00.000Z", "2025-01-01T00:00:00.000Z"
        )
    still = await collect(link, movies=[], **guard)
    assert still.removed == 0 and "until confirmed or undone" in still.plan.held_reason
    confirmed = await collect(link, movies=[], confirm_removals=True, **guard)
    assert confirmed.removed == 3


async def test_a_few_titles_gone_from_the_library_are_removed_without_asking(link: Link) -> None:
    await collect(link)
    fewer = listing("library_movies_all.json")[:2]  # one title gone: too few to be a mass removal
    result = await collect(link, movies=fewer, remove_missing=True, max_removal_share=0.10)
    assert result.removed == 1 and not result.plan.held_reason


async def test_a_free_collection_at_its_limit_sends_what_fits_then_pauses(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    link.trakt.user.limits["collection"] = {"item_count": 3}
    result = await collect(link, alerts=notifier)
    assert result.added == 3
    assert result.limit is not None and result.limit.paused and result.limit.not_sent == 2
    assert len(link.trakt.collection()) == 3
    assert "collection" in receiver.messages[0]["message"]
    again = await collect(link, alerts=notifier)
    assert again.added == 0 and len(receiver.messages) == 1
    link.trakt.set_limits(limits={"collection": {"item_count": 1000}})  # Trakt raised it
    resumed = await collect(link, alerts=notifier)
    assert resumed.added == 2 and resumed.limit is not None and not resumed.limit.paused


async def test_with_trakts_activity_stamps_a_run_without_changes_asks_nothing(
    link: Link,
) -> None:
    await collect(link, activities=await link.trakt_client.last_activities(PROFILE))
    # The run after one that wrote reads in full: someone may have changed Trakt meanwhile.
    await collect(link, activities=await link.trakt_client.last_activities(PROFILE))
    activities = await link.trakt_client.last_activities(PROFILE)
    before = len(link.trakt.requests)
    result = await collect(link, activities=activities)
    assert result.requests == {"trakt": 0} and result.plan.unchanged == 5
    assert len(link.trakt.requests) == before


async def test_a_library_change_or_a_trakt_change_makes_the_run_read_again(link: Link) -> None:
    await collect(link, activities=await link.trakt_client.last_activities(PROFILE))
    movies = listing("library_movies_all.json")
    movies[0]["Media"][0]["width"] = 1920  # a new, smaller copy
    changed = await collect(
        link, movies=movies, activities=await link.trakt_client.last_activities(PROFILE)
    )
    assert changed.updated == 1
    batman = MediaRef("movie", ids=Ids(tmdb="272"))
    await link.trakt_client.remove_collection(PROFILE, [batman])  # elsewhere: stamps move
    again = await collect(
        link, movies=movies, activities=await link.trakt_client.last_activities(PROFILE)
    )
    assert again.added == 1


async def test_a_trakt_collection_change_made_while_a_run_wrote_is_seen_by_the_next_run(
    link: Link,
) -> None:
    activities = await link.trakt_client.last_activities(PROFILE)
    await collect(link, activities=activities)  # adds the library to Trakt
    # Meanwhile (the user, another app) Batman Begins left Trakt's collection: stamps read
    # after the run's own writes would already show it (here: the stamps do not move).
    from tests.fakes.trakt import key_of

    batman = next(m for m in link.trakt.movies if m.title == "Batman Begins")
    del link.trakt.user.collection[key_of(batman)]
    again = await collect(link, activities=await link.trakt_client.last_activities(PROFILE))
    assert again.added == 1


async def test_a_paused_collection_resumes_when_the_account_settings_change(
    link: Link,
) -> None:
    link.trakt.user.limits["collection"] = {"item_count": 3}
    first = await collect(link, activities=await link.trakt_client.last_activities(PROFILE))
    assert first.limit is not None and first.limit.paused
    await collect(link, activities=await link.trakt_client.last_activities(PROFILE))  # full
    quiet = await collect(link, activities=await link.trakt_client.last_activities(PROFILE))
    assert quiet.requests == {"trakt": 0}  # paused, nothing moved: not even the limits read
    link.trakt.set_limits(vip=True, limits=VIP_LIMITS)
    resumed = await collect(link, activities=await link.trakt_client.last_activities(PROFILE))
    assert resumed.added == 2 and resumed.limit is not None and not resumed.limit.paused


async def test_a_full_collection_made_room_on_trakt_adds_what_waited(
    link: Link, notifier: Notifier, receiver: AlertReceiver
) -> None:
    others = [MediaRef("movie", ids=Ids(tmdb=t)) for t in ("949", "329865")]  # Heat, Arrival
    await link.trakt_client.add_collection(PROFILE, [CollectionWrite(r, {}) for r in others])
    link.trakt.user.limits["collection"] = {"item_count": 5}
    first = await collect(link, alerts=notifier, activities=await activities_of(link))
    assert first.added == 3 and first.limit is not None and first.limit.paused
    await collect(link, alerts=notifier, activities=await activities_of(link))  # full look
    quiet = await collect(link, alerts=notifier, activities=await activities_of(link))
    assert quiet.requests == {"trakt": 0}

    await link.trakt_client.remove_collection(PROFILE, others)  # tidied on Trakt's site
    resumed = await collect(link, alerts=notifier, activities=await activities_of(link))
    assert resumed.added == 2 and resumed.limit is not None and not resumed.limit.paused
    assert len(link.trakt.collection()) == 5
    assert receiver.titles()[-1] == "Resolved: watchbridge: Trakt collection full (profile me)"
    assert receiver.messages[-1]["message"] == (
        "There is room again in the Trakt collection of profile me: 2 items added."
    )


async def activities_of(link: Link) -> Any:
    return await link.trakt_client.last_activities(PROFILE)


async def test_collection_dry_run_writes_nothing(link: Link) -> None:
    result = await collect(link, dry_run=True)
    assert result.dry_run and len(result.plan.add) == 5
    assert link.trakt.collection() == []


def test_the_plextv_client_takes_each_persons_token_and_the_installs_identifier(
    store: Store,
) -> None:
    from watchbridge.config import Accounts, Config, PlexAccount, Profile, ServicesConfig
    from watchbridge.plexlink import plextv_client

    config = Config(
        services=ServicesConfig(plex=PlexConfig(token=Secret("owner-token"))),
        profiles={
            "me": Profile(accounts=Accounts(plex=PlexAccount())),
            "kid": Profile(accounts=Accounts(plex=PlexAccount(token=Secret("kid-token")))),
            "signed": Profile(accounts=Accounts(plex=PlexAccount())),
            "none": Profile(),
        },
    )
    store.put_token("plex", "signed", {"token": "pin-token"}, 0.0)
    client = plextv_client(config, store)
    assert client is not None
    assert client.account_token("me") == "owner-token"  # `plex: {}` is the owner
    assert client.account_token("kid") == "kid-token"
    assert client.account_token("signed") == "pin-token"
    assert client.client_identifier == store.setting("plex_client_identifier", str, 0.0)
    asyncio.run(client.aclose())


async def test_a_token_plex_tv_refuses_for_the_watchlist_is_named_by_its_config_key(
    start_fake: Callable[[FakeServer], FakeServer], store: Store
) -> None:
    # The owner (`plex: {}`) reads the watchlist with services.plex.token: plex.tv's refusal
    # of it named accounts.plex.token, a key the user never set.
    from watchbridge.config import Accounts, Config, PlexAccount, Profile, ServicesConfig
    from watchbridge.plexlink import plextv_client
    from watchbridge.services.plextv import PlexTvAuthError

    plextv = start_fake(FakePlexTv())
    assert isinstance(plextv, FakePlexTv)
    hosts = {"account_url": plextv.url, "discover_url": plextv.url, "metadata_url": plextv.url}
    config = Config(
        services=ServicesConfig(plex=PlexConfig(token=Secret("a-server-token"), **hosts)),
        profiles={
            "me": Profile(accounts=Accounts(plex=PlexAccount())),
            "kid": Profile(accounts=Accounts(plex=PlexAccount(token=Secret("kids-server-token")))),
        },
    )
    client = plextv_client(config, store)
    assert client is not None
    try:
        with pytest.raises(PlexTvAuthError) as owners:
            await client.watchlist("me")
        with pytest.raises(PlexTvAuthError) as kids:
            await client.watchlist("kid")
    finally:
        await client.aclose()
    owner = owners.value.message
    assert "accounts.plex.token" not in owner, owner
    assert "it is services.plex.token, the server owner's" in owner, owner
    assert "`watchbridge auth plex --profile me`" in owner, owner
    kid = kids.value.message
    assert "profiles.kid.accounts.plex.token may be a token for the Plex server" in kid, kid
    assert "`watchbridge auth plex --profile kid`" in kid, kid
    assert "a-server-token" not in owner + kid and "kids-server-token" not in owner + kid


async def test_the_servers_own_token_refused_at_the_collections_details_is_the_owners(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, tmp_path: Path
) -> None:
    # The collection reads every person's item details with services.plex.token. Its refusal
    # there was kept for nobody: the owner's sign-in went on reading "works".
    from tests.fakes.plex import TOKEN, FakePlex
    from watchbridge.config import parse_config
    from watchbridge.plexlink import run_lists
    from watchbridge.services.plex import PlexClient
    from watchbridge.services.refusals import SERVICE_WIDE, entry, refusal_of
    from watchbridge.signins import current_sign_ins

    plex, trakt = start_fake(FakePlex()), start_fake(FakeTrakt())
    assert isinstance(plex, FakePlex) and isinstance(trakt, FakeTrakt)
    plex.add_movie("100", "Arrival", 2016, ARRIVAL)
    plex.add_user("jamies-token", 7, "jamie")
    config = parse_config(
        f"""
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex: {{accounts: {{trakt: {{}}, plex: {{}}}}}}
  jamie: {{users: {{plex: ["7"]}}, accounts: {{trakt: {{}}, plex: {{token: jamies-token}}}}}}
links:
  plex-trakt: {{services: [plex, trakt], kinds: [history, collection]}}
""",
        tmp_path / "watchbridge.yaml",
        {},
    )
    sign_in_trakt(store, trakt, "jamie", user=trakt.add_user("jamie"))
    assert config.services.plex is not None
    client = PlexClient(config.services.plex)
    try:
        movies = await client.listing_rows("1", "movie", "jamies-token")
    finally:
        await client.aclose()
    plex.token = "the-owners-new-token"  # services.plex.token is refused from now on
    link = config.links["plex-trakt"]
    run = await run_lists(config, store, "plex-trakt", link, {"jamie": {"movie": movies}})
    (error,) = run.errors
    assert error.startswith("jamie: Plex: reading the details of 1 item(s): ")
    assert "does not accept services.plex.token (401)" in error
    assert store.get_token(entry("plex"), "jamie") is None
    assert refusal_of(store.get_token(entry("plex"), SERVICE_WIDE), TOKEN) is not None
    sign_ins = current_sign_ins(config, store, 1_800_000_000.0)
    (server,) = [s for s in sign_ins if s.service == "plex"]
    assert (server.service_wide, server.state) == (True, "refused")
    assert server.message.endswith(": set the server owner's current token there")


@pytest.mark.parametrize("part", ["trakt sign-in", "plex account"])
async def test_a_link_runs_error_names_the_profile_once(
    start_fake: Callable[[FakeServer], FakeServer], store: Store, tmp_path: Path, part: str
) -> None:
    # It read "jamie: trakt: profile jamie is not signed in ..." (a part's Trakt check) and
    # "jamie: plex: profile jamie: users.plex names other accounts ..." (the collection's).
    from tests.fakes.plex import TOKEN, FakePlex
    from watchbridge.config import parse_config
    from watchbridge.plexlink import run_lists

    plex, trakt = start_fake(FakePlex()), start_fake(FakeTrakt())
    assert isinstance(plex, FakePlex) and isinstance(trakt, FakeTrakt)
    plex.add_user("jamies-token", 7, "jamie")
    owner_token, jamies_plex = f', token: "{TOKEN}"', "{token: jamies-token}"
    if part == "plex account":  # no token of jamie's to read the collection with
        owner_token, jamies_plex = "", "{}"
        sign_in_trakt(store, trakt, "jamie", user=trakt.add_user("jamie"))
    config = parse_config(
        f"""
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}"{owner_token}}}
profiles:
  alex: {{accounts: {{trakt: {{}}, plex: {{}}}}}}
  jamie: {{users: {{plex: ["7"]}}, accounts: {{trakt: {{}}, plex: {jamies_plex}}}}}
links:
  plex-trakt: {{services: [plex, trakt], kinds: [history, collection]}}
""",
        tmp_path / "watchbridge.yaml",
        {},
    )
    link = config.links["plex-trakt"]
    run = await run_lists(config, store, "plex-trakt", link, {"jamie": {"movie": []}})
    (error,) = run.errors
    said = {
        "trakt sign-in": "Trakt: profile jamie is not signed in to Trakt: run ",
        "plex account": "Plex: profile jamie: users.plex names other accounts than the ",
    }[part]
    assert error.startswith(said)  # not "jamie: " before it
