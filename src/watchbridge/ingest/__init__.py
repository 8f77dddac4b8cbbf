"""Webhook bodies → canonical events. Pure: no I/O, no clock; the route stores what we return.

`parse(source, body, content_type)` reads the body once (multipart, JSON or form, see body.py)
and hands the decoded JSON object to the source's parser. Every parser returns Accepted,
Ignored (well-formed but not for us; the reason is a metric label from common.IGNORE_REASONS)
or Rejected (malformed; a one-line reason) for any input, and never raises.
"""

from __future__ import annotations

from collections.abc import Callable

from watchbridge.ingest import emby, generic, jellyfin, plex, tautulli
from watchbridge.ingest.body import is_blank, read_body
from watchbridge.ingest.common import IGNORE_REASONS, TEST_EVENT, Payload
from watchbridge.model import Accepted, Ignored, ParseResult, Rejected

__all__ = ["IGNORE_REASONS", "PARSERS", "SOURCES", "parse"]

Parser = Callable[[bytes, str], ParseResult]


def _from_body(parse_payload: Callable[[Payload], ParseResult], *, fields: bool = True) -> Parser:
    """A source parser that takes the raw body and its Content-Type; `fields`: whether it
    takes plain form fields (read_body)."""

    def parse_body(body: bytes, content_type: str) -> ParseResult:
        decoded = read_body(body, content_type, fields=fields)
        return decoded if isinstance(decoded, Rejected) else _with_document(parse_payload, decoded)

    return parse_body


def _blank_is(blank: ParseResult, parse_payload: Callable[[Payload], ParseResult]) -> Parser:
    """`_from_body`, but a blank body gives `blank`."""

    def parse_body(body: bytes, content_type: str) -> ParseResult:
        decoded = read_body(body, content_type)
        if isinstance(decoded, Rejected):
            return blank if is_blank(body, content_type) else decoded
        return _with_document(parse_payload, decoded)

    return parse_body


# Emby's "Send Test" before 4.9.0.37 sent nothing: acknowledged.
_EMBY_BLANK = Ignored(TEST_EVENT)
# Tautulli's Webhook agent has a JSON Data box per trigger, empty until filled in, and posts an
# empty body for a ticked trigger whose box is empty (its Test Notifications with an empty box
# looks the same): refused, so that the user hears of it, since a Stop or Watched left so loses
# every play.
_TAUTULLI_BLANK = Rejected(
    "empty body: Tautulli sends one for a ticked trigger whose JSON Data box is empty (and for "
    "Test Notifications with it empty): paste the JSON Data from docs/webhooks.md into the box "
    "of every ticked trigger (Playback Start, Stop, Pause, Resume, Watched) or untick the trigger"
)


def _with_document(
    parse_payload: Callable[[Payload], ParseResult], decoded: Payload
) -> ParseResult:
    result = parse_payload(decoded)
    if isinstance(result, Accepted):
        return Accepted(result.events, result.warnings, decoded)
    return result


PARSERS: dict[str, Parser] = {
    "plex": _from_body(plex.parse),
    "jellyfin": _from_body(jellyfin.parse),
    "emby": _blank_is(_EMBY_BLANK, emby.parse),
    "tautulli": _blank_is(_TAUTULLI_BLANK, tautulli.parse),
    "generic": _from_body(generic.parse, fields=False),  # our schema is JSON
}
SOURCES = tuple(PARSERS)


def parse(source: str, body: bytes, content_type: str) -> ParseResult:
    """The canonical result of one webhook request for `source`."""
    parser = PARSERS.get(source)
    if parser is None:
        return Rejected(f"unknown webhook source {source[:40]!r}")
    return parser(body, content_type)
