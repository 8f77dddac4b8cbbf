"""Plex servers whose plays reach a profile through both Plex's and Tautulli's webhooks.

Each of the two reports a viewing at its own completion point (Plex at 90 %, Tautulli at its
"watched" percent), minutes apart: further apart than Trakt's and Serializd's duplicate windows.
The ingest counts such a viewing once (playback.one_of_two_reports), but only when both senders
name the server (Tautulli's template may leave it out where the profile's one Plex server is
sure: ProfileServers) and the player (by id, or by name when Tautulli's template names no id), and
Trakt is told the live state by both until the first report (playback.after_the_others_report):
one sender per server is still the setup to have. Both reporting the same Plex item (its rating
key) on the same player for one profile within TOGETHER_WITHIN is that mistake; two people on
one profile, one through each sender, watch other items or on other players, and a switch from
one sender to the other leaves a longer gap.
Bounded whatever the webhooks name (KEPT items, REPORTS_KEPT reports of each, DOUBLINGS_KEPT
doublings, TOLD_AT_MOST log lines per LOG_AGAIN_AFTER): a sender naming a new server or player
in every webhook fills neither memory nor the log.
Pure bookkeeping: the caller passes the time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

PAIR = ("plex", "tautulli")  # two senders of one Plex server's plays
TOGETHER_WITHIN = 15 * 60.0
SHOWN_FOR = 24 * 3600.0  # a doubling not seen again for this long is over
LOG_AGAIN_AFTER = 6 * 3600.0
KEPT = 50  # (profile, item) pairs remembered; the least recently reported goes first
REPORTS_KEPT = 8  # (sender, server, player) reports of one item remembered, the latest
DOUBLINGS_KEPT = 20  # doublings remembered; the least recently seen goes first
TOLD_AT_MOST = 20  # doublings the log tells of within LOG_AGAIN_AFTER

FIX = (
    "keep one of them for this server: remove Tautulli's webhook, or Plex's "
    "(docs/webhooks.md, one sender per server)"
)
NAME_THEM = (
    "; or, to keep both, paste the Tautulli template of docs/webhooks.md, which names them "
    "(server_machine_id, machine_id). The plays counted twice meanwhile can be removed on "
    "Trakt and Serializd"
)
# What Tautulli's JSON Data must name for its reports to pair with Plex's: the server, and the
# player by id (by name it pairs only when the names are the same).
SERVER_FIELD = '"server_machine_id": "{server_machine_id}"'
PLAYER_FIELD = '"machine_id": "{machine_id}"'


@dataclass(frozen=True)
class Viewing:
    """What a webhook of PAIR says is played: where, on what, which item."""

    profile: str
    server: str  # Plex's machine id ("" when the sender names none: it matches any)
    player: str  # the player's machine id, the same in both senders ("": any)
    item: str  # the Plex item's rating key, the same in both senders
    player_name: str = ""  # pairs the reports when one names no player id


@dataclass
class Doubling:
    """A profile getting one Plex server's plays from both Plex's and Tautulli's webhooks.
    `counted_twice`: as its latest pair of reports showed, one sender names no server, or no
    player the other names alike (by id; by name when Tautulli's names no id), so the ingest
    cannot match their reports (playback.report_keys) and each viewing counts twice: an
    alert. Otherwise each counts once, and it is a note (log, status)."""

    profile: str
    server: str
    first_at: float
    last_at: float
    logged_at: float | None = None
    counted_twice: bool = True
    # Counted twice: what Tautulli's JSON Data lacks for its reports to pair with Plex's (its
    # lines to add), "" when it names both (then Plex's webhook names neither).
    lacks: str = ""

    @property
    def message(self) -> str:
        server = f"Plex server {self.server}" if self.server else "a Plex server"
        both = f"profile {self.profile} gets the plays of {server} from both Plex's and Tautulli's"
        if self.counted_twice and self.lacks:
            return (
                f"{both} webhooks, and Tautulli's JSON Data lacks {self.lacks}, so their "
                "reports of a viewing cannot be paired: each viewing counts twice (Trakt and "
                "Serializd get two plays of it, minutes apart)"
            )
        if self.counted_twice:
            return (
                f"{both} webhooks, and one of them names no server or player: each viewing "
                "counts twice (Trakt and Serializd get two plays of it, minutes apart)"
            )
        return (
            f"{both} webhooks: each viewing is reported twice, minutes apart, and counted once "
            "(both name the server and the player)"
        )

    @property
    def fix(self) -> str:
        if not self.counted_twice:
            return FIX
        if self.lacks:
            return (
                f"{FIX}; or, to keep both, add {self.lacks} to Tautulli's JSON Data box of each "
                "trigger (the template of docs/webhooks.md has it). The plays counted twice "
                "meanwhile can be removed on Trakt and Serializd"
            )
        return FIX + NAME_THEM


@dataclass
class Senders:
    # (profile, item) -> {(source, server, player): (when last reported, the player's name)};
    # the most recently reported item last. Players a sender names by name alone share "".
    last_seen: dict[tuple[str, str], dict[tuple[str, str, str], tuple[float, str]]] = field(
        default_factory=dict
    )
    # (profile, server) -> its doubling; the most recently seen last
    doublings: dict[tuple[str, str], Doubling] = field(default_factory=dict)
    told_at: deque[float] = field(default_factory=deque)  # log lines within LOG_AGAIN_AFTER

    def saw(self, source: str, viewing: Viewing, now: float) -> Doubling | None:
        """Note a webhook of `source` about `viewing`; the doubling when the other sender
        reported the same viewing lately (to tell of; the notifier throttles the alerts)."""
        if source not in PAIR or not viewing.item:
            return None
        item = (viewing.profile, viewing.item)
        reports = self.last_seen.pop(item, {})
        self.last_seen[item] = reports
        while len(self.last_seen) > KEPT:
            del self.last_seen[next(iter(self.last_seen))]
        where = (source, viewing.server, viewing.player)
        reports.pop(where, None)
        reports[where] = (now, viewing.player_name)  # last in the dict: the latest report
        for old in [w for w, (at, _) in reports.items() if now - at > TOGETHER_WITHIN]:
            del reports[old]  # too old to pair with any report
        while len(reports) > REPORTS_KEPT:
            del reports[next(iter(reports))]
        other = PAIR[1] if source == PAIR[0] else PAIR[0]
        partners = [
            Viewing(viewing.profile, server, player, viewing.item, name)
            for (seen_source, server, player), (at, name) in reports.items()
            if seen_source == other
            and now - at <= TOGETHER_WITHIN
            and _same(server, viewing.server)
            and _same(player, viewing.player)
        ]
        if not partners:
            return None
        server = viewing.server or partners[0].server  # the one that names it
        # Named alike by both, their reports of one viewing are matched and it counts once.
        counted_twice = not any(_paired(viewing, partner) for partner in partners)
        tautulli = viewing if source == PAIR[1] else partners[0]
        lacks = _lacks(tautulli) if counted_twice else ""
        key = (viewing.profile, server)
        doubling = self.doublings.pop(key, None) or Doubling(viewing.profile, server, now, now)
        self.doublings[key] = doubling  # last in the dict: the most recently seen
        doubling.last_at = now
        if doubling.counted_twice != counted_twice:
            doubling.counted_twice, doubling.logged_at = counted_twice, None  # told anew
        doubling.lacks = lacks
        while len(self.doublings) > DOUBLINGS_KEPT:
            del self.doublings[next(iter(self.doublings))]
        while (oldest := next(iter(self.doublings.values()))).last_at <= now - SHOWN_FOR:
            del self.doublings[(oldest.profile, oldest.server)]  # over: never shown again
        return doubling

    def log_due(self, doubling: Doubling, now: float) -> bool:
        """Whether the log should tell of `doubling` now (once per LOG_AGAIN_AFTER, and of
        at most TOLD_AT_MOST doublings in that while)."""
        if doubling.logged_at is not None and now - doubling.logged_at < LOG_AGAIN_AFTER:
            return False
        while self.told_at and now - self.told_at[0] >= LOG_AGAIN_AFTER:
            self.told_at.popleft()
        if len(self.told_at) >= TOLD_AT_MOST:
            return False
        self.told_at.append(now)
        doubling.logged_at = now
        return True

    def recent(self, now: float) -> list[Doubling]:
        """The doublings seen in the last SHOWN_FOR, the most recently seen first."""
        shown = [d for d in self.doublings.values() if now - d.last_at < SHOWN_FOR]
        return sorted(shown, key=lambda d: -d.last_at)


@dataclass
class ProfileServers:
    """The Plex server each profile's plays come from, where that is sure: a Tautulli
    template without {server_machine_id} reports that server's plays (a Tautulli watches one
    server), so its reports pair with Plex's webhook's of it (playback.report_of). Known from
    services.plex's machine id as the profile's Plex link recorded it (`knew`, at start), and
    from the servers the profile's Plex webhooks named since; a profile with two (a friend's
    server too) has none for sure. At most two kept per profile: a third says nothing more."""

    named: dict[str, set[str]] = field(default_factory=dict)

    def knew(self, profile: str, server: str) -> None:
        """Note `server` ("": none named, nothing noted) as a Plex server of `profile`'s."""
        if not server:
            return
        servers = self.named.get(profile)
        if servers is None:
            self.named[profile] = {server}
        elif len(servers) < 2:
            servers.add(server)

    def only(self, profile: str) -> str:
        """`profile`'s one Plex server, "" when none is known or it has two."""
        servers = self.named.get(profile)
        return next(iter(servers)) if servers is not None and len(servers) == 1 else ""


def _same(one: str, other: str) -> bool:
    """An unnamed server or player (a sender that leaves it out) matches any."""
    return one == other or not one or not other


def _paired(one: Viewing, other: Viewing) -> bool:
    """Whether the ingest pairs the two senders' reports (playback.report_keys): both name the
    server, and the player by the same id, or by the same name where one names no id."""
    if not one.server or one.server != other.server:
        return False
    if one.player and other.player:
        return one.player == other.player
    return bool(one.player_name) and one.player_name == other.player_name


def _lacks(tautulli: Viewing) -> str:
    """The lines Tautulli's JSON Data lacks to pair its reports with Plex's: the server's, and
    the player's id (by name alone, its name was not the one Plex's webhook gives)."""
    lacking = [SERVER_FIELD] * (not tautulli.server) + [PLAYER_FIELD] * (not tautulli.player)
    return " and ".join(lacking)
