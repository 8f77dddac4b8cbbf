"""Three links in a triangle: Plex ⇄ Serializd, Trakt ⇄ Serializd and Plex ⇄ Trakt, each run
in turn against the fakes, its rows delivered before the next runs (as the scheduler may order
them). Every link must take a viewing another link copied for that viewing: after the first
rounds' copies, further rounds add nothing to any service."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import FakePlex
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt, iso
from tests.household import HouseholdRig, household_for
from tests.test_sync_scenarios import TraktApp
from watchbridge import readers

pytestmark = pytest.mark.anyio

SHOW = 90000  # TMDB id
DAY = 86400.0
LINKS = ("plex-serializd", "trakt-serializd", "plex-trakt")
EPISODE_1 = "1000"  # Plex ratingKeys: show "100", season "100001"


class Household(HouseholdRig):
    TARGETS = ("trakt", "serializd", "plex")

    def plays(self) -> tuple[int, int, int]:
        """Plays of S1E1 on Plex, Serializd (diary entries) and Trakt."""
        plex, serializd, trakt = self.fakes["plex"], self.fakes["serializd"], self.fakes["trakt"]
        season = serializd.shows[SHOW].seasons[1].id
        diary = [r for r in serializd.diary() if (r.season_id, r.episode_number) == (season, 1)]
        history = [e for e in trakt.history() if (e.item.season, e.item.number) == (1, 1)]
        return len(plex.history_of(EPISODE_1)), len(diary), len(history)


@pytest.fixture
def fakes(start_fake: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setitem(readers.READERS, "trakt", "tests.linkrig_trakt")
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    plex, trakt = start_fake(FakePlex()), start_fake(FakeTrakt())
    serializd = start_fake(FakeSerializd())
    plex.clock = time.time  # a play we add to Plex is dated when written, as PMS does
    plex.add_show("100", "Show", 2010, [f"tmdb://{SHOW}"])
    for n in range(1, 4):
        plex.add_episode(str(999 + n), "100", 1, n)
    trakt.add_show("Show", 2010, tmdb=SHOW, seasons={1: 3})
    serializd.add_show(SHOW, "Show", {1: 3})
    return {"plex": plex, "trakt": trakt, "serializd": serializd}


HouseholdFactory = Callable[..., Household]


@pytest.fixture
async def make_household(tmp_path: Path, fakes: dict[str, Any]) -> AsyncIterator[HouseholdFactory]:
    """`make_household(links, removals)`: the household with those links (default: the
    triangle), `removals` their `max_removal_share`."""
    made: list[Household] = []

    def make(links: Sequence[str] = LINKS, removals: float = 0.10) -> Household:
        made.append(household_for(Household, tmp_path, fakes, links, max_removal_share=removals))
        return made[-1]

    yield make
    for house in made:
        await house.aclose()


@pytest.fixture
def household(make_household: HouseholdFactory) -> Household:
    return make_household()


ORDERS = [LINKS, ("plex-trakt", "plex-serializd", "trakt-serializd")]


@pytest.mark.parametrize("order", ORDERS, ids=["serializd-links-first", "plex-trakt-first"])
async def test_a_play_on_plex_goes_round_the_triangle_once(
    household: Household, fakes: dict[str, Any], order: Sequence[str]
) -> None:
    fakes["plex"].watch(EPISODE_1, time.time() - 3 * DAY)
    counts = []
    for _ in range(4):
        await household.run_in_turn(order)
        counts.append(household.plays())
    assert counts == [(1, 1, 1)] * 4


@pytest.mark.parametrize("order", ORDERS, ids=["serializd-links-first", "plex-trakt-first"])
@pytest.mark.parametrize(
    ("together", "settled"),
    # Both viewings on Serializd and Trakt; Plex keeps its one view (a play older than its
    # last view would only add a view dated today: it counts as there). One link at a time,
    # the pair is taken for one viewing by each link in turn.
    [(True, (1, 2, 2)), (False, (1, 1, 1))],
    ids=["first-runs-together", "first-runs-one-at-a-time"],
)
async def test_two_viewings_weeks_apart_on_plex_and_trakt_settle_after_the_first_copies(
    household: Household,
    fakes: dict[str, Any],
    order: Sequence[str],
    together: bool,
    settled: tuple[int, int, int],
) -> None:
    # The reviewer's household: S1E1 watched on Plex three days ago, logged on Trakt 27 days
    # before that. With the first runs due together (their rows delivered after the last),
    # Plex ⇄ Trakt took the two for one viewing logged days apart, the Serializd links copied
    # both; then Plex ⇄ Trakt copied each back to the other side, set a few minutes apart
    # there, the Serializd links carried those round, and so on every round:
    # [(1, 2, 1), (2, 2, 3), (2, 3, 4), (2, 4, 5), (2, 5, 6)].
    now = time.time()
    fakes["plex"].watch(EPISODE_1, now - 3 * DAY)
    show = next(s for s in fakes["trakt"].shows if s.tmdb == SHOW)
    fakes["trakt"].add_history(show.episode(1, 1), iso(now - 30 * DAY))
    counts = []
    for n in range(5):
        await household.run_in_turn(order, deliver_between=n > 0 or not together)
        counts.append(household.plays())
    assert counts[1:] == [settled] * 4, counts


@pytest.mark.parametrize("order", ORDERS, ids=["serializd-links-first", "plex-trakt-first"])
@pytest.mark.parametrize(
    ("together", "removed", "settled"),
    [
        # Each service held both viewings (Plex its newer one): the user takes the older off
        # Trakt, and every service keeps the newer one alone.
        (True, "older", (1, 1, 1)),
        # ...or the newer: Plex's view goes with it (Plex cannot hold the older one's date).
        (True, "newer", (0, 1, 1)),
        # One viewing everywhere, paired days apart: it goes from every service.
        (False, "older", (0, 0, 0)),
    ],
    ids=["both-viewings-older-removed", "both-viewings-newer-removed", "one-viewing-removed"],
)
async def test_a_play_removed_on_trakt_after_the_household_settled_is_removed_once(
    make_household: HouseholdFactory,
    fakes: dict[str, Any],
    order: Sequence[str],
    together: bool,
    removed: str,
    settled: tuple[int, int, int],
) -> None:
    # The household of the test above, settled; then the user removes one of Trakt's plays
    # of S1E1. Before, with both viewings on every service, the older's removal on Trakt
    # took Plex's newer view (its remembered partner), so Plex's record of the older
    # viewing was left alone and copied back to Trakt, and the newer viewing went from Plex
    # and Serializd while Trakt kept both: [(0, 1, 2), (0, 0, 2), ...].
    household = make_household(removals=1.0)
    trakt = fakes["trakt"]
    now = time.time()
    fakes["plex"].watch(EPISODE_1, now - 3 * DAY)
    show = next(s for s in trakt.shows if s.tmdb == SHOW)
    trakt.add_history(show.episode(1, 1), iso(now - 30 * DAY))
    for n in range(3):
        await household.run_in_turn(order, deliver_between=n > 0 or not together)
    entries = sorted(trakt.history(), key=lambda e: e.watched_at)
    gone = entries[0] if removed == "older" else entries[-1]
    app = TraktApp(trakt)
    app.unwatch(gone)
    app.http.close()
    counts, on_trakt = [], []
    for n in range(4):
        # The first reads everything (Trakt's removal of a play older than a week shows
        # only in a full read, as the daily one).
        await household.run_in_turn(order, full=n == 0)
        counts.append(household.plays())
        on_trakt += [e.watched_at for e in trakt.history()]
    assert counts == [settled] * 4, counts
    assert gone.watched_at not in on_trakt  # never copied back


CHAIN = ("plex-trakt", "trakt-serializd")
HOURS = 3600.0


@pytest.mark.parametrize("order", [CHAIN, CHAIN[::-1]], ids=["plex-trakt-first", "plex-last"])
@pytest.mark.parametrize("together", [True, False], ids=["first-runs-together", "one-at-a-time"])
@pytest.mark.parametrize("apart", [27 * DAY, 20 * HOURS], ids=["days-apart", "hours-apart"])
async def test_a_chain_takes_one_viewing_logged_apart_for_one_on_every_service(
    make_household: HouseholdFactory,
    fakes: dict[str, Any],
    order: Sequence[str],
    together: bool,
    apart: float,
) -> None:
    # Plex ⇄ Trakt ⇄ Serializd: Serializd hears of Plex's play only through Trakt, where
    # Plex ⇄ Trakt took it for Trakt's (a first run's pair days apart, or one within 36
    # hours): Serializd gets Trakt's play, and no link copies anything after.
    household = make_household(links=CHAIN)
    now = time.time()
    fakes["plex"].watch(EPISODE_1, now - 3 * DAY)
    show = next(s for s in fakes["trakt"].shows if s.tmdb == SHOW)
    fakes["trakt"].add_history(show.episode(1, 1), iso(now - 3 * DAY - apart))
    counts = []
    for n in range(4):
        await household.run_in_turn(order, deliver_between=n > 0 or not together)
        counts.append(household.plays())
    assert counts == [(1, 1, 1)] * 4, counts


@pytest.mark.parametrize("order", ORDERS, ids=["serializd-links-first", "plex-trakt-first"])
@pytest.mark.parametrize(
    ("together", "settled"),
    # As with a pair days apart: the Serializd links' first runs at once copy both plays.
    [(True, (1, 2, 2)), (False, (1, 1, 1))],
    ids=["first-runs-together", "first-runs-one-at-a-time"],
)
async def test_the_triangle_settles_on_one_viewing_logged_hours_apart(
    household: Household,
    fakes: dict[str, Any],
    order: Sequence[str],
    together: bool,
    settled: tuple[int, int, int],
) -> None:
    # Within 36 hours, every link pairs the two plays as one viewing by the matching of every
    # run, with nothing remembered: Plex's three days ago, Trakt's 20 hours before it.
    now = time.time()
    fakes["plex"].watch(EPISODE_1, now - 3 * DAY)
    show = next(s for s in fakes["trakt"].shows if s.tmdb == SHOW)
    fakes["trakt"].add_history(show.episode(1, 1), iso(now - 3 * DAY - 20 * HOURS))
    counts = []
    for n in range(5):
        await household.run_in_turn(order, deliver_between=n > 0 or not together)
        counts.append(household.plays())
    assert counts[1:] == [settled] * 4, counts
