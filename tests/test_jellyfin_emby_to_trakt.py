"""Jellyfin and Emby webhooks through the running app to the fake Trakt: what Trakt ends up
holding, and what the user is told of what it cannot."""

from __future__ import annotations

import contextlib
import copy
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, JELLYFIN_SERIES, FakeJellyfin, sample_server
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, Rating, iso, key_of
from tests.harness import AppThread, nothing_waits, sign_in_trakt, wait_for
from tests.ingest_samples import sample_json
from watchbridge import webhooks
from watchbridge.app import Runtime, create_app
from watchbridge.config import Config, parse_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "media-servers-to-trakt-secret"


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    return fake


def media_servers_config(tmp_path: Path, trakt: FakeTrakt, servers: str = "") -> Config:
    """Jellyfin's and Emby's alex to the fake Trakt; `servers`: more lines under `services`."""
    return parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
{servers}
profiles:
  me: {{users: {{jellyfin: [alex], emby: [alex]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )


@contextlib.contextmanager
def running_app(tmp_path: Path, trakt: FakeTrakt, servers: str = "") -> Iterator[AppThread]:
    """The app delivering to the fake Trakt; `servers`: more lines under `services`."""
    runtime = build_runtime(media_servers_config(tmp_path, trakt, servers))
    with AppThread(build_app(runtime)) as thread:
        sign_in_trakt(runtime.store, trakt, now=time.time())
        yield thread


@pytest.fixture
def app(tmp_path: Path, trakt: FakeTrakt) -> Iterator[AppThread]:
    with running_app(tmp_path, trakt) as thread:
        yield thread


@pytest.fixture
def webhook_url(app: AppThread) -> str:
    return f"{app.url}/webhooks/jellyfin/{SECRET}"


def unmatched_reason(db: Path) -> str:
    """Why the one queued play waits for ids, once it does."""
    found: list[str] = []

    def waiting() -> bool:
        with sqlite3.connect(db) as conn:
            found[:] = [row[0] for row in conn.execute("SELECT last_error FROM outbox")]
        return bool(found) and all((f or "").startswith("unmatched") for f in found)

    wait_for(waiting)
    (reason,) = found
    return reason


def held_reason(db: Path) -> tuple[int, str]:
    """The attempts the one queued play spent and why it waits, once it does."""
    found: list[tuple[int, str | None]] = []

    def waiting() -> bool:
        with sqlite3.connect(db) as conn:
            found[:] = conn.execute("SELECT attempts, last_error FROM outbox").fetchall()
        return bool(found) and all(reason for _, reason in found)

    wait_for(waiting)
    ((attempts, reason),) = found
    return attempts, reason or ""


def test_part_two_of_a_two_part_episode_sharing_an_imdb_id_is_scrobbled_as_itself(
    webhook_url: str, trakt: FakeTrakt
) -> None:
    # Jellyfin's TMDB metadata: no TVDB id, and one IMDb id for both parts.
    show = trakt.add_show("Doctor Who", 2005, tvdb=78804, tmdb=57243, imdb="tt0436992")
    trakt.add_episode(show, 4, 17, title="The End of Time (1)", imdb="tt1533581", tmdb=1000417)
    trakt.add_episode(show, 4, 18, title="The End of Time (2)", imdb="tt1533581", tmdb=1000418)
    body = sample_json("jellyfin", "playback_stop_episode_completed.json") | {
        "Name": "The End of Time (2)",
        "SeriesName": "Doctor Who",
        "Year": 2005,
        "SeasonNumber": 4,
        "EpisodeNumber": 18,
        "Provider_imdb": "tt1533581",
        "Provider_tmdb": "1000418",
    }
    del body["Provider_tvdb"]
    assert httpx.post(webhook_url, json=body).status_code == 202
    wait_for(lambda: len(trakt.history()) == 1)
    (entry,) = trakt.history()
    assert (entry.item.season, entry.item.number) == (4, 18)


def test_a_favourite_in_jellyfin_does_not_set_back_a_rating_changed_on_trakt(
    webhook_url: str, trakt: FakeTrakt, tmp_path: Path
) -> None:
    arrival = trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    rated = sample_json("jellyfin", "user_data_saved_update_rating_movie.json") | {"Rating": 8}
    assert httpx.post(webhook_url, json=rated).status_code == 202
    wait_for(lambda: [r.rating for r in trakt.ratings()] == [8])
    trakt.user.ratings[key_of(arrival)] = Rating(arrival, 6, iso(trakt.now()))  # on trakt.tv
    time.sleep(1.1)  # a later second: not the same change sent twice
    favourite = rated | {"Favorite": True}  # Jellyfin sends the stored 8 with it
    assert httpx.post(webhook_url, json=favourite).status_code == 202
    # What it queued (stored before the answer), if anything, has been sent or refused.
    wait_for(lambda: nothing_waits(tmp_path / "wb.db"))
    assert [r.rating for r in trakt.ratings()] == [6]


def test_a_rating_cleared_in_jellyfin_is_removed_from_trakt(
    webhook_url: str, trakt: FakeTrakt, tmp_path: Path
) -> None:
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    rated = sample_json("jellyfin", "user_data_saved_update_rating_movie.json") | {
        "Rating": 8,
        "Likes": None,
    }
    assert httpx.post(webhook_url, json=rated).status_code == 202
    wait_for(lambda: [r.rating for r in trakt.ratings()] == [8])
    time.sleep(1.1)  # a later second: not the same change sent twice
    assert httpx.post(webhook_url, json=rated | {"Rating": 0}).status_code == 202
    wait_for(lambda: nothing_waits(tmp_path / "wb.db"))
    assert trakt.ratings() == []


def emby(name: str) -> dict[str, Any]:
    body = copy.deepcopy(sample_json("emby", name))
    body["Date"] = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime())
    return body


def test_an_emby_episode_trakt_lost_the_tvdb_id_of_names_the_setting_that_places_it(
    app: AppThread, trakt: FakeTrakt, tmp_path: Path
) -> None:
    # Emby names the episode by its own TVDB id (and IMDb id), which Trakt no longer knows:
    # only the show read from Emby (services.emby) places it by its numbers.
    show = trakt.add_show("Breaking Bad", 2008, tvdb=81189, tmdb=1396, imdb="tt0903747")
    trakt.add_episode(show, 5, 14, title="Ozymandias")
    played = emby("playback_stop_episode_completed.json")
    assert httpx.post(f"{app.url}/webhooks/emby/{SECRET}", json=played).status_code == 202
    assert "services.emby" in unmatched_reason(tmp_path / "wb.db")


def test_an_emby_movie_played_before_emby_identified_it_names_the_setting_that_finds_it(
    app: AppThread, trakt: FakeTrakt, tmp_path: Path
) -> None:
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    marked = emby("item_markplayed_movie.json")
    marked["Item"]["UserData"]["LastPlayedDate"] = marked["Date"]
    marked["Item"]["ProviderIds"] = {}  # a fresh file Emby has not matched yet
    assert httpx.post(f"{app.url}/webhooks/emby/{SECRET}", json=marked).status_code == 202
    reason = unmatched_reason(tmp_path / "wb.db")
    assert "services.emby" in reason and "identify it there" not in reason


def jellyfin_episode_without_ids() -> dict[str, Any]:
    """The Jellyfin sample stop of Breaking Bad S05E14, its provider ids not sent (a fresh file,
    or a template without them): its show is read from the server by SeriesId."""
    body = sample_json("jellyfin", "playback_stop_episode_completed.json")
    for name in ("Provider_tvdb", "Provider_tmdb", "Provider_imdb"):
        del body[name]
    return body


@pytest.mark.parametrize("flavour", ["jellyfin", "emby"])
def test_a_server_url_that_misses_the_api_names_the_url_not_the_show(
    tmp_path: Path,
    trakt: FakeTrakt,
    start_fake: Callable[[FakeServer], FakeServer],
    flavour: Literal["jellyfin", "emby"],
) -> None:
    # The server sits behind a reverse proxy at another path than services.*.url says: every
    # API path answers 404. "Identify the show in Jellyfin" cannot help; the URL is the fix.
    # Such 404s are also what the proxy answers while the server restarts: the play waits as
    # in an outage (no try spent), its reason naming the URL to check if it lasts.
    server = sample_server(start_fake, flavour)
    show = trakt.add_show("Breaking Bad", 2008, tvdb=81189, tmdb=1396, imdb="tt0903747")
    trakt.add_episode(show, 5, 14, title="Ozymandias")
    line = f'  {flavour}: {{url: "{server.url}/{flavour}", api_key: "{API_KEY}"}}'
    with running_app(tmp_path, trakt, line) as app:
        if flavour == "jellyfin":
            body = jellyfin_episode_without_ids()
        else:
            body = emby("playback_stop_episode_completed.json")
            body["Item"]["ProviderIds"] = {}
        assert httpx.post(f"{app.url}/webhooks/{flavour}/{SECRET}", json=body).status_code == 202
        attempts, reason = held_reason(tmp_path / "wb.db")
    assert f"services.{flavour}.url" in reason, reason
    assert "identify it there" not in reason and not reason.startswith("unmatched")
    assert attempts == 0


def test_an_emby_star_rating_lands_in_trakts_ratings(app: AppThread, trakt: FakeTrakt) -> None:
    # Issue 3: ratings reach POST /sync/ratings from Emby's rating events too, not only Plex's.
    arrival = trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    rated = emby("item_rate_favorite_movie.json")
    rated["Item"]["UserData"] |= {"Rating": 7, "IsFavorite": False}  # 7 of Emby's 10
    assert httpx.post(f"{app.url}/webhooks/emby/{SECRET}", json=rated).status_code == 202
    wait_for(lambda: [(r.item, r.rating) for r in trakt.ratings()] == [(arrival, 7)])


@contextlib.contextmanager
def full_after_the_first_event(runtime: Runtime, db: Path) -> Iterator[None]:
    """The disk fills up as the next webhook's second event is written (a 1 MB write the
    database cannot take: SQLite's own limit on the service's connection), and has room
    again afterwards."""
    conn = runtime.store._conn
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as look:
        (events,) = look.execute("SELECT COUNT(*) FROM events").fetchone()
        look.execute("CREATE TABLE ballast (filler BLOB)")
        look.execute(
            "CREATE TRIGGER fills_the_disk BEFORE INSERT ON events"
            f" WHEN (SELECT COUNT(*) FROM events) > {events}"
            " BEGIN INSERT INTO ballast VALUES (zeroblob(1048576)); END"
        )
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (room,) = conn.execute("PRAGMA max_page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages + 64}")
        try:
            yield
        finally:
            look.execute("DROP TRIGGER fills_the_disk")
            conn.execute(f"PRAGMA max_page_count = {room}")


def test_a_double_episode_webhook_refused_halfway_by_a_full_disk_is_recorded_once_sent_again(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # Jellyfin sends nothing again by itself; a proxy or a user does, on the 503's Retry-After.
    # Its first episode stored before the disk filled would then be stored a second time.
    show = trakt.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    for number in (14, 15):
        trakt.add_episode(show, 5, number, tvdb=4000000 + number)
    body = sample_json("jellyfin", "playback_stop_episode_completed.json")
    body |= {"NotificationUsername": "alex", "EpisodeNumberEnd": 15}  # S05E14-E15 in one file
    body |= {"Provider_tvdb": "4000014", "Provider_imdb": "", "Provider_tmdb": ""}
    db = tmp_path / "wb.db"
    runtime = build_runtime(media_servers_config(tmp_path, trakt))
    with AppThread(build_app(runtime)) as app:
        sign_in_trakt(runtime.store, trakt, now=time.time())
        url = f"{app.url}/webhooks/jellyfin/{SECRET}"
        with full_after_the_first_event(runtime, db):
            refused = httpx.post(url, json=body)
        again = httpx.post(url, json=body)
        wait_for(lambda: len(trakt.history()) == 2 and nothing_waits(db))
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "60"
    assert "is full" in refused.json()["error"]
    assert again.json() == {"status": "accepted", "queued": 2}
    with contextlib.closing(sqlite3.connect(db)) as look:
        stored = look.execute("SELECT json_extract(payload, '$.item.number') FROM events")
        assert sorted(number for (number,) in stored) == [14, 15]
    assert sorted((h.item.season, h.item.number) for h in trakt.history()) == [(5, 14), (5, 15)]


def test_webhooks_of_one_group_commit_a_full_disk_rolled_back_whole_are_all_refused_as_full(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # A full disk met by a plain INSERT (or an I/O error) makes SQLite roll back the whole
    # transaction by itself, the rows of the webhooks recorded before it in the same group
    # commit with it: each is refused, and each answer must say the disk is full, not that a
    # savepoint or a rollback failed (no storage alert would say what to do).
    show = trakt.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    for number in (13, 14):
        trakt.add_episode(show, 5, number, tvdb=4000000 + number)
    body = sample_json("jellyfin", "playback_stop_episode_completed.json")
    body |= {"NotificationUsername": "alex", "Provider_imdb": "", "Provider_tmdb": ""}
    small = body | {"EpisodeNumber": 13, "Provider_tvdb": "4000013"}
    # Its raw JSON alone takes more pages than the database has room for.
    large = body | {"EpisodeNumber": 14, "Provider_tvdb": "4000014", "Overview": "x" * 400_000}
    # Whether the two meet in one group is the writer thread's timing (on a loaded machine one
    # may be claimed alone): the scenario is tried again, on a fresh database, until they do.
    for attempt in range(5):
        folder = tmp_path / f"attempt-{attempt}"
        folder.mkdir()
        met = _two_webhooks_in_one_full_group(folder, trakt, small, large)
        if met is not None:
            break
    assert met is not None, "the two webhooks never met in one group commit"
    answers, again, db = met
    for name in ("small", "large"):
        assert answers[name].status_code == 503, answers[name].text
        assert "database or disk is full" in answers[name].json()["error"], answers[name].text
        assert f"the disk holding {db} is full" in answers[name].json()["error"]
    assert [a.json() for a in again] == [{"status": "accepted", "queued": 1}] * 2
    with contextlib.closing(sqlite3.connect(db)) as look:
        stored = look.execute("SELECT json_extract(payload, '$.item.number') FROM events")
        assert sorted(number for (number,) in stored) == [13, 14]


def _two_webhooks_in_one_full_group(
    folder: Path, trakt: FakeTrakt, small: dict[str, Any], large: dict[str, Any]
) -> tuple[dict[str, httpx.Response], list[httpx.Response], Path] | None:
    """Post `small` and `large` while a shell holds the write lock, so that one group commit
    takes both, with the database's room capped; then both again with room. Their answers
    and the database, or None when the writer took them in two groups."""
    db = folder / "wb.db"
    runtime = build_runtime(media_servers_config(folder, trakt))
    # The webhook routes alone, no background task: nothing else takes the database meanwhile.
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        url = f"{app.url}/webhooks/jellyfin/{SECRET}"
        conn = runtime.store._conn
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (room,) = conn.execute("PRAGMA max_page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages + 40}")
        answers: dict[str, httpx.Response] = {}

        def post(name: str, sent: dict[str, Any]) -> None:
            answers[name] = httpx.post(url, json=sent)

        posts = [
            threading.Thread(target=post, args=sent)
            for sent in (("small", small), ("large", large))
        ]
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as shell:
            shell.execute("BEGIN IMMEDIATE")  # both wait for it: one group commit takes both
            for thread in posts:
                thread.start()
            deadline = time.monotonic() + 4
            while len(runtime.writer._pending) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            met = len(runtime.writer._pending) == 2
            shell.execute("COMMIT")
            for thread in posts:
                thread.join()
        conn.execute(f"PRAGMA max_page_count = {room}")
        again = [httpx.post(url, json=sent) for sent in (small, large)]
    return (answers, again, db) if met else None


def series_id_mixup(trakt: FakeTrakt) -> None:
    """Show B (TVDB 81189) and show A, whose S03E07 has TVDB id 81189 (TVDB numbers episodes
    and series apart), and whose TMDB and IMDb episode ids equal B's series ids too."""
    other = trakt.add_show("Show A", 1999, tvdb=70001, tmdb=500, imdb="tt0000001")
    trakt.add_episode(other, 3, 7, title="Elsewhere", tvdb=81189, tmdb=1400, imdb="tt0000002")
    ours = trakt.add_show("Show B", 2010, tvdb=81189, tmdb=1400, imdb="tt0000002")
    trakt.add_episode(ours, 1, 1, title="First", tvdb=90001, tmdb=90011)
    trakt.add_episode(ours, 1, 2, title="Second", tvdb=90002, tmdb=90012)


def jellyfin_episode(series: str, season: int, number: int, **provider_ids: str) -> dict[str, Any]:
    """The Jellyfin sample stop, of `series` SxxEyy with these provider ids only."""
    body = jellyfin_episode_without_ids() | {
        "Name": "Second",
        "SeriesName": series,
        "SeasonNumber": season,
        "EpisodeNumber": number,
    }
    return body | {f"Provider_{name}": value for name, value in provider_ids.items()}


def played_on_trakt(trakt: FakeTrakt) -> list[tuple[str, int, int]]:
    return [(e.item.show.title, e.item.season, e.item.number) for e in trakt.history()]


@pytest.mark.parametrize("own", [{"tvdb": "81189"}, {"tmdb": "1400", "imdb": "tt0000002"}])
def test_an_episode_carrying_its_series_ids_as_its_own_lands_on_its_own_show(
    tmp_path: Path,
    trakt: FakeTrakt,
    start_fake: Callable[[FakeServer], FakeServer],
    own: dict[str, str],
) -> None:
    # A wrong NFO gave B's S01E02 its series' ids: by them Trakt finds show A's S03E07 (sent
    # by TVDB id, or by what the id search gives for the TMDB id).
    series_id_mixup(trakt)
    server = start_fake(FakeJellyfin())
    assert isinstance(server, FakeJellyfin)
    server.add_series(JELLYFIN_SERIES, "Show B", Tvdb="81189", Tmdb="1400", Imdb="tt0000002")
    line = f'  jellyfin: {{url: "{server.url}", api_key: "{API_KEY}"}}'
    with running_app(tmp_path, trakt, line) as app:
        body = jellyfin_episode("Show B", 1, 2, **own) | {"SeriesId": JELLYFIN_SERIES}
        assert httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", json=body).status_code == 202
        wait_for(lambda: nothing_waits(tmp_path / "wb.db"))
    assert played_on_trakt(trakt) == [("Show B", 1, 2)]


def test_an_episode_carrying_its_series_id_that_nothing_places_stays_unmatched_saying_why(
    app: AppThread, trakt: FakeTrakt, tmp_path: Path
) -> None:
    series_id_mixup(trakt)  # no services.jellyfin: B's series cannot be read
    body = jellyfin_episode("Show B", 1, 2, tvdb="81189")
    assert httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", json=body).status_code == 202
    # One sentence: what is wrong, what to do, then briefly what else would help.
    assert unmatched_reason(tmp_path / "wb.db") == (
        "unmatched: the episode's TVDB id 81189 names Show A S03E07 on Trakt, likely its"
        " series' id put there by an NFO or metadata agent: refresh the episode's metadata"
        " (setting services.jellyfin.url and services.jellyfin.api_key would also help, to read"
        " its show there)"
    )
    assert trakt.history() == []


def test_an_anime_episode_numbered_absolutely_still_goes_where_its_own_id_names_it(
    app: AppThread, trakt: FakeTrakt
) -> None:
    # Numbers that differ alone prove nothing: Jellyfin's one long season of One Piece.
    show = trakt.add_show("One Piece", 1999, tvdb=81797, tmdb=37854)
    trakt.add_episode(show, 21, 108, title="Luffy's Dream", tmdb=5000001)
    body = jellyfin_episode("One Piece", 1, 1000, tmdb="5000001")
    assert httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", json=body).status_code == 202
    wait_for(lambda: played_on_trakt(trakt) == [("One Piece", 21, 108)])


def test_an_episode_under_a_localised_show_title_still_goes_where_its_own_id_names_it(
    app: AppThread, trakt: FakeTrakt
) -> None:
    # A title that differs alone proves nothing: the library's metadata is in Spanish.
    show = trakt.add_show("Money Heist", 2017, tvdb=327417, tmdb=71446)
    trakt.add_episode(show, 1, 2, title="Episode 2", tmdb=1384512)
    body = jellyfin_episode("La casa de papel", 1, 2, tmdb="1384512")
    assert httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", json=body).status_code == 202
    wait_for(lambda: played_on_trakt(trakt) == [("Money Heist", 1, 2)])


def test_a_jellyfin_episode_known_by_its_own_tvdb_id_alone_is_looked_up_before_its_start(
    app: AppThread, trakt: FakeTrakt
) -> None:
    # Its TVDB id may be an NFO's, and so its series' id: Trakt's id search tells, before the
    # scrobble would put it on whatever episode that id names (see the Plex counterpart in
    # test_plex_and_tautulli_to_trakt.py, whose ids come from Plex's metadata servers).
    show = trakt.add_show("Breaking Bad", 2008, tvdb=81189, tmdb=1396)
    trakt.add_episode(show, 5, 14, title="Ozymandias", tvdb=4637661)
    body = sample_json("jellyfin", "playback_start_episode.json")
    for name in ("Provider_tmdb", "Provider_imdb"):
        del body[name]
    assert httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", json=body).status_code == 202
    wait_for(lambda: trakt.watching() is not None)
    with trakt.lock:
        asked = [r.route or r.path for r in trakt.requests]
    assert "/search/{id_type}/{id}" in asked[: asked.index("/scrobble/start")], asked


def test_a_tvdb_ordered_episode_under_a_localised_title_goes_where_its_own_tmdb_id_names_it(
    tmp_path: Path, trakt: FakeTrakt, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # A Japanese library in TheTVDB's order: its S02E14 is TMDB's (and Trakt's) S01E39. Title
    # and numbers both differ from what the episode's own TMDB id names, and an older show has
    # that number as its TMDB id (TMDB numbers shows and episodes apart), so that answer waits
    # for Jellyfin to name the show; it agrees: the show's numbers would name another episode.
    trakt.add_show("An Older Show", 1987, tmdb=2039)
    show = trakt.add_show("Re:ZERO -Starting Life in Another World-", 2016, tvdb=305089, tmdb=65942)
    trakt.add_episode(show, 1, 39, title="From Zero", tmdb=2039)
    trakt.add_episode(show, 2, 14, title="Another episode", tmdb=2214)
    server = start_fake(FakeJellyfin())
    assert isinstance(server, FakeJellyfin)
    title = "Re:ゼロから始める異世界生活"
    server.add_series(JELLYFIN_SERIES, title, Tvdb="305089", Tmdb="65942")
    line = f'  jellyfin: {{url: "{server.url}", api_key: "{API_KEY}"}}'
    with running_app(tmp_path, trakt, line) as app:
        body = jellyfin_episode(title, 2, 14, tmdb="2039") | {"SeriesId": JELLYFIN_SERIES}
        assert httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", json=body).status_code == 202
        wait_for(lambda: nothing_waits(tmp_path / "wb.db"))
    assert played_on_trakt(trakt) == [("Re:ZERO -Starting Life in Another World-", 1, 39)]
    # The episode's and the show's lookups of that id, judged again from the cache.
    assert trakt.count("GET", "/search/{id_type}/{id}") == 2


@pytest.mark.parametrize("kind", ["tvdb", "tmdb"])
def test_an_anime_episode_numbered_absolutely_under_its_japanese_title_goes_by_its_own_id(
    app: AppThread, trakt: FakeTrakt, kind: str
) -> None:
    # Numbers and title both differ from what its own id names, and no services.jellyfin names
    # its show: that id names no show on Trakt, so it is no series' id put there by an NFO.
    show = trakt.add_show("One Piece", 1999, tvdb=81797, tmdb=37854)
    trakt.add_episode(show, 21, 108, title="Luffy's Dream", **{kind: 9000001})
    body = jellyfin_episode("ワンピース", 1, 1000, **{kind: "9000001"})
    assert httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", json=body).status_code == 202
    wait_for(lambda: played_on_trakt(trakt) == [("One Piece", 21, 108)])
