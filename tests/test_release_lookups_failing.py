"""A show whose Trakt season list cannot be had (Trakt answering 500 for it, or listing its
season without episodes, trakt/trakt-api#799) holds only that show's plays that may be marked
"watched on release date", and their would-be partners on the other side: the link's other
plays sync, those wait (neither copied nor paired) and pair once Trakt answers. Through the
real CLI against the fakes; what the fakes hold is what is asserted."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.harness import watchbridge
from tests.linkrig import link_config_file, sync_by_cli
from tests.unpaced import unpaced_while
from watchbridge.config import load_config
from watchbridge.readers.trakt import FAILED_LOOKUPS, lookups_waiting
from watchbridge.release_marks import LOOKUP_TOLD_AFTER, failed_lookups, lookups_told
from watchbridge.services.trakt import iso
from watchbridge.statuspage import PageState, render
from watchbridge.store import Store

DAY = 86400
FINE, FAILING = 7000, 7001  # the shows' TMDB ids


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    with unpaced_while("trakt", "serializd"):
        yield


def _without_episodes(data: Any) -> Any:
    """Trakt's season list with its seasons' episodes left out (#799)."""
    for season in data:
        season.pop("episodes", None)
    return data


def _fail_500(trakt: FakeTrakt, route: str) -> None:
    trakt.fail_next(10**6, 500, route=route)


def _fail_799(trakt: FakeTrakt, route: str) -> None:
    trakt.reshape_always(_without_episodes, route=route)


@pytest.mark.parametrize("failing", [_fail_500, _fail_799], ids=["500", "no episodes"])
def test_a_show_whose_release_dates_trakt_fails_on_holds_its_marked_plays_only(
    tmp_path: Path, start_fake: Any, failing: Callable[[FakeTrakt, str], None]
) -> None:
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    now = int(time.time())
    watched = now - 200 * DAY  # the viewing Serializd holds, marked on Trakt "released"
    aired = now - 2000 * DAY // 3600 * 3600
    for tmdb in (FINE, FAILING):
        listed = trakt.add_show(f"Show {tmdb}", 2015, tmdb=tmdb, tvdb=tmdb + 1, seasons={})
        for number in (1, 2, 3):
            trakt.add_episode(
                listed, 1, number, tvdb=tmdb * 10 + number, runtime=45, first_aired=iso(aired)
            )
        serializd.add_show(tmdb, f"Show {tmdb}", seasons={1: 3})
        episodes = listed.seasons[1].episodes
        trakt.add_history(episodes[1], "released")  # a mark of the viewing below
        serializd.log_entry(None, tmdb, 1, 1, backdate=iso(watched))
        trakt.add_history(episodes[2], iso(watched + DAY))  # on Trakt only: copied
        serializd.log_entry(None, tmdb, 1, 3, backdate=iso(watched + 2 * DAY))  # copied
    shows = {show.tmdb: show for show in trakt.shows}
    failing(trakt, f"/shows/{shows[FAILING].trakt}/seasons")
    path = link_config_file(tmp_path, trakt, serializd)

    def held() -> tuple[Counter[tuple[int, int]], Counter[tuple[int, int]]]:
        plays = Counter((h.item.show.tmdb, h.item.number) for h in trakt.history())
        diary = Counter((r.show_id, r.episode_number) for r in serializd.diary())
        return plays, diary

    one_each = Counter({(show, n): 1 for show in (FINE, FAILING) for n in (1, 2, 3)})
    out = sync_by_cli(path, "--yes")
    plays, diary = held()
    # Every play but the failing show's mark and its partner is copied; those two wait.
    assert plays == one_each, out
    assert diary == one_each, out
    record = Store.open(tmp_path / "watchbridge.db")
    try:
        failed = record.mirror_get("trakt", "me", FAILED_LOOKUPS)
    finally:
        record.close()
    assert list(failed) == [str(FAILING)]
    assert failed[str(FAILING)]["held"] == ["s1e1"]
    assert "have waited" not in watchbridge("status", "--config", str(path)).stdout  # a day: calm
    # Still failing days later: still held, nothing written, and said on the link's line.
    record = Store.open(tmp_path / "watchbridge.db")
    try:
        entry = failed[str(FAILING)] | {"since": time.time() - 4 * DAY}
        record.mirror_put("trakt", "me", FAILED_LOOKUPS, {str(FAILING): entry}, time.time())
    finally:
        record.close()
    assert "plan: nothing to do" in sync_by_cli(path, "--yes")
    assert held() == (one_each, one_each)
    told = f"me: the plays of S1E1 of the show with TMDB id {FAILING} have waited 4 days"
    status = watchbridge("status", "--config", str(path)).stdout
    line = next(line for line in status.splitlines() if told in line)
    assert "nothing to do, they are synced once Trakt answers" in line
    record = Store.open(tmp_path / "watchbridge.db")
    try:
        config = load_config(path, {})
        page = render(
            PageState(
                config, record.status(), lookups=lookups_waiting(config, record, time.time())
            ),
            time.time(),
        )
    finally:
        record.close()
    assert told in page
    trakt.clear_knobs()  # Trakt answers again: the mark pairs with the viewing
    out = sync_by_cli(path, "--yes")
    assert "plan: nothing to do" in out, out
    assert held() == (one_each, one_each)
    record = Store.open(tmp_path / "watchbridge.db")
    try:
        assert not record.mirror_get("trakt", "me", FAILED_LOOKUPS)
    finally:
        record.close()


def test_a_lookup_failing_for_days_is_told_with_the_show_and_what_to_do() -> None:
    now = 1_800_000_000.0
    entry = {"since": now - LOOKUP_TOLD_AFTER - DAY, "last": now - 60, "reason": "answered 500"}
    entry["held"] = ["s1e1", "s2e4"]
    [told] = lookups_told({"1396": entry}, now)
    assert told.startswith("the plays of S1E1, S2E4 of the show with TMDB id 1396 have waited 4 ")
    assert "(answered 500)" in told and "nothing to do" in told
    assert not lookups_told({"1396": entry | {"since": now - DAY}}, now)  # a day: not told
    assert not lookups_told({"1396": entry | {"last": now - 5 * DAY}}, now)  # not asked lately


def test_a_failing_lookup_keeps_since_when_and_is_forgotten_once_answered_or_not_asked() -> None:
    now = 1_800_000_000.0
    before = {
        "1": {"since": now - 5 * DAY, "last": now - DAY, "reason": "old", "held": ["s1e1"]},
        "2": {"since": now - 5 * DAY, "last": now - DAY, "reason": "old", "held": ["s1e1"]},
        "3": {"since": now - 9 * DAY, "last": now - 3 * DAY, "reason": "old", "held": []},
        "4": {"since": now - DAY, "last": now - DAY, "reason": "old", "held": []},
    }
    put, gone = failed_lookups(before, {"1": ("answered 502", ["s1e2"])}, {"2"}, now)
    assert put == {
        "1": {"since": now - 5 * DAY, "last": now, "reason": "answered 502", "held": ["s1e2"]}
    }
    assert sorted(gone) == ["2", "3"]  # answered; not failing lately ("4": another link's)
