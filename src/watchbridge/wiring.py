"""Builds the running service from a config: the runtime, targets, background tasks and routes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from litestar import Litestar

from watchbridge import statuspage, webhooks
from watchbridge.accounts import AccountNotes
from watchbridge.alerts import Notifier
from watchbridge.anime_seasons import season_sources
from watchbridge.app import BackgroundTask, Runtime, create_app
from watchbridge.catalogue import CatalogueNumbering
from watchbridge.catchup import CatchUp
from watchbridge.causes import server_named
from watchbridge.config import MEDIA_SERVERS, Config, Secret
from watchbridge.deliver.anilist import AniListTarget, Renumber, Reverse
from watchbridge.deliver.anilist import index_source as anilist_reverse
from watchbridge.deliver.plex import PlexTarget
from watchbridge.deliver.serializd import SerializdTarget
from watchbridge.deliver.trakt import TraktTarget
from watchbridge.deliver.worker import DeliveryWorker, Target
from watchbridge.homeassistant import HomeAssistantApp
from watchbridge.ids import Enricher, PlexCatalogue
from watchbridge.maintenance import Maintenance, check_anime_datasets
from watchbridge.metrics import Metrics
from watchbridge.model import Ids
from watchbridge.readers.plex import ServerTokens
from watchbridge.redaction import secret_values
from watchbridge.scheduler import SyncScheduler
from watchbridge.services.anilist import AniListClient
from watchbridge.services.jellyfin import media_server_client
from watchbridge.services.plex import PlexClient
from watchbridge.services.plextv import SERVICE as PLEXTV
from watchbridge.services.plextv import PlexTvAuthError, PlexTvClient
from watchbridge.services.serializd import SerializdClient
from watchbridge.services.trakt import TokenStore, TraktClient
from watchbridge.storagewatch import StorageWatch


def seeded_trakt_tokens(config: Config) -> dict[str, Secret]:
    return {
        name: profile.accounts.trakt.refresh_token
        for name, profile in config.profiles.items()
        if profile.accounts.trakt is not None and profile.accounts.trakt.refresh_token
    }


def trakt_client(config: Config, runtime: Runtime) -> TraktClient | None:
    if config.services.trakt is None:
        return None
    return TraktClient(
        config.services.trakt,
        runtime.store,
        metrics=runtime.metrics,
        clock=runtime.clock,
        seeded_refresh_tokens=seeded_trakt_tokens(config),
    )


def plex_client(config: Config, runtime: Runtime) -> PlexClient | None:
    plex = config.services.plex
    if plex is None or not plex.url:
        return None
    identifier = runtime.store.setting(
        "plex_client_identifier", lambda: uuid.uuid4().hex, runtime.clock()
    )
    return PlexClient(
        plex, metrics=runtime.metrics, clock=runtime.clock, client_identifier=identifier
    )


def serializd_client(config: Config, runtime: Runtime) -> SerializdClient | None:
    if config.services.serializd is None:
        return None
    accounts = {
        name: profile.accounts.serializd
        for name, profile in config.profiles.items()
        if profile.accounts.serializd is not None
    }
    return SerializdClient(
        config.services.serializd,
        runtime.store,
        accounts=accounts,
        metrics=runtime.metrics,
        clock=runtime.clock,
    )


def anilist_client(
    config: Config, tokens: TokenStore, clock: Callable[[], float], **kwargs: Any
) -> AniListClient:
    """One AniList client (one pacer: AniList limits per IP) with the config's tokens."""
    assert config.services.anilist is not None
    seeded = {
        name: profile.accounts.anilist.token
        for name, profile in config.profiles.items()
        if profile.accounts.anilist is not None and profile.accounts.anilist.token
    }
    return AniListClient(
        config.services.anilist, tokens, seeded_tokens=seeded, clock=clock, **kwargs
    )


def enricher(runtime: Runtime, trakt: TraktClient | None) -> Enricher:
    """The one id enricher the targets share: the configured media servers (their own
    clients, closed by whichever target closes first) and Trakt's id search when configured."""
    config = runtime.config
    plex = plex_client(config, runtime)
    jellyfin, emby = (
        media_server_client(server, metrics=runtime.metrics, clock=runtime.clock)
        for server in (config.services.jellyfin, config.services.emby)
    )
    catalogue = plex_catalogue(runtime)
    return Enricher(
        runtime.store,
        runtime.clock,
        plex_catalogue=catalogue[0] if catalogue else None,
        plex=plex.metadata if plex else None,
        plex_answers=plex.answers if plex else None,
        plex_identity=plex.identity if plex else None,
        jellyfin=jellyfin,
        emby=emby,
        search=trakt.search if trakt else None,
        title_search=trakt.search_title if trakt else None,
        closers=[
            *(c.aclose for c in (plex, jellyfin, emby) if c is not None),
            *([catalogue[1]] if catalogue else []),
        ],
        notifier=runtime.notifier,
        # A webhook's lookup that meets a refused services.plex.token tells the sign-in health.
        plex_token_health=(
            ServerTokens(config, runtime.store, plex, runtime.clock) if plex else None
        ),
        lift_server_holds=runtime.store.lift_server_holds,
        trakt_told=lambda: trakt_outage_told(runtime),
        server_named={server: server_named(config, server) for server in MEDIA_SERVERS},
    )


def trakt_outage_told(runtime: Runtime) -> bool:
    """Whether an outage alert of Trakt's own deliveries is open (the target's, or a profile's
    pause there): it tells of the plays that wait for Trakt's id search too."""
    keys = ["trakt", *(f"trakt:{name}" for name in runtime.config.profiles)]
    return any(runtime.notifier.raised("service_unreachable", key) for key in keys)


CATALOGUE_TOKEN = ":owner"  # the catalogue client's one token: the owner's services.plex.token


def plex_catalogue(
    runtime: Runtime,
) -> tuple[PlexCatalogue, Callable[[], Awaitable[None]]] | None:
    """Plex's catalogue (services.plex.metadata_url), read with the owner's plex.tv token,
    and its closer: it names the show of a play on a friend's Plex server, whose items
    services.plex.url cannot read. None without services.plex.token."""
    plex = runtime.config.services.plex
    if plex is None or plex.token is None:
        return None
    identifier = runtime.store.setting(
        "plex_client_identifier", lambda: uuid.uuid4().hex, runtime.clock()
    )
    client = PlexTvClient(
        plex,
        runtime.store,
        client_identifier=identifier,
        account_tokens={CATALOGUE_TOKEN: plex.token},
        metrics=runtime.metrics,
        clock=runtime.clock,
    )

    async def catalogue(key: str) -> Ids | None:
        try:
            found = await client.details(CATALOGUE_TOKEN, key)
        except PlexTvAuthError:  # its words are a profile's sign-in: this is the config's
            raise PlexTvAuthError(
                PLEXTV,
                "plex.tv does not accept services.plex.token (reading a title answered 401): "
                "set the server owner's current token there",
            ) from None
        return found.ids if found is not None else None

    return catalogue, client.aclose


def make_targets(runtime: Runtime) -> Sequence[Target]:
    """The delivery targets the config asks for, built once the store is open."""
    targets: list[Target] = []
    client = trakt_client(runtime.config, runtime)
    serializd = serializd_client(runtime.config, runtime)
    anilist_wanted = runtime.config.services.anilist is not None
    wanted = client is not None or serializd is not None or anilist_wanted
    ids = enricher(runtime, client) if wanted else None
    accounts = AccountNotes(runtime.store, runtime.config, runtime.clock, runtime.notifier)
    if client is not None:
        targets.append(
            TraktTarget(
                client,
                runtime.store,
                runtime.config.delivery,
                runtime.clock,
                enricher=ids,
                accounts=accounts,
            )
        )
    if serializd is not None:
        targets.append(
            SerializdTarget(
                serializd,
                runtime.store,
                runtime.config.delivery,
                runtime.clock,
                enricher=ids,
                accounts=accounts,
            )
        )
    plex_writer = plex_client(runtime.config, runtime)  # its own client: per-profile tokens
    if plex_writer is not None:
        targets.append(PlexTarget(plex_writer, runtime.config, runtime.store, runtime.clock))
    if runtime.config.services.anilist is not None:
        # Deliveries wait out at most 15 s inline; longer 429 timeouts hold the target.
        anilist = anilist_client(
            runtime.config,
            runtime.store,
            runtime.clock,
            metrics=runtime.metrics,
            max_inline_wait=15,
        )
        targets.append(
            AniListTarget(
                anilist,
                runtime.store,
                runtime.config.delivery,
                runtime.clock,
                anime_mapping(runtime),
                seasons=season_sources(
                    runtime.config, runtime.store, runtime.clock, runtime.metrics
                ),
                enricher=ids,
                renumber=tmdb_renumber(serializd, runtime, ids),
                accounts=accounts,
            )
        )
    return targets


def anime_mapping(runtime: Runtime) -> Callable[[], Awaitable[Reverse]]:
    """The AniList deliveries' anime mapping, on the runtime's clock; while no dataset is
    downloaded, and once one is, the datasets' alert is checked at once (not hourly)."""

    async def told() -> None:
        await check_anime_datasets(runtime)

    return anilist_reverse(runtime.config, runtime.clock, told)


def tmdb_renumber(
    serializd: SerializdClient | None, runtime: Runtime, ids: Enricher | None
) -> Renumber | None:
    """Webhook episodes numbered as TMDB does, through Serializd's (TMDB's) catalogue when
    Serializd is configured (its client, shared with its own target)."""
    if serializd is None:
        return None
    return CatalogueNumbering(serializd, runtime.store, ids, runtime.clock)


def build_runtime(
    config: Config,
    clock: Callable[[], float] = time.time,
    notifier: Notifier | None = None,
    backup_on_stop: bool = False,
    uptime: Callable[[], float] | None = None,
    home_assistant: HomeAssistantApp | None = None,
) -> Runtime:
    metrics = Metrics()
    if notifier is None:
        notifier = Notifier(
            config.alerts,
            clock=clock,
            on_sent=lambda kind, result: metrics.alerts.labels(kind, result).inc(),
            secrets=secret_values(config),
            commands_help=home_assistant is not None,
        )
    return Runtime(
        home_assistant=home_assistant,
        config=config,
        metrics=metrics,
        notifier=notifier,
        clock=clock,
        uptime=uptime,
        backup_on_stop=backup_on_stop,
    )


def build_app(runtime: Runtime) -> Litestar:
    """The whole service: webhook routes plus the delivery worker."""
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    runtime.on_enqueued.append(worker.notify)
    tasks: list[BackgroundTask] = [
        worker,
        Maintenance(),
        SyncScheduler(),
        StorageWatch(),
        CatchUp(),
    ]
    return create_app(runtime, tasks=tasks, extra_routes=[*webhooks.ROUTES, *statuspage.ROUTES])
