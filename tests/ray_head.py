"""A Ray head on loopback, to try the cluster path on one machine (tests, benchmarks, demos).

``LoopbackHead`` runs ``ray start --head --block`` on 127.0.0.1 in its own session and, at
exit, signals that one process, which stops every Ray process it started. It never runs
``ray stop`` (that stops every Ray process of the user) and never touches Ray processes it
did not start.

Both the head and the driver need :data:`LOOPBACK_ENV` (no auth tokens; every Ray socket on
127.0.0.1). The head gets it here; set it in the driver's environment before the driver
first imports Ray, which reads it at import time. This module does not import Ray.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tailscope.errors import DataError, TailscopeError
from tailscope.execute.ray import _answers

__all__ = ["LOOPBACK_ENV", "LoopbackHead", "free_port"]

#: For the head and the driver: no auth tokens, and every Ray socket on 127.0.0.1.
LOOPBACK_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

#: Seconds ``ray start`` may take to answer, and to stop once signalled.
_START_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackHead:
    """``with LoopbackHead(num_cpus=2) as head:`` a Ray head at ``head.address``
    (``"127.0.0.1:PORT"``), started by the ``ray start`` process ``head.pid``.

    Args:
        num_cpus: CPUs the head offers to tasks.
        temp_dir: Ray's session folder. ``None``: a new short one (Ray's socket paths must
            fit in 107 bytes), removed at exit; a given folder is kept.
        object_store_memory: bytes of the object store; ``None``: Ray's default.
    """

    def __init__(
        self,
        num_cpus: int,
        temp_dir: str | os.PathLike[str] | None = None,
        *,
        object_store_memory: int | None = None,
    ) -> None:
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1:
            raise DataError(f"num_cpus must be an integer >= 1, got {num_cpus!r}")
        self.num_cpus = num_cpus
        self.temp_dir = None if temp_dir is None else Path(temp_dir)
        self.object_store_memory = object_store_memory
        self.address: str | None = None
        self.pid: int | None = None
        self._process: subprocess.Popen | None = None
        self._own_temp_dir = False

    def __enter__(self) -> LoopbackHead:
        if self.temp_dir is None:
            self.temp_dir = Path(tempfile.mkdtemp(prefix="tsray-"))
            self._own_temp_dir = True
        port = free_port()
        command = [
            _ray_cli(),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--num-cpus={self.num_cpus}",
            f"--temp-dir={self.temp_dir}",
        ]
        if self.object_store_memory is not None:
            command.append(f"--object-store-memory={int(self.object_store_memory)}")
        log = self.temp_dir / "ray-start.log"
        with open(log, "wb") as out:
            self._process = subprocess.Popen(
                command,
                env={**os.environ, **LOOPBACK_ENV},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the fallback at exit
            )
        self.address, self.pid = f"127.0.0.1:{port}", self._process.pid
        deadline = time.monotonic() + _START_TIMEOUT_S
        while b"Ray runtime started" not in log.read_bytes() or not _answers("127.0.0.1", port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                self.__exit__(None, None, None)
                raise TailscopeError(f"ray start failed; the end of its log:\n{tail}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()  # `ray start --block` stops every process it started
            try:
                self._process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)  # the group it made, nothing else
                self._process.wait()
            self._process = None
        if self._own_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir, self._own_temp_dir = None, False

    def __repr__(self) -> str:
        return f"LoopbackHead(address={self.address!r}, pid={self.pid}, num_cpus={self.num_cpus})"


def _ray_cli() -> str:
    """The ``ray`` command of this Python environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise DataError(
            "a Ray head needs Ray, which is not installed: pip install 'tailscope[ray]'"
        )
    return found
