"""One body reader for every source: raw bytes + Content-Type in, the JSON object out.

Media servers disagree on how they send JSON (pitfalls §8): Plex and Emby use
multipart/form-data with the document in a part named `payload` (Plex) or `data` (Emby),
sometimes as a plain field and sometimes as a file part with its own Content-Type, next to a
JPEG `thumb`; Jellyfin sends JSON labelled text/plain; Tautulli may send form fields. So we
sniff instead of trusting the declared type: multipart, else JSON, else form-urlencoded.

Template quirks (pitfalls §9) handled here: raw newlines inside strings are accepted, empty
strings mean "absent" (unknown template variables render as ""), and a body in our Jellyfin
template's shape that a raw value broke is read line by line. .NET booleans ("True") are read
by `common.flag`, not rewritten here, so a title that is literally "True" survives.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from watchbridge.model import Rejected

PAYLOAD_NAMES = ("payload", "data")  # Plex, Emby

_CRLF = re.compile(rb"\r?\n")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CONTAINERS = (dict, list)


def _without_empty_strings(node: dict[str, object]) -> dict[str, object]:
    """The decoder's object hook: drop keys whose value is "" (see _drop_empty_strings)."""
    if "" in node.values():  # one C-level scan; templates seldom leave a variable empty
        for key in [k for k, v in node.items() if isinstance(v, str) and not v]:
            del node[key]
    return node


# The fallback decoder: raw control characters inside strings are allowed; empty strings are
# dropped while decoding (the hook sees every object, innermost first, after duplicate keys are
# resolved), which costs a third of a separate walk over the decoded tree.
_DECODER = json.JSONDecoder(strict=False, object_hook=_without_empty_strings)
# The fast decoder (msgspec comes with Litestar) reads well-formed UTF-8 JSON four times faster
# and gives the same values: it keeps the last of duplicate keys and reads numbers exactly like
# the standard library. What it refuses (control characters, NaN, 1e400, lone surrogates,
# UTF-16, a BOM) goes to the fallback, so what we accept and each error message stay the same.
_FAST_DECODER = msgspec.json.Decoder()
_FAST_REFUSED = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_JSON_START = re.compile(rb"[ \t\n\r\x0b\x0c]*\{")  # body.lstrip().startswith(b"{"), no copy


def _windows_1252_byte(error: UnicodeError) -> tuple[str, int]:
    """A byte that is no UTF-8, read as Windows-1252 (as Latin-1 where that has no character):
    a script that sends Latin-1 without saying so (Windows PowerShell 5.1 without a charset in
    its Content-Type) names "Jörg" or "Pokémon" so. Bytes that are UTF-8 stay UTF-8."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    byte = error.object[error.start : error.start + 1]
    try:
        return byte.decode("cp1252"), error.start + 1
    except UnicodeDecodeError:
        return byte.decode("latin-1"), error.start + 1


WINDOWS_1252_FALLBACK = "watchbridge.windows-1252-fallback"
codecs.register_error(WINDOWS_1252_FALLBACK, _windows_1252_byte)


@dataclass(frozen=True)
class Part:
    """One part of a multipart body."""

    headers: dict[str, str]
    content: bytes

    @property
    def disposition(self) -> dict[str, str]:
        _, params = parse_header(self.headers.get("content-disposition", ""))
        return params

    @property
    def name(self) -> str:
        return self.disposition.get("name", "")

    @property
    def content_type(self) -> str:
        media_type, _ = parse_header(self.headers.get("content-type", ""))
        return media_type


def read_body(
    body: bytes, content_type: str, *, fields: bool = True
) -> dict[str, object] | Rejected:
    """The JSON object a media server sent, or why it cannot be read (one line). `fields`:
    whether plain form fields are one (Tautulli's form mode), not a script's mistake."""
    if not body or body.isspace():  # not body.strip(): no copy of a large body
        return Rejected("empty body")
    media_type, params = parse_header(content_type)
    declared_multipart = media_type.startswith("multipart/") and not _looks_json(body)
    if declared_multipart or _looks_multipart(body):
        return _from_multipart(body, params.get("boundary", ""))
    charset = _charset(params.get("charset", ""))
    # A legacy charset cannot decode to a lone surrogate; should one come through anyway, it
    # passes as bytes that the lenient reader turns into U+FFFD.
    text = (
        body
        if charset == "utf-8"
        else body.decode(charset, "replace").encode("utf-8", "surrogatepass")
    )
    decoded = decode_json(text, "body")
    if isinstance(decoded, Rejected) and _looks_form(media_type, body):
        return _from_form(body, charset, fields)
    return decoded


@functools.lru_cache(maxsize=64)
def _charset(declared: str) -> str:
    """The codec a body declares (Windows PowerShell 5.1 sends Latin-1); UTF-8 when it names
    none we know, no charset (base64, idna: they cannot read any bytes as text; Python's
    unicode_escape: it would rewrite the JSON's own escapes), or a UTF (JSON's own detection
    reads those)."""
    try:
        name = codecs.lookup(declared).name if declared else "utf-8"
        b"\xff\x00".decode(name, "replace")
    except (LookupError, UnicodeError):
        return "utf-8"
    if name.endswith("escape"):
        return "utf-8"
    return "utf-8" if name.startswith("utf") or name == "ascii" else name  # ASCII: a UTF-8 subset


def parse_header(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; key=value; key="quoted; value"` → lower-case type and parameters."""
    media_type, params = _parse_header(value)
    return media_type, dict(params)  # the cached dict stays unshared


@functools.lru_cache(maxsize=64)
def _parse_header(value: str) -> tuple[str, dict[str, str]]:
    # A media server sends the same few header values with every webhook; bounded, so odd
    # values only evict each other.
    media_type, *pairs = _split_unquoted(value, ";")
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if sep:
            params[key.strip().lower()] = _unquote(raw.strip())
    return media_type.strip().lower(), params


def _split_unquoted(value: str, separator: str) -> list[str]:
    """Split on `separator` where it is not inside double quotes (`separator` is not `"`)."""
    pieces: list[str] = []
    current: list[str] = []
    # Between quotes are the odd segments: kept whole, quotes included.
    for index, segment in enumerate(value.split('"')):
        if index:
            current.append('"')
        if index % 2:
            current.append(segment)
            continue
        first, *rest = segment.split(separator)
        current.append(first)
        for piece in rest:
            pieces.append("".join(current))
            current = [piece]
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _looks_json(body: bytes) -> bool:
    return _JSON_START.match(body) is not None


def _looks_form(media_type: str, body: bytes) -> bool:
    if media_type == "application/x-www-form-urlencoded":
        return True
    return body.startswith(tuple(name.encode() + b"=" for name in PAYLOAD_NAMES))


def _looks_multipart(body: bytes) -> bool:
    """A multipart body sent with a wrong Content-Type: starts with a boundary line."""
    head = body[:1024].lstrip()
    return head.startswith(b"--") and b"content-disposition" in head.lower()


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body; a missing final boundary ends the last part at the end."""
    return [Part(headers, body[start:end]) for headers, start, end in _scan_parts(body, boundary)]


def _scan_parts(body: bytes, boundary: str) -> Iterator[tuple[dict[str, str], int, int]]:
    """Each part's headers and where its content starts and ends, in order.

    Works on offsets into `body` so that a part nobody reads (a 30 KB thumb) is never copied,
    and stops wherever the caller stops. Splits exactly like `body.split(delimiter)`.
    """
    boundary = boundary or _boundary_from_body(body)
    if not boundary:
        return
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    found = body.find(delimiter)
    if found < 0:
        return
    pos = found + len(delimiter)
    while True:
        following = body.find(delimiter, pos)
        end = len(body) if following < 0 else following
        if body.startswith(b"--", pos, end):
            return  # the close delimiter
        part = _locate_part(body, pos, end)
        if part is not None:
            yield part
        if following < 0:
            return
        pos = following + len(delimiter)


def _boundary_from_body(body: bytes) -> str:
    first_line = _CRLF.split(body[:1024].lstrip(), maxsplit=1)[0]
    return first_line[2:].strip().decode("latin-1") if first_line.startswith(b"--") else ""


def _locate_part(body: bytes, pos: int, end: int) -> tuple[dict[str, str], int, int] | None:
    """`<rest of delimiter line> CRLF headers CRLF CRLF content CRLF` in body[pos:end]."""
    newline = body.find(b"\n", pos, end)
    if newline < 0:
        return None
    rest = newline + 1
    if body.startswith((b"\r\n", b"\n"), rest, end):
        header_block, start = b"", body.index(b"\n", rest, end) + 1
    else:
        header_end = _HEADER_END.search(body, rest, end)
        if header_end is None:
            return None
        header_block, start = body[rest : header_end.start()], header_end.end()
    # The line break before the next delimiter belongs to the delimiter, not the content.
    if body.endswith(b"\r\n", start, end):
        end -= 2
    elif body.endswith(b"\n", start, end):
        end -= 1
    return _parse_part_headers(header_block), start, end


def _parse_part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def is_blank(body: bytes, content_type: str) -> bool:
    """An empty body, or a multipart body whose payload part is empty (Emby's test button
    before 4.9.0.37 sent one of these)."""
    if not body or body.isspace():
        return True
    media_type, params = parse_header(content_type)
    if not (media_type.startswith("multipart/") or _looks_multipart(body)):
        return False
    found = _payload_part(body, params.get("boundary", "")) or _payload_part(body, "")
    if not found:
        return False
    _, start, end = found
    return not body[start:end].strip()


def _from_multipart(body: bytes, boundary: str) -> dict[str, object] | Rejected:
    # A wrong boundary parameter is rarer than a missing one, but costs nothing to survive.
    found = _payload_part(body, boundary)
    if found is None:
        found = _payload_part(body, "")
    if found is None:
        return Rejected("multipart body has no parts (boundary missing or wrong)")
    if not found:
        return Rejected("multipart body has no payload part")
    name, start, end = found
    return decode_json(body[start:end], f"{name} part")


def payload_head(head: bytes, content_type: str) -> int | None:
    """How many bytes of a multipart body's beginning `head` hold its whole payload part, up to
    and including the delimiter after it; `read_body` finds the same payload in those bytes.

    None when `head` holds no such part: the body is not multipart, has no payload part, or the
    part goes on past `head` (the part itself, or what comes before it, is too large)."""
    media_type, params = parse_header(content_type)
    declared_multipart = media_type.startswith("multipart/") and not _looks_json(head)
    if not (declared_multipart or _looks_multipart(head)):
        return None
    found: tuple[str, int, int] | tuple[()] | None = None
    for boundary in (params.get("boundary", ""), _boundary_from_body(head)):
        if boundary and (found := _payload_part(head, boundary)) is not None:
            break  # as `_from_multipart`: the declared boundary, else the body's first line
    if not found:
        return None
    _, _, end = found
    # `_locate_part` left out the line break before the delimiter that ends the part.
    if head.startswith(b"\r\n", end):
        end += 2
    elif head.startswith(b"\n", end):
        end += 1
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    return end + len(delimiter) if head.startswith(delimiter, end) else None


def _payload_part(body: bytes, boundary: str) -> tuple[str, int, int] | tuple[()] | None:
    """The first part named like PAYLOAD_NAMES[0] that is not an image, else the first named
    like PAYLOAD_NAMES[1], ...: (name, start, end); () if there are parts but none of those;
    None if there are no parts. Stops at a part of the first name: Plex sends it first."""
    best: tuple[int, int, int] | None = None  # (rank, start, end)
    any_part = False
    for headers, start, end in _scan_parts(body, boundary):
        any_part = True
        part = Part(headers, b"")
        name = part.name
        if name not in PAYLOAD_NAMES or part.content_type.startswith("image/"):
            continue
        rank = PAYLOAD_NAMES.index(name)
        if best is None or rank < best[0]:
            best = (rank, start, end)
            if rank == 0:
                break
    if best is None:
        return () if any_part else None
    return PAYLOAD_NAMES[best[0]], best[1], best[2]


# A script's JSON sent as form fields (Python requests' data=, curl -F).
FORM_FIELDS = (
    "body is form fields, not JSON: post the event as one JSON object (curl -d '{...}';"
    " Python requests: json=body, not data=body)"
)


def _from_form(
    body: bytes, charset: str = "utf-8", fields_taken: bool = True
) -> dict[str, object] | Rejected:
    """A form with a JSON `payload`/`data` field, or plain fields (Tautulli's form mode, when
    `fields_taken`); `charset`: what its escapes encode."""
    errors = WINDOWS_1252_FALLBACK if charset == "utf-8" else "replace"
    fields = dict(
        parse_qsl(
            body.decode(charset, errors),
            keep_blank_values=True,
            encoding=charset,
            errors=errors,
        )
    )
    for name in PAYLOAD_NAMES:
        if name in fields:
            return decode_json(fields[name].encode(), f"form field {name}")
    if not fields:
        return Rejected("form body has no fields")
    if not fields_taken:
        return Rejected(FORM_FIELDS)
    plain: dict[str, object] = dict(fields)
    return _drop_empty_strings(plain)


def decode_json(raw: bytes, what: str) -> dict[str, object] | Rejected:
    """A JSON object from bytes (UTF-8/16/32, BOM allowed, raw control characters allowed)."""
    try:
        decoded = _FAST_DECODER.decode(raw)
    except _FAST_REFUSED:
        return _decode_json_leniently(raw, what)
    if not isinstance(decoded, dict):
        return _not_an_object(what, decoded)
    # An empty string is written `""` whatever escapes are used, so most bodies need no walk.
    return _drop_empty_strings(decoded) if b'""' in raw else decoded


def _not_an_object(what: str, decoded: object) -> Rejected:
    if isinstance(decoded, list):  # a script batching its events
        return Rejected(f"{what} is a JSON list, not an object: post each event on its own")
    return Rejected(f"{what} is JSON but not an object")


def _decode_json_leniently(raw: bytes, what: str) -> dict[str, object] | Rejected:
    try:
        encoding = json.detect_encoding(raw)
        try:
            text = raw.decode(encoding, "surrogatepass")
        except UnicodeDecodeError:
            if encoding != "utf-8":
                raise
            text = raw.decode(encoding, WINDOWS_1252_FALLBACK)
        decoded = _loads_or_rescue(text)
        if _MAY_HOLD_SURROGATES.search(text):
            decoded = _without_lone_surrogates(decoded)
    except json.JSONDecodeError as error:
        return Rejected(
            # "Unterminated string starting at" ends in the word our "at line" starts with
            f"{what} is not JSON: {error.msg.removesuffix(' at')} at line {error.lineno}"
            f" column {error.colno}"
            f"{_template_value_it_cannot_carry(error.doc) or _naming_the_key(error)}"
        )
    except UnicodeDecodeError:
        return Rejected(f"{what} is not JSON: not valid UTF-8")
    except RecursionError:
        return Rejected(f"{what} is not JSON we accept: nested too deeply")
    except ValueError as error:
        return Rejected(f"{what} is not JSON we accept: {_value_refused(error)}")
    if not isinstance(decoded, dict):
        return _not_an_object(what, decoded)
    return decoded  # empty strings were dropped while decoding


def _value_refused(error: ValueError) -> str:
    """Why Python's JSON reader refused a value, in words for whoever writes the template (its
    own names a Python setting: a number of thousands of digits is Python's limit)."""
    if "integer string conversion" in str(error):
        return "a number has too many digits"
    return _one_line(str(error))


# A lone surrogate (`\ud83d`: a title cut mid-emoji) is no text: SQLite and UTF-8 cannot hold
# it. Only this reader lets one through (msgspec refuses them), written as an escape or as
# bytes that `surrogatepass` decoded; each becomes U+FFFD.
_MAY_HOLD_SURROGATES = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(node: Any) -> Any:
    if isinstance(node, str):
        return _LONE_SURROGATE.sub("\ufffd", node)
    if isinstance(node, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_lone_surrogates(value) for value in node]
    return node


def _forgiving_loads(text: str) -> object:
    """json.loads(text, strict=False), without building a decoder per call; a backslash that
    starts no JSON escape stands for itself (Jellyfin's template plugin escapes only quotes, so
    a title `AC\\DC` arrives as is)."""
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as error:
        if not error.msg.startswith(("Invalid \\escape", "Invalid \\uXXXX escape")):
            raise
        return _DECODER.decode(_ESCAPE.sub(_keep_stray_backslash, text))


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _keep_stray_backslash(escape: re.Match[str]) -> str:
    valid = escape[1] in '"\\/bfnrt' or len(escape[1]) == 5  # \uXXXX
    return escape[0] if valid else "\\" + escape[0]


def _loads_or_rescue(text: str) -> object:
    """_forgiving_loads(text), else our Jellyfin template read line by line, else its error."""
    try:
        return _forgiving_loads(text)
    except json.JSONDecodeError:
        rescued = _our_jellyfin_template(text)
        if rescued is None:
            raise
        return rescued


_TEMPLATE_SCHEMA = "watchbridge-jellyfin-1"
# `"Key": "value",`: the value runs to the line's last quote.
_TEMPLATE_LINE = re.compile(r'"([^"\\]+)"[ \t]*:[ \t]*"(.*)"[ \t]*,?')


def _our_jellyfin_template(text: str) -> dict[str, object] | None:
    """A body in our Jellyfin template's shape (docs/webhooks.md) that is not JSON, read line
    by line, or None. The plugin inserts values raw but for `"` → `\\"` in item fields, so a
    title ending in a backslash or a quote in a user (or, in older templates, device) name
    breaks the JSON, not the lines: each value is read back with `\\"` as `"` and every other
    backslash as itself."""
    if not _in_our_template(text):  # no line-by-line look at other bodies
        return None
    fields: dict[str, str] = {}
    for line in _template_lines(text):
        pair = _TEMPLATE_LINE.fullmatch(line)
        if pair is None:
            return None
        fields[pair[1]] = pair[2].replace('\\"', '"')
    if fields.get("schema") != _TEMPLATE_SCHEMA:
        return None
    return {key: value for key, value in fields.items() if value}


def _in_our_template(text: str) -> bool:
    return f'"schema": "{_TEMPLATE_SCHEMA}"' in text


def _template_lines(text: str) -> Iterator[str]:
    """The lines of a body in our Jellyfin template's shape, but its braces and blank lines."""
    for raw_line in text.split("\n"):  # not splitlines(): a title may hold U+2028
        line = raw_line.strip(" \t\r")
        if line not in ("{", "}", ""):
            yield line


def _template_value_it_cannot_carry(text: str) -> str:
    """`; our Jellyfin template cannot carry its "Name" value: tick Send All Properties ...`
    for a body in our template's shape that even its line-by-line reading cannot read (a title
    with a line break, and a backslash or quote that breaks the JSON), else "". The line the
    decoder stopped on is then the one after that value, and marking the item played again
    would send the same body: only Send All Properties, which escapes every value, gets it in."""
    if not _in_our_template(text):
        return ""
    key = ""  # of the last line read: a value running over lines began there
    for line in _template_lines(text):
        if pair := _TEMPLATE_LINE.fullmatch(line):
            key = pair[1]
            continue
        if own_key := _KEY_AT_LINE_START.match(line):
            key = own_key[1]
        break
    else:
        return ""  # every line reads: something else broke it
    if not key:
        return ""
    return (
        f'; our Jellyfin template cannot carry its "{key}" value: tick Send All Properties'
        " in the plugin's destination"
    )


_KEY_AT_LINE_START = re.compile(r'[ \t]*"([^"\\\r\n]{1,64})"[ \t]*:')


def _naming_the_key(error: json.JSONDecodeError) -> str:
    """` (the "DeviceName" line)` when the line the decoder stopped on starts with a key: a
    template's user then sees which field broke the body."""
    line_start = error.doc.rfind("\n", 0, error.pos) + 1
    key = _KEY_AT_LINE_START.match(error.doc, line_start)
    return f' (the "{key[1]}" line)' if key else ""


def _one_line(message: str) -> str:
    return message.splitlines()[0][:200] if message else "invalid"


def _drop_empty_strings(root: dict[str, object]) -> dict[str, object]:
    """Remove keys whose value is "" at any depth: templates render unknown variables as ""."""
    stack: list[object] = [root]
    push, pop = stack.append, stack.pop  # a loop, not recursion: JSON may nest very deeply
    while stack:
        node = pop()
        if isinstance(node, dict):
            empty = []
            for key, value in node.items():
                if isinstance(value, str):
                    if not value:
                        empty.append(key)
                elif isinstance(value, _CONTAINERS):
                    push(value)
            for key in empty:
                del node[key]
        elif isinstance(node, list):
            for value in node:
                if isinstance(value, _CONTAINERS):
                    push(value)
    return root
