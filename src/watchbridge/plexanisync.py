"""Import a PlexAniSync `custom_mappings.yaml` as watchbridge anime overrides.

PlexAniSync keys its entries by Plex show title (or `plex://` guid) and Plex season number,
with `start` splitting one Plex season between AniList entries; our overrides are keyed by
AniList id with episode ranges on a TVDB or TMDB show. The translation needs the user's Plex
library: which show a title names, its TVDB/TMDB ids, the numbering Plex gives it (its episode
ordering) and how many episodes each of its seasons holds (to count an AniList entry up across
seasons, Gintama's 918 over four). Everything here but `read_library` is pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from watchbridge.anime import DatasetError, Scheme, parse_overrides
from watchbridge.ids import title_key
from watchbridge.ingest.common import integer, text
from watchbridge.ingest.plex import hama_mode
from watchbridge.loose import whole
from watchbridge.model import Ids
from watchbridge.services.plex import PlexClient, Section, library_item

ENTRY_KEYS = ("title", "synonyms", "guid", "seasons")
SEASON_KEYS = ("season", "anilist-id", "start")
REMOTE_SKIPPED = (
    "remote-urls were not fetched ({count} URL(s)): watchbridge's anime mapping datasets "
    "already cover the community mappings; only the file's own entries are imported"
)
# Skip reasons a user may act on, counted in the summary.
NOT_FOUND = "not found in Plex"
AMBIGUOUS = "ambiguous"
ALREADY = "already in your overrides"
UNUSABLE = "cannot be translated"


# --------------------------------------------------------------------------- the file


@dataclass(frozen=True, slots=True)
class SeasonLink:
    """Plex season `season` from episode `start` on is AniList `anilist_id` from episode 1."""

    season: int
    anilist_id: int
    start: int = 1


@dataclass(frozen=True, slots=True)
class MappingEntry:
    title: str
    synonyms: tuple[str, ...] = ()
    guid: str | None = None
    seasons: tuple[SeasonLink, ...] = ()


@dataclass(frozen=True, slots=True)
class MappingFile:
    entries: tuple[MappingEntry, ...]
    remote_urls: tuple[str, ...] = ()


def parse_mappings(text_: str, name: str) -> MappingFile:
    """A PlexAniSync custom_mappings.yaml; DatasetError naming the file and the key."""
    try:
        root = yaml.safe_load(text_)
    except yaml.YAMLError as exc:
        raise DatasetError(f"{name}: invalid YAML: {exc}") from None
    if root is None:
        return MappingFile(())
    if not isinstance(root, dict):
        raise DatasetError(f"{name}: expected `entries:` (and `remote-urls:`) at the top")
    unknown = set(root) - {"entries", "remote-urls"}
    if unknown:
        raise DatasetError(
            f"{name}: {sorted(map(str, unknown))[0]}: unknown key; expected entries or remote-urls"
        )
    urls = root.get("remote-urls") or []
    if not isinstance(urls, list):
        raise DatasetError(f"{name}: remote-urls: expected a list of URLs")
    entries = root.get("entries") or []
    if not isinstance(entries, list):
        raise DatasetError(f"{name}: entries: expected a list of shows (- title: ...)")
    return MappingFile(
        tuple(_entry(value, f"{name}: entries[{n}]") for n, value in enumerate(entries)),
        tuple(str(url) for url in urls),
    )


def _entry(value: Any, where: str) -> MappingEntry:
    _known_keys(value, ENTRY_KEYS, where, "title and seasons")
    title = value.get("title")
    if not isinstance(title, str | int | float) or not str(title).strip():
        raise DatasetError(f"{where}.title: expected the show's title as Plex shows it")
    where = f"{where} ({str(title).strip()!r})"
    synonyms = value.get("synonyms") or []
    if not isinstance(synonyms, list) or not all(isinstance(s, str | int) for s in synonyms):
        raise DatasetError(f"{where}.synonyms: expected a list of titles")
    guid = value.get("guid")
    if guid is not None and not (isinstance(guid, str) and guid.startswith("plex://show/")):
        raise DatasetError(f"{where}.guid: expected a Plex show guid, plex://show/<24 hex>")
    seasons = value.get("seasons")
    if not isinstance(seasons, list) or not seasons:
        raise DatasetError(f"{where}.seasons: expected a list of - season: N, anilist-id: ID")
    return MappingEntry(
        str(title).strip(),
        tuple(str(s) for s in synonyms),
        guid,
        tuple(_season(s, f"{where}.seasons[{n}]") for n, s in enumerate(seasons)),
    )


def _season(value: Any, where: str) -> SeasonLink:
    _known_keys(value, SEASON_KEYS, where, "season and anilist-id")
    season = whole(value.get("season"))
    if season is None or season < 1:
        raise DatasetError(f"{where}.season: expected a Plex season number (1 or more)")
    anilist = whole(value.get("anilist-id"))
    if anilist is None or anilist <= 0:
        raise DatasetError(f"{where}.anilist-id: expected an AniList id (a number)")
    start = whole(value.get("start", 1))
    if start is None or start < 1:
        raise DatasetError(f"{where}.start: expected the Plex episode it starts at (1 or more)")
    return SeasonLink(season, anilist, start)


def _known_keys(value: Any, keys: Sequence[str], where: str, expected: str) -> None:
    """Refuse `value` unless it is a mapping of none but `keys` (`expected`: what it holds)."""
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: expected {expected}")
    unknown = set(value) - set(keys)
    if unknown:
        raise DatasetError(
            f"{where}.{sorted(map(str, unknown))[0]}: unknown key; expected " + ", ".join(keys)
        )


# --------------------------------------------------------------------------- the library


@dataclass(frozen=True, slots=True)
class PlexShow:
    """A show of a TV library as the import needs it; `episodes`: season -> episode count."""

    rating_key: str
    title: str
    library: str
    guid: str
    ids: Ids
    year: int | None = None
    other_titles: tuple[str, ...] = ()
    ordering: str | None = None  # showOrdering; None: the library's default
    episodes: Mapping[int, int] = field(default_factory=dict)

    def named(self, keys: set[str]) -> bool:
        return any(title_key(t) in keys for t in (self.title, *self.other_titles) if t)

    def describe(self) -> str:
        year = f" ({self.year})" if self.year else ""
        return f"{self.title!r}{year} in {self.library!r}"


def library_shows(
    section: Section,
    show_rows: Iterable[Mapping[str, object]],
    season_rows: Iterable[Mapping[str, object]],
) -> list[PlexShow]:
    """The shows of one section listing, with their seasons' episode counts (`leafCount`)."""
    counts: dict[str, dict[int, int]] = {}
    for row in season_rows:
        show, season = text(row.get("parentRatingKey")), integer(row.get("index"))
        if show is not None and season is not None:
            counts.setdefault(show, {})[season] = integer(row.get("leafCount")) or 0
    shows = []
    for row in show_rows:
        item = library_item(row)
        if item is None or item.type != "show":
            continue
        original = text(row.get("originalTitle"))  # often the romaji a synonym gives
        others = (original,) if original else ()
        shows.append(
            PlexShow(
                rating_key=item.rating_key,
                title=item.title or item.rating_key,
                library=section.title,
                guid=text(row.get("guid")) or "",
                ids=item.ids,
                year=integer(row.get("year")),
                other_titles=others,
                ordering=item.ordering,
                episodes=counts.get(item.rating_key, {}),
            )
        )
    return shows


async def read_library(client: PlexClient, sections: Sequence[Section]) -> list[PlexShow]:
    """Every show of the TV `sections`: two listings each (shows, seasons), never per show."""
    shows: list[PlexShow] = []
    for section in sections:
        if section.type != "show":
            continue
        show_rows = await client.listing_rows(section.key, "show")
        season_rows = await client.listing_rows(section.key, "season")
        shows.extend(library_shows(section, show_rows, season_rows))
    return shows


# --------------------------------------------------------------------------- translating


@dataclass(frozen=True, slots=True)
class Segment:
    """AniList episodes src_first.. (src_last None: open) are Plex `season` first.. (last)."""

    season: int
    src_first: int
    src_last: int | None
    first: int
    last: int | None

    def ranges(self) -> tuple[str, str]:
        def span(a: int, b: int | None) -> str:
            return f"{a}-" if b is None else (f"{a}" if a == b else f"{a}-{b}")

        return span(self.src_first, self.src_last), span(self.first, self.last)


@dataclass(frozen=True, slots=True)
class Imported:
    """One override: an AniList entry's episodes on one TVDB or TMDB show."""

    anilist_id: int
    scheme: Scheme
    show: int
    plex_title: str
    segments: tuple[Segment, ...]
    library: str = ""
    # Numbered as Plex's default ordering numbers a show (TMDB), its own being unset.
    assumed: bool = False

    def comment(self) -> str:
        seasons = sorted({s.season for s in self.segments})
        if len(seasons) > 1:
            where = f"S{seasons[0]}-S{seasons[-1]}"
        else:
            first, last = self.segments[0].first, self.segments[-1].last
            where = f"S{seasons[0]}E{first}-" + ("" if last is None else str(last))
        return f"{self.plex_title} (Plex {where}, from PlexAniSync)"


@dataclass(frozen=True, slots=True)
class Skipped:
    title: str
    kind: str  # NOT_FOUND, AMBIGUOUS, ALREADY, UNUSABLE
    reason: str


@dataclass
class ImportResult:
    imported: list[Imported] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        kinds = (NOT_FOUND, AMBIGUOUS, ALREADY, UNUSABLE)
        counts = {k: sum(1 for s in self.skipped if s.kind == k) for k in kinds}
        skipped = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "none"
        return f"imported {len(self.imported)} override(s); skipped: {skipped}"


def numbering(show: PlexShow) -> tuple[Scheme, int] | str:
    """The provider whose numbers Plex gives `show`'s seasons and episodes, with the show's id
    there; else why none of ours fits. Plex's new TV agent numbers by TMDB unless the show is
    set to a TheTVDB ordering (its default, "The Movie Database (Aired)"; a library-wide default
    does not show in its listing); legacy agents number by their own provider."""
    guid = show.guid.lower()
    scheme: Scheme
    if "thetvdbdvdorder" in guid or show.ordering == "dvd":
        return "Plex numbers it in TheTVDB's DVD order, which no override numbering follows"
    if show.ordering == "absolute":
        return (
            "Plex numbers it in TheTVDB's absolute order: write its override by hand with "
            "`absolute: true` (see the README's Overrides)"
        )
    mode = hama_mode(show.guid)
    if mode is not None:
        if mode != "tvdb":
            return (
                f"the HAMA agent numbers it its own way ({mode}): its plays are mapped by the "
                "AniDB or TheTVDB ids and numbers HAMA gives them, no override needed"
            )
        scheme = "tvdb"
    elif guid.startswith("com.plexapp.agents.thetvdb://") or show.ordering == "aired":
        scheme = "tvdb"
    elif guid.startswith(("plex://", "com.plexapp.agents.themoviedb://")):
        scheme = "tmdb"
    else:
        return "its Plex agent gives it neither TheTVDB's nor TMDB's numbering"
    found = whole(show.ids.tvdb if scheme == "tvdb" else show.ids.tmdb)
    if found is None or found <= 0:
        return f"Plex numbers it by {scheme.upper()} but has no {scheme.upper()} id for it"
    return scheme, found


def find_show(entry: MappingEntry, shows: Sequence[PlexShow]) -> PlexShow | Skipped:
    """The one show an entry names: by its guid when it has one, else by title or synonym
    (case, accents and punctuation aside). Several shows are ambiguous, never guessed; the
    same show in two libraries (same numbering and id) is one."""
    if entry.guid is not None:
        found = [s for s in shows if s.guid.lower() == entry.guid.lower()]
        if not found:
            return Skipped(entry.title, NOT_FOUND, f"no show in Plex has the guid {entry.guid}")
    else:
        keys = {title_key(t) for t in (entry.title, *entry.synonyms)} - {""}
        found = [s for s in shows if s.named(keys)]
        if not found:
            names = ", ".join(repr(t) for t in (entry.title, *entry.synonyms))
            return Skipped(
                entry.title, NOT_FOUND, f"no show in your TV libraries is titled {names}"
            )
    alike = {str(numbering(s)) for s in found}
    if len(found) > 1 and len(alike) > 1:
        return Skipped(
            entry.title,
            AMBIGUOUS,
            f"{len(found)} shows match: {', '.join(s.describe() for s in found)}; add the "
            "one you mean as `guid:` (Plex Web: Get Info > View XML, the show's guid)",
        )
    # One show, or the same one in several libraries: count each season's episodes at most.
    counts: dict[int, int] = {}
    for show in found:
        for season, count in show.episodes.items():
            counts[season] = max(counts.get(season, 0), count)
    first = found[0]
    return PlexShow(
        first.rating_key,
        first.title,
        first.library,
        first.guid,
        first.ids,
        first.year,
        first.other_titles,
        first.ordering,
        counts,
    )


def translate(entry: MappingEntry, show: PlexShow) -> list[Imported] | Skipped:
    """The overrides of one entry on its Plex show. A link's Plex episodes run from its
    `start` up to the next link's start in that season, or to the season's end (open: new
    episodes included); several seasons with one AniList id count up across them in season
    order, which needs each earlier season's episode count."""
    target = numbering(show)
    if isinstance(target, str):
        return Skipped(entry.title, UNUSABLE, f"{show.describe()}: {target}")
    scheme, show_id = target
    by_season: dict[int, list[SeasonLink]] = {}
    for link in entry.seasons:
        by_season.setdefault(link.season, []).append(link)
    plex_ranges: dict[int, list[tuple[int, int, int | None]]] = {}  # anilist -> (s, first, last)
    for season, links in sorted(by_season.items()):
        links.sort(key=lambda link: link.start)
        for this, after in zip(links, [*links[1:], None], strict=True):
            if after is not None and after.start == this.start:
                return Skipped(
                    entry.title,
                    UNUSABLE,
                    f"season {season} starts AniList {this.anilist_id} and "
                    f"{after.anilist_id} at the same episode {this.start}: keep one",
                )
            last = after.start - 1 if after is not None else None
            plex_ranges.setdefault(this.anilist_id, []).append((season, this.start, last))
    imported = []
    for anilist, ranges in plex_ranges.items():
        segments: list[Segment] = []
        counted = 1
        for n, (season, first, last) in enumerate(ranges):
            final = n == len(ranges) - 1
            if last is None and not final:
                held = show.episodes.get(season, 0)
                if held < first:
                    return Skipped(
                        entry.title,
                        UNUSABLE,
                        f"{show.describe()}: AniList {anilist} goes on after season {season}, "
                        f"but Plex holds {'no' if not held else f'only {held}'} episode(s) of "
                        f"that season from episode {first}, so the later seasons' AniList "
                        "episode numbers cannot be counted",
                    )
                last = held
            if last is None:
                segments.append(Segment(season, counted, None, first, None))
                break
            segments.append(Segment(season, counted, counted + last - first, first, last))
            counted += last - first + 1
        assumed = show.ordering is None and show.guid.startswith("plex://")
        imported.append(
            Imported(anilist, scheme, show_id, show.title, tuple(segments), show.library, assumed)
        )
    return imported


def import_entries(
    mappings: MappingFile, shows: Sequence[PlexShow], existing: Iterable[int] = ()
) -> ImportResult:
    """Every entry's overrides, with what was skipped and why. An AniList id already in the
    user's overrides (`existing`) or given by an earlier entry is left to that one."""
    result = ImportResult()
    taken = set(existing)
    by_entry: dict[int, str] = {}
    for entry in mappings.entries:
        show = find_show(entry, shows)
        if isinstance(show, Skipped):
            result.skipped.append(show)
            continue
        found = translate(entry, show)
        if isinstance(found, Skipped):
            result.skipped.append(found)
            continue
        for override in found:
            anilist = override.anilist_id
            if anilist in taken:
                result.skipped.append(
                    Skipped(
                        entry.title,
                        ALREADY,
                        f"AniList {anilist}: your overrides file maps it already (left as it is)",
                    )
                )
            elif anilist in by_entry:
                result.skipped.append(
                    Skipped(
                        entry.title,
                        UNUSABLE,
                        f"AniList {anilist} is mapped by the entry {by_entry[anilist]!r} "
                        "already: an AniList entry maps onto one show",
                    )
                )
            else:
                by_entry[anilist] = entry.title
                result.imported.append(override)
    return result


# --------------------------------------------------------------------------- writing


def render(imported: Sequence[Imported], indent: str = "") -> str:
    """The overrides as YAML in our format (see README "Overrides"), one block per entry."""
    lines: list[str] = []
    for override in imported:
        lines.append(f"{override.anilist_id}:")
        lines.append(f"  title: {_quoted(override.comment())}")
        seasons = sorted({s.season for s in override.segments})
        if len(seasons) == 1:
            episodes = _ranges(override.segments)
            lines.append(
                f"  {override.scheme}: {{show: {override.show}, season: {seasons[0]}, "
                f"episodes: {episodes}}}"
            )
        else:
            lines.append(f"  {override.scheme}:")
            lines.append(f"    show: {override.show}")
            lines.append("    seasons:")
            for season in seasons:
                mine = [s for s in override.segments if s.season == season]
                lines.append(f"      {season}: {_ranges(mine)}")
    return "".join(f"{indent}{line}\n" for line in lines)


def _ranges(segments: Iterable[Segment]) -> str:
    pairs = (segment.ranges() for segment in segments)
    return "{" + ", ".join(f'"{src}": "{dst}"' for src, dst in pairs) + "}"


def _quoted(value: str) -> str:
    """A YAML double-quoted scalar (JSON's escapes are YAML's)."""
    return json.dumps(value, ensure_ascii=False)


def existing_ids(text_: str, name: str) -> set[int]:
    """The AniList ids an overrides file maps already (DatasetError when it does not load)."""
    parsed = parse_overrides(text_, name)
    return set(parsed.shows) | set(parsed.movies) | set(parsed.skip)


def merged(existing: str, imported: Sequence[Imported], header: str, name: str) -> str:
    """`existing` overrides text, unchanged, with the imported entries added at its end (under
    its `overrides:` key when it has one); checked to load. DatasetError when it would not."""
    indent = _entry_indent(existing)
    block = "".join(f"{indent}{line}\n" for line in header.splitlines())
    block += render(imported, indent)
    text_ = existing
    if text_ and not text_.endswith("\n"):
        text_ += "\n"
    if text_.strip():
        text_ += "\n"
    text_ += block
    before = existing_ids(existing, name) if existing.strip() else set()
    after = existing_ids(text_, name)
    if after != before | {o.anilist_id for o in imported}:
        raise DatasetError(f"{name}: the imported entries would not be read as added")
    return text_


def _entry_indent(existing: str) -> str:
    """How deep entries sit: under a lone `overrides:` key, as deep as its first entry."""
    try:
        node = yaml.compose(existing)
    except yaml.YAMLError:
        return ""
    if not isinstance(node, yaml.MappingNode) or len(node.value) != 1:
        return ""
    key, value = node.value[0]
    if key.value != "overrides" or not isinstance(value, yaml.MappingNode):
        return ""
    if not value.value or value.flow_style:
        raise DatasetError(
            "the overrides file's `overrides:` holds no entries one per line: add the imported "
            "ones by hand"
        )
    column: int = value.value[0][0].start_mark.column
    return " " * column
