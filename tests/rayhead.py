"""A Ray head of a test's own, started as an operator starts one (``ray start --head
--block`` in a subprocess), on ports of its own so that it runs beside the session's
Ray; and the ``serve`` CLI pointed at it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from actors.net import free_port


class RayHead:
    """``ray start --head --block`` with its own ports and temporary directory.

    Args:
        tmp: unused beyond naming (Ray's session files go to a short directory of its
            own under /tmp: Unix socket paths under pytest's long temporary paths pass
            the 107-byte limit and ``ray start`` exits).
        resources: custom resources of the node (e.g. ``{"room_slot": 8}``).
        env: extra environment variables of the head (and so of every worker).
    """

    def __init__(self, tmp: Path, resources: dict[str, float] | None = None,
                 env: dict[str, str] | None = None) -> None:
        import tempfile

        self.tmp = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
        self.resources = resources or {}
        self.port = free_port()
        self.dashboard_port = free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled",
                    "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def dashboard(self) -> str:
        """The dashboard's URL (Serve's REST API, which ``serve deploy`` calls)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout: float = 120.0, attempts: int = 3) -> "RayHead":
        """Start the head and wait until its dashboard answers. A ``ray start`` that
        exits before that (a port :func:`~actors.net.free_port` gave away was taken
        before Ray bound it: the ports are picked, then bound by another process) is
        started again on new ports, up to ``attempts`` times in all.

        Raises:
            AssertionError: it did not come up within ``timeout`` seconds, or it exited
                ``attempts`` times; the message ends with ``ray start`` 's output.
        """
        log = Path(f"{self.tmp}.log")  # beside the temporary directory: stop() removes that
        for attempt in range(attempts):
            if attempt:
                self.stop()
                self.port, self.dashboard_port = free_port(), free_port()
            if self._start(log, timeout):
                return self
        raise AssertionError(f"ray start exited {attempts} times; its output:\n"
                             + log.read_text(errors="replace")[-3000:])

    def _start(self, log: Path, timeout: float) -> bool:
        """One ``ray start`` (output appended to ``log``): ``True`` once the dashboard
        answers, ``False`` if the process exited first. Raises AssertionError after
        ``timeout`` seconds."""
        ports = {"--port": self.port, "--dashboard-port": self.dashboard_port,
                 "--ray-client-server-port": free_port(),
                 "--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(),
                 "--metrics-export-port": free_port(),
                 "--runtime-env-agent-port": free_port(),
                 "--node-manager-port": free_port(), "--object-manager-port": free_port(),
                 "--min-worker-port": 61000, "--max-worker-port": 61999}
        argv = ["ray", "start", "--head", "--block", "--include-dashboard", "true",
                "--dashboard-host", "127.0.0.1", "--node-ip-address", "127.0.0.1",
                "--num-cpus", "2", "--disable-usage-stats",
                "--temp-dir", str(self.tmp), "--resources", json.dumps(self.resources)]
        for flag, value in ports.items():
            argv += [flag, str(value)]
        self.tmp.mkdir(exist_ok=True)  # a retry's: stop() removed it
        with open(log, "ab") as out:
            self.process = subprocess.Popen(argv, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.dashboard}/api/version", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                return False
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(0.5)

    def serve(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run ``serve ARGS -a <dashboard>`` (Serve's CLI) and return it."""
        return subprocess.run(["serve", *args, "-a", self.dashboard], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        """Stop the head and every process it started (its process group)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pattern in (str(self.tmp),):  # what outlived it (raylet children)
            subprocess.run(["pkill", "-9", "-f", pattern], check=False)
        self.process = None
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)
