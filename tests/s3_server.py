"""A real S3-compatible server for the tests: moto's server mode on 127.0.0.1, a free port.

The tests reach it the way users reach theirs: ``AWS_ENDPOINT_URL`` and the AWS credential
variables in the environment (set before Ray starts, so every Ray process inherits them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

# The tests' credentials: moto accepts any; set for the whole session so no process ever looks
# for real ones (or for an instance role).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "rayline-test",
    "AWS_SECRET_ACCESS_KEY": "rayline-test-secret",
    "AWS_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    process: subprocess.Popen[bytes]

    def make_bucket(self, name: str) -> str:
        """Create a bucket; its ``s3://`` URI."""
        import pyarrow.fs as pafs

        host = self.endpoint.removeprefix("http://")
        fs = pafs.S3FileSystem(
            endpoint_override=host, scheme="http", region="us-east-1", allow_bucket_creation=True
        )
        fs.create_dir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(timeout_s: float = 30.0) -> S3Server:
    """Start moto's S3 server on 127.0.0.1 and wait until it answers."""
    port = _free_port()
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or "moto_server"
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode} before answering")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return S3Server(endpoint, proc)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout_s:.0f}s")
