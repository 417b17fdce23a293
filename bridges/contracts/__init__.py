"""The API contracts of the two services ray-rooms calls, as project files.

Each file is an OpenAPI document of exactly the operations this project uses, written
for ray-rooms from the facts of the services' published specs, and names its source in
``info.x-source`` and in every operation's ``x-source``:

* :data:`CALLS_CONTRACT` (``calls.yaml``): Cloudflare Calls (Realtime SFU),
  ``sessions/new``, ``tracks/new``, ``renegotiate``, ``tracks/close``, ``tracks/update``
  and the session state, from Cloudflare's ``realtime-api-2024-05-21.yaml``.
* :data:`OPENAI_CONTRACT` (``openai_realtime.yaml``): OpenAI Realtime,
  ``create-realtime-call`` and ``hangup-realtime-call``, from OpenAI's published
  ``openapi.yaml``.

* :data:`SIDEBAND_CONTRACT` (``openai_sideband.yaml``): the sideband of a Realtime
  call (its WebSocket URL and the events the room sends and reads, a JSON schema each),
  from OpenAI's "Webhooks and server-side controls" guide and GA event references.

* :data:`LIVE_CONTRACT` (``openai_live.yaml``): OpenAI's Live API, create-live and
  hangup-live-session and the sideband's events, from the Live OpenAPI file and the
  "Sideband WebSocket" reference.

The tests (``tests/contracts.py``, ``tests/test_sideband.py``) validate every request of :mod:`bridges.calls` and
:mod:`bridges.openai` and every answer of the local emulators against them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CALLS_CONTRACT", "CONTRACTS_DIR", "LIVE_CONTRACT", "OPENAI_CONTRACT",
           "SIDEBAND_CONTRACT"]

CONTRACTS_DIR = Path(__file__).resolve().parent
"""The folder holding the contract files (shipped with the package)."""
CALLS_CONTRACT = CONTRACTS_DIR / "calls.yaml"
"""The Cloudflare Calls contract (OpenAPI 3.0, YAML)."""
OPENAI_CONTRACT = CONTRACTS_DIR / "openai_realtime.yaml"
"""The OpenAI Realtime contract (OpenAPI 3.1, YAML)."""
SIDEBAND_CONTRACT = CONTRACTS_DIR / "openai_sideband.yaml"
"""The OpenAI Realtime sideband contract (events as JSON schemas, YAML)."""
LIVE_CONTRACT = CONTRACTS_DIR / "openai_live.yaml"
"""The OpenAI Live API contract (operations and sideband events as JSON schemas, YAML)."""
