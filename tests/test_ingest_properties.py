"""Property tests: no input makes a parser raise, and every answer is well-formed.

Arbitrary bytes under arbitrary content types, and the real samples with keys dropped, values
swapped for other JSON types and template-ish strings, go through every parser.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any, get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingest_samples import all_payloads
from watchbridge.ingest import IGNORE_REASONS, PARSERS, emby, generic, jellyfin, plex, tautulli
from watchbridge.ingest import parse as parse_request
from watchbridge.model import Accepted, Action, Ignored, ParseResult, Rejected

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PAYLOAD_PARSERS: dict[str, Callable[[Any], ParseResult]] = {
    "plex": plex.parse,
    "jellyfin": jellyfin.parse,
    "emby": emby.parse,
    "tautulli": tautulli.parse,
    "generic": generic.parse,
}
SAMPLES = all_payloads()
GENERIC_SAMPLE = {
    "event": "stop",
    "user": "alice",
    "progress": 95.0,
    "position_ms": 6612000,
    "duration_ms": 6960000,
    "rating": 8,
    "watched_at": "2025-03-14T20:48:02Z",
    "item": {
        "type": "episode",
        "title": "Ozymandias",
        "ids": {"tvdb": 4637661},
        "show": {"title": "Breaking Bad", "ids": {"tvdb": "81189"}},
        "season": 5,
        "number": 14,
    },
}
ALL_SAMPLES = [*SAMPLES, ("generic", GENERIC_SAMPLE)]

TRICKY_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "True",
        "False",
        "-1",
        "0",
        "1e999",
        "NaN",
        "tt",
        "tt1",
        "plex://",
        "://",
        "com.plexapp.agents.hama://tvdb3-x/y/z",
        "tv.plex.agents.nfo.movie://movie/_",
        "{action}",
        "03/14/2025 20:48:02",
        "9999-12-31T23:59:59+14:00",
        "0001-01-01T00:00:00-14:00",
        "media.play",
        "PlaybackProgress",
        "UserDataSaved",
        "item.rate",
        "watched",
        "episode",
        "movie",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.text(max_size=20)
    | TRICKY_STRINGS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
CONTENT_TYPES = st.sampled_from(
    [
        "",
        "application/json",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=XyZ",
        'multipart/form-data; boundary="XyZ"',
        "multipart/form-data",
    ]
)


def assert_well_formed(source: str, result: ParseResult) -> None:
    assert isinstance(result, Accepted | Ignored | Rejected)
    if isinstance(result, Rejected):
        assert result.reason and "\n" not in result.reason
    elif isinstance(result, Ignored):
        assert result.reason in IGNORE_REASONS
    else:
        assert result.events
        for event in result.events:
            assert event.source == source
            assert event.action in get_args(Action)
            # A whole show or a season is taken for its rating only (Plex's media.rate).
            rated = ("show", "season") if event.action == "rate" else ()
            assert event.item.kind in ("movie", "episode", *rated)
            assert event.position_ms is None or event.position_ms >= 0
            assert event.duration_ms is None or event.duration_ms > 0
            assert event.rating is None or 1 <= event.rating <= 100
            assert all(isinstance(value, str) for value in event.item.ids.present().values())
            assert event.progress is None or 0 <= event.progress <= 100


def containers(node: object) -> Iterator[dict[str, Any] | list[Any]]:
    """Every dict and list inside a decoded JSON document, the root included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from containers(value)
    elif isinstance(node, list):
        yield node
        for value in node:
            yield from containers(value)


@st.composite
def mutated_samples(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A real sample with a few keys dropped or given other values (of any JSON type)."""
    source, original = draw(st.sampled_from(ALL_SAMPLES))
    payload = copy.deepcopy(original)
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        target = draw(st.sampled_from(list(containers(payload))))
        if not target:
            continue
        if isinstance(target, dict):
            key = draw(st.sampled_from(sorted(target)))
            if draw(st.booleans()):
                del target[key]
            else:
                target[key] = draw(JSON_VALUES)
        else:
            target[draw(st.integers(0, len(target) - 1))] = draw(JSON_VALUES)
    return source, payload


@SETTINGS
@given(source=st.sampled_from(sorted(PARSERS)), body=st.binary(max_size=2000), kind=CONTENT_TYPES)
def test_arbitrary_bytes_never_raise(source: str, body: bytes, kind: str) -> None:
    assert_well_formed(source, parse_request(source, body, kind))


@SETTINGS
@given(
    source=st.sampled_from(sorted(PARSERS)),
    parts=st.lists(
        st.tuples(st.sampled_from(["payload", "data", "thumb", "x"]), st.binary(max_size=200)),
        max_size=4,
    ),
    closed=st.booleans(),
)
def test_arbitrary_multipart_bodies_never_raise(
    source: str, parts: list[tuple[str, bytes]], closed: bool
) -> None:
    body = b"".join(
        b'--XyZ\r\nContent-Disposition: form-data; name="'
        + name.encode()
        + b'"\r\n\r\n'
        + content
        + b"\r\n"
        for name, content in parts
    ) + (b"--XyZ--\r\n" if closed else b"")
    assert_well_formed(source, parse_request(source, body, "multipart/form-data; boundary=XyZ"))


@SETTINGS
@given(sample=mutated_samples())
def test_mutated_samples_never_raise(sample: tuple[str, dict[str, Any]]) -> None:
    source, payload = sample
    assert_well_formed(source, PAYLOAD_PARSERS[source](payload))


@SETTINGS
@given(sample=mutated_samples(), other=st.sampled_from(sorted(PAYLOAD_PARSERS)))
def test_mutated_samples_sent_to_any_source_never_raise(
    sample: tuple[str, dict[str, Any]], other: str
) -> None:
    _, payload = sample
    body = json.dumps(payload).encode()
    assert_well_formed(other, parse_request(other, body, "application/json"))


@SETTINGS
@given(
    source=st.sampled_from(sorted(PAYLOAD_PARSERS)),
    payload=st.dictionaries(st.text(max_size=12), JSON_VALUES),
)
def test_arbitrary_json_objects_never_raise(source: str, payload: dict[str, Any]) -> None:
    assert_well_formed(source, PAYLOAD_PARSERS[source](payload))


def test_every_sample_parses_without_rejection() -> None:
    for source, payload in ALL_SAMPLES:
        result = PAYLOAD_PARSERS[source](payload)
        assert_well_formed(source, result)
        assert not isinstance(result, Rejected), (source, result)


NASTY_VALUES: list[object] = [
    None,
    False,
    -1,
    1e299,
    float("nan"),
    10**40,
    "",
    "True",
    "1e999",
    "9" * 30,
    "1e308",  # text: a rating's * 10 of it overflowed
    5e-324,  # a percent dividing by it overflowed
    10**400,
    [None],
    {"id": None},
]


def paths(node: object, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """The path of every value inside a decoded JSON document."""
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in children:
        yield (*prefix, key)
        yield from paths(value, (*prefix, key))


def test_every_field_of_every_sample_survives_every_nasty_value() -> None:
    for source, original in ALL_SAMPLES:
        for path in paths(original):
            for value in NASTY_VALUES:
                payload = copy.deepcopy(original)
                parent: Any = payload
                for key in path[:-1]:
                    parent = parent[key]
                parent[path[-1]] = value
                assert_well_formed(source, PAYLOAD_PARSERS[source](payload))
