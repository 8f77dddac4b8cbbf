"""Playback sessions: the pure state machine that turns webhook noise into one play per viewing.

One session per (source, server, account, player, item). A viewing's completion is recorded in
the item's marks session too, which manual marks naming no player read: such a mark soon after
it is the same play. So is the end of a playback of its rest (resumed past half way, the credits
hours later): the viewing ended then. Repeated stops, scrobble + stop pairs, progress storms and
auto-play-next never make a second play: only the first move into `completed` does. A completed
session followed by a start at <= 5 % is a rewatch; so is a start with no position (Plex leaves
it out when playback begins at the start) that hours pass before, or that the next position or a
second Plex scrobble a viewing later confirms, a position at most half way hours later, a
once-per-playback completion signal (Plex, Tautulli, generic) a viewing later, and a mark hours
after the viewing's end. A mark dated hours before a session's last event (after a completed
viewing: its completion) is an earlier viewing of its own; a re-mark (Jellyfin's "mark season
played") of an item completed before is no new play. One viewing finished on another player is
one play: a player first seen past half way soon after the item's completion elsewhere plays its
rest, and a player left paused shortly before that completion, not played since, ends as part
of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

from watchbridge.forplex import LOOKBACK
from watchbridge.model import MediaEvent
from watchbridge.reconcile import MATCH_WINDOW
from watchbridge.senders import PAIR, TOGETHER_WITHIN

# `restarting`: completed, then a start without a position; the next position decides.
# `resumed`: completed, then a playback of the rest of it (a start past half way): its own
# once-per-playback completion signal is no new viewing.
# `ended`: stopped without its start seen: a start sent before the stop may still come after it.
# `unmarked`: an item's marks after "mark unplayed" of its completion (`updated_at`: the unmark).
# `reported`/`paired`: a Plex sender's last completion of a viewing, not yet / already matched
# with the other sender's report of it (see `one_of_two_reports`). `taken`: Tautulli's report
# taken in Plex's webhook's stead (forplex.py), not yet matched: Plex's may come hours on.
State = Literal[
    "playing",
    "paused",
    "stopped",
    "ended",
    "completed",
    "restarting",
    "resumed",
    "unmarked",
    "rated",
    "reported",
    "paired",
    "taken",
]
# A completed viewing's states: events after it go to _after_completion.
AFTER_COMPLETION = ("completed", "restarting", "resumed", "unmarked")
REWATCH_MAX_PROGRESS = 5.0
REWATCH_AFTER_IDLE = 3 * 3600.0  # a position-less start this long after a viewing starts anew
RESTART_MAX_PROGRESS = 50.0  # after a position-less start: at most this, a new viewing
SHORTEST_VIEWING = 10 * 60.0  # no two viewings of one item are closer (shorter items: 80 %)
LEAST_WATCHED = 0.8  # the share of an item a viewing plays at least (intro, credits skipped)
PAUSE_CAP = 79.9  # Trakt turns a stop at >= 80 % into a play; pauses must stay below it
# A progress report this soon after a stop was sent before it (Jellyfin posts each event from
# its own handler, unordered); later ones mean playback began again (its start lost).
LATE_REPORT = 30.0
# Stopped, with no playback under way: what a report sent before the stop finds.
STOPPED = ("stopped", "ended")
# Sources whose completion signal comes once per playback (Plex's scrobble, Tautulli's Watched,
# our generic schema's `played`); Jellyfin and Emby clients repeat theirs (see _after_completion).
ONE_COMPLETION_PER_PLAYBACK = frozenset({"plex", "tautulli", "generic"})
PLAYBACK = frozenset({"start", "resume", "pause", "progress"})  # a playback under way


@dataclass(frozen=True)
class Session:
    key: str
    state: State
    progress: float | None
    # Counts this session's viewings and live states; part of every idempotency key. A new
    # session starts at the current second, not 0: a forgotten session (idle for over a year,
    # or one that never was) must not reuse a finished play's key.
    generation: int
    # The last event's time. While `completed`: the last event of that viewing (an item's
    # marks: its completion, or a mark naming no player soon after it).
    updated_at: float
    # When this session's current viewing began (its first event). An item's marks: when a
    # viewing of the item last got going (past its first moments) after a completion. 0: not
    # known (kept by an older release).
    began_at: float = 0.0
    # An item's marks: when a playback of the rest of its last completed viewing ended (resumed
    # past half way: the credits watched hours later); 0: none. A mark is timed from the later
    # of this and `updated_at` (the viewing's end); an earlier viewing's date and another
    # player's pause from `completed_at` (its completion).
    rest_ended_at: float = 0.0
    # After a viewing it completed: when it did (a playback of the rest hours later, or for an
    # item's marks a mark soon after, moves `updated_at` only). 0: none, or not known (kept by
    # an older release: `updated_at` stands for it).
    completed_at: float = 0.0
    # After a viewing it completed: when the playback the player is in began, if a start came
    # since the completion (0: none; the completion began it), moved later by each pause a
    # resume ended. Position reports leave it: a viewing's time is counted from here.
    playing_since: float = 0.0


@dataclass(frozen=True)
class Intent:
    """Something a target should hear about, before target-specific shaping.

    kind `watching`: live state for scrobblers (action start or pause, with progress).
    kind `play`: a completed viewing at `at`. kind `rating`: `rating` on the 0-100 scale.
    kind `remove_rating`: the user cleared the item's rating.
    """

    kind: Literal["watching", "play", "rating", "remove_rating"]
    key: str  # idempotency key, unique per logical action
    at: float
    action: Literal["start", "pause", ""] = ""
    progress: float | None = None
    rating: int | None = None
    live: bool = False  # a play that ended a playback we followed (vs. a manual mark)
    earlier: bool = False  # a play of an earlier viewing: the current one's live state stands


def session_key(event: MediaEvent, item_key: str | None = None) -> str:
    """The session an event belongs to: its playback on its player, or for a manual mark that
    names no player the item's marks, where completed viewings are recorded too. `item_key`:
    `event.item.key()`, when the caller has it already."""
    return _session_key(event, event.item.key() if item_key is None else item_key)


def _session_key(event: MediaEvent, item_key: str) -> str:
    if marks_itself(event):
        return _marks_key(event, item_key)
    account = event.account.id or event.account.name or ""
    if remembers_rating(event):
        return _key(["rating", event.source, event.server, account, item_key])
    return _key([event.source, event.server, account, _player(event), item_key])


def _player(event: MediaEvent) -> str:
    """The player as a session knows it: its id, or its name when the sender names no id (a
    Tautulli template without {machine_id})."""
    return event.player or event.player_name


# Servers that send an item's stored rating again with any later change of its user data (a
# favourite, a like): their rating event is a change only when the rating differs from the
# one they sent before.
RATINGS_SENT_AGAIN = frozenset({"jellyfin", "emby"})
# Servers whose rating events say when the rating was given, by the server's own clock (Plex's
# `lastRatedAt`), and that post them unordered (Plex: best effort, no order promised): one
# given before the last one heard of the item is an old rating arriving late, not the user's.
RATINGS_DATED = frozenset({"plex"})
# How long after the last rating of an item arrived one given before it is taken for a late
# post: Plex posts within seconds, so past this the server's clock stepped back instead, and
# the user's change must not be dropped.
LATE_RATING_WINDOW = 900.0


def remembers_rating(event: MediaEvent) -> bool:
    """A rating of a server that sends them again, or dates them: its session (kept long) is
    the last rating that server sent of the item (state `rated`, `progress` the rating, None
    once cleared; for RATINGS_DATED, `began_at` when the server says it gave that rating)."""
    return event.action == "rate" and event.source in RATINGS_SENT_AGAIN | RATINGS_DATED


def completion_key(event: MediaEvent, item_key: str | None = None) -> str | None:
    """Where a viewing this event completes or begins is recorded too: the item's marks, so
    that a mark soon after it ends is the same play (Jellyfin's "mark played" after watching to
    the end), a re-mark after it began again is not taken for one of a viewing counted
    already, and another player finishing the viewing counts it once. None for marks of the
    marks session itself, and for ratings. `item_key` as in `session_key`."""
    if marks_itself(event) or event.action == "rate":  # a rating is no viewing
        return None
    return _marks_key(event, event.item.key() if item_key is None else item_key)


class Report(NamedTuple):
    """A Plex sender's event (Plex's own webhook, Tautulli's) as both senders name it: they
    report one Plex server's playback (households follow two guides), each at its own
    completion point, minutes apart, with ids of their own (Tautulli's are the show's). What
    both name alike is the server, the player (its id; Tautulli's template may leave out
    {machine_id}, then its name) and the Plex item (rating key; an episode of a two-episode
    file by its numbers) and, once routed, the profile."""

    source: str
    profile: str
    server: str
    player: str  # the player's id ("": the sender names none)
    player_name: str
    item: str


# How a Tautulli template names players: by id ({machine_id}) or by name alone ({player}).
Naming = Literal["id", "name"]


def report_of(event: MediaEvent, profile: str, server: str = "") -> Report | None:
    """The event as a report of one of PAIR, of the server it names, else of `server` (the
    profile's one Plex server, where sure: senders.ProfileServers); None for other sources,
    and for an event of no server or naming no item (rating key): no report of the other
    sender can match it."""
    item = event.item
    server = event.server or server
    if event.source not in PAIR or not item.source_key or not server:
        return None
    where = f"{item.source_key}|{item.season}:{item.number}"
    return Report(event.source, profile, server, event.player, event.player_name, where)


def report_from_record(record: Any, profile: str) -> Report | None:
    """The report of an event as the store keeps it (webhooks.event_record); None when it is
    none (see `report_of`) or not that shape."""
    if not isinstance(record, dict) or not isinstance(item := record.get("item"), dict):
        return None
    source, server, key = record.get("source"), record.get("server"), item.get("source_key")
    player, name = record.get("player") or "", record.get("player_name") or ""
    if source not in PAIR or not server or not key:
        return None
    if not all(isinstance(value, str) for value in (source, server, key, player, name)):
        return None
    where = f"{key}|{item.get('season')}:{item.get('number')}"
    return Report(source, profile, server, player, name, where)


def players_named(report: Report) -> Naming | None:
    """How a Tautulli report names its player: by id, by name alone, or not at all."""
    if report.player:
        return "id"
    return "name" if report.player_name else None


def report_keys(report: Report, naming: Naming) -> tuple[str, str] | None:
    """Where the completions of this viewing that the report's sender reports are noted, and
    where the other sender's are, with the player named as Tautulli's template names it
    (`naming`); None when the report names no such player. A name stands for a player only
    when the template names no id: two players may share one (two phones called "iPhone")."""
    player = report.player if naming == "id" else report.player_name
    if not player:
        return None
    if naming == "name":
        player = f"name:{player}"  # never taken for an id
    other = PAIR[1] if report.source == PAIR[0] else PAIR[0]
    where = [report.profile, report.server, player, report.item]
    return _key(["reported", report.source, *where]), _key(["reported", other, *where])


def one_of_two_reports(
    own_key: str, other: Session | None, at: float, taken_at: float | None = None
) -> tuple[bool, Session, Session | None]:
    """Whether a Plex sender's completion at `at` is its report of a viewing the other sender
    reported within TOGETHER_WITHIN (and no report of this one was matched with yet), and its
    record and the other's after it. Each report matches one of the other's: a rewatch is
    reported by both too, and counts once more. `taken_at`: this is Tautulli's report made
    then, taken in Plex's webhook's stead after forplex.GRACE (Plex's webhook told nothing
    of the item meanwhile): Plex's report of its viewing, should it come, is matched for
    LOOKBACK after it (a long film, a pause in the credits, a webhook sent late), until Plex
    tells of another viewing of the item (`begins_another_viewing`); it pairs with no report
    of Plex's noted before it, which is another viewing's (`sent_the_reported`)."""
    when = at if taken_at is None else taken_at
    # Taken, Plex's webhook told nothing of its viewing (`sent_the_reported`): a report of
    # Plex's noted already is of another viewing (a rewatch begun after it).
    if other is not None and taken_at is None and _together(other, when):
        return True, Session(own_key, "paired", None, 0, when), replace(other, state="paired")
    state: State = "reported" if taken_at is None else "taken"
    return False, Session(own_key, state, None, 0, when), other


def _together(other: Session, at: float) -> bool:
    """Whether a Plex sender's report at `at` is of the viewing the other's unmatched one is."""
    if other.state == "taken":
        return -TOGETHER_WITHIN <= at - other.updated_at <= LOOKBACK
    return other.state == "reported" and abs(at - other.updated_at) <= TOGETHER_WITHIN


def begins_another_viewing(
    other: Session | None, action: str, progress: float | None
) -> Session | None:
    """The other sender's report taken in Plex's webhook's stead (`taken`) once Plex's webhook
    tells of a playback (`action`) of the item at most half way (or from its start: no
    position): a viewing after it, whose reports are not its; None when it stays as it is.
    Its own match with a report of Plex's then lapses with TOGETHER_WITHIN, long past."""
    if other is None or other.state != "taken" or not _begins_again(action, progress):
        return None
    return replace(other, state="reported")


def _begins_again(action: str, progress: float | None) -> bool:
    """Whether Plex's event of an item tells of a playback of it at most half way (or from
    its start: no position): not the end of a viewing."""
    return action in PLAYBACK and (progress is None or progress <= RESTART_MAX_PROGRESS)


def sent_the_reported(reported_at: float, told: Sequence[tuple[float, str, float | None]]) -> bool:
    """Whether Plex's webhook told of the viewing Tautulli reported at `reported_at`, by its
    events of the item (when received, action, progress; oldest first, forplex.LOOKBACK back):
    one before the report (its start came first), or after it one of that viewing's end (its
    scrobble or stop, late); not a playback begun again after it (`_begins_again`: the item
    watched once more, autoplay or a child), whose events are that viewing's, not this one's."""
    if not told:
        return False
    at, action, progress = told[0]
    return at <= reported_at or not _begins_again(action, progress)


def after_the_others_report(other: Session | None, at: float, progress: float | None) -> bool:
    """Whether a Plex sender's live state at `at` (at `progress` %) is of a viewing the other
    sender reported complete within TOGETHER_WITHIN, and this one has not reported yet: the
    credits, whose play ended the viewing on Trakt. Sent, a resume would show it as watching
    again and a pause leave a resume point for months, and this sender's report of it, left
    out (`one_of_two_reports`), would end neither. A position at most half way (or none:
    Plex's start from the beginning) begins a rewatch. Of a report taken in Plex's webhook's
    stead (`taken`), for LOOKBACK: Plex's webhook told nothing of that viewing till then."""
    if other is None or other.state not in ("reported", "taken") or progress is None:
        return False
    within = LOOKBACK if other.state == "taken" else TOGETHER_WITHIN
    return 0 <= at - other.updated_at <= within and progress > RESTART_MAX_PROGRESS


def earlier_keys(event: MediaEvent) -> dict[str, str]:
    """This event's session keys (`session_key`, `completion_key`) as a release before an
    item's key changed made them (MediaRef.earlier_key), where they differ: the sessions it
    recorded are looked for there too. Marks are kept a year: drop this after 2027-11."""
    earlier = event.item.earlier_key()
    if earlier is None:
        return {}
    keys = {session_key(event): _session_key(event, earlier)}
    if (completion := completion_key(event)) is not None:
        keys[completion] = _marks_key(event, earlier)
    return keys


def marks_itself(event: MediaEvent) -> bool:
    """A manual mark (or unmark) naming no player: it belongs to the item's marks session."""
    return event.action in ("played", "unplayed") and not _player(event)


def _marks_key(event: MediaEvent, item_key: str) -> str:
    account = event.account.id or event.account.name or ""
    return _key(["marks", event.source, event.server, account, item_key])


def _key(parts: list[str]) -> str:
    # surrogatepass: a device name cut mid-emoji arrives as a lone surrogate from JSON.
    return hashlib.sha256("|".join(parts).encode(errors="surrogatepass")).hexdigest()[:24]


def ends_a_viewing(before: Session | None, after: Session) -> bool:
    """Whether an event that moved a session from `before` to `after` completed a viewing."""
    if after.state != "completed":
        return False
    return (
        before is None
        or before.state not in ("completed", "resumed")
        or before.generation != after.generation
    )


def finished_its_rest(before: Session | None, after: Session) -> bool:
    """Whether an event that moved a session from `before` to `after` ended a playback of the
    rest of a viewing it completed before (resumed past half way): that viewing's end."""
    return (
        before is not None
        and before.state == "resumed"
        and after.state == "completed"
        and before.generation == after.generation
    )


def got_into_a_viewing(before: Session | None, after: Session) -> bool:
    """Whether an event that moved a session from `before` to `after` took a viewing past its
    first moments (5 %): a start left after seconds (auto-play-next) is no viewing begun."""
    if after.state in ("completed", "resumed") or not _past_the_start(after):
        return False
    return (
        before is None
        or before.state in ("completed", "restarting", "resumed")
        or not _past_the_start(before)
    )


def _past_the_start(session: Session) -> bool:
    return session.progress is not None and session.progress > REWATCH_MAX_PROGRESS


def recorded_start(marks: Session, began_at: float) -> Session:
    """The item's marks session after a viewing got going at `began_at`: hours after its last
    completion, a re-mark is then a play of that viewing (stopped before the end, then marked
    played); sooner, a mark is still the same play as the completion. After "mark unplayed",
    any viewing that gets going is a new one. The time is kept: a player first seen past half
    way after it plays that viewing, not the completed one's credits."""
    hours_later = began_at - _viewing_end(marks) >= REWATCH_AFTER_IDLE
    state = marks.state
    if state == "unmarked" or (state == "completed" and hours_later):
        state = "stopped"
    return replace(marks, state=state, began_at=max(began_at, marks.began_at))


def recorded_rest_end(marks: Session, ended: float) -> Session:
    """The item's marks session after a playback of the rest of its last completed viewing
    ended at `ended`: the viewing ended then, so a mark (or a viewing that gets going) is timed
    from there. Its completion's time stays: a history script dates the viewing then. Another
    player's viewing that got going hours after the completion (a mark was then its play) no
    longer makes a mark a play: the mark may be that one's or this one's, and one play is
    better than two (that viewing's own completion still counts). After "mark unplayed", the
    unmark stands."""
    if marks.state == "unmarked":
        return marks
    rest_ended = max(ended, marks.rest_ended_at)
    return replace(marks, state="completed", rest_ended_at=rest_ended)


def _viewing_end(session: Session) -> float:
    """When the session's last completed viewing ended: its last event, or for an item's marks
    the end of a playback of its rest after its completion."""
    return max(session.updated_at, session.rest_ended_at)


def recorded_completion(completed: Session, marks: Session | None, key: str) -> Session:
    """The item's marks session `key` (`marks`: as it is) after `completed` ended a viewing."""
    ended = completed.updated_at
    if marks is None:
        return Session(key, "completed", completed.progress, int(ended), ended, completed_at=ended)
    # An old viewing (a history script's) must not move the item's last completion back.
    return replace(
        marks,
        key=key,
        state="completed",
        progress=completed.progress,
        updated_at=max(ended, marks.updated_at),
        completed_at=max(ended, _completion(marks)),
    )


def _completion(session: Session) -> float:
    """When the session's last completed viewing was completed (`updated_at` in a session an
    older release kept)."""
    return session.completed_at or session.updated_at


def decide(
    session: Session | None,
    event: MediaEvent,
    threshold: float,
    now: float,
    marks: Session | None = None,
    *,
    at: float | None = None,
    key: str | None = None,
) -> tuple[Session | None, list[Intent]]:
    """The next session state and the intents this event produces (`marks`: the item's marks
    session, with its last completion on any player). Pure. `at`: when the event happened, if
    not at the time it names (`occurred_at`), else `now`; `key`: its `session_key`, when the
    caller has it already."""
    at = (event.occurred_at or now) if at is None else at
    key = session_key(event) if key is None else key
    new_session, intents = _decide(session, event, threshold, at, key, marks)
    if event.companion:  # what is playing now is the file's first episode
        intents = [i for i in intents if i.kind != "watching"]
    return new_session, intents


def _dated_rating(
    session: Session | None, event: MediaEvent, key: str, at: float, intent: Intent, changes: int
) -> tuple[Session | None, list[Intent]]:
    """A rating (or its removal) of a server that dates them (RATINGS_DATED): none when the
    server gave it before the last rating it sent of the item (posted late, it would overwrite
    the user's newer one), or is that same rating posted again. Undated (a removal may name no
    time), it is taken as the newest, and the time of the one before it stays remembered."""
    given = event.occurred_at
    last = session.began_at if session is not None and session.state == "rated" else 0.0
    if given is not None and last and session is not None:
        recent = at - session.updated_at <= LATE_RATING_WINDOW
        last_rating = None if session.progress is None else int(session.progress)
        if recent and (given < last or (given == last and event.rating == last_rating)):
            return session, []
    latest = last if given is None else given
    if not latest:
        return session, [intent]
    value = None if event.rating is None else float(event.rating)
    return Session(key, "rated", value, changes, at, latest), [intent]


def _decide(
    session: Session | None,
    event: MediaEvent,
    threshold: float,
    at: float,
    key: str,
    marks: Session | None,
) -> tuple[Session | None, list[Intent]]:
    if event.action == "rate":
        # To the second: rate 8, clear, rate 8 within a minute are three changes, not two.
        # Within one second (a slider dragged 8, 7, 8), the changes an item's rating session
        # counts tell them apart.
        changes = session.generation + 1 if session is not None and session.state == "rated" else 0
        second = f"{int(at)}" + (f"#{changes}" if changes else "")
        if event.rating is None:  # Plex's media.rate without stars, our generic rating 0
            removal = Intent("remove_rating", f"unrate:{event.item.key()}:{second}", at)
            if event.source in RATINGS_DATED:
                return _dated_rating(session, event, key, at, removal, changes)
            if event.source in RATINGS_SENT_AGAIN:
                # Jellyfin's and Emby's user data without a rating: a clear of the rating
                # they sent before, else a favourite toggled on an item never rated.
                if session is None or session.state != "rated" or session.progress is None:
                    return session, []
                return Session(key, "rated", None, changes, at, at), [removal]
            return session, [removal]
        rating_key = f"rate:{event.item.key()}:{event.rating}:{second}"
        intent = Intent("rating", rating_key, at, rating=event.rating)
        if event.source in RATINGS_DATED:
            return _dated_rating(session, event, key, at, intent, changes)
        if not remembers_rating(event):
            return session, [intent]
        rated = Session(key, "rated", float(event.rating), changes, at, at)
        if session is not None and session.state == "rated" and session.progress == event.rating:
            return rated, []  # the rating it sent before, sent again with a favourite or like
        return rated, [intent]
    if event.action == "unplayed":
        # Removes nothing; on an item's marks, a mark soon after it is the same play (a flag
        # clicked twice) and a viewing that gets going after it a new one.
        if session is None or session.state != "completed" or not marks_itself(event):
            return session, []
        unmarked = Session(session.key, "unmarked", session.progress, session.generation, at)
        return unmarked, []

    if _earlier_viewing(session, event, at):
        # A history script sending old viewings: a play of its own; the session's viewing
        # goes on.
        return session, [
            Intent("play", _mark_key(key, at), at, progress=event.progress, earlier=True)
        ]
    fresh = session is None  # no playback of this viewing seen before this event
    # A player idle for hours since it left a viewing (kept long: see maintenance) and now
    # well past where it left it has not been seen playing this one: resuming where it left
    # off, it goes on with its own.
    unseen = fresh or (
        session is not None
        and session.state in ("paused", *STOPPED, "playing")
        and at - session.updated_at >= REWATCH_AFTER_IDLE
        and event.progress is not None
        and event.progress - (session.progress or 0.0) > REWATCH_MAX_PROGRESS
    )
    if session is None:
        session = Session(key, "stopped", None, int(at), at, at)
    elif session.state in AFTER_COMPLETION:
        settled = _after_completion(session, event, at)
        if settled is not None:
            return settled, []
        session = Session(key, "stopped", None, session.generation + 1, session.updated_at, at)
        fresh = True
    progress = event.progress if event.progress is not None else session.progress
    generation, began = session.generation, session.began_at
    if unseen and _finishing_a_counted_viewing(marks, event, at):
        # Finishing elsewhere (the tablet) a viewing another player already completed.
        return Session(key, "completed", progress, generation, at, began, completed_at=at), []

    reached = progress is not None and progress >= threshold
    # Only a stop (or the server's own completion signal) ends a viewing: someone paused at
    # 95 % may still be watching the credits.
    if event.played or (event.action == "stop" and reached):
        if event.action == "played":  # a manual mark is history, not a scrobble
            # Dated before the viewing's last event, it must not move its time back.
            ended = max(at, session.updated_at)
            play = Intent("play", _mark_key(key, at), at, progress=progress)
            completed = Session(
                key, "completed", progress, generation, ended, began, completed_at=ended
            )
            return completed, [play]
        completed = Session(key, "completed", progress, generation, at, began, completed_at=at)
        if not fresh and _counted_elsewhere(marks, session, event):
            return completed, []
        play = Intent("play", f"play:{key}:{generation}", at, progress=progress, live=True)
        return completed, [play]

    state = session.state
    late = state in STOPPED and not fresh and at - session.updated_at < LATE_REPORT
    if event.action == "progress" and late:
        return session, []  # sent before the stop: playback has not begun again
    if late and _overtaken_by_the_stop(event, session):
        # Overtaken by the stop of its playback (Plex's media.play carries a poster; Jellyfin
        # posts each event from its own handler): Trakt would show it as watching for the
        # item's whole runtime.
        return session, []
    if event.action in ("start", "resume", "progress"):
        # Playing already: a report of the same playback. Unless the player was silent for
        # hours (its stop was lost: a server restart), when Trakt's "watching" has long ended.
        if state == "playing" and at - session.updated_at < REWATCH_AFTER_IDLE:
            return Session(key, state, progress, generation, at, began), []
        # Each live state has a key of its own (the generation counts them): two within one
        # second must not share one, or the later is dropped after superseding the earlier.
        generation += 1
        start = Intent(
            "watching", f"start:{key}:{generation}", at, action="start", progress=progress
        )
        return Session(key, "playing", progress, generation, at, began), [start]
    if event.action in ("pause", "stop"):
        new_state: State = "paused" if event.action == "pause" else "stopped"
        if new_state == "stopped" and state in STOPPED:
            if fresh or _moved(event, session):
                # The stop of a playback whose start was not seen: lost, or still on its way.
                return Session(key, "ended", progress, generation, at, began), []
            new_state = state
        if state == new_state:
            # A paused client repeats its report: the session was left when it paused (see
            # _counted_elsewhere), not at each report.
            left = session.updated_at
            return Session(key, state, progress, generation, left, began), []
        generation += 1
        capped = min(progress, PAUSE_CAP) if progress is not None else None
        pause = Intent("watching", f"pause:{key}:{generation}", at, action="pause", progress=capped)
        return Session(key, new_state, progress, generation, at, began), [pause]
    return Session(key, state, progress, generation, at, began), []


def _moved(event: MediaEvent, session: Session) -> bool:
    """Whether a stop names another position than the session's: a stop of another playback,
    not the same one repeated."""
    return event.progress is not None and event.progress != session.progress


def _overtaken_by_the_stop(event: MediaEvent, session: Session) -> bool:
    """Whether a start or resume just after a stop (`LATE_REPORT`) was sent before it: a
    resume always (after a stop a player starts again, it resumes no pause); a start when
    that stop's start was not seen and it is before where the stop left (without a position:
    from the beginning), or the stop named no position."""
    if event.action == "resume":
        return True
    if event.action != "start" or session.state != "ended":
        return False
    stopped_at = session.progress
    return stopped_at is None or (event.progress or 0.0) < stopped_at


def _finishing_a_counted_viewing(marks: Session | None, event: MediaEvent, at: float) -> bool:
    """Whether a player not seen playing the item starts past half way soon after another
    player completed it: the rest of that viewing (the credits on the tablet)."""
    progress = event.progress
    if not _completed_before(marks, at) or marks is None or marks.began_at > marks.updated_at:
        return False  # a viewing got going since: this player goes on with that one
    return progress is not None and progress > RESTART_MAX_PROGRESS


def _counted_elsewhere(marks: Session | None, session: Session, event: MediaEvent) -> bool:
    """Whether a session left paused (or stopped) shortly before another player completed the
    item, and not played since, is that viewing as it ends as played: the TV paused at the
    credits, the rest watched on the tablet, then the TV switched off (hours later, maybe).
    Played since (two people, one account, two rooms), it is a viewing of its own. So is a
    stopped one's completion from a source that sends it once a playback (Plex, Tautulli,
    generic): the stop ended that playback, and this one's start was lost."""
    if marks is None or marks.state != "completed" or session.state not in ("paused", *STOPPED):
        return False
    if session.state in STOPPED and event.source in ONE_COMPLETION_PER_PLAYBACK:
        return False
    # From the completion: a mark after it (Home Assistant's `played`) ended no playback.
    left, completed = session.updated_at, _completion(marks)
    return session.began_at > 0 and left <= completed < left + REWATCH_AFTER_IDLE


def _completed_before(marks: Session | None, at: float) -> bool:
    """Whether the item's last completion (or a mark naming no player soon after it: the
    viewing's last sign) is less than a rewatch's idle time before `at`."""
    return (
        marks is not None
        and marks.state == "completed"
        and 0 <= at - marks.updated_at < REWATCH_AFTER_IDLE
    )


def _mark_key(key: str, at: float) -> str:
    """A mark's play is keyed by its date: sent again, before or after the viewing it belongs
    to has moved on, it is the same play."""
    return f"play:{key}:at:{int(at)}"


def _earlier_viewing(session: Session | None, event: MediaEvent, at: float) -> bool:
    """A mark dated hours before the session's last event, or before the completion of the
    viewing it completed: a playback of that viewing's rest hours later is no later viewing."""
    if session is None or event.action != "played":
        return False
    return at <= min(session.updated_at, _completion(session)) - REWATCH_AFTER_IDLE


class Late(NamedTuple):
    """When a viewing reported late happened (`reported_late`)."""

    at: float
    # Timed from this machine's clock (now, less how late the server says it reported): a step
    # of that clock moves it as it moves plays dated now. False: the server's own time (Plex's).
    ours: bool


# Sources whose played marks carry their send time beside the date of the play they record
# (LastPlayedDate), both by the server's clock.
MARKS_SENT_WITH_THEIR_DATE = frozenset({"jellyfin", "emby"})


def reported_late(event: MediaEvent, session: Session | None, now: float) -> Late | None:
    """When a viewing happened that the media server reported more than MATCH_WINDOW after it;
    None: the play is dated `now`, as media servers' reports are otherwise (a server clock
    hours off must not move them). Pure.

    - Plex: a scrobble whose `lastViewedAt` is that old (a phone's downloads watched offline,
      synced days later; it counts that view): then, by the server's clock, which is all Plex
      names (no send time).
    - Jellyfin, Emby: a played mark whose date (LastPlayedDate) is that much older than its
      send time (an app's offline viewing reported as it syncs, a mark given a date): that
      long before now, measured on the server's clock alone, so one days off moves nothing.
      Their playback events name no time but the send time: a late one is dated now.

    Not while the session it joins (the player's; a mark's: the item's marks) had an event
    within that window (a live viewing); nor for a re-mark of an item that session holds a
    viewing of ("mark played" of several items keeps each one's last play date): no new play
    (decide), and its old date, a long viewing's start, must not make it an earlier viewing.

    Dated `now`, a late Plex view stood days from the server's history row of it (a Plex link
    paired neither and copied each to the other side: two plays everywhere), and Trakt,
    Serializd and AniList showed an offline viewing watched the day it was synced."""
    if not event.played or event.occurred_at is None:
        return None
    if event.source == "plex":
        late = Late(event.occurred_at, ours=False)
    elif (
        event.source in MARKS_SENT_WITH_THEIR_DATE
        and event.action == "played"
        and event.sent_at is not None
    ):
        late = Late(now - (event.sent_at - event.occurred_at), ours=True)
    else:
        return None
    if now - late.at <= MATCH_WINDOW:
        return None
    if session is not None:
        if now - session.updated_at <= MATCH_WINDOW:
            return None
        if event.remark and session.state in AFTER_COMPLETION:
            return None
    return late


# A play row's payload key: the play is a Jellyfin or Emby mark by hand (`hand_mark`).
HAND_MARK = "hand_mark"


def hand_mark(event: MediaEvent, late: Late | None, marks: Session | None) -> bool:
    """Whether `event` is a Jellyfin or Emby "mark played" naming no player, dated when it was
    made (not a viewing reported late, `reported_late`), of an item the server has no record
    of: never played, started or marked there (`marks`, the item's marks session, is None: none
    in the year watchbridge keeps it; not a `remark`: its PlayCount counts no start or mark
    before). It says the item was watched, not when: marking a season played, or what a Plex
    beside it played, catches that server up; so a target already holding a play of the item
    before it takes it for that play (deliver.trakt, deliver.serializd) rather than a viewing
    of that day. A mark of an item the server played or began before (marked unplayed, then
    played: a rewatch away from it; stopped before the credits, then marked) is a viewing.
    Pure."""
    return (
        event.source in MARKS_SENT_WITH_THEIR_DATE
        and event.action == "played"
        and marks_itself(event)
        and late is None
        and marks is None
        and not event.remark
    )


def shortest_viewing(duration: float | None) -> float:
    """How long a viewing of an item of `duration` seconds (None: unknown) takes at least."""
    return SHORTEST_VIEWING if not duration else min(SHORTEST_VIEWING, LEAST_WATCHED * duration)


def _played_to(event: MediaEvent, since: float) -> bool:
    """Whether `since` seconds of playing from the start reach the event's position."""
    return event.position_ms is not None and since >= 0.8 * event.position_ms / 1000


def _after_completion(session: Session, event: MediaEvent, at: float) -> Session | None:
    """An event after a completed viewing: the session it leaves when it still belongs to that
    viewing, or None when it begins a new one (a rewatch)."""
    since = at - session.updated_at
    idle = abs(since) >= REWATCH_AFTER_IDLE
    duration = event.duration_ms / 1000 if event.duration_ms else None
    if event.action == "played":
        # A mark, or Home Assistant's `played` when a player finishes (automations may fire
        # twice: at the end and when the TV is switched off): another play hours later only,
        # also after a start without a position. A re-mark of an item watched (or marked)
        # before is no new play at all.
        if event.remark:
            return session
        # For the item's marks, hours after the end of a playback of the viewing's rest (the
        # credits hours later). Dated hours before, it was an earlier viewing (_earlier_viewing).
        if at - _viewing_end(session) >= REWATCH_AFTER_IDLE:
            return None  # marked watched again hours later
        if at < session.updated_at:
            return session  # dated a little before the viewing's end: its time stays
        progress = event.progress if event.progress is not None else session.progress
        # The same play: its completion stays (an earlier viewing and a player paused before
        # it are timed from there); after "mark unplayed", this mark is the completion.
        completed = at if session.state == "unmarked" else _completion(session)
        return replace(
            session, state="completed", progress=progress, updated_at=at, completed_at=completed
        )
    if session.state == "restarting":
        # A position-less start came after the viewing (`updated_at` is its time): the next
        # position tells a restart from the start (a rewatch) from a return to the credits.
        # A once-per-playback completion with only a percent, a viewing's time after that
        # start, is a rewatch too: no position says it was reached without playing.
        once = event.source in ONE_COMPLETION_PER_PLAYBACK
        long_enough = since >= shortest_viewing(duration)
        if event.played and event.position_ms is None and once and long_enough:
            return None
        if event.progress is not None:
            if event.progress <= RESTART_MAX_PROGRESS:
                return None
            if _played_to(event, since):
                # Hours later any position could have been played to; from Plex, Tautulli and
                # generic sources only their "watched" says it was (a stop at the credits the
                # next morning is that viewing's).
                return session if once and not event.played else None
            return replace(session, state="completed", progress=event.progress, updated_at=at)
        # Plex scrobbles once a viewing: a second scrobble a viewing's length after the
        # restart is a new one.
        if (event.played and long_enough) or (event.action == "start" and idle):
            return None
        return session
    if event.action == "start" and event.progress is None:
        # Plex leaves viewOffset out of a media.play from the beginning, but also sends one
        # minutes after its scrobble (skipped credits, pitfalls/webhooks #1).
        if idle:
            return None
        return replace(session, state="restarting", updated_at=at, playing_since=at)
    if event.played:
        # The server's own completion signal again. Plex, Tautulli and generic stops send one
        # per playback: a viewing's time after the last event, reaching the signal's position,
        # it is a new viewing whose start was lost (stopping again after resuming the credits
        # is not). Jellyfin and Emby clients left paused send their completed stop again every
        # hour or two: the same viewing.
        # A playback of the rest of the viewing (resumed past half way, not hours ago) sends its
        # own signal as it passes the server's mark: without a position, that viewing's however
        # long it took; with one played to from the start (resumed, then sought back to the
        # beginning and watched again), a new viewing.
        # With a position, a viewing's time is counted from when the playback began (the
        # completion, or a start since), not from its last pause or resume: sought back to the
        # beginning after the credits began, a rewatch paused midway is a viewing all the same.
        once = event.source in ONE_COMPLETION_PER_PLAYBACK
        resumed = session.state == "resumed" and not idle
        if once and event.position_ms is not None:
            playing = at - _playback_began(session)
            if playing >= shortest_viewing(duration) and _played_to(event, playing):
                return None
        elif once and since >= shortest_viewing(duration) and not resumed:
            return None
    elif event.progress is not None:
        # The event's own position: the session's may be a stale early one. Hours later, any
        # position before half way is playing the item again (its start lost); minutes after
        # the end, only a start says so (players report position 0 once done).
        if event.action in ("start", "resume") and event.progress <= REWATCH_MAX_PROGRESS:
            return None
        if idle and event.progress <= RESTART_MAX_PROGRESS:
            return None
    state: State = "completed"
    if event.action == "start" and event.progress is not None:
        if event.progress > RESTART_MAX_PROGRESS:
            state = "resumed"  # a playback of the rest of it (stopped at 85 % last night)
    elif session.state == "resumed" and not event.played and event.action != "stop":
        state = "resumed"  # that playback goes on (paused, resumed, reporting its position)
    if event.action == "start":
        return replace(session, state=state, updated_at=at, playing_since=at)
    if event.action == "resume":
        # The time it stood paused (since its last event) is no time spent playing: counted
        # in, a pause for the evening in the credits would pass for a whole viewing.
        paused = max(0.0, at - session.updated_at)
        began = _playback_began(session) + paused
        return replace(session, state=state, updated_at=at, playing_since=began)
    progress = event.progress if event.progress is not None else session.progress
    return replace(session, state=state, progress=progress, updated_at=at)


def _playback_began(session: Session) -> float:
    """When the playback a session after its completed viewing follows began, moved later by
    the time it stood paused: a start since the completion, else the completion itself."""
    return max(_completion(session), session.playing_since)
