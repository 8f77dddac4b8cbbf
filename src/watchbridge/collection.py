"""Plex media details as Trakt collection metadata. Pure: PMS JSON in, frozen dataclasses out.

Follows `reference/plex.md` §4 and `trakt-api.md` §13. Dolby Vision is checked before the HDR10
transfer function, because DV profile 7/8 files also carry `colorTrc=smpte2084` (PlexTraktSync
checks them the other way round and reports most DV files as HDR10). When an item has several
versions (`Media[]`), the best one is reported: resolution, then HDR, then audio, then channels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from watchbridge.guard import LIST_MIN_HELD, removals_held
from watchbridge.ingest.common import epoch, integer, obj, text
from watchbridge.ingest.plex import metadata_ref
from watchbridge.model import Ids, MediaRef

Payload = Mapping[str, Any]

# Trakt's allowed values (trakt-api.md §13), best last within each ranking.
RESOLUTION_RANK = (
    "sd_480i",
    "sd_480p",
    "sd_576i",
    "sd_576p",
    "hd_720p",
    "hd_1080i",
    "hd_1080p",
    "uhd_4k",
)
HDR_RANK = ("hlg", "hdr10", "hdr10_plus", "dolby_vision")
AUDIO_RANK = (
    "mp2",
    "mp3",
    "wma",
    "ogg",
    "aac",
    "ogg_opus",
    "dolby_prologic",
    "dolby_digital",
    "dts",
    "dolby_digital_plus",
    "dts_hr",
    "lpcm",
    "flac",
    "dolby_digital_plus_atmos",
    "dts_ma",
    "dolby_truehd",
    "auro_3d",
    "dts_x",
    "dolby_atmos",
)
CHANNELS = (
    "1.0",
    "2.0",
    "2.1",
    "3.0",
    "3.1",
    "4.0",
    "4.1",
    "5.0",
    "5.1",
    "5.1.2",
    "5.1.4",
    "6.1",
    "7.1",
    "7.1.2",
    "7.1.4",
    "9.1",
    "10.1",
)
# Plex codec names (Media.audioCodec / audio Stream.codec) -> Trakt audio.
AUDIO_CODECS = {
    "aac": "aac",
    "ac3": "dolby_digital",
    "eac3": "dolby_digital_plus",
    "truehd": "dolby_truehd",
    "dca": "dts",
    "dts": "dts",
    "dca-ma": "dts_ma",
    "flac": "flac",
    "mp3": "mp3",
    "mp2": "mp2",
    "opus": "ogg_opus",
    "vorbis": "ogg",
    "wmav2": "wma",
    "wmapro": "wma",
    "pcm": "lpcm",
}
_LAYOUT = re.compile(r"(\d+(?:\.\d+){1,2})")
_NAMED_LAYOUTS = {"mono": "1.0", "stereo": "2.0", "quad": "4.0"}

VIDEO, AUDIO = 1, 2


@dataclass(frozen=True)
class CollectionMetadata:
    """One version's details in Trakt's collection vocabulary (None = unknown, left out)."""

    media_type: str = "digital"
    resolution: str | None = None
    hdr: str | None = None
    audio: str | None = None
    audio_channels: str | None = None

    def to_trakt(self) -> dict[str, str]:
        """The fields for a `/sync/collection` item (unknown ones left out)."""
        fields = {
            "media_type": self.media_type,
            "resolution": self.resolution,
            "hdr": self.hdr,
            "audio": self.audio,
            "audio_channels": self.audio_channels,
        }
        return {name: value for name, value in fields.items() if value}

    def rank(self) -> tuple[int, int, int, int]:
        """Sort key: the better version is the larger one."""
        return (
            _index(RESOLUTION_RANK, self.resolution),
            _index(HDR_RANK, self.hdr),
            _index(AUDIO_RANK, self.audio),
            _index(CHANNELS, self.audio_channels),
        )

    @classmethod
    def from_trakt(cls, data: Payload | None) -> CollectionMetadata | None:
        """Trakt's `metadata` object of a collection entry (None when Trakt has none)."""
        if not data:
            return None
        return cls(
            media_type=text(data.get("media_type")) or "digital",
            resolution=text(data.get("resolution")),
            hdr=text(data.get("hdr")),
            audio=text(data.get("audio")),
            audio_channels=text(data.get("audio_channels")),
        )


def _index(ranking: Sequence[str], value: str | None) -> int:
    return ranking.index(value) + 1 if value in ranking else 0


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _streams(media: Payload) -> tuple[list[Payload], list[Payload]]:
    """The video and the audio streams of every part of one version."""
    video: list[Payload] = []
    sound: list[Payload] = []
    for part in _list(media.get("Part")):
        for stream in _list(obj(part).get("Stream")):
            if not isinstance(stream, Mapping):
                continue
            kind = integer(stream.get("streamType"))
            if kind == VIDEO:
                video.append(stream)
            elif kind == AUDIO:
                sound.append(stream)
    return video, sound


def _list(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, Mapping) else []


def _chosen(streams: Sequence[Payload]) -> Payload:
    """The stream a player would use: selected, else default, else the first."""
    for key in ("selected", "default"):
        for stream in streams:
            if _flag(stream.get(key)):
                return stream
    return streams[0] if streams else {}


_INTERLACED = re.compile(r"\b(?:1080|576|480)i\b", re.IGNORECASE)
_BY_LABEL = {"4k": "uhd_4k", "2160": "uhd_4k", "1080": "hd_1080p", "720": "hd_720p"}


def _interlaced(media: Payload, video: Payload) -> bool:
    scan = text(video.get("scanType")) or text(media.get("scanType")) or ""
    if scan.lower() == "interlaced":
        return True
    titles = (text(video.get(k)) for k in ("displayTitle", "extendedDisplayTitle"))
    return any(_INTERLACED.search(t) for t in titles if t)


def resolution(media: Payload, video: Payload | None = None) -> str | None:
    """`Media` width (preferred) or `videoResolution` as Trakt's resolution; `i` if interlaced."""
    video = video or {}
    width = integer(media.get("width")) or integer(video.get("width"))
    label = (text(media.get("videoResolution")) or "").lower()
    if width:
        if width >= 3200:  # 4K scope/flat crops are narrower than 3840 only by a little
            return "uhd_4k"
        if width >= 1900:
            return "hd_1080i" if _interlaced(media, video) else "hd_1080p"
        if width >= 1200:
            return "hd_720p"
        # SD: PAL and NTSC DVDs are both 720 wide (anamorphic), so the height decides.
        height = integer(media.get("height")) or integer(video.get("height"))
        pal = height >= 540 if height else (label == "576" or width >= 768)
    elif label in _BY_LABEL:
        found = _BY_LABEL[label]
        return "hd_1080i" if found == "hd_1080p" and _interlaced(media, video) else found
    elif label in ("576", "480", "sd"):
        pal = label == "576"
    else:
        return None
    if pal:
        return "sd_576i" if _interlaced(media, video) else "sd_576p"
    return "sd_480i" if _interlaced(media, video) else "sd_480p"


def _titles(stream: Payload) -> str:
    """A stream's display titles, lower-cased (where Plex names Atmos, DTS:X, HDR10+)."""
    names = (stream.get(k) for k in ("displayTitle", "extendedDisplayTitle", "title"))
    return " ".join(n for n in names if isinstance(n, str)).lower()


def hdr(video: Payload) -> str | None:
    """The video stream's HDR format; Dolby Vision wins over the HDR10 base layer it carries."""
    present = video.get("DOVIPresent")
    if _flag(present) or (present is None and video.get("DOVIProfile") not in (None, "")):
        return "dolby_vision"
    transfer = (text(video.get("colorTrc")) or "").lower()
    if transfer == "arib-std-b67":
        return "hlg"
    if transfer not in ("smpte2084", ""):
        return None
    # HDR10+ rides on HDR10 (PQ) and has no attribute of its own (plex.md §4, unconfirmed).
    if "hdr10+" in _titles(video):
        return "hdr10_plus"
    return "hdr10" if transfer else None


def audio(media: Payload, stream: Payload) -> str | None:
    """Trakt's audio value from the chosen audio stream, falling back to `Media.audioCodec`."""
    codec = (text(stream.get("codec")) or text(media.get("audioCodec")) or "").lower()
    if codec.startswith("pcm"):
        codec = "pcm"
    if codec in ("dca", "dts", "dca-ma"):
        profile = (text(stream.get("profile")) or text(media.get("audioProfile")) or "").lower()
        titles = _titles(stream)
        if "dts:x" in titles or "dts-x" in titles or profile in ("x", "dts:x"):
            return "dts_x"
        if codec == "dca-ma" or profile in ("ma", "dts-hd ma") or "dts-hd ma" in titles:
            return "dts_ma"
        if profile in ("hra", "dts-hd hra") or "dts-hd hra" in titles:
            return "dts_hr"
        return "dts"
    if codec in ("truehd", "eac3") and "atmos" in _titles(stream):
        return "dolby_atmos" if codec == "truehd" else "dolby_digital_plus_atmos"
    return AUDIO_CODECS.get(codec)


def audio_channels(media: Payload, stream: Payload) -> str | None:
    """`audioChannelLayout` when it names a layout, else the channel count (count - 0.9 >= 3)."""
    layout = (text(stream.get("audioChannelLayout")) or "").lower()
    if layout in _NAMED_LAYOUTS:
        return _NAMED_LAYOUTS[layout]
    found = _LAYOUT.search(layout)
    if found and found.group(1) in CHANNELS:
        return found.group(1)
    count = integer(stream.get("channels")) or integer(media.get("audioChannels"))
    if not count:
        return None
    value = f"{count}.0" if count <= 2 else f"{count - 1}.1"
    return value if value in CHANNELS else None


def version_metadata(media: Payload) -> CollectionMetadata:
    """One `Media` element (a version of the item) as collection metadata."""
    videos, sounds = _streams(media)
    video, sound = _chosen(videos), _chosen(sounds)
    return CollectionMetadata(
        resolution=resolution(media, video),
        hdr=hdr(video) if video else None,
        audio=audio(media, sound),
        audio_channels=audio_channels(media, sound),
    )


def best_version(versions: Iterable[Payload]) -> CollectionMetadata | None:
    """The best of an item's versions (None when it has no `Media` at all)."""
    candidates = [version_metadata(obj(m)) for m in versions]
    return max(candidates, key=lambda m: m.rank()) if candidates else None


def item_metadata(metadata: Payload) -> CollectionMetadata | None:
    """A PMS library item (`Metadata` of a listing or `/library/metadata/{key}`)."""
    return best_version(_list(metadata.get("Media")))


def needs_details(metadata: Payload) -> bool:
    """Whether a listing item lacks the video stream HDR lives on (listings carry `Media` but
    not always `Stream`, plex.md §4): its own `/library/metadata` answer has it."""
    for media in _list(metadata.get("Media")):
        video, _ = _streams(obj(media))
        if video:
            return False
    return True


# --------------------------------------------------------------------------- planning

KEY_IDS = ("tmdb", "tvdb", "imdb")  # canonical key preference for collection items


@dataclass(frozen=True)
class Collected:
    """A movie or episode with its collection details, from either side.

    `key` is canonical (`movie:tmdb:{id}`, `episode:tmdb:{show}:s{n}e{m}`); `aliases` are the
    same item under every other id either side may know it by. `ref` is what a Trakt write
    sends; `added_at` is when the item reached the library (Plex `addedAt`).
    """

    key: str
    aliases: frozenset[str]
    ref: MediaRef
    metadata: CollectionMetadata | None
    added_at: float | None = None


def movie_aliases(ids: Ids) -> list[str]:
    # Trakt movies have no TVDB id: a movie's `tvdb://` guid (plex.md §2) cannot match.
    return [f"movie:{n}:{v}" for n in ("tmdb", "imdb") if (v := getattr(ids, n))]


def episode_aliases(show_ids: Ids, season: int, number: int) -> list[str]:
    return [f"episode:{n}:{v}:s{season}e{number}" for n in KEY_IDS if (v := getattr(show_ids, n))]


def plex_collected(
    movies: Iterable[Payload],
    episodes: Iterable[Payload],
    shows: Iterable[Payload],
    details: Mapping[str, CollectionMetadata | None] | None = None,
) -> tuple[list[Collected], list[str]]:
    """PMS listing items (movies, episodes, and the shows the episodes belong to) as collection
    items; second: titles that cannot go to Trakt (no usable ids), for the run summary.

    Episodes take their show's ids from the show listing (`grandparentRatingKey`), so a
    new-agent episode (episode-level guids only) needs no extra request. `details`: by
    ratingKey, what the items' own answers (with streams) say, for listing items without
    streams (`needs_details`); the listing's `Media` otherwise.
    """
    details = details or {}
    show_ids: dict[str, Ids] = {}
    for show in shows:
        ref = metadata_ref(show, [])
        if ref is not None and ref.source_key:
            show_ids[ref.source_key] = ref.ids
    found: list[Collected] = []
    skipped: list[str] = []
    for entry in (*movies, *episodes):
        ref = metadata_ref(entry, [])
        if ref is None or ref.kind not in ("movie", "episode"):
            continue
        added_at = epoch(entry.get("addedAt"))
        if ref.kind == "movie":
            aliases = movie_aliases(ref.ids)
            ids = Ids(tmdb=ref.ids.tmdb, imdb=ref.ids.imdb)
            item = MediaRef("movie", ids=ids, title=ref.title, year=ref.year)
        else:
            ids = ref.show_ids.merged(show_ids.get(ref.show_source_key or "", Ids()))
            if ref.season is None or ref.number is None:
                aliases = []
            else:
                aliases = episode_aliases(ids, ref.season, ref.number)
            item = MediaRef(
                "episode",
                # By show + numbers (as Trakt's collection lists them); own ids only without.
                ids=Ids() if aliases else ref.ids,
                show_ids=ids,
                show_title=ref.show_title,
                season=ref.season,
                number=ref.number,
            )
        if not aliases:
            skipped.append(ref.describe())
            continue
        key = text(entry.get("ratingKey")) or ""
        metadata = details[key] if key in details else item_metadata(entry)
        found.append(Collected(aliases[0], frozenset(aliases), item, metadata, added_at))
    return found, skipped


def trakt_collected(movies: Iterable[Payload], shows: Iterable[Payload]) -> list[Collected]:
    """`/sync/collection/movies` and `/shows` (with `extended=metadata`) as collection items."""
    found: list[Collected] = []
    for row in movies:
        ids = _trakt_ids(obj(row.get("movie")).get("ids"))
        aliases = movie_aliases(ids)
        if aliases:
            ref = MediaRef("movie", ids=ids, title=text(obj(row.get("movie")).get("title")))
            meta = CollectionMetadata.from_trakt(obj(row.get("metadata")))
            found.append(Collected(aliases[0], frozenset(aliases), ref, meta))
    for row in shows:
        show = obj(row.get("show"))
        ids = _trakt_ids(show.get("ids"))
        for season in _list(row.get("seasons")):
            number = integer(obj(season).get("number"))
            for episode in _list(obj(season).get("episodes")):
                episode = obj(episode)
                ep_number = integer(episode.get("number"))
                if number is None or ep_number is None:
                    continue
                aliases = episode_aliases(ids, number, ep_number)
                if not aliases:
                    continue
                ref = MediaRef(
                    "episode",
                    show_ids=ids,
                    show_title=text(show.get("title")),
                    season=number,
                    number=ep_number,
                )
                meta = CollectionMetadata.from_trakt(obj(episode.get("metadata")))
                found.append(Collected(aliases[0], frozenset(aliases), ref, meta))
    return found


def _trakt_ids(raw: object) -> Ids:
    data = obj(raw)
    return Ids(
        trakt=text(data.get("trakt")),
        imdb=text(data.get("imdb")),
        tmdb=text(data.get("tmdb")),
        tvdb=text(data.get("tvdb")),
        slug=text(data.get("slug")),
    )


@dataclass(frozen=True)
class CollectionPlan:
    """Plex -> Trakt: what to add, what to update (better details), what to remove."""

    add: tuple[Collected, ...] = ()
    update: tuple[Collected, ...] = ()
    remove: tuple[Collected, ...] = ()  # Trakt's entries, only ones we put there
    unchanged: int = 0
    synced: tuple[Collected, ...] = ()  # every Plex item that will be on Trakt afterwards
    held: tuple[Collected, ...] = ()  # removals the mass-removal guard keeps back
    held_reason: str = ""  # why (empty when none are held)


def same_details(ours: CollectionMetadata | None, theirs: CollectionMetadata | None) -> bool:
    if ours is None:
        return True  # nothing to tell Trakt
    return theirs is not None and ours.to_trakt() == theirs.to_trakt()


def best_copies(items: Sequence[Collected]) -> list[Collected]:
    """One item per title: a title in two libraries (4K and HD) is Trakt's one collection
    entry, described by its best version and collected when the first copy came. Pure."""

    def quality(item: Collected) -> tuple[int, ...]:
        return item.metadata.rank() if item.metadata is not None else (-1,)

    kept: list[Collected] = []
    taken: dict[str, int] = {}  # alias -> index in kept
    for item in sorted(items, key=quality, reverse=True):
        twin = next((taken[a] for a in item.aliases if a in taken), None)
        if twin is None:
            taken.update(dict.fromkeys(item.aliases, len(kept)))
            kept.append(item)
        elif item.added_at is not None:
            first = kept[twin].added_at
            kept[twin] = replace(kept[twin], added_at=min(first or item.added_at, item.added_at))
    return kept


def plan_collection(
    plex: Sequence[Collected],
    trakt: Sequence[Collected],
    baseline: Iterable[str],
    *,
    remove_missing: bool = False,
    max_removal_share: float = 1.0,
    holding: bool = False,
    hold: str = "",
) -> CollectionPlan:
    """Add what Trakt lacks, update what it describes differently, and (when asked) remove
    what we once added that is no longer on the server. Items others added to the Trakt
    collection are never removed: only `baseline` keys (ours) are candidates. Removing more
    than `max_removal_share` of the Trakt collection (a library that reads empty while its
    share is unmounted) is held instead, and while `holding` (the last run held removals) so
    is any removal, until confirmed; given a `hold` (a side whose account is not checked yet
    read empty: `accounts.read_empty_hold`), every removal, however few."""
    plex = best_copies(plex)
    index: dict[str, Collected] = {}
    for entry in trakt:
        for alias in entry.aliases:
            index.setdefault(alias, entry)
    add: list[Collected] = []
    update: list[Collected] = []
    unchanged = 0
    seen: set[int] = set()
    for item in sorted(plex, key=lambda c: (c.added_at or 0.0, c.key)):
        match = next((index[a] for a in sorted(item.aliases) if a in index), None)
        if match is None:
            add.append(item)
            continue
        seen.add(id(match))
        if same_details(item.metadata, match.metadata):
            unchanged += 1
        else:
            update.append(item)
    ours = set(baseline)
    remove = (
        [e for e in trakt if id(e) not in seen and (e.aliases & ours)] if remove_missing else []
    )
    # Movies and episodes are weighed apart: an emptied movie library is a mass removal
    # however many episodes are collected beside it.
    held = ""
    for kind in ("movie", "episode"):
        removals = sum(1 for e in remove if e.ref.kind == kind)
        size = sum(1 for e in trakt if e.ref.kind == kind)
        what, minimum = f"{kind}s in the Trakt collection", 1 if hold else LIST_MIN_HELD
        held = held or removals_held(
            removals, size, what, max_removal_share, minimum, holding, hold
        )
    return CollectionPlan(
        add=tuple(add),
        update=tuple(update),
        remove=() if held else tuple(remove),
        unchanged=unchanged,
        synced=tuple(plex),
        held=tuple(remove) if held else (),
        held_reason=held,
    )
