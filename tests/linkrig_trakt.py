"""The engine's Trakt reader factory with pacing lifted (see `tests.linkrig`)."""

from tests.linkrig import trakt_reader as make_reader

__all__ = ["make_reader"]
