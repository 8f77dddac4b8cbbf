"""The catch-up (catchup.py) against what could lose or double a play, told by what the fake
Trakt ends up holding: the fake Jellyfin or Emby read over real HTTP, the plays caught up
delivered by the delivery worker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, BREAKING_BAD_PROVIDER_IDS, FakeJellyfin
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.ingest_samples import sample_json
from tests.test_catch_up import (
    ALEX,
    EPISODE,
    MOVIE,
    SECRET,
    SERIES,
    T0,
    Clock,
    plays,
    read,
    webhook,
)
from tests.test_delivery import close_targets, sign_in, worker_for
from watchbridge import webhooks
from watchbridge.app import Runtime
from watchbridge.catchup import CatchUp, Listed, Seen, State, by_hand, marked_together
from watchbridge.catchupstatus import status_lines
from watchbridge.config import parse_config
from watchbridge.ingest import parse
from watchbridge.maintenance import housekeeping
from watchbridge.model import Accepted, Ids, MediaRef
from watchbridge.wiring import build_runtime

DAY = 86400.0


@pytest.fixture(params=["jellyfin", "emby"])
def flavour(request: pytest.FixtureRequest) -> Literal["jellyfin", "emby"]:
    found: Literal["jellyfin", "emby"] = request.param
    return found


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(
    start_fake: Callable[[FakeServer], FakeServer],
    flavour: Literal["jellyfin", "emby"],
    clock: Clock,
) -> FakeJellyfin:
    fake = FakeJellyfin(flavour)
    fake.clock = clock
    start_fake(fake)
    fake.add_series(SERIES[flavour], "Breaking Bad", **BREAKING_BAD_PROVIDER_IDS)
    # As the webhook samples name it (their IMDb id too): the same item, listed or posted.
    ids = {"Tvdb": "4637661", "Tmdb": "62161", "Imdb": "tt2301451"}
    fake.add_episode(EPISODE[flavour], SERIES[flavour], 5, 14, **ids)
    fake.add_movie(MOVIE, "Arrival", 2016, Imdb="tt2543164", Tmdb="329865")
    fake.add_user(ALEX[flavour], "alex")
    return fake


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    show = fake.add_show("Breaking Bad", 2008, imdb="tt0903747", tmdb=1396, tvdb=81189)
    fake.add_episode(show, 5, 14, tvdb=4637661, tmdb=62161)
    return fake


@pytest.fixture
def runtime(
    tmp_path: Path, server: FakeJellyfin, trakt: FakeTrakt, clock: Clock
) -> Iterator[Runtime]:
    config = parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  {server.flavour}: {{url: "{server.url}", api_key: {API_KEY}}}
profiles:
  me: {{users: {{{server.flavour}: [alex]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    built = build_runtime(config, clock=clock)
    built.open()
    sign_in(built, trakt, clock)  # type: ignore[arg-type]
    yield built
    built.close()


def deliver(runtime: Runtime) -> None:
    """Every play queued so far delivered to the fake Trakt, as the delivery worker does."""

    async def passes() -> None:
        worker = worker_for(runtime)
        try:
            for _ in range(4):
                await worker.pass_once(runtime)
        finally:
            await close_targets(worker)

    asyncio.run(passes())


def rounds(runtime: Runtime, task: CatchUp, server: FakeJellyfin, clock: Clock, *at: float) -> int:
    """Rounds of the catch-up at each of `at`, what they queued delivered: the plays copied."""
    copied = 0
    for when in at:
        clock.now = when
        copied += read(runtime, task, server)
        deliver(runtime)
    return copied


def on_trakt(trakt: FakeTrakt) -> list[tuple[str, str | None]]:
    """(title, watched_at) of each play Trakt holds, oldest first."""
    return sorted(
        ((entry.item.title, entry.watched_at) for entry in trakt.history()),
        key=lambda one: one[1] or "",
    )


def rescanned(server: FakeJellyfin, renamed: dict[str, str], at: float) -> None:
    """The library removed and added again (Emby's ids are its database's; Jellyfin's follow
    the path, moved): each item under a new id, its user data carried over by the server's
    user data key (provider ids), saved anew."""
    for old, new in renamed.items():
        item = server.items.pop(old)
        server.items[new] = {**item, "Id": new}
        for (user, item_id), data in list(server.user_data.items()):
            if item_id == old:
                del server.user_data[(user, item_id)]
                server.user_data[(user, new)] = {**data, "saved": at + server.ahead}


def started(runtime: Runtime, flavour: str, at: float) -> None:
    """The sample's start of the episode, as the webhook route records it at `at`."""
    body = sample_json(flavour, "playback_start_episode.json")
    if flavour == "emby":
        body["Date"] = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(at))
    result = parse(flavour, json.dumps(body).encode(), "application/json")
    assert isinstance(result, Accepted)
    (event,) = result.events

    async def record() -> None:
        await runtime.writer.write_all([webhooks.ingest_job(runtime, "me", event)])

    runtime.clock.now = at  # type: ignore[attr-defined]
    asyncio.run(record())


def needs_you(runtime: Runtime, now: float) -> list[str]:
    """The catch-up's status lines shown in red."""
    return [
        one.message for one in status_lines(runtime.config, runtime.store, now) if one.needs_you
    ]


@pytest.mark.parametrize(("days", "told"), [(2, True), (10, True), (401, False)])
def test_a_library_added_again_under_new_ids_sends_no_play_again_and_says_nothing(
    runtime: Runtime, server: FakeJellyfin, trakt: FakeTrakt, clock: Clock, days: int, told: bool
) -> None:
    # Every played item comes back under a new id with its old PlayCount and LastPlayedDate
    # (Emby numbers the items of a library added again anew; Jellyfin's ids follow the
    # paths, a library moved). Those played since the first read were counted under their
    # old ids: taken for new plays, they were copied again (the webhooks' ones, told of more
    # than a week before, named in red as "not copied: add by hand"; the caught-up ones, once
    # their marks were pruned after 400 days, sent to Trakt a second time). `told`: whether
    # the episode's webhook came, or none ever did (the plugin never set up).
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    task = CatchUp()
    rounds(runtime, task, server, clock, T0)  # the baseline
    server.play(alex, MOVIE, T0 + 3600)  # no webhook: caught up
    began = T0 + 2 * 3600
    server.play(alex, episode, began)
    if told:
        webhook(runtime, server.flavour, began + 47 * 60)  # its stop: the webhook's play
        deliver(runtime)
    caught_up = rounds(runtime, task, server, clock, T0 + 4 * 3600, T0 + 4.25 * 3600)
    assert caught_up == (1 if told else 2)
    held = on_trakt(trakt)
    assert sorted(title for title, _ in held) == ["Arrival", "Episode 14"]
    for day in [*range(1, days, 7), days]:  # the weeks go by: events and rows pruned
        clock.now = T0 + day * DAY
        asyncio.run(housekeeping(runtime))
        sign_in(runtime, trakt, clock)  # type: ignore[arg-type]
        rounds(runtime, task, server, clock, clock.now)
    later = T0 + days * DAY + 3600
    new_movie = "ab" * 16 if server.flavour == "jellyfin" else "99998"
    new_episode = "cd" * 16 if server.flavour == "jellyfin" else "99999"
    rescanned(server, {MOVIE: new_movie, episode: new_episode}, later)
    copied = rounds(runtime, task, server, clock, later + 600, later + 1500, later + 2400)
    assert on_trakt(trakt) == held
    assert needs_you(runtime, clock.now) == []
    assert copied == 0  # nor said to be caught up (nor webhooks_stopped raised)

    again = later + 3 * 3600  # watched again, under its new id: one new play
    server.play(alex, new_movie, again)
    assert rounds(runtime, task, server, clock, again + 3 * 3600, again + 3.25 * 3600) == 1
    assert sorted(title for title, _ in on_trakt(trakt)) == ["Arrival", "Arrival", "Episode 14"]


@pytest.mark.parametrize("late", [20 * 60, 2 * 3600])
def test_a_webhook_arriving_after_the_catch_up_copied_its_play_sends_it_no_second_time(
    runtime: Runtime, server: FakeJellyfin, trakt: FakeTrakt, clock: Clock, late: float
) -> None:
    # The stop's webhook held up (a queue retrying, a proxy buffering) until after the
    # catch-up copied the viewing it ends: one viewing, one play. The copy is dated when the
    # viewing began: timed from there in the item's marks, a stop more than 3 hours after that
    # (a film paused for an hour, a webhook hours late) was taken for another viewing.
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    task = CatchUp()
    rounds(runtime, task, server, clock, T0)  # the baseline
    began = T0 + 600
    server.play(alex, episode, began)
    ended = began + 47 * 60
    copied_at = ended + 16 * 60
    assert rounds(runtime, task, server, clock, ended + 120, copied_at) == 1
    webhook(runtime, server.flavour, copied_at + late)  # its stop, late
    deliver(runtime)
    for n in range(1, 4):
        assert rounds(runtime, task, server, clock, copied_at + late + n * 900) == 0
    assert [title for title, _ in on_trakt(trakt)] == ["Episode 14"]


def test_a_rewatch_after_a_caught_up_play_is_a_play_of_its_own(
    runtime: Runtime, server: FakeJellyfin, trakt: FakeTrakt, clock: Clock
) -> None:
    # The webhooks back, the viewing after a caught-up one is a new play, its start seen.
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    task = CatchUp()
    rounds(runtime, task, server, clock, T0)  # the baseline
    began = T0 + 600
    server.play(alex, episode, began)
    copied_at = began + 63 * 60
    assert rounds(runtime, task, server, clock, began + 50 * 60, copied_at) == 1
    again = copied_at + 600
    server.play(alex, episode, again)
    started(runtime, server.flavour, again)  # the rewatch's webhooks: its start, its stop
    webhook(runtime, server.flavour, again + 47 * 60)
    deliver(runtime)
    for n in range(1, 4):
        assert rounds(runtime, task, server, clock, again + 47 * 60 + n * 900) == 0
    assert [title for title, _ in on_trakt(trakt)] == ["Episode 14", "Episode 14"]


@pytest.mark.parametrize("other", ["version", "special"])
def test_an_item_sharing_a_played_item_s_ids_is_copied_at_its_own_first_play(
    runtime: Runtime, server: FakeJellyfin, trakt: FakeTrakt, clock: Clock, other: str
) -> None:
    # Two items the server lists at once under the same ids: a second version of a film in a
    # 4K library, a special whose TVDB id is a regular episode's. Each has user data of its
    # own: the first viewing of one is a play, not the other's count carried over to a new id
    # (which it was taken for: never copied, lost).
    alex, flavour = ALEX[server.flavour], server.flavour
    jellyfin = flavour == "jellyfin"
    if other == "version":
        played, second = MOVIE, ("ee" * 16 if jellyfin else "77777")
        server.add_movie(second, "Arrival", 2016, Imdb="tt2543164", Tmdb="329865")
        trakt_title = "Arrival"
    else:
        played, second = EPISODE[flavour], ("ef" * 16 if jellyfin else "77778")
        server.add_episode(second, SERIES[flavour], 0, 3, Tvdb="4637661")
        server.items[played]["ProviderIds"] = {"Tvdb": "4637661"}
        trakt_title = "Episode 14"
    server.play(alex, played, T0 - 30 * DAY)
    task = CatchUp()
    rounds(runtime, task, server, clock, T0)  # the baseline: the first one played
    watched = T0 + 3600
    server.play(alex, second, watched)  # no webhook: caught up
    assert rounds(runtime, task, server, clock, T0 + 4 * 3600, T0 + 4.25 * 3600) == 1
    assert plays(runtime) == [("trakt", watched, second)]
    if other == "version":  # (Trakt has no such special: that play waits for a match)
        assert on_trakt(trakt) == [(trakt_title, "2026-05-28T21:26:00.000Z")]


def test_an_item_under_a_new_id_is_the_same_item_by_its_count_and_date_or_the_old_rule() -> None:
    # Rows with their dates: the same count and date is the item carried over; another date is
    # an item of its own. Rows an earlier release kept without one: the most of their counts.
    def one(count: int, dated: float) -> Listed:
        ref = MediaRef("movie", Ids(imdb="tt2543164"), "Arrival", 2016, source_key="new")
        return Listed("new", ref, True, count, dated, dated=dated)

    known = "movie:imdb:tt2543164"
    dated = State(T0, T0, {"old": Seen(3, known, T0 - DAY)})
    assert dated.seen(one(3, T0 - DAY)) == 3  # carried over: no play
    assert dated.seen(one(3, T0 + 600)) is None  # its own user data: a first play
    assert dated.seen(one(1, T0 + 600)) is None
    undated = State(T0, T0, {"old": Seen(3, known)})
    assert undated.seen(one(1, T0 + 600)) == 3


def test_one_viewing_two_items_of_the_same_ids_show_is_one_play_caught_up(
    runtime: Runtime, server: FakeJellyfin, trakt: FakeTrakt, clock: Clock
) -> None:
    # A server that keeps user data by provider ids shows one viewing on both versions of a
    # film (the same count and date): one play, said and sent once (it was said twice, and
    # webhooks_stopped named "Arrival and 1 more").
    alex, flavour = ALEX[server.flavour], server.flavour
    second = "ee" * 16 if flavour == "jellyfin" else "77777"
    server.add_movie(second, "Arrival", 2016, Imdb="tt2543164", Tmdb="329865")
    for item in (MOVIE, second):
        server.play(alex, item, T0 - 30 * DAY)
    task = CatchUp()
    rounds(runtime, task, server, clock, T0)  # the baseline
    watched = T0 + 3600
    for item in (MOVIE, second):  # the one viewing, as the server shows it on both
        server.play(alex, item, watched)
    assert rounds(runtime, task, server, clock, T0 + 4 * 3600, T0 + 4.25 * 3600) == 1
    assert on_trakt(trakt) == [("Arrival", "2026-05-28T21:26:00.000Z")]
    (line,) = status_lines(runtime.config, runtime.store, clock.now)
    assert line.kind == "caught_up" and " 1 play " in f"{line.message} ", line.message


def listed_episode(number: int, at: float, *, count: int = 1, minutes: int = 47) -> Listed:
    """S5E`number` of Breaking Bad listed played, dated `at` (its own TVDB id)."""
    ref = MediaRef(
        "episode",
        Ids(tvdb=4637600 + number),
        f"Episode {number}",
        show_title="Breaking Bad",
        season=5,
        number=number,
        source_key=f"e{number}",
    )
    return Listed(f"e{number}", ref, True, count, at, duration_ms=minutes * 60_000, dated=at)


def test_items_marked_at_once_are_marks_and_one_viewing_shown_on_two_versions_is_not() -> None:
    season = [listed_episode(n, T0 + n * 0.01) for n in range(1, 5)]
    assert marked_together(season) == {"e1", "e2", "e3", "e4"}
    # Viewings begin a viewing apart; one viewing shown on two versions of a film is one item.
    assert marked_together([listed_episode(1, T0), listed_episode(2, T0 + 2820)]) == set()
    ref = MediaRef("movie", Ids(imdb="tt2543164"), "Arrival", 2016)
    versions = [Listed(key, ref, True, 1, T0, dated=T0) for key in ("a", "b")]
    assert marked_together(versions) == set()


def test_a_play_found_sooner_than_a_viewing_of_it_lasts_is_a_mark_by_hand() -> None:
    state = State(T0 - DAY, T0 - 900)
    found = T0 + 14 * 60  # the next read: 14 minutes after its date
    assert by_hand(state, listed_episode(1, T0), found, ())
    # Found a viewing's length after its date (watchbridge down): a viewing, as far as it tells.
    assert not by_hand(state, listed_episode(1, T0), T0 + 36 * 60, ())
    assert by_hand(state, listed_episode(1, T0), T0 + 2 * DAY, {"e1"})  # marked with others
    # Short items are played as they start; a count of 2 counts a start or mark before it; an
    # item the reads saw played before is one the server had.
    assert not by_hand(state, listed_episode(1, T0, minutes=4), T0 + 60, ())
    assert not by_hand(state, listed_episode(1, T0, count=2), found, {"e1"})
    seen = State(T0 - DAY, T0 - 900, {"e1": Seen(0)})
    assert not by_hand(seen, listed_episode(1, T0), found, {"e1"})
