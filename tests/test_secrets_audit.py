"""What a running install shows, audited for its secrets: an answer the service gives (an error
of the status page's routes as of the API) never quotes one, whatever the request carried."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.harness import AppThread, free_port
from watchbridge import statuspage
from watchbridge.app import create_app
from watchbridge.config import load_config
from watchbridge.wiring import build_runtime

API_TOKEN = "api-tok-31415926535"
HOOK_SECRET = "hook-sec-27182818284"


def test_an_error_answer_does_not_quote_a_secret_the_request_carried(tmp_path: Path) -> None:
    # A dashboard or a user pasting the token into the query: Litestar's own error for a
    # missing parameter names the path with its query.
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"server: {{host: 127.0.0.1, port: {free_port()}, webhook_secret: {HOOK_SECRET},"
        f" api_token: {API_TOKEN}}}\nstorage: {{path: {tmp_path / 'watchbridge.db'}}}\n",
        encoding="utf-8",
    )
    runtime = build_runtime(load_config(path, {}))
    auth = {"authorization": f"Bearer {API_TOKEN}"}
    query = f"?token={API_TOKEN}&hook={HOOK_SECRET}"
    with AppThread(create_app(runtime, extra_routes=statuspage.ROUTES)) as app:
        answers = [
            httpx.get(f"{app.url}/review{query}", headers=auth),
            httpx.post(f"{app.url}/signin/trakt{query}", headers=auth),
        ]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert "Missing required query parameter" in answer.json()["error"], answer.text
        assert API_TOKEN not in answer.text and HOOK_SECRET not in answer.text, answer.text
