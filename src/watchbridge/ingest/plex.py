"""Plex webhooks (Plex Pass; Settings → Webhooks) → canonical events.

Events: media.play → start, media.pause → pause, media.resume → resume, media.stop → stop,
media.scrobble → stop with played=True (Plex's own "watched" signal, usually before the stop),
media.rate → rate (of a movie, an episode, a whole show or a season). library.* →
Ignored(library_event); admin.*, device.*, playback.started and anything unknown →
Ignored(unsupported_event).

Ratings: `Metadata.userRating` (0-10), else the top-level `rating` (seen as number and string).
A media.rate without a positive rating (missing, 0 or -1) is the user clearing it: a `rate`
event with rating None. Other events carry the user's current rating when Plex includes it.

Ids: new agents give `Guid[]` with the item's own ids; for an episode those are the
**episode's**, and the show is only `grandparentGuid` (plex://show/…) → show_ids.plex_guid.
Legacy agents give one guid naming the **show** plus season/episode
(`com.plexapp.agents.thetvdb://81189/5/16?lang=en`). `ratingKey` → source_key and, for an
episode, `grandparentRatingKey` (for a rated season, `parentRatingKey`) → show_source_key: what
enrichment asks PMS about (`GET /library/metadata/{ratingKey}` answers with the same Metadata
shape, read by `metadata_ref`, so Plex guids are parsed here and nowhere else).

An episode's `originallyAvailableAt` ("2013-09-29") → `aired`, its shape checked only: what
places it in TMDB's numbering when no TMDB id of its own does (catalogue.tmdb_numbered).

Plex sends no session id and no event time; occurred_at comes from `lastViewedAt` on a scrobble
and `lastRatedAt` on a rating, else it is None.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from watchbridge import hama
from watchbridge.ingest.common import (
    LIBRARY_EVENT,
    LIVE_TV,
    NOT_VIDEO,
    STREAMING_CATALOGUE,
    UNSUPPORTED_EVENT,
    UNSUPPORTED_TYPE,
    Payload,
    accept,
    clean_id,
    epoch,
    flag,
    integer,
    non_negative,
    number,
    obj,
    text,
    wrong_url_hint,
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
    "media.play": "start",
    "media.pause": "pause",
    "media.resume": "resume",
    "media.stop": "stop",
    "media.scrobble": "stop",
    "media.rate": "rate",
}
KINDS: dict[str, MediaKind] = {"movie": "movie", "episode": "episode"}
# A whole show is rated as itself (its own ids are in the payload); a season by its show and
# number: `parentGuid`/`parentRatingKey` name the show (new agents: by its plex:// guid only,
# whose ids delivery reads from PMS), `index` the season; a legacy guid names show and season.
RATED_KINDS: dict[str, MediaKind] = KINDS | {"show": "show", "season": "season"}
NOT_VIDEO_TYPES = frozenset({"track", "album", "artist", "photo", "photoalbum", "picture"})
NOT_VIDEO_SECTIONS = frozenset({"artist", "photo"})
CATALOGUE_SERVER_PREFIX = "tv.plex.provider."

_AGENT_PREFIXES = ("com.plexapp.agents.", "tv.plex.agents.")
_PROVIDER_ALIASES = {"themoviedb": "tmdb", "thetvdb": "tvdb", "thetvdbdvdorder": "tvdb"}
_ID_PROVIDERS = frozenset({"imdb", "tmdb", "tvdb", "anidb"})
_BARE_IMDB = re.compile(r"tt[0-9]{5,10}")
_HAMA = re.compile(r"(?:(anidb|tvdb|tmdb|imdb)([2-5]?)-)?([^/]+)(?:/([0-9]+))?(?:/([0-9]+))?")
_CATALOGUE_KEY = re.compile(r"[0-9a-f]{24}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class Guid:
    """What one Plex guid names: a provider id, and for episode guids the season/episode."""

    provider: str  # imdb, tmdb, tvdb, anidb, plex, or anything we cannot use (local, iva, …)
    value: str
    season: int | None = None
    number: int | None = None
    absolute: bool = False  # HAMA tvdb3/tvdb4: `number` is an absolute episode number


def parse(data: Payload) -> ParseResult:
    """One Plex webhook payload (the JSON of the `payload` part) → a ParseResult."""
    event = text(data.get("event"))
    if event is None:
        return Rejected(f"plex payload has no event{wrong_url_hint(data, 'plex')}")
    if event not in ACTIONS:
        if hint := wrong_url_hint(data, "plex"):  # another sender's `event` (generic's)
            return Rejected(f"plex payload event {event[:40]!r} is not Plex's{hint}")
        return Ignored(LIBRARY_EVENT if event.startswith("library.") else UNSUPPORTED_EVENT)
    metadata = obj(data.get("Metadata"))
    if not metadata:
        return Rejected("plex payload has no Metadata")
    kinds = RATED_KINDS if event == "media.rate" else KINDS
    skip = _skip_reason(data, metadata, kinds)
    if skip is not None:
        return skip
    warnings: list[str] = []
    item = _media_ref(kinds[text(metadata.get("type")) or ""], metadata, warnings)
    if item.kind == "show" and not (item.ids.imdb or item.ids.tmdb or item.ids.tvdb):
        return Ignored(UNSUPPORTED_TYPE)  # an older server's payload without Guid[]
    if item.kind == "season" and not _season_placed(item, metadata):
        return Ignored(UNSUPPORTED_TYPE)
    return accept(_event(data, metadata, event, item), warnings)


def _skip_reason(
    data: Payload, metadata: Payload, kinds: dict[str, MediaKind] = KINDS
) -> ParseResult | None:
    """Ignored for anything that is not a movie/episode from a library, Rejected without type."""
    if _is_catalogue(data, metadata):
        return Ignored(STREAMING_CATALOGUE)
    guid = parse_guid(text(metadata.get("guid")) or "")
    if (guid is not None and guid.provider == "xmltv") or flag(metadata.get("live")):
        return Ignored(LIVE_TV)
    kind = text(metadata.get("type"))
    if kind is None:
        return Rejected("plex payload has no Metadata.type")
    if kind in NOT_VIDEO_TYPES or text(metadata.get("librarySectionType")) in NOT_VIDEO_SECTIONS:
        return Ignored(NOT_VIDEO)
    if kind not in kinds or _is_extra(metadata, guid) or _is_personal(metadata, guid):
        return Ignored(UNSUPPORTED_TYPE)
    return None


_PERSONAL_PROVIDERS = frozenset({"none", "local"})  # Plex's "Personal Media" agent, local items


def _is_personal(metadata: Payload, guid: Guid | None) -> bool:
    """Home videos: no agent matched the item (nor, for an episode, its show), so no service
    can know it; it would wait as unmatched and end as a dead letter. An episode whose show
    the payload does not name may still be matched through its show (ids.Enricher)."""
    if guid is None or guid.provider not in _PERSONAL_PROVIDERS or metadata.get("Guid"):
        return False
    if text(metadata.get("type")) != "episode":
        return True
    show = parse_guid(text(metadata.get("grandparentGuid")) or "")
    return show is not None and show.provider in _PERSONAL_PROVIDERS


def _is_catalogue(data: Payload, metadata: Payload) -> bool:
    """Plex's free streaming service: its own server uuid, or a 24-hex key outside any library."""
    server = text(obj(data.get("Server")).get("uuid")) or ""
    if server.startswith(CATALOGUE_SERVER_PREFIX):
        return True
    key = text(metadata.get("ratingKey")) or ""
    in_library = "librarySectionID" in metadata or "librarySectionType" in metadata
    return bool(_CATALOGUE_KEY.fullmatch(key)) and not in_library


def _is_extra(metadata: Payload, guid: Guid | None) -> bool:
    """Trailers and extras, whatever `type` they claim."""
    has_extra_marker = "extraType" in metadata or text(metadata.get("subtype")) is not None
    return has_extra_marker or (guid is not None and guid.provider == "iva")


def _event(data: Payload, metadata: Payload, event: str, item: MediaRef) -> MediaEvent:
    player = obj(data.get("Player"))
    return MediaEvent(
        source="plex",
        action=ACTIONS[event],
        item=item,
        server=text(obj(data.get("Server")).get("uuid")) or "",
        account=_account(obj(data.get("Account"))),
        player=text(player.get("uuid")) or "",
        player_name=text(player.get("title")) or "",
        position_ms=non_negative(metadata.get("viewOffset")),
        duration_ms=non_negative(metadata.get("duration")) or None,
        played=event == "media.scrobble",
        rating=_rating(data, metadata),
        occurred_at=_occurred_at(event, metadata),
    )


def _account(account: Payload) -> Account:
    return Account(id=text(account.get("id")), name=text(account.get("title")))


def _rating(data: Payload, metadata: Payload) -> int | None:
    """0-100, or None: unrated/cleared (0, -1, missing)."""
    value = number(metadata.get("userRating"))
    if value is None:
        value = number(data.get("rating"))
    return None if value is None else from_ten(value)


def _occurred_at(event: str, metadata: Payload) -> float | None:
    if event == "media.scrobble":
        return epoch(metadata.get("lastViewedAt"))
    if event == "media.rate":
        return epoch(metadata.get("lastRatedAt"))
    return None


# --------------------------------------------------------------------------- items and ids


def metadata_ref(metadata: Payload, warnings: list[str]) -> MediaRef | None:
    """One Plex Metadata object (a webhook's, or an item of PMS's `/library/metadata/{key}`)
    as a MediaRef: movies, episodes and shows; None for any other type."""
    kind = text(metadata.get("type"))
    if kind in KINDS:
        return _media_ref(KINDS[kind], metadata, warnings)
    if kind == "show":
        return _titled_ref("show", metadata, warnings)
    return None


def _media_ref(kind: MediaKind, metadata: Payload, warnings: list[str]) -> MediaRef:
    if kind == "season":
        return _season_ref(metadata)
    if kind != "episode":
        return _titled_ref(kind, metadata, warnings)
    guid = parse_guid(text(metadata.get("guid")) or "")
    own_ids = guid_array_ids(metadata.get("Guid"), warnings)
    return _episode_ref(metadata, guid, own_ids, warnings)


def _titled_ref(kind: MediaKind, metadata: Payload, warnings: list[str]) -> MediaRef:
    """A movie or a show: its own ids from `Guid[]`, then from its one `guid`."""
    guid = parse_guid(text(metadata.get("guid")) or "")
    own_ids = guid_array_ids(metadata.get("Guid"), warnings)
    return MediaRef(
        kind=kind,
        ids=own_ids.merged(guid_ids(guid)),
        title=text(metadata.get("title")),
        year=integer(metadata.get("year")),
        source_key=text(metadata.get("ratingKey")),
    )


def _season_ref(metadata: Payload) -> MediaRef:
    """A season (rated): its show by `parentGuid` (new agents: plex://show/…) or by the legacy
    guid naming show and season (`com.plexapp.agents.thetvdb://81189/2`), its number by
    `index`; `parentRatingKey` is the show to read from PMS for its ids."""
    guid = parse_guid(text(metadata.get("guid")) or "")
    show_guid = guid if guid is not None and guid.provider != "plex" else None
    show_ids = guid_ids(show_guid).merged(
        guid_ids(parse_guid(text(metadata.get("parentGuid")) or ""))
    )
    season = integer(metadata.get("index"))
    if season is None and show_guid is not None:
        season = show_guid.season
    return MediaRef(
        kind="season",
        title=text(metadata.get("title")),
        show_ids=show_ids,
        show_title=text(metadata.get("parentTitle")),
        season=season,
        source_key=text(metadata.get("ratingKey")),
        show_source_key=text(metadata.get("parentRatingKey")),
    )


def _season_placed(item: MediaRef, metadata: Payload) -> bool:
    """A season rating can go somewhere: it has a number, and its show has ids or a plex://
    guid and key to read them by. Not a season of HAMA's absolute modes (tvdb3/tvdb4: a
    tvdb4 season is a story arc, no TheTVDB season)."""
    guid = parse_guid(text(metadata.get("guid")) or "")
    if item.season is None or (guid is not None and guid.absolute):
        return False
    show = item.show_ids
    readable = show.plex_guid and item.show_source_key  # its show's ids are read from PMS
    return bool(show.imdb or show.tmdb or show.tvdb or show.anidb or readable)


def _episode_ref(
    metadata: Payload, guid: Guid | None, own_ids: Ids, warnings: list[str]
) -> MediaRef:
    """New agent: the guid is the episode's; legacy agents: the guid names show + numbers."""
    episode_guid = guid if guid is not None and guid.provider == "plex" else None
    show_guid = guid if guid is not None and guid.provider != "plex" else None
    show_ids = guid_ids(show_guid).merged(
        guid_ids(parse_guid(text(metadata.get("grandparentGuid")) or ""))
    )
    if "dvdorder" in (text(metadata.get("guid")) or ""):
        warnings.append("TheTVDB DVD-order agent: season and episode numbers are in DVD order")
    season, number_, absolute = episode_numbers(
        show_guid, integer(metadata.get("parentIndex")), integer(metadata.get("index"))
    )
    return MediaRef(
        kind="episode",
        ids=own_ids.merged(guid_ids(episode_guid)),
        title=text(metadata.get("title")),
        show_ids=show_ids,
        show_title=text(metadata.get("grandparentTitle")),
        season=season,
        number=number_,
        absolute=absolute,
        source_key=text(metadata.get("ratingKey")),
        show_source_key=text(metadata.get("grandparentRatingKey")),
        aired=_air_day(metadata.get("originallyAvailableAt")),
        unplaced=_hama_unplaced(metadata, show_ids),
    )


def _hama_unplaced(metadata: Payload, show_ids: Ids) -> str | None:
    """Whether a HAMA episode's numbers place nothing (`hama_unplaced`): its show's guid here
    is the `grandparentGuid`, parsed only for a HAMA episode (on every Plex webhook's path)."""
    guid = text(metadata.get("guid")) or ""
    if hama_mode(guid) is None:
        return None
    raw = text(metadata.get("grandparentGuid"))
    show = None if raw is None else (hama_mode(raw), guid_ids(parse_guid(raw)))
    return hama_unplaced(guid, show_ids, show)


def hama_unplaced(guid: str, show_ids: Ids, show: tuple[str | None, Ids] | None) -> str | None:
    """Whether the numbers of an episode (its `guid`, raw; `show_ids`: all the ids a payload
    gives its show) place nothing, as the link decides it (`hama.numbering_unknown`); None for
    another agent's episode. `show`: its show's HAMA mode (None: another agent's) and ids, as
    a payload names them; None when it names no show (the episode's own guid stands for it)."""
    mode = hama_mode(guid)
    if mode is None or not mode.startswith(("anidb", "tvdb")):
        return None
    show_mode, ids = show if show is not None else (mode, show_ids)
    return hama.numbering_unknown(mode, show_ids, show_mode, ids)


def _air_day(value: object) -> str | None:
    """An episode's `originallyAvailableAt`, the day it first aired as Plex sends it
    ("2013-09-29"): its shape only. What places the episode by it (catalogue.find_aired)
    reads the date, off the webhook's path, and drops one that is no day."""
    return value if isinstance(value, str) and _DAY.fullmatch(value) else None


def episode_numbers(
    show_guid: Guid | None, season: int | None, number: int | None
) -> tuple[int | None, int | None, int | None]:
    """(season, number, absolute) of an episode: the server's numbers, else those of its
    legacy show guid; a HAMA tvdb3/tvdb4 guid makes the number an absolute one, but for a
    special: those modes keep TheTVDB's season 0 and its numbers (a Bleach film is S00E03,
    not the third episode)."""
    if show_guid is None:
        return season, number, None
    season = season if season is not None else show_guid.season
    number = number if number is not None else show_guid.number
    absolute = show_guid.absolute and season != 0
    return (season, None, number) if absolute else (season, number, None)


def guid_array_ids(value: object, warnings: list[str]) -> Ids:
    """`Guid: [{"id": "imdb://tt…"}, …]`; tolerate a bare string or a list of strings."""
    entries = value if isinstance(value, list) else [value]
    found: dict[str, str] = {}
    for entry in entries:
        raw = text(obj(entry).get("id")) if isinstance(entry, dict) else text(entry)
        guid = parse_guid(raw or "")
        if guid is None or guid.provider not in _ID_PROVIDERS:
            continue
        cleaned = clean_id(guid.provider, guid.value)
        if cleaned is None:
            warnings.append(f"ignored malformed guid {raw!r:.60}")
        else:
            found.setdefault(guid.provider, cleaned)
    return Ids(**found)


def guid_ids(guid: Guid | None) -> Ids:
    """The ids one parsed guid gives (none for local media, YouTube, trailers, …)."""
    if guid is None:
        return Ids()
    if guid.provider == "plex":
        return Ids(plex_guid=guid.value)
    if guid.provider in _ID_PROVIDERS:
        cleaned = clean_id(guid.provider, guid.value)
        return Ids(**{guid.provider: cleaned}) if cleaned else Ids()
    return Ids()


@functools.lru_cache(maxsize=1024)  # pure, and Guid is frozen: a webhook parses its guids twice
def parse_guid(raw: str) -> Guid | None:
    """Any Plex guid form: `plex://…`, legacy/HAMA/NFO agents, or a bare `tt…` IMDb id."""
    raw = raw.strip()
    if _BARE_IMDB.fullmatch(raw):
        return Guid("imdb", raw)
    scheme, sep, rest = raw.partition("://")
    if not sep or not scheme:
        return None
    path = rest.split("?", 1)[0]
    provider = _provider(scheme)
    if provider == "plex":
        return Guid("plex", f"plex://{path}")
    if provider == "hama":
        return _hama_guid(path)
    if provider.startswith("nfo."):
        return _nfo_guid(path)
    return _path_guid(provider, path)


def _provider(scheme: str) -> str:
    scheme = scheme.lower()
    for prefix in _AGENT_PREFIXES:
        scheme = scheme.removeprefix(prefix)
    if scheme.startswith("tv.plex.xmltv"):
        return "xmltv"
    return _PROVIDER_ALIASES.get(scheme, scheme)


def _path_guid(provider: str, path: str) -> Guid:
    """`<id>[/<season>[/<episode>]]`, the legacy movie and TV agent form."""
    segments = path.split("/")
    numbers = [integer(segment) for segment in segments[1:3]]
    numbers += [None] * (2 - len(numbers))
    return Guid(provider, segments[0], season=numbers[0], number=numbers[1])


def _hama_guid(path: str) -> Guid | None:
    """HAMA anime agent: `anidb-123/1/7`, `tvdb3-81189/1/7`, a bare number means AniDB."""
    match = _HAMA.fullmatch(path)
    if match is None:
        return None
    source, variant, value, season, episode = match.groups()
    source = source or "anidb"
    return Guid(
        source,
        value,
        season=integer(season),
        number=integer(episode),
        # tvdb3/tvdb4 keep absolute episode numbers inside TVDB seasons (HAMA modes).
        absolute=source == "tvdb" and variant not in ("", "2"),
    )


def hama_mode(raw: str) -> str | None:
    """The HAMA anime agent's mode a guid is in (`anidb`, `anidb2`, `tvdb`, `tvdb3`, ...: how
    it numbers episodes, reference plex.md), None for another agent's guid."""
    scheme, sep, rest = raw.strip().partition("://")
    if not sep or _provider(scheme) != "hama":
        return None
    match = _HAMA.fullmatch(rest.split("?", 1)[0])
    if match is None:
        return None
    source, variant = match.group(1) or "anidb", match.group(2) or ""
    return f"{source}{variant}"


def _nfo_guid(path: str) -> Guid | None:
    """Plex NFO agents: `movie/tmdb_383498`; a last segment without `<provider>_` names nothing."""
    provider, sep, value = path.rsplit("/", 1)[-1].partition("_")
    if not sep:
        return None
    return Guid(_PROVIDER_ALIASES.get(provider.lower(), provider.lower()), value)
