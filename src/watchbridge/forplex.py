"""Tautulli's reports of people listed for Plex's own webhook, kept until Plex is seen to send.

A profile that lists a person under `users.plex` has their plays sent by Plex's own webhook, so
Tautulli's report of the same viewing is answered `ignored_sent_by_plex` (webhooks.route_for).
But Plex sends no webhook without Plex Pass: a household on Tautulli alone that lists its
people under `users.plex` ("they are Plex users") would lose every play, silently. So the
report of a play (Tautulli's Watched, or its stop at or past the profile's completion_threshold:
a Tautulli without that trigger ticked sends none) is kept in the database before it is answered,
and after GRACE the housekeeping looks for Plex's webhook of the same item for that profile
(from LOOKBACK before the report on: Plex's webhook tells of a playback as it begins). Found:
Plex sent it, the report is dropped. Not found: Plex did not send it, and the report is taken
for that profile as it would have been at once, dated when it came; a play Plex did send is
never doubled, as Plex's webhook of it comes at its start, before Tautulli's report of its end.
Plex's webhook telling only after the report of a playback of the item begun again (at most
half way: watched once more at once, autoplay or a child) is another viewing's: the report
is taken all the same (playback.sent_the_reported).
Where it missed the start (watchbridge down), Plex's scrobble coming after the report was taken
is paired with it as the ingest pairs the two senders' reports (playback.one_of_two_reports,
state `taken`): within LOOKBACK of the report, unless Plex tells of another viewing first.
A viewing's Watched and its stop, both kept, are one play (playback.decide): the one that
completes no viewing is dropped, not counted. Taken, it raises one `unlisted_account` alert
per person and server, and the status lists it,
with the line to write (`users.tautulli`); resolved once the config takes Tautulli's reports
of them, or Plex's webhook is seen sending their plays.

Pure here: the store keeps the reports, maintenance.release_for_plex decides at its rounds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from watchbridge.config import Config, Profile, targets_for
from watchbridge.model import MediaEvent
from watchbridge.unlisted import plex_server_shown, server_name
from watchbridge.unmapped import account_label

ALERT_KIND = "unlisted_account"
GRACE = 30 * 60.0  # Plex's scrobble (90 %) comes minutes after Tautulli's Watched (85 %)
LOOKBACK = 12 * 3600.0  # a viewing begun this long before its end, paused overnight
KEEP = 42 * 86400.0  # a report taken stays this long, for the status
# A report's state: waiting for Plex's webhook, or taken in its stead.
KEPT, TAKEN = "", "taken"
KEY_PREFIX = "sent_by_plex:"  # of the alert's condition keys: KEY_PREFIX + SERVER:ACCOUNT


@dataclass(frozen=True, slots=True)
class ForPlex:
    """Tautulli's report of a play of a person `profile` lists under users.plex, as kept:
    `server` the Plex server's machine id ("" when the template names none and the profile's
    server is not sure: the alert's key, and /api/status's), `item` Plex's rating key, `body`
    Tautulli's JSON as it came (its server's name, `server_name`, is read from there)."""

    id: int
    profile: str
    server: str
    account: str
    account_id: str
    name: str
    item: str
    received_at: float
    body: str
    state: str = KEPT
    # `server_name` as read from `body` the first time it was asked (the alert, the status
    # and /api/status each ask).
    _server_name: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def label(self) -> str:
        return account_label(self.name or None, self.account_id or None)

    @property
    def server_name(self) -> str:
        """The server's name as Tautulli gives it ({server_name}; "" where the template names
        none, as templates before this release did), read from the report kept, once."""
        if self._server_name is None:
            try:
                document = json.loads(self.body)
            except ValueError:
                document = None
            named = server_name("tautulli", document if isinstance(document, dict) else None)
            object.__setattr__(self, "_server_name", named)  # frozen: a cache, not a change
            return named
        return self._server_name

    @property
    def server_shown(self) -> str:
        """The server as the user knows it: by its name, else its machine id."""
        return plex_server_shown(self.server_name or self.server)

    @property
    def key(self) -> str:
        """The alert's condition key: one per person and server."""
        return f"{KEY_PREFIX}{self.server}:{self.account}"

    def line(self, config: Config) -> str:
        """The config line that lists the person for Tautulli's webhook under their profile,
        with the entries it lists there already."""
        listed: tuple[str, ...] = ()
        if self.profile in config.profiles:
            listed = tuple(config.profiles[self.profile].users.tautulli)
        entry = self.account_id or self.name
        entries = ", ".join(json.dumps(one, ensure_ascii=False) for one in (*listed, entry))
        return f"profiles.{self.profile}.users.tautulli: [{entries}]"

    def fix(self, config: Config) -> str:
        return (
            f"write {self.line(config)} and take {self.label} out of"
            f" profiles.{self.profile}.users.plex"
        )


def completes(event: MediaEvent, profile: Profile) -> bool:
    """Whether Tautulli's stop is the completion of its viewing for `profile`: at or past its
    completion_threshold, as playback.decide takes any stop (Tautulli sends no Watched where
    that trigger is not ticked, or its watched percent is above where they stopped)."""
    progress = event.progress
    if event.action != "stop" or progress is None:
        return False
    return progress >= profile.completion_threshold


def title(one: ForPlex) -> str:
    return f"watchbridge: Plex's own webhook does not send {one.name or one.label}'s plays"


def alert_body(one: ForPlex, plays: int, config: Config) -> str:
    """What it means and what to do, as a phone shows the first lines; then what was seen."""
    minutes = GRACE / 60
    return (
        f"Profile {one.profile} lists {one.label} under users.plex, for Plex's own webhook to"
        f" send their plays, but Plex's webhook sent none of those Tautulli reported on"
        f" {one.server_shown} (Plex sends webhooks only with Plex Pass). To have them at once,"
        f" {one.fix(config)}.\n\n"
        f"Nothing is lost meanwhile: {plays} play(s) were taken from Tautulli's reports,"
        f" {minutes:.0f} minutes late, dated when Tautulli reported them.{_not_live(one, config)}"
    )


def _not_live(one: ForPlex, config: Config) -> str:
    """What Trakt misses meanwhile, for a profile whose plays go there: Tautulli's starts and
    pauses are not kept (sent late, they would show a viewing long over as playing)."""
    profile = config.profiles.get(one.profile)
    if profile is None or "trakt" not in targets_for(config, profile):
        return ""
    return (
        " Meanwhile Trakt does not show what they are watching: Tautulli's starts and pauses are"
        f" not sent ({GRACE / 60:.0f} minutes late, they would show a viewing long over as"
        " playing); with the line written they are sent as they happen."
    )


def listed_now(one: ForPlex) -> str:
    """The "Resolved" notice once the config takes Tautulli's reports of the person."""
    return (
        f"Tautulli's reports of {one.label} on {one.server_shown} go to profile {one.profile}"
        " at once now."
    )


def sent_now(one: ForPlex) -> str:
    """The "Resolved" notice once Plex's webhook is seen sending the person's plays."""
    return f"Plex's own webhook sends the plays of {one.label} on {one.server_shown} now."


def lapsed(key: str) -> str | None:
    """The "Resolved" notice of an alert (its condition `key`) none of whose plays taken is
    kept any more (KEEP after the last): nothing is left to resolve it by. None for a key of
    another alert of ALERT_KIND."""
    if not key.startswith(KEY_PREFIX):
        return None
    # The server is left out: its name went with the reports (the title names the person).
    account = key.removeprefix(KEY_PREFIX).partition(":")[2]
    return (
        f"No play of Plex account {account} was taken from Tautulli's reports for"
        f" {KEEP / 86400:.0f} days; should Plex's own webhook not send one again, this is told"
        " again."
    )


def status_line(one: ForPlex, plays: int, config: Config) -> str:
    """The status's words for a person whose plays Plex's webhook does not send."""
    return (
        f"{one.label} on {one.server_shown}: Plex's own webhook sent none of their plays;"
        f" {plays} play(s) taken from Tautulli's reports, {GRACE / 60:.0f} minutes late;"
        f" {one.fix(config)}"
    )


def people(taken: Sequence[ForPlex]) -> list[tuple[ForPlex, int]]:
    """The reports taken, one per person and server: its latest, and how many; the most
    recently taken first. Pure."""
    found: dict[str, tuple[ForPlex, int]] = {}
    for one in sorted(taken, key=lambda one: one.received_at):
        found[one.key] = (one, found.get(one.key, (one, 0))[1] + 1)
    return sorted(found.values(), key=lambda pair: -pair[0].received_at)
