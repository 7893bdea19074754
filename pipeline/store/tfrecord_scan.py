"""Reading TFRecord files that may be damaged: every record that can be framed is read,
every one that cannot is reported with its byte offset, and the rest of the file goes on
where that is still possible.

A TFRecord is ``uint64 length | uint32 masked crc32c(length) | data | uint32 masked
crc32c(data)`` (little endian). What a damaged file gives:

- a record whose *data* checksum is wrong (a flipped bit, a bad sector): that record is
  :class:`Corrupt`; its length is trustworthy, so reading resumes at the next record;
- a *length* checksum that is wrong, or a file that ends inside a header or a record
  (a truncated upload): the framing is lost, so one :class:`Corrupt` covers the rest of
  the file from that offset;
- a file that cannot be opened or read at all (a gzip stream that ends early): one
  :class:`Corrupt` at the offset reached.

No Beam transforms here (:class:`pipeline.beam.sources.ReadImages` uses it).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import BinaryIO

from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil  # the masked crc32c Beam's sink writes

from pipeline.store.decode import short_error

__all__ = ["Corrupt", "scan", "scan_file"]

_HEADER = 12  # uint64 length + uint32 masked crc of it
_FOOTER = 4  # uint32 masked crc of the data


@dataclasses.dataclass(frozen=True)
class Corrupt:
    """A part of a TFRecord file that could not be read: where, why, and whether reading
    went on after it (``resumed``: only this record is lost)."""

    offset: int  # byte offset of the record's header (in the decompressed stream)
    reason: str
    resumed: bool


def _read_exact(handle: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at the end of the stream (object-store streams may
    return short reads before it)."""
    chunks, got = [], 0
    while got < n:
        chunk = handle.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _masked(data: bytes) -> int:
    return _TFRecordUtil._masked_crc32c(data)


def scan(handle: BinaryIO) -> Iterator[tuple[int, bytes | Corrupt]]:
    """(offset, record bytes or :class:`Corrupt`) for each record of an open TFRecord
    stream, in order. Never raises for damaged content: a read error ends the scan with a
    Corrupt at the offset reached."""
    offset = 0
    while True:
        try:
            header = _read_exact(handle, _HEADER)
            if not header:
                return
            if len(header) < _HEADER:
                reason = f"file ends inside a record header ({len(header)} of {_HEADER} bytes)"
                yield offset, Corrupt(offset, reason, False)
                return
            length, length_crc = struct.unpack("<QI", header)
            if _masked(header[:8]) != length_crc:
                reason = "length checksum mismatch: the rest of the file cannot be framed"
                yield offset, Corrupt(offset, reason, False)
                return
            body = _read_exact(handle, length + _FOOTER)
        except Exception as e:  # noqa: BLE001 - e.g. a gzip stream cut short
            yield offset, Corrupt(offset, f"unreadable: {short_error(e)}", False)
            return
        if len(body) < length + _FOOTER:
            reason = f"file ends inside a record ({len(body)} of {length + _FOOTER} bytes)"
            yield offset, Corrupt(offset, reason, False)
            return
        data = body[:length]
        (data_crc,) = struct.unpack("<I", body[length:])
        if _masked(data) != data_crc:
            yield offset, Corrupt(offset, "data checksum mismatch: record skipped", True)
        else:
            yield offset, data
        offset += _HEADER + length + _FOOTER


def scan_file(path: str) -> Iterator[tuple[int, bytes | Corrupt]]:
    """:func:`scan` of a file on any Beam filesystem (compression from the file name, as
    Beam's TFRecord source does); a file that cannot be opened is one Corrupt at 0."""
    try:
        handle = FileSystems.open(path)
    except Exception as e:  # noqa: BLE001 - vanished, permission, ...
        yield 0, Corrupt(0, f"cannot open: {short_error(e)}", False)
        return
    with handle:
        yield from scan(handle)
