"""A Plex rating whose webhook row still waits for Trakt (held after an outage) when the
plex-trakt link runs: Plex shows the rating, Trakt not yet. The link must not queue a copy of
it: the webhook's row brings it. (The soak queued such copies after its Trakt outage; named by
another id than the webhook's row, a copy does not take turns with it, and landing after the
user cleared the rating on Plex it would put the rating back.)"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import FakePlex
from tests.fakes.trakt import FakeTrakt
from tests.household import HouseholdRig, open_household
from tests.ingest_samples import sample_json
from watchbridge.ingest import parse
from watchbridge.model import Accepted
from watchbridge.sync import run_link
from watchbridge.webhooks import ingest_job

pytestmark = pytest.mark.anyio

ARRIVAL = "48213"  # the ratingKey of the Plex webhook samples' movie
LINK = "plex-trakt"


class Household(HouseholdRig):
    TARGETS = ("trakt", "plex")

    def plex_rates_arrival(self, rating: float | None) -> None:
        """The user rates Arrival `rating` (None: clears it) on Plex: the server's state and
        its `media.rate` webhook, taken by the webhook route's ingest."""
        now = time.time()
        plex: FakePlex = self.fakes["plex"]
        plex.rate(ARRIVAL, rating, now)
        body = sample_json("plex", "movie_media_rate.json")
        body["rating"] = "-1" if rating is None else str(rating)
        body["Metadata"]["lastRatedAt"] = int(now)
        if rating is None:
            body["Metadata"].pop("userRating", None)
        else:
            body["Metadata"]["userRating"] = rating
        parsed = parse("plex", json.dumps(body).encode(), "application/json")
        assert isinstance(parsed, Accepted)
        for event in parsed.events:
            assert self.runtime.store.ingest(ingest_job(self.runtime, "me", event))

    async def run_without_delivering(self) -> int:
        # In full: a rating alone changes nothing the cheap check of the fake Plex sees.
        result = await run_link(self.config, self.runtime.store, LINK, yes=True, full=True)
        return result.queued

    def trakt_rating_of_arrival(self) -> int | None:
        trakt: FakeTrakt = self.fakes["trakt"]
        return next((r.rating for r in trakt.ratings() if r.item.title == "Arrival"), None)


@pytest.fixture
def fakes(start_fake: Any) -> dict[str, Any]:
    plex: FakePlex = start_fake(FakePlex())
    trakt: FakeTrakt = start_fake(FakeTrakt())
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    plex.add_movie(ARRIVAL, "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    return {"plex": plex, "trakt": trakt}


@pytest.fixture
async def household(tmp_path: Path, fakes: dict[str, Any]) -> AsyncIterator[Household]:
    async with open_household(Household, tmp_path, fakes, (LINK,)) as house:
        await house.run_in_turn((LINK,))  # the link's first run: its baseline
        yield house


async def test_a_link_queues_no_copy_of_a_plex_rating_whose_webhook_row_waits_for_trakt(
    household: Household, fakes: dict[str, Any]
) -> None:
    household.plex_rates_arrival(8)  # its row for Trakt waits (not delivered: an outage)

    # Before the fix: 1, the link's copy of the rating the webhook's row carries.
    assert await household.run_without_delivering() == 0

    await household.deliver()
    assert household.trakt_rating_of_arrival() == 8
    assert fakes["trakt"].count("POST", "/sync/ratings") == 1  # the webhook's, once
    await household.run_in_turn((LINK,), full=True)
    assert fakes["trakt"].count("POST", "/sync/ratings") == 1
    assert fakes["plex"].user_state(ARRIVAL)["userRating"] == 8.0
