"""The household's words for the delivery queue and the syncs, as the status page and
`watchbridge status` both say them: a row the store calls pending is *waiting*, one in flight
is *being sent*, a dead letter is *given up*, an unmatched row is *waiting for a match*, a
link is a *sync*. Said here once; each display adds its own markup (the page turns
`backquoted` commands into code). Pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

WAITING = "waiting"  # pending: queued, not being sent
BEING_SENT = "being sent"  # in flight
LAST_WEEK = "in the last week"  # what the count of plays and ratings sent covers


def sent(counts: dict[str, int]) -> str:
    """The plays and ratings sent (`StoreStatus.sent`) as a person counts them: `2 plays
    sent`, `1 play and 3 ratings sent`, `nothing sent`. A scrobble's start and pause are no
    play of their own."""
    parts = [
        f"{n} {one if n == 1 else one + 's'}"
        for one in ("play", "rating")
        if (n := counts.get(one, 0))
    ]
    return f"{' and '.join(parts)} sent" if parts else "nothing sent"


OLDEST = "oldest queued"
FOR_A_MATCH = "waiting for a match"
UNMATCHED = "title(s) not found on the service yet"
LOOKED_FOR = (
    "looked for again, hourly at first; `watchbridge unmatched` lists them, "
    "`watchbridge deadletters discard ID` gives one up"
)
THEIR_TURN = "waiting their turn"  # behind an earlier delivery of the same item (BEHIND)
ON_HOLD = "on hold"
# Beside deliveries a service alone holds (down, rate-limiting): no move of the user's.
NOTHING_TO_DO = "nothing to do: they go out by themselves once it takes them again"
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


# What a delivery was to do, in a person's words: (one, several).
_WHAT = {
    "play": ("play", "plays"),
    "rating": ("rating", "ratings"),
    "remove_play": ("removal of a play", "removals of plays"),
    "remove_rating": ("removal of a rating", "removals of ratings"),
    "progress": ("progress", "progress updates"),
    "watching": ("now-watching status", "now-watching statuses"),
}


def dead_what(action: str, many: bool = False) -> str:
    """What a delivery (a dead letter, say) of `action` was to do: `play`, `removal of a
    rating`; `many`: of several (`plays`)."""
    one, several = _WHAT.get(action, (action.replace("_", " "), "changes"))
    return several if many else one


def service_for(service: str, profile: str) -> str:
    """A service of a profile, as a hold or a sync's reads name it: `trakt for me`."""
    return f"{service} for {profile}"


# A sync's last run's outcome in words, where the store's code word is not one a user reads.
_OUTCOMES = {"needs-review": "waiting for your review"}


def outcome(code: str) -> str:
    """A run's outcome as the status says it: `waiting for your review` for `needs-review`;
    the others (`ok`, `failed`, `held`, ...) as they are."""
    return _OUTCOMES.get(code, code)


# Why a side's catalog leaves an item out, in words its user knows.
CANNOT_HOLD: defaultdict[str, str] = defaultdict(
    lambda: "it cannot hold the title",
    plex="not in its libraries",
    anilist="anime it cannot map (see `watchbridge anime unmatched`)",
)
OUT_OF_CATALOG = "out_of_catalog"  # a run's count of plays and ratings a side cannot hold

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
# A run's writes that went to the delivery queue, once it ran: queued, whether or not the
# queue has sent them since (the status's queue lines say that).
_QUEUED = {
    "add_play": "play(s) queued to add",
    "remove_play": "play(s) queued to remove",
    "set_rating": "rating(s) queued to set",
    "remove_rating": "rating(s) queued to remove",
}
_COUNTED_APART = {
    "held": "held back",
    "same_viewing": "play(s) taken for one viewing",
    "skipped": "not sendable yet",
}


def change(key: str, count: int, ran: bool = False) -> str:
    """A run's count in words: `serializd: 3 play(s) to add` for `serializd:add_play`;
    `ran`: of a run that queued its writes (no plan shown, no dry run), `serializd: 3
    play(s) queued to add`."""
    target, _, kind = key.rpartition(":")
    if target and ran and kind in _QUEUED:
        return f"{target}: {count} {_QUEUED[kind]}"
    if target and kind in _CHANGES:
        return f"{target}: {count} {_CHANGES[kind]}"
    if target and kind == OUT_OF_CATALOG:
        return f"{target}: {count} play(s) or rating(s) not written: {CANNOT_HOLD[target]}"
    return f"{count} {_COUNTED_APART.get(key, key)}"


# The catch-up of the plays Jellyfin's and Emby's webhooks missed (catchup.py, catchupstatus.py).
CAUGHT_UP_FIX = (
    "plays its webhooks missed are caught up once it is read again (none is lost within a "
    "week; older ones are listed to check by hand), tried every 15 minutes"
)


def server_named(name: str, server_id: str) -> str:
    """A server the catch-up reads: `Jellyfin server 5b6f...`, `Jellyfin` while its id is
    not known."""
    return f"{name} server {server_id}" if server_id else name


def caught_up(name: str, server_id: str, plays: int, last: str) -> str:
    """The plays the catch-up copied from a server in the last week, the last copied at
    `last`: `Jellyfin server 5b6f...: 2 plays the webhooks missed were caught up ...`."""
    one = plays == 1
    return (
        f"{server_named(name, server_id)}: {plays} play{'' if one else 's'} the webhooks "
        f"missed {'was' if one else 'were'} caught up in the last week (the last at {last})"
    )


def catch_up_unchecked(name: str, server_id: str, plays: int, when: str, items: str) -> str:
    """The plays a read at `when` found but did not copy, dated before the webhook events
    kept (catchup.py `Decision.unchecked`), with what to do."""
    one = plays == 1
    return (
        f"{server_named(name, server_id)}: {plays} play{'' if one else 's'} older than the "
        f"webhook events kept (a week) {'was' if one else 'were'} not copied (at {when}): "
        f"{name} could not be read for longer than that and the webhooks may have told of "
        f"{'it' if one else 'them'} already, so copying could count {'it' if one else 'them'} "
        f"twice; add by hand any a service is missing: {items}"
    )


def catch_up_refused(server: str, name: str, server_id: str, since: str) -> str:
    """The catch-up's reads refused for the API key since `since`, with what to do."""
    return (
        f"{server_named(name, server_id)}: the API key was refused (since {since}): set "
        f"services.{server}.api_key to a key created in {name}'s dashboard (API Keys); plays "
        "its webhooks missed are caught up once it is accepted (none is lost within a week; "
        "older ones are listed to check by hand)"
    )


def catch_up_unreachable(server: str, name: str, server_id: str, since: str, cause: str) -> str:
    """The server not reached by the catch-up since `since` (`cause`: how it failed)."""
    return (
        f"{server_named(name, server_id)}: could not be reached since {since} ({cause}): "
        f"check that it runs and that services.{server}.url is its address; {CAUGHT_UP_FIX}"
    )


def catch_up_failed(server: str, name: str, server_id: str, since: str, cause: str) -> str:
    """The server's answers the catch-up could not use since `since` (`cause`)."""
    return (
        f"{server_named(name, server_id)}: could not be read for the plays its webhooks "
        f"missed since {since} ({cause}): check that services.{server}.url is the server's own "
        f"address; {CAUGHT_UP_FIX}"
    )


def catch_up_starts_over_at(
    profile: str, server: str, account: str, since: str, until: str | None
) -> str:
    """An account's catch-up state no round reads (`profile` no longer lists it since
    `since`), kept until `until` (None: that time is past, and the catch-up's next round
    forgets it), then forgotten: what it means either way."""
    return (
        f"the catch-up of {server} account {account} for profile {profile} starts over at "
        f"{until or 'its next round'}: the profile has not listed it since {since} "
        f"(profiles.{profile}.users.{server}); listed there again before then, the plays it "
        "missed meanwhile are caught up, after that none of them are copied"
    )


def catch_up_starts_over(profile: str, server: str, account: str, since: str) -> str:
    """An account's catch-up state forgotten, unread since `since`: its next read is a first."""
    return (
        f"the catch-up of {server} account {account} for profile {profile} starts over: the "
        f"profile has not listed it since {since} (profiles.{profile}.users.{server}); listed "
        "there again, its first read copies none of the plays it missed meanwhile"
    )


def account_not_on_server(profile: str, server: str, entry: str, accounts: Sequence[str]) -> str:
    """An account a profile lists that the server read has not (misspelt, or removed)."""
    others = ", ".join(accounts) or "none"
    return (
        f"profile {profile} lists {server} account {entry}, which the server does not have: "
        f"its plays are not caught up; the server's accounts are: {others}"
    )
