"""The Trakt <-> Serializd link's saved state put back in time: a copy of its database (a
`watchbridge backup` copy, or the file copied as it is while stopped) restored after the link
ran on and the user went on playing, rating and removing on both sides."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.harness import put_back
from tests.linkrig import Rig, open_rig, use_fast_readers
from tests.test_sync_scenarios import (
    TraktApp,
    ago,
    app,
    diary_plays,
    diary_rating,
    entry,
    log,
    review,
    trakt_plays,
    trakt_rating,
    unlog,
)

pytestmark = pytest.mark.anyio

__all__ = ["app"]  # the Trakt app fixture, used here

OPTIONS = ", first_run: apply, max_removal_share: 1"


@pytest.fixture
async def rigs(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[Rig]]:
    use_fast_readers(monkeypatch)
    made = [open_rig(tmp_path, trakt, serializd, OPTIONS)]
    yield made
    await made[-1].aclose()


async def restarted(
    rigs: list[Rig],
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    copy: Path | None,
    folder_copy: Path | None = None,
) -> Rig:
    """The service stopped, `copy` put back over its database (None: left), started again;
    `folder_copy`: the database copied there as it is while stopped (no backup stamp)."""
    rig = rigs[-1]
    database = rig.store.path
    assert database is not None
    await rig.aclose()
    if folder_copy is not None:
        shutil.copy(database, folder_copy)
    if copy is not None:
        put_back(copy, database)
    rigs.append(open_rig(tmp_path, trakt, serializd, OPTIONS, trakt_sign_in=False))
    return rigs[-1]


async def copy_taken(
    rigs: list[Rig], tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, stamped: bool
) -> Path:
    """A copy of the link's database as it is now: `watchbridge backup`'s (stamped), or the
    file copied as it is while the service is stopped (an appdata backup)."""
    copy = tmp_path / "copy.db"
    if stamped:
        rigs[-1].store.backup_to(copy)
    else:
        await restarted(rigs, tmp_path, trakt, serializd, None, folder_copy=copy)
    return copy


async def synced(rig: Rig) -> None:
    """The link's runs of a day: a cheap one, and the full read."""
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)


def s1_plays(trakt: FakeTrakt, serializd: FakeSerializd) -> tuple[list[Any], list[Any]]:
    """(number, day) of the season 1 plays on Trakt, and in the Serializd diary."""
    return (
        [(n, day) for s, n, day in trakt_plays(trakt) if s == 1],
        [(n, day) for s, n, day in diary_plays(serializd) if s == 1],
    )


# Copied: S1E1 and S1E2 watched on Trakt, S1E3 logged on Serializd with 7 stars. After the
# copy: S1E4 watched on Trakt and S1E5 logged on Serializd (each copied by the link), S1E1
# rated 9 on Trakt and S1E3's stars changed to 4 on Serializd (copied); S1E1 removed on Trakt
# and the link's copy of S1E4 deleted on Serializd (each removal carried by the link). Then,
# not carried before the copy goes back: S1E2 deleted on Serializd, and the link's copy of
# S1E5 removed on Trakt.
@pytest.mark.parametrize("stamped", [True, False], ids=["backup", "folder-copy"])
async def test_a_copy_put_back_removes_no_play_or_rating_and_doubles_none(
    rigs: list[Rig],
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    app: TraktApp,
    stamped: bool,
) -> None:
    app.watch(1, 1, ago(30))
    app.watch(1, 2, ago(20))
    log(serializd, 1, 3, ago(25), rating=7)
    await synced(rigs[-1])
    copy = await copy_taken(rigs, tmp_path, trakt, serializd, stamped)
    app.watch(1, 4, ago(2))
    log(serializd, 1, 5, ago(1))
    app.rate(1, 1, 9, ago(1))
    log(serializd, 1, 3, ago(0.5), rating=4, is_log=False)
    await synced(rigs[-1])
    app.unwatch(entry(trakt, 1))
    unlog(serializd, review(serializd, 4))
    await synced(rigs[-1])
    unlog(serializd, review(serializd, 2))
    app.unwatch(entry(trakt, 5))
    s1e3, s1e5 = (ago(25)[:10], ago(1)[:10])

    rig = await restarted(rigs, tmp_path, trakt, serializd, copy)
    for _ in range(2):
        await synced(rig)

    # S1E2's deletion reaches Trakt; S1E5, removed on Trakt from the link's copy made after
    # the copy was taken, is copied back from Serializd (README, Restoring a backup).
    trakt_s1, diary_s1 = s1_plays(trakt, serializd)
    assert trakt_s1 == diary_s1 == sorted([(3, s1e3), (5, s1e5)])
    assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (9, 9)
    assert (trakt_rating(trakt, 1, 3), diary_rating(serializd, 1, 3)) == (4, 4)
    assert rig.store.outbox_counts()["dead"] == 0
