"""The status page's forms (sign in to Trakt, retry the dead letters, read and apply a first
sync for review) change state, and with no api_token the token guard lets any request
through: a form another web site posts through the user's browser must do nothing, from
browsers old and new, while the page's own forms work directly, behind Home Assistant's
ingress and behind a reverse proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import FakeTrakt
from tests.harness import AppThread, sign_in_trakt
from tests.test_page_sign_in import household, page_until
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime, create_app
from watchbridge.config import load_config
from watchbridge.metrics import Metrics
from watchbridge.statuspage import ROUTES
from watchbridge.store import Store

SIGN_IN = "signin/trakt?profile=household"


@pytest.mark.parametrize(
    "headers",
    [
        # A browser from before Sec-Fetch-* (Safari before 16.4): only Origin names the poster.
        {"origin": "http://evil.example"},
        # Another service on the same machine, another port: the same site, not the same origin.
        {"origin": "http://127.0.0.1:9"},
        # A sandboxed frame or a data: page.
        {"origin": "null"},
        # Firefox before 70 sent no Origin with a form, only the posting page's address.
        {"referer": "http://evil.example/page.html"},
        # The same port on another host name a proxy forwarded for: still another site.
        {"origin": "http://evil.example", "x-forwarded-host": "wb.home.example"},
    ],
)
def test_a_form_an_old_browser_posts_from_another_site_starts_nothing(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], headers: dict[str, str]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    with AppThread(create_app(household(tmp_path, trakt), extra_routes=ROUTES)) as app:
        answer = httpx.post(f"{app.url}/{SIGN_IN}", headers=headers)
        retry = httpx.post(f"{app.url}/deadletters/retry", headers=headers)
        review = [
            httpx.post(f"{app.url}/review/{form}?link=any&plan=0", headers=headers)
            for form in ("read", "apply")
        ]
        page = httpx.get(f"{app.url}/").text
    assert answer.status_code == 403, answer.text
    assert "only watchbridge's own status page posts its forms" in answer.json()["error"]
    assert retry.status_code == 403
    assert [one.status_code for one in review] == [403, 403]
    assert "Asking Trakt for a code" not in page and not trakt.calls("POST", "/oauth/device/code")


def test_a_form_whose_referer_is_no_address_is_refused_not_an_error(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    with AppThread(create_app(household(tmp_path, trakt), extra_routes=ROUTES)) as app:
        answer = httpx.post(f"{app.url}/deadletters/retry", headers={"referer": "http://[::1/"})
    assert answer.status_code == 403, answer.text
    assert "only watchbridge's own status page posts its forms" in answer.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [
        {
            "sec-fetch-site": "same-origin",
            "sec-fetch-mode": "navigate",
            "sec-fetch-dest": "document",
        },
        {},  # curl
        {"origin": "{url}"},  # an old browser on the page itself
        {"referer": "{url}/"},  # an older one, naming the page only in Referer
        # An old browser through Home Assistant's ingress or a reverse proxy naming the host.
        {
            "origin": "http://homeassistant.local:8123",
            "x-forwarded-host": "homeassistant.local:8123",
        },
        {"origin": "https://wb.home.example", "x-forwarded-host": "wb.home.example"},
    ],
)
def test_the_pages_own_form_starts_the_sign_in(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], headers: dict[str, str]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    with AppThread(create_app(household(tmp_path, trakt), extra_routes=ROUTES)) as app:
        sent = {name: value.format(url=app.url) for name, value in headers.items()}
        answer = httpx.post(f"{app.url}/{SIGN_IN}", headers=sent, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        retry = httpx.post(f"{app.url}/deadletters/retry", headers=sent, follow_redirects=False)
        assert retry.status_code == 303, retry.text


def test_a_working_sign_in_is_not_started_again_from_a_post(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # The page shows no button then; a post anyway (DNS rebinding, anyone on the network with
    # no api_token) would show a code whose approval swaps the account the plays go to.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    runtime = household(tmp_path, trakt)
    with Store.open(tmp_path / "watchbridge.db") as store:
        sign_in_trakt(store, trakt, "household")
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        assert f'action="{SIGN_IN}"' not in httpx.get(f"{app.url}/").text
        answer = httpx.post(f"{app.url}/{SIGN_IN}")
        page = httpx.get(f"{app.url}/").text
    assert answer.status_code == 409
    assert answer.json()["error"] == (
        "profile household's Trakt sign-in works, so the page does not sign it in again; to "
        "sign in to another Trakt account, run `watchbridge auth trakt --profile household`"
    )
    assert "Asking Trakt for a code" not in page and not trakt.calls("POST", "/oauth/device/code")


def test_presses_while_trakt_asks_for_a_pause_ask_trakt_nothing(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # A 429 with a Retry-After longer than a request waits inline ends the sign-in at once;
    # each press asked Trakt again, and tripping its limits blocks every call for minutes.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.fail_next(5, 429, {"retry-after": "300"}, route="POST /oauth/device/code")
    with AppThread(create_app(household(tmp_path, trakt), extra_routes=ROUTES)) as app:
        httpx.post(f"{app.url}/{SIGN_IN}")
        page = page_until(f"{app.url}/", "not signed in: Trakt: rate limited")
        assert "the button is back in 4 min" in page or "the button is back in 5 min" in page
        assert f'action="{SIGN_IN}"' not in page
        for _ in range(3):
            assert httpx.post(f"{app.url}/{SIGN_IN}", follow_redirects=False).status_code == 303
        page = httpx.get(f"{app.url}/").text
    assert len(trakt.calls("POST", "/oauth/device/code")) == 1
    assert "not signed in: Trakt: rate limited" in page and "the button is back in" in page


def test_a_verification_url_that_is_no_web_address_is_shown_but_not_linked(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.verification_url = "javascript:alert(document.domain)"
    with AppThread(create_app(household(tmp_path, trakt), extra_routes=ROUTES)) as app:
        httpx.post(f"{app.url}/{SIGN_IN}")
        page = page_until(f"{app.url}/", "enter the code")
    assert "Open javascript:alert(document.domain) and enter the code" in page
    assert 'href="javascript:' not in page


def test_behind_the_ingress_proxy_the_form_works_and_other_sites_stay_out(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # The Home Assistant app: a token nobody knows, the ingress proxy trusted. The page sits
    # in a frame of Home Assistant's own origin; trusting the proxy skips the token only.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    household(tmp_path, trakt)  # writes the config
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            "server:\n", "server:\n  api_token: tok-123456\n  trusted_proxies: [127.0.0.1]\n"
        ),
        encoding="utf-8",
    )
    config = load_config(path, {})
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    framed = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "navigate"}
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        other = httpx.post(
            f"{app.url}/{SIGN_IN}", headers={**framed, "sec-fetch-site": "cross-site"}
        )
        answer = httpx.post(
            f"{app.url}/{SIGN_IN}",
            headers={**framed, "sec-fetch-dest": "iframe"},
            follow_redirects=False,
        )
        page = page_until(f"{app.url}/", "enter the code")
    assert other.status_code == 403
    assert answer.status_code == 303 and answer.headers["location"] == "../"
    assert "enter the code" in page
