"""A second Plex account answering to the name a profile lists, revealed by its webhook: the
account the link reads was found by that name and remembered a week; the webhook that learns
the other id makes the next run ask the server's accounts and refuse the clash at once."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import MACHINE_ID, TOKEN, FakePlex
from tests.fakes.receiver import FakeClock
from tests.fakes.trakt import CLIENT_ID
from tests.harness import AppThread, free_port
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import plex_multipart
from watchbridge import webhooks
from watchbridge.app import create_app
from watchbridge.config import Config, Link, parse_config
from watchbridge.readers.plex import make_reader
from watchbridge.services.plex import PlexAuthError
from watchbridge.store import Store
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

SECRET = "name-clash-secret-42"
JAMIE, JAMIE_TOKEN = 48151623, "managed-user-token-5d4c3b2a"
T0 = 1_700_000_000.0


def config_for(plex: FakePlex, db: Path) -> Config:
    return parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {db}}}
services:
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
  trakt: {{client_id: {CLIENT_ID}, api_url: "http://127.0.0.1:{free_port()}"}}
profiles:
  jamie:
    users: {{plex: [jamie]}}
    accounts: {{trakt: {{}}, plex: {{token: "{JAMIE_TOKEN}"}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )


def scrobble(thread: AppThread, account: int, name: str) -> None:
    """Plex's webhook of one play by `account` (named `name`) on the fake's server."""
    payload = copy.deepcopy(sample_json("plex", "episode_legacy_media_scrobble.json"))
    payload["Account"] = {"id": account, "title": name}
    payload["Server"] = {"title": "home", "uuid": MACHINE_ID}
    body, content_type = plex_multipart(payload)
    answer = httpx.post(
        f"{thread.url}/webhooks/plex/{SECRET}", content=body, headers={"content-type": content_type}
    )
    assert answer.status_code in (200, 202), answer.text


async def test_a_webhook_revealing_a_second_account_by_a_listed_name_ends_the_remembered_id(
    start_fake: Callable[[FakeServer], FakeServer], tmp_path: Path
) -> None:
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    db = tmp_path / "wb.db"
    config, clock = config_for(plex, db), FakeClock(T0)
    store = Store.open(db)

    async def next_run() -> None:
        plex.requests.clear()
        reader = make_reader(config, store, Link(["plex", "trakt"]), ["jamie"], clock)
        try:
            await reader.read("jamie", {}, None, True)
        finally:
            await reader.aclose()

    runtime = build_runtime(config, clock=clock)
    app = create_app(runtime, tasks=[], extra_routes=[*webhooks.ROUTES])
    try:
        await next_run()  # finds jamie's id by name: remembered a week
        with AppThread(app) as thread:
            scrobble(thread, JAMIE, "jamie")
            await next_run()
            assert plex.count("GET", "/accounts") == 0  # learning the same id changes nothing

            plex.add_user("friend-token-1e2d", 7, "Jamie")  # a friend by the same name
            scrobble(thread, 7, "Jamie")
        told = f"ignoring case: jamie (id {JAMIE}), Jamie (id 7)"
        with pytest.raises(PlexAuthError, match=re.escape(told)):
            await next_run()
        assert plex.count("GET", "/accounts") == 1
        assert plex.count("GET", "/status/sessions/history/all") == 0
    finally:
        store.close()
