"""A reader written from docs/outputs.md alone, with TensorFlow and numpy only (it imports
nothing of this package), gives exactly what ``records.read()`` gives: every field, every
gradient and every derived view, bit for bit."""

from __future__ import annotations

import glob
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

# ---------------------------------------------------------------- the reader, from the docs

SCALARS = {  # feature -> (kind, default or None when required)
    "image/key": ("bytes", None), "image/source": ("bytes", None),
    "image/sha256": ("bytes", None), "image/height": ("int", None),
    "image/width": ("int", None), "image/original_height": ("int", 0),
    "image/original_width": ("int", 0), "image/encoded": ("bytes", b""),
    "label": ("int", -1), "prediction/class": ("int", None),
    "prediction/probability": ("float", None), "prediction/name": ("bytes", b""),
    "target/class": ("int", None), "target/rank": ("int", 0), "target/score": ("float", None),
    "target/name": ("bytes", b""), "run/id": ("bytes", None), "model/name": ("bytes", None),
    "model/fingerprint": ("bytes", None), "run/recomputed": ("int", 0),
    "saliency/percentile": ("float", 99.0), "saliency/gradient_encoding": ("bytes", b"tensor"),
}  # fmt: skip
BOXES = ("image/object/bbox/ymin", "image/object/bbox/xmin", "image/object/bbox/ymax",
         "image/object/bbox/xmax")  # fmt: skip
KINDS = {"bytes": "bytes_list", "int": "int64_list", "float": "float_list"}


def _committed_shards(out: Path) -> list[str]:
    """The record shards of the shard sets manifest.jsonl names (outputs.md, manifest)."""
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    sets = sorted({row["shard_set"] for row in rows})
    return sorted(p for s in sets for p in glob.glob(str(out / f"records/saliency-{s}-*.tfrecord")))


def _gradient(data: bytes, encoding: str, h: int, w: int) -> np.ndarray:
    if encoding == "tensor":
        return tf.io.parse_tensor(data, tf.float16).numpy()
    n = int(np.frombuffer(data[:4], "<u4")[0])  # uint32 N, little-endian
    low = np.frombuffer(data[4 : 4 + n], np.uint8)
    high = np.frombuffer(zlib.decompress(data[4 + n :]), np.uint8)
    pairs = np.stack([low, high], axis=1)  # each value's low byte, then its high byte
    return pairs.reshape(-1).view("<f2").reshape(h, w, n // (h * w))


def _view(m: np.ndarray, percentile: float) -> np.ndarray:
    m = np.maximum(np.where(np.isfinite(m), m, np.float32(0)), np.float32(0))
    s = np.float32(np.percentile(m, percentile))
    if s <= 0:
        s = np.float32(m.max())
    if s <= 0:
        return np.zeros_like(m, np.float32)
    return (np.minimum(m, s) / s).astype(np.float32)


def schema_read(out: Path) -> list[dict]:
    """Every committed record of an output dir as a dict of plain values."""
    found = []
    for path in _committed_shards(out):
        for raw in tf.data.TFRecordDataset(path):
            f = tf.train.Example.FromString(raw.numpy()).features.feature

            def values(key: str, kind: str, f=f):
                return list(getattr(f[key], KINDS[kind]).value) if key in f else None

            r = {}
            for key, (kind, default) in SCALARS.items():
                got = values(key, kind)
                r[key] = default if got is None else got[0]
            h, w = int(r["image/height"]), int(r["image/width"])
            r["methods"] = [m.decode() for m in values("saliency/methods", "bytes")]
            encoding = r["saliency/gradient_encoding"].decode()
            r["gradients"], r["maps"] = {}, {}
            for m in r["methods"]:
                g = _gradient(values(f"saliency/{m}/gradient", "bytes")[0], encoding, h, w)
                g32 = g.astype(np.float32)
                p = float(r["saliency/percentile"])
                r["gradients"][m] = g
                r["maps"][m] = {"abs": _view(np.abs(g32).sum(-1), p),
                                "positive": _view(np.maximum(g32, 0).sum(-1), p),
                                "negative": _view(np.maximum(-g32, 0).sum(-1), p)}  # fmt: skip
            r["top_k"] = (values("prediction/top_k/classes", "int") or [],
                          values("prediction/top_k/probabilities", "float") or [])  # fmt: skip
            r["boxes"] = list(zip(*[values(k, "float") or [] for k in BOXES]))
            r["image"] = (tf.io.decode_png(r["image/encoded"]).numpy()
                          if r["image/encoded"] else None)  # fmt: skip
            r["metadata"] = {k[len("metadata/"):]: values(k, "bytes")[0].decode()
                             for k in sorted(f) if k.startswith("metadata/")}  # fmt: skip
            r["curves"] = {m: {c: values(f"faithfulness/{m}/{c}", "float")
                               for c in ("deletion", "insertion")}
                           for m in r["methods"] if f"faithfulness/{m}/deletion" in f}  # fmt: skip
            found.append(r)
    return found


# ---------------------------------------------------------------- equal to records.read()


def _text(value: bytes) -> str:
    return value.decode("utf-8")


@pytest.mark.slow
def test_a_reader_from_the_docs_alone_equals_records_read(default_run):
    from pipeline.store import records  # the reference, imported only to compare with

    ours = schema_read(default_run.out)
    theirs = list(records.read(str(default_run.out)))
    assert len(ours) == len(theirs) == 12
    for a, b in zip(ours, theirs, strict=True):
        assert (_text(a["image/key"]), _text(a["image/source"]), _text(a["image/sha256"])) == (
            b.key, b.source, b.sha256)  # fmt: skip
        assert (a["image/height"], a["image/width"]) == (b.height, b.width)
        assert (a["image/original_height"], a["image/original_width"]) == (
            b.original_height, b.original_width)  # fmt: skip
        assert (a["label"], a["prediction/class"], a["target/class"], a["target/rank"]) == (
            b.label, b.prediction_class, b.target_class, b.target_rank)  # fmt: skip
        assert a["prediction/probability"] == b.prediction_probability
        assert a["target/score"] == b.target_score
        assert (_text(a["prediction/name"]), _text(a["target/name"])) == (
            b.prediction_name, b.target_name)  # fmt: skip
        assert (_text(a["run/id"]), _text(a["model/name"]), _text(a["model/fingerprint"])) == (
            b.run_id, b.model_name, b.model_fingerprint)  # fmt: skip
        assert a["run/recomputed"] == b.recomputed
        np.testing.assert_array_equal(np.array(a["top_k"][0], np.int64), b.top_k_classes)
        np.testing.assert_array_equal(np.array(a["top_k"][1], np.float32), b.top_k_probabilities)
        assert tuple(a["methods"]) == b.methods
        assert a["boxes"] == [tuple(x) for x in b.boxes]
        assert a["metadata"] == b.metadata
        np.testing.assert_array_equal(a["image"], b.image)
        for m in b.methods:
            assert a["gradients"][m].dtype == b.gradients[m].dtype == np.float16
            assert a["gradients"][m].tobytes() == b.gradients[m].tobytes()  # bit for bit
            assert set(a["maps"][m]) == set(b.maps[m])
            for view in b.maps[m]:
                assert a["maps"][m][view].tobytes() == b.maps[m][view].tobytes(), (m, view)
        assert set(a["curves"]) == set(b.faithfulness)
        for m, cs in b.faithfulness.items():
            for c, v in cs.items():
                np.testing.assert_array_equal(np.array(a["curves"][m][c], np.float64), v)
    assert any(a["curves"] for a in ours)  # the audit is on: curves are read too


def test_the_compact_layout_the_docs_state_decodes_a_written_gradient(tmp_path):
    from pipeline.store import gradient_codec  # the writer; the decoder is the docs'

    g = np.random.default_rng(3).normal(0, 1e-3, (5, 7, 3)).astype(np.float16)
    g[0, 0, 0] = np.float16(-0.0)
    data = gradient_codec.encode(g, "compact")
    assert _gradient(data, "compact", 5, 7).tobytes() == g.tobytes()
    tensor = gradient_codec.encode(g, "tensor")
    assert _gradient(tensor, "tensor", 5, 7).tobytes() == g.tobytes()
