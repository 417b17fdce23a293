"""The replica's memory watch (actors/gateway/memwatch.py) names what grows: the types
whose live objects grew in number, and what holds one of ours."""

from __future__ import annotations

import logging

from actors.gateway import memwatch
from actors.gateway.ratelimit import TokenBucket


def test_the_census_names_the_growing_type_and_its_holder(caplog):
    first = memwatch._census()
    kept = [TokenBucket(1.0, 1) for _ in range(500)]
    with caplog.at_level(logging.WARNING, logger="ray_rooms.gateway"):
        memwatch._log_census(first)
    lines = [r.getMessage() for r in caplog.records]
    assert "memwatch: +500 live actors.gateway.ratelimit.TokenBucket" in lines, lines
    assert any(line.startswith("memwatch: a live actors.gateway.ratelimit.TokenBucket "
                               "is held by a builtins.list") for line in lines), lines
    assert len(kept) == 500
