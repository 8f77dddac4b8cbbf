"""The AniList target: plays become progress (never lower), ratings become scores, against the
stateful fake, driven through the delivery worker."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.fakes.anilist import FakeAniList, shown_score
from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, FakeJellyfin
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import FakeSerializd
from tests.harness import until
from tests.ingest_samples import only_event, sample_json
from tests.test_disk_syncs import UnsyncedWrites
from watchbridge.anime import Unmatched, load_index
from watchbridge.anime_data import unmatched_records
from watchbridge.app import Runtime
from watchbridge.catalogue import CatalogueNumbering
from watchbridge.config import (
    AniListConfig,
    JellyfinConfig,
    Secret,
    SerializdConfig,
    parse_config,
)
from watchbridge.deadletters import retry_dead_letters
from watchbridge.deliver.anilist import (
    NAME,
    REWATCH_WAIT,
    SKIPPED,
    AniListTarget,
    IndexReverse,
    Reverse,
    finish_write,
    finished_by,
    index_reverse,
    likely_anime,
    new_viewing,
    play_write,
    rating_write,
    removal_write,
    season_owner,
    set_aside_rewatch,
    shows,
    skipped_titles,
)
from watchbridge.deliver.oncemore import PROBE_FIRST
from watchbridge.deliver.worker import DeliveryWorker, Hold
from watchbridge.http import RetryPolicy
from watchbridge.ids import Enricher
from watchbridge.ingest import jellyfin, plex
from watchbridge.maintenance import KEEP_DONE, KEEP_SESSIONS
from watchbridge.model import Accepted, Ids, MediaEvent, MediaRef, ref_to_dict
from watchbridge.playback import decide
from watchbridge.reconcile import UNDATED
from watchbridge.services.anilist import AniListClient, EntryWrite, FuzzyDate, ListEntry
from watchbridge.services.jellyfin import MediaServerClient
from watchbridge.services.serializd import SerializdClient
from watchbridge.store import NewOutboxRow
from watchbridge.webhooks import rows_for
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

REZERO = 65942  # TMDB show; season 1 episodes 38-49 are AniList 119661 (S2 Part 2) 1-12
PART_2 = 119661
AMBIGUOUS_SHOW = 777
DAY = 86400.0


OPEN_SHOW = 888  # an open-ended "offset 0" row onto PART_2, as Kometa/Fribb write them
# (show, season, number) -> (AniList id, episode) the datasets learn later (a refresh)
LATER: dict[tuple[str | None, int | None, int | None], tuple[int, int]] = {}


@pytest.fixture(autouse=True)
def _no_refresh_yet() -> Iterator[None]:
    yield
    LATER.clear()


def reverse_table(item: MediaRef) -> tuple[int, int] | Unmatched:
    show = item.ids.tmdb if item.kind == "show" else item.show_ids.tmdb
    number = item.number or 0
    if (show, item.season, item.number) in LATER:
        return LATER[(show, item.season, item.number)]
    if show == str(REZERO) and item.kind == "episode" and item.season == 3:
        return Unmatched("TMDB 65942 S3: the datasets know the show, not the season", "new-season")
    if show == str(REZERO) and item.kind == "episode" and item.season == 2:
        return Unmatched("TMDB 65942 S2E16 is past every range", "outside")
    if show == str(OPEN_SHOW) and item.kind == "episode":
        return PART_2, number
    if show == str(REZERO) and item.kind == "episode" and item.season == 1 and 38 <= number <= 49:
        return PART_2, number - 37
    if show == str(REZERO) and item.kind in ("show", "season"):
        return PART_2, 1
    if show == str(AMBIGUOUS_SHOW):
        return Unmatched("TMDB 777 S1E1 is claimed by AniList 1 and 2", "ambiguous")
    return Unmatched("in no mapping dataset range", "unknown")


def episode(number: int, show: int = REZERO) -> MediaRef:
    return MediaRef(
        "episode", show_ids=Ids(tmdb=str(show)), show_title="Re:Zero", season=1, number=number
    )


def current(**fields: Any) -> ListEntry:
    values: dict[str, Any] = {"id": 1, "media_id": PART_2, "status": "CURRENT", "episodes": 12}
    return ListEntry(**{**values, **fields})


# --------------------------------------------------------------------------- pure decisions

AT = 1_782_640_802.0
TODAY = FuzzyDate.of(AT)


@pytest.mark.parametrize(
    ("entry", "episode", "rewatch", "write"),
    [
        (None, 3, False, EntryWrite(PART_2, status="CURRENT", progress=3, started_at=TODAY)),
        (
            current(progress=3),
            5,
            False,
            EntryWrite(PART_2, status="CURRENT", progress=5, started_at=TODAY),
        ),
        (current(progress=7), 5, False, None),  # never lower
        (current(progress=7), 7, False, None),
        (
            current(progress=11, started_at=FuzzyDate(2026, 1, 1)),
            12,
            False,
            EntryWrite(PART_2, status="COMPLETED", progress=12, completed_at=TODAY),
        ),
        (
            current(status="PLANNING"),
            1,
            False,
            EntryWrite(PART_2, status="CURRENT", progress=1, started_at=TODAY),
        ),
        (
            current(status="PAUSED", progress=4, started_at=FuzzyDate(2026)),
            5,
            False,
            EntryWrite(PART_2, status="CURRENT", progress=5),
        ),
        (
            current(status="COMPLETED", progress=12),
            1,
            True,
            EntryWrite(PART_2, status="REPEATING", progress=1),
        ),
        (current(status="COMPLETED", progress=12), 1, False, None),  # old history: no rewatch
        (current(status="COMPLETED", progress=12), 4, True, None),
        (current(status="COMPLETED", progress=10), 11, False, EntryWrite(PART_2, progress=11)),
        (current(status="REPEATING", progress=2), 3, True, EntryWrite(PART_2, progress=3)),
        (current(status="DROPPED", progress=2, repeat=1), 3, False, None),  # the first pass's
        (  # dropped on AniList after this viewing: the user's word stands, the episode counts
            current(status="DROPPED", progress=5, updated_at=AT + 1),
            6,
            False,
            EntryWrite(PART_2, progress=6, started_at=TODAY),
        ),
        (
            current(status="PAUSED", progress=5, updated_at=AT, started_at=FuzzyDate(2026)),
            12,
            False,
            EntryWrite(PART_2, progress=12),
        ),
        (
            current(status="REPEATING", progress=11, repeat=1),
            12,
            True,
            EntryWrite(PART_2, status="COMPLETED", progress=12, repeat=2),
        ),
        (  # set to Rewatching on AniList at the count: a new viewing of the end finishes it
            current(status="REPEATING", progress=12, repeat=1),
            12,
            True,
            EntryWrite(PART_2, status="COMPLETED", progress=12, repeat=2),
        ),
        (current(status="REPEATING", progress=12, repeat=1), 12, False, None),  # the first pass's
        (  # watched before the user set it to Rewatching: the first viewing's, held
            current(status="REPEATING", progress=12, repeat=1, updated_at=AT + 60),
            12,
            True,
            None,
        ),
    ],
)
def test_a_play_sets_progress_status_and_dates(
    entry: ListEntry | None, episode: int, rewatch: bool, write: EntryWrite | None
) -> None:
    assert play_write(entry, PART_2, episode, AT, rewatch=rewatch) == write


def test_a_play_of_a_rewatch_set_aside_resumes_it_and_a_finish_date_alone_is_no_rewatch() -> None:
    paused = current(status="PAUSED", progress=2, completed_at=FuzzyDate(2025, 5, 1))
    assert play_write(paused, PART_2, 3, AT, rewatch=True, set_aside=True) == EntryWrite(
        PART_2, status="REPEATING", progress=3
    )
    # Dropped with a finish date (a list app's, a MAL import's): a first viewing goes on
    assert play_write(paused, PART_2, 3, AT, rewatch=True) == EntryWrite(
        PART_2, status="CURRENT", progress=3, started_at=TODAY
    )
    assert removal_write(paused, 2) == EntryWrite(PART_2, progress=1)
    assert removal_write(paused, 2, set_aside=True) is None


@pytest.mark.parametrize(
    ("before", "now", "told"),
    [
        (None, ("PAUSED", 3), None),  # a first read: nothing seen before
        (("COMPLETED", 12), ("PAUSED", 3), True),
        (("REPEATING", 4), ("DROPPED", 4), True),
        (("CURRENT", 3), ("PAUSED", 3), None),
        (("PAUSED", 3), ("CURRENT", 3), None),  # a rewatch set aside goes on; a first viewing too
        (("REPEATING", 4), ("CURRENT", 4), True),  # the rewatch goes on, labelled Watching
        (("COMPLETED", 12), ("CURRENT", 3), True),  # set back to watching: a rewatch begun
        (("COMPLETED", 12), ("CURRENT", 0), True),
        (("COMPLETED", 8), ("CURRENT", 8), None),  # relabelled only: nothing set back
        (("CURRENT", 3), ("COMPLETED", 12), False),  # finished again: the rewatch is over
        (("PAUSED", 3), ("PLANNING", 3), False),
        (("PAUSED", 3), ("REPEATING", 3), None),
        (("PAUSED", 3), ("PAUSED", 3), None),
    ],
)
def test_a_read_tells_a_rewatch_set_aside_by_what_the_last_read_saw(
    before: tuple[str, int] | None, now: tuple[str, int], told: bool | None
) -> None:
    last = None if before is None else current(status=before[0], progress=before[1])
    assert set_aside_rewatch(last, current(status=now[0], progress=now[1])) is told


def test_a_completed_entry_lowered_with_a_rewatch_counted_since_is_no_set_back() -> None:
    done = current(status="COMPLETED", progress=12)
    assert set_aside_rewatch(done, current(status="CURRENT", progress=3, repeat=1)) is None


def test_an_undated_play_of_a_dropped_entry_keeps_it_dropped() -> None:
    dropped = current(status="DROPPED", progress=5, updated_at=AT)
    assert play_write(dropped, PART_2, 7, UNDATED, rewatch=False) == EntryWrite(PART_2, progress=7)


def test_a_play_of_a_completed_one_episode_entry_that_is_a_new_viewing_counts_a_rewatch() -> None:
    done = current(status="COMPLETED", progress=1, episodes=1, repeat=2)
    assert play_write(done, PART_2, 1, AT, rewatch=True) == EntryWrite(PART_2, repeat=3)
    assert play_write(done, PART_2, 1, AT, rewatch=False) is None


def test_a_movie_play_completes_a_new_entry_at_once() -> None:
    assert play_write(None, PART_2, 1, AT, rewatch=False, whole=True) == EntryWrite(
        PART_2, status="COMPLETED", progress=1, started_at=TODAY, completed_at=TODAY
    )


def test_dates_are_the_days_of_the_services_time_zone(time_zone: Callable[[str], None]) -> None:
    time_zone("America/Los_Angeles")  # TZ, as docker-compose.yml and Home Assistant pass it
    evening = datetime(2024, 3, 5, 20, 0).timestamp()  # 8 pm there: 04:00 UTC on 6 March
    write = play_write(None, PART_2, 1, evening, rewatch=False, whole=True)
    assert write is not None and write.completed_at == FuzzyDate(2024, 3, 5)


def test_an_older_viewing_never_advances_a_rewatch() -> None:
    assert play_write(current(status="REPEATING", progress=2), PART_2, 5, AT, rewatch=False) is None


FINISHED = FuzzyDate(2026, 6, 20)  # AT is eight days later


@pytest.mark.parametrize(
    ("entry", "at", "new"),
    [
        (current(status="COMPLETED", completed_at=FINISHED), UNDATED, False),
        # 2026-06-21 11:00 UTC is still June 20 at UTC-12
        (current(status="COMPLETED", completed_at=FINISHED), 1_782_039_600.0, False),
        (current(status="COMPLETED", completed_at=FINISHED), 1_782_046_800.0, True),  # 13:00
        (current(status="COMPLETED", completed_at=FINISHED, updated_at=AT), AT - 60, True),
        (current(status="COMPLETED", updated_at=AT), AT - 60, False),  # no finish date
        (current(status="COMPLETED", updated_at=AT), AT + 60, True),
        (
            current(status="COMPLETED", completed_at=FINISHED, repeat=1, updated_at=AT),
            AT - 60,
            False,
        ),
        (current(status="REPEATING", completed_at=FINISHED, updated_at=AT), AT - 60, True),
        (current(status="REPEATING", completed_at=FINISHED), FINISHED.timestamp() or 0.0, False),
    ],
)
def test_a_links_play_is_a_new_viewing_only_when_dated_after_the_entry_was_finished(
    entry: ListEntry, at: float, new: bool
) -> None:
    assert new_viewing(entry, at) is new


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "Europe/London"])  # London: UTC+0 in January
def test_a_rewatch_begun_the_morning_after_the_finish_date_is_a_new_viewing(
    time_zone: Callable[[str], None], zone: str
) -> None:
    """watchbridge runs with TZ set: the finish date is a day of that zone, over at midnight
    there (not at noon the next day, as at UTC-12)."""
    time_zone(zone)
    here = ZoneInfo(zone)
    finished = datetime(2025, 1, 31, 23, 30, tzinfo=here).timestamp()
    entry = current(status="COMPLETED", completed_at=FuzzyDate.of(finished), updated_at=finished)
    assert new_viewing(entry, datetime(2025, 2, 1, 9, 0, tzinfo=here).timestamp())
    assert not new_viewing(entry, datetime(2025, 1, 31, 23, 50, tzinfo=here).timestamp())


@pytest.mark.parametrize("zone", ["Europe/Berlim", "America/New York"])
def test_a_time_zone_this_machine_does_not_know_is_no_zone_named(
    time_zone: Callable[[str], None], zone: str
) -> None:
    """A misspelt TZ leaves the machine at UTC (glibc says nothing): as with TZ unset, the
    finish date may be any zone's day, and lasts until it is over at UTC-12."""
    time_zone(zone)
    assert finished_by(FuzzyDate(2026, 6, 19)) == datetime(2026, 6, 20, 12, tzinfo=UTC).timestamp()


def test_a_finish_date_missing_its_day_or_month_stands_for_the_whole_month_or_year() -> None:
    assert finished_by(FuzzyDate(2026, 2)) == finished_by(FuzzyDate(2026, 2, 28))
    assert finished_by(FuzzyDate(2026)) == finished_by(FuzzyDate(2026, 12, 31))
    assert finished_by(FuzzyDate()) is None


def test_an_undated_play_sets_no_dates() -> None:
    assert play_write(None, PART_2, 2, UNDATED, rewatch=False) == EntryWrite(
        PART_2, status="CURRENT", progress=2
    )


def test_a_listed_entry_holding_every_episode_is_completed_by_its_last_episodes_play() -> None:
    # What a new entry looks like when the save that would complete it failed.
    listed = current(progress=12, started_at=TODAY)
    assert play_write(listed, PART_2, 12, AT, rewatch=True) == EntryWrite(
        PART_2, status="COMPLETED", progress=12, completed_at=TODAY
    )
    assert play_write(listed, PART_2, 5, AT, rewatch=True) is None


def test_an_entry_shows_a_save_when_it_holds_its_status_and_at_least_its_counts() -> None:
    completing = EntryWrite(PART_2, status="COMPLETED", progress=12)
    assert shows(current(status="COMPLETED", progress=12), completing)
    assert not shows(current(progress=12), completing)
    assert not shows(current(status="COMPLETED", progress=12, media_id=5555), completing)
    assert shows(current(status="COMPLETED", progress=1, repeat=2), EntryWrite(PART_2, repeat=2))
    assert not shows(
        current(status="COMPLETED", progress=1, repeat=1), EntryWrite(PART_2, repeat=2)
    )


def test_a_new_entry_is_completed_once_its_episode_count_is_known() -> None:
    saved = current(progress=12)
    assert finish_write(saved, AT) == EntryWrite(PART_2, status="COMPLETED", completed_at=TODAY)
    assert finish_write(current(progress=3), AT) is None
    assert finish_write(current(progress=3, episodes=None), AT) is None


def test_a_score_is_written_only_when_the_user_would_see_a_change() -> None:
    assert rating_write(current(score=70), 80, "POINT_5") is None  # 4 stars either way
    assert rating_write(current(score=70), 80, "POINT_100") == EntryWrite(PART_2, score_raw=80)
    assert rating_write(current(score=0), 60, "POINT_3") == EntryWrite(PART_2, score_raw=60)
    assert rating_write(current(score=70), None, "POINT_5") == EntryWrite(PART_2, score_raw=0)


def test_only_the_highest_episode_can_be_unwatched() -> None:
    assert removal_write(current(progress=5), 5) == EntryWrite(PART_2, progress=4)
    assert removal_write(current(progress=5), 3) is None
    assert removal_write(current(status="COMPLETED", progress=12), 12) == EntryWrite(
        PART_2, status="CURRENT", progress=11
    )
    # An entry moved to Planning keeps its progress, which counts: it can be unwatched too.
    assert removal_write(current(status="PLANNING", progress=3), 3) == EntryWrite(
        PART_2, progress=2
    )


# --------------------------------------------------------------------------- against the fake


def start_anilist_with_part_2(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    """A fake AniList without its rate limit, knowing Re:Zero's Part 2 (12 episodes)."""
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    fake.limit = fake.burst_limit = 100_000
    fake.add_media(PART_2, episodes=12)
    return fake


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    return start_anilist_with_part_2(start_fake)


@pytest.fixture
def durability() -> str:
    """storage.durability (a test parametrizes it to run under another)."""
    return "full"


@pytest.fixture
def alert_urls(request: pytest.FixtureRequest) -> list[str]:
    """alerts.urls: none, or the receiver's for a test that asks (indirect "receiver")."""
    if getattr(request, "param", None) != "receiver":
        return []
    return [request.getfixturevalue("receiver").apprise_url]


@pytest.fixture
async def runtime(
    tmp_path: Path, fake: FakeAniList, clock: FakeClock, durability: str, alert_urls: list[str]
) -> AsyncIterator[Runtime]:
    clock.now = fake.now()
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}, durability: {durability}}}
alerts: {{urls: {json.dumps(alert_urls)}}}
services:
  anilist: {{api_url: "{fake.url}", auth_url: "{fake.auth_url}"}}
  plex: {{url: "http://127.0.0.1:9", token: plex-owner-token}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts: {{anilist: {{token: "{fake.issue_token()}"}}, plex: {{}}}}
links:  # what queued the tests' link rows (the service gives up those no link asks for)
  plex-anilist: {{services: [plex, anilist]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    yield runtime
    runtime.close()


@pytest.fixture
async def target(runtime: Runtime, clock: FakeClock) -> AsyncIterator[AniListTarget]:
    target = anilist_target(runtime, clock)
    yield target
    await target.aclose()


def anilist_target(runtime: Runtime, clock: FakeClock) -> AniListTarget:
    services = runtime.config.services.anilist
    assert services is not None
    token = runtime.config.profiles["me"].accounts.anilist
    assert token is not None and token.token is not None
    client = AniListClient(
        services,
        runtime.store,
        seeded_tokens={"me": Secret(token.token.reveal())},
        clock=clock,
        per_minute=100_000,
    )

    async def reverse() -> Reverse:
        return reverse_table

    return AniListTarget(client, runtime.store, runtime.config.delivery, clock, reverse)


@pytest.fixture
def worker(runtime: Runtime, target: AniListTarget) -> DeliveryWorker:
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery)
    worker.targets = {target.name: target}
    return worker


def enqueue(runtime: Runtime, action: str, item: MediaRef, at: float, **extra: Any) -> None:
    payload = {"item": ref_to_dict(item), "at": at, **extra}
    row = NewOutboxRow(
        "anilist",
        "me",
        action,
        payload,
        ordering_key=f"me:anilist:{item.key()}",
        idempotency_key=f"me:anilist:{action}:{item.key()}:{at}:{extra}",
    )
    assert runtime.store.enqueue([row], runtime.clock()) == 1


async def drain(worker: DeliveryWorker, runtime: Runtime, passes: int = 4) -> None:
    for _ in range(passes):
        await worker.pass_once(runtime)


async def test_a_play_of_a_mapped_episode_sets_anilist_progress(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(40), clock() - 3600, live=True)
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"]) == ("CURRENT", 3)
    assert entry["startedAt"]["year"] is not None
    assert runtime.store.outbox_counts()["done"] == 1


async def test_plays_out_of_order_never_lower_progress(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(44), clock() - 3600)
    await drain(worker, runtime)
    enqueue(runtime, "play", episode(41), clock() - 7200)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 7
    assert fake.operations.count("SaveMediaListEntry") == 1


async def test_the_last_episode_completes_a_new_entry(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(49), clock() - 3600)
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"]) == ("COMPLETED", 12)
    assert entry["completedAt"]["year"] is not None


async def test_a_progress_made_on_anilist_meanwhile_is_respected(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(39), clock() - 3600)
    await drain(worker, runtime)
    fake.user().by_media(PART_2).progress = 9  # type: ignore[union-attr]
    fake.user().by_media(PART_2).updated_at = int(fake.now()) + 10  # type: ignore[union-attr]
    enqueue(runtime, "play", episode(42), clock() - 60)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 9


async def test_an_entry_deleted_on_anilist_is_created_again(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(39), clock() - 3600)
    await drain(worker, runtime)
    fake.user().entries.clear()
    enqueue(runtime, "play", episode(42), clock() - 60)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 5


async def test_a_play_at_or_below_a_deleted_entrys_progress_starts_it_over(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(44), clock() - 7200, live=True)  # Part 2 episode 7
    await drain(worker, runtime)
    fake.user().entries.clear()  # deleted on anilist.co, to start over
    fake.advance(3600)
    clock.now = fake.now()
    enqueue(runtime, "play", episode(38), clock() - 60, live=True)  # episode 1 again
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 1


async def test_a_completed_entry_deleted_on_anilist_comes_back_as_a_first_viewing(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(49), clock() - 7200, live=True)  # episode 12: completed
    await drain(worker, runtime)
    fake.user().entries.clear()
    fake.advance(3600)
    clock.now = fake.now()
    enqueue(runtime, "play", episode(38), clock() - 60, live=True)
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"]) == ("CURRENT", 1)


async def test_an_older_play_raises_a_dropped_entrys_progress_but_leaves_it_dropped(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="DROPPED", progress=5, updated_at=int(clock() - 10 * DAY))
    fake.add_media(PART_2 + 1, episodes=12)
    fake.add_entry(PART_2 + 1, status="PAUSED", progress=2, updated_at=int(clock() - DAY))
    LATER[(str(REZERO), 1, 60)] = (PART_2 + 1, 3)
    # Plex's history from before the user dropped it on AniList, queued by a link's first run
    enqueue(runtime, "play", episode(43), clock() - 400 * DAY, link="plex-anilist")
    enqueue(runtime, "play", episode(60), clock() - 60, live=True)  # watched just now: resumed
    await drain(worker, runtime)
    dropped, resumed = fake.snapshot()[PART_2], fake.snapshot()[PART_2 + 1]
    assert (dropped["status"], dropped["progress"]) == ("DROPPED", 6)
    assert (resumed["status"], resumed["progress"]) == ("CURRENT", 3)
    assert runtime.store.outbox_counts()["done"] == 2


async def test_a_play_after_a_pause_resumes_the_entry_after_an_older_play_raised_its_progress(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="PAUSED", progress=5, updated_at=int(clock() - 10 * DAY))
    # A link's first run: a play from before the user paused it on AniList, and one after
    enqueue(runtime, "play", episode(43), clock() - 400 * DAY, link="plex-anilist")
    enqueue(runtime, "play", episode(44), clock() - 2 * DAY, link="plex-anilist")
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"]) == ("CURRENT", 7)
    assert runtime.store.outbox_counts()["done"] == 2


async def test_a_play_after_a_pause_resumes_the_entry_after_a_rating_was_saved_to_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="PAUSED", progress=5, updated_at=int(clock() - 10 * DAY))
    season = MediaRef("season", show_ids=Ids(tmdb=str(REZERO)), season=1)
    enqueue(runtime, "rating", season, clock() - 3 * DAY, rating=80, link="plex-anilist")
    enqueue(runtime, "play", episode(44), clock() - 2 * DAY, link="plex-anilist")
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["score"]) == ("CURRENT", 7, 80)
    assert runtime.store.outbox_counts()["done"] == 2


def stop_on_anilist(fake: FakeAniList, clock: FakeClock, status: str, progress: int) -> None:
    """The user pauses or drops the entry on anilist.co, ten minutes ago."""
    fake.advance(3600)
    clock.now = fake.now()
    entry = fake.user().by_media(PART_2)
    assert entry is not None
    entry.status, entry.progress, entry.updated_at = status, progress, int(fake.now() - 600)


@pytest.mark.parametrize("status", ["PAUSED", "DROPPED"])
async def test_a_play_of_a_set_aside_first_viewing_with_a_hand_set_finish_date_is_no_rewatch(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock, status: str
) -> None:
    # Set aside at episode 5 with a finish date (list apps and MAL imports date a drop so)
    dropped_on = FuzzyDate.of(clock() - 10 * DAY).to_input()
    fake.add_entry(PART_2, status=status, progress=5, completed_at=dropped_on,
                   updated_at=int(clock() - 10 * DAY))  # fmt: skip
    enqueue(runtime, "play", episode(43), clock() - 60, live=True)  # episode 6, just now
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("CURRENT", 6, 0)


async def test_a_rewatch_begun_here_and_paused_on_anilist_goes_on_as_a_rewatch(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="COMPLETED", progress=12,
                   updated_at=int(clock() - 30 * DAY))  # fmt: skip
    enqueue(runtime, "play", episode(38), clock() - 60, live=True)  # episode 1 again: a rewatch
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["status"] == "REPEATING"
    stop_on_anilist(fake, clock, "PAUSED", 1)
    enqueue(runtime, "play", episode(39), clock() - 60, live=True)
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("REPEATING", 2, 0)


async def test_a_rewatch_begun_and_paused_on_anilist_after_a_read_saw_it_finished_goes_on(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="COMPLETED", progress=12,
                   updated_at=int(clock() - 30 * DAY))  # fmt: skip
    enqueue(runtime, "play", episode(40), UNDATED, link="plex-anilist")  # counted: a read
    await drain(worker, runtime)
    stop_on_anilist(fake, clock, "PAUSED", 3)  # a rewatch begun there, paused at episode 3
    enqueue(runtime, "play", episode(41), clock() - 60, live=True)
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("REPEATING", 4, 0)


@pytest.mark.parametrize("aside", ["REPEATING", "PAUSED"])
async def test_a_rewatch_set_to_watching_on_anilist_takes_no_older_play_nor_a_removal(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock, aside: str
) -> None:
    finished = FuzzyDate.of(clock() - 30 * DAY).to_input()
    fake.add_entry(PART_2, status="COMPLETED", progress=12, completed_at=finished,
                   updated_at=int(clock() - 30 * DAY))  # fmt: skip
    enqueue(runtime, "play", episode(40), UNDATED, link="plex-anilist")  # counted: a read
    await drain(worker, runtime)
    stop_on_anilist(fake, clock, aside, 5)  # a rewatch at episode 5 (paused, or not)
    enqueue(runtime, "play", episode(41), UNDATED, link="plex-anilist")  # counted: a read
    await drain(worker, runtime)
    stop_on_anilist(fake, clock, "CURRENT", 0)  # set to Watching at 0: the rewatch restarted
    # A link's play from the first viewing (before its finish date): the first pass holds it.
    enqueue(runtime, "play", episode(40), clock() - 400 * DAY, link="plex-anilist")
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("CURRENT", 0, 0)
    enqueue(runtime, "play", episode(38), clock() - 60, live=True)  # watched again just now
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 1
    # Unwatched on the other side: AniList cannot tell the rewatch's episode 1 from the first
    # viewing's, and lowers no rewatch (as for one labelled Rewatching).
    enqueue(runtime, "remove_play", episode(38), clock(), link="plex-anilist")
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("CURRENT", 1, 0)
    assert runtime.store.outbox_counts()["done"] == 5


async def test_a_completed_entry_set_back_to_watching_on_anilist_takes_no_older_play_nor_a_removal(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    finished = FuzzyDate.of(clock() - 30 * DAY).to_input()
    fake.add_entry(PART_2, status="COMPLETED", progress=12, completed_at=finished,
                   updated_at=int(clock() - 30 * DAY))  # fmt: skip
    enqueue(runtime, "play", episode(40), UNDATED, link="plex-anilist")  # counted: a read
    await drain(worker, runtime)
    # Set back to Watching at episode 3 (how AniList users begin a rewatch, or reset an entry):
    # the link reader reads episodes 1-12 as still watched, and only later steps as the rewatch's.
    stop_on_anilist(fake, clock, "CURRENT", 3)
    # A link's play from the first viewing (before its finish date): the first pass holds it.
    enqueue(runtime, "play", episode(42), clock() - 400 * DAY, link="plex-anilist")
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("CURRENT", 3, 0)
    enqueue(runtime, "play", episode(41), clock() - 60, live=True)  # episode 4, watched just now
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 4
    # Unwatched on the other side: AniList cannot tell the rewatch's episode 4 from the first
    # viewing's, and lowers no rewatch.
    enqueue(runtime, "remove_play", episode(41), clock(), link="plex-anilist")
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("CURRENT", 4, 0)
    # Its last episode completes it, as for any Watching entry (no rewatch counted).
    enqueue(runtime, "play", episode(49), clock() - 30, live=True)
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("COMPLETED", 12, 0)
    assert runtime.store.outbox_counts()["done"] == 5


async def test_a_rewatch_set_on_anilist_at_the_episode_count_is_finished_by_its_last_episode(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # AniList keeps the progress when the user sets a completed entry to Rewatching: the
    # rewatch watched to its end in the media server counts one more rewatch and completes it.
    fake.add_entry(PART_2, status="REPEATING", progress=12, updated_at=int(clock() - DAY))
    enqueue(runtime, "play", episode(38), clock() - 3600, live=True)  # episode 1
    await drain(worker, runtime)
    enqueue(runtime, "play", episode(49), clock() - 60, live=True)  # episode 12
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("COMPLETED", 12, 1)


async def test_a_play_from_before_a_rewatch_was_set_on_anilist_at_the_count_finishes_nothing(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # The last episode watched an hour ago, its play held (AniList out); meanwhile the user
    # finished the entry there by hand and set it to Rewatching (AniList keeps 12/12). The
    # held play is the first viewing's: no rewatch was watched, none is counted.
    finished = FuzzyDate.of(clock() - 1200).to_input()
    fake.add_entry(PART_2, status="REPEATING", progress=12, completed_at=finished,
                   updated_at=int(clock() - 600))  # fmt: skip
    enqueue(runtime, "play", episode(49), clock() - 3600, live=True)  # episode 12
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("REPEATING", 12, 0)
    assert runtime.store.outbox_counts()["done"] == 1


async def watched_through_twice_and_rewatched_to_episode_3(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> float:
    """A second viewing finished by our play three hours ago, a third at episode 3 since:
    when the play that finished the second viewing was watched."""
    fake.add_entry(PART_2, status="REPEATING", progress=11, repeat=1,
                   updated_at=int(clock() - DAY))  # fmt: skip
    finished = clock() - 3 * 3600
    enqueue(runtime, "play", episode(49), finished, live=True)  # episode 12
    await drain(worker, runtime)
    for n in range(3):  # episodes 1-3 of the third viewing, an hour later
        enqueue(runtime, "play", episode(38 + n), finished + 3600 + n * 1500, live=True)
        await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("REPEATING", 3, 2)
    return finished


async def test_a_play_of_an_earlier_viewing_delivered_late_leaves_the_rewatchs_progress(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # Episode 9 of the second viewing, watched before its episode 12, held (rate limits, a
    # restart) until the third viewing had reached episode 3: it is that viewing's, counted.
    finished = await watched_through_twice_and_rewatched_to_episode_3(runtime, worker, fake, clock)
    saves = fake.operations.count("SaveMediaListEntry")
    enqueue(runtime, "play", episode(46), finished - 2 * 3600, live=True)  # episode 9
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("REPEATING", 3, 2)
    assert fake.operations.count("SaveMediaListEntry") == saves
    assert runtime.store.outbox_counts()["done"] == 5


async def test_a_play_of_an_earlier_viewing_delivered_late_leaves_a_paused_rewatch_paused(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    finished = await watched_through_twice_and_rewatched_to_episode_3(runtime, worker, fake, clock)
    stop_on_anilist(fake, clock, "PAUSED", 3)
    enqueue(runtime, "play", episode(46), finished - 2 * 3600, live=True)  # episode 9
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("PAUSED", 3, 2)


async def test_a_play_of_the_rewatch_delivered_late_still_advances_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # Episode 5 of the third viewing, watched after it began but held until after the saves
    # of its episodes 1-3 (the entry's `updatedAt` is later than its watch): it advances it.
    finished = await watched_through_twice_and_rewatched_to_episode_3(runtime, worker, fake, clock)
    enqueue(runtime, "play", episode(42), finished + 3600 + 1000, live=True)  # episode 5
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("REPEATING", 5, 2)


async def test_plays_held_from_before_the_user_finished_the_entry_on_anilist_are_no_rewatch(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # Finished by hand on anilist.co an hour ago, while AniList deliveries were held.
    done = FuzzyDate.of(clock()).to_input()
    fake.add_entry(PART_2, status="COMPLETED", progress=12, completed_at=done,
                   updated_at=int(clock() - 3600))  # fmt: skip
    for n in range(12):  # Part 2 episodes 1-12, watched in Plex 3 to 2 days ago
        enqueue(runtime, "play", episode(38 + n), clock() - 3 * DAY + n * 3000, live=True)
    await drain(worker, runtime, passes=6)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("COMPLETED", 12, 0)


async def test_a_point_10_user_sees_an_8_given_over_a_raw_75_shown_as_7(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.viewer.score_format = "POINT_10"
    fake.add_entry(PART_2, status="COMPLETED", progress=12, score=75)  # shown as 7
    season = MediaRef("season", show_ids=Ids(tmdb=str(REZERO)), season=1)
    enqueue(runtime, "rating", season, clock(), rating=80)  # an 8 on Trakt
    await drain(worker, runtime)
    assert shown_score(int(fake.snapshot()[PART_2]["score"]), "POINT_10") == 8


async def test_a_played_special_no_dataset_maps_is_settled_as_unmatched_not_retried(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    with_real_datasets(target)  # the pinned real datasets: Re:Zero has no S0 range
    special = MediaRef("episode", show_ids=Ids(tmdb=str(REZERO)), show_title="Re:Zero",
                       season=0, number=1)  # fmt: skip
    enqueue(runtime, "play", special, clock() - 60, live=True)
    await worker.pass_once(runtime)
    assert runtime.store.outbox_counts()["done"] == 1
    (record,) = unmatched_records(runtime.store, ["me"])
    assert record.code == "special" and "an override makes its later plays count" in record.reason


async def test_a_season_rated_before_its_title_is_on_the_list_waits_for_it_and_says_so(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    season = MediaRef("season", show_ids=Ids(tmdb=str(REZERO)), season=1, title="Re:Zero S1")
    enqueue(runtime, "rating", season, clock() - 60, rating=90)  # rated in Plex, never played
    await worker.pass_once(runtime)
    assert PART_2 not in fake.snapshot()  # nothing made up: no entry, no viewing
    (held,) = runtime.store.status().waiting
    assert (held.target, held.rows) == ("anilist", 1)
    assert f"Re:Zero S1 (AniList {PART_2}) is not on your AniList list" in held.reason
    assert "add it on anilist.co" in held.reason
    fake.add_entry(PART_2, status="COMPLETED", progress=12)  # the user adds it there
    clock.now += DAY + 60
    await worker.pass_once(runtime)
    assert fake.snapshot()[PART_2]["score"] == 90
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_season_rated_before_its_plays_reach_anilist_is_scored_once_they_add_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    season = MediaRef("season", show_ids=Ids(tmdb=str(REZERO)), season=1)
    enqueue(runtime, "rating", season, clock() - 7200, rating=80)
    await worker.pass_once(runtime)
    enqueue(runtime, "play", episode(40), clock() - 3600, live=True)  # held until now
    clock.now += 900  # the first wait is short: plays queued behind it add the entry
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["score"]) == ("CURRENT", 3, 80)


async def test_a_rating_sets_the_score_and_an_invisible_change_is_skipped(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="CURRENT", progress=3, score=70)  # viewer scores in POINT_5
    season = MediaRef("season", show_ids=Ids(tmdb=str(REZERO)), season=1)
    enqueue(runtime, "rating", season, clock(), rating=80)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["score"] == 70  # 4 stars either way
    enqueue(runtime, "rating", season, clock() + 1, rating=95)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["score"] == 95


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    """Serializd's (TMDB's) catalogue: Re:Zero's season 1 has 50 episodes, season 2 16."""
    server = start_fake(FakeSerializd())
    assert isinstance(server, FakeSerializd)
    server.add_show(REZERO, "Re:Zero", seasons={1: 50, 2: 16})
    return server


@pytest.fixture
async def renumbering(
    runtime: Runtime, target: AniListTarget, serializd: FakeSerializd, clock: FakeClock
) -> AsyncIterator[DeliveryWorker]:
    """The worker with the AniList target numbering webhook episodes through Serializd's
    catalogue, as the service wires it when Serializd is configured."""
    catalogue = SerializdClient(
        SerializdConfig(api_url=serializd.url), runtime.store, clock=clock, requests_per_second=1e3
    )
    target.renumber = CatalogueNumbering(catalogue, runtime.store, None, clock)
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery)
    worker.targets = {target.name: target}
    yield worker
    await catalogue.aclose()


def tvdb_s2e16(serializd: FakeSerializd, number: int = 16) -> MediaRef:
    """Re:Zero's TVDB S2E16 (or another of S2), with its own TMDB id: TMDB S1E41 (S2 + 25),
    AniList Part 2 episode 4."""
    tmdb_id = serializd.shows[REZERO].seasons[1].first_episode_id + number + 25
    return replace(episode(number), season=2, ids=Ids(tmdb=str(tmdb_id)))


async def test_a_tvdb_ordered_webhook_episode_is_mapped_as_tmdb_numbers_it(
    runtime: Runtime,
    renumbering: DeliveryWorker,
    serializd: FakeSerializd,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    enqueue(runtime, "play", tvdb_s2e16(serializd), clock() - 60, live=True)
    await drain(renumbering, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 4


async def test_a_webhook_episode_known_by_its_absolute_number_is_counted_on_serializds_seasons(
    runtime: Runtime,
    renumbering: DeliveryWorker,
    target: AniListTarget,
    serializd: FakeSerializd,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    # A household without Trakt: a script (or a library in absolute order) names Attack on
    # Titan's episode 76 by its absolute number alone. The datasets map the show by TMDB
    # season (S4E17-28 are Final Season Part 2), so the number alone placed nothing: the play
    # waited as "not this season yet" while the same play went to Serializd at S4E17.
    # Serializd's seasons (25, 12, 22 and 28 episodes) count it there for AniList too.
    with_real_datasets(target)
    serializd.add_show(1429, "Attack on Titan", seasons={1: 25, 2: 12, 3: 22, 4: 28})
    fake.add_media(131681, episodes=12)
    show = Ids(tmdb="1429", tvdb="267440")
    played = MediaRef("episode", show_ids=show, show_title="Attack on Titan", absolute=76)
    enqueue(runtime, "play", played, clock() - 60, live=True, source="generic")
    await drain(renumbering, runtime)
    assert fake.snapshot().get(131681, {}).get("progress") == 1
    assert unmatched_records(runtime.store, ["me"]) == []


async def test_a_two_episode_jellyfin_file_in_tvdb_order_sets_the_progress_of_its_second(
    runtime: Runtime,
    renumbering: DeliveryWorker,
    target: AniListTarget,
    serializd: FakeSerializd,
    fake: FakeAniList,
    clock: FakeClock,
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    # A Jellyfin library in TVDB's order plays one file holding TVDB's S2E14-E15, TMDB's
    # S1E39-E40: AniList Part 2 episodes 2 and 3. The second has no ids of its own; as sent,
    # S2E15, it is no episode of Part 2 (a4e2d3d: it is the one after the first on TMDB's list).
    server = start_fake(FakeJellyfin("jellyfin"))
    assert isinstance(server, FakeJellyfin)
    server.add_series(JELLYFIN_SERIES, "Re:Zero", Tmdb=str(REZERO))
    with_enricher(target, runtime, clock, server)
    payload = sample_json("jellyfin", "playback_stop_episode_completed.json")
    for key in ("Provider_imdb", "Provider_tmdb", "Provider_tvdb"):
        payload.pop(key, None)
    payload |= {
        "SeriesName": "Re:Zero",
        "SeriesId": JELLYFIN_SERIES,
        "SeasonNumber": 2,
        "EpisodeNumber": 14,
        "EpisodeNumberEnd": 15,
        "Provider_tmdb": tvdb_s2e16(serializd, 14).ids.tmdb,
        "UtcTimestamp": datetime.fromtimestamp(clock() - 600, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.0000000Z"
        ),
    }
    parsed = jellyfin.parse(payload)
    assert isinstance(parsed, Accepted) and len(parsed.events) == 2, parsed
    for event in parsed.events:
        from_webhook(runtime, event)
    await drain(renumbering, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 3
    assert unmatched_records(runtime.store, ["me"]) == []


async def test_serializds_catalogue_broken_for_hours_is_told_hourly_not_per_play(
    runtime: Runtime,
    renumbering: DeliveryWorker,
    serializd: FakeSerializd,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The show endpoint renamed (an HTML 404): every play asks again, and fails.
    serializd.fail_next(1000, 404, body="<html>Not Found</html>", route="/api/show/{id}")
    with caplog.at_level(logging.DEBUG, logger="watchbridge.catalogue"):
        for number in range(1, 17):  # a play every 15 minutes for 4 hours
            enqueue(runtime, "play", tvdb_s2e16(serializd, number), clock() - 60, live=True)
            await drain(renumbering, runtime, passes=1)
            clock.advance(900)
        serializd.clear_knobs()
        enqueue(runtime, "play", tvdb_s2e16(serializd, 17), clock() - 60, live=True)  # it answers
        await drain(renumbering, runtime, passes=1)
    lines = [
        r for r in caplog.records if r.getMessage() == "could not number an episode as TMDB does"
    ]
    warned = [r for r in lines if r.levelno == logging.WARNING]
    assert len({r.item for r in lines}) == 16  # type: ignore[attr-defined]  # a line per play
    assert len(warned) == 4  # the first, then one an hour
    assert [getattr(r, "more_since_last_line", 0) for r in warned] == [0, 3, 3, 3]
    (over,) = [
        r for r in caplog.records if r.getMessage() == "episodes numbered as TMDB does again"
    ]
    assert over.times == 16  # type: ignore[attr-defined]


async def test_an_episode_of_a_show_mapped_by_tvdb_only_keeps_the_numbers_sent(
    runtime: Runtime,
    renumbering: DeliveryWorker,
    target: AniListTarget,
    serializd: FakeSerializd,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    # An override maps Re:Zero Part 2 by TVDB numbering only (TVDB S2E14-25), none by TMDB's.
    override = '119661: {tvdb: {show: 305089, season: 2, episodes: {"1-12": "14-25"}}, tmdb: skip}'
    tvdb_only = index_reverse(load_index({}, override))

    async def reverse() -> Reverse:
        return tvdb_only

    target.reverse = reverse
    sent = replace(tvdb_s2e16(serializd), show_ids=Ids(tmdb=str(REZERO), tvdb="305089"))
    enqueue(runtime, "play", sent, clock() - 60, live=True)
    await drain(renumbering, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 3  # TVDB S2E16 is Part 2 episode 3


async def test_plays_of_shows_no_dataset_knows_ask_serializd_nothing(
    runtime: Runtime, renumbering: DeliveryWorker, serializd: FakeSerializd, clock: FakeClock
) -> None:
    not_anime = replace(episode(3, show=1396), ids=Ids(tmdb="62087"))
    enqueue(runtime, "play", not_anime, clock() - 60, live=True)
    await drain(renumbering, runtime)
    assert serializd.requests == []


async def test_a_serializd_rate_limit_leaves_episodes_as_numbered_without_waiting(
    runtime: Runtime, renumbering: DeliveryWorker, serializd: FakeSerializd, clock: FakeClock
) -> None:
    for number in (15, 16):  # two plays; Serializd asks the first to wait two minutes
        enqueue(runtime, "play", tvdb_s2e16(serializd, number), clock() - 60, live=True)
    serializd.fail_next(1, 429, headers={"Retry-After": "120"}, body={"message": "slow down"})
    await asyncio.wait_for(drain(renumbering, runtime, passes=1), timeout=10)
    assert len(serializd.requests) == 1  # the second play did not ask (nor wait)


async def test_a_show_that_is_not_anime_is_done_without_a_request(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(4, show=1396), clock())
    await drain(worker, runtime)
    assert runtime.store.outbox_counts()["done"] == 1
    assert fake.requests == []
    assert unmatched_records(runtime.store, ["me"]) == []


async def test_a_play_of_an_anime_too_new_for_the_datasets_lands_once_a_refresh_maps_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    brand_new = 4242
    enqueue(runtime, "play", episode(1, show=brand_new), clock() - 60, live=True)
    await drain(worker, runtime)
    assert runtime.store.outbox_counts()["done"] == 1  # skipped as "not anime" for now
    assert fake.snapshot() == {}
    assert skipped(runtime) == [("Re:Zero", "tmdb 4242", 1)]  # `anime unmatched` names it

    LATER[(str(brand_new), 1, 1)] = (PART_2, 1)  # the datasets catch up
    clock.now += 2 * 3600
    enqueue(runtime, "play", episode(2, show=1396), clock())  # anything for AniList
    await drain(worker, runtime)
    clock.now += 2 * 3600
    enqueue(runtime, "play", episode(3, show=1396), clock())
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 1
    assert len([r for r in fake.requests if b"SaveMediaListEntry" in r.body]) == 1
    assert [ids for _, ids, _ in skipped(runtime)] == ["tmdb 1396"]  # the mapped one is gone


def from_webhook(runtime: Runtime, event: MediaEvent) -> None:
    """Queue the rows the webhook route would for `event`."""
    _, intents = decide(None, event, 90.0, runtime.clock())
    assert runtime.store.enqueue(rows_for("me", ["anilist"], event, intents), runtime.clock())


async def test_a_skipped_play_queued_again_is_not_a_rewatch_of_the_viewing_a_link_brought(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    movie_entry = 5555
    fake.add_media(movie_entry, episodes=1)
    movie = MediaRef("movie", ids=Ids(tmdb="99001"), title="Brand New Movie")
    at = clock() - 3600
    from_webhook(runtime, MediaEvent("plex", "played", movie, occurred_at=at, played=True))
    await drain(worker, runtime)
    LATER[(None, None, None)] = (movie_entry, 1)  # two days later the datasets know it
    clock.now += 2 * DAY
    enqueue(runtime, "play", movie, at, link="plex-anilist")  # a link copies the same viewing
    await drain(worker, runtime)
    assert fake.snapshot()[movie_entry]["status"] == "COMPLETED"
    assert fake.snapshot()[movie_entry]["repeat"] == 0  # one viewing


async def test_skipped_ratings_queued_again_end_with_the_last_one_given(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="CURRENT", progress=3)
    season = MediaRef("season", show_ids=Ids(tmdb="4242"), show_title="Too New", season=1)
    for rating, at in ((90, clock() - 3000), (70, clock() - 2400)):  # 9 stars, then 7
        from_webhook(runtime, MediaEvent("plex", "rate", season, occurred_at=at, rating=rating))
    await drain(worker, runtime)
    LATER[("4242", 1, None)] = (PART_2, 1)
    clock.now += 2 * 3600
    enqueue(runtime, "play", episode(2, show=1396), clock())  # anything for AniList
    await drain(worker, runtime, passes=6)
    assert fake.snapshot()[PART_2]["score"] == 70


async def test_a_rating_held_through_an_outage_leaves_a_score_given_on_anilist_since(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.viewer.score_format = "POINT_100"
    other = 5556
    LATER[("999", 1, None)] = (other, 1)
    fake.add_entry(PART_2, status="CURRENT", progress=3, score=70)
    fake.add_entry(other, status="CURRENT", progress=3, score=70)
    enqueue(runtime, "play", episode(38), clock() - 60, live=True)
    await drain(worker, runtime)  # the list as it was, before either rating
    for show in (REZERO, 999):
        season = MediaRef("season", show_ids=Ids(tmdb=str(show)), season=1)
        enqueue(runtime, "rating", season, clock(), rating=60)  # rated in Plex
    fake.disabled = True  # AniList's API is down for hours
    await drain(worker, runtime, passes=1)
    assert runtime.store.outbox_counts()["pending"] == 2
    clock.now += 3 * 3600
    fake.advance(3 * 3600)
    fake.user().by_media(PART_2).score = 90  # the user scores it on the website meanwhile
    fake.user().by_media(PART_2).updated_at = int(fake.now())
    fake.disabled = False
    clock.now += 3600
    fake.advance(3600)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["score"] == 90  # theirs is newer
    assert fake.snapshot()[other]["score"] == 60  # nothing newer there: the held one lands
    assert runtime.store.outbox_counts()["done"] == 3


async def test_a_rating_held_from_before_the_first_read_leaves_a_score_given_on_anilist_since(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.viewer.score_format = "POINT_100"
    other = 5556
    LATER[("999", 1, None)] = (other, 1)
    # Scored long ago on AniList, and listed before the ratings below were given
    fake.add_entry(other, status="CURRENT", progress=3, score=70,
                   updated_at=int(clock() - 30 * DAY))  # fmt: skip
    for show in (REZERO, 999):
        season = MediaRef("season", show_ids=Ids(tmdb=str(show)), season=1)
        enqueue(runtime, "rating", season, clock(), rating=60)  # rated in Plex
    fake.disabled = True  # watchbridge never read the list: AniList is down for hours
    await drain(worker, runtime, passes=1)
    clock.now += 3 * 3600
    fake.advance(3 * 3600)
    # Meanwhile the user adds and scores Part 2 on the website
    fake.add_entry(PART_2, status="CURRENT", progress=3, score=90, updated_at=int(fake.now()))
    fake.disabled = False
    clock.now += 3600
    fake.advance(3600)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["score"] == 90  # theirs may be newer: it stands
    assert fake.snapshot()[other]["score"] == 60  # scored before the rating: the rating lands
    assert runtime.store.outbox_counts()["done"] == 2


async def test_a_season_rated_in_plex_scores_the_seasons_entry(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList
) -> None:
    fake.add_entry(PART_2, status="CURRENT", progress=3)
    payload = sample_json("plex", "season_legacy_media_rate.json")  # a TMDB-agent library
    payload["Metadata"] |= {"guid": f"com.plexapp.agents.themoviedb://{REZERO}/1?lang=en"}
    payload["Metadata"] |= {"parentGuid": f"com.plexapp.agents.themoviedb://{REZERO}?lang=en"}
    payload["Metadata"] |= {"index": 1, "userRating": 9.0}
    from_webhook(runtime, only_event(plex.parse(payload)))
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["score"] == 90


def kept_aside(item: MediaRef, **more: object) -> dict[str, object]:
    """A skipped play as the target keeps it aside (`SKIPPED`)."""
    payload = {"item": ref_to_dict(item), "at": 100.0, **more}
    return {"profile": "me", "action": "play", "payload": payload, "ordering_key": "me:x"}


@pytest.mark.parametrize(
    ("item", "genres", "why"),
    [
        (MediaRef("episode", show_ids=Ids(anidb="18290"), number=1), [], "anime id anidb 18290"),
        (
            MediaRef("episode", show_ids=Ids(tvdb="81797"), absolute=1100),
            [],
            "numbered by absolute episode",
        ),
        (MediaRef("episode", show_ids=Ids(tmdb="240411"), number=1), [" anime "], "genre anime"),
        (MediaRef("movie", Ids(tmdb="1"), title="Up"), ["Family", "Animation"], "genre Animation"),
        (MediaRef("episode", show_ids=Ids(tmdb="1396"), number=1), ["Drama", "Crime"], None),
    ],
)
def test_a_skipped_play_is_likely_anime_by_its_anime_ids_absolute_number_or_genre(
    item: MediaRef, genres: list[str], why: str | None
) -> None:
    assert likely_anime(kept_aside(item, genres=genres)) == why


def test_a_play_skipped_before_genres_were_kept_is_not_taken_for_anime() -> None:
    bad = MediaRef("episode", show_ids=Ids(tmdb="1396"), show_title="Breaking Bad", number=1)
    assert likely_anime(kept_aside(bad)) is None
    assert likely_anime({"payload": {}}) is None  # unreadable: nothing said of it


def skipped(runtime: Runtime) -> list[tuple[str, str, int]]:
    kept = skipped_titles(runtime.store.mirror_get(NAME, "me", SKIPPED))
    return [(title.title, title.ids, title.plays) for title in kept]


async def test_a_skipped_play_stops_waiting_for_the_datasets_after_a_month(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(1, show=4242), clock() - 60, live=True)
    await drain(worker, runtime)
    clock.now += 31 * DAY
    enqueue(runtime, "play", episode(2, show=1396), clock())
    await drain(worker, runtime)  # the look at the skipped rows forgets it

    LATER[("4242", 1, 1)] = (PART_2, 1)
    clock.now += 2 * 3600
    enqueue(runtime, "play", episode(3, show=1396), clock())
    await drain(worker, runtime)
    assert fake.snapshot() == {}


async def test_an_anime_episode_that_cannot_be_mapped_is_reported_not_guessed(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(1, show=AMBIGUOUS_SHOW), clock())
    await drain(worker, runtime)
    (record,) = unmatched_records(runtime.store, ["me"])
    assert record.code == "ambiguous"
    assert fake.snapshot() == {}
    status = runtime.store.status()  # waiting for ids, not crowding out what holds others
    assert (status.unmatched, status.waiting) == (1, [])


async def test_a_play_past_the_entrys_episode_count_is_recorded_and_never_completes_it(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="CURRENT", progress=11)
    enqueue(runtime, "play", episode(13, show=OPEN_SHOW), clock())
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"]) == ("CURRENT", 11)
    (record,) = unmatched_records(runtime.store, ["me"])
    assert record.code == "outside" and "has 12" in record.reason


async def test_a_play_past_the_end_of_a_title_not_on_the_list_creates_no_entry(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(14, show=OPEN_SHOW), clock())
    await drain(worker, runtime)
    assert fake.snapshot() == {}
    assert fake.operations.count("Page.media") == 1
    assert [r.code for r in unmatched_records(runtime.store, ["me"])] == ["outside"]


def unaired(fake: FakeAniList, media_id: int) -> None:
    """AniList lists the title as announced: not aired yet, no episode count."""
    media = fake.add_media(media_id)
    media.status, media.episodes = "NOT_YET_RELEASED", None


async def test_a_play_mapped_onto_a_title_not_aired_yet_is_recorded_and_written_once_it_airs(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # A dataset off by one season put Fire Force's season 2 onto season 3, not aired yet, and
    # AniList showed the user watching it (pitfalls M4). No one watched a title AniList lists
    # as not yet released: the mapping is off there, so nothing is written on its word.
    unaired(fake, PART_2)
    enqueue(runtime, "play", episode(3, show=OPEN_SHOW), clock())
    await drain(worker, runtime)
    assert fake.snapshot() == {}
    (record,) = unmatched_records(runtime.store, ["me"])
    assert record.code == "unaired" and "not aired yet" in record.reason
    # Once it airs (a release AniList was late to mark, a stream ahead of the broadcast) the
    # play the row kept goes through at its next try.
    fake.media[PART_2].status = "RELEASING"
    later(worker, clock, 86400.0)
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"]) == ("CURRENT", 3)


async def test_a_play_mapped_onto_a_planned_entry_not_aired_yet_leaves_it_planned(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    unaired(fake, PART_2)
    fake.add_entry(PART_2, status="PLANNING")
    enqueue(runtime, "play", episode(1, show=OPEN_SHOW), clock())
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"]) == ("PLANNING", 0)
    assert [r.code for r in unmatched_records(runtime.store, ["me"])] == ["unaired"]


async def test_a_play_a_link_queued_is_never_done_without_its_write(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    enqueue(runtime, "play", episode(4, show=1396), clock(), link="plex-anilist")
    await drain(worker, runtime)
    assert runtime.store.outbox_counts().get("done", 0) == 0
    assert runtime.store.outbox_counts()["pending"] == 1


def finished_long_ago(fake: FakeAniList, clock: FakeClock) -> None:
    finished = FuzzyDate.of(clock() - 30 * DAY).to_input()
    fake.add_entry(PART_2, status="COMPLETED", progress=12, completed_at=finished)


async def test_a_links_rewatch_queued_from_a_later_episode_first_still_starts_at_episode_1(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    finished_long_ago(fake, clock)
    enqueue(runtime, "play", episode(39), clock() - 3600, link="plex-anilist")
    await drain(worker, runtime)  # episode 2 waits for the episode 1 queued behind it
    enqueue(runtime, "play", episode(38), clock() - 7200, link="plex-anilist")
    await drain(worker, runtime)
    clock.now += REWATCH_WAIT
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("REPEATING", 2, 0)
    assert runtime.store.outbox_counts()["done"] == 2


async def test_a_links_new_viewing_of_a_later_episode_alone_is_counted_after_waiting_once(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    finished_long_ago(fake, clock)
    enqueue(runtime, "play", episode(42), clock() - 3600, link="plex-anilist")
    await drain(worker, runtime)
    assert runtime.store.outbox_counts()["pending"] == 1
    clock.now += REWATCH_WAIT
    await drain(worker, runtime)
    assert runtime.store.outbox_counts()["done"] == 1
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"]) == ("COMPLETED", 12)
    assert fake.operations.count("SaveMediaListEntry") == 0


async def test_a_links_rewatch_in_one_batch_goes_in_the_order_it_was_watched(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    finished_long_ago(fake, clock)
    for number, ago in ((40, 60), (39, 1800), (38, 3600)):  # queued newest first
        enqueue(runtime, "play", episode(number), clock() - ago, link="plex-anilist")
    await drain(worker, runtime, passes=1)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"]) == ("REPEATING", 3)


async def test_a_new_season_play_is_listed_and_delivered_after_the_datasets_catch_up(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    new_season = MediaRef(
        "episode", show_ids=Ids(tmdb=str(REZERO)), show_title="Re:Zero", season=3, number=2
    )
    enqueue(runtime, "play", new_season, clock() - 60)
    await drain(worker, runtime)
    assert [r.code for r in unmatched_records(runtime.store, ["me"])] == ["new-season"]
    assert (runtime.store.next_due() or 0) >= clock() + 86400

    LATER[(str(REZERO), 3, 2)] = (PART_2, 2)  # a dataset refresh maps it
    clock.now += 86400 * 1.3
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 2
    assert unmatched_records(runtime.store, ["me"]) == []


async def test_a_deliberate_removal_lowers_progress_by_the_highest_episode(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="CURRENT", progress=5)
    enqueue(runtime, "remove_play", episode(42), clock(), link="plex-anilist")
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 4


async def test_a_lost_sign_in_holds_only_that_profile(
    runtime: Runtime, target: AniListTarget, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.expire_tokens()
    enqueue(runtime, "play", episode(40), clock())
    rows = runtime.store.claim("test", clock(), 10, ["anilist"])
    (outcome,) = (await target.deliver(rows, clock())).values()
    assert isinstance(outcome, Hold)
    assert outcome.alert == "credentials" and not outcome.target_wide
    assert "auth anilist" in outcome.reason


async def test_the_api_being_disabled_holds_the_whole_target(
    runtime: Runtime, target: AniListTarget, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.disabled = True
    enqueue(runtime, "play", episode(40), clock())
    rows = runtime.store.claim("test", clock(), 10, ["anilist"])
    (outcome,) = (await target.deliver(rows, clock())).values()
    assert isinstance(outcome, Hold)
    assert outcome.target_wide and outcome.after >= 600


async def test_the_list_is_read_once_then_only_its_changes(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.generate_list(600, 3000)
    enqueue(runtime, "play", episode(39), clock() - 3600)
    await drain(worker, runtime)
    enqueue(runtime, "play", episode(40), clock() - 60)
    await drain(worker, runtime)
    assert fake.operations.count("MediaListCollection") == 2  # 600 entries: two chunks, once
    assert fake.operations.count("Page.mediaList") == 1
    assert fake.snapshot()[PART_2]["progress"] == 3


def test_the_reverse_mapping_uses_the_anime_index_worked_examples() -> None:
    from tests.fakes.anime_datasets import sample_bodies
    from watchbridge.anime import load_index
    from watchbridge.deliver.anilist import index_reverse

    reverse = index_reverse(load_index(sample_bodies()))
    aot = MediaRef("episode", show_ids=Ids(tmdb="1429"), season=4, number=21)
    assert reverse(aot) == (131681, 5)
    assert reverse(episode(41)) == (PART_2, 3)  # Re:Zero S2 Part 2 ep 3 is TMDB S1E41
    not_anime = reverse(episode(4, show=1396))
    assert isinstance(not_anime, Unmatched) and not_anime.code == "unknown"


def test_an_episode_numbered_past_tmdbs_seasons_says_what_tvdbs_numbering_would_place() -> None:
    # TMDB knows no Re:Zero S2; a library in TVDB order numbers Part 2 episode 1 S2E14. Nothing
    # in the play says which numbering it uses (TMDB S2 may be a season TVDB calls S3).
    both = Ids(tmdb=str(REZERO), tvdb="305089")
    unplaced = sample_reverse()(MediaRef("episode", show_ids=both, season=2, number=14))
    assert isinstance(unplaced, Unmatched) and unplaced.code == "new-season"
    assert "in TVDB order, this is AniList 119661 episode 1: add an override" in unplaced.reason


def test_an_anime_movie_known_by_its_imdb_id_only_is_placed() -> None:
    # Plex's legacy movie agent names a film by IMDb id only; the datasets map that too.
    mononoke = MediaRef("movie", ids=Ids(imdb="tt0119698"), title="Princess Mononoke")
    assert sample_reverse()(mononoke) == (164, 1)


def sample_reverse() -> IndexReverse:
    from tests.fakes.anime_datasets import sample_bodies
    from watchbridge.anime import load_index

    return index_reverse(load_index(sample_bodies()))


def with_real_datasets(target: AniListTarget) -> None:
    """The target places items with the pinned real datasets (tests/fixtures)."""
    datasets = sample_reverse()

    async def reverse() -> Reverse:
        return datasets

    target.reverse = reverse


@pytest.mark.parametrize(
    ("ids", "season", "number", "found"),
    [
        (Ids(anidb="15593"), 1, 3, (PART_2, 3)),  # Plex HAMA: anidb-15593/1/3
        (Ids(mal="42203"), 1, 3, (PART_2, 3)),
        (Ids(anilist="119661"), None, 3, (PART_2, 3)),  # a webhook's show.ids.anilist
        (Ids(tmdb=str(REZERO), anilist="21355"), 1, 41, (PART_2, 3)),  # TMDB numbering first
    ],
)
def test_anime_ids_name_the_entry_when_no_dataset_range_holds_the_item(
    ids: Ids, season: int | None, number: int, found: tuple[int, int]
) -> None:
    item = MediaRef("episode", show_ids=ids, season=season, number=number)
    assert sample_reverse()(item) == found


@pytest.mark.parametrize("own", [Ids(anidb="15593"), Ids(mal="42203")])
def test_an_episodes_own_anidb_or_mal_id_is_an_episode_id_and_names_no_entry(own: Ids) -> None:
    # Jellyfin's and Emby's AniDB plugins give an episode its AniDB episode id (eid): 15593
    # here is some Mushishi episode, and also the anime id of Re:Zero S2 Part 2.
    item = MediaRef("episode", ids=own, show_ids=Ids(anidb="2890"), season=1, number=3)
    assert sample_reverse()(item) != (PART_2, 3)


def test_a_jellyfin_episodes_anidb_id_does_not_place_it_on_another_anime() -> None:
    payload = sample_json("jellyfin", "playback_stop_episode_completed.json")
    for key in ("Provider_imdb", "Provider_tmdb", "Provider_tvdb"):
        payload.pop(key)
    payload.update(SeriesName="Mushishi", SeasonNumber=1, EpisodeNumber=3, Provider_anidb="15593")
    event = only_event(jellyfin.parse(payload))
    assert sample_reverse()(event.item) != (PART_2, 3)


def test_a_later_season_of_a_show_named_by_its_anime_id_is_not_guessed() -> None:
    item = MediaRef("episode", show_ids=Ids(anidb="15593"), season=2, number=3)
    found = sample_reverse()(item)
    assert isinstance(found, Unmatched) and found.code == "unmapped"


def test_a_seasons_entries_come_in_episode_order() -> None:
    season = MediaRef("season", show_ids=Ids(tmdb=str(REZERO)), season=1)
    assert sample_reverse().season_entries(season) == (21355, 108632, PART_2)


@pytest.mark.parametrize(
    ("listed", "owner"),
    [
        ({108632: 0, PART_2: 80}, PART_2),  # the first scored entry on the list
        ({108632: 0, PART_2: 0}, 108632),  # none scored: the first on the list
        ({}, 21355),  # none on the list: the season's first entry
    ],
)
def test_a_season_rating_goes_to_the_first_scored_entry_of_the_season(
    listed: dict[int, int], owner: int
) -> None:
    entries = {m: current(media_id=m, score=score) for m, score in listed.items()}
    assert season_owner((21355, 108632, PART_2), entries, 21355) == owner


async def test_deliveries_wait_while_every_mapping_dataset_is_switched_off(
    tmp_path: Path, clock: FakeClock
) -> None:
    from watchbridge.deliver.anilist import index_source

    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  anilist:
    mapping_urls: {{anibridge: "", kometa: "", fribb: "", animelists: ""}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    try:
        target = AniListTarget(
            AniListClient(AniListConfig(), runtime.store),
            runtime.store,
            config.delivery,
            clock,
            index_source(config),
        )
        enqueue(runtime, "play", episode(40), clock())
        rows = runtime.store.claim("test", clock(), 10, ["anilist"])
        (outcome,) = (await target.deliver(rows, clock())).values()
        await target.aclose()
    finally:
        runtime.close()
    assert isinstance(outcome, Hold) and not outcome.target_wide  # no AniList outage
    assert "every anime mapping dataset is switched off" in outcome.reason


async def test_webhook_plays_of_a_profile_with_anilist_are_queued_for_it(runtime: Runtime) -> None:
    from watchbridge.config import targets_for

    config = runtime.config
    assert targets_for(config, config.profiles["me"]) == ["anilist"]


async def test_a_whole_show_rating_leaves_the_first_seasons_score_alone(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="COMPLETED", progress=12, score=90)  # the season: 9
    show = MediaRef("show", ids=Ids(tmdb=str(REZERO)), title="Re:Zero")
    enqueue(runtime, "rating", show, clock(), rating=50)  # the whole series: 5
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["score"] == 90
    assert runtime.store.outbox_counts()["done"] == 1


async def test_both_tvdb_halves_of_one_anilist_episode_are_one_viewing(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    with_real_datasets(target)  # AoT Final Chapters: TVDB S4E29 + E30 are AniList 146984's 1
    fake.add_media(146984, episodes=1)
    for number, ago in ((29, 2700), (30, 60)):  # a TVDB-ordered library, back to back
        half = MediaRef("episode", show_ids=Ids(tvdb="267440"), season=4, number=number)
        enqueue(runtime, "play", half, clock() - ago, live=True, source="plex")
        await drain(worker, runtime)
    assert (fake.snapshot()[146984]["status"], fake.snapshot()[146984]["repeat"]) == (
        "COMPLETED",
        0,
    )


async def test_an_episode_rating_is_not_taken_for_the_whole_entry(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    fake.add_entry(PART_2, status="CURRENT", progress=3, score=70)
    enqueue(runtime, "rating", episode(40), clock(), rating=20)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["score"] == 70
    assert runtime.store.outbox_counts()["done"] == 1


# --------------------------------------------------------------------------- show ids webhooks omit

JELLYFIN_SERIES = "0123456789abcdef0123456789abcdef"


def jellyfin_episode(number: int) -> MediaRef:
    """A Jellyfin webhook's episode: its own ids and the series' server id, no show ids."""
    return MediaRef(
        "episode",
        ids=Ids(tmdb="1857230"),
        show_title="Re:Zero",
        season=1,
        number=number,
        show_source_key=JELLYFIN_SERIES,
    )


def with_enricher(
    target: AniListTarget, runtime: Runtime, clock: FakeClock, server: FakeJellyfin | None
) -> None:
    """The target with the service's enricher: Jellyfin's series lookup when `server` is
    configured, nothing else (no services.trakt here)."""
    if server is None:
        target.enricher = Enricher(runtime.store, clock)
        return
    client = MediaServerClient(JellyfinConfig(url=server.url, api_key=Secret(API_KEY)))
    target.enricher = Enricher(runtime.store, clock, jellyfin=client, closers=[client.aclose])


# The episode's own ids: TMDB's, or the AniDB plugin's episode id (eid), which names no anime.
@pytest.mark.parametrize("own", [Ids(tmdb="1857230"), Ids(anidb="999001")], ids=["tmdb", "eid"])
async def test_a_jellyfin_play_gets_its_show_from_jellyfin_then_sets_progress(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
    start_fake: Callable[[FakeServer], FakeServer],
    own: Ids,
) -> None:
    server = start_fake(FakeJellyfin("jellyfin"))
    assert isinstance(server, FakeJellyfin)
    server.add_series(JELLYFIN_SERIES, "Re:Zero", Tmdb=str(REZERO))
    with_enricher(target, runtime, clock, server)
    episode = replace(jellyfin_episode(40), ids=own)
    enqueue(runtime, "play", episode, clock() - 3600, live=True, source="jellyfin")
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 3
    assert [r.path for r in server.requests] == [f"/Items/{JELLYFIN_SERIES}"]


async def test_a_jellyfin_play_without_jellyfin_configured_waits_naming_the_settings(
    runtime: Runtime, target: AniListTarget, worker: DeliveryWorker, clock: FakeClock
) -> None:
    with_enricher(target, runtime, clock, None)
    enqueue(runtime, "play", jellyfin_episode(40), clock() - 3600, live=True, source="jellyfin")
    await drain(worker, runtime)
    counts = runtime.store.outbox_counts()
    assert counts["done"] == 0 and counts["pending"] == 1  # not settled as "not anime"
    (error,) = [r[0] for r in runtime.store.db.execute("SELECT last_error FROM outbox")]
    assert "set services.jellyfin.url and services.jellyfin.api_key" in error


async def test_a_play_its_server_knows_no_id_for_is_skipped_as_not_anime_a_day_later(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    server = start_fake(FakeJellyfin("jellyfin"))
    assert isinstance(server, FakeJellyfin)
    server.add_series(JELLYFIN_SERIES, "A YouTube Channel")  # archived: no provider ids
    with_enricher(target, runtime, clock, server)
    video = replace(jellyfin_episode(3), ids=Ids(), show_title="A YouTube Channel")
    enqueue(runtime, "play", video, clock() - 60, live=True, source="jellyfin")
    await worker.pass_once(runtime)
    assert runtime.store.outbox_counts()["pending"] == 1  # the server may be identifying it
    clock.now += 3600 + 60
    await worker.pass_once(runtime)
    assert runtime.store.outbox_counts()["pending"] == 1  # tried again: still too soon to tell
    clock.now += DAY + 60
    await worker.pass_once(runtime)
    counts = runtime.store.outbox_counts()
    assert (counts["done"], counts["dead"]) == (1, 0)  # not a dead letter (and its alert)
    assert fake.snapshot() == {}


@pytest.mark.parametrize(
    "limits",
    [{"max_attempts": 2}, {"max_age": 3600.0}],
    ids=["max_attempts-2", "max_age-1h"],
)
async def test_a_play_its_server_knows_no_id_for_is_skipped_not_dead_at_its_last_try(
    runtime: Runtime,
    target: AniListTarget,
    fake: FakeAniList,
    clock: FakeClock,
    start_fake: Callable[[FakeServer], FakeServer],
    limits: dict[str, Any],
) -> None:
    # Small limits (allowed by the config) end the row before NOTHING_NAMED_AFTER: a home
    # video must still never become a dead letter, and its alert, for AniList.
    delivery = replace(runtime.config.delivery, **limits)
    target.config = delivery
    worker = DeliveryWorker(lambda _: [target], delivery)
    worker.targets = {target.name: target}
    server = start_fake(FakeJellyfin("jellyfin"))
    assert isinstance(server, FakeJellyfin)
    server.add_series(JELLYFIN_SERIES, "A YouTube Channel")  # archived: no provider ids
    with_enricher(target, runtime, clock, server)
    video = replace(jellyfin_episode(3), ids=Ids(), show_title="A YouTube Channel")
    enqueue(runtime, "play", video, clock() - 60, live=True, source="jellyfin")
    await worker.pass_once(runtime)
    assert runtime.store.outbox_counts()["pending"] == 1  # the server may be identifying it
    clock.now += 3600 + 60  # its last try: a failure now would be a dead letter
    await worker.pass_once(runtime)
    counts = runtime.store.outbox_counts()
    assert (counts["done"], counts["dead"]) == (1, 0)
    assert skipped(runtime) == [("A YouTube Channel", "", 1)]  # "skipped as not anime"
    assert fake.snapshot() == {}


async def test_a_play_waiting_for_its_series_to_be_identified_is_tried_again_within_the_hour(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    server = start_fake(FakeJellyfin("jellyfin"))
    assert isinstance(server, FakeJellyfin)
    series = server.add_series(JELLYFIN_SERIES, "Re:Zero")  # still being identified
    with_enricher(target, runtime, clock, server)
    enqueue(runtime, "play", jellyfin_episode(40), clock() - 60, live=True, source="jellyfin")
    await worker.pass_once(runtime)
    assert runtime.store.outbox_counts()["pending"] == 1
    series["ProviderIds"] = {"Tmdb": str(REZERO)}  # the server has identified it
    clock.now += 3600 + 60  # "retried, hourly at first", as `watchbridge status` says
    await worker.pass_once(runtime)
    assert fake.snapshot()[PART_2]["progress"] == 3


async def test_a_play_waiting_for_its_server_to_be_configured_is_not_skipped_a_day_later(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    with_enricher(target, runtime, clock, None)  # services.plex is not set
    movie = MediaRef(  # an older PMS: only its plex:// guid, no Guid[]
        "movie", ids=Ids(plex_guid="plex://movie/5d7768a696b655001fdc0e5c"), source_key="8372"
    )
    enqueue(runtime, "play", movie, clock() - 60, live=True, source="plex")
    await worker.pass_once(runtime)
    clock.now += DAY + 60
    await worker.pass_once(runtime)
    (status, error) = runtime.store.db.execute("SELECT status, last_error FROM outbox").fetchone()
    assert status == "pending" and "services.plex" in error  # still saying what to set


# storage.durability: normal may lose the last moments, never the note before a save.
@pytest.mark.parametrize("durability", ["full", "normal"])
async def test_a_rewatch_saved_just_before_a_crash_is_not_counted_again(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    one_episode = 5555
    show_999_on_anilist(fake, one_episode, episodes=1)
    finished = FuzzyDate.of(clock() - 30 * DAY).to_input()
    fake.add_entry(
        one_episode,
        episodes=1,
        status="COMPLETED",
        progress=1,
        completed_at=finished,
        updated_at=int(clock() - 30 * DAY),
    )
    enqueue(runtime, "play", episode(1, show=999), clock() - 60, live=True)  # a webhook's play
    claimed = runtime.store.claim(worker.worker_id, clock(), 10, ["anilist"])
    cut = UnsyncedWrites(runtime.store._conn)
    await target.deliver(claimed, clock())  # AniList saves it; the process dies before settling
    # A power cut now would not take the note of what the save was (it went to the disk first).
    assert not [write for write in cut.stop() if "'anilist-play-saves'" in write]
    runtime.store.release_claims(clock())  # the restart
    await worker.pass_once(runtime)
    assert fake.snapshot()[one_episode]["repeat"] == 1
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_rewatch_after_old_rows_were_pruned_is_counted(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # Row ids come back once old rows are pruned: the note of one rewatch is not another's.
    finished = FuzzyDate.of(clock() - 30 * DAY).to_input()
    for media, show, repeat in ((5555, 999, 0), (6666, 998, 1)):
        LATER[(str(show), 1, 1)] = (media, 1)
        fake.add_media(media, episodes=1)
        fake.add_entry(
            media, episodes=1, status="COMPLETED", progress=1, completed_at=finished, repeat=repeat
        )
    enqueue(runtime, "play", episode(1, show=999), clock() - 60, live=True)
    await worker.pass_once(runtime)
    clock.now += 8 * DAY
    runtime.store.prune(clock(), KEEP_DONE, KEEP_SESSIONS)
    enqueue(runtime, "play", episode(1, show=998), clock() - 60, live=True)
    await worker.pass_once(runtime)
    assert fake.snapshot()[6666]["repeat"] == 2


def without_inline_backoff(target: AniListTarget) -> None:
    target.client.http.retry = RetryPolicy(attempts=3, backoff=0.0)


def later(worker: DeliveryWorker, clock: FakeClock, seconds: float) -> None:
    """`seconds` on, past any hold of the target."""
    clock.now += seconds
    worker.holds.clear()


async def tried_until_dead_letters(
    worker: DeliveryWorker, runtime: Runtime, clock: FakeClock, count: int
) -> None:
    """Passes, each past the last try's longest backoff, until `count` rows are dead letters."""
    while len(runtime.store.dead_letters()) < count:
        later(worker, clock, runtime.config.delivery.max_backoff)
        await worker.pass_once(runtime)


def show_999_on_anilist(fake: FakeAniList, media: int, episodes: int, number: int = 1) -> None:
    """TMDB show 999's S1E`number` is episode `number` of AniList's `media` (of `episodes`),
    as the datasets will say."""
    LATER[("999", 1, number)] = (media, number)
    fake.add_media(media, episodes=episodes)


async def test_a_first_completion_saved_just_before_a_crash_is_not_a_rewatch(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    one_episode = 5555  # an OVA not on the list yet: the webhook's play completes it
    show_999_on_anilist(fake, one_episode, episodes=1)
    enqueue(runtime, "play", episode(1, show=999), clock() - 60, live=True)
    claimed = runtime.store.claim(worker.worker_id, clock(), 10, ["anilist"])
    await target.deliver(claimed, clock())  # AniList saves it; the process dies before settling
    runtime.store.release_claims(clock())  # the restart
    await worker.pass_once(runtime)
    assert (fake.snapshot()[one_episode]["status"], fake.snapshot()[one_episode]["repeat"]) == (
        "COMPLETED",
        0,
    )
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_movie_completion_whose_answer_was_lost_is_not_a_rewatch(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    without_inline_backoff(target)
    movie_entry = 5556
    fake.add_media(movie_entry, episodes=1)
    LATER[(None, None, None)] = (movie_entry, 1)
    movie = MediaRef("movie", ids=Ids(tmdb="99002"), title="An Anime Movie")
    from_webhook(runtime, MediaEvent("jellyfin", "stop", movie, played=True))
    fake.lose_answers("SaveMediaListEntry", 3)  # saved every time, never heard of
    await worker.pass_once(runtime)
    later(worker, clock, 3600)  # the hold is over
    await drain(worker, runtime)
    assert runtime.store.outbox_counts()["done"] == 1
    assert (fake.snapshot()[movie_entry]["status"], fake.snapshot()[movie_entry]["repeat"]) == (
        "COMPLETED",
        0,
    )


def refuse_the_completing_save(fake: FakeAniList) -> None:
    fake.fail_operation("SaveMediaListEntry", 3, 500, skip=1)  # the second save, and its retries


def lose_the_first_answer(fake: FakeAniList) -> None:
    fake.lose_answers("SaveMediaListEntry", 3)  # the first save lands, its answer never comes


@pytest.mark.parametrize("episodes", [1, 12])
@pytest.mark.parametrize("trouble", [refuse_the_completing_save, lose_the_first_answer])
async def test_a_new_entry_left_watching_every_episode_is_completed_when_tried_again(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
    episodes: int,
    trouble: Callable[[FakeAniList], None],
) -> None:
    without_inline_backoff(target)
    media = 5558
    show_999_on_anilist(fake, media, episodes=episodes, number=episodes)
    enqueue(runtime, "play", episode(episodes, show=999), clock() - 60, live=True)
    trouble(fake)
    await worker.pass_once(runtime)
    assert fake.snapshot()[media]["status"] == "CURRENT"
    later(worker, clock, 3600)
    await drain(worker, runtime)
    entry = fake.snapshot()[media]
    assert (entry["status"], entry["progress"]) == ("COMPLETED", episodes)
    assert runtime.store.outbox_counts()["done"] == 1


async def test_a_save_anilist_always_fails_ends_as_a_dead_letter_and_holds_no_later_play(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    without_inline_backoff(target)
    fake.fail_operation("SaveMediaListEntry", 10**6, 500, media_id=PART_2)
    enqueue(runtime, "play", episode(40), clock() - 3600, live=True)
    other = 5557
    show_999_on_anilist(fake, other, episodes=12)
    enqueue(runtime, "play", episode(1, show=999), clock() - 60, live=True)
    for _ in range(5):  # the failing one backs off further each time: the other gets through
        await worker.pass_once(runtime)
        later(worker, clock, runtime.config.delivery.retry_after + 1)
    assert fake.snapshot()[other]["progress"] == 1
    for _ in range(24 * 4):  # the failing one backs off, and gives up
        later(worker, clock, 3600)
        await worker.pass_once(runtime)
    counts = runtime.store.outbox_counts()
    assert (counts["done"], counts["dead"], counts["pending"]) == (1, 1, 0)


async def test_a_read_anilist_fails_spends_no_attempt_of_the_row_it_held(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    without_inline_backoff(target)
    fake.add_entry(PART_2, status="CURRENT", progress=3)
    season = MediaRef("season", show_ids=Ids(tmdb=str(REZERO)), season=1)
    enqueue(runtime, "rating", season, clock() - 60, rating=80)
    fake.fail_operation("Viewer", 10**6, 500)  # the score format cannot be read
    for _ in range(runtime.config.delivery.max_attempts + 2):
        later(worker, clock, 3600)
        await worker.pass_once(runtime)
    ((attempts, status),) = runtime.store.db.execute("SELECT attempts, status FROM outbox")
    assert (attempts, status) == (0, "pending")  # AniList is failing, not this row


SOMETHING_ELSE = (
    "something else may answer for {url} (a DNS filter's block page, a captive portal, a "
    "proxy), or services.anilist.api_url names another address"
)
PAGE = "a web page (text/html), not AniList's JSON"
GATEWAYS_JSON = "JSON that is not AniList's (neither data nor errors)"


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (200, "<html><body>Access to this site is blocked</body></html>", PAGE),
        (400, "<html><body><h1>400 Bad Request</h1> nginx</body></html>", PAGE),
        (403, "<html><body>Access to this site is blocked</body></html>", PAGE),
        (404, "<html><body><h1>404 Not Found</h1> nginx</body></html>", PAGE),
        (200, {"message": "Forbidden"}, GATEWAYS_JSON),
        (400, {"error": "bad request"}, GATEWAYS_JSON),
        (403, {"message": "Forbidden"}, GATEWAYS_JSON),
        (404, {"message": "no Route matched with those values"}, GATEWAYS_JSON),
    ],
)
async def test_a_page_answered_in_place_of_anilists_json_spends_no_attempt_and_loses_no_play(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
    status: int,
    body: str | dict[str, str],
    said: str,
) -> None:
    # Something on the way (a captive portal, a DNS filter's block page, a proxy, a gateway)
    # answers for graphql.anilist.co with a page of its own, whatever its status: AniList
    # never saw the requests, whose rows wait as in an outage and never end as dead letters.
    without_inline_backoff(target)
    fake.fail_next(10**6, status, body=body, route="POST /")
    enqueue(runtime, "play", episode(40), clock() - 3600, live=True)
    for _ in range(runtime.config.delivery.max_attempts + 2):
        later(worker, clock, 3600)
        await worker.pass_once(runtime)
    ((attempts, state, error),) = runtime.store.db.execute(
        "SELECT attempts, status, last_error FROM outbox"
    )
    assert (attempts, state) == (0, "pending")
    assert runtime.store.dead_letters() == []
    assert error == (
        f"AniList: answered HTTP {status} with {said}: {SOMETHING_ELSE.format(url=fake.url)}"
    )
    fake.clear_knobs()
    later(worker, clock, 6 * 3600)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 3
    assert runtime.store.outbox_counts()["done"] == 1


def cloudflares_page(fake: FakeAniList, status: int) -> None:
    fake.cloudflare_next(10**6, status=status)


def gateways_json(fake: FakeAniList, status: int) -> None:
    fake.fail_next(10**6, status, body={"message": "Forbidden"}, route="POST /")


@pytest.mark.parametrize("alert_urls", ["receiver"], indirect=True)
@pytest.mark.parametrize("status", [200, 403, 404])
@pytest.mark.parametrize("page", [cloudflares_page, gateways_json])
async def test_a_page_answered_in_anilists_place_leaves_its_outage_alert_open(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
    receiver: AlertReceiver,
    status: int,
    page: Callable[[FakeAniList, int], None],
) -> None:
    # AniList is down ("temporarily disabled", its own answer) long enough for an alert; then
    # Cloudflare or a gateway answers in its place: AniList itself has not answered yet.
    unreachable = "watchbridge: AniList unreachable"
    fake.disabled = True
    enqueue(runtime, "play", episode(40), clock() - 60, live=True)
    for _ in range(5):
        await worker.pass_once(runtime)
        clock.now += 301
    assert receiver.titles() == [unreachable]
    fake.disabled = False
    page(fake, status)
    for _ in range(3):
        clock.now += 601
        await worker.pass_once(runtime)
    assert receiver.titles() == [unreachable]
    assert runtime.notifier.raised("service_unreachable", "anilist")
    assert runtime.store.dead_letters() == []
    fake.clear_knobs()  # AniList answers again: the play goes, and the alert is resolved
    for _ in range(2):
        clock.now += 601
        await worker.pass_once(runtime)
    assert receiver.titles() == [unreachable, f"Resolved: {unreachable}"]
    assert fake.snapshot()[PART_2]["progress"] == 3


@pytest.mark.parametrize("alert_urls", ["receiver"], indirect=True)
async def test_the_outage_alert_and_its_resolved_name_anilist_as_the_user_knows_it(
    runtime: Runtime,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    # The alert's title said "AniList unreachable", its text "anilist has not taken
    # deliveries" and its "Resolved" "anilist deliveries are flowing again": the config's key.
    # (Their words changed since: tests/test_alert_texts.py has them.)
    fake.fail_next(10**6, 503, None, "upstream down")
    enqueue(runtime, "play", episode(40), clock() - 60, live=True)
    for _ in range(5):
        await worker.pass_once(runtime)
        clock.now += 301
    (told,) = receiver.messages
    assert told["message"].startswith("Plays and ratings for AniList are waiting since ")
    fake.clear_knobs()
    clock.now += 301
    await worker.pass_once(runtime)
    assert fake.snapshot()[PART_2]["progress"] == 3
    assert receiver.messages[-1]["message"].startswith("AniList is taking plays and ratings")


async def test_a_binge_held_through_an_anilist_outage_is_one_viewing_not_a_rewatch(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # AniList "temporarily disabled" for six hours (reference anilist.md section 3) while a
    # first viewing of 12 episodes goes on: held plays go out in no particular order after it.
    fake.disabled = True
    start, watched = clock(), 0
    for minute in range(6 * 60):  # the service's worker probing every minute
        clock.now = start + minute * 60
        if minute % 23 == 0 and watched < 12:
            watched += 1
            enqueue(runtime, "play", episode(37 + watched), clock() - 30, live=True)  # S1E38..
        await worker.pass_once(runtime)
    fake.disabled = False
    for _ in range(30):
        clock.now += 900
        await worker.pass_once(runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("COMPLETED", 12, 0)


async def test_a_rewatch_held_through_an_outage_starts_though_the_entry_was_scored_meanwhile(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    finished = FuzzyDate.of(clock() - 30 * DAY).to_input()
    entry = fake.add_entry(
        PART_2, status="COMPLETED", progress=12, completed_at=finished, updated_at=int(clock())
    )
    fake.disabled = True
    enqueue(runtime, "play", episode(38), clock() - 30, live=True)  # the rewatch's episode 1
    await drain(worker, runtime)
    clock.now += 1200
    entry.score, entry.updated_at = 80, int(clock.now)  # scored on the website meanwhile
    fake.disabled = False
    clock.now += 900
    await worker.pass_once(runtime)
    snapshot = fake.snapshot()[PART_2]
    assert (snapshot["status"], snapshot["progress"]) == ("REPEATING", 1)


async def test_a_finish_whose_answer_was_lost_still_keeps_a_late_episode_1_from_a_rewatch(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    # The last episode's save lands as AniList comes back, its answer is lost; tried again,
    # the row finds it saved. Episode 1 of the same first viewing, held longer, comes after.
    without_inline_backoff(target)
    fake.lose_answers("SaveMediaListEntry", 3)
    enqueue(runtime, "play", episode(49), clock() - 30, live=True)  # episode 12
    await worker.pass_once(runtime)
    later(worker, clock, 3600)
    await drain(worker, runtime)
    enqueue(runtime, "play", episode(38), clock() - 9 * 3600, live=True)  # episode 1
    later(worker, clock, 60)
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("COMPLETED", 12, 0)


async def test_a_season_marked_played_in_no_order_is_one_viewing_not_a_rewatch(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # Jellyfin marks a season's episodes in no order, one webhook each, within a second.
    start = clock() - 10
    for i, number in enumerate((12, 5, 1, 8, 3, 10, 2, 11, 4, 9, 6, 7)):
        clock.now = start + i * 0.05
        from_webhook(runtime, MediaEvent("jellyfin", "played", episode(37 + number), played=True))
    clock.now = fake.now()
    await drain(worker, runtime)
    entry = fake.snapshot()[PART_2]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("COMPLETED", 12, 0)


async def test_a_short_one_episode_title_watched_twice_in_a_row_counts_a_rewatch(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    short = 5557  # a 4-minute anime short
    LATER[("997", 1, 1)] = (short, 1)
    fake.add_media(short, episodes=1)
    first = clock() - 5 * 60
    enqueue(runtime, "play", episode(1, show=997), first, live=True)
    await drain(worker, runtime)
    enqueue(runtime, "play", episode(1, show=997), first + 4 * 60, live=True)
    await drain(worker, runtime)
    assert fake.snapshot()[short]["repeat"] == 1


async def test_a_legacy_agent_anime_movie_known_by_imdb_only_reaches_anilist(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    # A household without Trakt: the service's enricher (no Trakt search) sits in front of
    # the mapping, whose datasets know Princess Mononoke by its IMDb id (AniList 164).
    with_real_datasets(target)
    with_enricher(target, runtime, clock, None)
    fake.add_media(164, episodes=1)
    mononoke = MediaRef("movie", ids=Ids(imdb="tt0119698"), title="Princess Mononoke")
    enqueue(runtime, "play", mononoke, clock() - 60, live=True, source="plex")
    await drain(worker, runtime)
    assert fake.snapshot().get(164, {}).get("status") == "COMPLETED"


async def test_an_anime_movie_a_dataset_knows_by_tmdb_only_still_gets_its_tmdb_id_from_trakt(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    # Review s32 (4fbd8e5): a Plex legacy-agent movie names itself by IMDb id only. The
    # dataset entry of this anime film carries its TMDB id, not its IMDb id (common in
    # Fribb/anibridge rows). With services.trakt the enricher's id search gives the TMDB id;
    # since anime_ready takes an IMDb id as "ready", nobody asks and the film is settled
    # as "not anime" for good.
    spirited_away = 199

    def by_tmdb_only(item: MediaRef) -> tuple[int, int] | Unmatched:
        if item.kind == "movie" and item.ids.tmdb == "129":
            return spirited_away, 1
        return Unmatched("in no mapping dataset range", "unknown")

    async def reverse() -> Reverse:
        return by_tmdb_only

    async def search(id_type: str, value: str, kind: str) -> list[dict[str, Any]]:
        if (id_type, value) != ("imdb", "tt0245429"):
            return []
        ids = {"trakt": 1, "slug": "spirited-away-2001", "imdb": "tt0245429", "tmdb": 129}
        movie = {"title": "Spirited Away", "year": 2001, "ids": ids}
        return [{"type": "movie", "score": None, "movie": movie}]

    target.reverse = reverse
    target.enricher = Enricher(runtime.store, clock, search=search)
    fake.add_media(spirited_away, episodes=1)
    film = MediaRef("movie", ids=Ids(imdb="tt0245429"), title="Spirited Away", year=2001)
    enqueue(runtime, "play", film, clock() - 60, live=True, source="plex")
    await drain(worker, runtime)
    assert fake.snapshot().get(spirited_away, {}).get("status") == "COMPLETED"


async def test_a_hama_tvdb3_episode_counts_on_its_anime_by_its_absolute_number(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    # HAMA's tvdb3 mode (tvdb3-81797/9/164): TheTVDB's season, One Piece's absolute number.
    with_real_datasets(target)
    fake.add_media(21, episodes=None)
    tvdb3 = MediaRef("episode", show_ids=Ids(tvdb="81797"), season=9, absolute=164)
    enqueue(runtime, "play", tvdb3, clock() - 60, live=True, source="plex")
    await drain(worker, runtime)
    assert fake.snapshot().get(21, {}).get("progress") == 164
    assert unmatched_records(runtime.store, ["me"]) == []


async def test_a_webhook_episode_with_an_absolute_number_and_no_season_counts_by_it(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    # A generic webhook's item.absolute with an item.number but no item.season: the number
    # names no episode without its season; the absolute number does.
    with_real_datasets(target)
    fake.add_media(21, episodes=None)
    played = MediaRef("episode", show_ids=Ids(tvdb="81797"), number=4, absolute=164)
    enqueue(runtime, "play", played, clock() - 60, live=True, source="generic")
    await drain(worker, runtime)
    assert fake.snapshot().get(21, {}).get("progress") == 164
    assert unmatched_records(runtime.store, ["me"]) == []


ONE_PIECE = 37854  # TMDB; AniList 21 numbers its episodes 1.. absolutely (AniDB)


@pytest.mark.parametrize(
    ("ids", "season", "number", "found"),
    [
        (Ids(tmdb=str(ONE_PIECE)), 21, 1071, (21, 1071)),  # absolute, inside TMDB S21
        (Ids(tmdb=str(ONE_PIECE)), 2, 70, (21, 70)),  # TMDB S2 holds absolute 62-77
        (Ids(tmdb=str(ONE_PIECE)), 2, 5, (21, 66)),  # numbered within the season: as before
        (Ids(tvdb="81797"), 21, 1071, (21, 1071)),  # TVDB S21 holds absolute 892-1085
        (Ids(tvdb="81797"), 21, 180, (21, 1071)),
        (Ids(tvdb="79895"), 3, 120, (918, 120)),  # Gintama: TVDB S3 holds 100-150
    ],
)
def test_an_episode_numbered_absolutely_inside_its_season_is_placed_by_that_number(
    ids: Ids, season: int, number: int, found: tuple[int, int]
) -> None:
    item = MediaRef("episode", show_ids=ids, show_title="One Piece", season=season, number=number)
    assert sample_reverse()(item) == found


def test_an_absolute_number_of_a_show_mapped_by_season_is_not_told_as_a_new_season() -> None:
    # Attack on Titan's TVDB id and absolute episode 77 alone (no TMDB id, no Serializd to
    # count it): the datasets map the show by season, which no refresh changes. The reason
    # said "not this season yet (new seasons take days or weeks to appear)".
    item = MediaRef("episode", show_ids=Ids(tvdb="267440"), show_title="AoT", absolute=77)
    why = sample_reverse()(item)
    assert isinstance(why, Unmatched)
    assert "not this season yet" not in why.reason, why.reason
    assert "by season, not by absolute episode" in why.reason, why.reason
    assert "season and episode number" in why.reason and "override" in why.reason


def test_an_episode_of_an_absolutely_numbered_show_without_a_season_list_says_what_to_do() -> None:
    item = MediaRef(
        "episode", show_ids=Ids(tmdb=str(ONE_PIECE)), show_title="One Piece", season=21, number=180
    )
    why = sample_reverse()(item)
    assert isinstance(why, Unmatched) and why.code == "absolute"
    for fix in ("services.trakt or services.serializd", "number the show's episodes absolutely",
                "mapping_overrides"):  # fmt: skip
        assert fix in why.reason


async def test_one_piece_numbered_absolutely_in_its_season_counts_without_trakt_or_serializd(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    with_real_datasets(target)  # and no season list: the profile has AniList only
    fake.add_media(21, episodes=None)
    played = MediaRef("episode", show_ids=Ids(tmdb=str(ONE_PIECE)), show_title="One Piece",
                      season=21, number=1071)  # fmt: skip
    enqueue(runtime, "play", played, clock() - 60, live=True, source="plex")
    await drain(worker, runtime)
    assert fake.snapshot().get(21, {}).get("progress") == 1071
    assert runtime.store.outbox_counts()["done"] == 1
    assert unmatched_records(runtime.store, ["me"]) == []


async def test_a_row_that_cannot_be_read_is_a_dead_letter_told_as_a_bug_to_report(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock
) -> None:
    damaged = {"item": {"show_title": "Re:Zero", "season": 2, "number": 40}, "at": clock()}
    row = NewOutboxRow("anilist", "me", "play", damaged, "me:anilist:damaged", "me:damaged")
    assert runtime.store.enqueue([row], clock()) == 1
    await drain(worker, runtime)
    (dead,) = runtime.store.dead_letters()
    assert dead.last_error is not None
    assert dead.last_error.startswith(
        "an unexpected error in watchbridge, a bug: what it stored of this play for AniList"
        " cannot be read"
        " (TypeError: "
    )
    assert dead.last_error.endswith("please report it (a retry fails the same way)")


async def removal_given_up_after_a_play(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    """Episode 5 played (AniList progress 5), then unwatched on the other side: AniList fails
    the removal's save until it gives up, a dead letter of AniList's own failure."""
    without_inline_backoff(target)
    enqueue(runtime, "play", episode(42), clock() - 3 * DAY, live=True)
    await drain(worker, runtime)
    assert fake.snapshot()[PART_2]["progress"] == 5
    fake.fail_operation("SaveMediaListEntry", 10**6, 500, media_id=PART_2)
    enqueue(runtime, "remove_play", episode(42), clock() - 2 * DAY, link="plex-anilist")
    await tried_until_dead_letters(worker, runtime, clock, 1)
    (dead,) = runtime.store.dead_letters()
    assert dead.action == "remove_play"
    fake.clear_knobs()


@pytest.mark.parametrize("newer", [43, 42], ids=["next-episode", "same-episode-again"])
@pytest.mark.parametrize("how", ["by-itself", "retried"])
async def test_a_removal_going_again_after_a_newer_play_of_the_show_never_lowers_below_it(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
    newer: int,
    how: str,
) -> None:
    # The order: play ep 5 -> its removal fails and dies -> a newer play (ep 6, or ep 5
    # watched again) delivered -> the dead removal goes again (by itself: at once when AniList
    # took a write, ep 6's; ep 5 again writes nothing, and it goes alone an hour after it gave
    # up; or by `watchbridge deadletters retry`). It was decided before that play: the play is
    # the user's latest word, and progress stays at least where it put it.
    await removal_given_up_after_a_play(runtime, target, worker, fake, clock)
    enqueue(runtime, "play", episode(newer), clock() - 60, live=True)
    await drain(worker, runtime)
    if how == "retried":
        retry_dead_letters(runtime.config, runtime.store, None, clock())
    else:
        later(worker, clock, PROBE_FIRST)
    await drain(worker, runtime)
    assert runtime.store.dead_letters() == []
    assert fake.snapshot()[PART_2]["progress"] == newer - 37


async def test_dead_letters_of_anilists_failures_go_once_more_after_a_probe_on_an_idle_setup(
    runtime: Runtime,
    target: AniListTarget,
    worker: DeliveryWorker,
    fake: FakeAniList,
    clock: FakeClock,
) -> None:
    # AniList failed every save until two plays gave up; nobody watches anything after. An
    # hour after, the oldest goes alone: through (a save AniList took, not a read), the other
    # goes with it. Nothing is sent before that hour.
    without_inline_backoff(target)
    other = 5557
    show_999_on_anilist(fake, other, episodes=12)
    fake.fail_operation("SaveMediaListEntry", 10**6, 500)
    enqueue(runtime, "play", episode(40), clock() - 3600, live=True)
    enqueue(runtime, "play", episode(1, show=999), clock() - 60, live=True)
    await tried_until_dead_letters(worker, runtime, clock, 2)
    fake.clear_knobs()
    sent = len(fake.operations)
    later(worker, clock, 1800)
    await drain(worker, runtime)
    assert len(fake.operations) == sent  # not yet: an hour after they gave up
    later(worker, clock, 1800)
    await worker.pass_once(runtime)  # the probe through: the other is queued with it
    assert runtime.store.dead_letters() == []
    await drain(worker, runtime)
    assert runtime.store.outbox_counts()["done"] == 2
    assert fake.snapshot()[PART_2]["progress"] == 3
    assert fake.snapshot()[other]["progress"] == 1


async def test_a_stop_between_a_new_entrys_save_and_the_save_completing_it_completes_it_once(
    runtime: Runtime, worker: DeliveryWorker, fake: FakeAniList, clock: FakeClock
) -> None:
    # The last episode's play adds the entry (a first save, which lands) and completes it (a
    # second); the stop keeps the second from going. The next start completes the entry,
    # as a first viewing: not a rewatch counted, nor the entry left watching.
    media = 5559
    show_999_on_anilist(fake, media, episodes=12, number=12)
    enqueue(runtime, "play", episode(12, show=999), clock() - 60, live=True)
    answering = fake.hold_operation("SaveMediaListEntry")
    stop = asyncio.Event()
    service = DeliveryWorker(lambda _: [anilist_target(runtime, clock)], runtime.config.delivery)
    running = asyncio.create_task(service.run(runtime, stop))
    await until(lambda: "SaveMediaListEntry" in fake.operations)
    stop.set()
    answering.set()
    await running
    assert fake.operations.count("SaveMediaListEntry") == 1
    assert (fake.snapshot()[media]["status"], fake.snapshot()[media]["progress"]) == ("CURRENT", 12)
    later(worker, clock, runtime.config.delivery.retry_after + 1)
    await drain(worker, runtime)
    entry = fake.snapshot()[media]
    assert (entry["status"], entry["progress"], entry["repeat"]) == ("COMPLETED", 12, 0)
    assert runtime.store.outbox_counts()["done"] == 1
