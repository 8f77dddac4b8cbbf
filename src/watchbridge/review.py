"""A link's plan as the user reviews it before its first sync: the lines `watchbridge sync
--dry-run` prints, which the status page's review shows too (one wording, said here), and the
token of a plan shown, which the page's button applies only while the sides still make that
plan (`sync.run_link`'s `shown`). Pure."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from watchbridge.guard import as_confirmed, for_link
from watchbridge.plexlink import ListsRun, list_counts, lists_summary
from watchbridge.queuewords import CANNOT_HOLD
from watchbridge.reconcile import FIRST_RUN_WINDOW, Plan, SameViewing
from watchbridge.zone import local_time

if TYPE_CHECKING:
    from watchbridge.sync import ProfilePlan

# A plan's writes of each kind, as its header says them: the verb, what to or from the
# target, and why (the link's other side): `add 3 play(s) to trakt (new on plex)`.
_WRITES = {
    "add_play": ("add", "play(s) to", "new on"),
    "remove_play": ("remove", "play(s) from", "removed on"),
    "set_rating": ("set", "rating(s) on", "from"),
    "remove_rating": ("remove", "rating(s) from", "removed on"),
}


def writes_said(plan: Plan, sides: Collection[str]) -> str:
    """`plan`'s writes counted per target and kind, as a sentence read once: `add 121
    play(s) to plex (new on trakt), add 3 play(s) to trakt (new on plex)`; `sides`: the
    link's two, which name where each write comes from. "" when there is none."""
    counted = Counter((a.target, a.kind) for a in plan.actions)
    said = []
    for (target, kind), count in sorted(counted.items()):
        verb, what, why = _WRITES[kind]
        source = next((s for s in sides if s != target), "")
        said.append(f"{verb} {count} {what} {target}" + (f" ({why} {source})" if source else ""))
    return ", ".join(said)


def held_twice_line(side: str, count: int) -> str:
    """The plays of `side` left as an old tool's second record of a viewing the other side
    holds once (`Plan.held_twice`): why the sides' sizes differ though nothing is to do."""
    return (
        f"  {count} play(s) held twice on {side} (an old tool's duplicates, within two "
        "minutes): left as they are; remove them there if you like"
    )


def plan_lines(
    plans: Sequence[ProfilePlan], link: str, limit: int, confirmed: bool = False
) -> list[str]:
    """Each profile's plan: its sides' sizes and counts, what is left out or left as it is
    (an old tool's duplicates), then each write with its reason (the first `limit`), and the
    plays a first run takes for one viewing."""
    lines = []
    for result in plans:
        held = for_link(result.plan.held, link) if result.plan.held else ""
        if result.unchanged:
            lines.append(
                f"profile {result.profile}: nothing changed on either side since the last sync"
            )
            if held:  # what the last run held still waits
                lines.append(f"  held: {held}")
            continue
        sizes = ", ".join(f"{side} {count} plays" for side, count in result.sizes.items())
        writes = writes_said(result.plan, result.sizes)
        lines.append(f"profile {result.profile}: {sizes}; plan: {writes or 'nothing to do'}")
        if result.restarted:
            lines.append(f"  {result.restarted}")
        for side, count in sorted(result.plan.out_of_catalog.items()):
            lines.append(
                f"  {count} play(s) or rating(s) not written to {side}: {CANNOT_HOLD[side]}"
            )
        for side, count in sorted(result.plan.shows_rated_apart.items()):
            lines.append(
                f"  {count} show rating(s) not written to {side}: it rates each season's entry,"
                " not a whole show (see `watchbridge status`)"
            )
        for side, count in sorted(result.plan.held_twice.items()):
            lines.append(held_twice_line(side, count))
        if held:
            lines.append(f"  confirmed: {as_confirmed(held)}" if confirmed else f"  held: {held}")
        for action in result.plan.actions[:limit]:
            when = f" {local_time(action.at, seconds=True)}" if action.at else ""
            value = f" = {action.value}/100" if action.value is not None else ""
            lines.append(
                f"  {action.kind} {action.target} {action.item}{when}{value}  ({action.reason})"
            )
        if len(result.plan.actions) > limit:
            lines.append(f"  ... and {len(result.plan.actions) - limit} more")
        lines += same_viewing_lines(result.plan.same_viewing, limit)
    return lines


def same_viewing_lines(pairs: Sequence[SameViewing], limit: int) -> list[str]:
    """A first run's plays days apart taken for one viewing: nothing is written for them, so
    someone who did watch twice must see them to add the play by hand."""
    lines = [f"  taken as the same viewing: {pair.describe()}" for pair in pairs[:limit]]
    if len(pairs) > limit:
        lines.append(f"  ... and {len(pairs) - limit} more taken as the same viewing")
    if pairs:
        days = round(FIRST_RUN_WINDOW / 86400)
        lines.append(
            f"  (a first sync takes an item's plays up to {days} days apart, one on each side, "
            "for one viewing and writes nothing for them; watched twice? add the play by hand)"
        )
    return lines


# What a dry run of a first sync that waits for its review ends with, before the command.
FIRST_SYNC_WAITS = "the first sync waits for this review"


def review_command(name: str, direction: str | None = None) -> str:
    """The command that applies link `name`'s first sync, as a review's message names it;
    `direction`: one way only, as the run reviewed was (`sync --direction`)."""
    way = f" --direction {direction}" if direction not in (None, "two-way") else ""
    return f"`watchbridge sync --link {name}{way} --yes`"


def apply_line(name: str, direction: str | None = None) -> str:
    """The last line of a dry run of a first sync that waits for its review: the next step."""
    return f"{FIRST_SYNC_WAITS}: to write it, run {review_command(name, direction)}"


def reviewed(plans: Sequence[ProfilePlan]) -> frozenset[str]:
    """The profiles a first-sync review covers: a first run, the first sync of kinds new to
    the link, or of a watchlist or collection new to it (the others sync as usual whatever
    the review says)."""
    return frozenset(p.profile for p in plans if p.first_run or p.new_kinds or p.new_lists)


def _plays_reviewed(plan: ProfilePlan) -> bool:
    """Whether a review covers the plays and ratings of `plan`'s profile (not only the first
    sync of its watchlist or collection: its plays sync as usual meanwhile)."""
    return plan.first_run or bool(plan.new_kinds)


def plan_token(plans: Sequence[ProfilePlan], lists: ListsRun) -> str:
    """A short fingerprint of what the review shows of the profiles it covers (`reviewed`):
    every write of their plans whose plays it covers, the plays taken for one viewing, what
    is held, and their watchlist and collection parts (counts and lines). Equal for the same
    sides read twice."""
    covered = reviewed(plans)
    mine = replace(lists, results=tuple(r for r in lists.results if r.profile in covered))
    shown = {
        "plans": [
            [
                p.profile,
                p.plan.held,
                [
                    [a.kind, a.target, a.item, a.at, a.value, a.record, a.source]
                    for a in p.plan.actions
                ],
                [pair.describe() for pair in p.plan.same_viewing],
            ]
            for p in sorted(plans, key=lambda p: p.profile)
            if _plays_reviewed(p)
        ],
        "covered": sorted(covered),
        "lists": [sorted(list_counts(mine).items()), lists_summary(mine)],
    }
    encoded = json.dumps(shown, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]
