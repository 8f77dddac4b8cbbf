"""Signing in to Trakt from the status page: a Home Assistant app's user has its sidebar page
and its log tab, no terminal for `watchbridge auth trakt`. The page runs behind ingress, under
a path prefix: its form, links and redirect are relative."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, write_config
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime, create_app
from watchbridge.config import load_config
from watchbridge.metrics import Metrics
from watchbridge.statuspage import ROUTES
from watchbridge.store import NewOutboxRow, Store

# Where Home Assistant's ingress serves the page: the browser resolves every link against it.
INGRESS = "http://homeassistant.local:8123/api/hassio_ingress/Xy12abc/"


def household(tmp_path: Path, trakt: FakeTrakt) -> Runtime:
    """The config the app options make: one profile, `household`, with a Trakt account."""
    path = write_config(
        tmp_path,
        f"services:\n  trakt:\n    client_id: {CLIENT_ID}\n"
        f"    api_url: {trakt.url}\n    auth_url: {trakt.url}\n"
        "profiles:\n  household:\n    users: {plex: ['1']}\n    accounts: {trakt: {}}\n",
    )
    config = load_config(path, {})
    return Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))


def page_until(url: str, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        page = httpx.get(url).text
        if text in page or time.monotonic() > deadline:
            return page
        time.sleep(0.05)


def test_trakt_is_signed_in_from_the_status_page_with_the_code_it_shows(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.device_interval = 0
    runtime = household(tmp_path, trakt)
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        with Store.open(tmp_path / "watchbridge.db") as store:  # a play that waits for it
            now = time.time()
            store.enqueue([NewOutboxRow("trakt", "household", "play", {}, "k1", "i1")], now)
            (item,) = store.claim("test", now, 1, ["trakt"])
            reason = "not signed in: run `watchbridge auth trakt --profile household`"
            store.hold(item.id, now, now + 900, reason)
        page = httpx.get(f"{app.url}/").text
        (action,) = re.findall(r'<form method="post" action="([^"]+)">', page)
        assert action == "signin/trakt?profile=household"  # relative: works behind ingress
        answer = httpx.post(f"{app.url}/{action}", follow_redirects=False)
        assert answer.status_code == 303
        # Back to the page, from the ingress path too.
        posted_to = urllib.parse.urljoin(INGRESS, action)
        assert urllib.parse.urljoin(posted_to, answer.headers["location"]) == INGRESS
        assert urllib.parse.urljoin(f"{app.url}/{action}", answer.headers["location"]) == (
            f"{app.url}/"
        )
        page = page_until(f"{app.url}/", "enter the code")
        assert "https://trakt.tv/activate" in page
        assert '<meta http-equiv="refresh"' in page  # it looks again by itself
        (code,) = re.findall(r"enter the code <strong><code>([^<]+)</code>", page)
        assert "<form" not in page  # no second sign-in while this one waits
        trakt.approve_device(code)
        page = page_until(f"{app.url}/", "is signed in")
        assert "profile household is signed in. Trakt user sean approved the code." in page
        assert "1 deliveries of profile household to Trakt waited for this sign-in" in page
        assert '<meta http-equiv="refresh"' not in page
        assert "<td>works</td>" in page and "<form" not in page
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.get_token("trakt", "household") is not None
        assert store.next_due(["trakt"]) <= time.time()


def test_a_sign_in_denied_on_trakt_says_so_on_the_page_and_offers_the_button_again(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.device_interval = 0
    runtime = household(tmp_path, trakt)
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        httpx.post(f"{app.url}/signin/trakt?profile=household")
        page = page_until(f"{app.url}/", "enter the code")
        (code,) = re.findall(r"enter the code <strong><code>([^<]+)</code>", page)
        trakt.deny_device(code)
        page = page_until(f"{app.url}/", "the sign-in was denied on Trakt")
    assert '<p class="bad">not signed in: Trakt: the sign-in was denied on Trakt</p>' in page
    assert 'action="signin/trakt?profile=household"' in page


def test_a_sign_in_form_posted_by_another_site_starts_nothing(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # With no api_token (a compose set-up on a home network), a page elsewhere could post it.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    runtime = household(tmp_path, trakt)
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        answer = httpx.post(
            f"{app.url}/signin/trakt?profile=household", headers={"sec-fetch-site": "cross-site"}
        )
        unknown = httpx.post(f"{app.url}/signin/trakt?profile=nobody")
        page = httpx.get(f"{app.url}/").text
    assert answer.status_code == 403
    assert unknown.status_code == 400 and "profile 'nobody' has no Trakt account" in unknown.text
    assert "enter the code" not in page and not trakt.devices


def test_every_link_on_the_page_stays_under_the_ingress_path(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path), {})
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        page = httpx.get(f"{app.url}/").text
        targets = re.findall(r'(?:href|action|src)="([^"]+)"', page)
        for target in targets:
            assert urllib.parse.urljoin(INGRESS, target).startswith(INGRESS), target
            assert httpx.get(urllib.parse.urljoin(f"{app.url}/", target)).status_code == 200
    assert targets  # api/status and metrics


def test_a_refusal_quoting_the_client_secret_shows_it_nowhere_on_the_page(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Trakt's 401 to the code's poll names the app's client secret (the config's): the page
    # tells the refusal, as the log and `watchbridge auth trakt` do, without the secret.
    canary = "SECRET-canary-123-client"
    trakt = start_fake(FakeTrakt(client_secret=canary))
    assert isinstance(trakt, FakeTrakt)
    trakt.device_interval = 0
    path = write_config(
        tmp_path,
        f"services:\n  trakt:\n    client_id: {CLIENT_ID}\n    client_secret: {canary}\n"
        f"    api_url: {trakt.url}\n    auth_url: {trakt.url}\n"
        "profiles:\n  household:\n    users: {plex: ['1']}\n    accounts: {trakt: {}}\n",
    )
    config = load_config(path, {})
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    said = {"error": f"invalid_client {canary}"}
    trakt.fail_next(1, 401, body=said, route="POST /oauth/device/token")
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        httpx.post(f"{app.url}/signin/trakt?profile=household")
        page = page_until(f"{app.url}/", "refused the app")
    assert "Trakt refused the app&#x27;s credentials (invalid_client ********)" in page
    assert canary not in page
