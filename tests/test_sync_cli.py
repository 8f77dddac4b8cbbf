"""`watchbridge sync` and `watchbridge status` as a user sees them: run in-process through the
real command (reads over HTTP against the fakes, the command's own delivery drains the outbox).
Reads have their pacing lifted (`tests.linkrig`); what the command prints is the subject here,
the scenarios themselves are in `test_sync_scenarios.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import put_back, sign_in_trakt, write_config
from tests.linkrig import BB, use_fast_readers
from tests.test_sync_scenarios import TraktApp, ago, diary_plays, trakt_plays
from tests.unpaced import unpaced_while
from watchbridge import servelock
from watchbridge.alerts import RELOAD_EVERY, Notifier
from watchbridge.cli import cli
from watchbridge.config import load_config
from watchbridge.downtime import RESTORED_TITLE, restore_notice
from watchbridge.errors import WatchbridgeError
from watchbridge.progress import LiveProgress
from watchbridge.reconcile import Action
from watchbridge.store import Store
from watchbridge.sync import FAILURES_BEFORE_ALERT, outbox_rows, report_held, run_link


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    """The clients' pacing lifted: these tests are about
    what the command says and sends, not the services' pace."""
    with unpaced_while("trakt", "serializd"):
        yield


LINK = "ts"
EPISODE_ADD = "POST /api/episode_log/add"  # a play sent to Serializd


class World:
    def __init__(self, tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, alerts: str):
        self.trakt, self.serializd = trakt, serializd
        self.app = TraktApp(trakt)  # the user's changes on Trakt
        self.config = write_config(
            tmp_path,
            f"""alerts: {{urls: ["{alerts}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    accounts:
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  {LINK}: {{services: [trakt, serializd], first_run: apply}}
""",
        )
        store = Store.open(tmp_path / "watchbridge.db")
        sign_in_trakt(store, trakt, "me", now=time.time())
        store.close()

    def run(self, *args: str, catch: bool = False) -> Result:
        return CliRunner().invoke(
            cli, [*args, "--config", str(self.config)], catch_exceptions=catch
        )

    def sync(self, *args: str) -> str:
        result = self.run("sync", *args)
        assert result.exit_code == 0, result.output
        return result.stdout

    def same_plays_on_both_sides(self, count: int) -> None:
        """`count` recent plays, already the same on both sides, and a first run that saw them."""
        show = next(s for s in self.trakt.shows if s.tmdb == BB)
        for number in range(1, count + 1):
            at = ago(3 - number / 10)
            self.trakt.add_history(show.seasons[1].episodes[number], at)
            self.serializd.log_entry(None, BB, 1, number, backdate=at)
        assert "plan: nothing to do" in self.sync()


@pytest.fixture
def world(
    tmp_path: Path,
    start_fake: Callable[[Any], Any],
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    use_fast_readers(monkeypatch)
    trakt: FakeTrakt = start_fake(FakeTrakt())
    serializd: FakeSerializd = start_fake(FakeSerializd())
    trakt.add_show("Breaking Bad", 2008, tmdb=BB, tvdb=81189, seasons={1: 7})
    serializd.add_show(BB, "Breaking Bad", seasons={1: 7})
    world = World(tmp_path, trakt, serializd, receiver.apprise_url)
    yield world
    world.app.http.close()


# --------------------------------------------------------------------------- sync from cron


def test_a_sync_from_cron_prunes_old_runs_and_lookups(world: World, tmp_path: Path) -> None:
    # No service runs: cron has run `watchbridge sync` every half hour for three months.
    store = Store.open(tmp_path / "watchbridge.db")
    long_ago = time.time() - 90 * 86400
    for n in range(50):
        run = store.start_run(LINK, long_ago + n * 1800)
        assert run is not None
        store.finish_run(run, long_ago + n * 1800 + 5, "ok", {}, 1)
    store.cache_put("trakt-search", "imdb:tt0000001", {"x": 1}, long_ago, 3600)
    store.close()
    world.sync("--link", LINK)
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert len(store.recent_runs(LINK, 100)) == 1  # tonight's
        assert store.cache_get("trakt-search", "imdb:tt0000001", long_ago)[0] is False


def test_a_failing_sync_from_cron_still_prunes(world: World, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "watchbridge.db")
    long_ago = time.time() - 90 * 86400
    store.cache_put("trakt-search", "imdb:tt0000001", {"x": 1}, long_ago, 3600)
    store.close()
    world.serializd.fail_next(1000, 404, body="<html>Not Found</html>")
    assert world.run("sync", "--link", LINK, catch=True).exit_code != 0
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.cache_get("trakt-search", "imdb:tt0000001", long_ago)[0] is False


def test_a_sync_from_cron_alerts_when_the_link_keeps_failing(
    world: World, receiver: AlertReceiver
) -> None:
    world.serializd.fail_next(1000, 404, body="<html>Not Found</html>")
    for _ in range(FAILURES_BEFORE_ALERT):
        assert world.run("sync", "--link", LINK, catch=True).exit_code != 0
    assert receiver.titles() == [f"watchbridge: link {LINK} keeps failing"]
    world.serializd.clear_knobs()
    world.sync("--link", LINK)
    assert receiver.titles()[-1] == f"Resolved: watchbridge: link {LINK} keeps failing"


ARRIVAL = "movie:tmdb:329865"


def queued_by_a_removed_link(world: World, tmp_path: Path) -> None:
    """A play of Arrival and its rating that link plex-trakt queued for Trakt (Trakt was
    down), before the user took the link out of the config (it is not in `world`'s)."""
    world.trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    at = time.time() - 3600
    actions = (
        Action("add_play", "trakt", ARRIVAL, "new on plex", at, source="plex:1"),
        Action("set_rating", "trakt", ARRIVAL, "rated on plex", at, value=8),
    )
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue(outbox_rows("plex-trakt", "me", actions)[0], time.time())


def test_a_sync_from_cron_does_not_send_what_the_config_no_longer_asks_for(
    world: World, tmp_path: Path, receiver: AlertReceiver
) -> None:
    # No service runs (cron only): no start of one judges the queue under the edited config,
    # so the sync's own delivery sent what the user had taken out of it.
    queued_by_a_removed_link(world, tmp_path)
    world.sync("--link", LINK)
    assert world.trakt.history() == [] and world.trakt.ratings() == []
    with Store.open(tmp_path / "watchbridge.db") as store:
        dead = store.dead_letters()
        assert store.outbox_counts()["pending"] == 0
    assert sorted(row.action for row in dead) == ["play", "rating"]
    assert all((row.last_error or "").startswith("links.plex-trakt is no longer") for row in dead)
    assert receiver.titles() == ["watchbridge: gave up sending 2 plays and ratings to Trakt"]


def test_a_sync_beside_the_service_leaves_judging_the_queue_to_it(
    world: World, tmp_path: Path
) -> None:
    # The service judged the queue under its own config as it started; a sync run beside it
    # may have been given another config file: what it delivers, the service's config allows.
    queued_by_a_removed_link(world, tmp_path)
    with servelock.hold(tmp_path / "watchbridge.db", time.time()):
        world.sync("--link", LINK)
    assert [h.item.title for h in world.trakt.history()] == ["Arrival"]
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.dead_letters() == []


# --------------------------------------------------------------------------- sync output


def test_a_run_ends_with_one_summary_line_per_profile_and_side(world: World) -> None:
    world.app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    world.serializd.log_entry(None, BB, 1, 2, backdate="2024-01-02T20:00:00.000Z", rating=8)
    out = world.sync("--link", LINK)
    lines = out.splitlines()
    trakt = next(line for line in lines if line.startswith("summary me trakt:"))
    serializd = next(line for line in lines if line.startswith("summary me serializd:"))
    assert "plays=1 adds=1 removals=0 ratings=1 queued=2 held=0 skipped=0" in trakt
    assert "plays=1 adds=1 removals=0 ratings=0 queued=1 held=0 skipped=0" in serializd
    assert any(line.startswith(f"run {LINK}: ok, ") for line in lines)
    assert lines[-1].startswith("3 change(s) queued, 3 delivered now")


def test_a_dry_run_lists_the_plan_with_reasons_and_queues_nothing(world: World) -> None:
    world.serializd.log_entry(None, BB, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    out = world.sync("--link", LINK, "--dry-run")
    assert (
        "  add_play trakt episode:tmdb:1396:s1e2 2024-01-02 20:00:00 UTC  (new on serializd)" in out
    )
    assert "summary me trakt: plays=0 adds=1 removals=0 ratings=0 queued=0" in out
    assert out.splitlines()[-1] == "dry run: nothing was written"
    assert world.trakt.history() == []


def test_a_negative_limit_is_refused_as_a_usage_error(world: World) -> None:
    result = world.run("sync", "--dry-run", "--limit", "-1", catch=True)
    assert result.exit_code == 2 and "--limit" in result.output


def test_a_quiet_run_says_so_and_reads_nothing(world: World) -> None:
    world.same_plays_on_both_sides(1)
    out = world.sync("--link", LINK)
    assert "profile me: nothing changed on either side since the last sync" in out
    assert "summary me trakt: plays=unchanged adds=0" in out and "requests=1 " in out


def test_without_link_every_link_is_synced(world: World) -> None:
    world.serializd.log_entry(None, BB, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    out = world.sync()
    assert f"run {LINK}: ok" in out
    assert [p[:2] for p in trakt_plays(world.trakt)] == [(1, 2)]


def test_without_link_a_link_running_elsewhere_is_skipped_not_failed(
    world: World, tmp_path: Path
) -> None:
    text = world.config.read_text(encoding="utf-8")
    world.config.write_text(
        text.replace("first_run: apply}", "first_run: apply, profiles: [me]}").replace(
            "links:\n", "links:\n  other: {services: [trakt, serializd], profiles: [me]}\n"
        ),
        encoding="utf-8",
    )
    store = Store.open(tmp_path / "watchbridge.db")
    try:
        store.start_run("other", time.time())  # the service is running it now
    finally:
        store.close()
    result = world.run("sync", catch=True)
    assert result.exit_code == 0, result.output
    assert "skipped: links.other: another sync of this link is still running" in result.stderr
    assert f"run {LINK}: ok" in result.stdout


def test_without_link_a_failing_link_does_not_stop_the_others(world: World) -> None:
    text = world.config.read_text(encoding="utf-8")
    world.config.write_text(
        text.replace(
            "profiles:\n",
            "profiles:\n  you: {accounts: {trakt: {}, serializd: {email: x@y.z, password: no}}}\n",
        )
        .replace("first_run: apply}", "first_run: apply, profiles: [me]}")
        .replace("links:\n", "links:\n  broken: {services: [trakt, serializd], profiles: [you]}\n"),
        encoding="utf-8",
    )
    world.serializd.log_entry(None, BB, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    result = world.run("sync", catch=True)
    assert isinstance(result.exception, WatchbridgeError)
    assert result.exception.message == "1 of 2 links failed: broken"
    # Its profile is neither signed in to Trakt nor accepted by Serializd: the first found.
    assert "refused the email or password of profile you" in result.stderr
    assert f"run {LINK}: ok" in result.stdout
    assert [p[:2] for p in trakt_plays(world.trakt)] == [(1, 2)]


def test_without_link_a_link_waiting_for_its_review_is_not_called_failed(world: World) -> None:
    # It ended "error: 1 of 2 links failed: fresh": a first sync waiting for its review.
    text = world.config.read_text(encoding="utf-8")
    world.config.write_text(
        text.replace("first_run: apply}", "first_run: apply, profiles: [me]}").replace(
            "links:\n", "links:\n  fresh: {services: [trakt, serializd], profiles: [me]}\n"
        ),
        encoding="utf-8",
    )
    world.serializd.log_entry(None, BB, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    result = world.run("sync", catch=True)
    # Still not 0, as for `--link fresh` alone: nothing of it is written until you review it.
    assert result.exit_code == 1
    assert isinstance(result.exception, WatchbridgeError)
    assert result.exception.message == (
        "1 of 2 links waits for its first sync's review: fresh "
        "(see it with `watchbridge sync --link fresh --dry-run`)"
    )
    assert "failed" not in result.stderr and "error:" not in result.stderr
    assert "fresh: this is the first sync of links.fresh" in result.stderr
    assert f"run {LINK}: ok" in result.stdout


def test_without_link_a_failed_link_and_one_waiting_for_its_review_are_told_apart(
    world: World,
) -> None:
    text = world.config.read_text(encoding="utf-8")
    world.config.write_text(
        text.replace(
            "profiles:\n",
            "profiles:\n  you: {accounts: {trakt: {}, serializd: {email: x@y.z, password: no}}}\n",
        )
        .replace("first_run: apply}", "first_run: apply, profiles: [me]}")
        .replace(
            "links:\n",
            "links:\n  broken: {services: [trakt, serializd], profiles: [you]}\n"
            "  fresh: {services: [trakt, serializd], profiles: [me]}\n",
        ),
        encoding="utf-8",
    )
    world.serializd.log_entry(None, BB, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    result = world.run("sync", catch=True)
    assert isinstance(result.exception, WatchbridgeError)
    assert result.exception.message == (
        "1 of 3 links failed: broken; 1 waits for its first sync's review: fresh "
        "(see it with `watchbridge sync --link fresh --dry-run`)"
    )


def test_a_run_can_carry_changes_one_way_only(world: World) -> None:
    world.app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    world.serializd.log_entry(None, BB, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    world.sync("--link", LINK, "--direction", "trakt-to-serializd")
    assert [p[:2] for p in diary_plays(world.serializd)] == [(1, 1), (1, 2)]
    assert [p[:2] for p in trakt_plays(world.trakt)] == [(1, 1)]


def test_a_direction_needs_the_link_it_names(world: World) -> None:
    with pytest.raises(WatchbridgeError, match="pass --link NAME"):
        world.run("sync", "--direction", "trakt-to-serializd")


class Service:
    """The running service's alerts beside the command: a notifier sharing its database."""

    def __init__(self, world: World) -> None:
        self.store = Store.open(world.config.parent / "watchbridge.db")
        self.clock = FakeClock(time.time())
        self.alerts = Notifier(load_config(world.config).alerts, clock=self.clock, timeout=2.0)
        self.alerts.remember_in(self.store)


@pytest.fixture
def service(world: World) -> Iterator[Service]:
    running = Service(world)
    yield running
    running.alerts.forget_store()
    running.store.close()


def test_a_sync_run_sends_the_recovery_of_an_alert_the_service_raised_once(
    world: World, receiver: AlertReceiver, service: Service
) -> None:
    paused = service.alerts.notify("credentials", "paused", "Serializd refused", "serializd:me")
    assert asyncio.run(paused) == "sent"
    world.app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    world.sync()  # the play goes to Serializd for profile me without a problem
    assert receiver.titles() == ["paused", "Resolved: paused"]
    service.clock.advance(RELOAD_EVERY)
    flowing = service.alerts.resolve("credentials", "flowing again", key="serializd:me")
    assert asyncio.run(flowing) == "not_raised"


def test_a_second_sync_run_holding_the_same_removals_does_not_alert_again(
    world: World, receiver: AlertReceiver
) -> None:
    world.same_plays_on_both_sides(2)
    world.app.unwatch(world.trakt.history()[0])
    world.sync("--link", LINK)
    out = world.sync("--link", LINK)
    assert "held: me: 1 of 2 plays on serializd would be removed" in out
    assert receiver.titles() == [f"watchbridge: link {LINK} holds removals"]


def test_the_service_resolves_removals_a_sync_run_held_once_they_are_confirmed(
    world: World, receiver: AlertReceiver, service: Service
) -> None:
    world.same_plays_on_both_sides(2)
    world.app.unwatch(world.trakt.history()[0])
    world.sync("--link", LINK)  # holds the removal and alerts
    world.sync("--link", LINK, "--confirm-removals")
    service.clock.advance(RELOAD_EVERY)
    asyncio.run(report_held(service.alerts, LINK, []))  # its next scheduled run holds none
    alert = f"watchbridge: link {LINK} holds removals"
    assert receiver.titles() == [alert, f"Resolved: {alert}"]


def test_a_mistyped_link_name_leaves_no_run_behind(world: World) -> None:
    with pytest.raises(WatchbridgeError, match="no link 'tss'"):
        world.run("sync", "--link", "tss")
    assert "tss" not in world.run("status").stdout


def test_a_mistyped_direction_leaves_no_run_behind(world: World) -> None:
    with pytest.raises(WatchbridgeError, match="--direction expects"):
        world.run("sync", "--link", LINK, "--direction", "trakt-to-plex")
    assert "failed" not in world.run("status").stdout


def test_an_anilist_narrowing_needs_a_link_with_an_anilist_side(world: World) -> None:
    with pytest.raises(WatchbridgeError, match="need a link with an anilist side"):
        world.run("sync", "--link", LINK, "--anilist-id", "21")


# --------------------------------------------------------------------------- removal guard


def test_held_removals_are_shown_and_alerted(world: World, receiver: AlertReceiver) -> None:
    world.same_plays_on_both_sides(2)
    world.app.unwatch(world.trakt.history()[0])
    out = world.sync("--link", LINK)
    assert "held: me: 1 of 2 plays on serializd would be removed (more than 10%)" in out
    assert f"`watchbridge sync --link {LINK} --confirm-removals`" in out
    assert "held=1" in next(line for line in out.splitlines() if "me serializd" in line)
    assert len(diary_plays(world.serializd)) == 2
    alert = next(m for m in receiver.messages if "holds removals" in m["title"])
    assert "1 of 2 plays on serializd would be removed" in alert["message"]
    # Confirming a side that only reads empty (a replaced server) would wipe the other side.
    for told in (out, alert["message"]):
        assert "Before confirming, check that the other side really lost them" in told


def test_confirming_removals_applies_what_was_held(world: World) -> None:
    world.same_plays_on_both_sides(2)
    world.app.unwatch(world.trakt.history()[0])
    world.sync("--link", LINK)
    out = world.sync("--link", LINK, "--confirm-removals")
    assert "held:" not in out
    assert "confirmed: 1 of 2 plays on serializd is removed" in out
    assert "confirm with" not in out  # what was just done
    assert len(diary_plays(world.serializd)) == 1


def test_the_plans_header_says_a_removal_and_where_it_was_made(world: World) -> None:
    world.same_plays_on_both_sides(2)
    world.app.unwatch(world.trakt.history()[0])
    out = world.sync("--link", LINK, "--dry-run")
    header = next(line for line in out.splitlines() if "plan:" in line)
    assert header.endswith("; plan: remove 1 play(s) from serializd (removed on trakt)"), out


def test_a_removal_held_before_a_one_way_run_the_other_way_is_still_held_after_it(
    world: World,
) -> None:
    world.same_plays_on_both_sides(2)
    world.app.unwatch(world.trakt.history()[0])
    world.sync("--link", LINK)  # holds the removal on serializd
    world.sync("--link", LINK, "--direction", "serializd-to-trakt")  # nothing to do
    out = world.sync("--link", LINK)
    assert "held: me: 1 of 2 plays on serializd would be removed" in out
    assert len(trakt_plays(world.trakt)) == 1  # the play removed on Trakt is not added back


def test_a_removal_held_before_a_one_way_run_the_other_way_applies_when_confirmed(
    world: World,
) -> None:
    world.same_plays_on_both_sides(2)
    world.app.unwatch(world.trakt.history()[0])
    world.sync("--link", LINK)
    world.sync("--link", LINK, "--direction", "serializd-to-trakt")
    world.sync("--link", LINK, "--confirm-removals")
    assert len(diary_plays(world.serializd)) == 1 and len(trakt_plays(world.trakt)) == 1


# --------------------------------------------------------------------------- status


def test_status_shows_each_links_last_run_and_its_cursors_in_short(world: World) -> None:
    world.same_plays_on_both_sides(2)
    out = world.run("status").stdout
    assert f"  {LINK}: ok at " in out and "API requests)" in out
    # Only how far each side was read: its own bookkeeping (the marks and rating rows it
    # saw, a fingerprint of what we wrote) is left out.
    assert "    serializd for me read up to: diary_ids 2 ids\n" in out
    trakt = next(line for line in out.splitlines() if "trakt for me read up to:" in line)
    assert "history_at 20" in trakt and len(trakt) < 160


def test_status_leaves_the_links_own_bookkeeping_out_of_what_it_read(world: World) -> None:
    # It showed "watchbridge for me read up to: full_at ..., holding 0, kinds history,ratings":
    # no service of the link, and kinds other than the link's own.
    world.same_plays_on_both_sides(2)
    out = world.run("status").stdout
    assert "    serializd for me read up to:" in out
    assert "watchbridge for me read up to" not in out


def test_status_names_links_that_have_not_run_yet(world: World) -> None:
    assert f"  {LINK}: not run yet" in world.run("status").stdout


# --------------------------------------------------------------------------- terminal display


def test_on_a_terminal_a_progress_bar_follows_each_side(world: World) -> None:
    world.serializd.log_entry(None, BB, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    config = load_config(world.config, {})
    store = Store.open(config.storage.path)
    screen = io.StringIO()
    live = LiveProgress(Console(file=screen, force_terminal=True, width=100), LINK, ["me"])
    try:
        with live:
            asyncio.run(run_link(config, store, LINK, dry_run=True, progress=live))
    finally:
        store.close()
    assert "ts · me: reading serializd" in screen.getvalue()
    assert {side for _, side in live.sides} == {"trakt", "serializd"}
    assert all(stats.requests > 0 and "read" in stats.steps for stats in live.sides.values())


def test_a_failing_service_is_logged_with_its_fields_and_no_secret(world: World) -> None:
    world.serializd.fail_next(50, 503)
    result = world.run("sync", "--link", LINK, catch=True)
    assert "request failed" in result.stderr and "service=serializd" in result.stderr
    assert ALICE[1] not in result.output + result.stderr


def test_a_run_that_delivered_everything_says_nothing_of_the_rest(world: World) -> None:
    world.app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    last = world.sync("--link", LINK).splitlines()[-1]
    assert last == "1 change(s) queued, 1 delivered now (see `watchbridge status`)"


def test_a_run_with_no_service_running_says_the_next_run_sends_the_rest(world: World) -> None:
    world.app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    world.serializd.fail_next(1000, 500, body="Server Error (500)", route=EPISODE_ADD)
    last = world.sync("--link", LINK).splitlines()[-1]
    assert "no service is running: the rest go out with the next `watchbridge sync`" in last
    assert "running service" not in last


def test_a_run_beside_the_service_says_the_service_sends_the_rest(
    world: World, tmp_path: Path
) -> None:
    world.app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    world.serializd.fail_next(1000, 500, body="Server Error (500)", route=EPISODE_ADD)
    with servelock.hold(tmp_path / "watchbridge.db", time.time()):
        last = world.sync("--link", LINK).splitlines()[-1]
    assert "the rest follow from the running service" in last


def test_a_run_that_cannot_look_at_the_lock_file_says_it_could_not_tell(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a 0600 lock file of root's is to a sync run as another user (the tests may run as
    # root, whom no mode stops: a socket in its place cannot be opened by anyone).
    world.app.watch(1, 1, "2024-01-01T20:00:00.000Z")
    world.serializd.fail_next(1000, 500, body="Server Error (500)", route=EPISODE_ADD)
    monkeypatch.chdir(tmp_path)  # a socket's path is short, the test's folder may not be
    in_place = socket.socket(socket.AF_UNIX)
    in_place.bind("watchbridge.db.lock")
    try:
        last = world.sync("--link", LINK).splitlines()[-1]
    finally:
        in_place.close()
    lock = tmp_path / "watchbridge.db.lock"
    assert (
        f"could not tell whether a service is running (cannot open {lock} (No such device or "
        "address); run sync as the service's user): the rest follow from the service if one "
        "runs, else from the next `watchbridge sync`"
    ) in last
    assert "the rest follow from the running service" not in last


def test_a_profile_waiting_for_its_review_does_not_hold_back_the_others_deliveries(
    world: World,
) -> None:
    world.serializd.log_entry(None, BB, 1, 1, backdate="2024-01-01T21:00:00.000Z")
    world.sync("--link", LINK)  # me's first run, long ago
    bob = ("bob@example.com", "bobs password", "bob_tv")
    world.serializd.log_entry(world.serializd.add_user(*bob), BB, 1, 2, backdate=ago(30))
    text = world.config.read_text().replace("first_run: apply", "first_run: dry-run")
    world.config.write_text(
        text.replace(
            "links:",
            "  bob:\n    accounts:\n      trakt: {}\n"
            f'      serializd: {{email: {bob[0]}, password: "{bob[1]}"}}\nlinks:',
        )
    )
    store = Store.open(world.config.parent / "watchbridge.db")
    sign_in_trakt(store, world.trakt, "bob", now=time.time(), user=world.trakt.add_user("bob"))
    store.close()
    world.serializd.log_entry(None, BB, 1, 5, backdate=ago(1))  # me watches on

    result = world.run("sync", "--link", LINK, catch=True)
    assert result.exit_code != 0
    assert isinstance(result.exception, WatchbridgeError)
    assert "first sync of links.ts for bob" in result.exception.message
    assert (
        "1 change(s) delivered now (what waits for your review is not among them)" in result.stdout
    )
    assert (1, 5) in [(s, n) for s, n, *_ in trakt_plays(world.trakt)]


def test_a_kind_waiting_for_its_review_says_what_was_delivered_in_true_words(
    world: World,
) -> None:
    """One profile: what went out meanwhile was its plays, not "the link's other profiles'"."""
    text = world.config.read_text()
    world.config.write_text(
        text.replace("first_run: apply}", "first_run: apply, kinds: [history]}")
    )
    world.serializd.log_entry(None, BB, 1, 1, backdate=ago(30))
    world.sync("--link", LINK)
    world.app.rate(1, 1, 9, ago(1))
    world.serializd.log_entry(None, BB, 1, 2, backdate=ago(1))  # watched on since
    world.config.write_text(
        text.replace("first_run: apply}", "first_run: dry-run, kinds: [history, ratings]}")
    )

    result = world.run("sync", "--link", LINK, catch=True)

    assert isinstance(result.exception, WatchbridgeError)
    assert "first sync of ratings since" in result.exception.message
    assert "other profiles" not in result.stdout
    assert (
        "1 change(s) delivered now (what waits for your review is not among them)" in result.stdout
    )
    assert (1, 2) in [(s, n) for s, n, *_ in trakt_plays(world.trakt)]


def test_a_one_person_first_sync_waiting_for_its_review_talks_of_no_other_profiles(
    world: World,
) -> None:
    text = world.config.read_text().replace("first_run: apply", "first_run: dry-run")
    world.config.write_text(text)
    world.serializd.log_entry(None, BB, 1, 1, backdate="2024-01-01T21:00:00.000Z")
    result = world.run("sync", "--link", LINK, catch=True)
    assert isinstance(result.exception, WatchbridgeError)
    assert "first sync of links.ts" in result.exception.message
    assert "other profiles" not in result.stdout


def test_the_held_line_names_the_links_own_confirming_command(world: World) -> None:
    # Without --link, `watchbridge sync --confirm-removals` confirms every link's holds.
    world.same_plays_on_both_sides(2)
    world.app.unwatch(world.trakt.history()[0])
    out = world.sync("--link", LINK)
    assert f"confirm with `watchbridge sync --link {LINK} --confirm-removals`" in out
    assert "`watchbridge sync --confirm-removals`" not in out


def test_the_summary_counts_a_play_waiting_with_held_removals_as_held_not_queued(
    world: World,
) -> None:
    world.same_plays_on_both_sides(2)
    first = world.trakt.history()[0]
    world.app.unwatch(first)  # its removal from Serializd is held (over 10 %)
    world.sync("--link", LINK)
    world.app.watch(1, first.item.number, ago(0.01))  # type: ignore[attr-defined]
    out = world.sync("--link", LINK, "--full")
    assert "1 play of those items new on the other side (marked watched again?) would be " in out
    assert "added to serializd with them" in out
    line = next(x for x in out.splitlines() if x.startswith("summary me serializd:"))
    assert "queued=0" in line and "held=2" in line


def test_a_confirmed_run_says_the_plays_waiting_with_the_removals_are_added(world: World) -> None:
    world.same_plays_on_both_sides(2)
    first = world.trakt.history()[0]
    world.app.unwatch(first)
    world.sync("--link", LINK)  # its removal from Serializd is held
    world.app.watch(1, first.item.number, ago(0.01))  # type: ignore[attr-defined]
    out = world.sync("--link", LINK, "--full", "--confirm-removals")
    confirmed = next(x for x in out.splitlines() if x.startswith("  confirmed: "))
    assert "(marked watched again?) is added to serializd with them" in confirmed, confirmed
    assert "wait" not in confirmed and "would be" not in confirmed, confirmed


def test_a_dry_run_with_nothing_changed_still_names_the_removals_held(world: World) -> None:
    world.same_plays_on_both_sides(2)
    world.app.unwatch(world.trakt.history()[0])
    world.sync("--link", LINK)  # held
    world.sync("--link", LINK)  # settled
    out = world.sync("--link", LINK, "--dry-run")
    assert "nothing changed on either side" in out
    assert "  held: 1 of 2 plays on serializd would be removed" in out


# --------------------------------------------------------------------------- the database's place


@pytest.fixture
def world_without_wal(no_shared_memory: None, world: World) -> World:
    """The world, its database made where SQLite gives no WAL mode (see no_shared_memory)."""
    return world


def test_a_sync_from_cron_tells_of_the_databases_place_once_and_status_every_time(
    world_without_wal: World,
) -> None:
    world = world_without_wal
    first = world.run("sync", "--link", LINK)
    assert first.exit_code == 0, first.output
    (told,) = [line for line in first.stderr.splitlines() if "WAL mode" in line]
    assert told.startswith("warning: storage.path: ")
    assert "WAL mode" not in first.stdout  # cron jobs mailing stderr only get it too
    # Every half hour from cron: said once, not in every mail.
    again = world.run("sync", "--link", LINK)
    assert again.exit_code == 0, again.output
    assert "WAL mode" not in again.output
    for _ in range(2):  # `status` says it each time it is asked
        status = world.run("status")
        assert status.exit_code == 0, status.output
        said = [line for line in status.stdout.splitlines() if "WAL mode" in line]
        assert said == [told.replace("warning: ", "warning:       ", 1)]


def test_a_sync_from_cron_on_a_backup_copy_put_back_tells_the_restore_once(
    world: World, receiver: AlertReceiver, tmp_path: Path
) -> None:
    # No service runs (cron only): the sync that finds the copy put back is what tells it.
    database = tmp_path / "watchbridge.db"
    with Store.open(database) as store:
        store.backup_to(tmp_path / "nightly.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "nightly.db")) as copy:
        (copied,) = copy.execute("SELECT value FROM settings WHERE name = 'copied_at'").fetchone()
    put_back(tmp_path / "nightly.db", database)
    first = world.run("sync", "--link", LINK)
    assert first.exit_code == 0, first.output
    told = restore_notice(str(copied))
    assert [line for line in first.stderr.splitlines() if "backup copy" in line] == [
        f"warning: {told}"
    ]
    assert "backup copy" not in first.stdout  # cron jobs mailing stderr only get it too
    assert [(m["title"], m["message"]) for m in receiver.messages] == [(RESTORED_TITLE, told)]
    again = world.run("sync", "--link", LINK)  # told once
    assert again.exit_code == 0, again.output
    assert "backup copy" not in again.output
    assert receiver.titles() == [RESTORED_TITLE]
    with Store.open(database) as store:  # nor by a service started later
        assert store.restore_untold() is None
