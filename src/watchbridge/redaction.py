"""Which values no output may show, known in one place: the log, the alerts, the commands
(stored error texts, check-config's summary) and the status page and API all mask what
`secret_values` gives, through one `logs.Redactor` each (which also masks secret-shaped text:
bearer tokens, `apikey=...`, the password in a URL). The error texts the database keeps are
written masked as the log masks them (`logs.masked_as_logged`).

A value is secret when the config holds it as a `Secret`, wherever it is written (a service's
key, a profile's token or password, an alert URL, the webhook secret), when it is the webhook
secret the service generated and keeps in the database, or when it is a token a sign-in keeps
in the database (Trakt's access and refresh tokens, AniList's, Serializd's, the plex.tv and
Plex server tokens): a service's message may quote one in words no pattern knows."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

from watchbridge.logs import Redactor

if TYPE_CHECKING:
    from watchbridge.config import Config
    from watchbridge.store import Store

WEBHOOK_SECRET = "webhook_secret"  # the setting a generated webhook secret is kept under
# The fields of a sign-in kept in the tokens table that hold a token (see `Store.put_token`).
TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "token"})


def secret_values(config: Config, store: Store | None = None) -> list[str]:
    """Every value to mask: the config's secrets and, given the database, the webhook secret
    the service generated (none until the service first started without one configured) and
    every sign-in's tokens kept there."""
    if store is None:
        return config.secrets()
    generated = store.known_setting(WEBHOOK_SECRET)
    return [
        *config.secrets(),
        *([generated] if generated else []),
        *store.token_texts(TOKEN_FIELDS),
    ]


def stored_tokens(data: Mapping[str, Any]) -> list[str]:
    """The tokens of one sign-in as the database keeps it (`Store.put_token`'s `data`)."""
    return [v for k, v in data.items() if k in TOKEN_FIELDS and isinstance(v, str) and v]


def mask_tokens_stored(store: Store, mask: Callable[[Hashable, list[str]], None]) -> None:
    """From now on, `mask` the tokens of every sign-in `store` keeps (a new sign-in, a
    renewed token) as it is kept, and of one another process kept as `store` first reads it
    (before its use), as `secret_values` gives those kept before: with the sign-in (service,
    profile) they are of, whose earlier tokens they replace (`Redactor.renew`)."""
    store.on_token_stored.append(
        lambda service, profile, data: mask((service, profile), stored_tokens(data))
    )


def redactor(config: Config, store: Store | None = None) -> Redactor:
    """What a text shown to a user goes through (see `secret_values`)."""
    return Redactor(secret_values(config, store))


def clipped(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters: a cut drops the word it falls in, so a
    token a service quoted is never shown in part (the masking knows each secret whole, and
    would not find its first half)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    kept = text[: limit - 3]
    if text[limit - 3] != " ":
        kept = kept.rpartition(" ")[0]
    return kept.rstrip() + "..."
