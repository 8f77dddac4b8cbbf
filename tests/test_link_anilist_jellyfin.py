"""A Jellyfin webhook rewatch delivered to AniList and Serializd days later is paired on the
next full anilist<->serializd run, as the same play from a generic webhook is
(tests/test_link_anilist_serializd.py::test_a_webhook_rewatch_of_days_ago_is_dated_...).

`AniListReader._webhook_times` keys delivered webhook rows by `key_for_ref` on the stored
ref: a Jellyfin episode names its show by Jellyfin's SeriesId only (its TMDB id is looked up at
delivery and never written back), so the key is None and AniList's step keeps the date
AniList took it: the full run logs the rewatch on Serializd a second time."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, FakeJellyfin
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.linkrig import fast_serializd, use_fast_readers
from tests.linkrig_anilist import Rig, anilist_target, completed_entry, iso, status_of
from tests.test_link_anilist_serializd import DAY, REZERO, REZERO_P2, deliver_to, logged
from watchbridge import readers
from watchbridge.config import JellyfinConfig, Secret, parse_config
from watchbridge.deliver.serializd import SerializdTarget
from watchbridge.ids import Enricher
from watchbridge.model import Account, Ids, MediaEvent, MediaRef
from watchbridge.services.jellyfin import MediaServerClient
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

LINK = "anilist-serializd"
SERIES = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = start_fake(FakeSerializd())
    assert isinstance(fake, FakeSerializd)
    fake.add_show(REZERO, "Re:ZERO", {1: 66, 2: 25})
    return fake


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    fake.limit = fake.burst_limit = 100_000
    fake.add_media(REZERO_P2, episodes=12)
    return fake


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
    use_fast_readers(monkeypatch)
    monkeypatch.setitem(readers.READERS, "anilist", "tests.linkrig_anilist")
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  serializd: {{api_url: "{serializd.url}"}}
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
profiles:
  me:
    users: {{jellyfin: [alice]}}
    accounts:
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
      anilist: {{token: "{anilist.issue_token()}"}}
links:
  {LINK}: {{services: [anilist, serializd]}}
"""
    config = parse_config(text, tmp_path / "watchbridge.yaml", {})
    runtime = build_runtime(config)
    runtime.open()

    def enricher() -> Enricher:
        client = MediaServerClient(JellyfinConfig(url=jellyfin.url, api_key=Secret(API_KEY)))
        return Enricher(runtime.store, time.time, jellyfin=client, closers=[client.aclose])

    to_anilist = anilist_target(config, runtime.store, LINK)
    to_anilist.enricher = enricher()
    targets: dict[str, Any] = {
        "serializd": SerializdTarget(
            fast_serializd(config, runtime.store),
            runtime.store,
            config.delivery,
            time.time,
            enricher=enricher(),
        ),
        "anilist": to_anilist,
    }
    rig = Rig(runtime, targets, LINK)
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
    finished = time.time() - 30 * DAY
    for number in range(39, 51):
        serializd.log_entry(None, REZERO, 1, number, backdate=iso(finished - (50 - number) * 60))
    completed_entry(anilist, REZERO_P2, 12, finished)
    await rig.sync_and_deliver()
    assert jellyfin_play(rig, 39, time.time() - 2 * DAY) == 2
    await deliver_to(rig, ["serializd", "anilist"])
    assert status_of(anilist, REZERO_P2) == ("REPEATING", 1, 0)
    assert len(logged(serializd, REZERO)) == 13  # the rewatch, once
    await rig.sync_and_deliver(full=True)
    assert len(logged(serializd, REZERO)) == 13, "the rewatch was logged on Serializd twice"
