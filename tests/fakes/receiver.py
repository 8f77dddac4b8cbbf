"""A generic JSON webhook that records what Apprise's json:// sends to it (alert tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fakes.base import FakeServer, Request, Response, route


class AlertReceiver(FakeServer):
    def __init__(self, token: str = "s3cr3t-hook-token", password: str = "hunter2") -> None:
        super().__init__()
        self.token = token
        self.password = password
        self.messages: list[dict[str, Any]] = []
        self._refusals: list[Callable[[], None]] = []

    @route("POST", "/hook/{token}")
    def hook(self, req: Request) -> Response:
        if self._refusals:
            self._refusals.pop(0)()
            return Response(500)
        self.messages.append(req.json())
        return Response(200)

    @route("POST", "/")
    def ntfy(self, req: Request) -> Response:
        """ntfy's publish endpoint: Apprise's ntfy:// posts JSON naming the topic here."""
        if self._refusals:
            self._refusals.pop(0)()
            return Response(500)
        self.messages.append(req.json())
        return Response(200)

    def ntfy_url(self, topic: str) -> str:
        """An Apprise ntfy:// URL to this receiver: on ntfy.sh, knowing the topic is access."""
        return f"ntfy://{self.url.removeprefix('http://')}/{topic}"

    def refuse_next(self, meanwhile: Callable[[], None] = lambda: None) -> None:
        """Answer the next message 500 without taking it, after running `meanwhile` (what
        happens elsewhere while the alert is on its way, e.g. a lock taken)."""
        with self.lock:
            self._refusals.append(meanwhile)

    @property
    def apprise_url(self) -> str:
        return f"json://alerts:{self.password}@{self.url.removeprefix('http://')}/hook/{self.token}"

    def titles(self) -> list[str]:
        return [str(m.get("title")) for m in self.messages]


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
