"""Walkthrough: a household moving from Plex to Jellyfin.

Alex has watched on Plex for years, synced by watchbridge (Plex's webhook) to Trakt (VIP) and
Serializd. Jellyfin is installed beside Plex on the same files and added to watchbridge: the
webhook plugin, `users.jellyfin` (a Jellyfin user named otherwise than the Plex account) and
`services.jellyfin` with an API key for the catch-up. Plex keeps running a few weeks, then is
switched off. The running app (real HTTP) takes both servers' webhooks; the catch-up reads the
fake Jellyfin; each test asserts what the fake Trakt and Serializd hold at the end."""

from __future__ import annotations

import contextlib
import copy
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, BREAKING_BAD_PROVIDER_IDS, JELLYFIN_SERIES, FakeJellyfin
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import wait_for, write_config
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import plex_multipart
from tests.unpaced import unpaced
from tests.walkthrough import Clock, RunningHouse, read_afresh
from watchbridge import wiring
from watchbridge.catchup import CatchUp

SECRET = "plex-to-jellyfin-walkthrough-secret"
ALEX_JF = "a3f1c9e27b5d4c08b6e2f1d0c9b8a7e6"  # the samples' Jellyfin user: Alexander there
BREAKING_BAD = 1396
DAY = 86400.0
# Breaking Bad's season 5 episodes as both servers name them: (Plex legacy guid's number,
# Jellyfin item id, the episode's own TVDB id, which is all Jellyfin's TVDB plugin gives).
EPISODES = {n: (f"c7d2a91e4b3f4e6a8d0b1c2e3f4a{n:04d}", 4637600 + n) for n in range(1, 17)}


class Move(RunningHouse):
    """The household's watchbridge with its fakes, on one clock that `shift` moves."""

    def __init__(
        self,
        config: Path,
        trakt: FakeTrakt,
        serializd: FakeSerializd,
        jellyfin: FakeJellyfin,
        clock: Clock,
    ) -> None:
        super().__init__(config, clock, (trakt, serializd), trakt=trakt)
        self.trakt, self.serializd, self.jellyfin = trakt, serializd, jellyfin

    # -- what the servers send ---------------------------------------------------------------
    def plex(self, event: str, number: int) -> dict[str, Any]:
        """Plex's webhook (legacy TVDB agent) of alex (the owner, account 1) about S5E`number`."""
        payload = copy.deepcopy(sample_json("plex", "episode_legacy_media_scrobble.json"))
        payload["event"] = event
        payload["Metadata"].update(
            guid=f"com.plexapp.agents.thetvdb://81189/5/{number}?lang=en",
            index=number,
            title=f"Episode {number}",
            ratingKey=str(73100 + number),
            lastViewedAt=int(self.clock()),
        )
        body, content_type = plex_multipart(payload)
        url = f"{self.app.url}/webhooks/plex/{SECRET}"
        answer = httpx.post(url, content=body, headers={"content-type": content_type})
        assert answer.is_success, answer.text
        return dict(answer.json())

    def watch_on_plex(self, number: int) -> float:
        """S5E`number` played through on Plex: its play, 45 minutes, its scrobble and stop."""
        self.plex("media.play", number)
        self.shift(45 * 60)
        done = self.clock()
        self.plex("media.scrobble", number)
        self.plex("media.stop", number)
        return done

    def jellyfin_hook(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.app.url}/webhooks/jellyfin"
        answer = httpx.post(url, json=body, headers={"X-Webhook-Secret": SECRET})
        assert answer.is_success, answer.text
        return dict(answer.json())

    def watch_on_jellyfin(self, number: int) -> float:
        """S5E`number` played through in Jellyfin: the server's user data, and its webhooks."""
        item, _ = EPISODES[number]
        began = self.clock()
        self.jellyfin_hook(episode(number, "PlaybackStart", began, position=0.0))
        self.jellyfin.play(ALEX_JF, item, began)
        self.shift(45 * 60)
        done = self.clock()
        self.jellyfin_hook(episode(number, "PlaybackStop", done))
        return done

    def mark_in_jellyfin(
        self, number: int, dated: float | None = None, *, counted: bool = False
    ) -> None:
        """S5E`number` marked played in Jellyfin (by hand, or a script giving `dated`);
        `counted`: Jellyfin adds the mark to the item's PlayCount (a mark naming its date)."""
        item, _ = EPISODES[number]
        at = self.clock()
        self.jellyfin.mark_played(ALEX_JF, item, at if dated is None else dated, counted=counted)
        count = self.jellyfin.user_data[(ALEX_JF, item)]["PlayCount"]
        self.jellyfin_hook(mark(number, at, count, at if dated is None else dated))

    # -- what the services hold --------------------------------------------------------------
    def trakt_plays(self) -> list[tuple[int, str]]:
        """Trakt's history: (episode number, watched_at), oldest first."""
        return sorted(
            ((e.item.number, e.watched_at) for e in self.trakt.history()),  # type: ignore[union-attr]
            key=lambda row: row[1],
        )

    def diary(self) -> list[tuple[int, str]]:
        """Serializd's diary of Breaking Bad: (episode number, watched_at), oldest first."""
        rows = [r for r in self.serializd.diary() if r.show_id == BREAKING_BAD]
        return sorted(((r.episode_number or 0, r.watched_at) for r in rows), key=lambda r: r[1])

    def read_accounts(self) -> int:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM cursors WHERE name LIKE 'catch_up:%'"
            ).fetchone()
        return int(count)


def stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def day_of(watched_at: str) -> str:
    return watched_at[:10]


def episode(number: int, notification: str, at: float, *, position: float = 0.98) -> dict[str, Any]:
    """Jellyfin's webhook (Send All Properties) of alex's S5E`number` at `at`."""
    body = sample_json("jellyfin", "playback_stop_episode_completed.json")
    for key in ("Provider_imdb", "Provider_tmdb", "Provider_tvdb"):
        body.pop(key, None)
    item, tvdb = EPISODES[number]
    body |= {
        "NotificationType": notification,
        "ItemId": item,
        "Name": f"Episode {number}",
        "EpisodeNumber": number,
        "Provider_tvdb": str(tvdb),
        "NotificationUsername": "Alexander",
        "UserId": ALEX_JF,
        "UtcTimestamp": stamp(at),
        "Timestamp": stamp(at),
        "PlaybackPositionTicks": int(position * body["RunTimeTicks"]),
        "PlayedToCompletion": notification == "PlaybackStop" and position >= 0.9,
    }
    return body


def mark(number: int, at: float, count: int, dated: float) -> dict[str, Any]:
    """Jellyfin's UserDataSaved of S5E`number` marked played (TogglePlayed) at `at`."""
    body = episode(number, "UserDataSaved", at)
    for key in ("PlaybackPositionTicks", "PlayedToCompletion", "DeviceId", "DeviceName"):
        body.pop(key, None)
    body.pop("ClientName", None)
    return body | {
        "SaveReason": "TogglePlayed",
        "Played": True,
        "PlayCount": count,
        "LastPlayedDate": stamp(dated),
    }


@pytest.fixture
def move(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Move]:
    unpaced(monkeypatch, "serializd", "trakt")
    clock = Clock()
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    jellyfin = start_fake(FakeJellyfin("jellyfin"))
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    assert isinstance(jellyfin, FakeJellyfin)
    jellyfin.clock = clock
    trakt.user.vip = True
    show = trakt.add_show("Breaking Bad", 2008, imdb="tt0903747", tmdb=1396, tvdb=81189)
    for number, (_, tvdb) in EPISODES.items():
        trakt.add_episode(show, 5, number, title=f"Episode {number}", tvdb=tvdb)
    serializd.seed_reference_catalogue()
    jellyfin.add_series(JELLYFIN_SERIES, "Breaking Bad", **BREAKING_BAD_PROVIDER_IDS)
    for number, (item, tvdb) in EPISODES.items():
        jellyfin.add_episode(item, JELLYFIN_SERIES, 5, number, Tvdb=str(tvdb))
    jellyfin.add_user(ALEX_JF, "Alexander")
    email, password, _ = ALICE
    path = write_config(
        tmp_path,
        "services:\n"
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}\n'
        f'  serializd: {{api_url: "{serializd.url}"}}\n'
        f'  jellyfin: {{url: "{jellyfin.url}", api_key: "{API_KEY}"}}\n'
        "profiles:\n"
        '  alex:\n    users: {plex: ["1"], jellyfin: [Alexander]}\n'
        f'    accounts: {{trakt: {{}}, serializd: {{email: "{email}", password: "{password}"}}}}\n',
        secret=SECRET,
    )
    # The catch-up's rounds every tenth of a second, not every 15 minutes: the test moves the
    # clock, and waits for the rounds it needs (`catch_up_rounds`).
    monkeypatch.setattr(wiring, "CatchUp", lambda: CatchUp(every=0.1))
    with Move(path, trakt, serializd, jellyfin, clock) as house:
        wait_for(lambda: house.read_accounts() == 1)  # the first read: a baseline
        yield house


def catch_up_rounds(move: Move) -> None:
    """The catch-up finds what changed and, a read later, copies what it missed."""
    read_afresh(move.jellyfin, ALEX_JF)
    move.shift(16 * 60)
    read_afresh(move.jellyfin, ALEX_JF)
    move.settle()


def watched_months_ago(move: Move) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """S5E1-3 watched on Plex months ago (watchbridge sent them); S5E4 long before watchbridge
    (Trakt and Serializd hold it, watchbridge never saw it). What Trakt and Serializd hold."""
    move.shift(-120 * DAY)
    for number in (1, 2, 3):
        move.watch_on_plex(number)
        move.settle()
        move.shift(DAY)
    move.shift(120 * DAY - 3 * DAY)
    show = move.trakt.shows[-1]
    move.trakt.add_history(show.seasons[5].episodes[4], "2019-03-01T20:00:00.000Z")
    move.serializd.log_entry(None, BREAKING_BAD, 5, 4, backdate="2019-03-01T20:00:00Z")
    move.serializd.tick(None, BREAKING_BAD, 5, 4)
    before_trakt, before_diary = move.trakt_plays(), move.diary()
    assert len(before_trakt) == 4 and len(before_diary) == 4
    return before_trakt, before_diary


def test_watched_on_plex_then_days_later_on_jellyfin_is_two_viewings(move: Move) -> None:
    move.watch_on_plex(14)
    move.settle()
    move.shift(3 * DAY)
    move.watch_on_jellyfin(14)
    move.settle()
    catch_up_rounds(move)
    assert [n for n, _ in move.trakt_plays()] == [14, 14]
    assert [n for n, _ in move.diary()] == [14, 14]


def test_watched_on_plex_then_marked_played_in_jellyfin_that_evening_is_one(move: Move) -> None:
    move.watch_on_plex(14)
    move.settle()
    move.shift(2 * 3600)  # later that evening: catching Jellyfin up by hand
    move.mark_in_jellyfin(14)
    move.settle()
    catch_up_rounds(move)
    assert [n for n, _ in move.trakt_plays()] == [14]
    assert [n for n, _ in move.diary()] == [14]


def test_a_season_watched_on_plex_marked_played_in_jellyfin_adds_nothing(move: Move) -> None:
    # Months ago on Plex (watchbridge sent them), and long before watchbridge (Trakt and
    # Serializd hold it, watchbridge never saw it): the whole season marked played in
    # Jellyfin to catch it up. Nothing is added, and nothing is dated today.
    before_trakt, before_diary = watched_months_ago(move)
    for number in (1, 2, 3, 4):
        move.mark_in_jellyfin(number)
    move.settle()
    catch_up_rounds(move)
    assert move.trakt_plays() == before_trakt
    assert move.diary() == before_diary


def test_jellyfins_trakt_plugin_importing_plexs_plays_adds_nothing(move: Move) -> None:
    # Jellyfin's Trakt plugin imports the watched states daily (SaveReason Import, which the
    # webhook ignores), dated as Trakt has them: the catch-up finds those plays, webhook-less.
    done = move.watch_on_plex(5)
    move.settle()
    move.shift(6 * 3600)
    item, _ = EPISODES[5]
    move.jellyfin.mark_played(ALEX_JF, item, done)
    move.jellyfin.user_data[(ALEX_JF, item)]["saved"] = move.clock()
    catch_up_rounds(move)
    assert [n for n, _ in move.trakt_plays()] == [5]
    assert [n for n, _ in move.diary()] == [5]


def test_a_rewatch_stopped_before_the_credits_then_marked_played_in_jellyfin_counts(
    move: Move,
) -> None:
    # Watched years ago (Trakt and Serializd hold it); watched again in Jellyfin tonight,
    # stopped at the credits (85 %, short of Jellyfin's played mark), then marked played:
    # Jellyfin's count holds that start (a dated mark adds one). A viewing, not a catch-up.
    show = move.trakt.shows[-1]
    move.trakt.add_history(show.seasons[5].episodes[14], "2019-03-01T20:00:00.000Z")
    move.serializd.log_entry(None, BREAKING_BAD, 5, 14, backdate="2019-03-01T20:00:00Z")
    item, _ = EPISODES[14]
    began = move.clock()
    move.jellyfin_hook(episode(14, "PlaybackStart", began, position=0.0))
    move.jellyfin.play(ALEX_JF, item, began, finished=False)
    move.shift(40 * 60)
    move.jellyfin_hook(episode(14, "PlaybackStop", move.clock(), position=0.85))
    move.shift(5 * 60)
    move.mark_in_jellyfin(14, counted=True)
    move.settle()
    catch_up_rounds(move)
    assert [n for n, _ in move.trakt_plays()] == [14, 14]
    assert [n for n, _ in move.diary()] == [14, 14]


def by_item_history_reads(move: Move) -> int:
    """Trakt's history and watched-count reads made to tell whether marks were watched."""
    return move.trakt.count("GET", "/sync/history/{type}/{id}") + move.trakt.count(
        "GET", "/sync/watched/{type}"
    )


def test_a_season_trakt_held_before_watchbridge_marked_played_costs_one_read(move: Move) -> None:
    # Watched long before watchbridge (Trakt and Serializd hold it, watchbridge never wrote
    # it): the season marked played in Jellyfin. Nothing is added, and Trakt is read once for
    # all of it, not once per episode (a library's import would be thousands of reads).
    show = move.trakt.shows[-1]
    for number in range(1, 9):
        move.trakt.add_history(show.seasons[5].episodes[number], "2019-03-01T20:00:00.000Z")
        move.serializd.log_entry(None, BREAKING_BAD, 5, number, backdate="2019-03-01T20:00:00Z")
    before_trakt, before_diary = move.trakt_plays(), move.diary()
    for number in range(1, 9):
        move.mark_in_jellyfin(number)
    move.settle()
    catch_up_rounds(move)
    assert move.trakt_plays() == before_trakt
    assert move.diary() == before_diary
    assert by_item_history_reads(move) == 1


def test_marks_of_what_watchbridge_sent_to_trakt_ask_trakt_nothing(move: Move) -> None:
    # Watched on Plex (watchbridge wrote them to Trakt), then marked played in Jellyfin: what
    # watchbridge wrote answers, Trakt is not asked.
    for number in (1, 2, 3):
        move.watch_on_plex(number)
        move.settle()
        move.shift(DAY)
    before = move.trakt_plays()
    for number in (1, 2, 3):
        move.mark_in_jellyfin(number)
    move.settle()
    catch_up_rounds(move)
    assert move.trakt_plays() == before
    assert by_item_history_reads(move) == 0


def test_marks_wait_while_trakt_cannot_say_what_it_holds(move: Move) -> None:
    # The read telling whether Trakt holds them fails (Trakt overloaded): the marks wait and
    # are not sent meanwhile; once it reads, they add nothing.
    show = move.trakt.shows[-1]
    move.trakt.add_history(show.seasons[5].episodes[6], "2019-03-01T20:00:00.000Z")
    before = move.trakt_plays()
    move.trakt.fail_next(1, 503, route="/sync/watched/{type}")
    move.trakt.fail_next(1, 503, route="/sync/history/{type}/{id}")
    move.mark_in_jellyfin(6)
    # Its delivery asked Trakt (refused), and is done or waits for a later try.
    wait_for(lambda: by_item_history_reads(move) >= 1)
    move.settle()
    assert move.trakt_plays() == before
    assert move.trakt.count("POST", "/sync/history") == 0
    move.shift(10 * 60)
    move.settle()
    catch_up_rounds(move)
    assert move.trakt_plays() == before


# -- marks the webhooks never told of: only the catch-up finds them ------------------------------
def mark_season_unheard(move: Move, numbers: range | tuple[int, ...]) -> None:
    """ "Mark played" of the season in Jellyfin, its episodes at once (one date), with no
    webhook: the plugin's *User Data Saved* not ticked, or watchbridge down."""
    at = move.clock()
    for number in numbers:
        move.jellyfin.mark_played(ALEX_JF, EPISODES[number][0], at, counted=True)


def test_a_season_marked_played_no_webhook_told_of_adds_nothing(move: Move) -> None:
    # The plugin's User Data Saved is not ticked: the catch-up alone finds the marks, within
    # a read, and takes them for marks as a webhook's would be.
    before_trakt, before_diary = watched_months_ago(move)
    mark_season_unheard(move, (1, 2, 3, 4))
    catch_up_rounds(move)
    assert move.trakt_plays() == before_trakt
    assert move.diary() == before_diary


def test_one_episode_marked_played_no_webhook_told_of_adds_nothing(move: Move) -> None:
    # One episode, no others marked with it: found by the read after it, sooner than a viewing
    # of it could have ended (a viewing is dated when it began, played only at its end).
    before_trakt, before_diary = watched_months_ago(move)
    mark_season_unheard(move, (2,))
    catch_up_rounds(move)
    assert move.trakt_plays() == before_trakt
    assert move.diary() == before_diary


def test_a_season_marked_played_while_watchbridge_was_down_adds_nothing(move: Move) -> None:
    # Found two days after the marks: episodes marked at once, within the second, were no
    # viewings (no two begin together on one account).
    before_trakt, before_diary = watched_months_ago(move)
    move.stop()
    mark_season_unheard(move, (1, 2, 3, 4))
    move.shift(2 * DAY)
    move.start()
    catch_up_rounds(move)
    assert move.trakt_plays() == before_trakt
    assert move.diary() == before_diary


def test_an_episode_never_watched_marked_played_no_webhook_told_of_is_one_play(
    move: Move,
) -> None:
    watched_months_ago(move)
    marked = move.clock()
    mark_season_unheard(move, (9,))
    catch_up_rounds(move)
    day = day_of(stamp(marked))
    assert [(n, day_of(at)) for n, at in move.trakt_plays() if n == 9] == [(9, day)]
    assert [(n, day_of(at)) for n, at in move.diary() if n == 9] == [(9, day)]


def test_a_viewing_in_jellyfin_while_watchbridge_was_down_of_what_plex_played_is_a_play(
    move: Move,
) -> None:
    # A viewing, not a mark: dated when it began, played at its end, one on its own.
    before_trakt, before_diary = watched_months_ago(move)
    move.stop()
    began = move.clock()
    move.shift(45 * 60)
    move.jellyfin.play(ALEX_JF, EPISODES[2][0], began)
    move.shift(DAY)
    move.start()
    catch_up_rounds(move)
    assert sorted(n for n, _ in move.trakt_plays()) == sorted([n for n, _ in before_trakt] + [2])
    assert sorted(n for n, _ in move.diary()) == sorted([n for n, _ in before_diary] + [2])


def test_a_viewing_in_jellyfin_its_webhooks_lost_of_what_plex_played_is_a_play(
    move: Move,
) -> None:
    # Its webhooks refused (a proxy down): the next read finds it played a viewing's length
    # after it began. A viewing, sent as one.
    watched_months_ago(move)
    began = move.clock()
    move.shift(45 * 60)
    move.jellyfin.play(ALEX_JF, EPISODES[3][0], began)
    catch_up_rounds(move)
    assert [n for n, _ in move.trakt_plays()].count(3) == 2
    assert [n for n, _ in move.diary()].count(3) == 2
