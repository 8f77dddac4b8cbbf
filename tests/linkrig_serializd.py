"""The engine's Serializd reader factory with pacing lifted (see `tests.linkrig`)."""

from tests.linkrig import serializd_reader as make_reader

__all__ = ["make_reader"]
