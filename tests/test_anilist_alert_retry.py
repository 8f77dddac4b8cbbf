"""The AniList sign-in check tries an expiry alert again until it is delivered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.test_anilist_alerts import runtime_for
from watchbridge.maintenance import check_anilist_tokens

pytestmark = pytest.mark.anyio


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    return fake


async def test_an_expiry_alert_held_back_after_a_failed_send_goes_out_at_a_later_check(
    tmp_path: Path, anilist: FakeAniList, receiver: AlertReceiver
) -> None:
    for runtime in runtime_for(tmp_path, anilist, receiver, days=10):
        assert isinstance(runtime.clock, FakeClock)
        receiver.fail_next(1, 500)
        await check_anilist_tokens(runtime)  # the alert channel is down
        runtime.clock.advance(30)
        await check_anilist_tokens(runtime)  # held back: the channel failed moments ago
        runtime.clock.advance(3600)
        await check_anilist_tokens(runtime)
    assert ["expires soon" in title for title in receiver.titles()] == [True]
