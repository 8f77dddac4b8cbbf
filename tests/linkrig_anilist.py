"""The engine's AniList reader factory with pacing lifted and the pinned mapping samples as the
mapping (see `tests.test_link_anilist`); absolute numbers are placed on the season lists of the
link's other side, read through fast clients (`season_lists`). `Rig` runs an AniList link
in-process against the fakes: sync, then drain the outbox through the real targets."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.fakes.anilist import Entry, FakeAniList
from tests.fakes.anime_datasets import sample_bodies
from tests.linkrig import fast_serializd, fast_trakt
from watchbridge.anime import AnimeIndex, Forward, load_index
from watchbridge.anime_seasons import (
    AbsoluteSeasons,
    SeasonSources,
    SerializdSeasons,
    TraktSeasons,
    other_side,
)
from watchbridge.app import Runtime
from watchbridge.config import Config, Link
from watchbridge.deliver.anilist import AniListTarget, index_reverse
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.metrics import Metrics
from watchbridge.narrow import Narrowing
from watchbridge.readers.anilist import AniListReader, Mapper, ReverseMapper
from watchbridge.services.anilist import FuzzyDate
from watchbridge.store import Store
from watchbridge.sync import RunResult, run_link
from watchbridge.wiring import anilist_client

_INDEX: list[AnimeIndex] = []


def sample_index() -> AnimeIndex:
    if not _INDEX:
        _INDEX.append(load_index(sample_bodies()))
    return _INDEX[0]


async def sample_mapper() -> Mapper:
    index = sample_index()

    def mapper(anilist: int, episode: int, total: int | None) -> Forward:
        return index.episode_for(anilist, episode, "tmdb", total)

    return mapper


async def sample_reverse() -> ReverseMapper:
    return index_reverse(sample_index())


def season_lists(config: Config, store: Store, service: str, clock: Any) -> AbsoluteSeasons:
    """`anime_seasons`' season lists of `service` through a client without pacing."""
    if service == "trakt":
        return AbsoluteSeasons(TraktSeasons(fast_trakt(config, store)), store, clock)
    return AbsoluteSeasons(SerializdSeasons(fast_serializd(config, store)), store, clock)


def season_sources(config: Config, store: Store, link: str, clock: Any) -> SeasonSources:
    """The AniList target's season lists for rows of `link` (and webhooks)."""
    other = other_side(config, config.links[link])
    assert other is not None
    return SeasonSources({other: season_lists(config, store, other, clock)}, {link: other}, other)


def make_reader(
    config: Config,
    store: Store,
    link: Link,
    profiles: list[str],
    clock: Any,
    metrics: Metrics | None = None,
) -> AniListReader:
    client = anilist_client(config, store, clock, per_minute=100_000)
    other = other_side(config, link)
    seasons = season_lists(config, store, other, clock) if other else None
    return AniListReader(
        client,
        sample_mapper,
        store=store,
        clock=clock,
        reverse=sample_reverse,
        seasons=seasons,
        movies=link.movies,
        other=next((name for name in link.services if name != "anilist"), "trakt"),  # as built
    )


def anilist_target(config: Config, store: Store, link: str) -> AniListTarget:
    """The AniList delivery target without pacing, mapping through the pinned samples and
    placing absolute numbers on the season lists of `link`'s other side."""
    return AniListTarget(
        anilist_client(config, store, time.time, per_minute=100_000),
        store,
        config.delivery,
        time.time,
        sample_reverse,
        seasons=season_sources(config, store, link, time.time),
    )


class Rig:
    def __init__(
        self,
        runtime: Runtime,
        targets: dict[str, Any],
        link: str,
        config_path: Path | None = None,
    ) -> None:
        self.runtime = runtime
        self.targets = targets
        self.link = link
        self.config_path = config_path

    async def sync_and_deliver(
        self,
        narrowing: Narrowing | None = None,
        full: bool = False,
        confirm_removals: bool = False,
    ) -> RunResult:
        result = await self.sync(narrowing, full, confirm_removals)
        await self.deliver()
        return result

    async def sync(
        self,
        narrowing: Narrowing | None = None,
        full: bool = False,
        confirm_removals: bool = False,
    ) -> RunResult:
        """One run of the link, queueing what it plans (nothing delivered)."""
        return await run_link(
            self.runtime.config,
            self.runtime.store,
            self.link,
            yes=True,
            clock=time.time,
            narrowing=narrowing,
            full=full,
            confirm_removals=confirm_removals,
        )

    async def deliver(self) -> None:
        """Drain the outbox through the real targets (rows that wait stay queued)."""
        worker = DeliveryWorker(lambda _: list(self.targets.values()), self.runtime.config.delivery)
        worker.targets = dict(self.targets)
        for _ in range(20):
            if not await worker.pass_once(self.runtime):
                break

    async def aclose(self) -> None:
        for target in self.targets.values():
            await target.aclose()
        self.runtime.close()


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def completed_entry(anilist: FakeAniList, media: int, progress: int, finished: float) -> Entry:
    """An entry completed at `finished` (its finish date that day, last updated then)."""
    return anilist.add_entry(
        media,
        status="COMPLETED",
        progress=progress,
        completed_at=FuzzyDate.of(finished).to_input(),
        updated_at=int(finished),
    )


def status_of(anilist: FakeAniList, media: int) -> tuple[str, int, int]:
    entry = anilist.snapshot()[media]
    return entry["status"], entry["progress"], entry["repeat"]
