"""Webhooks this process refused (401, 400, 408, 413, 503, 500), per source and kind of refusal.

Media servers never send a refused webhook again and never show what watchbridge answered: each
is a play lost unless a Plex link's sync finds it, or the user marks it watched again. The
status page and `/api/status` show each source's refusals of each kind since the start (how
many, when last, the last reason, what to do, whether its webhooks are taken again since), and
the log tells them once per LOG_EVERY with how many it did not tell (a server left with an old
secret sends progress webhooks every few seconds, for months). Bounded by its keys: the webhook
sources times the kinds of REFUSALS. Pure bookkeeping: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from watchbridge.config import service_title
from watchbridge.homeassistant import HomeAssistantApp
from watchbridge.zone import local_time

# A webhook refused because the database would not take it (its disk full, read-only, locked).
STORE_ERROR = "store_error"
# What to tell a human about each kind of refusal.
REFUSALS = {
    "unauthorized": "Copy the URL again from `watchbridge webhook-urls`.",
    "malformed": "Check the webhook's setup (docs/webhooks.md); `watchbridge_webhook_events_total`"
    " in /metrics counts them.",
    "too_large": "Raise server.max_webhook_bytes if this server sends large bodies.",
    "stalled": "Its sender stopped sending it midway, or sent it far too slowly: check the"
    " sender and the network between it and watchbridge (a restart or a dropped connection"
    " does this once in a while).",
    STORE_ERROR: "Check the disk that holds storage.path (full? read-only?); if the database"
    " is locked, another program (a sqlite3 shell, a backup tool) holds it longer than"
    " storage.busy_timeout: close it; /readyz says when the database takes writes again.",
    "internal_error": "This is a bug: the watchbridge log has the details; please report it.",
}
# How the status page names each kind of refusal (REFUSALS' keys are the labels of the metrics
# and /api/status: `503 store_error` told a household nothing).
REFUSED_WORDS = {
    "unauthorized": "wrong secret",
    "malformed": "not understood",
    "too_large": "too large",
    "stalled": "cut off midway",
    STORE_ERROR: "could not be stored",
    "internal_error": "a watchbridge bug",
}
# The Home Assistant app's user has no terminal for `webhook-urls`: the secret is the one they
# typed in the options form (or their own YAML, whose documented file takes that option).
_APP_URL = (
    "in the webhook URL again (http://<ha-host>:8765/webhooks/SOURCE/SECRET, the app's "
    "Documentation tab, Webhooks; left empty, the app made one up: set it)."
)
APP_UNAUTHORIZED = {
    True: f"Put the app's webhook_secret option (its Configuration tab) {_APP_URL}",
    False: "Put your YAML's server.webhook_secret (the app's webhook_secret option where it "
    f"reads ${{WATCHBRIDGE_WEBHOOK_SECRET}}) {_APP_URL}",
}


def refusal_fix(outcome: str, app: HomeAssistantApp | None) -> str:
    """What to do about a refusal of this kind (a key of REFUSALS), in the app's words when
    running as the Home Assistant app."""
    if outcome == "unauthorized" and app is not None:
        return APP_UNAUTHORIZED[app.options_form]
    return REFUSALS[outcome]


LOG_EVERY = 600.0
# A source's refusals are over once one of its webhooks was taken after them and this long has
# passed without another: with two servers of one source, one may still be refused.
OVER_AFTER = 600.0
REASON_CHARS = 200  # reasons are our own one-line messages; a parser's may quote the body
# What refused webhooks cost, while they go on and once their source is taken again: the plays
# they carried stay unrecorded either way, which someone who looks weeks later must still learn.
# Only Plex is read back by links (Tautulli reports a Plex server): for the others, "a link's
# sync finds it" would be false comfort, so each source says what does bring the plays back.
_NAMES = {"jellyfin": "Jellyfin", "emby": "Emby"}
_PLEX_LINK = "a Plex link's sync (plex-serializd, plex-anilist, plex-trakt)"
# How the catch-up brings them back (catchup.py, README "Plays the webhooks missed").
_CAUGHT_UP = (
    "(the accounts your profiles list under users.{source} are read every 15 minutes, and"
    " each play no accepted webhook told of is copied)"
)
_NOT_RECORDED = (
    "the plays in the webhooks refused before were not recorded, and media servers do not send"
    " them again"
)


def lost(source: str, caught_up: bool = False) -> str:
    """What the webhooks of `source` being refused now cost, and what brings their plays back;
    `caught_up`: the catch-up reads that server (catchup.py), copying any play no accepted
    webhook told of."""
    if source in _NAMES:
        name = _NAMES[source]
        if caught_up:
            return (
                f"{name} does not send these again, but their plays are caught up from {name}"
                f" {_CAUGHT_UP.format(source=source)}: do not mark them played again in {name}"
                " (each would count twice)"
            )
        return (
            f"{name} does not send these again and no link reads {name}, so each is a play lost:"
            f" mark what was watched meanwhile watched again in {name} (that sends it)"
        )
    if source == "generic":
        return "each is a play lost unless its sender sends it again"
    return (
        "media servers do not send these again, so each is a play lost unless"
        f" {_PLEX_LINK} finds it"
    )


def sentence(text: str) -> str:
    """`lost` or `lost_earlier` as a sentence of its own, after another."""
    return f"{text[:1].upper()}{text[1:]}."


def lost_earlier(source: str, caught_up: bool = False) -> str:
    """What the webhooks of `source` refused before cost, once its webhooks are taken again;
    `caught_up` as for `lost`."""
    if source in _NAMES:
        name = _NAMES[source]
        if caught_up:
            return (
                "the webhooks refused before were not recorded, but their plays are caught up"
                f" from {name} {_CAUGHT_UP.format(source=source)}: nothing to do (do not mark"
                f" them played again in {name}: each would count twice)"
            )
        return (
            f"{_NOT_RECORDED} and no link reads {name}: mark what was watched until the last"
            f" refusal watched again in {name} (that sends it)"
        )
    if source == "generic":
        return "the plays in the webhooks refused before were not recorded: send them again"
    return (
        f"{_NOT_RECORDED}: only {_PLEX_LINK} may find them (check what was watched until the"
        " last refusal)"
    )


@dataclass
class Refusal:
    source: str
    outcome: str  # a key of REFUSALS
    status: int
    webhooks: int = 0
    last_at: float = 0.0
    reason: str = ""  # the last one: never the secret or the request path (it may hold it)
    logged_at: float | None = None
    logged_webhooks: int = 0  # `webhooks` when the log last told of it
    taken_at: float | None = None  # when a webhook of this source was last accepted after it
    caught_up: bool = False  # the catch-up reads its server (`lost`)

    def fix(self, app: HomeAssistantApp | None) -> str:
        return refusal_fix(self.outcome, app)

    @property
    def said(self) -> str:
        """The kind of refusal in words (REFUSED_WORDS)."""
        return REFUSED_WORDS.get(self.outcome, self.outcome.replace("_", " "))

    def warning(self, now: float) -> str:
        """What its refused webhooks cost (`lost` while it goes on, `lost_earlier` once over)."""
        if self.over(now):
            return lost_earlier(self.source, self.caught_up)
        return lost(self.source, self.caught_up)

    def over(self, now: float) -> bool:
        """Whether its source's webhooks are taken again (see OVER_AFTER)."""
        return (
            self.taken_at is not None
            and self.taken_at > self.last_at
            and now - self.last_at >= OVER_AFTER
        )


@dataclass
class RefusedWebhooks:
    seen: dict[tuple[str, str], Refusal] = field(default_factory=dict)
    caught_up: frozenset[str] = frozenset()  # the sources the catch-up reads (`lost`)

    def saw(self, source: str, outcome: str, status: int, reason: str, now: float) -> int | None:
        """Count one refused webhook; when the log should tell of it, how many of its kind the
        log did not tell since its last line (else None)."""
        refusal = self.seen.get((source, outcome))
        if refusal is None:
            caught_up = source in self.caught_up
            refusal = self.seen[source, outcome] = Refusal(
                source, outcome, status, caught_up=caught_up
            )
        refusal.webhooks += 1
        refusal.last_at, refusal.reason = now, reason[:REASON_CHARS]
        if refusal.logged_at is not None and now - refusal.logged_at < LOG_EVERY:
            return None
        untold = refusal.webhooks - refusal.logged_webhooks - 1
        refusal.logged_at, refusal.logged_webhooks = now, refusal.webhooks
        return untold

    def taken(self, source: str, now: float) -> None:
        """A webhook of `source` was accepted."""
        for refusal in self.seen.values():
            if refusal.source == source:
                refusal.taken_at = now

    def recent(self) -> list[Refusal]:
        """The kinds of refusal seen, the most recently refused first."""
        return sorted(self.seen.values(), key=lambda r: -r.last_at)


@dataclass
class Spell:
    """One source's webhooks refused during one spell of a cause: how many, first and last."""

    webhooks: int
    first_at: float
    last_at: float


def _local(at: float) -> str:
    return local_time(max(at, 0.0))


def _span(spell: Spell) -> str:
    first, last = _local(spell.first_at), _local(spell.last_at)
    # Times are told to the minute: a play's start and stop refused within one are "at" it.
    return f"at {last}" if first == last else f"from {first} to {last}"


def _were(spell: Spell) -> str:
    return "was" if spell.webhooks == 1 else "were"


def _webhooks(count: int, source: str) -> str:
    return f"{count} {service_title(source)} webhook{'' if count == 1 else 's'}"


@dataclass
class RefusedMeanwhile:
    """Webhooks refused for a cause whose own alert tells of them while it lasts (the database
    that cannot be written: the `storage` alert), by source: one alert for one cause, which
    must still say what a `webhook_rejects` alert would have said of them. Pure bookkeeping:
    the caller passes the time, and clears it once that alert is over."""

    spells: dict[str, Spell] = field(default_factory=dict)
    caught_up: frozenset[str] = frozenset()  # the sources the catch-up reads (`lost`)

    def saw(self, source: str, now: float) -> None:
        """A webhook of `source` was refused for the cause."""
        spell = self.spells.get(source)
        if spell is None:
            self.spells[source] = Spell(1, now, now)
        else:
            spell.webhooks, spell.last_at = spell.webhooks + 1, now

    def told(self) -> str:
        """What the cause's alert says of them while it lasts ("" when none was refused)."""
        if not self.spells:
            return ""
        refused = " ".join(
            f"So far {_webhooks(spell.webhooks, source)} {_were(spell)} refused ({_span(spell)}):"
            f" {lost(source, source in self.caught_up)}."
            for source, spell in self.spells.items()
        )
        return f"{refused} The status page and /api/status (refused_webhooks) list them."

    def told_over(self) -> str:
        """What the cause's "Resolved" notice says of them ("" when none was refused)."""
        return " ".join(
            f"{_webhooks(spell.webhooks, source)} {_were(spell)} refused meanwhile"
            f" ({_span(spell)}): {lost_earlier(source, source in self.caught_up)}."
            for source, spell in self.spells.items()
        )

    def clear(self) -> None:
        """The cause's alert is over (or never went out): a new spell counts from nothing."""
        self.spells.clear()
