"""Trakt plays marked "watched on release date" through a Trakt ⇄ Serializd link, by the real
CLI against the fakes: a mark added on trakt.tv after the link's first run, and a mark of an
episode Trakt knows no runtime of, are neither copied as viewings nor make the viewing they
stand for be copied back; a play backdated on trakt.tv (a mark, or a date given by hand) is
read by the next run, not only by the daily full read, also beside a recent play made in the
same window, and without reading all of Trakt's history; so is an old play removed there. What
the fakes hold is what is asserted."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt, Show
from tests.linkrig import link_config_file, sync_by_cli
from tests.unpaced import unpaced_while
from watchbridge.services.trakt import iso

DAY = 86400
TMDB = 7100


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    with unpaced_while("trakt", "serializd"):
        yield


def _held(trakt: FakeTrakt, serializd: FakeSerializd) -> tuple[Counter[Any], Counter[Any]]:
    plays = Counter((h.item.season, h.item.number) for h in trakt.history())
    diary = Counter(
        (serializd.shows[r.show_id].season_by_id(r.season_id).number, r.episode_number)  # type: ignore[union-attr]
        for r in serializd.diary()
    )
    return plays, diary


def _aired_weekly(
    trakt: FakeTrakt, serializd: FakeSerializd, title: str, now: int, episodes: int = 2
) -> Show:
    """A show both services know, one season of (two) 45-minute episodes aired a week apart
    2000 days before `now` (Trakt dates a release mark by the air date and the runtime)."""
    aired = now - 2000 * DAY // 3600 * 3600
    show = trakt.add_show(title, 2015, tmdb=TMDB, tvdb=TMDB + 1, seasons={})
    for number in range(1, episodes + 1):
        trakt.add_episode(
            show,
            1,
            number,
            tvdb=TMDB * 10 + number,
            runtime=45,
            first_aired=iso(aired + number * 7 * DAY),
        )
    serializd.add_show(TMDB, title, seasons={1: episodes})
    return show


def _simulcast(
    tmp_path: Path, start_fake: Any
) -> tuple[FakeTrakt, FakeSerializd, Show, int, int, Path]:
    """A simulcast's two episodes, aired a week apart and the second 10 days before now,
    Trakt knowing no runtime of them; the first played on Trakt the week before, and the link
    run once. Gives the fakes, the show, now, the second's air time and the config's path."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    now = int(time.time())
    aired = now - 10 * DAY // 3600 * 3600
    show = trakt.add_show("Simulcast", 2026, tmdb=TMDB, tvdb=TMDB + 1, seasons={})
    for number in (1, 2):
        trakt.add_episode(
            show,
            1,
            number,
            tvdb=TMDB * 10 + number,
            runtime=None,
            first_aired=iso(aired - (2 - number) * 7 * DAY),
        )
    serializd.add_show(TMDB, "Simulcast", seasons={1: 2})
    trakt.add_history(show.seasons[1].episodes[1], iso(aired - 6 * DAY))  # the week before
    path = link_config_file(tmp_path, trakt, serializd)
    sync_by_cli(path, "--yes")
    return trakt, serializd, show, now, aired, path


def _full_reads(trakt: FakeTrakt) -> int:
    """How many reads of Trakt's whole history were asked for (a first page from no date)."""
    return sum(
        1
        for r in trakt.calls("GET", "/sync/history/{type}")
        if "start_at" not in r.query and r.query.get("page", "1") == "1"
    )


def test_a_mark_added_on_trakt_after_its_viewing_was_copied_is_not_copied_as_a_viewing(
    tmp_path: Path, start_fake: Any
) -> None:
    """The user logs an episode on Serializd weeks after the link's first run, and marks it
    on trakt.tv "watched on release date" after the link copied that viewing to Trakt: Trakt
    dates the mark years back, where a read of Trakt's recent history does not look."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    now = int(time.time())
    aired = now - 2000 * DAY // 3600 * 3600
    show = trakt.add_show("Later", 2015, tmdb=TMDB, tvdb=TMDB + 1, seasons={})
    for season in (1, 2):
        for number in (1, 2):
            trakt.add_episode(
                show,
                season,
                number,
                tvdb=TMDB * 100 + season * 10 + number,
                runtime=45,
                first_aired=iso(aired + season * 365 * DAY + number * 7 * DAY),
            )
    serializd.add_show(TMDB, "Later", seasons={1: 2, 2: 2})
    trakt.add_history(show.seasons[1].episodes[1], "released")  # a mark of the viewing below
    serializd.log_entry(None, TMDB, 1, 1, backdate=iso(now - 300 * DAY))
    path = link_config_file(tmp_path, trakt, serializd)
    sync_by_cli(path, "--yes")
    assert _held(trakt, serializd) == (Counter({(1, 1): 1}), Counter({(1, 1): 1}))
    # Weeks later: watched on Serializd, copied to Trakt; then marked on trakt.tv "watched on
    # release date".
    serializd.log_entry(None, TMDB, 2, 1, backdate=iso(now - DAY))
    out = sync_by_cli(path, "--yes")
    trakt.log_play(show.seasons[2].episodes[1], "released")
    out += sync_by_cli(path, "--yes")
    out += sync_by_cli(path, "--yes", "--full")  # the daily full read
    out += sync_by_cli(path, "--yes")
    plays, diary = _held(trakt, serializd)
    # Trakt holds the copy and the mark, a second record of it left as it is; Serializd the
    # viewing once, no play at the release date.
    assert plays == Counter({(1, 1): 1, (2, 1): 2}), out
    assert diary == Counter({(1, 1): 1, (2, 1): 1}), out
    assert "add_play serializd" not in out, out


def test_a_viewing_removed_with_its_second_mark_on_trakt_is_not_copied_back(
    tmp_path: Path, start_fake: Any
) -> None:
    """The viewing copied to Trakt, then marked there "watched on release date" (a second
    record of it), is deleted on Serializd: Trakt's copy and the mark go with it (the
    removal guard counting both), and the episode is not logged on Serializd again."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    now = int(time.time())
    show = _aired_weekly(trakt, serializd, "Later", now)
    path = link_config_file(tmp_path, trakt, serializd)
    sync_by_cli(path, "--yes")
    serializd.log_entry(None, TMDB, 1, 1, backdate=iso(now - DAY))
    out = sync_by_cli(path, "--yes")
    trakt.log_play(show.seasons[1].episodes[1], "released")
    out += sync_by_cli(path, "--yes", "--full")
    assert _held(trakt, serializd) == (Counter({(1, 1): 2}), Counter({(1, 1): 1})), out
    (entry,) = serializd.diary()
    serializd.delete_entry(entry, untick=True)
    # The plan says why a deletion takes two Trakt plays: the second is the viewing's mark.
    plan = sync_by_cli(path, "--dry-run", "--full")
    removals = [line.strip() for line in plan.splitlines() if "remove_play" in line]
    copy = re.fullmatch(
        r"remove_play trakt (\S+) \d{4}-\d\d-\d\d [^(]+\(removed on serializd\)", removals[0]
    )
    assert copy is not None and len(removals) == 2, plan
    episode = copy[1]
    assert removals[1] == (
        f"remove_play trakt {episode}  (its 'watched on release date' mark, a second record"
        " of the viewing removed on serializd)"
    ), plan
    out = sync_by_cli(path, "--yes", "--full")  # a delta read of Serializd sees no deletion
    assert "2 of 2 plays on trakt would be removed" in out, out
    assert _held(trakt, serializd) == (Counter({(1, 1): 2}), Counter()), out
    out += sync_by_cli(path, "--yes", "--confirm-removals")
    out += sync_by_cli(path, "--yes", "--full")
    out += sync_by_cli(path, "--yes")
    assert _held(trakt, serializd) == (Counter(), Counter()), out
    assert serializd.ticks() == set(), out  # not ticked watched again
    assert "add_play serializd" not in out, out


@pytest.mark.parametrize("unknown", [0, 60], ids=["air date alone", "show's runtime"])
@pytest.mark.parametrize("runtime", [None, 0], ids=["runtime null", "runtime 0"])
def test_a_mark_of_an_episode_trakt_knows_no_runtime_of_is_told_by_its_air_date(
    tmp_path: Path, start_fake: Any, runtime: int | None, unknown: int
) -> None:
    """Trakt lists the episode's air date and no runtime (null, or 0): where it dates the
    mark then is not documented, so it is told by its air date with a margin."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    trakt.runtime_when_unknown = unknown
    now = int(time.time())
    aired = now - 2000 * DAY // 3600 * 3600
    show = trakt.add_show("Unknown runtime", 2015, tmdb=TMDB, tvdb=TMDB + 1, seasons={})
    for number in (1, 2):
        trakt.add_episode(
            show, 1, number, tvdb=TMDB * 10 + number, runtime=runtime, first_aired=iso(aired)
        )
    serializd.add_show(TMDB, "Unknown runtime", seasons={1: 2})
    trakt.add_history(show.seasons[1].episodes[1], "released")  # a mark of the viewing below
    serializd.log_entry(None, TMDB, 1, 1, backdate=iso(now - 300 * DAY))
    path = link_config_file(tmp_path, trakt, serializd)
    out = sync_by_cli(path, "--yes")
    out += sync_by_cli(path, "--yes", "--full")
    assert _held(trakt, serializd) == (Counter({(1, 1): 1}), Counter({(1, 1): 1})), out


@pytest.mark.parametrize("dated", ["released", "by hand"])
def test_a_play_backdated_on_trakt_pairs_with_the_viewing_at_the_next_run(
    tmp_path: Path, start_fake: Any, dated: str
) -> None:
    """Weeks after the link's first run the user logs an episode on Serializd and adds it on
    trakt.tv too, marked "watched on release date" or dated by hand on the day they watched
    it, months back: both dates are older than the recent history a run between two daily
    full reads looks at. The next run (no full read due) reads Trakt in full, and the play
    pairs with the viewing: nothing is copied either way."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    now = int(time.time())
    show = _aired_weekly(trakt, serializd, "Backdated", now)
    watched = now - 200 * DAY // 3600 * 3600
    trakt.add_history(show.seasons[1].episodes[1], iso(watched))
    serializd.log_entry(None, TMDB, 1, 1, backdate=iso(watched))
    path = link_config_file(tmp_path, trakt, serializd)
    sync_by_cli(path, "--yes")
    assert _held(trakt, serializd) == (Counter({(1, 1): 1}), Counter({(1, 1): 1}))
    # Weeks later, both on the same day: logged on Serializd, added on trakt.tv.
    seen = now - 100 * DAY // 3600 * 3600
    serializd.log_entry(None, TMDB, 1, 2, backdate=iso(seen))
    trakt.log_play(show.seasons[1].episodes[2], "released" if dated == "released" else iso(seen))
    out = sync_by_cli(path, "--yes")
    both = Counter({(1, 1): 1, (1, 2): 1})
    assert _held(trakt, serializd) == (both, both), out
    assert "add_play" not in out, out
    out = sync_by_cli(path, "--yes", "--full")  # the daily full read: the plays pair still
    assert _held(trakt, serializd) == (both, both), out
    assert "add_play" not in out, out


@pytest.mark.parametrize("dated", ["released", "by hand"])
def test_a_play_backdated_on_trakt_is_read_beside_a_recent_play_of_the_same_window(
    tmp_path: Path, start_fake: Any, dated: str
) -> None:
    """As above, and between the same two runs the user watches another episode, scrobbled
    to Trakt tonight: the recent play, read as ever, no longer hides the backdated one. The
    next run finds both, reading the show's history, not all of Trakt's: the backdated play
    pairs with the viewing, the recent one is copied to Serializd."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    now = int(time.time())
    show = _aired_weekly(trakt, serializd, "Beside", now, episodes=3)
    watched = now - 200 * DAY // 3600 * 3600
    trakt.add_history(show.seasons[1].episodes[1], iso(watched))
    serializd.log_entry(None, TMDB, 1, 1, backdate=iso(watched))
    path = link_config_file(tmp_path, trakt, serializd)
    sync_by_cli(path, "--yes")
    full_reads = _full_reads(trakt)
    seen = now - 100 * DAY // 3600 * 3600
    serializd.log_entry(None, TMDB, 1, 2, backdate=iso(seen))
    trakt.log_play(show.seasons[1].episodes[2], "released" if dated == "released" else iso(seen))
    trakt.log_play(show.seasons[1].episodes[3], iso(now - 3600))
    out = sync_by_cli(path, "--yes")
    three = Counter({(1, 1): 1, (1, 2): 1, (1, 3): 1})
    assert _held(trakt, serializd) == (three, three), out
    assert "add_play trakt" not in out, out
    assert _full_reads(trakt) == full_reads, out
    out = sync_by_cli(path, "--yes", "--full")  # the daily full read: nothing left to do
    assert _held(trakt, serializd) == (three, three), out
    assert "add_play" not in out, out


def test_an_old_play_removed_on_trakt_is_removed_on_serializd_at_the_next_run(
    tmp_path: Path, start_fake: Any
) -> None:
    """A play months old removed on trakt.tv: the next run carries the removal to Serializd,
    as before, knowing it by the show's play count and reading that show's history, not all
    of Trakt's."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    now = int(time.time())
    show = _aired_weekly(trakt, serializd, "Removed", now, episodes=12)
    played = {}
    for number in range(1, 13):
        watched = now - (200 + number) * DAY // 3600 * 3600
        played[number] = trakt.add_history(show.seasons[1].episodes[number], iso(watched))
        serializd.log_entry(None, TMDB, 1, number, backdate=iso(watched))
    path = link_config_file(tmp_path, trakt, serializd)
    sync_by_cli(path, "--yes")
    full_reads = _full_reads(trakt)
    trakt.unlog_play(played[4])
    out = sync_by_cli(path, "--yes")
    left = Counter({(1, n): 1 for n in range(1, 13) if n != 4})
    assert _held(trakt, serializd) == (left, left), out
    assert _full_reads(trakt) == full_reads, out


@pytest.mark.parametrize("trakt_ahead", [0, 10 * 60], ids=["one clock", "trakt's 10 min ahead"])
def test_a_play_the_link_copied_to_trakt_dated_back_is_no_cause_for_a_full_read(
    tmp_path: Path, start_fake: Any, trakt_ahead: int
) -> None:
    """A viewing logged on Serializd months back is copied to Trakt at its date: that write
    of ours moves Trakt's history where a run does not look, and the next run knows it for
    its own (reading Trakt's recent history only, as before), also with this machine's clock
    minutes behind Trakt's (its time sync failed): Trakt stamps the change by its own."""
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    trakt.advance(trakt_ahead)
    now = int(time.time())
    show = trakt.add_show("Copied", 2015, tmdb=TMDB, tvdb=TMDB + 1, seasons={})
    for number in (1, 2):
        trakt.add_episode(show, 1, number, tvdb=TMDB * 10 + number, runtime=45)
    serializd.add_show(TMDB, "Copied", seasons={1: 2})
    watched = now - 200 * DAY // 3600 * 3600
    trakt.add_history(show.seasons[1].episodes[1], iso(watched))
    serializd.log_entry(None, TMDB, 1, 1, backdate=iso(watched))
    path = link_config_file(tmp_path, trakt, serializd)
    sync_by_cli(path, "--yes")
    serializd.log_entry(None, TMDB, 1, 2, backdate=iso(now - 100 * DAY))
    out = sync_by_cli(path, "--yes")
    assert _held(trakt, serializd)[0] == Counter({(1, 1): 1, (1, 2): 1}), out
    full_reads = _full_reads(trakt)
    out = sync_by_cli(path, "--yes")
    assert _full_reads(trakt) == full_reads, out
    assert _held(trakt, serializd) == (
        Counter({(1, 1): 1, (1, 2): 1}),
        Counter({(1, 1): 1, (1, 2): 1}),
    ), out


@pytest.mark.parametrize("logged", ["scrobble", "checkin"])
def test_a_viewing_watched_live_as_it_aired_is_no_mark(
    tmp_path: Path, start_fake: Any, logged: str
) -> None:
    """An anime simulcast watched as it aired, scrobbled to Trakt (a browser scrobbler) or
    checked in there, minutes after its air time, of an episode Trakt knows no runtime of
    yet; rewatched days later and logged on Serializd, while watchbridge was down. Trakt's
    play is a viewing of its own (a scrobble or a check-in is never a mark, which is a
    history add): each viewing is copied to the other side, neither is lost."""
    trakt, serializd, show, now, aired, path = _simulcast(tmp_path, start_fake)
    trakt.add_history(show.seasons[1].episodes[2], iso(aired + 25 * 60), action=logged)
    serializd.log_entry(None, TMDB, 1, 2, backdate=iso(now - 4 * DAY))
    out = sync_by_cli(path, "--yes", "--full")
    out += sync_by_cli(path, "--yes")
    both = Counter({(1, 1): 1, (1, 2): 2})
    assert _held(trakt, serializd) == (both, both), out


def test_a_live_viewing_taken_for_a_mark_before_the_upgrade_is_dated_again(
    tmp_path: Path, start_fake: Any
) -> None:
    """The simulcast of the test above, synced by the release before this one, which took
    Trakt's scrobble for a 'watched on release date' mark (it read no history action): the
    mark paired with Serializd's rewatch, neither copied. The next full read (daily) tells
    it was a scrobble: it is dated again, and each viewing copied to the other side."""
    trakt, serializd, show, now, aired, path = _simulcast(tmp_path, start_fake)
    # Read as the release before read it: a play at the air time, taken for a mark.
    live = trakt.add_history(show.seasons[1].episodes[2], iso(aired + 25 * 60))
    serializd.log_entry(None, TMDB, 1, 2, backdate=iso(now - 4 * DAY))
    out = sync_by_cli(path, "--yes", "--full")
    taken = Counter({(1, 1): 1, (1, 2): 1})
    assert _held(trakt, serializd) == (taken, taken), out
    live.action = "scrobble"  # what Trakt said all along
    out = sync_by_cli(path, "--yes", "--full")  # the upgrade's first daily full read
    out += sync_by_cli(path, "--yes")
    both = Counter({(1, 1): 1, (1, 2): 2})
    assert _held(trakt, serializd) == (both, both), out
    # and stays so: nothing more copied, nothing removed
    out = sync_by_cli(path, "--yes", "--full") + sync_by_cli(path, "--yes")
    assert _held(trakt, serializd) == (both, both), out
