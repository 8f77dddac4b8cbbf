"""A Serializd account signed in by a token pasted from the website (`accounts.serializd.token`),
as the service runs it: plays delivered with it, its expiry holding the deliveries behind one
alert that says what to do, a warning two weeks ahead, and the token never shown. Against the
fake Serializd over real HTTP, with the targets the service builds (`wiring.make_targets`)."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import FakeSerializd, Token
from tests.test_deliver_serializd import SEASON_1, SHOW, drain, enqueue, episode
from tests.test_sign_in_health import REFUSED_EXPIRY, metric, served, status_command
from tests.unpaced import unpaced
from watchbridge.app import Runtime
from watchbridge.config import Config, parse_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.maintenance import check_serializd_tokens
from watchbridge.signins import current_sign_ins
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

DAY = 86400.0
VALIDATE = "/api/validateauthtoken"
PAUSED = "watchbridge: Serializd sign-in needed (profile me)"
ENDS_SOON = "watchbridge: Serializd sign-in of profile me ends soon"


@pytest.fixture
def token_lifetime() -> float:
    """How long the fake's tokens last (a test near expiry shortens it)."""
    return 365 * DAY


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer], token_lifetime: float) -> FakeSerializd:
    fake = FakeSerializd(token_lifetime=token_lifetime)
    fake.seed_reference_catalogue()
    start_fake(fake)
    return fake


@pytest.fixture(autouse=True)
def no_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    unpaced(monkeypatch, "serializd")


def config_with(
    tmp_path: Path, fake: FakeSerializd, receiver: AlertReceiver, pasted: str
) -> Config:
    """The household's config, the token pasted as the website's whole cookie into the
    variable the line names (as a user does it)."""
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  serializd: {{api_url: "{fake.url}"}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts:
      serializd: {{token: "${{SERIALIZD_TOKEN}}"}}
"""
    path = tmp_path / "watchbridge.yaml"
    path.write_text(text.replace("${SERIALIZD_TOKEN}", pasted))  # for the commands
    return parse_config(text, path, {"SERIALIZD_TOKEN": pasted})


@pytest.fixture
def token(fake: FakeSerializd) -> str:
    return fake.issue_token()


@pytest.fixture
async def runtime(
    tmp_path: Path,
    fake: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
    token: str,
) -> AsyncIterator[Runtime]:
    clock.now = fake.now()
    config = config_with(tmp_path, fake, receiver, f"tvproject_credentials={token}")
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    runtime.store.due_after_config_change(config.delivery_fingerprint(), clock())  # its start
    yield runtime
    runtime.close()


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


class Service:
    """The delivery worker with the targets the service builds, started again on demand."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.worker: DeliveryWorker | None = None

    def start(self) -> DeliveryWorker:
        worker = DeliveryWorker(make_targets, self.runtime.config.delivery)
        worker.targets = {t.name: t for t in make_targets(self.runtime)}  # as `run` does
        self.worker = worker
        return worker

    async def stop(self) -> None:
        if self.worker is not None:
            for target in self.worker.targets.values():
                await target.aclose()

    async def restart_with(self, config: Config) -> DeliveryWorker:
        """Stopped, the config changed, started again: the rows a sign-in held are due."""
        await self.stop()
        self.runtime.config = config
        self.runtime.store.due_after_config_change(
            config.delivery_fingerprint(), self.runtime.clock()
        )
        return self.start()


@pytest.fixture
async def service(runtime: Runtime) -> AsyncIterator[Service]:
    service = Service(runtime)
    service.start()
    yield service
    await service.stop()


async def test_a_play_goes_out_on_the_pasted_cookie_without_a_login(
    runtime: Runtime, service: Service, fake: FakeSerializd, clock: FakeClock, token: str
) -> None:
    assert service.worker is not None
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(service.worker, runtime, clock, passes=2)
    (entry,) = fake.diary()
    assert (entry.show_id, entry.episode_number) == (SHOW, 4)
    assert fake.ticks() == {(SHOW, SEASON_1, 4)}
    assert runtime.store.outbox_counts()["done"] == 1
    assert fake.count("POST", VALIDATE) == 1 and fake.count("POST", "/api/login") == 0
    writes = fake.calls("POST", "/api/show/reviews/add")
    assert writes and all(w.headers["authorization"] == f"Bearer {token}" for w in writes)


async def test_an_expired_token_holds_the_plays_behind_one_alert_until_a_new_one_is_pasted(
    tmp_path: Path,
    runtime: Runtime,
    service: Service,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
    token: str,
    logged: pytest.LogCaptureFixture,
) -> None:
    assert service.worker is not None
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(service.worker, runtime, clock, passes=1)
    fake.expire_tokens()  # a year on, or signed out on the website
    enqueue(runtime, "play", episode(5), clock() - 600)
    enqueue(runtime, "rating", episode(5), clock() - 60, rating=80)
    await drain(service.worker, runtime, clock, passes=4, step=1800)

    assert len(fake.diary()) == 1
    counts = runtime.store.outbox_counts()
    assert counts["pending"] == 2 and runtime.store.dead_letters() == []  # nothing lost
    assert receiver.titles() == [PAUSED]
    (alert,) = receiver.messages
    said = str(alert["message"])
    assert "Serializd no longer accepts the token pasted for profile me" in said
    for step in ("https://www.serializd.com", "tvproject_credentials",
                 "profiles.me.accounts.serializd.token", "restart watchbridge"):  # fmt: skip
        assert step in said
    assert fake.count("POST", "/api/login") == 0
    (sign_in,) = current_sign_ins(runtime.config, runtime.store, clock())
    assert sign_in.state == "refused" and "tvproject_credentials" in sign_in.message

    new = fake.issue_token()  # signed in on the website again, and copied
    worker = await service.restart_with(config_with(tmp_path, fake, receiver, new))
    await drain(worker, runtime, clock, passes=2)

    assert [(e.episode_number, e.rating) for e in fake.diary()] == [(4, 0), (5, 0), (5, 8)]
    assert runtime.store.outbox_counts()["pending"] == 0
    assert receiver.titles() == [PAUSED, f"Resolved: {PAUSED}"]
    (sign_in,) = current_sign_ins(runtime.config, runtime.store, clock())
    assert sign_in.state == "ok"
    for secret in (token, new):
        assert secret not in logged.text
        assert all(secret not in str(vars(r)) for r in logged.records)
        assert all(secret not in str(m) for m in receiver.messages)


async def test_a_pasted_token_serializd_refuses_reads_refused_everywhere_until_a_good_one(
    tmp_path: Path,
    runtime: Runtime,
    service: Service,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
    token: str,
) -> None:
    """A pasted token Serializd's check says no to (signed out on the website, months before
    the end it claims) read "refused" with its claim as its expiry: /api/status said
    `refused: false`, the expiry metric counted down to the claim and the page showed the
    date, where a refused Trakt or AniList token reads refused everywhere (0 left)."""
    assert service.worker is not None
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(service.worker, runtime, clock, passes=1)
    fake.expire_tokens()  # signed out on the website: its claim still says a year
    enqueue(runtime, "play", episode(5), clock() - 600)
    await drain(service.worker, runtime, clock, passes=2)

    assert runtime.store.outbox_counts()["pending"] == 1  # held, not dropped
    assert receiver.titles() == [PAUSED]
    sign_ins, page, metrics = served(runtime.config, FakeClock(clock()))
    (me,) = sign_ins["me"]
    assert me["state"] == "refused" and me["refused"] is True
    assert me["message"].startswith("Serializd refused the token ")
    assert "deliveries wait" in me["message"]
    assert me["expires_at"] is not None  # its claim, flagged refused
    assert metric(metrics, "watchbridge_sign_in_ok", "serializd", "me") == 0.0
    assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "serializd", "me") == 0.0
    row = '<td>me</td><td>serializd</td><td><span class="bad">refused</span></td>'
    assert f"{row}<td>{REFUSED_EXPIRY}</td>" in page
    assert "  serializd/me: refused: Serializd refused the token " in status_command(runtime.config)

    new = fake.issue_token()  # copied again from the website, the config changed
    worker = await service.restart_with(config_with(tmp_path, fake, receiver, new))
    (me,) = served(runtime.config, FakeClock(clock()))[0]["me"]
    assert (me["state"], me["refused"]) == ("not_tried", False)
    await drain(worker, runtime, clock, passes=2)
    sign_ins, page, metrics = served(runtime.config, FakeClock(clock()))
    (me,) = sign_ins["me"]
    assert (me["state"], me["refused"]) == ("ok", False)
    assert metric(metrics, "watchbridge_sign_in_ok", "serializd", "me") == 1.0
    assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "serializd", "me") > 300 * DAY
    assert REFUSED_EXPIRY not in page
    assert receiver.titles() == [PAUSED, f"Resolved: {PAUSED}"]
    for text in (str(sign_ins), page, metrics):
        assert token not in text and new not in text


@pytest.mark.parametrize("token_lifetime", [10 * DAY])
async def test_a_token_ending_within_two_weeks_is_told_once_with_its_date_and_what_to_do(
    tmp_path: Path,
    runtime: Runtime,
    service: Service,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    assert service.worker is not None
    ends = time.strftime("%Y-%m-%d", time.gmtime(fake.now() + 10 * DAY))
    assert await check_serializd_tokens(runtime) != []  # the service's hourly housekeeping
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(service.worker, runtime, clock, passes=2)  # delivered: it still works
    assert await check_serializd_tokens(runtime) == []

    assert len(fake.diary()) == 1
    assert receiver.titles() == [ENDS_SOON]
    said = str(receiver.messages[0]["message"])
    assert f"expires on {ends} (in 10 days)" in said
    assert "tvproject_credentials" in said and "profiles.me.accounts.serializd.token" in said
    (sign_in,) = current_sign_ins(runtime.config, runtime.store, clock())
    assert sign_in.state == "ends_soon" and ends in sign_in.message

    fake.token_lifetime = 365 * DAY
    runtime.config = config_with(tmp_path, fake, receiver, fake.issue_token())  # pasted anew
    await check_serializd_tokens(runtime)
    assert receiver.titles() == [ENDS_SOON, f"Resolved: {ENDS_SOON}"]


@pytest.mark.parametrize("token_lifetime", [10 * DAY])
async def test_the_page_and_status_say_when_the_token_ends_and_never_show_it(
    runtime: Runtime, service: Service, fake: FakeSerializd, clock: FakeClock, token: str
) -> None:
    assert service.worker is not None
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(service.worker, runtime, clock, passes=2)
    ends = time.strftime("%Y-%m-%d", time.gmtime(fake.now() + 10 * DAY))

    sign_ins, page, metrics = served(runtime.config, FakeClock(time.time()))
    (one,) = sign_ins["me"]
    assert one["state"] == "ends_soon" and one["expires_at"].startswith(ends)
    assert ends in one["message"] and "tvproject_credentials" in one["message"]
    shown = status_command(runtime.config)
    assert f"  serializd/me: ends soon: the token ends {ends}" in shown
    for text in (page, metrics, shown, str(sign_ins)):
        assert token not in text


async def test_one_refusal_of_a_token_serializd_still_takes_does_not_hold_it_for_hours(
    runtime: Runtime,
    service: Service,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    """A 401 once (a glitch of the service) is not the token's end: its token check says
    it still takes it, and the play goes out, not held six hours behind an alert."""
    assert service.worker is not None
    enqueue(runtime, "play", episode(4), clock() - 3600)
    glitch = {"message": "You must be logged in"}
    fake.fail_next(1, 401, body=glitch, route="POST /api/show/reviews/add")
    await drain(service.worker, runtime, clock, passes=2)

    assert len(fake.diary()) == 1 and runtime.store.outbox_counts()["done"] == 1
    assert fake.count("POST", VALIDATE) == 2  # the first use, and after the 401
    assert receiver.titles() == []
    (sign_in,) = current_sign_ins(runtime.config, runtime.store, clock())
    assert sign_in.state == "ok"


def token_claiming(fake: FakeSerializd, claims: dict[str, object]) -> str:
    """A token the fake takes for a year, whatever its payload claims (a format of
    Serializd's own that the reference does not record)."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    value = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"
    fake.tokens[value] = Token(value, fake.user, fake.now() + 365 * DAY)
    return value


async def test_an_expiry_claim_in_milliseconds_is_read_as_its_date_not_a_broken_page(
    tmp_path: Path, fake: FakeSerializd, receiver: AlertReceiver, clock: FakeClock
) -> None:
    """`exp` in milliseconds (as JavaScript's Date.now() gives it) read as seconds is a date
    in the year 59000: the status page, /api/status and `watchbridge status` failed on it."""
    clock.now = fake.now()
    ends = fake.now() + 10 * DAY
    token = token_claiming(fake, {"username": "alice", "exp": int(ends * 1000)})
    config = config_with(tmp_path, fake, receiver, token)

    runtime = build_runtime(config, clock=clock)
    runtime.open()
    (sign_in,) = current_sign_ins(config, runtime.store, clock())
    runtime.close()
    assert sign_in.state == "ends_soon" and sign_in.expires_at == pytest.approx(ends, abs=1)
    sign_ins, page, _ = served(config, FakeClock(clock()))
    day = time.strftime("%Y-%m-%d", time.gmtime(ends))
    assert sign_ins["me"][0]["expires_at"].startswith(day) and day in page


async def test_a_token_serializd_takes_past_its_expiry_claim_goes_on_and_reads_as_working(
    tmp_path: Path,
    fake: FakeSerializd,
    receiver: AlertReceiver,
    clock: FakeClock,
) -> None:
    """The expiry claim is single source (§2): a token Serializd still takes after it is not
    expired. It was used, but read `expired` (watchbridge_sign_in_ok 0, the documented alert
    rule firing) with "paste a new token" until one was pasted."""
    clock.now = fake.now()
    claimed = fake.now() + DAY
    token = token_claiming(fake, {"username": "alice", "expiry_time": claimed})
    runtime = build_runtime(config_with(tmp_path, fake, receiver, token), clock=clock)
    runtime.open()
    runtime.store.due_after_config_change(runtime.config.delivery_fingerprint(), clock())
    service = Service(runtime)
    worker = service.start()
    try:
        enqueue(runtime, "play", episode(4), clock() - 3600)
        await drain(worker, runtime, clock, passes=1)
        clock.advance(2 * DAY)  # past its claim: the fake takes it for a year
        enqueue(runtime, "play", episode(5), clock() - 600)
        await drain(worker, runtime, clock, passes=2)

        assert [e.episode_number for e in fake.diary()] == [4, 5]
        (sign_in,) = current_sign_ins(runtime.config, runtime.store, clock())
        assert sign_in.state == "ok" and "it works until Serializd refuses it" in sign_in.message
        assert fake.count("POST", VALIDATE) == 2  # checked again once past its claim
        # Told of its claim a day ahead; working past it, that is over (no paused alert).
        assert receiver.titles() == [ENDS_SOON, f"Resolved: {ENDS_SOON}"]
    finally:
        await service.stop()
        runtime.close()


async def test_a_token_of_another_format_serializd_takes_delivers_with_no_expiry_known(
    tmp_path: Path, fake: FakeSerializd, receiver: AlertReceiver, clock: FakeClock
) -> None:
    clock.now = fake.now()
    opaque = "3f9a0c1e5b7d4a2f8e6c0b1d3a5f7e9c2b4d6f8a"
    fake.tokens[opaque] = Token(opaque, fake.user, fake.now() + 365 * DAY)
    runtime = build_runtime(config_with(tmp_path, fake, receiver, opaque), clock=clock)
    runtime.open()
    service = Service(runtime)
    worker = service.start()
    try:
        enqueue(runtime, "play", episode(4), clock() - 3600)
        await drain(worker, runtime, clock, passes=2)
        assert len(fake.diary()) == 1
        (sign_in,) = current_sign_ins(runtime.config, runtime.store, clock())
        assert (sign_in.state, sign_in.expires_at) == ("ok", None)
        assert "no expiry known" in sign_in.message
    finally:
        await service.stop()
        runtime.close()


async def test_a_token_of_another_serializd_user_is_told_as_another_account_with_the_token_fix(
    tmp_path: Path,
    runtime: Runtime,
    service: Service,
    fake: FakeSerializd,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    """A token copied while signed in as someone else: the account change is told (as for
    an email), and what to change names the token, not only an email and password."""
    assert service.worker is not None
    enqueue(runtime, "play", episode(4), clock() - 3600)
    await drain(service.worker, runtime, clock, passes=2)
    bob = fake.add_user("bob@example.com", "bobs-password", "bob_tv")
    worker = await service.restart_with(
        config_with(tmp_path, fake, receiver, fake.issue_token(bob))
    )
    enqueue(runtime, "play", episode(5), clock() - 600)
    await drain(worker, runtime, clock, passes=3)

    assert [e.episode_number for e in fake.diary(bob)] == [5]
    (alert,) = [m for m in receiver.messages if "is another account" in str(m["title"])]
    said = str(alert["message"])
    assert "Serializd is now user bob_tv (was user alice_tv)" in said
    assert "a token copied while signed in as me's own Serializd account" in said
