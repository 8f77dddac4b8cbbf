"""The one config file edited between two starts while work is still queued: the real service
on one database, started under the new config, sends only what that config still asks for,
and tells once of what it will not send."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import ServiceProcess, free_port, sign_in_trakt
from tests.test_webhooks_e2e import seeded
from watchbridge.reconcile import Action
from watchbridge.store import Store
from watchbridge.sync import outbox_rows

ARRIVAL = "movie:tmdb:329865"


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    return seeded(fake)


def config_text(
    tmp_path: Path, port: int, trakt: FakeTrakt, receiver: AlertReceiver, links: str
) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "http://127.0.0.1:{free_port()}", token: plex-owner-token}}
profiles:
  me: {{accounts: {{trakt: {{}}, plex: {{}}}}}}
  kid: {{accounts: {{trakt: {{}}, plex: {{}}}}}}
links:
{links}"""


LINK = "  plex-trakt: {services: [plex, trakt], kinds: [history, ratings], interval: 7d}\n"
CHANGES = {
    "link removed": ("", "links.plex-trakt is no longer in the config"),
    "ratings no longer synced": (
        "  plex-trakt: {services: [plex, trakt], kinds: [history], interval: 7d}\n",
        "links.plex-trakt no longer syncs ratings",
    ),
    "profile no longer synced by it": (
        "  plex-trakt: {services: [plex, trakt], profiles: [kid], interval: 7d}\n",
        "links.plex-trakt no longer syncs profile me",
    ),
}


def queued_by_the_link(tmp_path: Path, trakt: FakeTrakt) -> None:
    """What an applied run of plex-trakt left queued for Trakt (Trakt was down): a play of
    Arrival and its rating, from Plex."""
    at = time.time() - 3600
    actions = (
        Action("add_play", "trakt", ARRIVAL, "new on plex", at, source="plex:1"),
        Action("set_rating", "trakt", ARRIVAL, "rated on plex", at, value=8),
    )
    with Store.open(tmp_path / "wb.db") as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
        store.enqueue(outbox_rows("plex-trakt", "me", actions)[0], time.time())


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_what_a_link_queued_that_the_config_no_longer_asks_for_is_not_sent(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, change: str
) -> None:
    links, why = CHANGES[change]
    queued_by_the_link(tmp_path, trakt)
    port = free_port()
    path = tmp_path / "watchbridge.yaml"
    path.write_text(config_text(tmp_path, port, trakt, receiver, links), encoding="utf-8")
    service = ServiceProcess(path, port).start()
    try:
        wait_for(lambda: any("gave up" in title for title in receiver.titles()))
        with Store.open(tmp_path / "wb.db") as store:
            dead = {row.action: row.last_error or "" for row in store.dead_letters()}
            counts = store.outbox_counts()
    finally:
        service.terminate()
    if change == "ratings no longer synced":  # the play is still wanted: it went out
        assert [h.item.title for h in trakt.history()] == ["Arrival"]
        assert list(dead) == ["rating"]
    else:
        assert trakt.history() == []
        assert sorted(dead) == ["play", "rating"]
    assert trakt.ratings() == []
    assert all(reason.startswith(why) for reason in dead.values()), dead
    assert counts["pending"] == 0  # neither in the queue gauge nor its oldest-age gauge
    assert "deliveries the config no longer allows given up" in service.output()
    # Retried under this config, they would write what the user took out of it.
    retry = [sys.executable, "-m", "watchbridge", "deadletters", "retry", "--all"]
    said = subprocess.run([*retry, "--config", str(path)], capture_output=True, text=True)
    assert f"{len(dead)} left as dead letter(s): {why}" in said.stdout, said.stdout


def test_what_a_link_queued_goes_out_while_the_config_still_asks_for_it(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    queued_by_the_link(tmp_path, trakt)
    port = free_port()
    path = tmp_path / "watchbridge.yaml"
    path.write_text(config_text(tmp_path, port, trakt, receiver, LINK), encoding="utf-8")
    service = ServiceProcess(path, port).start()
    try:
        wait_for(lambda: len(trakt.history()) == 1 and len(trakt.ratings()) == 1)
    finally:
        service.terminate()
    with Store.open(tmp_path / "wb.db") as store:
        assert store.dead_letters() == []
