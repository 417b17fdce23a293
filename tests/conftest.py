"""Shared fixtures: one local Ray instance for the whole test session.

Ray on 2 cores takes seconds to start, so every test that needs Ray uses the
session-scoped ``ray_session`` fixture; room actors are detached, so tests use unique
room ids (``unique_room``) and their own namespace.
"""

from __future__ import annotations

import os
import uuid

import pytest

from storage.pgserver import ThrowawayPostgres

TEST_NAMESPACE = "rooms-test"


@pytest.fixture(scope="session")
def ray_session():
    """Start (once) a local Ray for the session and yield the ``ray`` module."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # a Ray of its own, never a leftover cluster on this machine
            namespace=TEST_NAMESPACE,
            include_dashboard=False,
            num_cpus=2,
            log_to_driver=bool(os.environ.get("ROOMS_TEST_RAY_LOGS")),
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def unique_room(request) -> str:
    """A room id no other test uses."""
    name = request.node.name.replace("[", "-").replace("]", "")[:60]
    return f"{name}-{uuid.uuid4().hex[:8]}".replace("_", "-")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLite store URL in this test's temporary directory."""
    return f"sqlite:///{tmp_path / 'rooms.sqlite3'}"


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the whole session (the machine's PostgreSQL
    binaries; ``.ci/run`` installs Debian's ``postgresql`` where they are missing).
    Fails, never skips, when there are none."""
    server = ThrowawayPostgres(database="rooms_test").start()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def meeting_gateway(ray_session, tmp_path_factory):
    """A development-mode gateway in front of the local Calls and OpenAI emulators (what
    ``rooms serve --dev`` runs), for one module of browser-facing tests: ``{"url",
    "config", "emulators", "app_secret"}``. Module-scoped: it takes Serve's route prefix
    ``/``, which the other gateway tests need too."""
    from tests.browsers import browser_gateway

    with browser_gateway("meeting", tmp_path_factory.mktemp("meeting")) as gateway:
        yield gateway
