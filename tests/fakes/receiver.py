"""A generic JSON webhook that records what Apprise's json:// sends to it (alert tests)."""

from __future__ import annotations

from typing import Any

from tests.fakes.base import FakeServer, Request, Response, route


class AlertReceiver(FakeServer):
    def __init__(self, token: str = "s3cr3t-hook-token", password: str = "hunter2") -> None:
        super().__init__()
        self.token = token
        self.password = password
        self.messages: list[dict[str, Any]] = []

    @route("POST", "/hook/{token}")
    def hook(self, req: Request) -> Response:
        self.messages.append(req.json())
        return Response(200)

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
