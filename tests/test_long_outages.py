"""A service down for days while watchbridge keeps running: Serializd answering errors for
three days, with the default delivery settings.

The worker is driven as the service's loop drives it (`Outage.serve_for`): a pass, then a sleep to
the next due row, the end of the target's hold or the idle wake, on a hand-moved clock, with
the fake Serializd over real HTTP.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer, Request
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.test_deliver_serializd import (
    EPISODE_LOG_ADD,
    REVIEWS_ADD,
    SEASON_1,
    enqueue,
    episode,
)
from watchbridge.app import Runtime
from watchbridge.config import Secret, SerializdAccount, parse_config
from watchbridge.deliver.oncemore import PROBE_MAX
from watchbridge.deliver.serializd import SerializdTarget
from watchbridge.deliver.worker import IDLE_WAKE_SECONDS, DeliveryWorker
from watchbridge.http import RetryPolicy
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.services.serializd import SerializdClient
from watchbridge.store import ONCE_MORE_DUE, NewOutboxRow, Settlement
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

EMAIL, PASSWORD, _ = ALICE
HOUR, DAY = 3600.0, 86400.0
PAUSED = "watchbridge: Serializd unreachable"
PLAY_GAVE_UP = "watchbridge: gave up sending a play to Serializd"


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = FakeSerializd()
    fake.seed_reference_catalogue()
    start_fake(fake)
    return fake


@pytest.fixture
def delivery() -> str:
    """The config's `delivery` section: as it comes (12 attempts, 7 days, 30 s doubling)."""
    return "{}"


@pytest.fixture
def jitter() -> Callable[[float, float], float]:
    """The worker's jitter of retry waits: random, as the service's."""
    return random.uniform


@pytest.fixture
async def runtime(
    tmp_path: Path, fake: FakeSerializd, receiver: AlertReceiver, clock: FakeClock, delivery: str
) -> AsyncIterator[Runtime]:
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
delivery: {delivery}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  serializd: {{api_url: "{fake.url}"}}
  trakt: {{client_id: trakt-app}}
profiles:
  me: {{accounts: {{serializd: {{email: "{EMAIL}", password: "{PASSWORD}"}}, trakt: {{}}}}}}
links:
  ts: {{services: [trakt, serializd]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    yield runtime
    runtime.close()


@pytest.fixture
async def worker(
    runtime: Runtime, clock: FakeClock, jitter: Callable[[float, float], float]
) -> AsyncIterator[DeliveryWorker]:
    services = runtime.config.services.serializd
    assert services is not None
    client = SerializdClient(
        services,
        runtime.store,
        accounts={"me": SerializdAccount(EMAIL, Secret(PASSWORD))},
        clock=clock,
        requests_per_second=1000,
    )
    client.http.retry = RetryPolicy(attempts=1)  # one request per try: counted as sent
    target = SerializdTarget(client, runtime.store, runtime.config.delivery, clock)
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery, jitter=jitter)
    worker.targets = {target.name: target}
    yield worker
    await target.aclose()


@dataclass
class Outage:
    """The service's loop over Serializd on a hand-moved clock, and the ways Serializd fails."""

    runtime: Runtime
    worker: DeliveryWorker
    clock: FakeClock
    fake: FakeSerializd

    async def serve_for(self, span: float) -> list[int]:
        """Run the worker as the service does for `span` seconds; the requests Serializd got in
        each whole hour."""
        runtime, worker, clock, fake = self.runtime, self.worker, self.clock, self.fake
        end, hour_ends, counted = clock() + span, clock() + HOUR, len(fake.requests)
        per_hour: list[int] = []
        while clock() < end:
            if await worker.pass_once(runtime):
                continue
            now = clock()
            held = [hold.until for hold in worker.holds.values() if hold.until > now]
            due = None if held else runtime.store.next_due(None, worker.worker_id, now)
            wake = min([*held, *([due] if due is not None else []), now + IDLE_WAKE_SECONDS])
            step = max(wake - now, 0.001)
            clock.advance(step)
            fake.advance(step)
            if clock() >= hour_ends:
                per_hour.append(len(fake.requests) - counted)
                counted, hour_ends = len(fake.requests), hour_ends + HOUR
        return per_hour

    def one_clock(self) -> None:
        """Serializd's clock set to ours."""
        self.fake.advance(self.clock() - self.fake.now())

    def advance_to(self, moment: float) -> None:
        """Both clocks moved on to `moment`."""
        self.clock.advance(moment - self.clock())
        self.fake.advance(moment - self.fake.now())

    async def backlog_after_a_first_play(self) -> None:
        """Signed in by a play that went through, then five plays queued as Serializd goes
        down."""
        self.one_clock()
        # S2E9 (Breaking Bad's season 1 has 7: S1E9 is no episode Serializd takes).
        enqueue(self.runtime, "play", episode(9, season=2), self.clock() - 2 * HOUR)
        await self.worker.pass_once(self.runtime)
        assert len(self.fake.diary()) == 1
        for number in range(1, 6):
            enqueue(self.runtime, "play", episode(number), self.clock() - HOUR + number * 60)

    async def first_tries_lost(self) -> None:
        """A pass in which each queued play's first write loses its connection (it may have
        landed)."""
        self.fake.drop_next(5, route=f"POST {REVIEWS_ADD}")
        await self.worker.pass_once(self.runtime)

    def writes_fail(
        self, status: int, headers: dict[str, str] | None = None, *, entries_made: bool = False
    ) -> None:
        """From now on Serializd answers `status` to each write (a diary entry, an episode's
        tick) while its reads work; `entries_made`: its gateway answers that after the diary
        entry was made."""
        for route in (REVIEWS_ADD, EPISODE_LOG_ADD):
            made = entries_made and route == REVIEWS_ADD
            self.fake.fail_next(100_000, status, headers, route=f"POST {route}", after_handler=made)


@pytest.fixture
def outage(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, fake: FakeSerializd
) -> Outage:
    return Outage(runtime, worker, clock, fake)


async def test_serializd_down_for_three_days_loses_nothing_and_is_probed_modestly(
    outage: Outage, runtime: Runtime, fake: FakeSerializd, receiver: AlertReceiver
) -> None:
    await outage.backlog_after_a_first_play()
    fake.fail_next(100_000, 502)  # its host answers 502 to everything for three days
    per_hour = await outage.serve_for(3 * DAY)
    assert max(per_hour[1:]) <= 12  # a probe every 5 minutes at most, not a retry storm
    assert runtime.store.dead_letters() == []
    told = receiver.titles()
    assert set(told) == {PAUSED}
    assert len(told) <= 8  # one alert, then reminders ever further apart
    fake.clear_knobs()
    await outage.serve_for(HOUR)
    logged = [entry.episode_number for entry in fake.diary()]
    assert sorted(logged) == [1, 2, 3, 4, 5, 9]  # each play once
    assert receiver.titles()[len(told) :] == [f"Resolved: {PAUSED}"]


async def test_plays_that_gave_up_on_an_outage_leave_no_outage_alert_open(
    outage: Outage, runtime: Runtime, receiver: AlertReceiver
) -> None:
    # Its reads work, its writes fail with 502 for three days: the plays spend their tries
    # (a write it fails may be the request's own fault) and become dead letters. The outage
    # alert then holds nothing: left open, it would never get a word again (no reminder, no
    # "Resolved" until some later play gets through) and would keep standing for a
    # Serializd outage, which silences the links' own alerts of one (causes.told_elsewhere).
    await outage.backlog_after_a_first_play()
    outage.writes_fail(502)
    await outage.serve_for(3 * DAY)
    assert len(runtime.store.dead_letters()) == 5
    assert PAUSED in receiver.titles()
    assert not runtime.notifier.raised("service_unreachable", "serializd")
    assert receiver.titles().count(f"Resolved: {PAUSED}") == 1
    assert 'watchbridge_target_held{target="serializd"} 0.0' in runtime.metrics.render().decode()


async def test_the_outage_alert_of_writes_failing_says_they_will_give_up_not_that_nothing_is_lost(
    outage: Outage, receiver: AlertReceiver
) -> None:
    # Writes answered 502 spend their tries: "Nothing is lost; queued deliveries go out when
    # it is back" would be a promise the dead letters break 14 hours later.
    await outage.backlog_after_a_first_play()
    outage.writes_fail(502)
    await outage.serve_for(HOUR)
    (alert, *_) = [m["message"] for m in receiver.messages if m["title"] == PAUSED]
    assert "Nothing is lost" not in alert
    assert "dead letters after delivery.max_attempts" in alert


async def test_the_outage_alert_says_they_will_give_up_also_when_the_plays_may_have_landed(
    outage: Outage, worker: DeliveryWorker, fake: FakeSerializd, receiver: AlertReceiver
) -> None:
    # Every play's first try lost its connection (it may have landed), then Serializd
    # answers writes 502. In each pass the first play's write spends; the others waiting
    # behind it carry the same "unknown outcome" reason, and must not make the pass look
    # like an outage that spends nothing. Jittered retries mix such rows into a pass by
    # chance: the first alert then said "Nothing is lost" about plays that die.
    await outage.backlog_after_a_first_play()
    await outage.first_tries_lost()
    assert fake.count("POST", REVIEWS_ADD) == 1 + 5  # each play's entry sent, none answered
    assert not worker.holds  # a dropped connection says nothing of the service: retries
    outage.writes_fail(502)
    await outage.serve_for(HOUR)
    told = [m["message"] for m in receiver.messages if m["title"] == PAUSED]
    assert told
    assert all("dead letters after delivery.max_attempts" in alert for alert in told)


def no_jitter(low: float, high: float) -> float:
    return (low + high) / 2


@pytest.mark.parametrize(("delivery", "jitter"), [("{max_attempts: 2}", no_jitter)])
async def test_the_outage_alert_says_they_will_give_up_also_when_a_pass_begins_with_a_dead_letter(
    outage: Outage,
    runtime: Runtime,
    worker: DeliveryWorker,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    # Every play's first try lost its connection; unjittered, all five come back in one pass.
    # Serializd's gateway answers that pass's first write 502, asking to wait 20 minutes: that
    # play was at its last try (a dead letter), the four behind it wait. They spend their
    # tries as the first did, so the alert (due at once, for a 20-minute hold) must not say
    # "Nothing is lost" because the one write that failed in this pass is no longer held.
    await outage.backlog_after_a_first_play()
    await outage.first_tries_lost()
    outage.writes_fail(502, {"Retry-After": "1200"})
    due = runtime.store.next_due(None, worker.worker_id, clock())
    assert due is not None
    outage.advance_to(due)
    await worker.pass_once(runtime)
    assert len(runtime.store.dead_letters()) == 1  # the pass was built as meant
    (alert,) = [m["message"] for m in receiver.messages if m["title"] == PAUSED]
    assert "dead letters after delivery.max_attempts" in alert


@pytest.mark.parametrize("wrote", [False, True], ids=["unwritten", "written-then-502"])
async def test_plays_that_gave_up_on_an_outage_go_again_by_themselves_once_it_is_back(
    outage: Outage,
    runtime: Runtime,
    clock: FakeClock,
    fake: FakeSerializd,
    receiver: AlertReceiver,
    wrote: bool,
) -> None:
    # Three days of 502 to its writes while its reads work: the plays give up after ~14 h.
    # Someone who never looks at the alerts still gets them all, once Serializd takes a
    # write again (the next play watched), with no command. `wrote`: its gateway answered
    # 502 after the diary entry was made; the play going again must not make a second one.
    await outage.backlog_after_a_first_play()
    outage.writes_fail(502, entries_made=wrote)
    await outage.serve_for(3 * DAY)
    assert len(runtime.store.dead_letters()) == 5
    gave_up = [m["message"] for m in receiver.messages if "gave up" in m["title"]]
    assert gave_up  # as they died, in a few alerts
    assert all(
        "once more by itself when Serializd takes" in m
        or "once more by themselves when Serializd takes" in m
        for m in gave_up
    )
    fake.clear_knobs()
    enqueue(runtime, "play", episode(7), clock() - 60)
    await outage.serve_for(HOUR)
    logged = [entry.episode_number for entry in fake.diary()]
    assert sorted(logged) == [1, 2, 3, 4, 5, 7, 9]  # each play once
    assert {number for *_, number in fake.ticks()} == {1, 2, 3, 4, 5, 7, 9}
    assert runtime.store.dead_letters() == []
    (over,) = [
        m["message"]
        for m in receiver.messages
        if m["title"].startswith("Resolved: ") and "gave up" in m["title"]
    ]
    assert "5 Serializd dead letter(s) queued again by themselves, once" in over
    assert "Serializd takes deliveries again" in over  # the new play's write showed it


async def test_a_write_the_service_always_fails_goes_once_more_by_itself_then_stays_dead(
    outage: Outage, runtime: Runtime, clock: FakeClock, fake: FakeSerializd, receiver: AlertReceiver
) -> None:
    # One play Serializd answers 500 every time (its own fault, or the request's): it gives
    # up, goes once more by itself when other plays get through, gives up again, and stays.
    def poisoned(req: Request) -> bool:
        body = req.json()
        return bool(body.get("season_id") == SEASON_1 and body.get("episode_number") == 3)

    outage.one_clock()
    fake.fail_next(100_000, 500, route=f"POST {REVIEWS_ADD}", when=poisoned)
    enqueue(runtime, "play", episode(3), clock() - HOUR)
    for number in range(1, 13):  # the household watches an episode every six hours
        await outage.serve_for(6 * HOUR)
        enqueue(runtime, "play", episode(number, season=2), clock() - 60)
    await outage.serve_for(6 * HOUR)
    tries = [r for r in fake.requests if r.route == REVIEWS_ADD and poisoned(r)]
    max_attempts = runtime.config.delivery.max_attempts
    # Two rounds of tries; between them, before the next play got through, it may have been
    # sent alone (a probe: an hour after it gave up, then two hours after that).
    assert 2 * max_attempts <= len(tries) <= 2 * max_attempts + 2
    (dead,) = runtime.store.dead_letters()
    assert dead.payload["item"]["number"] == 3
    assert len(fake.diary()) == 12  # every other play went in
    told = [m["message"] for m in receiver.messages if m["title"] == PLAY_GAVE_UP]
    (first, last) = told
    assert "It failed on Serializd's own server errors" in first
    assert "it goes once more by itself when Serializd takes a play or rating again" in first
    assert "it gave up again after going once more by itself: it stays a dead letter" in last
    assert "once more by itself when" not in last


@pytest.mark.parametrize("wrote", [False, True], ids=["unwritten", "written-then-502"])
async def test_plays_that_gave_up_on_an_outage_go_again_on_an_idle_setup_with_modest_probes(
    outage: Outage, runtime: Runtime, fake: FakeSerializd, receiver: AlertReceiver, wrote: bool
) -> None:
    # As above, but nobody watches anything after the outage: no new play shows Serializd
    # taking writes again. Its reads work all along, which proves nothing of its writes: the
    # oldest dead letter is sent alone now and then, and once one gets through, all go.
    await outage.backlog_after_a_first_play()
    outage.writes_fail(502, entries_made=wrote)
    per_hour = await outage.serve_for(3 * DAY)
    assert len(runtime.store.dead_letters()) == 5
    # The last day of the outage, all five dead: a probe every few hours, never more than
    # one an hour (a probe is a look for it on Serializd, its write, and a tick).
    last_day = per_hour[-24:]
    assert max(last_day) <= 3
    assert 4 <= sum(1 for count in last_day if count) <= 8
    gave_up = [m["message"] for m in receiver.messages if "gave up" in m["title"]]
    assert all("the oldest is sent alone to see whether Serializd takes it" in m for m in gave_up)
    told = len(receiver.messages)
    fake.clear_knobs()
    await outage.serve_for(7 * HOUR)  # past the longest probe interval
    logged = [entry.episode_number for entry in fake.diary()]
    assert sorted(logged) == [1, 2, 3, 4, 5, 9]  # each play once
    assert {number for *_, number in fake.ticks()} == {1, 2, 3, 4, 5, 9}
    assert runtime.store.dead_letters() == []
    titles = [m["title"] for m in receiver.messages[told:]]
    assert not [title for title in titles if not title.startswith("Resolved: ")]  # no new alert
    (over,) = [
        m["message"]
        for m in receiver.messages
        if m["title"].startswith("Resolved: ") and "gave up" in m["title"]
    ]
    # Each may have landed (a 502): found on Serializd or sent, its probe proves no write,
    # and the next goes alone at once. All are counted, and no write is claimed.
    assert "5 Serializd dead letter(s) queued again by themselves, once" in over
    assert "Serializd takes deliveries again" not in over
    assert "whether Serializd takes writes again is not shown" in over


async def test_nothing_is_probed_while_no_dead_letter_waits_to_go_once_more(
    outage: Outage, fake: FakeSerializd
) -> None:
    await outage.backlog_after_a_first_play()
    await outage.serve_for(HOUR)
    assert len(fake.diary()) == 6
    counted = len(fake.requests)
    per_hour = await outage.serve_for(DAY)
    assert sum(per_hour) == len(fake.requests) - counted == 0  # idle is idle


async def test_after_dead_letters_discarded_by_hand_a_later_outages_probe_comes_an_hour_after(
    outage: Outage, runtime: Runtime, clock: FakeClock, fake: FakeSerializd
) -> None:
    # Serializd failed writes for a day: the probes of its dead letters failed, ever further
    # apart. The user discards them. A later play gives up on the same errors: it goes alone
    # an hour after, as its alert says, not as far apart as the discarded ones' probes were.
    await outage.backlog_after_a_first_play()
    outage.writes_fail(502)
    await outage.serve_for(DAY)
    assert len(runtime.store.dead_letters()) == 5
    runtime.store.discard_dead(None)
    await outage.serve_for(HOUR)
    enqueue(runtime, "play", episode(6), clock())
    while not runtime.store.dead_letters():
        await outage.serve_for(HOUR)
    fake.clear_knobs()
    await outage.serve_for(1.5 * HOUR)
    assert runtime.store.dead_letters() == []
    assert sorted(entry.episode_number for entry in fake.diary()) == [6, 9]


async def test_dead_letters_no_profile_delivers_any_more_cost_an_idle_wake_one_indexed_read(
    outage: Outage, runtime: Runtime, clock: FakeClock, fake: FakeSerializd
) -> None:
    # A profile taken out of the config left 500 dead letters of Serializd's failures, waiting
    # to go once more: none of them can go. Looked through once, they are not looked through
    # again at every idle wake (in a write transaction, which holds up webhooks): each wake
    # reads when the last of them died, from an index, and finds that unchanged.
    store, gave_up = runtime.store, clock() - DAY
    store.enqueue(
        [
            NewOutboxRow(
                "serializd",
                "gone",
                "play",
                {"item": ref_to_dict(episode(number)), "at": gave_up},
                ordering_key=f"gone:serializd:{number}",
                idempotency_key=f"gone:serializd:play:{number}",
            )
            for number in range(1, 501)
        ],
        gave_up,
    )
    rows = store.claim("earlier", gave_up, 500, ["serializd"])
    failed = [Settlement(row.id, "dead", None, "HTTP 502", once_more=True) for row in rows]
    store.settle(gave_up, failed)
    await outage.serve_for(HOUR)  # the first look goes through them
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    try:
        await outage.serve_for(2 * HOUR)
    finally:
        store.db.conn.set_trace_callback(None)
    assert [row.once_more for row in store.dead_letters()] == [ONCE_MORE_DUE] * 500
    assert fake.requests == []
    writes: list[list[str]] = []  # each write transaction's statements
    inside = False
    for statement in statements:
        if statement.startswith("BEGIN"):
            writes.append([])
            inside = True
        elif statement in ("COMMIT", "ROLLBACK"):
            inside = False
        elif inside:
            writes[-1].append(statement)
    looks = [s for s in statements if "once_more" in s]
    wakes = 2 * HOUR / IDLE_WAKE_SECONDS
    assert 0 < len(looks) <= wakes + 1  # one read a wake
    for look in looks:
        assert look.startswith("SELECT MAX(updated_at)")
        (plan,) = store.db.execute(f"EXPLAIN QUERY PLAN {look}").fetchall()
        assert "USING INDEX outbox_once_more_latest (target=?)" in plan[-1]
    claims = ("SELECT o.id, o.crashes FROM outbox o", "UPDATE outbox SET status = 'inflight'")
    for write in writes:  # only the look for rows due (claim), none of the dead letters
        assert all(s.startswith(claims) for s in write)
    # Dead letters that can go, dying after them, are probed as ever: once Serializd is back,
    # the next probe (an hour after the last gave up, later if a probe failed meanwhile) goes.
    await outage.backlog_after_a_first_play()
    outage.writes_fail(502)
    while len(store.dead_letters()) < 505:
        await outage.serve_for(HOUR)
    fake.clear_knobs()
    await outage.serve_for(PROBE_MAX + HOUR)
    assert len(fake.diary()) == 6


async def test_a_later_outages_resolved_counts_its_own_dead_letters_after_a_hand_discard(
    outage: Outage, runtime: Runtime, clock: FakeClock, fake: FakeSerializd, receiver: AlertReceiver
) -> None:
    # A play that gave up on Serializd's 502s goes alone once it is back, beside a dead letter
    # that can never go (a play of a whole show), which keeps the alert open. The user
    # discards that one: the alert closes as "retried or discarded". A later outage's
    # "Resolved" counts its own dead letter, not also the one that went alone before.
    async def gives_up_and_goes_alone(number: int) -> None:
        fake.fail_next(100_000, 502, route=f"POST {REVIEWS_ADD}")
        enqueue(runtime, "play", episode(number), clock() - 60)
        while not runtime.store.once_more_due("serializd"):
            await outage.serve_for(HOUR)
        fake.clear_knobs()
        await outage.serve_for(1.5 * HOUR)
        assert number in {entry.episode_number for entry in fake.diary()}

    await outage.backlog_after_a_first_play()
    await outage.serve_for(HOUR)
    enqueue(runtime, "play", MediaRef("show", ids=Ids(tmdb="1396"), title="Breaking Bad"), clock())
    await gives_up_and_goes_alone(6)
    (never,) = runtime.store.dead_letters()
    runtime.store.discard_dead([never.id])
    await outage.serve_for(HOUR)
    closed = [m["message"] for m in receiver.messages if m["title"] == f"Resolved: {PLAY_GAVE_UP}"]
    assert closed == ["no Serializd delivery is a dead letter any more (retried or discarded)"]
    await gives_up_and_goes_alone(7)
    over = [m["message"] for m in receiver.messages if m["title"] == f"Resolved: {PLAY_GAVE_UP}"]
    assert over[1].startswith("1 Serializd dead letter(s) queued again by themselves, once")
