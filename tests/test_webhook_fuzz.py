"""Whatever arrives on a webhook URL, the answer is 2xx or 4xx with a message, never 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import AppThread
from tests.ingest_samples import all_payloads
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "fuzz-secret"
SOURCES = ["plex", "jellyfin", "emby", "tautulli", "generic"]
SAMPLES = all_payloads()
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "",
]
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    path = tmp_path_factory.mktemp("fuzz") / "wb.db"
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {path}}}\n"
        "profiles: {me: {default: true}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    with AppThread(build_app(build_runtime(config))) as thread:
        yield thread


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def assert_answered(response: httpx.Response) -> None:
    assert 200 <= response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]


@FUZZ
@given(
    source=st.sampled_from(SOURCES),
    body=st.binary(max_size=2048),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_arbitrary_bytes_never_cause_a_server_error(
    app: AppThread, client: httpx.Client, source: str, body: bytes, content_type: str
) -> None:
    response = client.post(
        f"{app.url}/webhooks/{source}/{SECRET}",
        content=body,
        headers={"content-type": content_type},
    )
    assert_answered(response)


@FUZZ
@given(
    sample=st.sampled_from(SAMPLES),
    data=st.data(),
    value=json_values,
    target=st.sampled_from(SOURCES),
)
def test_mutated_samples_never_cause_a_server_error(
    app: AppThread,
    client: httpx.Client,
    sample: tuple[str, dict[str, object]],
    data: st.DataObject,
    value: object,
    target: str,
) -> None:
    _, payload = sample
    mutated = json.loads(json.dumps(payload))
    node = mutated
    while isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node)))
        child = node[key]
        if isinstance(child, dict) and child and data.draw(st.booleans()):
            node = child
            continue
        if data.draw(st.booleans()):
            node[key] = value  # a value of another type, or nonsense
        else:
            del node[key]  # a field that went missing
        break
    response = client.post(f"{app.url}/webhooks/{target}/{SECRET}", json=mutated)
    assert_answered(response)
