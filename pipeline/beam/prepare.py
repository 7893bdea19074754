"""Before the model: DecodeImages (bytes -> model-size pixels) and SkipDone (incremental
runs drop inputs already done, by content hash, before any decode)."""

from typing import NamedTuple

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from pipeline.beam.tags import FAILURES, SKIPPED
from pipeline.elements import EncodedImage, Failure
from pipeline.store.decode import check_decode_options, content_sha256, short_error, to_image_item
from pipeline.store.files import done_token, read_done_index


class Decoded(NamedTuple):
    """DecodeImages' result: model-ready items, and inputs that failed (stage "decode")."""

    items: beam.PCollection  # of ImageItem
    failures: beam.PCollection  # of Failure


class _DecodeFn(beam.DoFn):
    """EncodedImage -> ImageItem; any error -> Failure at stage "decode"."""

    def __init__(
        self, *, input_size: tuple[int, int], channels: int, resize_policy: str, max_pixels: int
    ):
        self._kwargs = {
            "input_size": tuple(input_size),
            "channels": channels,
            "resize_policy": resize_policy,
            "max_pixels": max_pixels,
        }
        self._decoded = beam.metrics.Metrics.counter("sources", "decoded")
        self._failed = beam.metrics.Metrics.counter("sources", "decode_failures")

    def process(self, element: EncodedImage):
        try:
            item = to_image_item(element, **self._kwargs)
        except Exception as e:
            self._failed.inc()
            key = str(getattr(element, "key", "?"))
            source = str(getattr(element, "source", "?"))
            yield TaggedOutput(FAILURES, Failure(key, source, "decode", short_error(e)))
            return
        self._decoded.inc()
        yield item


class DecodeImages(beam.PTransform):
    """PCollection[EncodedImage] -> :class:`Decoded` (items: PCollection[ImageItem], failures).

    Every input ends in exactly one output: an item at ``input_size`` (H, W) with
    ``channels`` channels, or a Failure at stage "decode" carrying the error message.
    """

    def __init__(
        self,
        *,
        input_size: tuple[int, int],
        channels: int,
        resize_policy: str,
        max_pixels: int,
    ):
        super().__init__()
        check_decode_options(
            input_size=input_size,
            channels=channels,
            resize_policy=resize_policy,
            max_pixels=max_pixels,
        )
        self._fn = _DecodeFn(
            input_size=tuple(input_size),
            channels=channels,
            resize_policy=resize_policy,
            max_pixels=max_pixels,
        )

    def expand(self, pcoll):
        out = pcoll | "Decode" >> beam.ParDo(self._fn).with_outputs(FAILURES, main="items")
        return Decoded(items=out.items, failures=out[FAILURES])


class Skipped(NamedTuple):
    """SkipDone's result: inputs still to do, and the keys of those already done."""

    images: beam.PCollection  # of EncodedImage
    skipped: beam.PCollection  # of str (keys)


class _SkipDoneFn(beam.DoFn):
    """EncodedImage -> itself, or its key (tag "skipped") when (key, content hash) is in
    the index. Runs before decoding: a done image costs one hash, not a decode."""

    def __init__(self, index_path: str) -> None:
        self._index_path = index_path
        self._done: frozenset[str] = frozenset()

    def setup(self) -> None:
        self._done = read_done_index(self._index_path)

    def process(self, element: EncodedImage):
        try:
            token = done_token(element.key, content_sha256(element))
        except Exception:  # no content: DecodeImages reports it as a failure
            yield element
            return
        if token in self._done:
            yield TaggedOutput(SKIPPED, element.key)
        else:
            yield element


class SkipDone(beam.PTransform):
    """PCollection[EncodedImage] -> :class:`Skipped`: drop inputs whose (key, sha256) is in
    the index file at ``index_path`` (written by :func:`write_done_index`; each worker reads
    it once, so the pipeline graph stays small however many images are done)."""

    def __init__(self, index_path: str) -> None:
        super().__init__()
        if not isinstance(index_path, str) or not index_path:
            raise ValueError(f"index_path={index_path!r} must name the done-index file")
        self._fn = _SkipDoneFn(index_path)

    def expand(self, pcoll):
        out = pcoll | "SkipDone" >> beam.ParDo(self._fn).with_outputs(SKIPPED, main="images")
        return Skipped(images=out.images, skipped=out[SKIPPED])
