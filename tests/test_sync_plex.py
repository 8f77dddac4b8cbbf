"""The Plex <-> Trakt link end to end: `watchbridge sync` against the fake PMS and fake Trakt."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import MODERN_VERSION, OLD_VERSION, TOKEN, FakePlex, guid_list
from tests.fakes.plextv import Account, FakePlexTv
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, Rating, key_of
from tests.harness import sign_in_trakt, watchbridge, write_config
from tests.test_sync_scenarios import TraktApp
from tests.unpaced import unpaced_while
from watchbridge.config import PlexConfig, load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.model import Account as PlayerAccount
from watchbridge.model import Ids, MediaEvent, MediaRef
from watchbridge.services.plextv import Pin, PlexTvClient
from watchbridge.services.trakt import parse_iso
from watchbridge.store import Store
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime, make_targets


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    """The clients' pacing lifted: these tests are about
    what the link copies, not Trakt's pace."""
    with unpaced_while("trakt"):
        yield


JAMIE_TOKEN = "managed-user-token-5d4c3b2a"
JAMIE = 48151623
ARRIVAL_SEEN = "2024-01-01T20:00:00.000Z"
FELINA_SEEN = parse_iso("2024-02-01T21:00:00.000Z")


def setup(
    tmp_path: Path, start_fake: Any, jamie: bool = False, link: str = "", plextv: str = ""
) -> tuple[Path, FakeTrakt, FakePlex]:
    """Alex (the server owner) and, with `jamie`, a person whose server token is pasted; with
    `plextv` (its URL), profile sam, whose Plex tokens come from there (see `setup_sam`)."""
    trakt, plex = start_fake(FakeTrakt()), start_fake(FakePlex())
    arrival = trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={1: 2})
    trakt.add_history(arrival, ARRIVAL_SEEN)
    plex.add_movie("100", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    plex.add_show("200", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    plex.add_episode("201", "200", 1, 1)
    plex.add_episode("202", "200", 1, 2)
    plex.watch("201", FELINA_SEEN)
    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    jamie_profile = (
        f"""
  jamie:
    users: {{plex: ["{JAMIE}"]}}
    accounts:
      trakt: {{}}
      plex: {{token: "{JAMIE_TOKEN}"}}"""
        if jamie
        else ""
    )
    if plextv:
        jamie_profile += """
  sam:
    accounts: {trakt: {}, plex: {}}"""
    account_url = f', account_url: "{plextv}"' if plextv else ""
    path = write_config(
        tmp_path,
        f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"{account_url}}}
profiles:
  alex:
    accounts:
      trakt: {{}}
      plex: {{}}{jamie_profile}
links:
  plex-trakt: {{services: [plex, trakt], first_run: apply{link}}}
""",
    )
    store = Store.open(tmp_path / "watchbridge.db")
    sign_in_trakt(store, trakt, "alex", now=time.time())
    if jamie:
        sign_in_trakt(store, trakt, "jamie", now=time.time(), user=trakt.add_user("jamie"))
    store.close()
    return path, trakt, plex


def sync(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = watchbridge("sync", "--link", "plex-trakt", "--config", str(path), *args)
    assert result.returncode == 0, result.stderr
    return result


def trakt_plays(trakt: FakeTrakt, user: str | None = None) -> list[tuple[str, str | None]]:
    return sorted((type(h.item).__name__, h.watched_at) for h in trakt.history(user))


def test_the_first_sync_fills_both_sides(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    sync(path)
    assert plex.user_state("100")["viewCount"] == 1  # Trakt's play, marked watched in Plex
    assert trakt_plays(trakt) == [
        ("Episode", "2024-02-01T21:00:00.000Z"),  # Plex's play with its real time
        ("Movie", "2024-01-01T20:00:00.000Z"),
    ]


# Both a Plex server whose mark-watched writes a history row and one since PMS 1.40.0.7998, whose
# does not (the item's view count and last-viewed date alone move).
PMS_VERSIONS = pytest.mark.parametrize(
    "version", [OLD_VERSION, MODERN_VERSION], ids=["pms-1.32", "pms-1.41"]
)


@PMS_VERSIONS
def test_the_round_trip_makes_no_duplicate_play(
    tmp_path: Path, start_fake: Any, version: str
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    plex.version = version
    sync(path)
    trakt_writes = [r for r in trakt.requests if r.method == "POST"]
    scrobbles = plex.count("GET", "/:/scrobble")
    second = sync(path, "--full")  # a full read sees the Plex play we wrote "today"
    assert "plan: nothing to do" in second.stdout
    assert [r for r in trakt.requests if r.method == "POST"] == trakt_writes
    assert plex.count("GET", "/:/scrobble") == scrobbles
    assert len(trakt.history()) == 2


@PMS_VERSIONS
def test_a_reset_keeps_what_was_written_so_the_next_sync_copies_no_play_back(
    tmp_path: Path, start_fake: Any, version: str
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    plex.version = version
    sync(path)  # Trakt's play goes into Plex's history, stamped at the time of the copy
    assert watchbridge("reset-state", "--yes", "--config", str(path)).returncode == 0
    sync(path, "--yes")
    assert trakt_plays(trakt) == [
        ("Episode", "2024-02-01T21:00:00.000Z"),
        ("Movie", "2024-01-01T20:00:00.000Z"),
    ]


def test_a_copied_rating_not_delivered_yet_is_not_taken_for_a_removal(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1")
    sync(path)
    rate_on_trakt(trakt, "Arrival", 9, "2024-06-01T00:00:00.000Z")
    plex.fail_next(20, 503, route="PUT /:/rate")  # the copy to Plex waits in the queue
    sync(path, "--full")
    assert "userRating" not in plex.user_state("100")
    sync(path, "--full")
    assert [r.rating for r in trakt.ratings()] == [9]


def test_after_a_plex_history_row_is_deleted_runs_are_cheap_again(
    tmp_path: Path, start_fake: Any
) -> None:
    path, _, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1")
    plex.watch("201", time.time() - 7200)  # a rewatch: the episode stays watched
    sync(path)
    sync(path)  # reads back our own scrobble
    old = next(n for n, row in plex.history.items() if row["viewedAt"] == int(FELINA_SEEN))
    del plex.history[old]  # "Remove from history" in Plex
    sync(path)
    sync(path)  # reads back what that run changed on Trakt
    before = len(plex.requests)
    assert "nothing changed" in sync(path).stdout
    assert len(plex.requests) - before == 1  # the one change check


def test_fix_match_in_plex_moves_the_play_on_trakt_to_the_right_title(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1")
    trakt.add_movie("The Thing", 1982, imdb="tt0084787", tmdb=1091)
    trakt.add_movie("The Thing", 2011, imdb="tt0905372", tmdb=60935)
    # The 1982 film's file, matched by Plex to the 2011 remake, watched in March.
    plex.add_movie("300", "The Thing", 2011, ["imdb://tt0905372", "tmdb://60935"])
    seen = "2024-03-01T20:00:00.000Z"
    plex.watch("300", parse_iso(seen))
    sync(path)
    # Fix Match: the same ratingKey and history, a new guid.
    plex.items["300"] |= {"Guid": guid_list(["imdb://tt0084787", "tmdb://1091"]), "year": 1982}
    sync(path, "--full")
    plays = {(h.item.year, h.watched_at) for h in trakt.history() if h.item.title == "The Thing"}
    assert plays == {(1982, seen)}


def test_a_trakt_play_of_a_title_in_no_plex_library_is_not_planned_again_and_again(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, _ = setup(tmp_path, start_fake)
    heat = trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    trakt.add_history(heat, "2024-03-01T20:00:00.000Z")
    sync(path)
    again = sync(path, "--full")
    assert "plan: nothing to do" in again.stdout
    assert "1 play(s) or rating(s) not written to plex: not in its libraries" in again.stdout


def test_the_status_says_what_a_run_queued_and_what_it_left_out_and_why(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, _ = setup(tmp_path, start_fake)
    heat = trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    trakt.add_history(heat, "2024-03-01T20:00:00.000Z")
    sync(path)  # Felina's play queued for Trakt (and sent); Heat is in no Plex library
    status = watchbridge("status", "--config", str(path)).stdout
    line = next(t for t in status.splitlines() if t.startswith("  plex-trakt: ok"))
    # Done: said as queued, true whether or not the queue has sent it yet.
    assert "trakt: 1 play(s) queued to add" in line, line
    assert "plex: 1 play(s) queued to add" in line, line  # Arrival, Trakt's play
    assert "to add" not in line.replace("queued to add", ""), line
    assert "plex: 1 play(s) or rating(s) not written: not in its libraries" in line, line


def test_a_second_run_with_nothing_new_asks_plex_once(tmp_path: Path, start_fake: Any) -> None:
    path, _, plex = setup(tmp_path, start_fake)
    sync(path)
    sync(path)  # reads once more: our own scrobble moved the history
    before = len(plex.requests)
    third = sync(path)
    assert "nothing changed" in third.stdout
    assert len(plex.requests) - before == 1


def test_a_rating_made_in_plex_reaches_trakt(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    plex.rate("202", 7.0, time.time())
    sync(path)
    assert [r.rating for r in trakt.ratings()] == [7]


def test_a_managed_users_state_stays_theirs(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, jamie=True)
    plex.watch("202", FELINA_SEEN + 3600, account=JAMIE)
    sync(path)
    assert trakt_plays(trakt, "jamie") == [
        ("Episode", "2024-02-01T22:00:00.000Z"),
    ]
    assert ("Episode", "2024-02-01T22:00:00.000Z") not in trakt_plays(trakt)
    assert plex.user_state("100", JAMIE) == {}  # alex's Trakt play stays alex's
    assert plex.user_state("100")["viewCount"] == 1


def test_an_unwatch_in_plex_removes_the_play_from_trakt_once_confirmed(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    sync(path)
    plex.state[(1, "201")] = {}  # marked unwatched in Plex
    held = sync(path)
    assert "held:" in held.stdout and len(trakt.history()) == 2  # the mass-removal guard
    sync(path, "--full", "--confirm-removals")
    assert trakt_plays(trakt) == [("Movie", "2024-01-01T20:00:00.000Z")]


def test_an_unwatch_in_plex_marked_watched_again_adds_no_duplicate_while_it_is_held(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    sync(path)
    plex.state[(1, "201")] = {}  # marked unwatched in Plex by mistake: held
    assert "held:" in sync(path).stdout
    plex.watch("201", time.time())  # marked watched again: Plex dates it today
    sync(path)
    again = sync(path)
    assert len(trakt.history()) == 2  # the held play stays, and no copy dated today beside it
    assert "marked watched again?" in again.stdout
    sync(path, "--full", "--confirm-removals")
    assert [kind for kind, _ in trakt_plays(trakt)] == ["Episode", "Movie"]  # one each


def test_an_unwatch_in_plex_removes_an_old_play_trakt_has_not_been_read_back_for(
    tmp_path: Path, start_fake: Any
) -> None:
    # Plex's play is from months ago: the delta reads of Trakt never reach back to the copy
    # we wrote, so the removal names it by item and time, and the Trakt target finds its id.
    path, trakt, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1")
    sync(path)
    sync(path)
    plex.state[(1, "201")] = {}  # marked unwatched in Plex ...
    plex.watch("202", time.time() - 3600)  # ... and a new play, so Plex is read again
    sync(path)
    assert [kind for kind, _ in trakt_plays(trakt)] == ["Episode", "Movie"]
    assert getattr(trakt.history()[0].item, "number", None) == 2


def test_a_play_removed_on_trakt_marks_the_item_unwatched_in_plex(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    sync(path)
    trakt.user.history = [h for h in trakt.user.history if type(h.item).__name__ != "Movie"]
    sync(path, "--full", "--confirm-removals")
    assert plex.user_state("100") == {}
    assert len(trakt.history()) == 1


def rate_on_trakt(trakt: FakeTrakt, title: str, value: int, rated_at: str) -> None:
    movie = next(m for m in trakt.movies if m.title == title)
    trakt.user.ratings[key_of(movie)] = Rating(movie, value, rated_at)


def test_a_rating_conflict_goes_to_the_newer_rating(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    rate_on_trakt(trakt, "Arrival", 9, "2024-01-01T00:00:00.000Z")
    plex.rate("100", 6.0, time.time())
    sync(path)
    assert [r.rating for r in trakt.ratings()] == [6]
    assert plex.user_state("100")["userRating"] == 6.0


def test_a_rating_conflict_goes_to_the_preferred_service(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, link=", prefer: trakt")
    rate_on_trakt(trakt, "Arrival", 9, "2024-01-01T00:00:00.000Z")
    plex.rate("100", 6.0, time.time())
    sync(path)
    assert plex.user_state("100")["userRating"] == 9.0
    assert [r.rating for r in trakt.ratings()] == [9]


def test_a_rating_conflict_goes_to_plex_when_it_is_preferred(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, link=", prefer: plex")
    plex.rate("100", 6.0, parse_iso("2024-01-01T00:00:00.000Z"))
    rate_on_trakt(trakt, "Arrival", 9, "2024-06-01T00:00:00.000Z")  # newer, all the same
    sync(path)
    assert [r.rating for r in trakt.ratings()] == [6]
    assert plex.user_state("100")["userRating"] == 6.0


def test_a_trakt_rewatch_goes_to_plex_and_reads_back_without_a_duplicate(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    arrival = next(m for m in trakt.movies if m.title == "Arrival")
    trakt.add_history(arrival, "2024-05-01T20:00:00.000Z")  # the second viewing
    sync(path)
    assert plex.user_state("100")["viewCount"] == 2  # one scrobble per play
    scrobbles = plex.count("GET", "/:/scrobble")
    again = sync(path, "--full")
    assert "plan: nothing to do" in again.stdout
    assert plex.count("GET", "/:/scrobble") == scrobbles
    assert trakt_plays(trakt) == [
        ("Episode", "2024-02-01T21:00:00.000Z"),
        ("Movie", "2024-01-01T20:00:00.000Z"),
        ("Movie", "2024-05-01T20:00:00.000Z"),
    ]


# --------------------------------------------------------------------------- tokens via plex.tv


@dataclass
class Sam:
    """A second person whose Plex tokens come from plex.tv: a friend the server is shared
    with (signed in with the PIN) or a managed home user (signed in by switching)."""

    path: Path
    trakt: FakeTrakt
    plex: FakePlex
    plextv: FakePlexTv
    account: Account

    def server_tokens(self) -> set[str]:
        """The tokens sent to the server for sam's state (listings and writes)."""
        sent = self.plex.calls("GET", "/library/sections/{key}/all")
        sent += self.plex.calls("GET", "/:/scrobble") + self.plex.calls("PUT", "/:/rate")
        tokens = {r.headers.get("x-plex-token") for r in sent}
        return {t for t in tokens if t and t != TOKEN}


def setup_sam(tmp_path: Path, start_fake: Any, managed: bool = False) -> Sam:
    plextv = start_fake(FakePlexTv())
    plextv.owner.token = TOKEN  # the owner's one token, for the server and plex.tv
    path, trakt, plex = setup(tmp_path, start_fake, plextv=plextv.url)
    sam = plextv.add_account("sam", managed=managed)
    plextv.share_on(plex, sam)
    store = Store.open(tmp_path / "watchbridge.db")
    sign_in_trakt(store, trakt, "sam", now=time.time(), user=trakt.add_user("sam"))
    identifier = store.setting("plex_client_identifier", lambda: "install", time.time())
    client = PlexTvClient(PlexConfig(account_url=plextv.url), store, client_identifier=identifier)

    def approve(pin: Pin, _: str) -> None:  # sam opens the link and approves
        plextv.approve_pin(pin.id, sam)

    async def sign_in() -> None:  # what `watchbridge auth plex` does
        try:
            if managed:
                await client.sign_in_home_user("sam", TOKEN, "sam")
            else:
                await client.sign_in("sam", approve, interval=0.01)
        finally:
            await client.aclose()

    asyncio.run(sign_in())
    store.close()
    return Sam(path, trakt, plex, plextv, sam)


def sams_state_stays_theirs(sam: Sam) -> None:
    """Sam watched and rated S01E02 in Plex and Heat on Trakt; alex has Arrival on Trakt."""
    plex, trakt, me = sam.plex, sam.trakt, sam.account.id
    heat = trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    trakt.add_history(heat, "2024-03-01T20:00:00.000Z", user="sam")
    plex.add_movie("101", "Heat", 1995, ["imdb://tt0113277", "tmdb://949"])
    plex.watch("202", FELINA_SEEN + 3600, account=me)
    plex.rate("202", 8.0, time.time(), account=me)
    sync(sam.path)
    assert trakt_plays(trakt, "sam") == [
        ("Episode", "2024-02-01T22:00:00.000Z"),
        ("Movie", "2024-03-01T20:00:00.000Z"),
    ]
    assert [r.rating for r in trakt.ratings("sam")] == [8] and trakt.ratings() == []
    assert ("Episode", "2024-02-01T22:00:00.000Z") not in trakt_plays(trakt)
    assert plex.user_state("101", me)["viewCount"] == 1 and plex.user_state("101") == {}
    assert plex.user_state("100", me) == {}  # alex's Trakt play stays alex's
    assert sam.server_tokens() == {sam.plextv.servers[plex.machine_id].token_of(sam.account)}


def test_a_friends_state_stays_theirs_with_the_server_token_plex_tv_gives(
    tmp_path: Path, start_fake: Any
) -> None:
    sam = setup_sam(tmp_path, start_fake)
    sams_state_stays_theirs(sam)
    assert sam.account.token not in sam.server_tokens()  # their plex.tv token stays on plex.tv


def test_a_managed_users_state_stays_theirs_with_the_server_token_plex_tv_gives(
    tmp_path: Path, start_fake: Any
) -> None:
    sam = setup_sam(tmp_path, start_fake, managed=True)
    sams_state_stays_theirs(sam)
    assert sam.account.token not in sam.server_tokens()  # the switch token is no server token


def test_a_rotated_server_token_is_found_again_once(tmp_path: Path, start_fake: Any) -> None:
    sam = setup_sam(tmp_path, start_fake)
    sync(sam.path)
    asked = sam.plextv.count("GET", "/api/servers/{machine}/shared_servers")
    new_token = sam.plextv.share_on(sam.plex, sam.account)  # the old one is refused now
    sam.plex.watch("202", FELINA_SEEN + 3600, account=sam.account.id)
    sync(sam.path)
    assert [r.status for r in sam.plex.requests].count(401) == 1
    assert sam.plextv.count("GET", "/api/servers/{machine}/shared_servers") == asked + 1
    assert ("Episode", "2024-02-01T22:00:00.000Z") in trakt_plays(sam.trakt, "sam")
    sync(sam.path, "--full")  # and the new token is kept: no 401, no plex.tv question
    assert [r.status for r in sam.plex.requests].count(401) == 1
    assert sam.plextv.count("GET", "/api/servers/{machine}/shared_servers") == asked + 1
    assert new_token in sam.server_tokens()


NEW_MACHINE = "ab" * 20


def reinstall_plex(sam: Sam, shared: bool = True) -> tuple[str, str | None]:
    """Plex reinstalled at the same address: a new machine id, and a database that knows none
    of the old server's tokens. plex.tv lists the new server beside the old one, and sam on it
    with a new token when `shared` (the owner gave the new server to them). Returns sam's
    token for the old server and the one for the new server."""
    plex, plextv, account = sam.plex, sam.plextv, sam.account
    old = plextv.servers[plex.machine_id].token_of(account)
    assert old is not None
    plex.users.pop(old)
    plex.machine_id = NEW_MACHINE
    plextv.add_server(NEW_MACHINE)
    new = plextv.share_on(plex, account) if shared else None
    plex.requests.clear()
    plextv.requests.clear()
    return old, new


def sent_tokens(plex: FakePlex) -> set[str | None]:
    return {r.headers.get("x-plex-token") for r in plex.requests}


def test_a_home_users_token_is_found_again_for_a_plex_server_reinstalled_at_its_address(
    tmp_path: Path, start_fake: Any
) -> None:
    """The token plex.tv gave for sam was for the old server: the new one at the same address
    is never sent it; sam's token for the new server is asked of plex.tv once, and sam's
    plays there stay sam's."""
    sam = setup_sam(tmp_path, start_fake, managed=True)
    sync(sam.path)
    old_token, new_token = reinstall_plex(sam)
    sam.plex.watch("202", FELINA_SEEN + 3600, account=sam.account.id)  # on the new server

    sync(sam.path)

    assert old_token not in sent_tokens(sam.plex)
    assert 401 not in [r.status for r in sam.plex.requests]
    assert sam.server_tokens() == {new_token}
    assert ("Episode", "2024-02-01T22:00:00.000Z") in trakt_plays(sam.trakt, "sam")
    assert ("Episode", "2024-02-01T22:00:00.000Z") not in trakt_plays(sam.trakt)  # not alex's
    asked = len(sam.plextv.requests)
    sync(sam.path, "--full")  # the new token is kept, for the new server
    assert len(sam.plextv.requests) == asked
    assert sam.server_tokens() == {new_token}


def test_a_home_user_not_on_the_reinstalled_plex_server_yet_is_told_and_found_once_on_it(
    tmp_path: Path, start_fake: Any
) -> None:
    sam = setup_sam(tmp_path, start_fake, managed=True)
    sync(sam.path)
    old_token, _ = reinstall_plex(sam, shared=False)
    sam.plex.watch("202", FELINA_SEEN + 3600, account=sam.account.id)

    waiting = watchbridge("sync", "--link", "plex-trakt", "--config", str(sam.path))

    assert old_token not in sent_tokens(sam.plex)
    said = waiting.stdout + waiting.stderr
    assert (
        f"profile sam: the Plex server is now {NEW_MACHINE}, and plex.tv gives no token of "
        "theirs for it"
    ) in said
    assert "share the server with them or add them to your Plex Home" in said
    new_token = sam.plextv.share_on(sam.plex, sam.account)  # the owner gives it to them
    sync(sam.path)
    assert sam.server_tokens() == {new_token}
    assert ("Episode", "2024-02-01T22:00:00.000Z") in trakt_plays(sam.trakt, "sam")


def test_a_legacy_imdb_movie_seen_on_both_sides_is_neither_duplicated_nor_unwatched(
    tmp_path: Path, start_fake: Any
) -> None:
    # Plex's legacy IMDb agent names the movie by its IMDb id only; Trakt keys it by TMDB.
    path, trakt, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1")
    heat = trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    trakt.add_history(heat, "2024-03-01T20:00:00.000Z")
    plex.add_movie("101", "Heat", 1995, guid="com.plexapp.agents.imdb://tt0113277?lang=en")
    plex.watch("101", parse_iso("2024-03-01T20:00:00.000Z"))
    sync(path)
    sync(path, "--full")
    assert [at for _, at in trakt_plays(trakt) if at and at.startswith("2024-03")] == [
        "2024-03-01T20:00:00.000Z"
    ]
    assert plex.user_state("101").get("viewCount") == 1


def test_a_library_not_shared_with_a_friend_does_not_stop_the_owners_sync(
    tmp_path: Path, start_fake: Any
) -> None:
    # Plex shares libraries one by one; the config names both for everyone.
    path, trakt, plex = setup(tmp_path, start_fake, jamie=True)
    plex.shared_sections[JAMIE] = {"1"}  # Movies only
    path.write_text(
        path.read_text().replace(
            f'token: "{TOKEN}"', f'token: "{TOKEN}", libraries: [Movies, TV Shows]'
        )
    )
    done = sync(path)
    assert done.returncode == 0, done.stderr
    assert ("Episode", "2024-02-01T21:00:00.000Z") in trakt_plays(trakt)  # alex's went out


def test_runs_after_a_play_removed_from_plex_history_are_cheap_again(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1")
    sync(path)
    sync(path)  # reads back our own scrobble
    trakt.user.history = [h for h in trakt.user.history if type(h.item).__name__ != "Episode"]
    sync(path, "--full")  # the play removed on Trakt: its Plex history row is deleted
    assert plex.history_of("201") == []
    sync(path)  # our own writes moved both sides
    before = len(plex.requests)
    assert "nothing changed" in sync(path).stdout
    assert len(plex.requests) - before == 1


def test_a_copy_to_a_plex_server_whose_clock_is_off_is_not_copied_back(
    tmp_path: Path, start_fake: Any
) -> None:
    """A NAS without time sync, 20 minutes slow: Plex dates the play we wrote by its clock."""
    path, trakt, plex = setup(tmp_path, start_fake)
    plex.clock = lambda: time.time() - 20 * 60
    sync(path)  # Trakt's Arrival play is marked watched in Plex
    assert plex.user_state("100")["viewCount"] == 1
    second = sync(path, "--full")
    assert "plan: nothing to do" in second.stdout
    assert trakt_plays(trakt) == [
        ("Episode", "2024-02-01T21:20:00.000Z"),  # Plex's 21:00 is 21:20 by our clock
        ("Movie", "2024-01-01T20:00:00.000Z"),
    ]


def test_a_webhook_play_is_not_copied_again_from_a_plex_server_whose_clock_is_days_off(
    tmp_path: Path, start_fake: Any
) -> None:
    # Plex dates the play by its clock, 40 hours ahead (past the hours two copies of one
    # viewing may lie apart), the webhook's play went to Trakt dated by ours.
    path, trakt, plex = setup(tmp_path, start_fake)
    plex.clock = lambda: time.time() + 40 * 3600
    sync(path)
    plex.watch("202", plex.clock())
    asyncio.run(webhook_play_to_trakt(path, MediaRef("episode", show_ids=Ids(tmdb="1396"),
                                                     season=1, number=2)))  # fmt: skip
    sync(path)
    episodes = [h.item.number for h in trakt.history() if type(h.item).__name__ == "Episode"]
    assert sorted(episodes) == [1, 2]


async def webhook_play_to_trakt(path: Path, item: MediaRef) -> None:
    """A webhook's play of `item` by alex, queued and delivered to Trakt."""
    runtime = build_runtime(load_config(path, {}))
    runtime.open()
    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    try:
        event = MediaEvent("generic", "played", item, account=PlayerAccount("alex"), played=True)
        assert runtime.store.ingest(ingest_job(runtime, "alex", event))
        await worker.pass_once(runtime)
        assert not runtime.store.waiting_webhook_plays("alex")  # delivered
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


def test_a_movie_we_copied_to_plex_given_a_new_rating_key_by_a_rescan_keeps_its_one_play(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1")
    sync(path)  # Trakt's Arrival play is scrobbled into Plex
    sync(path)
    plex.rescan_as("100", "150")  # weeks later: the file replaced, the movie re-added
    sync(path, "--full")
    sync(path, "--full")
    assert trakt_plays(trakt) == [
        ("Episode", "2024-02-01T21:00:00.000Z"),
        ("Movie", ARRIVAL_SEEN),  # still there, and no second play "today"
    ]


def test_an_episode_given_a_new_rating_key_keeps_the_plays_its_history_rows_name_the_old(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1")
    plex.watch("201", FELINA_SEEN + 86400)  # watched again the next day
    sync(path)
    sync(path)
    plex.rescan_as("201", "251", history_follows=False)
    sync(path, "--full")
    sync(path, "--full")
    assert trakt_plays(trakt) == [
        ("Episode", "2024-02-01T21:00:00.000Z"),
        ("Episode", "2024-02-02T21:00:00.000Z"),
        ("Movie", ARRIVAL_SEEN),
    ]


def test_an_episode_unwatched_and_watched_again_between_two_runs_loses_its_old_play(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1")
    sync(path)
    sync(path)
    plex.state[(1, "201")] = {}  # marked unwatched in Plex (viewCount and lastViewedAt reset)
    rewatch = time.time() - 3600
    plex.watch("201", rewatch)  # ... and watched again that evening: viewCount 1
    sync(path)
    sync(path, "--full")
    episodes = [at for kind, at in trakt_plays(trakt) if kind == "Episode"]
    assert episodes == [time.strftime("%Y-%m-%dT%H:%M:00.000Z", time.gmtime(rewatch))]


def test_a_rating_changed_on_trakt_after_its_copy_to_a_plex_server_hours_ahead_wins(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    plex.clock = lambda: time.time() + 2 * 3600  # it dates our copy two hours "later"
    rate_on_trakt(trakt, "Arrival", 9, "2024-06-01T00:00:00.000Z")
    sync(path)
    changed = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 60))
    rate_on_trakt(trakt, "Arrival", 6, changed)  # the user changes their mind on Trakt
    sync(path, "--full")
    assert ([r.rating for r in trakt.ratings()], plex.user_state("100")["userRating"]) == (
        [6],
        6.0,
    )


def test_a_copy_made_while_the_plex_clock_was_off_is_not_copied_back_once_it_is_set_right(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake)
    plex.clock = lambda: time.time() - 20 * 60
    sync(path)  # the history row of our write keeps the slow clock's date
    plex.clock = time.time  # time sync set it right
    second = sync(path, "--full")
    assert "plan: nothing to do" in second.stdout
    assert len(trakt.history()) == 2


FOUR_K_SEEN = parse_iso("2024-01-15T20:00:00.000Z")
HD_SEEN = parse_iso("2024-03-01T20:00:00.000Z")


def two_copies(tmp_path: Path, start_fake: Any) -> tuple[Path, FakeTrakt, FakePlex]:
    trakt, plex = start_fake(FakeTrakt()), start_fake(FakePlex())
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    plex.add_section("3", "Movies 4K", "movie")
    plex.add_movie("100", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    plex.add_movie("300", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"], section="3")
    plex.watch("300", FOUR_K_SEEN)  # watched in 4K in January
    plex.watch("100", HD_SEEN)  # and again, the HD copy, in March
    path = write_config(
        tmp_path,
        f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex:
    accounts:
      trakt: {{}}
      plex: {{}}
links:
  plex-trakt: {{services: [plex, trakt], first_run: apply, max_removal_share: 1}}
""",
    )
    store = Store.open(tmp_path / "watchbridge.db")
    sign_in_trakt(store, trakt, "alex", now=time.time())
    store.close()
    return path, trakt, plex


def test_a_deleted_4k_copy_of_a_movie_keeps_the_play_watched_on_it_while_the_hd_one_is_listed(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = two_copies(tmp_path, start_fake)
    sync(path)
    sync(path)
    assert trakt_plays(trakt) == [
        ("Movie", "2024-01-15T20:00:00.000Z"),
        ("Movie", "2024-03-01T20:00:00.000Z"),
    ]
    plex.empty_section("3")  # the 4K copy deleted (Plex keeps its history rows)
    sync(path, "--full")
    sync(path, "--full")
    assert trakt_plays(trakt) == [
        ("Movie", "2024-01-15T20:00:00.000Z"),
        ("Movie", "2024-03-01T20:00:00.000Z"),
    ]


BOTH = [("Movie", "2024-01-15T20:00:00.000Z"), ("Movie", "2024-03-01T20:00:00.000Z")]


def remove_on_trakt(trakt: FakeTrakt, watched_at: str) -> None:
    """The user removes the play watched then, in Trakt's app."""
    app = TraktApp(trakt)
    app.unwatch(next(h for h in trakt.history() if h.watched_at == watched_at))
    app.http.close()


def test_a_new_copy_added_after_another_was_deleted_keeps_the_deleted_ones_play(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, plex = two_copies(tmp_path, start_fake)
    sync(path)
    plex.empty_section("3")  # the 4K copy deleted
    sync(path, "--full")
    plex.add_movie("500", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])  # weeks later
    sync(path, "--full")
    sync(path, "--full")
    assert trakt_plays(trakt) == BOTH


def test_a_play_of_one_copy_removed_on_trakt_stays_removed_while_another_holds_its_own(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, _ = two_copies(tmp_path, start_fake)
    sync(path)
    sync(path)
    remove_on_trakt(trakt, BOTH[1][1])  # the HD copy's March viewing
    sync(path, "--full", "--confirm-removals")
    sync(path, "--full")
    assert trakt_plays(trakt) == [BOTH[0]]
    assert "plan: nothing to do" in sync(path, "--full").stdout


def test_the_history_of_an_item_deleted_from_the_library_does_not_stop_the_link(
    tmp_path: Path, start_fake: Any
) -> None:
    # Plex keeps a deleted item's history rows, without its keys: users delete what they
    # watched all the time, and every run would fail on them.
    path, trakt, plex = setup(tmp_path, start_fake)
    plex.watch("202", FELINA_SEEN + 3600)
    sync(path)
    before = trakt_plays(trakt)
    plex.delete_item("202")
    result = watchbridge("sync", "--link", "plex-trakt", "--config", str(path), "--full")
    assert result.returncode == 0, result.stdout + result.stderr
    assert trakt_plays(trakt) == before  # a file deleted is no play undone


PLEX_UPDATE = "Plex may have changed its answers, and watchbridge may need an update"
LISTING = "GET /library/sections/{key}/all"
HISTORY = "GET /status/sessions/history/all"


def rows_of(body: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = body["MediaContainer"].get("Metadata", [])
    return rows


RESHAPED = {
    "the listing of library 1: 1 of 1 rows have a `viewCount` that is no whole number": (
        LISTING,
        lambda body: [r.update(viewCount="once") for r in rows_of(body) if "viewCount" in r],
    ),
    "the watch history: 2 of 2 rows have no `ratingKey`": (
        HISTORY,
        lambda body: [r.update(metadataItemID=r.pop("ratingKey")) for r in rows_of(body)],
    ),
    "the listing of library 1: 1 of 1 rows have no `ratingKey`": (
        LISTING,
        lambda body: [r.update(key=r.pop("ratingKey")) for r in rows_of(body)],
    ),
    "listing library 1 says it holds 1 entries but has no `Metadata` list": (
        LISTING,
        lambda body: body["MediaContainer"].update(Items=body["MediaContainer"].pop("Metadata")),
    ),
    "the watch history: 2 of 2 rows have no `viewedAt` in epoch seconds": (
        HISTORY,
        lambda body: [r.update(viewedAt="2024-02-01T21:00:00Z") for r in rows_of(body)],
    ),
}


@pytest.mark.parametrize("said", list(RESHAPED))
def test_a_plex_answer_in_another_shape_fails_the_run_and_removes_nothing(
    tmp_path: Path, start_fake: Any, said: str
) -> None:
    path, trakt, plex = setup(tmp_path, start_fake, link=", max_removal_share: 1.0")
    sync(path)
    before = trakt_plays(trakt)
    route, change = RESHAPED[said]
    plex.reshape_always(lambda body: [change(body), None][1], route=route)
    result = watchbridge("sync", "--link", "plex-trakt", "--config", str(path), "--full")
    assert result.returncode != 0
    told = result.stdout + result.stderr
    assert said in told and PLEX_UPDATE in told and "Traceback" not in told
    assert trakt_plays(trakt) == before
