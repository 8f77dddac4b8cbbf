"""The status page at `/` (the Home Assistant sidebar, Unraid's WebUI): what `watchbridge status`
says, as one small HTML page. `page_state` reads what it shows from the Runtime at one
moment; `render` is pure but for the zone it tells times in (`TZ`, zone.py): that state in,
HTML out. No secret is ever on it. It speaks the household's words, not the store's: a
delivery given up is a dead letter, explained where it is counted; a link is a sync.

Links, the forms and their redirects are relative, so the page works behind Home Assistant's
ingress path. Its forms start a profile's Trakt sign-in (pagesignin.py) and show the code,
queue every dead letter again, and read, show and apply a link's first sync waiting for a
review (pagereview.py, on a page of its own: `/review`): the app's users have no terminal for
`watchbridge auth trakt`, `watchbridge deadletters retry --all` or `watchbridge sync --yes`.
"""

from __future__ import annotations

import asyncio
import html
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from litestar import MediaType, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromQuery

from watchbridge import __version__, defaulted, forplex, tautulliwatched
from watchbridge import queuewords as words
from watchbridge.account_ids import (
    Learnt,
    NewId,
    NewIdSighting,
    Renamed,
    RenameSighting,
    TwiceSighting,
)
from watchbridge.alerts import Health
from watchbridge.app import (
    Leftover,
    Runtime,
    anime_calm,
    anime_lines,
    leftovers,
    require_api_token,
)
from watchbridge.catchupstatus import CatchUpLine, server_name, status_lines
from watchbridge.config import Config, Link, copied_nowhere, service_title, services_titled
from watchbridge.deadletters import retry_dead_letters
from watchbridge.defaulted import KEEP as DEFAULTED_KEEP
from watchbridge.forplex import ForPlex
from watchbridge.homeassistant import (
    COMMANDS_HELP,
    HomeAssistantApp,
    as_option_entries,
    names_a_command,
)
from watchbridge.http import CLOCK_WARNING
from watchbridge.lastwebhooks import LastWebhook, servers_shown
from watchbridge.metrics import UnfilteredHistory
from watchbridge.pagereview import PageReview, ShownPlan
from watchbridge.pagesignin import PageSignIn, Show
from watchbridge.readers.trakt import lookups_waiting
from watchbridge.refused import Refusal, sentence
from watchbridge.review import review_command
from watchbridge.senders import Doubling
from watchbridge.shown_text import unturned
from watchbridge.signins import REFUSED_EXPIRY, STATE_WORDS, SignIn, current_sign_ins
from watchbridge.storagefault import StorageFault
from watchbridge.storagewatch import told
from watchbridge.store import (
    BEHIND,
    KEPT_OFF_FIX,
    KeptOffCount,
    StoreStatus,
    SyncRun,
    Waiting,
)
from watchbridge.sync import syncable, waits_for_review
from watchbridge.tautulliwatched import Seen
from watchbridge.unlisted import KEEP as UNLISTED_KEEP
from watchbridge.unlisted import Unlisted, own_hint, probably_of
from watchbridge.webhooks import SOURCES
from watchbridge.zone import clock_time, zone_shown


@dataclass(frozen=True)
class PageState:
    """Everything the page shows, as read at one moment (`page_state`); `render` makes the
    HTML of it."""

    config: Config
    status: StoreStatus
    # Each profile's Trakt, AniList and Serializd sign-in.
    sign_ins: Sequence[SignIn] = ()
    # Accounts whose webhooks no profile takes, as the store remembers them (unlisted.py),
    # and the names remembered for listed accounts (one of theirs on another server).
    unlisted: Sequence[Unlisted] = ()
    learnt: Sequence[Learnt] = ()
    # Accounts no profile lists whose webhooks the default profile takes (defaulted.py).
    defaulted: Sequence[Unlisted] = ()
    # People listed for Plex's own webhook whose plays were taken from Tautulli's (forplex.py).
    not_sent_by_plex: Sequence[tuple[ForPlex, int]] = ()
    # Tautulli servers that send stops and no Watched (tautulliwatched.py).
    no_watched: Sequence[Seen] = ()
    # What this start told of the time the service was away.
    downtime: str | None = None
    # Plex servers reported twice to a profile.
    doublings: Sequence[Doubling] = ()
    # Webhooks refused since the start, by source and kind.
    refused: Sequence[Refusal] = ()
    # When each source and server last had a webhook accepted.
    last_webhooks: Sequence[LastWebhook] = ()
    # When each source last sent its test notification, since the start.
    tests: Sequence[LastWebhook] = ()
    # Whether alerts reach anyone, which they cannot tell themselves.
    alerts: Health | None = None
    # How far each service's clock is ahead of ours.
    clocks: Mapping[str, float] = field(default_factory=dict)
    # State kept for profiles and links the config no longer has.
    kept: Sequence[Leftover] = ()
    # Accounts renamed on a media server whose webhooks went by the id remembered for the
    # name a profile lists, since the start.
    renamed: Sequence[RenameSighting] = ()
    # Accounts made again with a new id, whose webhooks went by the name remembered for the
    # id a profile lists, since the start.
    new_ids: Sequence[NewIdSighting] = ()
    # Accounts two profiles list, by name and by id: seen since the start, or remembered.
    listed_twice: Sequence[TwiceSighting] = ()
    # Profiles whose last Plex history read got rows of other accounts.
    unfiltered: Sequence[UnfilteredHistory] = ()
    # Sign-ins started from the page, running or just over.
    signing_in: Sequence[PageSignIn] = ()
    # The app it runs as, whose user may have no terminal.
    home_assistant: HomeAssistantApp | None = None
    # When the page's button last queued the dead letters again, and what it told.
    retried: tuple[float, list[str]] | None = None
    # Why the database cannot be written, while so.
    storage: StorageFault | None = None
    # The storage alert's text as it would be sent now (storagewatch.told; "" without a fault).
    storage_told: str = ""
    # Links whose first sync waits for a review, and the reviews started from the page.
    to_review: frozenset[str] = frozenset()
    reviews: Sequence[PageReview] = ()
    # With AniList: the mapping datasets whose refresh failed, the shows a media server numbers
    # its own way, the likely anime kept off AniList, as `watchbridge status` says them.
    anime: Sequence[str] = ()
    anime_calm: frozenset[str] = frozenset()  # those of `anime` that need nobody yet
    # Jellyfin's and Emby's plays the webhooks missed (catchup.py): those caught up in the last
    # week, why the last read failed, accounts listed that the server has not.
    catch_up: Sequence[CatchUpLine] = ()
    # Link -> the shows whose Trakt release dates failed for a day, their plays synced as
    # they are dated since (`readers.trakt.lookups_waiting`).
    lookups: Mapping[str, Sequence[str]] = field(default_factory=dict)


async def page_state(runtime: Runtime, now: float) -> PageState:
    """What the page shows, read from the runtime and its store (the store off the loop)."""
    config = runtime.config
    status = await asyncio.to_thread(runtime.store_status)
    sign_ins = await asyncio.to_thread(current_sign_ins, config, runtime.store, now)
    kept = await asyncio.to_thread(leftovers, config, runtime.store)
    decided = await asyncio.to_thread(runtime.store.last_decided_runs)
    anime = await asyncio.to_thread(anime_lines, config, runtime.store, now)
    calm = await asyncio.to_thread(anime_calm, config, runtime.store, now) if anime else frozenset()
    catch_up = await asyncio.to_thread(status_lines, config, runtime.store, now)
    unlisted = await asyncio.to_thread(runtime.store.unlisted_accounts)
    taken_in = await asyncio.to_thread(runtime.store.defaulted_accounts)
    for_plex = await asyncio.to_thread(runtime.store.for_plex, forplex.TAKEN)
    tautulli = await asyncio.to_thread(runtime.store.tautulli_reports)
    lookups = await asyncio.to_thread(lookups_waiting, config, runtime.store, now)
    return PageState(
        config=config,
        status=status,
        sign_ins=sign_ins,
        unlisted=unlisted,
        learnt=list(runtime.account_ids.known.values()),
        defaulted=taken_in,
        not_sent_by_plex=forplex.people(for_plex),
        no_watched=[seen for seen in tautulli if seen.no_watched],
        downtime=runtime.downtime,
        doublings=runtime.senders.recent(now),
        refused=runtime.refused.recent(),
        last_webhooks=runtime.last_webhooks.recent(),
        tests=runtime.last_webhooks.tests(),
        alerts=runtime.notifier.health(),
        clocks=dict(runtime.metrics.clocks),
        kept=kept,
        renamed=runtime.account_ids.recent(),
        new_ids=runtime.account_ids.recent_new_ids(),
        listed_twice=runtime.account_ids.listed_twice(config),
        unfiltered=list(runtime.metrics.unfiltered.values()),
        signing_in=runtime.page_sign_ins.recent(now),
        home_assistant=runtime.home_assistant,
        retried=runtime.page_retried,
        storage=runtime.storage_fault,
        storage_told=(
            "" if runtime.storage_fault is None else told(runtime, runtime.storage_fault)
        ),
        to_review=frozenset(run.link for run in decided if waits_for_review(run)),
        reviews=runtime.page_reviews.recent(),
        anime=anime,
        anime_calm=calm,
        catch_up=catch_up,
        lookups=lookups,
    )


# A sign-in's code and the account names are shown: no browser or proxy keeps a copy.
@get(
    "/",
    guards=[require_api_token],
    media_type=MediaType.HTML,
    cache_control=CacheControlHeader(no_store=True),
)
async def status_page(runtime: NamedDependency[Runtime]) -> str:
    now = runtime.clock()
    return render(await page_state(runtime, now), now)


def posted_from_elsewhere(headers: Mapping[str, str]) -> bool:
    """Whether a browser says another site (another port of this host too) sent this form.
    Browsers since 2023 say so in Sec-Fetch-Site; older ones (an iPad on iOS 15) only in
    Origin, the scheme, host and port of the page that posted it, which must then be the host
    the request went to (as the browser named it: Host, or X-Forwarded-Host from a reverse
    proxy; a form cannot set either). The oldest (Firefox before 70) send no Origin with a
    form, only Referer, the page's address. None of these (curl, a script): no browser to
    abuse. Pure."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("cross-site", "same-site")
    origin = headers.get("origin") or _origin_of(headers.get("referer"))
    if origin is None:
        return False
    posted_by = _authority(origin)
    if posted_by is None:  # "null": a sandboxed frame, a data: or file: page
        return True
    hosts = [headers.get("host", ""), *headers.get("x-forwarded-host", "").split(",")]
    scheme = urllib.parse.urlsplit(origin).scheme
    return all(_authority(f"{scheme}://{host.strip()}") != posted_by for host in hosts)


def _origin_of(referer: str | None) -> str | None:
    """The scheme, host and port of the page a Referer names ("null" when it names none, or
    is no address: no browser sends that)."""
    if not referer:
        return None
    try:
        parts = urllib.parse.urlsplit(referer)
    except ValueError:  # "http://[::1": a bracket left open
        return "null"
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"


def _authority(url: str) -> tuple[str, int] | None:
    """(host, port) of an http(s) URL, the default port filled in; None if it has none."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is no number
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname.lower(), port


def from_this_site(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A form another web site posts here (the user's browser sends it) does nothing: with
    no api_token, the token guard lets it through."""
    if posted_from_elsewhere(connection.headers):
        raise PermissionDeniedException(
            "only watchbridge's own status page posts its forms (this one came from another "
            "site; behind a reverse proxy, have it pass the Host header on)"
        )


@post("/signin/trakt", guards=[require_api_token, from_this_site], status_code=303)
async def sign_in_to_trakt(
    runtime: NamedDependency[Runtime], profile: FromQuery[str]
) -> Response[str]:
    """Start `profile`'s Trakt sign-in; back to the page, which shows the code to enter."""
    config = runtime.config
    if config.services.trakt is None:
        raise ValidationException("services.trakt is not configured (trakt_client_id)")
    chosen = config.profiles.get(profile)
    if chosen is None or chosen.accounts.trakt is None:
        raise ValidationException(f"profile {profile!r} has no Trakt account to sign in")
    # The page offers the button only to a sign-in that needs the user. Another post (another
    # page under our host name, DNS rebinding; anyone who reaches the port without api_token)
    # could otherwise swap a working sign-in for an account whose owner approves the code.
    now = runtime.clock()
    sign_ins = await asyncio.to_thread(current_sign_ins, config, runtime.store, now)
    if any(s.service == "trakt" and s.profile == profile and not s.needs_you for s in sign_ins):
        raise HTTPException(
            status_code=409,
            detail=f"profile {profile}'s Trakt sign-in works, so the page does not sign it in "
            f"again; to sign in to another Trakt account, run `watchbridge auth trakt --profile "
            f"{profile}`",
        )

    async def flow(show: Show) -> list[str]:
        from watchbridge.services.trakt import DeviceCode
        from watchbridge.trakt_signin import sign_in

        def shown(code: DeviceCode) -> None:
            show(code.user_code, code.verification_url, code.expires_in)

        done = await sign_in(config, runtime.store, profile, shown, runtime.clock)
        if done.resumed:
            for wake in runtime.on_enqueued:  # the deliveries that waited go out now
                wake()
        # Whose account approved the code: a household member's, approved by mistake, shows.
        whose = [f"Trakt user {done.username} approved the code."] if done.username else []
        return [*whose, *done.notes, *([f"Warning: {done.warning}"] if done.warning else [])]

    runtime.page_sign_ins.start("trakt", profile, flow, runtime.clock, runtime.redact)
    # Relative: from .../signin/trakt back to the page, behind any ingress prefix.
    return Response("", status_code=303, headers={"location": "../"})


@post("/deadletters/retry", guards=[require_api_token, from_this_site], status_code=303)
async def retry_dead_letters_here(runtime: NamedDependency[Runtime]) -> Response[str]:
    """`deadletters retry --all`: every dead letter the config can deliver is queued again
    and sent now; back to the page, which tells what was done."""
    now = runtime.clock()
    outcome = await asyncio.to_thread(retry_dead_letters, runtime.config, runtime.store, None, now)
    if outcome.queued:
        for wake in runtime.on_enqueued:
            wake()
    runtime.page_retried = (now, outcome.lines(": the service sends them now"))
    return Response("", status_code=303, headers={"location": "../"})


def _reviewable(runtime: Runtime, link: str) -> str:
    """`link`, a link of the config the service can sync; else a 400 naming the links."""
    chosen = runtime.config.links.get(link)
    if chosen is None or not syncable(chosen):
        known = ", ".join(n for n, one in runtime.config.links.items() if syncable(one))
        raise ValidationException(f"no link {link!r} to review here (links: {known or 'none'})")
    return link


# The plan on it: no browser or proxy keeps a copy of what someone watched.
@get(
    "/review",
    guards=[require_api_token],
    media_type=MediaType.HTML,
    cache_control=CacheControlHeader(no_store=True),
)
async def review_page(runtime: NamedDependency[Runtime], link: FromQuery[str]) -> str:
    """A link's first sync as `watchbridge sync --dry-run` shows it, with its apply button."""
    name = _reviewable(runtime, link)
    now = runtime.clock()
    decided = await asyncio.to_thread(runtime.store.last_decided_runs)
    waits = any(run.link == name and waits_for_review(run) for run in decided)
    configured = runtime.config.links[name]
    return render_review(name, runtime.page_reviews.get(name), waits, now, configured)


@post("/review/read", guards=[require_api_token, from_this_site], status_code=303)
async def read_for_review(runtime: NamedDependency[Runtime], link: FromQuery[str]) -> Response[str]:
    """`watchbridge sync --link NAME --dry-run`, in the background; on to the review page,
    which says "reading" until the plan is there."""
    name = _reviewable(runtime, link)
    runtime.page_reviews.read(runtime, name)
    return _to_review(name)


@post("/review/apply", guards=[require_api_token, from_this_site], status_code=303)
async def apply_reviewed(
    runtime: NamedDependency[Runtime], link: FromQuery[str], plan: FromQuery[str]
) -> Response[str]:
    """`watchbridge sync --link NAME --yes`, of the plan shown (its token `plan`) only: the
    run reads both sides again and writes nothing if they make another plan (it shows that
    one). A press on another plan than the one the page shows now (a second tab, a second
    press once applied) does nothing."""
    name = _reviewable(runtime, link)
    review = runtime.page_reviews.get(name)
    shown = None if review is None or review.running else review.plan
    if review is None:  # the reviews are held in memory: this plan was read before a restart
        runtime.page_reviews.refused(name, RESTARTED_SINCE_READ, runtime.clock())
    elif shown is None or shown.token != plan or not shown.covers:
        runtime.page_reviews.refused(name, NOT_THE_PLAN_SHOWN, runtime.clock())
    else:
        runtime.page_reviews.apply(runtime, name, plan)
    return _to_review(name)


def _to_review(link: str) -> Response[str]:
    # Relative: from .../review/read back to .../review, behind any ingress prefix.
    location = "../review?" + urllib.parse.urlencode({"link": link})
    return Response("", status_code=303, headers={"location": location})


ROUTES: list[Any] = [
    status_page,
    sign_in_to_trakt,
    retry_dead_letters_here,
    review_page,
    read_for_review,
    apply_reviewed,
]
# What the page calls a link of the config (queuewords.py: its words for the queue).
LINKS = "Each keeps two services alike (the <code>links</code> of the config)."
SIGN_IN_BUTTON = "Sign in to Trakt here"
# A sign-in's expiry column where it renews without the user (SignIn.renews): no date to act by.
RENEWS_ITSELF = "renews itself"
NO_PROFILES = "No profiles: every webhook is answered and ignored"
REVIEW_BUTTON = "Review the first sync here"
APPLY_BUTTON = "Apply this first sync"
NOT_THE_PLAN_SHOWN = (
    "nothing was written: that button was of another plan than the one shown now (read again, "
    "or applied already); look at the plan below"
)
RESTARTED_SINCE_READ = (
    "watchbridge restarted since this plan was read: read it again (nothing was written)"
)
# How long the page tells what its last retry of the dead letters did.
RETRIED_SHOWN = 900.0

_STYLE = (
    # overflow-wrap: a name or error text without spaces (a media-server account, a title, a
    # service's token-like id) wraps within its cell instead of widening the whole page.
    ":root{color-scheme:light dark}"
    "body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:52rem;color:#222;"
    "background:#fff;overflow-wrap:anywhere}"
    "table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{padding:.25rem .75rem;"
    "border-bottom:1px solid #ddd;text-align:left}.bad{color:#b00020;font-weight:600}"
    "code{background:#f3f3f3;padding:0 .25rem}"
    # That lets a browser squeeze a column beside a long message to one letter ("tra kt"):
    # headings (our words) never break, and no cell is narrower than a short word.
    "th{overflow-wrap:normal}td{min-width:4.5em}"
    # The review's plan lines (the CLI's) wrap too: a phone showed one line a few words wide.
    "pre{white-space:pre-wrap}"
    # A phone has no room for five columns: each row reads as lines, its last cell (the
    # message, a button) on a line of its own, the headings row as a legend above.
    "@media(max-width:40rem){body{margin:.75rem}table,tr{display:block}"
    "tr{padding:.4rem 0;border-bottom:1px solid #ddd}"
    "td,th{display:inline;border:0;padding:0 .6rem 0 0}td{min-width:0}"
    "td:last-child{display:block}}"
    # First under the title: what needs the user, or that all is well.
    ".summary{border:2px solid #2e7d32;border-radius:.4rem;padding:.5rem .75rem}"
    ".summary.needs{border-color:#b00020}.summary.waits{border-color:#888;margin-top:.5rem}"
    ".summary p{margin:0}.summary ol{margin:.25rem 0 0}"
    # A dark Home Assistant theme (or phone): the page follows, instead of a white glare.
    "@media(prefers-color-scheme:dark){body{color:#ddd;background:#121212}"
    ".bad{color:#ff7a85}.summary.needs{border-color:#ff7a85}code{background:#333}"
    "td,th,tr{border-color:#444}a{color:#8ab4f8}}"
)


def render(state: PageState, now: float) -> str:
    """The whole page for one moment (pure)."""
    status = state.status
    outbox = status.outbox
    buttons = _trakt_buttons(state.sign_ins, state.signing_in, now)
    rows = [
        ("queued", f"{outbox['pending']} {words.WAITING}, {outbox['inflight']} {words.BEING_SENT}"),
        (words.LAST_WEEK, words.sent(status.sent)),
        (words.OLDEST, _age(status.oldest_pending_at, now)),
        (
            words.FOR_A_MATCH,
            _flag(status.unmatched, f"{words.UNMATCHED}: {_code(_e(words.LOOKED_FOR))}"),
        ),
        *([(words.THEIR_TURN, f"{status.behind} {_e(BEHIND)}")] if status.behind else []),
        *[
            (
                _e(f"{words.ON_HOLD}: {words.service_for(held.target, held.profile)}"),
                (
                    f"{held.rows} {words.WAITING}"
                    if held.service_waits
                    else f'<span class="bad">{held.rows} {words.WAITING}</span>'
                )
                + f", next try {_until(held.next_at, now)}: {_e(held.reason)}"
                + (_BUTTON_BESIDE if _button_would_fix(held, buttons) else "")
                + (f" ({_e(words.NOTHING_TO_DO)})" if held.service_waits else ""),
            )
            for held in status.waiting
        ],
        *(
            [(words.ON_HOLD, f"and for {status.waiting_left_out} more reasons")]
            if status.waiting_left_out
            else []
        ),
        (
            words.GIVEN_UP,
            _flag(
                status.dead_letters,
                f"{words.DEAD_LETTERS}; {_code(_e(words.DEAD_LETTERS_FIX))}",
            )
            + _dead_letters(status, now)
            + (_RETRY_BUTTON if status.dead_letters else "")
            + _retried(state.retried, now),
        ),
        *_kept_off(status.kept_off),
    ]
    sections = [
        # First: while it lasts nothing is recorded, delivered or synced.
        *(
            []
            if state.storage is None
            else [
                f'<p class="bad" id="storage">{_e(state.storage.title)}. '
                f"{_e(state.storage_told or state.storage.message)}</p>"
            ]
        ),
        '<h2 id="deliveries">Deliveries</h2>' + _table(("", ""), rows) + _clocks(state.clocks),
        *(
            []
            if state.alerts is None
            else ['<h2 id="alerts">Alerts</h2>' + _alerts(state.alerts, now, state.home_assistant)]
        ),
        f'<h2 id="links">Syncs</h2><p>{LINKS}</p>'
        + _links(state.config, status.last_runs, status.last_success_at, now, state.lookups)
        + _reviews(state.to_review, state.reviews)
        + "".join(
            f'<p class="bad">{_age(u.at, now)}: {_e(u.message)}.</p>' for u in state.unfiltered
        )
        + _kept(state.kept, "link"),
        *(
            [
                '<h2 id="anime">Anime</h2>'
                + "".join(
                    f"<p>{_e(a)}</p>" if a in state.anime_calm else f'<p class="bad">{_e(a)}</p>'
                    for a in state.anime
                )
            ]
            if state.anime
            else []
        ),
        '<h2 id="profiles">Profiles</h2>'
        + _profiles(state.config)
        + _sign_ins(state.sign_ins, now, state.signing_in)
        + _kept(state.kept, "profile"),
        '<h2 id="webhooks">Webhooks</h2>'
        + "<p>Post to <code>/webhooks/SOURCE/SECRET</code> on port "
        + str(state.config.server.webhook_port or state.config.server.port)
        + f" (sources: {', '.join(SOURCES)}). The secret is not shown here: "
        + _where_the_secret_is(state.home_assistant, not state.config.server.webhook_secret)
        + ".</p>"
        + _last_webhooks(state.last_webhooks, now)
        + "".join(f"<p>{_e(_tested(test, now))}.</p>" for test in state.tests)
        + "".join(_catch_up(line) for line in state.catch_up)
        + (f'<p class="bad">{_e(state.downtime)}</p>' if state.downtime else "")
        + "".join(_doubling(d) for d in state.doublings)
        + _refused(state.refused, now, state.home_assistant)
        + _renamed(state.renamed, now)
        + _new_ids(state.new_ids, now)
        + _listed_twice(state.listed_twice, now)
        + _unlisted(state.config, state.unlisted, state.learnt, now)
        + _defaulted(state.config, state.defaulted, now)
        + _not_sent_by_plex(state.config, state.not_sent_by_plex, now)
        + "".join(
            f'<p class="bad">{_e(tautulliwatched.status_line(seen))}.</p>'
            for seen in state.no_watched
        ),
    ]
    # While a code waits to be entered, the page looks again by itself to tell when it was.
    waiting = any(one.running for one in state.signing_in)
    commands_help = (
        f"<p>{_e(COMMANDS_HELP)}</p>"
        if state.home_assistant is not None and names_a_command("".join(sections))
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        + ('<meta http-equiv="refresh" content="10">' if waiting else "")
        + f"<title>watchbridge</title><style>{_STYLE}</style></head><body>"
        f"<h1>watchbridge <small>{html.escape(__version__)}</small></h1>"
        + _summary(needs(state, now), state, now, "".join(sections), waits(state, now))
        + f'<p class="zone">Times are in {_e(zone_shown(at=now))}.</p>'
        + commands_help
        + "".join(sections)
        + '<p><a href="api/status">api/status</a> · <a href="metrics">metrics</a></p>'
        "</body></html>"
    )


# A first backfill runs for hours, a dry run writes nothing, a restart cuts a run short, a
# run waiting for the anime mapping lists is told by their alert: none needs the user here
# (red is for what does).
CALM_OUTCOMES = frozenset({"ok", "running", "dry-run", "interrupted", "waiting"})


@dataclass(frozen=True)
class Need:
    """One thing the page shows in red, as its summary names it: `text` (plain) and `anchor`,
    the id of the part of the page that tells more."""

    text: str
    anchor: str


def needs(state: PageState, now: float) -> list[Need]:
    """What on the page needs the user, most urgent first, each in the words of its part of
    the page or its alert (pure)."""
    status = state.status
    found = []
    if state.storage is not None:  # nothing is recorded while it lasts
        found.append(Need(_headline(state.storage.title), "storage"))
    if not state.config.profiles:
        found.append(Need("No profiles: every webhook is ignored", "profiles"))
    buttons = _trakt_buttons(state.sign_ins, state.signing_in, now)
    found += [_sign_in_need(one, buttons) for one in state.sign_ins if one.needs_you]
    if status.dead_letters:
        found.append(Need(f"{status.dead_letters} {words.GIVEN_UP}", "deliveries"))
    held: dict[tuple[str, str], int] = {}  # each reason is told below: here, how many
    for h in status.waiting:
        if h.service_waits:  # nothing to do: `waits` tells it, calmly
            continue
        held[h.target, h.profile] = held.get((h.target, h.profile), 0) + h.rows
    found += [
        Need(f"{rows} on hold for {target} ({profile})", "deliveries")
        for (target, profile), rows in held.items()
    ]
    if status.waiting_left_out:
        found.append(Need(f"on hold for {status.waiting_left_out} more reasons", "deliveries"))
    found += [
        Need(f"{r.webhooks} {r.source} webhook(s) refused: {r.said}", "webhooks")
        for r in state.refused
        if not r.over(now)
    ]
    if status.unmatched:
        found.append(Need(f"{status.unmatched} not found on the service yet", "deliveries"))
    runs = {run.link: run.as_seen(now) for run in status.last_runs}
    found += [
        # A first sync to review: the page's button reads it (`_reviews`).
        Need(
            f"sync {name}: {outcome}" + (_BUTTON_BELOW if name in state.to_review else ""),
            "links",
        )
        for name in state.config.links
        if (outcome := _need_of(runs.get(name), name in state.to_review)) is not None
    ]
    found += [Need(f"Plex sent others' plays for {u.profile}", "links") for u in state.unfiltered]
    if anime := [line for line in state.anime if line not in state.anime_calm]:
        found.append(Need(f"anime for AniList: {len(anime)} thing(s) to look at", "anime"))
    found += [
        Need(f"{d.profile} gets each Plex viewing twice", "webhooks")
        for d in state.doublings
        if d.counted_twice
    ]
    if state.alerts is not None:
        found += [
            Need(f"Alerts are not sent to {_entry(p, state.home_assistant)}", "alerts")
            for p in state.alerts.problems
        ]
        if (failing := state.alerts.failing) is not None:
            to = _entry(failing.to, state.home_assistant)
            found.append(Need(f"Alerts do not get through to {to}", "alerts"))
    found += [
        Need(f"{s}'s clock is {round(abs(skew) / 60)} min off this machine's", "deliveries")
        for s, skew in _skews(state.clocks)
    ]
    found += [Need(_catch_up_need(line), "webhooks") for line in state.catch_up if line.needs_you]
    if state.downtime:  # a restore, or plays missed while away: told once, at this start
        found.append(Need(_headline(state.downtime), "webhooks"))
    return found


def waits(state: PageState, now: float) -> list[Need]:
    """What waits with nothing for the user to do: deliveries a service does not take now
    (down, or rate-limiting), per service and profile, since when the oldest of them waits (the
    outage's own start is the worker's, not the page's) and that they go by themselves (pure).
    Not under "Needs you": a service's outage is no chore of theirs."""
    held: dict[tuple[str, str], tuple[int, float]] = {}
    for h in state.status.waiting:
        if not h.service_waits:
            continue
        rows, since = held.get((h.target, h.profile), (0, now))
        held[h.target, h.profile] = (rows + h.rows, min(since, h.since or now))
    return [
        Need(
            f"{service_title(target)} is not taking deliveries now ({profile}): "
            + (f"{rows} waiting" if rows > 1 else "1 waiting")
            + f" since {clock_time(since, now)} "
            + ("go out by themselves" if rows > 1 else "goes out by itself")
            + " once it does",
            "deliveries",
        )
        for (target, profile), (rows, since) in held.items()
    ]


# Beside a need the page has a button for: a Trakt sign-in, a first sync to review.
_BUTTON_BELOW = " (button below)"


def _need_of(run: SyncRun | None, waits: bool) -> str | None:
    """What a link's last run needs the user for, as the summary names it (None: nothing).
    A dry run since (`watchbridge sync --dry-run`, the page's own review) does not settle a
    first sync that `waits` for its review: it still needs the user. Pure."""
    if run is not None and run.outcome not in CALM_OUTCOMES:
        return words.outcome(run.outcome)
    return words.outcome("needs-review") if waits else None


def _catch_up_need(line: CatchUpLine) -> str:
    """What the catch-up's line needs the user for, as the summary names it."""
    name = server_name(line.server)
    if line.kind == "refused":
        return f"{name} does not accept watchbridge's API key"
    if line.kind == "unfound":
        return _headline(line.message)  # "profile P lists jellyfin account A, which the ..."
    if line.kind == "unchecked":
        return f"plays {name} could not be read for in time were not copied: check them by hand"
    return f"{name} could not be read for the plays its webhooks missed"


def _sign_in_need(one: SignIn, buttons: frozenset[str]) -> Need:
    """A sign-in that needs the user, saying so when the page has a button for it."""
    words = STATE_WORDS.get(one.state, one.state)
    if one.service_wide:
        return Need(f"the {one.service} server's own sign-in: {words}", "sign-ins")
    text = f"{one.service} sign-in of {one.profile}: {words}"
    if one.service == "trakt" and one.profile in buttons:
        text += _BUTTON_BELOW
    return Need(text, "sign-ins")


def _headline(text: str) -> str:
    """A notice's first part, up to what it goes on to explain (its first ": ")."""
    return text.split(": ", 1)[0]


def _entry(problem: str, app: HomeAssistantApp | None) -> str:
    """The alert destinations a problem names, without what it says of them: `alerts.urls[1]`,
    or `alerts.urls[0], alerts.urls[2]` for a send two of them failed (as the Home Assistant
    options form names them, where the app has that form)."""
    return _headline(_WHAT_OF_IT.sub("", _as_the_form_names(problem, app)))


# What a failed send says of each destination (`alerts.urls[0] (ntfy: failure)`): the
# summary names the destinations alone, each of them.
_WHAT_OF_IT = re.compile(r" \([^()]*\)")


def _summary(
    found: Sequence[Need],
    state: PageState,
    now: float,
    below: str,
    waiting: Sequence[Need] = (),
) -> str:
    """The first thing on the page: what needs the user, each a link to where the page tells
    more, then what only waits (a service down: no chore of theirs); or that all is well and
    when things last went through."""
    if not found and 'class="bad"' in below:  # a red part no need names: never "all is well"
        found = [Need("something below is in red", "deliveries")]
    told = ""
    if found:
        told += (
            '<div class="summary needs"><p><strong>Needs you:</strong></p>'
            f"<ol>{_items(found)}</ol></div>"
        )
    if waiting:
        told += (
            f'<div class="summary waits"><p><strong>{WAITS}:</strong></p>'
            f"<ol>{_items(waiting)}</ol></div>"
        )
    return told or f'<p class="summary well">{_e(_all_is_well(state, now))}</p>'


# The summary's heading for what waits on a service, not on the user.
WAITS = "Waiting, no action needed"


def _items(told: Sequence[Need]) -> str:
    return "".join(f'<li><a href="#{n.anchor}">{_e(n.text)}</a></li>' for n in told)


def _all_is_well(state: PageState, now: float) -> str:
    """All is well, with the last signs of life the page shows, in the user's words."""
    latest = max(state.last_webhooks, key=lambda w: w.at, default=None)
    signs = [
        "no webhook accepted yet"
        if latest is None
        else f"last webhook {_ago(latest.at, now)} (from {latest.source})",
        f"{words.sent(state.status.sent)} {words.LAST_WEEK}",
    ]
    if latest is None and state.tests:
        test = max(state.tests, key=lambda t: t.at)
        signs.insert(1, f"test notification {_ago(test.at, now)} (from {test.source})")
    if went := state.status.last_success_at.values():
        signs.append(f"last synced {_ago(max(went), now)}")
    return "All is well: " + "; ".join(signs) + "."


def _links(
    config: Config,
    runs: list[SyncRun],
    last_success_at: Mapping[str, float],
    now: float,
    lookups: Mapping[str, Sequence[str]] = MappingProxyType({}),
) -> str:
    if not config.links:
        return "<p>No links configured.</p>"
    last = {run.link: run.as_seen(now) for run in runs}
    rows = []
    for name, link in config.links.items():
        run = last.get(name)
        arrow = "⇄" if link.direction == "two-way" else "→"
        services = _e(f"{link.services[0]} {arrow} {link.services[1]}")
        if run is None:
            rows.append((_e(name), services, "not run yet", ""))
            continue
        said = _e(words.outcome(run.outcome))
        outcome = said if run.outcome in CALM_OUTCOMES else f'<span class="bad">{said}</span>'

        if run.outcome == "running":  # an hour of reads: say how far it has got
            outcome += f" since {_age(run.started_at, now)}" + (
                f": {_e(run.progress.words())} ({_ago(run.progress.at, now)})"
                if run.progress is not None
                else ""
            )
            rows.append((_e(name), services, outcome, "-"))
            continue
        outcome += f" {_age(run.finished_at or run.started_at, now)}"
        if run.outcome != "ok" and run.error:  # what to do: the review command, the fix
            outcome += f": {_e(run.error)}"
        if run.outcome == "failed":  # once, or for days?
            went = last_success_at.get(name)
            outcome += (
                # Each link's last run that went through outlives the pruning (Store.prune):
                # none means none did since its first run (or `watchbridge reset-state`).
                "; no run of it has gone through yet"
                if went is None
                else f"; last went through {_age(went, now)}"
            )
        # Plays synced as dated after Trakt failed on a show's release dates for a day: what
        # to do if one on Trakt was a mark (held for less, they are told in the log alone).
        outcome += "".join(f"; {_e(line)}" for line in lookups.get(name, ()))
        queued = run.outcome != "dry-run"  # its writes were queued, not only planned
        counts = ", ".join(
            _e(words.change(k, v, queued)) for k, v in sorted(run.counts.items()) if v
        )
        # A run that stopped short (failed, held for a review) planned nothing it could say.
        quiet = "nothing to do" if run.outcome in ("ok", "dry-run") else "-"
        rows.append((_e(name), services, outcome, counts or quiet))
    return _table(("sync", "services", "last run", "changes"), rows)


def _reviews(to_review: frozenset[str], reviews: Sequence[PageReview]) -> str:
    """Each link waiting for the review of its first sync, with the button that reads its
    plan (writing nothing) and shows it on the review page; and a link to each review the
    page started."""
    started = {review.link for review in reviews}
    lines = []
    for link in sorted(to_review | started):
        query = _e(urllib.parse.urlencode({"link": link}))
        seen = f'<a href="review?{query}">the review of sync {_e(link)} started here</a>'
        if link not in to_review:
            lines.append(f"<p>See {seen}.</p>")
            continue
        lines.append(
            f'<form method="post" action="review/read?{query}"><button>{REVIEW_BUTTON}</button>'
            f" for sync {_e(link)}: reads both sides, writes nothing, and shows what its first "
            "sync would write, with a button that writes it"
            + (f" (or see {seen})" if link in started else "")
            + "</form>"
        )
    return "".join(lines)


def _one_way_first(link: str, configured: Link) -> str:
    """How to make a two-way link's first sync one way only, on the command line (the
    directions `watchbridge sync --direction` takes for this link)."""
    if configured.direction != "two-way":
        return ""
    a, b = (_e(service) for service in configured.services)
    return (
        "<p>To sync one way only first, use the command line: <code>watchbridge sync --link "
        f"{_e(link)} --direction {a}-to-{b} --yes</code> (or <code>{b}-to-{a}</code>; "
        "<code>--dry-run</code> in place of <code>--yes</code> shows that plan first).</p>"
    )


def render_review(
    link: str, review: PageReview | None, waits: bool, now: float, configured: Link
) -> str:
    """The review page of `link` (pure but for the zone of its times): what the page's run
    does or came to, and the plan read, in the words of `watchbridge sync --dry-run`, with
    the button that applies it. `waits`: the link's last run waits for this review;
    `configured`: the link as the config has it."""
    query = _e(urllib.parse.urlencode({"link": link}))
    read = (
        f'<form method="post" action="review/read?{query}"><button>'
        f"{'Read again' if review is not None else 'Read both sides'}</button> "
        "(writes nothing; a full read of Serializd may take minutes)</form>"
    )
    parts = [
        f"<h1>First sync of {_e(link)}</h1>",
        '<p><a href="./">Back to the status page</a></p>',
        "<p>"
        + (
            "This sync waits for your review of what its first sync writes: read both sides, "
            "look at the plan, then apply it."
            if waits
            else "This sync waits for no review now (its last run did not ask for one)."
        )
        + "</p>",
    ]
    if review is not None and review.running:
        parts.append(
            "<p><strong>"
            + (
                "Applying: reading both sides again first (if they make another plan than the "
                "one below, nothing is written and the new plan is shown)"
                if review.applying
                else "Reading both sides"
            )
            + f"…</strong> (started {_age(review.started_at, now)}). This page looks again "
            "every 10 seconds.</p>"
        )
    elif review is not None and review.outcome is not None and review.finished_at is not None:
        marked = ' class="bad"' if review.failed else ""
        parts.append(
            f"<p{marked}>From this page {_age(review.finished_at, now)}: {_e(review.outcome)}.</p>"
        )
    plan = None if review is None else review.plan
    if plan is not None:
        offer = review is not None and not review.running
        parts.append(_shown_plan(link, configured, plan, now, offer))
    if review is None or not review.running:
        parts.append(read)
    running = review is not None and review.running
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        + ('<meta http-equiv="refresh" content="10">' if running else "")
        + f"<title>watchbridge: review of {_e(link)}</title><style>{_STYLE}</style></head><body>"
        + "".join(parts)
        + "</body></html>"
    )


def render_refused(message: str) -> str:
    """The page a browser gets for a name the page is not answered under (app.HostRefused):
    the refusal, its config keys as code, and nothing of the status. Pure."""
    text = _e(message[:1].upper() + message[1:])
    for key in ("server.allowed_hosts", "server.api_token"):
        text = text.replace(key, f"<code>{key}</code>")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>watchbridge: not answered under this name</title><style>{_STYLE}</style>"
        f'</head><body><h1>watchbridge</h1><p class="bad">{text}.</p></body></html>'
    )


def _shown_plan(link: str, configured: Link, plan: ShownPlan, now: float, offer: bool) -> str:
    """A plan read for review: per profile what it writes, the CLI's lines, and (`offer`)
    the button that applies it, with the command that syncs a two-way link one way first."""
    rows = [
        (
            _e(profile) + (" (waits for this review)" if profile in plan.covers else ""),
            _e("; ".join(changes) or "nothing to write"),
        )
        for profile, changes in plan.changes
    ]
    unread = "".join(f'<p class="bad">Not read: {_e(why)}.</p>' for why in plan.unread)
    query = _e(urllib.parse.urlencode({"link": link, "plan": plan.token}))
    if not plan.covers:
        apply = "<p>No profile of this sync waits for a review: it syncs on its own.</p>"
    elif offer:
        apply = (
            f'<form method="post" action="review/apply?{query}"><button>{APPLY_BUTTON}'
            f"</button> (writes what is listed here, as {_code(_e(review_command(link)))} "
            "does; both sides are read again first, and if they make another plan, nothing is "
            "written and the new one is shown)</form>" + _one_way_first(link, configured)
        )
    else:
        apply = ""
    return (
        f"<h2>The plan, read {_age(plan.read_at, now)}</h2>"
        + _table(("profile", "what its first sync writes"), rows)
        + unread
        + f"<pre>{_e(chr(10).join(plan.lines))}</pre>"
        + apply
    )


def _kept_off(kept_off: Sequence[KeptOffCount]) -> list[tuple[str, str]]:
    """The plays `deadletters discard --for-good` keeps off a link's target, per link and
    profile: the user's choice (not red), told where they look so it is not forgotten."""
    fix = _e(KEPT_OFF_FIX)
    return [
        (
            _e(f"kept off for good: {k.target} for {k.profile} (sync {k.link})"),
            f"{k.plays} play(s) ({_code(fix)})",
        )
        for k in kept_off
    ]


def _code(text: str) -> str:
    """`backquoted` parts of an escaped text as <code>."""
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _kept(kept: Sequence[Leftover], kind: str) -> str:
    """State kept for profiles or links the config no longer has: not red (one taken out on
    purpose needs nothing), but a renamed one's state waits under its old name."""
    return "".join(f"<p>{_e(k.message)}.</p>" for k in kept if k.kind == kind)


def _clocks(clocks: Mapping[str, float]) -> str:
    """A machine clock far off a service's: plays are dated and matched by the minute."""
    return "".join(
        f'<p class="bad">{_e(_clocks_differ(service, skew))} ({_e(service)}\'s is '
        f"{'ahead' if skew > 0 else 'behind'}): plays may be dated or matched wrong. Turn on "
        "time sync (NTP) on the machine that is off.</p>"
        for service, skew in _skews(clocks)
    )


def _skews(clocks: Mapping[str, float]) -> list[tuple[str, float]]:
    """The services whose clock is too far off this machine's, with how far (seconds)."""
    return [(s, skew) for s, skew in sorted(clocks.items()) if abs(skew) > CLOCK_WARNING]


def _clocks_differ(service: str, skew: float) -> str:
    return (
        f"The clocks of this machine and of {service} differ by {round(abs(skew) / 60)} minute(s)"
    )


def _alerts(health: Health, now: float, app: HomeAssistantApp | None = None) -> str:
    """Alert destinations that did not load, or do not take what is sent: only here (and in the
    log) can the user learn that alerts do not reach them. From the Home Assistant options
    form, each is named as that form lists it (`alert_urls` entry N, counted from 1 with its
    blank entries)."""
    options_form = app is not None and app.options_form

    def named(text: str) -> str:
        return _as_the_form_names(text, app)

    fix = (
        "fix it in the app's Configuration tab and restart the app"
        if options_form
        else "fix it and restart (<code>watchbridge check-config</code> checks it)"
    )
    lines = [
        f'<p class="bad">Alerts are not sent to {_e(named(problem))}: {fix}.</p>'
        for problem in health.problems
    ]
    failing = health.failing
    if failing is not None:
        lines.append(
            f'<p class="bad">Alerts did not get through to {_e(named(failing.to))}: '
            f"{failing.sends} "
            f"failed since {_age(failing.since, now)}; each is sent again, a minute later at "
            "first, then further apart while they fail (at most an hour). "
            "<code>watchbridge test-alert</code> tries the destinations.</p>"
        )
    elif health.destinations:
        lines.append(f"<p>Sent to {health.destinations} destination(s).</p>")
    if not health.destinations and not health.problems:
        empty = "alert_urls" if options_form else "alerts.urls"
        lines.append(
            f"<p>None sent: <code>{empty}</code> is empty, so problems show only here and in "
            "the log.</p>"
        )
    return "".join(lines)


def _as_the_form_names(text: str, app: HomeAssistantApp | None) -> str:
    """An alert destination's problem, its `alerts.urls` entries named as the Home Assistant
    options form lists them (where the app has that form)."""
    if app is None or not app.options_form:
        return text
    return as_option_entries(text, app.alert_url_entries)


def _sign_ins(sign_ins: Sequence[SignIn], now: float, signing_in: Sequence[PageSignIn]) -> str:
    """Each sign-in that ends (Trakt, AniList, Serializd), and a refused Plex token (the
    server's own on a "(server)" row): one that needs the user is in red (not one that was
    not tried yet). A Trakt one that needs the user has a button that signs in here; one
    started so shows its code to enter, then what it came to."""
    if not sign_ins:
        return ""
    started = {(one.service, one.profile): one for one in signing_in}
    rows = []
    for one in sign_ins:
        state = _e(STATE_WORDS.get(one.state, one.state))
        expires = (
            REFUSED_EXPIRY
            if one.token_refused
            else RENEWS_ITSELF
            if one.renews and one.ok
            else "-"
            if one.expires_at is None
            else _e(_expires(one.expires_at, now))
        )
        message = _e(one.message)
        if one.needs_you:
            state, message = (
                f'<span class="bad">{state}</span>',
                f'<span class="bad">{message}</span>',
            )
        here = started.get((one.service, one.profile))
        if here is not None:
            message += _page_sign_in(here, now)
        if _offers_button(one, here, now):
            message += _sign_in_button(one.profile)
        whose = "(server)" if one.service_wide else _e(one.profile)
        rows.append((whose, _e(one.service), state, expires, message))
    return '<p id="sign-ins">Sign-ins:</p>' + _table(
        ("profile", "service", "state", "expires", ""), rows
    )


def _dead_letters(status: StoreStatus, now: float) -> str:
    """The newest dead letters, each as `deadletters list` names its title, with what it was
    to do, where, whose, when it was given up and why: the app's user cannot run the
    command, and must tell one to retry (a service down then) from one to give up (a title
    the service does not have). "And N more" counts the rest."""
    if not status.dead_shown:
        return ""
    items = "".join(
        f"<li>{_e(d.title)}: {_e(words.dead_what(d.action))} for {_e(service_title(d.target))}"
        f" ({_e(d.profile)}), given up {_age(d.at, now)}: {_e(services_titled(d.reason))}</li>"
        for d in status.dead_shown
    )
    more = status.dead_letters - len(status.dead_shown)
    return f"<ol>{items}</ol>" + (f"<p>and {more} more</p>" if more > 0 else "")


# Relative: it works behind ingress.
_RETRY_BUTTON = (
    '<form method="post" action="deadletters/retry"><button>Retry all dead letters here'
    "</button> (those the config can still deliver)</form>"
)


def _retried(retried: tuple[float, list[str]] | None, now: float) -> str:
    if retried is None or now - retried[0] > RETRIED_SHOWN:
        return ""
    at, lines = retried
    return f"<p>Retried from this page {_age(at, now)}: {_e('; '.join(lines))}.</p>"


def _sign_in_button(profile: str) -> str:
    """A form that starts `profile`'s Trakt sign-in (relative: it works behind ingress)."""
    action = "signin/trakt?" + urllib.parse.urlencode({"profile": profile})
    return (
        f'<form method="post" action="{_e(action)}">'
        f"<button>{SIGN_IN_BUTTON}</button> (shows the code to enter on trakt.tv)</form>"
    )


def _offers_button(one: SignIn, here: PageSignIn | None, now: float) -> bool:
    """Whether the page offers its sign-in button beside `one` (`here`: the sign-in started
    from the page for it, if any)."""
    return one.service == "trakt" and one.needs_you and (here is None or _may_press(here, now))


def _trakt_buttons(
    sign_ins: Sequence[SignIn], signing_in: Sequence[PageSignIn], now: float
) -> frozenset[str]:
    """The profiles whose Trakt sign-in the page offers its button for."""
    started = {(one.service, one.profile): one for one in signing_in}
    return frozenset(
        one.profile
        for one in sign_ins
        if _offers_button(one, started.get((one.service, one.profile)), now)
    )


def _button_would_fix(held: Waiting, buttons: frozenset[str]) -> bool:
    """Whether `held` waits for the Trakt sign-in the page offers its button for."""
    return held.target == "trakt" and held.profile in buttons and _TRAKT_AUTH in held.reason


_TRAKT_AUTH = "watchbridge auth trakt"
# Beside a held delivery's `watchbridge auth trakt`: the app's user has no terminal.
_BUTTON_BESIDE = f', or press <a href="#sign-ins">{SIGN_IN_BUTTON}</a> under Sign-ins'


def _may_press(one: PageSignIn, now: float) -> bool:
    """Whether the button is offered again: not while it runs, nor while Trakt asked for a
    pause (a press would only be answered 429 again)."""
    return not one.running and (one.retry_at is None or one.retry_at <= now)


def _page_sign_in(one: PageSignIn, now: float) -> str:
    if one.running and one.code is None:
        return "<p>Asking Trakt for a code…</p>"
    if one.running:
        left = "" if one.expires_at is None else f". It expires {_until(one.expires_at, now)}"
        url = _e(one.url or "")
        # Only a web address becomes a link: a javascript: one from a service (or whatever
        # answers at services.trakt.auth_url) would run in this page when clicked.
        if urllib.parse.urlsplit(one.url or "").scheme in ("http", "https"):
            url = f'<a href="{url}" target="_blank" rel="noopener noreferrer">{url}</a>'
        return (
            f"<p>Open {url} "
            f"and enter the code <strong><code>{_e(one.code)}</code></strong>{left}. This "
            "page looks again every 10 seconds and tells when it is done.</p>"
        )
    marked = ' class="bad"' if one.failed else ""
    pause = (
        f" It asks for a pause: the button is back {_until(one.retry_at, now)}."
        if one.retry_at is not None and one.retry_at > now
        else ""
    )
    return f"<p{marked}>{_e(one.outcome)}{pause}</p>"


def _expires(timestamp: float, now: float) -> str:
    return _until(timestamp, now) if timestamp > now else _age(timestamp, now)


def _doubling(doubling: Doubling) -> str:
    """A Plex server both senders report: a problem only when each viewing counts twice."""
    marked = ' class="bad"' if doubling.counted_twice else ""
    return f"<p{marked}>{_e(doubling.message)}: {_e(doubling.fix)}.</p>"


def _where_the_secret_is(app: HomeAssistantApp | None, made_up: bool) -> str:
    """Where the user finds the webhook secret: the app's user may have no terminal, so a
    secret the service made up (none configured) is one to replace, not to look for."""
    if app is None:
        return "<code>watchbridge webhook-urls</code> prints the full URLs"
    if not made_up:
        if app.options_form:
            return "it is the app's <code>webhook_secret</code> option (its Configuration tab)"
        return "it is your YAML's <code>server.webhook_secret</code>"
    unset = (
        "the app's <code>webhook_secret</code> option is empty"
        if app.options_form
        else "your YAML sets no <code>server.webhook_secret</code> (write "
        "<code>server.webhook_secret: ${WATCHBRIDGE_WEBHOOK_SECRET}</code> to take the app's "
        "<code>webhook_secret</code> option)"
    )
    return (
        f"{unset}, so the app made one up, which only <code>watchbridge webhook-urls</code> "
        "shows; set the option (the app's Configuration tab) to a long random string, restart "
        "the app and put it in your media servers' webhook URLs"
    )


def _refused(refused: Sequence[Refusal], now: float, app: HomeAssistantApp | None) -> str:
    going_on = [r for r in refused if not r.over(now)]
    over = [r for r in refused if r.over(now)]
    page = ""
    if going_on:
        rows = [
            (
                _e(r.source),
                f'<span class="bad">{r.status}: {_e(r.said)}</span>',
                str(r.webhooks),
                _age(r.last_at, now),
                _e(r.reason),
                _e(f"{r.fix(app)} {sentence(r.warning(now))}"),
            )
            for r in going_on
        ]
        page += '<p class="bad">Refused since the start:</p>' + _table(
            ("source", "answer", "webhooks", "last", "last reason", "what to do"), rows
        )
    if over:
        taken_rows = [
            (
                _e(r.source),
                f"{r.status}: {_e(r.said)}",
                str(r.webhooks),
                _age(r.last_at, now),
                _age(r.taken_at, now),
                _e(r.reason),
                _e(r.warning(now)),
            )
            for r in over
        ]
        # Over, not in red; but the plays those webhooks carried are still missing.
        page += "<p>Refused earlier since the start, taken again since:</p>" + _table(
            (
                "source",
                "answer",
                "webhooks",
                "last refused",
                "last taken",
                "last reason",
                "the plays they carried",
            ),
            taken_rows,
        )
    return page


def _catch_up(line: CatchUpLine) -> str:
    """A line of the catch-up, in red when it needs the user."""
    bad = ' class="bad"' if line.needs_you else ""
    return f"<p{bad}>{_e(line.message)}.</p>"


def _tested(test: LastWebhook, now: float) -> str:
    """A source's test notification, in the user's words: what it proves, what it does not."""
    return (
        f"Test notification from {test.source} received {_age(test.at, now)}: its URL and"
        " secret work. It carries no play: play something for a few seconds to see its first"
        " webhook here"
    )


def _last_webhooks(last: Sequence[LastWebhook], now: float) -> str:
    if not last:
        return "<p>No webhook accepted yet.</p>"
    shown = servers_shown(last)  # by its name, where its webhooks give one
    rows = [
        (_e(w.source), _e(shown[(w.source, w.server)] if w.server else "-"), _age(w.at, now))
        for w in last
    ]
    return _table(("source", "server", "last webhook"), rows)


def _renamed(renamed: Sequence[RenameSighting], now: float) -> str:
    intro = (
        "Renamed on the media server since the start, taken by the id watchbridge remembered "
        "for the name the profile lists:"
    )
    return _routed_by_memory(intro, [(r.renamed, r.webhooks, r.last_at) for r in renamed], now)


def _new_ids(new_ids: Sequence[NewIdSighting], now: float) -> str:
    intro = (
        "A new id on the media server since the start, taken by the name watchbridge "
        "remembered for the id the profile lists:"
    )
    return _routed_by_memory(intro, [(n.new_id, n.webhooks, n.last_at) for n in new_ids], now)


def _routed_by_memory(
    intro: str, seen: Sequence[tuple[Renamed | NewId, int, float]], now: float
) -> str:
    """Accounts whose webhooks went to a profile by what watchbridge remembered of them."""
    if not seen:
        return ""
    rows = [
        (_e(what.learnt.profile), str(webhooks), _age(last_at, now), _e(what.message))
        for what, webhooks, last_at in seen
    ]
    return f"<p>{intro}</p>" + _table(("profile", "webhooks", "last", "what to do"), rows)


def _listed_twice(twice: Sequence[TwiceSighting], now: float) -> str:
    if not twice:
        return ""
    rows = [
        (
            _e(t.twice.source),
            _e(f"{t.twice.name} (id {t.twice.account_id})"),
            _e(t.twice.profile),
            str(t.webhooks),
            _age(t.last_at, now),
            _e(t.twice.message),
        )
        for t in twice
    ]
    return f"<p>{LISTED_TWICE_INTRO}:</p>" + _table(
        ("source", "account", "goes to", "webhooks", "last", "what to do"), rows
    )


LISTED_TWICE_INTRO = (
    "Listed by two profiles, by its name and by its id: its plays go to the one listing its id"
    " (webhooks since the start)"
)


def _unlisted(
    config: Config, unlisted: Sequence[Unlisted], learnt: Sequence[Learnt], now: float
) -> str:
    if not unlisted:
        return ""
    rows = [
        (
            _e(u.source),
            _e(u.label),
            str(u.webhooks),
            str(u.plays),
            _age(u.last_at, now),
            _e(unlisted_fix(config, u, learnt)),
        )
        for u in unlisted
    ]
    return f"<p>{UNLISTED_INTRO}:</p>" + _table(
        ("source", "account", "webhooks", "plays", "last", "what to do"), rows
    )


UNLISTED_INTRO = (
    "Ignored, no profile lists the account (remembered until it sends nothing for"
    f" {UNLISTED_KEEP / 86400 / 7:.0f} weeks)"
)


def _defaulted(config: Config, taken: Sequence[Unlisted], now: float) -> str:
    if not taken:
        return ""
    rows = [
        (
            _e(u.source),
            _e(f"{u.label} on {u.server_shown}" if u.server else u.label),
            _e(u.default_profile),
            str(u.webhooks),
            str(u.plays),
            _age(u.last_at, now),
            _e(defaulted.fix(config, u)),
        )
        for u in taken
    ]
    return f"<p>{DEFAULTED_INTRO}:</p>" + _table(
        ("source", "account", "goes to", "webhooks", "plays", "last", "what to do"), rows
    )


def _not_sent_by_plex(config: Config, taken: Sequence[tuple[ForPlex, int]], now: float) -> str:
    if not taken:
        return ""
    rows = [
        (
            _e(f"{one.label} on {one.server_shown}"),
            _e(one.profile),
            str(plays),
            _age(one.received_at, now),
            _e(one.fix(config)),
        )
        for one, plays in taken
    ]
    return f"<p>{NOT_SENT_BY_PLEX_INTRO}:</p>" + _table(
        ("account", "profile", "plays", "last", "what to do"), rows
    )


NOT_SENT_BY_PLEX_INTRO = (
    "Listed under users.plex, but Plex's own webhook sent none of their plays (no Plex Pass?):"
    f" taken from Tautulli's reports, {forplex.GRACE / 60:.0f} minutes late"
)


DEFAULTED_INTRO = (
    "Taken by the default profile, no profile lists the account (counted hourly; remembered"
    f" until it sends nothing for {DEFAULTED_KEEP / 86400:.0f} days)"
)


def unlisted_fix(config: Config, unlisted: Unlisted, learnt: Iterable[Learnt] = ()) -> str:
    """What to do about an unlisted account: the line that lists it (under the profile its
    alert named, if any), what to add where when it probably is a listed person's own account
    on another server (`learnt`: the names remembered for listed accounts), or, for webhooks
    naming no one, the sender's setting."""
    line = unlisted.line(config, unlisted.profile or None)
    if not unlisted.entry:
        return line
    own = probably_of(config, unlisted, learnt)
    if own is not None and unlisted.profile in ("", own):
        return own_hint(unlisted, own)
    return f"to take its plays, write {line} (or ignore it: a friend's account)"


def _profiles(config: Config) -> str:
    if not config.profiles:
        return (
            f'<p class="bad">{NO_PROFILES}. Map your '
            "media-server accounts under <code>profiles</code> in the config.</p>"
        )
    rows = []
    for name, profile in config.profiles.items():
        accounts = [s for s in vars(profile.accounts) if getattr(profile.accounts, s)]
        users = "; ".join(f"{s}: {', '.join(v)}" for s, v in vars(profile.users).items() if v)
        label = f"{name} (default)" if profile.default else name
        gaps = ", ".join(copied_nowhere(config, profile)) or "-"
        rows.append((_e(label), _e(", ".join(accounts) or "none"), _e(users or "none"), _e(gaps)))
    return _table(("profile", "accounts", "media-server users", "plays sent nowhere"), rows)


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """A table; cells are HTML already (escape text with `_e` before)."""
    header = "".join(f"<th>{_e(h)}</th>" for h in head) if any(head) else ""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{header}</tr>' if header else ''}{body}</table>"


def _flag(count: int, hint: str) -> str:
    return f'<span class="bad">{count}</span> ({hint})' if count else "0"


def _age(timestamp: float | None, now: float) -> str:
    """How long ago, then when on the user's clock: `16 min ago (14:02)`."""
    if timestamp is None:
        return "none"
    return f"{_ago(timestamp, now)} ({clock_time(timestamp, now)})"


def _ago(timestamp: float, now: float) -> str:
    """How long ago alone, where a clock time would crowd the line (the summary)."""
    return f"{_span(now - timestamp)} ago"


def _until(timestamp: float, now: float) -> str:
    if timestamp <= now:
        return "now"
    return f"in {_span(timestamp - now)} ({clock_time(timestamp, now)})"


def _span(seconds: float) -> str:
    whole = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if whole >= size:
            return f"{whole // size} {unit}"
    return f"{whole} s"


def _e(text: object) -> str:
    """Text as HTML: escaped, with no bidirectional control to turn the page's text around."""
    return html.escape(unturned(str(text)))
