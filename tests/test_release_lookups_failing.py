"""A show whose Trakt season list cannot be had (Trakt answering 500 for it, or listing its
season without episodes, trakt/trakt-api#799) holds only that show's plays that may be marked
"watched on release date", and their would-be partners on the other side: the link's other
plays sync, those wait (neither copied nor paired) and pair once Trakt answers; after a day of
it they are synced as they are dated, and the log and the link's status line say so. Through
the real CLI against the fakes; what the fakes hold is what is asserted."""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.harness import watchbridge
from tests.linkrig import LINK, link_config_file, sync_by_cli
from tests.unpaced import unpaced_while
from watchbridge.config import load_config
from watchbridge.readers.trakt import FAILED_LOOKUPS, lookups_waiting
from watchbridge.release_marks import LOOKUP_WAIT, failed_lookups, lookups_told, waited_out
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


def _seeded(trakt: FakeTrakt, serializd: FakeSerializd, now: int) -> None:
    """Two shows both fakes know, three episodes each: S1E1 marked "released" on Trakt and
    watched 200 days ago on Serializd (one viewing), S1E2 on Trakt only, S1E3 on Serializd
    only (each copied)."""
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
        serializd.log_entry(None, tmdb, 1, 1, backdate=iso(watched), date_added=iso(watched))
        trakt.add_history(episodes[2], iso(watched + DAY))  # on Trakt only: copied
        logged = iso(watched + 2 * DAY)
        serializd.log_entry(None, tmdb, 1, 3, backdate=logged, date_added=logged)  # copied


def _held(
    trakt: FakeTrakt, serializd: FakeSerializd
) -> tuple[Counter[tuple[int, int]], Counter[tuple[int, int]]]:
    plays = Counter((h.item.show.tmdb, h.item.number) for h in trakt.history())
    diary = Counter((r.show_id, r.episode_number) for r in serializd.diary())
    return plays, diary


def _failed(tmp_path: Path) -> dict[str, Any]:
    record = Store.open(tmp_path / "watchbridge.db")
    try:
        return record.mirror_get("trakt", "me", FAILED_LOOKUPS)
    finally:
        record.close()


def _failing_since(tmp_path: Path, ago: float) -> None:
    """The record of the failing show's lookup as if it had failed since `ago` seconds."""
    failed = _failed(tmp_path)
    record = Store.open(tmp_path / "watchbridge.db")
    try:
        entry = failed[str(FAILING)] | {"since": time.time() - ago}
        record.mirror_put("trakt", "me", FAILED_LOOKUPS, {str(FAILING): entry}, time.time())
    finally:
        record.close()


def _page(path: Path, tmp_path: Path) -> str:
    record = Store.open(tmp_path / "watchbridge.db")
    try:
        config = load_config(path, {})
        return html.unescape(
            render(
                PageState(
                    config, record.status(), lookups=lookups_waiting(config, record, time.time())
                ),
                time.time(),
            )
        )
    finally:
        record.close()


ONE_EACH = Counter({(show, n): 1 for show in (FINE, FAILING) for n in (1, 2, 3)})


@pytest.mark.parametrize("failing", [_fail_500, _fail_799], ids=["500", "no episodes"])
def test_a_show_whose_release_dates_trakt_fails_on_holds_its_marked_plays_only(
    tmp_path: Path, start_fake: Any, failing: Callable[[FakeTrakt, str], None]
) -> None:
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    _seeded(trakt, serializd, int(time.time()))
    shows = {show.tmdb: show for show in trakt.shows}
    failing(trakt, f"/shows/{shows[FAILING].trakt}/seasons")
    path = link_config_file(tmp_path, trakt, serializd)
    ran = watchbridge("sync", "--link", LINK, "--config", str(path), "--yes")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Every play but the failing show's mark and its partner is copied; those two wait, and
    # the log says for how long at most.
    assert _held(trakt, serializd) == (ONE_EACH, ONE_EACH), ran.stdout
    assert "wait (a day at most, then they are synced as they are dated)" in ran.stderr
    failed = _failed(tmp_path)
    assert list(failed) == [str(FAILING)]
    assert failed[str(FAILING)]["held"] == ["s1e1"]
    assert "could not be read" not in watchbridge("status", "--config", str(path)).stdout
    # Hours later, still failing: still held, nothing written, the status calm.
    _failing_since(tmp_path, 20 * 3600)
    assert "plan: nothing to do" in sync_by_cli(path, "--yes")
    assert _held(trakt, serializd) == (ONE_EACH, ONE_EACH)
    assert "could not be read" not in watchbridge("status", "--config", str(path)).stdout
    trakt.clear_knobs()  # Trakt answers again within the day: the mark pairs with the viewing
    out = sync_by_cli(path, "--yes")
    assert "plan: nothing to do" in out, out
    assert _held(trakt, serializd) == (ONE_EACH, ONE_EACH)
    assert not _failed(tmp_path)


@pytest.mark.parametrize("failing", [_fail_500, _fail_799], ids=["500", "no episodes"])
def test_plays_held_by_a_lookup_failing_for_a_day_are_synced_as_dated_and_said(
    tmp_path: Path, start_fake: Any, failing: Callable[[FakeTrakt, str], None]
) -> None:
    """Trakt fails on the show's season list for a day (down for that show, or never listing
    its episodes): the plays it held are synced as they are dated, and the log and the link's
    status line say so, with what it means if the play on Trakt was a mark."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    _seeded(trakt, serializd, int(time.time()))
    shows = {show.tmdb: show for show in trakt.shows}
    failing(trakt, f"/shows/{shows[FAILING].trakt}/seasons")
    path = link_config_file(tmp_path, trakt, serializd)
    sync_by_cli(path, "--yes")
    assert _held(trakt, serializd) == (ONE_EACH, ONE_EACH)
    _failing_since(tmp_path, DAY + 60)
    ran = watchbridge("sync", "--link", LINK, "--config", str(path), "--yes")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Trakt's play at the air date to Serializd, Serializd's viewing to Trakt: each once.
    synced = ONE_EACH + Counter({(FAILING, 1): 1})
    assert _held(trakt, serializd) == (synced, synced), ran.stdout
    told = (
        f"the plays of S1E1 of the show with TMDB id {FAILING} were synced as they are "
        "dated after Trakt's episode dates of the show could not be read for a day"
    )
    assert told in ran.stderr
    status = watchbridge("status", "--config", str(path)).stdout
    line = next(line for line in status.splitlines() if told in line)
    assert "if the play on Trakt was marked 'watched on release date'" in line
    assert told in _page(path, tmp_path)
    # Still failing, or answering again: nothing more is copied, nothing held.
    out = sync_by_cli(path, "--yes")
    trakt.clear_knobs()
    out += sync_by_cli(path, "--yes", "--full")
    assert "add_play" not in out, out
    assert _held(trakt, serializd) == (synced, synced), out
    # What the line advises: the mark removed on trakt.tv (the play at the air date) takes
    # its copy on Serializd along.
    mark = min(
        (h for h in trakt.history() if (h.item.show.tmdb, h.item.number) == (FAILING, 1)),
        key=lambda h: h.watched_at or "",
    )
    trakt.user.history = [h for h in trakt.user.history if h.id != mark.id]
    out = sync_by_cli(path, "--yes", "--full", "--confirm-removals")  # 1 of 7: the guard
    assert _held(trakt, serializd) == (ONE_EACH, ONE_EACH), out


def test_a_lookup_synced_past_its_wait_is_told_with_the_show_and_what_to_do() -> None:
    now = 1_800_000_000.0
    entry = {"since": now - LOOKUP_WAIT - 3 * DAY, "last": now, "reason": "answered 500"}
    entry["held"] = ["s1e1", "s2e4"]
    [told] = lookups_told({"1396": entry}, now)
    assert told.startswith(
        "the plays of S1E1, S2E4 of the show with TMDB id 1396 were synced as they are dated "
        "after Trakt's episode dates of the show could not be read for 4 days (answered 500)"
    )
    assert "remove the mark on trakt.tv, and the link removes its copy" in told
    assert not lookups_told({"1396": entry | {"since": now - DAY + 60}}, now)  # still waits
    assert not lookups_told({"1396": entry | {"last": now - 5 * DAY}}, now)  # long ago
    assert waited_out({"1396": entry}, ["1396", "7"], now) == {"1396"}  # "7": failing anew


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


def test_a_lookup_failing_anew_waits_its_own_day_from_now() -> None:
    """The day is counted from the first failure as the record keeps it, but never from a
    time after now (the clock was set ahead when it was written, and set right since: the
    plays would wait as long), nor from a failure the record says had stopped
    (LOOKUP_FORGOTTEN_AFTER, the machine off since): those wait a day from now."""
    now = 1_800_000_000.0
    failing = {"7": ("answered 500", ["s1e1"])}
    ahead = {"since": now + 300 * DAY, "last": now + 300 * DAY, "reason": "answered 500"}
    lapsed = {"since": now - 5 * DAY, "last": now - 3 * DAY, "reason": "answered 500"}
    for entry in (ahead, lapsed):
        assert not waited_out({"7": entry}, ["7"], now)
        put, _ = failed_lookups({"7": entry | {"held": ["s1e1"]}}, failing, (), now)
        assert put["7"]["since"] == now
        assert not waited_out(put, ["7"], now + LOOKUP_WAIT - 60)
        assert waited_out(put, ["7"], now + LOOKUP_WAIT) == {"7"}
    # Failing on, as the record says: from its first failure.
    going = {"since": now - LOOKUP_WAIT, "last": now - 3600, "reason": "answered 500"}
    assert waited_out({"7": going}, ["7"], now) == {"7"}
