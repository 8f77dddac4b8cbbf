"""An item one side can no longer name is not its plays, ratings or watchlist entry removed.

A link reads each side, diffs it with the last read and carries what is gone to the other
side. An item the service still holds but watchbridge can no longer key (Plex's "Unmatch",
a Fix Match or refresh that drops the external ids for a while, an anime mapping refresh
without the entry, a Trakt show whose TMDB id goes) must not read as the user's plays and
ratings of it removed: that would delete them on the other side. Each test does the user's
(or the service's) thing against the fakes and looks at what they hold afterwards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.fakes.plex import FakePlex
from tests.fakes.serializd import FakeSerializd
from tests.test_link_plex_serializd import link_config, sync

HOUR = 3600.0
BCS = 60059  # Better Call Saul's TMDB id


# --------------------------------------------------------------------------- Plex


def plex_with_two_shows(start_fake: Any) -> tuple[FakePlex, FakeSerializd]:
    """Ten episodes of Breaking Bad and one of Better Call Saul watched in Plex, the last one
    rated (one play of eleven: within the default removal share)."""
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    serializd.add_show(BCS, "Better Call Saul", {1: 10})
    plex.add_show("20", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    for n in range(1, 11):
        plex.add_episode(str(100 + n), "20", 2, n)
        plex.watch(str(100 + n), time.time() - 40 * HOUR + n * HOUR)
    plex.add_show("30", "Better Call Saul", 2015, ["tmdb://60059", "tvdb://273181"])
    plex.add_episode("301", "30", 1, 1)
    plex.watch("301", time.time() - 50 * HOUR)
    plex.rate("301", 8.0, time.time() - 50 * HOUR)
    plex.add_episode("302", "30", 1, 2)
    return plex, serializd


def unmatch(plex: FakePlex, rating_key: str) -> dict[str, Any]:
    """Plex's "Unmatch": the item keeps its ratingKey, its history and its watched state, and
    loses its external ids (a `local://` guid, no `Guid` list). What it had, to match again."""
    item = plex.items[rating_key]
    had = {"guid": item["guid"], "Guid": item.pop("Guid")}
    item["guid"] = f"local://{rating_key}"
    return had


def bcs_on_serializd(serializd: FakeSerializd) -> list[tuple[int, int]]:
    """Better Call Saul's diary rows: (episode, rating)."""
    return [(r.episode_number or 0, r.rating) for r in serializd.diary() if r.show_id == BCS]


def test_a_show_unmatched_in_plex_keeps_its_plays_and_rating_on_serializd(
    tmp_path: Path, start_fake: Any
) -> None:
    plex, serializd = plex_with_two_shows(start_fake)
    path = link_config(tmp_path, plex, serializd)
    sync(path)
    # S1E2 logged on Serializd: the link plays it in Plex (a play watchbridge wrote there).
    serializd.log_entry(None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z")
    sync(path)
    assert len(plex.history_of("302")) == 1
    before = bcs_on_serializd(serializd)
    assert sorted(before) == [(1, 0), (1, 8), (2, 0)]  # plays, a rating
    had = unmatch(plex, "30")

    said = sync(path) + sync(path)

    assert bcs_on_serializd(serializd) == before, said  # nothing of it removed
    assert len(serializd.diary()) == 13
    # Matched again: nothing is written either way, nor played twice in Plex.
    plex.items["30"].update(had)
    sync(path)
    assert bcs_on_serializd(serializd) == before and len(serializd.diary()) == 13
    assert len(plex.history_of("301")) == 1 and len(plex.history_of("302")) == 1
