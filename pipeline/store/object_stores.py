"""Beam's object-store filesystems (s3://, gs://) made fit for this job; :func:`configure`.

What Beam 2.77 does, and what this module changes (each only in this process, idempotent):

- ``FileSystems`` needs the pipeline options before the first s3:// access outside a
  pipeline (listing inputs, the output lock); :func:`configure` sets them.
- S3: every file operation builds a new boto3 session and client (S3FileSystem makes a new
  ``S3IO`` per call, ``S3IO`` a new client): ~0.1 s each, 43 s instead of 5 s for 12 images.
  One botocore client per process and S3 settings is shared here (botocore clients are
  thread-safe); each S3IO keeps its own download state.
- S3: every object is a multipart upload, and one of zero bytes fails
  (CompleteMultipartUpload: MalformedXML, apache/beam#21369): an empty failures.jsonl or an
  empty records shard. Objects under the 5 MiB part size are written with one PutObject here
  (also 1 request instead of 3); larger ones stay multipart.
- GCS: Beam looks for credentials with 5 tries and exponential backoff (~25 s per process)
  before falling back to anonymous access. With ``STORAGE_EMULATOR_HOST`` set (an emulator
  never checks credentials) or Beam's ``--no_auth``, the client is anonymous at once.
"""

from __future__ import annotations

import functools
import os
import threading

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, S3Options

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"  # google-cloud-storage's own variable
_S3_FIELDS = (
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_session_token",
    "s3_endpoint_url",
    "s3_region_name",
    "s3_api_version",
    "s3_verify",
    "s3_disable_ssl",
)
_LOCK = threading.Lock()
_INSTALLED: set[str] = set()


def configure(options: PipelineOptions) -> None:
    """Give Beam's filesystems ``options`` (before any object-store access outside a
    pipeline) and install this module's fixes in this process."""
    FileSystems.set_options(options)
    install()


def install() -> None:
    """Install the S3 and GCS fixes where their Beam extras are installed (idempotent)."""
    with _LOCK:
        for name, patch in (("s3", _patch_s3), ("gcs", _patch_gcs)):
            if name not in _INSTALLED:
                try:
                    patch()
                except ImportError:  # that extra is not installed: nothing to fix
                    continue
                _INSTALLED.add(name)


def s3_settings(options: PipelineOptions | dict) -> tuple:
    """The S3 connection settings of ``options`` (Beam's S3Options, or its dict form)."""
    if isinstance(options, PipelineOptions):
        view = options.view_as(S3Options)
        return tuple(getattr(view, f) for f in _S3_FIELDS)
    return tuple(options.get(f) for f in _S3_FIELDS)


@functools.lru_cache(maxsize=8)
def s3_client(settings: tuple):
    """One botocore S3 client per process and settings (see :func:`s3_settings`)."""
    import boto3  # the aws extra

    key, secret, token, endpoint, region, api_version, verify, no_ssl = settings
    return boto3.session.Session().client(
        service_name="s3",
        region_name=region,
        api_version=api_version,
        use_ssl=not no_ssl,
        verify=verify,
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )


def _patch_s3() -> None:
    from apache_beam.io.aws import s3io
    from apache_beam.io.aws.clients.s3 import boto3_client, messages

    def client_init(self, options):
        self.client = s3_client(s3_settings(options))
        self._download_request = None
        self._download_stream = None
        self._download_pos = 0

    start_upload = s3io.S3Uploader._start_upload
    write_part = s3io.S3Uploader._write_to_s3
    finish_multipart = s3io.S3Uploader.finish

    def lazy_start(self):  # the multipart upload starts with the first full part
        self.upload_id = None

    def write(self, data):
        if self.upload_id is None:
            start_upload(self)
        write_part(self, data)

    def finish(self):
        if self.upload_id is not None or self.last_error is not None:
            return finish_multipart(self)
        try:  # the whole object is in the buffer (under one part): one PutObject
            self._client.client.put_object(
                Bucket=self._bucket, Key=self._name, Body=self.buffer, ContentType=self._mime_type
            )
        except Exception as exc:  # noqa: BLE001 - Beam's error type, as its client raises
            raise messages.S3ClientError(str(exc), boto3_client.get_http_error_code(exc)) from exc
        return None

    boto3_client.Client.__init__ = client_init
    s3io.S3Uploader._start_upload = lazy_start
    s3io.S3Uploader._write_to_s3 = write
    s3io.S3Uploader.finish = finish


def anonymous_gcs(options: PipelineOptions | None) -> bool:
    """Whether GCS is reached without credentials: an emulator, or ``--no_auth``."""
    if os.environ.get(EMULATOR_ENV):
        return True
    return bool(options is not None and options.view_as(GoogleCloudOptions).no_auth)


def _patch_gcs() -> None:
    from apache_beam.internal.gcp import auth

    find = auth._Credentials._get_service_credentials

    def credentials(pipeline_options):
        if anonymous_gcs(pipeline_options):
            return None  # Beam then builds an anonymous client
        return find(pipeline_options)

    auth._Credentials._get_service_credentials = staticmethod(credentials)
