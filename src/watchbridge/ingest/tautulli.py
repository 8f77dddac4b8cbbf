"""Tautulli "Webhook" notification agent → canonical events.

The body is the JSON Data template we document (docs/webhooks.md): every value is a string,
"" when Tautulli has no value, and an unknown `{parameter}` is left as literal text.

action: play → start, pause → pause, resume → resume, stop → stop, watched → stop with
played=True (Tautulli's own threshold, 85 % by default). created → Ignored(library_event);
buffer, error and the other triggers → Ignored(unsupported_event).

Ids: for an episode, imdb_id/themoviedb_id/thetvdb_id are the **show's** (Tautulli takes them
from the grandparent) → show_ids; a new-agent `guid` adds the episode's plex_guid, and
`rating_key` / `grandparent_rating_key` → source_key / show_source_key let delivery read the
episode's own ids from the Plex server (services.plex), as for Plex's webhooks. For a movie
they are the movie's. A HAMA `guid` is decided as Plex's webhook's (`ingest.plex.hama_unplaced`,
`MediaRef.unplaced`) with no show guid to compare: Tautulli has none. `user_id` is the
plex.tv account id, for the owner too, so it differs
from the owner's Account.id 1 in Plex's own webhooks. `user_rating` (0-10) is carried as the
user's current rating on every event that has it; Tautulli has no rating trigger.
`machine_id` is the player's id (Plex's webhook: Player.uuid), `player` its name (Player.title);
a template without `machine_id` names the player by name alone (player_name), by which its
reports pair with Plex's own webhook's (playback.report_keys). A template without
`server_machine_id` names no server: its reports are paired as the profile's one Plex server's
where that is sure (senders.ProfileServers).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from watchbridge.ingest.common import (
    LIBRARY_EVENT,
    LIVE_TV,
    MAX_MS,
    NOT_VIDEO,
    TEST_EVENT,
    UNSUPPORTED_EVENT,
    UNSUPPORTED_TYPE,
    Payload,
    accept,
    epoch,
    flag,
    integer,
    iso_time,
    make_ids,
    non_negative,
    number,
    text,
    wrong_url_hint,
)
from watchbridge.ingest.plex import (
    episode_numbers,
    guid_ids,
    hama_mode,
    hama_unplaced,
    parse_guid,
)
from watchbridge.model import (
    Account,
    Action,
    Ids,
    Ignored,
    MediaEvent,
    MediaKind,
    MediaRef,
    ParseResult,
    Rejected,
)
from watchbridge.ratings import from_ten

ACTIONS: dict[str, Action] = {
    "play": "start",
    "pause": "pause",
    "resume": "resume",
    "stop": "stop",
    "watched": "stop",
}
KINDS: dict[str, MediaKind] = {"movie": "movie", "episode": "episode"}
NOT_VIDEO_TYPES = frozenset({"track", "album", "artist", "photo", "photoalbum", "picture"})
ID_FIELDS = {"imdb": "imdb_id", "tmdb": "themoviedb_id", "tvdb": "thetvdb_id", "anidb": "anidb_id"}

_PLACEHOLDER = re.compile(r"\{[A-Za-z0-9_.:!\[\]-]+\}")


def parse(data: Payload) -> ParseResult:
    """One rendered Tautulli webhook body → a ParseResult."""
    warnings: list[str] = []
    fields = _filled(data, warnings)
    action = (text(fields.get("action")) or "").lower()
    if not action and all(_unfilled(data.get(key)) for key in ("action", "media_type")):
        return Ignored(TEST_EVENT)  # "Test Notifications" sends the template as it is
    if not action:
        return Rejected(f"tautulli payload has no action{wrong_url_hint(data, 'tautulli')}")
    if action not in ACTIONS:
        return Ignored(LIBRARY_EVENT if action == "created" else UNSUPPORTED_EVENT)
    media_type = (text(fields.get("media_type")) or "").lower()
    if not media_type:
        return Rejected("tautulli payload has no media_type")
    if media_type not in KINDS:
        return Ignored(NOT_VIDEO if media_type in NOT_VIDEO_TYPES else UNSUPPORTED_TYPE)
    guid = parse_guid(text(fields.get("guid")) or "")
    if (guid is not None and guid.provider == "xmltv") or flag(fields.get("live")):
        return Ignored(LIVE_TV)  # as Plex's own webhook: Live TV and DVR are not library items
    item = _media_ref(fields, KINDS[media_type], warnings)
    return accept(_event(fields, action, item, warnings), warnings)


def _unfilled(value: object) -> bool:
    """A literal `{name}`: a parameter Tautulli does not have, or a test that fills none."""
    return isinstance(value, str) and _PLACEHOLDER.fullmatch(value.strip()) is not None


def _filled(data: Payload, warnings: list[str]) -> dict[str, object]:
    """The fields Tautulli filled in; a literal `{name}` means the parameter does not exist."""
    filled: dict[str, object] = {}
    for key, value in data.items():
        if _unfilled(value):
            warnings.append(f"{key}: Tautulli did not fill in {str(value).strip()[:40]}")
        else:
            filled[key] = value
    return filled


def _event(fields: Payload, action: str, item: MediaRef, warnings: list[str]) -> MediaEvent:
    position_ms, duration_ms = _position_and_duration(fields, warnings)
    rating = number(fields.get("user_rating"))
    return MediaEvent(
        source="tautulli",
        action=ACTIONS[action],
        item=item,
        server=text(fields.get("server_machine_id")) or "",
        account=Account(
            id=text(fields.get("user_id")),
            name=text(fields.get("username")) or text(fields.get("user")),
        ),
        player=text(fields.get("machine_id")) or "",
        player_name=text(fields.get("player")) or "",
        position_ms=position_ms,
        duration_ms=duration_ms,
        played=action == "watched",
        rating=None if rating is None else from_ten(rating),
        occurred_at=epoch(fields.get("unixtime")) or iso_time(fields.get("utctime")),
        session_id=text(fields.get("session_id")) or text(fields.get("session_key")) or "",
    )


PERCENT_TOLERANCE = 10.0  # points between progress_percent and view_offset / duration_ms


def _position_and_duration(fields: Payload, warnings: list[str]) -> tuple[int | None, int | None]:
    """(`view_offset`, `duration_ms`), the position from `progress_percent` when there is no
    `view_offset`. A duration that disagrees with both (`{duration}`, in minutes, pasted into
    `duration_ms`: every stop would count as watched) gives way to `progress_percent`."""
    duration = non_negative(fields.get("duration_ms")) or None
    position = non_negative(fields.get("view_offset"))
    percent = number(fields.get("progress_percent"))
    if percent is None or not 0 <= percent <= 100:
        return position, duration
    if not position:  # none, or 0 beside a percent: no ground to doubt the duration on
        if position == 0 and percent == 0:
            return position, duration
        return (round(duration * percent / 100) if duration else position), duration
    if duration and abs(position * 100 / duration - percent) > PERCENT_TOLERANCE:
        warnings.append(
            "duration_ms disagrees with view_offset and progress_percent (another unit?): "
            "going by progress_percent; the template's duration_ms should be {duration_ms}"
        )
        # A percent near 0 makes a duration longer than any viewing (or than any float).
        duration_by_percent = position * 100 / percent if percent > 0 else math.inf
        return position, round(duration_by_percent) if duration_by_percent <= MAX_MS else None
    return position, duration


def _media_ref(fields: Payload, kind: MediaKind, warnings: list[str]) -> MediaRef:
    external = make_ids({name: fields.get(key) for name, key in ID_FIELDS.items()}, warnings)
    raw_guid = text(fields.get("guid")) or ""
    guid = parse_guid(raw_guid)
    if hama_mode(raw_guid) is not None:
        # Tautulli reads `anidb_id` off the item's own HAMA guid whatever its mode (a `tvdb-`
        # guid's TheTVDB id): the guid says it, rightly named.
        external = replace(external, anidb=None)
    if kind == "movie":
        return MediaRef(
            kind="movie",
            ids=external.merged(guid_ids(guid)),
            title=text(fields.get("title")),
            year=integer(fields.get("year")),
            source_key=text(fields.get("rating_key")),
        )
    is_episode_guid = guid is not None and guid.provider == "plex"
    season, number_, absolute = episode_numbers(
        None if is_episode_guid else guid,
        integer(fields.get("season_num")),
        integer(fields.get("episode_num")),
    )
    show_ids = external if is_episode_guid else external.merged(guid_ids(guid))
    return MediaRef(
        kind="episode",
        ids=guid_ids(guid) if is_episode_guid else Ids(),
        title=text(fields.get("episode_name")),
        year=integer(fields.get("show_year")),
        show_ids=show_ids,
        show_title=text(fields.get("show_name")),
        season=season,
        number=number_,
        absolute=absolute,
        source_key=text(fields.get("rating_key")),
        show_source_key=text(fields.get("grandparent_rating_key")),
        # Tautulli sends no show guid: the show's ids it sends come from the show's `Guid[]`,
        # which a HAMA show has none of, so a HAMA episode with any is one of a show matched
        # again by another agent; with none, its own guid stands for its show's.
        unplaced=hama_unplaced(raw_guid, show_ids, (None, external) if external else None),
    )
