"""Root causes that have an alert of their own: a sign-in a service refuses, a service down.

A link whose run fails on one of them (a revoked Trakt sign-in fails every link reading
Trakt for that profile) is told of by that alert while it is open: its `sync_failing` alert
would say the same thing again, once per link. A person's sign-in refused is raised by
whoever meets it first, a held delivery or a link's read, as the one alert (`paused_alert`).
Pure: which alert conditions tell of a failure, the alert it raises, and whether every failed
part of a run is told so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchbridge.anime_data import (
    MISSING_KEY,
    ListsMissing,
    ListsNotYet,
    ListsState,
    ListsUnreadable,
)
from watchbridge.config import MEDIA_SERVERS, Config, service_title
from watchbridge.downtime import catches_up
from watchbridge.errors import WatchbridgeError
from watchbridge.http import ServiceError, Unavailable, shown_url
from watchbridge.services.anilist import AniListAuthError
from watchbridge.services.jellyfin import MediaServerAuthError
from watchbridge.services.plex import PlexAuthError, ServerTokenRefused
from watchbridge.services.plextv import PlexTvAuthError
from watchbridge.services.serializd import SerializdAuthError
from watchbridge.services.trakt import TraktAuthError

# A person's sign-in refused: the deliveries' and the sign-in upkeep's `credentials` alert.
PERSON_SIGN_IN = (
    TraktAuthError,
    SerializdAuthError,
    AniListAuthError,
    PlexTvAuthError,
    PlexAuthError,
)
# The server's own key refused, whoever's library was read: the lookups' alert (ids.py).
SERVER_KEY = (ServerTokenRefused, MediaServerAuthError)

# plex.tv's sign-in is read by the watchlist parts only, and no delivery goes there: no
# "deliveries paused" alert to raise, the link tells of it.
NO_DELIVERIES = ("plextv",)

Condition = tuple[str, str]  # an alert's (kind, key)


@dataclass(frozen=True)
class Alert:
    """An alert as it is raised: its condition (`kind`, `key`), title and text."""

    kind: str
    key: str
    title: str
    body: str


MISSING_TITLE = "watchbridge: anime mapping lists not downloaded yet"
MISSING_LEAD = (
    "No anime mapping list is downloaded yet: they tell which AniList title a play is, so"
    " plays for AniList wait for them (none is lost: they go within minutes of the first"
    " download). Check that this machine reaches their hosts (services.anilist.mapping_urls),"
    " then run `watchbridge anime refresh` to download them now; watchbridge also tries again"
    " by itself."
)


def lists_missing(problems: Sequence[str]) -> Alert:
    """The alert that no anime mapping list is downloaded yet, their downloads failing
    (`problems`, one line per dataset): raised by the deliveries, a link run that waits for
    them, and the hourly check alike (one condition)."""
    body = MISSING_LEAD + "\n\n" + "\n".join(problems)
    return Alert("service_unreachable", MISSING_KEY, MISSING_TITLE, body)


UNREADABLE_TITLE = "watchbridge: anime mapping lists could not be read"
UNREADABLE_LEAD = (
    "The anime mapping lists on disk could not be read (a damaged copy, or a format this"
    " release does not read): they tell which AniList title a play is, so plays for AniList"
    " wait (none is lost: they go once the lists can be read). Run `watchbridge anime refresh`"
    " to download them again, or delete the files in {directory} so watchbridge downloads"
    " them again by itself; if the new copies cannot be read either, update watchbridge."
)


def lists_unreadable(directory: Path, problems: Sequence[str]) -> Alert:
    """The alert that the anime mapping lists on disk (in `directory`) are there but none
    could be read (`problems`, one line per dataset): the lists' condition, as while none is
    downloaded (one cause of AniList deliveries waiting, one alert), raised by the deliveries
    it holds, a link run that fails on them, and the hourly check alike."""
    body = UNREADABLE_LEAD.format(directory=directory) + "\n\n" + "\n".join(problems)
    return Alert("service_unreachable", MISSING_KEY, UNREADABLE_TITLE, body)


# The "Resolved" text of the lists' alert, whoever finds them read again.
LISTS_READ = "The anime mapping lists are downloaded and read: AniList deliveries go on."


def lists_alert(state: ListsState) -> Alert | None:
    """The anime mapping lists' alert while its condition lasts (`state`: as on disk): none
    downloaded yet, their downloads failing; or copies none of which can be read. None once
    it is over (their being out of date is an alert of its own, the hourly check's)."""
    if state.none_downloaded and state.out_of_date:
        return lists_missing(state.out_of_date)
    if state.unreadable:
        return lists_unreadable(state.directory, state.unreadable)
    return None


# What pauses one profile's deliveries, by the alert's kind: the few words a phone shows.
PAUSE_CAUSES = {"credentials": "sign-in needed", "account_limit": "account limit reached"}


def paused_title(
    kind: str, target: str, profile: str | None = None, *, limited: bool = False, cause: str = ""
) -> str:
    """The title of the alert of `kind` that says a target's deliveries (one profile's) are
    paused, naming the cause: a rate limit (`limited`) is the service limiting requests, not
    it being unreachable; a sign-in host down or answers it cannot read (`service_unreachable`
    for a profile) differ too much for a title, their text says which. `cause`: the words
    for one the kind's own would misname (an `account_limit` hold that is the app refused)."""
    name = service_title(target)
    whose = f" (profile {profile})" if profile else ""
    if kind == "service_unreachable" and limited:
        return f"watchbridge: {name} is limiting requests{whose}"
    if not profile:
        return f"watchbridge: {name} unreachable"
    words = cause or PAUSE_CAUSES.get(kind, "deliveries paused")
    return f"watchbridge: {name} {words}{whose}"


def paused_alert(
    kind: str,
    target: str,
    profile: str | None,
    reason: str,
    *,
    limited: bool = False,
    cause: str = "",
) -> Alert:
    """The alert that `target`'s deliveries (`profile`'s; None: everyone's) are paused, of
    `kind` (`credentials`: the person's sign-in refused), for `reason` (`limited`: a rate
    limit; `cause`: as for `paused_title`)."""
    key = f"{target}:{profile}" if profile else target
    title = paused_title(kind, target, profile, limited=limited, cause=cause)
    return Alert(kind, key, title, reason)


def profile_flowing(
    kind: str, target: str, profile: str, *, waiting: bool = False, gave_up: bool = False
) -> str:
    """The "Resolved" text of `profile`'s pause of `kind` in its deliveries to `target`, once
    one of them went through: what it means now. A sign-in held all of the profile's
    deliveries: `waiting`, some of them still wait to go. Any other pause is over once none of
    those it held waits: `gave_up`, some of the profile's became dead letters meanwhile."""
    name = service_title(target)
    if kind == "credentials":
        then = (
            "those still waiting go out in turn" if waiting else "those that waited have gone out"
        )
        whose = f"the sign-in of profile {profile}"
        return f"{name} takes {whose} again, and its plays and ratings; {then}."
    held = "the account limit held" if kind == "account_limit" else "that were held"
    went = (
        "have gone out or gave up (dead letters, told of in their own alert)"
        if gave_up
        else "have gone out"
    )
    return (
        f"{name} is taking the plays and ratings of profile {profile} again; those {held} {went}."
    )


def server_credential(server: str) -> tuple[str, str]:
    """A media server's name and what watchbridge signs in to it with, for alerts."""
    return service_title(server), "token" if server == "plex" else "API key"


def server_key_alert(
    server: str, reason: str, profiles: Sequence[str], *, catch_up: bool = False
) -> Alert:
    """The one alert that `server` refuses its own key (the Plex server's token, a Jellyfin or
    Emby API key) while plays and ratings wait for it (`reason`: the refusal as met), naming
    the profiles whose do (`profiles`; none known: whoever's). One condition per server, one
    text whoever meets it first (a delivery, a link's read, the catch-up: `cause_of`), not one
    per profile. `catch_up`: the catch-up reads the server (`downtime.catches_up`), which the
    refusal stops too."""
    name, credential = server_credential(server)
    whose = f"of {_profiles(profiles)} " if profiles else ""
    body = (
        f"{reason.rstrip('.')}. The plays and ratings {whose}that need {name} wait (nothing is"
        f" lost): no sign-in of a profile changes that; they go out once {name} takes the"
        f" {credential} again, at once when a read or lookup with it goes through."
    )
    if catch_up:
        body += (
            f" Plays its webhooks missed are not caught up from {name} until then (nothing is"
            " lost when it works within a week: they are caught up then; older ones are listed"
            " on the status page to check by hand)."
        )
    title = f"watchbridge: {name} does not accept watchbridge's {credential}"
    return Alert("credentials", f"server:{server}", title, body)


def _profiles(names: Sequence[str]) -> str:
    """'profile a', 'profiles a and b', 'profiles a, b and c'."""
    if len(names) == 1:
        return f"profile {names[0]}"
    return f"profiles {', '.join(names[:-1])} and {names[-1]}"


# Media servers that are also delivery targets (a link's writes to Plex): see outage_key.
DELIVERED_TO = frozenset({"plex"})


def outage_key(server: str) -> str:
    """The `service_unreachable` condition of a media server that does not answer its lookups.
    One that is also a delivery target shares that target's condition (the worker's key is the
    target's name): one server down is one alert and one "Resolved", whichever of its lookups
    and deliveries notices first, not one of each."""
    return server if server in DELIVERED_TO else f"server:{server}"


def server_key_works(server: str) -> str:
    """The "Resolved" text of `server_key_alert`: the server takes its key again."""
    name, credential = server_credential(server)
    return f"{name} accepts watchbridge's {credential} again: the plays and ratings it held go out"


def server_key_unneeded(config: Config, server: str) -> str | None:
    """The "Resolved" text of `server_key_alert` once no delivery waits for the key (those it
    held went out, gave up or were discarded): nothing needs the key while no link reads
    `server` and the catch-up does not (`downtime.catches_up`). None while one does: their
    reads tell of the refusal again, or end it once the key works."""
    if catches_up(config, server) or any(server in link.services for link in config.links.values()):
        return None
    name, credential = server_credential(server)
    # The catch-up never reads Plex: no word of it there.
    readers = "no link reads" if server == "plex" else "neither a link nor the catch-up reads"
    return (
        f"Nothing needs {name}'s {credential} any more: no play or rating waits for it (those"
        f" it held went out, gave up or were discarded) and {readers} {name}. If {name} still"
        " refuses it, a play that needs it later raises this alert again."
    )


def sign_in_works(service: str, profile: str) -> str:
    """The recovery notice of `profile`'s sign-in to `service` once it is accepted again."""
    return f"the {service_title(service)} sign-in of profile {profile} works again"


@dataclass(frozen=True)
class Cause:
    """Why one part of a run failed, as the alerts that tell of it: any one of `conditions`
    open tells the human of it; `raises`, the alert the run raises itself when it meets the
    cause before anyone else did (a person's sign-in refused)."""

    conditions: tuple[Condition, ...]
    raises: Alert | None = None
    # `raises` only once the link has failed often enough in a row to alert (a media server
    # restarting for an update is back by then), with how long in its text.
    when_failing: bool = False
    # The media server that answered, if only to refuse its own key: an outage of it told of
    # is over (its "Plex unreachable" would go on saying to start it or take its lines out).
    answered: str = ""


def cause_of(error: WatchbridgeError, profile: str, config: Config | None = None) -> Cause | None:
    """The alerts of the root cause of `profile`'s part failing on `error`; None for a failure
    no alert but the link's tells of (a shape it cannot read, a bug, a config problem).
    `config`: the run's, for a media server's outage to name its lines in the config."""
    if isinstance(error, ListsMissing):  # the anime mapping lists' own alert
        # Raised by the run while their downloads fail or the copies cannot be read, as the
        # deliveries and the hourly check do: a household with no play waiting for AniList
        # hears of it at once too.
        raises = None
        if isinstance(error, ListsNotYet) and error.problems:
            raises = lists_missing(error.problems)
        elif isinstance(error, ListsUnreadable) and error.problems:
            raises = lists_unreadable(error.directory, error.problems)
        return Cause((("service_unreachable", MISSING_KEY),), raises)
    if not isinstance(error, ServiceError):
        return None
    service = error.service
    if isinstance(error, SERVER_KEY):
        # The one alert of the server's key, as its deliveries and lookups raise it: at once,
        # as a person's sign-in refused is (a household with no play waiting for the server
        # hears of it too, not only each link's "keeps failing").
        caught_up = config is not None and catches_up(config, service)
        alert = server_key_alert(service, error.message, (), catch_up=caught_up)
        return Cause(((alert.kind, alert.key),), alert, answered=service)
    if isinstance(error, PERSON_SIGN_IN):
        if service in NO_DELIVERIES:
            return Cause((("credentials", f"{service}:{profile}"),))
        alert = paused_alert("credentials", service, profile, error.message)
        return Cause(((alert.kind, alert.key),), alert)
    if isinstance(error, Unavailable):
        # The service's outage as its deliveries tell it (or a media server's lookups), or
        # this profile's own pause (a rate limit, its sign-in host down).
        keys = (service, f"server:{service}", f"{service}:{profile}")
        conditions = tuple(("service_unreachable", key) for key in keys)
        if service in MEDIA_SERVERS and config is not None:
            # The household's own server: one alert, whichever link reads it, saying what to
            # do, not one "link keeps failing" per link.
            return Cause(conditions, server_unreachable(config, service, error.message), True)
        return Cause(conditions)
    return None


def server_lines(config: Config, server: str) -> list[str]:
    """The config's lines about media server `server`, to take out once it is gone. Pure."""
    lines = [f"services.{server}"]
    lines += [f"links.{name}" for name, link in config.links.items() if server in link.services]
    for name, profile in config.profiles.items():
        if getattr(profile.users, server, None):
            lines.append(f"profiles.{name}.users.{server}")
        if getattr(profile.accounts, server, None) is not None:
            lines.append(f"profiles.{name}.accounts.{server}")
    return lines


def server_unreachable(config: Config, server: str, reason: str) -> Alert:
    """The alert that media server `server` does not answer the links that read it (for
    `reason`): what goes on meanwhile, and what to do, naming its lines in `config`."""
    name = service_title(server)
    links = [f"links.{n}" for n, link in config.links.items() if server in link.services]
    body = (
        f"{reason}\n\nWhile {server_named(config, server)} does not answer, its plays and"
        f" ratings are not read or written ({', '.join(links)}); everything else goes on. If"
        f" {name} is only off for"
        " now, start it again: the links catch up by themselves. If it is switched off for"
        f" good, take its lines out of the config ({', '.join(server_lines(config, server))})"
        " and restart watchbridge: this alert then ends."
    )
    title = paused_title("service_unreachable", server)
    return Alert("service_unreachable", outage_key(server), title, body)


def server_named(config: Config, server: str) -> str:
    """Media server `server` as an alert names it: by its address, `services.NAME.url`, for
    a household with several servers of that kind (its own two Plex servers and a friend's)
    cannot tell from "Plex" alone which one is down; webhooks of the others still come in,
    and only this one is read. Pure."""
    name = service_title(server)
    settings = getattr(config.services, server, None)
    url = getattr(settings, "url", None)
    return f"{name} at {shown_url(url)} (services.{server}.url)" if url else name


def told_elsewhere(causes: Sequence[Cause | None], raised: Callable[[str, str], bool]) -> bool:
    """True when every failed part of a run (`causes`, one each) has a root cause whose own
    alert is open (`raised(kind, key)`): a part with none, or with its alert over, is the
    link's to tell."""
    return bool(causes) and all(
        cause is not None and any(raised(kind, key) for kind, key in cause.conditions)
        for cause in causes
    )


_CARRIED = "_watchbridge_causes"


def with_causes(error: WatchbridgeError, causes: tuple[Cause | None, ...]) -> WatchbridgeError:
    """`error`, carrying the causes of every part of the run that failed with it (a run no
    profile of which could be read raises its first profile's error as it is)."""
    setattr(error, _CARRIED, causes)
    return error


def carried_causes(error: BaseException) -> tuple[Cause | None, ...]:
    """What `with_causes` gave `error`; none for any other error."""
    causes: tuple[Cause | None, ...] = getattr(error, _CARRIED, ())
    return causes
