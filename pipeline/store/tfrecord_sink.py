"""The sink every TFRecord shard of an output is written with (records, row lines)."""

from apache_beam.io.tfrecordio import _TFRecordSink  # the sink WriteToTFRecord wraps

from pipeline.store import object_stores  # noqa: F401  (the object-store fixes, see below)

__all__ = ["RecordSink"]


class RecordSink(_TFRecordSink):
    """Beam's TFRecord sink (what WriteToTFRecord uses), defined here so that every worker
    running any of its steps (bundles, the empty shards of finalisation) unpickles it from
    this package and so imports the object-store fixes (store.object_stores): Beam's own S3
    upload cannot write an empty shard."""
