"""A play the link writes to Plex whose answer is lost, and which did not land, while its row
waits to be tried again: the reads meanwhile find the item unwatched in Plex. That is no
unwatch of the user's: nothing is removed from the other side, and the play lands in Plex
once, when the row gets through."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.test_link_plex_serializd import link_config
from tests.test_unnamed_items import BCS, plex_with_two_shows
from watchbridge import readers
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.sync import run_link
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

MINUTE = 60.0


@dataclass
class Minutes:
    """Every party's clock (the link's, the deliveries', the fake Plex's), `minutes` ahead."""

    minutes: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.minutes * MINUTE


async def test_a_play_written_to_plex_that_did_not_land_is_no_unwatch_while_its_row_waits(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S1E2 logged on Serializd; the link plays it in Plex. The scrobble's answer is lost and
    # it did not land, twice (the run's delivery, then the retry before the next run). The
    # next run (30 minutes on, the link's interval) reads the write while its outcome is
    # unknown; the one after it (past CLOCK_MARGIN since the last try) finds S1E2 unwatched
    # in Plex while the row still waits. Then the row gets through.
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    plex, serializd = plex_with_two_shows(start_fake)
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
        assert len(plex.history_of("302")) == 1  # played once in Plex
        assert plex.user_state("302")["viewCount"] == 1
        assert queued == [0, 0, 0]
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()
