"""Jellyfin's and Emby's played marks of viewings done earlier (a phone's downloads watched
offline and reported when it syncs, an app or script marking an episode played with its date):
the running app with the fake Trakt, Serializd and media server, and what Trakt and Serializd
hold, with their dates; then, on the playback rig's hand-moved clock, the re-marks that keep
an old date ("mark played" of several items) and must stay no new play. The server's own clock
times a mark: its send time against its `LastPlayedDate`, so a server clock hours or days off
never moves a live play."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, sample_server
from tests.fakes.serializd import ALICE as SERIALIZD_USER
from tests.fakes.serializd import FakeSerializd
from tests.fakes.serializd import parse_iso as serializd_time
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, parse_iso
from tests.harness import AppThread, nothing_waits, sign_in_trakt, wait_for
from tests.playback_rig import (
    HOUR,
    emby_marked_played,
    jellyfin,
    jellyfin_progress,
    jellyfin_toggle_played,
    running_rig,
)
from tests.unpaced import unpaced
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "late-marks-secret-123"
DAY = 86400.0
Flavour = Literal["jellyfin", "emby"]


@contextlib.contextmanager
def household(
    tmp_path: Path,
    flavour: Flavour,
    start_fake: Callable[[FakeServer], FakeServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[AppThread, FakeTrakt, FakeSerializd]]:
    """The app with one profile on Trakt and Serializd, reading show ids from the media server.
    Its deliveries are not paced (these tests are about dates, not pacing)."""
    unpaced(monkeypatch, "trakt", "serializd")
    trakt = start_fake(FakeTrakt())
    serializd = start_fake(FakeSerializd())
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    breaking = trakt.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    trakt.add_episode(breaking, 5, 14, title="Ozymandias")
    serializd.seed_reference_catalogue()  # Breaking Bad (TMDB 1396) with its season ids
    server = sample_server(start_fake, flavour)
    email, password, _ = SERIALIZD_USER
    config = parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
  {flavour}: {{url: "{server.url}", api_key: "{API_KEY}"}}
profiles:
  me:
    users: {{{flavour}: [alex]}}
    accounts: {{trakt: {{}}, serializd: {{email: "{email}", password: "{password}"}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    with AppThread(build_app(runtime)) as thread:
        sign_in_trakt(runtime.store, trakt, now=time.time())
        yield thread, trakt, serializd


def server_time(ts: float) -> str:
    """A time as Jellyfin and Emby write it (UTC, 7 fractional digits)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def marked_played(flavour: Flavour, sent: float, last_played: float) -> dict[str, Any]:
    """The server's played mark of the sample episode (S05E14), sent at `sent` with the
    `LastPlayedDate` the server keeps after it, both by the server's clock; counted once."""
    if flavour == "emby":
        body = emby_marked_played(1, server_time(last_played))
        body["Date"] = server_time(sent)
        return body
    return jellyfin_toggle_played(True) | {
        "UtcTimestamp": server_time(sent),
        "LastPlayedDate": server_time(last_played),
        "PlayCount": 1,
    }


def dates_held(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd
) -> tuple[list[float], list[float]]:
    """Once every delivery settled: the episode's play dates on Trakt and on Serializd."""
    wait_for(lambda: nothing_waits(tmp_path / "wb.db") and bool(serializd.diary()))
    on_trakt = [parse_iso(h.watched_at or "") for h in trakt.history()]
    on_serializd = [serializd_time(r.watched_at) for r in serializd.diary()]
    return on_trakt, on_serializd


@pytest.mark.parametrize("flavour", ["jellyfin", "emby"])
def test_a_viewing_done_offline_three_days_ago_and_marked_played_now_keeps_its_date(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    monkeypatch: pytest.MonkeyPatch,
    flavour: Flavour,
) -> None:
    # The phone watched the episode on the plane; it syncs now, marking it played with the
    # date it was watched. Dated "now", Trakt and Serializd showed it watched today.
    watched = time.time() - 3 * DAY
    with household(tmp_path, flavour, start_fake, monkeypatch) as (app, trakt, serializd):
        body = marked_played(flavour, time.time(), watched)
        response = httpx.post(f"{app.url}/webhooks/{flavour}/{SECRET}", json=body)
        assert response.status_code == 202
        on_trakt, on_serializd = dates_held(tmp_path, trakt, serializd)
    assert on_trakt == [pytest.approx(watched, abs=120)]
    assert on_serializd == [pytest.approx(watched, abs=DAY)]  # Serializd keeps the day


# --------------------------------------------------------------------------- re-marks keeping
# an old date, on the playback rig (its clock is moved by hand; the samples' server times are
# their own, in March 2025: only their difference counts)

SAMPLE_START = datetime(2025, 3, 14, 20, 0, 4, tzinfo=UTC).timestamp()  # the start sample's


def test_a_season_re_mark_weeks_after_a_long_evening_viewing_is_no_earlier_play(
    tmp_path: Path,
) -> None:
    # Paused for dinner: five hours from start to end. Jellyfin dates the viewing by its
    # start (the play count and date are saved as playback starts); "mark played" of the whole
    # season weeks later keeps that date. Taken at its date, the re-mark stood hours before the
    # viewing's end that watchbridge recorded: "an earlier viewing", a second play.
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(20 * 60)
        rig.post("jellyfin", jellyfin_progress(40, paused=True))
        rig.advance(5 * HOUR)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json"))
        rig.advance(20 * DAY)
        sent = SAMPLE_START + 20 * DAY + 5 * HOUR + 20 * 60
        remark = marked_played("jellyfin", sent, SAMPLE_START) | {"PlayCount": 1}
        rig.post("jellyfin", remark)
        assert len(rig.plays()) == 1


@pytest.mark.parametrize("flavour", ["jellyfin", "emby"])
def test_an_offline_viewing_marked_late_then_its_season_marked_played_is_one_play_then(
    tmp_path: Path, flavour: Flavour
) -> None:
    with running_rig(tmp_path) as rig:
        synced = SAMPLE_START + 3 * DAY
        rig.post(flavour, marked_played(flavour, synced, SAMPLE_START))
        rig.advance(DAY)
        season = marked_played(flavour, synced + DAY, SAMPLE_START)
        if flavour == "emby":
            season["Item"]["UserData"]["PlayCount"] = 2
        else:
            season["PlayCount"] = 2
        rig.post(flavour, season)
        (play,) = rig.plays()
        assert play["payload"]["at"] == pytest.approx(rig.clock() - 4 * DAY, abs=1)


@pytest.mark.parametrize("flavour", ["jellyfin", "emby"])
def test_a_live_mark_from_a_server_clock_two_days_slow_is_dated_now(
    tmp_path: Path, flavour: Flavour
) -> None:
    # A NAS without time sync: the mark's date and its send time are both two days behind.
    with running_rig(tmp_path) as rig:
        slow = rig.clock() - 2 * DAY
        rig.post(flavour, marked_played(flavour, slow, slow))
        (play,) = rig.plays()
        assert play["payload"]["at"] == rig.clock()
