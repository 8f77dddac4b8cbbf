"""The engine's AniList reader factory with pacing lifted and the pinned mapping samples as the
mapping (see `tests.test_link_anilist`); absolute numbers are placed on the season lists of the
link's other side, read through fast clients (`season_lists`)."""

from __future__ import annotations

from typing import Any

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
from watchbridge.config import Config, Link
from watchbridge.deliver.anilist import index_reverse
from watchbridge.metrics import Metrics
from watchbridge.readers.anilist import AniListReader, Mapper, ReverseMapper, holds_movies
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


def season_lists(config: Config, store: Store, service: str, clock: Any) -> AbsoluteSeasons:
    """`anime_seasons`' season lists of `service` through a client without pacing."""
    if service == "trakt":
        return AbsoluteSeasons(TraktSeasons(fast_trakt(config, store)), store, clock)
    return AbsoluteSeasons(SerializdSeasons(fast_serializd(config, store)), store, clock)


def season_sources(config: Config, store: Store, link: str, clock: Any) -> SeasonSources:
    """The AniList target's season lists for rows of `link` (and webhooks)."""
    other = other_side(config.links[link])
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
    other = other_side(link)
    seasons = season_lists(config, store, other, clock) if other else None
    return AniListReader(
        client,
        sample_mapper,
        store=store,
        clock=clock,
        reverse=sample_reverse,
        seasons=seasons,
        movies=holds_movies(link),
    )
