"""Services that change the shape of their answers while the household runs watchbridge
unattended: a field renamed or gone, a number sent as text, a date in another form, a list
wrapped in an object. Driven against the fakes (`reshape_next`/`reshape_always`), each must
fail visibly, naming the service and that watchbridge may need an update, and never remove
what could not be read nor take a write it could not understand for done."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.linkrig import BB, Rig
from tests.test_sync_scenarios import (
    TraktApp,
    diary_rating,
    log,
    trakt_episodes,
    trakt_plays,
    trakt_rating,
)
from watchbridge.services.serializd import SerializdError

pytestmark = pytest.mark.anyio


@pytest.fixture
def app(trakt: FakeTrakt) -> Iterator[TraktApp]:
    app = TraktApp(trakt)
    yield app
    app.http.close()


DIARY = "GET /api/user/{username}/diary"
UPDATE = "Serializd may have changed its answers, and watchbridge may need an update"


def dates_in_milliseconds(first: int) -> Any:
    """The diary's first `first` rows dated in epoch milliseconds instead of ISO text."""

    def change(body: dict[str, Any]) -> None:
        for row in body["reviews"][:first]:
            row["dateAdded"] = row["backdate"] = 1_700_000_000_000

    return change


async def test_diary_rows_serializd_dates_another_way_keep_their_plays_and_say_so(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(1, 8):
        log(serializd, 1, n, f"2024-01-0{n}T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert len(trakt_plays(trakt)) == 7
    serializd.reshape_always(dates_in_milliseconds(2), route=DIARY)
    caplog.clear()
    await rig.sync_and_deliver(full=True)
    assert len(trakt_plays(trakt)) == 7  # the two unread plays were not removed from Trakt
    told = [r for r in caplog.records if UPDATE in r.getMessage()]
    assert len(told) == 1 and "2 of 7 diary entries" in told[0].getMessage()
    assert told[0].levelname == "WARNING" and told[0].exc_info is None


async def test_diary_rows_without_an_id_fail_the_read_whole(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    for n in range(1, 4):
        log(serializd, 1, n, f"2024-01-0{n}T20:00:00.000Z")
    await rig.sync_and_deliver()

    def renamed_id(body: dict[str, Any]) -> None:
        for row in body["reviews"]:
            row["reviewId"] = row.pop("id")

    serializd.reshape_always(renamed_id, route=DIARY)
    with pytest.raises(SerializdError) as failed:
        await rig.sync_and_deliver(full=True)
    assert "3 diary entries on a page have no id" in failed.value.message
    assert UPDATE in failed.value.message
    assert len(trakt_plays(trakt)) == 3


WATCHED = "GET /api/user/{username}/watchedpage_v2/{page}"


def seasons_as_objects(body: dict[str, Any]) -> None:
    """The watched page's `seasonIds` become `seasons`, a list of objects."""
    for item in body["items"]:
        item["seasons"] = [{"id": i} for i in item.pop("seasonIds")]


async def test_seasons_marked_in_a_shape_watchbridge_cannot_read_stay_marked_and_say_so(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, caplog: pytest.LogCaptureFixture
) -> None:
    serializd.mark(None, BB, 1)  # 7 plays from the mark
    for n in range(1, 11):  # and 10 diary plays: losing the 7 stays under the removal guard
        log(serializd, 2, n, f"2024-02-{n:02d}T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert len(trakt_episodes(trakt)) == 17
    serializd.reshape_always(seasons_as_objects, route=WATCHED)
    caplog.clear()
    await rig.sync_and_deliver(full=True)
    assert len(trakt_episodes(trakt)) == 17  # the season still marked was not removed
    told = [r for r in caplog.records if UPDATE in r.getMessage()]
    assert len(told) == 1 and "1 of 1 shows on the watched pages" in told[0].getMessage()
    assert told[0].levelname == "WARNING"
    await rig.sync_and_deliver(full=True)  # the kept marks are kept again, not only once
    assert len(trakt_episodes(trakt)) == 17


async def test_watched_rows_without_a_show_id_fail_the_read_whole(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    serializd.mark(None, BB, 1)
    for n in range(1, 11):
        log(serializd, 2, n, f"2024-02-{n:02d}T20:00:00.000Z")
    await rig.sync_and_deliver()

    def renamed_show_id(body: dict[str, Any]) -> None:
        for item in body["items"]:
            item["tmdbId"] = item.pop("showId")

    serializd.reshape_always(renamed_show_id, route=WATCHED)
    with pytest.raises(SerializdError) as failed:
        await rig.sync_and_deliver(full=True)
    assert "1 of 1 rows of watched page 1 have no show id" in failed.value.message
    assert UPDATE in failed.value.message
    assert len(trakt_episodes(trakt)) == 17


TRAKT_HISTORY = "GET /sync/history/{type}"
TRAKT_UPDATE = "Trakt may have changed its answers, and watchbridge may need an update"


def without_watched_at(first: int) -> Any:
    """Trakt's history answer with the first `first` entries' `watched_at` gone (not null)."""

    def change(body: list[dict[str, Any]]) -> None:
        for row in body[:first]:
            del row["watched_at"]

    return change


@pytest.mark.parametrize("read_back", [False, True], ids=["just-copied", "read-back"])
async def test_trakt_history_entries_without_watched_at_keep_their_plays_and_say_so(
    rig: Rig,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    caplog: pytest.LogCaptureFixture,
    read_back: bool,
) -> None:
    for n in range(1, 8):
        log(serializd, 1, n, f"2024-01-0{n}T20:00:00.000Z")
    await rig.sync_and_deliver()
    if read_back:  # else the plays copied to Trakt are not read back yet
        await rig.sync_and_deliver(full=True)
    assert len(trakt_plays(trakt)) == 7
    # Under the removal share: read as undated, their dated plays on Serializd were removed.
    trakt.reshape_always(without_watched_at(3), route=TRAKT_HISTORY)
    caplog.clear()
    result = await rig.sync_and_deliver(full=True)
    (planned,) = result.plans
    assert planned.plan.held == ""
    assert len(serializd.user.reviews) == 7  # nothing removed on the other side
    assert len(trakt_plays(trakt)) == 7 and trakt.count("POST", "/sync/history/remove") == 0
    told = [r for r in caplog.records if TRAKT_UPDATE in r.getMessage()]
    assert len(told) == 1 and told[0].levelname == "WARNING"
    assert "3 of 7 history entries have no `watched_at`" in told[0].getMessage()
    assert "the plays read before of their items are kept" in told[0].getMessage()
    # A new play on Serializd still reaches Trakt, and nothing read before was forgotten.
    trakt.clear_knobs()
    log(serializd, 2, 1, "2024-02-01T20:00:00.000Z")
    await rig.sync_and_deliver(full=True)
    assert len(serializd.user.reviews) == 8 and len(trakt_plays(trakt)) == 8


def naming_no_item(first: int, how: str) -> Any:
    """Trakt's history answer with its first `first` entries naming no item watchbridge can
    read: the show's `ids` renamed, the show a string, or the entry itself a string."""

    def change(body: list[Any]) -> None:
        for n, row in enumerate(body[:first]):
            if how == "ids renamed":
                row["show"]["identifiers"] = row["show"].pop("ids")
            elif how == "show a string":
                row["show"] = row["show"]["title"]
            else:
                body[n] = row["show"]["title"]

    return change


@pytest.mark.parametrize("how", ["ids renamed", "show a string", "entry a string"])
async def test_trakt_history_entries_naming_no_item_keep_every_play_and_say_so(
    rig: Rig,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    """Before, their plays read as removed on Trakt, and the removals (3 of 7, under the
    share) were carried out on Serializd; a string where an object was crashed the run."""
    for n in range(1, 8):
        log(serializd, 1, n, f"2024-01-0{n}T20:00:00.000Z")
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)  # the copies read back from Trakt
    assert len(trakt_plays(trakt)) == 7
    trakt.reshape_always(naming_no_item(3, how), route=TRAKT_HISTORY)
    caplog.clear()
    result = await rig.sync_and_deliver(full=True)
    (planned,) = result.plans
    assert planned.plan.held == ""
    assert len(serializd.user.reviews) == 7  # nothing removed on the other side
    assert len(trakt_plays(trakt)) == 7 and trakt.count("POST", "/sync/history/remove") == 0
    told = [r for r in caplog.records if TRAKT_UPDATE in r.getMessage()]
    assert len(told) == 1 and told[0].levelname == "WARNING"
    assert "3 of 7 history entries name no item watchbridge can read" in told[0].getMessage()
    assert "every play read before is kept" in told[0].getMessage()
    # A new play on Serializd still reaches Trakt, and nothing read before was forgotten.
    log(serializd, 2, 1, "2024-02-01T20:00:00.000Z")
    await rig.sync_and_deliver(full=True)
    assert len(serializd.user.reviews) == 8 and len(trakt_plays(trakt)) == 8
    trakt.clear_knobs()
    await rig.sync_and_deliver(full=True)
    assert len(serializd.user.reviews) == 8 and len(trakt_plays(trakt)) == 8


TRAKT_RATINGS = "GET /sync/ratings/{type}"


def renamed_show_ids(row: dict[str, Any]) -> None:
    row["show"]["identifiers"] = row["show"].pop("ids")


def rating_gone(row: dict[str, Any]) -> None:
    del row["rating"]


def show_a_string(row: dict[str, Any]) -> None:
    row["show"] = row["show"]["title"]


def first_rating_reshaped(change: Callable[[dict[str, Any]], None]) -> Any:
    def reshape(body: list[dict[str, Any]]) -> None:
        change(next(row for row in body if row["episode"]["number"] == 1))

    return reshape


RATED, RATED_AGAIN = "2024-05-01T20:00:00Z", "2024-05-02T20:00:00Z"


@pytest.mark.parametrize(
    "change",
    [renamed_show_ids, show_a_string, rating_gone],
    ids=["ids-renamed", "show-a-string", "rating-gone"],
)
async def test_trakt_ratings_it_cannot_read_keep_the_ratings_read_before_and_say_so(
    rig: Rig,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    caplog: pytest.LogCaptureFixture,
    change: Callable[[dict[str, Any]], None],
) -> None:
    # Dated, not stamped now: a test run within one second at hh:mm:00 logged the change
    # below at the rating's own second (read as no change) and tied with Trakt's copy, which
    # Trakt keeps to the minute; the tie went to Trakt, whose 8 was written back.
    for n in range(1, 4):
        serializd.log_entry(None, BB, 1, n, rating=8, is_log=False, date_added=RATED)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)  # the copies read back from Trakt
    assert [trakt_rating(trakt, 1, n) for n in range(1, 4)] == [8, 8, 8]
    trakt.reshape_always(first_rating_reshaped(change), route=TRAKT_RATINGS)
    caplog.clear()
    result = await rig.sync_and_deliver(full=True)
    (planned,) = result.plans
    assert planned.plan.held == ""
    # Before, read as the rating removed on Trakt: 1 of 3, under the share, removed.
    assert [diary_rating(serializd, 1, n) for n in range(1, 4)] == [8, 8, 8]
    assert [trakt_rating(trakt, 1, n) for n in range(1, 4)] == [8, 8, 8]
    told = [r for r in caplog.records if TRAKT_UPDATE in r.getMessage()]
    assert len(told) == 1 and told[0].levelname == "WARNING"
    assert "1 of 3 ratings have no item or `rating` watchbridge can read" in told[0].getMessage()
    assert "the ratings read before of their items are kept" in told[0].getMessage()
    # A rating the other side changes meanwhile still reaches Trakt.
    serializd.log_entry(None, BB, 1, 2, rating=4, is_log=False, date_added=RATED_AGAIN)
    await rig.sync_and_deliver()
    assert (trakt_rating(trakt, 1, 2), diary_rating(serializd, 1, 2)) == (4, 4)


def without_rated_at(body: list[dict[str, Any]]) -> None:
    for row in body:
        del row["rated_at"]


async def test_a_trakt_rating_without_rated_at_is_not_overwritten_by_an_older_one(
    rig: Rig,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    app: TraktApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rated 9 on Trakt in June, 4 on Serializd in January: with its date unread, Trakt's
    rating read as dated 1970 and lost to the older one, which was written over it."""
    old, new = "2024-01-01T20:00:00.000Z", "2024-06-01T20:00:00.000Z"
    app.rate(1, 1, 9, new)
    log(serializd, 1, 1, old, rating=4, date_added=old)
    trakt.reshape_always(without_rated_at, route=TRAKT_RATINGS)
    await rig.sync_and_deliver()
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 4)  # it waits
    told = [r.getMessage() for r in caplog.records if TRAKT_UPDATE in r.getMessage()]
    assert told and "1 of 1 ratings have no `rated_at`" in told[0]
    await rig.sync_and_deliver()  # a run reading no ratings still knows it waits
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 4)
    trakt.clear_knobs()  # the update reads the date: the newer rating wins
    await rig.sync_and_deliver()
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 9)
