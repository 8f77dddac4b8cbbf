"""A service killed again and again while it delivers (a container in an out-of-memory restart
loop, a power-flaky box): only a delivery that takes the process down by itself dies of it.

Each life of the service is its start's first steps (the real `DeliveryWorker.run`, which takes
back what the killed one held), then passes until one is killed: its task cancelled while a
request to the fake Trakt waits for an answer, nothing more written, as `kill -9` leaves it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import test_delivery as delivery
from tests.fakes.base import Request
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE as SERIALIZD_USER
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import (
    ServiceProcess,
    free_port,
    nothing_waits,
    paused_read,
    sign_in_trakt,
    store_connections,
    until,
    wait_for,
)
from tests.test_delivery import (
    ARRIVAL,
    HEAT,
    _late_play,
    _rating,
    close_targets,
    movies,
    outbox,
    worker_for,
)
from watchbridge.app import Runtime
from watchbridge.deadletters import retry_dead_letters
from watchbridge.model import MediaRef
from watchbridge.store import CRASHES_ALONE, Store
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

# test_delivery's fixtures: a signed-in profile "me" (max_attempts 3), the fake Trakt.
trakt = delivery.trakt
storage_settings = delivery.storage_settings
runtime = delivery.runtime

HUNG = 60.0  # seconds a request the kill cut off stays unanswered (until the fake stops)


class Hangs:
    """Requests to the fake Trakt that hang: the moments the service is killed."""

    def __init__(self, trakt: FakeTrakt) -> None:
        self.trakt = trakt
        self.seen: list[Request] = []  # those that hung so far

    def next(self, n: int, *, lands: bool, when: Callable[[Request], bool]) -> None:
        """The next `n` requests `when` says yes to hang: taken by Trakt (`lands`) or not."""

        def hangs(req: Request) -> bool:
            if not when(req):
                return False
            self.seen.append(req)  # yes: this knob takes it
            return True

        if lands:
            self.trakt.delay_next(n, HUNG, when=hangs)
        else:
            self.trakt.stall_next(n, HUNG, when=hangs)

    async def one_life(self, runtime: Runtime, clock: FakeClock, passes: int = 60) -> bool:
        """Start the service on the database as a killed one left it, then deliver until a
        request hangs: killed there. True if it was killed, False once nothing waits."""
        # A send that may have landed is looked for `retry_after` after it, past a restart.
        clock.advance(runtime.config.delivery.retry_after + 1)
        stopped = asyncio.Event()
        stopped.set()
        await worker_for(runtime).run(runtime, stopped)  # its start's first steps, no more
        worker = worker_for(runtime)
        try:
            for _ in range(passes):
                hung = len(self.seen)
                passing = asyncio.ensure_future(worker.pass_once(runtime))
                while not passing.done() and len(self.seen) == hung:
                    await asyncio.sleep(0.005)
                if not passing.done():
                    passing.cancel()  # kill -9: nothing more is written
                    with contextlib.suppress(asyncio.CancelledError):
                        await passing
                    return True
                if not passing.result():
                    due = runtime.store.next_due()
                    if due is None:
                        return False
                    clock.advance(max(0.0, due - clock()))  # nothing else to do meanwhile
            raise AssertionError("still delivering after all those passes")
        finally:
            await close_targets(worker)


def names(req: Request, movie: MediaRef) -> bool:
    return req.method == "POST" and str(movie.ids.imdb).encode() in req.body


def plays(trakt: FakeTrakt) -> dict[str, int]:
    """Each movie's plays on Trakt, by title."""
    counted: dict[str, int] = {}
    for entry in trakt.history():
        counted[str(entry.item.title)] = counted.get(str(entry.item.title), 0) + 1
    return counted


async def test_a_dozen_kills_during_one_batch_leave_no_dead_letter_and_send_each_play_once(
    runtime: Runtime, trakt: FakeTrakt, clock: FakeClock, receiver: AlertReceiver
) -> None:
    trakt.advance(clock() - trakt.now())
    films = movies(trakt, 50)
    runtime.store.enqueue(
        [_late_play(f, clock() - 86400 + n * 60, f"p{n}") for n, f in enumerate(films)], clock()
    )
    # The first kill comes as Trakt has taken the batch (its answer never read), the next
    # eleven at whatever request the worker waits on next: the batch's history check, then
    # each row's alone.
    hangs = Hangs(trakt)
    hangs.next(1, lands=True, when=lambda req: True)
    assert await hangs.one_life(runtime, clock)
    for _ in range(11):
        hangs.next(1, lands=False, when=lambda req: True)
        assert await hangs.one_life(runtime, clock)
    trakt.clear_knobs()
    assert not await hangs.one_life(runtime, clock)
    assert runtime.store.dead_letters() == []
    assert plays(trakt) == {str(f.title): 1 for f in films}
    rows = outbox(runtime).values()
    assert {status for status, _, _ in rows} == {"done"}
    # Ten kills found a row alone: ten rows spent a try each (and one more through).
    assert sorted(attempts for _, attempts, _ in rows) == [1] * 40 + [2] * 10
    assert not any("gave up" in t for t in receiver.titles())


async def test_a_play_that_takes_the_service_down_each_time_dies_alone(
    runtime: Runtime, trakt: FakeTrakt, clock: FakeClock, receiver: AlertReceiver
) -> None:
    trakt.advance(clock() - trakt.now())
    films = movies(trakt, 50)
    poison = films[9]
    runtime.store.enqueue(
        [_late_play(f, clock() - 86400 + n * 60, f"p{n}") for n, f in enumerate(films)], clock()
    )
    # Every request that sends it hangs, unanswered and not written: the process dies there.
    hangs = Hangs(trakt)
    hangs.next(10**6, lands=False, when=lambda req: names(req, poison))
    kills = 0
    while await hangs.one_life(runtime, clock):
        kills += 1
        assert kills <= 12, "killed for ever"
    # Twice with its batch, then at each of its tries alone, the last one given up untried.
    assert kills == CRASHES_ALONE + runtime.config.delivery.max_attempts
    (dead,) = runtime.store.dead_letters()
    assert dead.idempotency_key == "p9"
    assert "each time it was sent alone" in (dead.last_error or "")
    assert plays(trakt) == {str(f.title): 1 for f in films if f is not poison}
    gave_up = [m for m in receiver.messages if "gave up" in str(m.get("title"))]
    assert len(gave_up) == 1
    assert "each time it was sent alone" in str(gave_up[0].get("message"))


async def test_a_dead_letter_retried_counts_its_crashes_afresh(
    runtime: Runtime, trakt: FakeTrakt, clock: FakeClock
) -> None:
    # A play took the service down at each of its tries and died of it; `watchbridge
    # deadletters retry` (or the status page's button) queues it again. Trakt then refuses it
    # twice (a 422), and its last try is cut short by one kill: its dead letter tells of that
    # one kill, not of a service going down each time it was sent alone (6 times in all).
    trakt.advance(clock() - trakt.now())
    films = movies(trakt, 3)
    poison = films[1]
    runtime.store.enqueue(
        [_late_play(f, clock() - 86400 + n * 60, f"p{n}") for n, f in enumerate(films)], clock()
    )
    hangs = Hangs(trakt)
    hangs.next(10**6, lands=False, when=lambda req: names(req, poison))
    while await hangs.one_life(runtime, clock):
        pass
    (dead,) = runtime.store.dead_letters()
    assert "each time it was sent alone" in (dead.last_error or "")
    trakt.clear_knobs()
    assert retry_dead_letters(runtime.config, runtime.store, [dead.id], clock()).queued == 1
    (row,) = runtime.store._query("SELECT * FROM outbox WHERE id = ?", (dead.id,))
    assert (row["status"], row["attempts"], row["crashes"]) == ("pending", 0, 0)

    trakt.fail_next(2, 422, route="POST /sync/history", when=lambda req: names(req, poison))
    hangs.next(1, lands=False, when=lambda req: names(req, poison))
    assert await hangs.one_life(runtime, clock)  # refused twice, then killed at its last try
    assert not await hangs.one_life(runtime, clock)  # given up untried
    (dead,) = runtime.store.dead_letters()
    told = dead.last_error or ""
    assert "each time it was sent alone" not in told
    assert "the last time alone (once in all" in told
    assert dead.crashes == 1


# The worker's look, as it records a batch, at which of its rows it still holds.
RECORDING = re.compile(r"SELECT id FROM outbox WHERE id IN \([\d, ]+\) AND status = 'inflight'")


async def test_a_kill_as_a_stopped_batch_is_recorded_costs_its_sent_row_no_try(
    runtime: Runtime, trakt: FakeTrakt, clock: FakeClock, receiver: AlertReceiver
) -> None:
    # One batch: a late play (a history add) and a rating (a second request). SIGTERM comes
    # while the add's answer is on its way: the add landed, the rating is not begun and goes
    # back. The stop's grace runs out there (kill -9), before the batch is recorded. The play
    # was not alone in its batch: the kill spends none of its tries (it had one left), and
    # at the next start it is looked for on Trakt, found, and done.
    trakt.advance(clock() - trakt.now())
    late, rated = _late_play(HEAT, clock() - 3600, "late"), _rating(ARRIVAL, clock(), "r", 80)
    runtime.store.enqueue([late, rated], clock())
    with runtime.store.transaction() as conn:  # its last try left (max_attempts: 3)
        conn.execute("UPDATE outbox SET attempts = 2, last_error = 'timed out' WHERE id = 1")
    adding = trakt.hold_next(route="POST /sync/history")
    stop = asyncio.Event()
    with paused_read(RECORDING, *store_connections(runtime.store)) as killed:
        running = asyncio.create_task(worker_for(runtime).run(runtime, stop))
        await until(lambda: trakt.count("POST", "/sync/history") == 1)
        stop.set()
        adding.set()
        await until(killed.reached.is_set)  # killed there: that process writes nothing more
        again = build_runtime(runtime.config, clock=clock)
        again.open()
        try:
            assert not await Hangs(trakt).one_life(again, clock)
            assert again.store.dead_letters() == []
            rows = {r["idempotency_key"]: r for r in again.store._query("SELECT * FROM outbox")}
        finally:
            again.close()
    await running
    assert [(r["status"], r["attempts"]) for r in rows.values()] == [("done", 3), ("done", 1)]
    assert not any("cut short" in (r["last_error"] or "") for r in rows.values())
    assert [p.item.title for p in trakt.history()] == ["Heat"]
    assert [(r.item.title, r.rating) for r in trakt.ratings()] == [("Arrival", 8)]
    assert not any("gave up" in t for t in receiver.titles())


SECRET = "crash-loop-secret-123"
REVIEWS_ADD = "/api/show/reviews/add"  # Serializd's write of a play
ONE_OF_MANY = {  # a play of an episode the webhook names: queued for Trakt and Serializd
    "event": "played",
    "user": "alice",
    "item": {
        "type": "episode",
        "season": 5,
        "number": 14,
        "show": {"title": "Breaking Bad", "ids": {"tmdb": 1396, "tvdb": 81189}},
    },
}


def trakt_and_serializd(
    tmp_path: Path, start_fake: Any
) -> tuple[FakeTrakt, FakeSerializd, ServiceProcess]:
    """The fakes, and the service (not started) with a config sending the generic webhooks of
    `alice` to both (one try each, a kill's try held 1 s): a late play of Heat waits for
    Trakt, found in flight at two kills of the service, so it goes alone."""
    trakt = start_fake(FakeTrakt())
    serializd = start_fake(FakeSerializd())
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    breaking = trakt.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    trakt.add_episode(breaking, 5, 14, tvdb=4000014)
    serializd.seed_reference_catalogue()
    email, password, _ = SERIALIZD_USER
    config, db, port = tmp_path / "watchbridge.yaml", tmp_path / "wb.db", free_port()
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {db}}}
delivery: {{retry_after: 1s, max_attempts: 1}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    users: {{generic: [alice]}}
    accounts: {{trakt: {{}}, serializd: {{email: "{email}", password: "{password}"}}}}
""",
        encoding="utf-8",
    )
    with Store.open(db) as store:
        sign_in_trakt(store, trakt, "me", now=time.time())
        store.enqueue([_late_play(HEAT, time.time() - 3600, "heat")], time.time())
        with store.transaction() as conn:
            conn.execute("UPDATE outbox SET crashes = ?", (CRASHES_ALONE,))
    return trakt, serializd, ServiceProcess(config, port)


def rows(db: Path) -> dict[str, tuple[str, int, int, str]]:
    """Each row's target and what it sends (Heat, or the episode) -> (status, attempts,
    crashes, last error)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        found = conn.execute(
            "SELECT target, idempotency_key, status, attempts, crashes, last_error FROM outbox"
        ).fetchall()
    return {
        f"{t}:{'heat' if key == 'heat' else 'episode'}": (s, a, c, e or "")
        for t, key, s, a, c, e in found
    }


async def test_a_kill_while_a_play_goes_alone_costs_another_services_play_nothing(
    tmp_path: Path, start_fake: Any
) -> None:
    # `watchbridge serve`, killed (SIGKILL) while the play suspected of taking it down goes
    # alone to Trakt, and a play for Serializd came by webhook meanwhile: that one waits for
    # the lone play (were it sent beside it, a kill then would be charged to it too, and its
    # only try spent). The next start gives the suspect up, and the other play goes once.
    trakt, serializd, service = trakt_and_serializd(tmp_path, start_fake)
    db = service.config.parent / "wb.db"
    trakt.stall_next(10**6, HUNG, when=lambda req: names(req, HEAT))
    serializd.stall_next(1, HUNG, route=f"POST {REVIEWS_ADD}")
    service.start()
    try:
        wait_for(lambda: any(names(r, HEAT) for r in trakt.requests))
        answer = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=ONE_OF_MANY)
        assert answer.status_code == 202
        # It waits for the lone play, or (were it not to) Serializd is sent it: killed then.
        while not serializd.count("POST", REVIEWS_ADD):
            with contextlib.suppress(AssertionError):
                service.wait_for_output("is being sent alone", timeout=0.2)
                break
    finally:
        service.kill()
    killed = rows(db)  # as the kill left them: taken back at the next start
    assert killed["trakt:heat"][:3] == ("inflight", 0, CRASHES_ALONE)
    assert killed["serializd:episode"][:3] == ("pending", 0, 0)  # not begun

    trakt.clear_knobs()
    serializd.clear_knobs()
    service = ServiceProcess(service.config, service.port).start()  # the next life
    try:
        wait_for(lambda: nothing_waits(db), timeout=30)
    finally:
        service.terminate()
    settled = rows(db)
    status, attempts, crashes, reason = settled.pop("trakt:heat")
    assert (status, attempts, crashes) == ("dead", 1, CRASHES_ALONE + 1)
    assert "each time it was sent alone" in reason
    assert {key: row[:3] for key, row in settled.items()} == {
        "trakt:episode": ("done", 1, 0),
        "serializd:episode": ("done", 1, 0),
    }
    assert len(serializd.diary()) == 1
    assert [entry.item.title for entry in trakt.history()] == ["Episode 14"]  # no Heat
