"""A minimal fake used by the base self-tests (and as a template for real fakes)."""

from __future__ import annotations

from typing import Any

from .base import FakeServer, Request, Response, json_response, paginate, route


class EchoFake(FakeServer):
    """Echoes path params and query; keeps a list of items; has one deliberately buggy route."""

    default_headers = {"x-request-id": "echo"}

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, Any]] = []

    @route("GET", "/echo/{kind}/{id}")
    def echo(self, req: Request) -> dict[str, Any]:
        return {"params": req.params, "query": req.query}

    @route("POST", "/items")
    def add_item(self, req: Request) -> Response:
        self.items.append(req.json())
        return json_response({"added": 1, "total": len(self.items)}, 201)

    @route("GET", "/items")
    def list_items(self, req: Request) -> Response:
        return paginate(req, self.items)

    @route("GET", "/boom")
    def boom(self, req: Request) -> None:
        raise RuntimeError("fake bug")
