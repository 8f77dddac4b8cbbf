"""A household on one watchbridge: several people, servers and devices, each play on its own
person's Trakt, once."""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import ServiceProcess, free_port, nothing_waits, sign_in_trakt
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import SECRET, plex_multipart, seeded, wait_for
from watchbridge.store import Store

SERVER = "d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"  # of the Plex samples
OTHER_SERVER = "0f9e8d7c6b5a49382716a5b4c3d2e1f0a9b8c7d6"
BOB_ID = 5551234


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_user("bob")
    return seeded(fake)


def household(tmp_path: Path, trakt: FakeTrakt, profiles: str) -> ServiceProcess:
    port = free_port()
    config = tmp_path / "watchbridge.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
delivery: {{retry_after: 1s}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
{profiles}""",
        encoding="utf-8",
    )
    store = Store.open(tmp_path / "wb.db")
    sign_in_trakt(store, trakt, "alice", now=time.time())
    sign_in_trakt(store, trakt, "bob", now=time.time(), user="bob")
    store.close()
    return ServiceProcess(config, port)


TWO_PEOPLE = f"""
  alice:
    users: {{plex: ["1"], jellyfin: [alice]}}
    accounts: {{trakt: {{}}}}
  bob:
    users: {{plex: ["{BOB_ID}"], jellyfin: [bob]}}
    accounts: {{trakt: {{}}}}
"""


@pytest.fixture
def two(tmp_path: Path, trakt: FakeTrakt) -> Iterator[ServiceProcess]:
    proc = household(tmp_path, trakt, TWO_PEOPLE).start()
    yield proc
    proc.kill()


def post_plex(service: ServiceProcess, payload: dict[str, Any]) -> httpx.Response:
    body, content_type = plex_multipart(payload)
    url = f"{service.url}/webhooks/plex/{SECRET}"
    return httpx.post(url, content=body, headers={"content-type": content_type})


def plex(event: str, account: int, title: str, player: str, server: str = SERVER) -> dict[str, Any]:
    payload = copy.deepcopy(sample_json("plex", "episode_legacy_media_scrobble.json"))
    payload["event"] = event
    payload["Account"] = {"id": account, "title": title}
    payload["Server"] = {"title": "x", "uuid": server}
    payload["Player"] = {"local": True, "title": player, "uuid": f"uuid-{player}"}
    return payload


def latest_delivery(service: ServiceProcess, profile: str) -> tuple[str, str | None]:
    """The status of the delivery last queued for `profile`, and what it ran into (None if
    it was never tried: a try refused for a lost sign-in spends no attempt, but says why)."""
    database = service.config.parent / "wb.db"
    with contextlib.closing(sqlite3.connect(database)) as conn:
        status, error = conn.execute(
            "SELECT status, last_error FROM outbox WHERE profile = ? ORDER BY id DESC LIMIT 1",
            (profile,),
        ).fetchone()
    return str(status), None if error is None else str(error)


def settled(service: ServiceProcess) -> bool:
    """Whether every delivery queued so far is done or dead: nothing more is on its way."""
    return nothing_waits(service.config.parent / "wb.db")


def plays(trakt: FakeTrakt, user: str | None = None) -> list[tuple[str, int | None]]:
    return [(h.item.title, getattr(h.item, "number", None)) for h in trakt.history(user)]


def test_two_people_watching_one_episode_at_once_get_a_play_each(
    two: ServiceProcess, trakt: FakeTrakt
) -> None:
    for account, name, player in ((1, "alice", "tv"), (BOB_ID, "bob", "tablet")):
        assert post_plex(two, plex("media.play", account, name, player)).status_code == 202
    for account, name, player in ((1, "alice", "tv"), (BOB_ID, "bob", "tablet")):
        assert post_plex(two, plex("media.scrobble", account, name, player)).status_code == 202
        assert post_plex(two, plex("media.stop", account, name, player)).status_code == 202
    wait_for(lambda: len(trakt.history()) == 1 and len(trakt.history("bob")) == 1)
    wait_for(lambda: settled(two))
    assert len(trakt.history()) == 1 and len(trakt.history("bob")) == 1


def test_one_persons_lost_trakt_sign_in_holds_only_their_plays(
    two: ServiceProcess, trakt: FakeTrakt
) -> None:
    trakt.revoke_tokens("bob")
    for account, name, player in ((BOB_ID, "bob", "tablet"), (1, "alice", "tv")):
        assert post_plex(two, plex("media.play", account, name, player)).status_code == 202
        assert post_plex(two, plex("media.scrobble", account, name, player)).status_code == 202
    wait_for(lambda: len(trakt.history()) == 1)
    for account, name, player in ((BOB_ID, "bob", "tablet2"), (1, "alice", "tv2")):
        assert post_plex(two, plex("media.play", account, name, player)).status_code == 202
    two.wait_for_output("deliveries paused")
    # Alice's start on tv2 was queued after Bob's on tablet2: once it is delivered, Bob's had
    # its turn too.
    wait_for(lambda: latest_delivery(two, "alice")[0] == "done")
    assert trakt.history("bob") == []
    # His revoked sign-in refuses whatever would be sent (the fake answers 401): what shows
    # his deliveries held is that his later start was never tried.
    assert latest_delivery(two, "bob") == ("pending", None)
    output = two.output()
    assert "deliveries paused" in output and "key=trakt:bob" in output


def test_two_plex_servers_each_owners_plays_reach_their_own_trakt(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # Alice owns SERVER and lists 1; Bob owns OTHER_SERVER, where he is account 1 too.
    profiles = f"""
  alice:
    users: {{plex: ["1"]}}
    accounts: {{trakt: {{}}}}
  bob:
    users: {{plex: [bob, "{OTHER_SERVER}:1"]}}
    accounts: {{trakt: {{}}}}
"""
    service = household(tmp_path, trakt, profiles).start()
    try:
        bobs = plex("media.scrobble", 1, "bob", "bobs-tv", server=OTHER_SERVER)
        assert post_plex(service, bobs).status_code == 202
        wait_for(lambda: len(trakt.history("bob")) == 1)
        alices = plex("media.scrobble", 1, "alice", "alices-tv")
        assert post_plex(service, alices).status_code == 202
        wait_for(lambda: len(trakt.history()) == 1)
        wait_for(lambda: settled(service))
        assert len(trakt.history("bob")) == 1 and len(trakt.history()) == 1
    finally:
        service.kill()


def test_a_home_user_listed_by_name_and_renamed_in_plex_keeps_their_own_plays(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    """Bob is listed by name beside a default profile. Renamed "Robert" in Plex (after a
    restart, too), his plays still reach his own Trakt, not the default person's, and the log
    and the status say what to write in the config."""
    profiles = """
  alice:
    default: true
    users: {plex: ["1"]}
    accounts: {trakt: {}}
  bob:
    users: {plex: [bob]}
    accounts: {trakt: {}}
"""
    service = household(tmp_path, trakt, profiles).start()
    try:
        assert post_plex(service, plex("media.scrobble", BOB_ID, "Bob", "tv")).status_code == 202
        wait_for(lambda: len(trakt.history("bob")) == 1)
        service.terminate()
        service.start()

        renamed = plex("media.scrobble", BOB_ID, "Robert", "tablet")
        renamed["Metadata"] |= {"index": 15, "ratingKey": "73154", "key": "/library/metadata/73154"}
        renamed["Metadata"]["guid"] = "com.plexapp.agents.thetvdb://81189/5/15?lang=en"
        assert post_plex(service, renamed).status_code == 202
        wait_for(lambda: len(trakt.history("bob")) == 2)
        wait_for(lambda: settled(service))
        assert trakt.history() == []  # nothing on the default profile's Trakt

        told = (
            f"Plex account 'Robert' (id {BOB_ID}) was 'Bob', listed in profiles.bob.users.plex:"
            " write its id or its new name there"
        )
        service.wait_for_output(told)
        status = httpx.get(f"{service.url}/api/status").json()
        [shown] = status["renamed_accounts"]
        assert shown["profile"] == "bob" and shown["message"] == told
        assert "write its id or its new name there" in httpx.get(f"{service.url}/").text
    finally:
        service.kill()


def post_jellyfin(service: ServiceProcess, user_id: str, name: str, episode: int) -> int:
    payload = sample_json("jellyfin", "playback_stop_episode_completed.json")
    payload |= {"UserId": user_id, "NotificationUsername": name, "EpisodeNumber": episode}
    payload |= {"Provider_tvdb": str(4000000 + episode), "Provider_imdb": "", "Provider_tmdb": ""}
    payload |= {"ItemId": f"{episode:032x}"}
    return httpx.post(f"{service.url}/webhooks/jellyfin/{SECRET}", json=payload).status_code


def test_a_jellyfin_user_listed_by_id_whose_id_changed_keeps_their_own_plays(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    """Bob is listed by his Jellyfin id beside a default profile. His user made again on the
    server (a new id, the same name; after a restart, too), his plays still reach his own
    Trakt, not the default person's, and the log and the status say what to write."""
    old, new = "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "f9e8d7c6b5a4938271605f4e3d2c1b0a"
    profiles = f"""
  alice:
    default: true
    users: {{jellyfin: [alice]}}
    accounts: {{trakt: {{}}}}
  bob:
    users: {{jellyfin: ["{old}"]}}
    accounts: {{trakt: {{}}}}
"""
    service = household(tmp_path, trakt, profiles).start()
    try:
        assert post_jellyfin(service, old, "bob", 14) == 202
        wait_for(lambda: len(trakt.history("bob")) == 1)
        service.terminate()
        service.start()

        assert post_jellyfin(service, new, "bob", 15) == 202
        wait_for(lambda: len(trakt.history("bob")) == 2)
        wait_for(lambda: settled(service))
        assert trakt.history() == []  # nothing on the default profile's Trakt

        told = (
            f"Jellyfin account 'bob' now has id {new}; profiles.bob.users.jellyfin lists"
            f" {old}, its id before: replace it with {new}"
        )
        service.wait_for_output(told)
        status = httpx.get(f"{service.url}/api/status").json()
        [shown] = status["new_account_ids"]
        assert shown["profile"] == "bob" and shown["message"] == told
        assert shown["account_id"] == new and shown["was"] == old and shown["name"] == "bob"
        assert f"replace it with {new}" in httpx.get(f"{service.url}/").text
    finally:
        service.kill()


def test_a_jellyfin_name_with_accents_matches_whatever_its_case_and_unicode_form(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    """Bob is listed by names typed on a PC ("José", "Jörg Straße": one character per accented
    letter). Jellyfin sends them in capitals, from a Mac as "E" plus a combining accent, with
    "ß" written "SS", as raw UTF-8 or as \\u escapes: each play is still Bob's, not the default
    person's."""
    profiles = """
  alice:
    default: true
    users: {jellyfin: [alice]}
    accounts: {trakt: {}}
  bob:
    users: {jellyfin: ["José", "Jörg Straße"]}
    accounts: {trakt: {}}
"""
    decomposed = unicodedata.normalize("NFD", "JOSÉ")
    assert decomposed != "JOSÉ" and len(decomposed) == 5
    service = household(tmp_path, trakt, profiles).start()
    try:
        assert post_jellyfin(service, "1" * 32, decomposed, 14) == 202
        payload = sample_json("jellyfin", "playback_stop_episode_completed.json")
        payload |= {"UserId": "2" * 32, "NotificationUsername": "JÖRG STRASSE"}
        payload |= {"EpisodeNumber": 15, "Provider_tvdb": "4000015", "ItemId": f"{15:032x}"}
        payload |= {"Provider_imdb": "", "Provider_tmdb": ""}
        escaped = json.dumps(payload, ensure_ascii=True).encode()
        assert b"\\u00d6" in escaped
        url = f"{service.url}/webhooks/jellyfin/{SECRET}"
        assert httpx.post(url, content=escaped).status_code == 202
        wait_for(lambda: len(trakt.history("bob")) == 2)
        wait_for(lambda: settled(service))
        assert trakt.history() == []  # nothing on the default profile's Trakt
    finally:
        service.kill()


def test_a_latin_1_body_that_does_not_say_so_still_names_its_person(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    """A script posting Latin-1 without a charset in its Content-Type (Windows PowerShell 5.1
    does) was refused as "not valid UTF-8", and the play lost: "Jörg" is read as he is and his
    play reaches his own Trakt."""
    profiles = """
  alice:
    default: true
    users: {generic: [alice]}
    accounts: {trakt: {}}
  bob:
    users: {generic: ["Jörg"]}
    accounts: {trakt: {}}
"""
    episode = {"type": "episode", "season": 5, "number": 14, "show": {"ids": {"tvdb": 81189}}}
    body = {"event": "played", "user": "Jörg", "item": episode}
    latin_1 = json.dumps(body, ensure_ascii=False).encode("latin-1")
    assert b"J\xf6rg" in latin_1
    service = household(tmp_path, trakt, profiles).start()
    try:
        response = httpx.post(
            f"{service.url}/webhooks/generic/{SECRET}",
            content=latin_1,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 202, response.text
        wait_for(lambda: len(trakt.history("bob")) == 1)
        wait_for(lambda: settled(service))
        assert trakt.history() == []
    finally:
        service.kill()


def test_the_owners_plays_tautulli_reports_never_reach_the_default_profile(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # Alice owns the server and lists 1, as the README says; Bob takes everyone else's plays.
    # Tautulli names Alice by her plex.tv id and username, never 1: Plex's webhook, which
    # names her 1 and by that username, reports her plays to her own Trakt.
    profiles = """
  alice:
    users: {plex: ["1"]}
    accounts: {trakt: {}}
  bob:
    default: true
    accounts: {trakt: {}}
"""
    service = household(tmp_path, trakt, profiles).start()
    try:
        alices = plex("media.scrobble", 1, "alex", "alices-tv")  # the samples' owner, alex
        assert post_plex(service, alices).status_code == 202
        wait_for(lambda: len(trakt.history()) == 1)
        tautulli = sample_json("tautulli", "watched_episode.json")
        assert (tautulli["user_id"], tautulli["username"]) == ("27160034", "alex")
        url = f"{service.url}/webhooks/tautulli/{SECRET}"
        answer = httpx.post(url, json=tautulli)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "ignored_sent_by_plex"
        assert answer.json()["reason"].startswith("Plex's own webhook sends this account's plays")
        wait_for(lambda: settled(service))
        assert trakt.history("bob") == [] and len(trakt.history()) == 1
        # Not an account for the user to map: the status lists none.
        assert httpx.get(f"{service.url}/api/status").json()["unmapped_accounts"] == []
    finally:
        service.kill()
