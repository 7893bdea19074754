"""Helpers of the reliability tests (tests/test_reliability.py, test_crash_safety.py, ...):
a tiny guided-patchable classifier saved as .keras, small images, output checks."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import time
from collections.abc import Callable

import keras
import numpy as np
from PIL import Image

from pipeline.store import records
from pipeline.store.files import read_jsonl
from pipeline.store.layout import (
    FAILURES_NAME,
    MANIFEST_NAME,
    ROW_SHARDS,
    STAGING_DIR,
    SUMMARY_NAME,
)
from pipeline.store.manifest import committed_sets, shard_files

SIZE = 16  # the tiny model's input size


def tiny_model(seed: int = 3, *, with_lambda: bool = False) -> keras.Model:
    """Conv-ReLU-GAP-Dense(softmax) on SIZE x SIZE x 3; optionally with a Lambda layer."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    if with_lambda:
        x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def save_tiny_model(path: str, seed: int = 3, *, with_lambda: bool = False) -> str:
    tiny_model(seed, with_lambda=with_lambda).save(path)
    return str(path)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise_png(seed: int, size: int = 24) -> bytes:
    """A distinct, deterministic RGB PNG per seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def read_tree(root: str) -> dict[str, bytes]:
    """Every file below ``root``: relative path -> bytes."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = handle.read()
    return out


def write_files(root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)


def base_overrides(model: str, pattern: str, out: str) -> list[str]:
    """--set overrides of a small, fast float32 run of the tiny model."""
    return [
        f"model.name={model}",
        "model.preprocessing=unit",
        f"source.pattern={pattern}",
        "saliency.methods=[vanilla]",
        "saliency.precision=float32",
        "batch.max_batch_size=4",
        f"output.dir={out}",
        "output.views=[heatmap]",
        "run.progress_every=0",
    ]


def kill_when(proc, ready: Callable[[], bool], *, timeout: float = 180) -> None:
    """SIGKILL ``proc``'s process group once ``ready()`` (polled) or ``timeout`` s passed,
    then reap it; a run started with start_new_session=True dies with all its children."""
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.05)
        if proc.poll() is None:  # a run that already ended is not killed (returncode says)
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)


def read_records(out: str) -> list[records.DecodedRecord]:
    """The committed records of an output dir, as a reader gets them ([] before the first
    publish): only the shard sets the manifest names."""
    return list(records.read(out)) if os.path.exists(os.path.join(out, MANIFEST_NAME)) else []


def committed_row_ids(out: str) -> list[str]:
    """The record_ids of the audit row lines of the committed shard sets, as the audit
    reads them (sorted; duplicates kept)."""
    committed = os.path.exists(os.path.join(out, MANIFEST_NAME))
    sets = set(committed_sets(out)) if committed else set()
    paths = shard_files(out, sets, ROW_SHARDS)
    return sorted(json.loads(raw)["record_id"] for p in paths for raw in records.read_raw(p))


def check_complete(out: str) -> dict:
    """Assert the output dir is complete and readable; returns what it holds.

    Each record once, manifest rows == records, every artifact the manifest lists is a
    decodable PNG inside out, every file readable, nothing temporary left."""
    recs = read_records(out)
    record_ids = [r.record_id for r in recs]
    assert len(record_ids) == len(set(record_ids)), "a record is duplicated"
    for r in recs:
        for method in r.methods:
            assert np.isfinite(r.gradients[method].astype(np.float32)).all()
    manifest = read_jsonl(os.path.join(out, MANIFEST_NAME))
    assert sorted(row["record_id"] for row in manifest) == sorted(record_ids)
    if os.path.isdir(os.path.join(out, ROW_SHARDS.directory)):  # audit rows: each line once
        assert committed_row_ids(out) == sorted(record_ids)
    real_out = os.path.realpath(out)
    listed = set()
    for row in manifest:
        for views in row["artifacts"].values():
            for rel in views.values():
                path = os.path.realpath(os.path.join(out, rel))
                assert path.startswith(real_out + os.sep), rel
                listed.add(path)
    pngs = set()
    for dirpath, dirs, files in os.walk(out):
        assert STAGING_DIR not in dirs, "a staging directory is left"
        for name in files:
            path = os.path.join(dirpath, name)
            assert ".tmp-" not in name and "beam-temp" not in path, path
            if name.endswith(".png"):
                Image.open(path).load()  # raises on a partial file
                pngs.add(os.path.realpath(path))
            elif name.endswith(".json"):
                with open(path, encoding="utf-8") as handle:
                    json.load(handle)
            elif name.endswith(".jsonl"):
                read_jsonl(path)
    assert listed <= pngs
    failures = read_jsonl(os.path.join(out, FAILURES_NAME))
    with open(os.path.join(out, SUMMARY_NAME), encoding="utf-8") as handle:
        summary = json.load(handle)
    return {"records": recs, "manifest": manifest, "failures": failures, "summary": summary}


def same_json(a, b, where: str = "audit") -> None:
    """Assert equal JSON values, floats to 1e-9 relative (sums taken in another order, as
    runners and incremental runs do)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            same_json(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same_json(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} != {b}"
    else:
        assert a == b, where
