"""The household's words for the delivery queue and the syncs, as the status page and
`watchbridge status` both say them: a row the store calls pending is *waiting*, one in flight
is *being sent*, a dead letter is *given up*, an unmatched row is *waiting for a match*, a
link is a *sync*. Said here once; each display adds its own markup (the page turns
`backquoted` commands into code). Pure."""

from __future__ import annotations

from collections.abc import Sequence

WAITING = "waiting"  # pending: queued, not being sent
BEING_SENT = "being sent"  # in flight
DONE = "in the last week (sent, or nothing left to send)"  # after "done"
OLDEST = "oldest queued"
FOR_A_MATCH = "waiting for a match"
UNMATCHED = "title(s) not found on the service yet"
LOOKED_FOR = (
    "looked for again, hourly at first; `watchbridge unmatched` lists them, "
    "`watchbridge deadletters discard ID` gives one up"
)
THEIR_TURN = "waiting their turn"  # behind an earlier delivery of the same item (BEHIND)
ON_HOLD = "on hold"
GIVEN_UP = "given up (dead letters)"
DEAD_LETTERS = "deliveries given up after failing too often or too long"
DEAD_LETTERS_FIX = "`watchbridge deadletters list`, then `retry` or `discard`"
SYNCS = "syncs"  # the config's links
# A sync's run that waits (not a failure) for the anime mapping lists' first download.
FOR_THE_LISTS = "waiting for the anime mapping lists"
READ_UP_TO = "read up to"  # a sync's cursor on one side: how far it has read that service


# What makes AniList take a show no anime mapping dataset knows (no command: the Home
# Assistant app's page says it too).
ANIME_OVERRIDE = (
    "add a mapping override (services.anilist.mapping_overrides; README: Anime mapping)"
)


def anime_not_sent(profile: str, shows: Sequence[tuple[str, str, str]]) -> str:
    """The likely anime (title, its ids in words, why likely anime) a profile's plays of which
    were kept off AniList as no dataset knows them, with what to do: `me: 1 show not sent to
    AniList ...`."""
    one = len(shows) == 1
    it, its = ("it", "its") if one else ("them", "their")
    listed = ", ".join(
        f"{title!r} ({'; '.join(part for part in (ids, why) if part)})" for title, ids, why in shows
    )
    return (
        f"{profile}: {len(shows)} show{'' if one else 's'} not sent to AniList as no mapping "
        f"dataset knows {it}, though likely anime: {listed}; if {'it is' if one else 'they are'}"
        f" anime, {ANIME_OVERRIDE}: {its} plays of the last 30 days go then, as they do once a "
        f"dataset refresh maps {it}"
    )


def service_for(service: str, profile: str) -> str:
    """A service of a profile, as a hold or a sync's reads name it: `trakt for me`."""
    return f"{service} for {profile}"


# What a run's counts (sync.plan_counts, plexlink.list_counts) are, in words: a write per
# target and kind, or apart.
_CHANGES = {
    "add_play": "play(s) to add",
    "remove_play": "play(s) to remove",
    "set_rating": "rating(s) to set",
    "remove_rating": "rating(s) to remove",
    # A link's watchlist and collection parts (plexlink.list_counts): written directly.
    "watchlist_add": "watchlist title(s) to add",
    "watchlist_remove": "watchlist title(s) to remove",
    "collection_add": "collection item(s) to add",
    "collection_update": "collection item(s) to update",
    "collection_remove": "collection item(s) to remove",
}
_COUNTED_APART = {
    "held": "held back",
    "same_viewing": "play(s) taken for one viewing",
    "skipped": "not sendable yet",
}


def change(key: str, count: int) -> str:
    """A run's count in words: `serializd: 3 play(s) to add` for `serializd:add_play`."""
    target, _, kind = key.rpartition(":")
    if target and kind in _CHANGES:
        return f"{target}: {count} {_CHANGES[kind]}"
    return f"{count} {_COUNTED_APART.get(key, key)}"
