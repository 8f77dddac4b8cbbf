"""A plex-trakt link with watchlist and collection kinds: `run_link` does them in the same run,
against the fake PMS, fake plex.tv and fake Trakt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.plextv import FakePlexTv
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, watchbridge, write_config
from tests.test_plexlink import FIXTURES_COLLECTED, collected, listing
from tests.unpaced import unpaced_while
from watchbridge.config import load_config
from watchbridge.errors import ConfigError
from watchbridge.metrics import Metrics
from watchbridge.model import Ids
from watchbridge.plexlink import ListsRun, WatchlistResult, lists_summary
from watchbridge.store import Store
from watchbridge.sync import NeedsReview, run_link
from watchbridge.watchlist import WatchItem, WatchlistPlan

pytestmark = pytest.mark.anyio
ARRIVAL = ["imdb://tt2543164", "tmdb://329865"]
HEAT = ["imdb://tt0113277", "tmdb://949"]
LINK = "plex-trakt"


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    """Trakt's pacing lifted (a run's reads and writes waited on it): these tests are about
    what the lists carry, not how fast."""
    with unpaced_while("trakt"):
        yield


class Household:
    def __init__(
        self,
        tmp_path: Path,
        start_fake: Any,
        kinds: str,
        options: str = "",
        first_run: str = "apply",
    ) -> None:
        self.trakt: FakeTrakt = start_fake(FakeTrakt())
        self.plex: FakePlex = start_fake(FakePlex())
        self.plextv: FakePlexTv = start_fake(FakePlexTv())
        self.plextv.owner.token = TOKEN  # the owner's one token, for the server and plex.tv
        self.trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
        self.trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
        self.plex.add_movie("100", "Arrival", 2016, ARRIVAL)
        self.heat = self.plextv.add_title("movie", "Heat", 1995, HEAT)
        self.tmp_path, self.options, self.first_run = tmp_path, options, first_run
        self.configure(kinds)
        self.store = Store.open(tmp_path / "watchbridge.db")
        sign_in_trakt(self.store, self.trakt, "alex", now=time.time())

    def configure(self, kinds: str) -> None:
        """(Re)write the config with the link syncing `kinds`, as the user edits it."""
        url, first_run, options = self.plextv.url, self.first_run, self.options
        path = write_config(
            self.tmp_path,
            f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{self.trakt.url}", auth_url: "{self.trakt.url}"}}
  plex:
    url: "{self.plex.url}"
    token: "{TOKEN}"
    account_url: "{url}"
    discover_url: "{url}"
    metadata_url: "{url}"
profiles:
  alex: {{accounts: {{trakt: {{}}, plex: {{}}}}}}
links:
  {LINK}: {{services: [plex, trakt], kinds: [{kinds}], first_run: {first_run}{options}}}
""",
        )
        self.path = path
        self.config = load_config(path)

    async def run(self, **options: Any) -> Any:
        return await run_link(self.config, self.store, LINK, **options)

    def trakt_watchlist(self) -> set[str]:
        return {str(getattr(e.item, "title", "")) for e in self.trakt.watchlist()}

    def trakt_collection(self) -> list[Any]:
        return self.trakt.collection()


@pytest.fixture
def house(tmp_path: Path, start_fake: Any) -> Any:
    household = Household(tmp_path, start_fake, "history, watchlist, collection")
    yield household
    household.store.close()


async def test_a_plex_watchlist_title_reaches_trakt_in_the_link_run(house: Household) -> None:
    house.plextv.watchlist_add(house.plextv.owner, house.heat)
    result = await house.run()
    assert result.outcome == "ok"
    assert house.trakt_watchlist() == {"Heat"}


async def test_the_link_run_collects_the_server_movies_on_trakt(house: Household) -> None:
    await house.run()
    assert [str(getattr(e.item, "title", "")) for e in house.trakt_collection()] == ["Arrival"]


async def test_a_dry_run_writes_no_watchlist_or_collection(house: Household) -> None:
    house.plextv.watchlist_add(house.plextv.owner, house.heat)
    result = await house.run(dry_run=True)
    assert house.trakt_watchlist() == set() and house.trakt_collection() == []
    assert [type(r).__name__ for r in result.lists.results] == [
        "WatchlistResult",
        "CollectionResult",
    ]


async def test_a_moved_plex_watchlist_fails_the_run_but_not_the_history(house: Household) -> None:
    house.plextv.watchlist_moved = True
    result = await house.run()
    assert result.outcome == "failed"
    assert "alex:" in result.lists.errors[0] and "watchlist" in result.lists.errors[0]
    assert house.trakt_collection()  # the rest of the link still ran
    assert house.store.last_runs()[0].outcome == "failed"


# --------------------------------------------------------------------------- first-run review


@pytest.fixture
def newcomer(tmp_path: Path, start_fake: Any) -> Any:
    """Right after sign-in, with `first_run: dry-run` (the default): no play on either side,
    one movie on the server Trakt's collection lacks, one title on the Plex watchlist."""
    household = Household(
        tmp_path, start_fake, "history, ratings, watchlist, collection", first_run="dry-run"
    )
    household.plextv.watchlist_add(household.plextv.owner, household.heat)
    yield household
    household.store.close()


def status_line(house: Household) -> str:
    said = watchbridge("status", "--config", str(house.path)).stdout
    (line,) = [line for line in said.splitlines() if line.startswith(f"  {LINK}:")]
    return line


async def test_a_first_run_with_only_list_writes_waits_for_the_review(newcomer: Household) -> None:
    with pytest.raises(NeedsReview, match=f"`watchbridge sync --link {LINK} --dry-run`"):
        await newcomer.run()
    assert newcomer.trakt_collection() == [] and newcomer.trakt_watchlist() == set()
    (run,) = newcomer.store.last_runs()
    assert run.outcome == "needs-review"
    with pytest.raises(NeedsReview):  # still its first run: it waits again
        await newcomer.run()
    assert newcomer.trakt_collection() == [] and newcomer.trakt_watchlist() == set()


async def test_the_review_lists_and_counts_the_list_writes_and_yes_applies_them(
    newcomer: Household,
) -> None:
    review = await newcomer.run(dry_run=True)  # what `watchbridge sync --dry-run` prints
    said = lists_summary(review.lists)
    assert "watchlist alex: +0 to plex, +1 to trakt, -0 from plex, -0 from trakt" in said
    assert "collection alex: +1 to trakt, 0 with better details, -0 from trakt, 0 unchanged" in said
    counts = {"trakt:collection_add": 1, "trakt:watchlist_add": 1}
    assert newcomer.store.last_runs()[0].counts == counts
    assert status_line(newcomer).endswith(
        "; trakt: 1 collection item(s) to add, trakt: 1 watchlist title(s) to add"
    )
    applied = await newcomer.run(yes=True)
    assert applied.outcome == "ok"
    assert [str(getattr(e.item, "title", "")) for e in newcomer.trakt_collection()] == ["Arrival"]
    assert newcomer.trakt_watchlist() == {"Heat"}
    assert newcomer.store.last_runs()[0].counts == counts
    again = await newcomer.run()  # reviewed: the first run is over
    assert again.outcome == "ok"


async def test_once_reviewed_a_watchlist_syncs_on_a_link_with_no_play_yet(
    newcomer: Household,
) -> None:
    """No play on either side: the link's history is still at its first sync, but its
    watchlist and collection are past theirs, and a title listed later is no new review."""
    await newcomer.run(yes=True)
    arrival = newcomer.plextv.add_title("movie", "Arrival", 2016, ARRIVAL)
    newcomer.plextv.watchlist_add(newcomer.plextv.owner, arrival)

    assert (await newcomer.run()).outcome == "ok"

    assert newcomer.trakt_watchlist() == {"Heat", "Arrival"}


async def test_a_first_run_with_nothing_to_write_anywhere_goes_through(
    tmp_path: Path, start_fake: Any
) -> None:
    house = Household(tmp_path, start_fake, "history, watchlist, collection", first_run="dry-run")
    house.plex.empty_section("1")  # nothing to collect, no title on either watchlist
    try:
        result = await house.run()
        assert result.outcome == "ok" and house.store.last_runs()[0].counts == {}
        assert status_line(house).endswith("; nothing to do")
    finally:
        house.store.close()


async def test_a_first_run_whose_watchlist_part_fails_says_what_failed_not_nothing_to_do(
    newcomer: Household,
) -> None:
    """The newcomer's walkthrough: `services.plex.token` is a token for the server, which
    plex.tv refuses for the watchlist; the collection would add a movie to Trakt."""
    newcomer.plextv.owner.token = "a-plex-tv-token"  # not the server's
    with pytest.raises(NeedsReview):
        await newcomer.run()
    assert newcomer.trakt_collection() == []  # nothing written before the review
    (run,) = newcomer.store.last_runs()
    assert run.outcome == "failed" and "plex.tv does not accept" in (run.error or "")
    # The key the refused token came from, not accounts.plex.token (the owner set none).
    assert "it is services.plex.token, the server owner's" in (run.error or ""), run.error
    assert "accounts.plex.token" not in (run.error or ""), run.error
    line = status_line(newcomer)
    assert "nothing to do" not in line, line
    assert "; this is the first sync of links.plex-trakt" in line, line


# --------------------------------------------------------------------------- kinds taken in later


@pytest.fixture
def reviewed(tmp_path: Path, start_fake: Any) -> Any:
    """`first_run: dry-run` (the default), past its reviewed first run; factory: the kinds the
    link started with."""
    houses: list[Household] = []

    async def make(kinds: str) -> Household:
        house = Household(tmp_path, start_fake, kinds, first_run="dry-run")
        houses.append(house)
        house.plex.watch("100", int(time.time()) - 86400)  # Arrival, watched yesterday
        await house.run(yes=True)  # the first run, reviewed
        assert (await house.run()).outcome == "ok"
        return house

    yield make
    for house in houses:
        house.store.close()


def titles(entries: list[Any]) -> set[str]:
    return {str(getattr(e.item, "title", "")) for e in entries}


async def test_a_watchlist_taken_into_the_kinds_later_waits_for_its_review_alone(
    reviewed: Any,
) -> None:
    """Before, adding `watchlist` to a link past its first run wrote every title at once."""
    house = await reviewed("history, collection")
    house.plextv.watchlist_add(house.plextv.owner, house.heat)
    house.plex.watch("100", int(time.time()) - 3600)  # seen again: the link copies plays on
    house.plex.add_movie("101", "Heat", 1995, HEAT)  # and collecting
    house.configure("history, collection, watchlist")
    queued = house.store.outbox_counts().get("pending", 0)

    with pytest.raises(NeedsReview) as review:
        await house.run(full=True)  # (the daily full read finds the new movie)

    message = review.value.message
    assert f"the first sync of watchlist since links.{LINK}.kinds took it in" in message
    assert f"`watchbridge sync --link {LINK} --yes`" in message
    assert house.trakt_watchlist() == set()  # nothing of it written before the review
    assert titles(house.trakt_collection()) == {"Arrival", "Heat"}  # the rest syncs as usual
    assert house.store.outbox_counts().get("pending", 0) == queued + 1  # the play, for Trakt
    assert house.store.last_runs()[0].outcome == "needs-review"
    with pytest.raises(NeedsReview):  # not reviewed yet: it waits again
        await house.run()
    assert house.trakt_watchlist() == set()

    planned = await house.run(dry_run=True)  # what `watchbridge sync --dry-run` lists
    assert "watchlist alex: +0 to plex, +1 to trakt, -0 from plex, -0 from trakt" in (
        lists_summary(planned.lists)
    )
    assert house.store.last_runs()[0].counts == {"trakt:watchlist_add": 1}
    assert (await house.run(yes=True)).outcome == "ok"
    assert house.trakt_watchlist() == {"Heat"}
    # Reviewed: from now on the watchlist syncs as the link's other kinds do.
    arrival = house.plextv.add_title("movie", "Arrival", 2016, ARRIVAL)
    house.plextv.watchlist_add(house.plextv.owner, arrival)
    assert (await house.run()).outcome == "ok"
    assert house.trakt_watchlist() == {"Heat", "Arrival"}


async def test_a_collection_taken_into_the_kinds_later_waits_while_the_watchlist_syncs(
    reviewed: Any,
) -> None:
    house = await reviewed("history, watchlist")
    house.plextv.watchlist_add(house.plextv.owner, house.heat)
    house.configure("history, watchlist, collection")

    with pytest.raises(NeedsReview, match="first sync of collection since"):
        await house.run()

    assert house.trakt_collection() == []
    assert house.trakt_watchlist() == {"Heat"}  # the kind it synced before went on
    await house.run(dry_run=True)
    assert house.store.last_runs()[0].counts == {"trakt:collection_add": 1}
    await house.run(yes=True)
    assert titles(house.trakt_collection()) == {"Arrival"}
    assert (await house.run()).outcome == "ok"


async def test_a_watchlist_taken_out_of_the_kinds_and_back_in_is_reviewed_again(
    reviewed: Any,
) -> None:
    """Its old baseline is stale: a title taken off Plex's watchlist meanwhile would have been
    taken off Trakt's too, unreviewed. Its first sync again plans as a first run does."""
    house = await reviewed("history")
    house.plextv.watchlist_add(house.plextv.owner, house.heat)
    house.configure("history, watchlist")
    await house.run(yes=True)
    assert house.trakt_watchlist() == {"Heat"}
    house.configure("history")
    assert (await house.run()).outcome == "ok"
    house.plextv.owner.watchlist.clear()  # while the link no longer synced watchlists
    house.configure("history, watchlist")

    with pytest.raises(NeedsReview, match="first sync of watchlist since"):
        await house.run()

    assert house.trakt_watchlist() == {"Heat"}
    planned = await house.run(dry_run=True)
    assert "watchlist alex: +1 to plex, +0 to trakt, -0 from plex, -0 from trakt" in (
        lists_summary(planned.lists)
    )


async def test_the_review_names_the_watchlist_titles_it_removes_and_adds(reviewed: Any) -> None:
    """What `watchbridge sync --dry-run` (a first sync's review, the status page's too) says
    of a watchlist: before, "-1 from trakt" only, and the user approved removing a title
    they could not see."""
    house = await reviewed("watchlist")
    house.plextv.watchlist_add(house.plextv.owner, house.heat)
    assert (await house.run()).outcome == "ok"
    assert house.trakt_watchlist() == {"Heat"}
    house.plextv.owner.watchlist.clear()  # Heat taken off Plex's watchlist
    arrival = house.plextv.add_title("movie", "Arrival", 2016, ARRIVAL)
    house.plextv.watchlist_add(house.plextv.owner, arrival)

    dry_run = ("sync", "--link", LINK, "--dry-run", "--config", str(house.path))
    said = await asyncio.to_thread(watchbridge, *dry_run)  # its own event loop, as from a shell

    assert said.returncode == 0, said.stderr
    lines = said.stdout.splitlines()
    assert "watchlist alex: +0 to plex, +1 to trakt, -0 from plex, -1 from trakt" in lines, lines
    assert "  - from trakt: Heat (1995)" in lines, lines
    assert "  + to trakt: Arrival (2016)" in lines, lines
    assert house.trakt_watchlist() == {"Heat"}  # a dry run


def test_the_lists_summary_names_every_removal_up_to_twenty_and_ten_adds() -> None:
    def movies(*names: str) -> tuple[WatchItem, ...]:
        return tuple(WatchItem("movie", Ids(tmdb=name), title=name) for name in names)

    plan = WatchlistPlan(
        remove_from_trakt=movies(*(f"Gone {n:02d}" for n in range(22, 0, -1))),
        add_to_peer=movies(*(f"New {n:02d}" for n in range(1, 13))),
    )
    lines = lists_summary(ListsRun((WatchlistResult("alex", plan),)))
    assert lines[1:22] == [
        *(f"  - from trakt: Gone {n:02d}" for n in range(1, 21)),  # by name
        "  ... and 2 more from trakt",
    ]
    assert lines[22:] == [
        *(f"  + to plex: New {n:02d}" for n in range(1, 11)),
        "  ... and 2 more to plex",
    ]


async def test_a_link_that_synced_its_lists_before_the_record_was_kept_asks_no_review(
    reviewed: Any,
) -> None:
    """A database of a release that kept no record of the list kinds a link reviewed: what
    their earlier runs left says they synced."""
    house = await reviewed("history, watchlist, collection")
    house.store.forget_cursor("trakt", "alex", f"list_kinds:{LINK}")
    house.plextv.watchlist_add(house.plextv.owner, house.heat)

    assert (await house.run()).outcome == "ok"  # no review asked

    assert house.trakt_watchlist() == {"Heat"}


def counted(metrics: Metrics) -> dict[str, float]:
    """watchbridge_http_requests_total by service."""
    totals: dict[str, float] = {}
    for family in metrics.http_requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                service = sample.labels["service"]
                totals[service] = totals.get(service, 0.0) + sample.value
    return totals


async def test_a_link_runs_requests_are_counted_in_the_runtimes_metrics(
    house: Household,
) -> None:
    metrics = Metrics()
    house.plextv.watchlist_add(house.plextv.owner, house.heat)
    await house.run(metrics=metrics)
    totals = counted(metrics)
    assert totals["plex"] == len(house.plex.requests)  # the reader's and the collection's
    assert totals["plextv"] == len(house.plextv.requests)
    assert totals["trakt"] > 0


async def test_a_quiet_run_does_not_read_the_library_for_the_collection(
    house: Household,
) -> None:
    await house.run()
    await house.run()  # our own writes moved the stamps
    listings_before = house.plex.count("GET", "/library/sections/1/all")
    await house.run()
    assert house.plex.count("GET", "/library/sections/1/all") == listings_before


def test_collection_on_a_trakt_serializd_link_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """services:
  trakt: {client_id: abc}
  serializd: {}
profiles:
  alex: {accounts: {trakt: {}, serializd: {email: a@b.c, password: pw}}}
links:
  ts: {services: [trakt, serializd], kinds: [history, watchlist, collection]}
""",
    )
    with pytest.raises(
        ConfigError, match=r"links\.ts\.kinds: collection can only be synced by a plex-trakt link"
    ):
        load_config(path)


def test_watchlist_on_an_anilist_link_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """services:
  trakt: {client_id: abc}
  anilist: {client_id: "1"}
profiles:
  alex: {accounts: {trakt: {}, anilist: {}}}
links:
  ta: {services: [trakt, anilist], kinds: [history, watchlist]}
""",
    )
    with pytest.raises(
        ConfigError,
        match=r"links\.ta\.kinds: watchlist can only be synced by a plex-trakt, "
        r"trakt-serializd or plex-serializd link",
    ):
        load_config(path)


# --------------------------------------------------------------------------- collection details


def guids(item: dict[str, Any]) -> list[str]:
    return [g["id"] for g in item.get("Guid", [])]


def stock_library(plex: FakePlex) -> None:
    """The collection fixtures (two versions, Dolby Vision, HDR10, Atmos, DTS-HD MA) on the
    stateful fake, streams and all: its listings leave the streams out, as real servers do."""
    for movie in listing("library_movies_all.json"):
        key, title, year = movie["ratingKey"], movie["title"], movie["year"]
        plex.add_movie(key, title, year, guids(movie), guid=movie["guid"], media=movie["Media"])
    for show in listing("library_shows_all.json"):
        plex.add_show(show["ratingKey"], show["title"], show["year"], guids(show))
    for ep in listing("library_episodes_all.json"):
        plex.add_episode(
            ep["ratingKey"],
            ep["grandparentRatingKey"],
            ep["parentIndex"],
            ep["index"],
            guids(ep),
            guid=ep["guid"],
            media=ep["Media"],
        )


@pytest.fixture
def library(tmp_path: Path, start_fake: Any) -> Any:
    household = Household(tmp_path, start_fake, "history, collection")
    household.trakt.seed_reference_catalogue()
    stock_library(household.plex)
    yield household
    household.store.close()


def details_asked(plex: FakePlex) -> list[list[str]]:
    """The ratingKeys of each item-details request."""
    return [
        r.path.rpartition("/")[2].split(",") for r in plex.calls("GET", "/library/metadata/{key}")
    ]


async def test_hdr_and_audio_come_from_the_items_details_when_listings_have_no_streams(
    library: Household,
) -> None:
    await library.run()
    found = collected(library.trakt)
    assert {title: found.get(title) for title in FIXTURES_COLLECTED} == FIXTURES_COLLECTED
    assert len(details_asked(library.plex)) == 1  # every item in one batch


async def test_item_details_are_asked_again_only_for_new_or_changed_items(
    library: Household,
) -> None:
    await library.run()
    tron = next(m for m in listing("library_movies_all.json") if m["title"] == "TRON: Legacy")
    library.plex.replace_media("51002", tron["Media"][:1], at=1_800_000_000)  # 4K copy deleted
    library.plex.add_movie("300", "Heat", 1995, HEAT)
    asked = len(details_asked(library.plex))
    await library.run(full=True)
    assert [sorted(keys) for keys in details_asked(library.plex)[asked:]] == [["300", "51002"]]
    assert collected(library.trakt)["TRON: Legacy"]["resolution"] == "hd_1080p"


REMOVALS = ", collection_removals: true"


async def held_removals(tmp_path: Path, start_fake: Any) -> tuple[Household, Any]:
    """A household whose movie share was unmounted during a scan: the full run after it held
    the removal of every movie from the Trakt collection."""
    house = Household(tmp_path, start_fake, "history, collection", REMOVALS)
    for n in range(4):
        house.trakt.add_movie(f"Film {n}", 2000 + n, tmdb=1000 + n)
        house.plex.add_movie(str(200 + n), f"Film {n}", 2000 + n, [f"tmdb://{1000 + n}"])
    await house.run()
    house.plex.empty_section("1")
    held = await house.run(full=True)
    assert len(house.trakt_collection()) == 5 and "alex: collection: 5 of 5 movies" in held.held[0]
    return house, held


def edit_link(house: Household, tmp_path: Path, old: str, new: str) -> None:
    path = tmp_path / "watchbridge.yaml"
    path.write_text(path.read_text().replace(old, new))
    house.config = load_config(path)


async def test_collection_removals_held_stay_reported_by_the_quiet_runs_after(
    tmp_path: Path, start_fake: Any
) -> None:
    house, held = await held_removals(tmp_path, start_fake)
    try:
        # The next runs read no listing (nothing new was played): an empty `held` would
        # resolve the alert that says the removals wait.
        quiet = await house.run()
    finally:
        house.store.close()
    assert quiet.held == held.held


async def test_collection_removals_held_stay_reported_by_a_run_whose_collection_part_fails(
    tmp_path: Path, start_fake: Any
) -> None:
    house, held = await held_removals(tmp_path, start_fake)
    try:
        house.trakt.fail_next(20, 500, route="/sync/collection/{type}")
        failed = await house.run(full=True)
    finally:
        house.store.close()
    assert failed.lists.errors and failed.held == held.held


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (REMOVALS, ", collection_removals: false"),  # the user's answer to the alert
        ("services: [plex, trakt]", "services: [trakt, plex], direction: one-way"),
    ],
)
async def test_held_collection_removals_end_with_a_link_that_no_longer_removes_them(
    tmp_path: Path, start_fake: Any, old: str, new: str
) -> None:
    house, _ = await held_removals(tmp_path, start_fake)
    edit_link(house, tmp_path, old, new)
    try:
        quiet = await house.run()
    finally:
        house.store.close()
    assert quiet.held == ()


@pytest.mark.parametrize(("share", "films"), [(0.1, 1), (1.0, 4)])
async def test_an_empty_plex_of_an_account_first_seen_removes_nothing_from_trakts_lists(
    tmp_path: Path, start_fake: Any, share: float, films: int
) -> None:
    """Upgraded from a release that kept no account, and the server answers empty (its
    library being rebuilt, its history and plex.tv's watchlist with it): the check of whose
    account it is waits, and so does every removal from Trakt's collection and watchlist,
    however few (the guard lets two go by themselves) and whatever `max_removal_share`."""
    options = f"{REMOVALS}, max_removal_share: {share}"
    house = Household(tmp_path, start_fake, "history, watchlist, collection", options)
    for n in range(films):
        house.trakt.add_movie(f"Film {n}", 2000 + n, tmdb=1000 + n)
        house.plex.add_movie(str(200 + n), f"Film {n}", 2000 + n, [f"tmdb://{1000 + n}"])
    for day in range(5):  # five plays kept: enough to check the account by (accounts.MIN_KEPT)
        house.plex.watch("100", 1_700_000_000 + day * 86400)
    house.plextv.watchlist_add(house.plextv.owner, house.heat)
    try:
        await house.run()
        await house.run()  # (our own writes moved Trakt's stamps)
        assert len(house.trakt_collection()) == films + 1 and house.trakt_watchlist() == {"Heat"}
        with house.store.transaction() as conn:  # what an older release's database lacks
            conn.execute("DELETE FROM cursors WHERE name = 'account'")
        house.plex.empty_section("1")
        with house.plex.lock:
            house.plex.history.clear()
        house.plextv.owner.watchlist.clear()

        runs = [await house.run(), await house.run(full=True)]
    finally:
        house.store.close()

    assert len(house.trakt_collection()) == films + 1 and house.trakt_watchlist() == {"Heat"}
    why = (
        "(plex read empty, and its account is not checked yet: an outage or another account; "
        f"held until plex reads plays again); confirm with `watchbridge sync --link {LINK} "
        "--confirm-removals`"
    )
    for run in runs:
        assert f"alex: watchlist: 1 of 1 watchlist titles on Trakt would be removed {why}" in (
            run.held
        )
        collection = f"{films + 1} of {films + 1} movies in the Trakt collection would be removed"
        assert f"alex: collection: {collection} {why}" in run.held
