"""A minimal check that a service's answer is SDP (RFC 8866), before anyone applies it.

Not a parser: it only makes sure that what Calls or OpenAI sent as a session description
has the shape of one (``v=0`` first, then ``o=``, ``s=``, ``t=`` and at least one ``m=``
line, every line ``<letter>=<value>``) and returns it with CRLF line endings, as SDP
requires and as aiortc and browsers accept.
"""

from __future__ import annotations

import re

from rooms.ports import InvalidAnswer

__all__ = ["validate_sdp"]

_LINE = re.compile(r"^[a-z]=")
_REQUIRED = ("o=", "s=", "t=", "m=")


def validate_sdp(text: str, *, expected_type: str, service: str, operation: str) -> str:
    """Check that ``text`` is an SDP session description and normalise it to CRLF.

    Args:
        text: the SDP the service returned (CRLF or LF line endings).
        expected_type: ``"offer"`` or ``"answer"``: what it should be (for the message).
        service: ``"calls"`` or ``"openai"`` (for the error).
        operation: the spec operation that returned it, e.g. ``"tracks/new"``.

    Returns:
        the SDP with every line ending in CRLF, trailing blank lines removed.

    Raises:
        InvalidAnswer: not text, empty, not starting with ``v=0``, a line that is not
            ``<type>=<value>``, or no ``o=``, ``s=``, ``t=`` or ``m=`` line.
    """

    def invalid(why: str) -> InvalidAnswer:
        return InvalidAnswer(f"the SDP {expected_type} is not SDP: {why}",
                             service=service, operation=operation)

    if not isinstance(text, str):
        raise invalid(f"expected text, got {type(text).__name__}")
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise invalid("empty")
    if lines[0].strip() != "v=0":
        raise invalid(f"first line is {lines[0][:20]!r}, not 'v=0'")
    for number, line in enumerate(lines, start=1):
        if not _LINE.match(line):
            raise invalid(f"line {number} is {line[:20]!r}, not '<type>=<value>'")
    missing = [p.rstrip("=") for p in _REQUIRED if not any(x.startswith(p) for x in lines)]
    if missing:
        raise invalid("no " + ", ".join(f"{m}= line" for m in missing))
    return "\r\n".join(lines) + "\r\n"
