"""A household on Tautulli alone (no Plex Pass: Plex's own webhook sends nothing) that lists its
people under `users.plex`: Tautulli's reports are answered `ignored_sent_by_plex`, as Plex's
webhook is expected to send those plays. None comes, so each play is taken from Tautulli's
report after forplex.GRACE, once, with one alert per person naming the line to write; where
Plex's webhook does send (Plex Pass), even after Tautulli's report, nothing is doubled.
Through the running app to the fakes (the Plex Home of test_walkthrough_plex_home.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver
from tests.harness import AppThread, statements_run
from tests.test_app import wait_until
from tests.test_walkthrough_plex_home import (
    JAMIE,
    JAMIE_SERIALIZD,
    SAM,
    SPY_FAMILY,
    SPY_PLEX,
    SPY_TAUTULLI,
    Home,
    open_home,
    plex,
    tautulli,
)
from watchbridge import forplex, maintenance
from watchbridge.config import load_config
from watchbridge.wiring import build_app, build_runtime

SERVER = "d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"  # the samples' Plex server (Basement)
# Everyone under users.plex, as Plex users; Tautulli's webhook the only one set up.
AS_PLEX_USERS = {
    "alex": "{plex: [alex]}",
    "sam": f'{{plex: ["{SAM}"]}}',
    "jamie": "{plex: []}",
}
SAM_LINE = f'profiles.sam.users.tautulli: ["{SAM}"]'
Opens = Callable[[], AbstractContextManager[Home]]  # the Home opened anew for a `with`


def alerts(receiver: AlertReceiver) -> str:
    return f"alerts: {{urls: ['{receiver.apprise_url}'], kinds: [unlisted_account]}}\n"


def a_viewing_by_tautulli(home: Home, user_id: str | int, name: str, **fields: str) -> None:
    """Tautulli's reports of one viewing: its start, its Watched (85 %), its stop."""
    for sample in ("play_episode.json", "watched_episode.json", "stop_episode.json"):
        told = home.tautulli(tautulli(sample, user_id, name, **fields))
        assert told["status"] == "ignored_sent_by_plex", told


def release(home: Home) -> None:
    """The housekeeping's look at the reports kept for Plex's webhook, GRACE later."""
    assert home.runtime is not None
    asyncio.run(maintenance.release_for_plex(home.runtime))


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forplex, "GRACE", 0.0)


@pytest.fixture
def home_on_tautulli(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    no_grace: None,
) -> Opens:
    """What opens the Home: everyone under users.plex and Tautulli's webhook alone, its
    `unlisted_account` alerts to `receiver`, each report taken at the first look past it
    (no GRACE)."""
    return lambda: open_home(tmp_path, start_fake, AS_PLEX_USERS, alerts(receiver))


def test_plays_plex_never_sends_are_taken_from_tautulli_once_and_told(
    home_on_tautulli: Opens, receiver: AlertReceiver
) -> None:
    with home_on_tautulli() as home:
        # Tautulli's template names the server (server_name); alex's names it not (as the
        # template did before this release).
        a_viewing_by_tautulli(home, "27160034", "alex", server_name="")
        a_viewing_by_tautulli(home, SAM, "Sam", **SPY_TAUTULLI)
        home.settle()
        assert home.trakt_plays() == [] and home.logged() == []  # Plex's webhook may come
        release(home)
        home.settle()
        assert home.trakt_plays() == ["Felina"]
        assert home.logged() == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}
        wait_until(lambda: len(receiver.messages) == 2)
        release(home)  # again: nothing twice, no second alert
        home.settle()
        assert home.trakt_plays() == ["Felina"] and home.logged() == [(1396, 16)]
        status = home.status()
        listed = home.api_status()["not_sent_by_plex"]
    by_title = {m["title"]: m["message"] for m in receiver.messages}
    sams = by_title["watchbridge: Plex's own webhook does not send Sam's plays"]
    # The server by the name Tautulli gives it; by its id where the template names none.
    assert f"Sam (id {SAM})" in sams and "on Plex server Basement (" in sams
    assert SERVER not in sams
    assert f"write {SAM_LINE} and take Sam (id {SAM}) out of profiles.sam.users.plex" in sams
    assert "1 play(s) were taken from Tautulli's reports" in sams
    alexs = by_title["watchbridge: Plex's own webhook does not send alex's plays"]
    assert f"on Plex server {SERVER} (" in alexs
    # Only Tautulli's Watched is kept: alex's Trakt is told nothing live, and the alert says so.
    assert "Meanwhile Trakt does not show what they are watching" in alexs
    assert "Trakt" not in sams  # Sam's profile has no Trakt
    (line,) = [one for one in status.splitlines() if "Sam (id" in one]
    assert line.startswith("not by plex:") and SAM_LINE in line, line
    assert f"Sam (id {SAM}) on Plex server Basement:" in line and SERVER not in line
    assert sorted(
        (one["profile"], one["plays"], one["line"], one["server"], one["server_name"])
        for one in listed
    ) == [
        ("alex", 1, 'profiles.alex.users.tautulli: ["27160034"]', SERVER, ""),
        ("sam", 1, SAM_LINE, SERVER, "Basement"),
    ]
    # The line written: Sam's alert is resolved, naming where their plays go now.
    config = home.config.read_text(encoding="utf-8")
    home.config.write_text(config.replace(f'plex: ["{SAM}"]', f'tautulli: ["{SAM}"]'))
    fixed = build_runtime(load_config(home.config, {}))
    with AppThread(build_app(fixed)):
        asyncio.run(maintenance.release_for_plex(fixed))
        wait_until(lambda: len(receiver.messages) == 3)
    assert receiver.messages[-1]["title"] == (
        "Resolved: watchbridge: Plex's own webhook does not send Sam's plays"
    )
    assert receiver.messages[-1]["message"] == (
        f"Tautulli's reports of Sam (id {SAM}) on Plex server Basement go to profile sam at"
        " once now."
    )


def test_a_play_plexs_webhook_sends_after_tautullis_report_is_not_doubled(
    home_on_tautulli: Opens, receiver: AlertReceiver
) -> None:
    # With Plex Pass: Plex's webhook tells of the playback as it begins, and its scrobble
    # (90 %) comes after Tautulli's Watched (85 %). Each viewing lands once, nothing is told.
    with home_on_tautulli() as home:
        home.plex(plex("episode_legacy_media_play.json", SAM, "Sam", **SPY_PLEX))
        home.tautulli(tautulli("watched_episode.json", SAM, "Sam", **SPY_TAUTULLI))
        home.plex(plex("episode_legacy_media_scrobble.json", SAM, "Sam", **SPY_PLEX))
        # alex's play began while watchbridge was away: only the scrobble, after Tautulli's.
        home.tautulli(tautulli("watched_episode.json", "27160034", "alex"))
        home.plex(plex("episode_legacy_media_scrobble.json", 1, "alex"))
        release(home)
        home.settle()
        assert home.trakt_plays() == ["Felina"] and home.logged() == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}
        assert home.api_status()["not_sent_by_plex"] == []
        time.sleep(0.3)
    assert receiver.messages == []


def test_a_report_is_kept_until_grace_has_passed(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    with open_home(tmp_path, start_fake, AS_PLEX_USERS) as home:
        told = home.tautulli(tautulli("watched_episode.json", "27160034", "alex"))
        assert "should Plex's webhook not tell of it within 30 minutes" in told["reason"]
        release(home)
        home.settle()
        assert home.trakt_plays() == []
        assert [one.state for one in home.runtime.store.for_plex()] == [forplex.KEPT]  # type: ignore[union-attr]
        assert httpx.get(f"{home.app.url}/api/status").json()["not_sent_by_plex"] == []


def test_the_alert_is_resolved_once_no_play_of_theirs_was_taken_for_six_weeks(
    home_on_tautulli: Opens, receiver: AlertReceiver
) -> None:
    # The plays taken are kept 6 weeks, for the status and for what resolves the alert (the
    # config written, Plex's webhook seen): once they are forgotten nothing could, and the
    # alert stayed open for good, also after the line was written.
    title = "watchbridge: Plex's own webhook does not send Sam's plays"
    with home_on_tautulli() as home:
        assert home.runtime is not None
        a_viewing_by_tautulli(home, SAM, "Sam", **SPY_TAUTULLI)
        home.settle()
        release(home)
        wait_until(lambda: [m["title"] for m in receiver.messages] == [title])
        store = home.runtime.store
        with store.transaction() as conn:  # taken 43 days ago
            conn.execute(f"UPDATE tautulli_for_plex SET received_at = {time.time() - 43 * 86400}")
        store.prune(time.time(), keep_done=1e9, keep_sessions=1e9)
        assert store.for_plex() == []
        release(home)  # the hourly round
        wait_until(lambda: len(receiver.messages) == 2)
        release(home)  # once
        time.sleep(0.3)
    assert [m["title"] for m in receiver.messages] == [title, f"Resolved: {title}"]
    assert receiver.messages[-1]["message"] == (
        f"No play of Plex account {SAM} was taken from Tautulli's reports for 42 days; should"
        " Plex's own webhook not send one again, this is told again."
    )


def released_if_due(home: Home) -> list[str]:
    """The look at every note of being alive (5 minutes): the statements it ran on the
    reports kept for Plex's webhook, as the store's connection traced them."""
    assert home.runtime is not None
    with statements_run("tautulli_for_plex", home.runtime.store._conn) as statements:
        asyncio.run(maintenance.release_for_plex_due(home.runtime))
    return list(statements)  # the trace goes on after the block


def test_the_look_every_5_minutes_reads_no_play_taken_while_none_waits(
    home_on_tautulli: Opens, receiver: AlertReceiver
) -> None:
    # Idle means idle: every 5 minutes all the plays taken in 6 weeks were read and parsed,
    # on the event loop, to find that none was waiting.
    with home_on_tautulli() as home:
        assert home.runtime is not None
        for _ in range(3):
            a_viewing_by_tautulli(home, SAM, "Sam", **SPY_TAUTULLI)
        release(home)  # the hourly round: taken, told
        home.settle()
        wait_until(lambda: len(receiver.messages) == 1)
        conn = home.runtime.store._conn
        read = released_if_due(home)
        assert read, "the look is made"
        for sql in read:  # an indexed look at the reports waiting, not a read of those taken
            assert sql.startswith("SELECT 1 FROM tautulli_for_plex WHERE state = ''"), sql
            plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "USING COVERING INDEX tautulli_for_plex_waiting" in plan, plan
        # A report waiting past GRACE: the look finds it and takes it, as the hour would.
        home.tautulli(tautulli("watched_episode.json", "27160034", "alex"))
        assert any(sql.startswith("SELECT * FROM") for sql in released_if_due(home))
        home.settle()
        assert home.trakt_plays() == ["Felina"]
        wait_until(lambda: len(receiver.messages) == 2)
        time.sleep(0.3)
    titles = [m["title"] for m in receiver.messages]
    assert titles == [
        "watchbridge: Plex's own webhook does not send Sam's plays",
        "watchbridge: Plex's own webhook does not send alex's plays",
    ]


def at_minutes(home: Home, minutes: float) -> None:
    """The running app's clock set `minutes` from now (negative: back), or right (0)."""
    assert home.runtime is not None
    home.runtime.clock = (lambda: time.time() + minutes * 60) if minutes else time.time


def test_plexs_scrobble_coming_after_the_play_taken_from_tautulli_is_not_doubled(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Plex Pass, but watchbridge was down when playback began: Plex's webhook told nothing of
    # it, so Tautulli's Watched (85 %) was taken 30 minutes on. Plex's scrobble (90 %) came
    # later still (a long film, a pause in the credits, a webhook sent late): the same
    # viewing, no second play on Trakt, Serializd or AniList.
    with open_home(tmp_path, start_fake, AS_PLEX_USERS) as home:
        at_minutes(home, -65)
        home.tautulli(tautulli("watched_episode.json", "27160034", "alex"))
        home.tautulli(tautulli("watched_episode.json", SAM, "Sam", **SPY_TAUTULLI))
        at_minutes(home, -35)
        release(home)
        home.settle()
        assert home.trakt_plays() == ["Felina"] and home.logged() == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}
        at_minutes(home, 0)
        for sample in ("episode_legacy_media_scrobble.json", "episode_legacy_media_stop.json"):
            home.plex(plex(sample, 1, "alex"))
            home.plex(plex(sample, SAM, "Sam", **SPY_PLEX))
        home.settle()
        assert home.trakt_plays() == ["Felina"] and home.logged() == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}


def test_a_rewatch_plex_sends_after_a_play_taken_from_tautulli_counts_again(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # A play taken from Tautulli (Plex's webhook sent nothing of it), then, within hours, the
    # episode watched again from its start, which Plex's webhook tells of: a second play.
    # Jamie's profile has no Trakt: no live state of the rewatch is queued for it.
    users = AS_PLEX_USERS | {"jamie": f'{{plex: ["{JAMIE}"]}}'}
    with open_home(tmp_path, start_fake, users) as home:
        at_minutes(home, -180)
        home.tautulli(tautulli("watched_episode.json", "27160034", "alex"))
        home.tautulli(tautulli("watched_episode.json", JAMIE, "jamie.r"))
        at_minutes(home, -150)
        release(home)
        home.settle()
        at_minutes(home, -50)
        home.plex(plex("episode_legacy_media_play.json", 1, "alex", viewOffset=0))
        home.plex(plex("episode_legacy_media_play.json", JAMIE, "jamie.r", viewOffset=0))
        at_minutes(home, 0)
        home.plex(plex("episode_legacy_media_scrobble.json", 1, "alex"))
        home.plex(plex("episode_legacy_media_scrobble.json", JAMIE, "jamie.r"))
        home.settle()
        assert home.trakt_plays() == ["Felina", "Felina"]
        assert home.logged() == [(1396, 16), (1396, 16)]
        assert home.logged(JAMIE_SERIALIZD[0]) == [(1396, 16), (1396, 16)]


@pytest.mark.parametrize("known", [False, True], ids=["first report", "server known"])
def test_a_rewatch_plex_sends_before_the_play_kept_from_tautulli_is_looked_at_counts_both(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], known: bool
) -> None:
    # Plex Pass, watchbridge down as a short episode began: Plex's webhook told nothing of
    # it, Tautulli's Watched is kept. Watched again at once (autoplay, a child), which Plex's
    # webhook tells of from its start, before the look 30 minutes on: that is another viewing,
    # not Plex's webhook of the one Tautulli reported; two plays, neither lost. Also where a
    # play taken before had Plex's webhook note its reports of the server for Tautulli's to
    # pair with: the rewatch's scrobble is not the report of the viewing taken.
    with open_home(tmp_path, start_fake, AS_PLEX_USERS) as home:
        if known:
            at_minutes(home, -120)
            home.tautulli(tautulli("watched_movie.json", "27160034", "alex"))
            at_minutes(home, -90)
            release(home)
            home.settle()
        before = home.trakt_plays()
        at_minutes(home, -60)
        home.tautulli(tautulli("watched_episode.json", "27160034", "alex"))
        at_minutes(home, -58)
        home.plex(plex("episode_legacy_media_play.json", 1, "alex", viewOffset=0))
        at_minutes(home, -50)
        home.plex(plex("episode_legacy_media_scrobble.json", 1, "alex"))
        at_minutes(home, -30)
        release(home)
        home.settle()
        assert sorted(home.trakt_plays()) == sorted([*before, "Felina", "Felina"])
        assert home.logged() == [(1396, 16), (1396, 16)]
