"""One Plex server down: the plays waiting on it (a link's deliveries to it, webhook plays
waiting for it to name them) are one outage, told as one alert and one "Resolved"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt
from tests.ingest_samples import only_event, sample_json
from watchbridge.config import Config, parse_config
from watchbridge.deliver.worker import TARGET_PROBE_MAX, DeliveryWorker
from watchbridge.http import RetryPolicy
from watchbridge.ingest import plex as plex_ingest
from watchbridge.model import ref_to_dict
from watchbridge.readers.plex import make_reader
from watchbridge.sides import ref_for_key
from watchbridge.store import NewOutboxRow
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

YUMA_GUIDS = ["imdb://tt0050086", "tmdb://14168"]
YUMA_GUID = "plex://movie/5d7768a696b655001fdc0e5c"


def yuma_world(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> tuple[FakePlex, FakeTrakt, Config]:
    """A Plex server and a Trakt account that both hold 3:10 to Yuma, one profile `me`
    signing in to both, a plex-trakt link and alerts to `receiver`."""
    plex = start_fake(FakePlex())
    trakt = start_fake(FakeTrakt())
    assert isinstance(plex, FakePlex) and isinstance(trakt, FakeTrakt)
    plex.add_movie("8372", "3:10 to Yuma", 1957, YUMA_GUIDS, guid=YUMA_GUID)
    trakt.add_movie("3:10 to Yuma", 1957, imdb="tt0050086", tmdb=14168)
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{trakt: {{}}, plex: {{}}}}}}
links:
  plex-trakt: {{services: [plex, trakt]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    return plex, trakt, config


async def test_plex_down_is_one_alert_for_its_lookups_and_its_deliveries(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
) -> None:
    plex, trakt, config = yuma_world(tmp_path, start_fake, receiver)
    clock = FakeClock(1_750_000_000.0)
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    lookups = worker.targets["trakt"].enricher.plex.metadata.__self__  # type: ignore[attr-defined]
    for client in (worker.targets["plex"].client, lookups):  # type: ignore[attr-defined]
        client.http.retry = RetryPolicy(attempts=1, backoff=0.01, max_inline_wait=0.5)
    try:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())
        reader = make_reader(config, runtime.store, config.links["plex-trakt"], ["me"], clock)
        await reader.read("me", {}, None, True)  # the link read the libraries
        await reader.aclose()
        plex.drop_next(100_000)  # the box is off
        # A webhook play that needs Plex to name it, and a link's play for Plex.
        payload = sample_json("plex", "movie_new_agent_no_guid_array_media_scrobble.json")
        runtime.store.ingest(ingest_job(runtime, "me", only_event(plex_ingest.parse(payload))))
        item = ref_for_key("movie:tmdb:14168")
        assert item is not None
        row = {"item": ref_to_dict(item), "at": clock() - 60, "link": "plex-trakt"}
        runtime.store.enqueue([NewOutboxRow("plex", "me", "play", row, "k", "i")], clock())
        for _ in range(30):  # an hour, the worker looking every two minutes
            await worker.pass_once(runtime)
            clock.advance(120)
        (alert,) = receiver.messages  # not one for the lookups and one for the deliveries
        # Named by its address, as the links' alert names it (causes.server_named): with two
        # Plex servers of one's own and a friend's, "Plex" alone does not say which is down.
        named = f"Plex at {plex.url} (services.plex.url) has not answered for"
        assert str(alert["message"]).startswith(named), alert["message"]
        assert "deliveries to it, wait (nothing is lost)" in str(alert["message"])
        assert runtime.store.outbox_counts()["dead"] == 0
        plex.clear_knobs()  # back
        for _ in range(3):
            await worker.pass_once(runtime)
            clock.advance(TARGET_PROBE_MAX)
        assert receiver.titles() == [str(alert["title"]), f"Resolved: {alert['title']}"]
        assert [h.item.title for h in trakt.history()] == ["3:10 to Yuma"]
        assert plex.user_state("8372")["viewCount"] == 1
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


async def test_plex_dropping_every_connection_is_told_in_plain_words_in_the_alert(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
) -> None:
    plex, trakt, config = yuma_world(tmp_path, start_fake, receiver)
    clock = FakeClock(1_750_000_000.0)
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    worker.targets["plex"].client.http.retry = RetryPolicy(attempts=1)  # type: ignore[attr-defined]
    try:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())
        reader = make_reader(config, runtime.store, config.links["plex-trakt"], ["me"], clock)
        await reader.read("me", {}, None, True)  # the link read the libraries
        await reader.aclose()
        plex.drop_next(100_000)  # a reverse proxy in front of it closes every connection
        item = ref_for_key("movie:tmdb:14168")
        assert item is not None
        row = {"item": ref_to_dict(item), "at": clock() - 60, "link": "plex-trakt"}
        runtime.store.enqueue([NewOutboxRow("plex", "me", "play", row, "k", "i")], clock())
        for _ in range(10):  # 20 minutes, the worker looking every two minutes
            await worker.pass_once(runtime)
            clock.advance(120)
        (alert,) = receiver.messages
        assert (
            "the server closed the connection without answering after 1 attempt(s): if it "
            "keeps happening, look at the server's log, and at what sits on the way (a reverse "
            "proxy, a firewall, a VPN)." in str(alert["message"])
        )
        assert "RemoteProtocolError" not in str(alert["message"])
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


async def test_a_plex_alert_an_earlier_release_raised_under_its_old_key_is_resolved(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
) -> None:
    # Guards the old key in ids' `_reachable`: a release before one Plex outage was one alert
    # raised the lookups' alert under "server:plex" (now `outage_key("plex")` is "plex"). Open
    # when the new release starts, it gets its Resolved once Plex answers a lookup again.
    _, trakt, config = yuma_world(tmp_path, start_fake, receiver)
    clock = FakeClock(1_750_000_000.0)
    before = build_runtime(config, clock=clock)  # the earlier release, Plex off
    before.open()
    title = "watchbridge: Plex cannot be reached"
    body = "Plex has not answered for 15 minutes: connection refused."
    await before.notifier.notify("service_unreachable", title, body, key="server:plex")
    sign_in_trakt(before.store, trakt, "me", now=clock())
    before.close()
    assert receiver.titles() == [title]
    clock.advance(3600)
    runtime = build_runtime(config, clock=clock)  # upgraded and started again; Plex is back
    runtime.open()
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    try:
        # A webhook play that needs Plex to name it: Plex answers its lookup.
        payload = sample_json("plex", "movie_new_agent_no_guid_array_media_scrobble.json")
        runtime.store.ingest(ingest_job(runtime, "me", only_event(plex_ingest.parse(payload))))
        for _ in range(3):
            await worker.pass_once(runtime)
            clock.advance(120)
        assert [h.item.title for h in trakt.history()] == ["3:10 to Yuma"]
        assert receiver.titles() == [title, f"Resolved: {title}"]
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()
