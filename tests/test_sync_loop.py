"""A link's run on a big account beside the webhooks: the event loop is not held for long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt, iso
from tests.harness import loop_held
from tests.linkrig import LINK, open_rig, use_fast_readers
from watchbridge.pagereview import PageReview

pytestmark = pytest.mark.anyio
YEAR = 365 * 86400.0


async def test_a_first_run_on_a_big_history_does_not_hold_the_event_loop(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service runs a link on the loop that answers webhooks: the steps between the
    reads and the writes that go over every play (the Serializd side's comparison with the
    Trakt one, the expected plays settled, the plays a webhook already queued left out, the
    run's counts) run on a thread, so that a play someone just pressed is answered at once.
    The pages' reads stay on the loop, a few ms each."""
    trakt: FakeTrakt = start_fake(FakeTrakt())
    serializd: FakeSerializd = start_fake(FakeSerializd())
    now = time.time()
    episodes = []
    for s in range(100):
        show = trakt.add_show(f"Show {s}", 2000, tmdb=900_000 + s, seasons={1: 50, 2: 50})
        episodes += [e for season in (1, 2) for e in show.seasons[season].episodes.values()]
    for k, episode in enumerate(episodes * 2):  # each watched twice: a rewatch a year apart
        trakt.add_history(episode, iso(now - k * 600 - (k // len(episodes)) * YEAR))
    use_fast_readers(monkeypatch)
    rig = open_rig(tmp_path, trakt, serializd, ", first_run: apply")
    try:
        async with loop_held() as held:
            result = await rig.sync()
    finally:
        await rig.aclose()
    assert result.queued == 20_000
    # Before these steps moved off the loop it was held ~0.1 s at once (20,000 plays).
    assert max(held) < 0.04, f"the loop was held {max(held):.3f} s at once"


async def test_the_pages_review_of_a_big_first_run_does_not_hold_the_event_loop(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status page's review reads and applies a first run as the scheduler runs a link, on
    the loop that answers the webhooks and the page: what it makes of the plan to show, and
    the token compared before applying, go over every play, on a thread too."""
    trakt: FakeTrakt = start_fake(FakeTrakt())
    serializd: FakeSerializd = start_fake(FakeSerializd())
    now = time.time()
    episodes = []
    for s in range(100):
        show = trakt.add_show(f"Show {s}", 2000, tmdb=900_000 + s, seasons={1: 50, 2: 50})
        episodes += [e for season in (1, 2) for e in show.seasons[season].episodes.values()]
    for k, episode in enumerate(episodes * 2):
        trakt.add_history(episode, iso(now - k * 600 - (k // len(episodes)) * YEAR))
    use_fast_readers(monkeypatch)
    rig = open_rig(tmp_path, trakt, serializd)  # first_run: dry-run, the review's
    reviews = rig.runtime.page_reviews

    async def ended(review: PageReview) -> PageReview:
        while review.running:
            await asyncio.sleep(0.01)
        return review

    try:
        async with loop_held() as read_held:
            read = await ended(reviews.read(rig.runtime, LINK))
        assert read.plan is not None, read.outcome
        async with loop_held() as apply_held:
            applied = await ended(reviews.apply(rig.runtime, LINK, read.plan.token))
    finally:
        await rig.aclose()
    assert applied.outcome is not None and applied.outcome.startswith("applied: 20000 change(s)")
    assert max(read_held) < 0.04, f"the loop was held {max(read_held):.3f} s at once (read)"
    assert max(apply_held) < 0.04, f"the loop was held {max(apply_held):.3f} s at once (apply)"
