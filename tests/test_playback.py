"""Playback sessions: one play per viewing, whatever the media server repeats."""

from __future__ import annotations

from dataclasses import replace

import pytest

from watchbridge.model import Account, Ids, MediaEvent, MediaRef
from watchbridge.playback import (
    REWATCH_AFTER_IDLE,
    Intent,
    Session,
    completion_key,
    decide,
    ends_a_viewing,
    finished_its_rest,
    got_into_a_viewing,
    hand_mark,
    recorded_completion,
    recorded_rest_end,
    recorded_start,
    session_key,
)

MOVIE = MediaRef("movie", Ids(imdb="tt0111161"), title="The Shawshank Redemption", year=1994)
MINUTE = 60_000


def event(
    action: str,
    position_min: float | None = None,
    played: bool = False,
    item: MediaRef = MOVIE,
    rating: int | None = None,
) -> MediaEvent:
    return MediaEvent(
        source="plex",
        action=action,
        item=item,
        server="srv",
        account=Account("1", "owner"),  # type: ignore[arg-type]
        player="tv",
        position_ms=None if position_min is None else int(position_min * MINUTE),
        duration_ms=100 * MINUTE,
        played=played,
        rating=rating,
    )


def run(*events: MediaEvent) -> tuple[Session | None, list[Intent]]:
    session: Session | None = None
    intents: list[Intent] = []
    for n, e in enumerate(events):
        session, produced = decide(session, e, threshold=90, now=1000.0 + n)
        intents += produced
    return session, intents


def kinds(intents: list[Intent]) -> list[str]:
    return [f"{i.kind}:{i.action}" if i.action else i.kind for i in intents]


def test_play_then_stop_past_threshold_is_one_play() -> None:
    _, intents = run(event("start", 0), event("stop", 95))
    assert kinds(intents) == ["watching:start", "play"]


def test_scrobble_then_stop_is_still_one_play() -> None:
    _, intents = run(event("start", 0), event("stop", 91, played=True), event("stop", 99))
    assert kinds(intents) == ["watching:start", "play"]


def test_repeated_stops_make_one_play() -> None:
    _, intents = run(event("stop", 95), event("stop", 95), event("stop", 96))
    assert kinds(intents) == ["play"]


def test_stop_below_threshold_is_a_pause_capped_under_80() -> None:
    _, intents = run(event("start", 0), event("stop", 85))
    assert kinds(intents) == ["watching:start", "watching:pause"]
    assert intents[-1].progress == 79.9


def test_server_completion_signal_counts_without_progress() -> None:
    _, intents = run(event("stop", None, played=True))
    assert kinds(intents) == ["play"]


def test_progress_storm_starts_once() -> None:
    _, intents = run(*[event("progress", n) for n in range(10)])
    assert kinds(intents) == ["watching:start"]


def test_pause_and_resume() -> None:
    _, intents = run(event("start", 0), event("pause", 30), event("pause", 30), event("resume", 30))
    assert kinds(intents) == ["watching:start", "watching:pause", "watching:start"]


def test_restart_near_the_end_after_completion_is_the_same_viewing() -> None:
    _, intents = run(event("stop", 95), event("start", 92), event("stop", 99))
    assert kinds(intents) == ["play"]


def test_start_from_the_beginning_after_completion_is_a_rewatch() -> None:
    _, intents = run(event("stop", 95), event("start", 0), event("stop", 97))
    assert kinds(intents) == ["play", "watching:start", "play"]
    assert intents[0].key != intents[2].key


def test_manual_mark_is_a_play_that_is_not_live() -> None:
    _, intents = run(event("played", None, played=True))
    assert kinds(intents) == ["play"] and not intents[0].live


def test_rating_needs_no_session() -> None:
    session, intents = run(event("rate", rating=80))
    assert session is None
    assert kinds(intents) == ["rating"] and intents[0].rating == 80


def test_idempotency_keys_repeat_for_a_repeated_viewing_signal() -> None:
    first = decide(None, event("stop", 95), 90, now=1.0)[1]
    again = decide(None, event("stop", 95), 90, now=1.0)[1]
    assert [i.key for i in first] == [i.key for i in again]


def test_a_start_without_a_position_minutes_after_completion_is_the_same_viewing() -> None:
    # Plex sends a second media.play minutes after its scrobble (skipped credits).
    _, intents = run(event("stop", 95), event("start"), event("stop", played=True))
    assert kinds(intents) == ["play"]


def test_a_start_without_a_position_hours_after_completion_is_a_rewatch() -> None:
    # Plex leaves viewOffset out of media.play when playback begins at the start.
    session, first = decide(None, event("stop", 95), 90, now=1000.0)
    later = 1000.0 + REWATCH_AFTER_IDLE
    session, started = decide(session, event("start"), 90, now=later)
    _, second = decide(session, event("stop", played=True), 90, now=later + 5400)
    assert kinds(first + started + second) == ["play", "watching:start", "play"]
    assert first[0].key != second[0].key


def at_times(*timed: tuple[float, MediaEvent]) -> list[Intent]:
    session: Session | None = None
    intents: list[Intent] = []
    for now, e in timed:
        session, produced = decide(session, e, threshold=90, now=now)
        intents += produced
    return intents


def test_a_start_without_a_position_then_an_early_pause_is_a_rewatch() -> None:
    # Watched again 40 minutes later: Plex's media.play from the start has no viewOffset.
    intents = at_times(
        (0.0, event("stop", 95)),
        (2400.0, event("start")),
        (3000.0, event("pause", 9)),
        (3060.0, event("resume", 9)),
        (8400.0, event("stop", played=True)),
    )
    assert kinds(intents) == ["play", "watching:pause", "watching:start", "play"]
    assert intents[0].key != intents[-1].key


def test_a_start_without_a_position_then_a_late_position_is_the_same_viewing() -> None:
    # Back to the credits after the scrobble.
    intents = at_times(
        (0.0, event("stop", 95)), (120.0, event("start")), (300.0, event("stop", 99))
    )
    assert kinds(intents) == ["play"]


def test_a_start_without_a_position_then_a_late_pause_reached_by_playing_is_a_rewatch() -> None:
    # Replayed an hour later; first pause 60 minutes in (60 %): that took playing from the start.
    intents = at_times(
        (0.0, event("stop", 95)),
        (3600.0, event("start")),
        (7200.0, event("pause", 60)),
        (7320.0, event("resume", 60)),
        (9000.0, event("stop", played=True)),
    )
    assert kinds(intents).count("play") == 2


def test_a_short_episode_watched_twice_in_a_row_is_two_plays() -> None:
    seven = MediaRef("episode", show_ids=Ids(tmdb="82728"), season=1, number=3)
    short = {"item": seven}
    intents = at_times(
        (0.0, replace(event("start", 0, **short), duration_ms=7 * MINUTE)),
        (380.0, replace(event("stop", played=True, **short), duration_ms=7 * MINUTE)),
        (430.0, replace(event("start", **short), duration_ms=7 * MINUTE)),
        (810.0, replace(event("stop", played=True, **short), duration_ms=7 * MINUTE)),
    )
    assert kinds(intents).count("play") == 2


def test_a_second_scrobble_a_viewing_after_a_position_less_start_is_a_rewatch() -> None:
    intents = at_times(
        (0.0, event("stop", played=True)),
        (1800.0, event("start")),
        (1800.0 + 5400, event("stop", played=True)),
    )
    assert kinds(intents) == ["play", "play"]


def test_a_played_mark_hours_after_the_last_is_another_play() -> None:
    later = REWATCH_AFTER_IDLE + 1
    intents = at_times((0.0, event("played", played=True)), (later, event("played", played=True)))
    assert kinds(intents) == ["play", "play"]


def test_a_played_mark_toggled_off_and_on_is_one_play() -> None:
    intents = at_times(
        (0.0, event("played", played=True)),
        (30.0, event("unplayed")),
        (60.0, event("played", played=True)),
    )
    assert kinds(intents) == ["play"]


def test_rating_changes_within_one_minute_are_each_kept() -> None:
    keys = [
        decide(None, e, 90, now=1000.0 + n)[1][0].key
        for n, e in enumerate([event("rate", rating=80), event("rate"), event("rate", rating=80)])
    ]
    assert len(set(keys)) == 3


def test_a_resume_without_a_position_after_completion_is_the_same_viewing() -> None:
    _, intents = run(event("stop", 95), event("resume"), event("stop", 99))
    assert kinds(intents) == ["play"]


def test_a_viewing_after_the_session_was_forgotten_has_a_new_play_key() -> None:
    # Idle sessions are pruned after a day; delivered rows keep their keys for a week.
    first = decide(None, event("stop", 95), 90, now=1000.0)[1]
    days_later = decide(None, event("stop", 95), 90, now=1000.0 + 3 * 86400)[1]
    assert first[0].key != days_later[0].key


def test_clearing_a_rating_removes_it() -> None:
    session, intents = run(event("rate", rating=None))
    assert session is None
    assert kinds(intents) == ["remove_rating"]


def test_a_position_less_start_after_completing_from_an_early_start_is_not_a_rewatch() -> None:
    # Started at 2 %, completed by a scrobble without a position, then Plex's second media.play.
    _, intents = run(
        event("start", 2), event("stop", played=True), event("start"), event("stop", 96)
    )
    assert kinds(intents) == ["watching:start", "play"]


def test_a_player_name_cut_mid_emoji_still_makes_a_session() -> None:
    # JSON may carry a lone surrogate ("\ud83d"): a device name truncated by the server.
    cut = MediaEvent(**{**event("start", 0).__dict__, "player": "Alex's iPhone \ud83d"})
    session, intents = decide(None, cut, threshold=90, now=1000.0)
    assert session is not None and kinds(intents) == ["watching:start"]


def test_a_companion_episode_completes_and_restarts_with_the_file_but_shows_no_live_state() -> None:
    second = MediaRef("episode", show_ids=Ids(tmdb="1396"), season=5, number=16)
    companion = {"item": second}
    intents = at_times(
        (0.0, replace(event("start", 0, **companion), companion=True)),
        (3000.0, replace(event("stop", 97, **companion), companion=True)),
        (3600.0, replace(event("start", 0, **companion), companion=True)),
        (6600.0, replace(event("stop", 97, **companion), companion=True)),
    )
    assert kinds(intents) == ["play", "play"]


def test_a_percent_without_a_position_is_never_taken_for_one_reached_by_playing() -> None:
    # The generic schema may send only `progress`: back to the credits after a viewing.
    def generic(action: str, percent: float | None = None) -> MediaEvent:
        return replace(event(action), position_ms=None, duration_ms=None, percent=percent)

    intents = at_times(
        (0.0, generic("start", 0)),
        (3000.0, generic("stop", 95)),
        (3120.0, generic("start")),
        (3300.0, generic("stop", 99)),
    )
    assert kinds(intents).count("play") == 1


def test_episodes_known_by_absolute_number_alone_are_items_of_their_own() -> None:
    show = Ids(anilist="21")
    first = MediaRef("episode", show_ids=show, show_title="One Piece", absolute=1)
    second = replace(first, absolute=2)
    untitled = MediaRef("episode", absolute=1)
    assert first.key() == "episode:anilist:21:sNoneeNonea1"
    assert (
        len({first.key(), second.key(), untitled.key(), replace(untitled, absolute=2).key()}) == 4
    )


def test_an_absolute_number_within_a_season_keeps_episodes_apart() -> None:
    hama = MediaRef("episode", show_ids=Ids(tvdb="81797"), season=2, absolute=100)
    assert hama.key() != replace(hama, absolute=101).key()


def test_keys_of_episodes_numbered_by_season_are_as_before() -> None:
    episode = MediaRef("episode", show_ids=Ids(tvdb="81189"), season=1, number=2)
    assert episode.key() == "episode:tvdb:81189:s1e2"
    assert replace(episode, show_ids=Ids(), show_title="BB").key() == "episode:title:BB:s1e2"
    assert replace(episode, absolute=2).key() == episode.key()  # also numbered absolutely


def test_two_absolute_numbered_episodes_marked_played_minutes_apart_are_two_plays() -> None:
    first = MediaRef("episode", show_ids=Ids(anilist="21"), absolute=1)
    second = replace(first, absolute=2)
    _, intents = run(event("played", played=True, item=first))
    _, more = run(event("played", played=True, item=second))
    assert kinds(intents + more) == ["play", "play"]
    assert intents[0].key != more[0].key


def by_session(*timed: tuple[float, MediaEvent]) -> list[Intent]:
    """Like `at_times`, with each event given the session the store keeps under its key and
    the item's marks (each completion, end of a playback of a viewing's rest, or viewing that
    got going, recorded there as the store records it)."""
    sessions: dict[str, Session] = {}
    intents: list[Intent] = []
    for now, e in timed:
        key, completions = session_key(e), completion_key(e)
        before = sessions.get(key)
        marks = sessions.get(completions) if completions is not None else None
        after, produced = decide(before, e, threshold=90, now=now, marks=marks)
        if after is not None:
            sessions[key] = after
            if completions is not None and ends_a_viewing(before, after):
                sessions[completions] = recorded_completion(after, marks, completions)
            elif completions is not None and marks and finished_its_rest(before, after):
                sessions[completions] = recorded_rest_end(marks, after.updated_at)
            elif completions is not None and marks and got_into_a_viewing(before, after):
                sessions[completions] = recorded_start(marks, after.updated_at)
        intents += produced
    return intents


DAY_LATER = 20 * 3600.0


def test_the_servers_completion_signal_a_viewing_after_the_last_event_is_a_rewatch() -> None:
    # Tautulli's `watched` (or Jellyfin's completed stop) of a rewatch whose start was lost.
    intents = at_times((0.0, event("stop", played=True)), (DAY_LATER, event("stop", played=True)))
    assert kinds(intents) == ["play", "play"]
    assert intents[0].key != intents[1].key


def test_a_position_before_half_way_hours_after_a_viewing_is_a_rewatch() -> None:
    # Plex's media.play was lost; the first pause is 9 minutes in.
    intents = at_times(
        (0.0, event("stop", 95)),
        (DAY_LATER, event("pause", 9)),
        (DAY_LATER + 60, event("resume", 9)),
        (DAY_LATER + 5400, event("stop", 97)),
    )
    assert kinds(intents) == ["play", "watching:pause", "watching:start", "play"]


def test_a_second_completion_signal_after_resuming_the_credits_is_the_same_viewing() -> None:
    # Regression guard: stopped at 92 % (completed), back hours later for the credits.
    intents = at_times(
        (0.0, event("stop", 92, played=True)),
        (4 * 3600.0, event("start", 92)),
        (4 * 3600.0 + 900, event("stop", 100, played=True)),
    )
    assert kinds(intents) == ["play"]


def test_a_start_position_minutes_after_a_viewing_is_the_same_viewing() -> None:
    # Regression guard: players report position 0 once done; only a start at 0 says "again".
    intents = at_times(
        (0.0, event("stop", 95, played=True)),
        (60.0, event("progress", 0)),
        (120.0, event("stop", 0, played=True)),
    )
    assert kinds(intents) == ["play"]


def test_a_progress_report_just_after_a_stop_does_not_start_playback_again() -> None:
    # Jellyfin's last report, sent before the stop, can arrive after it.
    intents = at_times(
        (0.0, event("start", 0)), (1140.0, event("stop", 40)), (1141.0, event("progress", 39.9))
    )
    assert kinds(intents) == ["watching:start", "watching:pause"]


def test_a_progress_report_long_after_a_stop_starts_playback_again() -> None:
    # Regression guard: playing again, its start lost.
    intents = at_times(
        (0.0, event("start", 0)), (1140.0, event("stop", 40)), (1800.0, event("progress", 41))
    )
    assert kinds(intents) == ["watching:start", "watching:pause", "watching:start"]


def test_live_states_within_one_second_have_keys_of_their_own() -> None:
    intents = at_times(
        (0.0, event("start", 0)),
        (600.1, event("pause", 30)),
        (600.4, event("resume", 30)),
        (600.7, event("pause", 30)),
        (600.9, event("stop", 30)),
    )
    actions = [i.action for i in intents]
    assert actions == ["start", "pause", "start", "pause", "pause"]
    assert len({i.key for i in intents}) == len(intents)


def jellyfin(action: str, position_min: float | None = None, played: bool = False) -> MediaEvent:
    return replace(event(action, position_min, played), source="jellyfin")


def test_a_jellyfin_played_mark_soon_after_a_playback_is_the_same_viewing() -> None:
    # The mark names no device; the playback was on the TV.
    intents = by_session(
        (0.0, jellyfin("start", 0)),
        (6000.0, jellyfin("stop", 98, played=True)),
        (6600.0, replace(jellyfin("played", played=True), player="")),
    )
    assert kinds(intents) == ["watching:start", "play"]


def dated_mark(at: float) -> MediaEvent:
    """A `played` mark naming the player, dated: a history script sending an old viewing."""
    return replace(event("played", played=True), occurred_at=at)


def test_a_mark_dated_hours_before_the_last_viewing_is_a_play_of_its_own() -> None:
    intents = at_times(
        (DAY_LATER, event("stop", 95)),
        (DAY_LATER + 10, dated_mark(1000.0)),
        (DAY_LATER + 40, event("stop", 95, played=True)),  # the player repeats its stop
    )
    assert [(i.kind, i.at) for i in intents] == [("play", DAY_LATER), ("play", 1000.0)]


def test_a_mark_dated_hours_earlier_does_not_end_the_viewing_in_progress() -> None:
    intents = at_times(
        (DAY_LATER, event("start", 0)),
        (DAY_LATER + 60, dated_mark(1000.0)),
        (DAY_LATER + 5400, event("stop", 95)),
    )
    assert [(i.kind, i.at) for i in intents] == [
        ("watching", DAY_LATER),
        ("play", 1000.0),
        ("play", DAY_LATER + 5400),
    ]
    assert len({i.key for i in intents}) == 3


def test_a_mark_dated_just_before_the_end_of_a_viewing_leaves_its_time_alone() -> None:
    # The script's clock (or its idea of when the film ended) is two hours off.
    intents = at_times(
        (DAY_LATER, event("stop", 95)),
        (DAY_LATER + 10, dated_mark(DAY_LATER - 2 * 3600)),
        (DAY_LATER + 40, event("stop", 95, played=True)),
    )
    assert kinds(intents) == ["play"]


def test_a_dated_mark_sent_twice_is_one_play() -> None:
    intents = at_times(
        (DAY_LATER, event("stop", 95)),
        (DAY_LATER + 10, dated_mark(1000.0)),
        (DAY_LATER + 20, dated_mark(1000.0)),
    )
    assert len({i.key for i in intents}) == 2


def test_a_dated_mark_sent_again_after_the_viewing_moved_on_is_the_same_play() -> None:
    # A history script run twice: before and after tonight's viewing on that player.
    intents = at_times(
        (DAY_LATER, dated_mark(1000.0)),
        (DAY_LATER + 10, event("start", 0)),
        (DAY_LATER + 5400, event("stop", 95)),
        (DAY_LATER + 5500, dated_mark(1000.0)),
    )
    plays = [i.key for i in intents if i.kind == "play"]
    assert len(plays) == 3 and len(set(plays)) == 2


def test_a_mark_completing_a_viewing_in_progress_does_not_move_its_time_back() -> None:
    intents = at_times(
        (DAY_LATER, event("start", 0)),
        (DAY_LATER + 6000, event("pause", 95)),
        (DAY_LATER + 6010, dated_mark(DAY_LATER - 1200)),  # dated before the start
        (DAY_LATER + 6060, replace(event("stop", played=True), position_ms=None)),
    )
    assert kinds(intents) == ["watching:start", "watching:pause", "play"]


def test_a_stop_exactly_at_the_threshold_is_a_play() -> None:
    _, intents = run(event("start", 0), event("stop", 90))
    assert kinds(intents) == ["watching:start", "play"]


def test_a_start_just_past_the_first_moments_after_completion_is_no_rewatch() -> None:
    # Only a start at <= 5 % begins the item again.
    _, intents = run(event("stop", 95), event("start", 5.5), event("stop", 97))
    assert kinds(intents) == ["play"]


def test_a_position_just_past_half_way_after_a_position_less_start_is_the_same_viewing() -> None:
    # Three minutes cannot have played to 55 %: a return into that viewing, not a restart.
    intents = at_times(
        (0.0, event("stop", 95)), (120.0, event("start")), (300.0, event("pause", 55))
    )
    assert kinds(intents) == ["play"]


def test_a_progress_report_twenty_seconds_after_a_stop_was_sent_before_it() -> None:
    intents = at_times(
        (0.0, event("start", 0)), (1140.0, event("stop", 40)), (1160.0, event("progress", 39.9))
    )
    assert kinds(intents) == ["watching:start", "watching:pause"]


def test_a_second_scrobble_minutes_after_a_position_less_start_is_the_same_viewing() -> None:
    # Seven minutes cannot hold a viewing of a 100-minute film: back to the credits.
    intents = at_times(
        (0.0, event("stop", played=True)),
        (60.0, event("start")),
        (60.0 + 420, event("stop", played=True)),
    )
    assert kinds(intents) == ["play"]


def test_a_short_episodes_second_scrobble_sooner_than_most_of_its_length_is_the_same_viewing() -> (
    None
):
    seven = MediaRef("episode", show_ids=Ids(tmdb="82728"), season=1, number=3)

    def short(action: str, played: bool = False) -> MediaEvent:
        return replace(event(action, played=played, item=seven), duration_ms=7 * MINUTE)

    # 250 s after the start: under 80 % of the episode's 420 s.
    intents = at_times(
        (0.0, short("stop", played=True)), (60.0, short("start")), (310.0, short("stop", True))
    )
    assert kinds(intents) == ["play"]


def test_a_position_less_completion_hours_after_a_resumed_playback_is_a_new_viewing() -> None:
    # The rest watched in the afternoon; the evening's rewatch lost its start.
    intents = at_times(
        (0.0, event("stop", 92, played=True)),
        (4 * 3600.0, event("start", 92)),
        (4 * 3600.0 + DAY_LATER, event("stop", played=True)),
    )
    assert kinds(intents) == ["play", "play"]


def test_a_position_less_completion_a_viewing_after_a_resumed_playback_stopped_is_new() -> None:
    # Resumed at 60 %, stopped at 70 %: that playback ended; a scrobble 20 minutes later
    # comes from another one, whose start was lost.
    intents = at_times(
        (0.0, event("stop", 95, played=True)),
        (3600.0, event("start", 60)),
        (3700.0, event("stop", 70)),
        (4900.0, event("stop", played=True)),
    )
    assert kinds(intents) == ["play", "play"]


def on(player: str, e: MediaEvent) -> MediaEvent:
    return replace(e, player=player)


def test_a_mark_soon_after_a_completion_is_that_play_though_another_viewing_got_going() -> None:
    # Finished on the TV; the tablet starts it again; Jellyfin's mark 20 minutes after the end.
    intents = by_session(
        (0.0, jellyfin("start", 0)),
        (6000.0, jellyfin("stop", 98, played=True)),
        (6300.0, on("tablet", jellyfin("start", 0))),
        (6900.0, on("tablet", jellyfin("progress", 10))),
        (7200.0, on("", jellyfin("played", played=True))),
    )
    assert kinds(intents) == ["watching:start", "play", "watching:start"]


def test_a_viewing_dated_before_the_last_one_that_got_going_leaves_its_time_alone() -> None:
    # A generic source's event dated earlier (sent late) gets going after a later one did.
    marks = Session("marks", "completed", 95.0, 1, 3000.0, began_at=5000.0)
    assert recorded_start(marks, 4000.0).began_at == 5000.0


def test_a_mark_soon_after_a_rewatch_completed_by_one_signal_is_that_rewatchs_play() -> None:
    # Tautulli-like: the rewatch's start was lost; its completion alone ends it.
    intents = by_session(
        (0.0, event("stop", 95, played=True)),
        (DAY_LATER, event("stop", played=True)),
        (DAY_LATER + 600, on("", event("played", played=True))),
    )
    assert kinds(intents) == ["play", "play"]


def test_a_player_resuming_where_it_left_off_hours_later_plays_a_viewing_of_its_own() -> None:
    # The TV paused at 60 % last night; the tablet watched it all; the TV goes on at 63 %.
    intents = by_session(
        (0.0, jellyfin("start", 0)),
        (3600.0, jellyfin("pause", 60)),
        (4000.0, on("tablet", jellyfin("start", 0))),
        (10000.0, on("tablet", jellyfin("stop", 97))),
        (15000.0, jellyfin("resume", 63)),
        (17000.0, jellyfin("stop", 96)),
    )
    assert kinds(intents).count("play") == 2


def dated(e: MediaEvent, at: float) -> MediaEvent:
    return replace(e, occurred_at=at)


def test_an_unseen_players_stop_dated_before_another_players_completion_is_its_own_play() -> None:
    # Two rooms: the TV's start was lost, its stop is timed just before the tablet's end.
    intents = by_session(
        (0.0, on("tablet", jellyfin("start", 0))),
        (6000.0, on("tablet", jellyfin("stop", 96))),
        (6001.0, dated(jellyfin("stop", 97), 5990.0)),
    )
    assert kinds(intents) == ["watching:start", "play", "play"]


def test_a_start_past_half_way_dated_before_another_players_completion_is_not_finishing_it() -> (
    None
):
    intents = by_session(
        (0.0, on("tablet", jellyfin("start", 0))),
        (6000.0, on("tablet", jellyfin("stop", 96))),
        (6001.0, dated(jellyfin("start", 60), 5990.0)),
        (8000.0, jellyfin("stop", 97)),
    )
    assert kinds(intents) == ["watching:start", "play", "watching:start", "play"]


def generic(action: str, position_min: float | None = None, played: bool = False) -> MediaEvent:
    return replace(event(action, position_min, played), source="generic")


def test_a_position_less_start_dated_hours_before_a_completion_begins_a_viewing() -> None:
    # Sent late: an earlier viewing, not a return to the credits of the completed one.
    hours_before = DAY_LATER - 4 * 3600
    intents = at_times(
        (DAY_LATER, generic("stop", played=True)),
        (DAY_LATER + 10, dated(generic("start"), hours_before)),
        (DAY_LATER + 20, dated(generic("stop", played=True), hours_before + 5400)),
    )
    assert kinds(intents) == ["play", "watching:start", "play"]


def test_a_jellyfin_completion_a_viewing_after_a_position_less_start_is_a_rewatch() -> None:
    intents = at_times(
        (0.0, jellyfin("stop", played=True)),
        (1800.0, jellyfin("start")),
        (1800.0 + 5400, jellyfin("stop", played=True)),
    )
    assert kinds(intents) == ["play", "play"]


def test_a_second_position_less_start_hours_after_the_first_is_a_rewatch() -> None:
    # The first (minutes after the end) went nowhere; the evening's starts from the beginning.
    evening = 1800.0 + REWATCH_AFTER_IDLE
    intents = at_times(
        (0.0, event("stop", 95)),
        (1800.0, event("start")),
        (evening, event("start")),
        (evening + 5400, event("stop", 97)),
    )
    assert kinds(intents) == ["play", "watching:start", "play"]


# --------------------------------------------------------------------------- exact boundaries
# Each rule's limit, met exactly, falls on the side README.md and docs/webhooks.md describe.

IDLE = REWATCH_AFTER_IDLE


def test_a_start_at_exactly_5_percent_after_completion_is_a_rewatch() -> None:
    _, intents = run(event("stop", 95), event("start", 5), event("stop", 97))
    assert kinds(intents) == ["play", "watching:start", "play"]


def test_a_viewing_at_exactly_5_percent_has_not_got_going() -> None:
    marks = Session("marks", "completed", 95.0, 1, 0.0)
    at_five = Session("tv", "playing", 5.0, 2, IDLE)
    assert not got_into_a_viewing(None, at_five)
    assert got_into_a_viewing(None, replace(at_five, progress=5.1))
    assert recorded_start(marks, IDLE).state == "stopped"  # got going exactly 3 hours later


def test_a_progress_report_exactly_30_seconds_after_a_stop_starts_playback_again() -> None:
    intents = at_times(
        (0.0, event("start", 0)), (1140.0, event("stop", 40)), (1170.0, event("progress", 41))
    )
    assert kinds(intents) == ["watching:start", "watching:pause", "watching:start"]


def test_a_player_silent_for_exactly_three_hours_while_playing_starts_again() -> None:
    intents = at_times((0.0, event("start", 0)), (IDLE, event("progress", 10)))
    assert kinds(intents) == ["watching:start", "watching:start"]


def test_a_position_of_exactly_half_after_a_position_less_start_is_a_rewatch() -> None:
    # At most half way: playing it again, not back at the credits.
    intents = at_times(
        (0.0, event("stop", 95)),
        (120.0, event("start")),
        (300.0, event("pause", 50)),
        (360.0, event("resume", 50)),
        (3300.0, event("stop", 97)),
    )
    assert kinds(intents).count("play") == 2


def test_a_position_of_exactly_half_three_hours_after_a_viewing_is_a_rewatch() -> None:
    intents = at_times(
        (0.0, event("stop", 95)), (IDLE, event("pause", 50)), (IDLE + 3000, event("stop", 97))
    )
    assert kinds(intents).count("play") == 2


def test_another_player_first_seen_at_exactly_half_way_after_a_completion_plays_its_own() -> None:
    # Only past half way is it the rest of the viewing the TV completed.
    intents = by_session(
        (0.0, jellyfin("start", 0)),
        (6000.0, jellyfin("stop", 96)),
        (6600.0, on("tablet", jellyfin("start", 50))),
        (9000.0, on("tablet", jellyfin("stop", 97))),
    )
    assert kinds(intents).count("play") == 2


def test_another_player_first_seen_past_half_way_exactly_three_hours_after_plays_its_own() -> None:
    intents = by_session(
        (0.0, jellyfin("start", 0)),
        (6000.0, jellyfin("stop", 96)),
        (6000.0 + IDLE, on("tablet", jellyfin("start", 60))),
        (6000.0 + IDLE + 2400, on("tablet", jellyfin("stop", 97))),
    )
    assert kinds(intents).count("play") == 2


@pytest.mark.parametrize(("paused_before", "plays"), [(0.0, 1), (IDLE - 1, 1), (IDLE, 2)])
def test_a_player_left_paused_less_than_three_hours_before_a_completion_is_part_of_it(
    paused_before: float, plays: int
) -> None:
    # The TV paused at the credits; the tablet completed the item `paused_before` later; the
    # TV then ends as played. Paused three hours or more before, it is a viewing of its own.
    completed = 20000.0
    intents = by_session(
        (completed - paused_before - 5400, jellyfin("start", 0)),
        (completed - paused_before, jellyfin("pause", 97)),
        (completed - 5400, on("tablet", jellyfin("start", 0))),
        (completed, on("tablet", jellyfin("stop", 96))),
        (completed + 600, jellyfin("stop", 97, played=True)),
    )
    assert kinds(intents).count("play") == plays


def test_a_mark_dated_exactly_three_hours_before_the_last_event_is_an_earlier_viewing() -> None:
    intents = at_times(
        (DAY_LATER, event("stop", 95)), (DAY_LATER + 10, dated_mark(DAY_LATER - IDLE))
    )
    assert [(i.kind, i.at) for i in intents] == [("play", DAY_LATER), ("play", DAY_LATER - IDLE)]


def test_a_position_reached_in_exactly_80_percent_of_its_time_was_played_to() -> None:
    # After a position-less start, a stop at 60 % exactly 48 minutes later (80 % of the 60
    # minutes it takes): played from the start, a rewatch; Plex's "watched" says so.
    intents = at_times(
        (0.0, event("stop", 95)),
        (600.0, event("start")),
        (600.0 + 0.8 * 3600, event("stop", 60, played=True)),
    )
    assert kinds(intents) == ["play", "play"]


def test_a_second_scrobble_exactly_ten_minutes_after_a_position_less_start_is_a_rewatch() -> None:
    intents = at_times(
        (0.0, event("stop", played=True)),
        (60.0, event("start")),
        (660.0, event("stop", played=True)),
    )
    assert kinds(intents) == ["play", "play"]


def test_a_completion_signal_exactly_ten_minutes_after_the_last_event_is_a_rewatch() -> None:
    # Plex, Tautulli and generic stops say "watched" once a playback: a viewing's time later
    # (ten minutes for a longer item) it is a new one whose start was lost.
    intents = at_times(
        (0.0, event("stop", played=True)),
        (600.0, replace(event("stop", played=True), position_ms=None)),
    )
    assert kinds(intents) == ["play", "play"]


def test_a_start_at_exactly_half_way_after_a_viewing_is_no_playback_of_its_rest() -> None:
    # Only past half way does a start play the counted viewing's rest, whose own "watched" is
    # that viewing's; from half way, Plex's "watched" a viewing later is a new one.
    intents = at_times(
        (0.0, event("stop", 95)),
        (1800.0, event("start", 50)),
        (4800.0, event("stop", played=True)),
    )
    assert kinds(intents) == ["play", "play"]


@pytest.mark.parametrize(
    ("idle", "resumed_at", "plays"),
    [
        (IDLE, 90.5, 1),  # idle three hours, well past where it left it: the tablet's credits
        (IDLE - 1, 90.5, 2),  # sooner: the TV's own viewing goes on
        (IDLE, 90.0, 2),  # exactly 5 % past where it left it: where it left off
    ],
)
def test_a_player_idle_for_hours_seen_well_past_where_it_left_plays_the_rest_of_another(
    idle: float, resumed_at: float, plays: int
) -> None:
    # The TV paused at 85 %; the tablet watched the whole film; then the TV is at the credits.
    intents = by_session(
        (0.0, jellyfin("pause", 85)),
        (1000.0, on("tablet", jellyfin("start", 0))),
        (7000.0, on("tablet", jellyfin("stop", 96))),
        (idle, jellyfin("resume", resumed_at)),
        (idle + 300, jellyfin("stop", 98, played=True)),
    )
    assert kinds(intents).count("play") == plays


def plex_rating(rating: int | None, given_at: float | None) -> MediaEvent:
    """Plex's media.rate, given at `given_at` (its lastRatedAt; None: Plex named no time)."""
    return replace(event("rate", rating=rating), occurred_at=given_at)


def rated_in_arrival_order(*events: tuple[float, MediaEvent]) -> list[Intent]:
    """The intents of rating events arriving at the given times, in that order."""
    session: Session | None = None
    intents: list[Intent] = []
    for arrived, e in events:
        session, produced = decide(session, e, 90, now=arrived, at=arrived)
        intents += produced
    return intents


def test_a_plex_rating_given_before_the_last_one_heard_is_a_late_post_and_dropped() -> None:
    intents = rated_in_arrival_order(
        (1000.0, plex_rating(80, 500.0)), (1001.0, plex_rating(70, 497.0))
    )
    assert [(i.kind, i.rating) for i in intents] == [("rating", 80)]


def test_a_plex_rating_posted_again_is_one_change() -> None:
    intents = rated_in_arrival_order(
        (1000.0, plex_rating(80, 500.0)), (1005.0, plex_rating(80, 500.0))
    )
    assert [(i.kind, i.rating) for i in intents] == [("rating", 80)]


def test_plex_ratings_cleared_and_given_again_are_each_a_change() -> None:
    # A removal names the time of the rating it removes, or none; 7 then 8 in one second too.
    intents = rated_in_arrival_order(
        (1000.0, plex_rating(80, 500.0)),
        (1010.0, plex_rating(None, 500.0)),
        (1020.0, plex_rating(80, 520.0)),
        (1030.0, plex_rating(None, None)),
        (1040.0, plex_rating(70, 540.0)),
        (1040.5, plex_rating(80, 540.0)),
    )
    assert [(i.kind, i.rating) for i in intents] == [
        ("rating", 80),
        ("remove_rating", None),
        ("rating", 80),
        ("remove_rating", None),
        ("rating", 70),
        ("rating", 80),
    ]


def test_a_plex_rating_dated_before_the_last_one_long_after_it_is_the_users_change() -> None:
    # The server's clock stepped back: a change an hour later is no late post.
    intents = rated_in_arrival_order(
        (1000.0, plex_rating(80, 5000.0)),
        (4600.0, plex_rating(60, 1500.0)),
        (4660.0, plex_rating(50, 1560.0)),
    )
    assert [i.rating for i in intents] == [80, 60, 50]


def test_a_plex_rating_does_not_touch_the_players_playback_session() -> None:
    assert session_key(plex_rating(80, 500.0)) != session_key(event("stop", 95))


def jellyfin_mark(*, remark: bool = False) -> MediaEvent:
    """A Jellyfin "mark played" by hand (no player), dated when it was made."""
    return replace(event("played", played=True), source="jellyfin", player="", remark=remark)


def test_a_mark_by_hand_of_an_item_the_server_never_had_may_be_the_server_catching_up() -> None:
    assert hand_mark(jellyfin_mark(), None, None)


def test_a_mark_of_an_item_the_server_played_or_began_before_is_a_viewing() -> None:
    # Marked unplayed after a viewing there, then played again: a rewatch made away from it.
    completed = Session("marks", "completed", 100.0, 1, 500.0, completed_at=500.0)
    unmarked = replace(completed, state="unmarked", updated_at=900.0)
    for marks in (completed, unmarked):
        assert not hand_mark(jellyfin_mark(), None, marks)
    # Stopped before the credits, then marked: Jellyfin's count holds that start (a remark).
    assert not hand_mark(jellyfin_mark(remark=True), None, None)
