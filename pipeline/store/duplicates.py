"""Duplicate keys in TFRecord and TFDS inputs: one rule, the same on every rerun and runner.

A key must name one input (artifacts, manifest rows and the incremental index are per key).
File inputs cannot collide (keys are distinct relative paths; a file matched twice is read
once). TFRecord keys (``key_key``, or the image's sha256) and TFDS keys (overlapping split
slices such as ``train[:10]+train[:20]``) can. For the inputs sharing a key:

- an input's *variant* is the sha256 of (content sha256, label, boxes);
- one variant: the key is kept; several: each variant gets ``<key>.dup-<12 hex of its
  variant>``, so a variant's key depends on its own content only;
- further copies of a variant (the same image, label and boxes again) are read once: each
  extra copy is a failure row (stage ``read``, key ``<its key>.copy-<n>``, n = 2, 3, ... in
  the order of their sources), so inputs still reconcile and nothing disappears silently.

No Beam here (:class:`pipeline.beam.sources.ReadImages` applies it per key).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable

from pipeline.elements import EncodedImage, Failure
from pipeline.store.decode import content_sha256

__all__ = ["resolve", "variant"]

_SUFFIX_HEX = 12


def variant(image: EncodedImage) -> str:
    """sha256 of what makes an input itself: its content, label and boxes."""
    text = f"{content_sha256(image)}\0{image.label}\0{image.boxes!r}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _member_order(image: EncodedImage) -> tuple[str, int]:
    return image.source, image.label


def resolve(key: str, images: Iterable[EncodedImage]) -> tuple[list[EncodedImage], list[Failure]]:
    """The inputs read under ``key`` -> (inputs with unique keys, failure rows of copies)."""
    by_variant: dict[str, list[EncodedImage]] = {}
    for image in images:
        by_variant.setdefault(variant(image), []).append(image)
    kept: list[EncodedImage] = []
    copies: list[Failure] = []
    for digest in sorted(by_variant):
        members = sorted(by_variant[digest], key=_member_order)
        new_key = key if len(by_variant) == 1 else f"{key}.dup-{digest[:_SUFFIX_HEX]}"
        kept.append(dataclasses.replace(members[0], key=new_key))
        for n, copy in enumerate(members[1:], start=2):
            copies.append(
                Failure(
                    key=f"{new_key}.copy-{n}",
                    source=copy.source,
                    stage="read",
                    error=f"duplicate: same image, label and boxes as key {new_key!r} "
                    f"(read from {members[0].source}); explained once",
                )
            )
    return kept, copies
