"""Plex webhooks of episodes the HAMA anime agent matched, through the running app to the fake
Trakt and Serializd: an episode whose numbers place nothing (its show's mode numbers them in a
way not known, or its guid and its show's disagree) waits as unmatched with why and what to
do, never sent by those numbers; one HAMA numbers in a known mode goes as before."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from tests.fakes.plex import TOKEN as PLEX_TOKEN
from tests.fakes.plex import FakePlex
from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, sign_in_trakt
from tests.ingest_samples import HAMA, hama_scrobble, sample_json
from watchbridge.cli import cli
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "hama-webhooks-secret-0123"
RE_ZERO_TVDB, RE_ZERO_TMDB, RE_ZERO_ANIDB_P2 = 305089, 65942, 15593
ONE_PIECE_TVDB, ONE_PIECE_TMDB = 81797, 37854


MIXED = f"anidb-{RE_ZERO_ANIDB_P2}/1/3"  # Re:Zero S2 Part 2's episode 3 in AniDB's numbers
TVDB5 = f"tvdb5-{ONE_PIECE_TVDB}/22/1100"  # a numbering the reference does not define
PLACED = f"tvdb-{RE_ZERO_TVDB}/1/4"  # TheTVDB's seasons: placed as it always was
PLAYS = [
    # in a show matched again by TheTVDB: its numbers are no S1E3
    hama_scrobble("11", "Re:ZERO", MIXED, f"{HAMA}tvdb-{RE_ZERO_TVDB}"),
    hama_scrobble("12", "One Piece", TVDB5, f"{HAMA}tvdb5-{ONE_PIECE_TVDB}"),
    hama_scrobble("13", "Re:ZERO", PLACED, f"{HAMA}tvdb-{RE_ZERO_TVDB}"),
]


def trakt_fake(start_fake: Callable[[Any], Any]) -> FakeTrakt:
    trakt = start_fake(FakeTrakt())
    re_zero = trakt.add_show("Re:ZERO", 2016, tvdb=RE_ZERO_TVDB, tmdb=RE_ZERO_TMDB)
    for number in range(1, 26):
        trakt.add_episode(re_zero, 1, number)
    trakt.add_episode(re_zero, 2, 16)  # where TheTVDB places S2 Part 2's episode 3
    one_piece = trakt.add_show("One Piece", 1999, tvdb=ONE_PIECE_TVDB, tmdb=ONE_PIECE_TMDB)
    trakt.add_episode(one_piece, 21, 208, number_abs=1100)
    assert isinstance(trakt, FakeTrakt)
    return trakt


def settled(db: Path) -> bool:
    """Every row queued was tried: delivered, or waiting to be tried again."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (queued,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
        # A row waiting without spending a try (an unplaced HAMA episode) says why.
        (untried,) = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE status = 'inflight'"
            " OR (status = 'pending' AND attempts = 0 AND last_error IS NULL)"
        ).fetchone()
    return bool(queued) and not untried


@contextlib.contextmanager
def scrobbled(
    tmp_path: Path, config: str, plays: list[dict[str, Any]], trakt: FakeTrakt | None = None
) -> Iterator[AppThread]:
    """The app (`config`: its services and profiles), once every one of `plays` (Plex's, or
    Tautulli's bodies) went through its webhook and every row it queued was tried."""
    db = tmp_path / "wb.db"
    head = f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {db}}}\n"
    runtime = build_runtime(parse_config(head + config, Path("watchbridge.yaml"), {}))
    with AppThread(build_app(runtime)) as app:
        if trakt is not None:
            sign_in_trakt(runtime.store, trakt, now=time.time())
        for play in plays:
            if play.get("source") == "tautulli":
                answer = httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=play)
            else:
                files = {"payload": json.dumps(play)}
                answer = httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files=files)
            assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 20
        while not settled(db) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert settled(db)
        yield app


def statuses(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [status for (status,) in conn.execute("SELECT status FROM outbox ORDER BY id")]


def waiting(db: Path, target: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT last_error FROM outbox WHERE target = ? AND status = 'pending' ORDER BY id",
            (target,),
        ).fetchall()
    return [error for (error,) in rows]


def assert_listed_with_why_and_fix(mixed: str, mode: str) -> None:
    assert mixed.startswith("unmatched: ") and "guids of the episode and of its show" in mixed
    assert "Refresh Metadata" in mixed
    assert mode.startswith("unmatched: ") and "`tvdb5-` mode" in mode
    assert "match the show in HAMA's `anidb-` mode" in mode


def test_trakt_gets_no_guessed_hama_episode(tmp_path: Path, start_fake: Any) -> None:
    # Before: Trakt got Re:Zero S1E3 (the mixed guids' numbers read as TheTVDB's) and One
    # Piece's absolute 1100 (`tvdb5-` read as absolute): two plays never watched.
    trakt = trakt_fake(start_fake)
    config = f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me: {{users: {{plex: ['1']}}, accounts: {{trakt: {{}}}}}}
"""
    with scrobbled(tmp_path, config, PLAYS, trakt) as app:
        listed = httpx.get(f"{app.url}/api/status").json()["unmatched"]
    played = [(e.item.season, e.item.number) for e in trakt.history()]  # type: ignore[union-attr]
    assert played == [(1, 4)]
    assert_listed_with_why_and_fix(*waiting(tmp_path / "wb.db", "trakt"))
    assert listed == 2


def test_serializd_gets_no_guessed_hama_episode(tmp_path: Path, start_fake: Any) -> None:
    # A HAMA show names no TMDB id (Serializd's key): its episodes reach Serializd only when
    # the show was matched again by an agent that does, here the legacy TMDB agent, while
    # its episodes are not yet. Before: Serializd logged Re:Zero S1E3, never watched.
    serializd = start_fake(FakeSerializd())
    serializd.add_show(RE_ZERO_TMDB, "Re:ZERO", {1: 25, 2: 25})
    matched_again = f"com.plexapp.agents.themoviedb://{RE_ZERO_TMDB}?lang=en"
    plays = [
        hama_scrobble("11", "Re:ZERO", MIXED, matched_again),
        hama_scrobble("12", "One Piece", TVDB5, f"{HAMA}tvdb5-{ONE_PIECE_TVDB}"),
        hama_scrobble("13", "Re:ZERO", PLACED, f"{HAMA}tvdb-{RE_ZERO_TVDB}"),
    ]
    config = f"""services:
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    users: {{plex: ['1']}}
    accounts: {{serializd: {{email: "{ALICE[0]}", password: "{ALICE[1]}"}}}}
"""
    with scrobbled(tmp_path, config, plays):
        pass
    assert serializd.diary() == [] and serializd.ticks() == set()
    mixed, mode, placed = waiting(tmp_path / "wb.db", "serializd")
    assert_listed_with_why_and_fix(mixed, mode)
    assert "tmdb 65942" in mixed  # the id the show was matched again by
    # a `tvdb-` episode waits as it always did: for its show's TMDB id
    assert placed.startswith("unmatched: ") and "TMDB id" in placed and "HAMA" not in placed


def test_tautulli_sends_serializd_no_guessed_hama_episode(tmp_path: Path, start_fake: Any) -> None:
    # Tautulli sends no show guid, but its TMDB id for an episode is its show's (from the
    # show's `Guid[]`, which a HAMA show has none of): the show was matched again by another
    # agent, its episodes not yet. Before: Serializd logged Re:Zero S1E3, never watched.
    serializd = start_fake(FakeSerializd())
    serializd.add_show(RE_ZERO_TMDB, "Re:ZERO", {1: 25, 2: 25})
    watched = sample_json("tautulli", "watched_episode.json") | {
        "user_id": "27160034",
        "guid": f"{HAMA}{MIXED}?lang=en",
        "show_name": "Re:ZERO",
        "season_num": "1",
        "episode_num": "3",
        "imdb_id": "",
        "themoviedb_id": str(RE_ZERO_TMDB),
        "thetvdb_id": "",
    }
    config = f"""services:
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    users: {{tautulli: ["27160034"]}}
    accounts: {{serializd: {{email: "{ALICE[0]}", password: "{ALICE[1]}"}}}}
"""
    with scrobbled(tmp_path, config, [watched]):
        pass
    assert serializd.diary() == [] and serializd.ticks() == set()
    (mixed,) = waiting(tmp_path / "wb.db", "serializd")
    assert mixed.startswith("unmatched: ") and "guids of the episode and of its show" in mixed


def test_unplaced_waits_listed_never_a_dead_letter(tmp_path: Path, start_fake: Any) -> None:
    # Before: its one try (max_attempts 1) made each a dead letter, and an alert told of them,
    # though a retry could never place them and the unmatched listing had told the user.
    trakt = trakt_fake(start_fake)
    receiver = start_fake(AlertReceiver())
    config = f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
delivery: {{max_attempts: 1}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
profiles:
  me: {{users: {{plex: ['1']}}, accounts: {{trakt: {{}}}}}}
"""
    with scrobbled(tmp_path, config, PLAYS[:2], trakt):
        pass
    db = tmp_path / "wb.db"
    assert statuses(db) == ["pending", "pending"]
    assert_listed_with_why_and_fix(*waiting(db, "trakt"))
    (tmp_path / "watchbridge.yaml").write_text(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {db}}}\n{config}"
    )
    listed = CliRunner().invoke(cli, ["unmatched", "--config", str(tmp_path / "watchbridge.yaml")])
    assert listed.exit_code == 0, listed.output
    assert "Refresh Metadata" in listed.output and "`tvdb5-` mode" in listed.output
    assert "only the plays after the fix go out" in listed.output  # services.plex not set
    assert receiver.messages == [] and trakt.history() == []


def test_unplaced_goes_out_once_plex_places_it(tmp_path: Path, start_fake: Any) -> None:
    # With services.plex, the waiting play is read again from Plex: once the user refreshed
    # the show's metadata, its episode is TheTVDB's S2E16 and goes out as that. Before: it kept
    # the webhook's guids and never went out.
    trakt = trakt_fake(start_fake)
    plex = start_fake(FakePlex(machine_id="d" * 40))
    plex.add_show("110", "Re:ZERO", guid=f"{HAMA}tvdb-{RE_ZERO_TVDB}?lang=en")
    episode = plex.add_episode("11", "110", 1, 3, guid=f"{HAMA}{MIXED}?lang=en")
    config = f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{PLEX_TOKEN}"}}
profiles:
  me: {{users: {{plex: ['1']}}, accounts: {{trakt: {{}}}}}}
"""
    db = tmp_path / "wb.db"
    with scrobbled(tmp_path, config, PLAYS[:1], trakt):
        pass
    (mixed,) = waiting(db, "trakt")
    assert "Refresh Metadata" in mixed and "read again hourly" in mixed
    assert trakt.history() == []
    # The user refreshes the show's metadata: Plex matches the episode as the show is.
    episode |= {"guid": f"{HAMA}tvdb-{RE_ZERO_TVDB}/2/16?lang=en", "parentIndex": 2, "index": 16}
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE outbox SET next_attempt_at = 0")  # its hour is over
    with scrobbled(tmp_path, config, [], trakt):
        deadline = time.monotonic() + 20
        while statuses(db) != ["done"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert statuses(db) == ["done"]
    played = [(e.item.season, e.item.number) for e in trakt.history()]  # type: ignore[union-attr]
    assert played == [(2, 16)]


def unmatched_gauge(app: AppThread, target: str) -> float:
    line = f'watchbridge_unmatched{{target="{target}"}} '
    text = httpx.get(f"{app.url}/metrics").text
    (value,) = [row.removeprefix(line) for row in text.splitlines() if row.startswith(line)]
    return float(value)


def test_a_waiting_unplaced_play_can_be_given_up_by_its_id(tmp_path: Path, start_fake: Any) -> None:
    # Before: `deadletters discard` refused the id (`not a dead letter`), and nothing else
    # dismissed it: the play waited, counted, for as long as the user never fixed the match.
    trakt = trakt_fake(start_fake)
    config = f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me: {{users: {{plex: ['1']}}, accounts: {{trakt: {{}}}}}}
"""
    db, path = tmp_path / "wb.db", tmp_path / "watchbridge.yaml"
    path.write_text(f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {db}}}\n{config}")

    def watchbridge(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--config", str(path)])

    with scrobbled(tmp_path, config, PLAYS[:2], trakt) as app:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            mixed, mode = (row for (row,) in conn.execute("SELECT id FROM outbox ORDER BY id"))
        listed = watchbridge("unmatched").output
        assert f"#{mixed} " in listed and f"#{mode} " in listed
        assert "to give one up (it is never sent): `watchbridge deadletters discard ID`" in listed
        assert unmatched_gauge(app, "trakt") == 2
        # A webhook's play is no link's to keep off: left waiting, and the command says so.
        kept = watchbridge("deadletters", "discard", str(mode), "--for-good")
        assert kept.exit_code == 1
        assert f"no link's copy of a play: #{mode} (discard them without --for-good)" in kept.output
        # `--all` is the dead letters only: what waits goes by its id.
        assert "0 dead letter(s) discarded" in watchbridge("deadletters", "discard", "--all").output
        assert statuses(db) == ["pending", "pending"]

        given_up = watchbridge("deadletters", "discard", f"#{mode}")
        assert given_up.exit_code == 0, given_up.output
        assert "1 delivery(ies) waiting for ids discarded: never sent" in given_up.output
        assert unmatched_gauge(app, "trakt") == 1
        status = watchbridge("status").output
        assert "waiting for a match: 1 title(s)" in status and "deadletters discard ID" in status
        listed = watchbridge("unmatched").output
        assert f"#{mixed} " in listed and f"#{mode} " not in listed
        assert httpx.get(f"{app.url}/api/status").json()["unmatched"] == 1

        # Given up already: no longer a row it takes.
        again = watchbridge("deadletters", "discard", str(mode))
        assert again.exit_code == 1
        refused = str(again.exception)
        assert f"not a dead letter: {mode}" in refused and "`watchbridge unmatched`" in refused
        assert watchbridge("deadletters", "discard", str(mixed)).exit_code == 0
        assert unmatched_gauge(app, "trakt") == 0
    assert statuses(db) == [] and trakt.history() == []
    assert "nothing unmatched" in watchbridge("unmatched").output
