"""Which values no output may show, known in one place: the log, the alerts, the commands
(stored error texts, check-config's summary) and the status page and API all mask what
`secret_values` gives, through one `logs.Redactor` each (which also masks secret-shaped text:
bearer tokens, `apikey=...`, the password in a URL).

A value is secret when the config holds it as a `Secret`, wherever it is written (a service's
key, a profile's token or password, an alert URL, the webhook secret), or when it is the webhook
secret the service generated and keeps in the database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from watchbridge.logs import Redactor

if TYPE_CHECKING:
    from watchbridge.config import Config
    from watchbridge.store import Store

WEBHOOK_SECRET = "webhook_secret"  # the setting a generated webhook secret is kept under


def secret_values(config: Config, store: Store | None = None) -> list[str]:
    """Every value to mask: the config's secrets and, given the database, the webhook secret
    the service generated (none until the service first started without one configured)."""
    generated = store.known_setting(WEBHOOK_SECRET) if store is not None else None
    return [*config.secrets(), *([generated] if generated else [])]


def redactor(config: Config, store: Store | None = None) -> Redactor:
    """What a text shown to a user goes through (see `secret_values`)."""
    return Redactor(secret_values(config, store))
