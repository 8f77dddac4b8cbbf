"""Plays the Jellyfin and Emby webhooks missed, caught up from the server (catchup.py): read
over real HTTP from the fake server, recorded in the store as a webhook's marks are."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import sqlite_utils

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import (
    API_KEY,
    BREAKING_BAD_PROVIDER_IDS,
    EMBY_SERIES,
    JELLYFIN_SERIES,
    FakeJellyfin,
)
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import AppThread, put_back, watchbridge
from tests.ingest_samples import sample_json
from watchbridge import webhooks
from watchbridge.app import Runtime
from watchbridge.catchup import CatchUp
from watchbridge.catchupstatus import status_lines
from watchbridge.causes import server_key_works
from watchbridge.config import Config, parse_config
from watchbridge.ingest import parse
from watchbridge.maintenance import housekeeping
from watchbridge.model import Accepted
from watchbridge.playback import REWATCH_AFTER_IDLE
from watchbridge.services.jellyfin import MediaServerClient
from watchbridge.statuspage import page_state, render
from watchbridge.store import Store, migrations
from watchbridge.wiring import build_app, build_runtime

# The accounts and items of the webhook samples (tests/fixtures/jellyfin, emby).
ALEX = {"jellyfin": "a3f1c9e27b5d4c08b6e2f1d0c9b8a7e6", "emby": "6c1f0a9e2b7d4f3c8e5a1d0b9c8f7e6d"}
SAM = "0badc0de0badc0de0badc0de0badc0de"  # an account no profile lists
EPISODE = {"jellyfin": "c7d2a91e4b3f4e6a8d0b1c2e3f4a5b6c", "emby": "51873"}
SERIES = {"jellyfin": JELLYFIN_SERIES, "emby": EMBY_SERIES}
MOVIE = "9b1f2e3d4c5b6a798877665544332211"
SECRET = "catch-up-secret-0123456789"
DAY = 86400.0
T0 = 1_780_000_000.0  # 2026-05-28


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["jellyfin", "emby"])
def flavour(request: pytest.FixtureRequest) -> Literal["jellyfin", "emby"]:
    found: Literal["jellyfin", "emby"] = request.param
    return found


@pytest.fixture
def server(
    start_fake: Callable[[FakeServer], FakeServer],
    flavour: Literal["jellyfin", "emby"],
    clock: Clock,
) -> FakeJellyfin:
    fake = FakeJellyfin(flavour)
    fake.clock = clock  # its Date header: the clocks agree unless a test sets `ahead`
    start_fake(fake)
    fake.add_series(SERIES[flavour], "Breaking Bad", **BREAKING_BAD_PROVIDER_IDS)
    # As the webhook samples name it (their IMDb id too): the same item, listed or posted.
    ids = {"Tvdb": "4637661", "Tmdb": "62161", "Imdb": "tt2301451"}
    fake.add_episode(EPISODE[flavour], SERIES[flavour], 5, 14, **ids)
    fake.add_movie(MOVIE, "Arrival", 2016, Imdb="tt2543164", Tmdb="329865")
    fake.add_user(ALEX[flavour], "alex")
    fake.add_user(SAM, "sam")
    return fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(tmp_path: Path, server: FakeJellyfin, clock: Clock) -> Iterator[Runtime]:
    config = parse_config(
        f"""
server: {{webhook_secret: catch-up-secret-0123456789}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: abc, api_url: "http://127.0.0.1:9", auth_url: "http://127.0.0.1:9"}}
  {server.flavour}: {{url: "{server.url}", api_key: {API_KEY}}}
profiles:
  me: {{users: {{{server.flavour}: [alex]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    built = build_runtime(config, clock=clock)
    built.open()
    yield built
    built.close()


def read(runtime: Runtime, task: CatchUp, server: FakeJellyfin) -> int:
    """One round of the catch-up, as the background task runs it."""

    async def once() -> int:
        settings = getattr(runtime.config.services, server.flavour)
        client = MediaServerClient(settings, clock=runtime.clock)
        try:
            return await task.read(runtime, server.flavour, client)
        finally:
            await client.aclose()

    return asyncio.run(once())


def plays(runtime: Runtime) -> list[tuple[str, float, str]]:
    """(target, date, item key) of each play queued."""
    path = runtime.config.storage.path
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT target, payload FROM outbox WHERE action = 'play' ORDER BY id")
        found = []
        for target, payload in rows:
            data = json.loads(payload)
            found.append((target, float(data["at"]), str(data["item"].get("source_key"))))
        return found


def webhook(runtime: Runtime, flavour: str, at: float, *, flagged: bool = True) -> None:
    """The sample's completed stop of the episode, as the webhook route records it at `at`;
    not `flagged`: without the server's PlayedToCompletion (a template without it), its
    position (98 %) alone saying it was played to the end."""
    body: dict[str, Any]
    if flavour == "jellyfin":
        body = sample_json("jellyfin", "playback_stop_episode_completed.json")
        if not flagged:
            del body["PlayedToCompletion"]
    else:
        body = sample_json("emby", "playback_stop_episode_completed.json")
        body["Date"] = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(at))
        if not flagged:
            del body["PlaybackInfo"]["PlayedToCompletion"]
    result = parse(flavour, json.dumps(body).encode(), "application/json")
    assert isinstance(result, Accepted)
    (event,) = result.events

    async def record() -> None:
        await runtime.writer.write_all([webhooks.ingest_job(runtime, "me", event)])

    runtime.clock.now = at  # type: ignore[attr-defined]
    asyncio.run(record())


def test_the_first_read_copies_nothing_of_what_was_played_before(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    alex = ALEX[server.flavour]
    server.play(alex, MOVIE, T0 - 30 * DAY)
    server.play(alex, EPISODE[server.flavour], T0 - 3600)
    task = CatchUp()
    assert read(runtime, task, server) == 0
    clock.now += 3600
    assert read(runtime, task, server) == 0
    assert plays(runtime) == []


def test_a_play_while_watchbridge_was_down_is_copied_once_dated_when_it_was_played(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    server.play(alex, MOVIE, T0 - 30 * DAY)
    task = CatchUp()
    read(runtime, task, server)  # the baseline
    watched = T0 + 2 * 3600  # while watchbridge was down: no webhook
    server.play(alex, episode, watched)
    clock.now = watched + 3 * 3600
    assert read(runtime, task, server) == 0  # found: a webhook on its way may come yet
    clock.now += 15 * 60
    assert read(runtime, task, server) == 1
    assert plays(runtime) == [("trakt", watched, episode)]
    clock.now += 15 * 60
    assert read(runtime, task, server) == 0  # read again: nothing more
    restarted = CatchUp()  # a restart: the state is the store's
    clock.now += 3600
    assert read(runtime, restarted, server) == 0
    assert len(plays(runtime)) == 1


def test_a_play_its_webhook_told_of_is_not_copied_again(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    task = CatchUp()
    read(runtime, task, server)
    began = T0 + 600
    server.play(alex, episode, began)
    webhook(runtime, server.flavour, began + 47 * 60)  # its stop, at the end
    clock.now = began + 50 * 60
    read(runtime, task, server)
    clock.now += 15 * 60
    assert read(runtime, task, server) == 0
    assert [key for _, _, key in plays(runtime)] == [episode]  # the webhook's play alone


def test_a_play_its_stop_told_of_by_its_position_alone_is_not_copied_again(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    # A stop without PlayedToCompletion (a template without it) played past the profile's
    # completion threshold: the webhook's play, which the catch-up must not add a second time
    # once the webhooks are done with it (FOLLOWED).
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    task = CatchUp()
    read(runtime, task, server)
    began = T0 + 600
    server.play(alex, episode, began)
    webhook(runtime, server.flavour, began + 47 * 60, flagged=False)
    assert [key for _, _, key in plays(runtime)] == [episode]  # the webhook's play
    for minutes in range(50, 8 * 60, 15):  # past FOLLOWED
        clock.now = began + minutes * 60
        assert read(runtime, task, server) == 0
    assert [key for _, _, key in plays(runtime)] == [episode]


def test_a_rewatch_without_a_webhook_is_one_new_play(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    alex = ALEX[server.flavour]
    server.play(alex, MOVIE, T0 - 30 * DAY)
    task = CatchUp()
    read(runtime, task, server)
    again = T0 + 3600
    server.play(alex, MOVIE, again, finished=False)  # stopped half way: no play
    clock.now = again + 3 * 3600
    read(runtime, task, server)
    clock.now += 15 * 60
    assert read(runtime, task, server) == 0
    server.play(alex, MOVIE, clock.now)  # watched to the end this time
    watched = clock.now
    clock.now += 3 * 3600
    read(runtime, task, server)
    clock.now += 15 * 60
    assert read(runtime, task, server) == 1
    assert plays(runtime) == [("trakt", watched, MOVIE)]


def test_an_account_no_profile_lists_is_not_read(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    task = CatchUp()
    read(runtime, task, server)
    server.play(SAM, MOVIE, T0 + 600)
    clock.now += 3 * 3600
    read(runtime, task, server)
    clock.now += 15 * 60
    assert read(runtime, task, server) == 0
    listings = [r for r in server.requests if r.route in ("/Items", "/Users/{user_id}/Items")]
    assert listings and all(SAM not in r.path + str(r.query) for r in listings)
    assert plays(runtime) == []


def test_an_idle_read_is_one_request_per_account(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    task = CatchUp()
    read(runtime, task, server)
    before = len(server.requests)
    clock.now += 15 * 60
    read(runtime, task, server)
    assert len(server.requests) - before == 1


def test_a_refused_key_is_told_and_read_again_next_round(
    runtime: Runtime, server: FakeJellyfin, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server.api_key = "another-key"
    task = CatchUp()
    assert read(runtime, task, server) == 0
    assert f"services.{server.flavour}.api_key" in caplog.text
    server.api_key = API_KEY
    clock.now += 15 * 60
    read(runtime, task, server)  # the baseline, now
    server.play(ALEX[server.flavour], MOVIE, clock.now + 60)
    clock.now += 3 * 3600
    read(runtime, task, server)
    clock.now += 15 * 60
    assert read(runtime, task, server) == 1


def test_a_refused_key_is_the_servers_one_alert_naming_whose_plays_wait(
    tmp_path: Path, server: FakeJellyfin, clock: Clock, receiver: AlertReceiver
) -> None:
    # The catch-up raised the server's key alert (the condition the deliveries and the links
    # raise) with a text of its own that named no profile, and ended it with another
    # "Resolved": which text the user got hung on who met the refusal first.
    runtime = build_runtime(alerting(tmp_path, server, receiver, kind="all"), clock=clock)
    runtime.open()
    try:
        server.api_key = "another-key"
        task = CatchUp()
        assert read(runtime, task, server) == 0
        (alert,) = receiver.messages
        name = "Jellyfin" if server.flavour == "jellyfin" else "Emby"
        title = f"watchbridge: {name} does not accept watchbridge's API key"
        assert alert["title"] == title
        assert "The plays and ratings of profile me that need" in alert["message"]
        assert f"not caught up from {name} until" in alert["message"]
        server.api_key = API_KEY
        clock.now += 15 * 60
        read(runtime, task, server)
        assert receiver.titles() == [title, f"Resolved: {title}"]
        assert server_key_works(server.flavour) in receiver.messages[1]["message"]
    finally:
        runtime.close()


def changes(runtime: Runtime) -> Callable[[], int]:
    """The database's change counter as another connection sees it (`PRAGMA data_version`
    moves with each commit of the service's connections)."""
    watcher = sqlite3.connect(runtime.config.storage.path)
    return lambda: int(watcher.execute("PRAGMA data_version").fetchone()[0])


def test_an_idle_read_writes_nothing(runtime: Runtime, server: FakeJellyfin, clock: Clock) -> None:
    alex = ALEX[server.flavour]
    for n in range(300):  # a library played before: the counts the reads keep
        item = f"{n:032x}"
        server.add_movie(item, f"Film {n}", 2000)
        server.play(alex, item, T0 - 30 * DAY)
    task = CatchUp()
    read(runtime, task, server)  # the baseline: the counts are written
    counter = changes(runtime)
    before = counter()
    for _ in range(4):  # an hour of reads while nothing is watched
        clock.now += 15 * 60
        assert read(runtime, task, server) == 0
    assert counter() == before


def cursors(runtime: Runtime) -> dict[str, str]:
    """The catch-up's cursors, by name."""
    with sqlite3.connect(runtime.config.storage.path) as conn:
        rows = conn.execute("SELECT name, value FROM cursors WHERE name LIKE 'catch_up%'")
        return {str(name).partition(":")[0]: str(value) for name, value in rows}


def counts(runtime: Runtime) -> dict[str, int]:
    """The play counts the catch-up keeps, by item id."""
    with sqlite3.connect(runtime.config.storage.path) as conn:
        rows = conn.execute("SELECT item, play_count FROM catch_up_counts")
        return {str(item): int(n) for item, n in rows}


def test_a_read_listing_no_new_play_writes_only_when_it_began(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    alex = ALEX[server.flavour]
    for n in range(300):
        item = f"{n:032x}"
        server.add_movie(item, f"Film {n}", 2000)
        server.play(alex, item, T0 - 30 * DAY)
    task = CatchUp()
    read(runtime, task, server)
    state, counted = cursors(runtime)["catch_up"], counts(runtime)
    assert len(counted) == 300  # what the idle reads must not write again
    server.play(alex, MOVIE, T0 + 600, finished=False)  # a viewing stopped half way
    clock.now += 3 * 3600
    assert read(runtime, task, server) == 0
    written = cursors(runtime)
    assert written["catch_up"] == state
    assert counts(runtime) == counted
    assert len(written["catch_up_at"]) < 30
    before = len(server.requests)
    clock.now += 15 * 60
    assert read(runtime, task, server) == 0
    assert cursors(runtime) == written  # listed nothing: nothing written
    (listing,) = server.requests[before:]
    assert listing.query["MinDateLastSavedForUser"] > "2026-05-28T21"  # after the viewing


class Written:
    """The SQL the store's connection writes with (bound values included, as its trace
    callback expands them) from now until `stop`: what a read costs the disk, whichever
    table it writes."""

    def __init__(self, runtime: Runtime) -> None:
        self.conn = runtime.store._conn
        self.bytes = 0
        self.conn.set_trace_callback(self._ran)

    def _ran(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE")):
            self.bytes += len(sql.encode())

    def stop(self) -> int:
        self.conn.set_trace_callback(None)
        return self.bytes


def written_by(runtime: Runtime, task: CatchUp, server: FakeJellyfin) -> tuple[int, int]:
    """One round of the catch-up: the plays it copied, and the bytes of SQL it wrote with."""
    watched = Written(runtime)
    try:
        copied = read(runtime, task, server)
    finally:
        size = watched.stop()
    return copied, size


def counts_read(runtime: Runtime, task: CatchUp, server: FakeJellyfin) -> bool:
    """One round of the catch-up: whether it read the play counts it keeps."""
    statements: list[str] = []
    runtime.store._conn.set_trace_callback(statements.append)
    try:
        read(runtime, task, server)
    finally:
        runtime.store._conn.set_trace_callback(None)
    return any("FROM catch_up_counts" in sql for sql in statements)


def test_a_read_listing_nothing_reads_no_play_count(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    # Idle means idle: every 15 minutes, a big library's counts were all read for nothing.
    alex = ALEX[server.flavour]
    for n in range(50):
        item = f"{n:032x}"
        server.add_movie(item, f"Film {n}", 2000)
        server.play(alex, item, T0 - 30 * DAY)
    task = CatchUp()
    read(runtime, task, server)
    clock.now += 15 * 60
    assert not counts_read(runtime, task, server)
    server.play(alex, MOVIE, clock.now)  # listed by the next read, which needs them
    clock.now += 15 * 60
    assert counts_read(runtime, task, server)


def test_a_read_finding_one_play_writes_that_item_not_the_whole_library(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    # An SD card or a small SSD: someone watching an episode costs kilobytes a read, where
    # the whole account's counts (some 100 KB for a big library) were written again.
    alex = ALEX[server.flavour]
    for n in range(2000):
        item = f"{n:032x}"
        server.add_movie(item, f"Film {n}", 2000)
        server.play(alex, item, T0 - 30 * DAY)
    task = CatchUp()
    assert written_by(runtime, task, server)[0] == 0  # the baseline: every count, once
    watched = T0 + 600
    server.play(alex, MOVIE, watched)  # no webhook
    clock.now = watched + 3 * 3600
    found = written_by(runtime, task, server)
    clock.now += 15 * 60
    copied = written_by(runtime, task, server)
    assert found[0] == 0 and copied[0] == 1
    assert found[1] < 1_000  # the play that waits, and when the read began
    assert copied[1] < 6_000  # its event and outbox row, and its count
    assert plays(runtime) == [("trakt", watched, MOVIE)]
    clock.now += 15 * 60
    assert read(runtime, CatchUp(), server) == 0  # the counts read back: nothing more


def alerting(
    tmp_path: Path,
    server: FakeJellyfin,
    receiver: AlertReceiver,
    url: str = "",
    kind: str = "webhooks_stopped",
) -> Config:
    """The config of the `runtime` fixture, alerting of `kind` to `receiver`; with `url`, the
    server at that address instead."""
    flavour = server.flavour
    return parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"], kinds: [{kind}]}}
services:
  trakt: {{client_id: abc, api_url: "http://127.0.0.1:9", auth_url: "http://127.0.0.1:9"}}
  {flavour}: {{url: "{url or server.url}", api_key: {API_KEY}}}
profiles:
  me: {{users: {{{flavour}: [alex]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )


def post_webhook(
    config: Config,
    flavour: str,
    at: float,
    alert: str = "",
    secret: str = SECRET,
    name: str = "alex",
) -> int:
    """The sample's completed stop of the episode, posted to the live app at `at` with
    `secret`, by the account under `name`: its answer's status; with `alert`, waited until
    that server's `webhooks_stopped` is resolved."""
    body = sample_json(flavour, "playback_stop_episode_completed.json")
    if flavour == "emby":
        body["Date"] = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(at))
        body["User"]["Name"] = name
    else:
        body["NotificationUsername"] = name
    runtime = build_runtime(config, clock=FakeClock(at))
    with AppThread(build_app(runtime)) as app:
        answer = httpx.post(
            f"{app.url}/webhooks/{flavour}/{secret}",
            json=body,
            headers={"x-webhook-secret": secret},
        )
        deadline = time.monotonic() + 10
        while alert and runtime.notifier.raised("webhooks_stopped", alert):
            assert time.monotonic() < deadline, "the alert was not resolved"
            time.sleep(0.05)
        while not receiver_done():
            assert time.monotonic() < deadline, "the alert was not sent"
            time.sleep(0.05)
    return answer.status_code


def receiver_done() -> bool:
    """Whether the alerts the webhook route sends after answering are out."""
    return not webhooks._alerting


def test_plays_a_server_sending_webhooks_missed_raise_webhooks_stopped_its_webhook_resolves(
    tmp_path: Path, server: FakeJellyfin, receiver: AlertReceiver, clock: Clock
) -> None:
    flavour, alex = server.flavour, ALEX[server.flavour]
    name = "Jellyfin" if flavour == "jellyfin" else "Emby"
    # The app taking webhooks reads no plays itself (its server's address leads nowhere):
    # this test's reads are the catch-up's.
    webhooks_app = alerting(tmp_path, server, receiver, url="http://127.0.0.1:9")
    assert post_webhook(webhooks_app, flavour, T0 - 3 * DAY) == 202  # the server sends webhooks
    runtime = build_runtime(alerting(tmp_path, server, receiver), clock=clock)
    runtime.open()
    try:
        task = CatchUp()
        read(runtime, task, server)  # the baseline
        server.play(alex, MOVIE, T0 + 3600)  # the plugin disabled: no webhook
        clock.now = T0 + 4 * 3600
        read(runtime, task, server)
        assert receiver.messages == []  # a webhook may be on its way yet
        clock.now += 15 * 60
        assert read(runtime, task, server) == 1
    finally:
        runtime.close()
    (alert,) = receiver.messages
    title, body = str(alert["title"]), str(alert["message"])
    assert title == f"watchbridge: webhooks from {name} server {server.server_id} stopped"
    last = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(T0 - 3 * DAY))
    assert f"{name} server {server.server_id} sent its last webhook on {last}" in body
    assert "such as Arrival" in body
    assert "caught up from" in body and "nothing is lost" in body
    assert "watchbridge webhook-urls" in body
    if flavour == "jellyfin":
        assert "an update of Jellyfin may disable it" in body
        assert "X-Webhook-Secret" in body
    else:
        assert "Emby Premiere" in body and "lapsed" in body

    key = f"{flavour}:{server.server_id}"
    assert post_webhook(webhooks_app, flavour, T0 + 5 * 3600, alert=key) == 202
    assert receiver.titles() == [title, f"Resolved: {title}"]
    resolved = str(receiver.messages[1]["message"])
    assert resolved.startswith(f"A webhook came from this {name} server again")


def test_a_viewing_longer_than_the_sessions_window_its_webhook_told_of_is_not_copied_again(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    # Paused for the evening: the server dates the play at its start, more than
    # REWATCH_AFTER_IDLE before the webhook's end of it, so the item's sessions would take the
    # caught-up play for an earlier viewing; the webhooks' record of it is what keeps it out.
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    task = CatchUp()
    read(runtime, task, server)
    began = T0 + 600
    server.play(alex, episode, began)
    ended = began + REWATCH_AFTER_IDLE + 3600
    webhook(runtime, server.flavour, ended)  # its stop, at the end
    for minutes in (5, 20, 35):
        clock.now = ended + minutes * 60
        assert read(runtime, task, server) == 0
    assert [(at, key) for _, at, key in plays(runtime)] == [(ended, episode)]


def test_a_play_whose_webhook_was_refused_is_caught_up_once_also_after_the_secret_is_fixed(
    tmp_path: Path, server: FakeJellyfin, receiver: AlertReceiver, clock: Clock
) -> None:
    # The catch-up copies any play no accepted webhook told of: a refused one's too. The
    # refusal's alert must say so, not ask for a mark played again (a second play).
    flavour, alex, episode = server.flavour, ALEX[server.flavour], EPISODE[server.flavour]
    name = "Jellyfin" if flavour == "jellyfin" else "Emby"
    webhooks_app = alerting(tmp_path, server, receiver, "http://127.0.0.1:9", "webhook_rejects")
    runtime = build_runtime(alerting(tmp_path, server, receiver), clock=clock)
    runtime.open()
    try:
        task = CatchUp()
        read(runtime, task, server)  # the baseline
        began = T0 + 600
        server.play(alex, episode, began)
        assert post_webhook(webhooks_app, flavour, began + 47 * 60, secret="an-old-secret") == 401
        (alert,) = receiver.messages
        assert alert["title"] == f"watchbridge is refusing {name} webhooks"
        body = str(alert["message"])
        assert f"their plays are caught up from {name}" in body
        assert "mark what was watched" not in body and "do not mark them played again" in body
        for minutes in (60, 75, 90):
            clock.now = began + minutes * 60
            read(runtime, task, server)
        assert plays(runtime) == [("trakt", began, episode)]  # caught up, once

        again = began + 2 * DAY  # the secret fixed: a rewatch's webhook is taken
        server.play(alex, episode, again)
        assert post_webhook(webhooks_app, flavour, again + 47 * 60) == 202
        for minutes in (60, 75, 90):
            clock.now = again + minutes * 60
            assert read(runtime, task, server) == 0
    finally:
        runtime.close()
    assert plays(runtime) == [("trakt", began, episode), ("trakt", again + 47 * 60, episode)]


def test_an_account_added_to_the_server_after_the_start_is_read_within_the_hour(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    alex = ALEX[server.flavour]
    del server.users[alex]  # listed in the config, not on the server yet
    task = CatchUp()
    read(runtime, task, server)
    server.add_user(alex, "alex")
    clock.now += 15 * 60
    read(runtime, task, server)
    asked = [r for r in server.requests if r.route == "/Users"]
    assert len(asked) == 1  # at most hourly: not at every read
    clock.now = T0 + 3600
    read(runtime, task, server)  # asked again: alex's baseline
    assert len([r for r in server.requests if r.route == "/Users"]) == 2
    server.play(alex, MOVIE, clock.now + 600)
    clock.now += 3 * 3600
    read(runtime, task, server)
    clock.now += 15 * 60
    assert read(runtime, task, server) == 1
    assert len([r for r in server.requests if r.route == "/Users"]) == 2  # all found since


def test_an_account_deleted_and_made_again_is_read_again_and_the_others_meanwhile(
    tmp_path: Path, server: FakeJellyfin, clock: Clock
) -> None:
    # Alex's account deleted and made again under the same name: a new id, the old one a 404.
    # Sam's plays must not wait for a restart meanwhile, nor alex's new account's.
    config = parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: abc, api_url: "http://127.0.0.1:9", auth_url: "http://127.0.0.1:9"}}
  {server.flavour}: {{url: "{server.url}", api_key: {API_KEY}}}
profiles:
  me: {{users: {{{server.flavour}: [alex]}}, accounts: {{trakt: {{}}}}}}
  sam: {{users: {{{server.flavour}: [sam]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    try:
        task = CatchUp()
        read(runtime, task, server)  # both baselines
        del server.users[ALEX[server.flavour]]
        alex = "feedface" * 4
        server.add_user(alex, "alex")
        server.play(SAM, MOVIE, T0 + 600)
        for minutes in (60, 75, 90):
            clock.now = T0 + minutes * 60
            read(runtime, task, server)
        assert plays(runtime) == [("trakt", T0 + 600, MOVIE)]  # sam's, not held up by alex's
        server.play(alex, EPISODE[server.flavour], clock.now + 600)
        for minutes in (120, 135, 150):
            clock.now = T0 + minutes * 60
            read(runtime, task, server)
        assert [key for _, _, key in plays(runtime)] == [MOVIE, EPISODE[server.flavour]]
    finally:
        runtime.close()


def test_a_backup_copy_put_back_sends_no_play_its_webhooks_sent_after_the_copy_again(
    runtime: Runtime, server: FakeJellyfin, clock: Clock, tmp_path: Path
) -> None:
    # The copy has neither the webhook's play nor its event: read from the copy's state, the
    # catch-up took that play for one no webhook told of and sent it again (dated at its start).
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    read(runtime, CatchUp(), server)  # the baseline
    copy = tmp_path / "copy.db"
    runtime.store.backup_to(copy)
    began = T0 + 600
    server.play(alex, episode, began)
    webhook(runtime, server.flavour, began + 47 * 60)  # delivered after the copy was taken
    database = runtime.config.storage.path
    runtime.close()
    gc.collect()  # the helpers' connections, before the journal files go
    put_back(copy, Path(database))
    restored = build_runtime(runtime.config, clock=clock)
    restored.open()
    try:
        assert counts(restored) == {}  # dropped with the state: the next read is a baseline
        task = CatchUp()
        for minutes in (120, 135, 150):
            clock.now = began + minutes * 60
            assert read(restored, task, server) == 0
        assert plays(restored) == []
    finally:
        restored.close()


def profiles_config(tmp_path: Path, server: FakeJellyfin, profiles: str, url: str = "") -> Config:
    """The `runtime` fixture's config with `profiles` (YAML lines under `profiles:`); with
    `url`, the server at that address instead."""
    return parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: abc, api_url: "http://127.0.0.1:9", auth_url: "http://127.0.0.1:9"}}
  {server.flavour}: {{url: "{url or server.url}", api_key: {API_KEY}}}
profiles:
{profiles}
""",
        Path("watchbridge.yaml"),
        {},
    )


def plays_by_profile(runtime: Runtime) -> list[tuple[str, str]]:
    """(profile, item key) of each play queued."""
    with sqlite3.connect(runtime.config.storage.path) as conn:
        rows = conn.execute("SELECT profile, payload FROM outbox WHERE action = 'play' ORDER BY id")
        return [(str(p), str(json.loads(data)["item"].get("source_key"))) for p, data in rows]


def users_asked(server: FakeJellyfin) -> int:
    return len([r for r in server.requests if r.route == "/Users"])


def test_an_account_a_profile_lists_on_this_server_is_read_for_it_as_its_webhooks_go(
    tmp_path: Path, server: FakeJellyfin, clock: Clock
) -> None:
    # Profile `anywhere` lists alex on any server, `here` alex on this one: the webhooks take
    # the entry naming the server first, and so must the catch-up, or `anywhere`'s Trakt gets
    # `here`'s plays.
    flavour, alex = server.flavour, ALEX[server.flavour]
    profiles = (
        f"  anywhere: {{users: {{{flavour}: [alex]}}, accounts: {{trakt: {{}}}}}}\n"
        f'  here: {{users: {{{flavour}: ["{server.server_id}:alex"]}}, accounts: {{trakt: {{}}}}}}'
    )
    webhooks_app = profiles_config(tmp_path, server, profiles, url="http://127.0.0.1:9")
    assert post_webhook(webhooks_app, flavour, T0 - DAY) == 202
    runtime = build_runtime(profiles_config(tmp_path, server, profiles), clock=clock)
    runtime.open()
    try:
        task = CatchUp()
        read(runtime, task, server)  # the baseline
        server.play(alex, MOVIE, T0 + 600)  # no webhook
        clock.now = T0 + 3 * 3600
        read(runtime, task, server)
        clock.now += 15 * 60
        assert read(runtime, task, server) == 1
        assert plays_by_profile(runtime) == [("here", EPISODE[flavour]), ("here", MOVIE)]
    finally:
        runtime.close()


def test_an_account_renamed_on_the_server_is_read_by_the_id_its_webhooks_remembered(
    tmp_path: Path, server: FakeJellyfin, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    flavour, alex = server.flavour, ALEX[server.flavour]
    profiles = f"  me: {{users: {{{flavour}: [alex]}}, accounts: {{trakt: {{}}}}}}"
    webhooks_app = profiles_config(tmp_path, server, profiles, url="http://127.0.0.1:9")
    assert post_webhook(webhooks_app, flavour, T0 - DAY) == 202  # alex's id, remembered
    server.users[alex] = "alexander"  # renamed on the server
    runtime = build_runtime(profiles_config(tmp_path, server, profiles), clock=clock)
    runtime.open()
    try:
        task = CatchUp()
        read(runtime, task, server)  # alexander's baseline, for me
        server.play(alex, MOVIE, T0 + 600)
        for minutes in (180, 195, 210, 225, 240):  # past USERS_AGAIN_AFTER
            clock.now = T0 + minutes * 60
            read(runtime, task, server)
        assert plays_by_profile(runtime) == [("me", EPISODE[flavour]), ("me", MOVIE)]
        assert users_asked(server) == 1  # found: not asked for again each hour
    finally:
        runtime.close()
    shown = "Jellyfin" if flavour == "jellyfin" else "Emby"
    told = (
        f"{shown} account 'alexander' (id {alex}) was 'alex', listed in "
        f"profiles.me.users.{flavour}: write its id or its new name there"
    )
    assert caplog.text.count(told) == 1  # once per start


def test_an_account_the_catch_up_found_by_name_is_followed_when_renamed_by_it_and_webhooks(
    tmp_path: Path, server: FakeJellyfin, clock: Clock
) -> None:
    # No webhook came before the rename (the plugin not set up yet): the catch-up's own first
    # read remembers the account's id with the name, as a webhook's would.
    flavour, alex = server.flavour, ALEX[server.flavour]
    profiles = f"  me: {{users: {{{flavour}: [alex]}}, accounts: {{trakt: {{}}}}}}"
    runtime = build_runtime(profiles_config(tmp_path, server, profiles), clock=clock)
    runtime.open()
    try:
        read(runtime, CatchUp(), server)  # the baseline
        server.users[alex] = "alexander"
        server.play(alex, MOVIE, T0 + 600)
        task = CatchUp()  # a restart: the accounts asked again
        for minutes in (180, 195):
            clock.now = T0 + minutes * 60
            read(runtime, task, server)
        assert plays_by_profile(runtime) == [("me", MOVIE)]
    finally:
        runtime.close()
    webhooks_app = profiles_config(tmp_path, server, profiles, url="http://127.0.0.1:9")
    assert post_webhook(webhooks_app, flavour, T0 + DAY, name="alexander") == 202
    assert plays_by_profile(runtime) == [("me", MOVIE), ("me", EPISODE[flavour])]


def test_an_account_no_entry_names_is_not_read_for_the_default_profile(
    tmp_path: Path, server: FakeJellyfin, clock: Clock
) -> None:
    # The default profile takes the webhooks of accounts no entry names; the catch-up reads
    # only the accounts entries name (or a remembered id or name follows), the default's too.
    flavour = server.flavour
    profiles = (
        f"  me: {{users: {{{flavour}: [alex]}}, accounts: {{trakt: {{}}}}}}\n"
        "  house: {default: true, accounts: {trakt: {}}}"
    )
    runtime = build_runtime(profiles_config(tmp_path, server, profiles), clock=clock)
    runtime.open()
    try:
        task = CatchUp()
        read(runtime, task, server)
        server.play(SAM, MOVIE, T0 + 600)
        for minutes in (180, 195):
            clock.now = T0 + minutes * 60
            read(runtime, task, server)
    finally:
        runtime.close()
    listings = [r for r in server.requests if r.route in ("/Items", "/Users/{user_id}/Items")]
    assert listings and all(SAM not in r.path + str(r.query) for r in listings)
    assert plays_by_profile(runtime) == []


def test_a_server_clock_behind_ours_loses_no_play(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    # The server dates by its clock, an hour behind: a play half an hour after a read was
    # saved, by it, before that read, and its date before the baseline.
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    server.ahead = -3600.0
    task = CatchUp()
    read(runtime, task, server)  # the baseline
    began = T0 + 1800
    server.play(alex, episode, began)
    for minutes in (180, 195):
        clock.now = T0 + minutes * 60
        read(runtime, task, server)
    assert plays(runtime) == [("trakt", began, episode)]  # dated by our clock


def test_a_server_clock_ahead_of_ours_sends_no_play_its_webhook_told_of_again(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    # Two hours ahead, the server dates the play after its webhook came: not of that play.
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    server.ahead = 2 * 3600.0
    task = CatchUp()
    read(runtime, task, server)
    began = T0 + 600
    server.play(alex, episode, began)
    webhook(runtime, server.flavour, began + 47 * 60)  # its stop, at the end
    for minutes in (60, 75, 90, 8 * 60):
        clock.now = began + minutes * 60
        assert read(runtime, task, server) == 0
    assert plays(runtime) == [("trakt", began + 47 * 60, episode)]  # the webhook's play alone


def delivered(runtime: Runtime, at: float) -> None:
    """Every play queued so far delivered at `at`, as the delivery worker settles one."""
    with sqlite3.connect(runtime.config.storage.path) as conn:
        ids = [i for (i,) in conn.execute("SELECT id FROM outbox WHERE status = 'pending'")]
    for one in ids:
        runtime.store.complete(one, at)


def test_plays_the_webhooks_told_of_before_a_long_refusal_of_the_key_are_not_copied_again(
    runtime: Runtime, server: FakeJellyfin, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # The key refused for three weeks (Jellyfin 12 turning legacy auth off, a key deleted)
    # while the webhooks kept coming: the next read lists every play since the last good
    # one, and housekeeping pruned the webhooks' events older than a week. A play dated
    # before the newest event pruned cannot be checked: copied, a webhook's play went twice.
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    older = "0f" * 16
    server.add_movie(older, "Dune", 2021, Imdb="tt1160419", Tmdb="438631")
    task = CatchUp()
    read(runtime, task, server)  # the baseline
    server.api_key = "a-key-since-deleted"
    server.play(alex, older, T0 + 3 * DAY)  # no webhook came of it: cannot be told apart
    began = T0 + 5 * DAY
    server.play(alex, episode, began)
    webhook(runtime, server.flavour, began + 47 * 60)  # its stop, taken and delivered
    assert len(plays(runtime)) == 1
    delivered(runtime, began + 50 * 60)
    for day in (2, 9, 16):
        clock.now = T0 + day * DAY
        assert read(runtime, task, server) == 0  # refused
        asyncio.run(housekeeping(runtime))
    recent = T0 + 20 * DAY
    server.play(alex, MOVIE, recent)  # no webhook: within the week of events kept
    clock.now = T0 + 21 * DAY
    asyncio.run(housekeeping(runtime))
    server.api_key = API_KEY  # the key fixed
    copied = 0
    for minutes in (0, 15, 30):
        clock.now = T0 + 21 * DAY + minutes * 60
        copied += read(runtime, task, server)
    assert copied == 1
    # (the webhooks' plays, delivered more than a week ago, were pruned)
    assert plays(runtime) == [("trakt", recent, MOVIE)]
    (told,) = [r for r in caplog.records if "not copied" in r.getMessage()]
    assert told.getMessage().startswith("2 plays on ")
    assert "Breaking Bad" in told.items and "Dune (2021) played 2026-05-31" in told.items
    (line,) = [
        one for one in status_lines(runtime.config, runtime.store, clock.now) if one.needs_you
    ]
    assert line.kind == "unchecked" and line.server_id == server.server_id
    assert "2 plays older than the webhook events kept (a week) were not copied" in line.message
    assert "add by hand any a service is missing: " in line.message
    assert told.items in line.message
    shown = render(asyncio.run(page_state(runtime, clock.now)), clock.now)
    name = "Jellyfin" if server.flavour == "jellyfin" else "Emby"
    assert f"plays {name} could not be read for in time were not copied: check" in shown
    clock.now += 8 * DAY  # said for a week
    assert [one.kind for one in status_lines(runtime.config, runtime.store, clock.now)] == []


def test_plays_while_watchbridge_was_off_for_more_than_a_week_are_all_copied(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    # The NAS off for ten days: no webhook was taken, so no event of those plays was pruned;
    # every one is copied, the oldest too, though older than a week.
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    task = CatchUp()
    read(runtime, task, server)  # the baseline
    server.play(alex, episode, T0 + 600)
    webhook(runtime, server.flavour, T0 + 47 * 60)  # the last webhook before it went off
    delivered(runtime, T0 + 50 * 60)
    clock.now = T0 + 3600
    read(runtime, task, server)
    asyncio.run(housekeeping(runtime))
    off = T0 + 2 * 3600
    server.play(alex, MOVIE, off + DAY)
    server.play(alex, episode, off + 9 * DAY)
    clock.now = off + 10 * DAY  # back on: housekeeping prunes the events before it went off
    asyncio.run(housekeeping(runtime))
    for minutes in (0, 15, 30):
        clock.now = off + 10 * DAY + minutes * 60
        read(runtime, task, server)
    # (the webhook's play, delivered before, was pruned with its event)
    assert sorted(plays(runtime)) == [
        ("trakt", off + DAY, MOVIE),
        ("trakt", off + 9 * DAY, episode),
    ]


def test_an_older_release_s_state_is_kept_as_rows_its_counts_still_tell_a_rewatch(
    tmp_path: Path, server: FakeJellyfin, clock: Clock
) -> None:
    # The state an older release wrote, its counts in its JSON: moved to rows at the
    # upgrade (again, harmlessly: the newest migration may run twice), read as before.
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    config = profiles_config(
        tmp_path,
        server,
        f"  me: {{users: {{{server.flavour}: [alex]}}, accounts: {{trakt: {{}}}}}}",
    )
    database = Path(config.storage.path)
    old = sqlite_utils.Database(database)
    migrations.apply(old, stop_before="m033_catch_up_counts")
    state = {"baseline": T0 - DAY, "at": T0, "counts": {MOVIE: 1, episode: 2}, "waiting": {}}
    old["cursors"].insert_all(
        [
            {"service": server.flavour, "profile": "me", "name": f"catch_up:{alex}"}
            | {"value": json.dumps(state), "updated_at": T0},
            {"service": server.flavour, "profile": "me", "name": "catch_up:broken"}
            | {"value": "{not json", "updated_at": T0},
        ]
    )
    old.close()

    for _ in range(2):
        Store.open(database).close()
        with sqlite3.connect(database) as conn:
            header = {
                name: value
                for name, value in conn.execute("SELECT name, value FROM cursors")
                if name.startswith("catch_up")
            }
            rows = conn.execute(
                "SELECT service, profile, account, item, play_count FROM catch_up_counts"
            ).fetchall()
            conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm033_catch_up_counts'")
        assert json.loads(header[f"catch_up:{alex}"]) == {
            "baseline": T0 - DAY,
            "at": T0,
            "waiting": {},
        }
        assert header["catch_up:broken"] == "{not json"  # left as it was: a baseline
        assert sorted(rows) == sorted(
            [(server.flavour, "me", alex, MOVIE, 1), (server.flavour, "me", alex, episode, 2)]
        )

    server.play(alex, MOVIE, T0 - 30 * DAY)
    server.mark_played(alex, MOVIE, T0 + 300)  # listed again, still counted 1: no new play
    server.play(alex, episode, T0 - 20 * DAY)
    server.play(alex, episode, T0 - 10 * DAY)
    watched = T0 + 600
    server.play(alex, episode, watched)  # counted 2, now 3: a rewatch
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    try:
        task = CatchUp()
        clock.now = watched + 3 * 3600
        assert read(runtime, task, server) == 0
        clock.now += 15 * 60
        assert read(runtime, task, server) == 1
        assert plays(runtime) == [("trakt", watched, episode)]
        assert counts(runtime) == {MOVIE: 1, episode: 3}
        # Each item listed again is known by its ids too, should it come under a new id.
        with sqlite3.connect(database) as conn:
            known = dict(conn.execute("SELECT item, identity FROM catch_up_counts"))
        assert known == {MOVIE: "movie:imdb:tt2543164", episode: "episode:imdb:tt2301451:s5e14"}
    finally:
        runtime.close()


def service_at(
    tmp_path: Path, server: FakeJellyfin, clock: Clock, profiles: str, *at: float
) -> list[Runtime]:
    """The service started on a config with `profiles` (a restart: the catch-up's memory
    anew), its rounds at each of `at`; the runtime, closed, for its store's path."""
    runtime = build_runtime(profiles_config(tmp_path, server, profiles), clock=clock)
    runtime.open()
    try:
        task = CatchUp()
        for when in at:
            clock.now = when
            read(runtime, task, server)
    finally:
        runtime.close()
    return [runtime]


def me_listing(server: FakeJellyfin, *accounts: str) -> str:
    """Profile `me`'s YAML line, listing `accounts` of the server."""
    users = f"{{{server.flavour}: [{', '.join(accounts)}]}}"
    return f"  me: {{users: {users}, accounts: {{trakt: {{}}}}}}"


def left_noted(runtime: Runtime) -> dict[tuple[str, str], float]:
    """(profile, user id) -> since when no round read it, as the database keeps it."""
    with sqlite3.connect(runtime.config.storage.path) as conn:
        rows = conn.execute(
            "SELECT profile, name, value FROM cursors WHERE name LIKE 'catch_up_left:%'"
        )
        return {
            (str(profile), str(name).partition(":")[2]): float(json.loads(value)["since"])
            for profile, name, value in rows
        }


def test_an_account_taken_out_for_more_than_a_day_and_put_back_copies_none_of_the_gap(
    tmp_path: Path, server: FakeJellyfin, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # A guest's account taken out of the profile on purpose: its plays of the weeks it was out
    # were not meant for the profile's Trakt, and must not land there at once when put back.
    caplog.set_level(logging.INFO, logger="watchbridge.catchup")
    both, alone = me_listing(server, "alex", "sam"), me_listing(server, "alex")
    service_at(tmp_path, server, clock, both, T0)  # the baselines of alex and sam
    server.play(SAM, MOVIE, T0 + 3600)
    (runtime,) = service_at(tmp_path, server, clock, alone, T0 + 2 * 3600, T0 + 3 * 3600)
    assert left_noted(runtime) == {("me", SAM): T0 + 2 * 3600}
    flavour = server.flavour
    assert (
        f"the catch-up of {flavour} account sam for profile me starts over at 2026-05-29 "
        f"22:26 UTC: the profile has not listed it since 2026-05-28 22:26 UTC "
        f"(profiles.me.users.{flavour}); listed there again before then, the plays it missed "
        "meanwhile are caught up, after that none of them are copied"
    ) in caplog.text
    with Store.open(Path(runtime.config.storage.path)) as store:  # as `watchbridge status`
        (line,) = status_lines(runtime.config, store, T0 + 3 * 3600)
    assert line.kind == "starts_over" and not line.needs_you and line.profile == "me"
    assert line.message.startswith(f"the catch-up of {flavour} account sam for profile me")
    service_at(tmp_path, server, clock, alone, T0 + DAY + 3 * 3600)  # still out: forgotten
    assert (
        f"the catch-up of {flavour} account sam for profile me starts over: the profile has not"
        f" listed it since 2026-05-28 22:26 UTC (profiles.me.users.{flavour}); listed there "
        "again, its first read copies none of the plays it missed meanwhile"
    ) in caplog.text
    server.play(SAM, EPISODE[flavour], T0 + 20 * DAY)
    back = T0 + 21 * DAY
    service_at(tmp_path, server, clock, both, back)  # put back: a first read, copying none
    later = back + 600
    server.play(SAM, MOVIE, later)  # watched once put back: no webhook came
    (runtime,) = service_at(tmp_path, server, clock, both, back + 3 * 3600, back + 13500)
    assert plays(runtime) == [("trakt", later, MOVIE)]
    assert left_noted(runtime) == {}


def test_an_account_taken_out_and_put_back_within_a_day_loses_no_play_made_meanwhile(
    tmp_path: Path, server: FakeJellyfin, clock: Clock
) -> None:
    # A typo in the config fixed at the next restart: a play made meanwhile whose webhook did
    # not come is caught up, as after watchbridge was off.
    both, alone = me_listing(server, "alex", "sam"), me_listing(server, "alex")
    service_at(tmp_path, server, clock, both, T0)
    service_at(tmp_path, server, clock, alone, T0 + 3600)
    watched = T0 + 5400
    server.play(SAM, MOVIE, watched)
    fixed = T0 + 20 * 3600
    (runtime,) = service_at(tmp_path, server, clock, both, fixed, fixed + 900)
    assert plays(runtime) == [("trakt", watched, MOVIE)]
    assert left_noted(runtime) == {}  # read again: kept as any other


def test_a_profile_taken_out_of_the_config_for_more_than_a_day_starts_over_when_put_back(
    tmp_path: Path, server: FakeJellyfin, clock: Clock
) -> None:
    # The whole profile commented out: no profile lists an account of the server, so the
    # running service reads none; its state is forgotten all the same, by the service's rounds.
    flavour, alex = server.flavour, ALEX[server.flavour]
    listed = me_listing(server, "alex")
    (runtime,) = service_at(tmp_path, server, clock, listed, T0)
    assert "catch_up" in cursors(runtime)  # alex's baseline
    out = profiles_config(tmp_path, server, "  tv: {accounts: {trakt: {}}}")

    def serve_until(at: float, done: Callable[[], bool]) -> None:
        with AppThread(build_app(build_runtime(out, clock=FakeClock(at)))):
            deadline = time.monotonic() + 10
            while not done():
                assert time.monotonic() < deadline, "the catch-up's round did not come"
                time.sleep(0.05)

    serve_until(T0 + 3600, lambda: left_noted(runtime) == {("me", alex): T0 + 3600})
    server.play(alex, MOVIE, T0 + 2 * 3600)
    serve_until(T0 + DAY + 7200, lambda: not set(cursors(runtime)) & {"catch_up", "catch_up_left"})
    back = T0 + 14 * DAY
    service_at(tmp_path, server, clock, listed, back)  # put back: a first read, copying none
    later = back + 600
    server.play(alex, EPISODE[flavour], later)
    (runtime,) = service_at(tmp_path, server, clock, listed, back + 3 * 3600, back + 13500)
    assert plays(runtime) == [("trakt", later, EPISODE[flavour])]


def test_a_profile_renamed_with_rename_profile_keeps_its_catch_up_and_loses_no_play(
    tmp_path: Path, server: FakeJellyfin, clock: Clock
) -> None:
    alex = ALEX[server.flavour]
    service_at(tmp_path, server, clock, me_listing(server, "alex"), T0)
    renamed = me_listing(server, "alex").replace("  me:", "  you:")
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"server: {{webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        "services:\n"
        '  trakt: {client_id: abc, api_url: "http://127.0.0.1:9", auth_url: "http://127.0.0.1:9"}\n'
        f'  {server.flavour}: {{url: "{server.url}", api_key: {API_KEY}}}\n'
        f"profiles:\n{renamed}\n",
        encoding="utf-8",
    )
    said = watchbridge("rename-profile", "--config", str(path), "me", "you")
    assert said.returncode == 0, said.stderr
    watched = T0 + 3600  # while the service was stopped for the rename: no webhook
    server.play(alex, MOVIE, watched)
    start = T0 + 2 * DAY  # later than a day: the state moved is read, not left
    (runtime,) = service_at(tmp_path, server, clock, renamed, start, start + 900)
    assert plays_by_profile(runtime) == [("you", MOVIE)]
    assert left_noted(runtime) == {}


def serve_until(config: Config, at: float, done: Callable[[], bool]) -> None:
    """The whole service started on `config` at `at` (its background tasks' rounds), until
    `done`."""
    with AppThread(build_app(build_runtime(config, clock=FakeClock(at)))):
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline, "the catch-up's round did not come"
            time.sleep(0.05)


def sam_taken_out(tmp_path: Path, server: FakeJellyfin, clock: Clock) -> Runtime:
    """sam read for profile me, then taken out of its `users` at T0 + 2 h: noted, kept a day."""
    both, alone = me_listing(server, "alex", "sam"), me_listing(server, "alex")
    service_at(tmp_path, server, clock, both, T0)
    (runtime,) = service_at(tmp_path, server, clock, alone, T0 + 2 * 3600)
    assert left_noted(runtime) == {("me", SAM): T0 + 2 * 3600}
    return runtime


def starts_over_lines(runtime: Runtime, now: float) -> list[str]:
    """The `starts_over` lines of the status at `now`, as `watchbridge status` reads them."""
    with Store.open(Path(runtime.config.storage.path)) as store:
        found = status_lines(runtime.config, store, now)
    return [line.message for line in found if line.kind == "starts_over"]


def test_an_account_taken_out_then_deleted_on_the_server_is_forgotten_a_day_later(
    tmp_path: Path, server: FakeJellyfin, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # Taken out of the profile, then deleted on the server within the day: no round reads it,
    # nor finds it on the server; its note must not stay, "starts over at" a time long past.
    caplog.set_level(logging.INFO, logger="watchbridge.catchup")
    runtime = sam_taken_out(tmp_path, server, clock)
    with server.lock:
        del server.users[SAM]
    alone = me_listing(server, "alex")
    service_at(tmp_path, server, clock, alone, T0 + 3 * 3600, T0 + DAY + 3 * 3600)
    assert left_noted(runtime) == {}
    with sqlite3.connect(runtime.config.storage.path) as conn:
        kept = conn.execute("SELECT count(*) FROM cursors WHERE name LIKE ?", (f"%:{SAM}",))
        assert kept.fetchone() == (0,)
    assert "account sam for profile me starts over: the profile has not listed it" in caplog.text
    assert starts_over_lines(runtime, T0 + DAY + 3 * 3600) == []


def catch_up_config(tmp_path: Path, server: FakeJellyfin, settings: str | None) -> Config:
    """Profile me listing alex, with the server's `services` entry `settings` added (None:
    the server taken out of the config altogether)."""
    line = (
        ""
        if settings is None
        else f'  {server.flavour}: {{url: "{server.url}", api_key: {API_KEY}{settings}}}\n'
    )
    return parse_config(
        f"server: {{webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        "services:\n"
        '  trakt: {client_id: abc, api_url: "http://127.0.0.1:9", auth_url: "http://127.0.0.1:9"}\n'
        f"{line}"
        f"profiles:\n{me_listing(server, 'alex')}\n",
        Path("watchbridge.yaml"),
        {},
    )


@pytest.mark.parametrize("settings", [", catch_up: false", None], ids=["catch_up_off", "removed"])
def test_an_account_taken_out_is_forgotten_a_day_later_once_its_server_is_no_longer_read(
    tmp_path: Path, server: FakeJellyfin, clock: Clock, settings: str | None
) -> None:
    # Within the day, the catch-up switched off (or the server taken out of the config): no
    # round reads the server any more, yet the running service forgets sam's state on time;
    # alex's, still listed, is kept for when the catch-up is on again.
    runtime = sam_taken_out(tmp_path, server, clock)
    config = catch_up_config(tmp_path, server, settings)
    kept = ("me", ALEX[server.flavour])
    serve_until(config, T0 + 3 * 3600, lambda: True)
    assert left_noted(runtime) == {("me", SAM): T0 + 2 * 3600}  # within the day: kept

    def sam_forgotten() -> bool:
        with sqlite3.connect(runtime.config.storage.path) as conn:
            rows = conn.execute("SELECT profile, name FROM cursors WHERE name LIKE 'catch_up%'")
            return {(str(p), str(n).partition(":")[2]) for p, n in rows} == {kept}

    serve_until(config, T0 + DAY + 3 * 3600, sam_forgotten)
    assert starts_over_lines(runtime, T0 + DAY + 3 * 3600) == []


def test_the_status_never_says_a_catch_up_starts_over_at_a_time_past(
    tmp_path: Path, server: FakeJellyfin, clock: Clock
) -> None:
    # The service stopped (or the server unreachable) over the day's end: no round has
    # forgotten sam's state yet; `watchbridge status` says when it does, not a time gone by.
    runtime = sam_taken_out(tmp_path, server, clock)
    flavour = server.flavour
    (line,) = starts_over_lines(runtime, T0 + DAY + 5 * 3600)
    assert line == (
        f"the catch-up of {flavour} account sam for profile me starts over at its next round: "
        f"the profile has not listed it since 2026-05-28 22:26 UTC (profiles.me.users.{flavour}); "
        "listed there again before then, the plays it missed meanwhile are caught up, after "
        "that none of them are copied"
    )


def test_a_play_recorded_again_after_a_crash_before_its_state_was_saved_is_counted_once(
    runtime: Runtime, server: FakeJellyfin, clock: Clock
) -> None:
    # The plays a read found are queued, then its state saved, in two transactions: a crash
    # between them leaves the state of the read before, so the next read records the play
    # again. Trakt gets it once (the same key); the status must count it once too.
    alex, episode = ALEX[server.flavour], EPISODE[server.flavour]
    task = CatchUp()
    read(runtime, task, server)  # the baseline
    watched = T0 + 2 * 3600
    server.play(alex, episode, watched)
    clock.now = watched + 3 * 3600
    assert read(runtime, task, server) == 0  # found: a webhook on its way may come yet
    path = runtime.config.storage.path
    kept = {"cursors": "name LIKE 'catch_up%'", "catch_up_counts": "1"}
    with sqlite3.connect(path) as conn:  # the state as the crash would leave it
        before = {
            t: conn.execute(f"SELECT * FROM {t} WHERE {w}").fetchall() for t, w in kept.items()
        }
    clock.now += 15 * 60
    assert read(runtime, task, server) == 1
    with sqlite3.connect(path) as conn:
        for table, where in kept.items():
            conn.execute(f"DELETE FROM {table} WHERE {where}")
            for row in before[table]:
                conn.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
    clock.now += 60  # restarted at once
    assert read(runtime, CatchUp(), server) == 1  # recorded again
    assert plays(runtime) == [("trakt", watched, episode)]
    with Store.open(Path(path)) as store:
        (line,) = status_lines(runtime.config, store, clock.now)
    assert line.kind == "caught_up"
    assert "1 play" in line.message and "2 play" not in line.message, line.message
