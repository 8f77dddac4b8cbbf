"""The `webhooks_stopped` alert: a Plex link that reads views Plex shows after the last Plex
webhook from that server tells that its webhooks stopped; a webhook from it resolves it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import MACHINE_ID, TOKEN, FakePlex
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, sign_in_trakt, watchbridge
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import plex_multipart
from watchbridge.config import Config, load_config
from watchbridge.store import Store
from watchbridge.webhookwatch import MARGIN, stopped
from watchbridge.wiring import build_app, build_runtime

SECRET = "stopped-hooks-secret"
DAY = 86400.0


def world(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> tuple[Path, Config, FakePlex, FakeTrakt]:
    plex = start_fake(FakePlex())
    trakt = start_fake(FakeTrakt())
    assert isinstance(plex, FakePlex) and isinstance(trakt, FakeTrakt)
    plex.add_movie("100", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    plex.add_movie("300", "Heat", 1995, ["imdb://tt0113277", "tmdb://949"])
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    heat = trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    # Trakt's play the link copies into Plex: Plex dates that view "now", our own write.
    trakt.add_history(heat, "2024-03-01T20:00:00.000Z")
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"""server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  me: {{users: {{plex: ["1"], tautulli: ["alex"]}}, accounts: {{trakt: {{}}, plex: {{}}}}}}
links:
  plex-trakt: {{services: [plex, trakt], first_run: apply}}
"""
    )
    config = load_config(path)
    store = Store.open(config.storage.path)
    sign_in_trakt(store, trakt, "me", now=time.time())
    store.close()
    return path, config, plex, trakt


def sync(path: Path) -> None:
    result = watchbridge("sync", "--link", "plex-trakt", "--config", str(path))
    assert result.returncode == 0, result.stderr


def post_plex_webhook(config: Config, clock: Callable[[], float] = time.time) -> None:
    """A Plex webhook from the fake server's owner, through the live app at `clock`'s time."""
    payload = sample_json("plex", "movie_media_scrobble.json")
    payload["Server"] = {"title": "Living room", "uuid": MACHINE_ID}
    payload["Account"] = {"id": 1, "title": "alex"}
    body, content_type = plex_multipart(payload, thumb=False)
    post_to_live_app(config, clock, "plex", content=body, headers={"content-type": content_type})


def post_to_live_app(
    config: Config, clock: Callable[[], float], source: str, **request: Any
) -> None:
    """Post one webhook of `source` to the live app at `clock`'s time; it must be taken. The
    alert's "Resolved" notice goes out after the answer: waited for before the app stops."""
    runtime = build_runtime(config, clock=clock)
    with AppThread(build_app(runtime)) as app:
        answer = httpx.post(f"{app.url}/webhooks/{source}/{SECRET}", **request)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 10
        while runtime.notifier.raised("webhooks_stopped", MACHINE_ID):
            assert time.monotonic() < deadline, "the alert was not resolved"
            time.sleep(0.05)


def test_plex_views_after_the_servers_last_webhook_raise_one_alert_a_webhook_resolves(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    path, config, plex, _ = world(tmp_path, start_fake, receiver)
    watched_at = time.time() - 3600
    plex.watch("100", watched_at)  # Arrival, an hour ago
    sync(path)  # never a webhook from this server: a setup relying on the link is not told
    assert receiver.messages == []

    three_days_ago = FakeClock(time.time() - 3 * DAY)
    post_plex_webhook(config, three_days_ago)  # its last webhook
    sync(path)  # reads Arrival's view and, newer still, our own write of Heat
    (alert,) = receiver.messages
    title, body = str(alert["title"]), str(alert["message"])
    assert title == f"watchbridge: webhooks from Plex server {plex.url} stopped"
    last = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(three_days_ago()))
    seen = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(watched_at))
    assert f"Plex server {plex.url} sent its last webhook on {last}" in body
    assert f"such as Arrival at {seen}" in body  # not Heat: that view is our own write
    assert "Plex Pass" in body and "watchbridge webhook-urls" in body
    assert "the Plex link copies those plays" in body

    sync(path)  # still so: no second alert (one per server, throttled)
    assert len(receiver.messages) == 1

    post_plex_webhook(config)  # the webhook URL set again
    assert receiver.titles() == [title, f"Resolved: {title}"]
    resolved = str(receiver.messages[1]["message"])
    assert resolved.startswith("A webhook came from this Plex server again")
    # The person reading them knows the server by its URL, never by its machine id.
    assert all(MACHINE_ID not in str(message) for message in receiver.messages)
    sync(path)  # its views are older than its last webhook now: nothing more
    assert len(receiver.messages) == 2


@pytest.mark.parametrize(
    ("last", "views", "found"),
    [
        (None, [(5 * DAY, "Arrival")], None),  # never sent a webhook
        (DAY, [(DAY + MARGIN, "Arrival")], None),  # within the margin
        (DAY, [], None),
        (DAY, [(DAY + MARGIN + 1, "Heat"), (2 * DAY, "Arrival")], (2 * DAY, "Arrival")),
    ],
)
def test_only_a_view_past_the_margin_after_a_webhook_is_told(
    last: float | None, views: list[tuple[float, str]], found: tuple[float, str] | None
) -> None:
    one = stopped("m", "http://plex", last, views)
    assert (None if one is None else (one.viewed_at, one.title)) == found


def post_tautulli_webhook(config: Config) -> None:
    """A Tautulli "watched" webhook (the documented template) naming the fake server, through
    the live app; waits for the alert's "Resolved" notice it sends after answering."""
    body = sample_json("tautulli", "watched_movie.json")
    body |= {"server_machine_id": MACHINE_ID, "unixtime": str(int(time.time()))}
    post_to_live_app(config, time.time, "tautulli", json=body)


def test_a_tautulli_webhook_naming_the_server_counts_as_its_webhook(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    # A household that moved from Plex's webhooks to Tautulli's: its plays still come at once.
    path, config, plex, _ = world(tmp_path, start_fake, receiver)
    plex.watch("100", time.time() - 3600)
    post_plex_webhook(config, FakeClock(time.time() - 3 * DAY))  # Plex's last one
    sync(path)
    (alert,) = receiver.messages
    title = str(alert["title"])

    post_tautulli_webhook(config)  # Tautulli tells of that server's plays now: resolved
    assert receiver.titles() == [title, f"Resolved: {title}"]
    sync(path)  # and the next read no longer finds the webhooks stopped
    with Store.open(config.storage.path) as store:
        assert store.get_cursor("plex", "me", "webhooks_stopped") is None
    assert len(receiver.messages) == 2


def test_a_dry_run_keeps_no_finding(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    path, config, plex, _ = world(tmp_path, start_fake, receiver)
    plex.watch("100", time.time() - 3600)
    post_plex_webhook(config, FakeClock(time.time() - 3 * DAY))
    result = watchbridge("sync", "--link", "plex-trakt", "--dry-run", "--config", str(path))
    assert result.returncode == 0, result.stderr
    with Store.open(config.storage.path) as store:  # a dry run writes nothing
        assert store.get_cursor("plex", "me", "webhooks_stopped") is None


def test_a_view_synced_late_is_no_evidence_a_view_after_the_last_read_is(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    path, config, plex, trakt = world(tmp_path, start_fake, receiver)
    # Not Arrival: the webhook's sample play of it goes to Trakt and comes back as our write.
    plex.add_movie("400", "Sicario", 2015, ["imdb://tt3397884", "tmdb://273481"])
    trakt.add_movie("Sicario", 2015, imdb="tt3397884", tmdb=273481)
    post_plex_webhook(config, FakeClock(time.time() - 3 * DAY))  # its last webhook
    sync(path)  # nothing viewed since but our own writes
    # An offline download's play, synced to Plex only now: dated a day ago, after the last
    # webhook but before the last read, which did not list it.
    plex.watch("400", time.time() - DAY)
    sync(path)
    sync(path)  # and not the next read either: it is still a view synced late
    assert receiver.messages == []

    # A view after the last read (the webhook for it never came); Plex dates views in whole
    # seconds, so one within the second the last read began would read as dated before it.
    watched_at = time.time() + 5
    plex.watch("400", watched_at)
    sync(path)
    (alert,) = receiver.messages
    seen = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(watched_at))
    assert f"such as Sicario at {seen}" in str(alert["message"])
