"""Serializd's side of a link: the diary, read newest-first only until nothing is new.

Serializd has no change feed and its diary pages are not reliably sorted, so the cheap check
reads pages until one holds no entry it has not seen (`diary_until`); a delta read adds those
entries to the baseline. Removals leave no trace in that check: the daily full read finds them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from watchbridge.config import Config, Link
from watchbridge.readers import Clock, SideRead
from watchbridge.reconcile import Rated, Side
from watchbridge.services.serializd import DiaryEntry, SerializdClient
from watchbridge.sides import serializd_side
from watchbridge.store import Store


def known_ids(cursors: Mapping[str, str]) -> set[int]:
    return set(json.loads(cursors.get("diary_ids") or "[]"))


def merge_diary(baseline: Side, fresh: Side) -> Side:
    """The baseline with new diary entries added; a newer rating of an item replaces the old."""
    scores: dict[str, Rated] = dict(baseline.ratings)
    for item, rated in fresh.ratings.items():
        if item not in scores or scores[item].at <= rated.at:
            scores[item] = rated
    seen = {p.record for p in baseline.plays}
    return Side(baseline.plays + tuple(p for p in fresh.plays if p.record not in seen), scores)


class SerializdReader:
    service = "serializd"

    def __init__(self, client: SerializdClient) -> None:
        self.client = client
        self._fresh: dict[str, list[DiaryEntry]] = {}

    @property
    def requests_sent(self) -> int:
        return self.client.http.requests_sent

    async def _new_entries(self, profile: str, cursors: Mapping[str, str]) -> list[DiaryEntry]:
        if profile not in self._fresh:
            self._fresh[profile] = await self.client.diary_until(profile, known_ids(cursors))
        return self._fresh[profile]

    async def unchanged(self, profile: str, cursors: Mapping[str, str]) -> bool:
        return not await self._new_entries(profile, cursors)

    async def read(
        self, profile: str, cursors: Mapping[str, str], baseline: Side | None, full: bool
    ) -> SideRead:
        if full or baseline is None or "diary_ids" not in cursors:
            diary = await self.client.diary(profile)
            ids = {e.id for e in diary}
            side = serializd_side(diary)
        else:
            fresh = await self._new_entries(profile, cursors)
            ids = known_ids(cursors) | {e.id for e in fresh}
            side = merge_diary(baseline, serializd_side(fresh))
        return SideRead(side, {"diary_ids": json.dumps(sorted(ids))})

    async def refine(self, profile: str, own: Side, other: Side) -> Side:
        return own

    async def aclose(self) -> None:
        await self.client.aclose()


def make_reader(
    config: Config, store: Store, link: Link, profiles: list[str], clock: Clock
) -> SerializdReader:
    assert config.services.serializd is not None
    accounts = {p: a for p in profiles if (a := config.profiles[p].accounts.serializd)}
    return SerializdReader(
        SerializdClient(config.services.serializd, store, accounts=accounts, clock=clock)
    )
