"""A webhook play of an episode the user logged by hand in Serializd's app: through the running
app (a generic webhook) to the fake Serializd. A log made in the app at the credits, seconds
before the media server's play arrives, is that viewing: the play is not logged a second time
(before, it was, flagged a rewatch, and a Trakt ⇄ Serializd link then gave Trakt a second play
too). A log made an hour earlier is another viewing: the play is logged, as a rewatch."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.serializd import ALICE, FakeSerializd, iso
from tests.harness import AppThread
from tests.unpaced import unpaced
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "logged-by-hand-secret-0123"
SHOW, SEASON_1 = 1396, 3572  # Breaking Bad, as the reference catalogue keys it
PLAY = {
    "event": "played",
    "user": "alice",
    "item": {"type": "episode", "season": 1, "number": 4, "show": {"ids": {"tmdb": SHOW}}},
}


@pytest.fixture
def serializd(start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch) -> FakeSerializd:
    unpaced(monkeypatch, "serializd")
    fake = start_fake(FakeSerializd())
    assert isinstance(fake, FakeSerializd)
    fake.seed_reference_catalogue()
    return fake


def outcomes(db: Path) -> list[tuple[str, str | None]]:
    """(status, last_error) of each Serializd row."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT status, last_error FROM outbox WHERE target = 'serializd' ORDER BY id"
        ).fetchall()


def webhook_plays(
    tmp_path: Path, serializd: FakeSerializd, *plays: dict[str, Any], users: str = "alice"
) -> list[tuple[str, str | None]]:
    """The outcomes of the Serializd rows the webhook `plays` queued (each tried before the
    next is sent). A profile per name of `users` (comma-separated), each the generic webhook's
    user of its name, all signed in to Alice's Serializd account."""
    db = tmp_path / "wb.db"
    profiles = "".join(
        f"""  {user}:
    users: {{generic: [{user}]}}
    accounts: {{serializd: {{email: "{ALICE[0]}", password: "{ALICE[1]}"}}}}
"""
        for user in users.split(",")
    )
    config = f"""server: {{webhook_secret: {SECRET}}}
storage: {{path: {db}}}
services:
  serializd: {{api_url: "{serializd.url}"}}
profiles:
{profiles}"""
    runtime = build_runtime(parse_config(config, Path("watchbridge.yaml"), {}))
    with AppThread(build_app(runtime)) as app:
        for play in plays:
            answer = httpx.post(f"{app.url}/webhooks/generic/{SECRET}", json=play)
            assert answer.status_code in (200, 202), answer.text
            deadline = time.monotonic() + 20
            while not tried(outcomes(db)):
                assert time.monotonic() < deadline, f"a play was not tried: {outcomes(db)}"
                time.sleep(0.05)
    return outcomes(db)


def tried(found: list[tuple[str, str | None]]) -> bool:
    return all(status == "done" or error for status, error in found)


def day_only(at: float) -> str:
    """A watch date by the day alone, as a log made in the app may carry."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT00:00:00Z")


def test_a_play_logged_by_hand_at_the_credits_is_not_logged_again(
    tmp_path: Path, serializd: FakeSerializd
) -> None:
    now = serializd.now()
    serializd.log_entry(None, SHOW, 1, 4, backdate=day_only(now), date_added=iso(now - 20))
    serializd.tick(None, SHOW, 1, 4)
    ((status, reason),) = webhook_plays(tmp_path, serializd, PLAY)
    assert len(serializd.diary()) == 1
    assert status == "done"
    assert reason is not None and "already on Serializd" in reason
    assert "logged in the Serializd app" in reason


def test_a_log_made_at_the_credits_on_a_serializd_clock_behind_ours_is_found(
    tmp_path: Path, serializd: FakeSerializd
) -> None:
    # Serializd's clock 10 minutes behind ours: it stamps the log (dateAdded) and its answers'
    # Date header by it. Read on our clock, the log looked 10 minutes older than the play and
    # the look at the diary's newest entries left it out: the play was logged a second time.
    serializd.advance(-600)
    logged = serializd.now() - 20
    serializd.log_entry(None, SHOW, 1, 4, backdate=day_only(logged), date_added=iso(logged))
    serializd.tick(None, SHOW, 1, 4)
    ((status, reason),) = webhook_plays(tmp_path, serializd, PLAY)
    assert len(serializd.diary()) == 1
    assert status == "done"
    assert reason is not None and "logged in the Serializd app" in reason


def test_a_play_another_profile_of_the_account_logged_is_said_to_be_that_profiles(
    tmp_path: Path, serializd: FakeSerializd
) -> None:
    # Alice and Bob, two profiles signed in to one Serializd account, watch together: Bob's
    # play is the diary entry Alice's made. Its reason said the user logged it in the app.
    bobs = {**PLAY, "user": "bob"}
    ((alices, _), (status, reason)) = webhook_plays(
        tmp_path, serializd, PLAY, bobs, users="alice,bob"
    )
    assert alices == "done" and len(serializd.diary()) == 1
    assert status == "done"
    assert reason is not None and "already on Serializd" in reason
    assert "logged by profile alice, which shares this Serializd account" in reason
    assert "Serializd app" not in reason


def test_a_play_logged_by_another_watchbridge_on_the_account_is_not_said_to_be_by_hand(
    tmp_path: Path, serializd: FakeSerializd
) -> None:
    # Tagged #watchbridge, in no profile's records here: not a log made in the app.
    now = serializd.now()
    serializd.log_entry(None, SHOW, 1, 4, backdate=iso(now - 20), tags=["#watchbridge"])
    ((status, reason),) = webhook_plays(tmp_path, serializd, PLAY)
    assert status == "done" and len(serializd.diary()) == 1
    assert reason is not None and "another watchbridge, sharing this Serializd account" in reason
    assert "Serializd app" not in reason


def test_a_play_an_hour_after_one_logged_by_hand_is_a_rewatch(
    tmp_path: Path, serializd: FakeSerializd
) -> None:
    # An hour ago: logged by hand at the credits, the server's play of it late (a webhook
    # dated then). Now: the episode again, a viewing of its own.
    earlier = serializd.now() - 3600
    serializd.log_entry(None, SHOW, 1, 4, backdate=day_only(earlier), date_added=iso(earlier))
    serializd.tick(None, SHOW, 1, 4)
    then = PLAY | {"watched_at": iso(earlier + 30)}
    again = {"user": "alice", "player": "living-room", "item": PLAY["item"]}
    start, stop = again | {"event": "start", "progress": 0}, again | {"event": "stop"}
    (first, now) = webhook_plays(tmp_path, serializd, then, start, stop | {"played": True})
    assert first[0] == "done" and "already on Serializd" in (first[1] or "")
    assert now == ("done", None)
    by_hand, rewatch = serializd.diary()
    assert not by_hand.is_rewatch
    assert (rewatch.episode_number, rewatch.is_rewatch) == (4, True)
    assert serializd.ticks() == {(SHOW, SEASON_1, 4)}


@pytest.mark.parametrize(
    "status,body",
    [(404, "<html><title>Page not found</title></html>"), (200, {"items": []})],
    ids=["renamed", "changed"],
)
def test_a_diary_that_cannot_be_read_does_not_stop_webhook_plays(
    tmp_path: Path, serializd: FakeSerializd, status: int, body: Any
) -> None:
    # The diary page renamed (a new _v3) or answering another shape: the play's entry and tick
    # need no diary; only the look for a log made in the app does, and the play is logged.
    serializd.fail_next(50, status, body=body, route="/api/user/{username}/diary")
    assert webhook_plays(tmp_path, serializd, PLAY) == [("done", None)]
    (entry,) = serializd.diary()
    assert (entry.episode_number, entry.is_rewatch) == (4, False)
    assert serializd.ticks() == {(SHOW, SEASON_1, 4)}
