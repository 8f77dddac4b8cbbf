"""One body reader for every source: raw bytes + Content-Type in, the JSON object out.

Media servers disagree on how they send JSON (pitfalls §8): Plex and Emby use
multipart/form-data with the document in a part named `payload` (Plex) or `data` (Emby),
sometimes as a plain field and sometimes as a file part with its own Content-Type, next to a
JPEG `thumb`; Jellyfin sends JSON labelled text/plain; Tautulli may send form fields. So we
sniff instead of trusting the declared type: multipart, else JSON, else form-urlencoded.

Template quirks (pitfalls §9) handled here: raw newlines inside strings are accepted and
empty strings mean "absent" (unknown template variables render as ""). .NET booleans ("True")
are read by `common.flag`, not rewritten here, so a title that is literally "True" survives.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from watchbridge.model import Rejected

PAYLOAD_NAMES = ("payload", "data")  # Plex, Emby

_CRLF = re.compile(rb"\r?\n")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


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


def read_body(body: bytes, content_type: str) -> dict[str, object] | Rejected:
    """The JSON object a media server sent, or why it cannot be read (one line)."""
    if not body.strip():
        return Rejected("empty body")
    media_type, params = parse_header(content_type)
    declared_multipart = media_type.startswith("multipart/") and not _looks_json(body)
    if declared_multipart or _looks_multipart(body):
        return _from_multipart(body, params.get("boundary", ""))
    decoded = decode_json(body, "body")
    if isinstance(decoded, Rejected) and _looks_form(media_type, body):
        return _from_form(body)
    return decoded


def parse_header(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; key=value; key="quoted; value"` → lower-case type and parameters."""
    media_type, *pairs = _split_unquoted(value, ";")
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if sep:
            params[key.strip().lower()] = _unquote(raw.strip())
    return media_type.strip().lower(), params


def _split_unquoted(value: str, separator: str) -> list[str]:
    """Split on `separator` where it is not inside double quotes."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _looks_json(body: bytes) -> bool:
    return body.lstrip().startswith(b"{")


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
    boundary = boundary or _boundary_from_body(body)
    if not boundary:
        return []
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    parts: list[Part] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        part = _parse_part(chunk)
        if part is not None:
            parts.append(part)
    return parts


def _boundary_from_body(body: bytes) -> str:
    first_line = _CRLF.split(body[:1024].lstrip(), maxsplit=1)[0]
    return first_line[2:].strip().decode("latin-1") if first_line.startswith(b"--") else ""


def _parse_part(chunk: bytes) -> Part | None:
    """`<rest of delimiter line> CRLF headers CRLF CRLF content CRLF` after one delimiter."""
    _, newline, rest = chunk.partition(b"\n")
    if not newline:
        return None
    if rest.startswith((b"\r\n", b"\n")):
        header_block, content = b"", rest.partition(b"\n")[2]
    else:
        end = _HEADER_END.search(rest)
        if end is None:
            return None
        header_block, content = rest[: end.start()], rest[end.end() :]
    return Part(_parse_part_headers(header_block), _without_line_end(content))


def _without_line_end(content: bytes) -> bytes:
    """The line break before the next delimiter belongs to the delimiter, not the content."""
    if content.endswith(b"\r\n"):
        return content[:-2]
    return content.removesuffix(b"\n")


def _parse_part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _from_multipart(body: bytes, boundary: str) -> dict[str, object] | Rejected:
    # A wrong boundary parameter is rarer than a missing one, but costs nothing to survive.
    parts = split_multipart(body, boundary) or split_multipart(body, "")
    if not parts:
        return Rejected("multipart body has no parts (boundary missing or wrong)")
    for name in PAYLOAD_NAMES:
        for part in parts:
            if part.name == name and not part.content_type.startswith("image/"):
                return decode_json(part.content, f"{name} part")
    return Rejected("multipart body has no payload part")


def _from_form(body: bytes) -> dict[str, object] | Rejected:
    """A form with a JSON `payload`/`data` field, or plain fields (Tautulli's form mode)."""
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    for name in PAYLOAD_NAMES:
        if name in fields:
            return decode_json(fields[name].encode(), f"form field {name}")
    if not fields:
        return Rejected("form body has no fields")
    plain: dict[str, object] = dict(fields)
    return _drop_empty_strings(plain)


def decode_json(raw: bytes, what: str) -> dict[str, object] | Rejected:
    """A JSON object from bytes (UTF-8/16/32, BOM allowed, raw control characters allowed)."""
    try:
        decoded = json.loads(raw, strict=False)
    except json.JSONDecodeError as error:
        return Rejected(
            f"{what} is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        )
    except UnicodeDecodeError:
        return Rejected(f"{what} is not JSON: not valid UTF-8")
    except RecursionError:
        return Rejected(f"{what} is not JSON we accept: nested too deeply")
    except ValueError as error:
        return Rejected(f"{what} is not JSON we accept: {_one_line(str(error))}")
    if not isinstance(decoded, dict):
        return Rejected(f"{what} is JSON but not an object")
    return _drop_empty_strings(decoded)


def _one_line(message: str) -> str:
    return message.splitlines()[0][:200] if message else "invalid"


def _drop_empty_strings(root: dict[str, object]) -> dict[str, object]:
    """Remove keys whose value is "" at any depth: templates render unknown variables as ""."""
    stack: list[object] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in [key for key, value in node.items() if value == ""]:
                del node[key]
            stack.extend(value for value in node.values() if isinstance(value, dict | list))
        elif isinstance(node, list):
            stack.extend(value for value in node if isinstance(value, dict | list))
    return root
