"""Stateful fake services speaking real HTTP on 127.0.0.1 (see ``base.py``)."""

from .base import (
    FakeServer,
    FakeServerError,
    Headers,
    Request,
    Response,
    cloudflare_page,
    html_response,
    json_response,
    paginate,
    route,
    running,
)

__all__ = [
    "FakeServer",
    "FakeServerError",
    "Headers",
    "Request",
    "Response",
    "cloudflare_page",
    "html_response",
    "json_response",
    "paginate",
    "route",
    "running",
]
