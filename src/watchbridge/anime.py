"""Anime numbering: AniList entries ⇄ TMDB/TVDB show, season and episode (pure, no I/O).

AniList keeps one entry per cour or part, numbered 1..n; Trakt and Serializd number by TMDB
seasons, Plex by its agent. The index joins the community datasets (anibridge-mappings,
Kometa Anime-IDs, Fribb anime-lists, Anime-Lists XML) and the user's overrides into one
answer per AniList id and numbering scheme, keeping where each answer came from.

Order of trust, per AniList id and per scheme (first that covers the episode wins):
override > anibridge (AniList-keyed ranges) > Anime-Lists mapping-list ranges > Kometa >
Fribb > Anime-Lists default season + offset > any absolute answer. An override for a scheme
is final: datasets are not consulted for that scheme. Nothing is ever guessed from titles.

API used by the AniList adapter (kept stable):
    load_index(datasets, overrides) -> AnimeIndex
    AnimeIndex.resolve(anilist_id) -> AnimeTarget | Unmatched
    AnimeIndex.episode_for(anilist_id, episode, scheme="tmdb", total=None)
        -> EpisodeRef | MovieRef | Unmatched
    AnimeIndex.anilist_for(show, season, number, scheme="tmdb") -> (anilist_id, ep) | Unmatched
    AnimeIndex.anilist_for_movie(tmdb_movie) -> (anilist_id, ep) | Unmatched
    AnimeIndex.anilist_by_ids(anidb=, mal=) -> anilist_id | Unmatched
    AnimeIndex.season_entries(show, season, scheme="tmdb") -> ((anilist_id, first), ...)
    AnimeIndex.adopt(anilist_id, mal_id) -> bool
    AnimeIndex.episode_count(anilist_id) -> int | None

Episode counts: AniList-keyed ranges (overrides, anibridge) are written with AniList's episode
counts, so where they close an entry's episodes, an open-ended "season + offset" row of a
lesser dataset for the same entry ends there too: TMDB 65942 S1E51 is not Re:Zero S2 Part 2
episode 13 when anibridge says that part has 12.
    AnimeIndex.explain(anilist_id) -> list[str]
"""

from __future__ import annotations

import functools
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import yaml

from watchbridge.loose import whole
from watchbridge.model import MediaRef

Scheme = Literal["tmdb", "tvdb"]
SCHEMES: tuple[Scheme, ...] = ("tmdb", "tvdb")
DATASETS: tuple[str, ...] = ("anibridge", "kometa", "fribb", "animelists")

# Lower ranks win. Absolute answers rank after every seasonal one (see `_ABSOLUTE_RANK`).
_RANKS = {
    "override": 0,
    "anibridge": 1,
    "animelists-list": 2,
    "kometa": 3,
    "fribb": 4,
    "animelists": 5,
}
_ABSOLUTE_RANK = 10
# Sources whose ranges are keyed by AniList episodes (written with AniList's episode counts).
_ANILIST_KEYED = frozenset({"override", "anibridge"})


# --------------------------------------------------------------------------- public values


@dataclass(frozen=True)
class AnimeTarget:
    """Where one AniList entry lands on TMDB (Trakt, Serializd), with the TVDB show beside it.

    `season`/`offset`/`first`/`last` describe the first TMDB range (target episode = AniList
    episode + offset; `last` None = open-ended); `absolute` means TMDB/Trakt absolute numbers
    (Trakt `number_abs`) rather than a season. `source` names the dataset or "override".
    """

    tmdb_show: int | None
    tvdb_show: int | None
    season: int | None
    offset: int
    first: int | None
    last: int | None
    absolute: bool
    source: str
    tmdb_movie: int | None = None
    imdb: str | None = None
    tvdb_season: int | None = None
    tvdb_offset: int = 0
    tvdb_source: str | None = None


@dataclass(frozen=True)
class EpisodeRef:
    """One target episode. `season` None with `absolute` True: `number` is an absolute number.

    `numbers` holds every target episode when one AniList episode spans several (a ratio
    range, e.g. AoT Final Chapters 1 → S4E29-30); `number` is the first of them.
    """

    scheme: Scheme
    show: int
    season: int | None
    number: int
    absolute: bool
    source: str
    numbers: tuple[int, ...] = ()


@dataclass(frozen=True)
class MovieRef:
    """A TMDB movie: Trakt syncs it as a movie, Serializd (TV only) skips it."""

    tmdb: int | None
    imdb: str | None
    source: str


# The reasons a dataset refresh (or an override) can clear.
DATASET_CODES = frozenset({"unknown", "no-target", "outside", "new-season", "unmapped"})


@dataclass(frozen=True)
class Unmatched:
    """Why no target could be given. `code` groups reasons for reports:

    unknown (in no dataset: not anime), no-target (known, but no show/movie for this
    scheme), outside (episode outside every mapped range, or past an entry's end), new-season
    (a season of a show the datasets know, in no range yet: a dataset refresh may bring
    it), unmapped (a dataset or override says "no
    counterpart"), partial (part of a movie: counted once the last part is watched),
    ambiguous (two entries claim the same target episode), special (a season 0 episode of a
    known show no range maps: settled, not retried), seasons (`PENDING`: an absolute
    number needs the show's season list, which could not be read yet: tried again next run),
    server-order (`SERVER_ORDER`: the media server numbers the show its own way, and the
    episode is not among its numbers), hama-mode (`HAMA_MODE`: a HAMA agent mode whose
    numbering is not known), hama-mixed (`HAMA_MIXED`: a HAMA episode whose guid and its
    show's disagree), unaired (`deliver.anilist.UNAIRED`: a play mapped onto a title AniList
    lists as not aired yet).
    """

    reason: str
    code: str = "unknown"


Resolution = AnimeTarget | Unmatched
Forward = EpisodeRef | MovieRef | Unmatched
PENDING = "seasons"  # Unmatched code: the season list an absolute number needs is not read yet
PARTIAL = "partial"  # Unmatched code: part of a movie or a longer episode (its last part counts)

ANIME_GENRES = frozenset({"anime", "animation"})
_ANIME_IDS = ("anilist", "anidb", "mal")


def anime_signs(item: MediaRef, genres: Iterable[object] = ()) -> str | None:
    """Why `item`, which no mapping dataset knows, looks like anime all the same, in words,
    or None: an anime id (HAMA on Plex, an AniDB or AniList plugin on Jellyfin and Emby), an
    absolute episode number, or the genre Anime or Animation (for a library on TMDB metadata
    the only sign). Pure."""
    for ids in (item.show_ids, item.ids):
        for name in _ANIME_IDS:
            if value := getattr(ids, name):
                return f"anime id {name} {value}"
    if item.absolute is not None:
        return "numbered by absolute episode"
    for genre in genres:
        if isinstance(genre, str) and genre.strip().casefold() in ANIME_GENRES:
            return f"genre {genre.strip()}"
    return None


# Unmatched code: an episode of a show the media server numbers its own way (a TheTVDB
# ordering), which nothing renumbers; reported by the media server's side of the link
SERVER_ORDER = "server-order"
# Unmatched code: a Plex show the HAMA agent matched in a mode whose episode numbers are not
# known here (`anidb2-`..`anidb4-`, `tvdb5-`); reported by the media server's side of the link
HAMA_MODE = "hama-mode"
# Unmatched code: a Plex episode whose HAMA guid names another mode or id than its show's (a
# show matched again, its episodes not yet); reported by the media server's side of the link
HAMA_MIXED = "hama-mixed"


class DatasetError(ValueError):
    """A dataset (or the overrides file) could not be read at all."""


# --------------------------------------------------------------------------- ranges


@dataclass(frozen=True, slots=True)
class Span:
    """AniList episodes src_first..src_last (None: open) onto target segments.

    `ratio` n > 1: each source episode covers n target episodes; -n: n source episodes make
    one target episode (anibridge's `|n` / `|-n`). Empty `dst`: explicitly no counterpart.
    """

    src_first: int
    src_last: int | None
    dst: tuple[tuple[int, int | None], ...]
    ratio: int = 1

    def covers(self, episode: int) -> bool:
        return episode >= self.src_first and (self.src_last is None or episode <= self.src_last)

    def targets(self, episode: int) -> tuple[int, ...] | None:
        """Target episodes for a covered source episode; () = partial/no counterpart."""
        pos = episode - self.src_first
        if not self.dst:
            return ()
        if self.ratio > 1:
            wanted = range(pos * self.ratio, pos * self.ratio + self.ratio)
        elif self.ratio < -1:
            group = -self.ratio
            if pos % group != group - 1:
                return ()
            wanted = range(pos // group, pos // group + 1)
        else:
            wanted = range(pos, pos + 1)
        found = tuple(t for t in (self._at(p) for p in wanted) if t is not None)
        return found or None

    def _at(self, pos: int) -> int | None:
        for first, last in self.dst:
            length = None if last is None else last - first + 1
            if length is None or pos < length:
                return first + pos
            pos -= length
        return None

    def _position(self, number: int) -> int | None:
        """Target episode `number`'s place along `dst` (0 first), None when outside."""
        pos = 0
        for first, last in self.dst:
            if number >= first and (last is None or number <= last):
                return pos + number - first
            if last is None:
                return None
            pos += last - first + 1
        return None

    def reverse(self, number: int) -> int | None:
        """The source episode for target episode `number`, or None when outside."""
        pos = self._position(number)
        if pos is None:
            return None
        if self.ratio > 1:
            src = self.src_first + pos // self.ratio
        elif self.ratio < -1:
            src = self.src_first + pos * -self.ratio + (-self.ratio - 1)
        else:
            src = self.src_first + pos
        return src if self.src_last is None or src <= self.src_last else None

    def part_of(self, number: int) -> tuple[int, int] | None:
        """(part, of parts) when target episode `number` is not the last of the target
        episodes one source episode covers (AoT's two TVDB halves of one AniList episode);
        None for a whole or last part, which counts the source episode."""
        if self.ratio <= 1:
            return None
        pos = self._position(number)
        if pos is None or pos % self.ratio == self.ratio - 1:
            return None
        return pos % self.ratio + 1, self.ratio

    def describe(self) -> str:
        src = f"{self.src_first}" + (
            "-"
            if self.src_last is None
            else ("" if self.src_last == self.src_first else f"-{self.src_last}")
        )
        if not self.dst:
            return f"{src} → none"
        dst = ",".join(
            f"{a}" + ("-" if b is None else ("" if a == b else f"-{b}")) for a, b in self.dst
        )
        suffix = f"|{self.ratio}" if self.ratio != 1 else ""
        return f"{src} → {dst}{suffix}"


@functools.lru_cache(maxsize=1 << 16)
def _span(
    first: int, last: int | None, dst: tuple[tuple[int, int | None], ...], ratio: int = 1
) -> Span:
    """Spans are immutable and repeat across thousands of entries: share one object each."""
    return Span(first, last, dst, ratio)


@functools.lru_cache(maxsize=1 << 16)
def _one(season: int | None, span: Span) -> tuple[tuple[int | None, Span], ...]:
    """A shared ((season, span),) for single-range mappings."""
    return ((season, span),)


def offset_span(offset: int) -> Span:
    """Every AniList episode n → target n + offset (a season + offset mapping)."""
    return _span(1, None, ((1 + offset, None),))


_SRC = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d*)\s*)?$")


def parse_range(src: str, dst: str | None) -> Span:
    """One anibridge range pair: `"1-12": "39-50"`, `"1": "29-30|2"`, `"1-": "29-"`, lists."""
    match = _SRC.match(str(src))
    if not match:
        raise DatasetError(f"bad source range {src!r}")
    first = int(match.group(1))
    last: int | None = first
    if match.group(2) is not None:
        last = int(match.group(2)) if match.group(2) else None
    if dst is None:
        return _span(first, last, ())
    text, _, ratio_text = str(dst).partition("|")
    ratio = 1
    if ratio_text:
        try:
            ratio = int(ratio_text)
        except ValueError:
            raise DatasetError(f"bad ratio in {dst!r}") from None
        if ratio in (0, -1):
            ratio = 1
    segments: list[tuple[int, int | None]] = []
    for part in text.split(","):
        seg = _SRC.match(part)
        if not seg:
            raise DatasetError(f"bad target range {dst!r}")
        a = int(seg.group(1))
        b = a if seg.group(2) is None else (int(seg.group(2)) if seg.group(2) else None)
        segments.append((a, b))
    return _span(first, last, tuple(segments), ratio)


# --------------------------------------------------------------------------- mappings


@dataclass(frozen=True, slots=True)
class ShowMap:
    """One source's mapping of one AniList id onto one show: (season or None = absolute, span)."""

    scheme: Scheme
    show: int
    spans: tuple[tuple[int | None, Span], ...]
    source: str
    via: str = ""  # e.g. "AniDB 15593"

    @property
    def rank(self) -> int:
        return _RANKS.get(self.source, 9)


@dataclass(frozen=True, slots=True)
class MovieMap:
    tmdb: int | None
    imdb: str | None
    span: Span | None  # anibridge's "1-4": "1|-4"; None: the movie is the whole entry
    source: str
    via: str = ""


@dataclass(slots=True)
class _Entry:
    anilist_id: int
    anidb: list[int] = field(default_factory=list)
    mal: list[int] = field(default_factory=list)
    id_sources: list[str] = field(default_factory=list)
    shows: list[ShowMap] = field(default_factory=list)
    movies: list[MovieMap] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skip: str | None = None  # override says: never map
    seasons: list[ShowMap] = field(default_factory=list)  # see _AniDbRow.seasons


@dataclass
class _AniDbRow:
    """One Anime-Lists `<anime>`: what it says for regular episodes, per scheme.

    `seasons`: season ranges not used to map (TMDB's of an absolutely numbered show), kept to
    tell which absolute numbers each season holds (`AnimeIndex.absolute_in_season`)."""

    anidb: int
    name: str
    shows: list[ShowMap]
    movies: list[MovieMap]
    notes: list[str]
    seasons: list[ShowMap] = field(default_factory=list)


@dataclass(frozen=True)
class Overrides:
    """Parsed overrides file: per AniList id, show maps (ranked first), movies, or skip."""

    shows: Mapping[int, tuple[ShowMap, ...]] = field(default_factory=dict)
    movies: Mapping[int, tuple[MovieMap, ...]] = field(default_factory=dict)
    skip: Mapping[int, str] = field(default_factory=dict)
    source: str = "overrides"

    def __len__(self) -> int:
        return len(set(self.shows) | set(self.movies) | set(self.skip))


# --------------------------------------------------------------------------- loose values


def ids(value: Any) -> tuple[int, ...]:
    """Ids given as int, "123", "123,456", [123, "456"] or junk (→ ())."""
    if value is None or isinstance(value, bool):
        return ()
    if isinstance(value, int):
        return (value,) if value > 0 else ()
    if isinstance(value, float) and value.is_integer():
        return ids(int(value))
    if isinstance(value, str):
        return tuple(
            int(p) for p in re.split(r"[,\s]+", value.strip()) if p.isdigit() and int(p) > 0
        )
    if isinstance(value, list | tuple):
        return tuple(i for item in value for i in ids(item))
    return ()


def first_id(value: Any) -> int | None:
    found = ids(value)
    return found[0] if found else None


def movie_key(tmdb: int | None, imdb: str | None) -> str | None:
    """How the reverse index files a movie: by its TMDB id, or by its IMDb id."""
    if tmdb is not None:
        return f"tmdb:{tmdb}"
    return f"imdb:{imdb}" if imdb else None


def _imdb(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        return next((i for i in (_imdb(v) for v in value) if i), None)
    if isinstance(value, str):
        found = re.findall(r"tt\d+", value)
        return found[0] if found else None
    return None


def _pick(row: Mapping[str, Any], *names: str) -> Any:
    """The first present field of several names (datasets rename fields)."""
    for name in names:
        if name in row and row[name] not in (None, ""):
            return row[name]
    return None


def _json(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"not valid JSON ({exc})") from None


# --------------------------------------------------------------------------- parsers


def parse_anibridge(
    data: bytes | str,
) -> dict[int, tuple[list[ShowMap], list[MovieMap], set[int], set[int]]]:
    """anibridge-mappings v3: `"anilist:ID" → {"tvdb_show:ID:sN": {"1-12": "13-24"}}`."""
    root = _json(data)
    if not isinstance(root, dict):
        raise DatasetError("expected a JSON object of descriptors")
    result: dict[int, tuple[list[ShowMap], list[MovieMap], set[int], set[int]]] = {}
    for key, targets in root.items():
        provider, _, rest = str(key).partition(":")
        anilist = whole(rest.split(":")[0]) if provider == "anilist" else None
        if anilist is None or not isinstance(targets, dict):
            continue
        result[anilist] = _anibridge_targets(targets, "anibridge")
    if root and not result:
        raise DatasetError("no anilist:<id> descriptors found")
    return result


def _anibridge_targets(
    targets: Mapping[str, Any], source: str
) -> tuple[list[ShowMap], list[MovieMap], set[int], set[int]]:
    seasons: dict[tuple[Scheme, int], list[tuple[int | None, Span]]] = {}
    movies: list[MovieMap] = []
    anidb: set[int] = set()
    mal: set[int] = set()
    imdb_movie: str | None = None
    for descriptor, ranges in targets.items():
        if str(descriptor).startswith("$"):
            continue
        parts = str(descriptor).split(":")
        provider = parts[0]
        ident = parts[1] if len(parts) > 1 else ""
        scope = parts[2] if len(parts) > 2 else ""
        spans = _spans(ranges)
        if provider in ("tvdb_show", "tmdb_show"):
            show = whole(ident)
            season = whole(scope[1:]) if scope.startswith("s") else None
            if show is None or season is None or spans is None:
                continue
            scheme: Scheme = "tvdb" if provider == "tvdb_show" else "tmdb"
            seasons.setdefault((scheme, show), []).extend((season, s) for s in spans)
        elif provider == "tmdb_movie" and (movie := whole(ident)) is not None:
            # "1": "1" is the whole entry; "1-4": "1|-4" says which episodes make the movie.
            part = spans[0] if spans else None
            entire = part is None or (part.ratio == 1 and part.src_last == part.src_first)
            movies.append(MovieMap(movie, None, None if entire else part, source))
        elif provider == "imdb_movie":
            imdb_movie = _imdb(ident)
        elif provider == "anidb":
            anidb.update(ids(ident))
        elif provider == "mal":
            mal.update(ids(ident))
    if imdb_movie:
        movies = [MovieMap(m.tmdb, imdb_movie, m.span, m.source) for m in movies] or [
            MovieMap(None, imdb_movie, None, source)
        ]
    shows = [
        ShowMap(scheme, show, _one(*spans[0]) if len(spans) == 1 else tuple(spans), source)
        for (scheme, show), spans in seasons.items()
    ]
    return shows, movies, anidb, mal


def _spans(ranges: Any) -> list[Span] | None:
    if ranges is None:
        return [Span(1, None, ())]
    if not isinstance(ranges, dict):
        return None
    spans: list[Span] = []
    for src, dst in ranges.items():
        if str(src).startswith("$"):
            continue
        try:
            spans.append(parse_range(str(src), None if dst is None else str(dst)))
        except DatasetError:
            continue
    return spans


@dataclass
class _IdRow:
    anilist: tuple[int, ...]
    anidb: int | None
    mal: tuple[int, ...]
    shows: list[ShowMap]
    movies: list[MovieMap]
    source: str


def parse_kometa(data: bytes | str) -> list[_IdRow]:
    """Kometa anime_ids.json: AniDB id → tvdb_id/tvdb_season (-1 = absolute)/tvdb_epoffset."""
    root = _json(data)
    if not isinstance(root, dict):
        raise DatasetError("expected a JSON object keyed by AniDB id")
    rows: list[_IdRow] = []
    for key, row in root.items():
        anidb = whole(key)
        if anidb is None or not isinstance(row, dict):
            continue
        shows: list[ShowMap] = []
        via = f"AniDB {anidb}"
        tvdb = first_id(_pick(row, "tvdb_id", "thetvdb_id"))
        season = whole(row.get("tvdb_season"))
        offset = whole(row.get("tvdb_epoffset")) or 0
        if tvdb is not None and season is not None:
            shows.append(_season_map("tvdb", tvdb, season, offset, "kometa", via))
        tmdb_show = first_id(_pick(row, "tmdb_show_id", "tmdb_tv_id"))
        tmdb_season = whole(row.get("tmdb_season"))
        if tmdb_show is not None and tmdb_season is not None:
            tmdb_offset = whole(row.get("tmdb_epoffset")) or 0
            shows.append(_season_map("tmdb", tmdb_show, tmdb_season, tmdb_offset, "kometa", via))
        movies = []
        tmdb_movie = first_id(row.get("tmdb_movie_id"))
        imdb = _imdb(row.get("imdb_id"))
        if tmdb_movie is not None or imdb:
            movies.append(MovieMap(tmdb_movie, imdb, None, "kometa", via))
        rows.append(
            _IdRow(
                ids(row.get("anilist_id")), anidb, ids(row.get("mal_id")), shows, movies, "kometa"
            )
        )
    if root and not rows:
        raise DatasetError("no AniDB-keyed rows found")
    return rows


def _season_map(
    scheme: Scheme, show: int, season: int, offset: int, source: str, via: str
) -> ShowMap:
    if season < 0:  # Kometa's -1 / Anime-Lists' "a": AniDB numbering = absolute numbering
        return ShowMap(scheme, show, _one(None, offset_span(offset)), source, via)
    return ShowMap(scheme, show, _one(season, offset_span(offset)), source, via)


def parse_fribb(data: bytes | str) -> list[_IdRow]:
    """Fribb anime-list-full.json, 2025 and 2026 field names both accepted."""
    root = _json(data)
    if isinstance(root, dict):  # a wrapper object (our sample) or a future envelope
        root = next((v for v in root.values() if isinstance(v, list)), None)
    if not isinstance(root, list):
        raise DatasetError("expected a JSON array of rows")
    rows: list[_IdRow] = []
    for row in root:
        if not isinstance(row, dict):
            continue
        anidb = first_id(row.get("anidb_id"))
        via = f"AniDB {anidb}" if anidb else ""
        kind = str(row.get("type") or "").upper()
        tvdb = first_id(_pick(row, "tvdb_id", "thetvdb_id"))
        tmdb_value = _pick(row, "themoviedb_id", "tmdb_id")
        tmdb_tv: int | None = None
        tmdb_movies: tuple[int, ...] = ()
        if isinstance(tmdb_value, dict):
            tmdb_tv = first_id(tmdb_value.get("tv"))
            tmdb_movies = ids(tmdb_value.get("movie"))
        elif kind == "MOVIE":
            tmdb_movies = ids(tmdb_value)
        else:
            tmdb_tv = first_id(tmdb_value)
        seasons = row.get("season")
        offsets = row.get("episode_offset")
        # No season at all is how Fribb writes Anime-Lists' "a" (absolute); a season object
        # leaves out a key that is 0 or unknown, so a missing key maps nothing (a guess would
        # put a sequel's episodes on season 1).
        absolute = seasons is None
        if not isinstance(seasons, dict):  # pre-2026: one number meant the TVDB season
            seasons = {"tvdb": seasons} if whole(seasons) is not None else {}
        if not isinstance(offsets, dict):
            offsets = {"tvdb": offsets} if whole(offsets) is not None else {}
        shows: list[ShowMap] = []
        pairs: tuple[tuple[Scheme, int | None], ...] = (("tvdb", tvdb), ("tmdb", tmdb_tv))
        for scheme, show in pairs:
            if show is None:
                continue
            season = -1 if absolute else whole(seasons.get(scheme))
            if season is None:
                continue
            offset = whole(offsets.get(scheme)) or 0  # a missing offset key means 0
            shows.append(_season_map(scheme, show, season, offset, "fribb", via))
        imdb = _imdb(row.get("imdb_id"))
        movies = [MovieMap(m, imdb, None, "fribb", via) for m in tmdb_movies]
        if not movies and imdb and kind == "MOVIE":
            movies.append(MovieMap(None, imdb, None, "fribb", via))
        rows.append(
            _IdRow(
                ids(row.get("anilist_id")), anidb, ids(row.get("mal_id")), shows, movies, "fribb"
            )
        )
    if root and not rows:
        raise DatasetError("no rows found")
    return rows


_PAIR = re.compile(r"(\d+)-([\d+]+)")


def parse_animelists(data: bytes | str) -> dict[int, _AniDbRow]:
    """Anime-Lists anime-list-master.xml, keyed by AniDB id (regular episodes only)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DatasetError(f"not valid XML ({exc})") from None
    result: dict[int, _AniDbRow] = {}
    for node in root.iter("anime"):
        anidb = whole(node.get("anidbid"))
        if anidb is None:
            continue
        result[anidb] = _animelists_row(anidb, node)
    if len(root) and not result:
        raise DatasetError("no <anime> entries found")
    return result


def _pair_spans(pairs: Sequence[tuple[str, str]]) -> list[tuple[int, Span]]:
    """Spans of an explicit `;anidbEp-tvdbEp;` list, by first source episode: `a+b` is one
    episode covering several, `0` none, and consecutive episodes naming one target make that
    one episode together (its last counts it: `;1-1;2-1;` is a double first episode)."""
    parsed = sorted(
        (int(src), [int(t) for t in dst.split("+") if t.isdigit()]) for src, dst in pairs
    )
    spans: list[tuple[int, Span]] = []
    i = 0
    while i < len(parsed):
        src, targets = parsed[i]
        if targets == [0]:
            spans.append((src, _span(src, src, ())))
            i += 1
            continue
        group = 1
        while (
            len(targets) == 1
            and i + group < len(parsed)
            and parsed[i + group] == (src + group, targets)
        ):
            group += 1
        if group > 1:
            target = targets[0]
            spans.append((src, _span(src, src + group - 1, ((target, target),), -group)))
        else:
            spans.append((src, _span(src, src, tuple((t, t) for t in targets), len(targets))))
        i += group
    return spans


def _animelists_row(anidb: int, node: ET.Element) -> _AniDbRow:
    via = f"AniDB {anidb}"
    notes: list[str] = []
    explicit: dict[Scheme, dict[int, list[tuple[int | None, Span]]]] = {"tvdb": {}, "tmdb": {}}
    ranged: dict[Scheme, list[tuple[int | None, Span]]] = {"tvdb": [], "tmdb": []}
    for mapping in node.iter("mapping"):
        if mapping.get("anidbseason") != "1":
            continue  # specials/other belong to their own AniDB (and AniList) entries
        for scheme in SCHEMES:
            season = whole(mapping.get(f"{scheme}season"))
            if season is None:
                continue
            pairs = _PAIR.findall(mapping.text or "")
            for src, span in _pair_spans(pairs):
                explicit[scheme].setdefault(src, []).append((season, span))
            start = whole(mapping.get("start"))
            if pairs and start is None:
                continue
            offset = whole(mapping.get("offset")) or 0
            end = whole(mapping.get("end"))
            first = start if start is not None else 1
            dst_last = None if end is None else end + offset
            ranged[scheme].append((season, _span(first, end, ((first + offset, dst_last),))))
    shows: list[ShowMap] = []
    seasons: list[ShowMap] = []
    tvdb_text = (node.get("tvdbid") or "").strip()
    tvdb = whole(tvdb_text)
    if tvdb is None and tvdb_text:
        notes.append(f"Anime-Lists {via}: tvdbid is {tvdb_text!r}, not a TVDB series")
    tmdb = first_id(node.get("tmdbtv"))
    for scheme, show, season_text, offset_text in (
        ("tvdb", tvdb, node.get("defaulttvdbseason"), node.get("episodeoffset")),
        ("tmdb", tmdb, node.get("tmdbseason"), node.get("tmdboffset")),
    ):
        if show is None:
            continue
        offset = whole(offset_text) or 0
        absolute = (season_text or "").strip().lower() == "a"
        listed = [
            (season, span) for spans in explicit[scheme].values() for season, span in spans
        ] + ranged[scheme]
        if absolute and scheme == "tmdb" and listed:
            # TMDB numbering inside seasons is disputed between datasets (One Piece): use
            # absolute numbers (Trakt number_abs) and leave the season ranges to explain.
            notes.append(
                f"Anime-Lists {via}: TMDB season ranges not used (tmdbseason 'a': absolute numbers)"
            )
            seasons.append(ShowMap(scheme, show, tuple(listed), "animelists-seasons", via))
            listed = []
        if listed:
            shows.append(ShowMap(scheme, show, tuple(listed), "animelists-list", via))
        season = whole(season_text)
        if absolute:
            shows.append(ShowMap(scheme, show, _one(None, offset_span(offset)), "animelists", via))
        elif season is not None:
            shows.append(
                ShowMap(scheme, show, _one(season, offset_span(offset)), "animelists", via)
            )
        elif not listed:
            notes.append(f"Anime-Lists {via}: {scheme.upper()} {show} without a season")
    imdb = _imdb(node.get("imdbid"))
    movies = [MovieMap(m, imdb, None, "animelists", via) for m in ids(node.get("tmdbid"))]
    if not movies and imdb and tvdb_text.lower() == "movie":
        movies.append(MovieMap(None, imdb, None, "animelists", via))
    name = (node.findtext("name") or "").strip()
    return _AniDbRow(anidb, name, shows, movies, notes, seasons)


# --------------------------------------------------------------------------- overrides

_OVERRIDE_HELP = (
    "expected `ANILIST_ID: {tmdb: {show, season, offset | episodes | seasons}, tvdb: ..., "
    "movie: TMDB_ID}` or `ANILIST_ID: skip`"
)


class _UniqueKeys(yaml.SafeLoader):
    """YAML whose mappings may not give a key twice (the last would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise DatasetError(f"line {line}: a key must be one AniList id, one per line")
            if key in seen:
                raise DatasetError(f"line {line}: {key} is given twice: keep one")
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_overrides(text: str, name: str = "overrides") -> Overrides:
    """The overrides YAML (see README "Anime overrides"); errors name the file and the key."""
    try:
        root = yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader
    except DatasetError as exc:
        raise DatasetError(f"{name}: {exc}") from None
    except yaml.YAMLError as exc:
        raise DatasetError(f"{name}: invalid YAML: {exc}") from None
    if root is None:
        return Overrides(source=name)
    if not isinstance(root, dict):
        raise DatasetError(f"{name}: {_OVERRIDE_HELP}")
    if isinstance(root.get("overrides"), dict) and len(root) == 1:
        root = root["overrides"]
    shows: dict[int, tuple[ShowMap, ...]] = {}
    movies: dict[int, tuple[MovieMap, ...]] = {}
    skip: dict[int, str] = {}
    given: dict[int, str] = {}  # AniList id -> how it was written first
    for key, value in root.items():
        text_key = str(key)
        anilist = whole(text_key.removeprefix("anilist:").split(":")[0])
        if anilist is not None and anilist in given:
            raise DatasetError(
                f"{name}: {key!r}: AniList {anilist} is given twice (also as "
                f"{given[anilist]}): keep one"
            )
        if anilist is not None:
            given[anilist] = repr(key)
        if text_key.startswith("anilist:"):  # anibridge edits grammar, verbatim
            anilist = whole(text_key.split(":")[1])
            if anilist is None or not isinstance(value, dict):
                raise DatasetError(f"{name}: {text_key}: expected anibridge descriptors")
            found, found_movies, _, _ = _anibridge_targets(value, "override")
            shows[anilist] = tuple(
                ShowMap(m.scheme, m.show, m.spans, "override", name) for m in found
            )
            movies[anilist] = tuple(found_movies)
            continue
        anilist = whole(key)
        if anilist is None or anilist <= 0:
            raise DatasetError(f"{name}: {text_key}: expected an AniList id (a number)")
        if value in ("skip", None, False):
            skip[anilist] = f"{name} says: do not map"
            continue
        if not isinstance(value, dict):
            raise DatasetError(f"{name}: {anilist}: {_OVERRIDE_HELP}")
        entry_shows: list[ShowMap] = []
        entry_movies: list[MovieMap] = []
        for part, spec in value.items():
            where = f"{name}: {anilist}.{part}"
            if part in SCHEMES:
                if spec in ("skip", None, False):
                    entry_shows.append(
                        ShowMap(part, 0, ((None, Span(1, None, ())),), "override", name)
                    )
                    continue
                entry_shows.append(_override_show(part, spec, where, name))
            elif part == "movie":
                movie = spec.get("tmdb") if isinstance(spec, dict) else spec
                imdb = _imdb(spec.get("imdb")) if isinstance(spec, dict) else None
                movie_id = first_id(movie)
                if movie_id is None and imdb is None:
                    raise DatasetError(f"{where}: expected a TMDB movie id")
                entry_movies.append(MovieMap(movie_id, imdb, None, "override", name))
            elif part in ("title", "note", "comment"):
                continue
            else:
                raise DatasetError(f"{where}: unknown key; expected tmdb, tvdb, movie or title")
        shows[anilist] = tuple(entry_shows)
        movies[anilist] = tuple(entry_movies)
    return Overrides(shows, movies, skip, name)


def _override_show(scheme: Scheme, spec: Any, where: str, name: str) -> ShowMap:
    if not isinstance(spec, dict):
        raise DatasetError(f"{where}: expected show, season and offset or episodes")
    show = whole(spec.get("show"))
    if show is None or show <= 0:
        raise DatasetError(f"{where}.show: expected a {scheme.upper()} show id")
    unknown = set(spec) - {"show", "season", "offset", "episodes", "seasons", "absolute"}
    if unknown:
        raise DatasetError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; expected show, season, offset, "
            "episodes, seasons or absolute"
        )
    spans: list[tuple[int | None, Span]] = []
    if "seasons" in spec:
        if not isinstance(spec["seasons"], dict):
            raise DatasetError(f"{where}.seasons: expected SEASON: {{'1-12': '1-12'}}")
        for season_key, ranges in spec["seasons"].items():
            number = _season_value(season_key, f"{where}.seasons")
            spans.extend(
                (number, s) for s in _override_ranges(ranges, f"{where}.seasons.{season_key}")
            )
    else:
        absolute = spec.get("absolute") is True or str(spec.get("season")).lower() in (
            "a",
            "absolute",
        )
        season: int | None = None
        if not absolute:
            season = _season_value(spec.get("season"), f"{where}.season")
        if "episodes" in spec:
            spans.extend(
                (season, s) for s in _override_ranges(spec["episodes"], f"{where}.episodes")
            )
        else:
            offset = whole(spec.get("offset", 0))
            if offset is None:
                raise DatasetError(f"{where}.offset: expected a whole number (may be negative)")
            spans.append((season, offset_span(offset)))
    return ShowMap(scheme, show, tuple(spans), "override", name)


def _season_value(value: Any, where: str) -> int:
    season = whole(value)
    if season is None or season < 0:
        raise DatasetError(f"{where}: expected a season number (0 = specials) or 'absolute'")
    return season


def _override_ranges(ranges: Any, where: str) -> list[Span]:
    if not isinstance(ranges, dict) or not ranges:
        raise DatasetError(
            f"{where}: expected AniList ranges to target ranges, e.g. {{'1-12': '13-24'}}"
        )
    spans = []
    for src, dst in ranges.items():
        try:
            spans.append(parse_range(str(src), None if dst is None else str(dst)))
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
    return spans


# --------------------------------------------------------------------------- the index


def load_index(
    datasets: Mapping[str, bytes | str],
    overrides: Overrides | str | None = None,
) -> AnimeIndex:
    """Build the index from raw dataset bodies (by name, see DATASETS) and overrides.

    A dataset that cannot be parsed is left out and reported in `AnimeIndex.problems`;
    unknown names are ignored.
    """
    if isinstance(overrides, str):
        overrides = parse_overrides(overrides)
    index = AnimeIndex()
    loaded = []
    # One dataset at a time, each body and parse dropped before the next: peak memory.
    for name in DATASETS:
        if name not in datasets:
            continue
        try:
            parsed = PARSERS[name](datasets[name])
        except DatasetError as exc:
            index.problems.append(f"{name}: {exc}")
            continue
        loaded.append(name)
        if name == "anibridge":
            _merge_anibridge(index, parsed)
        elif name == "animelists":
            _merge_animelists(index, parsed)
        else:
            _merge_ids(index, name, parsed)
        del parsed
    index.loaded = tuple(loaded)
    if overrides is not None:
        index.overrides = overrides
        for anilist in set(overrides.shows) | set(overrides.movies) | set(overrides.skip):
            entry = index._entry(anilist)
            _add(entry.id_sources, ("override",))
            entry.shows[:0] = list(overrides.shows.get(anilist, ()))
            entry.movies[:0] = list(overrides.movies.get(anilist, ()))
            if anilist in overrides.skip:
                entry.skip = overrides.skip[anilist]
    for entry in [*index._entries.values(), *index._orphans.values()]:
        entry.shows.sort(key=lambda m: _RANKS.get(m.source, 9))
        entry.movies.sort(key=lambda m: _RANKS.get(m.source, 9))
        if entry.movies:
            entry.movies[0] = _complete_movie(entry.movies)
    return index


def _merge_anibridge(index: AnimeIndex, parsed: Mapping[int, Any]) -> None:
    for anilist, (shows, movies, anidb, mal) in parsed.items():
        entry = index._entry(anilist)
        entry.shows.extend(shows)
        entry.movies.extend(movies)
        _add(entry.anidb, anidb)
        _add(entry.mal, mal)
        _add(entry.id_sources, ("anibridge",))


def _merge_ids(index: AnimeIndex, name: str, rows: list[_IdRow]) -> None:
    for row in rows:
        if not row.anilist and len(row.mal) == 1 and (row.shows or row.movies or row.anidb):
            # No AniList id yet (new titles lack one for a while): kept by MAL id, for an
            # entry whose MAL id AniList tells us (`AnimeIndex.adopt`).
            orphan = index._orphans.setdefault(row.mal[0], _Entry(0))
            _add(orphan.id_sources, (name,))
            if row.anidb:
                _add(orphan.anidb, (row.anidb,))
            _add(orphan.mal, row.mal)
            orphan.shows.extend(row.shows)
            orphan.movies.extend(row.movies)
        for anilist in row.anilist:
            entry = index._entry(anilist)
            _add(entry.id_sources, (name,))
            if row.anidb:
                _add(entry.anidb, (row.anidb,))
            _add(entry.mal, row.mal)
            if len(row.anilist) == 1:  # a comma list of AniList ids cannot share offsets
                entry.shows.extend(row.shows)
                entry.movies.extend(row.movies)


def _merge_animelists(index: AnimeIndex, lists: Mapping[int, _AniDbRow]) -> None:
    for entry in [*index._entries.values(), *index._orphans.values()]:
        for anidb in sorted(entry.anidb):
            row = lists.get(anidb)
            if row is not None:
                entry.shows.extend(row.shows)
                entry.movies.extend(row.movies)
                entry.notes.extend(row.notes)
                entry.seasons.extend(row.seasons)
    index._names = {anidb: row.name for anidb, row in lists.items()}


def _add(target: list[Any], values: Iterable[Any]) -> None:
    for value in values:
        if value not in target:
            target.append(value)


def _complete_movie(movies: list[MovieMap]) -> MovieMap:
    """The best movie row, with a TMDB or IMDb id it lacks taken from the others."""
    best = movies[0]
    tmdb = best.tmdb or next((m.tmdb for m in movies if m.tmdb), None)
    same = [m for m in movies if m.tmdb in (None, tmdb)]
    imdb = best.imdb or next((m.imdb for m in same if m.imdb), None)
    return MovieMap(tmdb, imdb, best.span, best.source, best.via)


PARSERS: dict[str, Any] = {
    "anibridge": parse_anibridge,
    "kometa": parse_kometa,
    "fribb": parse_fribb,
    "animelists": parse_animelists,
}


def count_rows(name: str, data: bytes | str) -> int:
    """How many usable rows a dataset body holds (validates a download before it replaces
    the last good copy); raises DatasetError when it cannot be read at all."""
    parsed = PARSERS[name](data)
    return len(parsed)


_Interval = tuple[int, int | None, int, Span, int]  # dst first, dst last, anilist, span, rank


class AnimeIndex:
    """Every AniList id the datasets or overrides know, with ranked mappings per scheme."""

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self._names: dict[int, str] = {}
        self._reverse: dict[tuple[str, int, int | None], list[_Interval]] | None = None
        self._movies: dict[str, list[tuple[int, int, MovieMap]]] | None = None  # by movie_key
        self._shows: set[tuple[str, int]] = set()  # (scheme, show) with any reverse row
        # (scheme, show, season) -> (AniList id, span) of the season ranges not used to map
        self._season_hints: dict[tuple[str, int, int | None], list[tuple[int, Span]]] = {}
        self._orphans: dict[int, _Entry] = {}  # by MAL id: dataset rows without an AniList id
        self._by_ids: dict[tuple[str, int], list[int]] | None = None  # ("anidb"|"mal", id)
        self._counts: dict[int, int | None] = {}
        self.overrides = Overrides()
        self.loaded: tuple[str, ...] = ()
        self.problems: list[str] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, anilist_id: object) -> bool:
        return anilist_id in self._entries

    def _entry(self, anilist_id: int) -> _Entry:
        entry = self._entries.get(anilist_id)
        if entry is None:
            entry = self._entries[anilist_id] = _Entry(anilist_id)
        return entry

    # ------------------------------------------------------------------ forward

    def _known(self, anilist_id: int) -> _Entry | Unmatched:
        entry = self._entries.get(anilist_id)
        if entry is None:
            used = ", ".join(self.loaded) or "no datasets loaded"
            return Unmatched(
                f"AniList {anilist_id} is in none of the mapping datasets ({used}); new "
                "seasons often take days or weeks to appear: add an override to map it now",
                "unknown",
            )
        if entry.skip:
            return Unmatched(entry.skip, "unmapped")
        return entry

    def resolve(self, anilist_id: int) -> Resolution:
        """The TMDB (and TVDB) target of one AniList entry, or why there is none."""
        entry = self._known(anilist_id)
        if isinstance(entry, Unmatched):
            return entry
        tmdb = self._best(entry, "tmdb")
        tvdb = self._best(entry, "tvdb")
        movie = entry.movies[0] if entry.movies else None
        if tmdb is None and tvdb is None and movie is None:
            return Unmatched(self._why_not(entry), "no-target")
        if movie is not None and tmdb is not None and _RANKS.get(movie.source, 9) < tmdb[0]:
            tmdb = None  # a better source says this entry is a movie
        tmdb_map, (season, span) = (tmdb[1], tmdb[2]) if tmdb else (None, (None, None))
        tvdb_map, (tv_season, tv_span) = (tvdb[1], tvdb[2]) if tvdb else (None, (None, None))
        if tmdb_map is not None:
            source = tmdb_map.source
        elif movie is not None:
            source = movie.source
        else:
            source = tvdb_map.source if tvdb_map else ""
        return AnimeTarget(
            tmdb_show=tmdb_map.show if tmdb_map else None,
            tvdb_show=tvdb_map.show if tvdb_map else None,
            season=season,
            offset=_offset(span),
            first=span.dst[0][0] if span and span.dst else None,
            last=_last(span),
            absolute=tmdb_map is not None and season is None,
            source=source,
            tmdb_movie=movie.tmdb if movie and tmdb_map is None else None,
            imdb=movie.imdb if movie else None,
            tvdb_season=tv_season,
            tvdb_offset=_offset(tv_span),
            tvdb_source=tvdb_map.source if tvdb_map else None,
        )

    @staticmethod
    def _best(entry: _Entry, scheme: Scheme) -> tuple[int, ShowMap, tuple[int | None, Span]] | None:
        """(rank, map, (season, span)) of the best mapping for a scheme; seasonal first.

        The span shown is the one holding AniList episode 1 when there is one.
        """
        best: tuple[int, ShowMap, tuple[int | None, Span]] | None = None
        for show in entry.shows:
            if show.scheme != scheme:
                continue
            if show.show == 0:  # override: explicitly no target for this scheme
                return None
            usable = [(season, span) for season, span in show.spans if span.dst]
            if not usable:
                continue
            season, span = next(((se, sp) for se, sp in usable if sp.covers(1)), usable[0])
            absolute = season is None and show.source != "override"
            rank = show.rank + (_ABSOLUTE_RANK if absolute else 0)
            if best is None or rank < best[0]:
                best = (rank, show, (season, span))
        return best

    def _why_not(self, entry: _Entry) -> str:
        chain = _ids_text(entry)
        notes = "; ".join(entry.notes)
        return f"AniList {entry.anilist_id} ({chain}) has no TVDB/TMDB show or movie" + (
            f": {notes}" if notes else ""
        )

    def episode_for(
        self,
        anilist_id: int,
        episode: int,
        scheme: Scheme = "tmdb",
        total: int | None = None,
    ) -> Forward:
        """The target episode (or movie) for AniList episode `episode` of one entry.

        `total` is AniList's episode count when known: a movie mapped without ranges counts
        only once `episode` reaches it.
        """
        return self._episode_for(anilist_id, episode, scheme, total, counted_later=True)

    def _episode_for(
        self,
        anilist_id: int,
        episode: int,
        scheme: Scheme,
        total: int | None,
        *,
        counted_later: bool,
    ) -> Forward:
        """`episode_for`; with `counted_later`, without the targets a later episode plays."""
        entry = self._known(anilist_id)
        if isinstance(entry, Unmatched):
            return entry
        count = self.episode_count(anilist_id)
        if count is not None and episode > count:
            return Unmatched(
                f"AniList {anilist_id} has {count} episodes in the AniList-keyed ranges; episode "
                f"{episode} is past its end (add an override if AniList now has more)",
                "outside",
            )
        absolute: EpisodeRef | None = None
        answered: Unmatched | None = None
        override_scheme = False  # overrides sort first: once seen, nothing else counts
        # A better-ranked source saying "movie" beats a lesser one's show mapping.
        movie_rank = _RANKS.get(entry.movies[0].source, 9) if entry.movies else 99
        for show in entry.shows:
            if show.scheme != scheme:
                continue
            if show.source == "override":
                override_scheme = True
            elif override_scheme:
                break
            if scheme == "tmdb" and movie_rank < show.rank:
                break
            if show.show == 0:
                return Unmatched(
                    f"{self.overrides.source} says: no {scheme.upper()} target", "unmapped"
                )
            for season, span in show.spans:
                if not span.covers(episode):
                    continue
                targets = span.targets(episode)
                if targets is None:
                    continue
                if not targets:
                    if answered is None:
                        kind = PARTIAL if span.ratio < -1 else "unmapped"
                        answered = Unmatched(
                            f"{show.source}: AniList {anilist_id} episode {episode} has no "
                            f"{scheme.upper()} counterpart ({span.describe()})",
                            kind,
                        )
                    break
                ref = EpisodeRef(
                    scheme, show.show, season, targets[0], season is None, show.source, targets
                )
                if show.source == "override":
                    return ref
                if season is not None and counted_later:
                    return self._unless_counted_later(anilist_id, episode, ref)
                if season is not None:
                    return ref
                if absolute is None:
                    absolute = ref
                break
            if answered is not None:
                break  # the first source covering the episode decides: none, or part of one
        if answered is not None and absolute is None:
            return answered
        movie = self._movie_for(entry, episode, total, scheme)
        if movie is not None and (absolute is None or isinstance(movie, MovieRef)):
            return movie
        if absolute is not None:
            return absolute
        if answered is not None:
            return answered
        shows = [m for m in entry.shows if m.scheme == scheme]
        if shows:
            return Unmatched(
                f"AniList {anilist_id} episode {episode} is outside every {scheme.upper()} range "
                f"({'; '.join(_describe_map(m) for m in shows[:3])})",
                "outside",
            )
        return Unmatched(self._why_not(entry).replace("TVDB/TMDB", scheme.upper()), "no-target")

    def _unless_counted_later(self, anilist_id: int, episode: int, ref: EpisodeRef) -> Forward:
        """`ref` without the target episodes a later episode of the entry plays, PARTIAL when
        none is left: two AniList episodes must not make two plays of one target episode (a
        lesser dataset's row filling a gap in anibridge's ranges; a double first episode
        written across pairs and ranges)."""
        kept = tuple(t for t in ref.numbers if not self._played_later(anilist_id, episode, ref, t))
        if kept == ref.numbers:
            return ref
        if not kept:
            return Unmatched(
                f"{ref.source}: AniList {anilist_id} episode {episode} lands on "
                f"{ref.scheme.upper()} {ref.show} S{ref.season}E{ref.numbers[-1]}, which a later "
                "episode counts",
                PARTIAL,
            )
        return replace(ref, number=kept[0], numbers=kept)

    def _played_later(self, anilist_id: int, episode: int, ref: EpisodeRef, target: int) -> bool:
        """Whether a later episode of the entry plays `target`: the way back gives it one, and
        that episode's own way there plays it (the two directions rank sources alike but not
        spans, so the way back alone is no proof). That episode's targets are taken as its
        sources give them: the episode a target maps back to never has it taken away, and a
        chain of overlapping episodes must not recurse once per episode."""
        back = self.anilist_for(ref.show, ref.season, target, ref.scheme, parts=True)
        if not isinstance(back, tuple) or back[0] != anilist_id or back[1] <= episode:
            return False
        later = self._episode_for(anilist_id, back[1], ref.scheme, None, counted_later=False)
        return (
            isinstance(later, EpisodeRef)
            and (later.show, later.season) == (ref.show, ref.season)
            and target in later.numbers
        )

    def _movie_for(
        self, entry: _Entry, episode: int, total: int | None, scheme: Scheme
    ) -> Forward | None:
        if scheme != "tmdb" or not entry.movies:
            return None
        movie = entry.movies[0]
        if movie.span is not None:
            if movie.span.covers(episode):
                targets = movie.span.targets(episode)
                if targets:
                    return MovieRef(movie.tmdb, movie.imdb, movie.source)
            return Unmatched(
                f"{movie.source}: AniList {entry.anilist_id} episodes {movie.span.describe()} "
                f"make one movie; episode {episode} alone is not a movie play",
                PARTIAL,
            )
        if total is not None and episode < total:
            return Unmatched(
                f"AniList {entry.anilist_id} is a movie on TMDB; it counts once episode {total} "
                f"is reached (now {episode})",
                PARTIAL,
            )
        return MovieRef(movie.tmdb, movie.imdb, movie.source)

    def episode_count(self, anilist_id: int) -> int | None:
        """The entry's episode count as its AniList-keyed ranges (override, anibridge) close
        it; None when they are open-ended or absent."""
        if anilist_id not in self._counts:
            entry = self._entries.get(anilist_id)
            self._counts[anilist_id] = _count(entry) if entry is not None else None
        return self._counts[anilist_id]

    # ------------------------------------------------------------------ reverse

    def _build_reverse(self) -> None:
        reverse: dict[tuple[str, int, int | None], list[_Interval]] = {}
        movies: dict[str, list[tuple[int, int, MovieMap]]] = {}
        self._shows = set()
        hints: dict[tuple[str, int, int | None], list[tuple[int, Span]]] = {}
        for entry in self._entries.values():
            self._add_reverse(entry, reverse, movies)
            for hint in entry.seasons:
                for season, span in hint.spans:
                    key = (hint.scheme, hint.show, season)
                    hints.setdefault(key, []).append((entry.anilist_id, span))
        self._reverse, self._movies, self._season_hints = reverse, movies, hints

    def _add_reverse(
        self,
        entry: _Entry,
        reverse: dict[tuple[str, int, int | None], list[_Interval]],
        movies: dict[str, list[tuple[int, int, MovieMap]]],
    ) -> None:
        if entry.skip:
            return
        count = self.episode_count(entry.anilist_id)
        override_schemes = {m.scheme for m in entry.shows if m.source == "override"}
        for show in entry.shows:
            if show.show == 0 or (show.scheme in override_schemes and show.source != "override"):
                continue
            for season, span in show.spans:
                capped = span if count is None else _capped(span, count)
                if capped is None:
                    continue
                rank = show.rank + (_ABSOLUTE_RANK if season is None else 0)
                self._shows.add((show.scheme, show.show))
                for first, last in capped.dst:
                    reverse.setdefault((show.scheme, show.show, season), []).append(
                        (first, last, entry.anilist_id, capped, rank)
                    )
        for movie in entry.movies:
            for key in (movie_key(movie.tmdb, None), movie_key(None, movie.imdb)):
                if key is not None:
                    movies.setdefault(key, []).append(
                        (_RANKS.get(movie.source, 9), entry.anilist_id, movie)
                    )

    def adopt(self, anilist_id: int, mal_id: int | None) -> bool:
        """Map `anilist_id` through a dataset row that names its title by MAL id only (AniList
        gave us the MAL id). Rows of another AniList id are never borrowed: two entries would
        claim the same episodes. True when the entry maps now and did not before."""
        if mal_id is None or anilist_id in self._entries:
            return False
        orphan = self._orphans.get(mal_id)
        if orphan is None:
            return False
        entry = _Entry(
            anilist_id,
            list(orphan.anidb),
            list(orphan.mal),
            [*orphan.id_sources, "MAL id"],
            list(orphan.shows),
            list(orphan.movies),
            [*orphan.notes, f"found by MAL id {mal_id} (the datasets have no AniList id yet)"],
            seasons=list(orphan.seasons),
        )
        self._entries[anilist_id] = entry
        self._counts.pop(anilist_id, None)
        self._by_ids = None
        if self._reverse is not None and self._movies is not None:
            self._add_reverse(entry, self._reverse, self._movies)
        return True

    def anilist_by_ids(
        self, *, anidb: int | None = None, mal: int | None = None
    ) -> int | Unmatched:
        """The AniList entry an AniDB or MAL id names (HAMA guids, webhooks with anime ids)."""
        if self._by_ids is None:
            found: dict[tuple[str, int], list[int]] = {}
            for entry in self._entries.values():
                for value in entry.anidb:
                    found.setdefault(("anidb", value), []).append(entry.anilist_id)
                for value in entry.mal:
                    found.setdefault(("mal", value), []).append(entry.anilist_id)
            self._by_ids = found
        for name, wanted in (("anidb", anidb), ("mal", mal)):
            if wanted is None:
                continue
            hits = self._by_ids.get((name, wanted), [])
            if len(hits) == 1:
                return hits[0]
            if hits:
                return Unmatched(
                    f"{'AniDB' if name == 'anidb' else 'MAL'} {wanted} is AniList "
                    f"{', '.join(map(str, sorted(hits)))}; add an override to settle it",
                    "ambiguous",
                )
        named = ", ".join(
            f"{label} {v}" for label, v in (("AniDB", anidb), ("MAL", mal)) if v is not None
        )
        return Unmatched(f"{named or 'no anime id'} is in no mapping dataset", "unknown")

    def season_entries(
        self, show: int, season: int, scheme: Scheme = "tmdb"
    ) -> tuple[tuple[int, int], ...]:
        """(AniList id, first target episode) of every entry mapped into one season, in
        episode order (Re:Zero TMDB S1: 21355 from 1, 108632 from 26, 119661 from 39)."""
        if self._reverse is None:
            self._build_reverse()
        assert self._reverse is not None
        best: dict[int, tuple[int, int]] = {}
        for first, _, anilist, _, rank in self._reverse.get((scheme, show, season), ()):
            if anilist not in best or (rank, first) < best[anilist]:
                best[anilist] = (rank, first)
        return tuple(sorted(((a, f) for a, (_, f) in best.items()), key=lambda h: (h[1], h[0])))

    def anilist_for(
        self,
        show: int,
        season: int | None,
        number: int,
        scheme: Scheme = "tmdb",
        *,
        parts: bool = False,
    ) -> tuple[int, int] | Unmatched:
        """(AniList id, AniList episode) for a target episode; `season` None: absolute number.

        The best-ranked source wins; within one source the range that starts closest below
        the episode wins (an open-ended "season + offset" row ends where the next begins).
        A target that is not the last part of its AniList episode is PARTIAL, unless `parts`.
        """
        if self._reverse is None:
            self._build_reverse()
        assert self._reverse is not None
        where = f"{scheme.upper()} {show} " + (
            f"S{season}E{number}" if season is not None else f"absolute {number}"
        )
        rows = self._reverse.get((scheme, show, season), [])
        hits = [
            (rank, -first, 0 if last is not None else 1, anilist, span)
            for first, last, anilist, span, rank in rows
            if number >= first and (last is None or number <= last)
        ]
        # Ties within one source: the later AniList episode, as when several episodes make one
        # target episode (a pair and a range of one node, or pairs in two nodes).
        hits.sort(key=lambda h: (*h[:3], -(h[4].reverse(number) or 0)))
        for rank, neg_first, openness, anilist, span in hits:
            src = span.reverse(number)
            if src is None:
                continue
            rivals = {
                a
                for r, f, o, a, s in hits
                if (r, f, o) == (rank, neg_first, openness)
                and a != anilist
                and s.reverse(number) is not None
            }
            if rivals:
                return Unmatched(
                    f"{where} is claimed by AniList {anilist} and "
                    f"{', '.join(map(str, sorted(rivals)))}; add an override to settle it",
                    "ambiguous",
                )
            if not parts and (part := span.part_of(number)) is not None:
                return Unmatched(
                    f"{where} is part {part[0]} of {part[1]} of AniList {anilist} episode "
                    f"{src}: the last part counts it",
                    PARTIAL,
                )
            return anilist, src
        if rows:
            entries = ", ".join(str(a) for a in sorted({row[2] for row in rows})[:4])
            return Unmatched(
                f"{where} is past every range the datasets map in this season (AniList "
                f"{entries}): a part newer than the datasets, or past an entry's last episode; "
                "a dataset refresh or an override maps it",
                "outside",
            )
        if season == 0 and (scheme, show) in self._shows:
            return Unmatched(
                f"{where} is a special the datasets map to no AniList entry (specials are "
                "entries of their own there): an override makes its later plays count",
                "special",
            )
        if season is None and (scheme, show) in self._shows:
            # No refresh helps: the datasets map the show by season, not by absolute number.
            return Unmatched(
                f"{where}: the datasets map this show by season, not by absolute episode; a "
                "play naming its season and episode number (or its show's TMDB id, with "
                "services.serializd to count its seasons) is placed, or add an override",
                "new-season",
            )
        if (scheme, show) in self._shows:
            return Unmatched(
                f"{where}: the datasets know this show but not this season yet (new seasons "
                "take days or weeks to appear); retried after a dataset refresh, or add an "
                "override",
                "new-season",
            )
        return Unmatched(f"{where} is in no mapping dataset range", "unknown")

    def anilist_for_movie(
        self, tmdb_movie: int | None, imdb: str | None = None
    ) -> tuple[int, int] | Unmatched:
        """(AniList id, last AniList episode of the movie) for a movie play, by its TMDB id,
        else its IMDb id (Plex's legacy agent names films by IMDb id only)."""
        if self._movies is None:
            self._build_reverse()
        assert self._movies is not None
        hits: list[tuple[int, int, MovieMap]] = []
        for key in (movie_key(tmdb_movie, None), movie_key(None, imdb)):
            if key is not None and not hits:
                hits = sorted(self._movies.get(key, []), key=lambda h: h[0])
        if not hits:
            named = " or ".join(
                name
                for name in (tmdb_movie and f"TMDB movie {tmdb_movie}", imdb and f"IMDb {imdb}")
                if name
            )
            return Unmatched(
                f"{named or 'a movie without ids'} is in no mapping dataset", "unknown"
            )
        _, anilist, movie = hits[0]
        span = movie.span
        if span is None or not span.dst:
            return anilist, 1
        return anilist, span.reverse(span.dst[0][0]) or span.src_first

    # ------------------------------------------------------------------ explain

    def explain(self, anilist_id: int) -> list[str]:
        """The chain used for one AniList id, step by step, with every candidate and its rank."""
        lines = [f"AniList {anilist_id}"]
        entry = self._entries.get(anilist_id)
        lines.append(f"datasets loaded: {', '.join(self.loaded) or 'none'}")
        if entry is None:
            known = self._known(anilist_id)
            assert isinstance(known, Unmatched)
            lines.append(f"result: unmatched: {known.reason}")
            return lines
        names = [self._names[a] for a in sorted(entry.anidb) if a in self._names]
        lines.append(
            f"1. ids: {_ids_text(entry)} (from {', '.join(sorted(entry.id_sources))})"
            + (f", Anime-Lists name {names[0]!r}" if names else "")
        )
        if entry.skip:
            lines.append(f"result: unmatched: {entry.skip}")
            return lines
        step = 2
        for scheme in SCHEMES:
            maps = [m for m in entry.shows if m.scheme == scheme]
            override = any(m.source == "override" for m in maps)
            lines.append(f"{step}. {scheme.upper()} candidates (best first):")
            step += 1
            if not maps:
                lines.append("   none")
            for show in maps:
                ignored = (
                    " [ignored: override wins]" if override and show.source != "override" else ""
                )
                via = f" ({show.via})" if show.via else ""
                lines.append(f"   {show.source}{via}: {_describe_map(show)}{ignored}")
        if entry.movies:
            lines.append(f"{step}. movie candidates:")
            step += 1
            for movie in entry.movies:
                span = f", AniList {movie.span.describe()}" if movie.span else ""
                ids_text = f"TMDB movie {movie.tmdb or '-'} IMDb {movie.imdb or '-'}"
                lines.append(f"   {movie.source}: {ids_text}{span}")
        for note in entry.notes:
            lines.append(f"   note: {note}")
        disagreement = self._disagreements(entry)
        lines.extend(f"   disagree: {d}" for d in disagreement)
        result = self.resolve(anilist_id)
        if isinstance(result, Unmatched):
            lines.append(f"result: unmatched: {result.reason}")
            return lines
        absolute = False
        for scheme in SCHEMES:
            ref = self.episode_for(anilist_id, 1, scheme)
            lines.append(f"result {scheme.upper()}: episode 1 → {_describe_forward(ref)}")
            absolute = absolute or (isinstance(ref, EpisodeRef) and ref.season is None)
        if absolute:
            lines.append(
                "   note: an absolute number is placed on the season list of the link's other "
                "side (Trakt's, with its number_abs, or Serializd's), read when a sync needs it"
            )
        return lines

    def _disagreements(self, entry: _Entry) -> list[str]:
        """Where the top two sources give different targets for episode 1 (a hint to check)."""
        found = []
        for scheme in SCHEMES:
            answers: dict[str, str] = {}
            for show in entry.shows:
                if show.scheme != scheme or show.source in answers or show.show == 0:
                    continue
                for season, span in show.spans:
                    # Absolute answers are refined by seasonal ones, not rivals to them.
                    if season is not None and span.covers(1) and (t := span.targets(1)):
                        answers[show.source] = f"{show.show} S{season}E{t[0]}"
                        break
            values = set(answers.values())
            if len(values) > 1:
                found.append(
                    f"{scheme.upper()} episode 1: "
                    + ", ".join(f"{k} {v}" for k, v in answers.items())
                )
        return found

    def anilist_ids(self) -> Iterator[int]:
        return iter(self._entries)

    def absolute_in_season(
        self, show: int, season: int, number: int, scheme: Scheme = "tmdb"
    ) -> tuple[int, int] | None:
        """(AniList id, AniList episode) when `number` of a play of `season` can only be an
        absolute number (One Piece's "S21E1071" in a media server, HAMA or TMDB numbering
        episodes on from the show's start): a number past what the season holds, among the
        AniList (AniDB, absolute) episodes the datasets place in that season, of an entry
        that spans several seasons. None when it is not so, or two entries would claim it."""
        if self._reverse is None:
            self._build_reverse()
        assert self._reverse is not None
        key = (scheme, show, season)
        spans = [(anilist, span) for _, _, anilist, span, _ in self._reverse.get(key, [])]
        found: set[tuple[int, int]] = set()
        for anilist, span in [*spans, *self._season_hints.get(key, [])]:
            held = sum((last - first + 1) if last is not None else 0 for first, last in span.dst)
            past_the_season = held > 0 and number > held and span.src_first > 1
            if past_the_season and span.covers(number):
                found.add((anilist, number))
        return found.pop() if len(found) == 1 else None

    def has_absolute(self, show: int, scheme: Scheme = "tmdb") -> bool:
        """Whether some entry maps onto `show` by absolute numbers (a play numbered by season
        there needs the show's season list to be placed)."""
        if self._reverse is None:
            self._build_reverse()
        assert self._reverse is not None
        return (scheme, show, None) in self._reverse

    def same_numbers(self, tmdb_show: int, tvdb_show: int, season: int, number: int) -> bool:
        """Whether TMDB's and TheTVDB's (aired order) `season` and `number` are one episode:
        the datasets place the same AniList entry's same episode at both. Unknown (either
        unmapped, or ambiguous) is not the same."""
        there = self.anilist_for(tmdb_show, season, number, "tmdb", parts=True)
        return isinstance(there, tuple) and there == self.anilist_for(
            tvdb_show, season, number, "tvdb", parts=True
        )

    def knows_show(self, show: int, scheme: Scheme = "tmdb") -> bool:
        """Whether some entry maps onto `show` (an anime, as far as the datasets tell)."""
        if self._reverse is None:
            self._build_reverse()
        return (scheme, show) in self._shows


# --------------------------------------------------------------------------- absolute numbers


@dataclass(frozen=True)
class SeasonTable:
    """One show's regular seasons as a live source lists them (Trakt, Serializd), to turn an
    absolute episode number into season and episode and back.

    `counts` holds (season, episode count) for every regular season in order; specials
    (season 0) have no absolute number and are left out. A count of None: the source gave
    none, so nothing from that season on can be counted. `numbered` holds (absolute, season,
    number) for every episode the source numbers absolutely (Trakt's `number_abs`, often
    missing). Those win; otherwise an episode's absolute number is the episodes of the seasons
    before it plus its number. An answer that contradicts an absolute number the source gives
    is refused, never guessed.
    """

    counts: tuple[tuple[int, int | None], ...]
    numbered: tuple[tuple[int, int, int], ...] = ()
    source: str = "the season list"

    @functools.cached_property
    def _by_absolute(self) -> dict[int, tuple[int, int]]:
        return {a: (s, n) for a, s, n in self.numbered}

    @functools.cached_property
    def _by_episode(self) -> dict[tuple[int, int], int]:
        return {(s, n): a for a, s, n in self.numbered}

    @functools.cached_property
    def last(self) -> int:
        """The highest absolute number the table can answer."""
        counted = 0
        for _, count in self.counts:
            if count is None:
                break
            counted += count
        return max([counted, *self._by_absolute])

    def covers(self, want: int | tuple[int, int] | None) -> bool:
        """Whether an absolute number, or a (season, number), is inside what the table lists
        (None: nothing in particular is wanted)."""
        if want is None:
            return True
        if isinstance(want, int):
            return want <= self.last
        if want in self._by_episode:
            return True
        season, number = want
        return any(
            s > season or (s == season and (c is None or number <= c)) for s, c in self.counts
        )

    def season_of(self, absolute: int) -> tuple[int, int] | Unmatched:
        """(season, episode) of absolute episode `absolute`."""
        given = self._by_absolute.get(absolute)
        if given is not None:
            return given
        before = 0
        for season, count in self.counts:
            if count is None:
                return Unmatched(
                    f"{self.source} gives no episode count for season {season}, so absolute "
                    f"episode {absolute} cannot be counted",
                    "outside",
                )
            if 0 < absolute <= before + count:
                number = absolute - before
                other = self._by_episode.get((season, number))
                if other is not None and other != absolute:
                    return Unmatched(
                        f"counting {self.source}'s seasons puts absolute episode {absolute} at "
                        f"S{season}E{number}, which it numbers {other}: add an override",
                        "ambiguous",
                    )
                return season, number
            before += count
        return Unmatched(
            f"absolute episode {absolute} is past the last one {self.source} lists "
            f"({self.last}): a newer episode, placed once the list has it",
            "outside",
        )

    def absolute_of(self, season: int, number: int) -> int | Unmatched:
        """The absolute number of episode `number` of `season`."""
        given = self._by_episode.get((season, number))
        if given is not None:
            return given
        if season < 1:
            return Unmatched(
                f"S{season}E{number} is a special: specials have no absolute number", "unmapped"
            )
        before = 0
        for listed, count in self.counts:
            if count is None:
                break
            if listed == season:
                if not 0 < number <= count:
                    break
                absolute = before + number
                other = self._by_absolute.get(absolute)
                if other is not None and other != (season, number):
                    return Unmatched(
                        f"counting {self.source}'s seasons makes S{season}E{number} absolute "
                        f"episode {absolute}, which it gives to S{other[0]}E{other[1]}: add an "
                        "override",
                        "ambiguous",
                    )
                return absolute
            before += count
        return Unmatched(
            f"S{season}E{number} is not in {self.source} (or a season before it has no "
            "episode count): a newer episode, placed once the list has it",
            "outside",
        )


def seasonal(ref: EpisodeRef, table: SeasonTable) -> EpisodeRef | Unmatched:
    """An absolute answer of the mapping placed on the show's seasons. Every target episode of
    it must land in one season: a ratio range split by a season break is not guessed at."""
    if ref.season is not None:
        return ref
    places = [table.season_of(n) for n in ref.numbers or (ref.number,)]
    found: list[tuple[int, int]] = []
    for place in places:
        if isinstance(place, Unmatched):
            return Unmatched(f"show {ref.show}: {place.reason}", place.code)
        found.append(place)
    if len({season for season, _ in found}) > 1:
        return Unmatched(
            f"show {ref.show}: absolute episodes {ref.numbers} fall in two seasons of "
            f"{table.source}: add an override",
            "ambiguous",
        )
    numbers = tuple(number for _, number in found)
    return EpisodeRef(
        ref.scheme,
        ref.show,
        found[0][0],
        numbers[0],
        False,
        f"{ref.source}, absolute {ref.number} on {table.source}",
        numbers if ref.numbers else (),
    )


def _count(entry: _Entry) -> int | None:
    spans = [
        span
        for show in entry.shows
        if show.source in _ANILIST_KEYED and show.show != 0
        for _, span in show.spans
    ]
    if not spans or any(span.src_last is None for span in spans):
        return None
    return max(span.src_last for span in spans if span.src_last is not None)


def _capped(span: Span, count: int) -> Span | None:
    """An open-ended span ended at the entry's last episode (None: it starts past it)."""
    if span.src_last is not None:
        return span
    if span.src_first > count:
        return None
    if span.ratio == 1 and len(span.dst) == 1 and span.dst[0][1] is None:
        first = span.dst[0][0]
        return _span(span.src_first, count, ((first, first + count - span.src_first),))
    return _span(span.src_first, count, span.dst, span.ratio)


def _offset(span: Span | None) -> int:
    if span is None or not span.dst:
        return 0
    return span.dst[0][0] - span.src_first


def _last(span: Span | None) -> int | None:
    if span is None or not span.dst:
        return None
    return span.dst[-1][1]


def _ids_text(entry: _Entry) -> str:
    parts = []
    if entry.anidb:
        parts.append("AniDB " + ",".join(map(str, sorted(entry.anidb))))
    if entry.mal:
        parts.append("MAL " + ",".join(map(str, sorted(entry.mal))))
    return ", ".join(parts) or "no AniDB/MAL id"


def _describe_map(show: ShowMap) -> str:
    if show.show == 0:
        return "no target"
    parts = []
    for season, span in show.spans[:6]:
        where = f"S{season}" if season is not None else "absolute"
        parts.append(f"{where} {span.describe()}")
    more = f" (+{len(show.spans) - 6} more)" if len(show.spans) > 6 else ""
    return f"show {show.show}: " + "; ".join(parts) + more


def _describe_forward(ref: Forward) -> str:
    if isinstance(ref, Unmatched):
        return f"unmatched ({ref.code}): {ref.reason}"
    if isinstance(ref, MovieRef):
        return f"TMDB movie {ref.tmdb or '-'} (IMDb {ref.imdb or '-'}) via {ref.source}"
    numbers = ref.numbers or (ref.number,)
    eps = f"E{numbers[0]}" + (f"-{numbers[-1]}" if len(numbers) > 1 else "")
    where = f"S{ref.season}{eps}" if ref.season is not None else f"absolute {eps[1:]}"
    return f"show {ref.show} {where} via {ref.source}"


def describe(ref: Forward) -> str:
    """One line for logs and reports."""
    return _describe_forward(ref)
