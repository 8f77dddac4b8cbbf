"""A Trakt <-> Serializd link run in-process against both fakes: sync, then drain the outbox
through the real delivery targets. Readers and targets are the real ones; only their pacing is
lifted (the fakes need no politeness), which `use_fast_readers` does by pointing the engine's
reader registry at `tests.linkrig_trakt` / `tests.linkrig_serializd` (factories below).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import quick_refresh_race, sign_in_trakt, watchbridge, write_config
from watchbridge import readers, serializdlist
from watchbridge.accounts import AccountNotes
from watchbridge.app import Runtime
from watchbridge.config import Config, Link, parse_config
from watchbridge.deliver.serializd import SerializdTarget
from watchbridge.deliver.trakt import TraktTarget
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.http import Bucket, Pacer, RetryPolicy
from watchbridge.metrics import Metrics
from watchbridge.readers.serializd import SerializdReader
from watchbridge.readers.trakt import TraktReader, media_types
from watchbridge.services.serializd import SerializdClient
from watchbridge.services.trakt import TraktClient
from watchbridge.store import Store
from watchbridge.sync import RunResult, run_link
from watchbridge.wiring import build_runtime

LINK = "trakt-serializd"
BB = 1396  # Breaking Bad's TMDB id: the show both fakes of the link know (tests/conftest.py)
FAST = 1000.0  # requests per second: the fakes need no pacing
PROFILE = "me"


def fast_trakt(config: Config, store: Store, rate: float = FAST) -> TraktClient:
    trakt = quick_refresh_race(config).services.trakt
    assert trakt is not None
    client = TraktClient(trakt, store)
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    for profile in config.profiles:
        client.http.pacers[profile] = Pacer(
            {"write": Bucket(rate, rate), "read": Bucket(rate, rate)}
        )
    return client


def fast_serializd(
    config: Config, store: Store, rate: float = FAST, clock: Callable[[], float] = time.time
) -> SerializdClient:
    assert config.services.serializd is not None
    accounts = {p: a for p, prof in config.profiles.items() if (a := prof.accounts.serializd)}
    client = SerializdClient(
        config.services.serializd, store, accounts=accounts, clock=clock, requests_per_second=rate
    )
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    return client


READ_RATE = {"rate": FAST}  # the bench sets its own
LAST_READERS: list[Any] = []  # the readers of the last run (their request counts)


def trakt_reader(
    config: Config,
    store: Store,
    link: Link,
    profiles: list[str],
    clock: Any,
    metrics: Metrics | None = None,
) -> TraktReader:
    client = fast_trakt(config, store, READ_RATE["rate"])
    reader = TraktReader(client, media_types(link), clock, store)  # as make_reader builds it
    LAST_READERS.append(reader)
    return reader


def serializd_reader(
    config: Config,
    store: Store,
    link: Link,
    profiles: list[str],
    clock: Any,
    metrics: Metrics | None = None,
) -> SerializdReader:
    # On the link's clock, as `make_reader` has it: Serializd's clock skew is read against it.
    client = fast_serializd(config, store, READ_RATE["rate"], clock)
    reader = SerializdReader(client, store, clock)
    LAST_READERS.append(reader)
    return reader


def fast_list_client(
    config: Config, store: Store, clock: Callable[[], float], metrics: Metrics | None = None
) -> SerializdClient:
    """The watchlist part's Serializd client (`serializdlist.serializd_client`), paced as
    the readers are here (not 2 requests a second)."""
    return fast_serializd(config, store)


def use_fast_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(readers.READERS, "trakt", "tests.linkrig_trakt")
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    monkeypatch.setattr(serializdlist, "serializd_client", fast_list_client)


@dataclass
class Rig:
    trakt: FakeTrakt
    serializd: FakeSerializd
    runtime: Runtime
    targets: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.runtime.store

    async def sync(self, **options: Any) -> RunResult:
        return await run_link(
            self.runtime.config, self.store, LINK, yes=True, clock=time.time, **options
        )

    async def deliver(self, passes: int = 50) -> None:
        worker = DeliveryWorker(lambda _: list(self.targets.values()), self.runtime.config.delivery)
        worker.targets = dict(self.targets)
        for _ in range(passes):
            if not await worker.pass_once(self.runtime):
                return

    async def sync_and_deliver(self, **options: Any) -> RunResult:
        result = await self.sync(**options)
        await self.deliver()
        return result

    async def aclose(self) -> None:
        for target in self.targets.values():
            await target.aclose()
        self.runtime.close()


def open_rig(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    link_options: str = "",
    serializd_account: tuple[str, str] = ALICE[:2],
    trakt_sign_in: bool = True,
) -> Rig:
    """The link's rig on the database in `tmp_path`; the profile signs in to Serializd with
    `serializd_account` (email, password), and to Trakt as its default user unless told not
    to (the sign-in kept in the database stays)."""
    text = rig_config(tmp_path, trakt, serializd, link_options, serializd_account)
    config = parse_config(text, Path("watchbridge.yaml"), {})
    return rig_for(config, trakt, serializd, {PROFILE: None} if trakt_sign_in else {})


@asynccontextmanager
async def ratings_rig(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    """The link between Trakt knowing Breaking Bad's first two seasons and Serializd's
    reference catalogue (Breaking Bad with its season ids), for tests of show and season
    ratings."""
    use_fast_readers(monkeypatch)
    trakt: FakeTrakt = start_fake(FakeTrakt())
    trakt.add_show("Breaking Bad", 2008, tmdb=BB, tvdb=81189, seasons={1: 7, 2: 13})
    serializd: FakeSerializd = start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    # A side here holds a rating or two: the removal guard would hold every removal.
    rig = open_rig(tmp_path, trakt, serializd, link_options=", max_removal_share: 1")
    yield rig
    await rig.aclose()


def rig_config(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    link_options: str = "",
    serializd_account: tuple[str, str] = ALICE[:2],
) -> str:
    """The config text of `open_rig` (also for the CLI, written to a file)."""
    return f"""
storage: {{path: {tmp_path / "wb.db"}}}
{link_config_text(trakt, serializd, link_options, serializd_account)}"""


def link_config_text(
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    link_options: str = "",
    serializd_account: tuple[str, str] = ALICE[:2],
) -> str:
    """The services, profile and link of `rig_config`, without the storage."""
    email, password = serializd_account
    return f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  {PROFILE}:
    accounts:
      trakt: {{}}
      serializd: {{email: {email}, password: "{password}"}}
links:
  {LINK}: {{services: [trakt, serializd]{link_options}}}
"""


def link_config_file(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, link_options: str = ""
) -> Path:
    """The link's config for the CLI and the service: `watchbridge.yaml` in `tmp_path`, its
    database `watchbridge.db` beside it (`write_config`), profile me signed in to Trakt as
    `watchbridge auth trakt` leaves it."""
    path = write_config(tmp_path, link_config_text(trakt, serializd, link_options))
    with Store.open(tmp_path / "watchbridge.db") as store:
        sign_in_trakt(store, trakt, PROFILE, now=time.time())
    return path


def sync_by_cli(path: Path, *args: str) -> str:
    """`watchbridge sync --link trakt-serializd ARGS` on the config at `path`: what it printed,
    once it has succeeded."""
    result = watchbridge("sync", "--link", LINK, "--config", str(path), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def rig_for(
    config: Config,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    signed_in: Mapping[str, str | None],
) -> Rig:
    """The runtime of `config` with the link's targets; each profile of `signed_in` signed in
    to Trakt as that fake user (None: the fake's default one)."""
    config = quick_refresh_race(config)
    runtime = build_runtime(config)
    runtime.open()
    for profile, user in signed_in.items():
        sign_in_trakt(runtime.store, trakt, profile, now=time.time(), user=user)
    rig = Rig(trakt, serializd, runtime)
    delivery = config.delivery
    accounts = AccountNotes(runtime.store, config, time.time)  # as wiring does
    rig.targets = {
        "trakt": TraktTarget(
            fast_trakt(config, runtime.store), runtime.store, delivery, time.time, accounts=accounts
        ),
        "serializd": SerializdTarget(
            fast_serializd(config, runtime.store),
            runtime.store,
            delivery,
            time.time,
            accounts=accounts,
        ),
    }
    return rig
