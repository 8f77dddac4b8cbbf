"""A household with no Trakt at all: media-server webhooks to Serializd and AniList only.

Every leg has to be worth running without Trakt: nothing Trakt alone could have done may be
silently missing, and what is wrong is said in words that do not assume Trakt exists."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anilist import CLIENT_ID as ANILIST_CLIENT
from tests.fakes.anilist import FakeAniList
from tests.fakes.jellyfin import API_KEY as JELLYFIN_KEY
from tests.fakes.jellyfin import SAMPLE_SERVER_IDS, sample_server
from tests.fakes.plex import TOKEN as PLEX_TOKEN
from tests.fakes.plex import FakePlex
from tests.fakes.plextv import FakePlexTv
from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE as SERIALIZD_USER
from tests.fakes.serializd import FakeSerializd
from tests.harness import AppThread, ServiceProcess, free_port, write_config
from tests.ingest_samples import sample_json
from tests.test_cli import run
from tests.test_link_plex_serializd import setup as plex_serializd_setup
from tests.test_link_plex_serializd import sync as plex_serializd_sync
from tests.test_webhooks_e2e import SECRET, plex_multipart, wait_for
from tests.unpaced import unpaced
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime

ROOT = Path(__file__).parent.parent

SERIALIZD = "serializd: {email: a@example.com, password: pw}"


def without_trakt(users: str, services: str = "", accounts: str = SERIALIZD) -> str:
    return (
        f"services:\n  serializd: {{}}\n  anilist: {{client_id: '1'}}\n{services}"
        f"profiles:\n  me:\n    users: {{{users}}}\n    accounts: {{{accounts}}}\n"
    )


@pytest.mark.parametrize(
    ("source", "name", "settings"),
    [
        ("jellyfin", "Jellyfin", "services.jellyfin.url and services.jellyfin.api_key"),
        ("emby", "Emby", "services.emby.url and services.emby.api_key"),
        ("plex", "Plex", "services.plex.url and services.plex.token"),
    ],
)
def test_check_config_warns_that_a_media_server_without_its_key_leaves_episodes_unmatched(
    tmp_path: Path, source: str, name: str, settings: str
) -> None:
    # Jellyfin, Emby and Plex's current agents name an episode by its own ids only: without
    # the server's key (and no Trakt to search) no play of an episode can reach Serializd.
    path = write_config(tmp_path, without_trakt(f"{source}: [alex]", accounts=SERIALIZD))
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stdout
    (warning,) = warnings
    assert warning.startswith(f"warning: profile me takes {name}'s webhooks")
    assert settings in warning and "unmatched" in warning
    assert "trakt" not in warning.lower()


@pytest.mark.parametrize(
    ("users", "services"),
    [
        ("jellyfin: [alex]", "  jellyfin: {url: 'http://jf:8096', api_key: k}\n"),
        ("emby: [alex]", "  emby: {url: 'http://emby:8096', api_key: k}\n"),
        ("plex: ['1']", "  plex: {url: 'http://plex:32400', token: t}\n"),
        ("tautulli: [alex]", ""),  # Tautulli sends the show's TMDB and TVDB ids
        ("generic: [alex]", ""),  # a script sends what it has
    ],
)
def test_check_config_is_quiet_when_the_media_server_can_be_asked(
    tmp_path: Path, users: str, services: str
) -> None:
    path = write_config(tmp_path, without_trakt(users, services))
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stdout, result.stdout


def test_tautulli_users_are_pointed_to_a_plex_link_that_carries_ratings_without_trakt(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tautulli has no rating trigger: the docs send its users to a Plex link for their
    # ratings. Without Trakt that is plex-serializd, which carries them (unpaced: the
    # in-process syncs' ten plays waited 5 s on Serializd's 2 requests a second).
    unpaced(monkeypatch, "serializd")
    path, plex, serializd = plex_serializd_setup(tmp_path, start_fake)
    plex_serializd_sync(path)
    plex.rate("105", 8.0, time.time() - 60)
    plex_serializd_sync(path)
    rated = [(r.show_id, r.episode_number, r.rating) for r in serializd.diary() if r.rating]
    assert rated == [(1396, 5, 8)]
    for doc in (ROOT / "README.md", ROOT / "docs" / "webhooks.md"):
        text = " ".join(doc.read_text(encoding="utf-8").split())
        said = text[text.index("no rating trigger") :][:300]
        assert "plex-serializd" in said, f"{doc.name}: {said}"


def test_a_play_for_anilist_before_signing_in_says_plainly_what_to_run(
    tmp_path: Path, start_fake: Any, receiver: AlertReceiver
) -> None:
    # The profile has `anilist: {}` but nobody ran `watchbridge auth anilist` yet: the play
    # waits, and the log and the alert tell what to run, in words (no "token: ********").
    anilist = start_fake(FakeAniList())
    assert isinstance(anilist, FakeAniList)
    port = free_port()
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"""server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  anilist:
    client_id: "{ANILIST_CLIENT}"
    api_url: "{anilist.url}"
    auth_url: "{anilist.auth_url}"
    mapping_urls: {{anibridge: "", kometa: "", fribb: "", animelists: ""}}
profiles:
  me: {{users: {{generic: [me]}}, accounts: {{anilist: {{}}}}}}
""",
        encoding="utf-8",
    )
    service = ServiceProcess(path, port).start()
    try:
        play = {
            "event": "played",
            "user": "me",
            "item": {"type": "episode", "season": 1, "number": 1, "show": {"ids": {"anilist": 1}}},
        }
        answer = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=play)
        assert answer.status_code == 202
        service.wait_for_output("deliveries paused")
        wait_for(lambda: bool(receiver.messages), timeout=20)
    finally:
        service.kill()
    told = "run `watchbridge auth anilist --profile me`"
    paused = [line for line in service.output().splitlines() if "deliveries paused" in line]
    assert any(told in line for line in paused), paused
    assert not any("token: ****" in line for line in paused), paused
    assert told in str(receiver.messages[0].get("message")), receiver.messages


def kodi_to_serializd(
    tmp_path: Path, start_fake: Any
) -> tuple[FakeSerializd, Path, ServiceProcess]:
    """Serializd (its reference catalogue), and the service started with the config (its path
    returned) that sends the generic webhooks of `kodi` there: no Trakt."""
    serializd = start_fake(FakeSerializd())
    assert isinstance(serializd, FakeSerializd)
    serializd.seed_reference_catalogue()
    port = free_port()
    path = tmp_path / "watchbridge.yaml"
    email, password, _ = SERIALIZD_USER
    path.write_text(
        f"""server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    users: {{generic: [kodi]}}
    accounts: {{serializd: {{email: "{email}", password: "{password}"}}}}
""",
        encoding="utf-8",
    )
    service = ServiceProcess(path, port).start()
    return serializd, path, service


def test_a_script_play_without_the_show_tmdb_id_says_where_to_send_it(
    tmp_path: Path, start_fake: Any
) -> None:
    # A Kodi script or Home Assistant automation names the show by TheTVDB id: with no Trakt
    # to search, Serializd cannot place it, and the reason says which field to fill in.
    serializd, path, service = kodi_to_serializd(tmp_path, start_fake)
    try:
        show = {"title": "Breaking Bad", "ids": {"tvdb": 81189}}
        item = {"type": "episode", "season": 5, "number": 14, "show": show}
        play = {"event": "played", "user": "kodi", "item": item}
        assert httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=play).status_code == 202
        wait_for(lambda: "S05E14" in run("unmatched", "--config", str(path)).stdout)
    finally:
        service.kill()
    said = run("unmatched", "--config", str(path)).stdout
    assert "Breaking Bad S05E14" in said and "send it in the webhook's item.show.ids" in said, said
    assert serializd.diary() == []


def test_a_play_on_a_friends_plex_server_is_named_by_plexs_catalogue(
    tmp_path: Path, start_fake: Any
) -> None:
    # A Plex webhook fires for the owner's account on a friend's server too. Its items cannot
    # be read from services.plex.url (another server), and with no Trakt to search, the
    # episode used to wait as unmatched with "add services.trakt" (a VIP-only app) as the
    # only way out, then die. Plex's own catalogue names the show's TMDB id by its plex://
    # guid, with the owner's token.
    plex, plextv = start_fake(FakePlex()), start_fake(FakePlexTv())
    serializd = start_fake(FakeSerializd())
    assert isinstance(plex, FakePlex) and isinstance(plextv, FakePlexTv)
    assert isinstance(serializd, FakeSerializd)
    serializd.seed_reference_catalogue()
    plextv.owner.token = PLEX_TOKEN  # services.plex.token is the owner's plex.tv token
    show = plextv.add_title("show", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    port = free_port()
    path = tmp_path / "watchbridge.yaml"
    email, password, _ = SERIALIZD_USER
    path.write_text(
        f"""server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  plex: {{url: "{plex.url}", token: "{PLEX_TOKEN}", account_url: "{plextv.url}",
          discover_url: "{plextv.url}", metadata_url: "{plextv.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts: {{serializd: {{email: "{email}", password: "{password}"}}}}
""",
        encoding="utf-8",
    )
    payload = {
        "event": "media.scrobble",
        "user": True,
        "owner": False,
        "Account": {"id": 1, "title": "alex"},
        "Server": {"title": "Friend", "uuid": "f" * 40},
        "Player": {"local": False, "title": "TV", "uuid": "player-1"},
        "Metadata": {
            "librarySectionType": "show",
            "type": "episode",
            "ratingKey": "9214",
            "grandparentRatingKey": "9020",
            "guid": "plex://episode/5d9c1276e9d5a1001f4ff5c1",
            "grandparentGuid": f"plex://show/{show.rating_key}",
            "title": "Ozymandias",
            "grandparentTitle": "Breaking Bad",
            "parentIndex": 5,
            "index": 14,
            "duration": 2_820_000,
            "Guid": [{"id": "tmdb://62161"}, {"id": "tvdb://4639442"}],
        },
    }
    service = ServiceProcess(path, port).start()
    try:
        body, content_type = plex_multipart(payload)
        url = f"{service.url}/webhooks/plex/{SECRET}"
        answer = httpx.post(url, content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 202
        wait_for(lambda: bool(serializd.diary()) or "unmatched:" in unmatched(path), timeout=20)
    finally:
        service.kill()
    logged = [(r.show_id, r.episode_number, r.is_log) for r in serializd.diary()]
    assert logged == [(1396, 14, True)], unmatched(path)


def settled(tmp_path: Path) -> bool:
    """Something was queued, and every row was tried (delivered, or waiting to try again)."""
    with sqlite3.connect(tmp_path / "wb.db") as db:
        (queued,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        untried = "status = 'inflight' OR (status = 'pending' AND attempts = 0)"
        (waiting,) = db.execute(f"SELECT COUNT(*) FROM outbox WHERE {untried}").fetchone()
    return bool(queued) and not waiting


def unmatched(path: Path) -> str:
    return run("unmatched", "--config", str(path)).stdout


def test_a_script_play_by_absolute_number_lands_where_serializds_seasons_count_it(
    tmp_path: Path, start_fake: Any
) -> None:
    # An anime script (or a library in absolute order) knows an episode by its absolute
    # number alone. It used to wait as unmatched ("no TMDB season and episode number"): only
    # Trakt's season list placed it. Serializd's show answer lists each season's episode
    # count: Breaking Bad's regular seasons hold 7, 13, 13, 13 and 16 episodes (the specials
    # are not counted), so absolute episode 20 is S2E13.
    serializd, path, service = kodi_to_serializd(tmp_path, start_fake)
    try:
        show = {"title": "Breaking Bad", "ids": {"tmdb": 1396}}
        item = {"type": "episode", "absolute": 20, "show": show}
        play = {"event": "played", "user": "kodi", "item": item}
        for _ in range(2):  # the script sends it again: still one entry
            answer = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=play)
            assert answer.status_code == 202
        wait_for(lambda: settled(tmp_path), timeout=20)
    finally:
        service.kill()
    logged = [(r.show_id, r.season_id, r.episode_number, r.is_log) for r in serializd.diary()]
    assert logged == [(1396, 3573, 13, True)], unmatched(path)
    assert serializd.ticks() == {(1396, 3573, 13)}


@pytest.mark.parametrize(("source", "name"), [("jellyfin", "Jellyfin"), ("emby", "Emby")])
def test_a_refused_jellyfin_or_emby_webhook_says_how_to_get_its_play_back_no_link_can(
    tmp_path: Path, source: str, name: str
) -> None:
    # Jellyfin and Emby never send a refused webhook again, and with the catch-up off nothing
    # reads them back: the status used to comfort with "lost unless a link's sync finds it".
    # What brings the play back is marking it watched again in the server, which sends it.
    port = free_port()
    path = tmp_path / "watchbridge.yaml"
    server = f"  {source}: {{url: 'http://127.0.0.1:9', api_key: k, catch_up: false}}\n"
    path.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n" + without_trakt(f"{source}: [alex]", server),
        encoding="utf-8",
    )
    body = (
        ROOT / "tests" / "fixtures" / source / "playback_stop_episode_completed.json"
    ).read_bytes()
    service = ServiceProcess(path, port).start()
    try:
        url = f"{service.url}/webhooks/{source}/{SECRET}-old"
        answer = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        refused = httpx.get(f"{service.url}/api/status").json()["refused_webhooks"]
        page = httpx.get(service.url).text
    finally:
        service.kill()
    assert answer.status_code == 401
    (refusal,) = refused
    told = f"mark what was watched meanwhile watched again in {name} (that sends it)"
    assert told in refusal["warning"] and "link's sync" not in refusal["warning"], refusal
    assert told in page.replace("&#x27;", "'") and "link&#x27;s sync" not in page


def test_a_listed_name_taken_by_another_jellyfin_account_after_a_rename_is_told(
    tmp_path: Path, start_fake: Any
) -> None:
    # Alex is listed by name. Renamed "alexandra" in Jellyfin, her plays are followed by the
    # id watchbridge saw with "alex"; then a new account (a guest, a child) gets the name
    # "alex": the entry now matches it too, and both accounts' plays went to alice's
    # Serializd without a word. Which one is alice's only the user knows: they are told.
    serializd = start_fake(FakeSerializd())
    assert isinstance(serializd, FakeSerializd)
    serializd.seed_reference_catalogue()
    jellyfin = sample_server(start_fake, "jellyfin")
    port = free_port()
    path = tmp_path / "watchbridge.yaml"
    email, password, _ = SERIALIZD_USER
    path.write_text(
        f"""server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  jellyfin: {{url: "{jellyfin.url}", api_key: "{JELLYFIN_KEY}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  alice:
    users: {{jellyfin: [alex]}}
    accounts: {{serializd: {{email: "{email}", password: "{password}"}}}}
""",
        encoding="utf-8",
    )
    alex, guest = "a3f1c9e27b5d4c08b6e2f1d0c9b8a7e6", "d" * 32
    service = ServiceProcess(path, port).start()
    try:
        for user_id, name, episode in (
            (alex, "alex", 11),
            (alex, "alexandra", 12),  # renamed: followed by its id
            (guest, "alex", 13),  # another account now named alex
            (alex, "alexandra", 14),
        ):
            payload = sample_json("jellyfin", "playback_stop_episode_completed.json")
            payload |= {"UserId": user_id, "NotificationUsername": name}
            payload |= {"EpisodeNumber": episode, "ItemId": f"{episode:032x}"}
            answer = httpx.post(f"{service.url}/webhooks/jellyfin/{SECRET}", json=payload)
            assert answer.status_code == 202
        told = (
            f"'alex' is now the name of another Jellyfin account (id {guest}), whose webhooks "
            "go to alice too"
        )
        service.wait_for_output(told)
        renamed = httpx.get(f"{service.url}/api/status").json()["renamed_accounts"]
        assert [r["account_id"] for r in renamed] == [alex], renamed
        assert told in renamed[0]["message"]
    finally:
        service.kill()


@pytest.mark.parametrize(("source", "name"), [("emby", "Emby"), ("jellyfin", "Jellyfin")])
def test_a_play_from_a_second_server_of_that_kind_says_it_cannot_be_read_not_to_identify_it(
    tmp_path: Path, start_fake: Any, source: str, name: str
) -> None:
    # A household with two Emby servers (or two Jellyfins) can set only one under services.
    # The other's episode names its show by a SeriesId the configured server cannot stand
    # for (Emby numbers items from 1 on every server): its answer is not taken, and the play
    # waits. The reason told the user to identify the show in that server, which can never
    # help; it names the other server instead, and what can find the show.
    server = sample_server(start_fake, source)  # holds the sample's SeriesId, as its own
    serializd = start_fake(FakeSerializd())
    email, password, _ = SERIALIZD_USER
    text = f"""server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  serializd: {{api_url: "{serializd.url}"}}
  {source}: {{url: "{server.url}", api_key: {JELLYFIN_KEY}}}
profiles:
  me:
    users: {{{source}: [alex]}}
    accounts: {{serializd: {{email: "{email}", password: "{password}"}}}}
"""
    play = sample_json(source, "playback_stop_episode_completed.json")
    other = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    if source == "emby":
        play["Server"]["Id"] = play["Item"]["ServerId"] = other
    else:
        play["ServerId"] = other
    runtime = build_runtime(parse_config(text, tmp_path / "watchbridge.yaml", {}))
    with AppThread(build_app(runtime)) as app:
        answer = httpx.post(f"{app.url}/webhooks/{source}/{SECRET}", json=play)
        assert answer.json() == {"status": "accepted", "queued": 1}
        wait_for(lambda: settled(tmp_path), timeout=20)
    with sqlite3.connect(tmp_path / "wb.db") as db:
        (reason,) = db.execute("SELECT last_error FROM outbox").fetchone()
    assert reason.startswith(
        f"unmatched: Breaking Bad S05E14 was played on another {name} server ({other}) than "
        f"the one at services.{source}.url ({SAMPLE_SERVER_IDS[source]}), whose items "
        "watchbridge cannot read"
    ), reason
    assert "add services.trakt" in reason and "identify it there" not in reason
