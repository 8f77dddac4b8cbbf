"""One person's live scrobbles are not stuck behind their own link's first-run backlog: a
start goes out before the backlog's lookups, and a stop is scrobbled, not folded into the
backlog's history add; the one viewing is still one play."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import FakeTrakt
from tests.test_delivery import webhook
from tests.test_household_holds import by_hand, first_link_run, posts
from tests.test_household_holds import trakt as trakt  # the household's fake Trakt (fixture)
from watchbridge.deliver.worker import turns
from watchbridge.http import Pacer
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.store import NewOutboxRow, OutboxItem

pytestmark = pytest.mark.anyio

ARRIVAL = MediaRef("movie", Ids(tmdb="329865"), title="Arrival", year=2016)  # the link's ids


def episodes_to_look_up(
    trakt: FakeTrakt, profile: str, count: int, now: float
) -> list[NewOutboxRow]:
    """A first link run's plays of episodes it knows by their own TMDB id only: Trakt's id
    search places each (one search per play, paced at Trakt's reads: 200 take two minutes)."""
    rows = []
    show = trakt.add_show("Long Show", 2010, tvdb=4242)
    for n in range(count):
        trakt.add_episode(show, 1, n + 1, tmdb=8_000_000 + n)
        item = MediaRef("episode", Ids(tmdb=str(8_000_000 + n)), season=1, number=n + 1)
        key = f"{profile}:trakt:{item.key()}"
        at = now - 86400
        payload = {"item": ref_to_dict(item), "at": at, "source": "plex", "link": "plex-trakt"}
        rows.append(NewOutboxRow("trakt", profile, "play", payload, key, f"link:{key}:{at}"))
    return rows


async def test_a_live_start_goes_before_the_lookups_of_its_own_profiles_backlog(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        # The app's lookups share one bucket (unsigned): its pacing lifted, searches counted.
        worker.targets["trakt"].client.http.pacers[""] = Pacer()  # type: ignore[attr-defined]
        runtime.store.enqueue(episodes_to_look_up(trakt, "me", 40, clock()), clock())
        webhook(runtime, "movie_media_play.json", profile="me")  # I press play meanwhile
        await worker.pass_once(runtime)
        paths = [r.path for r in trakt.requests]
        assert "/scrobble/start" in paths
        # My start first (one request slot), not after 40 searches for my own backlog.
        before = paths[: paths.index("/scrobble/start")]
        assert not [p for p in before if p.startswith("/search/")], before[:5]
        assert len(trakt.history("sean")) == 40  # the backlog went out in the same pass


async def test_a_live_stop_beside_its_own_profiles_backlog_is_scrobbled_once(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        first_link_run(trakt, runtime, "me", 300)  # two batches
        await worker.pass_once(runtime)
        webhook(runtime, "movie_media_scrobble.json", profile="me")  # I finish Arrival
        await worker.pass_once(runtime)
        # Scrobbled as it ended (Trakt's "watching" ends with it), then the rest of the backlog.
        assert posts(trakt) == ["/sync/history", "/scrobble/stop", "/sync/history"]
        titles = [h.item.title for h in trakt.history("sean")]
        assert len(titles) == 301 and titles.count("Arrival") == 1


async def test_a_live_stop_and_the_links_earlier_copy_of_its_viewing_are_one_play(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        first_link_run(trakt, runtime, "me", 20)
        # The link copied my viewing of Arrival (by its TMDB id) as the webhook's stop came in.
        now = clock()
        key = f"me:trakt:{ARRIVAL.key()}"
        payload = {"item": ref_to_dict(ARRIVAL), "at": now, "source": "plex", "link": "plex-trakt"}
        copy = NewOutboxRow("trakt", "me", "play", payload, key, f"link:{key}:{now}")
        runtime.store.enqueue([copy], now)
        webhook(runtime, "movie_media_scrobble.json", profile="me")
        await worker.pass_once(runtime)
        await worker.pass_once(runtime)
        titles = [h.item.title for h in trakt.history("sean")]
        assert len(titles) == 21 and titles.count("Arrival") == 1


def row(row_id: int, profile: str, action: str, item: MediaRef, **payload: object) -> OutboxItem:
    body = {"item": ref_to_dict(item), "at": 0.0, **payload}
    return OutboxItem(
        row_id,
        "trakt",
        profile,
        action,
        body,
        f"{profile}:{item.key()}",
        "",
        "inflight",
        0,
        0.0,
        None,
    )


def test_a_live_row_naming_an_earlier_rows_item_keeps_its_turn() -> None:
    heat = MediaRef("movie", Ids(imdb="tt0113277", tmdb="949"))
    film = MediaRef("movie", Ids(imdb="tt5000000"))
    backlog = [
        row(1, "me", "play", film, link="plex-trakt"),
        row(2, "me", "play", MediaRef("movie", Ids(tmdb="949")), link="plex-trakt"),
    ]
    start = row(3, "me", "watching", heat, scrobble_action="start")
    rating = row(4, "me", "rating", heat, rating=8)  # ratings take turns apart from plays
    order = [(p, [r.id for r in rows]) for p, rows in turns([*backlog, start, rating], True)]
    # Heat's start would overtake the link's earlier play of Heat (named by its TMDB id).
    assert order == [("me", [1, 2, 3, 4])]
    alone = turns([backlog[0], start, rating], True)
    assert [(p, [r.id for r in rows]) for p, rows in alone] == [("me", [3]), ("me", [1, 4])]
    # Without live_first (other targets): one turn per profile, as before.
    assert [len(rows) for _, rows in turns([backlog[0], start], False)] == [2]


HEAT_GUIDS = [{"id": "imdb://tt0113277"}, {"id": "tmdb://949"}]


async def test_a_start_is_not_ended_by_a_stop_that_waits_behind_its_items_backlog_row(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        # Auto-play: Arrival ends, Heat starts, as the link copies my viewing of Arrival.
        now = clock()
        key = f"me:trakt:{ARRIVAL.key()}"
        payload = {"item": ref_to_dict(ARRIVAL), "at": now, "source": "plex", "link": "plex-trakt"}
        runtime.store.enqueue([NewOutboxRow("trakt", "me", "play", payload, key, f"l:{key}")], now)
        webhook(runtime, "movie_media_scrobble.json", profile="me")
        heat = {"guid": "plex://movie/heat", "Guid": HEAT_GUIDS, "title": "Heat", "year": 1995}
        webhook(runtime, "movie_media_play.json", profile="me", **heat)
        await worker.pass_once(runtime)
        # Arrival's stop waits its turn behind the link's copy queued before it (one item, one
        # line), and then finds that play on Trakt: sent, it would end Heat's start.
        await worker.pass_once(runtime)
        watching = trakt.watching("sean")
        assert watching is not None and watching.item.title == "Heat"
        assert posts(trakt) == ["/scrobble/start", "/sync/history"]
        assert [h.item.title for h in trakt.history("sean")] == ["Arrival"]
