"""A fake of the hosts the anime mapping datasets are downloaded from.

Serves the pinned samples in `tests/fixtures/anime/` at their upstream paths (raw GitHub files
and a GitHub release asset that answers with a redirect first), with ETags and 304s like
GitHub. Tests change `bodies` to publish a new upstream version and use the base knobs
(`fail_next`, `drop_next`) to make downloads fail.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .base import FakeServer, Request, Response, route

FIXTURES = Path(__file__).parent.parent / "fixtures" / "anime"

PATHS = {
    "anibridge": "/anibridge/anibridge-mappings/releases/download/v3/mappings.min.json",
    "kometa": "/Kometa-Team/Anime-IDs/master/anime_ids.json",
    "fribb": "/Fribb/anime-lists/master/anime-list-full.json",
    "animelists": "/Anime-Lists/anime-lists/master/anime-list-master.xml",
}
ASSET_PATH = "/release-assets/anibridge-mappings/mappings.min.json"


def sample_bodies() -> dict[str, bytes]:
    """The samples as upstream serves them (Fribb is a bare array, Kometa has no comment)."""
    kometa = json.loads((FIXTURES / "kometa-anime_ids-excerpt.json").read_text())
    kometa.pop("_comment", None)
    fribb = json.loads((FIXTURES / "fribb-anime-list-full-excerpt.json").read_text())["rows"]
    return {
        "anibridge": (FIXTURES / "anibridge-mappings-v3-excerpt.json").read_bytes(),
        "kometa": json.dumps(kometa).encode(),
        "fribb": json.dumps(fribb).encode(),
        "animelists": (FIXTURES / "anime-list-master-excerpt.xml").read_bytes(),
    }


class FakeDatasets(FakeServer):
    """raw.githubusercontent.com + github.com release downloads, for four datasets."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: dict[str, bytes] = sample_bodies()

    def urls(self) -> dict[str, str]:
        return {name: self.url + path for name, path in PATHS.items()}

    def _file(self, name: str, req: Request) -> Response:
        body = self.bodies.get(name)
        if body is None:
            return Response(404, b"404: Not Found", {"Content-Type": "text/plain"})
        etag = f'W/"{hashlib.sha256(body).hexdigest()[:16]}"'
        if req.headers.get("if-none-match") == etag:
            return Response(304, b"", {"ETag": etag})
        kind = "application/xml" if name == "animelists" else "application/json"
        return Response(200, body, {"Content-Type": kind, "ETag": etag})

    @route("GET", PATHS["kometa"])
    def kometa(self, req: Request) -> Response:
        return self._file("kometa", req)

    @route("GET", PATHS["fribb"])
    def fribb(self, req: Request) -> Response:
        return self._file("fribb", req)

    @route("GET", PATHS["animelists"])
    def animelists(self, req: Request) -> Response:
        return self._file("animelists", req)

    @route("GET", PATHS["anibridge"])
    def anibridge_release(self, req: Request) -> Response:
        # GitHub answers release downloads with a redirect to its asset host.
        return Response(302, b"", {"Location": self.url + ASSET_PATH})

    @route("GET", ASSET_PATH)
    def anibridge_asset(self, req: Request) -> Response:
        return self._file("anibridge", req)
