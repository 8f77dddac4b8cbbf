"""Ratings end to end, from what the user does to what Trakt ends up holding: cases found in a
review of the ratings paths (each names what went wrong before)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.linkrig import Rig, open_rig, use_fast_readers

pytestmark = pytest.mark.anyio

SHOW = 1396  # Breaking Bad (TMDB)


@pytest.fixture
async def link(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    use_fast_readers(monkeypatch)
    trakt: FakeTrakt = start_fake(FakeTrakt())
    trakt.add_show("Breaking Bad", 2008, tmdb=SHOW, tvdb=81189, seasons={1: 7, 2: 13})
    serializd: FakeSerializd = start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    rig = open_rig(tmp_path, trakt, serializd, link_options=", max_removal_share: 1")
    yield rig
    await rig.aclose()


def trakt_ratings(rig: Rig) -> dict[tuple[str, int | None], int]:
    return {
        (r.item.kind, getattr(r.item, "number", None) if r.item.kind == "season" else None): (
            r.rating
        )
        for r in rig.trakt.ratings()
    }


async def test_a_show_and_a_season_rating_removed_together_are_both_removed_on_trakt(
    link: Rig,
) -> None:
    show = link.serializd.log_entry(None, SHOW, None, None, rating=8, is_log=False)
    season = link.serializd.log_entry(None, SHOW, 2, None, rating=6, is_log=False)
    await link.sync_and_deliver()
    assert trakt_ratings(link) == {("show", None): 8, ("season", 2): 6}
    with link.serializd.lock:  # the user clears both on serializd.com
        link.serializd.user.reviews.remove(show)
        link.serializd.user.reviews.remove(season)
    await link.sync_and_deliver(full=True)
    assert trakt_ratings(link) == {}
    await link.sync_and_deliver(full=True)
    assert (trakt_ratings(link), link.serializd.diary()) == ({}, [])
