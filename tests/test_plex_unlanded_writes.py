"""A play the link writes to Plex whose answer is lost, and which did not land, while its row
waits to be tried again: the reads meanwhile find the item unwatched in Plex. That is no
unwatch of the user's: nothing is removed from the other side, and the play lands in Plex
once, when the row gets through."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes.plex import MODERN_VERSION, OLD_VERSION, OWNER_ID, TOKEN
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, write_config
from tests.test_link_plex_serializd import link_config
from tests.test_unnamed_items import BCS, plex_with_two_shows
from tests.unpaced import unpaced
from watchbridge import readers
from watchbridge.cli import cli
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.sync import run_link
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

MINUTE = 60.0
DAY = 24 * 60  # minutes


@dataclass
class Minutes:
    """Every party's clock (the link's, the deliveries', the fake Plex's), `minutes` ahead."""

    minutes: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.minutes * MINUTE


@pytest.mark.parametrize("version", [OLD_VERSION, MODERN_VERSION], ids=["pms-1.32", "pms-1.41"])
async def test_a_play_written_to_plex_that_did_not_land_is_no_unwatch_while_its_row_waits(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    # S1E2 logged on Serializd; the link plays it in Plex. The scrobble's answer is lost and
    # it did not land, twice (the run's delivery, then the retry before the next run). The
    # next run (30 minutes on, the link's interval) reads the write while its outcome is
    # unknown; the one after it (past CLOCK_MARGIN since the last try) finds S1E2 unwatched
    # in Plex while the row still waits. Then the row gets through.
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    unpaced(monkeypatch, "serializd")  # the deliveries' (~0.5 s a request, 7 s a test)
    plex, serializd = plex_with_two_shows(start_fake)
    plex.version = version
    clock = Minutes()
    plex.clock = clock
    monkeypatch.setattr(serializd, "date_clock", clock)
    config = load_config(link_config(tmp_path, plex, serializd), {})
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}

    async def run(deliver: bool = True) -> int:
        result = await run_link(
            config, runtime.store, "plex-serializd", yes=True, full=True, clock=clock
        )
        if deliver:
            await drain()
        return result.queued

    async def drain() -> None:
        while await worker.pass_once(runtime):
            pass

    try:
        await run()
        users_entry = serializd.log_entry(
            None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
        )
        plex.drop_next(1, "/:/scrobble")  # lost on its way: Plex did nothing
        assert await run() == 1
        assert plex.user_state("302") == {}
        clock.minutes = 25
        plex.drop_next(1, "/:/scrobble")  # the retry's, lost too
        await drain()
        assert plex.user_state("302") == {}
        clock.minutes = 30
        await run(deliver=False)  # the next run reads the write whose outcome is unknown
        clock.minutes = 60  # past CLOCK_MARGIN since the last try: S1E2 listed unwatched

        queued = [await run(deliver=False)]
        await drain()  # the row gets through
        clock.minutes = 90
        queued.append(await run())
        clock.minutes = 24 * 60
        queued.append(await run())

        # The user's entry is kept, not removed and then copied back as one of ours.
        diary = serializd.diary()
        s1e2 = [(r.id, r.review_text) for r in diary if (r.show_id, r.episode_number) == (BCS, 2)]
        assert s1e2 == [(users_entry.id, "the user's own")], queued
        assert len(diary) == 13
        # played once in Plex (with a history row on a server before 1.40)
        assert len(plex.history_of("302")) == (1 if version == OLD_VERSION else 0)
        assert plex.user_state("302")["viewCount"] == 1
        assert queued == [0, 0, 0]
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


# --------------------------------------------------------------------------- its row given up
# A write whose answer was lost stays pending only while its row may still be sent: waiting,
# in flight, or a dead letter the user may retry. Discarded, it was never written (unless Plex
# shows it landed) and the link copies its play again; landed, it is an ordinary write of ours.


@dataclass
class Rig:
    """The plex-serializd link with one try per delivery (`delivery.max_attempts: 1`): a row
    Plex answers with an error dies at once. Its clock moves by hand (`at`). `link`: the
    plex-trakt link instead (`plex_trakt_rig`), with `trakt` its Trakt."""

    plex: Any
    serializd: Any
    clock: Minutes
    path: Any
    runtime: Any
    worker: DeliveryWorker
    link: str = "plex-serializd"
    trakt: Any = None

    async def run(self, deliver: bool = True) -> int:
        config = self.runtime.config
        result = await run_link(
            config, self.runtime.store, self.link, yes=True, full=True, clock=self.clock
        )
        if deliver:
            await self.drain()
        return result.queued

    async def drain(self) -> None:
        while await self.worker.pass_once(self.runtime):
            pass

    def at(self, minutes: float) -> None:
        self.clock.minutes = minutes

    def dead_letters(self) -> list[int]:
        return [row.id for row in self.runtime.store.dead_letters()]

    def deadletters(self, *args: str) -> str:
        result = CliRunner().invoke(cli, ["deadletters", *args, "--config", str(self.path)])
        assert result.exit_code == 0, result.output
        return result.output

    def unwatch_in_plex(self, rating_key: str) -> None:
        state = self.plex.state.setdefault((OWNER_ID, rating_key), {})
        for name in ("viewCount", "lastViewedAt", "viewOffset"):
            state.pop(name, None)

    def s1e2_entries(self) -> list[tuple[int, str | None]]:
        return [
            (r.id, r.review_text)
            for r in self.serializd.diary()
            if (r.show_id, r.episode_number) == (BCS, 2)
        ]


@contextlib.asynccontextmanager
async def plex_serializd_rig(
    tmp_path: Any,
    start_fake: Any,
    monkeypatch: pytest.MonkeyPatch,
    link_extra: str = "",
    config_extra: str = "",
) -> AsyncIterator[Rig]:
    """The fake PMS (two shows) linked to the fake Serializd on a clock of minutes, with the
    service's delivery worker: `link_extra` goes into the link's line, `config_extra` at the
    end of the file."""
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    unpaced(monkeypatch, "serializd")  # the deliveries' (~0.5 s a request, 7 s a test)
    plex, serializd = plex_with_two_shows(start_fake)
    clock = Minutes()
    plex.clock = clock
    monkeypatch.setattr(serializd, "date_clock", clock)
    path = link_config(tmp_path, plex, serializd, link_extra)
    with path.open("a", encoding="utf-8") as config_file:
        config_file.write(config_extra)
    config = load_config(path, {})
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    made = Rig(plex, serializd, clock, path, runtime, worker)
    try:
        yield made
    finally:  # the service the rig runs at the end (a test may start it again)
        for target in made.worker.targets.values():
            await target.aclose()
        made.runtime.close()


@contextlib.asynccontextmanager
async def plex_trakt_rig(
    tmp_path: Any, start_fake: Any, config_extra: str = ""
) -> AsyncIterator[Rig]:
    """The same Plex linked to the fake Trakt instead (`Rig.trakt`), which holds both shows."""
    plex, _ = plex_with_two_shows(start_fake)
    trakt = start_fake(FakeTrakt())
    trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={2: 10})
    trakt.add_show("Better Call Saul", 2015, tmdb=60059, tvdb=273181, seasons={1: 10})
    clock = Minutes()
    plex.clock = clock
    path = write_config(
        tmp_path,
        f"""services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex: {{accounts: {{trakt: {{}}, plex: {{}}}}}}
links:
  plex-trakt: {{services: [plex, trakt], first_run: apply}}
{config_extra}""",
    )
    config = load_config(path, {})
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "alex", now=clock())
    worker = DeliveryWorker(make_targets, config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    made = Rig(plex, None, clock, path, runtime, worker, "plex-trakt", trakt)
    try:
        yield made
    finally:
        for target in made.worker.targets.values():
            await target.aclose()
        made.runtime.close()


@pytest.fixture
async def rig(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    extra = "delivery: {max_attempts: 1}\n"
    async with plex_serializd_rig(tmp_path, start_fake, monkeypatch, config_extra=extra) as made:
        yield made


async def lost_then_given_up(rig: Rig, *, landed: bool) -> int:
    """S1E2 logged on Serializd; the link's scrobble of it in Plex loses its answer (it did
    not land), and its retry's is answered with a 500, after Plex marked it watched (`landed`)
    or before: with one try allowed, the row gives up. The dead letter's id."""
    await rig.run()
    rig.serializd.log_entry(
        None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
    )
    rig.plex.drop_next(1, "/:/scrobble")
    assert await rig.run() == 1
    assert rig.dead_letters() == []  # an answer lost spends no try: the row waits
    rig.at(25)
    rig.plex.fail_next(1, 500, route="/:/scrobble", after_handler=landed)
    await rig.drain()
    assert rig.plex.knobs_pending == 0
    assert rig.plex.user_state("302").get("viewCount") == (1 if landed else None)
    (dead,) = rig.dead_letters()
    return dead


async def test_a_discarded_write_that_did_not_land_is_copied_again(rig: Rig) -> None:
    dead = await lost_then_given_up(rig, landed=False)
    rig.at(60)
    assert await rig.run() == 0  # a dead letter still counts as on its way
    assert rig.plex.user_state("302") == {}

    rig.deadletters("discard", str(dead))
    rig.at(90)
    queued = [await rig.run()]  # never written: the play is copied again
    rig.at(120)
    queued.append(await rig.run())
    rig.at(24 * 60)
    queued.append(await rig.run())

    assert queued == [1, 0, 0]
    assert rig.plex.user_state("302")["viewCount"] == 1  # written once
    assert len(rig.plex.history_of("302")) == 1
    user_entry = rig.s1e2_entries()
    assert [text for _, text in user_entry] == ["the user's own"]
    assert len(rig.serializd.diary()) == 13

    # The play in Plex is an ordinary write of ours: unwatching it there removes it.
    rig.unwatch_in_plex("302")
    rig.at(25 * 60)
    await rig.run()
    assert rig.s1e2_entries() == []


def viewed_in_plex_days_later(rig: Rig) -> str:
    """The user watches S1E2 in Plex two days on; the view's day."""
    rig.at(2 * DAY)
    viewed = rig.clock()
    rig.plex.watch("302", viewed)
    return time.strftime("%Y-%m-%d", time.gmtime(viewed))


async def runs_after_the_view(rig: Rig) -> None:
    for minutes in (30, 60, 90, DAY):
        rig.at(2 * DAY + minutes)
        await rig.run()


# Discarded, then S1E2 watched in Plex (before the discard, or after it) before the link copies
# the play again: the copy finds S1E2 watched since the play's time and writes nothing. The try
# that made no view is none of the write's: counted among S1E2's views beside the user's, it
# made Plex's one view one short, the write read as unwatched since, and the user's own entry
# removed from Serializd.
@pytest.mark.parametrize("watched", ["before-the-discard", "after-the-discard"])
async def test_a_discarded_write_copied_again_after_a_view_in_plex_keeps_the_users_entry(
    rig: Rig, watched: str
) -> None:
    dead = await lost_then_given_up(rig, landed=False)
    if watched == "after-the-discard":
        rig.deadletters("discard", str(dead))
    view_day = viewed_in_plex_days_later(rig)
    if watched == "before-the-discard":
        rig.deadletters("discard", str(dead))
    await runs_after_the_view(rig)

    assert rig.plex.user_state("302")["viewCount"] == 1  # the user's view, not written again
    assert "the user's own" in [text for _, text in rig.s1e2_entries()]  # never removed
    diary = rig.serializd.diary()
    dates = sorted(r.watched_at[:10] for r in diary if (r.show_id, r.episode_number) == (BCS, 2))
    assert dates == ["2024-03-01", view_day]  # and the view copied as usual


# The same for a row of a play whose earlier write, by another row, was removed: the user takes
# their entry back and logs it again. Its record keeps that write's try, which made a view (since
# unwatched), beside its own, which made none; its copy once discarded writes neither as a view.
async def test_a_discarded_rewrite_of_a_removed_play_keeps_the_users_entry_again(
    rig: Rig,
) -> None:
    await rig.run()
    rig.serializd.log_entry(None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z")
    assert await rig.run() == 1  # written to Plex
    (entry,) = [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 2)]
    rig.serializd.delete_entry(entry)
    rig.at(30)
    assert await rig.run() == 1  # and removed from it
    rig.serializd.log_entry(
        None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
    )
    rig.at(60)
    rig.plex.fail_next(1, 500, route="/:/scrobble")
    assert await rig.run() == 1
    (dead,) = rig.dead_letters()
    rig.deadletters("discard", str(dead))
    view_day = viewed_in_plex_days_later(rig)
    await runs_after_the_view(rig)

    assert rig.plex.user_state("302")["viewCount"] == 1
    assert "the user's own" in [text for _, text in rig.s1e2_entries()]
    diary = rig.serializd.diary()
    dates = sorted(r.watched_at[:10] for r in diary if (r.show_id, r.episode_number) == (BCS, 2))
    assert dates == ["2024-03-01", view_day]


# The same with Trakt on the other side: the user's own Trakt play stays.
async def test_a_discarded_write_copied_again_after_a_view_in_plex_keeps_the_users_trakt_play(
    tmp_path: Any, start_fake: Any
) -> None:
    async with plex_trakt_rig(tmp_path, start_fake, "delivery: {max_attempts: 1}\n") as rig:
        await rig.run()
        s1e2 = rig.trakt.shows[1].episode(1, 2)
        rig.trakt.log_play(s1e2, "2024-03-01T20:00:00.000Z")
        rig.plex.fail_next(1, 500, route="/:/scrobble")
        assert await rig.run() == 1
        (dead,) = rig.dead_letters()
        rig.deadletters("discard", str(dead))
        view_day = viewed_in_plex_days_later(rig)
        await runs_after_the_view(rig)

        assert rig.plex.user_state("302")["viewCount"] == 1
        plays = sorted(str(h.watched_at)[:10] for h in rig.trakt.history() if h.item is s1e2)
        assert plays == ["2024-03-01", view_day]


async def test_a_dead_write_that_landed_is_an_ordinary_play_and_its_retry_writes_nothing(
    rig: Rig,
) -> None:
    dead = await lost_then_given_up(rig, landed=True)
    assert rig.plex.user_state("302")["viewCount"] == 1
    rig.at(60)
    assert await rig.run() == 0

    rig.deadletters("retry", str(dead))
    rig.at(90)
    await rig.drain()
    assert rig.dead_letters() == []
    rig.at(120)
    assert await rig.run() == 0
    assert rig.plex.user_state("302")["viewCount"] == 1  # no second view
    assert len(rig.plex.history_of("302")) == 1
    assert [text for _, text in rig.s1e2_entries()] == ["the user's own"]

    rig.unwatch_in_plex("302")
    rig.at(24 * 60)
    await rig.run()
    assert rig.s1e2_entries() == []


async def test_a_dead_write_that_landed_can_be_unwatched_before_any_retry(rig: Rig) -> None:
    await lost_then_given_up(rig, landed=True)
    rig.at(60)
    assert await rig.run() == 0  # reads that it landed
    rig.unwatch_in_plex("302")
    rig.at(24 * 60)
    await rig.run()
    assert rig.s1e2_entries() == []


async def test_a_dead_write_that_did_not_land_is_written_once_by_its_retry(rig: Rig) -> None:
    dead = await lost_then_given_up(rig, landed=False)
    rig.at(60)
    assert await rig.run() == 0  # still counts as on its way (its dead letter says why not)
    assert rig.plex.user_state("302") == {}

    rig.deadletters("retry", str(dead))
    rig.at(90)
    await rig.drain()
    rig.at(120)
    assert await rig.run() == 0
    rig.at(24 * 60)
    assert await rig.run() == 0
    assert rig.dead_letters() == []
    assert rig.plex.user_state("302")["viewCount"] == 1
    assert len(rig.plex.history_of("302")) == 1
    assert [text for _, text in rig.s1e2_entries()] == ["the user's own"]


# ------------------------------------------------------------------ a retry after a removal
# A write an earlier try of its row made (or may have made) and that was removed since is not
# made again by that row: the retry would undo the user's unwatch.


async def test_the_retry_of_a_dead_write_removed_since_writes_nothing(rig: Rig) -> None:
    # Its retry goes by itself once Plex takes a write again (the removal itself).
    dead = await lost_then_given_up(rig, landed=False)
    rig.at(60)
    assert await rig.run() == 0
    # The user takes the entry back on Serializd: the link removes its play from Plex.
    (entry,) = [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 2)]
    rig.serializd.delete_entry(entry)
    rig.at(90)
    assert await rig.run() == 1  # the removal
    # Plex took a write (the removal): a dead letter of its server's error goes once more by
    # itself then, and one whose play the user removed since is settled instead.
    assert dead not in rig.dead_letters()
    rig.at(120)
    await rig.drain()
    rig.at(24 * 60)
    assert await rig.run() == 0

    assert rig.dead_letters() == []
    assert rig.plex.user_state("302") == {}  # not written
    assert rig.plex.history_of("302") == []
    assert rig.s1e2_entries() == []


async def test_a_copy_unwatched_in_plex_is_not_written_again_by_the_retry_for_the_other(
    rig: Rig,
) -> None:
    # S1E2 in two libraries (an HD and a 4K copy). The link's write of it lands in the first
    # copy; the second's answer is lost (it did not land). Before the retry, the user unwatches
    # the first copy in Plex and the link reads that.
    rig.plex.add_section("3", "TV 4K", "show")
    rig.plex.add_show(
        "40", "Better Call Saul", 2015, ["tmdb://60059", "tvdb://273181"], section="3"
    )
    rig.plex.add_episode("402", "40", 1, 2)
    await rig.run()
    rig.serializd.log_entry(None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z")
    rig.plex.delay_next(1, 0.0, "/:/scrobble")  # the first copy's scrobble goes through
    rig.plex.drop_next(1, "/:/scrobble")
    assert await rig.run() == 1
    copies = {rk: rig.plex.user_state(rk).get("viewCount") for rk in ("302", "402")}
    (landed,) = [rk for rk, views in copies.items() if views == 1]
    (lost,) = [rk for rk, views in copies.items() if views is None]
    rig.unwatch_in_plex(landed)
    rig.at(60)
    assert await rig.run(deliver=False) == 0

    await rig.drain()  # the retry
    rig.at(90)
    assert await rig.run() == 0
    rig.at(24 * 60)
    assert await rig.run() == 0

    assert rig.plex.user_state(landed) == {}  # the user's unwatch stands
    assert len(rig.plex.history_of(landed)) == 1
    assert rig.plex.user_state(lost)["viewCount"] == 1  # written once
    assert len(rig.plex.history_of(lost)) == 1
    assert len(rig.s1e2_entries()) == 1  # still watched (the other copy)


# ------------------------------------------------------------ a clock corrected between tries
# Plex dates the view a scrobble adds by its own clock: whether it landed is judged with how
# far that clock was off when the scrobble was sent, kept with the write.


async def test_a_write_that_landed_while_plex_was_slow_is_not_written_again_once_corrected(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plex's clock is five minutes slow. The link scrobbles S1E2 (logged on Serializd): Plex
    # marks it watched, then answers 500. Before the retry, Plex's clock is set right (NTP).
    async with plex_serializd_rig(tmp_path, start_fake, monkeypatch) as rig:
        rig.plex.clock = lambda: rig.clock() - 5 * MINUTE
        await rig.run()
        rig.serializd.log_entry(None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z")
        rig.plex.fail_next(1, 500, route="/:/scrobble", after_handler=True)
        assert await rig.run() == 1
        assert rig.plex.user_state("302")["viewCount"] == 1
        rig.plex.clock = rig.clock
        rig.at(25)
        await rig.drain()  # the retry: it landed, nothing is written
        rig.at(60)
        queued = [await rig.run()]
        rig.at(24 * 60)
        queued.append(await rig.run())

        assert rig.plex.user_state("302")["viewCount"] == 1  # one view, not two
        assert len(rig.plex.history_of("302")) == 1
        assert len(rig.s1e2_entries()) == 1
        assert queued == [0, 0]
