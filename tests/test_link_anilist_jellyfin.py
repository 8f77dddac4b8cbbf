"""AniList ⇄ Serializd with Jellyfin's webhooks: a Jellyfin episode names its show by the
server's series id only (its TMDB id is read at delivery), and a link must still know the play
(test_link_anilist_serializd covers the same with a generic webhook)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, FakeJellyfin
from tests.fakes.serializd import FakeSerializd
from tests.linkrig_anilist import Rig, status_of
from tests.test_link_anilist_serializd import (
    DAY,
    REZERO,
    REZERO_P2,
    deliver_to,
    link_rig,
    logged,
    part_two_finished,
    started_anilist,
    started_serializd,
)
from watchbridge.app import Runtime
from watchbridge.config import JellyfinConfig, Secret
from watchbridge.ids import Enricher
from watchbridge.model import Account, Ids, MediaEvent, MediaRef
from watchbridge.services.jellyfin import MediaServerClient
from watchbridge.webhooks import ingest_job

pytestmark = pytest.mark.anyio

SERIES = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    return started_serializd(start_fake)


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    return started_anilist(start_fake)


@pytest.fixture
def jellyfin(start_fake: Callable[[FakeServer], FakeServer]) -> FakeJellyfin:
    fake = start_fake(FakeJellyfin("jellyfin"))
    assert isinstance(fake, FakeJellyfin)
    fake.add_series(SERIES, "Re:ZERO", Tmdb=str(REZERO))
    return fake


@pytest.fixture
async def rig(
    tmp_path: Path,
    serializd: FakeSerializd,
    anilist: FakeAniList,
    jellyfin: FakeJellyfin,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Rig]:
    def enricher(runtime: Runtime) -> Enricher:
        client = MediaServerClient(JellyfinConfig(url=jellyfin.url, api_key=Secret(API_KEY)))
        return Enricher(runtime.store, time.time, jellyfin=client, closers=[client.aclose])

    rig = link_rig(tmp_path, serializd, anilist, monkeypatch, enricher)
    yield rig
    await rig.aclose()


def jellyfin_play(rig: Rig, number: int, at: float) -> int:
    """A Jellyfin webhook's play of Re:Zero TMDB S1E`number`, received at `at`."""
    item = MediaRef(
        "episode", ids=Ids(tmdb="1857230"), show_title="Re:ZERO", season=1, number=number,
        show_source_key=SERIES,
    )  # fmt: skip
    event = MediaEvent("jellyfin", "played", item, account=Account("alice"), played=True)
    clock = rig.runtime.clock
    rig.runtime.clock = lambda: at  # the webhook came in then (AniList was down since)
    try:
        return rig.runtime.store.ingest(ingest_job(rig.runtime, "me", event))
    finally:
        rig.runtime.clock = clock


async def test_a_jellyfin_rewatch_of_days_ago_is_not_logged_on_serializd_again(
    rig: Rig, serializd: FakeSerializd, anilist: FakeAniList
) -> None:
    await part_two_finished(rig, serializd, anilist, days_ago=30)
    assert jellyfin_play(rig, 39, time.time() - 2 * DAY) == 2
    await deliver_to(rig, ["serializd", "anilist"])
    assert status_of(anilist, REZERO_P2) == ("REPEATING", 1, 0)
    assert len(logged(serializd, REZERO)) == 13  # the rewatch, once
    await rig.sync_and_deliver(full=True)
    assert len(logged(serializd, REZERO)) == 13, "the rewatch was logged on Serializd twice"
