"""Delivering a link's plan to Plex: watched, unwatched and ratings against the fake PMS."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import paused_read, statements_run, store_connections, until
from tests.test_held_metrics import scraped_after_a_restart, value_in
from tests.test_plex_reader import JAMIE, JAMIE_TOKEN, make_config
from watchbridge.app import Runtime
from watchbridge.causes import server_key_unneeded
from watchbridge.cli import cli
from watchbridge.config import (
    AlertsConfig,
    Config,
    Link,
    Secret,
    StorageConfig,
    parse_config,
)
from watchbridge.deliver.plex import AUTH_HOLD, PlexTarget
from watchbridge.deliver.worker import (
    Dead,
    Delivered,
    DeliveryWorker,
    Hold,
    Outcome,
    Retry,
    Skipped,
    for_a_sign_in,
)
from watchbridge.http import RetryPolicy
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.readers.plex import PlexReader, make_reader, plex_client, written_record
from watchbridge.reconcile import Play
from watchbridge.sides import ref_for_key
from watchbridge.store import IngestJob, IngestWriter, NewOutboxRow, OutboxItem, Store
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000
DAY = 86400
NOW = T0 + 30 * DAY
ARRIVAL = "movie:tmdb:329865"
BB = "show:tmdb:1396"
BB_S1E1 = "episode:tmdb:1396:s1e1"
LINK = Link(["plex", "trakt"])


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    fake.add_movie("100", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    fake.add_show("200", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    fake.add_episode("201", "200", 1, 1)
    fake.add_episode("202", "200", 1, 2)
    fake.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    fake.clock = lambda: NOW
    return fake


@pytest.fixture
def config(plex: FakePlex) -> Config:
    return make_config(plex)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def alerting(config: Config, store: Store, receiver: AlertReceiver) -> Config:
    """`config` on the reader's database, its alerts sent to the fake receiver."""
    return replace(
        config,
        storage=StorageConfig(path=str(store.path)),
        alerts=AlertsConfig(urls=[Secret(receiver.apprise_url)]),
    )


@pytest.fixture
async def reader(config: Config, store: Store, clock: FakeClock) -> AsyncIterator[PlexReader]:
    reader = make_reader(config, store, LINK, ["alex", "jamie"], clock)
    yield reader
    await reader.aclose()


@pytest.fixture
async def target(config: Config, store: Store, clock: FakeClock) -> AsyncIterator[PlexTarget]:
    client = plex_client(config, store, clock)
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    target = PlexTarget(client, config, store, clock)
    yield target
    await target.aclose()


def row(
    store: Store, action: str, key: str, at: float, profile: str = "alex", **extra: Any
) -> OutboxItem:
    item = ref_for_key(key)
    assert item is not None
    payload = {"item": ref_to_dict(item), "at": at, "link": "plex-trakt", **extra}
    new = NewOutboxRow(
        "plex", profile, action, payload, f"{action}{key}{at}{extra}", f"{key}{at}{extra}"
    )
    assert store.enqueue([new], NOW) == 1
    (claimed,) = store.claim("test", NOW, 1, ["plex"])
    return claimed


async def deliver(
    target: PlexTarget, store: Store, action: str, key: str, at: float, **extra: Any
) -> Outcome:
    item = row(store, action, key, at, **extra)
    return (await target.deliver([item], NOW))[item.id]


async def plays(reader: PlexReader, profile: str = "alex") -> list[Play]:
    result = await reader.read(profile, {}, None, True)
    return sorted(result.side.plays, key=lambda p: (p.item, p.at))


# --------------------------------------------------------------------------- plays


async def test_a_play_marks_the_item_watched(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    outcome = await deliver(target, store, "play", ARRIVAL, T0)
    assert outcome == Delivered("marked watched")
    assert plex.user_state("100") == {"viewCount": 1, "lastViewedAt": NOW}


async def test_maps_a_read_left_cut_short_are_never_written_by(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    # A read writes its maps back in parts; killed between two, they are a mix of two reads'
    # (ratingKeys and plays), which a write could go by to the wrong item, or take a play for
    # one there already. The rows wait (no attempt spent) until a read writes them whole.
    await plays(reader)
    plex.watch("202", T0)
    store.db.execute(
        "CREATE TRIGGER cut BEFORE INSERT ON mirror WHEN NEW.collection = 'plays'"
        " BEGIN SELECT RAISE(ABORT, 'killed'); END"
    )
    with pytest.raises(Exception, match="killed"):
        await plays(reader)
    store.db.execute("DROP TRIGGER cut")
    item = row(store, "play", ARRIVAL, T0)
    held = (await target.deliver([item], NOW))[item.id]
    assert isinstance(held, Hold) and "cut short" in held.reason and not held.target_wide
    assert plex.user_state("100").get("viewCount", 0) == 0
    await plays(reader)
    assert (await target.deliver([item], NOW))[item.id] == Delivered("marked watched")
    assert plex.user_state("100") == {"viewCount": 1, "lastViewedAt": NOW}


async def test_a_removed_profiles_play_is_never_written_to_the_owners_account(
    reader: PlexReader, plex: FakePlex, config: Config, store: Store, clock: FakeClock
) -> None:
    await plays(reader, "jamie")  # read while jamie was in the config
    jamie_gone = replace(config, profiles={"alex": config.profiles["alex"]})  # moved out
    client = plex_client(jamie_gone, store, clock)
    target = PlexTarget(client, jamie_gone, store, clock)  # as `watchbridge sync` delivers
    try:
        item = row(store, "play", ARRIVAL, T0, profile="jamie")
        outcome = (await target.deliver([item], NOW))[item.id]
    finally:
        await target.aclose()
    assert isinstance(outcome, Dead) and "has no Plex account in the config" in outcome.reason
    assert plex.user_state("100") == {}  # the owner's watched state is untouched


async def test_a_play_we_wrote_is_read_back_at_its_own_time_not_today(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    await deliver(target, store, "play", ARRIVAL, T0)
    assert plex.history_of("100") == [NOW]  # Plex stamped it now
    assert await plays(reader) == [Play(ARRIVAL, T0, written_record("100", T0))]


async def test_a_play_is_not_scrobbled_when_plex_shows_it_watched_after_that_time(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    plex.watch("100", T0 + DAY)
    await plays(reader)
    outcome = await deliver(target, store, "play", ARRIVAL, T0)
    assert outcome == Delivered("already watched in Plex", written=False)
    assert plex.count("GET", "/:/scrobble") == 0
    assert [p.at for p in await plays(reader)] == [T0, T0 + DAY]  # both viewings now read


async def test_the_same_play_delivered_twice_scrobbles_once(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    await deliver(target, store, "play", ARRIVAL, T0)
    assert await deliver(target, store, "play", ARRIVAL, T0 + 1) == Delivered(
        "already written", written=False
    )
    assert plex.count("GET", "/:/scrobble") == 1


async def test_every_copy_of_a_title_is_marked(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    plex.add_section("3", "Movies 4K", "movie")
    plex.add_movie("400", "Arrival", 2016, ["tmdb://329865"], section="3")
    await plays(reader)
    await deliver(target, store, "play", ARRIVAL, T0)
    assert plex.user_state("100")["viewCount"] == plex.user_state("400")["viewCount"] == 1
    assert [p.at for p in await plays(reader)] == [T0]


async def test_a_scrobble_whose_answer_was_lost_is_not_sent_again_once_plex_shows_it(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    await plays(reader)
    plex.drop_next(1, "/:/scrobble", after_handler=True)
    item = row(store, "play", ARRIVAL, T0)
    first = (await target.deliver([item], NOW))[item.id]
    assert isinstance(first, Hold)
    clock.advance(3600)
    plex.clock = lambda: NOW + 3600
    outcome = (await target.deliver([item], clock()))[item.id]
    assert outcome == Delivered("already written (its answer was lost)", written=False)
    assert plex.history_of("100") == [NOW]  # one view, not one per try
    assert await plays(reader) == [Play(ARRIVAL, T0, written_record("100", T0))]


async def test_a_scrobble_lost_on_its_way_is_sent_again_and_both_tries_recognised(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    await plays(reader)
    plex.drop_next(1, "/:/scrobble")  # before Plex did anything
    item = row(store, "play", ARRIVAL, T0)
    assert isinstance((await target.deliver([item], NOW))[item.id], Hold)
    clock.advance(3600)
    plex.clock = lambda: NOW + 3600
    assert (await target.deliver([item], clock()))[item.id] == Delivered("marked watched")
    assert plex.history_of("100") == [NOW + 3600]
    assert await plays(reader) == [Play(ARRIVAL, T0, written_record("100", T0))]


async def test_a_write_plex_answers_an_error_to_spends_an_attempt_and_the_rest_wait(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    plex.fail_next(10, 500, route="/:/scrobble")
    rows = [row(store, "play", ARRIVAL, T0), row(store, "play", BB_S1E1, T0)]
    outcomes = await target.deliver(rows, NOW)
    assert isinstance(outcomes[rows[0].id], Retry)  # its attempts run out: a dead letter
    assert isinstance(outcomes[rows[1].id], Hold)  # not its fault: no attempt spent


async def test_an_item_in_no_synced_library_is_skipped(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    outcome = await deliver(target, store, "play", "movie:tmdb:949", T0)
    assert isinstance(outcome, Skipped) and "none of the synced Plex libraries" in outcome.note
    assert plex.count("GET", "/:/scrobble") == 0


async def test_rows_wait_until_the_libraries_were_read(
    target: PlexTarget, plex: FakePlex, store: Store
) -> None:
    outcome = await deliver(target, store, "play", ARRIVAL, T0)
    assert isinstance(outcome, Retry) and "not been read" in outcome.reason
    assert plex.requests == []


# --------------------------------------------------------------------------- removals


async def test_removing_one_of_several_plays_keeps_the_item_watched(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    first = plex.watch("201", T0)
    plex.watch("201", T0 + DAY)
    await plays(reader)
    outcome = await deliver(target, store, "remove_play", BB_S1E1, T0, record=f"history:{first}")
    assert isinstance(outcome, Delivered)
    assert plex.history_of("201") == [T0 + DAY]
    assert plex.user_state("201")["viewCount"] == 2
    assert [p.at for p in await plays(reader)] == [T0 + DAY]


async def test_removing_the_last_play_marks_the_item_unwatched(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    only = plex.watch("201", T0)
    await plays(reader)
    outcome = await deliver(target, store, "remove_play", BB_S1E1, T0, record=f"history:{only}")
    assert outcome == Delivered("marked unwatched (its last play was removed)")
    assert plex.user_state("201") == {}
    assert await plays(reader) == []


async def test_removing_a_play_we_wrote_forgets_it_and_unwatches(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    await deliver(target, store, "play", ARRIVAL, T0)
    await plays(reader)
    record = written_record("100", T0)
    await deliver(target, store, "remove_play", ARRIVAL, T0, record=record)
    assert plex.user_state("100") == {}
    assert await plays(reader) == []


async def test_removing_a_play_plex_no_longer_has_is_done(
    target: PlexTarget, reader: PlexReader, store: Store
) -> None:
    await plays(reader)
    outcome = await deliver(target, store, "remove_play", ARRIVAL, T0, record="history:999")
    assert outcome == Delivered("no such play on Plex (already gone)", written=False)


# --------------------------------------------------------------------------- ratings


async def test_a_rating_is_written_in_plex_halves(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    assert await deliver(target, store, "rating", ARRIVAL, T0, rating=75) == Delivered("rated")
    assert plex.user_state("100")["userRating"] == 7.5


async def test_show_and_season_ratings_go_to_their_own_items(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    await deliver(target, store, "rating", BB, T0, rating=80)
    await deliver(target, store, "rating", f"{BB}:s1", T0, rating=60)
    assert plex.user_state("200")["userRating"] == 8.0
    assert plex.user_state("200001")["userRating"] == 6.0


async def test_removing_a_rating_clears_it(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    plex.rate("100", 9.0, T0)
    await plays(reader)
    assert await deliver(target, store, "remove_rating", ARRIVAL, T0) == Delivered("rating cleared")
    assert "userRating" not in plex.user_state("100")


# --------------------------------------------------------------------------- per person


async def test_a_managed_users_writes_stay_theirs(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader, "jamie")
    item = row(store, "play", BB_S1E1, T0, profile="jamie")
    await target.deliver([item], NOW)
    assert plex.user_state("201", JAMIE)["viewCount"] == 1
    assert plex.user_state("201") == {}
    sent = plex.calls("GET", "/:/scrobble")[0]
    assert sent.headers["x-plex-token"] == JAMIE_TOKEN != TOKEN


async def test_a_refused_token_holds_that_profiles_rows_with_a_credentials_alert(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader, "jamie")
    del plex.users[JAMIE_TOKEN]
    item = row(store, "play", BB_S1E1, T0, profile="jamie")
    outcome = (await target.deliver([item], NOW))[item.id]
    assert isinstance(outcome, Hold)
    assert (outcome.alert, outcome.target_wide) == ("credentials", False)
    assert "jamie" in outcome.reason and "401" in outcome.reason
    assert JAMIE_TOKEN not in outcome.reason
    assert for_a_sign_in("plex", outcome)  # `watchbridge auth plex --profile jamie` lifts it


async def test_a_refused_owner_token_names_the_config_key_to_fix(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)  # alex: the server owner, with services.plex.token
    plex.token = "after the owner signed out of all devices"
    outcome = await deliver(target, store, "play", BB_S1E1, T0)
    assert isinstance(outcome, Hold) and outcome.alert == "credentials"
    # `watchbridge auth plex` would not replace the server token the owner's rows use.
    assert "services.plex.token" in outcome.reason and "auth plex" not in outcome.reason
    assert TOKEN not in outcome.reason
    assert not for_a_sign_in("plex", outcome)  # nor is it looked for beside the service


def test_movie_refs_from_the_outbox_resolve_to_reader_keys() -> None:
    ref = MediaRef("movie", ids=Ids(tmdb="329865"))
    assert ref_for_key(ARRIVAL) == ref


async def test_removing_a_play_the_engine_still_expects_unwatches_what_we_wrote(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    await deliver(target, store, "play", ARRIVAL, T0)  # not read back yet
    expected = f"expect:{ARRIVAL}@{T0}"
    outcome = await deliver(target, store, "remove_play", ARRIVAL, T0, record=expected)
    assert outcome == Delivered("marked unwatched (its last play was removed)")
    assert plex.user_state("100") == {}
    assert await plays(reader) == []


async def test_a_rating_that_waited_does_not_undo_a_newer_one_given_in_plex(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    # Trakt's 9 (rated at T0, queued at NOW) waited through a Plex outage; the user rated 6 in
    # Plex since.
    await plays(reader)
    waited = replace(row(store, "rating", ARRIVAL, T0, rating=90), attempts=1)
    plex.rate("100", 6.0, NOW + 300)
    outcome = (await target.deliver([waited], NOW + 600))[waited.id]
    assert isinstance(outcome, Skipped) and "newer rating" in outcome.note
    assert plex.user_state("100")["userRating"] == 6.0


async def test_a_rating_held_by_a_refused_token_then_skipped_for_plexs_newer_one_ends_the_alert(
    alerting: Config,
    reader: PlexReader,
    plex: FakePlex,
    store: Store,
    clock: FakeClock,
    receiver: AlertReceiver,
    tmp_path: Path,
) -> None:
    # jamie's rating waited on a token the server refused; meanwhile jamie rated the movie
    # in Plex. Read with the token that works again, the server's newer rating skips it: the
    # token works, so the alert ends with it, not at jamie's next play, weeks away.
    await plays(reader, "jamie")
    assert store.path == tmp_path / "state.db"  # the reader's database is the service's
    runtime = build_runtime(alerting, clock=clock)
    runtime.open()
    target = PlexTarget(plex_client(alerting, runtime.store, clock), alerting, runtime.store, clock)
    worker = DeliveryWorker(lambda _: [target], alerting.delivery, judge_config=False)
    worker.targets = {target.name: target}
    paused = "watchbridge: Plex sign-in needed (profile jamie)"
    try:
        del plex.users[JAMIE_TOKEN]
        item = ref_for_key(ARRIVAL)
        assert item is not None
        payload = {"item": ref_to_dict(item), "at": T0, "rating": 90}
        runtime.store.enqueue([NewOutboxRow("plex", "jamie", "rating", payload, "o", "r")], NOW)
        await worker.pass_once(runtime)
        assert receiver.titles() == [paused]
        plex.rate("100", 6.0, NOW + 300, account=JAMIE)
        plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")  # the token works again
        clock.advance(AUTH_HOLD + 1)
        await worker.pass_once(runtime)
        assert plex.user_state("100", JAMIE)["userRating"] == 6.0
        assert runtime.store.outbox_counts()["done"] == 1
        assert receiver.titles() == [paused, f"Resolved: {paused}"]
    finally:
        await target.aclose()
        runtime.close()


async def test_a_rating_skipped_for_plexs_newer_one_ends_the_refusal_of_the_persons_token(
    config: Config, target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    # jamie's rating was held on a token the server refused, and the status page listed
    # jamie's Plex sign-in as refused. The token works again: read with it, the server's newer
    # rating skips the row. The page kept "refused" until some row of jamie's was written.
    from watchbridge.signins import current_sign_ins

    def jamie_refused() -> bool:
        shown = current_sign_ins(config, store, NOW)
        return any(s.profile == "jamie" and s.state == "refused" for s in shown)

    await plays(reader, "jamie")
    del plex.users[JAMIE_TOKEN]
    held = row(store, "rating", ARRIVAL, T0, profile="jamie", rating=90)
    outcome = (await target.deliver([held], NOW))[held.id]
    assert isinstance(outcome, Hold) and outcome.alert == "credentials"
    assert jamie_refused()
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")  # the token works again
    plex.rate("100", 6.0, NOW + 300, account=JAMIE)
    waited = replace(held, last_error=outcome.reason)
    outcome = (await target.deliver([waited], NOW + 600))[held.id]
    assert isinstance(outcome, Skipped) and outcome.answered
    assert not jamie_refused()


async def test_a_rating_on_its_first_try_is_written_without_a_look(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    await plays(reader)
    plex.rate("100", 6.0, T0 + DAY)
    assert await deliver(target, store, "rating", ARRIVAL, T0, rating=90) == Delivered("rated")
    assert plex.count("GET", "/library/metadata/100") == 0


async def test_a_rating_that_waited_is_compared_on_our_clock_with_a_plex_clock_ahead(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    skew = 3 * 3600  # the home server's clock three hours ahead
    plex.clock = lambda: NOW + skew
    await plays(reader)
    plex.rate("100", 6.0, T0 + DAY - 3600 + skew)  # 6, an hour before Trakt's 9 (our clock)
    waited = replace(row(store, "rating", ARRIVAL, T0 + DAY, rating=90), attempts=1)
    assert (await target.deliver([waited], NOW))[waited.id] == Delivered("rated")
    assert plex.user_state("100")["userRating"] == 9.0


async def test_a_rating_an_earlier_try_wrote_to_one_copy_only_reaches_the_other(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    plex.add_section("9", "Movies 4K", "movie")
    plex.add_movie("900", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"], section="9")
    plex.rate("100", 6.0, T0)
    plex.rate("900", 6.0, T0)
    await plays(reader)
    first = row(store, "rating", ARRIVAL, T0 + DAY, rating=90)
    plex.fail_next(2, 503, route="PUT /:/rate", after_handler=True)  # done, the answer lost
    assert not isinstance((await target.deliver([first], NOW))[first.id], Delivered)
    again = replace(first, attempts=1, last_error="503")
    await target.deliver([again], NOW + 600)
    assert [plex.user_state(rk).get("userRating") for rk in ("100", "900")] == [9.0, 9.0]


async def test_a_links_rating_that_waited_still_rates_over_the_rating_its_plan_read(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    # prefer: trakt. Plex's 6 (given a minute before the run) was read by the plan; Trakt's 9,
    # given a month ago, goes over it. The row waits through a Plex outage and is retried.
    plex.rate("100", 6.0, NOW - 60)
    await plays(reader)
    waited = replace(row(store, "rating", ARRIVAL, NOW - 30 * DAY, rating=90), attempts=1)
    assert (await target.deliver([waited], NOW + 600))[waited.id] == Delivered("rated")
    assert plex.user_state("100")["userRating"] == 9.0


async def test_the_servers_own_token_refused_at_a_persons_removal_is_the_owners_to_renew(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    # A play is taken out of Plex's history with the server's own token, for jamie too. Its
    # refusal was taken for jamie's: jamie's token was "renewed" and then kept as refused,
    # with jamie's fix (paste a new accounts.plex.token) instead of the owner's.
    from watchbridge.services.refusals import SERVICE_WIDE, entry, refusal_of

    only = plex.watch("201", T0, account=JAMIE)
    await plays(reader, "jamie")
    plex.token = "the-owners-new-token"  # services.plex.token (TOKEN) is refused from now on
    record = f"history:{only}"
    outcome = await deliver(
        target, store, "remove_play", BB_S1E1, T0, record=record, profile="jamie"
    )
    assert isinstance(outcome, Hold) and outcome.alert == "credentials"
    assert outcome.reason.startswith(f"Plex: profile jamie: deleting history row {only}: ")
    assert "does not accept services.plex.token (401)" in outcome.reason
    assert "accounts.plex.token" not in outcome.reason
    assert store.get_token(entry("plex"), "jamie") is None
    assert refusal_of(store.get_token(entry("plex"), SERVICE_WIDE), TOKEN) is not None
    assert plex.history_of("201", JAMIE) == [T0]


async def test_the_owners_delivery_the_server_takes_ends_the_refusal_of_its_own_token(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    # The owner's rows go with services.plex.token: one the server takes again ends its
    # refusal, as a link's read does; else it read as refused until a link's next read.
    from watchbridge.services.refusals import SERVICE_WIDE, entry, refusal_of

    def refused() -> bool:
        return refusal_of(store.get_token(entry("plex"), SERVICE_WIDE), TOKEN) is not None

    await plays(reader)
    plex.token = "the-owners-new-token"  # services.plex.token (TOKEN) is refused from now on
    assert isinstance(await deliver(target, store, "play", ARRIVAL, T0), Hold)
    assert refused()
    plex.token = TOKEN  # taken again
    assert isinstance(await deliver(target, store, "play", ARRIVAL, T0 + 60), Delivered)
    assert not refused()


async def test_a_refused_server_token_leaves_the_running_service_idle(
    config: Config, reader: PlexReader, plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    # services.plex.token is the owner's, in the config: no `watchbridge auth plex` of a
    # profile makes the server take it again. The rows its refusal holds are no reason for a
    # pass every 10 s (the look for a sign-in beside the service), while the service runs nor
    # after a restart, for as long as the token is refused.
    await plays(reader)  # alex: the server owner, with services.plex.token
    runtime = build_runtime(replace(config, storage=StorageConfig(str(store.path))), clock=clock)
    runtime.open()
    plex.token = "after the owner signed out of all devices"

    async def idle() -> list[str]:
        """The claims a running worker makes while the refusal holds alex's play."""
        target = PlexTarget(plex_client(config, runtime.store, clock), config, runtime.store, clock)
        worker = DeliveryWorker(
            lambda _: [target], config.delivery, judge_config=False, sign_in_look=0.05
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(runtime, stop))
        try:
            worker.notify()
            await until(lambda: runtime.store.waiting_for_server("plex") == ["alex"])
            await asyncio.sleep(0.2)
            with statements_run("IMMEDIATE", runtime.store._conn) as claims:
                await asyncio.sleep(0.5)  # ten of those looks' time
            return list(claims)  # the trace goes on after the block: the stop's claims
        finally:
            stop.set()
            worker.notify()
            await asyncio.wait_for(task, 10)
            await target.aclose()

    try:
        item = ref_for_key(ARRIVAL)
        assert item is not None
        payload = {"item": ref_to_dict(item), "at": T0, "link": "plex-trakt"}
        runtime.store.enqueue([NewOutboxRow("plex", "alex", "play", payload, "o", "p")], NOW)
        assert await idle() == []  # held by this worker
        assert await idle() == []  # read back at a start
        assert runtime.store.outbox_counts()["pending"] == 1
    finally:
        runtime.close()


async def test_a_refused_server_token_is_no_lost_sign_in_and_a_start_with_a_new_one_sends(
    alerting: Config,
    reader: PlexReader,
    plex: FakePlex,
    store: Store,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    # The owner signed out of all devices: services.plex.token is refused, and alex's play
    # (written with it) waits. That was told as alex's sign-in: the alert said "sign-in
    # needed", the store said alex's deliveries wait for a sign-in, and `watchbridge auth plex
    # --profile alex` made the play due ("waited for this sign-in: the service sends them
    # within a minute"), to be refused again. A start with the owner's current token sends it.
    await plays(reader)  # alex: the server owner, with services.plex.token
    new_token = "after the owner signed out of all devices"
    plex.token = new_token

    async def serving(config: Config) -> tuple[Any, asyncio.Event, asyncio.Task[None]]:
        runtime = build_runtime(config, clock=clock)
        runtime.open()
        target = PlexTarget(plex_client(config, runtime.store, clock), config, runtime.store, clock)
        worker = DeliveryWorker(
            lambda _: [target], config.delivery, judge_config=False, sign_in_look=0.05
        )
        stop = asyncio.Event()
        return runtime, stop, asyncio.create_task(worker.run(runtime, stop))

    async def stopped(runtime: Any, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        stop.set()
        await asyncio.wait_for(task, 10)
        runtime.close()

    runtime, stop, task = await serving(alerting)
    try:
        item = ref_for_key(ARRIVAL)
        assert item is not None
        payload = {"item": ref_to_dict(item), "at": T0}
        runtime.store.enqueue([NewOutboxRow("plex", "alex", "play", payload, "o", "p")], NOW)
        await until(lambda: runtime.store.waiting_for_server("plex") == ["alex"])
        await until(lambda: bool(receiver.titles()))
        assert receiver.titles() == [SERVER_TOKEN_REFUSED]
        assert not runtime.store.waits_for_sign_in("plex", "alex")
        sent = len(plex.requests)
        with Store.open(store.path) as beside:  # what `watchbridge auth plex` runs after it
            assert beside.resume_after_sign_in("plex", "alex", clock()) == 0
        await asyncio.sleep(0.3)  # six of the running worker's looks for a sign-in
        assert len(plex.requests) == sent  # not tried again, to be refused again
        assert runtime.store.waiting_for_server("plex") == ["alex"]
    finally:
        await stopped(runtime, stop, task)

    assert alerting.services.plex is not None
    plex_config = replace(alerting.services.plex, token=Secret(new_token))
    runtime, stop, task = await serving(
        replace(alerting, services=replace(alerting.services, plex=plex_config))
    )
    try:
        await until(lambda: runtime.store.outbox_counts()["done"] == 1)
        assert plex.user_state("100")["viewCount"] == 1
        assert runtime.store.waiting_for_server("plex") == []
    finally:
        await stopped(runtime, stop, task)


SERVER_TOKEN_REFUSED = "watchbridge: Plex does not accept watchbridge's token"


async def test_a_refused_server_token_is_one_alert_and_what_it_held_goes_once_a_read_takes_it(
    alerting: Config,
    reader: PlexReader,
    plex: FakePlex,
    store: Store,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    # services.plex.token refused holds alex's play and jamie's removal (a history row goes
    # with the server's token). That was an alert per profile ("Plex server token refused
    # (profile NAME)"), beside the lookups' and the links' one for the server; its "Resolved"
    # said Plex took the profile's sign-in again; and the rows waited out their half hour
    # after the server took the token again. Now: one alert for the server, naming whose
    # plays wait; a link's read with the token sends them at once; the "Resolved" says so.
    first = plex.watch("201", T0, account=JAMIE)
    await plays(reader)  # alex: the server owner, with services.plex.token
    await plays(reader, "jamie")
    runtime = build_runtime(alerting, clock=clock)  # its clock stands still: no half hour
    runtime.open()
    target = PlexTarget(plex_client(alerting, runtime.store, clock), alerting, runtime.store, clock)
    worker = DeliveryWorker(
        lambda _: [target], alerting.delivery, judge_config=False, sign_in_look=0.05
    )
    stop = asyncio.Event()
    plex.token = "after the owner signed out of all devices"
    task = asyncio.create_task(worker.run(runtime, stop))
    try:
        item, episode = ref_for_key(ARRIVAL), ref_for_key(BB_S1E1)
        assert item is not None and episode is not None
        play = {"item": ref_to_dict(item), "at": T0}
        removal = {"item": ref_to_dict(episode), "at": T0, "record": f"history:{first}"}
        runtime.store.enqueue(
            [
                NewOutboxRow("plex", "alex", "play", play, "o1", "p1"),
                NewOutboxRow("plex", "jamie", "remove_play", removal, "o2", "p2"),
            ],
            NOW,
        )
        worker.notify()
        await until(lambda: runtime.store.waiting_for_server("plex") == ["alex", "jamie"])
        await until(lambda: bool(receiver.titles()))
        await asyncio.sleep(0.2)  # any other alert
        assert receiver.titles() == [SERVER_TOKEN_REFUSED]
        (alert,) = receiver.messages
        assert "profiles alex and jamie" in alert["message"]
        assert "does not accept services.plex.token (401)" in alert["message"]

        plex.token = TOKEN  # the server takes it again; a link's read goes through with it
        await plays(reader)
        await until(lambda: runtime.store.outbox_counts()["done"] == 2, timeout=5)
        assert plex.user_state("100")["viewCount"] == 1
        assert plex.history_of("201", JAMIE) == []
        await until(lambda: len(receiver.titles()) == 2)
        assert receiver.titles()[1] == f"Resolved: {SERVER_TOKEN_REFUSED}"
        resolved = receiver.messages[1]["message"]
        assert "accepts watchbridge's token again" in resolved
        assert "sign-in" not in resolved
    finally:
        stop.set()
        worker.notify()
        await asyncio.wait_for(task, 10)
        runtime.close()


@contextlib.asynccontextmanager
async def held_for_the_server_token(
    config: Config, plex: FakePlex, clock: FakeClock, **payload: Any
) -> AsyncIterator[tuple[Runtime, PlexTarget]]:
    """A runtime on `config` whose worker tried alex's play (`payload` added) while the
    server refuses services.plex.token, and the target it delivers to; closed after."""
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    plex.token = "after the owner signed out of all devices"
    target = PlexTarget(plex_client(config, runtime.store, clock), config, runtime.store, clock)
    try:
        item = ref_for_key(ARRIVAL)
        assert item is not None
        play = {"item": ref_to_dict(item), "at": T0, **payload}
        runtime.store.enqueue([NewOutboxRow("plex", "alex", "play", play, "o", "p")], NOW)
        await delivering(runtime, target, judge_config=False).pass_once(runtime)
        assert runtime.store.waiting_for_server("plex") == ["alex"]
        yield runtime, target
    finally:
        await target.aclose()
        runtime.close()


def delivering(runtime: Runtime, target: PlexTarget, judge_config: bool) -> DeliveryWorker:
    """A worker delivering to `target` alone (`judge_config`: as a service's start does)."""
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery, judge_config=judge_config)
    worker.targets = {target.name: target}
    return worker


async def test_plays_held_for_the_servers_token_hold_no_profile_in_metrics(
    config: Config, reader: PlexReader, plex: FakePlex, store: Store, clock: FakeClock
) -> None:
    # watchbridge_profile_held is 1 while a profile's own sign-in (or account) holds its
    # deliveries: alex's play held because the server refuses services.plex.token set it, so
    # a Grafana panel or alert rule on it said profile alex was held, whose sign-in is fine.
    # Those plays have their own gauge.
    await plays(reader)  # alex: the server owner, with services.plex.token
    on_disk = replace(config, storage=StorageConfig(str(store.path)))
    async with held_for_the_server_token(on_disk, plex, clock) as (runtime, _):
        text = scraped_after_a_restart(runtime, clock)  # the running app's /metrics
    assert value_in(text, "watchbridge_profile_held", target="plex", profile="alex") == 0.0
    assert value_in(text, "watchbridge_outbox_waiting_for_server_key", target="plex") == 1.0
    assert value_in(text, "watchbridge_outbox_waiting_for_sign_in", target="plex") == 0.0


async def test_a_server_token_alert_ends_once_nothing_waits_for_the_token_and_no_link_reads_plex(
    alerting: Config,
    reader: PlexReader,
    plex: FakePlex,
    store: Store,
    clock: FakeClock,
    receiver: AlertReceiver,
    tmp_path: Path,
) -> None:
    # Link plex-trakt queued alex's play while the server refused services.plex.token; the
    # user took the link out of the config (no link reads Plex any more), the play gave up at
    # the next start and they discarded the dead letter. Nothing waited for the token, nothing
    # would try it again, yet its alert stayed open for good, saying plays wait for it.
    await plays(reader)  # alex: the server owner, with services.plex.token
    async with held_for_the_server_token(alerting, plex, clock, link="plex-trakt") as (
        runtime,
        target,
    ):
        assert receiver.titles() == [SERVER_TOKEN_REFUSED]
        worker = delivering(runtime, target, judge_config=True)  # started again without the link
        await worker.pass_once(runtime)
        assert runtime.store.outbox_counts()["dead"] == 1
        path = tmp_path / "watchbridge.yaml"
        path.write_text(f"storage: {{path: {store.path}}}\n", encoding="utf-8")
        discarded = CliRunner().invoke(
            cli, ["deadletters", "discard", "--all", "--config", str(path)]
        )
        assert "1 dead letter(s) discarded" in discarded.output
        for _ in range(3):  # days go by: no reminder of it
            clock.advance(DAY)
            await worker.pass_once(runtime)
    told = [(m["title"], m["message"]) for m in receiver.messages if "token" in m["title"]]
    assert [title for title, _ in told] == [
        SERVER_TOKEN_REFUSED,
        f"Resolved: {SERVER_TOKEN_REFUSED}",
    ]
    assert told[1][1] == (
        "Nothing needs Plex's token any more: no play or rating waits for it (those it held"
        " went out, gave up or were discarded) and no link reads Plex. If Plex still refuses"
        " it, a play that needs it later raises this alert again."
    )


def test_a_server_key_alert_no_row_waits_for_is_left_to_what_still_reads_the_server(
    config: Config,
) -> None:
    # A link reading the server, or the catch-up, tells the refusal again at its next read or
    # ends it once the key works: ended meanwhile, it would come back as a new alert.
    assert server_key_unneeded(config, "plex") is not None  # no link
    linked = replace(config, links={"plex-trakt": LINK})
    assert server_key_unneeded(linked, "plex") is None
    jellyfin = parse_config(
        """
services: {jellyfin: {url: "http://jellyfin:8096", api_key: k}}
profiles: {me: {users: {jellyfin: [alex]}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    assert server_key_unneeded(jellyfin, "jellyfin") is None  # its catch-up reads it
    off = parse_config(
        """
services: {jellyfin: {url: "http://jellyfin:8096", api_key: k, catch_up: false}}
profiles: {me: {users: {jellyfin: [alex]}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    over = server_key_unneeded(off, "jellyfin")
    assert over is not None and "neither a link nor the catch-up reads Jellyfin" in over


async def test_a_persons_removal_the_server_takes_ends_the_refusal_of_its_own_token(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    # jamie's play leaves Plex's history with services.plex.token: the server taking it ends
    # the token's refusal, as the owner's rows and a link's read do. It read as refused still.
    from watchbridge.services.refusals import SERVICE_WIDE, entry, refusal_of

    def refused() -> bool:
        return refusal_of(store.get_token(entry("plex"), SERVICE_WIDE), TOKEN) is not None

    first = plex.watch("201", T0, account=JAMIE)
    plex.watch("201", T0 + DAY, account=JAMIE)  # the play that stays
    await plays(reader, "jamie")
    plex.token = "the-owners-new-token"  # services.plex.token (TOKEN) is refused from now on
    removal = row(store, "remove_play", BB_S1E1, T0, record=f"history:{first}", profile="jamie")
    assert isinstance((await target.deliver([removal], NOW))[removal.id], Hold)
    assert refused()
    plex.token = TOKEN  # taken again
    outcome = (await target.deliver([replace(removal, attempts=1)], NOW + 600))[removal.id]
    assert isinstance(outcome, Delivered) and plex.history_of("201", JAMIE) == [T0 + DAY]
    assert not refused()


# --------------------------------------------------------------------------- beside webhooks


async def test_a_webhook_is_recorded_while_the_deliverer_loads_a_persons_plays(
    target: PlexTarget, reader: PlexReader, store: Store
) -> None:
    # Each batch loads the person's maps whole (~100,000 rows at a big library): a webhook
    # answered meanwhile must not wait for that read. Here it stops halfway through, and the
    # webhook's record (the service's writer) goes through all the same; before, the read
    # held the store's lock, and the record waited until the read ended.
    await plays(reader)
    play = row(store, "play", ARRIVAL, T0)
    writer = IngestWriter(store)
    webhook = IngestJob("plex", "progress", "alex", {}, NOW, "s", lambda s, _marks: (s, []))
    plays_read = "FROM mirror WHERE service = 'plex' AND profile = 'alex' AND collection = 'plays'"
    try:
        with paused_read(plays_read, *store_connections(store)) as paused:
            delivery = asyncio.create_task(target.deliver([play], NOW))
            assert await asyncio.to_thread(paused.reached.wait, 10)
            recorded = asyncio.ensure_future(writer.write(webhook))
            finished, _ = await asyncio.wait([recorded], timeout=5)
            assert finished == {recorded}, "the webhook waited for the deliverer's read"
        assert (await delivery)[play.id] == Delivered("marked watched")
    finally:
        writer.close()
    assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


async def test_the_next_batch_reads_again_only_the_maps_written_since(
    target: PlexTarget, reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    # Each batch of 200 rows decoded the person's maps whole (~100,000 rows at a big
    # library): most of a CPU through a big link run, the loop and the webhooks' writer
    # starved of it. They are kept between full batches (a backlog); our own writes are in
    # them already, and only a map something else wrote since (the reader, here) is read
    # again (or one never written: `unwatching`, read each time, holds a row or two). A
    # batch less than full ends the backlog: they are let go, and read whole next time.
    await plays(reader)
    target.batch_size = 1  # each of these batches is full
    mine = "SELECT item_key, data FROM mirror WHERE service = 'plex' AND profile = 'alex'"
    with statements_run(mine, *store_connections(store)) as reads:
        assert await deliver(target, store, "play", ARRIVAL, T0) == Delivered("marked watched")
        assert await deliver(target, store, "play", BB_S1E1, T0) == Delivered("marked watched")
        store.mirror_remove("plex", "alex", "keys", [ARRIVAL])  # the reader: gone from Plex
        outcome = await deliver(target, store, "play", ARRIVAL, T0 + DAY)
        target.batch_size = 200
        await deliver(target, store, "play", BB_S1E1, T0 + 2 * DAY)
        await deliver(target, store, "play", BB_S1E1, T0 + 3 * DAY)
    read = [m.group(1) for sql in reads if (m := re.search(r"collection = '(\w+)'", sql))]
    assert read.count("keys") == 3, read  # the first batch's, the third's, the last's
    assert read.count("plays") == 2 and read.count("written") == 2, read
    assert isinstance(outcome, Skipped) and "none of the synced Plex libraries" in outcome.note
    assert plex.user_state("100") == {"viewCount": 1, "lastViewedAt": NOW}


async def test_the_maps_kept_after_a_full_last_batch_are_let_go_once_no_batch_follows(
    target: PlexTarget, reader: PlexReader, store: Store
) -> None:
    # A backlog whose last batch comes full (its rows a multiple of the batch) gets no batch
    # less than full after it: the worker calls no delivery for an empty claim. The maps
    # (tens of MB at a big library) were then kept until the next row, hours later maybe.
    await plays(reader)
    target.batch_size = 1  # the backlog's last batch, full
    target.kept_idle = 0.01
    mine = "SELECT item_key, data FROM mirror WHERE service = 'plex' AND profile = 'alex'"
    with statements_run(mine, *store_connections(store)) as reads:
        assert await deliver(target, store, "play", ARRIVAL, T0) == Delivered("marked watched")
        await asyncio.sleep(0.05)  # nothing more claimed meanwhile
        await deliver(target, store, "play", BB_S1E1, T0)
    read = [m.group(1) for sql in reads if (m := re.search(r"collection = '(\w+)'", sql))]
    assert read.count("keys") == 2, read  # the last batch's maps were let go, read again


async def test_a_webhook_is_recorded_while_a_read_weighs_its_maps_against_the_stored(
    reader: PlexReader, plex: FakePlex, store: Store
) -> None:
    # A read writes its maps back over what the store holds now (the deliverer writes them
    # as it goes): at 40,000 plays, reading and comparing them took most of a second, under
    # the store's lock, and every webhook's record waited. Here that read stops halfway and
    # the record goes through. The deliverer unwatches Arrival meanwhile, after the read
    # looked: its word stands over the read's listing (rewatched before), as it did when
    # the read compared under the lock.
    plex.watch("100", T0)
    await plays(reader)
    plex.watch("100", T0 + DAY)
    unwatched = {**store.mirror_get("plex", "alex", "keys")[ARRIVAL], "watched_at": None}
    writer = IngestWriter(store)
    webhook = IngestJob("plex", "progress", "alex", {}, NOW, "s", lambda s, _marks: (s, []))
    plays_read = "FROM mirror WHERE service = 'plex' AND profile = 'alex' AND collection = 'plays'"
    try:
        # The read's first look at its plays, before it lists, is beside the lock already.
        with paused_read(plays_read, *store_connections(store), after=1) as paused:
            reading = asyncio.ensure_future(plays(reader))
            assert await asyncio.to_thread(paused.reached.wait, 10)
            recorded = asyncio.ensure_future(writer.write(webhook))
            finished, _ = await asyncio.wait([recorded], timeout=5)
            assert finished == {recorded}, "the webhook waited for the read's comparison"
            store.mirror_put("plex", "alex", "keys", {ARRIVAL: unwatched}, NOW)  # the deliverer
        await reading
    finally:
        writer.close()
    assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert store.mirror_get("plex", "alex", "keys")[ARRIVAL] == unwatched


async def test_a_row_that_cannot_be_read_is_a_dead_letter_told_as_a_bug_to_report(
    target: PlexTarget, reader: PlexReader, store: Store
) -> None:
    await plays(reader)
    outcome = await deliver(target, store, "rating", ARRIVAL, T0, rating="seven")
    assert outcome == Dead(
        "an unexpected error in watchbridge, a bug: what it stored of this rating for Plex"
        " cannot be read"
        " (ValueError: invalid literal for int() with base 10: 'seven'); please report it"
        " (a retry fails the same way)"
    )
