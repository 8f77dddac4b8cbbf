"""model.item_aliases, cached and building an id's alias as a bare MediaRef, names every item
by the keys it did when each alias was the item itself with only that id (c17da23): a key
that changed would stop a webhook's row and a link's row of one play from meeting."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from watchbridge.model import Ids, MediaKind, MediaRef, item_aliases

# Few values, so that ids, numbers and titles of generated items often coincide.
ID_VALUES = st.sampled_from(["1", "2", "tt1", "tt2", "plex://movie/1", "a-slug"])
NUMBERS = st.one_of(st.none(), st.integers(min_value=0, max_value=3))
TEXT = st.one_of(st.none(), st.sampled_from(["", "Dune", "Heat"]))
IDS = st.builds(Ids, **{f.name: st.one_of(st.none(), ID_VALUES) for f in fields(Ids)})

REFS = st.builds(
    MediaRef,
    kind=st.sampled_from(get_args(MediaKind)),
    ids=IDS,
    title=TEXT,
    year=st.one_of(st.none(), st.sampled_from([1995, 2021])),
    show_ids=IDS,
    show_title=TEXT,
    season=NUMBERS,
    number=NUMBERS,
    absolute=NUMBERS,
    source_key=TEXT,
    show_source_key=TEXT,
    aired=st.one_of(st.none(), st.just("2021-10-22")),
    unplaced=st.one_of(st.none(), st.just("a HAMA numbering not known")),
)


def aliases_as_before(item: MediaRef) -> tuple[str, ...]:
    """item_aliases as it was before c17da23: each own id's alias is the item with that id
    alone, no show ids and no season or absolute number."""
    keys = [item.key()]
    for name, value in item.show_ids.present().items():
        keys.append(replace(item, show_ids=Ids(**{name: value})).key())
    for name, value in item.ids.present().items():
        if name == "imdb" and item.kind == "episode":
            continue
        alone = Ids(**{name: value})
        keys.append(replace(item, ids=alone, show_ids=Ids(), season=None, absolute=None).key())
    return tuple(dict.fromkeys(keys))


@settings(max_examples=500, deadline=None)
@given(REFS)
def test_an_items_aliases_are_the_keys_they_were(item: MediaRef) -> None:
    before = aliases_as_before(item)
    assert item_aliases.__wrapped__(item) == before  # as worked out
    assert item_aliases(item) == before  # as the cache answers, asked once
    assert item_aliases(item) == before  # and again
