"""Structured logging (key=value or JSON) with secrets redacted before anything is written."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

REDACTED = "********"

# Secrets that may show up without being in the config: bearer tokens, tokens in URLs, and
# password/secret/token fields written as key=value or JSON.
_CREDENTIAL_PATTERNS = [
    re.compile(r"(?i)((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(//[^/\s:@]+:)[^@\s/]+(?=@)"),  # the password in https://user:password@host
    # The token's own characters only: not a `)` or `,` after it, nor the `.` ending a sentence.
    re.compile(
        r"(?i)([?&](?:x-plex-token|token|api_key|apikey|api-key|access_token|key|sig|signature"
        r"|auth|password|secret)=)"
        r"[\w~%+/=-]+(?:\.[\w~%+/=-]+)*"
    ),
]
_FIELD_PATTERN = re.compile(
    r"(?i)((?:password|passwd|secret|token|api_key|apikey|authorization)[\"']?\s*[:=]\s*([\"'])?)"
    # Not a value masked already (with what follows it), but what a known secret only began.
    r"(?!\*{8}(?:[\"'\s,&}).;\]]|$))"
    # A quoted value up to its quote; one written bare, without the `)`, `]`, `.` or `;` that
    # closes what it stands in (`(password: x), then`, a sentence's end): within it they are
    # its own (`pa)ss`).
    r"(?(2)[^\"'\n]+|[^\"'\s,&}]+?(?=[).;\]]*(?:[\"'\s,&}]|$)))"
    # Our own messages name a config key as `key: problem` (`services.plex.token: expected
    # text`): what follows is the explanation, kept (a secret it quotes is masked as a value).
    r"|(?<![\w.])(?:server|storage|logging|delivery|alerts|services|profiles|links)"
    r"(?:\.[\w-]+|\[\d+\])+: "
)
_PATTERNS = [*_CREDENTIAL_PATTERNS, _FIELD_PATTERN]

# uvicorn adds `color_message`, a copy of msg with terminal colours.
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


# The generations of a sign-in's tokens masked after it was renewed: the current ones and
# those they replaced (a line about the request the renewal answered may quote them).
RENEWALS_MASKED = 2


class Redactor:
    """Masks known secret values and secret-shaped fragments in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self._kept: set[str] = set()  # masked for as long as the process runs
        # A sign-in's tokens as it renews them (every day, for Trakt's), by sign-in: only the
        # latest RENEWALS_MASKED generations, or every line would check a token more per day.
        self._renewed: dict[Hashable, list[frozenset[str]]] = {}
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values from now on, for as long as the process runs."""
        self._kept |= _maskable(secrets)
        self._sort()

    def renew(self, sign_in: Hashable, secrets: Iterable[str]) -> None:
        """`sign_in`'s tokens are these now: mask them, and of those they replace only the
        generation before (see RENEWALS_MASKED). No tokens: nothing changes."""
        current = frozenset(_maskable(secrets))
        generations = self._renewed.setdefault(sign_in, [])
        if not current or (generations and generations[-1] == current):
            return
        generations.append(current)
        del generations[:-RENEWALS_MASKED]
        self._sort()

    def _sort(self) -> None:
        known = self._kept.union(*(s for kept in self._renewed.values() for s in kept))
        self.secrets = sorted(known, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        return _masked(self.secrets, _PATTERNS, text)

    def in_our_words(self, text: str) -> str:
        """`text` masked for a message we wrote, which names config keys as `key: problem`
        (`services.plex.token: required`): known secrets and credentials (in URLs, bearer)
        only, not what follows a secret-sounding key."""
        return _masked(self.secrets, _CREDENTIAL_PATTERNS, text)

    def known(self, text: str) -> str:
        """`text` with the known secrets masked and nothing else: an answer that quotes its
        request (Litestar's error for a missing parameter names the path with its query)
        keeps what the sender wrote, but no secret of ours."""
        return _masked(self.secrets, (), text)


def _masked(secrets: Iterable[str], patterns: Iterable[re.Pattern[str]], text: str) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    for pattern in patterns:
        # No group 1: a match kept as it is (one of our `key: problem` messages).
        text = pattern.sub(lambda m: m.group(0) if m[1] is None else m[1] + REDACTED, text)
    return text


def _maskable(secrets: Iterable[str]) -> set[str]:
    # Very short values would mask ordinary words; config secrets are never that short.
    kept = {s for s in secrets if s and len(s) >= 4}
    # Escaped once (a list logged with `%r`) or twice (an exception's repr quoting a repr, a
    # JSON text holding one): a secret with no `\`, quote or odd letter has one form only.
    once = {form for s in kept for form in _escaped_forms(s)}
    twice = {form for s in once for form in _escaped_forms(s)}
    return kept | once | twice


# Both quotes after a text make Python's repr quote it with `'` and escape its `'`.
_BOTH_QUOTES = "'\""


def _escaped_forms(secret: str) -> set[str]:
    r"""`secret` as it reads inside a JSON string (a payload kept in the database: `"` and `\`
    escaped, a letter outside ASCII perhaps as `\u00e4`) and inside Python's repr of a text
    (`%r`, a list or dict logged), of its ascii() and of its UTF-8 bytes."""
    json_forms = {json.dumps(secret, ensure_ascii=as_ascii)[1:-1] for as_ascii in (True, False)}
    marked = secret + _BOTH_QUOTES
    python_forms = {
        repr(marked)[1:-4],
        ascii(marked)[1:-4],
        repr(marked.encode())[2:-4],
    }
    # The repr of a longer text picks its quote by the whole text: the secret's `'` escaped
    # or not, whatever the secret alone would get.
    bare_quote = {form.replace("\\'", "'") for form in python_forms}
    return json_forms | python_forms | bare_quote


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
# How often a problem that goes on (a service down for weeks) is told again (see Repeating).
REMINDER_EVERY = 3600.0
# The field of a line told again: how many times it came since the last line (not told).
UNTOLD_FIELD = "more_since_last_line"


@dataclass
class _Spell:
    """A problem told: when it began and was last told, how often it came, how many untold."""

    began: float
    told_at: float
    times: int = 1
    untold: int = 0


class Reminders:
    """When to tell each problem that keeps coming (by key): its first time, then at most once
    per `every`. Bounded: the least recently told goes first past `kept`. Pure bookkeeping:
    the caller passes the time."""

    def __init__(self, every: float, kept: int = 64) -> None:
        self.every, self.kept = every, kept
        self._spells: dict[Hashable, _Spell] = {}

    def came(self, key: Hashable, now: float) -> int | None:
        """Count one more time of `key`; when it should be told now, how many times it came
        untold since its last line (else None)."""
        spell = self._spells.pop(key, None)
        if spell is None:
            spell = _Spell(began=now, told_at=now, times=0)
        elif 0 <= now - spell.told_at < self.every:
            spell.times, spell.untold = spell.times + 1, spell.untold + 1
            self._spells[key] = spell
            return None
        untold = spell.untold
        spell.times, spell.untold, spell.told_at = spell.times + 1, 0, now
        self._spells[key] = spell
        while len(self._spells) > self.kept:
            del self._spells[next(iter(self._spells))]
        return untold

    def ended(self, key: Hashable) -> _Spell | None:
        """Forget `key`; the spell it ends, if it was told."""
        return self._spells.pop(key, None)

    def going_on(self, key: Hashable) -> bool:
        """Whether `key` came and is not over (as far as these reminders still know)."""
        return key in self._spells


class Repeating:
    """A problem that may come again and again for weeks (a service down: a line per probe, per
    request, per queued row) in a log someone reads (a Home Assistant app's, `docker logs`):
    a warning its first time, then at most one per `every` with how many came since
    (UNTOLD_FIELD), and, once `over`, one line saying so; every time in between is a DEBUG
    line with all its detail (`logging.level: debug`)."""

    def __init__(self, logger: logging.Logger, every: float = REMINDER_EVERY) -> None:
        self.logger = logger
        self.reminders = Reminders(every)

    def warning(
        self,
        key: Hashable,
        msg: str,
        now: float,
        /,
        *,
        exc_info: BaseException | None = None,
        **extra: object,
    ) -> bool:
        """Log `msg` (a warning when due, else DEBUG); True if it was a warning."""
        untold = self.reminders.came(key, now)
        if untold is None:
            self.logger.debug(msg, extra=extra, exc_info=exc_info, stacklevel=2)
            return False
        untold_field = {UNTOLD_FIELD: untold} if untold else {}
        self.logger.warning(msg, extra=extra | untold_field, exc_info=exc_info, stacklevel=2)
        return True

    def over(self, key: Hashable, msg: str, now: float, /, **extra: object) -> None:
        """The problem `key` is over: `msg` once, when it came more than once (a blip's one
        warning says all), with how many times and for how long."""
        spell = self.reminders.ended(key)
        if spell is not None and spell.times > 1:
            lasted = {"times": spell.times, "seconds": round(max(0.0, now - spell.began))}
            self.logger.info(msg, extra=extra | lasted, stacklevel=2)

    def going_on(self, key: Hashable) -> bool:
        """Whether the problem `key` was logged and is not `over` yet."""
        return self.reminders.going_on(key)

    def forget(self, key: Hashable) -> None:
        """`key` ended unseen (long ago): its next time is a first time again."""
        self.reminders.ended(key)

    def forget_all(self) -> None:
        """Every problem's next time is a first time again (as in a new process)."""
        self.reminders = Reminders(self.reminders.every, self.reminders.kept)


class Throttled(logging.Filter):
    """Lets each warning (by its message, before arguments) through once per `every`, with how
    many it held back since. uvicorn warns once per request it cannot take (a TLS handshake on
    the plain port: a webhook URL pasted with https://; a websocket upgrade; a scanner), from
    anyone who reaches the port, for as long as they send: without this, a line per request.
    Bounded by uvicorn's messages (see Reminders)."""

    def __init__(
        self, every: float = UVICORN_WARNINGS_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.clock = clock
        self.reminders = Reminders(every, kept=32)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        untold = self.reminders.came(str(record.msg), self.clock())
        if untold:
            setattr(record, UNTOLD_FIELD, untold)
        return untold is not None


def mask_also(secrets: Iterable[str]) -> None:
    """Mask these values too in every log line from now on: secrets known only once the
    service runs (a webhook secret it generated and keeps in the database)."""
    for redact in _log_redactors():
        redact.add(secrets)


def mask_renewed(sign_in: Hashable, secrets: Iterable[str]) -> None:
    """`Redactor.renew` for every log line from now on: a sign-in's tokens as it keeps them."""
    for redact in _log_redactors():
        redact.renew(sign_in, secrets)


def redact_error_line(text: str) -> str:
    """A command's `error:` line, with the secrets its log masks (`masked_as_logged`)."""
    return masked_as_logged(text)


def masked_as_logged(text: str) -> str:
    """`text` with the secrets this process's log masks (`Redactor.in_our_words`): the
    config's once it read the config, the database's sign-ins' once it opened it; before
    then, credentials in URLs alone."""
    for redact in _log_redactors() or [Redactor()]:
        text = redact.in_our_words(text)
    return text


def _log_redactors() -> list[Redactor]:
    formatters = [handler.formatter for handler in logging.getLogger().handlers]
    return [f.redact for f in formatters if isinstance(f, KeyValueFormatter | JsonFormatter)]


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
