"""The Trakt <-> Serializd watchlist run, end to end against both fakes over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, Movie, Show, WatchlistEntry, key_of
from tests.harness import sign_in_trakt
from tests.linkrig import PROFILE, open_rig, use_fast_readers
from watchbridge.accounts import AccountChange
from watchbridge.alerts import NAMESPACE as ALERT_CONDITIONS
from watchbridge.alerts import Notifier
from watchbridge.config import (
    AlertsConfig,
    Secret,
    SerializdAccount,
    SerializdConfig,
    TraktConfig,
)
from watchbridge.http import Pacer, RetryPolicy, ServiceError
from watchbridge.plexlink import lists_summary
from watchbridge.serializdlist import SerializdWatchlistResult, sync_serializd_watchlist
from watchbridge.services.serializd import SerializdClient
from watchbridge.services.trakt import TraktClient
from watchbridge.store import ACCOUNT_CURSOR, Store

pytestmark = pytest.mark.anyio
WATCHLIST_PAGE = "/api/user/{username}/watchlistpage_v2/{page}"
# TMDB ids, and each show's Serializd seasons (number -> episodes; 0 = specials)
SHOWS = {
    "Breaking Bad": (1396, {0: 11, 1: 7, 2: 13, 3: 13, 4: 13, 5: 16}),
    "Severance": (95396, {1: 9, 2: 10}),
    "The Bear": (136315, {1: 8, 2: 10, 3: 10}),
    "Andor": (83867, {1: 12, 2: 12}),
}


@dataclass
class Link:
    trakt: FakeTrakt
    serializd: FakeSerializd
    trakt_client: TraktClient
    serializd_client: SerializdClient
    store: Store
    shows: dict[str, Show]
    arrival: Movie

    async def watchlist(self, **options: Any) -> SerializdWatchlistResult:
        return await sync_serializd_watchlist(
            self.serializd_client,
            self.trakt_client,
            self.store,
            PROFILE,
            clock=lambda: 1_800_000_000.0,
            **options,
        )

    def trakt_add(self, *names: str) -> None:
        user = self.trakt.user
        for name in names:
            item = self.arrival if name == "Arrival" else self.shows[name]
            entry = WatchlistEntry(len(user.watchlist) + 1, item, "2026-09-01T08:00:00.000Z")
            user.watchlist[key_of(item)] = entry

    def trakt_watchlist(self) -> set[str]:
        return {str(getattr(e.item, "title", "")) for e in self.trakt.watchlist()}

    def serializd_add(self, *names: str) -> None:
        for name in names:
            self.serializd.add_to_watchlist(None, SHOWS[name][0])

    def serializd_remove(self, *names: str) -> None:
        ids = {SHOWS[name][0] for name in names}
        for key in [k for k in self.serializd.user.watchlist if k[0] in ids]:
            del self.serializd.user.watchlist[key]

    def serializd_watchlist(self) -> set[str]:
        titles = {tmdb: name for name, (tmdb, _) in SHOWS.items()}
        return {titles[show] for show in self.serializd.watchlisted()}

    def writes(self) -> int:
        """Watchlist writes either fake has taken so far."""
        return sum(
            fake.count("POST", path)
            for fake, path in (
                (self.serializd, "/api/watchlist_v2"),
                (self.serializd, "/api/watchlist/remove_v2"),
                (self.trakt, "/sync/watchlist"),
                (self.trakt, "/sync/watchlist/remove"),
            )
        )


def seed(trakt: FakeTrakt, serializd: FakeSerializd) -> tuple[dict[str, Show], Movie]:
    shows = {}
    for name, (tmdb, seasons) in SHOWS.items():
        shows[name] = trakt.add_show(name, tmdb=tmdb, seasons={n: c for n, c in seasons.items()})
        serializd.add_show(tmdb, name, seasons)
    serializd.seed_reference_catalogue()  # Breaking Bad with the samples' season ids
    arrival = trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    return shows, arrival


@pytest.fixture
async def link(start_fake: Callable[[FakeServer], FakeServer], store: Store) -> AsyncIterator[Link]:
    async with watchlist_link(start_fake, store) as opened:
        yield opened


@contextlib.asynccontextmanager
async def watchlist_link(
    start_fake: Callable[[FakeServer], FakeServer], store: Store
) -> AsyncIterator[Link]:
    """Trakt and Serializd knowing SHOWS, signed in as PROFILE, for the link's watchlist run."""
    trakt = start_fake(FakeTrakt())
    serializd = start_fake(FakeSerializd())
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    shows, arrival = seed(trakt, serializd)

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    trakt_config = TraktConfig(CLIENT_ID, None, api_url=trakt.url, auth_url=trakt.url)
    trakt_client = TraktClient(trakt_config, store, sleep=no_wait)
    trakt_client.http.pacers[PROFILE] = Pacer()  # pacing is http.py's, tested there
    sign_in_trakt(store, trakt, PROFILE)
    serializd_client = SerializdClient(
        SerializdConfig(api_url=serializd.url),
        store,
        accounts={PROFILE: SerializdAccount(ALICE[0], Secret(ALICE[1]))},
        requests_per_second=1000,
    )
    serializd_client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    yield Link(trakt, serializd, trakt_client, serializd_client, store, shows, arrival)
    await trakt_client.aclose()
    await serializd_client.aclose()


async def test_first_run_merges_both_watchlists(link: Link) -> None:
    link.serializd_add("Severance")
    link.trakt_add("Breaking Bad", "The Bear")
    result = await link.watchlist()
    assert (result.added_to_trakt, result.added_to_serializd) == (1, 2)
    assert link.trakt_watchlist() == {"Severance", "Breaking Bad", "The Bear"}
    assert link.serializd_watchlist() == {"Severance", "Breaking Bad", "The Bear"}


async def test_a_show_goes_on_serializd_with_its_regular_seasons(link: Link) -> None:
    link.trakt_add("Breaking Bad")
    await link.watchlist()
    assert link.serializd.watchlisted() == {1396: {3572, 3573, 3575, 3576, 3578}}  # no specials


async def test_a_show_removed_from_serializd_leaves_the_trakt_watchlist(link: Link) -> None:
    link.serializd_add("Severance", "Andor")
    await link.watchlist()
    link.serializd_remove("Andor")
    result = await link.watchlist()
    assert result.removed_from_trakt == 1
    assert link.trakt_watchlist() == {"Severance"}


async def test_a_show_removed_from_trakt_leaves_the_serializd_watchlist(link: Link) -> None:
    link.trakt_add("The Bear", "Andor")
    await link.watchlist()
    link.trakt.user.watchlist.pop(key_of(link.shows["The Bear"]))
    result = await link.watchlist()
    assert result.removed_from_serializd == 1
    assert link.serializd_watchlist() == {"Andor"}


async def test_a_removal_serializd_refused_once_is_tried_again_not_undone(link: Link) -> None:
    link.trakt_add("The Bear", "Andor", "Severance", "Breaking Bad")
    await link.watchlist()
    link.trakt.user.watchlist.pop(key_of(link.shows["The Bear"]))
    link.serializd.fail_next(
        1, 500, body={"message": "oops"}, route="POST /api/watchlist/remove_v2"
    )
    refused = await link.watchlist()
    assert any("The Bear" in line for line in refused.unresolved)
    await link.watchlist()  # Serializd takes it now
    assert "The Bear" not in link.trakt_watchlist() | link.serializd_watchlist()


async def test_a_show_serializd_does_not_know_is_asked_about_once_a_day(link: Link) -> None:
    unaired = link.trakt.add_show("Unaired", tmdb=999999)
    link.trakt.user.watchlist[key_of(unaired)] = WatchlistEntry(99, unaired, "2026-09-01T08:00Z")
    first = await link.watchlist()
    assert any("Unaired" in line for line in first.unresolved)
    again = await link.watchlist()  # Serializd paces at 2 requests/s for everything
    assert any("Unaired" in line for line in again.unresolved)
    assert link.serializd.count("GET", "/api/show/{id}") == 1


async def test_a_mass_removal_waits_for_confirm_removals(link: Link) -> None:
    link.serializd_add(*SHOWS)
    await link.watchlist()
    link.serializd_remove(*SHOWS)  # an empty read is more likely broken than true
    held = await link.watchlist()
    assert "4 of 4 watchlist titles on Trakt" in held.plan.held
    assert link.trakt_watchlist() == set(SHOWS)
    confirmed = await link.watchlist(confirm_removals=True)
    assert confirmed.removed_from_trakt == 4 and link.trakt_watchlist() == set()


async def test_a_failing_serializd_watchlist_read_writes_nothing(link: Link) -> None:
    link.trakt_add("The Bear")
    link.serializd.fail_next(2, 500, route=WATCHLIST_PAGE)  # every try of the read fails
    with pytest.raises(ServiceError, match="Serializd: "):
        await link.watchlist()
    assert link.writes() == 0
    assert link.store.mirror_get("link:trakt-serializd", PROFILE, "watchlist") == {}


async def test_a_trakt_movie_on_the_watchlist_is_left_alone(link: Link) -> None:
    link.trakt_add("Arrival", "Andor")
    link.serializd_add("Andor")
    await link.watchlist()
    link.serializd_remove("Andor")
    result = await link.watchlist()
    assert result.removed_from_trakt == 1
    assert link.trakt_watchlist() == {"Arrival"}  # never copied, never removed


async def test_a_dry_run_writes_nothing(link: Link) -> None:
    link.serializd_add("Severance")
    link.trakt_add("The Bear")
    result = await link.watchlist(dry_run=True)
    assert result.dry_run and result.plan.changes == 2
    assert link.writes() == 0
    assert link.store.mirror_get("link:trakt-serializd", PROFILE, "watchlist") == {}


async def test_a_quiet_second_run_writes_nothing(link: Link) -> None:
    link.serializd_add("Severance")
    link.trakt_add("The Bear", "Arrival")
    await link.watchlist()
    writes = link.writes()
    result = await link.watchlist()
    assert result.plan.changes == 0 and link.writes() == writes


async def test_watched_seasons_are_never_put_on_the_serializd_watchlist(link: Link) -> None:
    link.serializd.mark(None, 1396, 1, 2)  # Breaking Bad half watched
    link.serializd.mark(None, 95396, 1, 2)  # Severance all watched
    link.trakt_add("Breaking Bad", "Severance")
    result = await link.watchlist()
    assert link.serializd.watchlisted() == {1396: {3575, 3576, 3578}}
    assert {(1396, 3572), (1396, 3573)} <= link.serializd.season_marks()  # still watched
    assert result.kept_off == ("Severance",)
    assert link.trakt_watchlist() == {"Breaking Bad", "Severance"}  # kept on Trakt


async def test_one_way_to_serializd_never_writes_trakt(link: Link) -> None:
    link.serializd_add("Severance")
    link.trakt_add("The Bear")
    result = await link.watchlist(only_to="serializd")
    assert result.added_to_serializd == 1 and result.added_to_trakt == 0
    assert link.trakt_watchlist() == {"The Bear"}


async def test_a_show_serializd_does_not_know_is_named_not_written(link: Link) -> None:
    unknown = link.trakt.add_show("Unaired", tmdb=999999)
    link.trakt.user.watchlist[key_of(unknown)] = WatchlistEntry(99, unknown, "2026-09-01T08:00Z")
    result = await link.watchlist()
    assert any("Unaired" in line and "does not know" in line for line in result.unresolved)
    assert link.serializd.watchlisted() == {}


async def test_an_expired_serializd_sign_in_logs_in_again(link: Link) -> None:
    await link.watchlist()
    link.serializd.expire_tokens()
    link.trakt_add("Andor")
    await link.watchlist()
    assert link.serializd_watchlist() == {"Andor"}
    assert link.serializd.count("POST", "/api/login") == 2


# --------------------------------------------------------------------------- in a link run


@pytest.fixture
async def rig(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], monkeypatch: Any
) -> AsyncIterator[Any]:
    use_fast_readers(monkeypatch)
    trakt = start_fake(FakeTrakt())
    serializd = start_fake(FakeSerializd())
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    seed(trakt, serializd)
    options = ", kinds: [history, watchlist], first_run: apply"
    rig = open_rig(tmp_path, trakt, serializd, options)
    yield rig
    await rig.aclose()


async def test_the_link_run_syncs_the_watchlist(rig: Any) -> None:
    rig.serializd.add_to_watchlist(None, 95396)
    result = await rig.sync()
    assert result.outcome == "ok"
    assert {str(getattr(e.item, "title", "")) for e in rig.trakt.watchlist()} == {"Severance"}
    assert "watchlist me: +0 to serializd, +1 to trakt" in lists_summary(result.lists)[0]


async def test_watchlist_removals_the_guard_holds_are_the_runs_held_removals(rig: Any) -> None:
    # The scheduler alerts of a run's held removals (with the confirming command).
    for tmdb, _ in SHOWS.values():
        rig.serializd.add_to_watchlist(None, tmdb)
    await rig.sync()
    rig.serializd.user.watchlist.clear()  # an empty read is more likely broken than true
    result = await rig.sync()
    assert len(rig.trakt.watchlist()) == 4
    assert result.outcome == "held"
    assert result.held == (
        "me: watchlist: 4 of 4 watchlist titles on Trakt would be removed (more than 10%); "
        "confirm with `watchbridge sync --link trakt-serializd --confirm-removals`",
    )
    (run,) = rig.store.last_runs()  # what the status page and `watchbridge status` show
    assert run.outcome == "held" and "sync --link trakt-serializd --confirm-removals" in (
        run.error or ""
    )


async def test_a_failing_serializd_watchlist_read_fails_the_run(rig: Any) -> None:
    rig.serializd.add_to_watchlist(None, 95396)
    rig.serializd.fail_next(1, 403, body={"message": "Nope"}, route=WATCHLIST_PAGE)
    result = await rig.sync()
    assert result.outcome == "failed" and result.lists.errors[0].startswith("me: watchlist:")
    assert rig.trakt.watchlist() == []
    assert rig.store.last_runs()[0].outcome == "failed"


async def test_a_watchlist_error_naming_the_profile_names_it_once(rig: Any) -> None:
    # It read "me: watchlist: serializd: Serializd rejects profile me even right after ...".
    rig.serializd.add_to_watchlist(None, 95396)
    rig.serializd.fail_next(2, 401, body={"message": "Nope"}, route=WATCHLIST_PAGE)
    result = await rig.sync()
    (error,) = result.lists.errors
    said = "watchlist: Serializd rejects profile me even right after logging in ("
    assert error.startswith(said)
    assert said in (rig.store.last_runs()[0].error or "")  # the status page's line


async def test_watchlist_rows_without_a_show_id_fail_the_read_and_remove_nothing(
    link: Link,
) -> None:
    link.serializd_add("Severance", "Andor", "The Bear")
    await link.watchlist(max_removal_share=0.5)
    assert link.trakt_watchlist() == {"Severance", "Andor", "The Bear"}

    def first_show_id_renamed(body: dict[str, Any]) -> None:
        body["items"][0]["tmdbId"] = body["items"][0].pop("showId")

    link.serializd.reshape_always(first_show_id_renamed, route=f"GET {WATCHLIST_PAGE}")
    with pytest.raises(ServiceError) as failed:
        await link.watchlist(max_removal_share=0.5)
    assert "1 of 3 rows of watchlist page 1 have no show id" in failed.value.message
    assert "Serializd may have changed its answers" in failed.value.message
    assert link.trakt_watchlist() == {"Severance", "Andor", "The Bear"}  # nothing removed


def type_renamed(row: dict[str, Any]) -> None:
    row["kind"] = row.pop("type")


def show_renamed(row: dict[str, Any]) -> None:
    row["series"] = row.pop("show")


def ids_gone(row: dict[str, Any]) -> None:
    del row["show"]["ids"]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (type_renamed, "no `type` watchbridge knows"),
        (show_renamed, "no `show`"),
        (ids_gone, "a `show` without ids"),
    ],
    ids=["type-renamed", "show-renamed", "ids-gone"],
)
async def test_trakt_watchlist_rows_it_cannot_read_fail_the_read_and_remove_nothing(
    link: Link, change: Callable[[dict[str, Any]], None], said: str
) -> None:
    """Before, such a row was left out (or known by its title alone): the show read as gone
    from Trakt's watchlist, and was removed from Serializd's."""
    link.trakt_add("Severance", "Andor", "The Bear")
    await link.watchlist(max_removal_share=0.5)
    assert link.serializd_watchlist() == {"Severance", "Andor", "The Bear"}

    def first_row(body: list[dict[str, Any]]) -> None:
        change(body[0])

    link.trakt.reshape_always(first_row, route="GET /sync/watchlist")
    with pytest.raises(ServiceError) as failed:
        await link.watchlist(max_removal_share=0.5)
    assert f"the watchlist: 1 of 3 rows have {said}" in failed.value.message
    assert "Trakt may have changed its answers" in failed.value.message
    assert "nothing is synced from it until it reads again" in failed.value.message
    assert link.serializd_watchlist() == {"Severance", "Andor", "The Bear"}  # nothing removed
    assert link.trakt_watchlist() == {"Severance", "Andor", "The Bear"}


@pytest.mark.parametrize(
    "listed_at",
    ["gone", None, 1788249600, "2026/09/01 08:00"],
    ids=["gone", "null", "epoch", "not-iso"],
)
async def test_trakt_watchlist_rows_whose_listed_at_cannot_be_read_still_sync(
    link: Link, listed_at: Any
) -> None:
    """The watchlist plan never uses the date a Trakt row was listed (only the other side's,
    to choose the adds to Trakt that fit): a row without it, or with one in another form, is
    read all the same, as is the rest of the list. Before, a date in another form failed the
    read with a ValueError, and nothing was synced."""
    link.trakt_add("Severance", "Andor")
    link.serializd_add("The Bear")
    await link.watchlist(max_removal_share=0.5)

    def listed_reshaped(body: list[dict[str, Any]]) -> None:
        for row in body:
            if listed_at == "gone":
                del row["listed_at"]
            else:
                row["listed_at"] = listed_at

    link.trakt.reshape_always(listed_reshaped, route="GET /sync/watchlist")
    link.trakt_add("Breaking Bad")
    link.trakt.user.watchlist.pop(key_of(link.shows["Andor"]))
    result = await link.watchlist(max_removal_share=0.5)
    assert result.removed_from_serializd == 1
    assert link.serializd_watchlist() == {"Severance", "The Bear", "Breaking Bad"}
    assert link.trakt_watchlist() == {"Severance", "The Bear", "Breaking Bad"}


async def test_watchlist_rows_whose_season_ids_cannot_be_read_fail_the_read(link: Link) -> None:
    """Read as no seasons, the show's removal (taken off Trakt's list) would send Serializd no
    season ids: nothing taken off its list, yet done."""
    link.serializd_add("Severance", "Andor", "The Bear")
    await link.watchlist(max_removal_share=0.5)
    link.trakt.user.watchlist = {
        k: e for k, e in link.trakt.user.watchlist.items() if e.item.title != "Andor"
    }

    def seasons_as_objects(body: dict[str, Any]) -> None:
        for item in body["items"]:
            item["seasonIds"] = [{"id": i} for i in item["seasonIds"]]

    link.serializd.reshape_always(seasons_as_objects, route=f"GET {WATCHLIST_PAGE}")
    with pytest.raises(ServiceError) as failed:
        await link.watchlist(max_removal_share=0.5)
    assert "3 of 3 rows of watchlist page 1 have no season ids" in failed.value.message
    assert "Serializd may have changed its answers" in failed.value.message
    assert link.serializd_watchlist() == {"Severance", "Andor", "The Bear"}
    assert link.serializd.count("POST", "/api/watchlist/remove_v2") == 0


WATCHED_PAGE = "GET /api/user/{username}/watchedpage_v2/{page}"


def breaking_bad_seasons_as_objects(body: dict[str, Any]) -> None:
    for item in body["items"]:
        if item["showId"] == 1396:
            item["seasons"] = [{"id": i} for i in item.pop("seasonIds")]


async def test_a_show_whose_watched_seasons_cannot_be_read_is_not_watchlisted(
    link: Link,
) -> None:
    link.serializd.mark(None, 1396, 1, 2)  # Breaking Bad half watched
    link.serializd.reshape_always(breaking_bad_seasons_as_objects, route=WATCHED_PAGE)
    link.trakt_add("Breaking Bad", "The Bear")
    result = await link.watchlist()
    assert set(link.serializd.watchlisted()) == {136315}  # The Bear only
    assert {(1396, 3572), (1396, 3573)} <= link.serializd.season_marks()  # still watched
    said = [line for line in result.unresolved if line.startswith("Breaking Bad")]
    assert len(said) == 1 and "cannot read" in said[0], result.unresolved
    assert link.trakt_watchlist() == {"Breaking Bad", "The Bear"}  # kept on Trakt


async def test_a_show_kept_off_for_seasons_it_cannot_read_is_alerted_once_until_it_reads(
    link: Link, receiver: AlertReceiver, clock: FakeClock
) -> None:
    """A user who reads only alerts learns why Breaking Bad never reaches Serializd."""
    alerts = AlertsConfig(urls=[Secret(receiver.apprise_url)])
    notifier = Notifier(alerts, clock=clock, timeout=2.0)
    link.serializd.mark(None, 1396, 1, 2)
    link.serializd.reshape_always(breaking_bad_seasons_as_objects, route=WATCHED_PAGE)
    link.trakt_add("Breaking Bad", "The Bear")
    await link.watchlist(alerts=notifier)
    clock.advance(600)
    await link.watchlist(alerts=notifier)  # still kept off: the same condition, not told again
    (alert,) = receiver.messages
    assert alert["title"] == (
        "watchbridge: Breaking Bad's watched seasons on Serializd cannot be read (profile me)"
    )
    assert alert["message"].startswith("Breaking Bad stays on Trakt's watchlist of profile me")
    assert "Link trakt-serializd, profile me: the seasons of " in alert["message"]
    assert "Serializd may have changed its answers" in alert["message"]
    assert "is kept off Serializd's watchlist until they read again" in alert["message"]

    link.serializd.clear_knobs()  # Serializd answers as before (or watchbridge was updated)
    clock.advance(600)
    await link.watchlist(alerts=notifier)
    assert link.serializd_watchlist() == {"Breaking Bad", "The Bear"}
    assert {(1396, 3572), (1396, 3573)} <= link.serializd.season_marks()  # still watched
    resolved = receiver.messages[-1]
    assert len(receiver.messages) == 2
    assert resolved["title"] == f"Resolved: {alert['title']}"
    assert "no longer kept off Serializd's watchlist for profile me" in resolved["message"]


RUN_AT = 1_800_000_000.0  # Link.watchlist's clock


def reset_state(store: Store) -> None:
    """What `watchbridge reset-state` forgets: every cursor, not the alerts told."""
    assert store.reset(RUN_AT, keep_cache=[ALERT_CONDITIONS]) == []


def serializd_account_changed(store: Store) -> None:
    """Another Serializd account signed in for the profile (accounts.note_account): the
    profile's Serializd cursors and the link's state are forgotten, not the alerts told."""
    store.set_cursor("serializd", PROFILE, ACCOUNT_CURSOR, "alice", RUN_AT)
    change = AccountChange("serializd", PROFILE, "alice", "bob", ("trakt-serializd",), ())
    assert store.start_over(change, RUN_AT) == 0


@pytest.mark.parametrize("forget", [reset_state, serializd_account_changed])
async def test_a_kept_off_shows_alert_is_resolved_after_the_links_state_is_forgotten(
    link: Link, receiver: AlertReceiver, clock: FakeClock, forget: Callable[[Store], None]
) -> None:
    """The alerts outlive the link's state: once Breaking Bad reads again and goes on
    Serializd's watchlist, its alert is resolved, not left open for 400 days."""
    notifier = Notifier(AlertsConfig(urls=[Secret(receiver.apprise_url)]), clock=clock)
    notifier.remember_in(link.store)  # as the service and `watchbridge sync` keep them
    link.serializd.mark(None, 1396, 1, 2)
    link.serializd.reshape_always(breaking_bad_seasons_as_objects, route=WATCHED_PAGE)
    link.trakt_add("Breaking Bad")
    await link.watchlist(alerts=notifier)
    (alert,) = receiver.titles()

    forget(link.store)
    link.serializd.clear_knobs()
    clock.advance(600)
    await link.watchlist(alerts=notifier)

    assert link.serializd_watchlist() == {"Breaking Bad"}
    assert receiver.titles() == [alert, f"Resolved: {alert}"]
