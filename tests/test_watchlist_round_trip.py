"""One person's watchlist kept over two links, Plex ⇄ Trakt and Trakt ⇄ Serializd, run in turn
against the fakes (PMS, plex.tv, Trakt, Serializd) with their rows delivered between runs, as
the scheduler may order them. What a user expects of it: a title added on one side reaches
every other once; one removed anywhere leaves everywhere and stays gone; Trakt's own removal
of a title once it is watched is not undone; a full Trakt watchlist is told once while the
rest goes on; and the links settle, writing nothing more, whatever order they run in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.plextv import FakePlexTv, Title
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, Movie, Show, WatchlistEntry, iso, key_of
from tests.harness import sign_in_trakt
from tests.household import HouseholdRig, use_fast_readers
from tests.unpaced import unpaced
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime
from watchbridge.config import AlertsConfig, Config, Secret, parse_config
from watchbridge.sync import RunResult, run_link
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

LINKS = ("plex-trakt", "trakt-serializd")
ORDERS = [LINKS, tuple(reversed(LINKS))]
ORDER_IDS = ["plex-trakt-first", "trakt-serializd-first"]
# A show added on one side and removed on another, each with the links in an order that
# carries the change round in one round or leaves it for the next.
CHANGES = [
    ("plex", "serializd", ORDERS[0]),
    ("trakt", "plex", ORDERS[1]),
    ("serializd", "trakt", ORDERS[0]),
]
DAY = 86400.0
# name -> (TMDB id, IMDb id, TVDB id, Serializd seasons: number -> episodes)
SHOWS = {
    "Severance": (95396, "tt11280740", 371980, {1: 9, 2: 10}),
    "Andor": (83867, "tt9253284", 393189, {1: 12, 2: 12}),
    "The Bear": (136315, "tt14452776", 403245, {1: 8, 2: 10}),
    "Shogun": (126308, "tt2788316", 392573, {1: 10}),
}
ARRIVAL = ("Arrival", 2016, "tt2543164", 329865)
SEVERANCE_S1E1 = "1001"  # PMS ratingKeys: the show is "100"


class WatchlistHouse(HouseholdRig):
    TARGETS = ("trakt", "serializd", "plex")

    def __init__(self, config: Config, runtime: Runtime, fakes: dict[str, Any]) -> None:
        super().__init__(config, runtime, fakes)
        self.plex: FakePlex = fakes["plex"]
        self.plextv: FakePlexTv = fakes["plextv"]
        self.trakt: FakeTrakt = fakes["trakt"]
        self.serializd: FakeSerializd = fakes["serializd"]
        self.titles: dict[str, Title] = fakes["titles"]
        self.alerts: Notifier | None = None
        self.results: list[RunResult] = []

    async def round(self, links: Sequence[str] = LINKS, **options: Any) -> None:
        """Each link run once, its rows delivered before the next runs."""
        for link in links:
            result = await run_link(
                self.config, self.runtime.store, link, yes=True, alerts=self.alerts, **options
            )
            self.results.append(result)
            await self.deliver()

    def writes(self) -> int:
        """Watchlist writes any side has taken so far."""
        return (
            self.plextv.count("PUT", "/actions/addToWatchlist")
            + self.plextv.count("PUT", "/actions/removeFromWatchlist")
            + self.serializd.count("POST", "/api/watchlist_v2")
            + self.serializd.count("POST", "/api/watchlist/remove_v2")
            + self.trakt.count("POST", "/sync/watchlist")
            + self.trakt.count("POST", "/sync/watchlist/remove")
        )

    # -- each side's watchlist, by title ----------------------------------------------------
    def on_plex(self) -> set[str]:
        return {t.title for t in self.plextv.watchlist()}

    def on_trakt(self) -> set[str]:
        return {str(getattr(e.item, "title", "")) for e in self.trakt.watchlist()}

    def on_serializd(self) -> set[str]:
        names = {tmdb: name for name, (tmdb, *_) in SHOWS.items()}
        return {names[show] for show in self.serializd.watchlisted()}

    def everywhere(self) -> tuple[set[str], set[str], set[str]]:
        return self.on_plex(), self.on_trakt(), self.on_serializd()

    # -- a person's changes on each side ----------------------------------------------------
    def plex_add(self, *names: str) -> None:
        for name in names:
            self.plextv.watchlist_add(self.plextv.owner, self.titles[name])

    def plex_remove(self, *names: str) -> None:
        for name in names:
            self.plextv.owner.watchlist.pop(self.titles[name].rating_key, None)

    def trakt_item(self, name: str) -> Movie | Show:
        found = [m for m in self.trakt.movies if m.title == name]
        return found[0] if found else next(s for s in self.trakt.shows if s.title == name)

    def trakt_add(self, *names: str) -> None:
        watchlist = self.trakt.user.watchlist
        for name in names:
            item = self.trakt_item(name)
            stamp = iso(time.time() - DAY)
            watchlist[key_of(item)] = WatchlistEntry(len(watchlist) + 1, item, stamp)
        self._touched(names)

    def trakt_remove(self, *names: str) -> None:
        for name in names:
            self.trakt.user.watchlist.pop(key_of(self.trakt_item(name)), None)
        self._touched(names)

    def _touched(self, names: Sequence[str]) -> None:
        """The stamps a change made in Trakt's own apps moves (§8)."""
        kinds = {f"{self.trakt_item(name).kind}s.watchlisted_at" for name in names}
        self.trakt._touch(self.trakt.user, *kinds, "watchlist.updated_at")

    def serializd_add(self, *names: str) -> None:
        for name in names:
            self.serializd.add_to_watchlist(None, SHOWS[name][0])

    def serializd_remove(self, *names: str) -> None:
        ids = {SHOWS[name][0] for name in names}
        watchlist = self.serializd.user.watchlist
        for key in [k for k in watchlist if k[0] in ids]:
            del watchlist[key]


def config_text(tmp_path: Path, fakes: dict[str, Any], options: str) -> str:
    plex, plextv, trakt = fakes["plex"], fakes["plextv"], fakes["trakt"]
    links = "".join(
        f"  {name}: {{services: [{name.replace('-', ', ')}], kinds: [history, watchlist], "
        f"first_run: apply{options}}}\n"
        for name in LINKS
    )
    return f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  plex:
    url: "{plex.url}"
    token: "{TOKEN}"
    account_url: "{plextv.url}"
    discover_url: "{plextv.url}"
    metadata_url: "{plextv.url}"
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{fakes["serializd"].url}"}}
profiles:
  me:
    accounts:
      plex: {{}}
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
{links}"""


@pytest.fixture
def fakes(start_fake: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    use_fast_readers(monkeypatch, ("trakt", "serializd"))  # and the watchlist part's client
    unpaced(monkeypatch, "trakt")  # the watchlist part's own Trakt client
    plex: FakePlex = start_fake(FakePlex())
    plextv: FakePlexTv = start_fake(FakePlexTv())
    trakt: FakeTrakt = start_fake(FakeTrakt())
    serializd: FakeSerializd = start_fake(FakeSerializd())
    plextv.owner.token = TOKEN  # the owner's one token, for the server and plex.tv
    plex.clock = time.time
    titles = {}
    for name, (tmdb, imdb, tvdb, seasons) in SHOWS.items():
        trakt.add_show(name, imdb=imdb, tmdb=tmdb, tvdb=tvdb, seasons=seasons)
        serializd.add_show(tmdb, name, seasons)
        guids = [f"imdb://{imdb}", f"tmdb://{tmdb}", f"tvdb://{tvdb}"]
        titles[name] = plextv.add_title("show", name, None, guids)
    name, year, imdb, tmdb = ARRIVAL
    trakt.add_movie(name, year, imdb=imdb, tmdb=tmdb)
    titles[name] = plextv.add_title("movie", name, year, [f"imdb://{imdb}", f"tmdb://{tmdb}"])
    severance = SHOWS["Severance"]
    plex.add_show("100", "Severance", 2022, [f"tmdb://{severance[0]}", f"imdb://{severance[1]}"])
    plex.add_episode(SEVERANCE_S1E1, "100", 1, 1)
    return {
        "plex": plex,
        "plextv": plextv,
        "trakt": trakt,
        "serializd": serializd,
        "titles": titles,
    }


HouseFactory = Callable[..., WatchlistHouse]


@pytest.fixture
async def make_house(tmp_path: Path, fakes: dict[str, Any]) -> AsyncIterator[HouseFactory]:
    made: list[WatchlistHouse] = []

    def make(options: str = ", max_removal_share: 1.0") -> WatchlistHouse:
        text = config_text(tmp_path, fakes, options)
        config = parse_config(text, tmp_path / "watchbridge.yaml", {})
        runtime = build_runtime(config)
        runtime.open()
        sign_in_trakt(runtime.store, fakes["trakt"], "me", now=time.time())
        made.append(WatchlistHouse(config, runtime, fakes))
        return made[-1]

    yield make
    for house in made:
        for target in house.targets.values():
            await target.aclose()
        house.runtime.close()


@pytest.fixture
def house(make_house: HouseFactory) -> WatchlistHouse:
    return make_house()


async def settled(house: WatchlistHouse, order: Sequence[str]) -> None:
    """Another round writes no watchlist change anywhere."""
    before = house.writes()
    await house.round(order)
    assert house.writes() == before, "the links still write after the household settled"


# --------------------------------------------------------------------------- the round trips


@pytest.mark.parametrize("order", ORDERS, ids=ORDER_IDS)
async def test_a_first_run_on_three_watchlists_merges_them_and_removes_nothing(
    house: WatchlistHouse, order: Sequence[str]
) -> None:
    house.plex_add("Severance", "Arrival")
    house.trakt_add("Andor")
    house.serializd_add("The Bear")
    await house.round(order)
    await house.round(order)
    shows = {"Severance", "Andor", "The Bear"}
    assert house.everywhere() == (shows | {"Arrival"}, shows | {"Arrival"}, shows)
    await settled(house, order)


@pytest.mark.parametrize(("added", "removed", "order"), CHANGES, ids=[a for a, _, _ in CHANGES])
async def test_a_show_added_on_one_side_and_removed_on_another_is_so_everywhere_once(
    house: WatchlistHouse, added: str, removed: str, order: Sequence[str]
) -> None:
    house.plex_add("Severance", "The Bear")
    await house.round(order)
    await house.round(order)
    getattr(house, f"{added}_add")("Andor")
    await house.round(order)
    await house.round(order)
    three = {"Severance", "The Bear", "Andor"}
    assert house.everywhere() == (three, three, three)
    assert house.plextv.count("PUT", "/actions/addToWatchlist") <= 3  # each show at most once
    assert house.serializd.count("POST", "/api/watchlist_v2") <= 3

    getattr(house, f"{removed}_remove")("Andor")
    await house.round(order)
    await house.round(order)
    two = {"Severance", "The Bear"}
    assert house.everywhere() == (two, two, two)
    await settled(house, order)  # nothing brings it back
    assert house.everywhere() == (two, two, two)


@pytest.mark.parametrize("order", ORDERS[:1], ids=ORDER_IDS[:1])
async def test_a_show_watched_on_plex_leaves_every_watchlist_and_is_not_put_back(
    house: WatchlistHouse, order: Sequence[str]
) -> None:
    """Trakt takes a show off the watchlist once an episode of it is watched (§12): the play
    Plex ⇄ Trakt sends does it, and the links carry that removal on, never undo it."""
    house.plex_add("Severance", "Andor")
    await house.round(order)
    await house.round(order)
    house.plex.watch(SEVERANCE_S1E1, time.time())
    for _ in range(3):
        await house.round(order)
    assert [e.item.show.title for e in house.trakt.history()] == ["Severance"]
    assert house.everywhere() == ({"Andor"}, {"Andor"}, {"Andor"})
    await settled(house, order)


@pytest.mark.parametrize("order", ORDERS[1:], ids=ORDER_IDS[1:])
async def test_a_show_watched_on_trakt_leaves_every_watchlist_and_is_not_put_back(
    house: WatchlistHouse, order: Sequence[str]
) -> None:
    house.trakt_add("Severance", "Andor")
    await house.round(order)
    await house.round(order)
    show = next(s for s in house.trakt.shows if s.title == "Andor")
    house.trakt.log_play(show.episode(1, 1), iso(time.time() - 3600))
    for _ in range(3):
        await house.round(order)
    one = {"Severance"}
    assert house.everywhere() == (one, one, one)
    await settled(house, order)


@pytest.mark.parametrize(
    ("side", "order"),
    # (Serializd's listing with Plex ⇄ Trakt first: the old play is on Trakt before the show.)
    [("plex", ORDERS[0]), ("plex", ORDERS[1]), ("serializd", ORDERS[1])],
    ids=["plex-plex-trakt-first", "plex-trakt-serializd-first", "serializd"],
)
async def test_a_viewing_older_than_the_listing_takes_no_title_off_a_watchlist(
    house: WatchlistHouse, order: Sequence[str], side: str
) -> None:
    """Severance watched a year ago, listed again to watch on: the first run copies that old
    play to Trakt, which takes the show off its watchlist as it takes any play (§12). That
    removal is no viewing since the listing: the show goes back on Trakt's watchlist, and stays
    on every other. Before, the links carried it on and took it off the user's Plex and
    Serializd watchlists."""
    house.plex.watch(SEVERANCE_S1E1, time.time() - 400 * DAY)
    getattr(house, f"{side}_add")("Severance")
    house.trakt_add("Andor")
    for _ in range(3):
        await house.round(order)
    assert [e.item.show.title for e in house.trakt.history()] == ["Severance"]
    both = {"Severance", "Andor"}
    assert house.everywhere() == (both, both, both)
    await settled(house, order)
    house.trakt_remove("Severance")  # the user's own removal, later, is carried on as ever
    for _ in range(2):
        await house.round(order)
    assert house.everywhere() == ({"Andor"}, {"Andor"}, {"Andor"})


def watchlists_held(results: Sequence[RunResult]) -> list[str]:
    """The watchlist holds those link runs said."""
    return [r.plan.held for run in results for r in run.lists.results if r.plan.held]


@pytest.mark.parametrize(
    ("removed", "confirmed"),
    [("plex", "plex-trakt"), ("serializd", "trakt-serializd")],
    ids=["on-plex", "on-serializd"],
)
async def test_removals_confirmed_on_one_link_are_not_held_again_by_the_next(
    make_house: HouseFactory, removed: str, confirmed: str
) -> None:
    """Three of four shows taken off one watchlist: the link that sees it holds them (more
    than max_removal_share, a broken read looks like this), and the user confirms that link
    as the hold says (`--link NAME --confirm-removals`). The shows leave Trakt; the other link
    then finds them gone from Trakt and carries that on, without holding the same removal a
    second time and asking for a second confirmation of it."""
    house = make_house("")  # max_removal_share as by default (10 %)
    house.plex_add("Severance", "The Bear", "Andor", "Shogun")
    order = (*(link for link in LINKS if link != confirmed), confirmed)
    await house.round(order)
    await house.round(order)
    getattr(house, f"{removed}_remove")("Andor", "Shogun", "The Bear")
    await house.round(order)
    assert watchlists_held(house.results[-2:]) != []
    await house.round((confirmed,), confirm_removals=True)
    assert house.on_trakt() == {"Severance"}
    await house.round(order)
    assert watchlists_held(house.results[-2:]) == []
    one = {"Severance"}
    assert house.everywhere() == (one, one, one)
    await settled(house, order)


# --------------------------------------------------------------------------- what waits


@pytest.mark.parametrize("order", ORDERS[:1], ids=ORDER_IDS[:1])
async def test_a_full_free_trakt_watchlist_is_told_once_and_the_rest_goes_on(
    house: WatchlistHouse, order: Sequence[str], receiver: AlertReceiver, clock: FakeClock
) -> None:
    house.alerts = Notifier(AlertsConfig(urls=[Secret(receiver.apprise_url)]), clock=clock)
    house.alerts.remember_in(house.runtime.store)
    house.trakt.set_limits(limits={"watchlist": {"item_count": 2}})
    house.trakt_add("Severance", "Arrival")  # full
    house.plex_add("Andor")
    house.serializd_add("The Bear")
    for _ in range(3):
        await house.round(order)
        clock.advance(600)
    assert house.on_trakt() == {"Severance", "Arrival"}
    # Trakt's titles still reach the other sides; what Trakt cannot take waits there.
    assert house.on_plex() == {"Severance", "Arrival", "Andor"}
    assert house.on_serializd() == {"Severance", "The Bear"}
    full = [t for t in receiver.titles() if "full" in t]
    assert full == ["watchbridge: Trakt watchlist full (profile me)"], receiver.titles()
    assert all(r.outcome == "ok" for r in house.results), [r.outcome for r in house.results]
