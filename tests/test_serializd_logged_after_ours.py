"""An episode logged by hand in Serializd's app AFTER watchbridge logged the webhook's play of
that viewing (at the end of the credits, or minutes later): the trakt-serializd link reads two
diary entries of one viewing. Before, it copied the user's as a second play to Trakt. A log
made within LATE_LOG_WINDOW of our play is that viewing; one made later is a rewatch, and so is
one made later than a rewatch of a short episode could be (it was taken for ours: a play lost).
Ours gone, the user's log is a play again when they deleted ours, but not when a link did,
carrying the play's removal on Trakt (the play removed came back through it).

Through the worker and the link's runs, the fakes over real HTTP (the rig of
`test_link_webhook_races`)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests import test_link_webhook_races
from tests.fakes.serializd import FakeSerializd, iso
from tests.fakes.trakt import FakeTrakt
from tests.linkrig import BB, LINK
from tests.test_link_webhook_races import House
from watchbridge.readers.serializd import LATE_LOG_WINDOW
from watchbridge.services.serializd import DEFAULT_TAG
from watchbridge.sync import run_link

pytestmark = pytest.mark.anyio
house = test_link_webhook_races.house  # the rig's fixture


async def webhook_play_then_log(
    house: House,
    serializd: FakeSerializd,
    later: float,
    tags: tuple[str, ...] = (),
    **jellyfin: Any,
) -> None:
    """A Jellyfin play of S1E2 (`jellyfin`: its fields other than the sample's), delivered to
    Trakt and Serializd and read by the link; `later` seconds after the play, a log of the
    episode (the user's, in the app, unless `tags`)."""
    house.jellyfin_play(1, 2, **jellyfin)
    await house.deliver()
    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (1, 1)
    await house.sync()
    house.advance(later)
    serializd.log_entry(None, BB, 1, 2, date_added=iso(serializd.now()), tags=tags)


def lasting(minutes: float) -> dict[str, Any]:
    """Jellyfin's fields of a play to the end of an episode `minutes` long."""
    ticks = int(minutes * 60 * 10_000_000)
    return {"RunTimeTicks": ticks, "PlaybackPositionTicks": ticks}


async def full_sync(house: House) -> None:
    config, store = house.runtime.config, house.runtime.store
    await run_link(config, store, LINK, yes=True, full=True, clock=house.clock)


async def confirmed_sync(house: House) -> None:
    """A run whose removals the user confirmed (one of two plays is past the removal guard)."""
    config, store = house.runtime.config, house.runtime.store
    await run_link(config, store, LINK, yes=True, confirm_removals=True, clock=house.clock)


async def test_a_log_made_in_the_app_minutes_after_our_play_is_not_a_second_trakt_play(
    house: House, serializd: FakeSerializd
) -> None:
    await webhook_play_then_log(house, serializd, later=5 * 60)
    await house.sync()
    await house.settle()
    assert house.trakt_plays(1, 2) == 1


async def test_a_log_made_in_the_app_after_our_play_is_no_second_play_to_a_full_read(
    house: House, serializd: FakeSerializd
) -> None:
    await webhook_play_then_log(house, serializd, later=5 * 60)
    await full_sync(house)
    await house.deliver()
    await full_sync(house)
    await house.settle()
    assert house.trakt_plays(1, 2) == 1


async def test_a_log_made_in_the_app_after_the_window_is_a_rewatch_copied_to_trakt(
    house: House, serializd: FakeSerializd
) -> None:
    await webhook_play_then_log(house, serializd, later=LATE_LOG_WINDOW + 5 * 60)
    await house.sync()
    await house.settle()
    assert house.trakt_plays(1, 2) == 2


async def test_a_log_of_another_watchbridge_or_profile_after_our_play_is_its_own_play(
    house: House, serializd: FakeSerializd
) -> None:
    # Tagged: another profile signed in to the account (or another watchbridge) logged it, a
    # viewing of its own, not the user's log of ours to judge.
    await webhook_play_then_log(house, serializd, later=5 * 60, tags=(DEFAULT_TAG,))
    await house.sync()
    await house.settle()
    assert house.trakt_plays(1, 2) == 2


async def test_the_user_s_log_and_ours_stay_in_the_diary(
    house: House, serializd: FakeSerializd
) -> None:
    await webhook_play_then_log(house, serializd, later=5 * 60)
    await house.sync()
    await house.settle()
    assert house.diary_entries(1, 2) == 2


async def test_a_short_episode_rewatched_and_logged_in_the_app_after_our_play_is_a_second_play(
    house: House, serializd: FakeSerializd
) -> None:
    # An 11-minute cartoon watched again right away: its log comes 12 minutes after our play,
    # inside LATE_LOG_WINDOW, and is no log of the viewing we logged.
    await webhook_play_then_log(house, serializd, later=12 * 60, **lasting(11))
    await house.sync()
    await house.settle()
    assert house.trakt_plays(1, 2) == 2


async def test_a_short_episode_logged_in_the_app_minutes_after_our_play_is_no_second_play(
    house: House, serializd: FakeSerializd
) -> None:
    await webhook_play_then_log(house, serializd, later=5 * 60, **lasting(11))
    await house.sync()
    await house.settle()
    assert house.trakt_plays(1, 2) == 1


async def test_a_long_episode_logged_in_the_app_minutes_after_our_play_is_no_second_play(
    house: House, serializd: FakeSerializd
) -> None:
    await webhook_play_then_log(house, serializd, later=5 * 60, **lasting(45))
    await house.sync()
    await house.settle()
    assert house.trakt_plays(1, 2) == 1


async def test_a_long_episode_logged_in_the_app_15_minutes_after_our_play_is_no_second_play(
    house: House, serializd: FakeSerializd
) -> None:
    # No rewatch of 45 minutes is logged 15 minutes on: its runtime keeps the whole window.
    await webhook_play_then_log(house, serializd, later=15 * 60, **lasting(45))
    await house.sync()
    await house.settle()
    assert house.trakt_plays(1, 2) == 1


async def test_a_log_15_minutes_after_a_play_of_no_known_length_is_a_rewatch(
    house: House, serializd: FakeSerializd
) -> None:
    # The webhook named no runtime: a rewatch of a short episode may come that soon.
    unknown = {"RunTimeTicks": None, "RunTime": None, "PlaybackPositionTicks": None}
    await webhook_play_then_log(house, serializd, later=15 * 60, **unknown)
    await house.sync()
    await house.settle()
    assert house.trakt_plays(1, 2) == 2


def delete_on_trakt(trakt: FakeTrakt, season: int, number: int) -> None:
    """The user removes the episode's plays from their Trakt history."""
    with trakt.lock:
        trakt.user.history = [
            e
            for e in trakt.user.history
            if (getattr(e.item, "season", None), getattr(e.item, "number", None))
            != (season, number)
        ]
        trakt._touch(trakt.user, "episodes.watched_at")


async def test_a_play_deleted_on_trakt_does_not_come_back_from_the_user_s_log_in_the_app(
    house: House, serializd: FakeSerializd, trakt: FakeTrakt
) -> None:
    # The link carries the removal by deleting our entry; the user's log of that viewing stays
    # in their diary, and is no play of its own once ours is gone.
    await webhook_play_then_log(house, serializd, later=5 * 60)
    await house.sync()
    delete_on_trakt(trakt, 1, 2)
    house.advance(120)
    await confirmed_sync(house)
    await house.deliver()
    house.advance(120)
    await house.sync()
    await house.deliver()
    await full_sync(house)
    await house.settle()
    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (0, 1)


async def test_the_user_s_log_is_a_play_once_they_delete_our_entry_in_the_app(
    house: House, serializd: FakeSerializd
) -> None:
    await webhook_play_then_log(house, serializd, later=5 * 60)
    await house.sync()
    ours = next(r for r in serializd.diary() if DEFAULT_TAG in r.tags and r.episode_number == 2)
    serializd.delete_entry(ours)
    house.advance(120)
    await full_sync(house)
    await confirmed_sync(house)
    await house.settle()
    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (1, 1)


async def test_the_log_says_once_the_user_s_log_of_a_play_deleted_on_trakt_stays_in_the_diary(
    house: House, serializd: FakeSerializd, trakt: FakeTrakt, caplog: pytest.LogCaptureFixture
) -> None:
    await webhook_play_then_log(house, serializd, later=5 * 60)
    await house.sync()
    delete_on_trakt(trakt, 1, 2)
    house.advance(120)
    await confirmed_sync(house)
    await house.deliver()
    with caplog.at_level(logging.INFO, logger="watchbridge.readers.serializd"):
        await full_sync(house)
        house.advance(120)
        await full_sync(house)
    told = [r for r in caplog.records if "your own log of it is left in your diary" in r.message]
    assert len(told) == 1
