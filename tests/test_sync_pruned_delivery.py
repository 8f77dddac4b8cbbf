"""A link's delivered add outlives the hourly pruning of delivered rows while the link still
expects to read the play back: that row is how a full read tells a play removed there since
from one still on its way (`reconcile.carry_expected`)."""

from __future__ import annotations

import time

import pytest

from tests import test_sync_scenarios as scenarios
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.linkrig import Rig
from tests.test_sync_scenarios import DAY, TraktApp, ago, diary_plays, entry, log, trakt_plays
from watchbridge.maintenance import KEEP_DONE, KEEP_SESSIONS

# The link of the Trakt <-> Serializd scenarios, over the same fakes (tests/conftest.py).
app, make_rig, rig = scenarios.app, scenarios.make_rig, scenarios.rig

pytestmark = pytest.mark.anyio


def maintenance_after(rig: Rig, days: float) -> dict[str, int]:
    """The hourly pruning, as it would run `days` from now."""
    return rig.store.prune(time.time() + days * DAY, KEEP_DONE, KEEP_SESSIONS)


async def test_a_removal_found_after_the_delivery_was_pruned_is_carried_across(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    log(serializd, 1, 1, ago(60))
    log(serializd, 1, 2, ago(59))
    await rig.sync_and_deliver()  # both copied to Trakt, expected there until read back
    assert len(trakt_plays(trakt)) == 2
    app.unwatch(entry(trakt, 2))  # the user removes one of the plays we wrote
    maintenance_after(rig, 8)  # no full read for more than a week
    await rig.sync_and_deliver(full=True)
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1)]
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1)]


async def test_a_delivered_add_read_back_is_pruned_after_a_week(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, ago(60))
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)  # the play read back: no longer expected
    assert maintenance_after(rig, 8)["outbox"] == 1
    assert rig.store.outbox_counts()["done"] == 0
