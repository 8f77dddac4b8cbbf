"""Two-way watchlist planning between two services. Pure.

One pairing decision for every watchlist link: Trakt and a peer (Plex's discover, or
Serializd), or Plex and Serializd (`other` names the second side; Trakt unless said).

A baseline holds the titles that were on both watchlists after the last run. Then:
- on one side only, not in the baseline: it was added there -> add it to the other side;
- on one side only, in the baseline: it was removed from the other side -> remove it here too;
  except a title Trakt dropped for a play sent to it since the last run that is dated before
  the title was listed (`relisted_titles`): Trakt takes a title off its watchlist for any play
  it is given, also a viewing from before the listing (a first run copying old plays, a
  viewing synced late); that is no viewing since, and the title goes back on Trakt's list;
- on both sides: nothing to do. Titles need no library presence: a watchlist is account-wide.

Titles are matched by any shared external id (`aliases`), since one side may lack the TMDB id
the canonical key prefers. Only movies and shows take part (Plex's watchlist holds nothing
else; Serializd's holds only shows, so its callers leave Trakt's and Plex's movies out). A
plan that would remove more than `max_removal_share` of a side is held back, like the
engine's mass-removal guard: a watchlist that suddenly reads as empty is far more likely a
broken read than a human emptying it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from watchbridge.guard import CONFIRM, LIST_MIN_HELD, removals_held
from watchbridge.model import Ids, MediaRef

WatchKind = Literal["movie", "show"]
KEY_IDS = ("tmdb", "imdb", "tvdb")  # canonical key preference (tmdb first, as sides.py)
PEER_NAMES = {"plex": "Plex", "serializd": "Serializd", "trakt": "Trakt"}  # for messages


def aliases(kind: str, ids: Ids) -> frozenset[str]:
    """Every key this title can be known by: one per external id it has."""
    return frozenset(f"{kind}:{name}:{value}" for name in KEY_IDS if (value := getattr(ids, name)))


def watch_key(kind: str, ids: Ids) -> str | None:
    """The canonical key: `movie:tmdb:{id}` / `show:tmdb:{id}`, else by IMDb, else by TVDB."""
    for name in KEY_IDS:
        value = getattr(ids, name)
        if value:
            return f"{kind}:{name}:{value}"
    return None


@dataclass(frozen=True)
class WatchItem:
    """One title on one side's watchlist. `plex_key`: the discover ratingKey (Plex side)."""

    kind: WatchKind
    ids: Ids
    title: str | None = None
    year: int | None = None
    plex_key: str | None = None
    listed_at: float | None = None

    @property
    def key(self) -> str:
        return watch_key(self.kind, self.ids) or f"{self.kind}:title:{self.title}:{self.year}"

    @property
    def aliases(self) -> frozenset[str]:
        return aliases(self.kind, self.ids) or frozenset({self.key})

    def describe(self) -> str:
        return f"{self.title or self.key}" + (f" ({self.year})" if self.year else "")


@dataclass(frozen=True)
class WatchlistPlan:
    """What to write where, and why removals might be held. The peer is `peer` (Plex by
    default; `add_to_plex`/`remove_from_plex` name its lists on a plex-trakt link), the other
    side `other` (Trakt by default; its lists are `add_to_trakt`/`remove_from_trakt`, also
    named `add_to_other`/`remove_from_other` where it is another service)."""

    add_to_peer: tuple[WatchItem, ...] = ()  # the other's items (Plex: resolve on discover)
    add_to_trakt: tuple[WatchItem, ...] = ()  # the peer's items, for the other side
    remove_from_peer: tuple[WatchItem, ...] = ()  # the peer's items (Plex's carry plex_key)
    remove_from_trakt: tuple[WatchItem, ...] = ()  # the other side's items
    on_both: tuple[tuple[WatchItem, WatchItem], ...] = ()  # (peer, other) already in step
    forgotten: tuple[str, ...] = ()  # baseline keys gone from both sides
    held: str = ""  # why removals (and adds, see `unchecked`) wait; empty when none do
    counts: dict[str, int] = field(default_factory=dict)
    peer: str = "plex"
    other: str = "trakt"

    @property
    def add_to_other(self) -> tuple[WatchItem, ...]:
        return self.add_to_trakt

    @property
    def remove_from_other(self) -> tuple[WatchItem, ...]:
        return self.remove_from_trakt

    @property
    def add_to_plex(self) -> tuple[WatchItem, ...]:
        return self.add_to_peer

    @property
    def remove_from_plex(self) -> tuple[WatchItem, ...]:
        return self.remove_from_peer

    @property
    def changes(self) -> int:
        return len(self.add_to_peer) + len(self.add_to_trakt) + self.removals

    @property
    def removals(self) -> int:
        return len(self.remove_from_peer) + len(self.remove_from_trakt)


def _index(items: Iterable[WatchItem]) -> dict[str, WatchItem]:
    index: dict[str, WatchItem] = {}
    for item in items:
        for alias in item.aliases:
            index.setdefault(alias, item)
    return index


def plan_watchlist(
    plex: Sequence[WatchItem],
    trakt: Sequence[WatchItem],
    baseline: Mapping[str, Iterable[str]],
    *,
    max_removal_share: float = 0.10,
    confirm_removals: bool = False,
    only_to: str | None = None,
    peer: str = "plex",
    other: str = "trakt",
    holding: bool = False,
    hold: str = "",
    unchecked: Collection[str] = (),
    relisted: Collection[str] = (),
    taken_off_trakt: Collection[str] = (),
) -> WatchlistPlan:
    """The plan for one person. `plex`: the peer's items (Plex's, or those of the service
    named by `peer`); `trakt`: the other side's (Trakt's, or those of the service named by
    `other`: Plex's beside Serializd). `baseline`: key -> aliases of the titles on both sides
    last run.

    `only_to` (`other` or the peer's name) makes the link one-way: the other side is the
    source and is never written; a title the target lost is put back, one the source lost is
    removed from the target, and titles only the target has (never synced) are left alone.
    `holding`: the last run held removals: they wait until confirmed, however small a share
    of the list they become as it grows. `hold`: a reason every removal waits, however few
    (a side whose account is not checked yet read empty: `accounts.read_empty_hold`); the
    titles only on the sides it names (`unchecked`: `other` or the peer's name) wait with
    them, for the same reason: that account may be another person's, and its watchlist is no
    more the user's additions than its empty history is the user's removals.
    `relisted`: keys of the peer's titles gone from Trakt that go back on it rather than leave
    the peer (`relisted_titles`).
    `taken_off_trakt`: aliases of titles a link of ours took off Trakt's watchlist (another
    link: Plex ⇄ Trakt beside Trakt ⇄ Serializd). Their removal from the peer is not weighed
    by the guard again: it passed that link's guard, or the user confirmed it there, and
    Trakt lacks them because we removed them, not because its read is broken. (`hold` still
    holds them: that account's reads are in doubt.)
    """
    if only_to not in (None, other, peer):
        raise ValueError(f"only_to must be {other!r} or {peer!r}, got {only_to!r}")
    known = {alias for keys in baseline.values() for alias in keys} | set(baseline)
    trakt_index = _index(trakt)
    matched_trakt: set[int] = set()
    add_to_trakt: list[WatchItem] = []
    remove_from_plex: list[WatchItem] = []
    on_both: list[tuple[WatchItem, WatchItem]] = []
    for item in plex:
        match = next((trakt_index[a] for a in sorted(item.aliases) if a in trakt_index), None)
        if match is not None:
            matched_trakt.add(id(match))
            on_both.append((item, match))
        elif item.key in relisted:
            add_to_trakt.append(item)
        elif item.aliases & known:
            remove_from_plex.append(item)
        else:
            add_to_trakt.append(item)
    add_to_plex: list[WatchItem] = []
    remove_from_trakt: list[WatchItem] = []
    for item in trakt:
        if id(item) in matched_trakt:
            continue
        (remove_from_trakt if item.aliases & known else add_to_plex).append(item)
    if only_to == other:  # the peer is the source: what the other side lost comes back
        add_to_trakt += remove_from_plex
        remove_from_plex, add_to_plex = [], []
    elif only_to == peer:
        add_to_plex += remove_from_trakt
        remove_from_trakt, add_to_trakt = [], []
    present = {a for item in (*plex, *trakt) for a in item.aliases}
    forgotten = tuple(key for key, keys in baseline.items() if not ({key, *keys} & present))
    held = ""
    ours = frozenset(() if hold else taken_off_trakt)
    weighed = [item for item in remove_from_plex if not item.aliases & ours]
    if not confirm_removals:
        for side, removals, size in (
            (PEER_NAMES.get(peer, peer), len(weighed), len(plex)),
            (PEER_NAMES.get(other, other), len(remove_from_trakt), len(trakt)),
        ):
            what, minimum = f"watchlist titles on {side}", 1 if hold else LIST_MIN_HELD
            held = removals_held(removals, size, what, max_removal_share, minimum, holding, hold)
            if held:
                break
    waiting = []  # (how many, from, to) of the adds an unchecked account's titles make
    if hold and not confirm_removals:
        peer_name, other_name = PEER_NAMES.get(peer, peer), PEER_NAMES.get(other, other)
        if peer in unchecked and add_to_trakt:
            waiting.append((len(add_to_trakt), peer_name, other_name))
            add_to_trakt = []
        if other in unchecked and add_to_plex:
            waiting.append((len(add_to_plex), other_name, peer_name))
            add_to_plex = []
    if waiting:
        held = _with_adds_held(held, waiting, hold)
    return WatchlistPlan(
        add_to_peer=tuple(add_to_plex),
        add_to_trakt=tuple(add_to_trakt),
        remove_from_peer=() if held else tuple(remove_from_plex),
        remove_from_trakt=() if held else tuple(remove_from_trakt),
        on_both=tuple(on_both),
        forgotten=forgotten,
        held=held,
        counts={peer: len(plex), other: len(trakt), "baseline": len(baseline)},
        peer=peer,
        other=other,
    )


def _with_adds_held(held: str, waiting: Sequence[tuple[int, str, str]], hold: str) -> str:
    """`held` (the removals held for `hold`, or "") saying the adds that wait with them."""
    adds = " and ".join(
        f"{count} watchlist title{'s' if count > 1 else ''} only on {source} would be added "
        f"to {target}"
        for count, source, target in waiting
    )
    why = f" ({hold}); {CONFIRM}"
    removals = held.removesuffix(why)  # with `hold` given, every held removal says it
    return f"{removals}, and {adds}{why}" if removals else f"{adds}{why}"


@dataclass(frozen=True)
class Written:
    """What one kind of write to a side's watchlist did: how many titles it took, the baseline
    rows it leaves (of the titles added; of a removal, the rows kept where it failed), and a
    line for each title the side would not take."""

    count: int = 0
    baseline: dict[str, Any] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)


def baseline_entry(*items: WatchItem) -> tuple[str, list[str]]:
    """A baseline row for a title now on both sides: its key and every alias either side knows."""
    keys = sorted({a for item in items for a in item.aliases})
    return items[0].key, keys


def baseline_row(*items: WatchItem) -> tuple[str, dict[str, Any]]:
    """`baseline_entry` as stored: with `listed`, the earliest either side listed it (if known),
    which tells a play from before the listing (`relisted_titles`)."""
    key, keys = baseline_entry(*items)
    listed = [item.listed_at for item in items if item.listed_at is not None]
    return key, {"aliases": keys, **({"listed": min(listed)} if listed else {})}


def relisted_titles(
    peer: Sequence[WatchItem],
    trakt: Sequence[WatchItem],
    baseline: Mapping[str, Mapping[str, Any]],
    plays: Iterable[tuple[MediaRef, float]],
) -> frozenset[str]:
    """Keys of the peer's titles that were on both sides after the last run (`baseline`: the
    stored rows), are gone from Trakt now, and whose newest play sent to Trakt since that run
    (`plays`: item and when it was watched) is dated before the title was listed: Trakt took
    it off its watchlist for that play (§12), which is a viewing from before the listing, not
    one since. A title listed at no known time is not among them."""
    viewed: dict[str, float] = {}  # alias -> the newest play of it
    for ref, at in plays:
        kind, ids = ("movie", ref.ids) if ref.kind == "movie" else ("show", ref.show_ids)
        for alias in aliases(kind, ids):
            viewed[alias] = max(at, viewed.get(alias, at))
    if not viewed:
        return frozenset()
    on_trakt = {alias for item in trakt for alias in item.aliases}
    rows = [({key, *row.get("aliases", ())}, row.get("listed")) for key, row in baseline.items()]
    found = set()
    for item in peer:
        if item.aliases & on_trakt:
            continue
        row = next((row for row in rows if item.aliases & row[0]), None)
        if row is None:
            continue
        known, row_listed = row
        dates = [at for at in (row_listed, item.listed_at) if isinstance(at, int | float)]
        newest = max((viewed[a] for a in known | item.aliases if a in viewed), default=None)
        if dates and newest is not None and newest < min(dates):
            found.add(item.key)
    return frozenset(found)


def kept_rows(baseline: Mapping[str, Sequence[str]], item: WatchItem) -> dict[str, Any]:
    """The baseline rows of a title whose removal failed: kept, so the next run removes it
    again rather than read it as added on the side it is still on (and copy it back)."""
    kept = set(baseline_entry(item)[1])
    return {
        key: {"aliases": aliases} for key, aliases in baseline.items() if kept.intersection(aliases)
    }
