"""One run at a time per output dir on gs:// and s3://: a lock object with a lease.

A local output dir is locked with flock (store.publish.output_lock); an object store has no
flock, so the run creates ``<output.dir>/.lock`` with a create-only precondition (GCS
``ifGenerationMatch=0``, S3 ``If-None-Match: *``), renews it every third of the lease with
a precondition on the version it wrote (generation / ETag), and deletes it at the end. A
second run finds the object and is refused; a lock not renewed within the lease (its run
was killed) or left by a dead process on this host is taken over, again under a
precondition, so two runs that race for a stale lock cannot both win.

The lock holds the launcher, which publishes; the workers never take it. A run that loses
its lock (renewal refused: paused for longer than the lease and taken over) publishes
nothing. The GCS emulator ignores preconditions: there the existence check, not the
precondition, refuses the second run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.store.object_stores import s3_client, s3_settings

_LOG = logging.getLogger(__name__)


class LockBusy(RuntimeError):
    """Another live run holds the lock object."""


class LockLost(RuntimeError):
    """This run's lock was taken over (its renewal was refused)."""


class _Gcs:
    """Lock object operations on GCS (google-cloud-storage, as Beam's gcsio builds it)."""

    def __init__(self, path: str, options: PipelineOptions) -> None:
        from apache_beam.io.gcp import gcsio
        from google.api_core import exceptions

        self._conflicts = (exceptions.PreconditionFailed, exceptions.NotFound)
        bucket, name = gcsio.parse_gcs_path(path)
        self._bucket = gcsio.create_storage_client(options).bucket(bucket)
        self._blob = self._bucket.blob(name)

    def read(self) -> tuple[bytes, str] | None:
        blob = self._bucket.get_blob(self._blob.name)
        if blob is None:
            return None
        try:
            data = blob.download_as_bytes(if_generation_match=blob.generation)
        except self._conflicts:  # replaced or deleted in between: read again
            return self.read()
        return data, _version(blob.generation)

    def write(self, data: bytes, version: str | None) -> str | None:
        try:
            self._blob.upload_from_string(data, if_generation_match=_generation(version))
        except self._conflicts:
            return None
        return _version(self._blob.generation)

    def delete(self, version: str) -> None:
        with contextlib.suppress(*self._conflicts):  # already replaced or gone
            self._blob.delete(if_generation_match=_generation(version))


def _version(generation: int | None) -> str:
    return "" if generation is None else str(generation)  # None: an emulator's object


def _generation(version: str | None) -> int | None:
    """The precondition for a version: 0 = must not exist; None = none (unknown)."""
    return 0 if version is None else (int(version) if version else None)


class _S3:
    """Lock object operations on S3 (conditional writes: If-None-Match / If-Match)."""

    def __init__(self, path: str, options: PipelineOptions) -> None:
        from apache_beam.io.aws.s3io import parse_s3_path

        self._bucket, self._key = parse_s3_path(path)
        self._client = s3_client(s3_settings(options))

    def _refused(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404")

    def read(self) -> tuple[bytes, str] | None:
        try:
            got = self._client.get_object(Bucket=self._bucket, Key=self._key)
        except Exception as exc:  # noqa: BLE001 - botocore's ClientError
            if self._refused(exc):
                return None
            raise
        return got["Body"].read(), got["ETag"]

    def write(self, data: bytes, version: str | None) -> str | None:
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            put = self._client.put_object(
                Bucket=self._bucket, Key=self._key, Body=data, **condition
            )
        except Exception as exc:  # noqa: BLE001
            if self._refused(exc):
                return None
            raise
        return put["ETag"]

    def delete(self, version: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=self._key, IfMatch=version)
        except Exception as exc:  # noqa: BLE001
            if not self._refused(exc):
                raise


_BACKENDS: dict[str, Callable[[str, PipelineOptions], object]] = {"gs": _Gcs, "s3": _S3}


def supported(path: str) -> bool:
    """Whether ``path`` is on an object store this module can lock."""
    return FileSystems.get_scheme(path) in _BACKENDS


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ObjectLock:
    """``lock.acquire()`` (LockBusy when a live run holds it), then ``with lock.held():``
    renews it and releases it at the end; ``lock.verify()`` raises LockLost once the lease
    was taken over."""

    def __init__(self, path: str, *, ttl_s: float, options: PipelineOptions) -> None:
        self.path = path
        self._ttl = float(ttl_s)
        self._store = _BACKENDS[FileSystems.get_scheme(path)](path, options)
        self._me = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self._version: str | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()

    def _payload(self) -> bytes:
        now = time.time()
        body = {**self._me, "renewed": now, "expires": now + self._ttl, "ttl_s": self._ttl}
        return json.dumps(body, sort_keys=True).encode("utf-8")

    def _stale(self, held: dict) -> str | None:
        if time.time() > float(held.get("expires", 0)):
            return "its lease expired"
        if held.get("host") == self._me["host"] and not _pid_alive(int(held.get("pid", 0))):
            return f"its process {held.get('pid')} on this host is gone"
        return None

    def acquire(self) -> None:
        for _ in range(5):  # a few rounds of a race with another starting run
            found = self._store.read()
            if found is None:
                self._version = self._store.write(self._payload(), None)
                if self._version is not None:
                    return
                continue
            data, version = found
            try:
                held = json.loads(data)
            except ValueError:
                held = {}
            why = self._stale(held)
            if why is None:
                expires = time.strftime(
                    "%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(held.get("expires", 0)))
                )
                raise LockBusy(
                    f"held by a run on host {held.get('host')!r} (pid {held.get('pid')}), "
                    f"renewed until {expires}; wait for it, or, if that run is dead, wait "
                    f"for the lease to expire or delete {self.path}"
                )
            self._version = self._store.write(self._payload(), version)
            if self._version is not None:
                _LOG.warning("took over the lock %s: %s", self.path, why)
                return
        raise LockBusy(f"{self.path} changed under every attempt to take it")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._ttl / 3):
            version = self._store.write(self._payload(), self._version)
            if version is None:
                _LOG.error("lost the lock %s: another run took it over", self.path)
                self._lost.set()
                return
            self._version = version

    def verify(self) -> None:
        """Raise LockLost when this run no longer holds the lock (before publishing)."""
        if self._lost.is_set():
            raise LockLost(f"the lock {self.path} was taken over by another run")

    @contextlib.contextmanager
    def held(self) -> Iterator[ObjectLock]:
        """After :meth:`acquire`: renew the lease while the block runs, then release."""
        thread = threading.Thread(target=self._renew_loop, name="lock-renew", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            if not self._lost.is_set() and self._version is not None:
                self._store.delete(self._version)
