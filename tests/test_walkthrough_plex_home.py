"""Walkthrough: a Plex Home through the running app, Plex's own webhook and Tautulli's.

The owner alex (Plex Pass, so Plex's webhook fires for everyone playing on the server: account
1 there, plex.tv id 27160034 in Tautulli's reports) has Trakt and Serializd; Sam, a managed
user of the Home (no plex.tv login of their own), has AniList; Robin, the other managed user,
has no profile; jamie.r, a friend with a shared library, has Serializd. Managed users and
friends are their plex.tv id in Plex's webhook and in Tautulli's `user_id` alike, and Tautulli's
`username` is their Plex name (Tautulli's plextv.get_full_users_list takes both from plex.tv's
user list). Each test asserts what the fake Trakt, Serializd and AniList hold at the end."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.base import FakeServer
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import write_config
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import plex_multipart
from tests.unpaced import unpaced
from tests.walkthrough import Clock, RunningHouse, anilist_service

SECRET = "plex-home-walkthrough-secret"
OWNER_PLEX_TV = "27160034"  # alex's plex.tv id: Tautulli's user_id for the owner (samples)
SAM, ROBIN, JAMIE = 28374651, 28374652, 48151623  # plex.tv ids, in both senders' reports
JAMIE_SERIALIZD = ("jamie@example.com", "jamie's password", "jamie_tv")
SAM_ANILIST = 777
SPY_FAMILY = 140960  # AniList: SPY x FAMILY Part 1 = TheTVDB 405920 S1E1-12
SPY_GUID = "com.plexapp.agents.thetvdb://405920/1/3?lang=en"
SPY_PLEX = {"guid": SPY_GUID, "grandparentTitle": "SPY x FAMILY", "parentIndex": 1, "index": 3}
SPY_TAUTULLI = {
    "guid": SPY_GUID,
    "show_name": "SPY x FAMILY",
    "season_num": "1",
    "episode_num": "3",
    "imdb_id": "",
    "themoviedb_id": "120089",
    "thetvdb_id": "405920",
}
EVERYONE_BY_PLEX = {
    "alex": '{plex: ["1"]}',
    "sam": f'{{plex: ["{SAM}"]}}',
    "jamie": f'{{plex: ["{JAMIE}"]}}',
}


class Home(RunningHouse):
    """The running app and the fakes it delivers to."""

    def __init__(
        self, config: Path, trakt: FakeTrakt, serializd: FakeSerializd, anilist: FakeAniList
    ) -> None:
        super().__init__(config, Clock(), (trakt, serializd, anilist), trakt=trakt)
        self.trakt, self.serializd, self.anilist = trakt, serializd, anilist

    def plex(self, payload: dict[str, Any]) -> dict[str, Any]:
        body, content_type = plex_multipart(payload)
        url = f"{self.app.url}/webhooks/plex/{SECRET}"
        answer = httpx.post(url, content=body, headers={"content-type": content_type})
        assert answer.is_success, answer.text
        return dict(answer.json())

    def tautulli(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.app.url}/webhooks/tautulli"
        answer = httpx.post(url, json=body, headers={"X-Webhook-Secret": SECRET})
        assert answer.is_success, answer.text
        return dict(answer.json())

    def trakt_plays(self) -> list[str]:
        return [entry.item.title for entry in self.trakt.history()]

    def logged(self, email: str | None = None) -> list[tuple[int, int | None]]:
        """Serializd's diary of alex (or the user of `email`): (show, episode) per entry."""
        user = self.serializd.users[email] if email else None
        return [(row.show_id, row.episode_number) for row in self.serializd.diary(user)]

    def sams_anime(self) -> dict[int, tuple[str, int, int]]:
        """Sam's AniList: media -> (status, progress, rewatches)."""
        entries = self.anilist.snapshot(self.anilist.user(SAM_ANILIST))
        return {media: (e["status"], e["progress"], e["repeat"]) for media, e in entries.items()}


def plex(sample: str, account: int, name: str, **metadata: Any) -> dict[str, Any]:
    """A Plex webhook of the samples' server (Basement), played by `account` as `name`."""
    payload = copy.deepcopy(sample_json("plex", sample))
    payload["Account"] = {"id": account, "title": name}
    payload["user"] = account == 1  # the owner's own webhook; the others' reach it as owner's
    payload["Metadata"].update(metadata)
    return payload


def tautulli(sample: str, user_id: str | int, username: str, **fields: Any) -> dict[str, Any]:
    """Tautulli's report (the docs' template) of the same server, for `user_id` as `username`."""
    named = {"user_id": str(user_id), "username": username, "user": username}
    return sample_json("tautulli", sample) | named | fields


@contextlib.contextmanager
def open_home(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    users: dict[str, str],
    extra: str = "",
) -> Iterator[Home]:
    """The household's config with each profile's `users` as given (YAML, with any further
    profile key on lines of its own after it) and `extra` top-level YAML lines, its services
    on the fakes, the app running."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    anilist, lists = start_fake(FakeAniList()), start_fake(FakeDatasets())
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    assert isinstance(anilist, FakeAniList) and isinstance(lists, FakeDatasets)
    show = trakt.add_show("Breaking Bad", 2008, imdb="tt0903747", tmdb=1396, tvdb=81189)
    trakt.add_episode(show, 5, 16, title="Felina")
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    serializd.seed_reference_catalogue()
    serializd.add_user(*JAMIE_SERIALIZD)
    anilist.limit = anilist.burst_limit = 100_000
    anilist.add_media(SPY_FAMILY, episodes=12, format="TV")
    sam = anilist.add_user(SAM_ANILIST, "sam_kid")
    email, password, _ = ALICE
    path = write_config(
        tmp_path,
        f"{extra}"
        "services:\n"
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}\n'
        f"{anilist_service(anilist, lists)}"
        f'  serializd: {{api_url: "{serializd.url}"}}\n'
        "profiles:\n"
        f"  alex:\n    users: {users['alex']}\n"
        f'    accounts: {{trakt: {{}}, serializd: {{email: "{email}", password: "{password}"}}}}\n'
        f"  sam:\n    users: {users['sam']}\n"
        f'    accounts: {{anilist: {{token: "{anilist.issue_token(sam)}"}}}}\n'
        f"  jamie:\n    users: {users['jamie']}\n"
        f"    accounts: {{serializd: {{email: {JAMIE_SERIALIZD[0]},"
        f' password: "{JAMIE_SERIALIZD[1]}"}}}}\n',
        secret=SECRET,
    )
    with Home(path, trakt, serializd, anilist) as home:
        yield home


@pytest.fixture(autouse=True)
def _unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    unpaced(monkeypatch, "anilist", "serializd", "trakt")


def test_everyone_mapped_for_plexs_webhook_lands_once_on_their_own_services(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # The README's Plex set-up: the owner as 1, the managed user and the friend by their
    # plex.tv ids. Tautulli reports the same viewings; Robin is listed nowhere.
    with open_home(tmp_path, start_fake, EVERYONE_BY_PLEX) as home:
        home.plex(plex("episode_legacy_media_scrobble.json", 1, "alex"))
        home.plex(plex("episode_legacy_media_stop.json", 1, "alex"))
        told = home.tautulli(tautulli("watched_episode.json", OWNER_PLEX_TV, "alex"))
        assert told["status"] == "ignored_sent_by_plex"
        home.plex(plex("episode_legacy_media_scrobble.json", SAM, "Sam", **SPY_PLEX))
        told = home.tautulli(tautulli("watched_episode.json", SAM, "Sam", **SPY_TAUTULLI))
        assert told["status"] == "ignored_sent_by_plex"
        home.plex(plex("episode_legacy_media_scrobble.json", JAMIE, "jamie.r"))
        told = home.plex(plex("episode_legacy_media_scrobble.json", ROBIN, "Robin"))
        assert told["status"] == "ignored_unmapped_account"
        home.plex(plex("movie_media_rate.json", 1, "alex"))
        home.settle()
        assert home.trakt_plays() == ["Felina"]
        assert [(r.item.title, r.rating) for r in home.trakt.ratings()] == [("Arrival", 9)]
        assert home.logged() == [(1396, 16)]
        assert home.logged(JAMIE_SERIALIZD[0]) == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}
        status = home.status()
    (robin,) = [line for line in status.splitlines() if line.startswith("unlisted:")]
    assert "plex account Robin (id 28374652) on Plex server Basement" in robin
    assert 'write profiles.NAME.users.plex: ["28374652"]' in robin


def test_a_viewing_both_senders_report_lands_once_for_each_person(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Each profile listed for both senders: Tautulli's Watched (85 %) comes before Plex's
    # scrobble (90 %); each viewing is one play, on each person's own services.
    users = {
        "alex": '{plex: ["1"], tautulli: [alex]}',
        "sam": f'{{plex: ["{SAM}"], tautulli: ["{SAM}"]}}',
        "jamie": f'{{plex: ["{JAMIE}"], tautulli: ["{JAMIE}"]}}',
    }
    people: list[tuple[int, str, str, dict[str, Any], dict[str, Any]]] = [
        (1, "alex", OWNER_PLEX_TV, {}, {}),
        (SAM, "Sam", str(SAM), SPY_PLEX, SPY_TAUTULLI),
        (JAMIE, "jamie.r", str(JAMIE), {}, {}),
    ]
    with open_home(tmp_path, start_fake, users) as home:
        for account, name, user_id, on_plex, on_tautulli in people:
            home.plex(plex("episode_legacy_media_play.json", account, name, **on_plex))
            home.tautulli(tautulli("play_episode.json", user_id, name, **on_tautulli))
            home.tautulli(tautulli("watched_episode.json", user_id, name, **on_tautulli))
            home.plex(plex("episode_legacy_media_scrobble.json", account, name, **on_plex))
            home.plex(plex("episode_legacy_media_stop.json", account, name, **on_plex))
            home.tautulli(tautulli("stop_episode.json", user_id, name, **on_tautulli))
        home.settle()
        assert home.trakt_plays() == ["Felina"]
        assert home.logged() == [(1396, 16)]
        assert home.logged(JAMIE_SERIALIZD[0]) == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}


# Some people's plays told by Tautulli, others' by Plex's own webhook, which still fires for
# everyone playing on the owner's server (Plex Pass).
SOME_BY_TAUTULLI = {
    "alex": '{plex: ["1"]}',
    "sam": "{tautulli: [Sam]}",
    "jamie": f'{{tautulli: ["{JAMIE}"]}}',
}


def test_a_friend_tautulli_reports_is_never_the_default_profiles_by_plexs_webhook(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # The owner's profile takes the accounts no profile lists (default: true). jamie's plays
    # come by Tautulli to jamie's Serializd; Plex's webhook of the same viewing is no
    # account for want of an entry: it landed on alex's Trakt and Serializd too.
    users = SOME_BY_TAUTULLI | {"alex": '{plex: ["1"]}\n    default: true'}
    with open_home(tmp_path, start_fake, users) as home:
        told = home.plex(plex("episode_legacy_media_scrobble.json", JAMIE, "jamie.r"))
        assert told["status"] == "ignored_sent_by_tautulli", told
        assert told["reason"].startswith("Tautulli's webhook sends this account's plays")
        home.tautulli(tautulli("watched_episode.json", JAMIE, "jamie.r"))
        told = home.plex(plex("episode_legacy_media_scrobble.json", SAM, "Sam", **SPY_PLEX))
        assert told["status"] == "ignored_sent_by_tautulli", told
        home.tautulli(tautulli("watched_episode.json", SAM, "Sam", **SPY_TAUTULLI))
        home.settle()
        assert home.logged(JAMIE_SERIALIZD[0]) == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}
        assert home.trakt_plays() == [] and home.logged() == []
        assert home.api_status()["default_profile_accounts"] == []


def test_plex_webhooks_of_people_tautulli_reports_are_no_accounts_to_map(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # No default profile: nothing lands twice, but the status told to write Sam's and jamie's
    # Plex ids under users.plex, of accounts whose plays reach their profiles by Tautulli.
    with open_home(tmp_path, start_fake, SOME_BY_TAUTULLI) as home:
        home.plex(plex("episode_legacy_media_scrobble.json", SAM, "Sam", **SPY_PLEX))
        home.plex(plex("episode_legacy_media_scrobble.json", JAMIE, "jamie.r"))
        home.tautulli(tautulli("watched_episode.json", SAM, "Sam", **SPY_TAUTULLI))
        home.tautulli(tautulli("watched_episode.json", JAMIE, "jamie.r"))
        told = home.plex(plex("episode_legacy_media_scrobble.json", ROBIN, "Robin"))
        assert told["status"] == "ignored_unmapped_account"
        home.settle()
        assert home.logged(JAMIE_SERIALIZD[0]) == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}
        status = home.status()
        listed = home.api_status()
    unlisted = [line for line in status.splitlines() if line.startswith("unlisted:")]
    assert len(unlisted) == 1 and "Robin (id 28374652)" in unlisted[0], unlisted
    assert [one["name"] for one in listed["unlisted_accounts"]] == ["Robin"]
    assert [one["account"] for one in listed["unmapped_accounts"]] == ["Robin (id 28374652)"]
