"""A Jellyfin play (its episode named by its TVDB id only, services.jellyfin not set) queued for
Trakt and Serializd while the trakt-serializd link runs: one side has it, the other's row is
still on its way (held by a Trakt outage, or waiting for the show's TMDB id). The link must
not copy that play across: each side ends with it once.

Driven by hand: the worker pass by pass and the link's runs, the fakes over real HTTP, one
hand-moved clock for watchbridge and both fakes."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.receiver import FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt
from tests.ingest_samples import sample_json
from tests.linkrig import BB, LINK, use_fast_readers
from tests.test_delivery import close_targets, worker_for
from watchbridge.app import Runtime
from watchbridge.config import parse_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.http import Pacer
from watchbridge.ingest import parse
from watchbridge.model import Accepted, Ids, MediaRef, ref_from_dict
from watchbridge.reconcile import Action
from watchbridge.sync import outbox_rows, run_link
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

DAY = 86400.0
JELLYFIN_SERIES = "1f0e2d3c4b5a69788796a5b4c3d2e1f0"


class House:
    """Profile `me` on Trakt and Serializd, its Jellyfin plays, the link and the worker."""

    def __init__(
        self,
        runtime: Runtime,
        worker: DeliveryWorker,
        clock: FakeClock,
        trakt: FakeTrakt,
        serializd: FakeSerializd,
    ) -> None:
        self.runtime, self.worker, self.clock = runtime, worker, clock
        self.trakt, self.serializd = trakt, serializd

    def advance(self, seconds: float) -> None:
        for clock in (self.clock, self.trakt, self.serializd):
            clock.advance(seconds)

    def jellyfin_play(self, season: int, number: int, **fields: Any) -> None:
        """Jellyfin's PlaybackStop (completed) of Breaking Bad `season`x`number`, naming the
        episode by its TVDB id alone (as many libraries do) and its series by Jellyfin's id;
        `fields`: any other of its fields (None: left out)."""
        episode = self.trakt.shows[0].seasons[season].episodes[number]
        payload: dict[str, Any] = sample_json("jellyfin", "playback_stop_episode_completed.json")
        payload |= {
            "NotificationUsername": "me",
            "ItemId": f"{episode.trakt:032x}",
            "SeriesId": JELLYFIN_SERIES,
            "SeasonNumber": season,
            "EpisodeNumber": number,
            "Name": f"Episode {number}",
            "Provider_tvdb": str(episode.tvdb),
            "Provider_imdb": "",
            "Provider_tmdb": "",
            "UtcTimestamp": time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(self.clock())),
        } | fields
        payload = {name: value for name, value in payload.items() if value is not None}
        result = parse("jellyfin", json.dumps(payload).encode(), "application/json")
        assert isinstance(result, Accepted)
        for event in result.events:
            assert self.runtime.store.ingest(ingest_job(self.runtime, "me", event, result.document))

    async def deliver(self, passes: int = 4) -> None:
        for _ in range(passes):
            await self.worker.pass_once(self.runtime)

    async def settle(self) -> None:
        """Trakt answers again; the hourly wait of a row held meanwhile runs out, it goes, and
        two later runs of the link find nothing left to copy."""
        self.trakt.clear_knobs()
        self.advance(3700)
        await self.deliver()
        for _ in range(2):
            self.advance(120)
            await self.sync()
            await self.deliver()

    async def sync(self) -> int:
        config = self.runtime.config
        result = await run_link(config, self.runtime.store, LINK, yes=True, clock=self.clock)
        return result.queued

    def trakt_plays(self, season: int, number: int) -> int:
        return sum(
            1
            for e in self.trakt.history()
            if (getattr(e.item, "season", None), getattr(e.item, "number", None))
            == (season, number)
        )

    def diary_entries(self, season: int, number: int) -> int:
        season_id = self.serializd.shows[BB].seasons[season].id
        return sum(
            1
            for r in self.serializd.diary()
            if r.is_log and (r.season_id, r.episode_number) == (season_id, number)
        )


@pytest.fixture
async def house(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[House]:
    use_fast_readers(monkeypatch)
    clock = FakeClock(time.time() // 60 * 60 + 5)
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    users: {{jellyfin: [me]}}
    accounts:
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  {LINK}: {{services: [trakt, serializd], first_run: apply}}
""",
        tmp_path / "watchbridge.yaml",
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=clock())
    for fake in (trakt, serializd):
        fake.advance(clock() - fake.now())
    worker = worker_for(runtime)
    for target in worker.targets.values():
        target.client.http.pacers[""] = Pacer()  # type: ignore[attr-defined]  # id searches
    house = House(runtime, worker, clock, trakt, serializd)
    # A play a week ago, on both sides by the link's first run: the link holds state.
    week_ago = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(clock() - 7 * DAY))
    trakt.add_history(trakt.shows[0].seasons[1].episodes[1], week_ago)
    await house.sync()
    await house.deliver()
    assert (house.trakt_plays(1, 1), house.diary_entries(1, 1)) == (1, 1)
    try:
        yield house
    finally:
        await close_targets(worker)
        runtime.close()


async def test_a_play_whose_serializd_row_waits_out_a_trakt_outage_is_copied_by_nobody(
    house: House, trakt: FakeTrakt
) -> None:
    trakt.fail_next(10_000, 503)  # Trakt is down: its writes and its id search
    house.jellyfin_play(1, 2)
    await house.deliver()  # Trakt's row held; Serializd's cannot find the show's TMDB id
    house.advance(120)
    trakt.clear_knobs()  # Trakt is back, its id search a while later
    trakt.fail_next(10_000, 503, route="/search/{id_type}/{id}")
    house.advance(600)
    await house.deliver()  # Trakt's row lands; Serializd's still waits
    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (1, 0)

    # Trakt has it, Serializd not yet: its row is on its way, and the link copies nothing.
    assert await house.sync() == 0
    await house.deliver()
    await house.settle()  # however long Serializd's row waited, it goes

    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (1, 1)
    assert house.runtime.store.outbox_counts().get("pending", 0) == 0


def link_copies(house: House) -> list[tuple[str, str]]:
    """(target, item key) of each play the link queued, oldest first."""
    rows = house.runtime.store._query(
        "SELECT target, payload FROM outbox WHERE action = 'play' ORDER BY id", ()
    )
    payloads = [(str(r["target"]), json.loads(r["payload"])) for r in rows]
    return [(t, ref_from_dict(p["item"]).key()) for t, p in payloads if p.get("link")]


def history_reads(trakt: FakeTrakt) -> int:
    return trakt.count("GET", "/sync/history") + trakt.count("GET", "/sync/history/{type}")


async def test_a_run_that_reads_no_trakt_history_still_knows_the_waiting_row_s_episode(
    house: House, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    # As above, Serializd's row waiting for the show's TMDB id after Trakt's outage; then the
    # user logs another episode on Serializd. That run reads Serializd, not Trakt's history
    # (unchanged): the episode Trakt holds is still known by its own ids, the row's only ones.
    trakt.fail_next(10_000, 503)
    house.jellyfin_play(1, 2)
    await house.deliver()
    house.advance(120)
    trakt.clear_knobs()
    trakt.fail_next(10_000, 503, route="/search/{id_type}/{id}")
    house.advance(600)
    await house.deliver()
    assert await house.sync() == 0
    house.advance(120)
    serializd.log_entry(None, BB, 1, 5)
    house.advance(120)
    copies, reads = len(link_copies(house)), history_reads(trakt)

    await house.sync()

    assert history_reads(trakt) == reads
    assert link_copies(house)[copies:] == [("trakt", episode_key("1396", 1, 5))]
    await house.settle()
    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (1, 1)
    assert (house.trakt_plays(1, 5), house.diary_entries(1, 5)) == (1, 1)


async def test_a_play_on_serializd_whose_trakt_row_is_held_is_not_copied_to_trakt(
    house: House, trakt: FakeTrakt
) -> None:
    # Trakt refuses writes for a while (its id search answers): Serializd's row finds the
    # show's TMDB id and lands; Trakt's waits. The link's run meanwhile must not take
    # Serializd's entry for a play to copy to Trakt: Trakt's row goes in the same batch as
    # the copy and Trakt takes both, then the second Trakt play went back to Serializd.
    for write in ("POST /scrobble/stop", "POST /sync/history"):
        trakt.fail_next(10_000, 503, route=write)
    house.jellyfin_play(1, 3)
    await house.deliver()
    assert (house.trakt_plays(1, 3), house.diary_entries(1, 3)) == (0, 1)
    trakt.clear_knobs()

    await house.sync()  # Serializd has it, Trakt's row is on its way: nothing to copy
    for _ in range(3):
        house.advance(300)
        await house.deliver()
        await house.sync()
    await house.deliver()

    assert (house.trakt_plays(1, 3), house.diary_entries(1, 3)) == (1, 1)


def episode_key(show_tmdb: str, season: int, number: int) -> str:
    """A link's item key of an episode (its show's TMDB id and its numbers)."""
    return MediaRef(
        kind="episode", show_ids=Ids(tmdb=show_tmdb), season=season, number=number
    ).key()


def serializd_row_error(house: House) -> str:
    (row,) = house.runtime.store._query(
        "SELECT last_error FROM outbox WHERE target = 'serializd' AND status = 'pending'", ()
    )
    return str(row["last_error"])


async def test_a_play_whose_show_lookup_failed_in_a_trakt_outage_says_so_and_is_retried_soon(
    house: House, trakt: FakeTrakt
) -> None:
    # Not "set services.jellyfin.url ...": Trakt's id search would have found the show's TMDB
    # id, it could not be asked. Tried again within minutes, not an hour.
    trakt.fail_next(10_000, 503)
    house.jellyfin_play(1, 4)
    await house.deliver(passes=1)
    told = serializd_row_error(house)
    assert told.startswith("Trakt's id search failed: answered 503"), told
    assert "services.jellyfin" not in told and "tried again" in told
    assert house.runtime.store.unmatched_count() == 0
    trakt.clear_knobs()
    house.advance(600)
    await house.deliver()
    assert house.diary_entries(1, 4) == 1


def serializd_row(house: House) -> tuple[str, int, int | None]:
    """The Serializd row's status, attempts spent and time it has been failing since."""
    (row,) = house.runtime.store._query(
        "SELECT status, attempts, failing_since FROM outbox WHERE target = 'serializd'"
        " AND action = 'play' AND id = (SELECT MAX(id) FROM outbox WHERE target = 'serializd')",
        (),
    )
    return str(row["status"]), int(row["attempts"]), row["failing_since"]


async def test_a_play_waiting_for_trakts_id_search_waits_out_a_trakt_outage_past_max_age(
    house: House, trakt: FakeTrakt
) -> None:
    # Trakt's id search is down for nine days (past delivery.max_age, seven); Serializd answers
    # all along. The play that needs the show's TMDB id from that search waits as Trakt's own
    # deliveries do: no try spent, no dead letter, and it goes once the search answers.
    trakt.fail_next(10**6, 503, route="/search/{id_type}/{id}")
    house.jellyfin_play(1, 2)
    for _ in range(9 * 24):
        await house.deliver(passes=1)
        house.advance(3600)
    assert serializd_row(house) == ("pending", 0, None)
    told = serializd_row_error(house)
    assert told.startswith("Trakt's id search failed: answered 503"), told
    assert "waits for Trakt's id search to answer, without giving up" in told, told
    # Asked again every few minutes at most while it stays down, not each pass's every row.
    searches = trakt.count("GET", "/search/{id_type}/{id}")
    trakt.clear_knobs()
    house.advance(300)
    await house.deliver()
    assert house.diary_entries(1, 2) == 1
    assert house.runtime.store.outbox_counts().get("dead", 0) == 0
    assert searches < 9 * 24 * 4, searches


async def test_plays_waiting_for_trakts_id_search_ask_it_once_while_it_is_down(
    house: House, trakt: FakeTrakt
) -> None:
    # Three plays of a show whose TMDB id only Trakt's id search gives, Trakt down (its own
    # deliveries held): the first search's failure holds the others without each asking again.
    trakt.fail_next(10**6, 503)
    house.jellyfin_play(1, 2)
    await house.deliver(passes=1)
    one = trakt.count("GET", "/search/{id_type}/{id}")
    for number in (3, 4, 5):
        house.jellyfin_play(1, number)
    await house.deliver(passes=1)
    assert trakt.count("GET", "/search/{id_type}/{id}") == one
    # `watchbridge status` and the status page: Serializd's plays wait for Trakt's search.
    (waiting,) = [w for w in house.runtime.store.status().waiting if w.target == "serializd"]
    assert waiting.rows == 4 and waiting.reason.startswith("Trakt's id search failed"), waiting


def queue_link_copy(house: House, season: int, number: int, at: float) -> None:
    """Queue the trakt-serializd link's copy to Trakt of a play of Breaking Bad
    `season`x`number` at `at`, as a run that took it for new on Serializd does."""
    copy = episode_key(show_tmdb="1396", season=season, number=number)
    action = Action("add_play", "trakt", copy, "new on serializd", at=at, source="s:1")
    rows, _ = outbox_rows(LINK, "me", (action,))
    assert house.runtime.store.enqueue(rows, house.clock()) == 1


async def test_a_link_copy_of_a_held_trakt_row_s_play_is_not_a_second_play_on_trakt(
    house: House, trakt: FakeTrakt
) -> None:
    # Trakt's safety net when a link copies a play whose webhook row is still on its way: the
    # row names the episode by its TVDB id alone, the link's copy by its show's TMDB id. The
    # id search Serializd's delivery made says they are one episode: Trakt gets one play.
    for write in ("POST /scrobble/stop", "POST /sync/history"):
        trakt.fail_next(10_000, 503, route=write)
    at = house.clock()
    house.jellyfin_play(1, 3)
    await house.deliver()  # Serializd's row lands (its id search is kept); Trakt's is held
    assert (house.trakt_plays(1, 3), house.diary_entries(1, 3)) == (0, 1)
    queue_link_copy(house, 1, 3, at - 20)
    trakt.clear_knobs()
    house.advance(300)
    await house.deliver()  # the webhook's row goes first (a live stop), then the copy

    assert house.trakt_plays(1, 3) == 1
    assert house.runtime.store.outbox_counts().get("pending", 0) == 0


async def test_a_link_copy_of_a_held_trakt_row_s_play_is_not_a_second_play_as_history_adds(
    house: House, trakt: FakeTrakt
) -> None:
    # As above, the rows going out as history adds after the hold (the first play its probe).
    for write in ("POST /scrobble/stop", "POST /sync/history"):
        trakt.fail_next(10_000, 503, route=write)
    house.jellyfin_play(1, 2)  # the probe when Trakt is back: it goes alone
    house.advance(60)
    at = house.clock()
    house.jellyfin_play(1, 3)
    await house.deliver()
    queue_link_copy(house, 1, 3, at - 20)
    trakt.clear_knobs()
    house.advance(900)  # past delivery.late_after: history adds
    await house.deliver()

    assert (house.trakt_plays(1, 2), house.trakt_plays(1, 3)) == (1, 1)
    assert house.runtime.store.outbox_counts().get("pending", 0) == 0


def iso_at(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))


async def test_an_old_tools_duplicate_on_trakt_and_a_waiting_serializd_row_make_one_entry(
    house: House, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    # The Jellyfin webhook's play lands on Trakt, and the old tool, still running, posts the
    # viewing there again a minute later; the webhook's row for Serializd waits out a
    # Serializd outage. The link's run meanwhile (Serializd back, the row's wait not over):
    # Trakt holds the viewing twice, Serializd not yet, its row on its way. That row logs
    # it; the old tool's second record is left as it is, not copied.
    serializd.fail_next(10_000, 503)
    house.jellyfin_play(1, 2)
    await house.deliver()
    trakt.add_history(trakt.shows[0].seasons[1].episodes[2], iso_at(house.clock() + 60))
    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (2, 0)
    serializd.clear_knobs()  # back, the row's wait not over yet
    house.advance(120)

    copies = len(link_copies(house))

    await house.sync()

    assert link_copies(house)[copies:] == []
    await house.settle()
    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (2, 1)
    assert house.runtime.store.outbox_counts().get("pending", 0) == 0


async def test_an_old_tools_duplicate_on_trakt_and_a_landed_serializd_row_make_one_entry(
    house: House, trakt: FakeTrakt
) -> None:
    # As above, the webhook's row for Serializd landing before the link's run: Serializd
    # holds the viewing once, Trakt twice. Still one entry.
    house.jellyfin_play(1, 2)
    await house.deliver()
    trakt.add_history(trakt.shows[0].seasons[1].episodes[2], iso_at(house.clock() + 60))
    house.advance(120)
    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (2, 1)
    copies = len(link_copies(house))

    await house.sync()

    assert link_copies(house)[copies:] == []
    await house.settle()
    assert (house.trakt_plays(1, 2), house.diary_entries(1, 2)) == (2, 1)


async def test_an_old_tools_duplicate_on_serializd_and_a_held_trakt_row_make_one_play(
    house: House, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    # The other way: an old tool logs the viewing on Serializd twice a minute apart (the
    # webhook's row for Serializd finds it there), and the row for Trakt waits out Trakt
    # refusing writes. The link's run meanwhile copies neither of Serializd's two entries:
    # Trakt's row is that viewing.
    for when in (house.clock(), house.clock() + 60):
        serializd.log_entry(None, BB, 1, 3, backdate=iso_at(when))
    for write in ("POST /scrobble/stop", "POST /sync/history"):
        trakt.fail_next(10_000, 503, route=write)
    house.jellyfin_play(1, 3)
    await house.deliver()
    assert (house.trakt_plays(1, 3), house.diary_entries(1, 3)) == (0, 2)
    trakt.clear_knobs()  # back, the row's wait not over yet
    house.advance(120)
    copies = len(link_copies(house))

    await house.sync()

    assert link_copies(house)[copies:] == []
    await house.settle()
    assert (house.trakt_plays(1, 3), house.diary_entries(1, 3)) == (1, 2)
    assert house.runtime.store.outbox_counts().get("pending", 0) == 0
