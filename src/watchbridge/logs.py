"""Structured logging (key=value or JSON) with secrets redacted before anything is written."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

REDACTED = "********"

# Secrets that may show up without being in the config: bearer tokens, tokens in URLs, and
# password/secret/token fields written as key=value or JSON.
_PATTERNS = [
    re.compile(r"(?i)((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(//[^/\s:@]+:)[^@\s/]+(?=@)"),  # the password in https://user:password@host
    re.compile(r"(?i)([?&](?:x-plex-token|token|api_key|apikey|access_token)=)[^&\s]+"),
    re.compile(
        r"(?i)((?:password|passwd|secret|token|api_key|apikey|authorization)[\"']?\s*[:=]\s*[\"']?)"
        r"[^\"'\s,&}]+"
    ),
]

# uvicorn adds `color_message`, a copy of msg with terminal colours.
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class Redactor:
    """Masks known secret values and secret-shaped fragments in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Very short values would mask ordinary words; config secrets are never that short.
        known = set(self.secrets) | {s for s in secrets if s and len(s) >= 4}
        self.secrets = sorted(known, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


class KeyValueFormatter(logging.Formatter):
    """`ts=... level=info logger=watchbridge.app msg="..." key=value`."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        parts = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            parts["exc"] = self.formatException(record.exc_info)
        # Each value is redacted before quoting can escape a secret out of recognition, and
        # the line again for `key=value` fragments the values do not hold on their own.
        line = " ".join(f"{key}={_quote(self.redact(str(v)))}" for key, v in parts.items())
        return self.redact(line)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        redacted = {key: _redacted(value, self.redact) for key, value in data.items()}
        return self.redact(json.dumps(redacted, default=str))


def _redacted(value: object, redact: Redactor) -> object:
    """A log field with secrets masked before JSON encoding escapes them."""
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


# How often each of uvicorn's warnings about a request it cannot take passes (see Throttled).
UVICORN_WARNINGS_EVERY = 600.0


class Throttled(logging.Filter):
    """Lets each warning (by its message, before arguments) through once per `every`, with how
    many it held back since. uvicorn warns once per request it cannot take (a TLS handshake on
    the plain port: a webhook URL pasted with https://; a websocket upgrade; a scanner), from
    anyone who reaches the port, for as long as they send: without this, a line per request.
    Bounded by uvicorn's messages; the least recently told goes first past `kept`."""

    def __init__(
        self, every: float = UVICORN_WARNINGS_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.every, self.clock, self.kept = every, clock, 32
        self._told: dict[str, tuple[float, int]] = {}  # message: when told, how many held since

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        key, now = str(record.msg), self.clock()
        told_at, held = self._told.pop(key, (None, 0))
        if told_at is not None and 0 <= now - told_at < self.every:
            self._told[key] = (told_at, held + 1)
            return False
        if held:
            record.more_since_last_line = held
        self._told[key] = (now, 0)
        while len(self._told) > self.kept:
            del self._told[next(iter(self._told))]
        return True


def mask_also(secrets: Iterable[str]) -> None:
    """Mask these values too in every log line from now on: secrets known only once the
    service runs (a webhook secret it generated and keeps in the database)."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, KeyValueFormatter | JsonFormatter):
            formatter.redact.add(secrets)


def setup_logging(
    level: str = "info",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:
    """Send every log record (ours, uvicorn's, litestar's) through one redacting formatter."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else KeyValueFormatter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar", "httpx", "httpcore"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    uvicorn = logging.getLogger("uvicorn.error")  # its per-request warnings (see Throttled)
    for stale in [f for f in uvicorn.filters if isinstance(f, Throttled)]:
        uvicorn.removeFilter(stale)
    uvicorn.addFilter(Throttled())
    # These log request URLs (which may carry tokens) at info or debug; keep them to warnings.
    for chatty in ("httpx", "httpcore", "apprise", "urllib3"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    return redact
