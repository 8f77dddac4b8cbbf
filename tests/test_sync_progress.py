"""What a sync run reports: the summary per profile and side (pure), the table, short cursors."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

from rich.console import Console

from watchbridge.config import Link
from watchbridge.progress import (
    DeliveryBar,
    RunStats,
    SideStats,
    SummaryRow,
    render_table,
    short_cursor,
    summary_rows,
)
from watchbridge.reconcile import Action, Plan
from watchbridge.sync import ProfilePlan, outbox_rows

LINK = Link(["trakt", "serializd"])
E1, E2, E3 = (f"episode:tmdb:1396:s1e{n}" for n in (1, 2, 3))


def profile_plan(*actions: Action, held: str = "", unchanged: bool = False) -> ProfilePlan:
    sizes = {} if unchanged else {"trakt": 3, "serializd": 2}
    plan = Plan(tuple(actions), frozenset(), held)
    return ProfilePlan("me", plan, sizes, {}, first_run=False, unchanged=unchanged)


def rows(plan: ProfilePlan, applied: bool = True, confirm: bool = False) -> dict[str, SummaryRow]:
    stats = RunStats()
    stats.sides[("me", "trakt")] = SideStats(requests=4, seconds=0.5)
    made = summary_rows(
        [plan],
        LINK.services,
        stats,
        lambda profile, actions: len(outbox_rows("ts", profile, actions)[0]),
        applied=applied,
        confirm_removals=confirm,
    )
    return {row.side: row for row in made}


def test_each_side_counts_the_writes_planned_for_it() -> None:
    summary = rows(
        profile_plan(
            Action("add_play", "serializd", E1, "new on trakt", 10.0),
            Action("add_play", "serializd", E2, "new on trakt", 20.0),
            Action("set_rating", "trakt", E1, "rated on serializd", 30.0, value=80),
        )
    )
    assert summary["serializd"].plain() == (
        "summary me serializd: plays=2 adds=2 removals=0 ratings=0 queued=2 held=0 skipped=0 "
        "requests=0 seconds=0.00"
    )
    assert (summary["trakt"].ratings, summary["trakt"].queued) == (1, 1)
    assert (summary["trakt"].requests, summary["trakt"].seconds) == (4, 0.5)


def test_held_removals_are_counted_as_held_not_queued() -> None:
    plan = profile_plan(
        Action("remove_play", "serializd", E1, "removed on trakt", 10.0, record="7"),
        Action("add_play", "serializd", E2, "new on trakt", 20.0),
        held="1 of 2 plays on serializd would be removed",
    )
    assert (rows(plan)["serializd"].held, rows(plan)["serializd"].queued) == (1, 1)
    confirmed = rows(plan, confirm=True)["serializd"]
    assert (confirmed.held, confirmed.queued) == (0, 2)


def test_a_dry_run_queues_nothing() -> None:
    plan = profile_plan(Action("add_play", "serializd", E1, "new on trakt", 10.0))
    assert rows(plan, applied=False)["serializd"].queued == 0


def test_a_write_no_row_can_name_is_skipped() -> None:
    plan = profile_plan(Action("add_play", "trakt", "episode:nope:1:s1e1", "new", 10.0))
    assert (rows(plan)["trakt"].skipped, rows(plan)["trakt"].queued) == (1, 0)


def test_a_profile_with_nothing_new_reads_as_unchanged() -> None:
    assert "plays=unchanged" in rows(profile_plan(unchanged=True))["trakt"].plain()


def test_the_summary_table_fits_eighty_columns() -> None:
    row = SummaryRow("household", "serializd", 100000, 1234, 12, 5000, 6246, 0, 0, 4021, 123.4)
    screen = io.StringIO()
    render_table(Console(file=screen, width=80), "ts: ok", [row])
    text = screen.getvalue()
    assert "household  serializd  100000  1234" in text and "…" not in text
    assert "held" not in text  # shown only when something was held


def test_cursors_are_shown_short() -> None:
    value = (
        '{"all": "2026-11-22T05:45:47.095Z", "history_at": "1795326349.36", '
        '"rated": "2026-11-22T05:45:43.912Z,2026-11-22T05:46:47.095Z", '
        '"diary_ids": "[1, 2, 3]"}'
    )
    assert short_cursor(value) == (
        "all 2026-11-22 05:45 UTC, diary_ids 3 ids, history_at 2026-11-22 05:45 UTC, "
        "rated 2026-11-22 05:46 UTC"
    )
    many = json.dumps({k: "2026-11-22T05:45:47.095Z" for k in ("all", "rated", "watched")})
    assert len(short_cursor(many, width=40)) == 40 and short_cursor(many, width=40).endswith("…")
    kept = '{"v":1,"episodes":[["episode:tmdb:1396:s1e2",1795326349,"7","8","9"]]}'
    assert short_cursor(json.dumps({"recent_episodes": kept})) == "recent_episodes 1 episode"


def test_a_plex_history_cursor_is_told_as_the_rows_read() -> None:
    # It showed "history 2:2" (rows and the newest's id), and "history 0:" with none.
    assert short_cursor('{"history": "2:2"}') == "history 2 rows"
    assert short_cursor('{"history": "1:48"}') == "history 1 row"
    assert short_cursor('{"history": "0:"}') == "history 0 rows"
    assert short_cursor('{"history": "all:7:12"}') == "history 7 rows of every account"
    assert short_cursor('{"history": "all:"}') == "history to read again"


def test_a_cursor_shows_only_what_a_user_can_read() -> None:
    # `watchbridge status` printed "marks {}", "rating_rows {"episode:tmdb:1396:s1e…",
    # "written d2a1d59cd83f…", "entries 7 401300001", "dated_by 0 ids" and, for an empty
    # AniList list, "updated_at 1970-01-01 00:00 UTC": bookkeeping, not how far it read.
    serializd = {
        "diary_ids": "[1, 2]",
        "marks": "{}",
        "rating_rows": '{"episode:tmdb:1396:s1e1": [7, 8]}',
        "written": "d2a1d59cd83f0b6e5c1a",
        "ledger_ids": "[1]",
    }
    assert short_cursor(json.dumps(serializd)) == "diary_ids 2 ids"
    anilist = {
        "updated_at": "1790000000.0",
        "entries": '{"7":[401300001,1,2,3,4,5,6,7,8,9]}',
        "dated_by": "[]",
    }
    assert short_cursor(json.dumps(anilist)) == "entries 1 entry, updated_at 2026-09-21 14:13 UTC"
    empty = {"updated_at": "0.0", "entries": "{}", "dated_by": "[]"}
    assert short_cursor(json.dumps(empty)) == "entries 0 entries"
    assert short_cursor(json.dumps({"marks": "{}", "written": "abc"})) == ""
    assert short_cursor("d2a1d59cd83f0b6e5c1a") == ""  # no JSON: nothing to read in it


def test_a_cursor_counts_one_id_in_the_singular() -> None:
    assert short_cursor('{"diary_ids": "[7]"}') == "diary_ids 1 id"


def test_a_terminal_sees_the_delivery_bar_fill() -> None:
    screen = io.StringIO()
    with DeliveryBar(Console(file=screen, force_terminal=True, width=80), total=4) as bar:
        bar.update(1)
        bar.update(4)
    assert "delivering" in screen.getvalue() and "100%" in screen.getvalue()


def test_a_cursors_times_are_told_on_the_households_clock(
    time_zone: Callable[[str], None],
) -> None:
    # Under a run time on Berlin's clock, its cursor said "history_at 2026-09-21 14:13 UTC".
    time_zone("Europe/Berlin")
    value = '{"all": "2026-11-22T05:45:47.095Z", "history_at": "1790000000"}'
    assert short_cursor(value) == "all 2026-11-22 06:45 CET, history_at 2026-09-21 16:13 CEST"
