"""The one config file edited between two starts while work is still queued: the real service
on one database, started under the new config, sends only what that config still asks for,
and tells once of what it will not send."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import ServiceProcess, free_port, sign_in_trakt, watchbridge
from tests.test_webhooks_e2e import seeded
from watchbridge.alerts import NAMESPACE as ALERT_CONDITIONS
from watchbridge.causes import MISSING_TITLE
from watchbridge.config import load_config
from watchbridge.deliver.anilist import FINISHED, SENT, SKIPPED, recheck_skipped
from watchbridge.deliver.anilist import NAME as ANILIST
from watchbridge.deliver.worker import LIMITED_ROWS, PROFILE_HOLDS
from watchbridge.maintenance import ALERTED
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.reconcile import Action
from watchbridge.renames import profile_keyed_cache
from watchbridge.scheduler import (
    link_of_alert,
    no_longer_configured,
    profile_of_alert,
    resolve_removed,
    service_of_alert,
)
from watchbridge.services.serializd import REFUSED
from watchbridge.store import KeptOff, NewOutboxRow, Store, ordering_key
from watchbridge.sync import outbox_rows
from watchbridge.webhooks import doubling_title
from watchbridge.wiring import build_runtime

ARRIVAL = "movie:tmdb:329865"
ARRIVAL_REF = MediaRef("movie", Ids(imdb="tt2543164", tmdb="329865"), title="Arrival", year=2016)


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    return seeded(fake)


def config_text(
    tmp_path: Path,
    port: int,
    trakt: FakeTrakt,
    receiver: AlertReceiver,
    links: str,
    plex_url: str | None = None,
) -> str:
    plex_url = plex_url or f"http://127.0.0.1:{free_port()}"
    return f"""
server: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex_url}", token: plex-owner-token}}
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
        "link plex-trakt no longer syncs ratings (links.plex-trakt.kinds)",
    ),
    "profile no longer synced by it": (
        "  plex-trakt: {services: [plex, trakt], profiles: [kid], interval: 7d}\n",
        "link plex-trakt no longer syncs profile me (links.plex-trakt.profiles)",
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


def stop_after_its_start(service: ServiceProcess) -> None:
    """Stop the service as `docker stop` does, and check that its start-up work had its say:
    the scheduler's resolving of what the config took out and the worker's giving up of what
    it no longer allows are not cut short by a stop (only a task past server.shutdown_timeout
    is), so after a clean stop whatever they had to tell has been told."""
    service.terminate()
    output = service.output()
    assert "watchbridge stopped" in output and "did not stop in time" not in output, output


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
        if change == "ratings no longer synced":  # the play goes out beside the rating's end
            wait_for(lambda: trakt.history() != [])
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
    said = watchbridge("deadletters", "retry", "--all", "--config", str(path))
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


def a_play_of_arrival() -> NewOutboxRow:
    """A webhook's play of Arrival for profile me on Trakt, as the webhook route queues it."""
    payload = {"item": ref_to_dict(ARRIVAL_REF), "at": time.time() - 600, "source": "plex"}
    order = ordering_key("me", "trakt", ARRIVAL_REF.key(), "play")
    return NewOutboxRow("trakt", "me", "play", payload, order, "me:trakt:arrival")


def started(path: Path, port: int, text: str) -> ServiceProcess:
    path.write_text(text, encoding="utf-8")
    return ServiceProcess(path, port).start()


def without_my_trakt_account(text: str) -> str:
    """`accounts.trakt` taken out of profile me (no VIP any more)."""
    return text.replace("me: {accounts: {trakt: {}, plex: {}}}", "me: {accounts: {plex: {}}}")


def without_trakt(text: str) -> str:
    """Trakt given up: its service, its accounts and its link taken out."""
    kept = [line for line in text.splitlines() if "trakt" not in line or "plex:" in line]
    return "\n".join(kept).replace("trakt: {}, ", "") + "\n"


GIVEN_UP = {  # how Trakt held the play; the config after; the title of its pause; the reason
    "account removed": (
        429,
        without_my_trakt_account,
        "watchbridge: Trakt is limiting requests (profile me)",
        "profile me no longer has profiles.me.accounts.trakt",
    ),
    "service removed": (
        503,
        without_trakt,
        "watchbridge: Trakt unreachable",
        "Trakt is no longer in the config (services.trakt)",
    ),
}
# How the dead-letter alert lists the row: naming profile me once (it read "Arrival (2016):
# play for profile me (#1): profile me no longer has ...").
GAVE_UP_LINE = {
    "account removed": "Arrival (2016): play (#{id}): profile me no longer has ",
    "service removed": "Arrival (2016): play for profile me (#{id}): Trakt is no longer in the",
}


@pytest.mark.parametrize("change", sorted(GIVEN_UP))
def test_what_waits_for_a_removed_account_is_told_once_and_retired(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, change: str
) -> None:
    """Trakt holds profile me's play for an hour (a rate limit, an outage: told at once); the
    user then takes Trakt out of the config and restarts, twice."""
    status, edit, paused, why = GIVEN_UP[change]
    with Store.open(tmp_path / "wb.db") as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
        store.enqueue([a_play_of_arrival()], time.time())
    trakt.fail_next(1, status, {"Retry-After": "3600"}, route="POST /sync/history")
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    before = config_text(tmp_path, port, trakt, receiver, LINK)
    service = started(path, port, before)
    try:
        wait_for(lambda: paused in receiver.titles())
    finally:
        service.terminate()

    after = edit(before)
    assert after != before
    for _ in range(2):  # a second start tells nothing again
        service = started(path, port, after)
        try:
            wait_for(lambda: GAVE_UP in receiver.titles())
        finally:
            stop_after_its_start(service)
        with Store.open(tmp_path / "wb.db") as store:
            assert store.untold_dead_targets() == []  # what a later start's worker tells of
    # Its pause is over (nothing of it waits), told once; so are the given-up rows.
    assert sorted(receiver.titles()) == sorted([paused, GAVE_UP, f"Resolved: {paused}"])
    assert trakt.history() == []
    with Store.open(tmp_path / "wb.db") as store:
        (dead,) = store.dead_letters()
        assert store.outbox_counts()["pending"] == 0
    assert (dead.last_error or "").startswith(why)
    (told,) = [m["message"] for m in receiver.messages if m["title"] == GAVE_UP]
    line = GAVE_UP_LINE[change].format(id=dead.id)
    assert str(told).split("\n\n")[1].startswith(line), told


GAVE_UP = "watchbridge: gave up sending a play to Trakt"


def test_status_says_which_link_it_shows_the_last_run_of_is_no_longer_configured(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    # The last run that went through is kept for ever (Store.prune): months after the link
    # was taken out, `status` still lists it, which read as a link that stopped running.
    with Store.open(tmp_path / "wb.db") as store:
        run = store.start_run("plex-trakt", time.time() - 90 * 86400)
        assert run is not None
        store.finish_run(run, time.time() - 90 * 86400 + 5, "ok", {"trakt": 2}, 4)
        store.set_cursor("trakt", "me", "link:plex-trakt", "{}", time.time())
    path = tmp_path / "watchbridge.yaml"
    for links, label in (
        (LINK, "  plex-trakt: ok"),
        ("", "  plex-trakt (no longer in the config): ok"),
    ):
        path.write_text(config_text(tmp_path, free_port(), trakt, receiver, links), "utf-8")
        said = watchbridge("status", "--config", str(path)).stdout
        assert label in said, said


@pytest.fixture
def not_plex(start_fake: Callable[[FakeServer], FakeServer]) -> str:
    """The address the config names for Plex, where a web server that is no Plex (the server
    gone, another one in its place) answers every request 404: each run of a link with Plex
    fails at once, with no retries after a connection refused (3 s per run)."""
    return start_fake(FakeServer()).url


def link_failed_three_times(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, not_plex: str
) -> tuple[Path, int]:
    """A config with the plex-trakt link whose Plex is gone, after three failed `watchbridge
    sync` runs (from cron, or the service's: alike), which raise its "keeps failing" alert."""
    with Store.open(tmp_path / "wb.db") as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    path.write_text(config_text(tmp_path, port, trakt, receiver, LINK, not_plex), "utf-8")
    for _ in range(3):
        watchbridge("sync", "--yes", "--config", str(path))
    return path, port


# Plex gone is the one alert of every link reading it, not each link's own.
GONE = "watchbridge: Plex unreachable"


def test_a_failing_links_alert_is_resolved_once_the_link_is_taken_out(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, not_plex: str
) -> None:
    # The user removes a link because it keeps failing (its Plex server gone): no run of it
    # would ever resolve its alert again.
    path, port = link_failed_three_times(tmp_path, trakt, receiver, not_plex)
    failing = GONE
    assert receiver.titles() == [failing]

    for _ in range(2):  # told once
        service = started(path, port, config_text(tmp_path, port, trakt, receiver, ""))
        try:
            wait_for(lambda: f"Resolved: {failing}" in receiver.titles())
        finally:
            stop_after_its_start(service)
    assert receiver.titles() == [failing, f"Resolved: {failing}"]


def test_a_removed_links_alert_that_never_got_out_is_not_sent_after_all(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, not_plex: str
) -> None:
    # The link's "keeps failing" alert failed to go out (the phone's service down), then the
    # user took the link out: that alert, owed still, must not reach them later.
    receiver.refuse_next()
    path, port = link_failed_three_times(tmp_path, trakt, receiver, not_plex)
    assert receiver.titles() == []  # refused: owed

    path.write_text(config_text(tmp_path, port, trakt, receiver, ""), encoding="utf-8")
    later = time.time() + 3600  # past the wait before an owed alert goes out again

    async def start_then_retry_owed_alerts() -> None:
        runtime = build_runtime(load_config(path), clock=lambda: later)
        runtime.open()
        try:
            await resolve_removed(runtime)
            await runtime.notifier.send_unsent()
        finally:
            runtime.close()

    asyncio.run(start_then_retry_owed_alerts())
    assert receiver.titles() == []


def test_a_renamed_profile_is_warned_of_and_its_queued_plays_come_back_with_its_name(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    """`me` renamed `myself` while Trakt rate-limits its play; the start warns, the play
    becomes a dead letter (not sent to nobody's account, told once); with the old name back
    the warning's advice brings the play back."""
    with Store.open(tmp_path / "wb.db") as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
        store.enqueue([a_play_of_arrival()], time.time())
    trakt.fail_next(1, 429, {"Retry-After": "3600"}, route="POST /sync/history")
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    before = config_text(tmp_path, port, trakt, receiver, "")
    service = started(path, port, before)
    try:
        limited = "watchbridge: Trakt is limiting requests (profile me)"
        wait_for(lambda: limited in receiver.titles())
    finally:
        service.terminate()

    service = started(path, port, before.replace("  me: {", "  myself: {"))
    try:
        wait_for(lambda: GAVE_UP in receiver.titles())
    finally:
        service.terminate()
    warning = service.output()
    assert "myself is new to the database" in warning
    assert "sends its deliveries given up meanwhile" in warning

    path.write_text(before, encoding="utf-8")  # its old name back, as the warning says
    said = watchbridge("deadletters", "retry", "--all", "--config", str(path))
    assert "1 dead letter(s) queued again" in said.stdout, said.stdout
    service = started(path, port, before)
    try:
        wait_for(lambda: len(trakt.history()) == 1)
    finally:
        service.terminate()
    assert [h.item.title for h in trakt.history()] == ["Arrival"]


def test_rename_profile_keeps_the_old_names_sign_in_state_and_given_up_plays_under_the_new(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    """`me` renamed `myself` in the config; the start gives up me's queued play. After
    `watchbridge rename-profile me myself` the new name has me's Trakt sign-in, link state and
    kept-off play, nothing is left over under the old name, and the play goes out."""
    with Store.open(tmp_path / "wb.db") as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
        kept_off_a_play_of_the_link(store)
        store.enqueue([a_play_of_arrival()], time.time())
        store.set_cursor("trakt", "me", "link:plex-trakt", "{}", time.time())
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    renamed = config_text(tmp_path, port, trakt, receiver, "").replace("  me: {", "  myself: {")
    service = started(path, port, renamed)
    try:
        wait_for(lambda: GAVE_UP in receiver.titles())
    finally:
        service.terminate()

    said = watchbridge("rename-profile", "me", "myself", "--config", str(path))

    assert said.returncode == 0, said.stderr
    assert (
        "profile myself keeps what the database held for profile me: its sign-in to trakt, "
        "the sync state of links.plex-trakt, 1 play(s) kept off for good, 1 dead letter(s)"
    ) in said.stdout, said.stdout
    assert (
        "1 of those dead letters were given up because the config lacked profile me: they "
        "are queued again"
    ) in said.stdout
    status = watchbridge("status", "--config", str(path)).stdout
    assert "profile me is no longer" not in status, status
    assert "is new to the database" not in watchbridge("check-config", "--config", str(path)).stdout
    with Store.open(tmp_path / "wb.db") as store:
        assert [k.profile for k in store.kept_off()] == ["myself"]
        assert store.get_token("trakt", "myself") is not None
        (moved,) = [r for r in store.dead_letters() + store.claim("t", time.time(), 10)]
        assert moved.profile == "myself"
        assert moved.ordering_key == ordering_key("myself", "trakt", ARRIVAL_REF.key(), "play")
        store.release_claims(time.time(), "t", spend=False)
    service = started(path, port, renamed)
    try:
        wait_for(lambda: len(trakt.history()) == 1)
    finally:
        service.terminate()
    assert [h.item.title for h in trakt.history()] == ["Arrival"]


def test_rename_profile_moves_nothing_once_the_new_name_has_a_sign_in_of_its_own(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    with Store.open(tmp_path / "wb.db") as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
        sign_in_trakt(store, trakt, "myself", now=time.time())
    path = tmp_path / "watchbridge.yaml"
    renamed = config_text(tmp_path, free_port(), trakt, receiver, "")
    path.write_text(renamed.replace("  me: {", "  myself: {"), encoding="utf-8")

    said = watchbridge("rename-profile", "me", "myself", "--config", str(path))

    assert said.returncode == 1, said
    assert "profile myself already has sign-ins or sync state of its own" in said.stderr
    assert "give the profile its old name me back in the config instead" in said.stderr
    with Store.open(tmp_path / "wb.db") as store:
        assert store.get_token("trakt", "me") is not None  # nothing moved


def test_rename_profile_moves_nothing_while_the_service_runs_with_the_config_it_read(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    """The config is edited (me renamed myself) while the service runs: it still has me, and
    would go on writing me's state under that name. The command refuses until it is stopped."""
    with Store.open(tmp_path / "wb.db") as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
        store.set_cursor("trakt", "me", "link:plex-trakt", "{}", time.time())
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    text = config_text(tmp_path, port, trakt, receiver, "")
    service = started(path, port, text)
    try:
        path.write_text(text.replace("  me: {", "  myself: {"), encoding="utf-8")
        said = watchbridge("rename-profile", "me", "myself", "--config", str(path))
    finally:
        service.terminate()

    assert said.returncode == 1, said
    assert said.stdout == ""
    assert said.stderr.count("\n") == 1 and "Traceback" not in said.stderr
    assert said.stderr.startswith(
        "error: stop the service first: it still runs with the config it read at its start "
        f"(pid {service.proc.pid if service.proc else 0} on host {socket.gethostname()}, started "
    ), said.stderr
    assert "nothing was moved. Stop it, run `watchbridge rename-profile me myself` again" in (
        said.stderr
    )
    with Store.open(tmp_path / "wb.db") as store:
        assert store.get_token("trakt", "me") is not None
        assert store.get_token("trakt", "myself") is None
        assert store.profiles_with_state() >= {"me"}
    # Stopped, the same command moves it.
    again = watchbridge("rename-profile", "me", "myself", "--config", str(path))
    assert again.returncode == 0, again.stderr
    with Store.open(tmp_path / "wb.db") as store:
        assert store.get_token("trakt", "myself") is not None


def a_webhook_event_of(store: Store, profile: str) -> None:
    store.record_event(source="plex", kind="play", payload={}, now=time.time(), profile=profile)


def webhook_events_of(store: Store, profile: str) -> bool:
    assert store.path is not None
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        found = conn.execute("SELECT 1 FROM events WHERE profile = ?", (profile,)).fetchone()
    return found is not None


def a_serializd_sign_in_refused_of(store: Store, profile: str) -> None:
    store.cache_put(REFUSED, profile, "fingerprint", time.time(), 3600.0)


def a_serializd_sign_in_refused_for(store: Store, profile: str) -> bool:
    hit, _ = store.cache_get(REFUSED, profile, time.time())
    return hit


@pytest.mark.parametrize(
    ("keep", "kept_for"),
    [
        (a_webhook_event_of, webhook_events_of),
        (a_serializd_sign_in_refused_of, a_serializd_sign_in_refused_for),
    ],
)
def test_rename_profile_moves_a_profile_keeping_neither_sign_ins_nor_sync_state(
    tmp_path: Path,
    trakt: FakeTrakt,
    receiver: AlertReceiver,
    keep: Callable[[Store, str], None],
    kept_for: Callable[[Store, str], bool],
) -> None:
    """A profile never signed in nor synced keeps only what a webhook or a delivery left: it
    is moved too, not refused as keeping nothing (its events or refused password left under
    the old name)."""
    with Store.open(tmp_path / "wb.db") as store:
        keep(store, "me")
    path = tmp_path / "watchbridge.yaml"
    renamed = config_text(tmp_path, free_port(), trakt, receiver, "")
    path.write_text(renamed.replace("  me: {", "  myself: {"), encoding="utf-8")

    said = watchbridge("rename-profile", "me", "myself", "--config", str(path))

    assert said.returncode == 0, said.stderr
    assert (
        "profile myself keeps what the database held for profile me: its records (of what "
        "watchbridge wrote, webhooks, playbacks)"
    ) in said.stdout
    with Store.open(tmp_path / "wb.db") as store:
        assert (kept_for(store, "me"), kept_for(store, "myself")) == (False, True)
    again = watchbridge("rename-profile", "me", "myself", "--config", str(path))
    assert again.returncode == 1
    assert "the database keeps nothing for profile me: nothing to move" in again.stderr


def test_rename_profile_renames_what_the_anilist_target_keeps_by_the_profiles_name(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    """What AniList deliveries keep under keys and in rows that start with the profile's
    name: a play skipped as not anime, to queue again once the datasets map it (queued as
    me's, the start would give it up: profile me is no longer in the config), the save a
    play was about to make (its row's key is renamed: without it, a retry after a save that
    landed unconfirmed counts a second viewing), the entry a play finished, and a Serializd
    sign-in refused (its password would be tried again)."""
    now = time.time()
    kept = {
        "profile": "me",
        "action": "play",
        "payload": {"item": ref_to_dict(ARRIVAL_REF), "at": now - 60, "skipped_at": now},
        "ordering_key": f"me:anilist:{ARRIVAL}",
    }
    with Store.open(tmp_path / "wb.db") as store:
        store.set_cursor("trakt", "me", "link:plex-trakt", "{}", now)
        store.mirror_put(ANILIST, "me", SKIPPED, {f"me:anilist:play:{ARRIVAL}:1": kept}, now)
        store.cache_put(SENT, f"me:anilist:play:{ARRIVAL}:2", {"media_id": 5555}, now, 3600.0)
        store.cache_put(FINISHED, "me:5555", now - 60, now, 3600.0)
        store.cache_put(REFUSED, "me", "fingerprint", now, 3600.0)
    path = tmp_path / "watchbridge.yaml"
    renamed = config_text(tmp_path, free_port(), trakt, receiver, "")
    path.write_text(renamed.replace("  me: {", "  myself: {"), encoding="utf-8")

    said = watchbridge("rename-profile", "me", "myself", "--config", str(path))

    assert said.returncode == 0, said.stderr
    with Store.open(tmp_path / "wb.db") as store:
        skipped = store.mirror_get(ANILIST, "myself", SKIPPED)
        # The datasets map it now: queued again as the new name's.
        (again,), _ = recheck_skipped(skipped, lambda _: (5555, 1), time.time())
        assert (again.profile, again.ordering_key, again.idempotency_key) == (
            "myself",
            f"myself:anilist:{ARRIVAL}",
            f"myself:anilist:play:{ARRIVAL}:1:mapped",
        )
        assert store.cache_get(SENT, f"myself:anilist:play:{ARRIVAL}:2", now) == (
            True,
            {"media_id": 5555},
        )
        assert store.cache_get(FINISHED, "myself:5555", now) == (True, now - 60)
        assert store.cache_get(REFUSED, "myself", now) == (True, "fingerprint")


def kept_off_a_play_of_the_link(store: Store) -> None:
    """A play plex-trakt copied to Trakt for me, discarded with `--for-good`."""
    at = time.time() - 86400
    action = Action("add_play", "trakt", ARRIVAL, "new on plex", at, record="h:1", source="plex")
    store.enqueue(outbox_rows("plex-trakt", "me", [action])[0], time.time())
    (row,) = store.claim("test", time.time(), 10, ["trakt"])
    store.mark_dead(row.id, time.time(), "refused")
    store.keep_off([KeptOff(row.id, "plex-trakt", "me", "trakt", "h:1", "Arrival", at, 0.0)])


def test_a_plex_outage_alert_stays_while_a_cron_sync_of_a_link_left_still_reads_it(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, not_plex: str
) -> None:
    # No service: `watchbridge sync` runs from cron (README: its alerts are the service's).
    # The user takes the failing link out; cron goes on syncing the link left, which reads
    # the gone Plex too: Plex's alert is the server's, not the removed link's, so it stays
    # open (its "Resolved" would be news of nothing), and no alert of the link is left.
    path, port = link_failed_three_times(tmp_path, trakt, receiver, not_plex)
    assert receiver.titles() == [GONE]

    left = LINK.replace("plex-trakt", "plex-trakt-films")
    path.write_text(config_text(tmp_path, port, trakt, receiver, left, not_plex), "utf-8")
    for _ in range(2):
        watchbridge("sync", "--yes", "--config", str(path))
    time.sleep(0.5)
    assert receiver.titles() == [GONE]


def serializd_config(
    tmp_path: Path, port: int, trakt: FakeTrakt, receiver: AlertReceiver, serializd: bool
) -> str:
    """Trakt and (with `serializd`) Serializd, for profile me; no link (deliveries only)."""
    service = f'  serializd: {{api_url: "http://127.0.0.1:{free_port()}"}}\n' if serializd else ""
    account = ', serializd: {email: me@example.org, password: "pw"}' if serializd else ""
    return f"""
server: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
{service}profiles:
  me: {{accounts: {{trakt: {{}}{account}}}}}
"""


SERIALIZD_DOWN = "watchbridge: Serializd unreachable"
TRAKT_DOWN = "watchbridge: Trakt unreachable"


def alerts_told(path: Path, alerts: Sequence[tuple[str, str, str, str]]) -> None:
    """What a run under the config at `path` left: `alerts` (kind, key, title, body) told,
    with nothing queued for any of them."""

    async def tell() -> None:
        runtime = build_runtime(load_config(path))
        runtime.open()
        try:
            for kind, key, title, body in alerts:
                await runtime.notifier.notify(kind, title, body, key=key)
        finally:
            runtime.close()

    asyncio.run(tell())


def kept_after_a_start(path: Path, kind: str) -> list[str]:
    """The alert conditions of `kind` still open after a start under the config at `path`,
    an hour on: past the wait before an owed alert goes out again, which it tried."""
    later = time.time() + 3600

    async def start_then_retry_owed_alerts() -> list[str]:
        runtime = build_runtime(load_config(path), clock=lambda: later)
        runtime.open()
        try:
            await resolve_removed(runtime)
            await runtime.notifier.send_unsent()
            return runtime.notifier.condition_keys(kind)
        finally:
            runtime.close()

    return asyncio.run(start_then_retry_owed_alerts())


def outages_told(path: Path) -> None:
    """Serializd's and Trakt's outage alerts (deliveries held) told (`alerts_told`)."""
    alerts_told(
        path,
        [
            (
                "service_unreachable",
                name,
                title,
                f"{name} has not taken deliveries for 20 minutes: HTTP 503.",
            )
            for name, title in (("serializd", SERIALIZD_DOWN), ("trakt", TRAKT_DOWN))
        ],
    )


def test_an_outage_alert_of_a_service_taken_out_is_resolved_at_the_next_start(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    # Serializd kept failing and the user gave it up, with nothing queued for it: no delivery
    # would ever close its alert. Trakt's, still configured, stays open.
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    path.write_text(serializd_config(tmp_path, port, trakt, receiver, True), "utf-8")
    outages_told(path)
    assert receiver.titles() == [SERIALIZD_DOWN, TRAKT_DOWN]

    for _ in range(2):  # told once
        service = started(path, port, serializd_config(tmp_path, port, trakt, receiver, False))
        try:
            wait_for(lambda: f"Resolved: {SERIALIZD_DOWN}" in receiver.titles())
        finally:
            stop_after_its_start(service)
    assert receiver.titles() == [SERIALIZD_DOWN, TRAKT_DOWN, f"Resolved: {SERIALIZD_DOWN}"]


def test_an_owed_outage_alert_of_a_service_taken_out_is_not_sent_after_all(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    # Serializd's outage alert failed to go out, then the user took Serializd out: that alert,
    # owed still, must not reach them later, and nothing of it stays open.
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    path.write_text(serializd_config(tmp_path, port, trakt, receiver, True), "utf-8")
    receiver.refuse_next()
    outages_told(path)
    assert receiver.titles() == [TRAKT_DOWN]  # Serializd's refused: owed

    path.write_text(serializd_config(tmp_path, port, trakt, receiver, False), "utf-8")
    kept = kept_after_a_start(path, "service_unreachable")
    assert receiver.titles() == [TRAKT_DOWN]
    assert kept == ["trakt"]  # Serializd's is gone, not kept open for 400 days


@pytest.mark.parametrize(
    ("key", "service"),
    [
        ("serializd", "serializd"),
        ("trakt:me", "trakt"),
        ("server:jellyfin", "jellyfin"),
        ("plex", "plex"),
        ("anilist:me:expiring", "anilist"),
        ("anilist:me:expired", "anilist"),  # 0.1.0's, kept in the database
        ("anime-datasets", "anilist"),
        ("anime-datasets-missing", "anilist"),  # the lists not downloaded, or not read
        ("plextv:watchlist", "plex"),
        ("something-else", None),
    ],
)
def test_the_service_an_alert_is_about_is_read_from_its_key(key: str, service: str | None) -> None:
    assert service_of_alert(key) == service


def profiles_config(
    tmp_path: Path, port: int, trakt: FakeTrakt, receiver: AlertReceiver, before: bool
) -> str:
    """Trakt and Serializd; no link (deliveries only). `before`: profiles me and kid, each
    with both accounts; after: kid removed and me without its Trakt account."""
    kid = '  kid: {accounts: {trakt: {}, serializd: {email: kid@example.org, password: "pw"}}}\n'
    my_trakt = "trakt: {}, " if before else ""
    return f"""
server: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "http://127.0.0.1:{free_port()}"}}
profiles:
  me: {{accounts: {{{my_trakt}serializd: {{email: me@example.org, password: "pw"}}}}}}
{kid if before else ""}"""


KID_SIGNED_OUT = "watchbridge: Trakt sign-in needed (profile kid)"
KID_FULL = "Trakt watchlist full for kid"
MY_SIGN_IN_ENDS = "watchbridge: Trakt sign-in of profile me ends soon"
MY_SERIALIZD = "watchbridge: Serializd sign-in needed (profile me)"
PROFILE_ALERTS = (  # kind, key, title: the first three about what the config then drops
    ("credentials", "trakt:kid", KID_SIGNED_OUT),
    ("account_limit", "trakt:kid:watchlist", KID_FULL),
    ("credentials", "trakt:me:ending", MY_SIGN_IN_ENDS),
    ("credentials", "serializd:me", MY_SERIALIZD),
)


def profile_alerts_told(path: Path) -> None:
    """The alerts of PROFILE_ALERTS told (`alerts_told`)."""
    alerts_told(path, [(kind, key, title, "sign in again") for kind, key, title in PROFILE_ALERTS])


def test_alerts_of_a_profile_or_account_taken_out_are_resolved_at_the_next_start(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    # Profile kid is removed, and me's Trakt account, with nothing queued for them: no
    # delivery would ever close their alerts. Me's Serializd alert, still configured, stays.
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    path.write_text(profiles_config(tmp_path, port, trakt, receiver, True), "utf-8")
    profile_alerts_told(path)
    told = [title for _, _, title in PROFILE_ALERTS]
    assert receiver.titles() == told

    resolved = [f"Resolved: {title}" for title in told[:3]]
    for _ in range(2):  # told once
        service = started(path, port, profiles_config(tmp_path, port, trakt, receiver, False))
        try:
            wait_for(lambda: all(title in receiver.titles() for title in resolved))
        finally:
            stop_after_its_start(service)
    assert sorted(receiver.titles()) == sorted(told + resolved)
    bodies = {m["title"]: m["message"] for m in receiver.messages}
    assert "profile kid is no longer in the config" in bodies[f"Resolved: {KID_SIGNED_OUT}"]
    assert "profile kid is no longer in the config" in bodies[f"Resolved: {KID_FULL}"]
    assert bodies[f"Resolved: {MY_SIGN_IN_ENDS}"] == (
        "profile me no longer uses Trakt (profiles.me.accounts.trakt)"
    )


def test_an_owed_alert_of_a_profile_taken_out_is_not_sent_after_all(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    # Kid's sign-in alert failed to go out, then the user took profile kid out: that alert,
    # owed still, must not reach them later, and nothing of it stays open.
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    path.write_text(profiles_config(tmp_path, port, trakt, receiver, True), "utf-8")
    receiver.refuse_next()
    profile_alerts_told(path)
    assert receiver.titles() == [title for _, _, title in PROFILE_ALERTS[1:]]  # kid's: owed

    path.write_text(profiles_config(tmp_path, port, trakt, receiver, False), "utf-8")
    kept = kept_after_a_start(path, "credentials")
    assert KID_SIGNED_OUT not in receiver.titles()
    assert kept == ["serializd:me"]  # kid's is gone, not kept open for 400 days


MY_TRAKT_PAUSED = "watchbridge: Trakt sign-in needed (profile me)"


def test_rename_profile_keeps_the_old_names_open_alerts_open_under_the_new(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    """me's Trakt deliveries wait for a sign-in (told), and its plays were told counted twice;
    then me is renamed myself. The same account is as signed out as before: a start must not
    resolve those alerts as of a profile taken out, and they stay open under the new name,
    for its deliveries to resolve (and its throttle to hold reminders back)."""
    port, path = free_port(), tmp_path / "watchbridge.yaml"
    text = config_text(tmp_path, port, trakt, receiver, "")
    path.write_text(text, encoding="utf-8")
    with Store.open(tmp_path / "wb.db") as store:
        store.set_cursor("trakt", "me", "link:plex-trakt", "{}", time.time())
        store.cache_put(ALERTED, "trakt:me:stopped:0123abcd", "sent", time.time(), 86400.0)
        store.cache_put(LIMITED_ROWS, "trakt:me", [7], time.time(), 86400.0)
        held = {"since": time.time() - 3600, "rows": [8]}
        store.cache_put(PROFILE_HOLDS, "trakt:me", held, time.time(), 86400.0)
    alerts_told(
        path,
        [
            ("credentials", "trakt:me", MY_TRAKT_PAUSED, "sign in again"),
            ("reported_twice", "me", doubling_title("me"), "both webhooks report me's plays"),
        ],
    )
    path.write_text(text.replace("  me: {", "  myself: {"), encoding="utf-8")

    said = watchbridge("rename-profile", "me", "myself", "--config", str(path))

    assert said.returncode == 0, said.stderr
    assert kept_after_a_start(path, "credentials") == ["trakt:myself"]
    assert kept_after_a_start(path, "reported_twice") == ["myself"]
    assert receiver.titles() == [MY_TRAKT_PAUSED, doubling_title("me")]  # nothing "Resolved"
    with Store.open(tmp_path / "wb.db") as store:
        # Told once (a sign-in Trakt refused to renew), the rows a full list holds, and those
        # a rate limit holds.
        assert store.cache_get(ALERTED, "trakt:myself:stopped:0123abcd", time.time())[0]
        assert store.cache_get(LIMITED_ROWS, "trakt:myself", time.time()) == (True, [7])
        assert store.cache_get(PROFILE_HOLDS, "trakt:myself", time.time()) == (True, held)


@pytest.mark.parametrize(
    ("key", "profile"),
    [
        ("trakt:me", "me"),
        ("trakt:me:ending", "me"),
        ("trakt:me:watchlist", "me"),
        ("anilist:me:expiring", "me"),
        ("anilist:me:expired", "me"),  # 0.1.0's, kept in the database
        ("trakt", None),
        ("server:jellyfin", None),
        ("plextv:watchlist", None),
        ("anime-datasets", None),
        ("something:else", None),
    ],
)
def test_the_profile_an_alert_is_about_is_read_from_its_key(key: str, profile: str | None) -> None:
    assert profile_of_alert(key) == profile


@pytest.mark.parametrize(
    ("key", "link"),
    [
        ("plex-trakt", "plex-trakt"),
        ("plex-trakt:review", "plex-trakt"),
        ("plex-trakt:removals", "plex-trakt"),
        # A show kept off Serializd's watchlist (serializdlist): read as a link of that whole
        # name, it was resolved as no longer in the config after every `watchbridge sync`.
        ("trakt-serializd:me:serializd-watched-seasons:1396", "trakt-serializd"),
    ],
)
def test_the_link_a_failing_sync_alert_is_about_is_read_from_its_key(key: str, link: str) -> None:
    assert link_of_alert(key) == link


@pytest.mark.parametrize(
    ("link", "over"),
    [
        ("{services: [trakt, serializd], kinds: [history, watchlist]}", None),
        # No run of the link is about `me` any more to resolve it.
        (
            "{services: [trakt, serializd], kinds: [watchlist], profiles: [kid]}",
            "link ts no longer syncs profile me (links.ts.profiles)",
        ),
        # Taking the watchlist out of the link's kinds (what such an alert may lead a user to
        # do) leaves no run to put the show on Serializd's watchlist, nor to resolve it.
        (
            "{services: [trakt, serializd], kinds: [history, ratings]}",
            "link ts no longer syncs the watchlist (links.ts.kinds)",
        ),
        # Nor does a link that no longer has Serializd: it says so, and where.
        (
            "{services: [trakt, anilist], kinds: [history]}",
            "link ts no longer syncs Serializd (links.ts.services)",
        ),
    ],
)
def test_a_kept_off_shows_alert_is_over_once_the_link_no_longer_syncs_its_watchlist(
    tmp_path: Path, link: str, over: str | None
) -> None:
    path = tmp_path / "watchbridge.yaml"
    path.write_text(kept_off_config(link), encoding="utf-8")
    key = "ts:me:serializd-watched-seasons:1396"
    assert no_longer_configured(load_config(path), "sync_failing", key) == over


def test_a_kept_off_shows_alert_stays_while_a_plex_serializd_link_syncs_its_watchlist(
    tmp_path: Path,
) -> None:
    # A plex-serializd link keeps shows off Serializd's watchlist as a trakt-serializd one
    # does: its alert is over only once the link no longer syncs the watchlist.
    path = tmp_path / "watchbridge.yaml"
    key = "ps:me:serializd-watched-seasons:1396"
    for kinds, over in (
        ("[history, watchlist]", None),
        ("[history]", "link ps no longer syncs the watchlist (links.ps.kinds)"),
    ):
        path.write_text(
            "services: {plex: {url: 'http://plex:32400', token: t}, serializd: {}}\n"
            "profiles: {me: {accounts: {plex: {}, serializd: {email: a@b.c, password: pw}}}}\n"
            f"links: {{ps: {{services: [plex, serializd], kinds: {kinds}}}}}\n",
            encoding="utf-8",
        )
        assert no_longer_configured(load_config(path), "sync_failing", key) == over


def kept_off_config(link: str, alerts: str = "") -> str:
    """Trakt, Serializd and AniList for profiles me and kid, and link ts as `link` says."""
    profiles = ", ".join(
        f"{p}: {{accounts: {{trakt: {{}}, serializd: {{email: {p}@b.c, password: pw}},"
        " anilist: {}}}"
        for p in ("me", "kid")
    )
    return (
        f"{alerts}services: {{trakt: {{client_id: c}}, serializd: {{}}, anilist: {{}}}}\n"
        f"profiles: {{{profiles}}}\n"
        f"links: {{ts: {link}}}\n"
    )


def test_a_kept_off_shows_resolved_says_in_words_what_the_link_no_longer_syncs(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    # The user took the watchlist out of the link: the "Resolved" says why in a person's
    # words, with the config key to look at.
    path = tmp_path / "watchbridge.yaml"
    alerts = (
        f'storage: {{path: {tmp_path / "wb.db"}}}\nalerts: {{urls: ["{receiver.apprise_url}"]}}\n'
    )
    path.write_text(kept_off_config("{services: [trakt, serializd], kinds: [watchlist]}", alerts))
    title = "watchbridge: Dark's watched seasons on Serializd cannot be read (profile me)"
    key = "ts:me:serializd-watched-seasons:1396"
    alerts_told(path, [("sync_failing", key, title, "kept off Serializd's watchlist")])
    path.write_text(kept_off_config("{services: [trakt, serializd], kinds: [history]}", alerts))
    assert kept_after_a_start(path, "sync_failing") == []
    assert receiver.titles() == [title, f"Resolved: {title}"]
    assert receiver.messages[-1]["message"] == (
        "link ts no longer syncs the watchlist (links.ts.kinds)"
    )


def test_rename_profile_keeps_a_kept_off_shows_alert_open_under_the_new_name() -> None:
    # Left under `me`, no run would ever resolve it: the runs are of `myself`.
    renamed = profile_keyed_cache("me", "myself")[ALERT_CONDITIONS]
    old, new = (f"trakt-serializd:{p}:serializd-watched-seasons:1396" for p in ("me", "myself"))
    assert renamed(f"sync_failing\x1f{old}") == f"sync_failing\x1f{new}"
    assert renamed(f"sync_failing\x1f{new}") is None  # another profile's: left alone


def test_status_says_what_a_renamed_profile_left_under_its_old_name_for_as_long_as_it_is_kept(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    """`me` renamed `myself`, which has signed in since: the start's warning is gone (the new
    name has state), while me's dead letter, sign-in and link state wait under the old name."""
    with Store.open(tmp_path / "wb.db") as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
        store.enqueue([a_play_of_arrival()], time.time())
        (row,) = store.claim("test", time.time(), 1, ["trakt"])
        store.mark_dead(row.id, time.time(), "profile me is no longer in the config")
        store.set_cursor("trakt", "me", "link:plex-trakt", "{}", time.time())
        sign_in_trakt(store, trakt, "myself", now=time.time())
    path = tmp_path / "watchbridge.yaml"
    before = config_text(tmp_path, free_port(), trakt, receiver, LINK)
    path.write_text(before.replace("  me: {", "  myself: {"), encoding="utf-8")

    said = watchbridge("status", "--config", str(path)).stdout

    assert (
        "kept:          profile me is no longer in the config, and the database keeps 1 dead "
        "letter(s), its sign-in to trakt, the sync state of links.plex-trakt: if a profile of "
        "the config is this one renamed, give it its old name back (profiles.me: "
    ) in said, said
    assert "`watchbridge deadletters retry` its dead letters" in said
    path.write_text(before, encoding="utf-8")  # its old name back
    assert "profile me is no longer" not in watchbridge("status", "--config", str(path)).stdout


def test_a_renamed_link_is_warned_of_and_status_says_what_waits_under_its_old_name(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    queued_by_the_link(tmp_path, trakt)
    with Store.open(tmp_path / "wb.db") as store:
        store.set_cursor("trakt", "me", "link:plex-trakt", "{}", time.time())
    path = tmp_path / "watchbridge.yaml"
    renamed = LINK.replace("plex-trakt:", "pt:")
    path.write_text(config_text(tmp_path, free_port(), trakt, receiver, renamed), "utf-8")

    checked = watchbridge("check-config", "--config", str(path)).stdout
    assert (
        "warning: links.pt is new to the database, which keeps the sync state of "
        "links.plex-trakt, no longer in the config: if you renamed a link, give it its old "
        "name back"
    ) in checked, checked
    with Store.open(tmp_path / "wb.db") as store:  # the new name's first run is applied
        store.set_cursor("trakt", "me", "link:pt", "{}", time.time())
    assert "links.pt is new" not in watchbridge("check-config", "--config", str(path)).stdout
    said = watchbridge("status", "--config", str(path)).stdout
    assert (
        "kept:          links.plex-trakt is no longer in the config, and the database keeps "
        "2 queued write(s) (not sent), its sync state for me: if a link of the config is this "
        "one renamed, give it its old name back (links.plex-trakt: under another name it "
        "starts over as on a first run"
    ) in said, said


@pytest.mark.parametrize(
    ("services", "links", "over"),
    [
        (
            "plex: {url: 'http://pms:32400'}, trakt: {client_id: c}",
            "pt: {services: [plex, trakt]}",
            None,
        ),
        (
            "plex: {url: 'http://pms:32400'}, trakt: {client_id: c}",
            "tt: {services: [trakt, serializd]}",
            "no link syncs Plex any more, so nothing tells whether its webhooks come"
            " (links.NAME.services)",
        ),
        (
            "trakt: {client_id: c}",
            "tt: {services: [trakt, serializd]}",
            "Plex is no longer in the config, so its play history is not read any more"
            " (services.plex)",
        ),
    ],
    ids=["plex-link-kept", "plex-link-removed", "plex-removed"],
)
def test_a_webhooks_stopped_alert_is_over_once_no_plex_link_reads_the_history(
    tmp_path: Path, services: str, links: str, over: str | None
) -> None:
    # Only a Plex link's read finds it and only a webhook resolves it: with the link gone,
    # a user who dropped the Plex webhook on purpose would be reminded of it for ever.
    path = tmp_path / "watchbridge.yaml"
    plex = "plex: {}, " if "plex" in services else ""
    serializd = "serializd: {email: a@b.c, password: p}"
    path.write_text(
        f"services: {{{services}, serializd: {{}}}}\n"
        f"profiles: {{me: {{accounts: {{{plex}trakt: {{}}, {serializd}}}}}}}\n"
        f"links: {{{links}}}\n",
        encoding="utf-8",
    )
    assert no_longer_configured(load_config(path), "webhooks_stopped", "machine-1") == over


@pytest.mark.parametrize(
    ("services", "over"),
    [
        ("jellyfin: {url: 'http://jf:8096', api_key: k}", None),
        (
            "jellyfin: {url: 'http://jf:8096', api_key: k, catch_up: false}",
            "watchbridge no longer reads Jellyfin's plays: its catch-up is switched off"
            " (services.jellyfin.catch_up)",
        ),
        (
            "emby: {url: 'http://emby:8096', api_key: k}",
            "Jellyfin is no longer in the config, so its plays are not read any more"
            " (services.jellyfin)",
        ),
    ],
    ids=["caught-up", "catch-up-off", "jellyfin-removed"],
)
def test_a_jellyfin_webhooks_stopped_alert_lasts_while_the_catch_up_reads_it(
    tmp_path: Path, services: str, over: str | None
) -> None:
    # Raised by the catch-up, not a Plex link: a setup without Plex keeps it until a webhook.
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"services: {{{services}, trakt: {{client_id: c}}}}\n"
        "profiles: {me: {users: {jellyfin: [alex], emby: [alex]}, accounts: {trakt: {}}}}\n",
        encoding="utf-8",
    )
    key = "jellyfin:5b6f0e3a2c1d4e8f9a7b6c5d4e3f2a1b"
    assert no_longer_configured(load_config(path), "webhooks_stopped", key) == over


def test_a_tautulli_without_watched_alert_lasts_without_a_plex_link(tmp_path: Path) -> None:
    # Found in Tautulli's webhooks (tautulliwatched.py), not by a Plex link: a household on
    # Tautulli alone keeps it until a Watched comes.
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        "services: {trakt: {client_id: c}}\n"
        "profiles: {me: {users: {tautulli: [alex]}, accounts: {trakt: {}}}}\n",
        encoding="utf-8",
    )
    key = "tautulli_watched:d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"
    assert no_longer_configured(load_config(path), "webhooks_stopped", key) is None


def everything_config(
    tmp_path: Path, receiver: AlertReceiver, edits: Sequence[str | tuple[str, str]]
) -> str:
    """Trakt, Serializd, Plex (link pt) and Jellyfin (caught up) for profiles me and kid, as
    the user edited it: each part of `edits` removed, or (old, new) replaced."""
    text = (
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n'
        "services:\n"
        "  trakt: {client_id: c}\n"
        "  serializd: {}\n"
        "  plex: {url: 'http://pms:32400'}\n"
        "  jellyfin: {url: 'http://jf:8096', api_key: k, catch_up: true}\n"
        "  anilist: {}\n"
        "profiles:\n"
        "  me:\n"
        "    users: {jellyfin: [alex]}\n"
        "    accounts: {trakt: {}, plex: {}, serializd: {email: me@b.c, password: pw}}\n"
        "  kid: {accounts: {plex: {}, trakt: {}}}\n"
        "links:\n"
        "  pt: {services: [plex, trakt], profiles: [kid]}\n"
    )
    for edit in edits:
        old, new = edit if isinstance(edit, tuple) else (edit, "")
        assert old in text, old
        text = text.replace(old, new)
    return text


# An alert of each kind the config can leave behind; what the user takes out of the config;
# the "Resolved" they get: in a person's words, services by name, the config key in brackets.
TAKEN_OUT = {
    "link": (
        ("sync_failing", "pt", "watchbridge: link pt keeps failing"),
        ["  pt: {services: [plex, trakt], profiles: [kid]}\n"],
        "link pt is no longer in the config, so it does not sync any more (links.pt)",
    ),
    "service": (
        ("service_unreachable", "serializd", "watchbridge: Serializd unreachable"),
        ["  serializd: {}\n", ", serializd: {email: me@b.c, password: pw}"],
        "Serializd is no longer in the config, so it is not used any more (services.serializd)",
    ),
    "profile": (
        ("credentials", "trakt:kid", "watchbridge: Trakt sign-in needed (profile kid)"),
        ["  kid: {accounts: {plex: {}, trakt: {}}}\n", ", profiles: [kid]"],
        "profile kid is no longer in the config, so nothing is synced for it any more"
        " (profiles.kid)",
    ),
    "account": (
        ("credentials", "trakt:me", "watchbridge: Trakt sign-in needed (profile me)"),
        ["trakt: {}, "],
        "profile me no longer uses Trakt (profiles.me.accounts.trakt)",
    ),
    "plex": (
        ("webhooks_stopped", "machine-1", "watchbridge: no webhook from Plex"),
        [
            "  plex: {url: 'http://pms:32400'}\n",
            "plex: {}, ",
            "  pt: {services: [plex, trakt], profiles: [kid]}\n",
        ],
        "Plex is no longer in the config, so its play history is not read any more (services.plex)",
    ),
    "plex link": (
        ("webhooks_stopped", "machine-1", "watchbridge: no webhook from Plex"),
        ["  pt: {services: [plex, trakt], profiles: [kid]}\n"],
        "no link syncs Plex any more, so nothing tells whether its webhooks come"
        " (links.NAME.services)",
    ),
    "jellyfin": (
        ("webhooks_stopped", "jellyfin:5b6f", "watchbridge: no webhook from Jellyfin"),
        ["  jellyfin: {url: 'http://jf:8096', api_key: k, catch_up: true}\n"],
        "Jellyfin is no longer in the config, so its plays are not read any more"
        " (services.jellyfin)",
    ),
    "jellyfin catch-up": (
        ("webhooks_stopped", "jellyfin:5b6f", "watchbridge: no webhook from Jellyfin"),
        [("catch_up: true", "catch_up: false")],
        "watchbridge no longer reads Jellyfin's plays: its catch-up is switched off"
        " (services.jellyfin.catch_up)",
    ),
    # The anime mapping lists' alert (no AniList delivery or link is left to resolve it).
    "anilist": (
        ("service_unreachable", "anime-datasets-missing", MISSING_TITLE),
        ["  anilist: {}\n"],
        "AniList is no longer in the config, so it is not used any more (services.anilist)",
    ),
    "jellyfin api key": (
        ("webhooks_stopped", "jellyfin:5b6f", "watchbridge: no webhook from Jellyfin"),
        [", api_key: k"],
        "watchbridge no longer reads Jellyfin's plays: it has no API key"
        " (services.jellyfin.api_key)",
    ),
    "jellyfin accounts": (
        ("webhooks_stopped", "jellyfin:5b6f", "watchbridge: no webhook from Jellyfin"),
        ["    users: {jellyfin: [alex]}\n"],
        "watchbridge no longer reads Jellyfin's plays: no profile lists its accounts"
        " (profiles.NAME.users.jellyfin)",
    ),
}


@pytest.mark.parametrize("what", sorted(TAKEN_OUT))
def test_what_the_config_no_longer_has_is_resolved_in_a_persons_words(
    tmp_path: Path, receiver: AlertReceiver, what: str
) -> None:
    """Before, some read as the config key first ("services.serializd is no longer in the
    config: it is not used any more", "profiles.me.accounts.trakt is no longer ...: trakt is
    not used for me any more"), unlike the newer ones ("link ts no longer syncs the
    watchlist (links.ts.kinds)")."""
    (kind, key, title), edits, said = TAKEN_OUT[what]
    path = tmp_path / "watchbridge.yaml"
    path.write_text(everything_config(tmp_path, receiver, []), encoding="utf-8")
    alerts_told(path, [(kind, key, title, "something is wrong")])
    path.write_text(everything_config(tmp_path, receiver, edits), encoding="utf-8")
    assert kept_after_a_start(path, kind) == []
    assert receiver.titles() == [title, f"Resolved: {title}"]
    assert receiver.messages[-1]["message"] == said
