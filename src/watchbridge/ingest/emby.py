"""Emby built-in webhooks → canonical events (JSON, or the `data` part of the multipart form).

Events: playback.start → start, playback.pause → pause, playback.unpause → resume,
playback.stop → stop with played = PlaybackInfo.PlayedToCompletion, playback.scrobble (handled
by other receivers, never captured) → stop with played=True, item.markplayed → played,
item.markunplayed → unplayed, item.rate → rate when Item.UserData.Rating > 0 and not a like
(common.star_rating), Ignored(no_rating) for a like or dislike, and rate with no rating when
the user data holds none (a clear, or a favourite of an item never rated: see common.unrated).
library.* → library_event, system.notificationtest → test_event, the rest → unsupported_event.

`Item.ProviderIds` are the item's own ids (for an episode the episode's, often only Tvdb).
`Item.Id` → source_key and, for an episode, `Item.SeriesId` → show_source_key (numeric strings
in Emby, so they can look like Plex ratingKeys: never hand them to a Plex lookup).
`User` is absent unless the webhook is limited to users: then Account() stays empty.
Position comes from `PlaybackInfo.PositionTicks`: on an auto-advancing stop the session state
may already describe the next item, PlaybackInfo does not.
"""

from __future__ import annotations

from watchbridge.ingest.common import (
    LIBRARY_EVENT,
    NO_RATING,
    TEST_EVENT,
    UNSUPPORTED_EVENT,
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
    obj,
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

ACTIONS: dict[str, Action] = {
    "playback.start": "start",
    "playback.pause": "pause",
    "playback.unpause": "resume",
    "playback.stop": "stop",
    "playback.scrobble": "stop",
    "item.markplayed": "played",
    "item.markunplayed": "unplayed",
    "item.rate": "rate",
}
KINDS: dict[str, MediaKind] = {"movie": "movie", "episode": "episode"}
NOT_VIDEO_TYPES = frozenset(
    {"audio", "musicalbum", "musicartist", "audiobook", "book", "photo", "photoalbum"}
)
PROVIDERS = ("imdb", "tmdb", "tvdb", "anidb", "anilist")


def parse(data: Payload) -> ParseResult:
    """One Emby webhook document → a ParseResult."""
    event = (text(data.get("Event")) or "").lower()
    if not event:
        return Rejected(f"emby payload has no Event{wrong_url_hint(data, 'emby')}")
    if event not in ACTIONS:
        return Ignored(_event_reason(event))
    item = obj(data.get("Item"))
    if not item:
        return Rejected("emby payload has no Item")
    item_type = (text(item.get("Type")) or "").lower()
    if not item_type:
        return Rejected("emby payload has no Item.Type")
    if item_type not in KINDS:
        return Ignored(ignored_type(item_type, NOT_VIDEO_TYPES))
    rating = _rating(item)
    user_data = obj(item.get("UserData"))
    if (
        event == "item.rate"
        and rating is None
        and not unrated(user_data.get("Rating"), user_data.get("Likes"))
    ):  # a thumb up or down: no stars
        return Ignored(NO_RATING)
    warnings: list[str] = []
    ref = _media_ref(item, KINDS[item_type], warnings)
    return accept(
        _event(data, item, event, ref, rating), warnings, integer(item.get("IndexNumberEnd"))
    )


def _event_reason(event: str) -> str:
    if event.startswith("library."):
        return LIBRARY_EVENT
    if event == "system.notificationtest":
        return TEST_EVENT
    return UNSUPPORTED_EVENT


def _event(
    data: Payload, item: Payload, event: str, ref: MediaRef, rating: int | None
) -> MediaEvent:
    playback = obj(data.get("PlaybackInfo"))
    session = obj(data.get("Session"))
    user = obj(data.get("User"))
    user_data = obj(item.get("UserData"))
    action = ACTIONS[event]
    sent = iso_time(data.get("Date"))
    remark = action == "played" and may_be_a_remark(
        integer(user_data.get("PlayCount")), iso_time(user_data.get("LastPlayedDate")), sent
    )
    return MediaEvent(
        source="emby",
        action=action,
        item=ref,
        server=server_guid(obj(data.get("Server")).get("Id") or item.get("ServerId")) or "",
        account=Account(id=server_guid(user.get("Id")), name=text(user.get("Name"))),
        player=_player(session),
        position_ms=ticks_to_ms(playback.get("PositionTicks")),
        duration_ms=ticks_to_ms(item.get("RunTimeTicks")) or None,
        played=_played(event, playback),
        rating=rating,
        occurred_at=_occurred_at(item, action, sent),
        session_id=text(session.get("Id")) or "",
        remark=remark,
        sent_at=sent,
        genres=genres(item.get("Genres")),
    )


def _played(event: str, playback: Payload) -> bool:
    if event in ("item.markplayed", "playback.scrobble"):
        return True
    return event == "playback.stop" and flag(playback.get("PlayedToCompletion")) is True


def _rating(item: Payload) -> int | None:
    user_data = obj(item.get("UserData"))
    return star_rating(user_data.get("Rating"), user_data.get("Likes"))


def _player(session: Payload) -> str:
    for key in ("DeviceId", "DeviceName", "Client"):
        if value := text(session.get(key)):
            return value
    return ""


def _occurred_at(item: Payload, action: Action, sent: float | None) -> float | None:
    """A manual mark is dated by the play it records; everything else by the event's Date
    (`sent`)."""
    if action == "played":
        marked = iso_time(obj(item.get("UserData")).get("LastPlayedDate"))
        if marked is not None:
            return marked
    return sent


def _media_ref(item: Payload, kind: MediaKind, warnings: list[str]) -> MediaRef:
    provider_ids = {key.lower(): value for key, value in obj(item.get("ProviderIds")).items()}
    ids = make_ids({name: provider_ids.get(name) for name in PROVIDERS}, warnings)
    if kind == "movie":
        return MediaRef(
            kind="movie",
            ids=ids,
            title=text(item.get("Name")),
            year=integer(item.get("ProductionYear")),
            source_key=text(item.get("Id")),
        )
    return MediaRef(
        kind="episode",
        ids=ids,
        title=text(item.get("Name")),
        show_title=text(item.get("SeriesName")),
        season=integer(item.get("ParentIndexNumber")),
        number=integer(item.get("IndexNumber")),
        source_key=text(item.get("Id")),
        show_source_key=text(item.get("SeriesId")),
        aired=air_date(item.get("PremiereDate")),
    )
