"""The engine's AniList reader factory with pacing lifted and the pinned mapping samples as the
mapping (see `tests.test_link_anilist`)."""

from __future__ import annotations

from typing import Any

from tests.fakes.anime_datasets import sample_bodies
from watchbridge.anime import AnimeIndex, Forward, load_index
from watchbridge.config import Config, Link
from watchbridge.deliver.anilist import index_reverse
from watchbridge.metrics import Metrics
from watchbridge.readers.anilist import AniListReader, Mapper, ReverseMapper
from watchbridge.store import Store
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


def make_reader(
    config: Config,
    store: Store,
    link: Link,
    profiles: list[str],
    clock: Any,
    metrics: Metrics | None = None,
) -> AniListReader:
    client = anilist_client(config, store, clock, per_minute=100_000)
    return AniListReader(client, sample_mapper, store=store, clock=clock, reverse=sample_reverse)
