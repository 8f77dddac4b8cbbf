"""Jellyfin webhook plugin (Generic destination) → canonical events.

Both body shapes are accepted: "Send All Properties" (typed values, Guids as 32 hex digits) and
our recommended template (every value a string, Guids with dashes, booleans as "True"/"False").
User and server Guids are normalised to 32 lower-case hex digits either way.

NotificationType → action:
- PlaybackStart → start; PlaybackStop → stop, played = PlayedToCompletion.
- PlaybackProgress → pause when IsPaused, else progress. Jellyfin has no pause/resume events;
  telling a resume from a progress report needs the previous state (the session machine's job).
- UserDataSaved by SaveReason: TogglePlayed → played/unplayed (from Played); UpdateUserRating →
  rate when Rating > 0 and not a like (common.star_rating); Ignored(no_rating) for a like or
  dislike; rate with no rating when the user data holds none (common.unrated: a clear, or a
  favourite of an item never rated, told apart by playback's remembered rating).
  UpdateUserData (the API's user-data update) carries the item's Rating with any change of its
  user data, so a rating cannot be told from an old one re-sent: Ignored(unsupported_event).
  The reasons written by playback → Ignored(user_data_echo), since the playback events
  already tell us.
- ItemAdded/ItemDeleted → Ignored(library_event); everything else → Ignored(unsupported_event).

Provider_imdb/tmdb/tvdb are the item's own ids: for an episode the **episode's**; the plugin
has no variables for the series' ids (the SeriesId lookup is enrichment's job). For an episode,
`year` is the series' year (Jellyfin's `Year` variable). `ItemId` → source_key and, for an
episode, `SeriesId` → show_source_key, both as 32 lower-case hex digits (templates send them
with dashes).
"""

from __future__ import annotations

import re

from watchbridge.ingest.common import (
    LIBRARY_EVENT,
    NO_RATING,
    UNSUPPORTED_EVENT,
    USER_DATA_ECHO,
    Payload,
    accept,
    air_date,
    flag,
    genres,
    ignored_type,
    integer,
    iso_time,
    make_ids,
    may_be_a_remark,
    server_guid,
    star_rating,
    text,
    ticks_to_ms,
    unrated,
    wrong_url_hint,
)
from watchbridge.model import (
    Account,
    Action,
    Ignored,
    MediaEvent,
    MediaKind,
    MediaRef,
    ParseResult,
    Rejected,
)

PLAYBACK_ACTIONS: dict[str, Action] = {
    "playbackstart": "start",
    "playbackprogress": "progress",
    "playbackstop": "stop",
}
LIBRARY = frozenset({"itemadded", "itemdeleted"})
# A template other than ours, or the plugin's "Generic Form" destination (form fields, not our
# JSON): the one line a user sees in the log should say which setting to change.
NO_ITEM_TYPE = (
    'jellyfin payload has no ItemType (use the plugin\'s "Generic" destination, not "Generic'
    ' Form", with the template in docs/webhooks.md)'
)
KINDS: dict[str, MediaKind] = {"movie": "movie", "episode": "episode"}
NOT_VIDEO_TYPES = frozenset(
    {"audio", "musicalbum", "musicartist", "audiobook", "book", "photo", "photoalbum"}
)
# UserDataSaveReason: the plugin sends the name; the numbers are Jellyfin's enum values.
SAVE_REASONS = {
    "1": "playbackstart",
    "2": "playbackprogress",
    "3": "playbackfinished",
    "4": "toggleplayed",
    "5": "updateuserrating",
    "6": "import",
    "7": "updateuserdata",
}
ECHO_REASONS = frozenset({"playbackstart", "playbackprogress", "playbackfinished"})
PROVIDERS = ("imdb", "tmdb", "tvdb", "anidb", "anilist")


def parse(data: Payload) -> ParseResult:
    """One Jellyfin webhook body (either shape) → a ParseResult."""
    notification = (text(data.get("NotificationType")) or "").lower()
    if not notification:
        return Rejected(
            f"jellyfin payload has no NotificationType{wrong_url_hint(data, 'jellyfin')}"
        )
    if notification in LIBRARY:
        return Ignored(LIBRARY_EVENT)
    if notification not in PLAYBACK_ACTIONS and notification != "userdatasaved":
        return Ignored(UNSUPPORTED_EVENT)
    item_type = (text(data.get("ItemType")) or "").lower()
    if not item_type:
        return Rejected(NO_ITEM_TYPE)
    if item_type not in KINDS:
        return Ignored(ignored_type(item_type, NOT_VIDEO_TYPES))
    if notification in PLAYBACK_ACTIONS:
        return _playback(data, notification, KINDS[item_type])
    return _user_data(data, KINDS[item_type])


def _playback(data: Payload, notification: str, kind: MediaKind) -> ParseResult:
    warnings: list[str] = []
    action = PLAYBACK_ACTIONS[notification]
    if action == "progress" and flag(data.get("IsPaused")):
        action = "pause"
    event = _event(
        data,
        action,
        _media_ref(data, kind, warnings),
        position_ms=ticks_to_ms(data.get("PlaybackPositionTicks")),
        played=notification == "playbackstop" and flag(data.get("PlayedToCompletion")) is True,
    )
    return accept(event, warnings, integer(data.get("EpisodeNumberEnd")))


def _user_data(data: Payload, kind: MediaKind) -> ParseResult:
    raw_reason = text(data.get("SaveReason")) or ""
    reason = SAVE_REASONS.get(raw_reason, raw_reason.lower())
    if reason in ECHO_REASONS:
        return Ignored(USER_DATA_ECHO)
    if reason == "toggleplayed":
        return _toggle_played(data, kind)
    if reason == "updateuserrating":
        return _rating(data, kind)
    return Ignored(UNSUPPORTED_EVENT)


def _toggle_played(data: Payload, kind: MediaKind) -> ParseResult:
    played = flag(data.get("Played"))
    if played is None:
        return Rejected("jellyfin UserDataSaved (TogglePlayed) has no Played value")
    warnings: list[str] = []
    last_played, sent = iso_time(data.get("LastPlayedDate")), _timestamp(data)
    event = _event(
        data,
        "played" if played else "unplayed",
        _media_ref(data, kind, warnings),
        played=played,
        occurred_at=last_played if played else None,
        remark=played and may_be_a_remark(integer(data.get("PlayCount")), last_played, sent),
    )
    return accept(event, warnings, integer(data.get("EpisodeNumberEnd")))


def _rating(data: Payload, kind: MediaKind) -> ParseResult:
    value, likes = _decimal(data.get("Rating")), data.get("Likes")
    rating = star_rating(value, likes)
    if rating is None and not unrated(value, likes):  # a thumb up or down: no stars
        return Ignored(NO_RATING)
    warnings: list[str] = []
    item = _media_ref(data, kind, warnings)
    event = _event(data, "rate", item, rating=rating)
    return accept(event, warnings)


def _event(
    data: Payload,
    action: Action,
    item: MediaRef,
    *,
    position_ms: int | None = None,
    played: bool = False,
    rating: int | None = None,
    occurred_at: float | None = None,
    remark: bool = False,
) -> MediaEvent:
    """`occurred_at`: when the event names a time of its own (a mark's LastPlayedDate), else
    None: its send time."""
    sent = _timestamp(data)
    return MediaEvent(
        source="jellyfin",
        action=action,
        item=item,
        server=server_guid(data.get("ServerId")) or "",
        account=Account(
            id=server_guid(data.get("UserId")), name=_text(data.get("NotificationUsername"))
        ),
        player=_player(data),
        position_ms=position_ms,
        duration_ms=ticks_to_ms(data.get("RunTimeTicks")) or None,
        played=played,
        rating=rating,
        occurred_at=sent if occurred_at is None else occurred_at,
        session_id=text(data.get("Id")) or "",
        remark=remark,
        sent_at=sent,
        genres=genres(data.get("Genres")),
    )


def _player(data: Payload) -> str:
    for key in ("DeviceId", "DeviceName", "ClientName"):
        if value := _text(data.get(key)):
            return value
    return ""


def _timestamp(data: Payload) -> float | None:
    """UtcTimestamp is ISO-8601 with Send All Properties; template text depends on the server's
    culture ("03/14/2025 20:48:02"), which we do not guess at: None."""
    return iso_time(data.get("UtcTimestamp")) or iso_time(data.get("Timestamp"))


def _media_ref(data: Payload, kind: MediaKind, warnings: list[str]) -> MediaRef:
    ids = make_ids({name: data.get(f"Provider_{name}") for name in PROVIDERS}, warnings)
    source_key = server_guid(data.get("ItemId"))
    if kind == "movie":
        return MediaRef(
            kind="movie",
            ids=ids,
            title=_text(data.get("Name")),
            year=integer(data.get("Year")),
            source_key=source_key,
        )
    number_ = integer(data.get("EpisodeNumber"))
    return MediaRef(
        kind="episode",
        ids=ids,
        title=_text(data.get("Name")),
        year=integer(data.get("Year")),
        show_title=_text(data.get("SeriesName")),
        season=integer(data.get("SeasonNumber")),
        number=number_,
        source_key=source_key,
        show_source_key=server_guid(data.get("SeriesId")),
        aired=air_date(data.get("PremiereDate")),
    )


_DECIMAL_COMMA = re.compile(r"[0-9]{1,2},[0-9]+")


def _decimal(value: object) -> object:
    """A template's number as the server's culture writes it: Handlebars.Net writes a double
    with the server's decimal separator (`7,5` on a German Windows server). A rating is 0-10,
    so a comma in it is never a thousands separator."""
    if isinstance(value, str) and _DECIMAL_COMMA.fullmatch(value.strip()):
        return value.strip().replace(",", ".")
    return value


def _text(value: object) -> str | None:
    """Free text; with Send All Properties the plugin escapes quotes twice (`Say \\"Hi\\"`)."""
    raw = text(value)
    return raw.replace('\\"', '"') if raw is not None else None
