"""Alert texts as a phone shows them (title and first lines): what happened and what to do,
services named as they write themselves, no internal words. Against the fakes over real HTTP,
read as the Apprise target received them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import CLIENT_ID, VIP_LIMITS, FakeTrakt
from tests.harness import AppThread, until
from tests.ingest_samples import sample_bytes, sample_json
from tests.test_anilist_client import fixture
from tests.test_app import CrashesForDays, jellyfin_config, wait_until
from tests.test_app import runtime_for as app_runtime_for
from tests.test_deliver_anilist import (
    anilist_target,
    enqueue,
    episode,
    start_anilist_with_part_2,
)
from tests.test_delivery import (
    ARRIVAL,
    HEAT,
    HELD_FOR_ME,
    PAUSED_FOR_ME,
    _late_play,
    _lift_the_pacer,
    _rating,
    close_targets,
    drain,
    sign_in,
    trakt_down_long_enough_to_alert,
    worker_for,
)
from tests.test_plexlink import Link as PlexTraktLink
from tests.test_plexlink import collect, plex_add, plex_trakt_link, trakt_add
from tests.test_scheduler import (
    a_trakt_play_an_hour_ago,
    link_fakes,
    scheduled,
    until_a_removal_is_held,
)
from tests.test_scheduler import (
    runtime_for as scheduled_runtime_for,
)
from tests.test_serializd_watchlist import (
    WATCHED_PAGE,
    breaking_bad_seasons_as_objects,
    watchlist_link,
)
from tests.test_serializd_watchlist import Link as WatchlistLink
from tests.test_storage_faults import LOCKED_TITLE, hold_the_lock, post, quick_lock_runtime
from tests.test_webhook_route import PLEX_SERVER, SECRET
from watchbridge import storagewatch, webhooks
from watchbridge.alerts import Notifier
from watchbridge.anime_data import from_config as anime_data_from
from watchbridge.app import Runtime, create_app
from watchbridge.config import AlertsConfig, Link, Secret, parse_config
from watchbridge.deliver.anilist import AniListTarget
from watchbridge.deliver.worker import DeliveryWorker, unreachable_alert
from watchbridge.http import HttpClient, Pause, RetryPolicy, ServiceError
from watchbridge.maintenance import DATASETS_TITLE, check_anime_datasets, tell_beside
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.serializdlist import unreadable_marks_alert
from watchbridge.servelock import Holder
from watchbridge.storagewatch import StorageWatch
from watchbridge.store import NewOutboxRow, Store
from watchbridge.sync import FAILURES_BEFORE_ALERT, report_run
from watchbridge.wiring import build_app, build_runtime

pytestmark = pytest.mark.anyio

TOO_MANY = {"data": None, "errors": [{"message": "Too Many Requests.", "status": 429}]}


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    return start_anilist_with_part_2(start_fake)


@pytest.fixture
async def runtime(
    tmp_path: Path, anilist: FakeAniList, clock: FakeClock, receiver: AlertReceiver
) -> AsyncIterator[Runtime]:
    clock.now = anilist.now()
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
  plex: {{url: "http://127.0.0.1:9", token: plex-owner-token}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts: {{anilist: {{token: "{anilist.issue_token()}"}}, plex: {{}}}}
links:
  plex-anilist: {{services: [plex, anilist]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    yield runtime
    runtime.close()


@pytest.fixture
async def worker(runtime: Runtime, clock: FakeClock) -> AsyncIterator[DeliveryWorker]:
    target: AniListTarget = anilist_target(runtime, clock)
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery)
    worker.targets = {target.name: target}
    yield worker
    await target.aclose()


async def test_an_anilist_rate_limit_says_anilist_limits_requests_and_nothing_is_to_do(
    runtime: Runtime,
    worker: DeliveryWorker,
    anilist: FakeAniList,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    anilist.fail_next(10**6, 429, headers={"Retry-After": "3600"}, body=TOO_MANY)
    enqueue(runtime, "play", episode(40), clock() - 3600, live=True)
    await worker.pass_once(runtime)
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: AniList is limiting requests"
    first, then = alert["message"].split(". ", 1)
    assert first.startswith("AniList is limiting watchbridge's requests until ")
    assert first.endswith("(in 1h)")
    assert then == (
        "Your plays and ratings for AniList are held and go out by themselves when the limit"
        " passes. Nothing is lost, and there is nothing for you to do."
    )
    assert runtime.notifier.raised("service_unreachable", "anilist")  # the same condition


def test_a_rate_limit_going_on_says_how_long_it_has_lasted_and_nothing_is_to_do() -> None:
    text = unreachable_alert(
        "anilist", "AniList: rate limited for 60s", 0.0, 5400, 5400, limited=True
    )
    assert text == (
        "AniList has been limiting watchbridge's requests for 90 minutes. Your plays and"
        " ratings for AniList are held and go out by themselves when the limit passes. Nothing"
        " is lost, and there is nothing for you to do."
    )


async def test_the_end_of_an_anilist_rate_limit_names_anilist_as_it_writes_itself(
    runtime: Runtime,
    worker: DeliveryWorker,
    anilist: FakeAniList,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    anilist.fail_next(1, 429, headers={"Retry-After": "3600"}, body=TOO_MANY)
    enqueue(runtime, "play", episode(40), clock() - 3600, live=True)
    await worker.pass_once(runtime)
    clock.advance(3700)
    target = worker.targets["anilist"]
    assert isinstance(target, AniListTarget)
    target.client.pacer.pause = Pause()  # paused in real time (http.py): the clock is past it
    await worker.pass_once(runtime)
    assert receiver.titles()[-1] == "Resolved: watchbridge: AniList is limiting requests"
    assert receiver.messages[-1]["message"] == (
        "AniList is taking plays and ratings again; those that waited have gone out."
    )


async def test_a_link_failing_names_the_service_it_quotes_as_it_writes_itself(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    store = Store.open(tmp_path / "wb.db")
    # Headed as the error is made, not re-titled on its way to the alert.
    failed = ServiceError(
        "serializd", "login: /api/login is not a Serializd endpoint (HTTP 404, HTML)"
    ).message
    for hour in range(FAILURES_BEFORE_ALERT):
        run_id = store.start_run("ts", hour * 3600.0)
        assert run_id is not None
        store.finish_run(run_id, hour * 3600.0 + 60, "failed", {}, 1, failed)
    config = parse_config(f"alerts: {{urls: ['{receiver.apprise_url}']}}", Path("w.yaml"), {})
    await report_run(store, Notifier(config.alerts), "ts", failed)
    store.close()
    (alert,) = receiver.messages
    assert alert["message"].startswith(
        "Serializd: login: /api/login is not a Serializd endpoint (HTTP 404, HTML)\n"
    )


def test_refused_webhooks_name_their_media_server_as_it_writes_itself(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    runtime = app_runtime_for(jellyfin_config(tmp_path, receiver))
    body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        httpx.post(f"{app.url}/webhooks/jellyfin/wrong-secret", content=body)
        wait_until(lambda: bool(receiver.messages))
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge is refusing Jellyfin webhooks"
    assert alert["message"].startswith("A Jellyfin webhook was refused: ")


def test_a_storage_alert_leads_with_what_happened_and_what_to_do(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storagewatch, "CHECK_EVERY", 0.1)
    runtime = quick_lock_runtime(tmp_path, receiver)
    served = create_app(runtime, tasks=[StorageWatch()], extra_routes=webhooks.ROUTES)
    with AppThread(served) as app:
        shell = hold_the_lock(tmp_path)
        try:
            post(app)
            wait_until(lambda: LOCKED_TITLE in receiver.titles())
        finally:
            shell.close()
    alert = next(m["message"] for m in receiver.messages if m["title"] == LOCKED_TITLE)
    lead, details = alert.split("\n\n", 1)
    assert lead == (
        f"Another program holds the database {tmp_path / 'watchbridge.db'} locked for longer"
        " than storage.busy_timeout. Close that program."
    )
    assert details.startswith("It is often a sqlite3 shell or database browser left open")
    assert "no restart needed" in details and "(The error: database is locked.)" in details


def test_a_part_of_watchbridge_that_keeps_failing_says_what_stops_before_its_error(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    task = CrashesForDays(crashes=3)
    task.name = "delivery"
    runtime = app_runtime_for(jellyfin_config(tmp_path, receiver))
    runtime.task_restart_delay = 0.0
    with AppThread(create_app(runtime, tasks=[task])):
        wait_until(lambda: bool(receiver.messages))
    lead, error = receiver.messages[0]["message"].split("\n\n")
    assert lead == (
        "watchbridge's delivery failed 3 times in a row: until it works, nothing is delivered"
        " (plays wait in the queue: nothing is lost). It restarts on its own, waiting longer"
        " each time; if this alert keeps coming back, the watchbridge log has the details."
    )
    assert error == "The error: OSError: database or disk is full"


async def test_an_outage_alert_leads_with_what_waits_since_when_and_that_nothing_is_to_do(
    runtime: Runtime,
    worker: DeliveryWorker,
    anilist: FakeAniList,
    clock: FakeClock,
    receiver: AlertReceiver,
    time_zone: Callable[[str], None],
) -> None:
    time_zone("Europe/Berlin")
    clock.now = (clock() // 86400 + 1) * 86400 + 12 * 3600 + 120  # 12:02 UTC: no midnight
    anilist.fail_next(10**6, 503)
    enqueue(runtime, "play", episode(40), clock() - 3600, live=True)
    started = clock()
    await worker.pass_once(runtime)
    while worker.holds["anilist"].until < started + 900:
        clock.advance(worker.holds["anilist"].until - clock())
        await worker.pass_once(runtime)
    clock.advance(started + 900 - clock())
    await worker.pass_once(runtime)
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: AniList unreachable"
    lead, answer = alert["message"].split("\n\n")
    since = datetime.fromtimestamp(started, ZoneInfo("Europe/Berlin")).strftime("%H:%M %Z")
    assert lead == (
        f"Plays and ratings for AniList are waiting since {since} (15 minutes); they go by"
        " themselves when AniList answers. Nothing to do unless it lasts."
    )
    assert answer.startswith("AniList: ")
    assert runtime.notifier.raised("service_unreachable", "anilist")  # the same condition


async def test_another_service_on_the_database_leads_with_what_to_do(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    database = tmp_path / "wb.db"
    config = parse_config(
        f'storage: {{path: {database}}}\nalerts: {{urls: ["{receiver.apprise_url}"]}}\n',
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    runtime.open()
    try:
        await tell_beside(runtime, None, Holder(1, "nas-container", 1_700_000_000.0))
    finally:
        runtime.close()
    (alert,) = receiver.messages
    lead, details = alert["message"].split("\n\n")
    assert lead == (
        f"Stop one of the two watchbridge services writing to {database}, or give one a"
        " database of its own (storage.path). Until then both send your plays and ratings and"
        " run the syncs, and a play may be sent twice."
    )
    assert details.startswith(
        "The other one (pid 1 on host nas-container, started 2023-11-14 22:13:20 UTC) got past"
        " the lock file: "
    )


async def test_a_play_that_gave_up_leads_with_its_title_and_the_command_to_send_it_again(
    runtime: Runtime,
    worker: DeliveryWorker,
    anilist: FakeAniList,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    anilist.fail_next(
        1, 400, body=fixture("error-validation-400.json"), when=lambda r: b"SaveMedia" in r.body
    )
    enqueue(runtime, "play", episode(40), clock() - 3600)  # AniList refuses its values
    await worker.pass_once(runtime)
    (dead,) = runtime.store.dead_letters()
    (alert,) = [m for m in receiver.messages if "gave up" in m["title"]]
    assert alert["title"] == "watchbridge: gave up sending a play to AniList"
    lead, details = alert["message"].split("\n\n")
    assert lead == (
        "Re:Zero S01E40: the play for profile me did not reach AniList: watchbridge gave up"
        f" sending it. Send it again with `watchbridge deadletters retry {dead.id}`;"
        " `watchbridge deadletters list` shows it."
    )
    assert details.startswith(
        f"Re:Zero S01E40: play for profile me (#{dead.id}): AniList rejected the values ("
    )


async def test_anime_datasets_out_of_date_lead_with_what_it_means_and_what_to_do(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    clock: FakeClock,
) -> None:
    datasets = start_fake(FakeDatasets())
    assert isinstance(datasets, FakeDatasets)
    urls = "".join(f"      {name}: {url}\n" for name, url in datasets.urls().items())
    config = parse_config(
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}']}}\n"
        f"services:\n  anilist:\n    mapping_refresh: 1d\n    mapping_urls:\n{urls}",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    http = HttpClient("anime-datasets", "", retry=RetryPolicy(attempts=2, backoff=0.01))
    try:
        await anime_data_from(runtime.config, http=http, clock=clock).index()
        clock.advance(2 * 86400)  # two refresh periods later, every host is down
        datasets.fail_next(8, 503)
        await anime_data_from(runtime.config, http=http, clock=clock).index()
        await check_anime_datasets(runtime)
    finally:
        await http.aclose()
        runtime.close()
    (alert,) = receiver.messages
    assert alert["title"] == DATASETS_TITLE
    lead, details = alert["message"].split("\n\n")
    assert lead == (
        "watchbridge could not refresh the anime mapping datasets that tell which AniList title"
        " a show's episodes are, so some anime plays may not find their AniList title. It tries"
        " again by itself; if this lasts, check that this machine reaches their hosts"
        " (services.anilist.mapping_urls)."
    )
    assert details.startswith("anime dataset ")  # each one's problem, a line each


async def anilist_down_until_told(
    runtime: Runtime, worker: DeliveryWorker, anilist: FakeAniList, clock: FakeClock
) -> list[bool]:
    """AniList answers 503 until its outage has been alerted (15 minutes); the flag returned
    brings it back."""
    down = [True]
    anilist.fail_next(10**6, 503, when=lambda _: down[0])
    started = clock()
    await worker.pass_once(runtime)
    while not runtime.notifier.raised("service_unreachable", "anilist"):
        clock.advance(max(worker.holds["anilist"].until, started + 900) - clock())
        await worker.pass_once(runtime)
    return down


async def back_from_the_outage(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, down: list[bool]
) -> None:
    down[0] = False
    clock.advance(worker.holds["anilist"].until - clock())
    await worker.pass_once(runtime)


async def test_the_end_of_an_outage_says_the_plays_that_waited_have_gone_out(
    runtime: Runtime,
    worker: DeliveryWorker,
    anilist: FakeAniList,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    enqueue(runtime, "play", episode(40), clock() - 3600, live=True)
    down = await anilist_down_until_told(runtime, worker, anilist, clock)
    await back_from_the_outage(runtime, worker, clock, down)
    assert receiver.titles()[-1] == "Resolved: watchbridge: AniList unreachable"
    assert receiver.messages[-1]["message"] == (
        "AniList is taking plays and ratings again; those that waited have gone out."
    )


async def test_the_end_of_an_outage_with_plays_still_waiting_does_not_say_they_went(
    runtime: Runtime,
    worker: DeliveryWorker,
    anilist: FakeAniList,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    for number in range(40, 47):  # more than one batch of AniList's
        enqueue(runtime, "play", episode(number), clock() - 3600, live=True)
    down = await anilist_down_until_told(runtime, worker, anilist, clock)
    await back_from_the_outage(runtime, worker, clock, down)
    assert runtime.store.waits_to_go("anilist")
    assert receiver.titles()[-1] == "Resolved: watchbridge: AniList unreachable"
    assert receiver.messages[-1]["message"] == (
        "AniList is taking plays and ratings again; those still waiting go out in turn (what"
        " holds a profile's own has an alert of its own)."
    )


async def test_a_play_for_a_service_taken_out_of_the_config_names_it_as_it_writes_itself(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, receiver: AlertReceiver
) -> None:
    payload = {"item": ref_to_dict(episode(40)), "at": clock() - 3600}
    row = NewOutboxRow("trakt", "me", "play", payload, "me:trakt:e40", "me:trakt:play:e40")
    runtime.store.enqueue([row], clock())  # queued while Trakt was in the config
    await worker.pass_once(runtime)
    (dead,) = runtime.store.dead_letters()
    (alert,) = receiver.messages
    details = alert["message"].split("\n\n")[1]
    assert details.startswith(
        f"Re:Zero S01E40: play for profile me (#{dead.id}): Trakt is no longer in the config"
        " (services.trakt): `watchbridge deadletters retry` sends these once it is again;"
    )


TraktSide = tuple[Runtime, DeliveryWorker, FakeTrakt]


@pytest.fixture
async def trakt_side(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    clock: FakeClock,
) -> AsyncIterator[TraktSide]:
    """A runtime delivering to the fake Trakt for profile me, signed in, and its worker."""
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "trakt.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "http://127.0.0.1:9", token: plex-owner-token}}
profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{trakt: {{}}, plex: {{}}}}}}
links:
  plex-trakt: {{services: [plex, trakt]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    sign_in(runtime, trakt, clock)
    worker = worker_for(runtime)
    yield runtime, worker, trakt
    await close_targets(worker)
    runtime.close()


async def test_a_profiles_sign_in_working_again_says_what_waited_has_gone_out(
    trakt_side: TraktSide, clock: FakeClock, receiver: AlertReceiver
) -> None:
    runtime, worker, trakt = trakt_side
    trakt.revoke_tokens()
    runtime.store.enqueue([_rating(ARRIVAL, clock() - 60, "r1", 80)], clock())
    await worker.pass_once(runtime)
    assert receiver.titles() == [PAUSED_FOR_ME]
    sign_in(runtime, trakt, clock)
    await drain(worker, runtime, clock, passes=2, step=1000)  # past the sign-in's hold
    assert receiver.titles()[-1] == f"Resolved: {PAUSED_FOR_ME}"
    assert receiver.messages[-1]["message"] == (
        "Trakt takes the sign-in of profile me again, and its plays and ratings; those that"
        " waited have gone out."
    )


async def test_the_end_of_a_profiles_rate_limit_says_what_it_held_has_gone_out(
    trakt_side: TraktSide, clock: FakeClock, receiver: AlertReceiver
) -> None:
    runtime, worker, trakt = trakt_side
    trakt.throttle_next(1, retry_after=2850, route="POST /sync/history")
    runtime.store.enqueue([_late_play(HEAT, clock() - 3600, "p1")], clock())
    await worker.pass_once(runtime)
    assert receiver.titles() == [HELD_FOR_ME]
    clock.advance(2851)
    _lift_the_pacer(worker)
    await worker.pass_once(runtime)
    assert receiver.titles() == [HELD_FOR_ME, f"Resolved: {HELD_FOR_ME}"]
    assert receiver.messages[-1]["message"] == (
        "Trakt is taking the plays and ratings of profile me again; those that were held have"
        " gone out."
    )


async def test_an_outage_over_while_a_sign_in_holds_says_what_still_holds_is_told_apart(
    trakt_side: TraktSide, clock: FakeClock, receiver: AlertReceiver
) -> None:
    runtime, worker, trakt = trakt_side
    await trakt_down_long_enough_to_alert(worker, runtime, trakt, clock)
    trakt.clear_knobs()
    trakt.revoke_tokens()  # back, but it refuses the profile's sign-in
    await drain(worker, runtime, clock, passes=2, step=301)
    assert receiver.titles()[-1] == "Resolved: watchbridge: Trakt unreachable"
    assert receiver.messages[-1]["message"] == (
        "Trakt answers again: its outage is over. What still holds some plays and ratings for"
        " it, such as a profile's sign-in, is told in its own alert."
    )


@pytest.fixture
async def plex_trakt(
    start_fake: Callable[[FakeServer], FakeServer], store: Store
) -> AsyncIterator[PlexTraktLink]:
    """plex.tv and Trakt for profile me, as the Plex <-> Trakt link's list runs meet them."""
    async with plex_trakt_link(start_fake, store) as made:
        yield made


def notifier_for(receiver: AlertReceiver) -> Notifier:
    return Notifier(AlertsConfig(urls=[Secret(receiver.apprise_url)]), timeout=2.0)


async def test_a_full_trakt_watchlist_says_what_waits_and_to_upgrade_to_vip(
    plex_trakt: PlexTraktLink, receiver: AlertReceiver
) -> None:
    plex_trakt.trakt.user.limits["watchlist"] = {"item_count": 1}
    trakt_add(plex_trakt, "Heat")
    plex_add(plex_trakt, "Arrival")
    await plex_trakt.watchlist(alerts=notifier_for(receiver))
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: Trakt watchlist full (profile me)"
    lead, details = alert["message"].split("\n\n")
    assert lead == (
        "Titles added to the watchlist of profile me elsewhere are not added to Trakt's: it"
        " holds 1 title, the most a free Trakt account may hold. Remove titles from the Trakt"
        " watchlist to make room, or upgrade to Trakt VIP at https://app.trakt.tv/vip;"
        " everything else keeps syncing."
    )
    assert details == (
        "Only adding to Trakt's watchlist waits: taking titles off it, and copying it the other"
        " way, go on. watchbridge reads Trakt's watchlist and the account's limit at each sync"
        " and adds the titles that waited as soon as there is room (titles taken off it, or a"
        " higher limit), as many as fit."
    )


async def test_a_full_trakt_collection_says_what_of_the_plex_library_waits(
    plex_trakt: PlexTraktLink, receiver: AlertReceiver
) -> None:
    plex_trakt.trakt.user.limits["collection"] = {"item_count": 3}
    await collect(plex_trakt, alerts=notifier_for(receiver))
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: Trakt collection full (profile me)"
    assert alert["message"].split("\n\n")[0] == (
        "What is added to the Plex libraries is not added to the Trakt collection of profile me:"
        " it holds 3 items, the most a free Trakt account may hold. Make room by removing from"
        " the Trakt collection items that are not in the Plex libraries (collected elsewhere:"
        " one that is in them is added back at the next sync), or upgrade to Trakt VIP at"
        " https://app.trakt.tv/vip; everything else keeps syncing."
    )


async def test_a_full_trakt_watchlist_made_room_for_says_why_and_that_what_waited_is_added(
    plex_trakt: PlexTraktLink, receiver: AlertReceiver
) -> None:
    plex_trakt.trakt.user.limits["watchlist"] = {"item_count": 1}
    trakt_add(plex_trakt, "Heat")
    plex_add(plex_trakt, "Arrival")
    notifier = notifier_for(receiver)
    await plex_trakt.watchlist(alerts=notifier)
    plex_trakt.trakt.set_limits(vip=True, limits=VIP_LIMITS)
    await plex_trakt.watchlist(alerts=notifier)
    assert receiver.titles()[-1] == "Resolved: watchbridge: Trakt watchlist full (profile me)"
    assert receiver.messages[-1]["message"] == (
        "Trakt takes titles for the watchlist of profile me again: the account is Trakt VIP"
        " now, its limit 5000 titles instead of 1. Those that waited are added from this sync"
        " on."
    )


async def test_a_full_trakt_watchlist_tidied_on_trakt_says_there_is_room_and_what_was_added(
    plex_trakt: PlexTraktLink, receiver: AlertReceiver
) -> None:
    plex_trakt.trakt.user.limits["watchlist"] = {"item_count": 2}
    trakt_add(plex_trakt, "Heat", "Arrival")
    plex_add(plex_trakt, "Batman Begins", "Guardians of the Galaxy")
    notifier = notifier_for(receiver)
    await plex_trakt.watchlist(alerts=notifier)
    refs = [MediaRef("movie", ids=Ids(tmdb=t)) for t in ("949", "329865")]  # Heat, Arrival
    await plex_trakt.trakt_client.remove_watchlist("me", refs)
    await plex_trakt.watchlist(alerts=notifier)
    assert receiver.titles() == [
        "watchbridge: Trakt watchlist full (profile me)",
        "Resolved: watchbridge: Trakt watchlist full (profile me)",
    ]
    assert receiver.messages[-1]["message"] == (
        "There is room again in the Trakt watchlist of profile me: 2 titles added."
    )


LinkFakes = tuple[FakeTrakt, FakeSerializd, AlertReceiver]


@pytest.fixture
def ts_fakes(start_fake: Callable[[FakeServer], FakeServer]) -> LinkFakes:
    """Trakt, Serializd and the receiver for the scheduler's link ts (test_scheduler's)."""
    return link_fakes(start_fake)


async def test_a_link_waiting_for_review_says_what_it_does_not_copy_until_you_review(
    tmp_path: Path, ts_fakes: LinkFakes
) -> None:
    trakt, serializd, receiver = ts_fakes
    runtime = scheduled_runtime_for(tmp_path, trakt, serializd, receiver, 3600, "dry-run")
    async with scheduled(runtime):
        await until(lambda: bool(receiver.messages))
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: link ts waits for your review"
    lead, details = alert["message"].split("\n\n")
    assert lead == (
        "Link ts copies nothing between Trakt and Serializd for profile me until you review"
        " what it would write: see it with `watchbridge sync --link ts --dry-run`, then run"
        " `watchbridge sync --link ts --yes`."
    )
    assert details == (
        "This is the first sync of links.ts: review the plan (`watchbridge sync --link ts"
        " --dry-run`), then run `watchbridge sync --link ts --yes` (or set links.ts.first_run:"
        " apply)."
    )


async def test_held_removals_say_nothing_is_removed_and_when_to_confirm_before_the_list(
    tmp_path: Path, ts_fakes: LinkFakes
) -> None:
    trakt, serializd, receiver = ts_fakes
    a_trakt_play_an_hour_ago(trakt)
    runtime = scheduled_runtime_for(tmp_path, trakt, serializd, receiver, interval=0.2)
    async with scheduled(runtime, deliver=True):
        await until_a_removal_is_held(trakt, serializd, receiver)
    alert = next(m for m in receiver.messages if "holds removals" in m["title"])
    assert alert["title"] == "watchbridge: link ts holds removals"
    lead, details = alert["message"].split("\n\n")
    assert lead == (
        "Link ts holds back removals it would copy from one side to the other: so many at once"
        " may mean a side only reads empty. Nothing is removed until you confirm. If you"
        " removed them yourself, run `watchbridge sync --link ts --confirm-removals`; if not,"
        " there is nothing to do: they stay, and this ends by itself once that side reads them"
        " again."
    )
    assert details.startswith("me: 1 of 2 plays on serializd would be removed")
    assert details.endswith("and confirming would remove them for good.")


def test_viewings_counted_twice_say_where_each_play_goes_twice_and_what_to_change(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    # Plex's webhook and a Tautulli template without `machine_id` (its player, a name Plex's
    # webhook does not give) report one Plex server's plays to profile me.
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}'], kinds: [reported_twice]}}\n"
        "services:\n"
        "  trakt: {client_id: abc, api_url: 'http://127.0.0.1:9', auth_url: 'http://127.0.0.1:9'}\n"
        "  serializd: {api_url: 'http://127.0.0.1:9'}\n"
        "profiles: {me: {default: true, users: {plex: ['1']}, accounts: {trakt: {},"
        " serializd: {email: me@b.c, password: pw}}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    tautulli = sample_json("tautulli", "watched_episode.json")
    del tautulli["machine_id"]
    tautulli["player"] = "Bedroom TV"
    plex = sample_bytes("plex", "episode_legacy_media_scrobble.json")
    with AppThread(build_app(build_runtime(config))) as app:
        assert httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=tautulli).is_success
        assert httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files={"payload": plex}).is_success
        wait_until(lambda: bool(receiver.messages) and not webhooks._alerting)
    (alert,) = receiver.messages
    assert alert["title"] == "watchbridge: both Plex and Tautulli report profile me's plays"
    lead, details = alert["message"].split("\n\n")
    assert lead == (
        "Each play of profile me goes to Trakt and Serializd twice, minutes apart: Plex's and"
        " Tautulli's webhooks both report it, and watchbridge cannot pair their reports."
        " Remove Tautulli's webhook or Plex's for that server; or, to keep both, add"
        ' "machine_id": "{machine_id}" to Tautulli\'s JSON Data box of each trigger (the'
        " template of docs/webhooks.md has it)."
    )
    assert details == (
        f"Profile me gets the plays of Plex server {PLEX_SERVER} from both Plex's and"
        " Tautulli's webhooks, and Tautulli's JSON Data lacks"
        ' "machine_id": "{machine_id}", so their reports of a viewing cannot be paired: each'
        " viewing counts twice (Trakt and Serializd get two plays of it, minutes apart). The"
        " plays counted twice meanwhile can be removed on Trakt and Serializd."
    )


@pytest.fixture
async def watchlist(
    start_fake: Callable[[FakeServer], FakeServer], store: Store
) -> AsyncIterator[WatchlistLink]:
    """Trakt <-> Serializd watchlists of profile me (test_serializd_watchlist's link)."""
    async with watchlist_link(start_fake, store) as link:
        yield link


async def kept_off_breaking_bad(
    watchlist: WatchlistLink, receiver: AlertReceiver, clock: FakeClock
) -> Notifier:
    """Breaking Bad on Trakt's watchlist, half watched on Serializd, whose watched pages list
    its seasons in a shape watchbridge cannot read: a run keeps it off Serializd's watchlist."""
    notifier = Notifier(AlertsConfig(urls=[Secret(receiver.apprise_url)]), clock=clock)
    watchlist.serializd.mark(None, 1396, 1, 2)
    watchlist.serializd.reshape_always(breaking_bad_seasons_as_objects, route=WATCHED_PAGE)
    watchlist.trakt_add("Breaking Bad")
    await watchlist.watchlist(alerts=notifier)
    return notifier


async def test_a_show_kept_off_serializds_watchlist_says_it_stays_on_trakts_and_nothing_to_do(
    watchlist: WatchlistLink, receiver: AlertReceiver, clock: FakeClock
) -> None:
    await kept_off_breaking_bad(watchlist, receiver, clock)
    (alert,) = receiver.messages
    assert alert["title"] == (
        "watchbridge: Breaking Bad's watched seasons on Serializd cannot be read (profile me)"
    )
    lead, details = alert["message"].split("\n\n")
    assert lead == (
        "Breaking Bad stays on Trakt's watchlist of profile me but is not put on Serializd's:"
        " watchbridge cannot read which of its seasons are marked watched there, and"
        " watchlisting a watched season could unmark it. It goes on Serializd's watchlist by"
        " itself once they read again; if this lasts, update watchbridge."
    )
    assert details == (
        "Link trakt-serializd, profile me: the seasons of Breaking Bad marked watched on"
        " Serializd come in a shape watchbridge cannot read: Serializd may have changed its"
        " answers, and watchbridge may need an update (see Troubleshooting in the README);"
        " Breaking Bad is kept off Serializd's watchlist until they read again."
    )


def test_a_show_kept_off_by_a_plex_serializd_link_says_it_stays_on_plexs() -> None:
    body = unreadable_marks_alert("plex-serializd", "me", "Breaking Bad", source="Plex")
    assert body.startswith(
        "Breaking Bad stays on Plex's watchlist of profile me but is not put on Serializd's:"
    )
    assert "Link plex-serializd, profile me: " in body and "Trakt" not in body


async def test_a_show_no_longer_kept_off_serializds_watchlist_says_why_in_its_resolved(
    watchlist: WatchlistLink, receiver: AlertReceiver, clock: FakeClock
) -> None:
    notifier = await kept_off_breaking_bad(watchlist, receiver, clock)
    watchlist.serializd.clear_knobs()  # Serializd answers as before
    clock.advance(600)
    await watchlist.watchlist(alerts=notifier)
    resolved = receiver.messages[-1]
    assert resolved["title"].startswith("Resolved: ")
    assert resolved["message"] == (
        "The show is no longer kept off Serializd's watchlist for profile me: its watched"
        " seasons read again and it went on there, or it left Trakt's watchlist."
    )


async def test_a_play_a_link_no_longer_syncs_to_its_service_says_so_in_a_persons_words(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, receiver: AlertReceiver
) -> None:
    # Link `mine` queued a play for AniList; its services are Plex and Trakt now.
    runtime.config = replace(runtime.config, links={"mine": Link(services=["plex", "trakt"])})
    payload = {"item": ref_to_dict(episode(40)), "at": clock() - 3600, "link": "mine"}
    row = NewOutboxRow("anilist", "me", "play", payload, "me:anilist:e40", "mine:anilist:e40")
    runtime.store.enqueue([row], clock())
    await worker.pass_once(runtime)
    (dead,) = runtime.store.dead_letters()
    (alert,) = receiver.messages
    details = alert["message"].split("\n\n")[1]
    assert details.startswith(
        f"Re:Zero S01E40: play for profile me (#{dead.id}): link mine no longer syncs AniList"
        " (links.mine.services): `watchbridge deadletters retry` sends these once it is again;"
    )


def test_trakts_outage_alert_names_the_plays_that_wait_for_its_id_search() -> None:
    # A Serializd play of a show only Trakt's id search names waits for Trakt, unsaid else.
    text = unreachable_alert(
        "trakt", "Trakt: answered 503", 0.0, 5400, 5400, named_for=["serializd", "anilist"]
    )
    assert text is not None and text.startswith(
        "Plays and ratings for Trakt (and those for Serializd and AniList that need its id"
        " search to name their show) are waiting since "
    ), text
    # A rate limit of one account's requests holds no id search: not said there.
    limited = unreachable_alert(
        "trakt", "rate limited", 0.0, 5400, 5400, limited=True, named_for=["serializd"]
    )
    assert limited is not None and "Serializd" not in limited
