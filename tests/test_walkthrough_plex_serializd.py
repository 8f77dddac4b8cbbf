"""Walkthrough: a Plex household on Serializd alone, no Trakt (README, *Without Trakt*).

The owner alex and Sam, a managed user of the Plex Home (no plex.tv login of their own;
signed in with `watchbridge auth plex --profile sam --home-user Sam`), each have a profile
with their own Serializd account. Plex's webhook (Plex Pass) tells the plays as they end; the
`plex-serializd` link, run as the scheduler runs it beside the running app, catches what the
webhook missed and carries ratings both ways. The running app (real HTTP) takes the webhooks
and delivers; each test asserts what the fake Serializd and Plex hold at the end.

With `watchlist` in the link's kinds, each person's Plex watchlist (plex.tv) and Serializd's
are kept in step show by show; a movie on Plex's stays there, said so (Serializd has none)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import MODERN_VERSION, TOKEN, FakePlex
from tests.fakes.plextv import Account as PlexTvAccount
from tests.fakes.plextv import FakePlexTv
from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE, FakeSerializd, Review, User
from tests.harness import watchbridge, write_config
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import plex_multipart
from tests.unpaced import unpaced
from tests.walkthrough import Clock, RunningHouse, deliver_due, scheduled_run
from watchbridge.config import load_config
from watchbridge.http import HttpClient, RetryPolicy
from watchbridge.sync import RunResult
from watchbridge.wiring import build_runtime

SECRET = "plex-serializd-walkthrough-secret"
LINK = "plex-serializd"
SAM_SERIALIZD = ("sam@example.com", "sam's password", "sam_tv")
BREAKING_BAD = 1396
SEASON_IDS = {1: 3572, 2: 3573}  # Serializd's (TMDB's) ids of Breaking Bad's seasons
HOUR, DAY = 3600.0, 86400.0


def key(season: int, number: int) -> str:
    """The Plex ratingKey of Breaking Bad S`season`E`number` on the household's server."""
    return f"{season}{number:02d}"


class Household(RunningHouse):
    """The running app, its Plex server and Serializd, and the link run as the scheduler runs
    it (beside the app, delivering as `watchbridge sync` does)."""

    def __init__(
        self,
        config: Path,
        clock: Clock,
        plex: FakePlex,
        plextv: FakePlexTv,
        serializd: FakeSerializd,
        sam: PlexTvAccount,
    ) -> None:
        super().__init__(config, clock, (serializd, plextv))
        self.plex, self.plextv, self.serializd, self.sam = plex, plextv, serializd, sam
        self.alex_sd = serializd.user
        self.sam_sd: User = serializd.users[SAM_SERIALIZD[0]]

    # -- what the household does -----------------------------------------------------------
    def account(self, who: str) -> tuple[int, str]:
        """(server account id, as in Plex's webhook and history; name) of alex or sam."""
        return (1, "alex") if who == "alex" else (self.sam.id, "Sam")

    def webhook(self, event: str, who: str, rating_key: str, **metadata: Any) -> dict[str, Any]:
        """Plex's webhook `event` of `who` about an item of the server."""
        account, name = self.account(who)
        payload = copy.deepcopy(sample_json("plex", "episode_legacy_media_scrobble.json"))
        payload |= {"event": event, "user": account == 1, "owner": True}
        payload["Account"] = {"id": account, "title": name}
        payload["Server"] = {"title": "Basement", "uuid": self.plex.machine_id}
        item = self.plex.items[rating_key]
        payload["Metadata"] = (
            {
                name: item[name]
                for name in (
                    *("ratingKey", "key", "guid", "type", "title", "grandparentTitle"),
                    *("grandparentRatingKey", "grandparentGuid", "parentIndex", "index"),
                    *("librarySectionID", "librarySectionTitle", "duration", "parentGuid"),
                )
                if name in item
            }
            | {"librarySectionType": "show"}
            | metadata
        )
        body, content_type = plex_multipart(payload)
        url = f"{self.app.url}/webhooks/plex/{SECRET}"
        answer = httpx.post(url, content=body, headers={"content-type": content_type})
        assert answer.is_success, answer.text
        return dict(answer.json())

    def watch(self, who: str, season: int, number: int) -> float:
        """`who` plays S`season`E`number` through on the server, the webhook telling it as
        it ends (as the server records it). The time it ended."""
        account, _ = self.account(who)
        self.webhook("media.play", who, key(season, number))
        self.shift(45 * 60)
        done = self.clock()
        self.plex.watch(key(season, number), done, account)
        self.webhook("media.scrobble", who, key(season, number))
        self.webhook("media.stop", who, key(season, number))
        return done

    def watch_unheard(self, who: str, season: int, number: int, at: float) -> None:
        """`who` watched S`season`E`number` at `at` with no webhook told of it (watchbridge
        down, or a phone's offline play the server learns of later)."""
        account, _ = self.account(who)
        self.plex.watch(key(season, number), at, account)

    # -- the link, as the scheduler runs it --------------------------------------------------
    def sync(self, *, full: bool = False) -> RunResult | str:
        """One run of the link as the service's scheduler makes it (told to the alerts), then
        its writes delivered as `watchbridge sync` does. The result, or why it failed."""
        runtime = build_runtime(load_config(self.config, {}), clock=self.clock)
        runtime.open()

        async def run() -> RunResult | str:
            outcome = await scheduled_run(runtime, LINK, self.clock, full=full)
            await deliver_due(runtime)
            return outcome

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
    def diary(self, who: str) -> list[Review]:
        return self.serializd.diary(self.alex_sd if who == "alex" else self.sam_sd)

    def logged(self, who: str) -> list[tuple[int, int | None, str, bool]]:
        """`who`'s Serializd diary: (season, episode, watch date to the minute, rewatch)."""
        seasons = {v: k for k, v in SEASON_IDS.items()}
        return sorted(
            (seasons.get(r.season_id or 0, 0), r.episode_number, r.watched_at[:16], r.is_rewatch)
            for r in self.diary(who)
        )


def minute(at: float) -> str:
    """`at` as the diary's watch date shows it, to the minute (UTC)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M")


ALEX_BY_PASSWORD = f'{{email: "{ALICE[0]}", password: "{ALICE[1]}"}}'


def config_text(
    plex: FakePlex,
    plextv: FakePlexTv,
    serializd: FakeSerializd,
    sam: int,
    alex_serializd: str = ALEX_BY_PASSWORD,
    alerts: str | None = None,
    kinds: str = "",
) -> str:
    """The README's no-Trakt Plex set-up: Plex with its token, Serializd (alex's account as
    given; Sam's by email and password), a profile each, and the plex-serializd link (its
    first sync applied; `kinds` as given, else the default); alerts to `alerts` where
    given."""
    hosts = f'account_url: "{plextv.url}", discover_url: "{plextv.url}"'
    kinds_line = f", kinds: [{kinds}]" if kinds else ""
    return (
        (f'alerts: {{urls: ["{alerts}"]}}\n' if alerts else "") + "services:\n"
        f'  plex: {{url: "{plex.url}", token: "{TOKEN}", {hosts}}}\n'
        f'  serializd: {{api_url: "{serializd.url}"}}\n'
        "profiles:\n"
        "  alex:\n"
        '    users: {plex: ["1"]}\n'
        f"    accounts: {{plex: {{}}, serializd: {alex_serializd}}}\n"
        "  sam:\n"
        f'    users: {{plex: ["{sam}"]}}\n'
        f'    accounts: {{plex: {{}}, serializd: {{email: "{SAM_SERIALIZD[0]}",'
        f' password: "{SAM_SERIALIZD[1]}"}}}}\n'
        "links:\n"
        f"  {LINK}: {{services: [plex, serializd], first_run: apply{kinds_line}}}\n"
    )


@contextlib.contextmanager
def open_household(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    *,
    alex_serializd: Callable[[FakeSerializd], str] = lambda _: ALEX_BY_PASSWORD,
    alerts: str | None = None,
    kinds: str = "",
) -> Iterator[Household]:
    """Breaking Bad seasons 1 and 2 on the server (Plex's current agents), Sam signed in as a
    Home user, the app running."""
    plex = start_fake(FakePlex(version=MODERN_VERSION))
    plextv, serializd = start_fake(FakePlexTv()), start_fake(FakeSerializd())
    assert isinstance(plex, FakePlex) and isinstance(plextv, FakePlexTv)
    assert isinstance(serializd, FakeSerializd)
    serializd.seed_reference_catalogue()
    serializd.add_user(*SAM_SERIALIZD)
    plextv.owner.token = TOKEN
    plextv.add_server(plex.machine_id)
    sam = plextv.add_account("Sam", managed=True)
    plextv.share_on(plex, sam)
    plex.add_show("7", "Breaking Bad", 2008, [f"tmdb://{BREAKING_BAD}", "tvdb://81189"])
    for season, count in ((1, 7), (2, 13)):
        for number in range(1, count + 1):
            plex.add_episode(key(season, number), "7", season, number)
    text = config_text(plex, plextv, serializd, sam.id, alex_serializd(serializd), alerts, kinds)
    path = write_config(tmp_path, text, secret=SECRET)
    signed = watchbridge(
        "auth", "plex", "--config", str(path), "--profile", "sam", "--home-user", "Sam"
    )
    assert signed.returncode == 0, signed.stdout + signed.stderr
    clock = Clock()
    plex.clock = clock
    with Household(path, clock, plex, plextv, serializd, sam) as home:
        yield home


@pytest.fixture(autouse=True)
def _unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    unpaced(monkeypatch, "serializd")
    # Inline retries without their waits: weeks in seconds (still every attempt).
    monkeypatch.setitem(HttpClient.__init__.__kwdefaults__, "retry", RetryPolicy(backoff=0.0))


def test_weeks_of_plays_heard_and_missed_reach_serializd_once_each_with_their_dates(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    with open_household(tmp_path, start_fake) as home:
        first = home.sync()  # the link's first sync: nothing watched yet
        assert isinstance(first, RunResult), first
        # Evening one: both watch S1E1, the webhook tells it.
        alex_1 = home.watch("alex", 1, 1)
        sam_1 = home.watch("sam", 1, 1)
        home.settle()
        assert home.logged("alex") == [(1, 1, minute(alex_1), False)]
        assert home.logged("sam") == [(1, 1, minute(sam_1), False)]
        home.shift(HOUR)
        home.sync()
        # watchbridge is down for a night (an update); alex watches S1E2 meanwhile.
        home.stop()
        home.shift(DAY)
        alex_2 = home.clock() - 2 * HOUR
        home.watch_unheard("alex", 1, 2, alex_2)
        home.start()
        # Sam watched S1E2 and S1E3 on a phone offline three days ago; it syncs to the
        # server today.
        sam_2, sam_3 = home.clock() - 3 * DAY, home.clock() - 3 * DAY + HOUR
        home.watch_unheard("sam", 1, 2, sam_2)
        home.watch_unheard("sam", 1, 3, sam_3)
        home.shift(HOUR)
        home.sync()
        home.settle()
        assert home.logged("alex") == [
            (1, 1, minute(alex_1), False),
            (1, 2, minute(alex_2), False),
        ]
        assert home.logged("sam") == [
            (1, 1, minute(sam_1), False),
            (1, 2, minute(sam_2), False),
            (1, 3, minute(sam_3), False),
        ]
        # A week on, alex watches the pilot again: a rewatch, heard by the webhook.
        home.shift(7 * DAY)
        again = home.watch("alex", 1, 1)
        home.settle()
        for _ in range(2):
            home.shift(HOUR)
            home.sync(full=True)
        home.settle()
        assert home.logged("alex") == [
            (1, 1, minute(alex_1), False),
            (1, 1, minute(again), True),
            (1, 2, minute(alex_2), False),
        ]
        assert len(home.diary("sam")) == 3


def test_a_season_marked_played_in_plex_and_one_marked_watched_on_serializd_go_across_once(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    with open_household(tmp_path, start_fake) as home:
        home.sync()
        home.shift(DAY)
        # alex marks all of season 2 played in Plex (a current server: no history rows, each
        # episode viewed "now"); Sam marks season 2 watched on Serializd.
        marked = home.clock()
        for number in range(1, 14):
            home.plex.watch(key(2, number), marked, history=False)
        home.serializd.mark(home.sam_sd, BREAKING_BAD, 2)
        home.shift(HOUR)
        for _ in range(3):
            home.sync(full=True)
            home.shift(HOUR)
        home.settle()
        # alex's marks reach Serializd as ticks, each once: watched, date unknown (Plex keeps
        # no date but the mark's), no diary entry dated the day of the mark. Serializd's season
        # mark is not set (watchbridge never calls watched_v2: Plex could not take it back).
        assert home.diary("alex") == []
        assert home.serializd.ticks(home.alex_sd) == {
            (BREAKING_BAD, SEASON_IDS[2], n) for n in range(1, 14)
        }
        assert home.serializd.season_marks(home.alex_sd) == set()
        assert [home.plex.user_state(key(2, n)).get("viewCount") for n in range(1, 14)] == [1] * 13
        # Sam's season mark is one view of each episode in Sam's Plex, and no diary entry.
        sams = [home.plex.user_state(key(2, n), home.sam.id) for n in range(1, 14)]
        assert [state.get("viewCount") for state in sams] == [1] * 13
        assert home.diary("sam") == []
        assert all(home.plex.user_state(key(1, n), home.sam.id) == {} for n in range(1, 8))


def ratings(home: Household, who: str) -> list[tuple[int, int, int]]:
    """`who`'s Serializd ratings: (season, episode, half stars) of each rated diary row; 0
    for the season and episode of the show's own."""
    seasons = {v: k for k, v in SEASON_IDS.items()}
    return sorted(
        (seasons.get(r.season_id or 0, 0), r.episode_number or 0, r.rating)
        for r in home.diary(who)
        if r.rating
    )


def test_ratings_go_both_ways_and_a_round_trip_keeps_them(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    with open_household(tmp_path, start_fake) as home:
        home.sync()
        home.watch("alex", 1, 1)
        home.shift(10 * 60)
        # alex gives the pilot 4.5 stars in Plex: the server's 9, its media.rate webhook.
        home.plex.rate(key(1, 1), 9.0, home.clock())
        home.webhook("media.rate", "alex", key(1, 1), userRating=9.0, lastRatedAt=int(home.clock()))
        # Sam rates the whole show 3.5 stars in Plex, no webhook heard (watchbridge restarting).
        home.plex.rate("7", 7.0, home.clock(), home.sam.id)
        home.settle()
        home.shift(HOUR)
        home.sync(full=True)
        home.settle()
        # Each as a rating of its own on Serializd: the pilot's beside its diary entry, the
        # show's at show level; half stars as they were.
        assert ratings(home, "alex") == [(1, 1, 9)]
        assert ratings(home, "sam") == [(0, 0, 7)]
        # alex changes it to 2.5 stars on Serializd; Sam rates S1E1 5 stars there.
        (entry,) = [r for r in home.diary("alex") if r.rating]
        home.serializd.edit_entry(entry, rating=5)
        home.serializd.log_entry(
            home.sam_sd, BREAKING_BAD, 1, 1, rating=10, backdate="2026-01-10T20:00:00Z"
        )
        for _ in range(3):
            home.shift(HOUR)
            home.sync(full=True)
        home.settle()
        assert ratings(home, "alex") == [(1, 1, 5)]
        assert home.plex.user_state(key(1, 1))["userRating"] == 5.0
        assert ratings(home, "sam") == [(0, 0, 7), (1, 1, 10)]
        assert home.plex.user_state(key(1, 1), home.sam.id)["userRating"] == 10.0
        assert home.plex.user_state("7", home.sam.id)["userRating"] == 7.0
        # Nothing flips back and forth: later runs write nothing on either side.
        written = (
            home.serializd.count("POST", "/api/show/reviews/add"),
            home.plex.count("PUT", "/:/rate"),
            home.plex.count("GET", "/:/scrobble"),
        )
        for _ in range(2):
            home.shift(HOUR)
            home.sync(full=True)
        home.settle()
        assert written == (
            home.serializd.count("POST", "/api/show/reviews/add"),
            home.plex.count("PUT", "/:/rate"),
            home.plex.count("GET", "/:/scrobble"),
        )


def test_serializd_failures_are_told_once_and_nothing_is_lost(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    # alex pasted a token from the website (the README's first choice); Sam signs in by
    # email and password.
    with open_household(
        tmp_path,
        start_fake,
        alex_serializd=lambda fake: f'{{token: "{fake.issue_token()}"}}',
        alerts=receiver.apprise_url,
    ) as home:
        home.plex.add_show("8", "Severance", 2022, ["tmdb://95396", "tvdb://371980"])
        home.plex.add_episode("801", "8", 1, 1)
        home.plex.add_episode(key(1, 8), "7", 1, 8)  # TVDB's order: no S1E8 on TMDB
        home.sync()
        # Serializd asks to slow down, then is down for an hour: nothing to tell, nothing lost.
        home.serializd.fail_next(1, 429, headers={"Retry-After": "1"})
        first = home.watch("alex", 1, 1)
        home.settle()
        assert home.logged("alex") == [(1, 1, minute(first), False)]
        home.serializd.fail_next(1000, 503)
        second = home.watch("alex", 1, 2)
        sams = home.watch("sam", 1, 1)
        for _ in range(6):  # the app's worker waits out the outage by the wall clock: ours goes
            home.shift(10 * 60)
            home.deliver()
        assert len(home.diary("alex")) == 1 and home.diary("sam") == []
        home.serializd.clear_knobs()
        home.shift(15 * 60)
        home.deliver()
        assert home.logged("alex")[1:] == [(1, 2, minute(second), False)]
        assert home.logged("sam") == [(1, 1, minute(sams), False)]
        assert receiver.titles() == []
        # Sessions end: Sam's is logged in again by itself; alex's pasted token is refused,
        # told once, and alex's play waits.
        home.serializd.expire_tokens()
        third = home.watch("alex", 1, 3)
        home.watch("sam", 1, 2)
        home.settle()
        home.shift(HOUR)
        home.sync()
        assert len(home.diary("sam")) == 2 and len(home.diary("alex")) == 2
        assert receiver.titles() == ["watchbridge: Serializd sign-in needed (profile alex)"]
        (told,) = receiver.messages
        assert "put it into profiles.alex.accounts.serializd.token" in str(told["message"])
        waits = [line for line in home.status().splitlines() if line.startswith("on hold:")]
        assert waits == [
            "on hold:       serializd for alex: 1 waiting, next try "
            + waits[0].split("next try ")[1].split(": ")[0]
            + ": "
            + str(told["message"])
        ]
        # alex pastes a new token and restarts watchbridge: the play goes, dated as watched.
        home.stop()
        text = home.config.read_text()
        old = text.split('serializd: {token: "')[1].split('"')[0]
        home.config.write_text(text.replace(old, home.serializd.issue_token()))
        home.start()
        home.settle()
        assert home.logged("alex")[2:] == [(1, 3, minute(third), False)]
        assert receiver.titles()[1:] == [
            "Resolved: watchbridge: Serializd sign-in needed (profile alex)"
        ]
        # A show Serializd does not have, and an episode TMDB does not number so (Plex's
        # TheTVDB order): each waits, said why, then is given up with one alert.
        home.webhook("media.scrobble", "alex", "801")
        home.plex.watch("801", home.clock())
        home.webhook("media.scrobble", "alex", key(1, 8))
        home.plex.watch(key(1, 8), home.clock())
        home.settle()
        home.shift(HOUR)
        home.sync()
        waiting = watchbridge("unmatched", "--config", str(home.config)).stdout
        assert "play Severance S01E01" in waiting and "'Show not found' (HTTP 404)" in waiting
        assert "Breaking Bad S01E08 is past the end of season 1 as TMDB" in waiting
        for _ in range(12):
            home.shift(12 * HOUR)
            home.deliver()
        assert receiver.titles()[2:] == ["watchbridge: gave up sending 2 plays to Serializd"]
        assert len(home.diary("alex")) == 3


def test_the_readmes_no_trakt_plex_config_checks_also_with_the_watchlist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As README's *Without Trakt* writes it: the Plex server with its token, `serializd: {}`,
    # the token pasted from the website through a variable, `accounts.plex: {}` for the
    # owner, and the plex-serializd link (first run reviewed: the default).
    monkeypatch.setenv("SERIALIZD_TOKEN", "a.pasted.token")
    readme = (
        "services:\n"
        "  plex: {url: 'http://plex:32400', token: t}\n"
        "  serializd: {}\n"
        "profiles:\n"
        "  alex:\n"
        '    users: {plex: ["1"]}\n'
        '    accounts: {plex: {}, serializd: {token: "${SERIALIZD_TOKEN}"}}\n'
        "  sam:\n"
        '    users: {plex: ["1002023"]}\n'
        "    accounts: {plex: {}, serializd: {email: sam@example.com, password: pw}}\n"
        "links:\n"
        "  plex-serializd: {services: [plex, serializd]}\n"
    )
    path = write_config(tmp_path, readme, secret=SECRET)
    checked = watchbridge("check-config", "--config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "warning:" not in checked.stdout, checked.stdout
    # The watchlist too (README's `links.NAME.kinds`): a plex-serializd link syncs it.
    path.write_text(
        path.read_text().replace(
            "services: [plex, serializd]}",
            "services: [plex, serializd], kinds: [history, ratings, watchlist]}",
        )
    )
    checked = watchbridge("check-config", "--config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "warning:" not in checked.stdout, checked.stdout
    # The collection is still Trakt's alone, said so by name.
    path.write_text(path.read_text().replace("watchlist]}", "watchlist, collection]}"))
    refused = watchbridge("check-config", "--config", str(path))
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "links.plex-serializd.kinds" in said
    assert "collection can only be synced by a plex-trakt link" in said


SEVERANCE = 95396
SEVERANCE_SEASON_IDS = {1: 107924, 2: 364143}  # TMDB's ids of its seasons
REGULAR_BB_SEASONS = {3572, 3573, 3575, 3576, 3578}  # Breaking Bad's, specials (3577) left out
WATCHLIST = "history, ratings, watchlist"


def plex_listed(home: Household, who: str = "alex") -> set[str]:
    """The titles on `who`'s Plex watchlist (plex.tv's, account-wide)."""
    account = home.plextv.owner if who == "alex" else home.sam
    return {title.title for title in home.plextv.watchlist(account)}


def watchlist_part(run: RunResult | str, profile: str = "alex") -> Any:
    """`profile`'s watchlist part of a link run that went through (no profile failed)."""
    assert isinstance(run, RunResult), run
    assert run.failures == (), run.failures
    (part,) = [r for r in run.lists.results if r.profile == profile]
    return part


def test_watchlists_of_plex_and_serializd_follow_each_other_and_a_movie_stays_on_plex(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    with open_household(tmp_path, start_fake, kinds=WATCHLIST, alerts=receiver.apprise_url) as home:
        sd, plextv = home.serializd, home.plextv
        sd.add_show(SEVERANCE, "Severance", {1: 9, 2: 10}, season_ids=SEVERANCE_SEASON_IDS)
        bb = plextv.add_title("show", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
        plextv.add_title("show", "Severance", 2022, [f"tmdb://{SEVERANCE}", "tvdb://371980"])
        heat = plextv.add_title("movie", "Heat", 1995, ["tmdb://949", "imdb://tt0113277"])
        # alex lists Breaking Bad and the movie Heat on Plex, Severance on Serializd.
        plextv.watchlist_add(plextv.owner, bb)
        plextv.watchlist_add(plextv.owner, heat)
        sd.add_to_watchlist(home.alex_sd, SEVERANCE)
        first = watchlist_part(home.sync())
        # Plex's show is on Serializd with its regular seasons, Serializd's show on Plex.
        assert sd.watchlisted(home.alex_sd) == {
            BREAKING_BAD: REGULAR_BB_SEASONS,
            SEVERANCE: set(SEVERANCE_SEASON_IDS.values()),
        }
        assert plex_listed(home) == {"Breaking Bad", "Heat", "Severance"}
        # The movie stays on Plex's watchlist only, named with the titles not synced.
        (movie,) = [title for title in first.unresolved if "Heat" in title]
        assert (
            movie == "Heat (1995) (a movie: Serializd has none, so it stays on Plex's"
            " watchlist only)"
        )
        assert sd.watchlisted(home.sam_sd) == {} and plex_listed(home, "sam") == set()
        # Runs after: nothing to write either way (no flip-flop), the movie no error.
        for _ in range(2):
            home.shift(HOUR)
            again = watchlist_part(home.sync())
            assert again.plan.changes == 0, again.plan
        # alex takes Breaking Bad off Plex's watchlist: it leaves Serializd's.
        with plextv.lock:
            del plextv.owner.watchlist[bb.rating_key]
        home.shift(HOUR)
        removed = watchlist_part(home.sync())
        assert [i.title for i in removed.plan.remove_from_peer] == ["Breaking Bad"]
        assert set(sd.watchlisted(home.alex_sd)) == {SEVERANCE}
        # ... and Severance off Serializd's: it leaves Plex's; the movie stays.
        with sd.lock:
            home.alex_sd.watchlist.clear()
        home.shift(HOUR)
        removed = watchlist_part(home.sync())
        assert [i.title for i in removed.plan.remove_from_other] == ["Severance"]
        assert plex_listed(home) == {"Heat"}
        for _ in range(2):
            home.shift(HOUR)
            assert watchlist_part(home.sync()).plan.changes == 0
        assert sd.watchlisted(home.alex_sd) == {} and plex_listed(home) == {"Heat"}
        assert receiver.titles() == []  # nothing to tell: no alert, no failing run


def test_a_show_watched_to_the_end_on_serializd_leaves_both_watchlists(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    with open_household(tmp_path, start_fake, kinds=WATCHLIST) as home:
        sd, plextv = home.serializd, home.plextv
        sd.add_show(SEVERANCE, "Severance", {1: 9, 2: 10}, season_ids=SEVERANCE_SEASON_IDS)
        severance = plextv.add_title("show", "Severance", 2022, [f"tmdb://{SEVERANCE}"])
        sd.mark(home.alex_sd, SEVERANCE, 1)  # season 1 seen before it was listed
        plextv.watchlist_add(plextv.owner, severance)
        watchlist_part(home.sync())
        # Only the season not watched goes on Serializd's watchlist (watched is kept).
        assert sd.watchlisted(home.alex_sd) == {SEVERANCE: {SEVERANCE_SEASON_IDS[2]}}
        assert sd.season_marks(home.alex_sd) == {(SEVERANCE, SEVERANCE_SEASON_IDS[1])}
        # alex watches season 2 and marks it watched on Serializd, which takes it off its
        # watchlist (§6.1: a season is watched or watchlisted, never both).
        sd.mark(home.alex_sd, SEVERANCE, 2)
        with sd.lock:
            del home.alex_sd.watchlist[(SEVERANCE, SEVERANCE_SEASON_IDS[2])]
        home.shift(HOUR)
        watchlist_part(home.sync())
        assert plex_listed(home) == set()
        # Watched to the end, it is not put back on Serializd's from anywhere.
        home.shift(HOUR)
        assert watchlist_part(home.sync()).plan.changes == 0
        assert sd.watchlisted(home.alex_sd) == {}


def test_a_play_serializd_cannot_place_is_given_up_and_told_once(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    with open_household(tmp_path, start_fake, alerts=receiver.apprise_url) as home:
        home.plex.add_show("8", "Severance", 2022, ["tmdb://95396", "tvdb://371980"])
        home.plex.add_episode("801", "8", 1, 1)
        home.sync()
        home.webhook("media.scrobble", "alex", "801")
        home.plex.watch("801", home.clock())
        home.settle()
        for _ in range(16):  # eight days of the link's runs and the deliveries' tries
            home.shift(12 * HOUR)
            home.sync()
            home.deliver()
        assert receiver.titles() == ["watchbridge: gave up sending a play to Serializd"]
        unmatched = watchbridge("unmatched", "--config", str(home.config)).stdout
        assert "nothing unmatched" in unmatched, unmatched
        # Serializd lists the show later; alex sends the play again, as the alert says: it
        # goes at once (Serializd is asked again, though watchbridge took its "show not
        # found" for the day) and once: the link copies nothing beside it.
        home.serializd.add_show(95396, "Severance", {1: 9})
        retried = watchbridge("deadletters", "retry", "--all", "--config", str(home.config))
        assert "1 dead letter(s) queued again" in retried.stdout, retried.stdout + retried.stderr
        home.deliver()
        assert [(r.show_id, r.episode_number) for r in home.diary("alex")] == [(95396, 1)]
        for _ in range(4):
            home.shift(8 * HOUR)
            run = home.sync(full=True)
            assert isinstance(run, RunResult) and run.queued == 0, run
            home.deliver()
        assert [(r.show_id, r.episode_number) for r in home.diary("alex")] == [(95396, 1)]
        listed = watchbridge("deadletters", "list", "--config", str(home.config)).stdout
        assert "#" not in listed, listed


def test_a_serializd_watchlist_page_that_fails_writes_nothing_and_the_next_run_catches_up(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Serializd's second watchlist page fails mid-read (one show a page): the first alone is
    # no list to plan from; Plex's watchlist must not lose the show on the page not read.
    with open_household(tmp_path, start_fake, kinds=WATCHLIST) as home:
        sd, plextv = home.serializd, home.plextv
        sd.add_show(SEVERANCE, "Severance", {1: 9, 2: 10}, season_ids=SEVERANCE_SEASON_IDS)
        bb = plextv.add_title("show", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
        plextv.add_title("show", "Severance", 2022, [f"tmdb://{SEVERANCE}", "tvdb://371980"])
        plextv.watchlist_add(plextv.owner, bb)
        sd.add_to_watchlist(home.alex_sd, SEVERANCE)
        watchlist_part(home.sync())
        assert plex_listed(home) == {"Breaking Bad", "Severance"}
        sd.watchlist_page_size = 1
        sd.fail_next(1000, 503, when=lambda req: req.path.endswith("/watchlistpage_v2/2"))
        with plextv.lock:
            del plextv.owner.watchlist[bb.rating_key]  # alex takes Breaking Bad off Plex's
        home.shift(HOUR)
        failed = home.sync()
        assert isinstance(failed, RunResult), failed
        assert any("alex" in f and "watchlist" in f for f in failed.lists.errors), failed.lists
        assert plex_listed(home) == {"Severance"}
        assert set(sd.watchlisted(home.alex_sd)) == {BREAKING_BAD, SEVERANCE}  # nothing written
        sd.clear_knobs()
        home.shift(HOUR)
        caught_up = watchlist_part(home.sync())
        assert [i.title for i in caught_up.plan.remove_from_peer] == ["Breaking Bad"]
        assert caught_up.plan.remove_from_other == ()
        assert set(sd.watchlisted(home.alex_sd)) == {SEVERANCE}
        assert plex_listed(home) == {"Severance"}
        home.shift(HOUR)
        assert watchlist_part(home.sync()).plan.changes == 0
