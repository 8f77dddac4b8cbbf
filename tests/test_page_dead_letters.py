"""Retrying the dead letters from the status page: a Home Assistant app's user has no terminal
for `watchbridge deadletters retry --all`. The page's form is relative (it runs behind
ingress), posted from the page only, and back to the page, which says what was done."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, free_port, sign_in_trakt
from tests.ingest_samples import plex_scrobble_now
from watchbridge.config import load_config
from watchbridge.store import Store
from watchbridge.wiring import build_app, build_runtime

INGRESS = "http://homeassistant.local:8123/api/hassio_ingress/Xy12abc/"
SECRET = "page-retry-secret"
FORM = '<form method="post" action="deadletters/retry">'


@contextmanager
def app_with_a_dead_letter(tmp_path: Path, trakt: FakeTrakt) -> Iterator[AppThread]:
    """The service with one play to Trakt that gave up (Trakt refused it once, for good)."""
    trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"server: {{host: 127.0.0.1, port: {free_port()}, webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        "delivery: {max_attempts: 1}\n"
        f"services:\n  trakt: {{client_id: {CLIENT_ID}, api_url: '{trakt.url}', "
        f"auth_url: '{trakt.url}'}}\n"
        "profiles:\n  me: {users: {plex: ['1']}, accounts: {trakt: {}}}\n",
        encoding="utf-8",
    )
    with Store.open(tmp_path / "wb.db") as store:
        sign_in_trakt(store, trakt, "me")
    trakt.fail_next(1, 400, route="POST /scrobble/stop")
    with AppThread(build_app(build_runtime(load_config(path, {})))) as app:
        payload = plex_scrobble_now("movie_legacy_imdb_media_scrobble.json")
        answer = httpx.post(
            f"{app.url}/webhooks/plex/{SECRET}", files={"payload": (None, json.dumps(payload))}
        )
        assert answer.status_code < 300, answer.text
        page_until(app.url, "(dead letters)</td><td><span")
        yield app


def page_until(url: str, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        page = httpx.get(f"{url}/").text
        if text in page:
            return page
        assert time.monotonic() < deadline, page
        time.sleep(0.05)


def test_the_dead_letters_are_retried_from_the_page_and_delivered(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    with app_with_a_dead_letter(tmp_path, trakt) as app:
        assert trakt.history() == []
        answer = httpx.post(f"{app.url}/deadletters/retry", follow_redirects=False)
        assert answer.status_code == 303
        posted_to = urllib.parse.urljoin(INGRESS, "deadletters/retry")
        assert urllib.parse.urljoin(posted_to, answer.headers["location"]) == INGRESS
        page = page_until(app.url, "Retried from this page")
        assert "1 dead letter(s) queued again: the service sends them now." in page
        deadline = time.monotonic() + 10
        while not trakt.history():
            assert time.monotonic() < deadline, "the retried play did not reach Trakt"
            time.sleep(0.05)
        page = page_until(app.url, "(dead letters)</td><td>0<p>")
        assert FORM not in page  # none left to retry


def test_a_retry_posted_by_another_site_does_nothing(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    with app_with_a_dead_letter(tmp_path, trakt) as app:
        answer = httpx.post(
            f"{app.url}/deadletters/retry", headers={"sec-fetch-site": "cross-site"}
        )
        page = httpx.get(f"{app.url}/").text
    assert answer.status_code == 403
    assert FORM in page and "Retried from this page" not in page and trakt.history() == []
