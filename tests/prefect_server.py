"""A real Prefect server for tests (``prefect server start`` on 127.0.0.1, SQLite in a temp folder), and
background processes (an ``mmrag worker``) that are stopped with every process they started.

Usage::

    with PrefectServer() as server:
        env = {**os.environ, **server.env()}
        with Background([sys.executable, "-m", "flows.cli", "worker"], env, log=tmp / "worker.log"):
            ...
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from mmrag_core.storage.faults import session_pids
from tests.s3server import _free_ports, _set_parent_death_signal

# Never route the readiness poll of 127.0.0.1 through an HTTP(S)_PROXY from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PrefectServerError(RuntimeError):
    pass


class Background:
    """A process in a session of its own, output to ``log``; on exit SIGTERM to the session, then SIGKILL to
    whatever of it is left (the flow-run subprocesses a worker started, their Ray processes)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.cmd, self.env, self.log, self.cwd = cmd, env, log, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> Background:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, tail: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return "<no log>"

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is None:
            return
        sid = self.proc.pid  # the leader of its own session
        try:
            os.killpg(sid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + grace
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in session_pids(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_run(client, run_id, worker: Background, timeout: float):
    """Poll a flow run until its state is final (or ``timeout`` seconds), failing at once if ``worker`` exits;
    returns the last read of the run."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run_id)
        if (run.state is not None and run.state.is_final()) or time.monotonic() > deadline:
            return run
        assert worker.alive(), f"the worker exited:\n{worker.log_text()}"
        time.sleep(2)


class PrefectServer:
    """``prefect server start`` on ``127.0.0.1:<free port>``, its home and SQLite database in a temp folder,
    analytics and the UI off. ``api_url`` is what clients need (``env()`` sets it with a client home)."""

    def __init__(self, startup_timeout: float = 240.0) -> None:
        self.startup_timeout = startup_timeout
        self.root: Path | None = None
        self.port: int | None = None
        self.process: Background | None = None
        self.startup_seconds: float | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self) -> dict[str, str]:
        """Client settings: this server's API, a private Prefect home, no telemetry."""
        assert self.root is not None
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.root / "client"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

    def log_text(self, tail: int = 6000) -> str:
        return self.process.log_text(tail) if self.process else "<not started>"

    def start(self) -> PrefectServer:
        self.root = Path(tempfile.mkdtemp(prefix="mmrag-prefect-server-"))
        self.port = _free_ports(1)[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "PREFECT_HOME": str(self.root / "server"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
        })
        prefect = Path(sys.executable).parent / "prefect"
        cmd = [str(prefect) if prefect.exists() else "prefect", "server", "start",
               "--host", "127.0.0.1", "--port", str(self.port)]
        t0 = time.monotonic()
        self.process = Background(cmd, env, self.root / "server.log", cwd=self.root).start()
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        assert self.process is not None
        while time.monotonic() - t0 < self.startup_timeout:
            if not self.process.alive():
                raise PrefectServerError(f"prefect server exited during startup:\n{self.log_text()}")
            try:
                with _NO_PROXY_OPENER.open(f"{self.api_url}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1.0)
        raise PrefectServerError(f"prefect server not healthy after {self.startup_timeout:.0f} s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
