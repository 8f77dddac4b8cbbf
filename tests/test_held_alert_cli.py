"""The 'holds removals' alert from `watchbridge sync`: told while removals wait, resolved
only by a run that planned them all."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, write_config
from tests.linkrig import BB, use_fast_readers
from tests.test_sync_scenarios import TraktApp, ago, diary_plays
from watchbridge.cli import cli
from watchbridge.store import Store

BOB = ("bob@example.com", "bobs password", "bob_tv")


def test_a_one_way_cli_run_beside_a_review_does_not_resolve_the_held_removals_alert(
    tmp_path: Path,
    start_fake: Callable[[Any], Any],
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_fast_readers(monkeypatch)
    trakt: FakeTrakt = start_fake(FakeTrakt())
    serializd: FakeSerializd = start_fake(FakeSerializd())
    trakt.add_show("Breaking Bad", 2008, tmdb=BB, tvdb=81189, seasons={1: 7})
    serializd.add_show(BB, "Breaking Bad", seasons={1: 7})
    trakt.add_user("bob")
    serializd.add_user(*BOB)
    config = write_config(
        tmp_path,
        f"""alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me: {{accounts: {{trakt: {{}}, serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}}}}}
  bob: {{accounts: {{trakt: {{}}, serializd: {{email: {BOB[0]}, password: "{BOB[1]}"}}}}}}
links:
  ts: {{services: [trakt, serializd], first_run: dry-run}}
""",
    )
    store = Store.open(tmp_path / "watchbridge.db")
    sign_in_trakt(store, trakt, "me", now=time.time())
    store.close()

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--config", str(config)], catch_exceptions=True)

    app = TraktApp(trakt)
    try:
        show = next(s for s in trakt.shows if s.tmdb == BB)
        for number in (1, 2):
            at = ago(3 - number / 10)
            trakt.add_history(show.seasons[1].episodes[number], at)
            serializd.log_entry(None, BB, 1, number, backdate=at)
        run("sync", "--link", "ts", "--yes")  # me reviewed (bob not signed in yet: fails)
        app.unwatch(trakt.history()[0])
        out = run("sync", "--link", "ts")
        assert "held: me: 1 of 2 plays on serializd would be removed" in out.stdout
        alert = "watchbridge: link ts holds removals"
        assert alert in receiver.titles()
        # bob signs in; his first run waits for review. A one-way run the other way:
        store = Store.open(tmp_path / "watchbridge.db")
        sign_in_trakt(store, trakt, "bob", now=time.time(), user="bob")
        store.close()
        serializd.log_entry(serializd.users[BOB[0]], BB, 1, 3, backdate=ago(1))
        run("sync", "--link", "ts", "--direction", "serializd-to-trakt")
        assert len(diary_plays(serializd)) == 2  # me's removal still held...
        assert f"Resolved: {alert}" not in receiver.titles()  # ...so the alert stays
    finally:
        app.http.close()
