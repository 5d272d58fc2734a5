"""The WebSocket route's arguments."""

from __future__ import annotations

import pytest

from web.stream import parse_after


def test_after_must_be_a_seq() -> None:
    assert parse_after(None) == 0
    assert parse_after("17") == 17
    with pytest.raises(Exception, match="an integer from 0"):
        parse_after("-1")
