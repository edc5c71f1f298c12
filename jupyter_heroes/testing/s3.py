"""An S3-protocol server for tests: ``moto_server`` (PyPI ``moto[server]``) on a free port on 127.0.0.1.

No MinIO server binary is reachable from the project's registries, so the S3 backend is tested against
moto, which speaks the S3 REST protocol the ``minio`` SDK uses. moto accepts any credentials and
enforces no bucket policies: tenant isolation is the project's own job and is tested in its own layer.
State is in memory: after :meth:`S3Testbed.kill` and :meth:`S3Testbed.start` (same port) the server is
empty, like a storage service that lost its data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ._daemon import discard, instance_dir, unused_port, wait_ready
from .base import Component, ComponentError
from .tls import make_test_ca


def moto_server_executable() -> str:
    """``moto_server`` next to the running Python (its venv), else on ``PATH``."""
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if not found:
        raise ComponentError(
            "moto_server not found: pip install 'moto[server]' (it is in the project's [test] extra)"
        )
    return found


class S3Testbed(Component):
    """moto_server on ``127.0.0.1:<port>``: :attr:`endpoint` for the minio SDK, :attr:`url` for HTTP."""

    name = "s3"
    host = "127.0.0.1"
    region = "us-east-1"

    def __init__(self, workdir: Path | None = None, port: int | None = None, *, tls: bool = False) -> None:
        self._own_workdir = workdir is None
        super().__init__(workdir or instance_dir(self.name + ("-tls" if tls else "")))
        self.port = port or 0
        self.tls = tls
        #: with ``tls``: the PEM file of the test bed's own CA, the only one that trusts the server
        self.ca_file: Path | None = None
        self.access_key = "heroes-test-access"
        self.secret_key = "heroes-test-secret-key"
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:PORT"``, as ``minio.Minio(endpoint, secure=False)`` wants it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    def _start(self) -> None:
        self.port = self.port or unused_port()
        tls_args: list[str] = []
        if self.tls:
            ca = make_test_ca(self.workdir / "tls", self.host)
            self.ca_file = ca.ca_path
            tls_args = ["-c", str(ca.cert_path), "-k", str(ca.key_path)]
        # moto reads AWS_* from the environment for some defaults; never let a developer's real ones leak in
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key,
                   AWS_DEFAULT_REGION=self.region)  # fmt: skip
        self._proc = self.spawn([moto_server_executable(), "-H", self.host, "-p", str(self.port), *tls_args],
                                "moto_server", env=env, cwd=self.workdir)  # fmt: skip
        wait_ready(
            self._answers, 60, f"moto_server on {self.endpoint}", self.log_path("moto_server"), [self._proc]
        )

    def _answers(self) -> bool:
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else None
            with urllib.request.urlopen(self.url + "/", timeout=2, context=context) as r:
                return r.status < 500
        except urllib.error.HTTPError as e:
            return e.code < 500

    def kill(self) -> None:
        """SIGKILL the server (fault injection); :meth:`start` restarts it, empty, on the same port."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
            with contextlib.suppress(ValueError):
                self.pids.remove(self._proc.pid)
            self._proc = None
        self.started = False

    def stop(self) -> None:
        super().stop()
        self._proc = None
        if self._own_workdir:
            discard(self.workdir)
