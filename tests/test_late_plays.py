"""Plays that reach watchbridge late and out of order: a phone's downloaded episodes watched on
a plane, the Plex server learning of the views days later when the phone syncs (its webhook
then, or none), against Plex ⇄ Trakt. Each viewing lands once, at the time it was watched."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import FakePlex
from tests.fakes.trakt import FakeTrakt, parse_iso
from tests.household import DAY, HouseholdRig, open_household
from tests.ingest_samples import plex_scrobble_now, sample_json
from tests.linkrig_anilist import iso
from watchbridge.ingest import parse
from watchbridge.model import Accepted
from watchbridge.webhooks import ingest_job

pytestmark = pytest.mark.anyio

ARRIVAL = "48213"  # the ratingKey of the Plex webhook samples' movie
HEAT = "48100"


class Household(HouseholdRig):
    TARGETS = ("trakt", "plex")

    def plex_scrobble(self, viewed_at: float) -> None:
        """Plex's `media.scrobble` of Arrival, as the server sends it when it learns of a view
        (`lastViewedAt`: the view's time), taken by the webhook route's ingest."""
        body = plex_scrobble_now("movie_media_scrobble.json", viewed_at)
        parsed = parse("plex", json.dumps(body).encode(), "application/json")
        assert isinstance(parsed, Accepted)
        for event in parsed.events:
            assert self.runtime.store.ingest(ingest_job(self.runtime, "me", event))

    def trakt_arrival(self) -> list[float]:
        trakt: FakeTrakt = self.fakes["trakt"]
        return sorted(parse_iso(h.watched_at) for h in trakt.history() if h.item.title == "Arrival")


@pytest.fixture
def fakes(start_fake: Any) -> dict[str, Any]:
    plex: FakePlex = start_fake(FakePlex())
    trakt: FakeTrakt = start_fake(FakeTrakt())
    heat = trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    plex.add_movie(HEAT, "Heat", 1995, ["imdb://tt0113277", "tmdb://949"])
    plex.add_movie(ARRIVAL, "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    # Both sides already hold a viewing of long ago: the link has met them before.
    plex.watch(HEAT, time.time() - 200 * DAY)
    trakt.add_history(heat, iso(time.time() - 200 * DAY))
    return {"plex": plex, "trakt": trakt}


@pytest.fixture
async def household(tmp_path: Path, fakes: dict[str, Any]) -> AsyncIterator[Household]:
    async with open_household(Household, tmp_path, fakes, ("plex-trakt",)) as house:
        await house.run_in_turn(("plex-trakt",))  # the link's first run: its baseline
        yield house


async def test_an_offline_view_synced_days_later_reaches_trakt_once_at_its_time(
    household: Household, fakes: dict[str, Any]
) -> None:
    # Watched on the plane three days ago; the phone syncs now: Plex's history gets the view at
    # its real time, and its webhook comes now. Dated "now", the webhook's play and Plex's
    # row were 3 days apart: the link copied each to the other side (two plays everywhere).
    watched = time.time() - 3 * DAY
    fakes["plex"].watch(ARRIVAL, watched)
    household.plex_scrobble(watched)
    await household.deliver()
    for _ in range(2):
        await household.run_in_turn(("plex-trakt",), full=True)
    assert household.trakt_arrival() == [pytest.approx(watched, abs=120)]
    assert fakes["plex"].user_state(ARRIVAL)["viewCount"] == 1


async def test_a_late_webhook_after_the_link_copied_the_view_adds_nothing(
    household: Household, fakes: dict[str, Any]
) -> None:
    # The link's run read the synced view first and copied it; Plex's webhook of it comes after.
    watched = time.time() - 3 * DAY
    fakes["plex"].watch(ARRIVAL, watched)
    await household.run_in_turn(("plex-trakt",))
    assert household.trakt_arrival() == [pytest.approx(watched, abs=120)]
    household.plex_scrobble(watched)
    await household.deliver()
    for _ in range(2):
        await household.run_in_turn(("plex-trakt",), full=True)
    assert household.trakt_arrival() == [pytest.approx(watched, abs=120)]
    assert fakes["plex"].user_state(ARRIVAL)["viewCount"] == 1


async def test_a_live_scrobble_from_a_server_clock_hours_off_is_dated_now(
    household: Household, fakes: dict[str, Any]
) -> None:
    # A NAS without time sync, 20 hours slow: its scrobble's `lastViewedAt` is no late view.
    household.plex_scrobble(time.time() - 20 * 3600)
    await household.deliver()
    assert household.trakt_arrival() == [pytest.approx(time.time(), abs=120)]


async def test_without_a_plex_link_a_scrobble_is_dated_now_whatever_its_last_viewed_at(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    # Webhooks only: no Plex link pairs a view with its history row, so dating a scrobble by
    # `lastViewedAt` wins nothing, and were that the previous view (a rewatch whose media.play
    # was lost, the service down meanwhile), the rewatch would go to Trakt dated then, be
    # taken for the play Trakt holds of it, and be lost: nothing reads Plex's history back.
    async with open_household(Household, tmp_path, fakes, ()) as house:
        body = sample_json("plex", "movie_legacy_imdb_media_scrobble.json")  # Heat, a rewatch
        body["Metadata"]["lastViewedAt"] = int(time.time() - 200 * DAY)  # the earlier view
        parsed = parse("plex", json.dumps(body).encode(), "application/json")
        assert isinstance(parsed, Accepted)
        for event in parsed.events:
            assert house.runtime.store.ingest(ingest_job(house.runtime, "me", event))
        await house.deliver()
    trakt: FakeTrakt = fakes["trakt"]
    heat = sorted(parse_iso(h.watched_at) for h in trakt.history() if h.item.title == "Heat")
    assert heat == [
        pytest.approx(time.time() - 200 * DAY, abs=120),
        pytest.approx(time.time(), abs=120),
    ]


async def test_a_trakt_play_added_backdated_past_a_week_reaches_plex_at_the_daily_full_read(
    household: Household, fakes: dict[str, Any]
) -> None:
    # Added in a phone app today, dated ten days back: past the week a delta read of Trakt
    # looks back over (it asks for plays by their date), so only the daily full read sees it.
    trakt: FakeTrakt = fakes["trakt"]
    arrival = next(m for m in trakt.movies if m.title == "Arrival")
    trakt.log_play(arrival, iso(time.time() - 10 * DAY))
    await household.run_in_turn(("plex-trakt",))
    await household.run_in_turn(("plex-trakt",), full=True)
    assert fakes["plex"].user_state(ARRIVAL)["viewCount"] == 1
    await household.run_in_turn(("plex-trakt",), full=True)
    assert household.trakt_arrival() == [pytest.approx(time.time() - 10 * DAY, abs=120)]
