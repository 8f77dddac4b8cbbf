"""The walkthroughs' running household: the real app (real HTTP, `AppThread`) on a config file
and its database, stopped and started again as an update or a reboot would, on one clock that
`shift` moves for the app and for the fakes of the online services."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, Self

import httpx

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.jellyfin import FakeJellyfin
from tests.fakes.trakt import FakeTrakt
from tests.harness import AppThread, settle, sign_in_trakt, wait_for, watchbridge
from watchbridge.app import Runtime
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.store import Store
from watchbridge.sync import RunResult, causes_of, failure_of, report_run, run_link
from watchbridge.wiring import build_app, build_runtime, make_targets


class Clock:
    """The app's clock and its services': the wall clock moved by `ahead` seconds."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


class Advances(Protocol):
    """A fake whose own clock a test moves (`advance`)."""

    def advance(self, seconds: float) -> None: ...


class RunningHouse:
    """The app of `config` on `clock`, while started (`start`, `stop`, or a `with`), with
    `profile` signed in to the fake `trakt` before each start where given; `shift` moves the
    clock and each of `moved` alike."""

    def __init__(
        self,
        config: Path,
        clock: Clock,
        moved: tuple[Advances, ...] = (),
        *,
        trakt: FakeTrakt | None = None,
        profile: str = "alex",
    ) -> None:
        self.config, self.clock, self.moved = config, clock, moved
        self.signs_in, self.profile = trakt, profile
        self.db = Path(load_config(config, {}).storage.path)
        self.runtime: Runtime | None = None  # the last start's, kept after its stop
        self.running: AppThread | None = None

    @property
    def app(self) -> AppThread:
        assert self.running is not None, "the app is not running"
        return self.running

    def start(self) -> Self:
        if self.signs_in is not None:
            # Before the app starts, as `watchbridge auth trakt` is run: a link's first run
            # or a delivery at once must not meet a profile not signed in yet.
            with Store.open(self.db) as store:
                sign_in_trakt(store, self.signs_in, self.profile, now=self.clock())
        self.runtime = build_runtime(load_config(self.config, {}), clock=self.clock)
        self.running = AppThread(build_app(self.runtime)).__enter__()
        return self

    def stop(self) -> None:
        if self.running is not None:
            self.running.__exit__(None, None, None)
            self.running = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def shift(self, seconds: float) -> None:
        """Time passes for the app and the online services."""
        self.clock.ahead += seconds
        for fake in self.moved:
            fake.advance(seconds)

    def settle(self) -> None:
        """Until nothing is due: every row done, given up, or waiting for a later try."""
        settle(self.db, self.clock)

    def status(self) -> str:
        """What `watchbridge status` prints."""
        said = watchbridge("status", "--config", str(self.config))
        assert said.returncode == 0, said.stderr
        return said.stdout

    def api_status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.app.url}/api/status").json())


async def scheduled_run(
    runtime: Runtime, link: str, clock: Callable[[], float], *, full: bool = False
) -> RunResult | str:
    """One run of `link` as the service's scheduler makes it, told to the alerts: its
    result, or why it failed."""
    try:
        result = await run_link(
            runtime.config,
            runtime.store,
            link,
            full=full,
            clock=clock,
            alerts=runtime.notifier,
            metrics=runtime.metrics,
        )
    except Exception as exc:
        error = failure_of(exc) if hasattr(exc, "message") else str(exc)  # type: ignore[arg-type]
        await report_run(runtime.store, runtime.notifier, link, error, causes_of(exc))
        return error
    await report_run(runtime.store, runtime.notifier, link, None)
    return result


async def deliver_due(runtime: Runtime) -> None:
    """Deliver what is due, as `watchbridge sync` does beside the service."""
    worker = DeliveryWorker(make_targets, runtime.config.delivery, role="cli")
    worker.targets = {t.name: t for t in make_targets(runtime)}
    try:
        for _ in range(50):
            if not await worker.pass_once(runtime):
                break
    finally:
        for target in worker.targets.values():
            await target.aclose()


def anilist_service(anilist: FakeAniList, lists: FakeDatasets) -> str:
    """The config's `services.anilist` on the fake AniList, with the anime mapping datasets
    on the fake hosts of `lists`."""
    urls = "".join(f"      {name}: {url}\n" for name, url in lists.urls().items())
    return (
        f'  anilist:\n    api_url: "{anilist.url}"\n    auth_url: "{anilist.auth_url}"\n'
        f"    mapping_urls:\n{urls}"
    )


def reads_of(server: FakeJellyfin, user_id: str) -> int:
    """How many times the catch-up (catchup.py) has asked `server` for `user_id`'s played
    items: the first page of each read."""
    if server.flavour == "jellyfin":
        asked = [r for r in server.calls("GET", "/Items") if r.query.get("userId") == user_id]
    else:
        asked = server.calls("GET", f"/Users/{user_id}/Items")
    return sum(1 for r in asked if r.query.get("StartIndex", "0") == "0")


def read_afresh(server: FakeJellyfin, user_id: str, timeout: float = 30.0) -> None:
    """Wait until a round of the catch-up begun after this call (on the clock as it is now)
    has read `user_id` on `server` and recorded what it found. A round reads its accounts
    one after the other, and the next round only after it is done: the round that reads next
    may have begun (read the clock) before this call, the one after it did not, and that one
    is done when the third read comes."""
    before = reads_of(server, user_id)
    wait_for(lambda: reads_of(server, user_id) >= before + 3, timeout)
