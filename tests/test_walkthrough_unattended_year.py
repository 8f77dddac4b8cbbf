"""Walkthrough: a household installs watchbridge and does not look at it for a year.

Alex (Plex account 1) has Trakt and Serializd (email and password); Sam (a managed user of
the Plex Home) has AniList, with the token pasted at install. Plex's webhook reports their
plays (through the real parser and the store's own ingest), the delivery worker sends them,
and the service's hourly housekeeping runs once for each step of the walk's clock (a day).
No one looks at anything unless an alert tells them to. Checked as the year goes: every
sign-in renews itself or alerts before plays stop, once, saying what to do, and nothing is
lost meanwhile; a Trakt outage is reminded of daily, then weekly, and stays closed once over;
the database and /metrics do not grow with time."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, watchbridge
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import plex_multipart
from tests.unpaced import unpaced
from tests.walkthrough import Clock, anilist_service
from watchbridge.app import Runtime
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.http import HttpClient, RetryPolicy
from watchbridge.ingest import parse
from watchbridge.maintenance import housekeeping
from watchbridge.model import Accepted
from watchbridge.services.trakt import TraktClient
from watchbridge.store import backup_path
from watchbridge.webhooks import ingest_job, profile_for
from watchbridge.wiring import build_runtime, make_targets, trakt_client

pytestmark = pytest.mark.anyio

DAY = 86400.0
SAM = 28374651  # Sam's plex.tv id, as Plex's webhook names a managed user
SAM_ANILIST = 777
SPY_FAMILY = 140960  # AniList: SPY x FAMILY Part 1 = TheTVDB 405920 S1E1-12
SEASONS = {1: 7, 2: 13, 3: 13, 4: 13, 5: 16}  # Breaking Bad, on Trakt and Serializd
EPISODES = [(season, n) for season, count in SEASONS.items() for n in range(1, count + 1)]
# The day Sam watches each episode of SPY x FAMILY: the last one after the AniList token,
# pasted at install, ran out (a year on).
SAMS_DAYS = {
    **{1 + 30 * (n - 1): n for n in range(1, 11)},
    358: 11,
    369: 12,
}
SAMS_DAYS_LAST = 369
SIGNS_IN_AGAIN = 372  # Sam, told the sign-in is needed, signs in again
YEAR_AND_A_BIT = 380
OUTAGE = (150, 155)  # Trakt answers 503 to everything for five days
REBOOTS = (90, 200, 330)
CALM_FROM, CALM_TO = 241, 322  # two days alike: every service used since the start, no alert open


class Household:
    """The household's watchbridge on the walk's clock: the webhooks' plays, the worker's
    passes and the hourly housekeeping, in-process (a year in seconds)."""

    def __init__(
        self,
        path: Path,
        clock: Clock,
        trakt: FakeTrakt,
        serializd: FakeSerializd,
        anilist: FakeAniList,
    ) -> None:
        self.path, self.clock = path, clock
        self.trakt, self.serializd, self.anilist = trakt, serializd, anilist
        self.runtime: Runtime | None = None
        self.worker: DeliveryWorker | None = None
        self.client: TraktClient | None = None  # the one housekeeping keeps between rounds
        self.plays = {"alex": 0, "sam": 0}
        self.seen: dict[int, tuple[set[str], dict[str, int]]] = {}  # /metrics, rows

    @property
    def live(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def open(self) -> Runtime:
        runtime = build_runtime(load_config(self.path, {}), clock=self.clock)
        runtime.open(service=True)
        self.runtime = runtime
        self.worker = DeliveryWorker(make_targets, runtime.config.delivery)
        self.worker.targets = {t.name: t for t in make_targets(runtime)}
        self.client = trakt_client(runtime.config, runtime)
        return runtime

    async def close(self) -> None:
        if self.worker is not None:
            for target in self.worker.targets.values():
                await target.aclose()
        if self.client is not None:
            await self.client.aclose()
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = self.worker = self.client = None

    def shift(self, seconds: float) -> None:
        self.clock.ahead += seconds
        for fake in (self.trakt, self.serializd, self.anilist):
            fake.advance(seconds)

    def webhook(self, payload: dict[str, Any]) -> None:
        """Plex's webhook, through the parser and the store as the route records it."""
        body, content_type = plex_multipart(payload)
        result = parse("plex", body, content_type)
        assert isinstance(result, Accepted), result
        jobs = []
        for event in result.events:
            profile = profile_for(self.live.config, event)
            assert profile is not None
            jobs.append(ingest_job(self.live, profile, event, result.document))
        self.live.store.ingest_many(jobs)

    def alex_watches(self, season: int, number: int) -> None:
        payload = copy.deepcopy(sample_json("plex", "episode_legacy_media_scrobble.json"))
        meta = payload["Metadata"]
        meta["guid"] = f"com.plexapp.agents.thetvdb://81189/{season}/{number}?lang=en"
        meta["ratingKey"] = f"{season}{number:02d}"
        meta.update(parentIndex=season, index=number, title=f"S{season}E{number}")
        self.webhook(payload)
        self.plays["alex"] += 1

    def sam_watches(self, number: int) -> None:
        payload = copy.deepcopy(sample_json("plex", "episode_legacy_media_scrobble.json"))
        payload["Account"] = {"id": SAM, "title": "Sam"}
        payload["user"] = False
        meta = payload["Metadata"]
        meta["guid"] = f"com.plexapp.agents.thetvdb://405920/1/{number}?lang=en"
        meta["ratingKey"] = f"9{number:02d}"
        meta.update(grandparentTitle="SPY x FAMILY", parentIndex=1, index=number)
        self.webhook(payload)
        self.plays["sam"] += 1

    async def deliver(self) -> None:
        assert self.worker is not None
        for _ in range(30):
            if not await self.worker.pass_once(self.live):
                break

    async def hour(self) -> None:
        """The service's hourly round: housekeeping, then what is due is delivered."""
        await housekeeping(self.live, self.client)
        await self.deliver()

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.live.config.storage.path)) as conn:
            return conn.execute(sql, params).fetchall()

    def table_rows(self) -> dict[str, int]:
        names = [r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: self.rows(f'SELECT COUNT(*) FROM "{name}"')[0][0] for name in names}

    def series(self) -> set[str]:
        """The /metrics series by name and labels (values left out)."""
        text = self.live.metrics.render().decode()
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


def config_text(
    tmp: Path, trakt: FakeTrakt, serializd: FakeSerializd, anilist: FakeAniList,
    lists: FakeDatasets, alerts: str, sams_token: str,
) -> str:  # fmt: skip
    email, password, _ = ALICE
    return (
        f"storage: {{path: {tmp / 'wb.db'}}}\n"
        f'alerts: {{urls: ["{alerts}"]}}\n'
        "services:\n"
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}\n'
        f'  serializd: {{api_url: "{serializd.url}"}}\n'
        f"{anilist_service(anilist, lists)}"
        "profiles:\n"
        '  alex:\n    users: {plex: ["1"]}\n'
        f'    accounts: {{trakt: {{}}, serializd: {{email: "{email}", password: "{password}"}}}}\n'
        f'  sam:\n    users: {{plex: ["{SAM}"]}}\n'
        f'    accounts: {{anilist: {{token: "{sams_token}"}}}}\n'
    )


@pytest.fixture
async def household(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Household]:
    unpaced(monkeypatch, "anilist", "serializd", "trakt")
    monkeypatch.setitem(HttpClient.__init__.__kwdefaults__, "retry", RetryPolicy(backoff=0.0))
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    anilist, lists = start_fake(FakeAniList()), start_fake(FakeDatasets())
    assert isinstance(trakt, FakeTrakt) and isinstance(serializd, FakeSerializd)
    assert isinstance(anilist, FakeAniList) and isinstance(lists, FakeDatasets)
    trakt.add_show("Breaking Bad", 2008, imdb="tt0903747", tmdb=1396, tvdb=81189, seasons=SEASONS)
    serializd.seed_reference_catalogue()
    anilist.limit = anilist.burst_limit = 100_000
    anilist.add_media(SPY_FAMILY, episodes=12, format="TV")
    sam = anilist.add_user(SAM_ANILIST, "sam_kid")
    path = tmp_path / "watchbridge.yaml"
    text = config_text(
        tmp_path, trakt, serializd, anilist, lists, receiver.apprise_url, anilist.issue_token(sam)
    )
    path.write_text(text)
    clock = Clock()
    house = Household(path, clock, trakt, serializd, anilist)
    runtime = house.open()
    sign_in_trakt(runtime.store, trakt, "alex", now=clock())  # `watchbridge auth trakt`
    try:
        yield house
    finally:
        await house.close()


async def walk(
    house: Household, receiver: AlertReceiver, days: range, outage: tuple[int, int]
) -> list[tuple[int, str]]:
    """The household's `days`, Trakt down through `outage` (days, end excluded): the day
    and title of each message the household got."""
    told: list[tuple[int, str]] = []
    down = False
    house.trakt.fail_next(10**9, 503, when=lambda _: down)
    for day in days:
        down = outage[0] <= day < outage[1]
        if day in REBOOTS:  # an update or a power cut; the Home Assistant app backs up at stop
            house.live.store.backup_to(backup_path(Path(house.live.config.storage.path)))
            await house.close()
            house.open()
        if day % 7 in (0, 2, 4):  # Alex: Breaking Bad three evenings a week, round and round
            house.alex_watches(*EPISODES[house.plays["alex"] % len(EPISODES)])
        if day in SAMS_DAYS:  # Sam: an episode of SPY x FAMILY a month
            house.sam_watches(SAMS_DAYS[day])
        if day == SIGNS_IN_AGAIN:  # Sam does what the alert said, with a new token
            token = house.anilist.issue_token(house.anilist.user(SAM_ANILIST))
            said = await asyncio.to_thread(
                watchbridge, "auth", "anilist", "--config", str(house.path),
                "--profile", "sam", "--token", token,
            )  # fmt: skip
            assert said.returncode == 0, said.stdout + said.stderr
        before = len(receiver.messages)
        await house.deliver()
        await house.hour()  # the day's housekeeping (the service's is hourly)
        house.shift(DAY)
        told += [(day, str(m["title"])) for m in receiver.messages[before:]]
        if day in (CALM_FROM, CALM_TO):
            house.seen[day] = (house.series(), house.table_rows())
    return told


async def test_a_year_alone_loses_nothing_alerts_before_plays_stop_and_stays_small(
    household: Household, receiver: AlertReceiver, tmp_path: Path
) -> None:
    house = household
    told = await walk(house, receiver, range(YEAR_AND_A_BIT), OUTAGE)
    # Every play once where it belongs, Sam's last one after the new sign-in.
    assert len(house.trakt.history()) == len(house.serializd.diary()) == house.plays["alex"]
    assert house.plays["alex"] > 150
    entries = house.anilist.snapshot(house.anilist.user(SAM_ANILIST))
    assert entries[SPY_FAMILY]["status"] == "COMPLETED"
    assert entries[SPY_FAMILY]["progress"] == 12
    assert house.rows("SELECT COUNT(*) FROM outbox WHERE status != 'done'") == [(0,)]
    # Trakt's 7-day sign-in renewed itself all year (its refresh tokens used once each), and
    # Serializd's year-long token by the stored password: neither needed anyone.
    refreshes = len(house.trakt.tokens) - 1  # the pairs it handed out since the sign-in
    assert YEAR_AND_A_BIT / 7 <= refreshes <= YEAR_AND_A_BIT / 5
    assert house.serializd.count("POST", "/api/login") == 2
    assert not [title for _, title in told if "sign-in" in title and "sam" not in title]
    # Trakt's outage: told within its first days, reminded daily, then no more than weekly
    # after its third day, one "Resolved", and closed for the rest of the year.
    outage = [(day, title) for day, title in told if "Trakt" in title]
    opened = [day for day, title in outage if not title.startswith("Resolved")]
    assert opened and OUTAGE[0] <= opened[0] <= OUTAGE[0] + 2, outage
    assert all(OUTAGE[0] <= day < OUTAGE[1] for day in opened), outage
    assert len(opened) <= 4, outage
    (resolved,) = [day for day, title in outage if title.startswith("Resolved")]
    assert resolved == OUTAGE[1], outage
    # AniList's token cannot be renewed: told 14 days ahead, once; then at its end, reminded
    # while Sam's play waits for it; resolved with the sign-in that Sam's alert asked for.
    anilist = [(day, title) for day, title in told if "AniList" in title]
    assert anilist[0] == (351, "watchbridge: the AniList sign-in of sam expires soon")
    assert anilist[1] == (365, "watchbridge: AniList sign-in needed (profile sam)")
    assert anilist[-1] == (
        SIGNS_IN_AGAIN,
        "Resolved: watchbridge: AniList sign-in needed (profile sam)",
    )
    reminded = [day for day, _ in anilist[2:-1]]
    assert reminded == list(range(SAMS_DAYS_LAST, SIGNS_IN_AGAIN)), anilist
    expiring = next(m for m in receiver.messages if "expires soon" in str(m["title"]))
    assert "run `watchbridge auth anilist --profile sam`" in expiring["message"]
    assert len(told) == len(outage) + len(anilist), told
    # The database: what housekeeping prunes holds a week's worth, the same on two days
    # months apart; only the note of each play added (a few rows a play) grows with history.
    (early_series, early), (late_series, late) = house.seen[CALM_FROM], house.seen[CALM_TO]
    for table in ("events", "outbox", "id_cache", "sync_runs", "cursors", "tokens"):
        assert late[table] <= max(early[table], 10), (table, early, late)
    assert late["playback_sessions"] <= 2 * (len(EPISODES) + len(SAMS_DAYS))
    plays_between = house.plays["alex"] * (CALM_TO - CALM_FROM) / YEAR_AND_A_BIT
    assert late["mirror"] - early["mirror"] <= 6 * plays_between
    # The README's figure for that note: about 900 bytes a play added to Trakt, 150 to
    # Serializd (each play of Alex's went to both).
    noted = house.rows(
        "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('mirror', 'sqlite_autoindex_mirror_1')"
    )[0][0]
    print(f"notes of plays added: {noted / house.plays['alex']:.0f} bytes a play")
    assert noted <= 1.25 * (900 + 150) * house.plays["alex"]
    size = Path(house.live.config.storage.path).stat().st_size
    print(f"database after a year of {house.plays} plays: {size} bytes")
    assert size < 2**20
    # /metrics: the same series months apart (no label per item, day or play).
    assert late_series == early_series
    # The backups at each stop are one copy, written over.
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("wb.db"))
    assert kept == ["wb.db", "wb.db-shm", "wb.db-wal", "wb.db.backup"]


async def test_a_trakt_outage_past_a_week_loses_no_serializd_play(
    household: Household, receiver: AlertReceiver
) -> None:
    # Plex's legacy agent names Breaking Bad by its TVDB id only; Serializd needs its TMDB
    # id, which Trakt's id search gives. Trakt is down for eleven days; Serializd is not.
    # The play that waits for that search waits as Trakt's own do, and goes once it answers.
    house = household
    await walk(house, receiver, range(165), (150, 161))
    assert len(house.serializd.diary()) == house.plays["alex"]
    assert house.rows("SELECT COUNT(*) FROM outbox WHERE status = 'dead'") == [(0,)]
    # Trakt's outage alert is the one that tells of it (no alert of Serializd's own).
    told = [m for m in receiver.messages if "Serializd" in str(m["title"])]
    assert not told, told
    trakt = [m for m in receiver.messages if str(m["title"]).startswith("watchbridge: Trakt")]
    assert trakt and all(
        "Plays and ratings for Trakt (and those for Serializd and AniList that need its id"
        " search to name their show) are waiting since" in m["message"]
        for m in trakt
    ), trakt
