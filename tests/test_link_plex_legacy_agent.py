"""A Plex library on the legacy agents (TheTVDB for shows, IMDb for movies: `com.plexapp.agents.*`
guids, no `Guid[]`, no plex:// ids) and the plex-trakt link: a webhook play of such an item, held
by a Trakt outage while the link runs, must reach Trakt once, and Plex must not get it back.

On the legacy agents the link leaves those titles alone (keyed by TMDB ids, which they lack).
The README's fix is to switch the library to Plex's current agents: from then on the link keys
the same items (same ratingKeys, views and history) by TMDB id, while a play queued before the
switch still names the item by its legacy address alone. The link must know that play is on
its way and not copy it a second time.

The fakes over real HTTP; the household rig's real clock, with "an hour passes" made by the
outbox's retry time (as the month-long household does)."""

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

LINK = "plex-trakt"
SERVER = "d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"  # the webhook samples' Server.uuid
SHOW, FELINA = "72962", "73155"  # the legacy episode sample's ratingKeys
HEAT = "1187"  # the legacy IMDb movie sample's ratingKey
BB_TVDB = 81189


class Household(HouseholdRig):
    TARGETS = ("trakt", "plex")

    def plex_plays(self, sample: str, rating_key: str) -> None:
        """The owner finishes the sample's item on Plex: a view and history row on the
        server, and its `media.scrobble` webhook taken by the webhook route's ingest."""
        now = time.time() - 600
        plex: FakePlex = self.fakes["plex"]
        plex.watch(rating_key, now)
        body = sample_json("plex", sample)
        body["Metadata"]["lastViewedAt"] = int(now)
        body["Metadata"]["viewCount"] = plex.user_state(rating_key)["viewCount"]
        parsed = parse("plex", json.dumps(body).encode(), "application/json")
        assert isinstance(parsed, Accepted)
        for event in parsed.events:
            assert self.runtime.store.ingest(ingest_job(self.runtime, "me", event))

    def an_hour_passes(self) -> None:
        """Every delivery waiting for its retry is due (the rig's clock is real)."""
        self.runtime.store.db.execute(
            "UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'"
        )

    def waiting(self) -> int:
        found = self.runtime.store.db.execute(
            "SELECT COUNT(*) FROM outbox WHERE status = 'pending'"
        ).fetchone()
        return int(found[0])

    async def trakt_outage(self) -> None:
        """Trakt answers 503 while the webhook's row is tried (it waits an hour), then answers
        again: the row still waits."""
        trakt: FakeTrakt = self.fakes["trakt"]
        trakt.fail_next(10**9, 503)
        await self.deliver()
        trakt.clear_knobs()
        assert self.waiting() == 1

    async def link_runs_then_all_settles(self) -> None:
        """The link runs (full) while the held row waits, then the hour passes: everything is
        delivered, and the link runs twice more."""
        await run_link(self.config, self.runtime.store, LINK, yes=True, full=True)
        self.an_hour_passes()
        await self.deliver()
        for _ in range(2):
            self.an_hour_passes()
            await self.run_in_turn((LINK,), full=True)
        assert self.waiting() == 0

    def switch_to_current_agents(self) -> None:
        """Both libraries switched to Plex Movie / Plex TV Series and refreshed: the same
        items (ratingKeys, views, history), now with plex:// guids and Guid[] ids."""
        plex: FakePlex = self.fakes["plex"]
        trakt: FakeTrakt = self.fakes["trakt"]
        plex.sections["2"]["agent"] = "tv.plex.agents.series"
        plex.sections["5"]["agent"] = "tv.plex.agents.movie"
        plex.rematch(SHOW, f"plex://show/{SHOW:0>24}", ["tmdb://1396", f"tvdb://{BB_TVDB}"])
        for number, episode in trakt.shows[0].seasons[5].episodes.items():
            key = episode_key(number)
            plex.rematch(key, f"plex://episode/{key:0>24}", [f"tvdb://{episode.tvdb}"])
        plex.rematch(HEAT, f"plex://movie/{HEAT:0>24}", ["imdb://tt0113277", "tmdb://949"])

    def trakt_plays(self, title: str) -> int:
        trakt: FakeTrakt = self.fakes["trakt"]
        return sum(1 for e in trakt.history() if title in (e.item.title, _show_title(e.item)))


def episode_key(number: int) -> str:
    """The ratingKey of Breaking Bad 5x`number` (Felina, 5x16, is the sample's)."""
    return str(int(FELINA) - 16 + number)


def _show_title(item: Any) -> str | None:
    show = getattr(item, "show", None)
    return getattr(show, "title", None)


@pytest.fixture
def fakes(start_fake: Any) -> dict[str, Any]:
    plex: FakePlex = start_fake(FakePlex(machine_id=SERVER))
    trakt: FakeTrakt = start_fake(FakeTrakt())
    trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=BB_TVDB, seasons={5: 16})
    trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    plex.add_section("5", "Old Movies", "movie", agent="com.plexapp.agents.imdb")
    plex.sections["2"]["agent"] = "com.plexapp.agents.thetvdb"
    plex.add_show(
        SHOW, "Breaking Bad", 2008, guid=f"com.plexapp.agents.thetvdb://{BB_TVDB}?lang=en"
    )
    for number in range(1, 17):
        plex.add_episode(
            episode_key(number),
            SHOW,
            5,
            number,
            guid=f"com.plexapp.agents.thetvdb://{BB_TVDB}/5/{number}?lang=en",
        )
    plex.add_movie(
        HEAT, "Heat", 1995, guid="com.plexapp.agents.imdb://tt0113277?lang=en", section="5"
    )
    return {"plex": plex, "trakt": trakt}


@pytest.fixture
async def household(tmp_path: Path, fakes: dict[str, Any]) -> AsyncIterator[Household]:
    async with open_household(Household, tmp_path, fakes, (LINK,)) as house:
        await house.run_in_turn((LINK,))  # the link's first run: its baseline
        yield house


async def test_a_legacy_tvdb_episode_s_held_webhook_play_reaches_trakt_once(
    household: Household, fakes: dict[str, Any]
) -> None:
    household.plex_plays("episode_legacy_media_scrobble.json", FELINA)
    await household.trakt_outage()

    await household.link_runs_then_all_settles()

    assert household.trakt_plays("Breaking Bad") == 1
    assert fakes["plex"].user_state(FELINA)["viewCount"] == 1  # nothing copied back


async def test_a_legacy_imdb_movie_s_held_webhook_play_reaches_trakt_once(
    household: Household, fakes: dict[str, Any]
) -> None:
    household.plex_plays("movie_legacy_imdb_media_scrobble.json", HEAT)
    await household.trakt_outage()

    await household.link_runs_then_all_settles()

    assert household.trakt_plays("Heat") == 1
    assert fakes["plex"].user_state(HEAT)["viewCount"] == 1  # nothing copied back


async def test_an_episode_s_held_play_is_not_copied_again_once_its_library_left_the_legacy_agent(
    household: Household, fakes: dict[str, Any]
) -> None:
    household.plex_plays("episode_legacy_media_scrobble.json", FELINA)
    await household.trakt_outage()
    household.switch_to_current_agents()

    await household.link_runs_then_all_settles()

    # Before the fix: 2, the link's copy beside the webhook's row.
    assert household.trakt_plays("Breaking Bad") == 1
    assert fakes["plex"].user_state(FELINA)["viewCount"] == 1


async def test_a_movie_s_held_play_is_not_copied_again_once_its_library_left_the_legacy_agent(
    household: Household, fakes: dict[str, Any]
) -> None:
    household.plex_plays("movie_legacy_imdb_media_scrobble.json", HEAT)
    await household.trakt_outage()
    household.switch_to_current_agents()

    await household.link_runs_then_all_settles()

    # Before the fix: 2, the link's copy beside the webhook's row.
    assert household.trakt_plays("Heat") == 1
    assert fakes["plex"].user_state(HEAT)["viewCount"] == 1
