"""Real object-store servers on 127.0.0.1 for the tests and benchmarks: moto in server mode
(s3://) and gcp-storage-emulator (gs://), each a subprocess with a fresh bucket."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BUCKET = "saliency-test"
_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


@dataclasses.dataclass
class Store:
    """A bucket on a running server: its URL root, what a run needs to reach it (env and
    --set overrides), and a client to put, list and get objects."""

    scheme: str
    env: dict[str, str]
    overrides: list[str]  # --set beam.* options
    client: object

    @property
    def root(self) -> str:
        return f"{self.scheme}://{BUCKET}"

    def url(self, key: str) -> str:
        return f"{self.root}/{key}"

    def put(self, key: str, data: bytes) -> None:
        if self.scheme == "s3":
            self.client.put_object(Bucket=BUCKET, Key=key, Body=data)
        else:
            self.client.bucket(BUCKET).blob(key).upload_from_string(data)

    def get(self, key: str) -> bytes:
        if self.scheme == "s3":
            return self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return self.client.bucket(BUCKET).blob(key).download_as_bytes()

    def sizes(self, prefix: str) -> dict[str, int]:
        """key -> size of every object under ``prefix``."""
        if self.scheme == "s3":
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix=prefix
            )
            return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
        return {b.name: b.size for b in self.client.list_blobs(BUCKET, prefix=prefix)}


@contextlib.contextmanager
def s3_server() -> Iterator[Store]:
    """moto's S3 server on a free port, with one bucket."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [str(_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port, proc, "moto_server")
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        options = {
            "s3_endpoint_url": endpoint,
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
            "s3_region_name": "us-east-1",
        }
        yield Store("s3", {}, [f"beam.{k}={v}" for k, v in options.items()], client)
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def gcs_server() -> Iterator[Store]:
    """gcp-storage-emulator (in memory) on a free port, with one bucket; runs reach it
    through STORAGE_EMULATOR_HOST (set in this process too, for the test's own reads)."""
    from google.cloud import storage

    port = free_port()
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen(
            [str(_BIN / "gcp-storage-emulator"), "start", "-H", "127.0.0.1",
             "--port", str(port), "-M", "-q", "--default-bucket", BUCKET],
            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        try:
            _wait_for(port, proc, "gcp-storage-emulator")
            host = f"http://127.0.0.1:{port}"
            os.environ["STORAGE_EMULATOR_HOST"] = host
            client = storage.Client.create_anonymous_client()
            yield Store("gs", {"STORAGE_EMULATOR_HOST": host}, [], client)
        finally:
            if previous is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = previous
            proc.kill()
            proc.wait()


SERVERS = {"s3": s3_server, "gs": gcs_server}
