"""With no api_token, the status page and the API answer only a Host no DNS-rebinding page can
have: a web page on attacker.example whose name now points at this machine is the same origin
as the page to the browser, so it could open the page in a window of its own, read it, press
"Sign in to Trakt here" and approve the code with its own account. IP addresses, single names,
local suffixes and `server.allowed_hosts` pass; a trusted proxy and the token decide as before;
webhooks, /healthz and /metrics never look at the Host."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import FakeTrakt
from tests.harness import AppThread, write_config
from tests.test_page_sign_in import household
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime, create_app
from watchbridge.config import load_config, parse_config
from watchbridge.errors import ConfigError
from watchbridge.metrics import Metrics
from watchbridge.statuspage import ROUTES
from watchbridge.wiring import build_app, build_runtime

SECRET = "rebinding-secret-123"
REBOUND = "attacker.example"
# A browser's own tab on the page (the rebinding page's pop-up is one too).
TAB = {"sec-fetch-site": "none", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}
BROWSER = {**TAB, "accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def runtime_for(path: Path) -> Runtime:
    config = load_config(path, {})
    return Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))


def with_server(path: Path, lines: str) -> Path:
    """The config at `path` with `lines` (indented keys) added under `server:`."""
    path.write_text(path.read_text(encoding="utf-8").replace("server:\n", f"server:\n{lines}"))
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    """The whole service (webhooks, page, API), no api_token, one name allowed."""
    path = tmp_path_factory.mktemp("rebinding") / "wb.db"
    config = parse_config(
        f"server:\n  webhook_secret: {SECRET}\n"
        "  allowed_hosts: [wb.home.example, '*.tail1234.ts.net']\n"
        f"storage: {{path: {path}}}\nprofiles: {{me: {{default: true}}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    with AppThread(build_app(build_runtime(config))) as thread:
        yield thread


def as_host(app: AppThread, name: str) -> dict[str, str]:
    return {"host": f"{name}:{app.port}"}


@pytest.mark.parametrize("path", ["/", "/api/status", "/review?link=any"])
def test_a_rebound_name_gets_403_saying_what_to_do(service: AppThread, path: str) -> None:
    answer = httpx.get(f"{service.url}{path}", headers={**as_host(service, REBOUND), **TAB})
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert f"not answered under the name {REBOUND}" in error
    assert "server.allowed_hosts" in error and "server.api_token" in error
    assert "\n" not in error


def test_a_browser_gets_the_refusal_as_a_page(service: AppThread) -> None:
    answer = httpx.get(f"{service.url}/", headers={**as_host(service, REBOUND), **BROWSER})
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("text/html")
    assert "<code>server.allowed_hosts</code>" in answer.text
    assert "color-scheme:light dark" in answer.text  # the status page's style
    # Nothing of the status: no button, no webhook secret.
    assert "Sign in" not in answer.text and SECRET not in answer.text


@pytest.mark.parametrize("name", ["tower.tail9876.ts.net", "wb.example.com"])
def test_the_refusal_leads_a_browser_to_a_page_it_can_open(service: AppThread, name: str) -> None:
    # A Tailscale MagicDNS name (ts.net is a public suffix) or a name of the user's own DNS:
    # listing it works once watchbridge restarts. server.api_token alone would answer the
    # browser 401 under every name (it cannot send the token): not a way to the page.
    answer = httpx.get(f"{service.url}/", headers={**as_host(service, name), **BROWSER})
    assert answer.status_code == 403
    text = answer.text
    assert "add it under <code>server.allowed_hosts</code> and restart watchbridge" in text
    assert "or set <code>server.api_token</code>)" not in text
    assert (
        "or set <code>server.api_token</code> for scripts that send it (a browser then gets the"
        " page only through a proxy that adds it)" in text
    )


def test_a_name_with_markup_is_told_escaped(service: AppThread) -> None:
    answer = httpx.get(f"{service.url}/", headers={"host": "<b>x</b>.example", **BROWSER})
    assert answer.status_code in (400, 403)
    assert "<b>x</b>" not in answer.text


@pytest.mark.parametrize(
    "form", ["signin/trakt?profile=me", "deadletters/retry", "review/read?link=any"]
)
def test_a_form_posted_under_a_rebound_name_does_nothing(service: AppThread, form: str) -> None:
    # The rebinding page's pop-up submits it: the same origin, so from_this_site lets it by.
    same_origin = {
        **TAB,
        "sec-fetch-site": "same-origin",
        "origin": f"http://{REBOUND}:{service.port}",
    }
    answer = httpx.post(
        f"{service.url}/{form}",
        headers={**as_host(service, REBOUND), **same_origin},
        follow_redirects=False,
    )
    assert answer.status_code == 403, answer.text
    assert "server.allowed_hosts" in answer.json()["error"]


@pytest.mark.parametrize(
    "name",
    [
        "127.0.0.1",
        "192.168.1.10",
        "[::1]",
        "[fd00::10]",
        "localhost",
        "tower",
        "HomeAssistant",
        "tower.",
        "nas.local",
        "nas.lan",
        "nas.home",
        "nas.home.arpa",
        "nas.internal",
        "nas.localdomain",
        "wb.localhost",
        "wb.test",
        "wb.home.example",
        "WB.Home.Example",
        "nas.tail1234.ts.net",
    ],
)
def test_a_name_no_rebinding_page_can_have_is_answered(service: AppThread, name: str) -> None:
    for path in ("/", "/api/status"):
        answer = httpx.get(f"{service.url}{path}", headers={**as_host(service, name), **TAB})
        assert answer.status_code == 200, (name, path, answer.text)


@pytest.mark.parametrize(
    "name",
    [
        "home.example",  # only wb.home.example is listed
        "wb.home.example.attacker.example",
        "tail1234.ts.net",  # the wildcard names those under it
        "192.168.1.10.nip.io",  # a public name for a LAN address
        "evil-local.example",
    ],
)
def test_names_near_the_allowed_ones_are_refused(service: AppThread, name: str) -> None:
    answer = httpx.get(f"{service.url}/api/status", headers=as_host(service, name))
    assert answer.status_code == 403, (name, answer.text)


def test_webhooks_health_and_metrics_answer_any_name(service: AppThread) -> None:
    rebound = as_host(service, REBOUND)
    play = {
        "event": "start",
        "user": "alice",
        "item": {"type": "movie", "ids": {"imdb": "tt0113277"}},
    }
    hook = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=play, headers=rebound)
    assert hook.status_code == 202, hook.text
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{service.url}{path}", headers=rebound).status_code == 200, path


def test_a_trusted_proxy_passes_any_name(tmp_path: Path) -> None:
    # Home Assistant's ingress and a reverse proxy pass the browser's own Host on
    # (homeassistant.local:8123, a Nabu Casa address, the proxy's public name).
    path = with_server(write_config(tmp_path), "  trusted_proxies: [127.0.0.1]\n")
    with AppThread(create_app(runtime_for(path), extra_routes=ROUTES)) as app:
        for name in (REBOUND, "abcdef.ui.nabu.casa"):
            for page in ("/", "/api/status"):
                answer = httpx.get(f"{app.url}{page}", headers=as_host(app, name))
                assert answer.status_code == 200, (name, page)


def test_with_an_api_token_the_token_decides_not_the_name(tmp_path: Path) -> None:
    path = with_server(write_config(tmp_path), "  api_token: tok-123456\n")
    with AppThread(create_app(runtime_for(path), extra_routes=ROUTES)) as app:
        named = as_host(app, "wb.example.com")
        right = {**named, "authorization": "Bearer tok-123456"}
        assert httpx.get(f"{app.url}/api/status", headers=right).status_code == 200
        assert httpx.get(f"{app.url}/", headers=right).status_code == 200
        assert httpx.get(f"{app.url}/api/status", headers=named).status_code == 401


def test_the_pages_own_form_works_under_an_allowed_name(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    household(tmp_path, trakt)  # writes the config
    path = with_server(tmp_path / "watchbridge.yaml", "  allowed_hosts: [wb.example.com]\n")
    with AppThread(create_app(runtime_for(path), extra_routes=ROUTES)) as app:
        page = f"http://wb.example.com:{app.port}"
        own = {**as_host(app, "wb.example.com"), **TAB, "sec-fetch-site": "same-origin"}
        own["origin"] = page
        answer = httpx.post(
            f"{app.url}/signin/trakt?profile=household", headers=own, follow_redirects=False
        )
        elsewhere = httpx.post(
            f"{app.url}/signin/trakt?profile=household",
            headers={**own, "host": f"wb.example.org:{app.port}"},
        )
    assert answer.status_code == 303, answer.text
    assert elsewhere.status_code == 403


@pytest.mark.parametrize(
    "entry",
    ["http://wb.example.com", "wb.example.com:8765", "wb.example.com/status", "*example.com", ""],
)
def test_an_allowed_host_that_is_no_name_is_refused_by_its_key(entry: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(f"server:\n  allowed_hosts: ['{entry}']\n", Path("watchbridge.yaml"), {})
    message = refused.value.message
    assert message.startswith("watchbridge.yaml:2 server.allowed_hosts: expected host names"), (
        message
    )
    assert repr(entry) in message


def test_allowed_hosts_take_names_wildcards_and_addresses() -> None:
    text = "server:\n  allowed_hosts: [wb.example.com, '*.example.net', 192.168.1.10, 'nas.']\n"
    config = parse_config(text, Path("watchbridge.yaml"), {})
    assert config.server.allowed_hosts == [
        "wb.example.com",
        "*.example.net",
        "192.168.1.10",
        "nas.",
    ]
