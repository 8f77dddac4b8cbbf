"""The running service: health, readiness, metrics, API auth, the webhook port, shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import START_TIMEOUT, AppThread, ServiceProcess, free_port, write_config
from tests.ingest_samples import sample_bytes
from watchbridge import app as app_module
from watchbridge import maintenance, statuspage, webhooks
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime, create_app, start_warnings, webhook_secret
from watchbridge.config import copied_nowhere, load_config
from watchbridge.homeassistant import APP_ENV, FROM_OWN_YAML
from watchbridge.logs import Redactor
from watchbridge.metrics import Metrics
from watchbridge.refused import OVER_AFTER
from watchbridge.store import Store
from watchbridge.unmapped import KEPT

SECRET = "webhook-secret-4410"


def runtime_for(config_path: Path) -> Runtime:
    config = load_config(config_path, {})
    return Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))


class SlowWorker:
    """A background task that is mid-item when shutdown begins and must be allowed to finish."""

    name = "slow-worker"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finished_item = False

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        self.started.set()
        await stop.wait()
        await asyncio.sleep(0.5)  # the item in hand
        self.finished_item = True


class CrashOnce:
    name = "crash-once"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("boom")
        await stop.wait()


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One service process for the tests that only read from it (health, readiness, metrics,
    an unknown path, the status API): started once for them, not once each."""
    port = free_port()
    proc = ServiceProcess(write_config(tmp_path_factory.mktemp("shared"), port=port), port)
    proc.start()
    yield proc
    proc.kill()


def test_healthz_answers_ok(shared_service: ServiceProcess) -> None:
    assert httpx.get(f"{shared_service.url}/healthz").json() == {"status": "ok"}


def test_readyz_is_ready_once_the_store_is_open(shared_service: ServiceProcess) -> None:
    response = httpx.get(f"{shared_service.url}/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ready"})


def test_metrics_are_prometheus_text_with_our_prefix(shared_service: ServiceProcess) -> None:
    response = httpx.get(f"{shared_service.url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "watchbridge_build_info{python=" in text
    assert "# TYPE watchbridge_outbox_depth gauge" in text  # no target configured: no series
    assert "# TYPE watchbridge_unmatched gauge" in text
    assert "process_resident_memory_bytes" in text
    assert "_created" not in text
    ours = [
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    ]
    assert all(n.startswith(("watchbridge_", "process_", "python_")) for n in ours)


def test_metrics_content_type_names_each_parameter_once(shared_service: ServiceProcess) -> None:
    """A media type names each parameter once (RFC 9110); Litestar added a second charset."""
    content_type = httpx.get(f"{shared_service.url}/metrics").headers["content-type"]
    media_type, *parameters = (part.strip() for part in content_type.split(";"))
    names = sorted(parameter.partition("=")[0].lower() for parameter in parameters)
    assert (media_type, names) == ("text/plain", ["charset", "version"])


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/", "/api/status"])
def test_head_is_answered_as_get_without_a_body(shared_service: ServiceProcess, path: str) -> None:
    # Uptime monitors and `curl -I` check a service with HEAD; a 405 reads as it being down.
    head = httpx.head(f"{shared_service.url}{path}")
    get = httpx.get(f"{shared_service.url}{path}")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize("path", ["/", "/api/status"])
def test_the_page_and_status_are_never_kept_by_a_browser_or_proxy(
    shared_service: ServiceProcess, path: str
) -> None:
    # They show a Trakt sign-in's code while one waits, and the household's account names.
    assert "no-store" in httpx.get(f"{shared_service.url}{path}").headers["cache-control"]


def test_a_method_not_allowed_says_which_are(shared_service: ServiceProcess) -> None:
    # RFC 9110: a 405 names the methods the path takes.
    for path, allowed in (("/healthz", "GET"), ("/deadletters/retry", "POST")):
        answer = httpx.put(f"{shared_service.url}{path}")
        assert answer.status_code == 405 and answer.json()["status"] == 405
        assert allowed in answer.headers["allow"]
    assert "HEAD" in httpx.post(f"{shared_service.url}/healthz").headers["allow"]


def test_unknown_path_is_a_json_404(shared_service: ServiceProcess) -> None:
    response = httpx.get(f"{shared_service.url}/nope")
    assert response.status_code == 404
    assert response.json()["status"] == 404


@pytest.mark.parametrize("host", ["wb.home:8x", "wb.home:99999"])
def test_a_host_header_with_no_port_number_is_a_400_saying_so(
    shared_service: ServiceProcess, host: str
) -> None:
    # Litestar reads the request's URL from the Host header for some answers (a query
    # parameter missing): a port it cannot read was a 500 with a traceback in the log.
    answer = httpx.post(f"{shared_service.url}/signin/trakt", headers={"host": host})
    assert answer.status_code == 400, answer.text
    assert "Host header" in answer.json()["error"]


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /healthz HTTP/1.0", b"200"),
        # Litestar makes the URL of the address for its message: no 500 there either.
        (b"POST /signin/trakt HTTP/1.0\r\nContent-Length: 0", b"400"),
    ],
)
def test_a_request_with_no_host_header_to_a_service_listening_on_ipv6_is_answered(
    tmp_path: Path, request_line: bytes, status: bytes
) -> None:
    # HTTP/1.0 needs no Host (a load balancer's health check); behind `server.host: ::` the
    # address it came in on (`::ffff:127.0.0.1`) is no host:port Litestar can read.
    port = free_port()
    path = write_config(tmp_path, port=port)
    path.write_text(path.read_text().replace("host: 127.0.0.1", "host: '::'"))
    service = ServiceProcess(path, port).start()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request_line + b"\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    service.kill()
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer


def test_api_is_open_without_a_token_configured(shared_service: ServiceProcess) -> None:
    status = httpx.get(f"{shared_service.url}/api/status").json()
    assert status["outbox"]["pending"] == 0
    assert status["held_left_out"] == 0  # reasons beyond the five `held` lists, as the page says


def test_api_status_names_an_anilist_sign_in_to_make_as_the_page_does(tmp_path: Path) -> None:
    body = "services:\n  anilist: {client_id: '1234'}\nprofiles:\n  me:\n    accounts:\n"
    path = write_config(tmp_path, body + "      anilist: {}\n")
    with AppThread(create_app(runtime_for(path))) as app:
        status = httpx.get(f"{app.url}/api/status").json()
    assert status["anilist_sign_ins"] == [
        "me: not signed in: run `watchbridge auth anilist --profile me`"
    ]


def test_api_token_is_required_when_configured(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    path.write_text(path.read_text().replace("server:\n", "server:\n  api_token: tok-123456\n"))
    with AppThread(create_app(runtime_for(path))) as app:
        refused = httpx.get(f"{app.url}/api/status")
        assert refused.status_code == 401
        # RFC 9110: a 401 says how to authenticate.
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{app.url}/api/status", headers=wrong).status_code == 401
        right = {"Authorization": "Bearer tok-123456"}
        assert httpx.get(f"{app.url}/api/status", headers=right).status_code == 200
        lower = {"Authorization": "bearer tok-123456"}  # the scheme's case does not matter
        assert httpx.get(f"{app.url}/api/status", headers=lower).status_code == 200
        assert httpx.head(f"{app.url}/api/status").status_code == 401
        assert httpx.head(f"{app.url}/api/status", headers=right).status_code == 200


def test_an_api_token_with_letters_outside_ascii_is_taken(tmp_path: Path) -> None:
    # Sent in UTF-8 (curl, a proxy's header) as the config holds it; it never matched.
    path = write_config(tmp_path, "")
    token = "pässwort-ünïcode-à"  # ends in UTF-8's 0xC3 0xA0, a no-break space in Latin-1
    path.write_text(
        path.read_text().replace("server:\n", f"server:\n  api_token: {token}\n"),
        encoding="utf-8",
    )
    with AppThread(create_app(runtime_for(path))) as app:
        right = {"Authorization": f"Bearer {token}".encode()}
        assert httpx.get(f"{app.url}/api/status", headers=right).status_code == 200
        wrong = {"Authorization": f"Bearer {token[:-1]}".encode()}
        assert httpx.get(f"{app.url}/api/status", headers=wrong).status_code == 401


@pytest.mark.parametrize("proxies", ["[127.0.0.1]", "[127.0.0.0/8]", "[10.0.0.0/8, 127.0.0.0/8]"])
def test_trusted_proxy_skips_the_api_token(tmp_path: Path, proxies: str) -> None:
    path = write_config(tmp_path, "")
    path.write_text(
        path.read_text().replace(
            "server:\n", f"server:\n  api_token: tok-123456\n  trusted_proxies: {proxies}\n"
        )
    )
    with AppThread(create_app(runtime_for(path))) as app:
        assert httpx.get(f"{app.url}/api/status").status_code == 200


def test_a_client_outside_the_trusted_networks_needs_the_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    path.write_text(
        path.read_text().replace(
            "server:\n", "server:\n  api_token: tok-123456\n  trusted_proxies: [10.0.0.0/8]\n"
        )
    )
    with AppThread(create_app(runtime_for(path))) as app:
        assert httpx.get(f"{app.url}/api/status").status_code == 401


SCRIPT = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
FRAME = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}
TAB = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
LINK = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
PANEL = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"}


def test_a_web_page_cannot_read_the_open_status_through_dns_rebinding(tmp_path: Path) -> None:
    """With no api_token, a page on attacker.example whose name now points at this machine is
    'same origin' to the browser: neither it (its name is refused, its tab too: see
    test_rebinding.py) nor a script or frame of another page under our own name may read the
    page or the API."""
    app_ = create_app(runtime_for(write_config(tmp_path)), extra_routes=statuspage.ROUTES)
    with AppThread(app_) as app:
        rebound = {"Host": f"attacker.example:{app.port}"}
        for path in ("/", "/api/status"):
            for headers in (SCRIPT, FRAME, TAB):
                answer = httpx.get(f"{app.url}{path}", headers={**rebound, **headers})
                assert answer.status_code == 403, (path, headers)
                assert "DNS rebinding" in answer.json()["error"]
                assert "server.allowed_hosts" in answer.json()["error"]
            for headers in (SCRIPT, FRAME):
                answer = httpx.get(f"{app.url}{path}", headers=headers)
                assert answer.status_code == 403, (path, headers)
                assert "not in a script or frame of another page" in answer.json()["error"]
            # A tab, a link from the page, curl, another site's frame (a dashboard, Home
            # Assistant's panel_iframe) read them as before.
            for headers in (TAB, LINK, PANEL, {}):
                assert httpx.get(f"{app.url}{path}", headers=headers).status_code == 200
        # Prometheus and health checks are no page's.
        for path in ("/metrics", "/healthz", "/readyz"):
            assert httpx.get(f"{app.url}{path}", headers={**rebound, **SCRIPT}).status_code == 200


def test_a_trusted_proxy_frames_the_page_as_home_assistant_ingress_does(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    path.write_text(
        path.read_text().replace(
            "server:\n", "server:\n  api_token: tok-123456\n  trusted_proxies: [127.0.0.1]\n"
        )
    )
    with AppThread(create_app(runtime_for(path), extra_routes=statuspage.ROUTES)) as app:
        assert httpx.get(f"{app.url}/", headers=FRAME).status_code == 200
        assert httpx.get(f"{app.url}/api/status", headers=SCRIPT).status_code == 200


def damage(database: Path) -> None:
    """What a failing SD card does to the database's pages (its first one spared)."""
    with sqlite3.connect(database) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other.close()
    with database.open("r+b") as disk:
        disk.seek(4096)
        disk.write(b"\xa5" * (database.stat().st_size - 4096))


@pytest.mark.parametrize("page", ["/", "/api/status"])
def test_the_status_on_a_damaged_database_is_a_503_saying_what_failed(
    tmp_path: Path, page: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path)
    with AppThread(create_app(runtime_for(path), extra_routes=statuspage.ROUTES)) as app:
        damage(tmp_path / "watchbridge.db")
        response = httpx.get(f"{app.url}{page}")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith("the database (storage.path) could not be read")
    assert "malformed" in error
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_a_bug_in_our_sql_on_the_status_is_a_500_not_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def bug(_: Store) -> None:
        raise sqlite3.IntegrityError("UNIQUE constraint failed: sync_runs.id")

    monkeypatch.setattr(Store, "status", bug)
    with AppThread(create_app(runtime_for(write_config(tmp_path)))) as app:
        response = httpx.get(f"{app.url}/api/status")
    assert response.status_code == 500
    assert "disk" not in response.json()["error"]
    assert [r for r in caplog.records if r.exc_info], "no traceback to report"


def test_metrics_on_a_damaged_database_still_count_the_refused_webhooks(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with AppThread(create_app(runtime_for(path), extra_routes=webhooks.ROUTES)) as app:
        damage(tmp_path / "watchbridge.db")
        httpx.post(f"{app.url}/webhooks/plex", content=b"{}")  # no secret: refused
        response = httpx.get(f"{app.url}/metrics")
    assert response.status_code == 200
    assert 'outcome="unauthorized",source="plex"} 1.0' in response.text
    assert "watchbridge_outbox_depth" not in response.text  # it cannot be read
    assert "watchbridge_outbox_oldest_pending_age_seconds" not in response.text
    assert "watchbridge_sync_last_success_timestamp_seconds" not in response.text


def test_webhook_port_serves_only_webhooks_metrics_and_health(tmp_path: Path) -> None:
    port, hook_port = free_port(), free_port()
    path = write_config(tmp_path, port=port)
    path.write_text(
        path.read_text().replace("server:\n", f"server:\n  webhook_port: {hook_port}\n")
    )
    service = ServiceProcess(path, port).start()
    try:
        hooks = f"http://127.0.0.1:{hook_port}"
        assert httpx.get(f"{hooks}/healthz").status_code == 200
        assert httpx.get(f"{hooks}/readyz").status_code == 200
        assert httpx.get(f"{hooks}/metrics").status_code == 200
        assert httpx.get(f"{hooks}/api/status").status_code == 404
        assert httpx.get(f"{service.url}/api/status").status_code == 200
    finally:
        service.kill()


def test_webhook_port_takes_webhooks_with_the_secret_in_the_path_or_header(tmp_path: Path) -> None:
    port, hook_port = free_port(), free_port()
    path = write_config(tmp_path, port=port)
    path.write_text(
        path.read_text().replace(
            "server:\n", f"server:\n  webhook_port: {hook_port}\n  webhook_secret: {SECRET}\n"
        )
    )
    service = ServiceProcess(path, port).start()
    hooks = f"http://127.0.0.1:{hook_port}/webhooks/generic"
    played = b'{"event": "played", "user": "alice", "item": {"type": "movie", "ids": {"tmdb": 1}}}'
    try:
        answers = [
            httpx.post(f"{hooks}/{SECRET}", content=played),
            httpx.post(hooks, content=played, headers={"X-Webhook-Secret": SECRET}),
            httpx.post(hooks, content=played),
        ]
    finally:
        service.kill()
    # No profile lists alice: taken and ignored, as on the main port.
    assert [(a.status_code, a.json()["status"]) for a in answers] == [
        (200, "ignored_unmapped_account"),
        (200, "ignored_unmapped_account"),
        (401, "unauthorized"),
    ]


def test_sigterm_stops_the_service_cleanly_within_ten_seconds(service: ServiceProcess) -> None:
    started = time.monotonic()
    # uvicorn re-raises the signal after its clean shutdown, as a supervisor expects.
    assert service.terminate() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 10
    assert "watchbridge stopped" in service.output()


def test_shutdown_lets_background_work_finish_its_item(tmp_path: Path) -> None:
    worker = SlowWorker()
    app = AppThread(create_app(runtime_for(write_config(tmp_path)), tasks=[worker]))
    with app:
        pass
    assert worker.finished_item


def test_a_background_tasks_errors_are_served_at_0_before_the_first(tmp_path: Path) -> None:
    # A series that first appears at 1 is no increase to Prometheus: the crash alert would
    # count one crash short.
    with AppThread(create_app(runtime_for(write_config(tmp_path)), tasks=[SlowWorker()])) as app:
        text = httpx.get(f"{app.url}/metrics").text
    assert 'watchbridge_background_task_errors_total{task="slow-worker"} 0.0' in text


def test_a_crashed_background_task_is_restarted_and_counted(tmp_path: Path) -> None:
    task = CrashOnce()
    runtime = runtime_for(write_config(tmp_path))
    runtime.task_restart_delay = 0.05
    with AppThread(create_app(runtime, tasks=[task])) as app:
        deadline = time.monotonic() + 10
        while task.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        text = httpx.get(f"{app.url}/metrics").text
    assert task.runs == 2
    assert 'watchbridge_background_task_errors_total{task="crash-once"} 1.0' in text


class AlwaysCrashes:
    name = "always-crashes"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        self.runs += 1
        raise OSError("database or disk is full")


def test_a_task_that_keeps_crashing_is_restarted_ever_more_slowly(tmp_path: Path) -> None:
    task = AlwaysCrashes()
    runtime = runtime_for(write_config(tmp_path))
    runtime.task_restart_delay = 0.05
    with AppThread(create_app(runtime, tasks=[task])):
        time.sleep(1.0)  # at a steady 0.05 s: 20 runs; doubling: 0, .05, .15, .35, .75
    assert 4 <= task.runs <= 6


class CrashesForDays:
    """Crashes `crashes` times in a row (a disk full for days), then runs."""

    name = "crashes-for-days"

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0
        self.recovered = False

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise OSError("database or disk is full")
        self.recovered = True
        await stop.wait()


def test_a_task_crashing_for_days_is_still_restarted_once_it_can_run(tmp_path: Path) -> None:
    task = CrashesForDays(crashes=1100)  # at the 5-minute cap: almost four days
    runtime = runtime_for(write_config(tmp_path))
    runtime.task_restart_delay = 0.0  # the delay doubles from 0: only the count matters here
    with AppThread(create_app(runtime, tasks=[task])):
        deadline = time.monotonic() + 20
        while not task.recovered and time.monotonic() < deadline:
            time.sleep(0.05)
    assert task.recovered, f"not restarted after crash {task.runs}"


def test_a_task_that_keeps_crashing_is_alerted_and_resolved_once_it_runs_again(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "HEALTHY_RUN", 0.3)
    task = CrashesForDays(crashes=3)  # a full disk, freed after the third try
    task.name = "delivery"
    runtime = runtime_for(jellyfin_config(tmp_path, receiver))
    runtime.task_restart_delay = 0.0
    with AppThread(create_app(runtime, tasks=[task])):
        wait_until(lambda: len(receiver.titles()) == 2)
    title = "watchbridge: its delivery keeps failing"
    assert receiver.titles() == [title, f"Resolved: {title}"]
    body = receiver.messages[0]["message"]
    assert "OSError: database or disk is full" in body and "nothing is lost" in body


def test_a_crash_alert_raised_before_the_service_restarted_is_resolved_once_the_task_runs(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "HEALTHY_RUN", 0.3)
    config = jellyfin_config(tmp_path, receiver)
    title = "watchbridge: its delivery keeps failing"
    crashing = CrashesForDays(crashes=10**6)  # the disk is full...
    crashing.name = "delivery"
    runtime = runtime_for(config)
    runtime.task_restart_delay = 0.0
    with AppThread(create_app(runtime, tasks=[crashing])):
        wait_until(lambda: receiver.titles() == [title])
    healthy = CrashesForDays(crashes=0)  # ...until the user frees it and restarts the service
    healthy.name = "delivery"
    with AppThread(create_app(runtime_for(config), tasks=[healthy])):
        wait_until(lambda: len(receiver.titles()) == 2)
    assert receiver.titles() == [title, f"Resolved: {title}"]


def quick_alerts(tmp_path: Path, receiver: AlertReceiver) -> Path:
    """Alerts to `receiver`, throttled (and failed sends retried) after 1 s."""
    return write_config(tmp_path, f'alerts: {{urls: ["{receiver.apprise_url}"], throttle: 1s}}\n')


def test_a_task_that_goes_on_crashing_is_reminded_of(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    task = AlwaysCrashes()
    task.name = "delivery"
    runtime = runtime_for(quick_alerts(tmp_path, receiver))
    runtime.task_restart_delay = 0.01  # crash 3 at ~0.03 s, crash 9 at ~2.5 s
    title = "watchbridge: its delivery keeps failing"
    with AppThread(create_app(runtime, tasks=[task])):
        wait_until(lambda: receiver.titles() == [title, title])
    assert receiver.titles() == [title, title]
    first, reminder = (m["message"] for m in receiver.messages)
    assert "failed 3 times in a row" in first and "failed 3 times" not in reminder


def test_a_crash_alerts_resolved_notice_that_did_not_get_through_is_sent_again(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "HEALTHY_RUN", 1.0)
    task = CrashesForDays(crashes=3)  # a full disk, freed after the third try
    task.name = "delivery"
    runtime = runtime_for(quick_alerts(tmp_path, receiver))
    runtime.task_restart_delay = 0.0
    title = "watchbridge: its delivery keeps failing"
    with AppThread(create_app(runtime, tasks=[task])):
        wait_until(lambda: receiver.titles() == [title])
        receiver.refuse_next()  # the notification service fails the "Resolved" once
        wait_until(lambda: len(receiver.titles()) == 2)
    assert receiver.titles() == [title, f"Resolved: {title}"]


class BrokenClock:
    """A clock that fails once `broken` is set: a bug the webhook route did not expect."""

    def __init__(self) -> None:
        self.broken = False

    def __call__(self) -> float:
        if self.broken:
            raise RuntimeError("the clock broke")
        return time.time()


def jellyfin_config(tmp_path: Path, receiver: AlertReceiver) -> Path:
    """Jellyfin's `alex` mapped, webhook secret `s3cret-hook`, alerts to `receiver`."""
    path = write_config(
        tmp_path,
        f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n'
        "profiles:\n  me:\n    users: {jellyfin: [alex]}\n",
    )
    path.write_text(
        path.read_text().replace("server:\n", "server:\n  webhook_secret: s3cret-hook\n")
    )
    return path


def wait_until(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_an_unexpected_error_on_a_webhook_is_a_500_counted_and_alerted(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    runtime, clock = runtime_for(jellyfin_config(tmp_path, receiver)), BrokenClock()
    runtime.clock = clock
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        clock.broken = True
        body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
        response = httpx.post(f"{app.url}/webhooks/jellyfin/s3cret-hook", content=body)
        metrics = httpx.get(f"{app.url}/metrics").text
        wait_until(lambda: bool(receiver.titles()))
    assert response.status_code == 500
    assert "see the watchbridge log" in response.json()["error"]
    assert 'watchbridge_webhook_events_total{outcome="internal_error",source="jellyfin"} 1.0' in (
        metrics
    )
    assert receiver.titles() == ["watchbridge is refusing Jellyfin webhooks"]


def test_a_webhook_refused_while_another_program_holds_the_database_points_at_it(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    path = jellyfin_config(tmp_path, receiver)
    path.write_text(path.read_text().replace("storage:\n", "storage:\n  busy_timeout: 0.2s\n"))
    with AppThread(create_app(runtime_for(path), extra_routes=webhooks.ROUTES)) as app:
        shell = sqlite3.connect(tmp_path / "watchbridge.db", isolation_level=None)
        shell.execute("BEGIN IMMEDIATE")  # a sqlite3 shell in the middle of a write
        body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
        response = httpx.post(f"{app.url}/webhooks/jellyfin/s3cret-hook", content=body)
        refused = httpx.get(f"{app.url}/api/status").json()["refused_webhooks"]
        shell.close()
    assert response.status_code == 503
    assert "database is locked" in refused[0]["reason"]
    assert "another program" in refused[0]["fix"]


REFUSING = "watchbridge is refusing Jellyfin webhooks"


def test_a_refused_webhooks_alert_is_resolved_once_that_source_is_taken_again(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "REFUSALS_OVER_AFTER", 0.3)
    runtime = runtime_for(jellyfin_config(tmp_path, receiver))
    body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        refused = httpx.post(f"{app.url}/webhooks/jellyfin/wrong-secret", content=body)
        wait_until(lambda: receiver.titles() == [REFUSING])
        time.sleep(0.3)  # no refusal since
        accepted = httpx.post(f"{app.url}/webhooks/jellyfin/s3cret-hook", content=body)
        wait_until(lambda: len(receiver.titles()) == 2)
    assert (refused.status_code, accepted.status_code) == (401, 202)
    assert receiver.titles() == [REFUSING, f"Resolved: {REFUSING}"]
    assert "were not recorded" in str(receiver.messages[1].get("message"))


def test_the_api_says_when_a_refused_source_was_taken_again(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    config = load_config(jellyfin_config(tmp_path, receiver), {})
    clock = FakeClock(time.time())
    runtime = Runtime(
        config=config, metrics=Metrics(), notifier=Notifier(config.alerts, clock=clock), clock=clock
    )
    body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        httpx.post(f"{app.url}/webhooks/jellyfin/wrong-secret", content=body)
        httpx.post(f"{app.url}/webhooks/jellyfin/s3cret-hook", content=body)  # fixed
        before = httpx.get(f"{app.url}/api/status").json()["refused_webhooks"]
        clock.advance(OVER_AFTER + 60)  # and no refusal since
        after = httpx.get(f"{app.url}/api/status").json()["refused_webhooks"]
    assert before[0]["taken_again_at"] is None  # another Jellyfin server may still be refused
    assert after[0]["taken_again_at"] is not None
    # Over, but the plays the refused webhooks carried are still missing: it still says so.
    assert "play lost" in before[0]["warning"]
    assert "were not recorded" in after[0]["warning"]


def test_a_refusal_alert_that_failed_to_go_out_is_not_dropped_by_a_later_accepted_webhook(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "REFUSALS_OVER_AFTER", 0.3)
    config = load_config(jellyfin_config(tmp_path, receiver), {})
    clock = FakeClock(time.time())
    notifier = Notifier(config.alerts, clock=clock)
    runtime = Runtime(config=config, metrics=Metrics(), notifier=notifier)
    body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
    receiver.refuse_next()  # the alert channel is down a moment
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        httpx.post(f"{app.url}/webhooks/jellyfin/wrong-secret", content=body)
        wait_until(lambda: notifier.unsent("webhook_rejects", "jellyfin:unauthorized"))
        time.sleep(0.3)  # no refusal since
        httpx.post(f"{app.url}/webhooks/jellyfin/s3cret-hook", content=body)
        time.sleep(0.3)
        assert notifier.unsent("webhook_rejects", "jellyfin:unauthorized")
        clock.advance(3600)  # the next housekeeping round
        asyncio.run(maintenance.resend_failed_alerts(runtime))
        assert receiver.titles() == [REFUSING]
        httpx.post(f"{app.url}/webhooks/jellyfin/s3cret-hook", content=body)
        wait_until(lambda: len(receiver.titles()) == 2)
    assert receiver.titles() == [REFUSING, f"Resolved: {REFUSING}"]
    assert "were not recorded" in str(receiver.messages[1].get("message"))


def test_metrics_count_an_alert_owed_until_it_gets_through(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    # Alerts cannot tell that they do not get through: a scrape can.
    config = load_config(jellyfin_config(tmp_path, receiver), {})
    clock = FakeClock(time.time())
    notifier = Notifier(config.alerts, clock=clock)
    runtime = Runtime(config=config, metrics=Metrics(), notifier=notifier)
    body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
    receiver.refuse_next()  # the alert channel is down a moment
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        assert "watchbridge_alerts_owed 0.0" in httpx.get(f"{app.url}/metrics").text
        httpx.post(f"{app.url}/webhooks/jellyfin/wrong-secret", content=body)
        wait_until(lambda: notifier.unsent("webhook_rejects", "jellyfin:unauthorized"))
        owed = httpx.get(f"{app.url}/metrics").text
        clock.advance(3600)  # the next housekeeping round sends it again
        asyncio.run(maintenance.resend_failed_alerts(runtime))
        sent = httpx.get(f"{app.url}/metrics").text
    assert receiver.titles() == [REFUSING]
    assert "watchbridge_alerts_owed 1.0" in owed
    assert "watchbridge_alerts_owed 0.0" in sent


def test_webhooks_taken_while_a_refusal_is_recent_resolve_nothing(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    runtime = runtime_for(jellyfin_config(tmp_path, receiver))
    body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        httpx.post(f"{app.url}/webhooks/jellyfin/wrong-secret", content=body)  # one server
        wait_until(lambda: receiver.titles() == [REFUSING])
        httpx.post(f"{app.url}/webhooks/jellyfin/s3cret-hook", content=body)  # the other one
        time.sleep(0.5)
    assert receiver.titles() == [REFUSING]


def test_start_up_warns_of_unusable_alert_urls_and_missing_profiles(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, 'alerts: {urls: ["not-a-url-hunter2"]}\n', port=port)
    service = ServiceProcess(path, port).start()
    service.terminate()
    output = service.output()
    assert "alerts are not sent to alerts.urls[0]: not an Apprise URL" in output
    assert "no profiles are configured: every webhook is answered and ignored" in output
    assert "hunter2" not in output


def test_start_up_warns_of_a_missing_anime_overrides_file_as_check_config_refuses_it(
    tmp_path: Path,
) -> None:
    # check-config refuses it; the service started without a word, and the anime mapping
    # failed on it at the first AniList delivery or link run.
    port = free_port()
    body = "services:\n  anilist: {mapping_overrides: anime-overides.yaml}\n"
    service = ServiceProcess(write_config(tmp_path, body, port=port), port).start()
    service.terminate()
    missing = tmp_path / "anime-overides.yaml"
    assert f"services.anilist.mapping_overrides: {missing} not found" in service.output()


def test_start_up_warns_of_a_profile_that_looks_renamed(tmp_path: Path) -> None:
    port = free_port()
    body = "services: {trakt: {client_id: cid}}\nprofiles: {alexander: {accounts: {trakt: {}}}}\n"
    path = write_config(tmp_path, body, port=port)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.set_cursor("trakt", "alex", "link:plex-trakt", "{}", 0.0)
    service = ServiceProcess(path, port).start()
    service.terminate()
    assert "profile alexander is new to the database" in service.output()


def test_a_storm_of_refused_webhooks_is_one_warning_in_the_log(tmp_path: Path) -> None:
    # A server left with an old secret sends progress webhooks every few seconds, for months.
    port = free_port()
    path = write_config(tmp_path, port=port)
    path.write_text(
        path.read_text().replace("server:\n", "server:\n  webhook_secret: s3cret-hook-long-one\n")
    )
    service = ServiceProcess(path, port).start()
    for _ in range(20):
        httpx.post(f"{service.url}/webhooks/jellyfin/an-old-secret", content=b"{}")
    service.terminate()
    output = service.output()
    assert output.count('msg="webhook refused"') == 1
    assert 'level=warning logger=watchbridge.webhooks msg="webhook refused"' in output


def test_a_server_shared_with_many_friends_tells_each_friend_once_in_the_log(
    tmp_path: Path,
) -> None:
    # More friends playing than the status page lists: each still has its one line, not a
    # line per webhook once the others push it off that list.
    port = free_port()
    path = write_config(tmp_path, "profiles: {me: {users: {generic: [alice]}}}\n", port=port)
    path.write_text(
        path.read_text().replace("server:\n", "server:\n  webhook_secret: s3cret-hook-long-one\n")
    )
    service = ServiceProcess(path, port).start()
    friends = [f"friend{n}" for n in range(KEPT + 5)]
    play = {"event": "played", "item": {"type": "movie", "ids": {"imdb": "tt0113277"}}}
    with httpx.Client(base_url=service.url) as client:
        for _ in range(3):
            for friend in friends:
                answer = client.post(
                    "/webhooks/generic/s3cret-hook-long-one", json=play | {"user": friend}
                )
                assert answer.status_code == 200
    service.terminate()
    output = service.output()
    assert output.count("webhooks of an account no profile lists are ignored") == len(friends)


def test_a_sender_posting_https_to_the_plain_port_is_one_warning_in_the_log(
    tmp_path: Path,
) -> None:
    # A webhook URL pasted with https:// (or a scanner on the LAN): every request is a TLS
    # handshake the HTTP server cannot read, for months.
    port = free_port()
    service = ServiceProcess(write_config(tmp_path, port=port), port).start()
    handshake = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32))
    upgrade = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    for request in [handshake] * 20 + [upgrade] * 20:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            assert sock.recv(1024).startswith(b"HTTP/1.1 ")
    service.terminate()
    output = service.output()
    assert output.count("Invalid HTTP request received.") == 1
    assert output.count("Unsupported upgrade request.") == 1


def test_debug_logging_shows_every_webhook_with_its_outcome(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, "logging: {level: debug}\n", port=port)
    path.write_text(
        path.read_text().replace("server:\n", "server:\n  webhook_secret: s3cret-hook\n")
    )
    service = ServiceProcess(path, port).start()
    httpx.post(f"{service.url}/webhooks/jellyfin/wrong-secret", content=b"{}")
    httpx.post(f"{service.url}/webhooks/jellyfin/s3cret-hook", content=b"{not json")
    service.terminate()
    output = service.output()
    assert "webhook refused" in output and "source=jellyfin" in output
    assert "outcome=unauthorized" in output and "outcome=malformed" in output
    assert "s3cret-hook" not in output and "wrong-secret" not in output


def test_a_start_tells_a_missing_anilist_client_id_at_info_while_the_stored_sign_in_works(
    tmp_path: Path,
) -> None:
    # Each start warned of it for a profile signed in with a token good for months, so a
    # warning that cannot be acted on today came back with every restart.
    port = free_port()
    body = "services:\n  anilist: {}\nprofiles:\n  me: {accounts: {anilist: {}}}\n"
    path = write_config(tmp_path, body, port=port)
    store = Store.open(tmp_path / "watchbridge.db")
    now = time.time()
    store.put_token("anilist", "me", {"access_token": "t", "expires_at": now + 300 * 86400}, now)
    store.close()
    service = ServiceProcess(path, port).start()
    service.terminate()
    said = [line for line in service.output().splitlines() if "client_id is not set" in line]
    assert len(said) == 1, said
    assert "level=info" in said[0] and "profile me is signed in to AniList for now" in said[0]


def test_start_up_warns_of_a_profile_with_nowhere_to_deliver(tmp_path: Path) -> None:
    path = write_config(tmp_path, "profiles:\n  kids:\n    users: {plex: [kid]}\n")
    (warning,) = start_warnings(load_config(path, {}), [])
    assert warning.startswith("profile kids has no account to deliver to")


def test_start_up_warns_of_a_profile_no_webhook_and_no_link_reaches(tmp_path: Path) -> None:
    # A newcomer's profile with its Trakt account but no `users` (and not `default`): every
    # webhook was answered and ignored as an unmapped account while check-config said "OK".
    trakt = "services: {trakt: {client_id: abc}}\n"
    path = write_config(tmp_path, trakt + "profiles:\n  me: {accounts: {trakt: {}}}\n")
    (warning,) = start_warnings(load_config(path, {}), [])
    assert warning.startswith("profile me lists no media-server account under users")
    assert "profiles.me.users" in warning and "default: true" in warning
    # Not for a default profile, nor for one a link syncs (a link reads its accounts).
    for profiles in (
        "profiles:\n  me: {default: true, accounts: {trakt: {}}}\n",
        "profiles:\n  me: {accounts: {trakt: {}, anilist: {}}}\n"
        "links:\n  at: {services: [anilist, trakt]}\n",
    ):
        body = "services: {trakt: {client_id: abc}, anilist: {}}\n" + profiles
        assert start_warnings(load_config(write_config(tmp_path, body), {}), []) == []


SERIALIZD_ONLY = (
    "services: {serializd: {}, jellyfin: {url: 'http://jf:8096', api_key: k}}\n"
    "profiles:\n  me:\n    users: {jellyfin: [alex]}\n"
    "    accounts: {serializd: {email: a@example.com, password: pw}}\n"
)


def test_a_household_without_trakt_is_not_warned_at_every_start_of_its_movies(
    tmp_path: Path,
) -> None:
    # A choice, not a fault: check-config's summary and the status page say it instead.
    assert start_warnings(load_config(write_config(tmp_path, SERIALIZD_ONLY), {}), []) == []


def test_copied_nowhere_names_what_no_account_of_a_profile_is_sent(tmp_path: Path) -> None:
    def gaps(accounts: str, users: str = "users: {jellyfin: [alex]}") -> list[str]:
        text = (
            "services: {trakt: {client_id: c}, serializd: {}, anilist: {client_id: '1'}}\n"
            f"profiles:\n  me: {{{users}, accounts: {{{accounts}}}}}\n"
        )
        config = load_config(write_config(tmp_path, text), {})
        return copied_nowhere(config, config.profiles["me"])

    serializd = "serializd: {email: a@b.c, password: pw}"
    assert gaps("trakt: {}") == []
    assert gaps(serializd) == ["movies"]
    assert gaps("anilist: {}") == ["episodes other than anime", "movies other than anime"]
    assert gaps(f"{serializd}, anilist: {{}}") == ["movies other than anime"]
    assert gaps(serializd, users="default: false") == []  # there for a link only


def test_start_up_warns_of_empty_alert_and_link_kinds(tmp_path: Path) -> None:
    config = (
        "alerts:\n  urls: ['json://127.0.0.1:1/x']\n  kinds: []\n"
        "services:\n  trakt: {client_id: c}\n  plex: {token: t, url: 'http://nas:32400'}\n"
        "profiles: {me: {accounts: {plex: {}, trakt: {}}}}\n"
        "links:\n  a:\n    services: [plex, trakt]\n    kinds: []\n"
    )
    warnings = start_warnings(load_config(write_config(tmp_path, config), {}), [])
    assert [w.split(":")[0] for w in warnings] == [
        "alerts.kinds is empty",
        "links.a.kinds is empty",
    ]


def test_start_up_warns_of_a_short_webhook_secret(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("server:\n", "server:\n  webhook_secret: q7\n"))
    warnings = start_warnings(load_config(path, {}), [])
    (warning,) = [w for w in warnings if w.startswith("server.webhook_secret")]
    assert "shorter than 16 characters" in warning and "q7" not in warning
    assert Redactor()(warning) == warning  # as the log shows it: nothing taken for a secret


def test_start_up_warns_of_a_trusted_network_holding_a_docker_gateway(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    server = "server:\n  api_token: tok-123456\n  trusted_proxies: [%s]\n"
    text = path.read_text()
    path.write_text(text.replace("server:\n", server % "172.18.0.0/16, 172.30.32.2, fd00::/64"))
    warnings = [w for w in start_warnings(load_config(path, {}), []) if "trusted_proxies" in w]
    assert len(warnings) == 2
    assert warnings[0].startswith("server.trusted_proxies: 172.18.0.0/16 holds 172.18.0.1,")
    assert "skip server.api_token" in warnings[0] and "tok-123456" not in warnings[0]
    assert warnings[1].startswith("server.trusted_proxies: fd00::/64 holds fd00::1,")
    # A proxy named by its own address, loopback, or no token to skip: nothing to say.
    path.write_text(text.replace("server:\n", server % "172.30.32.2, 172.18.0.7/32, 127.0.0.0/8"))
    assert not [w for w in start_warnings(load_config(path, {}), []) if "trusted_proxies" in w]
    path.write_text(text.replace("server:\n", "server:\n  trusted_proxies: [172.18.0.0/16]\n"))
    assert not [w for w in start_warnings(load_config(path, {}), []) if "trusted_proxies" in w]


def test_start_up_in_the_image_warns_when_its_healthcheck_asks_another_port(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, port=9000)
    image = {"WATCHBRIDGE_IMAGE": "1"}
    warnings = start_warnings(load_config(path, {}), [], image)
    assert any("healthcheck asks port 8765" in w and "WATCHBRIDGE_PORT=9000" in w for w in warnings)
    told = {**image, "WATCHBRIDGE_PORT": "9000"}
    assert not any("healthcheck" in w for w in start_warnings(load_config(path, {}), [], told))
    assert not any("healthcheck" in w for w in start_warnings(load_config(path, {}), [], {}))


@pytest.mark.parametrize(
    ("ports", "told"),
    [
        ("port: 8099", "server.webhook_port is not set: the app publishes port 8765 alone"),
        ("port: 8080\n  webhook_port: 8765", "server.port is 8080: the app's sidebar page"),
        ("port: 8765", "server.port is 8765: the app's sidebar page"),
    ],
)
def test_the_home_assistant_apps_own_yaml_is_told_the_ports_the_app_fixes(
    tmp_path: Path, ports: str, told: str
) -> None:
    # The app cannot set WATCHBRIDGE_PORT, and its watchdog restarts it while 8765 is silent.
    path = tmp_path / "watchbridge.yaml"
    path.write_text(f"server:\n  {ports}\nstorage:\n  path: {tmp_path / 'w.db'}\n")
    app = {"WATCHBRIDGE_IMAGE": "1", APP_ENV: FROM_OWN_YAML}
    (warning,) = [w for w in start_warnings(load_config(path, {}), [], app) if "port" in w]
    assert told in warning
    assert "WATCHBRIDGE_PORT" not in warning
    path.write_text(
        f"server:\n  port: 8099\n  webhook_port: 8765\nstorage:\n  path: {tmp_path / 'w.db'}\n"
    )
    assert not [w for w in start_warnings(load_config(path, {}), [], app) if "port" in w]


def test_start_up_warns_of_a_profile_taking_plex_and_tautulli_webhooks(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "services: {trakt: {client_id: abc}}\n"
        "profiles:\n  me:\n    users: {plex: ['1'], tautulli: ['12345']}\n"
        "    accounts: {trakt: {}}\n",
    )
    (warning,) = start_warnings(load_config(path, {}), [])
    assert "both Plex's and Tautulli's webhooks" in warning


def test_start_up_warns_of_collection_removals_on_a_link_without_the_collection_kind(
    tmp_path: Path,
) -> None:
    path = write_config(
        tmp_path,
        "services:\n  trakt: {client_id: c}\n  plex: {token: t, url: 'http://nas:32400'}\n"
        "profiles:\n  me:\n    accounts: {trakt: {}, plex: {}}\n"
        "links:\n  a:\n    services: [plex, trakt]\n    collection_removals: true\n",
    )
    warnings = start_warnings(load_config(path, {}), [])
    assert any(w.startswith("links.a.collection_removals does nothing") for w in warnings)


def test_port_in_use_gives_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = ServiceProcess(write_config(tmp_path, port=port), port).start(wait=False)
        assert service.proc is not None
        code = service.proc.wait(START_TIMEOUT)  # a start, busy machine or not
        output = service.output()
    assert code != 0
    assert f"error: server.port {port}: address already in use" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("env", [{}])
def test_logs_never_contain_the_webhook_secret(tmp_path: Path, env: dict[str, str]) -> None:
    port = free_port()
    path = write_config(tmp_path, port=port)
    path.write_text(
        path.read_text().replace(
            "server:\n", "server:\n  webhook_secret: hunter2-hook-secret\n  api_token: tok-abcdef\n"
        )
    )
    service = ServiceProcess(path, port, env=env).start()
    httpx.get(f"{service.url}/api/status?token=tok-abcdef")
    service.terminate()
    output = service.output()
    assert "hunter2-hook-secret" not in output
    assert "tok-abcdef" not in output


def test_api_status_says_what_holds_deliveries_back_and_why_a_link_did_not_run(
    tmp_path: Path,
) -> None:
    from watchbridge.store import NewOutboxRow, Store

    path = write_config(tmp_path, "")
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 1.0)
        (item,) = store.claim("test", 1.0, 1, ["trakt"])
        store.hold(item.id, 1.0, 2.0, "sign in again: `watchbridge auth trakt --profile me`")
        run = store.start_run("a", 1.0)
        assert run is not None
        store.finish_run(run, 2.0, "failed", {}, 3, "serializd: login refused")
    with AppThread(create_app(runtime_for(path))) as app:
        status = httpx.get(f"{app.url}/api/status").json()
    assert status["held"] == [
        {"target": "trakt", "profile": "me", "rows": 1, "next_at": 2.0,
         "reason": "sign in again: `watchbridge auth trakt --profile me`"}
    ]  # fmt: skip
    assert status["links"][0]["error"] == "serializd: login refused"
    assert status["unmatched"] == 0


def test_stored_error_texts_are_shown_redacted_on_the_page_and_in_the_api(
    tmp_path: Path,
) -> None:
    # A service's message stored as a row's or a run's error may quote a URL with a key or
    # the webhook path: the page and the API mask it as the log does.
    from watchbridge.store import NewOutboxRow, Store

    path = write_config(
        tmp_path,
        "services:\n  trakt: {client_id: cid, client_secret: cs-7731x}\n  serializd: {}\n"
        "profiles:\n  me:\n    accounts: {trakt: {}, serializd: {email: a@b.c, password: pw}}\n"
        "links:\n  a: {services: [trakt, serializd]}\n",
    )
    with Store.open(tmp_path / "watchbridge.db") as store:
        generated = webhook_secret(load_config(path, {}), store, 1.0)
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 1.0)
        (item,) = store.claim("test", 1.0, 1, ["trakt"])
        store.hold(item.id, 1.0, 2.0, "trakt: refused client_secret cs-7731x")
        run = store.start_run("a", 1.0)
        assert run is not None
        error = f"GET /webhooks/plex/{generated} and http://jf.local/Items?apikey=k9k9k9k9: 500"
        store.finish_run(run, 2.0, "failed", {}, 3, error)
    with AppThread(create_app(runtime_for(path), extra_routes=statuspage.ROUTES)) as app:
        api = httpx.get(f"{app.url}/api/status").text
        page = httpx.get(f"{app.url}/").text
    for shown in (api, page):
        assert "cs-7731x" not in shown and generated not in shown and "k9k9k9k9" not in shown
        assert "trakt: refused client_secret ********" in shown
        assert "apikey=********" in shown


def test_api_status_says_when_each_link_last_went_through(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")
    with Store.open(tmp_path / "watchbridge.db") as store:
        for started, outcome in [(1.0, "ok"), (5.0, "failed")]:
            run = store.start_run("a", started)
            assert run is not None
            store.finish_run(run, started + 1.0, outcome, {}, 3, "serializd: login refused")
        run = store.start_run("b", 1.0)
        assert run is not None
        store.finish_run(run, 2.0, "failed", {}, 3, "serializd: login refused")
    with AppThread(create_app(runtime_for(path))) as app:
        links = httpx.get(f"{app.url}/api/status").json()["links"]
    assert [(link["link"], link["last_success_at"]) for link in links] == [("a", 2.0), ("b", None)]


def test_metrics_count_the_deliveries_waiting_for_ids(tmp_path: Path) -> None:
    from watchbridge.store import NewOutboxRow, Store

    path = write_config(tmp_path, "")
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 1.0)
        (item,) = store.claim("test", 1.0, 1, ["trakt"])
        store.retry_later(item.id, 1.0, 3601.0, "unmatched: Trakt has no id for Heat yet")
    with AppThread(create_app(runtime_for(path))) as app:
        text = httpx.get(f"{app.url}/metrics").text
    assert 'watchbridge_unmatched{target="trakt"} 1.0' in text


def test_a_plex_household_is_not_told_its_plex_plays_of_movies_are_kept_nowhere(
    tmp_path: Path,
) -> None:
    # Review s32 (4ab3aba): a Plex-only household without Trakt, its Plex account linked to
    # Serializd. Its Plex plays of movies stay in the Plex account they were watched with (and
    # the profile's own accounts.plex); "kept nowhere" at every start and in check-config is
    # a false alarm for a valid setup.
    config = (
        "services:\n  plex: {url: 'http://plex.local:32400', token: tok}\n  serializd: {}\n"
        "profiles:\n  me:\n    users: {plex: [alice]}\n"
        "    accounts: {plex: {}, serializd: {email: a@example.com, password: pw}}\n"
        "links:\n  plex-serializd: {services: [plex, serializd]}\n"
    )
    warnings = start_warnings(load_config(write_config(tmp_path, config), {}), [])
    assert not [w for w in warnings if "kept nowhere" in w]


def test_metrics_say_how_long_the_oldest_queued_delivery_has_waited(tmp_path: Path) -> None:
    # A queue that stops moving (a target held for days) is worth an alert rule: the depth
    # alone cannot tell a busy queue from a stuck one.
    from watchbridge.store import NewOutboxRow, Store

    path = write_config(tmp_path, "")
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 1_000.0)
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k2", "i2")], 5_000.0)
    runtime = runtime_for(path)
    runtime.clock = lambda: 8_200.0
    with AppThread(create_app(runtime)) as app:
        text = httpx.get(f"{app.url}/metrics").text
    assert 'watchbridge_outbox_oldest_pending_age_seconds{target="trakt"} 7200.0' in text


TRAKT_AND_SERIALIZD = (
    "services:\n  trakt: {client_id: id}\n  serializd: {}\n"
    "profiles:\n  me:\n    accounts: {trakt: {}, serializd: {email: a@example.com, password: pw}}\n"
)


def test_metrics_show_the_queue_of_each_target_apart(tmp_path: Path) -> None:
    # Trakt down for a day while Serializd flows: a sum over both cannot say which is stuck,
    # nor which one's sign-in the waiting rows need.
    from watchbridge.store import NewOutboxRow, Settlement, Store

    path = write_config(tmp_path, TRAKT_AND_SERIALIZD)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue(
            [NewOutboxRow("trakt", "me", "play", {}, f"k{n}", f"i{n}") for n in range(3)], 1_000.0
        )
        store.enqueue([NewOutboxRow("serializd", "me", "play", {}, "s1", "s1")], 5_000.0)
        held, dead, _ = store.claim("test", 5_000.0, 3, ["trakt"])
        store.settle(
            5_000.0,
            [
                Settlement(held.id, "pending", 9e9, "run `watchbridge auth trakt`", False, True),
                Settlement(dead.id, "dead", None, "gave up"),
            ],
        )
    runtime = runtime_for(path)
    runtime.clock = lambda: 8_200.0
    with AppThread(create_app(runtime)) as app:
        text = httpx.get(f"{app.url}/metrics").text
    for line in (
        'watchbridge_outbox_depth{status="pending",target="trakt"} 1.0',
        'watchbridge_outbox_depth{status="inflight",target="trakt"} 1.0',
        'watchbridge_outbox_depth{status="pending",target="serializd"} 1.0',
        'watchbridge_dead_letters{target="trakt"} 1.0',
        'watchbridge_dead_letters{target="serializd"} 0.0',
        'watchbridge_outbox_waiting_for_sign_in{target="trakt"} 1.0',
        'watchbridge_outbox_waiting_for_sign_in{target="serializd"} 0.0',
        'watchbridge_outbox_oldest_pending_age_seconds{target="trakt"} 7200.0',
        'watchbridge_outbox_oldest_pending_age_seconds{target="serializd"} 3200.0',
    ):
        assert line in text, line


def test_metrics_show_each_configured_target_at_zero_when_none_is_queued(tmp_path: Path) -> None:
    # A sum of no series is no data, not 0, and an alert on a series that is not there cannot
    # tell "nothing queued" from "not scraped".
    with AppThread(create_app(runtime_for(write_config(tmp_path, TRAKT_AND_SERIALIZD)))) as app:
        text = httpx.get(f"{app.url}/metrics").text
    for target in ("trakt", "serializd"):
        assert f'watchbridge_outbox_oldest_pending_age_seconds{{target="{target}"}} 0.0' in text
        assert f'watchbridge_dead_letters{{target="{target}"}} 0.0' in text
        assert f'watchbridge_outbox_depth{{status="pending",target="{target}"}} 0.0' in text


def test_metrics_say_when_each_configured_link_last_went_through(tmp_path: Path) -> None:
    # A link failing for days is worth an alert rule (`time() - ... > 86400`): the run counters
    # start again at every restart, the time of the last run that went through does not.
    config = (
        "services:\n  plex: {url: 'http://plex.local:32400', token: tok}\n  serializd: {}\n"
        "profiles:\n  me:\n    users: {plex: [alice]}\n"
        "    accounts: {plex: {}, serializd: {email: a@example.com, password: pw}}\n"
        "links:\n  plex-serializd: {services: [plex, serializd]}\n"
    )
    path = write_config(tmp_path, config)
    with Store.open(tmp_path / "watchbridge.db") as store:
        for link, started, outcome in [
            ("plex-serializd", 1_000.0, "ok"),
            ("plex-serializd", 2_000.0, "held"),  # went through; removals wait for the user
            ("plex-serializd", 3_000.0, "failed"),
            ("removed-link", 1_000.0, "ok"),  # no longer in the config: no series of its own
        ]:
            run = store.start_run(link, started)
            assert run is not None
            store.finish_run(run, started + 100.0, outcome, {}, 0)
    with AppThread(create_app(runtime_for(path))) as app:
        text = httpx.get(f"{app.url}/metrics").text
    assert 'watchbridge_sync_last_success_timestamp_seconds{link="plex-serializd"} 2100.0' in text
    assert "removed-link" not in text
