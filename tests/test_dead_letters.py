"""Dead letters from the user's chair: what the alert, `deadletters list` and the status say
about a delivery that gave up, driven pass by pass against the fake Trakt with a hand-moved
clock."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt
from tests.ingest_samples import sample_json
from watchbridge.app import Runtime
from watchbridge.cli import cli
from watchbridge.config import parse_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.http import Pacer
from watchbridge.ingest import parse
from watchbridge.model import Accepted
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    return fake


@pytest.fixture
def config_path(tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver) -> Path:
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
delivery: {{max_attempts: 5}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{trakt: {{}}}}}}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
async def runtime(config_path: Path, trakt: FakeTrakt, clock: FakeClock) -> AsyncIterator[Runtime]:
    config = parse_config(config_path.read_text(), config_path, {})
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=clock())
    yield runtime
    runtime.close()


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[DeliveryWorker]:
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    for target in worker.targets.values():
        target.client.http.retry = type(target.client.http.retry)(attempts=1)  # type: ignore[attr-defined]
        target.client.http.pacers["me"] = Pacer()  # type: ignore[attr-defined]
    yield worker
    for target in worker.targets.values():
        await target.aclose()


def play_a_movie_trakt_does_not_know(runtime: Runtime) -> None:
    payload: dict[str, Any] = sample_json("plex", "movie_legacy_imdb_media_scrobble.json")
    payload["Metadata"] |= {
        "guid": "com.plexapp.agents.imdb://tt7777777?lang=en",
        "title": "Nobody Knows",
    }
    result = parse("plex", json.dumps(payload).encode(), "application/json")
    assert isinstance(result, Accepted)
    for event in result.events:
        runtime.store.ingest(ingest_job(runtime, "me", event, result.document))


def play_heat(runtime: Runtime) -> None:
    result = parse(
        "plex",
        json.dumps(sample_json("plex", "movie_legacy_imdb_media_scrobble.json")).encode(),
        "application/json",
    )
    assert isinstance(result, Accepted)
    for event in result.events:
        runtime.store.ingest(ingest_job(runtime, "me", event, result.document))


def deadletters(config_path: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["deadletters", *args, "--config", str(config_path)])
    return result.output


async def test_a_delivery_that_gave_up_by_age_says_so_not_only_its_few_attempts(
    runtime: Runtime,
    worker: DeliveryWorker,
    clock: FakeClock,
    receiver: AlertReceiver,
    config_path: Path,
) -> None:
    play_a_movie_trakt_does_not_know(runtime)
    await worker.pass_once(runtime)  # attempt 1 of 5
    clock.advance(runtime.config.delivery.max_age + 1)
    await worker.pass_once(runtime)  # attempt 2 of 5, but failing for over a week
    (dead,) = runtime.store.dead_letters()
    # "gave up after 2 attempts" with 5 allowed would leave the user wondering why.
    assert "failing for 7d" in (dead.last_error or "")
    assert "delivery.max_age" in (dead.last_error or "")
    (alert,) = [m["message"] for m in receiver.messages if "gave up" in m["title"]]
    assert "failing for 7d" in alert
    assert "failing for 7d" in deadletters(config_path, "list")


async def test_a_dead_letter_queued_again_is_not_shown_as_still_given_up(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, config_path: Path
) -> None:
    play_a_movie_trakt_does_not_know(runtime)
    await worker.pass_once(runtime)
    clock.advance(runtime.config.delivery.max_age + 1)
    await worker.pass_once(runtime)
    assert "1 dead letter(s) queued again" in deadletters(config_path, "retry", "1")
    # Until the service takes it (within 5 minutes), the status says what the user did, not
    # the reason it gave up for, which reads as if the retry had not worked.
    status = CliRunner().invoke(cli, ["status", "--config", str(config_path)]).output
    (held,) = [line for line in status.splitlines() if line.startswith("on hold:")]
    assert "gave up" not in held
    assert "queued again by `watchbridge deadletters retry`" in held


async def test_discard_for_good_keeps_off_only_a_links_copy_of_a_play(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, config_path: Path
) -> None:
    # A webhook's play is no link's to keep off: it stays a dead letter, and the command
    # says how to discard it.
    play_a_movie_trakt_does_not_know(runtime)
    await worker.pass_once(runtime)
    clock.advance(runtime.config.delivery.max_age + 1)
    await worker.pass_once(runtime)
    (dead,) = runtime.store.dead_letters()
    result = CliRunner().invoke(
        cli, ["deadletters", "discard", str(dead.id), "--for-good", "--config", str(config_path)]
    )
    assert result.exit_code != 0
    assert f"no link's copy of a play: #{dead.id} (discard them without --for-good)" in (
        result.output
    )
    assert [row.id for row in runtime.store.dead_letters()] == [dead.id]
    assert "no plays kept off" in deadletters(config_path, "list", "--for-good")


async def test_the_dead_letter_alert_names_a_retry_command_that_works_as_written(
    runtime: Runtime,
    worker: DeliveryWorker,
    clock: FakeClock,
    receiver: AlertReceiver,
    config_path: Path,
) -> None:
    # After a long outage the alert is what the user acts on: its command, pasted as it is,
    # must queue the dead letters again (`deadletters retry` alone only asks for ids).
    play_a_movie_trakt_does_not_know(runtime)
    await worker.pass_once(runtime)
    clock.advance(runtime.config.delivery.max_age + 1)
    await worker.pass_once(runtime)
    (alert,) = [m["message"] for m in receiver.messages if "gave up" in m["title"]]
    (command,) = re.findall(r"`(watchbridge deadletters retry[^`]*)`", alert)
    args = command.split()[2:]  # after `watchbridge deadletters`
    assert "1 dead letter(s) queued again" in deadletters(config_path, *args)


async def test_a_dead_letter_the_service_refused_does_not_go_again_when_another_play_gets_through(
    runtime: Runtime,
    worker: DeliveryWorker,
    clock: FakeClock,
    receiver: AlertReceiver,
    trakt: FakeTrakt,
) -> None:
    # Only the dead letters of the service's own failures go again by themselves: one it
    # answered "not found" for a week would only fail the same way.
    play_a_movie_trakt_does_not_know(runtime)
    await worker.pass_once(runtime)
    clock.advance(runtime.config.delivery.max_age + 1)
    await worker.pass_once(runtime)
    (dead,) = runtime.store.dead_letters()
    play_heat(runtime)
    await worker.pass_once(runtime)
    await worker.pass_once(runtime)
    assert len(trakt.history()) == 1  # Heat went in
    assert [row.id for row in runtime.store.dead_letters()] == [dead.id]
    (alert,) = [m["message"] for m in receiver.messages if "gave up" in m["title"]]
    assert "once more by itself" not in alert
