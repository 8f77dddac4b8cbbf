"""Anime mapping datasets on disk: download, validate, cache, refresh; the unmatched log.

Datasets are fetched at run time from upstream (Anime-Lists and Fribb carry no licence, so
they are never shipped), kept under the data dir next to the database, refreshed when older
than `services.anilist.mapping_refresh`, and replaced only by a download that parses and is
not much smaller than the last good copy (or, after a whole refresh period of only much smaller
ones, by the latest: upstream dropped rows for good). When a download fails the cached copy
keeps working and the failure is logged (once, then hourly while it lasts; a dataset with no
copy yet is tried again within minutes, `MISSING_RETRY`: while none has one, AniList
deliveries wait); when there is no copy yet, or the copy was last confirmed current (a
download, or a 304: upstream unchanged) two refresh periods ago, `out_of_date` says so (the
service's maintenance alerts through `alerts.urls`, and resolves once it is current).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from watchbridge import hama
from watchbridge import queuewords as words
from watchbridge.anime import (
    DATASETS,
    SERVER_ORDER,
    AnimeIndex,
    DatasetError,
    Unmatched,
    count_rows,
    parse_overrides,
)
from watchbridge.anime import load_index as build_index
from watchbridge.errors import ConfigError, StoreError, Waits, WatchbridgeError
from watchbridge.http import REDIRECT_STATUS, HttpClient, ServiceError, shown_url
from watchbridge.logs import Repeating
from watchbridge.zone import clock_time

if TYPE_CHECKING:
    from watchbridge.store import Store

log = logging.getLogger(__name__)

DEFAULT_URLS: dict[str, str] = {
    # MIT, AniList-keyed episode ranges (v3 release asset, redirects to GitHub's asset host).
    "anibridge": "https://github.com/anibridge/anibridge-mappings/releases/download/v3/mappings.min.json",
    # MIT, AniDB-keyed ids with TVDB season and offset.
    "kometa": "https://raw.githubusercontent.com/Kometa-Team/Anime-IDs/master/anime_ids.json",
    # No licence upstream: download only.
    "fribb": "https://raw.githubusercontent.com/Fribb/anime-lists/master/anime-list-full.json",
    # No licence upstream: download only.
    "animelists": "https://raw.githubusercontent.com/Anime-Lists/anime-lists/master/anime-list-master.xml",
}
_FILES = {
    "anibridge": "anibridge.json",
    "kometa": "kometa.json",
    "fribb": "fribb.json",
    "animelists": "animelists.xml",
}
MIN_SHARE = 0.9  # a refresh must keep at least this share of the last good row count
RETRY_FAILED = 3600.0  # after a failed download, try again at most hourly
# A dataset with no copy yet whose download failed is tried again this often: soon, as
# AniList deliveries wait while none is downloaded, but not at every delivery pass and link run.
MISSING_RETRY = 300.0
# What a refresh in this process found and could not write to datasets.json (a read-only
# folder, a full disk), by that file: read over what the file holds (each dataset's later
# check wins), so this process's status, `anime refresh` and the hourly check still say what
# went wrong and do not ask upstream again at once; dropped once the file is written.
_UNSAVED: dict[Path, dict[str, dict[str, Any]]] = {}
_FAILING = Repeating(log)  # each dataset's failed refreshes, by its folder and name
# The same kept in the database (a cursor of no profile), for the other processes:
# `watchbridge status`, the service after an `anime refresh` or a restart. Written when the
# database can be (a folder of its own unwritable, not a full disk), read like _UNSAVED.
UNSAVED_CURSOR = ("anime-datasets", "", "unsaved")


@dataclass(frozen=True)
class DatasetStatus:
    """What the cache holds for one dataset and how the last refresh went."""

    name: str
    url: str
    cached: bool
    rows: int = 0
    fetched_at: float | None = None  # last new copy written
    checked_at: float | None = None  # last time upstream was asked (ok, 304 or failed)
    ok_at: float | None = None  # last check that went well (a new copy, or a 304: ours is current)
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None  # the last refresh failed with this; the cache is in use


class ListsMissing(WatchbridgeError):
    """No anime mapping dataset is downloaded (or every one is switched off): a link with
    AniList waits, as nothing can be told apart from anime. Told by the lists' own alert
    (`MISSING_KEY`), not the link's; every one switched off (the config's choice, no alert of
    its own) is a failure the link tells of."""


class ListsNotYet(ListsMissing, Waits):
    """No anime mapping dataset is downloaded yet: the link run waits (not a failure), and
    raises the lists' alert itself while their downloads fail (`problems`: one line each, as
    `AnimeData.out_of_date` says them), as the deliveries and the hourly check do."""

    def __init__(self, message: str, until: float | None, problems: tuple[str, ...]) -> None:
        super().__init__(message, until)
        self.problems = problems


class ListsUnreadable(ListsMissing):
    """Copies of the anime mapping lists are on disk, none of which gives a mapping (damaged,
    or a format this release does not read): the link run fails (no download ends it), and
    raises the lists' alert itself (`problems`: one line per dataset, as `unreadable` says
    them; the files are in `directory`), as the deliveries and the hourly check do."""

    def __init__(self, message: str, directory: Path, problems: tuple[str, ...]) -> None:
        super().__init__(message)
        self.directory = directory
        self.problems = problems


# The alert of no anime mapping list downloaded yet (maintenance.check_anime_datasets).
MISSING_KEY = "anime-datasets-missing"


@dataclass(frozen=True)
class ListsState:
    """What the lists' alerts go by, as read from disk (`AnimeData.lists_state`): why each
    dataset may be out of date (`out_of_date`), whether none has a copy, and why none of
    the copies on disk (in `directory`) gives a mapping, if so (`unreadable`)."""

    directory: Path
    out_of_date: tuple[str, ...]
    none_downloaded: bool
    unreadable: tuple[str, ...]


class AnimeData:
    """The datasets cache for one data dir, and the index built from it."""

    def __init__(
        self,
        directory: Path,
        *,
        urls: Mapping[str, str] | None = None,
        refresh: float = 7 * 86400,
        overrides_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        http: HttpClient | None = None,
        store: Store | None = None,
    ) -> None:
        self.directory = directory
        self.store = store  # where what datasets.json could not take is kept (UNSAVED_CURSOR)
        merged = {**DEFAULT_URLS, **(urls or {})}
        # An empty URL switches a dataset off.
        self.urls = {name: url for name, url in merged.items() if name in DATASETS and url}
        self.refresh_every = refresh
        self.overrides_path = overrides_path
        self.clock = clock
        self._http = http
        self._own_http = http is None
        self._index: AnimeIndex | None = None
        self._index_key: tuple[Any, ...] | None = None

    # ------------------------------------------------------------------ state on disk

    def _meta_path(self) -> Path:
        return self.directory / "datasets.json"

    def _read_meta(self) -> dict[str, dict[str, Any]]:
        meta = self._saved_meta()
        for name, entry in self._unsaved().items():
            if _checked_at(entry) >= _checked_at(meta.get(name)):
                meta[name] = entry
        return meta

    def _saved_meta(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._meta_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        return data if isinstance(data, dict) else {}

    def _unsaved(self) -> dict[str, dict[str, Any]]:
        """What refreshes found and datasets.json could not take: kept in the database and
        in this process (each dataset's later check wins)."""
        found: dict[str, dict[str, Any]] = {}
        kept = self.store.get_cursor(*UNSAVED_CURSOR) if self.store is not None else None
        try:
            stored = json.loads(kept) if kept else {}
        except ValueError:
            stored = {}
        ours = _UNSAVED.get(self._meta_path(), {})
        for source in (stored if isinstance(stored, dict) else {}, ours):
            for name, entry in source.items():
                if isinstance(entry, dict) and _checked_at(entry) >= _checked_at(found.get(name)):
                    found[name] = entry
        return found

    def keep_unsaved(self) -> None:
        """Keep in the database what datasets.json could not take and still lacks (a
        refresh made without the database, by a link run or a delivery), or forget it once
        the file has it; one write at most, none when nothing changed."""
        if self.store is None:
            return
        saved = self._saved_meta()
        lacking = {
            name: entry
            for name, entry in self._unsaved().items()
            if _checked_at(entry) > _checked_at(saved.get(name))
        }
        kept = self.store.get_cursor(*UNSAVED_CURSOR)
        try:
            if lacking:
                text = json.dumps(lacking, sort_keys=True)
                if text != kept:
                    self.store.set_cursor(*UNSAVED_CURSOR, text, self.clock())
            elif kept is not None:
                self.store.forget_cursor(*UNSAVED_CURSOR)
        except (StoreError, sqlite3.Error) as exc:  # a full disk takes the database too
            log.warning("anime datasets: what datasets.json lacks is not kept either: %s", exc)

    def _write_meta(self, meta: Mapping[str, Any]) -> None:
        write_atomic(self._meta_path(), json.dumps(meta, indent=1, sort_keys=True).encode())

    def path(self, name: str) -> Path:
        return self.directory / _FILES[name]

    def status(self) -> list[DatasetStatus]:
        meta = self._read_meta()
        cached = {name for name in self.urls if self.path(name).is_file()}
        result = []
        for name, url in self.urls.items():
            known = {k: v for k, v in meta.get(name, {}).items() if k in _STATUS_FIELDS}
            known.update(name=name, url=url, cached=name in cached)
            if name not in cached and isinstance(known.get("error"), str):
                known["error"] = _without_copy(known["error"], bool(cached))
            result.append(DatasetStatus(**known))
        return result

    def none_downloaded(self) -> bool:
        """True while no dataset has a copy (or every one is switched off): nothing can be
        told apart from anime, so AniList deliveries wait."""
        return not any(self.path(name).is_file() for name in self.urls)

    def unreadable(self) -> list[str]:
        """Why none of the copies on disk gives a mapping (one line per dataset, as the log's
        "anime dataset unreadable" lines say it), while there are copies and none does: AniList
        deliveries wait, and no download ends it. Empty otherwise (no copy, every dataset
        switched off, a broken overrides file: said where it is read). Builds the index from
        disk when no run in this process has (a second or two, in a thread)."""
        if self.none_downloaded():
            return []
        try:
            index = self.cached_index()
        except ConfigError:
            return []
        if len(index):
            return []
        return list(index.problems) or ["no dataset on disk holds a mapping"]

    def lists_state(self, now: float) -> ListsState:
        """The lists' state on disk at `now`, for their alerts (causes.lists_alert)."""
        none_yet = self.none_downloaded()
        unreadable = () if none_yet else tuple(self.unreadable())
        return ListsState(self.directory, tuple(self.out_of_date(now)), none_yet, unreadable)

    def missing_reason(self, link: bool = False) -> str:
        """Why AniList deliveries wait while the index is empty, and what to do: every dataset
        switched off, copies on disk none of which could be read (damaged, or a format this
        release does not read), or none downloaded yet. `link`: why a link's run fails for
        the first two (`link_waits` says the last its own way)."""
        waits = "the link reads and plans nothing" if link else "AniList deliveries wait"
        if not self.urls:
            return (
                "every anime mapping dataset is switched off (services.anilist.mapping_urls):"
                f" {waits} until one is set"
            )
        if not self.none_downloaded():
            return (
                "the anime mapping lists on disk could not be read (the log's \"anime dataset"
                ' unreadable" lines say why: a damaged copy, or a format this release does not'
                f" read), so {waits}; run `watchbridge anime refresh` to download them again,"
                " or update watchbridge if that does not help"
            )
        return (
            "the anime mapping lists are not downloaded yet (they tell which AniList title a"
            f" play is): it waits for them, tried again every {MISSING_RETRY / 60:.0f} minutes;"
            " check that this machine reaches their hosts (services.anilist.mapping_urls), or"
            " run `watchbridge anime refresh`"
        )

    def link_waits(self) -> ListsMissing:
        """Why a link run with AniList does not begin while its index is empty: every dataset
        switched off, or copies on disk none of which could be read (failures: no download
        ends them; the second raises the lists' alert, `ListsUnreadable`), or none downloaded
        yet (a wait, with when the last download failed and when the next is tried:
        `ListsNotYet`)."""
        if not self.urls:
            return ListsMissing(self.missing_reason(link=True))
        if not self.none_downloaded():  # the index the run just built: no second build
            problems = tuple(self.unreadable())
            return ListsUnreadable(self.missing_reason(link=True), self.directory, problems)
        now = self.clock()
        failed = [s.checked_at for s in self.status() if s.error and s.checked_at is not None]
        until, when = None, ""
        if failed:
            until = min(failed) + MISSING_RETRY  # the first one due again
            last, next_try = clock_time(max(failed), now, zone=True), clock_time(until, now)
            when = f" (download failed at {last}, next try {next_try})"
        message = (
            f"{words.FOR_THE_LISTS}{when}: the anime mapping lists are not downloaded yet (they"
            " tell which AniList title a play is), so the link reads and plans nothing until one"
            " is; check that this machine reaches their hosts (services.anilist.mapping_urls), or"
            " run `watchbridge anime refresh`"
        )
        return ListsNotYet(message, until, tuple(self.out_of_date(now)))

    def out_of_date(self, now: float) -> list[str]:
        """Why the mapping may be out of date, one line per dataset, where that matters: its
        last refresh failed and there is no copy, or the copy was last confirmed current (a
        download, or a 304: upstream unchanged) two refresh periods ago."""
        return [s.error for s in self.status() if s.error and self._alerting(s, now)]

    def serving_meanwhile(self, now: float) -> list[str]:
        """Why a dataset's last refresh failed, one line per dataset whose cached copy serves
        meanwhile and that `out_of_date` does not count yet: nothing is wrong for the
        household yet, and no alert tells of it."""
        return [s.error for s in self.status() if s.error and not self._alerting(s, now)]

    def _alerting(self, status: DatasetStatus, now: float) -> bool:
        return not status.cached or now - (_confirmed_at(status) or 0) >= 2 * self.refresh_every

    def due(self, status: DatasetStatus, now: float) -> bool:
        if status.checked_at is None or (not status.cached and not status.error):
            return True
        if not status.cached:
            wait = MISSING_RETRY
        elif status.error:
            wait = min(self.refresh_every, RETRY_FAILED)
        else:
            wait = self.refresh_every
        return now - status.checked_at >= wait

    # ------------------------------------------------------------------ refresh

    async def refresh(self, force: bool = False) -> list[DatasetStatus]:
        """Download every dataset that is due (all with `force`, each whole: a copy on disk
        damaged since upstream last changed is replaced, not kept by a 304); never raises for
        a download problem, nor for a folder it cannot write (read-only, a full disk): the
        cached copy stays and the status says what went wrong."""
        now = self.clock()
        for status in self.status():
            if force or self.due(status, now):
                await self._refresh_one(status, now, whole=force)
        return self.status()

    async def _refresh_one(self, status: DatasetStatus, now: float, whole: bool = False) -> None:
        meta = self._read_meta()
        entry = dict(meta.get(status.name, {}))
        entry["url"] = status.url
        try:
            body, headers = await self._download(status, conditional=not whole)
            if body is not None:
                last = status.rows if status.cached else 0
                try:
                    rows = await asyncio.to_thread(_validate, status.name, body, last)
                except Shrunk as shrunk:
                    rows = self._upstream_shrunk(status.name, entry, shrunk, now)
                self.directory.mkdir(parents=True, exist_ok=True)
                write_atomic(self.path(status.name), body)
                entry.update(rows=rows, fetched_at=now)
                entry["etag"] = headers.get("etag")
                entry["last_modified"] = headers.get("last-modified")
                log.info(
                    "anime dataset updated",
                    extra={"dataset": status.name, "rows": rows, "bytes": len(body)},
                )
            entry.pop(_SHRUNK, None)  # a copy of the usual size (or ours, unchanged)
            entry["error"] = None
            entry["ok_at"] = now
        except (ServiceError, DatasetError, OSError) as exc:
            entry["error"] = _problem(status, exc)
        entry["checked_at"] = now
        meta[status.name] = entry
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write_meta(meta)
        except OSError as exc:
            if entry["error"] is None:  # the download went well: what it found is lost
                entry["error"] = _problem(status, exc)
            _UNSAVED.setdefault(self._meta_path(), {})[status.name] = entry
        else:
            _UNSAVED.pop(self._meta_path(), None)  # written with the file, as read
        self.keep_unsaved()
        # A lasting failure (hosts a firewall blocks, asked every MISSING_RETRY) is a warning
        # once, then hourly: the alert tells the user meanwhile.
        failing = (str(self.directory), status.name)
        if entry["error"] is not None:
            _FAILING.warning(failing, entry["error"], now, dataset=status.name)
        else:
            _FAILING.over(failing, "anime dataset refresh works again", now, dataset=status.name)

    def _upstream_shrunk(self, name: str, entry: dict[str, Any], shrunk: Shrunk, now: float) -> int:
        """The rows of a download much smaller than the last good copy, once every download for
        a refresh period was (upstream dropped them for good: a clean-up, a split); until then
        raises, the first such download's time kept in `entry`. A bad push that upstream fixes
        meanwhile is never taken, and the wait starts again at the next one."""
        kept = entry.get(_SHRUNK)
        since = kept.get("since") if isinstance(kept, dict) else None
        since = float(since) if isinstance(since, int | float) and since <= now else now
        if now - since >= self.refresh_every:
            log.warning(
                "anime dataset %s: upstream has served a much smaller copy since %s; "
                "taken as its new version",
                name,
                _day(since),
                extra={"dataset": name, "rows": shrunk.rows, "cached_rows": shrunk.last},
            )
            return shrunk.rows
        entry[_SHRUNK] = {"since": since, "rows": shrunk.rows}
        raise DatasetError(
            f"{shrunk}; if upstream still serves a copy this small on "
            f"{_day(since + self.refresh_every)}, it is taken as upstream's new version"
        )

    async def _download(
        self, status: DatasetStatus, conditional: bool = True
    ) -> tuple[bytes | None, Mapping[str, str]]:
        """The new body (None: unchanged since our copy, a 304, asked only when `conditional`)
        and the answer's headers."""
        headers: dict[str, str] = {}
        if conditional and status.cached and status.etag:
            headers["if-none-match"] = status.etag
        if conditional and status.cached and status.last_modified:
            headers["if-modified-since"] = status.last_modified
        url = status.url
        for _ in range(5):
            response = await self.http.request(
                "GET", url, headers=headers, passthrough=REDIRECT_STATUS
            )
            if response.status_code in REDIRECT_STATUS and "location" in response.headers:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code == 304 and status.cached:
                return None, response.headers
            if response.status_code != 200:
                raise ServiceError(
                    status.name, f"{shown_url(url)} answered HTTP {response.status_code}"
                )
            return response.content, response.headers
        raise ServiceError(status.name, f"{shown_url(status.url)}: too many redirects")

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient("anime-datasets", "", timeout=120.0)
        return self._http

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------ the index

    async def index(self) -> AnimeIndex:
        """The index from the cache, refreshing datasets that are due first."""
        await self.refresh()
        # Parsing full-size datasets takes a second or two: keep the event loop free.
        return await asyncio.to_thread(self.cached_index)

    def cached_index(self) -> AnimeIndex:
        """The index from whatever is on disk now (no network); rebuilt only when a file or
        the overrides changed. Raises ConfigError for a broken overrides file."""
        files = [(name, self.path(name)) for name in self.urls]
        overrides_mtime = _mtime(self.overrides_path) if self.overrides_path else None
        key = (*((name, _mtime(path)) for name, path in files), ("overrides", overrides_mtime))
        if self._index is not None and key == self._index_key:
            return self._index
        shared = _BUILT.get(self.directory)
        if shared is not None and shared[0] == (key, tuple(self.urls)):
            self._index, self._index_key = shared[1], key
            return shared[1]
        overrides = self.load_overrides()
        index = build_index(_Files({n: p for n, p in files if p.is_file()}), overrides)
        for problem in index.problems:
            log.warning("anime dataset unreadable", extra={"problem": problem})
        self._index, self._index_key = index, key
        # Each sync run makes its own AnimeData: share the built index while files are unchanged.
        _BUILT[self.directory] = ((key, tuple(self.urls)), index)
        return index

    def load_overrides(self) -> str | None:
        """The overrides file's text, validated; None when none is configured."""
        if self.overrides_path is None:
            return None
        where = "services.anilist.mapping_overrides"
        try:
            text = self.overrides_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"{where}: {self.overrides_path} not found (create it, see the README's"
                ' "Anime mapping" section, or remove the line)'
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read {self.overrides_path} ({exc})") from None
        try:
            parse_overrides(text, self.overrides_path.name)
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None
        return text


class _Files(Mapping[str, bytes]):
    """Dataset bodies read only when asked for, so one file at a time is in memory."""

    def __init__(self, paths: Mapping[str, Path]) -> None:
        self.paths = paths

    def __getitem__(self, name: str) -> bytes:
        return self.paths[name].read_bytes()

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


_BUILT: dict[Path, tuple[tuple[Any, ...], AnimeIndex]] = {}


_STATUS_FIELDS = frozenset(
    ("rows", "fetched_at", "checked_at", "ok_at", "etag", "last_modified", "error")
)


def from_config(config: Any, **kwargs: Any) -> AnimeData:
    """AnimeData for a loaded Config: data dir next to the database, AniList mapping keys."""
    anilist = config.services.anilist
    directory = Path(config.storage.path).parent / "anime-datasets"
    return AnimeData(
        directory,
        urls=_configured_urls(getattr(anilist, "mapping_urls", None)),
        refresh=float(getattr(anilist, "mapping_refresh", 7 * 86400)) if anilist else 7 * 86400,
        overrides_path=overrides_path(config),
        **kwargs,
    )


def overrides_path(config: Any) -> Path | None:
    """The file `services.anilist.mapping_overrides` names (relative to the config file's
    folder), None when it is not set."""
    anilist = config.services.anilist
    overrides = getattr(anilist, "mapping_overrides", None) if anilist else None
    path = Path(overrides).expanduser() if overrides else None
    if path is not None and not path.is_absolute():
        path = Path(config.source).parent / path
    return path


def overrides_problem(config: Any) -> str | None:
    """What is wrong with the configured overrides file (missing, unreadable, broken), or
    None: said by `check-config` and at start, not only at the first use of the mapping."""
    anilist = config.services.anilist
    if anilist is None or not anilist.mapping_overrides:
        return None
    try:
        from_config(config).load_overrides()
    except ConfigError as exc:
        return str(exc)
    return None


def _configured_urls(urls: Any) -> dict[str, str]:
    """The URLs set in config (None = upstream default, "" = off)."""
    if urls is None:
        return {}
    return {name: url for name, url in vars(urls).items() if url is not None}


class Shrunk(DatasetError):
    """A download that parses but holds much fewer rows than the last good copy."""

    def __init__(self, rows: int, last: int) -> None:
        super().__init__(f"download holds {rows} rows, the cached copy {last}: looks truncated")
        self.rows, self.last = rows, last


# Meta key of a dataset whose downloads hold much fewer rows than its copy: since when.
_SHRUNK = "shrunk"


def _validate(name: str, body: bytes, last_rows: int) -> int:
    try:
        rows = count_rows(name, body)
    except DatasetError as exc:
        raise DatasetError(f"download does not parse ({exc})") from None
    if rows == 0:
        raise DatasetError("download holds no rows")
    if last_rows and rows < last_rows * MIN_SHARE:
        raise Shrunk(rows, last_rows)
    return rows


def _day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def _problem(status: DatasetStatus, exc: Exception) -> str:
    detail = exc.message if isinstance(exc, ServiceError) else str(exc)
    if isinstance(exc, OSError) and exc.filename:
        detail = (
            f"could not write {exc.filename}: {exc.strerror or exc}; the folder must be"
            " writable by the user watchbridge runs as, on a disk with space"
        )
    if status.cached:
        when = time.strftime("%Y-%m-%d", time.gmtime(status.fetched_at or 0))
        fallback = f"using the cached copy from {when}"
        confirmed = time.strftime("%Y-%m-%d", time.gmtime(_confirmed_at(status) or 0))
        if confirmed != when:
            fallback += f", last confirmed current on {confirmed}"
    else:
        fallback = _NO_COPY  # what mapping works from meanwhile is said when shown (status)
    return f"anime dataset {status.name}: refresh failed ({detail}); {fallback}"


_NO_COPY = "no cached copy yet"
_OTHERS_ONLY = ": mapping works from the other datasets only"  # older releases stored it


def _without_copy(error: str, others: bool) -> str:
    """A failed refresh of a dataset with no copy, saying what mapping works from meanwhile:
    the datasets that have one (`others`), or none at all."""
    said = error.removesuffix(_OTHERS_ONLY)
    if not said.endswith(_NO_COPY):
        return error
    if others:
        return said + _OTHERS_ONLY
    return said + ", nor of any other dataset: anime plays wait for one before they go to AniList"


def _checked_at(entry: object) -> float:
    """When a dataset's state (datasets.json's entry) was last checked; -1 for none."""
    checked = entry.get("checked_at") if isinstance(entry, dict) else None
    return float(checked) if isinstance(checked, int | float) else -1.0


def _confirmed_at(status: DatasetStatus) -> float | None:
    """When the cached copy was last known to be upstream's latest (meta from before `ok_at`
    was recorded: when it was downloaded)."""
    return status.ok_at if status.ok_at is not None else status.fetched_at


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` whole or not at all, keeping the permissions it had."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException as exc:
        # A full disk leaves part of a copy behind: tens of MB no one would ever read.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not exc.filename:  # a write's error names no file
            raise OSError(exc.errno, exc.strerror, str(tmp)) from exc
        raise


def _mtime(path: Path | None) -> tuple[int, int] | None:
    """Modification time and size: file times tick coarsely, two quick writes can share one."""
    try:
        stat = path.stat() if path else None
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size) if stat else None


# --------------------------------------------------------------------------- unmatched log

_SERVICE, _COLLECTION = "anime", "unmatched"


@dataclass(frozen=True)
class UnmatchedRecord:
    """One AniList entry or play that could not be mapped, for `watchbridge anime unmatched`."""

    profile: str
    key: str  # "anilist:<id>" or the play's item key
    reason: str
    code: str
    title: str | None
    anilist_id: int | None
    seen_at: float
    source: str = ""  # who reports it (see `replace_unmatched`); "" in older releases' records


DELIVERY = "delivery"  # the source of what a delivery could not map (cleared once it maps)


def link_source(other: str, what: str) -> str:
    """The source of what an AniList link with `other` reports on each run: its AniList list
    (`what` "list") or the other side's plays ("plays")."""
    return f"{other} link {what}"


SEEN_REFRESH = 86400.0  # "seen" moves daily, not with every run: unchanged records stay put


def note_unmatched(
    store: Any,
    profile: str,
    key: str,
    unmatched: Unmatched,
    now: float,
    *,
    title: str | None = None,
    anilist_id: int | None = None,
) -> None:
    """Record (or refresh) why the delivery of `key` could not be mapped; the run goes on
    without it."""
    record = UnmatchedRecord(
        profile, key, unmatched.reason, unmatched.code, title, anilist_id, now, DELIVERY
    )
    note_unmatched_records(store, profile, [record], now)


def note_unmatched_plays(
    store: Any, profile: str, found: Mapping[str, Unmatched], now: float, source: str
) -> None:
    """The other side's plays (by item key) a link run found unmatched: all of them, each
    run, so those `source` recorded before and no longer reports are forgotten."""
    records = [
        UnmatchedRecord(profile, key, why.reason, why.code, None, None, now, source)
        for key, why in found.items()
    ]
    replace_unmatched(store, profile, source, records, now, _a_links_older_play)


def note_unmatched_entries(
    store: Any,
    profile: str,
    records: Iterable[UnmatchedRecord],
    now: float,
    source: str,
    whole: bool,
) -> None:
    """The AniList entries a link's read found unmatched. A whole read (daily, at least)
    saw the whole list: the entries `source` recorded before and no longer reports (deleted,
    or mapped now) are forgotten. A delta read sees only the entries updated since."""
    if whole:
        replace_unmatched(store, profile, source, records, now, lambda key, _: _entry(key))
    else:
        note_unmatched_records(store, profile, records, now)


def _entry(key: str) -> bool:
    return key.startswith("anilist:")


def _a_links_older_play(key: str, data: object) -> bool:
    """Whether an older release's record (no source) of a play is one a link's plays report
    wrote: those had a null title, a delivery's (a webhook play) the play's. A record without
    the field is kept: who wrote it cannot be told."""
    return not _entry(key) and isinstance(data, dict) and "title" in data and data["title"] is None


def replace_unmatched(
    store: Any,
    profile: str,
    source: str,
    records: Iterable[UnmatchedRecord],
    now: float,
    legacy: Callable[[str, object], bool],
) -> int:
    """`records` are everything `source` finds unmatched now (a whole AniList list, every
    play of a link's other side): record them, and forget what `source` recorded before and
    no longer reports (an entry deleted on AniList, one an override or a dataset refresh maps
    now). What other sources (another link, a delivery) and other profiles recorded stays;
    so do records older releases made without a source, unless `legacy` claims one (by its
    key and fields) as `source`'s.
    How many were forgotten."""
    records = list(records)
    reported = {record.key for record in records}
    stored = store.mirror_get(_SERVICE, profile, _COLLECTION)
    gone = sorted(
        key
        for key, data in stored.items()
        if key not in reported and _owned(data, source, legacy(key, data))
    )
    if gone:
        store.mirror_remove(_SERVICE, profile, _COLLECTION, gone)
    note_unmatched_records(store, profile, records, now)
    return len(gone)


def _owned(data: object, source: str, legacy: bool) -> bool:
    recorded_by = data.get("source") if isinstance(data, dict) else None
    return recorded_by == source or (not recorded_by and legacy)


def note_unmatched_records(
    store: Any, profile: str, records: Iterable[UnmatchedRecord], now: float
) -> int:
    """Record these in one write, leaving out each one already recorded the same way within
    SEEN_REFRESH (link runs report every unmatched item every few minutes); how many were
    written."""
    stored = store.mirror_get(_SERVICE, profile, _COLLECTION)
    changed = {
        record.key: asdict(record)
        for record in records
        if _needs_writing(stored.get(record.key), record, now)
    }
    if changed:
        store.mirror_put(_SERVICE, profile, _COLLECTION, changed, now)
    return len(changed)


def _needs_writing(stored: object, record: UnmatchedRecord, now: float) -> bool:
    if not isinstance(stored, dict):
        return True
    same = all(
        stored.get(name) == getattr(record, name)
        for name in ("reason", "code", "title", "anilist_id")
    )
    seen_at = stored.get("seen_at")
    recent = isinstance(seen_at, int | float) and now - seen_at < SEEN_REFRESH
    adopted = bool(stored.get("source")) or not record.source  # an older release's record
    return not (same and recent and adopted)


def clear_unmatched(store: Any, profile: str, keys: Iterable[str]) -> None:
    """Forget entries that map now (no write when none of them was recorded). An episode the
    media server numbers apart (`SERVER_ORDER`) maps fine: only the server's side, which
    reports them all each run, knows when it is settled."""
    stored = store.mirror_get(_SERVICE, profile, _COLLECTION)
    wanted = set(keys)
    recorded = {
        key
        for key, data in stored.items()
        if key in wanted and not (isinstance(data, dict) and data.get("code") == SERVER_ORDER)
    }
    if recorded:
        store.mirror_remove(_SERVICE, profile, _COLLECTION, sorted(recorded))


_EPISODE_KEY = re.compile(r"^(episode:.+):s(\d+|None)e(\d+|None)(?:a(\d+))?$")
# What the user can do about each kind of unmatched item (README "Anime mapping").
_OVERRIDE = "add an override (services.anilist.mapping_overrides)"
_FIXES = {
    "seasons": "nothing: it waits for the season list, and the next run tries again",
    "absolute": (
        "set services.trakt or services.serializd (a season list to place it on), or add an "
        "override with seasonal ranges (services.anilist.mapping_overrides)"
    ),
    "unknown": f"wait for a dataset refresh (it is tried again after each), or {_OVERRIDE}",
    "new-season": f"wait for a dataset refresh (it is tried again after each), or {_OVERRIDE}",
    "outside": f"wait for a dataset refresh (it is tried again after each), or {_OVERRIDE}",
    "unaired": (
        f"{_OVERRIDE} placing it on the season that has aired; if it did air, nothing: it is "
        "written once AniList lists the title as airing (tried again daily)"
    ),
    **hama.FIXES,
    SERVER_ORDER: (
        "set the show to The Movie Database ordering in Plex (Edit > Advanced > Episode "
        "ordering), or set services.trakt or services.serializd (no link with it is needed): the "
        "link then finds each episode's Plex number by its ids"
    ),
}


@dataclass(frozen=True)
class UnmatchedGroup:
    """The unmatched items of one title for one profile and reason (`code`): an AniList entry
    on its own, or every episode of one show (`records`, in episode order)."""

    profile: str
    key: str  # the entry's key, or the show's part of its episodes' keys
    code: str
    title: str | None
    records: tuple[UnmatchedRecord, ...]

    @property
    def seen_at(self) -> float:
        return max(record.seen_at for record in self.records)

    @property
    def episodes(self) -> str:
        """Which episodes, as runs per season ("S21E1071-1170, S22E1-3"); "" for an entry."""
        by_season: dict[int | None, list[int]] = {}
        for record in self.records:  # in episode order
            if (found := _episode_numbers(record.key)) is not None:
                by_season.setdefault(found[0], []).append(found[1])
        return ", ".join(
            (f"S{season}E{run}" if season is not None else f"absolute {run}")
            for season, numbers in by_season.items()
            for run in _runs(numbers)
        )

    @property
    def fix(self) -> str:
        """What the user can do to have it mapped."""
        fix = _FIXES.get(self.code, _OVERRIDE)
        anilist_id = self.records[0].anilist_id
        if self.code != "seasons" and anilist_id is not None:
            fix += f"; `watchbridge anime explain {anilist_id}` shows every dataset's answer"
        return fix


def _episode_numbers(key: str) -> tuple[int | None, int] | None:
    """(season, number) of an episode's key: (21, 1071); (None, 1071) for an absolute number
    without a season number; None for any other key."""
    found = _EPISODE_KEY.match(key)
    if found is None:
        return None
    _, season, number, absolute = found.groups()
    if number != "None" and season != "None":
        return (int(season), int(number))
    return (None, int(absolute)) if absolute else None


def _episode_order(record: UnmatchedRecord) -> tuple[int, int, int]:
    found = _episode_numbers(record.key)
    if found is None:
        return (0, 0, 0)
    season, number = found
    return (season is None, season or 0, number)


def _runs(numbers: Iterable[int]) -> list[str]:
    """Consecutive numbers as ranges: [1, 2, 3, 7] -> ["1-3", "7"]."""
    runs: list[list[int]] = []
    for number in sorted(set(numbers)):
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return [f"{a}-{b}" if a != b else f"{a}" for a, b in runs]


def group_unmatched(records: Iterable[UnmatchedRecord]) -> list[UnmatchedGroup]:
    """`records` grouped by title: each AniList entry on its own, a show's episodes together
    (per profile and code: a different reason has a different fix), newest group first."""
    groups: dict[tuple[str, str, str], list[UnmatchedRecord]] = {}
    for record in records:
        found = _EPISODE_KEY.match(record.key)
        key = found.group(1) if found else record.key
        groups.setdefault((record.profile, key, record.code), []).append(record)
    made = [
        UnmatchedGroup(
            profile,
            key,
            code,
            next((r.title for r in found if r.title), None),
            tuple(sorted(found, key=_episode_order)),
        )
        for (profile, key, code), found in groups.items()
    ]
    return sorted(made, key=lambda group: -group.seen_at)


def unmatched_records(store: Any, profiles: Iterable[str]) -> list[UnmatchedRecord]:
    """Every recorded unmatched item of these profiles, newest first."""
    records = []
    for profile in profiles:
        for key, data in store.mirror_get(_SERVICE, profile, _COLLECTION).items():
            fields = {k: data.get(k) for k in UnmatchedRecord.__dataclass_fields__}
            fields.update(profile=profile, key=key)
            fields["reason"] = str(fields.get("reason") or "")
            fields["code"] = str(fields.get("code") or "unknown")
            fields["seen_at"] = float(fields.get("seen_at") or 0)
            fields["source"] = str(fields.get("source") or "")
            records.append(UnmatchedRecord(**fields))
    return sorted(records, key=lambda r: -r.seen_at)


def numbered_apart_titles(store: Any, profiles: Iterable[str]) -> list[UnmatchedGroup]:
    """The titles whose episodes a media server numbers its own way, one group per
    profile and show (`SERVER_ORDER`), newest first: `watchbridge status` and `/api/status`."""
    return group_unmatched(r for r in unmatched_records(store, profiles) if r.code == SERVER_ORDER)


def numbered_apart_message(group: UnmatchedGroup) -> str:
    """One title of `numbered_apart_titles` in words, with what to do."""
    count = len(group.records)
    return (
        f"{group.profile}: Plex numbers {group.title or group.key!r} in a TheTVDB ordering, so "
        f"the plays of {count} episode(s) numbered {group.episodes} are not linked between "
        f"AniList and Plex; {group.fix}"
    )
