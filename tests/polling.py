"""Waiting in tests: poll a probe until it holds."""

from __future__ import annotations

import time
from typing import Any, Callable


def until(what: str, probe: Callable[[], Any], timeout: float = 60.0,
          every: float = 0.5) -> Any:
    """Call ``probe`` every ``every`` seconds until it returns something truthy, and
    return that.

    Raises:
        AssertionError: not within ``timeout`` seconds (naming ``what`` and the last
            value).
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")
