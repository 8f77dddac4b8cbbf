"""Every client of a service the test makes in this process, without the pacing the real
service asks for (the fakes need none): the service's own paths (the app, the CLI run in
this process, `make_targets`, the link readers) as they are, only not slowed down. For tests
about something else than pacing; a test of pacing keeps it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from watchbridge.http import Bucket, Pacer
from watchbridge.services import anilist, serializd, trakt

RATE = 1000.0  # requests per second


def unpaced(monkeypatch: pytest.MonkeyPatch, *services: str) -> None:
    """The clients of `services` ("trakt", "serializd", "anilist") made during the test,
    unpaced (not those given a rate of their own)."""
    for service in services:
        if service == "trakt":
            monkeypatch.setattr(trakt, "_pacer", _trakt_pacer)
        elif service == "serializd":
            monkeypatch.setattr(serializd, "REQUESTS_PER_SECOND", RATE)
        elif service == "anilist":
            monkeypatch.setattr(anilist, "SERVED_PER_MINUTE", RATE * 60 + anilist.MARGIN)
        else:
            raise ValueError(f"no pacing to lift for {service!r}")


def _trakt_pacer() -> Pacer:
    return Pacer({"write": Bucket(RATE, RATE), "read": Bucket(RATE, RATE)})


@contextlib.contextmanager
def unpaced_while(*services: str) -> Iterator[None]:
    """`unpaced` for as long as the block lasts (a module-scoped fixture's)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        unpaced(monkeypatch, *services)
        yield
