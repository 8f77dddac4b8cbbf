"""A household rig: one profile, several links between the fakes, each link run in turn with
its rows delivered before the next runs (as the scheduler may order them), so that a test can
watch a viewing or a rating go round the links and settle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.plex import TOKEN
from tests.fakes.serializd import ALICE
from tests.fakes.trakt import CLIENT_ID
from tests.harness import sign_in_trakt
from tests.linkrig import fast_list_client, fast_serializd, fast_trakt
from tests.linkrig_anilist import anilist_target
from watchbridge import readers, serializdlist
from watchbridge.app import Runtime
from watchbridge.config import Config, parse_config
from watchbridge.deliver.plex import PlexTarget
from watchbridge.deliver.serializd import SerializdTarget
from watchbridge.deliver.trakt import TraktTarget
from watchbridge.deliver.worker import DeliveryWorker, Target
from watchbridge.sync import run_link
from watchbridge.wiring import build_runtime, plex_client

DAY = 86400.0
AOT, AOT_P2 = 1429, 131681  # TMDB show; AniList: Final Season Part 2 = TMDB S4E17-28

# The services whose readers have a paced-for-tests module in tests/ (Plex's has none).
FAST_READERS = {
    "anilist": "tests.linkrig_anilist",
    "trakt": "tests.linkrig_trakt",
    "serializd": "tests.linkrig_serializd",
}


def use_fast_readers(monkeypatch: pytest.MonkeyPatch, services: Sequence[str]) -> None:
    for service in services:
        if service in FAST_READERS:
            monkeypatch.setitem(readers.READERS, service, FAST_READERS[service])
    if "serializd" in services:
        monkeypatch.setattr(serializdlist, "serializd_client", fast_list_client)


def start_anilist_with_aot_part_2(start_fake: Callable[[Any], Any]) -> FakeAniList:
    """A fake AniList without its rate limit, knowing Final Season Part 2 (12 episodes)."""
    anilist: FakeAniList = start_fake(FakeAniList())
    anilist.limit = anilist.burst_limit = 100_000
    anilist.add_media(AOT_P2, episodes=12)
    return anilist


def _service_and_account(service: str, fake: Any) -> tuple[str, str]:
    """The `services:` entry of `service` on its fake, and the profile's account on it."""
    if service == "trakt":
        return (
            f'{{client_id: {CLIENT_ID}, api_url: "{fake.url}", auth_url: "{fake.url}"}}',
            "{}",
        )
    if service == "serializd":
        return f'{{api_url: "{fake.url}"}}', f'{{email: {ALICE[0]}, password: "{ALICE[1]}"}}'
    if service == "anilist":
        return (
            f'{{api_url: "{fake.url}", auth_url: "{fake.auth_url}"}}',
            f'{{token: "{fake.issue_token()}"}}',
        )
    if service == "plex":
        return f'{{url: "{fake.url}", token: "{TOKEN}"}}', "{}"
    raise ValueError(f"no household config for service {service!r}")


def household_config(
    tmp_path: Path,
    fakes: Mapping[str, Any],
    links: Sequence[str],
    *,
    max_removal_share: float | None = None,
    alerts_url: str | None = None,
) -> Config:
    """Profile `me` on every fake of `fakes` (in that order), and `links` applying their
    first run, holding removals above `max_removal_share` where given; alerts to
    `alerts_url` where given."""
    entries = {service: _service_and_account(service, fake) for service, fake in fakes.items()}
    services = "".join(f"  {name}: {service}\n" for name, (service, _) in entries.items())
    accounts = "".join(f"      {name}: {account}\n" for name, (_, account) in entries.items())
    removals = "" if max_removal_share is None else f", max_removal_share: {max_removal_share}"
    link_entries = "".join(
        f"  {name}: {{services: [{name.replace('-', ', ')}], first_run: apply{removals}}}\n"
        for name in links
    )
    alerts = "" if alerts_url is None else f'alerts: {{urls: ["{alerts_url}"]}}\n'
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
{alerts}services:
{services}profiles:
  me:
    accounts:
{accounts}links:
{link_entries}"""
    return parse_config(text, tmp_path / "watchbridge.yaml", {})


def household_target(service: str, config: Config, runtime: Runtime) -> Target:
    """The delivery target of `service`, without the pacing that would slow a test."""
    store = runtime.store
    if service == "trakt":
        return TraktTarget(fast_trakt(config, store), store, config.delivery, time.time)
    if service == "serializd":
        return SerializdTarget(fast_serializd(config, store), store, config.delivery, time.time)
    if service == "anilist":
        return anilist_target(config, store, "anilist-trakt")
    if service == "plex":
        return PlexTarget(plex_client(config, runtime), config, store, time.time)
    raise ValueError(f"no household target for service {service!r}")


class HouseholdRig:
    """The links' runs and deliveries; a test file's subclass adds what it counts."""

    # The order a delivery pass visits the targets in.
    TARGETS: tuple[str, ...] = ()

    def __init__(self, config: Config, runtime: Runtime, fakes: dict[str, Any]) -> None:
        self.config, self.runtime, self.fakes = config, runtime, fakes
        self.targets = {name: household_target(name, config, runtime) for name in self.TARGETS}

    async def run_in_turn(
        self, links: Sequence[str], *, full: bool = False, deliver_between: bool = True
    ) -> None:
        """Each link run once, its rows delivered before the next runs (or, not
        `deliver_between`, all of them after the last run, as runs due together do)."""
        for n, link in enumerate(links):
            await run_link(self.config, self.runtime.store, link, yes=True, full=full)
            if deliver_between or n == len(links) - 1:
                await self.deliver()

    async def deliver(self) -> None:
        worker = DeliveryWorker(lambda _: list(self.targets.values()), self.config.delivery)
        worker.targets = dict(self.targets)
        for _ in range(20):
            if not await worker.pass_once(self.runtime):
                break

    async def aclose(self) -> None:
        for target in self.targets.values():
            await target.aclose()
        self.runtime.close()


House = TypeVar("House", bound=HouseholdRig)


def household_for(
    make: Callable[[Config, Runtime, dict[str, Any]], House],
    tmp_path: Path,
    fakes: dict[str, Any],
    links: Sequence[str],
    **config_options: Any,
) -> House:
    """The household of `make` over `fakes` and `links` (`config_options`: those of
    `household_config`), its runtime open, signed in to Trakt if it has it; the caller
    closes it (`aclose`)."""
    config = household_config(tmp_path, fakes, links, **config_options)
    runtime = build_runtime(config)
    runtime.open()
    if "trakt" in fakes:
        sign_in_trakt(runtime.store, fakes["trakt"], "me", now=time.time())
    return make(config, runtime, fakes)


@asynccontextmanager
async def open_household(
    make: Callable[[Config, Runtime, dict[str, Any]], House],
    tmp_path: Path,
    fakes: dict[str, Any],
    links: Sequence[str],
) -> AsyncIterator[House]:
    """The household of `make` over `fakes` and `links` (`household_for`), closed after."""
    house = household_for(make, tmp_path, fakes, links)
    try:
        yield house
    finally:
        await house.aclose()
