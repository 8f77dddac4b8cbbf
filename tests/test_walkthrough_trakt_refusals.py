"""Walkthrough: a Jellyfin household whose Trakt account runs into Trakt's refusals.

The running app (real HTTP) takes Jellyfin's webhooks and delivers to the fake Trakt, which
answers as `trakt-api.md` §2/§3/§15 say: 420 (an account limit, the 2026 bare variant too),
423 (a locked account), 429 without its headers (the abuse filter) and the 5-minute block
after a trip (trakt-api#827). What is asserted is what the user ends up with: Trakt's history
(each play once), the alerts sent (how many, what they say), what `watchbridge status` and the
status page say, and the outbox (nothing given up)."""

from __future__ import annotations

import contextlib
import copy
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, RateLimit
from tests.harness import sign_in_trakt, wait_for, write_config
from tests.ingest_samples import sample_json
from tests.walkthrough import Clock, RunningHouse
from watchbridge import wiring
from watchbridge.cli import cli
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.store import Store

SECRET = "trakt-refusals-walkthrough-secret"
HOUR = 3600.0


class House(RunningHouse):
    """Alex's watchbridge: Jellyfin's webhooks to Trakt, alerts to `receiver`."""

    def __init__(self, config: Path, trakt: FakeTrakt, receiver: AlertReceiver) -> None:
        super().__init__(config, Clock(), (trakt,), trakt=trakt)
        self.trakt, self.receiver = trakt, receiver

    def watch(self, number: int, *, minutes: float = 48) -> None:
        """Alex plays Breaking Bad S5E`number` through in Jellyfin: its start, then its stop."""
        for name, after in (("playback_start_episode.json", 0.0), (STOP, minutes * 60)):
            self.shift(after)
            body = copy.deepcopy(sample_json("jellyfin", name))
            at = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            body.update(
                UtcTimestamp=at,
                EpisodeNumber=number,
                ItemId=f"c7d2a91e4b3f4e6a8d0b1c2e3f4a5b{number:02d}",
                Provider_tvdb=str(TVDB[number]),
            )
            del body["Provider_imdb"], body["Provider_tmdb"]
            url = f"{self.app.url}/webhooks/jellyfin/{SECRET}"
            assert httpx.post(url, json=body).status_code == 202

    def outbox(self) -> dict[str, int]:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            rows = conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
        return {str(status): int(count) for status, count in rows}

    def settle(self) -> None:
        """Until nothing is due (every row done, given up, or waiting for a later try), and
        a moment more."""
        super().settle()
        time.sleep(0.3)

    def status(self) -> str:
        """What `watchbridge status` prints."""
        result = CliRunner().invoke(cli, ["status", "--config", str(self.config)])
        assert result.exit_code == 0, result.output
        return result.output

    def page(self) -> str:
        return httpx.get(f"{self.app.url}/").text

    def plays(self) -> list[tuple[int, int]]:
        return sorted((h.item.season, h.item.number) for h in self.trakt.history())


STOP = "playback_stop_episode_completed.json"
TVDB = {14: 4637661, 15: 4637662, 16: 4637663}


@pytest.fixture
def house(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[House]:
    # The worker looks every half second, not every 5 minutes (10 s while a sign-in holds
    # plays): the test moves the clock.
    quick = partial(DeliveryWorker, idle_wake=0.5, sign_in_look=0.5)
    monkeypatch.setattr(wiring, "DeliveryWorker", quick)
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    show = trakt.add_show("Breaking Bad", 2008, imdb="tt0903747", tmdb=1396, tvdb=81189)
    for number, tvdb in TVDB.items():
        trakt.add_episode(show, 5, number, title=f"E{number}", tvdb=tvdb)
    config = write_config(
        tmp_path,
        f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n'
        "services:\n"
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}\n'
        "profiles:\n"
        "  alex: {users: {jellyfin: [alex]}, accounts: {trakt: {}}}\n",
        secret=SECRET,
    )
    with House(config, trakt, receiver) as house:
        yield house


def api_calls(trakt: FakeTrakt) -> int:
    """Requests to Trakt's API (the sign-in host's aside)."""
    return sum(1 for r in trakt.requests if not r.path.startswith("/oauth"))


def test_a_locked_account_holds_every_play_with_one_alert_until_trakt_unlocks_it(
    house: House,
) -> None:
    trakt, receiver = house.trakt, house.receiver
    trakt.lock_account()
    house.watch(14)
    house.watch(15)
    house.settle()
    assert house.plays() == []
    assert house.outbox().get("dead", 0) == 0
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: Trakt account locked (profile alex)"
    assert "contact Trakt support" in alert["message"]
    status = house.status()
    assert "contact Trakt support" in status, status
    assert "contact Trakt support" in house.page()
    # No loop: hours of the lock cost a call an hour; the alert is only reminded of (after
    # an hour, then after as long again as it has lasted), never a second kind of alert.
    calls = api_calls(trakt)
    for _ in range(3):
        house.shift(HOUR + 1)
        house.settle()
    assert api_calls(trakt) - calls <= 3 * 2, [r.path for r in trakt.requests[-10:]]
    assert set(receiver.titles()) == {alert["title"]} and len(receiver.messages) <= 3
    assert house.outbox().get("dead", 0) == 0
    trakt.unlock_account()  # Trakt's support undid it
    house.shift(HOUR + 1)
    house.settle()
    assert house.plays() == [(5, 14), (5, 15)]
    assert receiver.titles()[-1:] == ["Resolved: watchbridge: Trakt account locked (profile alex)"]


def test_a_full_history_holds_its_plays_with_one_alert_and_they_go_once_there_is_room(
    house: House,
) -> None:
    trakt, receiver = house.trakt, house.receiver
    # Trakt's 2026 bare 420: no body, no limit headers, on every history write.
    for route in ("POST /scrobble/stop", "POST /sync/history"):
        trakt.account_limit(1000, route=route, headers=False)
    house.watch(14)
    house.settle()
    house.watch(15)
    house.settle()
    assert house.plays() == []
    assert house.outbox().get("dead", 0) == 0
    # Trakt said nothing of the limit: its settings are read once per refusal for it
    # (trakt-api.md §15). Upgrading is no way out: VIP has the same history limit.
    assert trakt.count("GET", "/users/settings") == 2
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: Trakt account limit reached (profile alex)"
    told = (
        "Trakt account limit reached for history: history writes are paused; make room on"
        " Trakt (a VIP account has the same history limit)"
    )
    assert alert["message"] == told
    assert "trakt for alex: 2 waiting, next try" in house.status()
    assert told in house.status() and told in house.page()
    # An hour on, Trakt still refuses: the same alert at most reminded of, nothing given up.
    house.shift(HOUR + 1)
    house.settle()
    assert set(receiver.titles()) == {alert["title"]} and house.outbox().get("dead", 0) == 0
    trakt.clear_knobs()  # room made on Trakt
    house.shift(HOUR + 1)
    house.settle()
    assert house.plays() == [(5, 14), (5, 15)]
    assert receiver.titles()[-1] == f"Resolved: {alert['title']}"
    assert house.outbox() == {"done": 4}


def test_429s_of_trakts_abuse_filter_are_waited_out_and_each_play_lands_once(
    house: House,
) -> None:
    trakt, receiver = house.trakt, house.receiver
    # 429 without X-Ratelimit or Retry-After (§3, 2026-10): backed off, not retried at once.
    trakt.throttle_next(2, headers=False, route="POST /scrobble/stop")
    house.watch(14)
    wait_for(lambda: house.plays() == [(5, 14)], timeout=60)
    house.settle()
    # Backed off with jitter, seconds at first, longer at each such 429 in a row.
    tried = [r.time for r in trakt.requests if r.path == "/scrobble/stop"]
    gaps = [b - a for a, b in itertools.pairwise(tried)]
    assert len(tried) == 3 and gaps[0] >= 3 and gaps[1] > gaps[0], gaps
    assert house.outbox() == {"done": 2}
    assert receiver.messages == []  # a short wait: nothing for the user to do


def test_the_block_after_a_trip_is_waited_out_and_each_play_lands_once(house: House) -> None:
    # Trakt's block of every call after a limit is tripped (trakt-api#827: 5 minutes, here
    # 8 s of real time: the pacer waits by the monotonic clock, which the test cannot move).
    trakt, receiver = house.trakt, house.receiver
    trakt.enforce_rate_limits = True
    trakt.rate_limits["AUTHED_API_POST_LIMIT"] = RateLimit(3, 1)  # the second write trips
    trakt.trip_block_seconds = 8
    for number in (14, 15, 16):
        house.watch(number, minutes=0)
    wait_for(lambda: house.plays() == [(5, 14), (5, 15), (5, 16)], timeout=90)
    house.settle()
    assert house.outbox() == {"done": 6}
    assert 429 in {r.status for r in trakt.requests}  # it did trip
    assert receiver.messages == []  # a wait of seconds: nothing for the user to do


def test_a_revoked_app_holds_the_plays_with_one_alert_and_auth_trakt_brings_them_back(
    house: House,
) -> None:
    trakt, receiver = house.trakt, house.receiver
    trakt.revoke_tokens()  # the app revoked on trakt.tv: 401, then the refresh refused
    house.watch(14)
    house.watch(15)
    house.settle()
    assert house.plays() == [] and house.outbox().get("dead", 0) == 0
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: Trakt sign-in needed (profile alex)"
    assert "watchbridge auth trakt --profile alex" in alert["message"]
    assert "watchbridge auth trakt --profile alex" in house.status()
    refreshes = trakt.count("POST", "/oauth/token")
    house.shift(HOUR + 1)
    house.settle()
    assert trakt.count("POST", "/oauth/token") == refreshes  # a refused token is not sent again
    with Store.open(house.db) as beside:  # `watchbridge auth trakt`'s own, the service running
        sign_in_trakt(beside, trakt, "alex", now=house.clock())
        beside.resume_after_sign_in("trakt", "alex", house.clock())
    wait_for(lambda: house.plays() == [(5, 14), (5, 15)], timeout=20)
    house.settle()
    assert house.outbox() == {"done": 4}
    assert receiver.titles()[-1] == f"Resolved: {alert['title']}"


def test_an_app_whose_owner_lost_vip_holds_the_plays_with_one_alert_until_it_is_vip_again(
    house: House,
) -> None:
    trakt, receiver = house.trakt, house.receiver
    trakt.vip = False  # 426 to every call: since July 2026 the app's owner must be VIP
    house.watch(14)
    house.settle()
    assert house.plays() == [] and house.outbox().get("dead", 0) == 0
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: Trakt needs VIP (profile alex)"
    assert (
        "the account that owns the app of services.trakt.client_id must be VIP"
        in (alert["message"])
    )
    assert "services.trakt.client_id must be VIP" in house.status()
    trakt.vip = True  # VIP renewed
    house.shift(HOUR + 1)
    house.settle()
    assert house.plays() == [(5, 14)]
    assert receiver.titles()[-1] == f"Resolved: {alert['title']}"
