"""Hypothesis strategies of hostile client frames, each one a frame the room must refuse.

Each frame starts from a valid message of one protocol type and is poisoned once, in one
of its fields (or as a whole): a lone surrogate (as the JSON escape ``\\udXXX``), a
control character in an id, a value one character over its cap up to many over, nesting
past the depth limit, a value of the wrong JSON type, or a frame that is not a message at
all (not JSON, not an object, no or an unknown ``type``). Frames stay under the 64 KiB
message limit: larger ones are the WebSocket layer's (closed 1009, tested apart).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

VALID: dict[str, dict[str, Any]] = {
    "userUpdate": {"type": "userUpdate", "user": {
        "id": "mallory", "name": "m", "raisedHand": False, "speaking": False,
        "joined": True, "transceiverSessionId": "s1",
        "tracks": {"audio": "s1/a", "video": "s1/v", "screenshare": "s1/s",
                   "audioUnavailable": False}}},
    "directMessage": {"type": "directMessage", "to": "victim", "message": "hi"},
    "muteUser": {"type": "muteUser", "id": "victim"},
    "enableAi": {"type": "enableAi", "instructions": "be brief", "voice": "alloy"},
    "requestAiControl": {"type": "requestAiControl",
                         "track": {"sessionId": "s1", "trackName": "t1", "mid": "0"}},
    "callsApiHistoryEntry": {"type": "callsApiHistoryEntry", "entry": {"k": ["v"]},
                             "sessionId": "s1"},
    "e2eeMlsMessage": {"type": "e2eeMlsMessage", "payload": "AAEC"},
}
"""A valid message of each type that has fields."""

STRING_FIELDS: dict[str, list[tuple[str, ...]]] = {
    "userUpdate": [("user", "name"), ("user", "id"), ("user", "transceiverSessionId"),
                   ("user", "tracks", "audio"), ("user", "tracks", "video"),
                   ("user", "tracks", "screenshare")],
    "directMessage": [("to",), ("message",)],
    "muteUser": [("id",)],
    "enableAi": [("instructions",), ("voice",)],
    "requestAiControl": [("track", "sessionId"), ("track", "trackName"), ("track", "mid")],
    "callsApiHistoryEntry": [("sessionId",), ("entry", "k", 0)],
    "e2eeMlsMessage": [("payload",)],
}
"""Every string field of each message type, as a path into :data:`VALID`."""

ID_FIELDS: list[tuple[str, tuple[str, ...]]] = [
    ("directMessage", ("to",)), ("muteUser", ("id",)),
    ("userUpdate", ("user", "transceiverSessionId")),
    ("userUpdate", ("user", "tracks", "audio")),
    ("requestAiControl", ("track", "sessionId")),
    ("requestAiControl", ("track", "trackName")),
    ("callsApiHistoryEntry", ("sessionId",)),
]
"""Fields that hold ids (no control characters allowed)."""

CAPS: list[tuple[str, tuple[str, ...], int]] = [
    ("userUpdate", ("user", "name"), 128), ("userUpdate", ("user", "id"), 128),
    ("userUpdate", ("user", "transceiverSessionId"), 256),
    ("userUpdate", ("user", "tracks", "audio"), 513),
    ("directMessage", ("to",), 128), ("directMessage", ("message",), 16_384),
    ("muteUser", ("id",), 128), ("enableAi", ("instructions",), 16_000),
    ("enableAi", ("voice",), 64), ("requestAiControl", ("track", "sessionId"), 256),
    ("requestAiControl", ("track", "trackName"), 256),
    ("requestAiControl", ("track", "mid"), 64),
    ("callsApiHistoryEntry", ("sessionId",), 256),
    ("e2eeMlsMessage", ("payload",), 49_152),
]
"""Length caps in characters of capped fields (docs/protocol.md)."""

CONTROL = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]]
KNOWN_TYPES = {"userUpdate", "directMessage", "muteUser", "userLeft", "heartbeat",
               "partyserver-ping", "enableAi", "disableAi", "requestAiControl",
               "relinquishAiControl", "relenquishAiControl", "callsApiHistoryEntry",
               "e2eeMlsMessage"}


def _set(message: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(message)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _dumps(message: Any) -> str:
    # ensure_ascii: a lone surrogate becomes the escape "\udXXX", as a client sends it
    return json.dumps(message, ensure_ascii=True)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


@st.composite
def lone_surrogate(draw) -> str:
    """A field (or key) anywhere holds a lone surrogate."""
    kind = draw(st.sampled_from(sorted(STRING_FIELDS)))
    path = draw(st.sampled_from(STRING_FIELDS[kind]))
    surrogate = chr(draw(st.integers(0xD800, 0xDFFF)))
    value = draw(_text) + surrogate + draw(_text)
    if draw(st.booleans()) or kind != "callsApiHistoryEntry":
        return _dumps(_set(VALID[kind], path, value))
    return _dumps(_set(VALID[kind], ("entry",), {value: 1}))  # in a key


@st.composite
def control_in_id(draw) -> str:
    kind, path = draw(st.sampled_from(ID_FIELDS))
    value = draw(st.text("abc", max_size=4)) + draw(st.sampled_from(CONTROL)) + \
        draw(st.text("xyz", max_size=4))
    return _dumps(_set(VALID[kind], path, value))


@st.composite
def over_cap(draw) -> str:
    kind, path, cap = draw(st.sampled_from(CAPS))
    extra = draw(st.integers(1, max(1, min(4 * cap, 60_000 - cap))))
    char = draw(st.sampled_from(["a", "é", "€", "😀"]))
    value = char * (cap + extra)
    frame = _dumps(_set(VALID[kind], path, value))
    if len(frame.encode()) > 64 * 1024:
        value = "a" * (cap + 1)
        frame = _dumps(_set(VALID[kind], path, value))
    return frame


@st.composite
def too_deep(draw) -> str:
    kind = draw(st.sampled_from(sorted(STRING_FIELDS)))
    path = draw(st.sampled_from(STRING_FIELDS[kind]))
    depth = draw(st.integers(33, 5000))
    if draw(st.booleans()):
        inner = "[" * depth + "]" * depth
    else:
        inner = '{"a":' * depth + "1" + "}" * depth
    frame = _dumps(_set(VALID[kind], path, "@@DEEP@@"))
    return frame.replace('"@@DEEP@@"', inner)


@st.composite
def wrong_type(draw) -> str:
    kind = draw(st.sampled_from(sorted(STRING_FIELDS)))
    path = draw(st.sampled_from([p for p in STRING_FIELDS[kind] if p != ("entry", "k", 0)]))
    value = draw(st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=3),
                           st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
    return _dumps(_set(VALID[kind], path, value))


@st.composite
def not_a_message(draw) -> str:
    choice = draw(st.integers(0, 4))
    if choice == 0:  # not JSON
        return "{" + draw(st.text(max_size=30)) + "\x00"
    if choice == 1:  # not an object
        return _dumps(draw(st.one_of(st.integers(), st.text(max_size=10),
                                     st.lists(st.integers(), max_size=3))))
    if choice == 2:  # unknown type, maybe with control characters or a surrogate
        kind = draw(st.text(max_size=50).filter(lambda t: t not in KNOWN_TYPES))
        return _dumps({"type": kind})
    if choice == 3:  # no type
        return _dumps({"typ": "userUpdate"})
    kind = draw(st.sampled_from(sorted(set(VALID) - {"enableAi"})))  # a required field
    # missing (enableAi's fields are optional)
    message = dict(VALID[kind])
    message.pop(next(k for k in message if k != "type"))
    return _dumps(message)


hostile_frames = st.one_of(lone_surrogate(), control_in_id(), over_cap(), too_deep(),
                           wrong_type(), not_a_message())
"""Any hostile frame the room must answer with an ``error``."""

LEAKS = ("ray::", "pid=", "Traceback", "actor_id", "File \"", "/site-packages/", "/root/",
         "/tmp/", "\x1b[", "ip=")
"""What a client-visible error must never contain."""


def leaks(text: str) -> list[str]:
    """The markers of internals found in ``text`` (see :data:`LEAKS`)."""
    return [marker for marker in LEAKS if marker in text]
