"""Walkthrough: a household with its own two Plex servers and a friend's shared library.

alex owns the Plex server at home (`services.plex.url`, Plex Pass: its webhooks point here)
and a Raspberry Pi at the holiday house (a second server of the same account, not at
`services.plex.url`), and watches on Jordan's server too, which Jordan shares with alex.

What reaches which URL (reference plex.md §1, [doc]): Plex webhooks are configured per
*account*, not per server. The owner's URLs hear every account playing on the owner's servers
(the owner as `Account.id` 1, everyone else by their plex.tv id), and a user's own URLs
"travel with them": they fire when that user plays on any server (PMS 1.3.4 on). So alex's
URL hears alex on all three servers (on Jordan's as alex's plex.tv id, `user: true, owner:
false`) and Jordan playing on alex's servers (`user: false, owner: true`); Jordan's own plays
on Jordan's server go to Jordan's URLs, never here. (The same article says webhooks need
Plex Pass "on the server's admin/owner account"; whether Jordan's server then needs it too
for alex's travelling webhooks it does not say.) docs/webhooks.md tells users the same: list
your username (or plex.tv id) beside `1` to count your plays on a friend's server.

watchbridge reads only the server at `services.plex.url`: the Pi's and Jordan's items are
known by what their webhooks carry (and Plex's catalogue for a plex:// guid, and Trakt's id
search), never by the home server's item under the same ratingKey. Each test asserts what the
fake Trakt and Serializd hold at the end."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import MODERN_VERSION, TOKEN, FakePlex
from tests.fakes.plextv import FakePlexTv
from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import write_config
from tests.ingest_samples import sample_json
from tests.test_app import wait_until
from tests.test_webhooks_e2e import plex_multipart
from tests.unpaced import unpaced
from tests.walkthrough import Clock, RunningHouse, deliver_due, scheduled_run
from watchbridge.config import load_config
from watchbridge.http import HttpClient, RetryPolicy
from watchbridge.maintenance import check_unlisted_accounts
from watchbridge.sync import RunResult
from watchbridge.wiring import build_runtime

SECRET = "two-plex-servers-walkthrough-secret"
HOME_ID = "a0a0a0a0b1b1b1b1c2c2c2c2d3d3d3d3e4e4e4e4"
PI_ID = "9f9f9f9f8e8e8e8e7d7d7d7d6c6c6c6c5b5b5b5b"
JORDANS_ID = "1234567890abcdef1234567890abcdef12345678"
BB_SHOW_GUID = "5d9c086c46115600200aa2fe"  # plex://show/<this>, Plex's catalogue key
ARRIVAL_GUID = "5d776d1847dd6e001f6f0a4f"
# Breaking Bad S1E1-3: (Trakt/TMDB episode's TVDB id, IMDb id)
EPISODES = {1: (349232, "tt0959621"), 2: (349235, "tt1054724"), 3: (349236, "tt1054725")}
HOUR, DAY = 3600.0, 86400.0


def plex_server(machine_id: str, keys_from: int) -> FakePlex:
    """A server of Plex's current agents holding Breaking Bad S1E1-3 and Arrival, its
    ratingKeys numbered from `keys_from` (each server numbers its own items)."""
    plex = FakePlex(machine_id=machine_id, version=MODERN_VERSION)
    show = str(keys_from)
    plex.add_show(
        show,
        "Breaking Bad",
        2008,
        ["tmdb://1396", "tvdb://81189"],
        guid=f"plex://show/{BB_SHOW_GUID}",
    )
    for number, (tvdb, imdb) in EPISODES.items():
        plex.add_episode(
            str(keys_from + number), show, 1, number, [f"imdb://{imdb}", f"tvdb://{tvdb}"]
        )
    plex.add_movie(
        str(keys_from + 10),
        "Arrival",
        2016,
        ["imdb://tt2543164", "tmdb://329865"],
        guid=f"plex://movie/{ARRIVAL_GUID}",
    )
    return plex


class House(RunningHouse):
    """The running app, the home server it reads, the Pi's and Jordan's items (never asked:
    their webhooks carry them), Trakt and Serializd."""

    def __init__(
        self,
        config: Path,
        clock: Clock,
        home: FakePlex,
        plextv: FakePlexTv,
        trakt: FakeTrakt,
        serializd: FakeSerializd,
    ) -> None:
        super().__init__(config, clock, (trakt, serializd, plextv), trakt=trakt)
        self.home, self.plextv, self.trakt, self.serializd = home, plextv, trakt, serializd
        self.pi, self.jordans = plex_server(PI_ID, 500), plex_server(JORDANS_ID, 9000)
        self.alex_id = plextv.owner.id  # alex's plex.tv id: alex on Jordan's server
        self.jordan_id = plextv.add_account("jordan").id

    def server(self, name: str) -> FakePlex:
        return {"home": self.home, "pi": self.pi, "jordans": self.jordans}[name]

    def webhook(
        self, event: str, server: str, who: str, key: str, **metadata: Any
    ) -> dict[str, Any]:
        """Plex's webhook `event` of `who` (alex or jordan) about item `key` of `server`, as it
        reaches alex's URL."""
        plex = self.server(server)
        owner = server != "jordans"
        if who == "alex":
            account = {"id": 1 if owner else self.alex_id, "title": "alex"}
        else:
            account = {"id": self.jordan_id, "title": "jordan"}
        payload = copy.deepcopy(sample_json("plex", "movie_media_scrobble.json"))
        titles = {"home": "Home", "pi": "Holiday Pi", "jordans": "Jordan's Plex"}
        payload |= {
            "event": event,
            "user": who == "alex",
            "owner": owner,
            "Account": account,
            "Server": {"title": titles[server], "uuid": plex.machine_id},
            "Player": {"local": True, "title": f"{server} TV", "uuid": f"player-{server}"},
        }
        item = plex.items[key]
        payload["Metadata"] = (
            {
                name: copy.deepcopy(item[name])
                for name in (
                    *("ratingKey", "key", "guid", "type", "title", "year", "Guid"),
                    *("grandparentRatingKey", "grandparentGuid", "grandparentTitle"),
                    *("parentRatingKey", "parentGuid", "parentIndex", "index"),
                    *("librarySectionID", "librarySectionTitle", "duration"),
                )
                if name in item
            }
            | {"librarySectionType": "show" if item["type"] == "episode" else "movie"}
            | metadata
        )
        body, content_type = plex_multipart(payload)
        url = f"{self.app.url}/webhooks/plex/{SECRET}"
        answer = httpx.post(url, content=body, headers={"content-type": content_type})
        assert answer.is_success, answer.text
        return dict(answer.json())

    def watch(self, server: str, who: str, key: str) -> float:
        """`who` plays item `key` of `server` through: its webhooks as it starts and ends. The
        time it ended (the scrobble's: when watchbridge dates the play)."""
        self.webhook("media.play", server, who, key)
        self.shift(45 * 60)
        ended = self.clock()
        if server == "home":
            self.home.watch(key, ended, 1 if who == "alex" else self.jordan_id)
        self.webhook("media.scrobble", server, who, key)
        self.webhook("media.stop", server, who, key)
        self.settle()  # delivered as it ends (Trakt dates a live scrobble when it arrives)
        return ended

    def watch_unheard(self, key: str, at: float) -> None:
        """alex watched item `key` at home at `at` with no webhook told of it."""
        self.home.watch(key, at)

    def sync(self) -> dict[str, RunResult | str]:
        """One run of each link as the service's scheduler makes it, its writes then delivered
        as `watchbridge sync` does: each link's result, or why it failed."""
        runtime = build_runtime(load_config(self.config, {}), clock=self.clock)
        runtime.open()

        async def run() -> dict[str, RunResult | str]:
            results: dict[str, RunResult | str] = {}
            for link in runtime.config.links:
                results[link] = await scheduled_run(runtime, link, self.clock)
                await deliver_due(runtime)
            return results

        try:
            return asyncio.run(run())
        finally:
            runtime.close()

    def deliver(self) -> None:
        """What is due by now delivered beside the app, as `watchbridge sync` does (the app's
        worker sleeps by the wall clock until a retry it set is due)."""
        runtime = build_runtime(load_config(self.config, {}), clock=self.clock)
        runtime.open()
        try:
            asyncio.run(deliver_due(runtime))
        finally:
            runtime.close()

    # -- what the services hold --------------------------------------------------------------
    def trakt_plays(self) -> list[tuple[str, str]]:
        """Trakt's history: (title, watched at to the minute), oldest first."""
        return sorted(
            ((entry.watched_at or "")[:16], entry.item.title) for entry in self.trakt.history()
        )

    def logged(self) -> list[tuple[int | None, str]]:
        """alex's Serializd diary: (episode, watch date to the minute), oldest first."""
        return sorted((row.watched_at[:16], row.episode_number) for row in self.serializd.diary())


def minute(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M")


LINKS = (
    "links:\n"
    "  plex-trakt: {services: [plex, trakt], kinds: [history], first_run: apply}\n"
    "  plex-serializd: {services: [plex, serializd], kinds: [history], first_run: apply}\n"
)


def config_text(
    home: FakePlex,
    plextv: FakePlexTv,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    users: str,
    links: bool,
) -> str:
    email, password, _ = ALICE
    plex_account = "plex: {}, " if links else ""
    return (
        "services:\n"
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}\n'
        f'  plex: {{url: "{home.url}", token: "{TOKEN}", account_url: "{plextv.url}",'
        f' discover_url: "{plextv.url}", metadata_url: "{plextv.url}"}}\n'
        f'  serializd: {{api_url: "{serializd.url}"}}\n'
        "profiles:\n"
        "  alex:\n"
        f"    users: {{plex: {users}}}\n"
        f"    accounts: {{{plex_account}trakt: {{}},"
        f' serializd: {{email: "{email}", password: "{password}"}}}}\n' + (LINKS if links else "")
    )


@contextlib.contextmanager
def open_house(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    users: str = '["1", alex]',
    *,
    links: bool = False,
    alerts: str | None = None,
) -> Iterator[House]:
    home = start_fake(plex_server(HOME_ID, 100))
    plextv, trakt = start_fake(FakePlexTv()), start_fake(FakeTrakt())
    serializd = start_fake(FakeSerializd())
    assert isinstance(home, FakePlex) and isinstance(plextv, FakePlexTv)
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    plextv.owner.token = TOKEN
    plextv.add_server(HOME_ID, "Home")
    plextv.add_title("show", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"], BB_SHOW_GUID)
    plextv.add_title("movie", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"], ARRIVAL_GUID)
    show = trakt.add_show("Breaking Bad", 2008, imdb="tt0903747", tmdb=1396, tvdb=81189)
    for number, (tvdb, imdb) in EPISODES.items():
        trakt.add_episode(show, 1, number, tvdb=tvdb, imdb=imdb)
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    serializd.seed_reference_catalogue()
    users = users.replace("ALEX_PLEX_TV_ID", str(plextv.owner.id))
    text = config_text(home, plextv, trakt, serializd, users, links)
    if alerts is not None:
        text = f'alerts: {{urls: ["{alerts}"]}}\n' + text
    path = write_config(tmp_path, text, secret=SECRET)
    clock = Clock()
    home.clock = clock
    with House(path, clock, home, plextv, trakt, serializd) as house:
        yield house


@pytest.fixture(autouse=True)
def _unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    unpaced(monkeypatch, "serializd", "trakt")
    # Inline retries without their waits: days in seconds (still every attempt).
    monkeypatch.setitem(HttpClient.__init__.__kwdefaults__, "retry", RetryPolicy(backoff=0.0))


def test_plays_on_all_three_servers_reach_trakt_and_serializd_once_each_with_their_dates(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    with open_house(tmp_path, start_fake) as house:
        # Monday at home: the pilot. Tuesday at Jordan's: the pilot again (showing it to a
        # friend) and episode 2. Wednesday at the holiday house: episode 3 and Arrival.
        pilot = house.watch("home", "alex", "101")
        house.settle()
        house.shift(DAY)
        again = house.watch("jordans", "alex", "9001")
        second = house.watch("jordans", "alex", "9002")
        house.settle()
        house.shift(DAY)
        third = house.watch("pi", "alex", "503")
        arrival = house.watch("pi", "alex", "510")
        house.settle()
        assert house.trakt_plays() == sorted(
            [
                (minute(pilot), "Episode 1"),
                (minute(again), "Episode 1"),
                (minute(second), "Episode 2"),
                (minute(third), "Episode 3"),
                (minute(arrival), "Arrival"),
            ]
        )
        assert house.logged() == [
            (minute(pilot), 1),
            (minute(again), 1),
            (minute(second), 2),
            (minute(third), 3),
        ]

        # The second pilot is a rewatch on Serializd; Jordan's and the Pi's episodes were
        # placed by Plex's catalogue (their show's plex:// guid), no server asked for them.
        assert [
            row.is_rewatch for row in sorted(house.serializd.diary(), key=lambda r: r.watched_at)
        ] == [
            False,
            True,
            False,
            False,
        ]
        assert house.pi.requests == [] and house.jordans.requests == []
        # `watchbridge status` names each server as its webhooks do, not by a machine id.
        status = house.status()
    heard = [line.split(": ")[0] for line in status.splitlines() if line.startswith("  plex")]
    assert heard == ["  plex from Holiday Pi", "  plex from Jordan's Plex", "  plex from Home"]


def test_the_friends_server_needs_alexs_name_or_plex_tv_id_beside_1_and_strangers_are_ignored(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    # The README's one-server set-up, `users.plex: ["1"]`: alex's plays on Jordan's server
    # (alex's plex.tv id there) are no account of alex's yet; the Pi's (its owner, 1) are.
    alerts = receiver.apprise_url
    with open_house(tmp_path, start_fake, users='["1"]', alerts=alerts) as house:
        house.watch("pi", "alex", "501")
        told = house.webhook("media.scrobble", "jordans", "alex", "9002")
        assert told["status"] == "ignored_unmapped_account", told
        # Jordan watching on alex's home server: a friend's account, counted and ignored.
        told = house.webhook("media.scrobble", "home", "jordan", "102")
        assert told["status"] == "ignored_unmapped_account", told
        house.settle()
        assert [title for _, title in house.trakt_plays()] == ["Episode 1"]
        assert [number for _, number in house.logged()] == [1]
        status = house.status()
        listed = house.api_status()
        page = httpx.get(house.app.url).text
        # The hourly housekeeping: alex's own plays dropped are told once (twice run: once).
        assert house.runtime is not None
        for _ in range(2):
            asyncio.run(check_unlisted_accounts(house.runtime))
        wait_until(lambda: bool(receiver.messages))
        unlisted = sorted(line for line in status.splitlines() if line.startswith("unlisted:"))
        assert len(unlisted) == 2, unlisted
        alex, jordan = unlisted
        # Said by the server's name (not only its id) and with the line to write; alex's
        # account on Jordan's server has the name alex's owner account on the Pi came with:
        # said to be alex's own, with what to add where, not "a friend's account".
        assert f"plex account alex (id {house.alex_id}) on Plex server Jordan's Plex" in alex
        yours = (
            f'probably alex\'s own account on another server: add "alex" (or'
            f' "{house.alex_id}") to profiles.alex.users.plex'
        )
        assert alex.endswith(yours), alex
        assert "a friend's account" not in alex
        assert html.escape(yours) in page
        assert f"plex account jordan (id {house.jordan_id}) on Plex server Home" in jordan
        assert jordan.endswith(
            f'write profiles.NAME.users.plex: ["{house.jordan_id}"] (or ignore it: a friend\'s'
            " account)"
        )
        accounts = sorted(
            (one["server_name"], one["name"], one["plays"], one["probably_of"], one["line"])
            for one in listed["unlisted_accounts"]
        )
        assert accounts == [
            ("Home", "jordan", 1, None, f'profiles.NAME.users.plex: ["{house.jordan_id}"]'),
            (
                "Jordan's Plex",
                "alex",
                1,
                "alex",
                f'profiles.alex.users.plex: ["1", "{house.alex_id}"]',
            ),
        ]
        # One alert, for alex's account only: a friend's (jordan) is only listed.
        title = "watchbridge: plays of alex on Plex server Jordan's Plex go nowhere"
        assert receiver.titles() == [title]
        lead = str(receiver.messages[0]["message"]).split("\n\n")[0]
        assert lead == (
            f"Plays of Plex account alex (id {house.alex_id}) on Plex server Jordan's Plex go"
            " nowhere: no profile lists it. Profile alex has an account of that name, alex, on"
            " another server: this is probably alex's own account, playing on a server the"
            " config does not list it for (a friend's shared server, say). If so, add"
            f' "alex" (or "{house.alex_id}") to profiles.alex.users.plex in the config; if it'
            " is someone else's, nothing to do."
        )
        # alex lists the name: "Resolved" follows with the next housekeeping.
        house.stop()
        house.config.write_text(
            house.config.read_text().replace('plex: ["1"]', 'plex: ["1", "alex"]')
        )
        house.start()
        assert house.runtime is not None
        asyncio.run(check_unlisted_accounts(house.runtime))
        wait_until(lambda: len(receiver.messages) == 2)
    assert receiver.titles() == [title, f"Resolved: {title}"]


@pytest.mark.parametrize(
    "entry",
    ["alex", "ALEX_PLEX_TV_ID", f"{JORDANS_ID}:ALEX_PLEX_TV_ID"],
    ids=["name", "id", "server:id"],
)
def test_alex_listed_on_the_friends_server_by_name_id_or_server_and_id(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], entry: str
) -> None:
    # docs/webhooks.md: "list your username (or that id) beside 1"; README's `profiles`:
    # SERVER:ACCOUNT where two servers' ids overlap.
    with open_house(tmp_path, start_fake, users=f'["1", "{entry}"]') as house:
        played = house.watch("jordans", "alex", "9001")
        told = house.webhook("media.scrobble", "home", "jordan", "101")
        assert told["status"] == "ignored_unmapped_account", told
        assert house.trakt_plays() == [(minute(played), "Episode 1")]
        assert house.logged() == [(minute(played), 1)]


def test_the_links_read_of_the_home_server_and_the_webhooks_count_each_viewing_once(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Plex ⇄ Trakt and Plex ⇄ Serializd read the home server's history (the only one they
    # can read): they catch what its webhooks missed, and the Pi's and Jordan's plays, which
    # reach Trakt and Serializd by webhook alone, are neither lost nor doubled by them.
    with open_house(tmp_path, start_fake, links=True) as house:
        assert all(isinstance(r, RunResult) for r in house.sync().values())
        pilot = house.watch("home", "alex", "101")
        house.shift(HOUR)
        house.sync()
        # watchbridge down overnight (an update); alex watches episode 2 at home meanwhile.
        house.stop()
        house.shift(DAY)
        unheard = house.clock() - 2 * HOUR
        house.watch_unheard("102", unheard)
        house.start()
        house.shift(HOUR)
        house.sync()
        # At Jordan's: episode 3. At the holiday house: Arrival.
        third = house.watch("jordans", "alex", "9003")
        house.shift(DAY)
        arrival = house.watch("pi", "alex", "510")
        for _ in range(2):
            house.shift(HOUR)
            results = house.sync()
        # A week on, the pilot again at the holiday house: a second play.
        house.shift(7 * DAY)
        again = house.watch("pi", "alex", "501")
        for _ in range(3):
            house.shift(HOUR)
            results = house.sync()
        house.settle()
        assert all(isinstance(r, RunResult) for r in results.values()), results
        assert house.trakt_plays() == sorted(
            [
                (minute(pilot), "Episode 1"),
                (minute(unheard), "Episode 2"),
                (minute(third), "Episode 3"),
                (minute(arrival), "Arrival"),
                (minute(again), "Episode 1"),
            ]
        )
        assert house.logged() == sorted(
            [(minute(pilot), 1), (minute(unheard), 2), (minute(third), 3), (minute(again), 1)]
        )
        # Plex ⇄ Trakt is two-way: the plays made elsewhere are marked played on the home
        # server (alex's own state there), once each, and read back as no new play.
        views = {key: house.home.user_state(key).get("viewCount") for key in ("101", "103", "110")}
        assert views == {"101": 2, "103": 1, "110": 1}


def test_the_home_server_down_is_told_by_its_address_and_the_other_servers_plays_still_land(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    with open_house(tmp_path, start_fake, links=True, alerts=receiver.apprise_url) as house:
        house.sync()
        pilot = house.watch("home", "alex", "101")
        # The home server is switched off for the holidays (it drops every connection);
        # alex watches at Jordan's and at the holiday house meanwhile.
        house.home.drop_next(100_000)
        third = house.watch("jordans", "alex", "9003")
        arrival = house.watch("pi", "alex", "510")
        for _ in range(4):
            house.shift(30 * 60)
            house.sync()
        # The webhooks carry what Trakt and Serializd need (Plex's catalogue, Trakt's id
        # search): nothing waits for the home server.
        plays = [(minute(pilot), "Episode 1"), (minute(third), "Episode 3")]
        assert house.trakt_plays() == sorted([*plays, (minute(arrival), "Arrival")])
        assert house.logged() == [(minute(pilot), 1), (minute(third), 3)]
        # One alert for the links that read the home server, naming it: alex has three Plex
        # servers, and "Plex" alone does not say which one is down.
        assert receiver.titles() == ["watchbridge: Plex unreachable"]
        (told,) = receiver.messages
        assert f"While Plex at {house.home.url} (services.plex.url) does not answer" in str(
            told["message"]
        )
        # Back home: the server answers again, the alert ends, nothing was doubled.
        house.home.clear_knobs()
        house.shift(HOUR)
        house.sync()
        assert receiver.titles()[1:] == ["Resolved: watchbridge: Plex unreachable"]
        house.settle()
        assert len(house.trakt.history()) == 3 and len(house.serializd.diary()) == 2
