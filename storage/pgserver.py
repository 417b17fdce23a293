"""A throwaway PostgreSQL server on loopback, for tests, benchmarks and local trials.

It runs the machine's own PostgreSQL binaries (``initdb``, ``pg_ctl``, ``postgres``; on
Debian the ``postgresql`` package puts them in ``/usr/lib/postgresql/<version>/bin``) on
a data directory in a new temporary directory, listening on 127.0.0.1 at a free port
with trust authentication, and removes everything when stopped. PostgreSQL refuses to
run as root, so when this process is root the server runs as the ``postgres`` user (the
Debian package creates it).

Usage::

    with ThrowawayPostgres() as server:
        store = PostgresStore(server.url)

Why not pytest-postgresql: it keeps its data directory under pytest's base temporary
directory (mode 0700, owned by the test's user), which the ``postgres`` user cannot
enter when the tests run as root, as they do in CI here.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresNotFound", "ThrowawayPostgres", "find_pg_bin"]


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries on this machine (install Debian's ``postgresql``)."""


def find_pg_bin() -> Path:
    """Return the directory holding ``pg_ctl``, ``initdb`` and ``postgres``.

    Looks at ``$PG_BIN``, then ``PATH``, then ``/usr/lib/postgresql/*/bin`` (newest).

    Raises:
        PostgresNotFound: none has all three.
    """
    candidates = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(os.path.realpath(found)).parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=lambda p: int(p.split("/")[-2]),
                                           reverse=True)]
    for directory in candidates:
        if all((directory / name).exists() for name in ("pg_ctl", "initdb", "postgres")):
            return directory
    raise PostgresNotFound("no PostgreSQL server binaries (pg_ctl, initdb, postgres) found; "
                           "install Debian's postgresql package or set PG_BIN")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayPostgres:
    """One PostgreSQL server in a temporary directory (see the module docstring).

    Args:
        database: the database to create (the URL names it).
        port: the TCP port (default: a free one).
        max_connections: the server's ``max_connections``.

    Attributes:
        url: ``postgresql://postgres@127.0.0.1:<port>/<database>``, once started.
    """

    def __init__(self, database: str = "rooms", port: int | None = None,
                 max_connections: int = 200) -> None:
        self.database = database
        self.port = port or _free_port()
        self.max_connections = max_connections
        self.bin = find_pg_bin()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        self._root: Path | None = None
        self._user: str | None = None

    @property
    def data_dir(self) -> Path:
        """The server's data directory."""
        assert self._root is not None, "not started"
        return self._root / "data"

    def _run(self, *argv: str, timeout: float = 60.0) -> None:
        subprocess.run(list(argv), check=True, user=self._user, timeout=timeout,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def start(self, timeout: float = 60.0) -> "ThrowawayPostgres":
        """Create the data directory (first call only), start the server, wait until it
        accepts connections, and create the database (first call only).

        Raises:
            PostgresNotFound: no binaries; see :func:`find_pg_bin`.
            subprocess.CalledProcessError: ``initdb`` or ``pg_ctl`` failed.
        """
        first = self._root is None
        if first:
            self._root = Path(tempfile.mkdtemp(prefix="rooms-pg-"))
            if os.geteuid() == 0:
                self._user = "postgres"
                record = pwd.getpwnam(self._user)
                os.chown(self._root, record.pw_uid, record.pw_gid)
            self._run(str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                      "-A", "trust", "-E", "UTF8", "--no-sync", timeout=timeout)
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t",
                  str(int(timeout)), "-l", str(self._root / "server.log"), "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 "
                  f"-c unix_socket_directories={self._root} "
                  f"-c max_connections={self.max_connections} -c fsync=off",
                  "start", timeout=timeout + 10)
        if first:
            self._psql(f'CREATE DATABASE "{self.database}"')
        return self

    def create_database(self, name: str) -> str:
        """Create database ``name`` (letters, digits, ``_``) and return its URL.

        Raises:
            ValueError: ``name`` has other characters.
            subprocess.CalledProcessError: it exists already, or the server is down.
        """
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: use letters, digits and _")
        self._psql(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _psql(self, sql: str) -> None:
        """Run one statement as the superuser through the server's Unix socket."""
        psql = shutil.which("psql") or str(self.bin / "psql")
        self._run(psql, "-h", str(self._root), "-p", str(self.port), "-U", "postgres",
                  "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, disconnect clients;
        ``immediate``: like a crash). The data directory stays for :meth:`start`."""
        if self._root is None or not (self.data_dir / "postmaster.pid").exists():
            return
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", mode,
                  "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); its children exit when they notice."""
        pidfile = self.data_dir / "postmaster.pid"
        if pidfile.exists():
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
            time.sleep(0.2)

    def remove(self) -> None:
        """Stop the server and delete its temporary directory."""
        try:
            self.stop("immediate")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.kill()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> "ThrowawayPostgres":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()
