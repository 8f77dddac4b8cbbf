"""Walkthrough: a household's Plex switched off for good, its lines left in the config.

Alex moved from Plex to Jellyfin (README, *Adding Jellyfin beside Plex*). One day the Plex
machine is gone, but watchbridge's config keeps `services.plex`, the links `plex-serializd`
and `plex-trakt`, `users.plex` and `accounts.plex` for four weeks; then Alex takes them out
and restarts. The links run as the scheduler runs them (every 30 minutes, each outcome told
to the alerts) and the delivery worker passes, on one clock moved by hand; Jellyfin's plays
arrive as its webhooks do. Each test asserts what the user hears, sees and keeps."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, sign_in_trakt, wait_for, watchbridge
from tests.test_walkthrough_anime_jellyfin import Clock
from tests.unpaced import unpaced
from tests.walkthrough import scheduled_run
from watchbridge.app import Runtime
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.http import HttpClient, RetryPolicy
from watchbridge.model import Account, Ids, MediaEvent, MediaRef
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_app, build_runtime, make_targets

pytestmark = pytest.mark.anyio

HOUR, DAY = 3600.0, 86400.0
INTERVAL = 1800.0  # the links' default interval
LINKS = ("plex-serializd", "plex-trakt")
GONE = "watchbridge: Plex unreachable"
BREAKING_BAD = 1396


class Household:
    """Alex's watchbridge over the fakes, on `clock`: the links' runs as the scheduler's, the
    worker's passes, and Jellyfin's plays."""

    def __init__(
        self, path: Path, trakt: FakeTrakt, serializd: FakeSerializd, clock: Clock
    ) -> None:
        self.path, self.trakt, self.serializd, self.clock = path, trakt, serializd, clock
        self.runtime: Runtime | None = None
        self.worker: DeliveryWorker | None = None

    def open(self) -> Runtime:
        runtime = build_runtime(load_config(self.path, {}), clock=self.clock)
        runtime.open()
        self.runtime = runtime
        self.worker = DeliveryWorker(make_targets, runtime.config.delivery)
        self.worker.targets = {t.name: t for t in make_targets(runtime)}
        return runtime

    async def close(self) -> None:
        if self.worker is not None:
            for target in self.worker.targets.values():
                await target.aclose()
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = self.worker = None

    async def run(self, name: str) -> None:
        """One scheduled run of link `name` and what the scheduler tells of it."""
        assert self.runtime is not None
        await scheduled_run(self.runtime, name, self.clock)

    async def deliver(self) -> None:
        assert self.runtime is not None and self.worker is not None
        for _ in range(20):
            if not await self.worker.pass_once(self.runtime):
                break

    def shift(self, seconds: float) -> None:
        self.clock.ahead += seconds
        self.trakt.advance(seconds)
        self.serializd.advance(seconds)

    async def serve_for(self, span: float, every: float = INTERVAL) -> None:
        """`span` seconds of the service: each link run every INTERVAL, deliveries between
        (`every`: a run in so many seconds stands for those between, where what is counted
        goes by the clock, as the alerts' throttle does)."""
        end = self.clock() + span
        while self.clock() < end:
            for name in LINKS:
                await self.run(name)
            await self.deliver()
            self.shift(every)

    def watch_on_jellyfin(self, number: int) -> None:
        """Alex finishes Breaking Bad S3E`number` in Jellyfin: its webhook's play."""
        assert self.runtime is not None
        show = Ids(tmdb=str(BREAKING_BAD), tvdb="81189")
        item = MediaRef(
            "episode", show_ids=show, show_title="Breaking Bad", season=3, number=number
        )
        event = MediaEvent(
            "jellyfin",
            "played",
            item,
            account=Account("Alexander"),
            played=True,
            occurred_at=self.clock() - 60,
        )
        assert self.runtime.store.ingest(ingest_job(self.runtime, "alex", event))


def config_text(
    plex: str, trakt: FakeTrakt, serializd: FakeSerializd, tmp: Path, alerts: str
) -> str:
    return f"""storage: {{path: {tmp / "wb.db"}}}
alerts: {{urls: ["{alerts}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
  plex: {{url: "{plex}", token: "{TOKEN}"}}
profiles:
  alex:
    users: {{plex: ["1"], jellyfin: [Alexander]}}
    accounts:
      plex: {{}}
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  plex-serializd: {{services: [plex, serializd], first_run: apply}}
  plex-trakt: {{services: [plex, trakt], first_run: apply}}
"""


def without_plex(text: str) -> str:
    """The config with Plex's lines taken out, as the README says."""
    text = text.replace('{plex: ["1"], jellyfin: [Alexander]}', "{jellyfin: [Alexander]}")
    gone = ("  plex:", "      plex:", "links:", "  plex-serializd:", "  plex-trakt:")
    return "".join(line for line in text.splitlines(True) if not line.startswith(gone))


@pytest.fixture
async def house(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Household, FakePlex]]:
    unpaced(monkeypatch, "serializd", "trakt")
    # Inline retries without their waits: four weeks of runs in seconds (still 3 attempts).
    monkeypatch.setitem(HttpClient.__init__.__kwdefaults__, "retry", RetryPolicy(backoff=0.0))
    clock = Clock()
    plex = start_fake(FakePlex())
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    assert isinstance(plex, FakePlex) and isinstance(trakt, FakeTrakt)
    assert isinstance(serializd, FakeSerializd)
    serializd.seed_reference_catalogue()
    trakt.add_show("Breaking Bad", 2008, tmdb=BREAKING_BAD, tvdb=81189, seasons={2: 13, 3: 13})
    plex.add_show("20", "Breaking Bad", 2008, [f"tmdb://{BREAKING_BAD}", "tvdb://81189"])
    for n in range(1, 4):
        plex.add_episode(str(100 + n), "20", 2, n)
        plex.watch(str(100 + n), time.time() - 40 * HOUR + n * HOUR)
    path = tmp_path / "watchbridge.yaml"
    path.write_text(config_text(plex.url, trakt, serializd, tmp_path, receiver.apprise_url))
    household = Household(path, trakt, serializd, clock)
    runtime = household.open()
    sign_in_trakt(runtime.store, trakt, "alex", now=clock())
    try:
        for name in LINKS:  # the links' first runs, while Plex still ran
            await household.run(name)
            await household.deliver()
        assert len(trakt.history()) == 3 and len(serializd.diary()) == 3
        yield household, plex
    finally:
        await household.close()


def plex_requests(runtime: Runtime) -> float:
    text = runtime.metrics.render().decode()
    return sum(
        float(value)
        for value in re.findall(
            r'^watchbridge_http_requests_total\{[^}]*service="plex"[^}]*\} (\S+)$', text, re.M
        )
    )


async def test_four_weeks_of_a_plex_switched_off_is_one_alert_reminded_rarely(
    house: tuple[Household, FakePlex], receiver: AlertReceiver
) -> None:
    household, plex = house
    runtime = household.runtime
    assert runtime is not None
    plex.stop()  # the machine is gone: nothing answers at its address
    for day in range(28):
        if day % 3 == 0:  # Alex watches an episode in Jellyfin every third day
            household.watch_on_jellyfin(day // 3 + 1)
        await household.serve_for(DAY, INTERVAL if day < 2 else 4 * INTERVAL)
    asked = plex_requests(runtime)
    await household.serve_for(DAY)  # a 29th day: what the dead server is asked a day
    assert plex_requests(runtime) - asked <= len(LINKS) * (DAY / INTERVAL) * 3
    titles = receiver.titles()
    # One condition, not one per link, reminded ever more rarely: not 2 x 28 daily messages.
    assert set(titles) == {GONE}
    assert len(titles) <= 14
    first = receiver.messages[0]["message"]
    assert "start it again" in first
    assert (
        "take its lines out of the config (services.plex, links.plex-serializd,"
        " links.plex-trakt, profiles.alex.users.plex, profiles.alex.accounts.plex)" in first
    )
    assert "runs of link plex-serializd in a row failed since" in first
    # Jellyfin's plays flowed meanwhile; nothing waits or died.
    assert len(household.trakt.history()) == 3 + 10
    assert len([e for e in household.serializd.diary() if e.show_id == BREAKING_BAD]) == 3 + 10
    assert runtime.store.outbox_counts()["pending"] == 0
    assert runtime.store.outbox_counts()["dead"] == 0
    # The status says since when, not only the last run's error.
    said = watchbridge("status", "--config", str(household.path))
    lines = said.stdout.splitlines()
    line = next(text for text in lines if text.startswith("  plex-trakt: failed"))
    assert "last went through at" in line


async def test_plex_taken_out_of_the_config_ends_its_alert_and_leaves_nothing_alarming(
    house: tuple[Household, FakePlex], receiver: AlertReceiver
) -> None:
    household, plex = house
    plex.stop()
    await household.serve_for(4 * DAY, 4 * INTERVAL)
    assert receiver.titles() and set(receiver.titles()) == {GONE}
    await household.close()
    # Started again with Plex still in the config: the container's healthcheck (/healthz) and
    # /readyz answer 200, so Docker or Unraid does not restart it over and over.
    runtime = build_runtime(load_config(household.path, {}), clock=household.clock)
    with AppThread(build_app(runtime)) as app:
        assert httpx.get(f"{app.url}/healthz").status_code == 200
        assert httpx.get(f"{app.url}/readyz").status_code == 200
    household.path.write_text(without_plex(household.path.read_text()))
    checked = watchbridge("check-config", "--config", str(household.path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not [line for line in checked.stdout.splitlines() if line.startswith("warning")]
    runtime = build_runtime(load_config(household.path, {}), clock=household.clock)
    with AppThread(build_app(runtime)) as app:
        assert httpx.get(f"{app.url}/healthz").status_code == 200
        wait_for(lambda: f"Resolved: {GONE}" in receiver.titles())
        status = httpx.get(f"{app.url}/api/status").json()
    (resolved,) = [m for m in receiver.messages if m["title"] == f"Resolved: {GONE}"]
    assert "Plex is no longer in the config" in resolved["message"]
    kept = {entry["name"] for entry in status["no_longer_in_the_config"]}
    assert {"plex-serializd", "plex-trakt"} <= kept
    said = watchbridge("status", "--config", str(household.path))
    assert said.returncode == 0, said.stderr
    kept_lines = [line for line in said.stdout.splitlines() if line.startswith("kept:")]
    assert kept_lines and all("nothing to do" in line for line in kept_lines)


TOKEN_REFUSED = "watchbridge: Plex does not accept watchbridge's token"
KEEPS_FAILING = "keeps failing"


def down_until_told(plex: FakePlex) -> list[bool]:
    """Plex's machine answering 503 to everything while the flag it returns is set."""
    down = [True]
    plex.fail_next(10**6, 503, when=lambda _: down[0])
    return down


async def test_a_plex_back_from_an_outage_refusing_the_token_is_told_as_that_not_as_gone(
    house: tuple[Household, FakePlex], receiver: AlertReceiver
) -> None:
    # Plex off for two days, then back after a reinstall that no longer takes services.plex.token.
    # The "Plex unreachable" alert (start it again, or take its lines out) stayed open and was
    # reminded of for as long as the token was refused: no link read Plex, and a refusal was no
    # answer to it. Nothing told of the token but each link's "keeps failing", one per link.
    household, plex = house
    down = down_until_told(plex)
    await household.serve_for(2 * DAY, 4 * INTERVAL)
    assert set(receiver.titles()) == {GONE}
    told = len(receiver.titles())
    down[0] = False
    plex.token = "the token of the reinstalled server"
    await household.serve_for(2 * HOUR)
    since = receiver.titles()[told:]
    assert set(since) == {f"Resolved: {GONE}", TOKEN_REFUSED}, since  # and a reminder
    (over,) = [m for m in receiver.messages if m["title"] == f"Resolved: {GONE}"]
    assert "Plex answers again" in over["message"]
    refused = next(m for m in receiver.messages if m["title"] == TOKEN_REFUSED)
    assert "services.plex.token" in refused["message"]
    await household.serve_for(2 * DAY, 4 * INTERVAL)  # reminded of, as a token refused is
    since = receiver.titles()[told:]
    assert set(since) == {f"Resolved: {GONE}", TOKEN_REFUSED}, since
    plex.token = TOKEN  # the owner's current token, set in the config
    await household.serve_for(HOUR)
    assert receiver.titles()[-1] == f"Resolved: {TOKEN_REFUSED}"
    assert not [t for t in receiver.titles() if KEEPS_FAILING in t]


async def test_a_plex_refusing_the_token_then_switched_off_then_back_keeps_the_token_alert(
    house: tuple[Household, FakePlex], receiver: AlertReceiver
) -> None:
    # The reverse: the token refused (one alert for the server, at the first run that meets
    # it), then the machine off for two days (its own alert), then back, the token still
    # refused: its outage is over, the token's alert is not.
    household, plex = house
    plex.token = "the token of the reinstalled server"
    await household.serve_for(HOUR)
    assert receiver.titles() == [TOKEN_REFUSED]
    down = down_until_told(plex)
    await household.serve_for(2 * DAY, 4 * INTERVAL)
    assert GONE in receiver.titles()
    assert f"Resolved: {TOKEN_REFUSED}" not in receiver.titles()
    down[0] = False
    await household.serve_for(2 * HOUR)
    assert f"Resolved: {GONE}" in receiver.titles()
    assert f"Resolved: {TOKEN_REFUSED}" not in receiver.titles()
    plex.token = TOKEN
    await household.serve_for(HOUR)
    assert receiver.titles()[-1] == f"Resolved: {TOKEN_REFUSED}"
    assert not [t for t in receiver.titles() if KEEPS_FAILING in t]
